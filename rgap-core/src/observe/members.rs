//! `/v1/members`: who is in which group right now, as JSON
//! (`{"groups":[{"id":1000,"ready":true,"members":[{"address":"10.0.0.1","expires_at":"...","expires_in_ms":12345}]}]}`),
//! groups by id and members by address in numeric order, whole or a page at a time; and the
//! table `rgap members` prints from it.
//!
//! A reply lists at most [`MAX_PAGE`] members, so the memory one request takes does not grow
//! with the table: a page is chosen in one pass over each group's members keeping only the
//! page's worth (no copy or sort of a whole group), and a reply without `limit` that would
//! list more is refused, pointing to paging.

use std::collections::BinaryHeap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::query::{Cursor, MembersQuery, Page};
use crate::plugin_host::{GroupState, GroupsView};
use rgap_plugin_api::Member;

/// Most members one reply lists (about 1 MB of JSON): the largest `limit`, and the most a
/// reply without `limit` may hold.
pub(crate) const MAX_PAGE: usize = 10_000;

/// The whole reply, or one page of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReply {
    pub groups: Vec<GroupMembers>,
    /// On a page that is not the last: what to pass as `after` for the next one. A group whose
    /// members span pages is listed on each, with the members of that page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembers {
    pub id: u64,
    pub ready: bool,
    pub members: Vec<MemberEntry>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// IPv4 dotted or IPv6 compressed.
    pub address: String,
    /// RFC 3339, UTC, milliseconds.
    pub expires_at: String,
    /// Milliseconds from the reply until `expires_at` (0 once past).
    pub expires_in_ms: u64,
}

impl MembersReply {
    /// Reads the JSON of a `/v1/members` reply.
    pub fn from_json(json: &str) -> Result<MembersReply, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The JSON of this reply, as `/v1/members` serves it.
    pub fn to_json(&self) -> String {
        // Strings, integers and booleans only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a reply without `limit` was refused: it would list `members` (more than [`MAX_PAGE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooMany {
    pub members: usize,
}

impl std::fmt::Display for TooMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} members are more than one reply lists ({MAX_PAGE}): ask for pages with limit=N (1 to {MAX_PAGE}) and pass each reply's next as after (rgap members does)",
            self.members
        )
    }
}

/// What `query` asks of `view` (its group, if it names one, must be in `view`), as of `now`.
pub(crate) fn reply(
    view: &GroupsView,
    query: &MembersQuery,
    now: SystemTime,
) -> Result<MembersReply, TooMany> {
    let mut groups: Vec<&GroupState> =
        view.groups.iter().filter(|group| query.group.is_none_or(|id| id == group.id)).collect();
    groups.sort_unstable_by_key(|group| group.id);
    let page = match &query.page {
        Some(page) => page.clone(),
        None => {
            let members = groups.iter().map(|group| group.members.len()).sum();
            if members > MAX_PAGE {
                return Err(TooMany { members });
            }
            Page { limit: MAX_PAGE, after: None }
        }
    };
    Ok(paged(&groups, &page, query.group.is_some(), crate::protocol::unix_micros(now)))
}

/// The page of `groups` (sorted by id) that starts after `page.after`.
fn paged(groups: &[&GroupState], page: &Page, one_group: bool, now_us: i64) -> MembersReply {
    let mut left = page.limit;
    let mut listed = Vec::new();
    let mut last: Option<Cursor> = None;
    let mut more = false;
    for group in groups {
        let after = match page.after {
            Some(cursor) if group.id < cursor.group => continue,
            Some(cursor) if group.id == cursor.group => Some(cursor.address),
            _ => None,
        };
        if left == 0 {
            // This group comes next, even if it has no members left to list.
            more = true;
            break;
        }
        let (members, rest) = first_after(&group.members, after, left);
        if after.is_some() && members.is_empty() {
            // The page before ended with this group's last member.
            continue;
        }
        left -= members.len();
        if let Some(&(address, _)) = members.last() {
            last = Some(Cursor { group: group.id, address });
        }
        listed.push(GroupMembers {
            id: group.id,
            ready: group.ready,
            members: members.into_iter().map(|(ip, at)| entry(ip, at, now_us)).collect(),
        });
        if rest {
            more = true;
            break;
        }
    }
    // `more` implies a member was listed: a page holds at least one.
    let next = last.filter(|_| more).map(|cursor| cursor.to_text(one_group));
    MembersReply { groups: listed, next }
}

/// The first `count` members of `members` by address after `after` (all if `None`), in
/// order, and whether more follow them. One pass keeping `count` of them (a max-heap whose
/// top is the one to drop), instead of sorting the whole group.
fn first_after(
    members: &[Member],
    after: Option<IpAddr>,
    count: usize,
) -> (Vec<(IpAddr, i64)>, bool) {
    let after = after.map(key_of);
    let mut kept: BinaryHeap<(OrderKey, i64)> = BinaryHeap::with_capacity(count.min(members.len()));
    let mut more = false;
    for member in members {
        let key = order_key(&member.address);
        if after.is_some_and(|after| key <= after) {
            continue;
        }
        if kept.len() < count {
            kept.push((key, member.expires_at_unix_us));
            continue;
        }
        more = true;
        if let Some(mut largest) = kept.peek_mut() {
            if key < largest.0 {
                *largest = (key, member.expires_at_unix_us);
            }
        }
    }
    let kept = kept.into_sorted_vec().into_iter().map(|(key, at)| (ip_of(key), at)).collect();
    (kept, more)
}

/// A place in address order, as `IpAddr` orders addresses (IPv4 before IPv6, each
/// numerically) but cheaper to compare than building one per member: whether it is IPv6,
/// and the 128 bits of its (IPv4-mapped) address.
type OrderKey = (bool, u128);

/// The key of a member's address (IPv4-mapped for IPv4, as [`Member::ip`] reads it).
fn order_key(address: &[u8; 16]) -> OrderKey {
    let bits = u128::from_be_bytes(*address);
    (bits >> 32 != 0xffff, bits)
}

fn key_of(ip: IpAddr) -> OrderKey {
    match ip {
        IpAddr::V4(v4) => order_key(&v4.to_ipv6_mapped().octets()),
        // Even `::ffff:a.b.c.d`: as an `IpAddr::V6` it comes after every IPv4 address.
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

fn ip_of((v6, bits): OrderKey) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    }
}

fn entry(ip: IpAddr, expires_at_us: i64, now_us: i64) -> MemberEntry {
    MemberEntry {
        address: ip.to_string(),
        expires_at: rfc3339_millis(expires_at_us),
        expires_in_ms: (expires_at_us.saturating_sub(now_us).max(0) / 1000) as u64,
    }
}

fn rfc3339_millis(unix_us: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_micros(unix_us.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// `GROUP  ADDRESS  EXPIRES IN` and one aligned row per member.
pub fn render_table(reply: &MembersReply) -> String {
    let header = ["GROUP", "ADDRESS", "EXPIRES IN"];
    let rows: Vec<[String; 3]> = reply
        .groups
        .iter()
        .flat_map(|group| {
            group.members.iter().map(move |member| {
                [
                    group.id.to_string(),
                    member.address.clone(),
                    format!("{:.1}s", member.expires_in_ms as f64 / 1000.0),
                ]
            })
        })
        .collect();
    let width = |column: usize| {
        rows.iter().map(|row| row[column].len()).chain([header[column].len()]).max().unwrap_or(0)
    };
    let (group_width, address_width) = (width(0), width(1));
    let mut text = String::new();
    let mut line = |cells: [&str; 3]| {
        let _ = writeln!(
            text,
            "{:<group_width$}  {:<address_width$}  {}",
            cells[0], cells[1], cells[2]
        );
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2]]);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::{RArc, RVec};

    fn member(ip: &str, expires_at_unix_us: i64) -> Member {
        let address = match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Member { address, expires_at_unix_us }
    }

    fn group(id: u64, members: Vec<Member>) -> GroupState {
        GroupState {
            id,
            ready: id != 2,
            revision: 1,
            membership_revision: 1,
            members: RArc::new(RVec::from(members)),
        }
    }

    fn whole(view: &GroupsView, now: SystemTime) -> MembersReply {
        reply(view, &MembersQuery::default(), now).unwrap()
    }

    #[test]
    fn groups_by_id_and_members_in_numeric_order() {
        let view = GroupsView {
            groups: vec![
                group(3, vec![]),
                group(
                    1,
                    vec![
                        member("10.0.0.10", 12_000_000),
                        member("2001:db8::1", 11_000_000),
                        member("10.0.0.9", 10_500_000),
                    ],
                ),
                group(2, vec![member("10.0.0.1", 1_000_000)]),
            ],
        };
        let now = UNIX_EPOCH + Duration::from_secs(10);
        let reply = whole(&view, now);
        let ids: Vec<u64> = reply.groups.iter().map(|g| g.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        let addresses: Vec<&str> =
            reply.groups[0].members.iter().map(|m| m.address.as_str()).collect();
        assert_eq!(addresses, ["10.0.0.9", "10.0.0.10", "2001:db8::1"]);
        assert_eq!(reply.groups[0].members[0].expires_in_ms, 500);
        assert_eq!(reply.groups[0].members[0].expires_at, "1970-01-01T00:00:10.500Z");
        assert_eq!(reply.groups[1].members[0].expires_in_ms, 0, "past: 0, not negative");
        assert!(!reply.groups[1].ready);
        let only = super::reply(&view, &MembersQuery { group: Some(2), page: None }, now).unwrap();
        assert_eq!(only.groups.len(), 1);
        assert_eq!(only.groups[0].id, 2);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let view = GroupsView { groups: vec![group(1000, vec![member("10.0.0.1", 22_345_000)])] };
        let reply = whole(&view, UNIX_EPOCH + Duration::from_secs(10));
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            json,
            r#"{"groups":[{"id":1000,"ready":true,"members":[{"address":"10.0.0.1","expires_at":"1970-01-01T00:00:22.345Z","expires_in_ms":12345}]}]}"#
        );
    }

    #[test]
    fn table_aligns_columns_under_the_header() {
        let view = GroupsView {
            groups: vec![
                group(7, vec![member("10.0.0.1", 12_000_000)]),
                group(1000, vec![member("10.0.0.200", 25_500_000)]),
            ],
        };
        let reply = whole(&view, UNIX_EPOCH + Duration::from_secs(10));
        let table = render_table(&reply);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "GROUP  ADDRESS     EXPIRES IN");
        assert_eq!(lines[1], "7      10.0.0.1    2.0s");
        assert_eq!(lines[2], "1000   10.0.0.200  15.5s");
    }

    /// `count` members of group `id`, addresses scattered (IPv4 and IPv6), in no order.
    fn scattered(id: u64, count: u32) -> GroupState {
        let members = (0..count)
            .map(|i| {
                let n = i.wrapping_mul(2_654_435_761) % 65_536;
                let ip = if i % 5 == 0 {
                    format!("2001:db8::{n:x}")
                } else {
                    format!("10.{}.{}.{}", n >> 8, n & 255, i % 7)
                };
                member(&ip, 20_000_000)
            })
            .collect();
        group(id, members)
    }

    /// Follows `next` from the first page of `query` to the last; the (group, address)
    /// pairs in the order served, and the number of pages.
    fn walk(view: &GroupsView, mut query: MembersQuery) -> (Vec<(u64, IpAddr)>, usize) {
        let now = UNIX_EPOCH + Duration::from_secs(10);
        let (mut seen, mut pages) = (Vec::new(), 0);
        loop {
            let page = reply(view, &query, now).unwrap();
            pages += 1;
            let limit = query.page.as_ref().unwrap().limit;
            let listed: usize = page.groups.iter().map(|g| g.members.len()).sum();
            assert!(listed <= limit, "{listed} members on a page of {limit}");
            for group in &page.groups {
                seen.extend(group.members.iter().map(|m| (group.id, m.address.parse().unwrap())));
            }
            let Some(next) = page.next else { return (seen, pages) };
            assert_eq!(listed, limit, "a page before the last is full");
            let text = match query.group {
                Some(id) => format!("group={id}&limit={limit}&after={next}"),
                None => format!("limit={limit}&after={next}"),
            };
            query = MembersQuery::parse(Some(&text)).unwrap();
        }
    }

    #[test]
    fn pages_list_each_member_once_in_order_within_a_group_and_across_groups() {
        let view = GroupsView {
            groups: vec![scattered(9, 1234), group(5, vec![]), scattered(3, 300), scattered(7, 1)],
        };
        let mut everyone: Vec<(u64, IpAddr)> = view
            .groups
            .iter()
            .flat_map(|g| g.members.iter().map(move |m| (g.id, m.ip())))
            .collect();
        everyone.sort();
        for limit in [1, 7, 300, 301, 1535, MAX_PAGE] {
            let page = Some(Page { limit, after: None });
            let (seen, _) = walk(&view, MembersQuery { group: None, page: page.clone() });
            assert_eq!(seen, everyone, "limit {limit}");
            let (seen, pages) = walk(&view, MembersQuery { group: Some(9), page });
            let group_9: Vec<_> = everyone.iter().copied().filter(|(id, _)| *id == 9).collect();
            assert_eq!(seen, group_9, "limit {limit}");
            assert_eq!(pages, 1234usize.div_ceil(limit), "limit {limit}");
        }
    }

    #[test]
    fn order_keys_order_addresses_as_ip_addr_does() {
        let mut ips: Vec<IpAddr> = [
            "::",
            "::1",
            "::ffff:0.0.0.1",
            "::ffff:255.255.255.255",
            "0.0.0.0",
            "0.0.0.1",
            "10.0.0.9",
            "10.0.0.10",
            "255.255.255.255",
            "2001:db8::1",
            "fe80::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::fffe:1.2.3.4",
            "::1:ffff:1.2.3.4",
        ]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
        ips.sort();
        let mut by_key = ips.clone();
        by_key.sort_by_key(|ip| key_of(*ip));
        assert_eq!(by_key, ips);
        for ip in &ips {
            let canonical = ip.to_canonical();
            let wire = match canonical {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            assert_eq!(order_key(&wire), key_of(canonical), "{ip}");
            assert_eq!(ip_of(key_of(canonical)), canonical, "{ip}");
        }
    }

    #[test]
    fn a_group_without_members_is_listed_once_when_paging_reaches_it() {
        let view = GroupsView { groups: vec![scattered(1, 2), group(5, vec![]), scattered(9, 2)] };
        let now = UNIX_EPOCH + Duration::from_secs(10);
        let query = |text: &str| MembersQuery::parse(Some(text)).unwrap();
        let first = reply(&view, &query("limit=2"), now).unwrap();
        assert_eq!(first.groups.iter().map(|g| g.id).collect::<Vec<_>>(), [1]);
        let next = first.next.expect("more follow");
        assert!(next.starts_with("1/"), "{next}");
        let second = reply(&view, &query(&format!("limit=2&after={next}")), now).unwrap();
        assert_eq!(second.groups.iter().map(|g| g.id).collect::<Vec<_>>(), [5, 9]);
        assert_eq!(second.next, None, "the last page says so");
    }

    #[test]
    fn a_reply_without_limit_is_whole_up_to_the_cap_and_refused_past_it() {
        let now = UNIX_EPOCH + Duration::from_secs(10);
        let full = GroupsView { groups: vec![scattered(1, MAX_PAGE as u32)] };
        let whole = reply(&full, &MembersQuery::default(), now).unwrap();
        assert_eq!(whole.groups[0].members.len(), MAX_PAGE);
        assert_eq!(whole.next, None);
        assert!(!whole.to_json().contains("next"), "the reply's shape is as before paging");
        let over = GroupsView { groups: vec![scattered(1, 6_000), scattered(2, 4_001)] };
        let refused = reply(&over, &MembersQuery::default(), now).unwrap_err();
        assert_eq!(refused, TooMany { members: 10_001 });
        assert!(refused.to_string().contains("limit=N"), "{refused}");
        // One group of it is few enough.
        let only = MembersQuery { group: Some(2), page: None };
        assert_eq!(reply(&over, &only, now).unwrap().groups[0].members.len(), 4_001);
    }
}

/// The figure in README's Monitoring section: run with
/// `cargo test --release -p rgap-core --lib a_million -- --ignored --nocapture`.
#[cfg(test)]
mod million {
    use super::*;
    use abi_stable::std_types::{RArc, RVec};
    use std::time::Instant;

    #[test]
    #[ignore = "a measurement: slow unless built with --release"]
    fn a_million_members_in_one_group_page_through_each_once_in_order() {
        // Distinct addresses in no order (multiplying by an odd number permutes u32).
        let members: Vec<Member> = (0..1_000_000u32)
            .map(|i| Member {
                address: Ipv4Addr::from(i.wrapping_mul(2_654_435_761)).to_ipv6_mapped().octets(),
                expires_at_unix_us: 20_000_000,
            })
            .collect();
        let view = GroupsView {
            groups: vec![GroupState {
                id: 1,
                ready: true,
                revision: 1,
                membership_revision: 1,
                members: RArc::new(RVec::from(members)),
            }],
        };
        let now = UNIX_EPOCH + Duration::from_secs(10);
        for limit in [1_000, MAX_PAGE] {
            let (mut after, mut pages, mut slowest, mut largest) = (None, 0, Duration::ZERO, 0);
            let mut previous: Option<IpAddr> = None;
            let mut listed = 0;
            let start = Instant::now();
            loop {
                let query = MembersQuery { group: Some(1), page: Some(Page { limit, after }) };
                let began = Instant::now();
                let page = reply(&view, &query, now).unwrap();
                let json = page.to_json();
                slowest = slowest.max(began.elapsed());
                largest = largest.max(json.len());
                pages += 1;
                for member in &page.groups[0].members {
                    let ip: IpAddr = member.address.parse().unwrap();
                    assert!(previous.is_none_or(|p| p < ip), "{previous:?} then {ip}");
                    previous = Some(ip);
                    listed += 1;
                }
                let Some(next) = page.next else { break };
                after = Some(Cursor { group: 1, address: next.parse().unwrap() });
            }
            assert_eq!(listed, 1_000_000);
            println!(
                "1 000 000 members, pages of {limit}: {pages} pages in {:?} ({:?} a page on average, slowest {slowest:?}), largest reply {largest} bytes",
                start.elapsed(),
                start.elapsed() / pages,
            );
        }
    }
}
