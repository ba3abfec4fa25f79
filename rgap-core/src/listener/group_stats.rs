//! Per-group counters: announcements accepted, joins and leaves. The group table thread
//! adds to them as it applies announcements and expires members; the monitoring endpoint
//! reads them. Atomics in one slice indexed like the config's groups.
//!
//! The table thread is the only writer, so a count is a plain load and store (no locked
//! read-modify-write per announcement); readers see each value whole, at most a moment old.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

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

    /// Only from the table thread (see the module doc), as the next three.
    pub(crate) fn count_accepted(&self) {
        bump(&self.accepted);
    }

    pub(crate) fn count_join(&self) {
        bump(&self.joins);
    }

    pub(crate) fn count_leave(&self) {
        bump(&self.leaves);
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

/// Adds one, for a counter with a single writer.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// The counters of every configured group, in config order; swapped whole when a reload
/// adds or removes groups, so readers never wait for the table.
#[derive(Clone, Default)]
pub struct GroupStats(Arc<ArcSwap<Vec<Arc<GroupCounters>>>>);

impl GroupStats {
    /// The counters as of now.
    pub fn load(&self) -> Arc<Vec<Arc<GroupCounters>>> {
        self.0.load_full()
    }

    pub(crate) fn store(&self, counters: Vec<Arc<GroupCounters>>) {
        self.0.store(Arc::new(counters));
    }
}
