//! Per-group counters: announcements accepted, joins and leaves. The group table thread
//! adds to them as it applies announcements and expires members; the monitoring endpoint
//! reads them. Atomics in one slice indexed like the config's groups, so counting is one
//! uncontended add and never a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// One group's counters.
#[derive(Debug)]
pub struct GroupCounters {
    pub id: u64,
    accepted: AtomicU64,
    joins: AtomicU64,
    leaves: AtomicU64,
}

/// What one group's counters read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCounts {
    pub id: u64,
    pub accepted: u64,
    pub joins: u64,
    pub leaves: u64,
}

impl GroupCounters {
    pub fn new(id: u64) -> GroupCounters {
        GroupCounters {
            id,
            accepted: AtomicU64::new(0),
            joins: AtomicU64::new(0),
            leaves: AtomicU64::new(0),
        }
    }

    pub(crate) fn count_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_join(&self) {
        self.joins.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_leave(&self) {
        self.leaves.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> GroupCounts {
        GroupCounts {
            id: self.id,
            accepted: self.accepted.load(Ordering::Relaxed),
            joins: self.joins.load(Ordering::Relaxed),
            leaves: self.leaves.load(Ordering::Relaxed),
        }
    }
}

/// The counters of every group, in config order (the table's group index).
pub type GroupStats = std::sync::Arc<[GroupCounters]>;
