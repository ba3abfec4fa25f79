//! The `Host` object each plugin instance receives: its log lines go to the listener's
//! tracing subscriber under the instance's name, and it can read the listener's counters.
//! Nothing here may panic: a panic would unwind into the plugin's frames.

use std::sync::Arc;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RStr, RString};
use rgap_plugin_api::{Host, HostBox, HostStats, Host_TO, LogLevel};
use tracing::level_filters::LevelFilter;

/// Reads the listener's counters for plugins.
pub type StatsSource = Arc<dyn Fn() -> HostStats + Send + Sync>;

#[derive(Clone)]
struct PluginHostHandle {
    instance: RString,
    stats: StatsSource,
}

/// The host handle for the instance called `instance` (e.g. `hostsfile#2`).
pub fn host_for(instance: &str, stats: StatsSource) -> HostBox {
    let handle = PluginHostHandle { instance: instance.into(), stats };
    Host_TO::from_ptr(RArc::new(handle), TD_Opaque)
}

impl Host for PluginHostHandle {
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        let instance = self.instance.as_str();
        let message = message.as_str();
        // tracing needs a static target: every plugin line is under `rgap::output`, with the
        // instance name as the field `output`, which says more to an operator than the crate
        // path would (text logs show it in front of the message: see `crate::logging`).
        let _ = target;
        let output = instance;
        match level {
            LogLevel::Error => tracing::error!(target: "rgap::output", output, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "rgap::output", output, "{message}"),
            LogLevel::Info => tracing::info!(target: "rgap::output", output, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "rgap::output", output, "{message}"),
            LogLevel::Trace => tracing::trace!(target: "rgap::output", output, "{message}"),
        }
    }

    fn max_level(&self) -> LogLevel {
        match LevelFilter::current() {
            LevelFilter::TRACE => LogLevel::Trace,
            LevelFilter::DEBUG => LogLevel::Debug,
            LevelFilter::INFO => LogLevel::Info,
            LevelFilter::WARN => LogLevel::Warn,
            _ => LogLevel::Error,
        }
    }

    fn instance_name(&self) -> RStr<'_> {
        self.instance.as_rstr()
    }

    fn stats(&self) -> HostStats {
        (self.stats)()
    }
}
