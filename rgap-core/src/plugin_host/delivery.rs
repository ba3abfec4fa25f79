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

use abi_stable::std_types::{RResult, RStr};
use rgap_plugin_api::{ErrorKind, Event, HostBox, OutputBox, PluginError};

use super::loader::LoadedPlugin;
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

/// Everything needed to (re-)create and feed one output instance.
pub struct Delivery {
    pub name: String,
    pub plugin: LoadedPlugin,
    pub spec_yaml: String,
    pub host: HostBox,
    pub view: SharedView,
    pub mailbox: Arc<Mailbox>,
}

impl Delivery {
    /// Creates an instance of the plugin from the spec.
    pub fn create(&self) -> Result<OutputBox, PluginError> {
        match (self.plugin.module.create())(RStr::from_str(&self.spec_yaml), self.host.clone()) {
            RResult::ROk(output) => Ok(output),
            RResult::RErr(error) => Err(error),
        }
    }

    /// The thread body: delivers until stopped, re-creating the instance after a panic.
    pub fn run(self, first: OutputBox) {
        let mut output = Some(first);
        let mut created_at = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let Some(instance) = output.as_mut() else {
                if self.mailbox.sleep_unless_stopped(backoff) {
                    return;
                }
                match self.create() {
                    Ok(instance) => {
                        tracing::info!(
                            "output {} re-created; delivering a fresh snapshot",
                            self.name
                        );
                        output = Some(instance);
                        created_at = Instant::now();
                        self.mailbox.restart_from_snapshot();
                    }
                    Err(error) => {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        tracing::error!(
                            "output {}: re-creating failed: {error}; next try in {backoff:?}",
                            self.name
                        );
                    }
                }
                continue;
            };
            let work = self.mailbox.take();
            if let Err(panic) = self.deliver(instance, &work) {
                // A long healthy run earns a fresh start of the backoff.
                if created_at.elapsed() > MAX_BACKOFF {
                    backoff = FIRST_BACKOFF;
                }
                tracing::error!(
                    "output {} panicked: {}; dropping it and re-creating it from its spec in {backoff:?}",
                    self.name,
                    panic.message
                );
                output = None;
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
    fn deliver(&self, output: &mut OutputBox, work: &Work) -> Result<(), PluginError> {
        if work.resync {
            self.check("on_event(Resync)", output.on_event(&Event::Resync))?;
        }
        for event in &work.events {
            self.check("on_event", output.on_event(event))?;
        }
        if work.snapshot || work.resync {
            let view = self.view.load_full();
            let groups = view.snapshots();
            self.check("on_snapshot", output.on_snapshot(groups.as_slice().into()))?;
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
