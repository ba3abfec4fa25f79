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

use crate::render::Address;

/// The addresses that left and joined, each sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) left: Vec<[u8; 16]>,
    pub(crate) joined: Vec<[u8; 16]>,
}

/// An address as kept in a list's order: IPv4 in 4 bytes (a group of IPv4 members, the
/// usual case, is followed at a quarter of the memory), any address in 16.
pub(crate) trait Kept: Copy + Ord {
    /// `address` as kept, if this form can hold it.
    fn of(address: &[u8; 16]) -> Option<Self>;
    fn address(self) -> [u8; 16];
}

impl Kept for [u8; 16] {
    fn of(address: &[u8; 16]) -> Option<Self> {
        Some(*address)
    }

    fn address(self) -> [u8; 16] {
        self
    }
}

impl Kept for u32 {
    fn of(address: &[u8; 16]) -> Option<Self> {
        match Address::of(address) {
            Address::V4(v4) => Some(v4),
            Address::V6(_) => None,
        }
    }

    fn address(self) -> [u8; 16] {
        std::net::Ipv4Addr::from(self).to_ipv6_mapped().octets()
    }
}

/// The addresses of `members` in their order, or `None` if one does not fit `K`.
pub(crate) fn addresses_in_order<K: Kept>(members: &[Member], into: &mut Vec<K>) -> Option<()> {
    into.clear();
    for member in members {
        into.push(K::of(&member.address)?);
    }
    Some(())
}

/// The changes from the addresses `old` to those of `new` (both distinct addresses), with
/// `old` made the addresses of `new`; or `None` once more than `limit` positions differ
/// (then rebuilding from `new` is cheaper) or an address of `new` does not fit `K`, with
/// `old` left as it was.
pub(crate) fn follow<K: Kept>(old: &mut Vec<K>, new: &[Member], limit: usize) -> Option<Changes> {
    let mut differ = Vec::new();
    let common = old.len().min(new.len());
    if old.len().abs_diff(new.len()) > limit {
        return None;
    }
    // Only addresses count: refreshes move expiry times everywhere.
    for (at, (before, after)) in old[..common].iter().zip(&new[..common]).enumerate() {
        if before.address() != after.address {
            if differ.len() == limit {
                return None;
            }
            differ.push(at);
        }
    }
    let mut is = Vec::with_capacity(differ.len() + new.len() - common);
    for member in differ.iter().map(|&at| &new[at]).chain(&new[common..]) {
        is.push(K::of(&member.address)?);
    }
    let mut was: Vec<K> = differ.iter().map(|&at| old[at]).collect();
    was.extend_from_slice(&old[common..]);
    for (&at, &address) in differ.iter().zip(&is) {
        old[at] = address;
    }
    old.truncate(common);
    old.extend_from_slice(&is[differ.len()..]);
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
                changes.left.push(x.address());
                a += 1;
            }
            (Some(x), None) => {
                changes.left.push(x.address());
                a += 1;
            }
            (_, Some(y)) => {
                changes.joined.push(y.address());
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

    fn all(members: &[Member]) -> Vec<[u8; 16]> {
        members.iter().map(|member| member.address).collect()
    }

    fn addresses(ns: &[u8]) -> Vec<[u8; 16]> {
        ns.iter().map(|&n| member(n, 0).address).collect()
    }

    #[test]
    fn a_join_appends_and_a_leave_moves_the_last_member_into_the_gap() {
        let old = [member(1, 0), member(2, 0), member(3, 0), member(4, 0)];
        // 2 left (4 moved into its place), 5 joined; 1 was refreshed.
        let new = [member(1, 9), member(4, 0), member(3, 0), member(5, 0)];
        let mut kept = all(&old);
        let found = follow(&mut kept, &new, 10).unwrap();
        assert_eq!(found, Changes { left: addresses(&[2]), joined: addresses(&[5]) });
        assert_eq!(kept, all(&new));
        assert_eq!(follow(&mut kept, &new, 0), Some(Changes::default()));
    }

    #[test]
    fn reordered_lists_are_diffed_as_sets_or_refused_past_the_limit() {
        let old: Vec<Member> = (0..20).map(|n| member(n, 0)).collect();
        let mut new: Vec<Member> = (1..21).rev().map(|n| member(n, 0)).collect();
        let mut kept = all(&old);
        assert_eq!(follow(&mut kept, &new, 5), None);
        assert_eq!(kept, all(&old), "left alone when refused");
        let found = follow(&mut kept, &new, 20).unwrap();
        assert_eq!(found, Changes { left: addresses(&[0]), joined: addresses(&[20]) });
        assert_eq!(kept, all(&new));
        new.truncate(2);
        assert_eq!(follow(&mut kept, &new, 10), None, "18 fewer members: more than the limit");
        new.truncate(0);
        assert_eq!(follow(&mut kept, &new, 30).unwrap().left.len(), 20);
        assert!(kept.is_empty());
    }

    #[test]
    fn ipv4_groups_are_followed_in_four_bytes_until_an_ipv6_address_joins() {
        let v4 = |n: u8| Member {
            address: std::net::Ipv4Addr::new(10, 0, 0, n).to_ipv6_mapped().octets(),
            expires_at_unix_us: 0,
        };
        let old = [v4(1), v4(2), v4(3)];
        let mut kept = Vec::new();
        addresses_in_order::<u32>(&old, &mut kept).unwrap();
        let new = [v4(1), v4(3), v4(4)];
        let found = follow(&mut kept, &new, 10).unwrap();
        assert_eq!(found, Changes { left: all(&[v4(2)]), joined: all(&[v4(4)]) });
        assert_eq!(kept, vec![0x0a00_0001, 0x0a00_0003, 0x0a00_0004]);
        let with_v6 = [v4(1), v4(3), v4(4), member(9, 0)];
        assert_eq!(follow(&mut kept, &with_v6, 10), None);
        assert_eq!(kept.len(), 3, "left alone");
        assert_eq!(addresses_in_order::<u32>(&with_v6, &mut kept), None);
    }
}
