//! The plugin host: finds output plugin files, loads them, creates one instance per
//! configured output, and feeds each from its own delivery thread. It knows shared objects
//! and threads, not sockets: the group table hands it events and a published view.

mod delivery;
mod discovery;
mod host_impl;
mod listing;
mod loader;
mod status;
mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rgap_plugin_api::Event;

pub use delivery::EVENT_QUEUE_CAPACITY;
pub use discovery::{find_plugin, search_dirs, PLUGIN_PATH_ENV, SYSTEM_PLUGIN_DIR};
pub use host_impl::StatsSource;
pub use listing::{write_listing, write_listing_for};
pub use loader::{load, LoadError, LoadedPlugin};
pub use status::OutputStatus;
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
    mailbox: Arc<Mailbox>,
    status: Arc<OutputStatus>,
    thread: Option<JoinHandle<()>>,
    finished: crossbeam_channel::Receiver<()>,
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
        stats: StatsSource,
    ) -> Result<PluginHost, StartError> {
        let mut deliveries = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            let prepared = prepare(index, config, dirs, &view, &stats);
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

    /// The status of every output, in config order.
    pub fn statuses(&self) -> Vec<Arc<OutputStatus>> {
        self.outputs.iter().map(|output| output.status.clone()).collect()
    }

    /// Hands `events` (possibly none) and a new snapshot to every output; never blocks.
    pub fn notify(&self, events: &[Event]) {
        for output in &self.outputs {
            output.mailbox.push(events);
        }
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

fn prepare(
    index: usize,
    config: &OutputConfig,
    dirs: &[PathBuf],
    view: &SharedView,
    stats: &StatsSource,
) -> Result<(Delivery, rgap_plugin_api::OutputBox), StartError> {
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
    let plugin =
        load(&path).map_err(|source| StartError::Load { index, kind: kind.clone(), source })?;
    let name = format!("{kind}#{index}");
    let status = Arc::new(OutputStatus::new(&name, &kind));
    let delivery = Delivery {
        host: host_impl::host_for(&name, stats.clone()),
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
    let mailbox = delivery.mailbox.clone();
    let status = delivery.status.clone();
    let thread = std::thread::Builder::new().name(format!("output {name}")).spawn(move || {
        delivery.run(output);
        let _ = done.send(());
    })?;
    Ok(RunningOutput { name, mailbox, status, thread: Some(thread), finished })
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
