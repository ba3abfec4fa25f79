//! Counters of what the sources received, accepted and dropped (by reason). Sources add
//! to them once per batch, not per datagram, so the shared cache line stays cold.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use rgap_plugin_api::HostStats;

/// Why a datagram was dropped, in the order the checks run (cheapest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    WrongLength,
    UnknownGroup,
    BadVersion,
    ClockSkew,
    BadSignature,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::WrongLength,
        DropReason::UnknownGroup,
        DropReason::BadVersion,
        DropReason::ClockSkew,
        DropReason::BadSignature,
    ];

    /// The name used in log lines.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::WrongLength => "wrong_length",
            DropReason::UnknownGroup => "unknown_group",
            DropReason::BadVersion => "bad_version",
            DropReason::ClockSkew => "clock_skew",
            DropReason::BadSignature => "bad_signature",
        }
    }
}

/// Counts for one batch, kept on the source's stack.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    pub received: u64,
    pub accepted: u64,
    pub dropped: [u64; 5],
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
    dropped: [AtomicU64; 5],
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

    /// A consistent-enough copy of the totals.
    pub fn read(&self) -> BatchCounts {
        BatchCounts {
            received: self.received.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            dropped: std::array::from_fn(|i| self.dropped[i].load(Ordering::Relaxed)),
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
    /// drops only), or `None` if nothing was.
    pub fn drops_since(&self, earlier: &BatchCounts) -> Option<(u64, String)> {
        let mut total = 0;
        let mut reasons = Vec::new();
        for reason in DropReason::ALL {
            let count = self.dropped[reason as usize] - earlier.dropped[reason as usize];
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
}
