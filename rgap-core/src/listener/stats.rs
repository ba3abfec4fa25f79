//! Counters of what the sources received, accepted and dropped (by reason). Sources add
//! to them once per batch, not per datagram, so the shared cache line stays cold; the group
//! table, which alone knows a member's history, turns some accepted datagrams into drops
//! (`stale`, `group_full`) once per cycle.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use rgap_plugin_api::HostStats;

/// Why a datagram was dropped, in the order the checks run (cheapest first). This is the one
/// list of reasons: log lines, totals and anything else that reports drops iterate
/// [`DropReason::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    WrongLength,
    UnknownGroup,
    BadVersion,
    ClockSkew,
    BadSignature,
    /// The unspecified, broadcast or a multicast address, or one outside the group's
    /// `allowed_networks`.
    AddressNotAllowed,
    /// Not newer than what was already accepted for that member (an older or repeated
    /// announcement, one older than the member's leave, an older leave).
    Stale,
    /// A new address for a group that already has `max_members`.
    GroupFull,
}

impl DropReason {
    /// How many reasons there are.
    pub const COUNT: usize = 8;

    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::WrongLength,
        DropReason::UnknownGroup,
        DropReason::BadVersion,
        DropReason::ClockSkew,
        DropReason::BadSignature,
        DropReason::AddressNotAllowed,
        DropReason::Stale,
        DropReason::GroupFull,
    ];

    /// The name used in log lines.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::WrongLength => "wrong_length",
            DropReason::UnknownGroup => "unknown_group",
            DropReason::BadVersion => "bad_version",
            DropReason::ClockSkew => "clock_skew",
            DropReason::BadSignature => "bad_signature",
            DropReason::AddressNotAllowed => "address_not_allowed",
            DropReason::Stale => "stale",
            DropReason::GroupFull => "group_full",
        }
    }
}

/// Counts for one batch, kept on the source's stack.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    pub received: u64,
    pub accepted: u64,
    pub dropped: [u64; DropReason::COUNT],
    /// Of the `stale` drops, those that repeated the newest accepted datagram exactly (the
    /// same datagram heard on two sockets, say): counted, but not worth a warning.
    pub duplicates: u64,
}

impl BatchCounts {
    pub fn drop(&mut self, reason: DropReason) {
        self.dropped[reason as usize] += 1;
    }
}

/// The listener's totals since start.
#[derive(Debug, Default)]
pub struct ListenerStats {
    received: AtomicU64,
    accepted: AtomicU64,
    dropped: [AtomicU64; DropReason::COUNT],
    duplicates: AtomicU64,
}

impl ListenerStats {
    /// Adds one batch's counts.
    pub fn add(&self, batch: &BatchCounts) {
        self.received.fetch_add(batch.received, Ordering::Relaxed);
        self.accepted.fetch_add(batch.accepted, Ordering::Relaxed);
        for (total, count) in self.dropped.iter().zip(batch.dropped) {
            if count > 0 {
                total.fetch_add(count, Ordering::Relaxed);
            }
        }
    }

    /// Turns datagrams the sources counted as accepted into the drops in `rejected` (its
    /// `received` and `accepted` are ignored): the group table's verdicts.
    pub fn reject_accepted(&self, rejected: &BatchCounts) {
        let total: u64 = rejected.dropped.iter().sum();
        if total == 0 {
            return;
        }
        self.accepted.fetch_sub(total, Ordering::Relaxed);
        for (count, reason) in rejected.dropped.iter().zip(&self.dropped) {
            if *count > 0 {
                reason.fetch_add(*count, Ordering::Relaxed);
            }
        }
        if rejected.duplicates > 0 {
            self.duplicates.fetch_add(rejected.duplicates, Ordering::Relaxed);
        }
    }

    /// A consistent-enough copy of the totals.
    pub fn read(&self) -> BatchCounts {
        BatchCounts {
            received: self.received.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            dropped: std::array::from_fn(|i| self.dropped[i].load(Ordering::Relaxed)),
            duplicates: self.duplicates.load(Ordering::Relaxed),
        }
    }

    /// The totals as plugins see them.
    pub fn host_stats(&self) -> HostStats {
        let counts = self.read();
        HostStats {
            datagrams_received: counts.received,
            announcements_accepted: counts.accepted,
            datagrams_dropped: counts.dropped.iter().sum(),
        }
    }
}

impl BatchCounts {
    /// What was dropped since `earlier`, as `bad_signature=3 clock_skew=1` (reasons with
    /// drops only), or `None` if nothing was. Exact duplicates are left out: they are normal
    /// (one datagram heard on two sockets) and would only make noise.
    pub fn drops_since(&self, earlier: &BatchCounts) -> Option<(u64, String)> {
        let mut total = 0;
        let mut reasons = Vec::new();
        for reason in DropReason::ALL {
            let mut count = self.dropped[reason as usize] - earlier.dropped[reason as usize];
            if reason == DropReason::Stale {
                count = count.saturating_sub(self.duplicates - earlier.duplicates);
            }
            if count > 0 {
                total += count;
                reasons.push(format!("{}={count}", reason.name()));
            }
        }
        (total > 0).then(|| (total, reasons.join(" ")))
    }
}

/// Logs a warning every `every` in which datagrams were dropped, until `stop` disconnects or
/// sends: an operator learns of a misconfigured agent (wrong key, skewed clock) while it
/// happens, not at shutdown.
pub fn report_drops(stats: &ListenerStats, every: Duration, stop: &Receiver<()>) {
    // From zero, not from a first reading: sources may have counted drops before this thread
    // first ran, and those must be reported too.
    let mut last = BatchCounts::default();
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let now = stats.read();
        if let Some((total, reasons)) = now.drops_since(&last) {
            tracing::warn!(
                "dropped {total} datagram(s) in the last {}s: {reasons}",
                every.as_secs()
            );
        }
        last = now;
    }
}

/// `received=.. accepted=.. dropped: wrong_length=.. ...`, for log lines.
impl fmt::Display for BatchCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "received={} accepted={} dropped:", self.received, self.accepted)?;
        for reason in DropReason::ALL {
            write!(f, " {}={}", reason.name(), self.dropped[reason as usize])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_since_lists_only_the_reasons_that_grew() {
        let mut earlier = BatchCounts::default();
        earlier.drop(DropReason::ClockSkew);
        let mut now = earlier;
        now.drop(DropReason::BadSignature);
        now.drop(DropReason::BadSignature);
        now.drop(DropReason::WrongLength);
        assert_eq!(now.drops_since(&earlier), Some((3, "wrong_length=1 bad_signature=2".into())));
        assert_eq!(now.drops_since(&now), None);
    }

    #[test]
    fn exact_duplicates_are_counted_but_not_reported() {
        let earlier = BatchCounts::default();
        let mut now = earlier;
        now.drop(DropReason::Stale);
        now.duplicates += 1;
        assert_eq!(now.drops_since(&earlier), None);
        now.drop(DropReason::Stale);
        assert_eq!(now.drops_since(&earlier), Some((1, "stale=1".into())));
        assert!(now.to_string().ends_with(" stale=2 group_full=0"), "{now}");
    }

    #[test]
    fn the_tables_verdicts_move_counts_from_accepted_to_dropped() {
        let stats = ListenerStats::default();
        stats.add(&BatchCounts { received: 5, accepted: 5, ..BatchCounts::default() });
        let mut rejected = BatchCounts::default();
        rejected.drop(DropReason::GroupFull);
        rejected.drop(DropReason::Stale);
        rejected.duplicates = 1;
        stats.reject_accepted(&rejected);
        let totals = stats.read();
        assert_eq!((totals.received, totals.accepted), (5, 3));
        assert_eq!(totals.dropped[DropReason::GroupFull as usize], 1);
        assert_eq!(totals.duplicates, 1);
        assert_eq!(stats.host_stats().datagrams_dropped, 2);
    }

    #[test]
    fn every_reason_has_its_own_name_and_place() {
        for (index, reason) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index);
        }
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
