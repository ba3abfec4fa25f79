//! Routes a plugin's `tracing` events to `Host::log`.
//!
//! A cdylib carries its own copy of `tracing`'s statics, so events in a plugin never reach
//! the host's subscriber. This module is a minimal subscriber inside the plugin that formats
//! each event into one line and hands it to the host. Spans are accepted and ignored.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use abi_stable::std_types::RStr;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::abi::HostBox;
use crate::types::LogLevel;

/// A subscriber forwarding to one host instance.
struct HostSubscriber {
    host: HostBox,
    // Read once: asking the host across the boundary for every event would cost more.
    max_level: Level,
    next_span: AtomicU64,
}

/// A dispatcher that sends events to `host`.
pub(crate) fn dispatch_for(host: HostBox) -> tracing::Dispatch {
    let max_level = to_tracing_level(host.max_level());
    tracing::Dispatch::new(HostSubscriber { host, max_level, next_span: AtomicU64::new(1) })
}

/// Makes the first host this plugin file sees the default for threads that set none.
pub(crate) fn install_global_default(host: HostBox) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if the plugin set a default itself; then its choice stands.
        let _ = tracing::dispatcher::set_global_default(dispatch_for(host));
    });
}

fn to_tracing_level(level: LogLevel) -> Level {
    match level {
        LogLevel::Error => Level::ERROR,
        LogLevel::Warn => Level::WARN,
        LogLevel::Info => Level::INFO,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Trace => Level::TRACE,
    }
}

fn to_log_level(level: Level) -> LogLevel {
    match level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        _ => LogLevel::Trace,
    }
}

/// Collects an event's fields as `message key=value ...`.
#[derive(Default)]
struct LineWriter {
    message: String,
    fields: String,
}

impl Visit for LineWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

impl Subscriber for HostSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max_level
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.max_level.into())
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = LineWriter::default();
        event.record(&mut line);
        line.message.push_str(&line.fields);
        let metadata = event.metadata();
        self.host.log(
            to_log_level(*metadata.level()),
            RStr::from_str(metadata.target()),
            RStr::from_str(&line.message),
        );
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}
