//! The per-datagram checks, cheapest first so that junk costs little: length, known group,
//! version (announcement or leave), clock skew, and only then the HMAC, with MAC states keyed
//! once per group key. What an authentic datagram says is judged last: its address must be
//! one a member may have.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::GroupConfig;
use crate::protocol::{Kind, RawAnnouncement, Verifier};

use super::stats::DropReason;

/// An announcement or leave that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Index of the group in config order.
    pub group_index: u32,
    /// Announcement or leave.
    pub kind: Kind,
    /// The member's address as on the wire (IPv4 mapped).
    pub address: [u8; 16],
    /// Timestamp + `expire`, Unix µs. `expire` is fixed per group, so this orders a member's
    /// datagrams as their timestamps do.
    pub expires_at_us: i64,
}

struct GroupCheck {
    id: u64,
    /// One per key of the group, in config order: the first is the one agents use
    /// normally, so it is tried first.
    verifiers: Box<[Verifier]>,
    skew_us: i64,
    expire_us: i64,
    /// Empty: any address that may be a member at all.
    allowed_networks: Box<[IpNet]>,
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
        let slots: Vec<(u32, &GroupConfig)> =
            groups.iter().enumerate().map(|(index, group)| (index as u32, group)).collect();
        Checker::with_slots(&slots)
    }

    /// A checker whose accepted announcements name each group by the table slot given with
    /// it (after a reload, slots no longer follow config order).
    pub fn with_slots(groups: &[(u32, &GroupConfig)]) -> Checker {
        let mut checks: Vec<(GroupCheck, u32)> = groups
            .iter()
            .map(|&(slot, group)| {
                let check = GroupCheck {
                    id: group.id,
                    verifiers: group.psk.keys().iter().map(Verifier::new).collect(),
                    skew_us: micros(group.effective_clock_skew()),
                    expire_us: micros(group.expire.get()),
                    allowed_networks: group.allowed_networks.iter().map(|n| n.0).collect(),
                };
                (check, slot)
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
        let kind = raw.check_version().map_err(|_| DropReason::BadVersion)?;
        if now_us.saturating_sub(raw.timestamp_unix_us).saturating_abs() > group.skew_us {
            return Err(DropReason::ClockSkew);
        }
        if !group.verifiers.iter().any(|v| v.check_signature(&raw, kind).is_ok()) {
            return Err(DropReason::BadSignature);
        }
        if !may_be_member(raw.ip(), &group.allowed_networks) {
            return Err(DropReason::AddressNotAllowed);
        }
        Ok(Accepted {
            group_index: *group_index,
            kind,
            address: raw.address,
            expires_at_us: raw.timestamp_unix_us.saturating_add(group.expire_us),
        })
    }
}

/// Whether `address` can be a member's: never an address that stands for no host or for many
/// (unspecified, broadcast, multicast), and inside `allowed` unless that is empty.
fn may_be_member(address: IpAddr, allowed: &[IpNet]) -> bool {
    let special = match address {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    !special && (allowed.is_empty() || allowed.iter().any(|net| net.contains(&address)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Network;
    use crate::duration::GoDuration;
    use crate::protocol::{encode_signed, encode_signed_leave, Announcement};
    use crate::psk::{Psk, PskList};

    const NOW: i64 = 1_800_000_000_000_000;

    fn psk(byte: u8) -> Psk {
        Psk::from_bytes([byte; 32])
    }

    fn group(keys: &[u8], allowed: &[&str]) -> GroupConfig {
        GroupConfig {
            id: 7,
            psk: PskList::from(keys.iter().map(|&b| psk(b)).collect::<Vec<_>>()),
            expire: GoDuration(Duration::from_secs(15)),
            allowed_networks: allowed.iter().map(|n| Network(n.parse().unwrap())).collect(),
            ..GroupConfig::default()
        }
    }

    fn fields(address: &str) -> Announcement {
        Announcement { group: 7, timestamp_unix_us: NOW, address: address.parse().unwrap() }
    }

    #[test]
    fn announcements_and_leaves_signed_with_any_key_of_the_group_pass() {
        let checker = Checker::new(&[group(&[1, 2], &[])]);
        for key in [1, 2] {
            let accepted = checker.check(&encode_signed(&fields("10.0.0.1"), &psk(key)), NOW);
            assert_eq!(accepted.map(|a| a.kind), Ok(Kind::Announce), "key {key}");
            let left = checker.check(&encode_signed_leave(&fields("10.0.0.1"), &psk(key)), NOW);
            assert_eq!(left.map(|a| a.kind), Ok(Kind::Leave), "key {key}");
        }
        let other = checker.check(&encode_signed(&fields("10.0.0.1"), &psk(3)), NOW);
        assert_eq!(other, Err(DropReason::BadSignature));
    }

    #[test]
    fn an_announcement_turned_into_a_leave_is_a_bad_signature() {
        let checker = Checker::new(&[group(&[1], &[])]);
        let mut forged = encode_signed(&fields("10.0.0.1"), &psk(1));
        forged[1] = 0x01;
        assert_eq!(checker.check(&forged, NOW), Err(DropReason::BadSignature));
    }

    #[test]
    fn addresses_that_are_no_single_host_are_never_members() {
        let checker = Checker::new(&[group(&[1], &[])]);
        for address in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "239.82.71.65", "::", "ff02::1"]
        {
            let datagram = encode_signed(&fields(address), &psk(1));
            assert_eq!(
                checker.check(&datagram, NOW),
                Err(DropReason::AddressNotAllowed),
                "{address}"
            );
            let leave = encode_signed_leave(&fields(address), &psk(1));
            assert_eq!(checker.check(&leave, NOW), Err(DropReason::AddressNotAllowed), "{address}");
        }
        for address in ["10.0.0.1", "127.0.0.1", "192.168.1.255", "2001:db8::1", "::1"] {
            assert!(
                checker.check(&encode_signed(&fields(address), &psk(1)), NOW).is_ok(),
                "{address}"
            );
        }
    }

    #[test]
    fn allowed_networks_confine_members() {
        let checker = Checker::new(&[group(&[1], &["10.1.0.0/16", "2001:db8::/32"])]);
        for (address, allowed) in
            [("10.1.2.3", true), ("10.2.0.1", false), ("2001:db8::5", true), ("2001:db9::5", false)]
        {
            let got = checker.check(&encode_signed(&fields(address), &psk(1)), NOW);
            assert_eq!(got.is_ok(), allowed, "{address}: {got:?}");
            if !allowed {
                assert_eq!(got, Err(DropReason::AddressNotAllowed));
            }
        }
    }

    #[test]
    fn forged_datagrams_are_bad_signatures_whatever_their_address() {
        // Content is judged only once the datagram is known to come from a key holder.
        let checker = Checker::new(&[group(&[1], &["10.1.0.0/16"])]);
        let datagram = encode_signed(&fields("0.0.0.0"), &psk(2));
        assert_eq!(checker.check(&datagram, NOW), Err(DropReason::BadSignature));
    }

    /// Group 7 with key 1, `expire` and `clock_skew` in seconds.
    fn timed(expire_s: u64, clock_skew_s: u64) -> GroupConfig {
        GroupConfig {
            expire: GoDuration(Duration::from_secs(expire_s)),
            clock_skew: GoDuration(Duration::from_secs(clock_skew_s)),
            ..group(&[1], &[])
        }
    }

    /// The checker's verdict on an announcement and a leave stamped `offset_us` from now.
    fn verdicts(checker: &Checker, offset_us: i64) -> [Result<Accepted, DropReason>; 2] {
        let fields = Announcement { timestamp_unix_us: NOW + offset_us, ..fields("10.0.0.1") };
        [
            checker.check(&encode_signed(&fields, &psk(1)), NOW),
            checker.check(&encode_signed_leave(&fields, &psk(1)), NOW),
        ]
    }

    /// Accepted exactly at `±skew_us`, refused 1 µs beyond, either side of now.
    fn assert_skew_edge(checker: &Checker, skew_us: i64, expire_us: i64) {
        for offset in [-skew_us, skew_us, 0] {
            for verdict in verdicts(checker, offset) {
                let accepted = verdict.unwrap_or_else(|e| panic!("offset {offset} µs: {e:?}"));
                assert_eq!(accepted.expires_at_us, NOW + offset + expire_us);
            }
        }
        for offset in [-skew_us - 1, skew_us + 1] {
            for verdict in verdicts(checker, offset) {
                assert_eq!(verdict, Err(DropReason::ClockSkew), "offset {offset} µs");
            }
        }
    }

    #[test]
    fn a_timestamp_exactly_at_the_clock_skew_passes_and_one_microsecond_past_fails() {
        assert_skew_edge(&Checker::new(&[timed(15, 5)]), 5_000_000, 15_000_000);
    }

    #[test]
    fn a_clock_skew_below_expire_is_honoured_not_widened_to_expire() {
        let checker = Checker::new(&[timed(15, 5)]);
        // Well within `expire` but past `clock_skew`, either way.
        for offset in [-10_000_000, 10_000_000, -14_999_999] {
            for verdict in verdicts(&checker, offset) {
                assert_eq!(verdict, Err(DropReason::ClockSkew), "offset {offset} µs");
            }
        }
    }

    #[test]
    fn a_clock_skew_of_zero_or_above_expire_means_expire() {
        for clock_skew_s in [0, 16, 3600] {
            assert_skew_edge(&Checker::new(&[timed(15, clock_skew_s)]), 15_000_000, 15_000_000);
        }
    }

    #[test]
    fn each_group_is_checked_with_its_own_clock_skew_and_expire() {
        let wide = GroupConfig { id: 8, ..timed(60, 30) };
        let checker = Checker::new(&[wide, timed(15, 5)]);
        let fields =
            Announcement { group: 8, timestamp_unix_us: NOW - 20_000_000, ..fields("10.0.0.1") };
        let accepted = checker.check(&encode_signed(&fields, &psk(1)), NOW).unwrap();
        assert_eq!((accepted.group_index, accepted.expires_at_us), (0, NOW + 40_000_000));
        let narrow = Announcement { group: 7, ..fields };
        let verdict = checker.check(&encode_signed(&narrow, &psk(1)), NOW);
        assert_eq!(verdict, Err(DropReason::ClockSkew));
    }
}
