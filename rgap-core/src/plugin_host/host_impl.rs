//! The `Host` object each plugin instance receives: its log lines go to the listener's
//! tracing subscriber under the instance's name, it can read the listener's counters, learn
//! the config file's directory and register metrics in its instance's registry.
//! Nothing here may panic: a panic would unwind into the plugin's frames.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RStr, RString};
use rgap_plugin_api::compat::v0_1_0;
use rgap_plugin_api::{
    Host, HostBox, HostStats, Host_TO, LogLevel, MetricDesc, MetricFamilyBox, MetricRegistry,
    PluginError,
};
use tracing::level_filters::LevelFilter;

/// Reads the listener's counters for plugins.
pub type StatsSource = Arc<dyn Fn() -> HostStats + Send + Sync>;

/// What every instance's host handle shares: the listener's counters and where its config
/// file is.
#[derive(Clone)]
pub struct HostEnv {
    pub stats: StatsSource,
    pub config_dir: PathBuf,
}

impl HostEnv {
    /// An environment for the config file at `config_path` and these counters.
    pub fn new(config_path: &Path, stats: StatsSource) -> Self {
        let dir = config_path.parent().filter(|dir| !dir.as_os_str().is_empty());
        let dir = dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        // Absolute, so a plugin's own threads resolve the same paths whatever happens to
        // the working directory.
        let config_dir = std::path::absolute(&dir).unwrap_or(dir);
        HostEnv { stats, config_dir }
    }

    /// Zero counters: for checking specs, when no listener runs.
    pub fn without_stats(config_path: &Path) -> Self {
        HostEnv::new(config_path, Arc::new(HostStats::default))
    }
}

#[derive(Clone)]
struct PluginHostHandle {
    instance: RString,
    stats: StatsSource,
    config_dir: RString,
    metrics: Arc<MetricRegistry>,
}

/// The host side of one output instance, handed to its plugin in the shape of the API
/// release the plugin was built against.
#[derive(Clone)]
pub struct InstanceHost {
    handle: PluginHostHandle,
}

impl InstanceHost {
    /// The host for the instance called `instance` (e.g. `hostsfile#2`), registering its
    /// metrics in `metrics`.
    pub fn new(instance: &str, env: &HostEnv, metrics: Arc<MetricRegistry>) -> Self {
        let handle = PluginHostHandle {
            instance: instance.into(),
            stats: env.stats.clone(),
            config_dir: env.config_dir.display().to_string().into(),
            metrics,
        };
        InstanceHost { handle }
    }

    /// For plugins of this API release.
    pub fn current(&self) -> HostBox {
        Host_TO::from_ptr(RArc::new(self.handle.clone()), TD_Opaque)
    }

    /// For plugins built against 0.1.0.
    pub fn v0_1_0(&self) -> v0_1_0::HostBox {
        v0_1_0::Host_TO::from_ptr(RArc::new(self.handle.clone()), TD_Opaque)
    }
}

/// The 0.1.0 host is the current one without the methods added since.
impl v0_1_0::Host for PluginHostHandle {
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        Host::log(self, level, target, message)
    }

    fn max_level(&self) -> LogLevel {
        Host::max_level(self)
    }

    fn instance_name(&self) -> RStr<'_> {
        Host::instance_name(self)
    }

    fn stats(&self) -> HostStats {
        Host::stats(self)
    }
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

    fn config_dir(&self) -> RStr<'_> {
        self.config_dir.as_rstr()
    }

    fn register_metric(&self, desc: MetricDesc<'_>) -> RResult<MetricFamilyBox, PluginError> {
        self.metrics.register(&desc).into()
    }
}
