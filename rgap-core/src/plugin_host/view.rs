//! The published state of all groups that delivery threads turn into plugin snapshots.
//!
//! Each group's member list is a reference-counted [`MemberList`] rebuilt only when that
//! group changed. The group table swaps in a new view after a change; it builds it by
//! updating, in place, the view it replaced the time before (once no delivery thread holds
//! it any more), only where groups changed since, so a change to one of 10 000 groups does
//! not touch the other 9 999. A snapshot is assembled by the delivery thread only when it is
//! about to deliver: a storm of changes costs one snapshot per delivery, not one per change.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rgap_plugin_api::{GroupSnapshot, MemberList};

/// One group as published.
#[derive(Debug, Clone)]
pub struct GroupState {
    pub id: u64,
    pub ready: bool,
    /// Bumped each time `members` or `ready` is replaced.
    pub revision: u64,
    /// Bumped each time the set of addresses changes.
    pub membership_revision: u64,
    /// Shared with every output that keeps it (`GroupSnapshot::share_members`).
    pub members: MemberList,
}

/// Every group, in config order.
#[derive(Debug, Clone, Default)]
pub struct GroupsView {
    pub groups: Vec<GroupState>,
}

impl GroupsView {
    /// Borrowed FFI snapshots of every group, valid while `self` lives, into `snapshots`
    /// (emptied first, its memory reused).
    pub fn snapshots_into<'a>(&'a self, snapshots: &mut Vec<GroupSnapshot<'a>>) {
        snapshots.clear();
        snapshots.extend(self.groups.iter().map(|group| GroupSnapshot {
            id: group.id,
            ready: group.ready,
            revision: group.revision,
            membership_revision: group.membership_revision,
            members: &group.members,
        }));
    }
}

/// The latest view, shared between the group table (writer) and delivery threads (readers).
pub type SharedView = Arc<ArcSwap<GroupsView>>;

/// A shared view holding `view`.
pub fn shared_view(view: GroupsView) -> SharedView {
    Arc::new(ArcSwap::from_pointee(view))
}
