//! The plugin host: finds output plugin files, loads them, creates one instance per
//! configured output, and feeds each from its own delivery thread. It knows shared objects
//! and threads, not sockets: the group table hands it events and a published view.

mod delivery;
mod discovery;
mod host_impl;
mod listing;
mod loader;
mod status;
mod trust;
mod validate;
mod view;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rgap_plugin_api::{Event, MetricRegistry};

pub use delivery::EVENT_QUEUE_CAPACITY;
pub use discovery::{find_plugin, search_dirs, PLUGIN_PATH_ENV, SYSTEM_PLUGIN_DIR};
pub use host_impl::{HostEnv, StatsSource};
pub use listing::{write_listing, write_listing_for};
pub use loader::{compatible_api_versions, load, LoadError, LoadedPlugin};
pub use status::OutputStatus;
pub use trust::{check_plugin_file, is_secure_execution, Untrusted};
pub use validate::{validate_outputs, SpecCheck};
pub use view::{shared_view, GroupState, GroupsView, SharedView};

use delivery::{Delivery, Mailbox};

/// One configured output: its `kind` and the YAML text of its `spec` (empty if absent).
#[derive(Debug, Clone)]
pub struct OutputConfig {
    pub kind: String,
    pub spec_yaml: String,
}

/// Why an output could not be started; one line naming the output, its kind and file.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "outputs[{index}]: kind \"{kind}\" is not a plugin kind: use letters, digits, _ and -"
    )]
    BadKind { index: usize, kind: String },
    #[error("outputs[{index}]: kind \"{kind}\" not found: no {file} in {}", searched_list(.searched))]
    NotFound { index: usize, kind: String, file: String, searched: Vec<PathBuf> },
    #[error("outputs[{index}]: kind \"{kind}\": {source}")]
    Load { index: usize, kind: String, source: LoadError },
    #[error("outputs[{index}]: kind \"{kind}\" ({path}): {message}")]
    Create { index: usize, kind: String, path: PathBuf, message: String },
    #[error("output {name}: cannot start its delivery thread: {message}")]
    Thread { name: String, message: String },
}

fn searched_list(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|dir| dir.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// A running output: its mailbox and its delivery thread.
struct RunningOutput {
    name: String,
    /// What it was made from: an output whose kind and spec are unchanged by a reload keeps
    /// running untouched.
    config: OutputConfig,
    wants_events: bool,
    metrics: Arc<MetricRegistry>,
    mailbox: Arc<Mailbox>,
    status: Arc<OutputStatus>,
    thread: Mutex<Option<JoinHandle<()>>>,
    finished: crossbeam_channel::Receiver<()>,
}

impl RunningOutput {
    /// Delivers what is queued, calls `stop()` and waits up to `grace` for the thread; one
    /// stuck longer is abandoned with a warning so that shutdown and reloads stay prompt.
    fn stop(&self, grace: Duration) {
        self.mailbox.request_stop();
        let started = Instant::now();
        match self.finished.recv_timeout(grace) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = thread.join();
                }
                tracing::debug!("output {} stopped in {:?}", self.name, started.elapsed());
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "output {} did not stop within {grace:?}; leaving it behind",
                    self.name
                );
            }
        }
    }
}

/// The metrics one output instance registered, for the listener to expose.
#[derive(Clone)]
pub struct OutputMetrics {
    /// The instance name, e.g. `dns#4`.
    pub output: String,
    /// Its plugin kind, e.g. `dns`.
    pub kind: String,
    pub registry: Arc<MetricRegistry>,
}

/// How a reload changed the outputs: `outputs +added -removed ~changed =kept`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputChanges {
    pub added: usize,
    pub removed: usize,
    /// New instances that replaced one of the same kind with another spec.
    pub changed: usize,
    /// Instances left running untouched.
    pub kept: usize,
}

/// All running outputs, in config order. The list is swapped whole on a reload, so the
/// group table's `notify` never waits for one.
pub struct PluginHost {
    outputs: ArcSwap<Vec<Arc<RunningOutput>>>,
}

impl PluginHost {
    /// Loads and creates every output, then starts their delivery threads. Fails on the
    /// first output that cannot be loaded or created, after stopping those already made.
    pub fn start(
        configs: &[OutputConfig],
        dirs: &[PathBuf],
        view: SharedView,
        env: &HostEnv,
    ) -> Result<PluginHost, StartError> {
        let wanted: Vec<(usize, &OutputConfig)> = configs.iter().enumerate().collect();
        let outputs = start_all(&wanted, dirs, &view, env)?;
        Ok(PluginHost { outputs: ArcSwap::from_pointee(outputs) })
    }

    /// Number of running outputs.
    pub fn len(&self) -> usize {
        self.outputs.load().len()
    }

    /// True when no output is configured.
    pub fn is_empty(&self) -> bool {
        self.outputs.load().is_empty()
    }

    /// The instance names, in config order.
    pub fn names(&self) -> Vec<String> {
        self.outputs.load().iter().map(|output| output.name.clone()).collect()
    }

    /// The status of every output, in config order.
    pub fn statuses(&self) -> Vec<Arc<OutputStatus>> {
        self.outputs.load().iter().map(|output| output.status.clone()).collect()
    }

    /// Hands `events` (possibly none) and a new snapshot to every output; never blocks.
    /// Outputs that work from snapshots alone are not even queued the events.
    pub fn notify(&self, events: &[Event]) {
        for output in self.outputs.load().iter() {
            output.mailbox.push(if output.wants_events { events } else { &[] });
        }
    }

    /// The metrics every output registered, in config order.
    pub fn output_metrics(&self) -> Vec<OutputMetrics> {
        self.outputs
            .load()
            .iter()
            .map(|output| OutputMetrics {
                output: output.name.clone(),
                kind: output.config.kind.clone(),
                registry: output.metrics.clone(),
            })
            .collect()
    }

    /// Makes the running outputs those of `configs`, all or nothing: an output whose kind and
    /// spec are unchanged keeps running (same instance); new and changed ones are created
    /// first, each starting from a snapshot; only when all of them started are the replaced
    /// and removed ones stopped. If one fails, those just made are stopped and the running
    /// set is left exactly as it was.
    pub fn reconcile(
        &self,
        configs: &[OutputConfig],
        dirs: &[PathBuf],
        view: &SharedView,
        env: &HostEnv,
        grace: Duration,
    ) -> Result<OutputChanges, StartError> {
        let old = self.outputs.load_full();
        let mut unclaimed: Vec<Option<&Arc<RunningOutput>>> = old.iter().map(Some).collect();
        let mut kept: Vec<Option<Arc<RunningOutput>>> = Vec::with_capacity(configs.len());
        let mut to_start = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let same = unclaimed.iter_mut().find(|slot| {
                slot.is_some_and(|output| {
                    output.config.kind == config.kind && output.config.spec_yaml == config.spec_yaml
                })
            });
            match same.and_then(Option::take) {
                Some(output) => kept.push(Some(output.clone())),
                None => {
                    kept.push(None);
                    to_start.push((index, config));
                }
            }
        }
        let started = start_all(&to_start, dirs, view, env)?;
        let retired: Vec<Arc<RunningOutput>> = unclaimed.into_iter().flatten().cloned().collect();
        let mut changes = OutputChanges {
            kept: kept.iter().filter(|slot| slot.is_some()).count(),
            ..OutputChanges::default()
        };
        let mut retired_kinds: Vec<&str> =
            retired.iter().map(|output| output.config.kind.as_str()).collect();
        for output in &started {
            match retired_kinds.iter().position(|kind| *kind == output.config.kind) {
                Some(position) => {
                    retired_kinds.remove(position);
                    changes.changed += 1;
                }
                None => changes.added += 1,
            }
        }
        changes.removed = retired_kinds.len();
        let mut started = started.into_iter();
        let outputs: Vec<Arc<RunningOutput>> = kept
            .into_iter()
            .map(|slot| slot.unwrap_or_else(|| started.next().expect("one started per gap")))
            .collect();
        self.outputs.store(Arc::new(outputs));
        for output in retired.iter().rev() {
            output.stop(grace);
        }
        Ok(changes)
    }

    /// Delivers what is queued, then stops outputs in reverse order, waiting up to `grace`
    /// for each.
    pub fn shutdown(&self, grace: Duration) {
        let outputs = self.outputs.swap(Arc::new(Vec::new()));
        for output in outputs.iter().rev() {
            output.stop(grace);
        }
    }
}

/// Creates `wanted` (config index, config) and starts their delivery threads; on any
/// failure stops those already made and returns the error.
fn start_all(
    wanted: &[(usize, &OutputConfig)],
    dirs: &[PathBuf],
    view: &SharedView,
    env: &HostEnv,
) -> Result<Vec<Arc<RunningOutput>>, StartError> {
    let mut deliveries = Vec::with_capacity(wanted.len());
    for &(index, config) in wanted {
        match prepare(index, config, dirs, view, env) {
            Ok(delivery) => deliveries.push(delivery),
            Err(error) => {
                for (delivery, mut output) in deliveries.into_iter().rev() {
                    let _ = output.stop();
                    drop(delivery);
                }
                return Err(error);
            }
        }
    }
    let mut running: Vec<Arc<RunningOutput>> = Vec::with_capacity(deliveries.len());
    for (delivery, output) in deliveries {
        let name = delivery.name.clone();
        match spawn(delivery, output) {
            Ok(output) => running.push(Arc::new(output)),
            Err(error) => {
                for output in running.iter().rev() {
                    output.stop(THREAD_FAILURE_GRACE);
                }
                return Err(StartError::Thread { name, message: error.to_string() });
            }
        }
    }
    Ok(running)
}

/// Finds and loads the plugin of `outputs[index]`.
fn locate(
    index: usize,
    config: &OutputConfig,
    dirs: &[PathBuf],
) -> Result<(PathBuf, LoadedPlugin), StartError> {
    let kind = config.kind.clone();
    // The kind becomes part of a file name: "../x" or "a/b" must not reach other directories.
    if !is_valid_kind(&kind) {
        return Err(StartError::BadKind { index, kind });
    }
    let Some(path) = find_plugin(&kind, dirs) else {
        return Err(StartError::NotFound {
            index,
            file: rgap_plugin_api::plugin_file_name(&kind),
            kind,
            searched: dirs.to_vec(),
        });
    };
    let plugin = load(&path).map_err(|source| StartError::Load { index, kind, source })?;
    Ok((path, plugin))
}

fn prepare(
    index: usize,
    config: &OutputConfig,
    dirs: &[PathBuf],
    view: &SharedView,
    env: &HostEnv,
) -> Result<(Delivery, rgap_plugin_api::OutputBox), StartError> {
    let (path, plugin) = locate(index, config, dirs)?;
    let kind = config.kind.clone();
    let name = format!("{kind}#{index}");
    let metrics = Arc::new(MetricRegistry::default());
    let status = Arc::new(OutputStatus::new(&name, &kind));
    let delivery = Delivery {
        host: host_impl::InstanceHost::new(&name, env, metrics.clone()),
        metrics,
        name,
        plugin,
        spec_yaml: config.spec_yaml.clone(),
        view: view.clone(),
        mailbox: Arc::new(Mailbox::default()),
        status,
    };
    // Every instance starts from a snapshot of the current state.
    delivery.mailbox.push(&[]);
    let output = delivery.create().map_err(|error| StartError::Create {
        index,
        kind,
        path,
        message: error.to_string(),
    })?;
    Ok((delivery, output))
}

/// Whether `kind` can name a plugin file: non-empty, letters, digits, `_` and `-` only.
pub fn is_valid_kind(kind: &str) -> bool {
    !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// How long outputs already running get to stop when a later one cannot get its thread.
const THREAD_FAILURE_GRACE: Duration = Duration::from_secs(5);

fn spawn(delivery: Delivery, output: rgap_plugin_api::OutputBox) -> std::io::Result<RunningOutput> {
    let (done, finished) = crossbeam_channel::bounded(1);
    let name = delivery.name.clone();
    let config = OutputConfig {
        kind: delivery.plugin.kind().to_owned(),
        spec_yaml: delivery.spec_yaml.clone(),
    };
    let wants_events = delivery.plugin.wants_events();
    let metrics = delivery.metrics.clone();
    let mailbox = delivery.mailbox.clone();
    let status = delivery.status.clone();
    let thread = std::thread::Builder::new().name(format!("output {name}")).spawn(move || {
        delivery.run(output);
        let _ = done.send(());
    })?;
    Ok(RunningOutput {
        name,
        config,
        wants_events,
        metrics,
        status,
        mailbox,
        thread: Mutex::new(Some(thread)),
        finished,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_cannot_leave_the_plugin_directories() {
        for kind in ["dns", "acme_audit", "my-output", "v2"] {
            assert!(is_valid_kind(kind), "{kind}");
        }
        for kind in ["", "../dns", "a/b", "dns.so", "dns ", "/etc/x"] {
            assert!(!is_valid_kind(kind), "{kind:?}");
        }
    }
}
