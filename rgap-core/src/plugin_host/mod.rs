//! The plugin host: finds output plugin files, loads them, creates one instance per
//! configured output, and feeds each from its own delivery thread. It knows shared objects
//! and threads, not sockets: the group table hands it events and a published view.

mod delivery;
mod discovery;
mod host_impl;
mod listing;
mod loader;
mod trust;
mod validate;
mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rgap_plugin_api::{Event, MetricRegistry};

pub use delivery::EVENT_QUEUE_CAPACITY;
pub use discovery::{find_plugin, search_dirs, PLUGIN_PATH_ENV, SYSTEM_PLUGIN_DIR};
pub use host_impl::{HostEnv, StatsSource};
pub use listing::{write_listing, write_listing_for};
pub use loader::{compatible_api_versions, load, LoadError, LoadedPlugin};
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
    kind: String,
    wants_events: bool,
    metrics: Arc<MetricRegistry>,
    mailbox: Arc<Mailbox>,
    thread: Option<JoinHandle<()>>,
    finished: crossbeam_channel::Receiver<()>,
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

/// All running outputs, in config order.
pub struct PluginHost {
    outputs: Vec<RunningOutput>,
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
        let mut deliveries = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            let prepared = prepare(index, config, dirs, &view, env);
            match prepared {
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
        let mut host = PluginHost { outputs: Vec::with_capacity(deliveries.len()) };
        for (delivery, output) in deliveries {
            let name = delivery.name.clone();
            match spawn(delivery, output) {
                Ok(running) => host.outputs.push(running),
                Err(error) => {
                    host.shutdown(THREAD_FAILURE_GRACE);
                    return Err(StartError::Thread { name, message: error.to_string() });
                }
            }
        }
        Ok(host)
    }

    /// Number of running outputs.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    /// True when no output is configured.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Hands `events` (possibly none) and a new snapshot to every output; never blocks.
    /// Outputs that work from snapshots alone are not even queued the events.
    pub fn notify(&self, events: &[Event]) {
        for output in &self.outputs {
            output.mailbox.push(if output.wants_events { events } else { &[] });
        }
    }

    /// The metrics every output registered, in config order.
    pub fn output_metrics(&self) -> Vec<OutputMetrics> {
        self.outputs
            .iter()
            .map(|output| OutputMetrics {
                output: output.name.clone(),
                kind: output.kind.clone(),
                registry: output.metrics.clone(),
            })
            .collect()
    }

    /// Delivers what is queued, then stops outputs in reverse order, waiting up to `grace`
    /// for each; an output stuck longer is abandoned with a warning so shutdown stays prompt.
    pub fn shutdown(mut self, grace: Duration) {
        while let Some(mut output) = self.outputs.pop() {
            output.mailbox.request_stop();
            let started = Instant::now();
            match output.finished.recv_timeout(grace) {
                Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    if let Some(thread) = output.thread.take() {
                        let _ = thread.join();
                    }
                    tracing::debug!("output {} stopped in {:?}", output.name, started.elapsed());
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        "output {} did not stop within {grace:?}; leaving it behind",
                        output.name
                    );
                }
            }
        }
    }
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
    let delivery = Delivery {
        host: host_impl::InstanceHost::new(&name, env, metrics.clone()),
        metrics,
        name,
        plugin,
        spec_yaml: config.spec_yaml.clone(),
        view: view.clone(),
        mailbox: Arc::new(Mailbox::default()),
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
    let kind = delivery.plugin.kind().to_owned();
    let wants_events = delivery.plugin.wants_events();
    let metrics = delivery.metrics.clone();
    let mailbox = delivery.mailbox.clone();
    let thread = std::thread::Builder::new().name(format!("output {name}")).spawn(move || {
        delivery.run(output);
        let _ = done.send(());
    })?;
    Ok(RunningOutput { name, kind, wants_events, metrics, mailbox, thread: Some(thread), finished })
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
