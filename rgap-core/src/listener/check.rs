//! The per-datagram checks, cheapest first so that junk costs little: length, known group,
//! version, clock skew, and only then the HMAC, with a MAC state keyed once per group.

use std::time::Duration;

use crate::config::GroupConfig;
use crate::protocol::{RawAnnouncement, Verifier};

use super::stats::DropReason;

/// An announcement that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Index of the group in config order.
    pub group_index: u32,
    /// The member's address as on the wire (IPv4 mapped).
    pub address: [u8; 16],
    /// Announcement timestamp + `expire`, Unix µs.
    pub expires_at_us: i64,
}

struct GroupCheck {
    id: u64,
    verifier: Verifier,
    skew_us: i64,
    expire_us: i64,
}

/// Checks datagrams against the configured groups. Immutable, shared by all sources.
pub struct Checker {
    /// Sorted by id for a branch-light binary search (usually a handful of groups).
    groups: Vec<(GroupCheck, u32)>,
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl Checker {
    pub fn new(groups: &[GroupConfig]) -> Checker {
        let mut checks: Vec<(GroupCheck, u32)> = groups
            .iter()
            .enumerate()
            .map(|(index, group)| {
                let check = GroupCheck {
                    id: group.id,
                    verifier: Verifier::new(&group.psk),
                    skew_us: micros(group.effective_clock_skew()),
                    expire_us: micros(group.expire.get()),
                };
                (check, index as u32)
            })
            .collect();
        checks.sort_by_key(|(check, _)| check.id);
        Checker { groups: checks }
    }

    /// Checks one datagram received at `now_us` (Unix µs).
    #[inline]
    pub fn check(&self, datagram: &[u8], now_us: i64) -> Result<Accepted, DropReason> {
        let raw = RawAnnouncement::parse(datagram).map_err(|_| DropReason::WrongLength)?;
        let position = self
            .groups
            .binary_search_by_key(&raw.group, |(check, _)| check.id)
            .map_err(|_| DropReason::UnknownGroup)?;
        let (group, group_index) = &self.groups[position];
        raw.check_version().map_err(|_| DropReason::BadVersion)?;
        if now_us.saturating_sub(raw.timestamp_unix_us).saturating_abs() > group.skew_us {
            return Err(DropReason::ClockSkew);
        }
        group.verifier.verify(&raw).map_err(|_| DropReason::BadSignature)?;
        Ok(Accepted {
            group_index: *group_index,
            address: raw.address,
            expires_at_us: raw.timestamp_unix_us.saturating_add(group.expire_us),
        })
    }
}
