//! What the outside can see of each running output: whether an instance is up (not dropped
//! after a panic and waiting to be re-created), and how often it was re-created or
//! resynchronised. The delivery thread writes it; the monitoring endpoint reads it. Plain
//! atomics, so that reading never waits on a delivery.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The status of one output instance, e.g. `hostsfile#3`.
#[derive(Debug)]
pub struct OutputStatus {
    /// The instance name, `<kind>#<index in outputs>`.
    pub name: String,
    /// The plugin kind.
    pub kind: String,
    up: AtomicBool,
    restarts: AtomicU64,
    resyncs: AtomicU64,
}

impl OutputStatus {
    /// A status for an instance that is up.
    pub fn new(name: &str, kind: &str) -> OutputStatus {
        OutputStatus {
            name: name.to_owned(),
            kind: kind.to_owned(),
            up: AtomicBool::new(true),
            restarts: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
        }
    }

    /// Whether an instance is running (false between a panic and its re-creation).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Times the instance was re-created after a panic.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Times the instance was sent a `Resync` because it fell behind.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    pub(crate) fn went_down(&self) {
        self.up.store(false, Ordering::Relaxed);
    }

    pub(crate) fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.up.store(true, Ordering::Relaxed);
    }

    pub(crate) fn resynced(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
    }
}
