//! Which mapped groups changed since the writer was last given them, and whether the file can
//! be written at all (every mapped group known and ready).
//!
//! A snapshot lists every group; most did not change. Each mapping remembers where its group
//! was in the last snapshot, so finding it again costs a comparison, not an index of every
//! group, and only the mappings whose group's addresses or readiness moved are handed on.

use std::collections::HashMap;

use rgap_plugin_api::{GroupSnapshot, MemberList};

use crate::render::{push_once, Layout, Waiting};

/// A mapped group as the last snapshot showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// No snapshot yet.
    Never,
    /// The listener does not have the group.
    Absent,
    /// The file shows addresses, not expiry times: while these two stay the same (refreshes
    /// only) there is nothing to do.
    Present { membership_revision: u64, ready: bool },
}

/// What a snapshot means for the file.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// No mapped group's addresses or readiness moved.
    Unchanged,
    /// The file cannot be written yet.
    Waiting(Waiting),
    /// The member lists of the mappings (by index) whose group changed since the last `Ready`.
    Ready(Vec<(usize, MemberList)>),
}

/// The mapped groups as last seen.
#[derive(Debug)]
pub(crate) struct MappedGroups {
    seen: Vec<Seen>,
    /// Where each mapping's group was in the last snapshot it was found in.
    positions: Vec<usize>,
    /// Mappings changed since the last `Ready`, each once (`pending[i]` says whether `i` is in).
    changed: Vec<usize>,
    pending: Vec<bool>,
}

impl MappedGroups {
    pub(crate) fn new(layout: &Layout) -> MappedGroups {
        let mappings = layout.mappings.len();
        MappedGroups {
            seen: vec![Seen::Never; mappings],
            positions: vec![0; mappings],
            changed: Vec::with_capacity(mappings),
            pending: vec![false; mappings],
        }
    }

    /// Takes in a snapshot of every group.
    pub(crate) fn update(&mut self, layout: &Layout, groups: &[GroupSnapshot<'_>]) -> Outcome {
        let mut index: Option<HashMap<u64, usize>> = None;
        let mut moved = false;
        for (at, mapping) in layout.mappings.iter().enumerate() {
            let position = self.positions[at];
            let found = match groups.get(position) {
                Some(group) if group.id == mapping.group => Some(position),
                // Groups were added, removed or reordered (a reload): index them, once.
                _ => index
                    .get_or_insert_with(|| {
                        groups.iter().enumerate().map(|(at, group)| (group.id, at)).collect()
                    })
                    .get(&mapping.group)
                    .copied(),
            };
            let now = match found {
                Some(position) => {
                    self.positions[at] = position;
                    let group = &groups[position];
                    Seen::Present {
                        membership_revision: group.membership_revision,
                        ready: group.ready,
                    }
                }
                None => Seen::Absent,
            };
            if self.seen[at] != now {
                self.seen[at] = now;
                moved = true;
                // Remembered even while waiting, to be handed on once the file can be written.
                if !self.pending[at] {
                    self.pending[at] = true;
                    self.changed.push(at);
                }
            }
        }
        if !moved {
            return Outcome::Unchanged;
        }
        if let Some(waiting) = self.waiting(layout) {
            return Outcome::Waiting(waiting);
        }
        let lists = self
            .changed
            .drain(..)
            .map(|at| {
                self.pending[at] = false;
                (at, groups[self.positions[at]].share_members())
            })
            .collect();
        Outcome::Ready(lists)
    }

    /// Why the file cannot be written, if it cannot.
    fn waiting(&self, layout: &Layout) -> Option<Waiting> {
        let mut waiting = Waiting { not_ready: Vec::new(), unknown: Vec::new() };
        for (mapping, seen) in layout.mappings.iter().zip(&self.seen) {
            match seen {
                Seen::Present { ready: true, .. } => {}
                Seen::Present { ready: false, .. } => {
                    push_once(&mut waiting.not_ready, mapping.group)
                }
                Seen::Absent | Seen::Never => push_once(&mut waiting.unknown, mapping.group),
            }
        }
        let complete = waiting.not_ready.is_empty() && waiting.unknown.is_empty();
        (!complete).then_some(waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Mapping;

    fn layout() -> Layout {
        let mapping = |group: u64, hostname: &str| Mapping {
            group,
            hostname: hostname.into(),
            fallback_addresses: vec![],
        };
        Layout {
            prepend_lines: vec![],
            mappings: vec![mapping(1, "a"), mapping(2, "b"), mapping(1, "again")],
            append_lines: vec![],
        }
    }

    fn group(id: u64, ready: bool, revision: u64, members: &MemberList) -> GroupSnapshot<'_> {
        GroupSnapshot { id, ready, revision, membership_revision: revision, members }
    }

    fn handed(outcome: Outcome) -> Vec<usize> {
        match outcome {
            Outcome::Ready(lists) => lists.into_iter().map(|(at, _)| at).collect(),
            other => panic!("expected lists, got {other:?}"),
        }
    }

    #[test]
    fn only_changed_groups_are_handed_on_and_only_once_all_are_ready() {
        let layout = layout();
        let mut mapped = MappedGroups::new(&layout);
        let list = MemberList::default();
        let waiting = |outcome| match outcome {
            Outcome::Waiting(waiting) => waiting.to_string(),
            other => panic!("expected waiting, got {other:?}"),
        };
        let first = [group(7, true, 0, &list), group(1, false, 0, &list)];
        assert_eq!(
            waiting(mapped.update(&layout, &first)),
            "group(s) 2 not configured in the listener, group(s) 1 not ready yet"
        );
        assert!(matches!(mapped.update(&layout, &first), Outcome::Unchanged));
        let ready = [group(1, true, 0, &list), group(2, true, 0, &list)];
        assert_eq!(handed(mapped.update(&layout, &ready)), vec![0, 1, 2]);
        // A refresh (same membership revision) is no change; a join to group 2 is.
        assert!(matches!(mapped.update(&layout, &ready), Outcome::Unchanged));
        let joined = [group(1, true, 0, &list), group(2, true, 1, &list)];
        assert_eq!(handed(mapped.update(&layout, &joined)), vec![1]);
        // Reordered (a reload added a group in front): still found.
        let reordered =
            [group(3, true, 0, &list), group(2, true, 1, &list), group(1, true, 5, &list)];
        assert_eq!(handed(mapped.update(&layout, &reordered)), vec![0, 2]);
        // Group 1 goes away and comes back changed: handed on when the file can be written.
        let gone = [group(2, true, 2, &list)];
        assert_eq!(
            waiting(mapped.update(&layout, &gone)),
            "group(s) 1 not configured in the listener"
        );
        let back = [group(2, true, 2, &list), group(1, true, 6, &list)];
        let mut lists = handed(mapped.update(&layout, &back));
        lists.sort();
        assert_eq!(lists, vec![0, 1, 2]);
    }
}
