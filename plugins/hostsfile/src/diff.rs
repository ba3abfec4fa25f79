//! Which addresses left and which joined between two member lists of one group.
//!
//! The listener keeps a group's members in a vector where a join appends and a leave moves
//! the last member into the gap, and publishes copies of it: two lists a few changes apart
//! differ at a few positions only. Comparing position by position and then setting the few
//! differing addresses against each other finds the changes in one pass over the group,
//! without sorting it. Lists in any other order are still diffed correctly, just not cheaply:
//! past `limit` differing positions the caller is told to rebuild instead.
//!
//! The old list is kept as its addresses alone, in its order ([`follow`] brings them up to
//! date), not as the listener's list: holding that would keep the listener from reusing it.

use rgap_plugin_api::Member;

/// The addresses that left and joined, each sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) left: Vec<[u8; 16]>,
    pub(crate) joined: Vec<[u8; 16]>,
}

/// The addresses of `members`, in order: what [`follow`] compares the next list with.
#[cfg(test)]
pub(crate) fn addresses(members: &[Member]) -> Vec<[u8; 16]> {
    members.iter().map(|member| member.address).collect()
}

/// The changes from the addresses `old` to those of `new` (both distinct addresses), with
/// `old` made the addresses of `new`; or `None` once more than `limit` positions differ
/// (then rebuilding from `new` is cheaper), with `old` left as it was.
pub(crate) fn follow(old: &mut Vec<[u8; 16]>, new: &[Member], limit: usize) -> Option<Changes> {
    let mut differ = Vec::new();
    let common = old.len().min(new.len());
    if old.len().abs_diff(new.len()) > limit {
        return None;
    }
    // Only addresses count: refreshes move expiry times everywhere.
    for (at, (before, after)) in old[..common].iter().zip(&new[..common]).enumerate() {
        if *before != after.address {
            if differ.len() == limit {
                return None;
            }
            differ.push(at);
        }
    }
    let mut was: Vec<[u8; 16]> = differ.iter().map(|&at| old[at]).collect();
    let mut is: Vec<[u8; 16]> = differ.iter().map(|&at| new[at].address).collect();
    was.extend_from_slice(&old[common..]);
    is.extend(new[common..].iter().map(|member| member.address));
    for &at in &differ {
        old[at] = new[at].address;
    }
    old.truncate(common);
    old.extend(new[common..].iter().map(|member| member.address));
    was.sort_unstable();
    is.sort_unstable();
    // An address at a differing position in both lists merely moved.
    let mut changes = Changes::default();
    let (mut a, mut b) = (0, 0);
    while a < was.len() || b < is.len() {
        match (was.get(a), is.get(b)) {
            (Some(x), Some(y)) if x == y => {
                a += 1;
                b += 1;
            }
            (Some(x), Some(y)) if x < y => {
                changes.left.push(*x);
                a += 1;
            }
            (Some(x), None) => {
                changes.left.push(*x);
                a += 1;
            }
            (_, Some(y)) => {
                changes.joined.push(*y);
                b += 1;
            }
            (None, None) => unreachable!("the loop condition"),
        }
    }
    Some(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u8, expires: i64) -> Member {
        let mut address = [0u8; 16];
        address[15] = n;
        Member { address, expires_at_unix_us: expires }
    }

    fn addresses(ns: &[u8]) -> Vec<[u8; 16]> {
        ns.iter().map(|&n| member(n, 0).address).collect()
    }

    #[test]
    fn a_join_appends_and_a_leave_moves_the_last_member_into_the_gap() {
        let old = [member(1, 0), member(2, 0), member(3, 0), member(4, 0)];
        // 2 left (4 moved into its place), 5 joined; 1 was refreshed.
        let new = [member(1, 9), member(4, 0), member(3, 0), member(5, 0)];
        let mut kept = super::addresses(&old);
        let found = follow(&mut kept, &new, 10).unwrap();
        assert_eq!(found, Changes { left: addresses(&[2]), joined: addresses(&[5]) });
        assert_eq!(kept, super::addresses(&new));
        assert_eq!(follow(&mut kept, &new, 0), Some(Changes::default()));
    }

    #[test]
    fn reordered_lists_are_diffed_as_sets_or_refused_past_the_limit() {
        let old: Vec<Member> = (0..20).map(|n| member(n, 0)).collect();
        let mut new: Vec<Member> = (1..21).rev().map(|n| member(n, 0)).collect();
        let mut kept = super::addresses(&old);
        assert_eq!(follow(&mut kept, &new, 5), None);
        assert_eq!(kept, super::addresses(&old), "left alone when refused");
        let found = follow(&mut kept, &new, 20).unwrap();
        assert_eq!(found, Changes { left: addresses(&[0]), joined: addresses(&[20]) });
        assert_eq!(kept, super::addresses(&new));
        new.truncate(2);
        assert_eq!(follow(&mut kept, &new, 10), None, "18 fewer members: more than the limit");
        new.truncate(0);
        assert_eq!(follow(&mut kept, &new, 30).unwrap().left.len(), 20);
        assert!(kept.is_empty());
    }
}
