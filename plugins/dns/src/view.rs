//! The published state of the mapped groups: an immutable [`View`] that `on_snapshot`
//! replaces as a whole (through `ArcSwap`) and that the DNS tasks read without a lock.
//!
//! A group is rebuilt only when its snapshot revision changes; unchanged groups are shared
//! between one view and the next.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rgap_plugin_api::GroupSnapshot;

/// The members of one group as last published.
#[derive(Debug)]
pub struct GroupMembers {
    pub ready: bool,
    /// IPv4 members (IPv4-mapped announcements) with their expiry, Unix µs.
    pub v4: Vec<(Ipv4Addr, i64)>,
    /// IPv6 members with their expiry, Unix µs.
    pub v6: Vec<(Ipv6Addr, i64)>,
    /// The latest expiry of any member (`i64::MIN` with none), so that a query learns
    /// whether the group has a live member without looking at each.
    latest_expiry: i64,
}

impl Default for GroupMembers {
    fn default() -> Self {
        GroupMembers { ready: false, v4: Vec::new(), v6: Vec::new(), latest_expiry: i64::MIN }
    }
}

impl GroupMembers {
    fn from_snapshot(group: &GroupSnapshot<'_>) -> Self {
        let mut members = GroupMembers { ready: group.ready, ..Default::default() };
        for member in group.members() {
            let expires = member.expires_at_unix_us;
            members.latest_expiry = members.latest_expiry.max(expires);
            match member.ip() {
                IpAddr::V4(ip) => members.v4.push((ip, expires)),
                IpAddr::V6(ip) => members.v6.push((ip, expires)),
            }
        }
        members
    }

    /// Whether any member is still live at `now_us`: a member past its expiry is not
    /// served even if the listener has not yet reported it gone.
    pub fn has_live_member(&self, now_us: i64) -> bool {
        self.latest_expiry > now_us
    }
}

/// Every mapped group, by id. A group the listener has not reported yet is absent, and
/// answers as not ready.
#[derive(Debug, Default)]
pub struct View {
    groups: HashMap<u64, Arc<GroupMembers>>,
}

impl View {
    pub fn group(&self, id: u64) -> Option<&GroupMembers> {
        self.groups.get(&id).map(|group| &**group)
    }
}

/// The writer side: keeps what it derived from each group's last revision and publishes a
/// new view when any mapped group changed.
pub struct Publisher {
    /// The groups some name maps to; others are ignored.
    wanted: HashSet<u64>,
    revisions: HashMap<u64, u64>,
    current: HashMap<u64, Arc<GroupMembers>>,
    published: Arc<ArcSwap<View>>,
    first_snapshot: bool,
}

impl Publisher {
    pub fn new(wanted: HashSet<u64>) -> Self {
        Publisher {
            wanted,
            revisions: HashMap::new(),
            current: HashMap::new(),
            published: Arc::new(ArcSwap::from_pointee(View::default())),
            first_snapshot: true,
        }
    }

    /// The handle readers load views from.
    pub fn published(&self) -> Arc<ArcSwap<View>> {
        self.published.clone()
    }

    /// Takes in a snapshot; returns the ids of mapped groups the listener does not have
    /// (only on the first snapshot, so that the caller can warn once).
    pub fn update(&mut self, groups: &[GroupSnapshot<'_>]) -> Vec<u64> {
        let mut changed = false;
        for group in groups.iter().filter(|group| self.wanted.contains(&group.id)) {
            if self.revisions.get(&group.id) == Some(&group.revision) {
                continue;
            }
            self.revisions.insert(group.id, group.revision);
            self.current.insert(group.id, Arc::new(GroupMembers::from_snapshot(group)));
            changed = true;
        }
        if changed {
            self.published.store(Arc::new(View { groups: self.current.clone() }));
        }
        let mut missing = Vec::new();
        if std::mem::take(&mut self.first_snapshot) {
            missing =
                self.wanted.iter().copied().filter(|id| !self.current.contains_key(id)).collect();
            missing.sort_unstable();
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rgap_plugin_api::{Member, MemberList};

    fn member(ip: &str, expires: i64) -> Member {
        let ip: IpAddr = ip.parse().unwrap();
        let address = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Member { address, expires_at_unix_us: expires }
    }

    fn snapshot(id: u64, revision: u64, members: &[Member]) -> GroupSnapshot<'static> {
        // Leaked: a few bytes per test keep the call sites as plain arrays.
        let list: &'static MemberList =
            Box::leak(Box::new(MemberList::new(members.to_vec().into())));
        GroupSnapshot { id, ready: true, revision, membership_revision: revision, members: list }
    }

    #[test]
    fn rebuilds_only_changed_groups() {
        let mut publisher = Publisher::new([1, 2, 3].into());
        let view = publisher.published();
        let one = [member("10.0.0.1", 5), member("2001:db8::1", 6)];
        let two = [member("10.0.0.2", 5)];
        let missing = publisher.update(&[snapshot(1, 1, &one), snapshot(2, 1, &two)]);
        assert_eq!(missing, [3]);
        let first = view.load_full();
        assert_eq!(first.group(1).unwrap().v4, [("10.0.0.1".parse().unwrap(), 5)]);
        assert_eq!(first.group(1).unwrap().v6.len(), 1);

        // Group 2 changes, group 1 does not: group 1's data is shared, not rebuilt.
        let missing = publisher.update(&[snapshot(1, 1, &one), snapshot(2, 2, &[])]);
        assert!(missing.is_empty());
        let second = view.load_full();
        assert!(std::ptr::eq(first.group(1).unwrap(), second.group(1).unwrap()));
        assert!(second.group(2).unwrap().v4.is_empty());
        assert!(!second.group(2).unwrap().has_live_member(0));
        assert!(second.group(1).unwrap().has_live_member(5), "the IPv6 member lives until 6");
        assert!(!second.group(1).unwrap().has_live_member(6));

        // Nothing changed: the same view stays published.
        publisher.update(&[snapshot(1, 1, &one), snapshot(2, 2, &[])]);
        assert!(Arc::ptr_eq(&second, &view.load_full()));
    }
}
