//! One delivery thread per output instance, fed through a bounded mailbox.
//!
//! The group table only ever pushes into the mailbox (a short lock, never a wait), so a slow
//! or stuck plugin cannot hold up ingestion. When the queue overflows, the queued events are
//! replaced by one `Resync` and a fresh snapshot; snapshot requests collapse into one. A
//! panicking instance is dropped and re-created from its spec with backoff (1 s doubling to
//! 60 s), starting again from a fresh snapshot, so a transient fault heals itself.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi_stable::std_types::RResult;
use rgap_plugin_api::{ErrorKind, Event, GroupSnapshot, MetricRegistry, OutputBox, PluginError};

use super::host_impl::InstanceHost;
use super::loader::LoadedPlugin;
use super::status::OutputStatus;
use super::view::SharedView;

/// Events an output may have queued before it is resynchronised instead.
pub const EVENT_QUEUE_CAPACITY: usize = 8192;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What is waiting for one output.
#[derive(Default)]
struct Pending {
    events: VecDeque<Event>,
    resync: bool,
    snapshot: bool,
    stop: bool,
}

/// The work taken in one go by the delivery thread.
struct Work {
    events: Vec<Event>,
    resync: bool,
    snapshot: bool,
    stop: bool,
}

/// The queue between the group table and one delivery thread.
#[derive(Default)]
pub struct Mailbox {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `events` and a snapshot after them. Never blocks on the plugin.
    pub fn push(&self, events: &[Event]) {
        let mut pending = self.lock();
        if !pending.resync {
            if pending.events.len() + events.len() > EVENT_QUEUE_CAPACITY {
                // The snapshot that follows the Resync covers everything dropped here.
                pending.events.clear();
                pending.resync = true;
            } else {
                pending.events.extend(events.iter().copied());
            }
        }
        pending.snapshot = true;
        drop(pending);
        self.wake.notify_one();
    }

    /// Asks the thread to deliver what is queued, call `stop()` and end.
    pub fn request_stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    /// Waits for work and takes all of it.
    fn take(&self) -> Work {
        let mut pending = self.lock();
        while !(pending.snapshot || pending.stop || pending.resync || !pending.events.is_empty()) {
            pending = self.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        let work = Work {
            events: pending.events.drain(..).collect(),
            resync: pending.resync,
            snapshot: pending.snapshot,
            stop: pending.stop,
        };
        pending.resync = false;
        pending.snapshot = false;
        work
    }

    /// Sleeps for `duration` unless a stop is requested first; true if it was.
    fn sleep_unless_stopped(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut pending = self.lock();
        while !pending.stop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            pending = self
                .wake
                .wait_timeout(pending, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Drops queued events and asks for a snapshot: a new instance starts from the truth.
    fn restart_from_snapshot(&self) {
        let mut pending = self.lock();
        pending.events.clear();
        pending.resync = false;
        pending.snapshot = true;
    }
}

/// The wait before re-creating an instance: 1 s, doubling after each attempt, at most 60 s.
///
/// Each wait is taken once: an instance that panics again soon after being re-created (or a
/// re-creation that fails) waits twice as long next time, so a plugin that panics on every
/// event is not re-created every second forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_BACKOFF }
    }
}

impl Backoff {
    /// The next wait, without using it up.
    fn peek(&self) -> Duration {
        self.next
    }

    /// The next wait; the one after it is twice as long, up to `MAX_BACKOFF`.
    fn take(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }
}

/// Everything needed to (re-)create and feed one output instance.
pub struct Delivery {
    pub name: String,
    pub plugin: LoadedPlugin,
    pub spec_yaml: String,
    pub host: InstanceHost,
    /// The instance's metrics; a re-created instance registers into the same one.
    pub metrics: Arc<MetricRegistry>,
    pub view: SharedView,
    pub mailbox: Arc<Mailbox>,
    pub status: Arc<OutputStatus>,
}

impl Delivery {
    /// Creates an instance of the plugin from the spec.
    pub fn create(&self) -> Result<OutputBox, PluginError> {
        self.plugin.create(&self.spec_yaml, &self.host)
    }

    /// The thread body: delivers until stopped, re-creating the instance after a panic.
    pub fn run(self, first: OutputBox) {
        let mut output = Some(first);
        let mut created_at = Instant::now();
        let mut backoff = Backoff::default();
        let mut snapshots = SnapshotBuffer::default();
        loop {
            let Some(instance) = output.as_mut() else {
                if self.mailbox.sleep_unless_stopped(backoff.take()) {
                    return;
                }
                match self.create() {
                    Ok(instance) => {
                        tracing::info!(
                            "output {} re-created; delivering a fresh snapshot",
                            self.name
                        );
                        output = Some(instance);
                        self.status.restarted();
                        created_at = Instant::now();
                        self.mailbox.restart_from_snapshot();
                    }
                    Err(error) => {
                        tracing::error!(
                            "output {}: re-creating failed: {error}; next try in {:?}",
                            self.name,
                            backoff.peek()
                        );
                    }
                }
                continue;
            };
            let work = self.mailbox.take();
            if let Err(panic) = self.deliver(instance, &work, &mut snapshots) {
                // A long healthy run earns a fresh start of the backoff.
                if created_at.elapsed() > MAX_BACKOFF {
                    backoff = Backoff::default();
                }
                tracing::error!(
                    "output {} panicked: {}; dropping it and re-creating it from its spec in {:?}",
                    self.name,
                    panic.message,
                    backoff.peek()
                );
                output = None;
                self.status.went_down();
                if work.stop {
                    return;
                }
                continue;
            }
            if work.stop {
                if let RResult::RErr(error) = instance.stop() {
                    tracing::warn!("output {}: stop failed: {error}", self.name);
                }
                return;
            }
        }
    }

    /// Delivers one batch in order; returns the error only if the plugin panicked.
    fn deliver(
        &self,
        output: &mut OutputBox,
        work: &Work,
        snapshots: &mut SnapshotBuffer,
    ) -> Result<(), PluginError> {
        // A plugin that works from snapshots alone gets no call per event: the snapshot
        // that follows carries everything, a `Resync` included.
        if work.resync {
            self.status.resynced();
        }
        if self.plugin.wants_events() {
            if work.resync {
                self.check("on_event(Resync)", output.on_event(&Event::Resync))?;
            }
            for event in &work.events {
                self.check("on_event", output.on_event(event))?;
            }
        }
        if work.snapshot || work.resync {
            let view = self.view.load_full();
            let mut groups = snapshots.take();
            view.snapshots_into(&mut groups);
            let delivered = self.check("on_snapshot", output.on_snapshot(groups.as_slice().into()));
            snapshots.keep(groups);
            delivered?;
        }
        Ok(())
    }

    /// Logs an ordinary failure and carries on; hands a panic back to the caller.
    fn check(&self, call: &str, result: RResult<(), PluginError>) -> Result<(), PluginError> {
        match result {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(error) if error.kind == ErrorKind::Panicked => Err(error),
            RResult::RErr(error) => {
                tracing::warn!("output {}: {call} failed: {error}", self.name);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(group: u64) -> Event {
        Event::Ready { group }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| backoff.take().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff.peek(), MAX_BACKOFF);
    }

    #[test]
    fn events_are_delivered_in_order_with_one_snapshot_after_them() {
        let mailbox = Mailbox::default();
        mailbox.push(&[ready(1), ready(2)]);
        mailbox.push(&[]);
        mailbox.push(&[ready(3)]);
        let work = mailbox.take();
        assert_eq!(work.events, [ready(1), ready(2), ready(3)]);
        assert!(work.snapshot && !work.resync && !work.stop);
    }

    #[test]
    fn overflow_becomes_one_resync_and_later_events_are_dropped_until_taken() {
        let mailbox = Mailbox::default();
        let burst = vec![ready(7); EVENT_QUEUE_CAPACITY];
        mailbox.push(&burst);
        mailbox.push(&[ready(8)]);
        mailbox.push(&[ready(9)]);
        let work = mailbox.take();
        assert!(work.resync && work.snapshot);
        assert!(work.events.is_empty(), "the snapshot after Resync replaces the events");
        // Once the resync is taken, events flow again.
        mailbox.push(&[ready(10)]);
        let work = mailbox.take();
        assert_eq!(work.events, [ready(10)]);
        assert!(!work.resync);
    }

    #[test]
    fn a_full_queue_is_still_accepted_without_resync() {
        let mailbox = Mailbox::default();
        mailbox.push(&vec![ready(1); EVENT_QUEUE_CAPACITY]);
        let work = mailbox.take();
        assert_eq!(work.events.len(), EVENT_QUEUE_CAPACITY);
        assert!(!work.resync);
    }

    #[test]
    fn a_restarted_instance_starts_from_a_snapshot_only() {
        let mailbox = Mailbox::default();
        mailbox.push(&vec![ready(1); EVENT_QUEUE_CAPACITY + 1]);
        mailbox.push(&[ready(2)]);
        mailbox.restart_from_snapshot();
        let work = mailbox.take();
        assert!(work.events.is_empty() && !work.resync && work.snapshot);
    }

    #[test]
    fn stop_is_seen_with_the_last_work_and_ends_a_backoff_sleep() {
        let mailbox = Arc::new(Mailbox::default());
        mailbox.push(&[ready(1)]);
        mailbox.request_stop();
        let work = mailbox.take();
        assert!(work.stop && work.snapshot);
        assert_eq!(work.events, [ready(1)]);
        // A stop requested during the backoff ends the sleep at once (a 1 h sleep would
        // make this test hang, not pass).
        assert!(mailbox.sleep_unless_stopped(Duration::from_secs(3600)));
    }

    #[test]
    fn take_waits_for_a_push_from_another_thread() {
        let mailbox = Arc::new(Mailbox::default());
        let pusher = {
            let mailbox = mailbox.clone();
            std::thread::spawn(move || mailbox.push(&[ready(4)]))
        };
        let work = mailbox.take();
        assert_eq!(work.events, [ready(4)]);
        pusher.join().unwrap();
    }
}

/// The memory of the last snapshot's list of groups, kept for the next one: with 10 000
/// groups the list is 480 KB, which malloc would map afresh (and page-fault in) each time.
#[derive(Default)]
struct SnapshotBuffer(Vec<GroupSnapshot<'static>>);

impl SnapshotBuffer {
    /// The empty buffer, to be filled with snapshots borrowing from a view.
    fn take<'a>(&mut self) -> Vec<GroupSnapshot<'a>> {
        // Empty, so nothing 'static is handed out as shorter-lived; collecting an empty
        // `Vec` into a `Vec` of a type of the same layout keeps its allocation.
        std::mem::take(&mut self.0).into_iter().map(|_| unreachable!("empty")).collect()
    }

    /// Takes back the buffer, emptied first, so it borrows nothing.
    fn keep(&mut self, mut groups: Vec<GroupSnapshot<'_>>) {
        groups.clear();
        self.0 = groups.into_iter().map(|_| unreachable!("emptied")).collect();
    }
}
