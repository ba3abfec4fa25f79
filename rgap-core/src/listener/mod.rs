//! The listener: reads announcements from its UDP sources, keeps the group table, and feeds
//! the output plugins. `run` wires the parts together and owns startup and shutdown:
//!
//! ```text
//! UDP sources ──batches──▶ check (cheap checks, HMAC) ──▶ group table ──events──▶ plugin host
//! ```

mod check;
mod malloc_tuning;
mod source;
mod stats;
mod table;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::{Config, ConfigError};
use crate::plugin_host::{self, GroupsView, PluginHost, StartError};

pub use check::{Accepted, Checker};
pub use source::RecvBatch;
pub use stats::{BatchCounts, DropReason, ListenerStats};
pub use table::{run_table, GroupTable, TableInput, REFRESH_PUBLISH_INTERVAL};

/// Batches of accepted announcements that may wait for the table before sources block.
const TABLE_QUEUE: usize = 1024;
/// How long each output may take to stop at shutdown before it is left behind.
const OUTPUT_STOP_GRACE: Duration = Duration::from_secs(10);
/// How often dropped datagrams are reported (when there were any).
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Why the listener could not start; one line naming the file and the key.
#[derive(Debug)]
pub enum ListenerError {
    Config(ConfigError),
    Outputs { file: PathBuf, error: Box<StartError> },
    Listen { file: PathBuf, index: usize, spec: String, error: std::io::Error },
    Setup(String),
}

impl fmt::Display for ListenerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenerError::Config(error) => error.fmt(f),
            ListenerError::Outputs { file, error } => write!(f, "{}: {error}", file.display()),
            ListenerError::Listen { file, index, spec, error } => {
                write!(f, "{}: listen[{index}]: cannot listen on {spec}: {error}", file.display())
            }
            ListenerError::Setup(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ListenerError {}

/// Runs the listener on the YAML config at `config_path` until SIGINT or SIGTERM.
pub fn run(config_path: &Path) -> Result<(), ListenerError> {
    // Registered first, so a signal during startup is not lost (nor fatal).
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| ListenerError::Setup(format!("cannot install signal handlers: {e}")))?;
    let config = Config::load(config_path).map_err(ListenerError::Config)?;
    malloc_tuning::tune_for_long_runs();
    let listener = Listener::start(&config, config_path)?;
    let signal = signals.forever().next().unwrap_or(SIGTERM);
    tracing::info!(
        "received {}; shutting down",
        if signal == SIGINT { "SIGINT" } else { "SIGTERM" }
    );
    listener.shutdown();
    Ok(())
}

/// A started listener: sources, table and outputs running.
pub struct Listener {
    stop: Arc<AtomicBool>,
    sources: Vec<JoinHandle<()>>,
    table: Option<JoinHandle<()>>,
    outputs: Arc<PluginHost>,
    stats: Arc<ListenerStats>,
    /// Dropping it ends the drop reporter.
    reporter_stop: crossbeam_channel::Sender<()>,
    reporter: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts outputs, then the table, then the sources; on failure stops what started.
    pub fn start(config: &Config, config_path: &Path) -> Result<Listener, ListenerError> {
        let file = config_path.to_path_buf();
        let start = Instant::now();
        let stats = Arc::new(ListenerStats::default());
        let view = plugin_host::shared_view(GroupsView::default());
        let table = GroupTable::new(&config.groups, start, view.clone());
        let dirs = plugin_host::search_dirs(&config.plugin_dirs);
        let stats_source: plugin_host::StatsSource = {
            let stats = stats.clone();
            Arc::new(move || stats.host_stats())
        };
        let env = plugin_host::HostEnv::new(config_path, stats_source);
        let outputs =
            PluginHost::start(&config.output_configs(), &dirs, view, &env).map_err(|error| {
                ListenerError::Outputs { file: file.clone(), error: Box::new(error) }
            })?;
        let outputs = Arc::new(outputs);

        let mut sockets = Vec::with_capacity(config.listen.len());
        for (index, spec) in config.listen.iter().enumerate() {
            match source::open(spec) {
                Ok(socket) => sockets.push((spec.to_string(), socket)),
                Err(error) => {
                    stop_outputs(outputs);
                    return Err(ListenerError::Listen {
                        file,
                        index,
                        spec: spec.to_string(),
                        error,
                    });
                }
            }
        }

        let (table_input, table_output) = crossbeam_channel::bounded(TABLE_QUEUE);
        let (spares_input, spares_output) = crossbeam_channel::bounded(TABLE_QUEUE);
        let notify_outputs = outputs.clone();
        let table = spawn("group table", move || {
            let notify = |events: &[_]| notify_outputs.notify(events);
            run_table(table, table_output, spares_input, notify);
        })?;

        let stop = Arc::new(AtomicBool::new(false));
        let checker = Arc::new(Checker::new(&config.groups));
        let mut sources = Vec::with_capacity(sockets.len());
        for (name, socket) in sockets {
            tracing::info!("listening on {name}");
            let source = source::Source {
                name: name.clone(),
                socket,
                checker: checker.clone(),
                stats: stats.clone(),
                table: table_input.clone(),
                spares: spares_output.clone(),
                stop: stop.clone(),
            };
            sources.push(spawn(&format!("source {name}"), move || source.run())?);
        }
        let (reporter_stop, reporter_stopped) = crossbeam_channel::bounded(1);
        let reporter_stats = stats.clone();
        let reporter = spawn("drop reporter", move || {
            stats::report_drops(&reporter_stats, DROP_REPORT_INTERVAL, &reporter_stopped);
        })?;
        tracing::info!(
            "listener started: {} group(s), {} output(s), {} source(s)",
            config.groups.len(),
            outputs.len(),
            sources.len()
        );
        Ok(Listener {
            stop,
            sources,
            table: Some(table),
            outputs,
            stats,
            reporter_stop,
            reporter: Some(reporter),
        })
    }

    /// The listener's counters.
    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// Stops sources, lets the table deliver its last changes, stops outputs in reverse order.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for source in self.sources.drain(..) {
            let _ = source.join();
        }
        // With every source gone the table's input disconnects: it publishes and returns.
        if let Some(table) = self.table.take() {
            let _ = table.join();
        }
        let _ = self.reporter_stop.send(());
        if let Some(reporter) = self.reporter.take() {
            let _ = reporter.join();
        }
        tracing::info!("datagram totals: {}", self.stats.read());
        stop_outputs(self.outputs);
        tracing::info!("listener stopped");
    }
}

fn stop_outputs(outputs: Arc<PluginHost>) {
    match Arc::try_unwrap(outputs) {
        Ok(outputs) => outputs.shutdown(OUTPUT_STOP_GRACE),
        Err(_) => tracing::warn!("outputs still referenced at shutdown; not stopping them"),
    }
}

fn spawn(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, ListenerError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|e| ListenerError::Setup(format!("cannot start the {name} thread: {e}")))
}
