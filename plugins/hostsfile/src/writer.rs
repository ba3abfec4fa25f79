//! The writer thread: it alone touches the hosts file, so the host's delivery thread never
//! waits for the disk.
//!
//! The delivery thread submits copies of the mapped groups; the writer renders the file and
//! writes it if it differs from what it last wrote (a snapshot that changes nothing, e.g. a
//! refresh, costs no write). Rendering is paced by its own cost, more than proportionally
//! for a large file (see `RENDER_COST_FACTOR`): a small file is rewritten within a
//! millisecond of a change; a file of 100 000 lines is not re-sorted and rewritten dozens of
//! times a second while a fleet starts up. Every `interval` it also compares the file on disk with the
//! wanted content and rewrites it if they differ, so an edit or a removal by someone else is
//! undone, and a write that failed is retried; an identical file is left alone. At stop it
//! makes that same check once more, then ends.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rgap_plugin_api::{Counter, HostHandle};
use rgap_plugin_kit::pacing::{thread_cpu_time, CostPacer};

use crate::atomic;
use crate::render::{trim_excess, GroupCopy, Layout, SortScratch};

/// After a render that cost `t` of CPU, the next waits `t * RENDER_COST_FACTOR * (1 + t /
/// RENDER_COST_KNEE)`, at most `MAX_RENDER_PAUSE` (see `CostPacer::with_knee`): a file of a few hundred lines (tens of
/// µs) follows changes within milliseconds, spending at most 1 % of the writer's time, while
/// one of 100 000 lines (about 5 ms to sort and format) is rewritten about once a second while
/// a fleet floods in, not ten times (each rewrite also copies megabytes to the disk).
const RENDER_COST_FACTOR: u32 = 100;
const RENDER_COST_KNEE: Duration = Duration::from_millis(1);
const MAX_RENDER_PAUSE: Duration = Duration::from_secs(1);

/// What the delivery thread and the writer share.
#[derive(Default)]
struct State {
    /// The groups to render next; `None` until every mapped group is ready.
    submitted: Option<Vec<GroupCopy>>,
    /// `submitted` changed since the writer last looked.
    changed: bool,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the writer thread.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread that keeps `path` up to date (written with `mode`, see
    /// [`atomic::replace`]), logging as this plugin instance.
    pub fn spawn(
        path: PathBuf,
        mode: Option<u32>,
        interval: Duration,
        layout: Arc<Layout>,
        host: HostHandle,
        metrics: Metrics,
    ) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread =
            std::thread::Builder::new().name("rgap hostsfile writer".into()).spawn(move || {
                host.in_scope(|| {
                    let mut file = TargetFile::new(path, mode, metrics);
                    write_loop(&mut file, interval, &layout, &thread_shared);
                })
            })?;
        Ok(Writer { shared, thread: Some(thread) })
    }

    /// Hands over the groups to render; replaces any not yet rendered.
    pub fn submit(&self, groups: Vec<GroupCopy>) {
        let mut state = self.shared.lock();
        state.submitted = Some(groups);
        let already_pending = std::mem::replace(&mut state.changed, true);
        drop(state);
        // A change already pending means the writer knows and is waiting for its pacing (or
        // rendering): waking it for each of a burst of snapshots would only cost switches.
        if !already_pending {
            self.shared.wake.notify_one();
        }
    }

    /// Makes the final write (if there is anything to write) and ends the thread.
    pub fn stop(&mut self) -> Result<(), &'static str> {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| "the hostsfile writer thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Why the writer woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// New content was published: write it if it differs from what was last written.
    Changed,
    /// The interval passed: make sure the file on disk holds the wanted content.
    Tick,
    /// Stop: as for a tick, then end.
    Stop,
}

fn write_loop(file: &mut TargetFile, interval: Duration, layout: &Layout, shared: &Shared) {
    let mut next_tick = Instant::now() + interval;
    let mut pacer =
        CostPacer::new(RENDER_COST_FACTOR, MAX_RENDER_PAUSE).with_knee(RENDER_COST_KNEE);
    // What the file should hold (`None` until there is something to write), and the buffers
    // the next render goes into: kept from render to render, so that a file of 200 000 lines
    // costs no fresh megabytes (and their page faults) each time.
    let mut wanted: Option<Vec<u8>> = None;
    let mut rendered = Vec::new();
    let mut scratch = SortScratch::default();
    loop {
        let (wake, submitted) = {
            let mut state = shared.lock();
            let wake = loop {
                if state.stopping {
                    break Wake::Stop;
                }
                let now = Instant::now();
                if state.changed && pacer.is_ready(now) {
                    state.changed = false;
                    break Wake::Changed;
                }
                if now >= next_tick {
                    break Wake::Tick;
                }
                let until = if state.changed { pacer.next_at().min(next_tick) } else { next_tick };
                state = shared
                    .wake
                    .wait_timeout(state, until - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            };
            // Render what was submitted since the last render: on a change, or at stop when
            // pacing held a change back. A tick, or a stop with nothing new, renders nothing.
            let fresh = wake == Wake::Changed || (wake == Wake::Stop && state.changed);
            let submitted = if fresh { state.submitted.clone() } else { None };
            (wake, submitted)
        };
        let started = thread_cpu_time();
        if let Some(groups) = submitted {
            let snapshots: Vec<_> = groups.iter().map(GroupCopy::snapshot).collect();
            let ready = layout.render_into(&snapshots, &mut rendered, &mut scratch).is_ok();
            if ready && wanted.as_ref() != Some(&rendered) {
                // The previous content's buffer becomes the next render's.
                let previous = wanted.replace(std::mem::take(&mut rendered));
                rendered = previous.unwrap_or_default();
                trim_excess(&mut rendered, wanted.as_ref().map_or(0, Vec::len));
                file.wanted_changed();
            }
        }
        // Paced by the CPU work of rendering only: the write that follows waits on the disk
        // (fsync), which costs no CPU and already delays the next render by itself.
        let render_cost = thread_cpu_time().saturating_sub(started);
        if let Some(wanted) = &wanted {
            tracing::debug!("rendered {} bytes in {render_cost:?} of CPU", wanted.len());
            match wake {
                Wake::Changed => file.write_if_changed(wanted),
                Wake::Tick | Wake::Stop => file.assert_content(wanted, wake == Wake::Tick),
            }
        }
        match wake {
            Wake::Stop => return,
            Wake::Tick => next_tick = Instant::now() + interval,
            Wake::Changed => pacer.record(render_cost),
        }
    }
}

/// The hosts file and what the writer knows of it.
struct TargetFile {
    path: PathBuf,
    /// The spec's `mode`, if set.
    mode: Option<u32>,
    /// The file held the wanted content after our last write or check.
    up_to_date: bool,
    /// A write has succeeded before (the first one is worth an info line).
    ever_written: bool,
    /// The last write failed; a success is worth an info line.
    failing: bool,
    /// The file as last read back, kept for its memory.
    on_disk: Vec<u8>,
    metrics: Metrics,
}

/// What the writer counts, exposed as `rgap_plugin_hostsfile_<name>`.
pub struct Metrics {
    /// `writes_total`: files written (renamed into place).
    pub writes: Counter,
    /// `write_errors_total`: writes that failed.
    pub write_errors: Counter,
}

impl TargetFile {
    fn new(path: PathBuf, mode: Option<u32>, metrics: Metrics) -> TargetFile {
        TargetFile {
            path,
            mode,
            up_to_date: false,
            ever_written: false,
            failing: false,
            on_disk: vec![],
            metrics,
        }
    }

    /// The wanted content is new: the file no longer holds it.
    fn wanted_changed(&mut self) {
        self.up_to_date = false;
    }

    /// Writes `wanted` unless the file already got it.
    fn write_if_changed(&mut self, wanted: &[u8]) {
        if !self.up_to_date {
            self.write(wanted, false);
        }
    }

    /// Rewrites the file if what is on disk is not `wanted` (edited, removed, never written).
    fn assert_content(&mut self, wanted: &[u8], periodic: bool) {
        self.on_disk.clear();
        trim_excess(&mut self.on_disk, wanted.len());
        if read_regular_file(&self.path, &mut self.on_disk).is_ok() && self.on_disk == wanted {
            self.up_to_date = true;
            return;
        }
        // The file held what we wanted and no longer does: someone else edited or removed
        // it. (After a failed write `up_to_date` is false: that write is simply retried.)
        if self.up_to_date {
            tracing::info!(
                "{} was changed or removed by someone else; rewriting it",
                self.path.display()
            );
        }
        self.write(wanted, periodic);
    }

    fn write(&mut self, wanted: &[u8], periodic: bool) {
        match atomic::replace(&self.path, wanted, self.mode) {
            Ok(()) => {
                self.metrics.writes.inc();
                if self.failing {
                    tracing::info!("wrote {} again", self.path.display());
                } else if !self.ever_written {
                    tracing::info!("wrote {}", self.path.display());
                } else {
                    tracing::debug!("wrote {}", self.path.display());
                }
                self.failing = false;
                self.ever_written = true;
                self.up_to_date = true;
            }
            Err(error) => {
                self.metrics.write_errors.inc();
                // Once when the trouble starts, then once per interval, not once per change.
                if !self.failing || periodic {
                    tracing::warn!(
                        "cannot update {}: {error}; retrying at the next change or interval",
                        self.path.display()
                    );
                }
                self.failing = true;
                self.up_to_date = false;
            }
        }
    }
}

/// Reads `path` into `into` if it is a regular file. Anything planted there instead counts as
/// "not our file" (an error), so it gets replaced: a link is not followed (its target could
/// hold the wanted text today and other text tomorrow), and a FIFO or device is not read (an
/// open without `O_NONBLOCK` would wait for a writer forever).
fn read_regular_file(path: &Path, into: &mut Vec<u8>) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    file.read_to_end(into).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "1.2.3.4 worker\n").unwrap();
        let mut content = Vec::new();
        read_regular_file(&file, &mut content).unwrap();
        assert_eq!(content, b"1.2.3.4 worker\n");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read_regular_file(&link, &mut Vec::new()).is_err());

        // Returns at once instead of waiting for a writer.
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        assert!(read_regular_file(&fifo, &mut Vec::new()).is_err());
    }
}
