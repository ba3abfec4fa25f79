//! The writer thread: it alone touches the hosts file, so the host's delivery thread never
//! waits for the disk.
//!
//! The delivery thread submits the member lists of the mapped groups that changed; the writer
//! edits the kept text of the file ([`HostsText`]) and writes it if that changed anything (a
//! join and a leave that cancel out cost no write). Updates are paced by their own cost (the
//! edit and the copy to the file), more than proportionally for a large file (see
//! `UPDATE_COST_FACTOR`): a small file is rewritten within a millisecond of a change;
//! a file of a million lines is not rewritten dozens of times a second while a fleet starts
//! up. Every `interval` it also compares the file on disk with the wanted content and rewrites
//! it if they differ, so an edit or a removal by someone else is undone, and a write that
//! failed is retried; an identical file is left alone. At stop it makes that same check once
//! more, then ends.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rgap_plugin_api::{Counter, HostHandle, MemberList};
use rgap_plugin_kit::pacing::{thread_cpu_time, CostPacer};

use crate::atomic;
use crate::hosts_text::HostsText;
use crate::render::Layout;

/// After an update whose edit and copy to the file cost `t` of CPU, the next waits `t *
/// UPDATE_COST_FACTOR * (1 + t / UPDATE_COST_KNEE)`, at most `MAX_UPDATE_PAUSE` (see
/// `CostPacer::with_knee`): a file of a few hundred lines (µs) follows changes within a
/// millisecond, while one of a million lines (about 2 ms to edit, several to copy) is
/// rewritten about once a second while a fleet floods in, not after every change.
const UPDATE_COST_FACTOR: u32 = 100;
const UPDATE_COST_KNEE: Duration = Duration::from_millis(1);
const MAX_UPDATE_PAUSE: Duration = Duration::from_secs(1);

/// What the delivery thread and the writer share.
#[derive(Default)]
struct State {
    /// The newest member list of each mapping (by index) submitted since the writer last
    /// looked, each mapping once: `slots[i]` is where mapping `i` is in `lists`, if it is.
    lists: Vec<(usize, MemberList)>,
    slots: Vec<Option<usize>>,
    /// `lists` is not empty.
    changed: bool,
    stopping: bool,
}

impl State {
    /// Takes in `lists`, newer than those held.
    fn merge(&mut self, lists: Vec<(usize, MemberList)>) {
        for (at, list) in lists {
            if self.slots.len() <= at {
                self.slots.resize(at + 1, None);
            }
            match self.slots[at] {
                Some(slot) => self.lists[slot].1 = list,
                None => {
                    self.slots[at] = Some(self.lists.len());
                    self.lists.push((at, list));
                }
            }
        }
    }

    fn take(&mut self) -> Vec<(usize, MemberList)> {
        for &(at, _) in &self.lists {
            self.slots[at] = None;
        }
        std::mem::take(&mut self.lists)
    }
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

    /// Hands over the member lists of the mappings (by index) whose group changed, once
    /// every mapped group is ready (the first time, of every mapping); each replaces any
    /// list of the same mapping not yet shown.
    pub fn submit(&self, lists: Vec<(usize, MemberList)>) {
        let mut state = self.shared.lock();
        state.merge(lists);
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
        CostPacer::new(UPDATE_COST_FACTOR, MAX_UPDATE_PAUSE).with_knee(UPDATE_COST_KNEE);
    // What the file should hold, kept and edited from change to change; written only once
    // every mapping has shown its group.
    let mut text = HostsText::new(layout);
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
            // Take what was submitted since the last update: on a change, or at stop when
            // pacing held a change back. A tick, or a stop with nothing new, takes nothing.
            let fresh = wake == Wake::Changed || (wake == Wake::Stop && state.changed);
            let submitted = if fresh { state.take() } else { Vec::new() };
            (wake, submitted)
        };
        let started = thread_cpu_time();
        let mut edited = false;
        for (mapping, members) in submitted {
            // The list is let go at once, so the listener can reuse its memory.
            edited |= text.show(mapping, &members);
        }
        if edited {
            file.wanted_changed();
        }
        let edit_cost = thread_cpu_time().saturating_sub(started);
        let mut copy_cost = Duration::ZERO;
        if text.is_complete() {
            let wanted = text.pieces();
            match wake {
                Wake::Changed => copy_cost = file.write_if_changed(&wanted),
                Wake::Tick | Wake::Stop => file.assert_content(&wanted, wake == Wake::Tick),
            }
        }
        match wake {
            Wake::Stop => return,
            Wake::Tick => next_tick = Instant::now() + interval,
            Wake::Changed => {
                let cost = thread_cpu_time().saturating_sub(started);
                tracing::debug!(
                    "updated the hosts file in {cost:?} of CPU ({edit_cost:?} editing the \
                     text, {copy_cost:?} copying it to the file)"
                );
                // Paced by the work that grows with the file: editing and copying it. The
                // syncs and the rename cost about the same for any file and mostly wait for
                // the disk, which delays the next update by itself.
                pacer.record(edit_cost + copy_cost);
            }
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
        TargetFile { path, mode, up_to_date: false, ever_written: false, failing: false, metrics }
    }

    /// The wanted content is new: the file no longer holds it.
    fn wanted_changed(&mut self) {
        self.up_to_date = false;
    }

    /// Writes `wanted` unless the file already got it; the CPU spent copying it (see
    /// [`atomic::replace`]).
    fn write_if_changed(&mut self, wanted: &[&[u8]]) -> Duration {
        if self.up_to_date {
            return Duration::ZERO;
        }
        self.write(wanted, false)
    }

    /// Rewrites the file if what is on disk is not `wanted` (edited, removed, never written).
    fn assert_content(&mut self, wanted: &[&[u8]], periodic: bool) {
        if regular_file_holds(&self.path, wanted).unwrap_or(false) {
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
        let _ = self.write(wanted, periodic);
    }

    /// Writes `wanted`; the CPU spent copying it, if it was written.
    fn write(&mut self, wanted: &[&[u8]], periodic: bool) -> Duration {
        match atomic::replace(&self.path, wanted, self.mode) {
            Ok(copied) => {
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
                copied
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
                Duration::ZERO
            }
        }
    }
}

/// Whether `path` is a regular file holding exactly `wanted` (its pieces one after the other),
/// read a block at a time rather than whole: the file can be tens of megabytes. Anything
/// planted there instead counts as "not our file" (an error), so it gets replaced: a link is
/// not followed (its target could hold the wanted text today and other text tomorrow), and a
/// FIFO or device is not read (an open without `O_NONBLOCK` would wait for a writer forever).
fn regular_file_holds(path: &Path, wanted: &[&[u8]]) -> io::Result<bool> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    let length: usize = wanted.iter().map(|piece| piece.len()).sum();
    if metadata.len() != length as u64 {
        return Ok(false);
    }
    let mut block = vec![0u8; 64 * 1024];
    let mut rest = wanted.iter().copied();
    let mut expected: &[u8] = &[];
    loop {
        let read = match file.read(&mut block) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if read == 0 {
            return Ok(expected.is_empty() && rest.next().is_none());
        }
        let mut got = &block[..read];
        while !got.is_empty() {
            if expected.is_empty() {
                match rest.next() {
                    Some(piece) => expected = piece,
                    // Longer than wanted (it grew since we looked at its length).
                    None => return Ok(false),
                }
                continue;
            }
            let n = got.len().min(expected.len());
            if got[..n] != expected[..n] {
                return Ok(false);
            }
            got = &got[n..];
            expected = &expected[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        let wanted: &[&[u8]] = &[b"1.2.3.4 ", b"worker\n"];
        std::fs::write(&file, "1.2.3.4 worker\n").unwrap();
        assert!(regular_file_holds(&file, wanted).unwrap());

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(regular_file_holds(&link, wanted).is_err());

        // Returns at once instead of waiting for a writer.
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        assert!(regular_file_holds(&fifo, wanted).is_err());
    }

    #[test]
    fn the_file_is_compared_with_the_pieces_block_by_block() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        let lines: Vec<String> =
            (0..20_000).map(|n| format!("10.1.{}.{} w\n", n / 256, n % 256)).collect();
        let pieces: Vec<&[u8]> = lines.iter().map(|line| line.as_bytes()).collect();
        let mut content = lines.concat().into_bytes();
        std::fs::write(&file, &content).unwrap();
        assert!(regular_file_holds(&file, &pieces).unwrap());
        // One byte changed past the first block, then one missing.
        content[150_000] = b'9';
        std::fs::write(&file, &content).unwrap();
        assert!(!regular_file_holds(&file, &pieces).unwrap());
        content.pop();
        std::fs::write(&file, &content).unwrap();
        assert!(!regular_file_holds(&file, &pieces).unwrap());
        assert!(!regular_file_holds(&file, &[]).unwrap());
    }
}
