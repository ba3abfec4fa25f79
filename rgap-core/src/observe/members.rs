//! `/v1/members`: who is in which group right now, as JSON
//! (`{"groups":[{"id":1000,"ready":true,"members":[{"address":"10.0.0.1","expires_at":"...","expires_in_ms":12345}]}]}`),
//! groups by id and members by address in numeric order; and the table `rgap members`
//! prints from it.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::plugin_host::GroupsView;

/// The whole reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReply {
    pub groups: Vec<GroupMembers>,
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
}

/// The groups of `view` (only `only` if given), as of `now`.
pub(crate) fn from_view(view: &GroupsView, only: Option<u64>, now: SystemTime) -> MembersReply {
    let now_us = crate::protocol::unix_micros(now);
    let mut groups: Vec<GroupMembers> = view
        .groups
        .iter()
        .filter(|group| only.is_none_or(|id| id == group.id))
        .map(|group| {
            let mut members: Vec<(IpAddr, i64)> =
                group.members.iter().map(|m| (m.ip(), m.expires_at_unix_us)).collect();
            members.sort_unstable();
            let members = members
                .into_iter()
                .map(|(ip, expires_at_us)| MemberEntry {
                    address: ip.to_string(),
                    expires_at: rfc3339_millis(expires_at_us),
                    expires_in_ms: (expires_at_us.saturating_sub(now_us).max(0) / 1000) as u64,
                })
                .collect();
            GroupMembers { id: group.id, ready: group.ready, members }
        })
        .collect();
    groups.sort_unstable_by_key(|group| group.id);
    MembersReply { groups }
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
    use crate::plugin_host::GroupState;
    use abi_stable::std_types::{RArc, RVec};
    use rgap_plugin_api::Member;

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
        let reply = from_view(&view, None, now);
        let ids: Vec<u64> = reply.groups.iter().map(|g| g.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        let addresses: Vec<&str> =
            reply.groups[0].members.iter().map(|m| m.address.as_str()).collect();
        assert_eq!(addresses, ["10.0.0.9", "10.0.0.10", "2001:db8::1"]);
        assert_eq!(reply.groups[0].members[0].expires_in_ms, 500);
        assert_eq!(reply.groups[0].members[0].expires_at, "1970-01-01T00:00:10.500Z");
        assert_eq!(reply.groups[1].members[0].expires_in_ms, 0, "past: 0, not negative");
        assert!(!reply.groups[1].ready);
        let only = from_view(&view, Some(2), now);
        assert_eq!(only.groups.len(), 1);
        assert_eq!(only.groups[0].id, 2);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let view = GroupsView { groups: vec![group(1000, vec![member("10.0.0.1", 22_345_000)])] };
        let reply = from_view(&view, None, UNIX_EPOCH + Duration::from_secs(10));
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
        let reply = from_view(&view, None, UNIX_EPOCH + Duration::from_secs(10));
        let table = render_table(&reply);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "GROUP  ADDRESS     EXPIRES IN");
        assert_eq!(lines[1], "7      10.0.0.1    2.0s");
        assert_eq!(lines[2], "1000   10.0.0.200  15.5s");
    }
}
