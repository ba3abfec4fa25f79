//! The listener: reads announcements from its UDP sources, keeps the group table, and feeds
//! the output plugins. `run` wires the parts together and owns startup and shutdown:
//!
//! ```text
//! UDP sources ──batches──▶ check (cheap checks, HMAC) ──▶ group table ──events──▶ plugin host
//! ```

mod check;
mod group_stats;
mod malloc_tuning;
mod position_index;
mod source;
mod stats;
mod table;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::addrspec::AddrSpec;
use crate::config::{Config, ConfigError, GroupConfig};
use crate::observe::{self, HttpServer, Metrics, Observed, PluginMetrics, Routes};
use crate::plugin_host::{self, GroupsView, OutputChanges, PluginHost, StartError};
use crate::systemd;

pub use check::{Accepted, Checker};
pub use group_stats::{GroupCounters, GroupCounts, GroupStats};
pub use source::{
    set_receive_buffer, RecvBatch, Wait, BATCH as RECEIVE_BATCH, COALESCE as RECEIVE_COALESCE,
};
pub use stats::{BatchCounts, DropReason, ListenerStats};
pub use table::{run_table, GroupTable, TableControl, TableInput, REFRESH_PUBLISH_INTERVAL};

/// Batches of accepted announcements that may wait for the table before sources block.
const TABLE_QUEUE: usize = 1024;
/// How long each output may take to stop at shutdown before it is left behind.
const OUTPUT_STOP_GRACE: Duration = Duration::from_secs(10);
/// How often dropped datagrams are reported (when there were any).
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How often systemd's status line is refreshed (when run by systemd).
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// How long a reload waits for the group table to apply the new groups.
const TABLE_RECONFIGURE_WAIT: Duration = Duration::from_secs(10);

/// Why the listener could not start; one line naming the file and the key.
#[derive(Debug)]
pub enum ListenerError {
    Config(ConfigError),
    Outputs { file: PathBuf, error: Box<StartError> },
    Listen { file: PathBuf, index: usize, spec: String, error: std::io::Error },
    Http { file: PathBuf, addr: std::net::SocketAddr, error: std::io::Error },
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
            ListenerError::Http { file, addr, error } => {
                write!(f, "{}: http.listen: cannot listen on {addr}: {error}", file.display())
            }
            ListenerError::Setup(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ListenerError {}

/// Runs the listener on the YAML config at `config_path` until SIGINT or SIGTERM; SIGHUP
/// reloads the same file.
pub fn run(config_path: &Path) -> Result<(), ListenerError> {
    // Registered first, so a signal during startup is not lost (nor fatal).
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| ListenerError::Setup(format!("cannot install signal handlers: {e}")))?;
    let config = Config::load(config_path).map_err(ListenerError::Config)?;
    for warning in config.key_file_warnings() {
        tracing::warn!("{warning}");
    }
    malloc_tuning::tune_for_long_runs();
    let mut listener = Listener::start(config, config_path)?;
    systemd::ready(&listener.status_line());
    for signal in signals.forever() {
        if signal == SIGHUP {
            systemd::reloading();
            listener.reload_and_report();
            systemd::ready(&listener.status_line());
            continue;
        }
        tracing::info!(
            "received {}; shutting down",
            if signal == SIGINT { "SIGINT" } else { "SIGTERM" }
        );
        break;
    }
    systemd::stopping();
    listener.shutdown();
    Ok(())
}

/// One running source: a listen address, its threads (one per socket: several for a
/// unicast address, see `workers`), and the flag that stops them all.
struct RunningSource {
    spec: AddrSpec,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl RunningSource {
    /// Stops its threads (they see `stop` within a read timeout) and waits for them.
    fn stop_and_join(sources: Vec<RunningSource>) -> Vec<AddrSpec> {
        for source in &sources {
            source.stop.store(true, Ordering::Relaxed);
        }
        let mut stopped = Vec::with_capacity(sources.len());
        for source in sources {
            for thread in source.threads {
                let _ = thread.join();
            }
            stopped.push(source.spec);
        }
        stopped
    }
}

/// A started listener: sources, table and outputs running.
pub struct Listener {
    config_path: PathBuf,
    /// The configuration running now (the last that loaded and applied).
    config: Config,
    /// The table slot of each configured group, by id: announcements name their group by
    /// slot, which a reload never reassigns.
    slots: HashMap<u64, u32>,
    next_slot: u32,
    checker: Arc<ArcSwap<Checker>>,
    sources: Vec<RunningSource>,
    /// Kept to start sources on reload; dropped at shutdown so the table sees the end.
    table_input: Option<crossbeam_channel::Sender<TableInput>>,
    spares: crossbeam_channel::Receiver<TableInput>,
    table_control: crossbeam_channel::Sender<TableControl>,
    table: Option<JoinHandle<()>>,
    outputs: Arc<PluginHost>,
    stats: Arc<ListenerStats>,
    view: plugin_host::SharedView,
    env: plugin_host::HostEnv,
    /// Dropping it ends the drop reporter.
    reporter_stop: crossbeam_channel::Sender<()>,
    reporter: Option<JoinHandle<()>>,
    /// The monitoring endpoint, if `http` is configured.
    http: Option<HttpServer>,
    observed: Observed,
    /// Dropping it ends the systemd heartbeat.
    heartbeat_stop: Option<crossbeam_channel::Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

/// What a reload changed, for its log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    pub groups_added: usize,
    pub groups_removed: usize,
    pub groups_changed: usize,
    pub outputs: OutputChanges,
    pub listen_added: usize,
    pub listen_removed: usize,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.outputs;
        write!(
            f,
            "groups +{} -{} ~{}, outputs +{} -{} ~{} ={}, listen +{} -{}",
            self.groups_added,
            self.groups_removed,
            self.groups_changed,
            o.added,
            o.removed,
            o.changed,
            o.kept,
            self.listen_added,
            self.listen_removed
        )
    }
}

impl Listener {
    /// Starts outputs, then the table, then the sources; on failure stops what started.
    pub fn start(config: Config, config_path: &Path) -> Result<Listener, ListenerError> {
        let file = config_path.to_path_buf();
        // Bound first: a port in use stops startup before any output has started.
        let http_socket = match &config.http {
            Some(http) => Some(observe::bind(http.listen).map_err(|error| {
                ListenerError::Http { file: file.clone(), addr: http.listen, error }
            })?),
            None => None,
        };
        let start = Instant::now();
        let stats = Arc::new(ListenerStats::default());
        let view = plugin_host::shared_view(GroupsView::default());
        let table = GroupTable::new(&config.groups, start, view.clone());
        let group_stats = table.counters();
        let dirs = plugin_host::search_dirs(&config.plugin_dirs);
        let stats_source: plugin_host::StatsSource = {
            let stats = stats.clone();
            Arc::new(move || stats.host_stats())
        };
        let env = plugin_host::HostEnv::new(config_path, stats_source);
        let outputs =
            PluginHost::start(&config.output_configs(), &dirs, view.clone(), &env).map_err(
                |error| ListenerError::Outputs { file: file.clone(), error: Box::new(error) },
            )?;
        let outputs = Arc::new(outputs);

        let mut sockets = Vec::with_capacity(config.listen.len());
        let workers = config.workers();
        for (index, spec) in config.listen.iter().enumerate() {
            match source::open(spec, workers, false) {
                Ok(socket) => sockets.push((spec.clone(), socket)),
                Err(error) => {
                    outputs.shutdown(OUTPUT_STOP_GRACE);
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
        let (table_control, control_output) = crossbeam_channel::unbounded();
        let notify_outputs = outputs.clone();
        let table_stats = stats.clone();
        let table = spawn("group table", move || {
            let notify = |events: &[_]| notify_outputs.notify(events);
            run_table(table, table_output, control_output, spares_input, &table_stats, notify);
        })?;

        let slots: HashMap<u64, u32> =
            config.groups.iter().enumerate().map(|(slot, group)| (group.id, slot as u32)).collect();
        let checker = Arc::new(ArcSwap::from_pointee(Checker::new(&config.groups)));
        let (reporter_stop, reporter_stopped) = crossbeam_channel::bounded(1);
        let reporter_stats = stats.clone();
        let reporter = spawn("drop reporter", move || {
            stats::report_drops(&reporter_stats, DROP_REPORT_INTERVAL, &reporter_stopped);
        })?;
        let observed = Observed {
            stats: stats.clone(),
            view: view.clone(),
            groups: group_stats,
            outputs: outputs.clone(),
        };
        let mut listener = Listener {
            config_path: file,
            next_slot: slots.len() as u32,
            slots,
            checker,
            sources: Vec::with_capacity(sockets.len()),
            table_input: Some(table_input),
            spares: spares_output,
            table_control,
            table: Some(table),
            outputs,
            stats,
            view,
            env,
            reporter_stop,
            reporter: Some(reporter),
            http: None,
            observed,
            heartbeat_stop: None,
            heartbeat: None,
            config,
        };
        for (spec, sockets) in sockets {
            if let Err(error) = listener.start_source(spec, sockets) {
                listener.shutdown();
                return Err(error);
            }
        }
        if let Some(socket) = http_socket {
            // Served only now that every source is bound and every output started, so
            // that `/ready` has only the groups' readiness left to check.
            match start_http(socket, listener.observed.clone()) {
                Ok(server) => listener.http = Some(server),
                Err(error) => {
                    listener.shutdown();
                    return Err(error);
                }
            }
        }
        listener.start_heartbeat();
        tracing::info!(
            "listener started: {} group(s), {} output(s), {} source(s)",
            listener.config.groups.len(),
            listener.outputs.len(),
            listener.sources.len()
        );
        Ok(listener)
    }

    /// Starts a thread reading each of `sockets` (all bound for `spec`), each with its own
    /// batches into the table.
    fn start_source(
        &mut self,
        spec: AddrSpec,
        sockets: Vec<std::net::UdpSocket>,
    ) -> Result<(), ListenerError> {
        let name = spec.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        // The line scripts wait for stays exactly `listening on <address>`.
        tracing::info!("listening on {name}");
        if sockets.len() > 1 {
            tracing::debug!("{name}: {} SO_REUSEPORT workers", sockets.len());
        }
        let mut running = RunningSource { spec, stop: stop.clone(), threads: Vec::new() };
        for socket in sockets {
            let Some(table) = self.table_input.clone() else {
                RunningSource::stop_and_join(vec![running]);
                return Err(ListenerError::Setup("the listener is stopping".into()));
            };
            let source = source::Source {
                name: name.clone(),
                socket,
                checker: self.checker.clone(),
                stats: self.stats.clone(),
                table,
                spares: self.spares.clone(),
                stop: stop.clone(),
            };
            match spawn(&format!("source {name}"), move || source.run()) {
                Ok(thread) => running.threads.push(thread),
                Err(error) => {
                    RunningSource::stop_and_join(vec![running]);
                    return Err(error);
                }
            }
        }
        self.sources.push(running);
        Ok(())
    }

    /// Keeps systemd's watchdog fed and its status line current, when run by systemd.
    fn start_heartbeat(&mut self) {
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let view = self.view.clone();
        match systemd::spawn_heartbeat(STATUS_INTERVAL, move || status_of(&view), stopped) {
            Ok(Some(thread)) => {
                self.heartbeat_stop = Some(stop);
                self.heartbeat = Some(thread);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!("cannot start the systemd heartbeat thread: {error}"),
        }
    }

    /// One line for systemd's status: `2 group(s), 17 member(s)`.
    pub fn status_line(&self) -> String {
        status_of(&self.view)
    }

    /// Where the monitoring endpoint listens, if it does.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// The listener's counters.
    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// Reloads the config file and logs the outcome: one INFO line with what changed, or
    /// one ERROR line with why the file was refused (the running configuration stays).
    pub fn reload_and_report(&mut self) {
        let file = self.config_path.display().to_string();
        match self.reload() {
            Ok(summary) => tracing::info!("reloaded {file}: {summary}"),
            Err(error) => tracing::error!(
                "reload of {file} failed: {error}; keeping the running configuration"
            ),
        }
    }

    /// Applies the config file as it is now, all or nothing: every check `rgap validate`
    /// makes, new sockets bound and new outputs started before anything running changes.
    /// Unchanged groups keep their members, unchanged outputs their instance, unchanged
    /// sockets their socket.
    pub fn reload(&mut self) -> Result<ReloadSummary, ListenerError> {
        let file = self.config_path.clone();
        let new = Config::load(&file).map_err(ListenerError::Config)?;
        for warning in new.key_file_warnings() {
            tracing::warn!("{warning}");
        }
        let dirs = plugin_host::search_dirs(&new.plugin_dirs);
        let outputs_error =
            |error| ListenerError::Outputs { file: file.clone(), error: Box::new(error) };
        plugin_host::validate_outputs(&new.output_configs(), &dirs, &self.env)
            .map_err(outputs_error)?;

        // Everything that can fail, before anything running changes.
        let http_changed = new.http != self.config.http;
        let http_socket = match (&new.http, http_changed) {
            (Some(http), true) => Some(self.rebind_http(http.listen, &file)?),
            _ => None,
        };
        // A changed `workers` restarts every unicast source: its new sockets join the
        // running ones' (SO_REUSEPORT, same user) before those close, so the address is
        // never unbound.
        let workers = new.workers();
        let workers_changed = workers != self.config.workers();
        let restarted = |spec: &AddrSpec| workers_changed && !spec.addr.ip().is_multicast();
        let mut opened = Vec::new();
        for (index, spec) in new.listen.iter().enumerate() {
            let held = self.sources.iter().any(|source| source.spec == *spec);
            if held && !restarted(spec) {
                continue;
            }
            let sockets = source::open(spec, workers, held).map_err(|error| {
                ListenerError::Listen { file: file.clone(), index, spec: spec.to_string(), error }
            })?;
            opened.push((spec.clone(), sockets, held));
        }
        let outputs = self
            .outputs
            .reconcile(&new.output_configs(), &dirs, &self.view, &self.env, OUTPUT_STOP_GRACE)
            .map_err(outputs_error)?;

        // Groups: the table first (new slots exist before any announcement names them),
        // then the checker.
        let mut summary = ReloadSummary { outputs, ..ReloadSummary::default() };
        let mut slots = Vec::with_capacity(new.groups.len());
        for group in &new.groups {
            let slot = match self.slots.get(&group.id) {
                Some(&slot) => {
                    let old = self.config.groups.iter().find(|old| old.id == group.id);
                    if old != Some(group) {
                        summary.groups_changed += 1;
                    }
                    slot
                }
                None => {
                    summary.groups_added += 1;
                    self.next_slot += 1;
                    self.next_slot - 1
                }
            };
            slots.push((slot, group.clone()));
        }
        summary.groups_removed = self
            .config
            .groups
            .iter()
            .filter(|old| !new.groups.iter().any(|g| g.id == old.id))
            .count();
        self.reconfigure_table(slots.clone());
        let checked: Vec<(u32, &GroupConfig)> =
            slots.iter().map(|(slot, config)| (*slot, config)).collect();
        self.checker.store(Arc::new(Checker::with_slots(&checked)));
        self.slots = slots.iter().map(|(slot, config)| (config.id, *slot)).collect();

        // Sources: new ones start, removed ones stop; unchanged ones never noticed.
        summary.listen_added = opened.iter().filter(|(_, _, held)| !held).count();
        let (replaced, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sources)
            .into_iter()
            .partition(|s| opened.iter().any(|(spec, _, held)| *held && *spec == s.spec));
        self.sources = kept;
        for (spec, sockets, _) in opened {
            if let Err(error) = self.start_source(spec, sockets) {
                // Keep reading with the sockets being replaced rather than with none.
                self.sources.extend(replaced);
                return Err(error);
            }
        }
        RunningSource::stop_and_join(replaced);
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sources)
            .into_iter()
            .partition(|s| new.listen.contains(&s.spec));
        self.sources = kept;
        summary.listen_removed = removed.len();
        for spec in RunningSource::stop_and_join(removed) {
            tracing::info!("stopped listening on {spec}");
        }

        if http_changed {
            if let Some(old) = self.http.take() {
                old.shutdown();
            }
            if let Some(socket) = http_socket {
                self.http = Some(start_http(socket, self.observed.clone())?);
            }
        }
        self.config = new;
        Ok(summary)
    }

    /// Binds the monitoring endpoint's new address (the old one stays until the reload is
    /// applied; moving to the same port again is fine since it is freed first).
    fn rebind_http(
        &mut self,
        addr: std::net::SocketAddr,
        file: &Path,
    ) -> Result<std::net::TcpListener, ListenerError> {
        let bind = || observe::bind(addr);
        match bind() {
            Ok(socket) => Ok(socket),
            Err(error) if self.http_addr().is_some_and(|old| old.port() == addr.port()) => {
                // The same port on another address, or a restart of the same one: free it.
                if let Some(old) = self.http.take() {
                    old.shutdown();
                }
                bind().map_err(|_| ListenerError::Http { file: file.to_path_buf(), addr, error })
            }
            Err(error) => Err(ListenerError::Http { file: file.to_path_buf(), addr, error }),
        }
    }

    /// Hands the table its new groups and waits until it has applied and published them.
    fn reconfigure_table(&self, slots: Vec<(u32, GroupConfig)>) {
        let (done, applied) = crossbeam_channel::bounded(1);
        if self.table_control.send(TableControl::Reconfigure { slots, done }).is_err() {
            return;
        }
        // An empty batch wakes the table, which takes control orders before batches.
        if let Some(input) = &self.table_input {
            let _ = input.send(Vec::new());
        }
        if applied.recv_timeout(TABLE_RECONFIGURE_WAIT).is_err() {
            tracing::warn!(
                "the group table took more than {TABLE_RECONFIGURE_WAIT:?} to apply the reload"
            );
        }
    }

    /// Stops sources, lets the table deliver its last changes, stops outputs in reverse order.
    pub fn shutdown(mut self) {
        if let Some(http) = self.http.take() {
            http.shutdown();
        }
        drop(self.heartbeat_stop.take());
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.join();
        }
        RunningSource::stop_and_join(std::mem::take(&mut self.sources));
        // With every source gone and our sender dropped, the table's input disconnects: it
        // publishes and returns.
        drop(self.table_input.take());
        if let Some(table) = self.table.take() {
            let _ = table.join();
        }
        let _ = self.reporter_stop.send(());
        if let Some(reporter) = self.reporter.take() {
            let _ = reporter.join();
        }
        tracing::info!("datagram totals: {}", self.stats.read());
        self.outputs.shutdown(OUTPUT_STOP_GRACE);
        tracing::info!("listener stopped");
    }
}

/// `2 group(s), 17 member(s)`, from the published view.
fn status_of(view: &plugin_host::SharedView) -> String {
    let view = view.load();
    let members: usize = view.groups.iter().map(|group| group.members.len()).sum();
    format!("{} group(s), {members} member(s)", view.groups.len())
}

/// Starts the monitoring endpoint on `socket`, serving every metric family there is.
fn start_http(
    socket: std::net::TcpListener,
    observed: Observed,
) -> Result<HttpServer, ListenerError> {
    let mut metrics = Metrics::new(&observed);
    metrics.add(Box::new(PluginMetrics(observed.outputs.clone())));
    let server = HttpServer::start(socket, Routes::new(observed, metrics))
        .map_err(|e| ListenerError::Setup(format!("cannot start the http thread: {e}")))?;
    tracing::info!("monitoring on http://{}", server.local_addr());
    Ok(server)
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
