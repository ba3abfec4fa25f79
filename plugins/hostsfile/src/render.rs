//! What the hosts file says: the prepend lines, then for each mapping one `<ip> <hostname>`
//! line per live member (sorted, so the file only changes when membership does), or the
//! mapping's fallback addresses marked `# fallback address used!` when the group is empty,
//! then the append lines. Nothing is rendered while a mapped group is not ready.
//!
//! Here are the layout, the order of addresses and their formatting; the writer keeps the
//! text and edits it ([`crate::hosts_text`]). `Layout::render` renders the whole file at
//! once, for tests to hold the edited text against.

use std::fmt;
#[cfg(test)]
use std::io::Write as _;
use std::net::IpAddr;

#[cfg(test)]
use std::collections::HashMap;

#[cfg(test)]
use rgap_plugin_api::GroupSnapshot;
use rgap_plugin_api::Member;

/// One group's addresses under one hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub group: u64,
    pub hostname: String,
    pub fallback_addresses: Vec<IpAddr>,
}

/// The fixed parts of the file and the mappings in between, as configured.
#[derive(Debug, Clone)]
pub struct Layout {
    pub prepend_lines: Vec<String>,
    pub mappings: Vec<Mapping>,
    pub append_lines: Vec<String>,
}

/// Why the file cannot be written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Mapped groups that exist but have not passed their `readiness_delay`.
    pub not_ready: Vec<u64>,
    /// Mapped groups the listener does not have at all (a config mistake).
    pub unknown: Vec<u64>,
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        match (self.not_ready.is_empty(), self.unknown.is_empty()) {
            (false, true) => write!(f, "group(s) {} not ready yet", list(&self.not_ready)),
            (true, false) => {
                write!(f, "group(s) {} not configured in the listener", list(&self.unknown))
            }
            _ => write!(
                f,
                "group(s) {} not configured in the listener, group(s) {} not ready yet",
                list(&self.unknown),
                list(&self.not_ready)
            ),
        }
    }
}

impl Layout {
    /// Why the file cannot be written for `groups`, if it cannot: cheap, no formatting.
    #[cfg(test)]
    pub fn waiting(&self, groups: &[GroupSnapshot<'_>]) -> Option<Waiting> {
        let index = index_by_id(groups);
        let mut waiting = Waiting { not_ready: Vec::new(), unknown: Vec::new() };
        for mapping in &self.mappings {
            match index.get(&mapping.group) {
                Some(group) if group.ready => {}
                Some(_) => push_once(&mut waiting.not_ready, mapping.group),
                None => push_once(&mut waiting.unknown, mapping.group),
            }
        }
        let complete = waiting.not_ready.is_empty() && waiting.unknown.is_empty();
        (!complete).then_some(waiting)
    }

    /// The file's content for `groups`, or why there is none yet.
    #[cfg(test)]
    pub fn render(&self, groups: &[GroupSnapshot<'_>]) -> Result<String, Waiting> {
        let mut text = Vec::new();
        self.render_into(groups, &mut text, &mut SortScratch::default())?;
        Ok(String::from_utf8(text).expect("rendered from strings and addresses"))
    }

    /// As [`Layout::render`], into `text` (cleared first), sorting in `scratch`. The writer
    /// keeps the text and edits it instead ([`crate::hosts_text`]); this is the whole file
    /// rendered at once, to compare the edited text with.
    #[cfg(test)]
    pub fn render_into(
        &self,
        groups: &[GroupSnapshot<'_>],
        text: &mut Vec<u8>,
        scratch: &mut SortScratch,
    ) -> Result<(), Waiting> {
        if let Some(waiting) = self.waiting(groups) {
            return Err(waiting);
        }
        let index = index_by_id(groups);
        let found: Vec<&GroupSnapshot<'_>> =
            self.mappings.iter().filter_map(|mapping| index.get(&mapping.group).copied()).collect();

        text.clear();
        for line in &self.prepend_lines {
            push_line(text, line);
        }
        for (mapping, group) in self.mappings.iter().zip(found) {
            if group.members().is_empty() {
                for address in &mapping.fallback_addresses {
                    let _ =
                        writeln!(text, "{address} {} # fallback address used!", mapping.hostname);
                }
                continue;
            }
            // IPv4 (unmapped, dotted) before IPv6 (compressed); each numerically. With 100 000
            // members this loop is the whole cost of the output: IPv4 addresses are sorted as
            // 32-bit integers and formatted by hand (`Display` is several times slower).
            scratch.sort(group.members());
            text.reserve(scratch.len() * (mapping.hostname.len() + 17));
            for &address in &scratch.v4 {
                push_ipv4(text, address);
                push_name(text, &mapping.hostname);
            }
            for &address in &scratch.v6 {
                let _ = write!(text, "{}", std::net::Ipv6Addr::from(address));
                push_name(text, &mapping.hostname);
            }
        }
        for line in &self.append_lines {
            push_line(text, line);
        }
        Ok(())
    }
}

/// One group's addresses, sorted and without duplicates, IPv4 apart from IPv6; kept
/// between renders for its memory.
#[derive(Debug, Default)]
pub struct SortScratch {
    pub(crate) v4: Vec<u32>,
    pub(crate) v6: Vec<u128>,
}

/// A member's address as a sort key: IPv4 (unmapped) apart from IPv6, as the file lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Address {
    V4(u32),
    V6(u128),
}

impl Address {
    /// Read straight from the wire bytes: this runs once per member per render.
    pub(crate) fn of(address: &[u8; 16]) -> Address {
        const MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        match address.split_first_chunk::<12>() {
            Some((prefix, v4)) if *prefix == MAPPED_PREFIX => {
                Address::V4(u32::from_be_bytes([v4[0], v4[1], v4[2], v4[3]]))
            }
            _ => Address::V6(u128::from_be_bytes(*address)),
        }
    }
}

/// Buffers kept between renders are shrunk when their capacity exceeds one and a half times
/// what is needed plus this many bytes: a group that shrank (or a burst) must not leave its high-water mark
/// resident for months.
const TRIM_SLACK_BYTES: usize = 64 * 1024;

/// Shrinks `buffer` to a quarter more than `needed` elements if it is far larger (see
/// `TRIM_SLACK_BYTES`).
pub fn trim_excess<T>(buffer: &mut Vec<T>, needed: usize) {
    let slack = TRIM_SLACK_BYTES / std::mem::size_of::<T>().max(1);
    if buffer.capacity() > needed + needed / 2 + slack {
        buffer.shrink_to(needed + needed / 4);
    }
}

impl SortScratch {
    /// Sorts the addresses of `members` into `v4` and `v6`, without duplicates.
    pub(crate) fn sort(&mut self, members: &[Member]) {
        self.v4.clear();
        self.v6.clear();
        trim_excess(&mut self.v4, members.len());
        trim_excess(&mut self.v6, members.len());
        for member in members {
            match Address::of(&member.address) {
                Address::V4(v4) => self.v4.push(v4),
                Address::V6(v6) => self.v6.push(v6),
            }
        }
        self.v4.sort_unstable();
        self.v4.dedup();
        self.v6.sort_unstable();
        self.v6.dedup();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

#[cfg(test)]
fn push_name(text: &mut Vec<u8>, hostname: &str) {
    text.push(b' ');
    push_line(text, hostname);
}

#[cfg(test)]
fn push_line(text: &mut Vec<u8>, line: &str) {
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
}

/// Appends `a.b.c.d` for `address`, as `Ipv4Addr`'s `Display` would.
pub(crate) fn push_ipv4(text: &mut Vec<u8>, address: u32) {
    // Built in a buffer and appended once: a `push` per digit costs a capacity check each.
    let mut buffer = [0u8; 15];
    let mut length = 0;
    let mut put = |byte: u8| {
        buffer[length] = byte;
        length += 1;
    };
    for (position, octet) in address.to_be_bytes().into_iter().enumerate() {
        if position > 0 {
            put(b'.');
        }
        if octet >= 100 {
            put(b'0' + octet / 100);
        }
        if octet >= 10 {
            put(b'0' + octet / 10 % 10);
        }
        put(b'0' + octet % 10);
    }
    text.extend_from_slice(&buffer[..length]);
}

/// Groups by id: with many groups and many mappings, a scan per mapping would cost
/// mappings × groups for every snapshot.
#[cfg(test)]
fn index_by_id<'g, 'a>(groups: &'g [GroupSnapshot<'a>]) -> HashMap<u64, &'g GroupSnapshot<'a>> {
    groups.iter().map(|group| (group.id, group)).collect()
}

pub(crate) fn push_once(ids: &mut Vec<u64>, id: u64) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kept_buffers_shrink_only_when_far_larger_than_needed() {
        let mut buffer: Vec<u8> = Vec::with_capacity(4 << 20);
        trim_excess(&mut buffer, 3 << 20);
        assert!(buffer.capacity() >= 4 << 20, "within one and a half times the need: kept");
        trim_excess(&mut buffer, 1 << 20);
        assert!(buffer.capacity() <= (1 << 20) + (1 << 18), "{}", buffer.capacity());
        let mut small: Vec<u32> = Vec::with_capacity(1000);
        trim_excess(&mut small, 0);
        assert_eq!(small.capacity(), 1000, "below the slack: not worth a reallocation");
    }

    use super::*;
    use rgap_plugin_api::{Member, MemberList};

    fn member(ip: &str) -> Member {
        let address = match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Member { address, expires_at_unix_us: 0 }
    }

    fn group(id: u64, ready: bool, members: &MemberList) -> GroupSnapshot<'_> {
        GroupSnapshot { id, ready, revision: 0, membership_revision: 0, members }
    }

    fn list(members: &[Member]) -> MemberList {
        MemberList::new(members.to_vec().into())
    }

    fn layout() -> Layout {
        Layout {
            prepend_lines: vec!["# top".into()],
            mappings: vec![
                Mapping {
                    group: 1,
                    hostname: "worker".into(),
                    fallback_addresses: vec!["1.2.3.4".parse().unwrap()],
                },
                Mapping {
                    group: 2,
                    hostname: "db".into(),
                    fallback_addresses: vec![
                        "5.6.7.8".parse().unwrap(),
                        "2001:db8::5".parse().unwrap(),
                    ],
                },
            ],
            append_lines: vec!["# end".into()],
        }
    }

    #[test]
    fn hand_formatted_ipv4_matches_display() {
        for address in
            [0u32, 1, 9, 10, 99, 100, 255, 0x0a00_0001, 0xc0a8_6401, u32::MAX, 0x0102_0304]
        {
            let mut text = Vec::new();
            push_ipv4(&mut text, address);
            assert_eq!(text, std::net::Ipv4Addr::from(address).to_string().as_bytes());
        }
        // And a spread of others (a multiplicative walk over the whole range).
        let mut text = Vec::new();
        for step in 0..100_000u32 {
            let address = step.wrapping_mul(2_654_435_761);
            text.clear();
            push_ipv4(&mut text, address);
            assert_eq!(text, std::net::Ipv4Addr::from(address).to_string().as_bytes());
        }
    }

    #[test]
    fn members_sorted_then_fallbacks_for_an_empty_group() {
        let members = [member("2001:db8::1"), member("10.0.0.2"), member("10.0.0.10")];
        let (members, empty) = (list(&members), list(&[]));
        let text = layout().render(&[group(1, true, &members), group(2, true, &empty)]).unwrap();
        assert_eq!(
            text,
            "# top\n10.0.0.2 worker\n10.0.0.10 worker\n2001:db8::1 worker\n\
             5.6.7.8 db # fallback address used!\n2001:db8::5 db # fallback address used!\n# end\n"
        );
    }

    #[test]
    fn nothing_while_a_group_is_not_ready_or_unknown() {
        let empty = list(&[]);
        let waiting = layout().render(&[group(1, false, &empty)]).unwrap_err();
        assert_eq!(waiting, Waiting { not_ready: vec![1], unknown: vec![2] });
        assert_eq!(
            waiting.to_string(),
            "group(s) 2 not configured in the listener, group(s) 1 not ready yet"
        );
        let waiting =
            layout().render(&[group(1, true, &empty), group(2, false, &empty)]).unwrap_err();
        assert_eq!(waiting.to_string(), "group(s) 2 not ready yet");
    }
}
