//! The published state of the mapped groups: a fixed table with one slot per mapped group,
//! each slot an `ArcSwapOption` that `on_snapshot` replaces on its own and that the DNS
//! tasks read without a lock.
//!
//! A change to one group costs work in proportion to that group: the writer compares each
//! group's snapshot revision with the one it last took (a comparison per group, kept by
//! position, since the listener lists its groups in config order), rebuilds only the groups
//! whose revision moved, and swaps each into its own slot. Nothing holds all the groups in
//! one value that would have to be rebuilt or cloned when any of them changes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::{ArcSwapOption, Guard};
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

/// One mapped group as a reader sees it: its members, or `None` while the listener has not
/// reported the group (it answers as not ready).
pub type Loaded = Guard<Option<Arc<GroupMembers>>>;

/// Every mapped group, by id, each in a slot of its own. The set of ids is fixed when the
/// output is created; only the slots' contents change. Every query looks its group up, and
/// the ids come from the config, so a fast hash (foldhash) serves.
#[derive(Debug, Default)]
pub struct View {
    groups: HashMap<u64, ArcSwapOption<GroupMembers>, foldhash::fast::RandomState>,
}

impl View {
    fn new(wanted: HashSet<u64>) -> Self {
        View { groups: wanted.into_iter().map(|id| (id, ArcSwapOption::empty())).collect() }
    }

    /// Group `id` as currently published; `None` if no name maps to it.
    pub fn group(&self, id: u64) -> Option<Loaded> {
        self.groups.get(&id).map(ArcSwapOption::load)
    }
}

/// What the writer last saw at one position of the snapshot.
#[derive(Debug, Clone, Copy)]
struct Seen {
    id: u64,
    /// Some name maps to this group.
    wanted: bool,
    /// The revision published into its slot; `None` before the first.
    revision: Option<u64>,
}

/// The writer side: keeps the revision it published for each group and replaces the slot
/// of each mapped group whose revision changed.
pub struct Publisher {
    published: Arc<View>,
    /// By position in the snapshot.
    seen: Vec<Seen>,
    first_snapshot: bool,
}

impl Publisher {
    /// A publisher for the groups in `wanted` (the groups some name maps to; others are
    /// ignored).
    pub fn new(wanted: HashSet<u64>) -> Self {
        Publisher { published: Arc::new(View::new(wanted)), seen: Vec::new(), first_snapshot: true }
    }

    /// The table readers load groups from.
    pub fn published(&self) -> Arc<View> {
        self.published.clone()
    }

    /// Takes in a snapshot; returns the ids of mapped groups the listener does not have
    /// (only on the first snapshot, so that the caller can warn once).
    pub fn update(&mut self, groups: &[GroupSnapshot<'_>]) -> Vec<u64> {
        if self.seen.len() != groups.len() {
            self.seen.resize(groups.len(), Seen { id: 0, wanted: false, revision: None });
            // Forces the lookup below for every position.
            for (seen, group) in self.seen.iter_mut().zip(groups) {
                seen.id = !group.id;
            }
        }
        for (seen, group) in self.seen.iter_mut().zip(groups) {
            if seen.id != group.id {
                let wanted = self.published.groups.contains_key(&group.id);
                *seen = Seen { id: group.id, wanted, revision: None };
            }
            if !seen.wanted || seen.revision == Some(group.revision) {
                continue;
            }
            if let Some(slot) = self.published.groups.get(&group.id) {
                slot.store(Some(Arc::new(GroupMembers::from_snapshot(group))));
            }
            seen.revision = Some(group.revision);
        }
        let mut missing = Vec::new();
        if std::mem::take(&mut self.first_snapshot) {
            let present: HashSet<u64> = groups.iter().map(|group| group.id).collect();
            missing =
                self.published.groups.keys().copied().filter(|id| !present.contains(id)).collect();
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

    /// The members published for `id` (panics if none are).
    fn loaded(view: &View, id: u64) -> Arc<GroupMembers> {
        view.group(id).and_then(|group| (*group).clone()).expect("published")
    }

    #[test]
    fn rebuilds_only_changed_groups() {
        let mut publisher = Publisher::new([1, 2, 3].into());
        let view = publisher.published();
        let one = [member("10.0.0.1", 5), member("2001:db8::1", 6)];
        let two = [member("10.0.0.2", 5)];
        let missing = publisher.update(&[snapshot(1, 1, &one), snapshot(2, 1, &two)]);
        assert_eq!(missing, [3]);
        let first = (loaded(&view, 1), loaded(&view, 2));
        assert_eq!(first.0.v4, [("10.0.0.1".parse().unwrap(), 5)]);
        assert_eq!(first.0.v6.len(), 1);
        assert!(view.group(3).unwrap().is_none(), "not reported: nothing published");
        assert!(view.group(4).is_none(), "not mapped");

        // Group 2 changes, group 1 does not: group 1's data is kept, not rebuilt.
        let missing = publisher.update(&[snapshot(1, 1, &one), snapshot(2, 2, &[])]);
        assert!(missing.is_empty());
        let second = (loaded(&view, 1), loaded(&view, 2));
        assert!(Arc::ptr_eq(&first.0, &second.0));
        assert!(!Arc::ptr_eq(&first.1, &second.1));
        assert!(second.1.v4.is_empty());
        assert!(!second.1.has_live_member(0));
        assert!(second.0.has_live_member(5), "the IPv6 member lives until 6");
        assert!(!second.0.has_live_member(6));

        // Nothing changed: the same data stays published.
        publisher.update(&[snapshot(1, 1, &one), snapshot(2, 2, &[])]);
        assert!(Arc::ptr_eq(&second.0, &loaded(&view, 1)));
        assert!(Arc::ptr_eq(&second.1, &loaded(&view, 2)));
    }

    #[test]
    fn groups_are_followed_by_id_when_the_snapshot_changes_shape() {
        let mut publisher = Publisher::new([1, 2].into());
        let view = publisher.published();
        let one = [member("10.0.0.1", 5)];
        let two = [member("10.0.0.2", 5)];
        publisher.update(&[snapshot(1, 5, &one), snapshot(2, 1, &two)]);
        // Group 2 moves to where group 1 was, at the revision group 1 had there: it must
        // not be taken for unchanged.
        publisher.update(&[snapshot(2, 5, &one), snapshot(1, 5, &one)]);
        assert_eq!(loaded(&view, 2).v4, [("10.0.0.1".parse().unwrap(), 5)]);
        // A group that was not listed before, in a longer snapshot.
        publisher.update(&[snapshot(9, 1, &[]), snapshot(2, 6, &two), snapshot(1, 6, &[])]);
        assert_eq!(loaded(&view, 2).v4, [("10.0.0.2".parse().unwrap(), 5)]);
        assert!(loaded(&view, 1).v4.is_empty());
    }

    /// Many groups, one of which changes: only that one's slot gets new data.
    #[test]
    fn one_change_among_many_groups_replaces_one_slot() {
        let ids: Vec<u64> = (1..=1000).collect();
        let mut publisher = Publisher::new(ids.iter().copied().collect());
        let view = publisher.published();
        let members = [member("10.0.0.1", 5)];
        let mut revisions = vec![1u64; ids.len()];
        let snapshots = |revisions: &[u64]| -> Vec<GroupSnapshot<'static>> {
            ids.iter().zip(revisions).map(|(&id, &rev)| snapshot(id, rev, &members)).collect()
        };
        publisher.update(&snapshots(&revisions));
        let before: Vec<Arc<GroupMembers>> = ids.iter().map(|&id| loaded(&view, id)).collect();
        revisions[500] = 2;
        publisher.update(&snapshots(&revisions));
        let replaced: Vec<u64> = ids
            .iter()
            .zip(&before)
            .filter(|(&id, old)| !Arc::ptr_eq(old, &loaded(&view, id)))
            .map(|(&id, _)| id)
            .collect();
        assert_eq!(replaced, [501]);
    }
}
