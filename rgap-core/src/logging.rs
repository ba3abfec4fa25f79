//! The log subscriber of the `rgap` command: lines on stderr, filtered by `RUST_LOG`, as
//! text (the default) or as one JSON object per line (`--log-format json`,
//! `RGAP_LOG_FORMAT=json`) with `timestamp`, `level`, `target`, `message` and the event's
//! fields.
//!
//! A plugin's lines carry the instance name as the field `output` (see
//! `plugin_host::host_impl`): JSON shows it as a field, text puts it in front of the message
//! (`eventlog#2: host 10.0.0.1 has joined group 1000`), as operators and scripts read it.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-11-30T11:00:00.000000Z  INFO rgap_core::listener: listening on ...`
    #[default]
    Text,
    /// `{"timestamp":"...","level":"INFO","message":"listening on ...","target":"..."}`
    Json,
}

/// Installs the subscriber for the whole process: stderr, `RUST_LOG` (default `info`; a bad
/// filter also means `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // If stderr goes away (a closed pipe, a restarted log collector), log lines are lost
        // but the listener keeps running: tracing's fallback `eprintln!` would panic instead.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder
            // Colour codes would clutter log files and journald.
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(OutputFirst)
            .init(),
        LogFormat::Json => builder
            .json()
            // The event's fields beside `message` at the top level, not under "fields";
            // no span lists: rgap's lines carry what they need as fields.
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Text fields: `<output>: <message> key=value ...`, the `output` field (a plugin
/// instance) in front, the rest as tracing's default formatter writes them.
struct OutputFirst;

impl<'writer> FormatFields<'writer> for OutputFirst {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = TextFields::default();
        fields.record(&mut visitor);
        let mut parts = Vec::with_capacity(2);
        let head = match (visitor.output, visitor.message) {
            (Some(output), Some(message)) => Some(format!("{output}: {message}")),
            (output, message) => output.or(message),
        };
        parts.extend(head);
        if !visitor.rest.is_empty() {
            parts.push(visitor.rest);
        }
        writer.write_str(&parts.join(" "))
    }
}

#[derive(Default)]
struct TextFields {
    output: Option<String>,
    message: Option<String>,
    rest: String,
}

impl Visit for TextFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "output" => self.output = Some(value.to_owned()),
            "message" => self.message = Some(value.to_owned()),
            _ => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            "output" => self.output = Some(format!("{value:?}")),
            name => {
                if !self.rest.is_empty() {
                    self.rest.push(' ');
                }
                let name = name.strip_prefix("r#").unwrap_or(name);
                let _ = fmt::Write::write_fmt(&mut self.rest, format_args!("{name}={value:?}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text_of(emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(OutputFirst)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn text_puts_the_output_in_front_of_the_message() {
        let text = text_of(|| {
            let output = "eventlog#2";
            tracing::info!(target: "rgap::output", output, "host 10.0.0.1 has joined group 1000");
        });
        assert_eq!(text, " INFO rgap::output: eventlog#2: host 10.0.0.1 has joined group 1000\n");
    }

    #[test]
    fn text_keeps_other_fields_after_the_message() {
        let text = text_of(|| tracing::warn!(count = 3, "dropped"));
        assert!(text.ends_with(": dropped count=3\n"), "{text:?}");
    }
}
