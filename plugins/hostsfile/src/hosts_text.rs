//! The hosts file's text, kept between writes and edited line by line, so that one join or
//! leave in a group of a million costs a few lines' work instead of a render of the file.
//!
//! Each mapping's lines are kept sorted in chunks of a few hundred lines: the chunk's
//! addresses (4 bytes an IPv4 address, the index searched) and its rendered text (what is
//! written). A change to a group is found by diffing its new member list against the
//! addresses of the one the lines were made from, kept in that list's order ([`crate::diff`]);
//! each address that joined or left inserts or removes one line in one chunk. A group whose
//! list changed too much, or does not diff cleanly, is rendered again alone. The text is the
//! same, byte for byte, as `Layout::render` gives for the whole file (the tests hold them
//! against each other).

use std::io::Write as _;

use rgap_plugin_api::Member;

use crate::diff;
use crate::render::{push_ipv4, trim_excess, Address, Layout, SortScratch};

/// A re-rendered chunk holds this many lines; one that grows past twice as many is split, so
/// inserting a line moves at most some tens of kilobytes.
const CHUNK_LINES: usize = 512;

/// A group's lines are edited one by one while at most this many plus a 128th of the group
/// changed; past that, rendering the group again is cheaper (an edit, a few µs, costs about
/// as much as rendering a hundred lines), and leaves no slack in the buffers.
const EDIT_LIMIT: usize = 8;
const EDIT_LIMIT_DIVISOR: usize = 128;

/// An address as a sort key that can write itself.
trait Key: Copy + Ord {
    fn push_text(self, text: &mut Vec<u8>);
}

impl Key for u32 {
    fn push_text(self, text: &mut Vec<u8>) {
        push_ipv4(text, self);
    }
}

impl Key for u128 {
    fn push_text(self, text: &mut Vec<u8>) {
        let _ = write!(text, "{}", std::net::Ipv6Addr::from(self));
    }
}

/// Consecutive lines of one section: their addresses, sorted, and their text.
#[derive(Debug)]
struct Chunk<K> {
    keys: Vec<K>,
    text: Vec<u8>,
}

/// The lines of one address family of one section, in sorted chunks, none empty.
#[derive(Debug)]
struct Run<K> {
    chunks: Vec<Chunk<K>>,
}

impl<K> Default for Run<K> {
    fn default() -> Self {
        Run { chunks: Vec::new() }
    }
}

/// Why a group's lines are rendered again instead of edited.
struct Mismatch;

impl<K: Key> Run<K> {
    /// Replaces every line with those of `keys` (sorted, distinct), each ending in `suffix`.
    ///
    /// The chunks' buffers are refilled where they are: a group that grows a little between
    /// renders then grows them in place instead of leaving freed blocks of every size behind
    /// in the allocator.
    fn fill(&mut self, keys: &[K], suffix: &[u8]) {
        let pieces = keys.chunks(CHUNK_LINES);
        self.chunks.truncate(pieces.len());
        for (at, keys) in pieces.enumerate() {
            if at == self.chunks.len() {
                self.chunks.push(Chunk { keys: Vec::new(), text: Vec::new() });
            }
            let chunk = &mut self.chunks[at];
            chunk.keys.clear();
            chunk.keys.extend_from_slice(keys);
            chunk.text.clear();
            for &key in keys {
                key.push_text(&mut chunk.text);
                chunk.text.extend_from_slice(suffix);
            }
            trim_excess(&mut chunk.keys, keys.len());
            let length = chunk.text.len();
            trim_excess(&mut chunk.text, length);
        }
    }

    /// The chunk where `key` is or would go (the first whose last key is not smaller).
    fn chunk_for(&self, key: K) -> usize {
        let at = self.chunks.partition_point(|chunk| chunk.keys.last().is_some_and(|&k| k < key));
        at.min(self.chunks.len().saturating_sub(1))
    }

    fn insert(&mut self, key: K, suffix: &[u8]) -> Result<(), Mismatch> {
        if self.chunks.is_empty() {
            self.chunks.push(Chunk { keys: Vec::new(), text: Vec::new() });
        }
        let at = self.chunk_for(key);
        let chunk = &mut self.chunks[at];
        let line = chunk.keys.binary_search(&key).err().ok_or(Mismatch)?;
        let start = line_start(&chunk.text, line);
        let mut new_line = Vec::with_capacity(40 + suffix.len());
        key.push_text(&mut new_line);
        new_line.extend_from_slice(suffix);
        chunk.text.splice(start..start, new_line);
        chunk.keys.insert(line, key);
        if chunk.keys.len() > 2 * CHUNK_LINES {
            let half = chunk.keys.len() / 2;
            let split_at = line_start(&chunk.text, half);
            let second =
                Chunk { keys: chunk.keys.split_off(half), text: chunk.text.split_off(split_at) };
            chunk.keys.shrink_to(half + half / 4);
            chunk.text.shrink_to(split_at + split_at / 4);
            self.chunks.insert(at + 1, second);
        }
        Ok(())
    }

    fn remove(&mut self, key: K) -> Result<(), Mismatch> {
        let at = self.chunk_for(key);
        let chunk = self.chunks.get_mut(at).ok_or(Mismatch)?;
        let line = chunk.keys.binary_search(&key).map_err(|_| Mismatch)?;
        let start = line_start(&chunk.text, line);
        let end = line_start(&chunk.text[start..], 1) + start;
        chunk.text.drain(start..end);
        chunk.keys.remove(line);
        if chunk.keys.is_empty() {
            self.chunks.remove(at);
        } else if chunk.keys.capacity() > 4 * chunk.keys.len() + 64 {
            // A chunk that lost most of its lines gives their memory back.
            chunk.keys.shrink_to_fit();
            chunk.text.shrink_to_fit();
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.keys.len()).sum()
    }

    fn texts(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().map(|chunk| chunk.text.as_slice())
    }
}

/// Where line `line` of `text` starts (the end of `text` if it has fewer lines).
fn line_start(text: &[u8], line: usize) -> usize {
    if line == 0 {
        return 0;
    }
    // Whole blocks are counted (which vectorises); only the last is walked byte by byte.
    let mut seen = 0;
    let mut offset = 0;
    for block in text.chunks(64) {
        let newlines = block.iter().filter(|&&byte| byte == b'\n').count();
        if seen + newlines >= line {
            for (at, &byte) in block.iter().enumerate() {
                if byte == b'\n' {
                    seen += 1;
                    if seen == line {
                        return offset + at + 1;
                    }
                }
            }
        }
        seen += newlines;
        offset += block.len();
    }
    text.len()
}

/// A group's addresses in the order of its member list, to diff the next list against.
#[derive(Debug)]
enum Order {
    /// Every member has an IPv4 address.
    V4(Vec<u32>),
    Any(Vec<[u8; 16]>),
}

impl Order {
    fn len(&self) -> usize {
        match self {
            Order::V4(order) => order.len(),
            Order::Any(order) => order.len(),
        }
    }

    /// See [`diff::follow`].
    fn follow(&mut self, members: &[Member], limit: usize) -> Option<diff::Changes> {
        let changes = match self {
            Order::V4(order) => diff::follow(order, members, limit),
            Order::Any(order) => diff::follow(order, members, limit),
        };
        match self {
            Order::V4(order) => trim_excess(order, members.len()),
            Order::Any(order) => trim_excess(order, members.len()),
        }
        changes
    }

    /// Made the addresses of `members`, in the smaller form if they fit it; buffers are
    /// reused where they can be.
    fn refill(order: &mut Option<Order>, members: &[Member]) {
        let mut v4 = match order.take() {
            Some(Order::V4(v4)) => v4,
            _ => Vec::new(),
        };
        *order = Some(match diff::addresses_in_order(members, &mut v4) {
            Some(()) => {
                trim_excess(&mut v4, members.len());
                Order::V4(v4)
            }
            None => {
                let mut any = Vec::new();
                let _ = diff::addresses_in_order(members, &mut any);
                Order::Any(any)
            }
        });
    }
}

/// One mapping's lines.
#[derive(Debug)]
struct Section {
    /// ` <hostname>\n`, what every member line ends with.
    suffix: Vec<u8>,
    /// The fallback lines, shown while the group is empty.
    fallback: Vec<u8>,
    /// The addresses of the member list shown, in its order; `None` until the first.
    order: Option<Order>,
    v4: Run<u32>,
    v6: Run<u128>,
    /// Lines in `v4` and `v6`.
    lines: usize,
}

impl Section {
    /// Shows `members` instead of the list shown so far; whether the text changed.
    fn show(&mut self, members: &[Member], sorted: &mut SortScratch) -> bool {
        let Some(order) = self.order.as_mut() else {
            self.render(members, sorted);
            return true;
        };
        let was_empty = self.lines == 0;
        // Lines are edited only from a list of distinct addresses (the listener's lists are),
        // and only while the edited lines still count one per member.
        let limit = EDIT_LIMIT + members.len() / EDIT_LIMIT_DIVISOR;
        let changes = (self.lines == order.len()).then(|| order.follow(members, limit)).flatten();
        let edited = changes
            .and_then(|changes| {
                let changed = !changes.left.is_empty() || !changes.joined.is_empty();
                self.edit(&changes).ok().map(|()| changed)
            })
            .filter(|_| self.lines == members.len());
        match edited {
            Some(changed) => changed,
            None => {
                self.render(members, sorted);
                !(was_empty && self.lines == 0)
            }
        }
    }

    fn edit(&mut self, changes: &diff::Changes) -> Result<(), Mismatch> {
        for address in &changes.left {
            match Address::of(address) {
                Address::V4(key) => self.v4.remove(key)?,
                Address::V6(key) => self.v6.remove(key)?,
            }
            self.lines -= 1;
        }
        for address in &changes.joined {
            match Address::of(address) {
                Address::V4(key) => self.v4.insert(key, &self.suffix)?,
                Address::V6(key) => self.v6.insert(key, &self.suffix)?,
            }
            self.lines += 1;
        }
        Ok(())
    }

    /// Renders every line from `members` again.
    fn render(&mut self, members: &[Member], sorted: &mut SortScratch) {
        Order::refill(&mut self.order, members);
        sorted.sort(members);
        self.v4.fill(&sorted.v4, &self.suffix);
        self.v6.fill(&sorted.v6, &self.suffix);
        self.lines = self.v4.len() + self.v6.len();
    }

    /// Appends the section's text, in pieces, to `pieces`.
    fn push_pieces<'a>(&'a self, pieces: &mut Vec<&'a [u8]>) {
        if self.lines == 0 {
            pieces.push(&self.fallback);
        } else {
            pieces.extend(self.v4.texts().chain(self.v6.texts()));
        }
    }
}

/// The whole file: prepend lines, one section per mapping, append lines.
#[derive(Debug)]
pub(crate) struct HostsText {
    head: Vec<u8>,
    sections: Vec<Section>,
    tail: Vec<u8>,
    /// Sections that have shown no member list yet.
    unset: usize,
    /// Where a group's addresses are sorted when rendered whole, kept for its memory.
    sorted: SortScratch,
}

impl HostsText {
    /// The text for `layout`, with no group shown yet.
    pub(crate) fn new(layout: &Layout) -> HostsText {
        let lines = |lines: &[String]| {
            let mut text = Vec::new();
            for line in lines {
                text.extend_from_slice(line.as_bytes());
                text.push(b'\n');
            }
            text
        };
        let sections: Vec<Section> = layout
            .mappings
            .iter()
            .map(|mapping| {
                let mut fallback = Vec::new();
                for address in &mapping.fallback_addresses {
                    let _ = writeln!(
                        fallback,
                        "{address} {} # fallback address used!",
                        mapping.hostname
                    );
                }
                Section {
                    suffix: format!(" {}\n", mapping.hostname).into_bytes(),
                    fallback,
                    order: None,
                    v4: Run::default(),
                    v6: Run::default(),
                    lines: 0,
                }
            })
            .collect();
        HostsText {
            head: lines(&layout.prepend_lines),
            unset: sections.len(),
            sections,
            tail: lines(&layout.append_lines),
            sorted: SortScratch::default(),
        }
    }

    /// Shows `members` for the mapping at `mapping` (an index into the layout's mappings);
    /// whether the text changed.
    pub(crate) fn show(&mut self, mapping: usize, members: &[Member]) -> bool {
        let Some(section) = self.sections.get_mut(mapping) else { return false };
        if section.order.is_none() {
            self.unset -= 1;
        }
        let changed = section.show(members, &mut self.sorted);
        // Small buffers are kept for the next group; a large group's are let go (they are
        // mapped on their own, so freeing them fragments nothing).
        trim_excess(&mut self.sorted.v4, 0);
        trim_excess(&mut self.sorted.v6, 0);
        changed
    }

    /// Every mapping has shown a member list: the text is the whole file.
    pub(crate) fn is_complete(&self) -> bool {
        self.unset == 0
    }

    /// The text, in pieces, in order.
    pub(crate) fn pieces(&self) -> Vec<&[u8]> {
        let mut pieces = vec![self.head.as_slice()];
        for section in &self.sections {
            section.push_pieces(&mut pieces);
        }
        pieces.push(&self.tail);
        pieces.retain(|piece| !piece.is_empty());
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Mapping;
    use rgap_plugin_api::{GroupSnapshot, Member, MemberList};

    fn text_of(text: &HostsText) -> String {
        String::from_utf8(text.pieces().concat()).unwrap()
    }

    #[test]
    fn line_start_finds_each_line() {
        let text: Vec<u8> = (0..200).flat_map(|n| format!("{n}\n").into_bytes()).collect();
        let mut expected = 0;
        for line in 0..200 {
            assert_eq!(line_start(&text, line), expected, "line {line}");
            expected += format!("{line}\n").len();
        }
        assert_eq!(line_start(&text, 200), text.len());
        assert_eq!(line_start(&text, 500), text.len());
    }

    /// A tiny deterministic generator (xorshift), so failures replay.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn address(random: &mut Random) -> [u8; 16] {
        let n = random.next();
        if n.is_multiple_of(5) {
            // IPv6, some sharing long prefixes so compression varies.
            let mut address = [0u8; 16];
            address[..2].copy_from_slice(&[0x20, 0x01]);
            address[14..].copy_from_slice(&(n as u16 % 300).to_be_bytes());
            if n.is_multiple_of(3) {
                address[4..12].copy_from_slice(&n.to_be_bytes());
            }
            address
        } else {
            // IPv4 from a small range, so joins and leaves hit the same addresses.
            let v4 = std::net::Ipv4Addr::new(10, (n >> 8) as u8 % 4, (n >> 16) as u8, n as u8);
            v4.to_ipv6_mapped().octets()
        }
    }

    fn layout(groups: u64) -> Layout {
        Layout {
            prepend_lines: vec!["# head".into()],
            mappings: (1..=groups)
                .map(|group| Mapping {
                    group,
                    hostname: format!("g{group}"),
                    fallback_addresses: if group % 2 == 0 {
                        vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()]
                    } else {
                        vec![]
                    },
                })
                .chain(std::iter::once(Mapping {
                    // The same group under a second name.
                    group: 1,
                    hostname: "again".into(),
                    fallback_addresses: vec!["192.0.2.9".parse().unwrap()],
                }))
                .collect(),
            append_lines: vec!["# tail".into()],
        }
    }

    /// Applies a change to `members` as the listener does: a join appends, a leave moves the
    /// last member into the gap; sometimes the whole list is shuffled or gets a duplicate.
    fn change(random: &mut Random, members: &mut Vec<Member>) {
        match random.below(20) {
            0..=9 => {
                let address = address(random);
                if !members.iter().any(|m| m.address == address) {
                    members.push(Member { address, expires_at_unix_us: 0 });
                }
            }
            10..=16 if !members.is_empty() => {
                let at = random.below(members.len());
                members.swap_remove(at);
            }
            17 if !members.is_empty() => {
                // Refreshes move expiry times without changing addresses.
                let at = random.below(members.len());
                members[at].expires_at_unix_us += 1;
            }
            18 => {
                for at in (1..members.len()).rev() {
                    members.swap(at, random.below(at + 1));
                }
            }
            19 if random.below(4) == 0 => members.clear(),
            19 if !members.is_empty() => {
                // Not from the listener, but the plugin API does not forbid it.
                let copy = members[random.below(members.len())];
                members.push(copy);
            }
            _ => {}
        }
    }

    #[test]
    fn edited_text_matches_a_full_render_after_random_joins_and_leaves() {
        for seed in 1..=40u64 {
            let mut random = Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let groups = 1 + random.below(4) as u64;
            let layout = layout(groups);
            let mut members: Vec<Vec<Member>> = vec![Vec::new(); groups as usize];
            let mut lists: Vec<MemberList> =
                members.iter().map(|m| MemberList::new(m.clone().into())).collect();
            let mut text = HostsText::new(&layout);
            let show_all = |text: &mut HostsText, lists: &[MemberList]| {
                for (index, mapping) in layout.mappings.iter().enumerate() {
                    text.show(index, &lists[mapping.group as usize - 1]);
                }
            };
            show_all(&mut text, &lists);
            for step in 0..400 {
                // A burst of changes to random groups between two shows.
                for _ in 0..1 + random.below(if step % 50 == 0 { 300 } else { 3 }) {
                    let group = random.below(groups as usize);
                    change(&mut random, &mut members[group]);
                }
                let before = text_of(&text);
                for (group, members) in members.iter().enumerate() {
                    if random.below(3) > 0 || members.as_slice() != lists[group].as_slice() {
                        lists[group] = MemberList::new(members.clone().into());
                    }
                }
                let mut changed = false;
                for (index, mapping) in layout.mappings.iter().enumerate() {
                    changed |= text.show(index, &lists[mapping.group as usize - 1]);
                }
                let snapshots: Vec<GroupSnapshot<'_>> = lists
                    .iter()
                    .enumerate()
                    .map(|(index, list)| GroupSnapshot {
                        id: index as u64 + 1,
                        ready: true,
                        revision: 0,
                        membership_revision: 0,
                        members: list,
                    })
                    .collect();
                let full = layout.render(&snapshots).unwrap();
                let edited = text_of(&text);
                assert_eq!(edited, full, "seed {seed}, step {step}");
                if !changed {
                    assert_eq!(edited, before, "seed {seed}, step {step}: said unchanged");
                }
            }
        }
    }

    #[test]
    fn incomplete_until_every_mapping_showed_a_list() {
        let layout = layout(2);
        let mut text = HostsText::new(&layout);
        let empty = MemberList::default();
        assert!(!text.is_complete());
        text.show(0, &empty);
        text.show(1, &empty);
        assert!(!text.is_complete());
        text.show(2, &empty);
        assert!(text.is_complete());
        assert_eq!(
            text_of(&text),
            "# head\n192.0.2.1 g2 # fallback address used!\n\
             2001:db8::1 g2 # fallback address used!\n192.0.2.9 again # fallback address used!\n# tail\n"
        );
    }

    #[test]
    fn a_large_group_is_split_into_chunks_and_edited_in_place() {
        let layout = Layout {
            prepend_lines: vec![],
            mappings: vec![Mapping { group: 1, hostname: "w".into(), fallback_addresses: vec![] }],
            append_lines: vec![],
        };
        let member = |n: u32| Member {
            address: std::net::Ipv4Addr::from(0x0a00_0000 + n * 1000).to_ipv6_mapped().octets(),
            expires_at_unix_us: 0,
        };
        let mut members: Vec<Member> = (0..5000).map(member).collect();
        let mut text = HostsText::new(&layout);
        text.show(0, &members);
        let chunks = text.sections[0].v4.chunks.len();
        assert_eq!(chunks, 5000usize.div_ceil(CHUNK_LINES));
        // 1200 joins one at a time between two existing addresses: their chunk splits, none
        // grows past twice the fill.
        for n in 0..1200 {
            members.push(member(100));
            members.last_mut().unwrap().address =
                std::net::Ipv4Addr::from(0x0a00_0000 + 100 * 1000 + 1 + n)
                    .to_ipv6_mapped()
                    .octets();
            assert!(text.show(0, &members));
        }
        let run = &text.sections[0].v4;
        assert!(run.chunks.len() > chunks);
        assert!(run.chunks.iter().all(|chunk| chunk.keys.len() <= 2 * CHUNK_LINES));
        let list = MemberList::new(members.clone().into());
        let snapshot = GroupSnapshot {
            id: 1,
            ready: true,
            revision: 0,
            membership_revision: 0,
            members: &list,
        };
        assert_eq!(text_of(&text), layout.render(&[snapshot]).unwrap());
    }
}
