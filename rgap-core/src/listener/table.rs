//! The group table: who is in which group, until when. One thread owns it (see
//! [`run_table`]); sources send it verified announcements, and it hands membership changes
//! (events) and a published view to the plugin host.
//!
//! Semantics are the Go listener's: a new address joins; a known one has its expiry moved
//! later and does not re-join; at its expiry it leaves. Deadlines are kept in monotonic time,
//! computed from the announcement's wall-clock timestamp on arrival, so a wall-clock step does
//! not expire everyone at once.
//!
//! On top of that, the table guards against replays: a member's datagrams must get newer
//! (an older or repeated one is dropped as `stale`), a signed leave removes a member at once
//! and leaves a tombstone that turns away announcements up to the leave's time until they
//! could no longer pass the clock-skew check anyway, and a group's `max_members` caps how many
//! addresses a key holder can make it hold (`group_full`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use abi_stable::std_types::{RArc, RVec};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rgap_plugin_api::{Event, Member, MemberList};
use rgap_plugin_kit::pacing::{thread_cpu_time, CostPacer};

use crate::config::GroupConfig;
use crate::plugin_host::{GroupState, GroupsView, SharedView};
use crate::protocol::{unix_micros, Kind};

use super::check::Accepted;
use super::group_stats::{GroupCounters, GroupStats};
use super::position_index::PositionIndex;
use super::stats::{BatchCounts, DropReason, ListenerStats};

/// A refresh only moves an expiry, which outputs need for TTLs but not urgently: it is
/// published at most this often, while joins, leaves and readiness are published at once.
pub const REFRESH_PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// At most this many batches are applied before changes are published, to bound latency.
const BATCHES_PER_CYCLE: usize = 256;

/// Publishing is paced by its own CPU cost (see `rgap_plugin_kit::pacing`): after a publish
/// that cost `t`, the next waits `t * PUBLISH_COST_FACTOR * (1 + t / PUBLISH_COST_KNEE)`, at
/// most `MAX_PUBLISH_PAUSE`. Small groups (microseconds to publish) are published at once
/// and follow each other within a millisecond; a group of 100 000 members (half a millisecond
/// to copy) is not copied thousands of times a second while a fleet starts, but a few times.
const PUBLISH_COST_FACTOR: u32 = 100;
const PUBLISH_COST_KNEE: Duration = Duration::from_micros(250);
const MAX_PUBLISH_PAUSE: Duration = Duration::from_millis(250);

/// After sweeping a group for expired members at a CPU cost of `t`, the next sweep of that
/// group waits `t * SWEEP_COST_FACTOR` (a `CostPacer`), at most `MAX_SWEEP_PAUSE`: 20 ms for
/// 200 000 members, a few µs for a hundred. A member thus leaves at its deadline, or that
/// much later while many of a large group leave.
const SWEEP_COST_FACTOR: u32 = 100;
const MAX_SWEEP_PAUSE: Duration = Duration::from_millis(100);

/// A full group is warned about at most this often (its drops are counted every time).
const GROUP_FULL_WARN_INTERVAL: Duration = Duration::from_secs(60);
/// A group's buffers are given back when their capacity exceeds one and a half times what
/// its members need plus this many members' worth: a stall that let expiries fall behind, or
/// a fleet that shrank, must not leave its high-water mark resident for months. (They are
/// shrunk to a quarter more than needed, so they are not reallocated again before the group
/// has changed by a fifth.)
const TRIM_SLACK: usize = 4096;

/// Entries an emptied work buffer (events, expired members) keeps between cycles: more than
/// a 2 ms cycle needs at 100 000 changes a second.
const KEPT_WORK_BUFFER: usize = 4096;

/// A published list is kept for reuse by a later publish only from this size: where glibc
/// maps blocks on their own (see `malloc_tuning`), so that reuse saves page faults.
const RETIRE_MIN_BYTES: usize = 128 * 1024;

/// Under load the table wakes at most once per this long and takes everything queued, so
/// sources hand over announcements without waking a thread for each one.
const MIN_CYCLE: Duration = Duration::from_millis(2);

/// One group's members, kept contiguous in the layout plugins receive, so that publishing
/// is one copy of `members`, not a walk over a hash map.
struct Group {
    id: u64,
    /// Taken out of the config by a reload: its slot stays (batches checked before the
    /// reload may still name it) but it holds nothing and is not published.
    removed: bool,
    ready: bool,
    /// When the group was configured (start, or the reload that added it): `ready_at` is
    /// this plus `readiness_delay`.
    configured_at: Instant,
    ready_at: Instant,
    members: Vec<Member>,
    /// `deadlines[i]` is when `members[i]` leaves, in µs since the table's epoch.
    deadlines: Vec<u64>,
    /// No deadline in `deadlines` is earlier (`u64::MAX` when empty). Exact after a sweep;
    /// joins may lower it, refreshes leave it (still a bound, as they only move deadlines later).
    earliest: u64,
    /// Sweeps for expired members are paced by their cost, like publishing, so that a large
    /// group whose members leave one by one is not scanned whole every millisecond.
    sweep_pacer: CostPacer,
    /// Position in `members` of each member, found by its address: the index holds only
    /// positions and hash tags (8 bytes a slot), the addresses stay in `members`. With
    /// 200 000 members that is 2 MiB instead of 6, which a join touches at random and
    /// growth copies whole.
    positions: PositionIndex,
    /// Members changed (any way) since `published` was built.
    stale: bool,
    revision: u64,
    /// Bumped on every join and leave (not on refreshes).
    membership_revision: u64,
    published: MemberList,
    /// The list published before `published`, kept to be refilled by a later publish once
    /// every output has let go of it: a group of 200 000 members then reuses 5 MB that is
    /// already mapped instead of page-faulting a fresh copy in each time.
    retired: Option<MemberList>,
    /// Addresses that left by a signed leave, until announcements from before the leave
    /// could no longer be valid.
    tombstones: HashMap<[u8; 16], Tombstone, AddressHasher>,
    /// No tombstone's `until` is earlier (`u64::MAX` when there are none).
    tombstones_earliest: u64,
    /// `max_members`, or `usize::MAX`.
    max_members: usize,
    /// When the group was last warned about as full.
    full_warned_at: Option<Instant>,
}

/// What a signed leave leaves behind.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    /// The leave's timestamp + `expire` (in the unit of `Member::expires_at_unix_us`):
    /// announcements up to it are older than the leave.
    expires_at_us: i64,
    /// Table ticks after which no announcement that old can pass the clock-skew check.
    until: u64,
}

/// Hashes member addresses with keys drawn from the OS once per process. Any key holder
/// chooses the addresses it announces; with a hash everyone can compute, it could choose
/// thousands that collide and turn each lookup in its group into a scan.
#[derive(Clone)]
struct AddressHasher(foldhash::fast::SeedableRandomState);

impl AddressHasher {
    fn new() -> AddressHasher {
        static SHARED: OnceLock<(u64, foldhash::SharedSeed)> = OnceLock::new();
        let (per_hasher, shared) = SHARED.get_or_init(|| {
            let mut seed = [0u8; 16];
            // Should the OS have no randomness to give, foldhash's own seeding (address
            // space layout, time) is still a per-process seed.
            if getrandom::getrandom(&mut seed).is_err() {
                let fallback = foldhash::fast::RandomState::default();
                seed[..8].copy_from_slice(&fallback.hash_one(0u64).to_ne_bytes());
                seed[8..].copy_from_slice(&fallback.hash_one(1u64).to_ne_bytes());
            }
            let [a, b] =
                [&seed[..8], &seed[8..]].map(|s| u64::from_ne_bytes(s.try_into().unwrap()));
            (a, foldhash::SharedSeed::from_u64(b))
        });
        AddressHasher(foldhash::fast::SeedableRandomState::with_seed(*per_hasher, shared))
    }

    fn hash(&self, address: &[u8; 16]) -> u64 {
        self.0.hash_one(address)
    }
}

impl BuildHasher for AddressHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// `max_members` as a bound.
fn max_members(config: &GroupConfig) -> usize {
    config.max_members.map_or(usize::MAX, |max| max as usize)
}

impl Group {
    /// An empty group configured at `now`.
    fn new(config: &GroupConfig, now: Instant) -> Group {
        Group {
            id: config.id,
            removed: false,
            ready: false,
            configured_at: now,
            ready_at: now + config.readiness_delay.get(),
            members: Vec::new(),
            deadlines: Vec::new(),
            earliest: u64::MAX,
            sweep_pacer: CostPacer::new(SWEEP_COST_FACTOR, MAX_SWEEP_PAUSE),
            positions: PositionIndex::default(),
            stale: false,
            revision: 0,
            membership_revision: 0,
            published: MemberList::default(),
            retired: None,
            tombstones: HashMap::with_hasher(AddressHasher::new()),
            tombstones_earliest: u64::MAX,
            max_members: max_members(config),
            full_warned_at: None,
        }
    }

    /// Where `address` is in `members`.
    fn position_of(&self, address: &[u8; 16]) -> Option<usize> {
        let members = &self.members;
        let found = self.positions.find(self.tombstones.hasher().hash(address), |p| {
            members[p as usize].address == *address
        });
        found.ok().map(|p| p as usize)
    }

    fn remove(&mut self, position: usize) -> Member {
        let hasher = self.tombstones.hasher();
        let last = self.members.len() - 1;
        let member = self.members.swap_remove(position);
        self.deadlines.swap_remove(position);
        // Positions are unique: entries are found by position, without comparing addresses.
        self.positions.remove(hasher.hash(&member.address), position as u32);
        if let Some(moved) = self.members.get(position) {
            self.positions.move_position(hasher.hash(&moved.address), last as u32, position as u32);
        }
        member
    }

    /// Remembers that `address` left with a leave whose timestamp + `expire` is
    /// `expires_at_us`, until ticks `until`. A tombstone for an address that is no member is
    /// kept only while the group has room for it, so a key holder's leaves cannot hold more
    /// memory than its announcements could.
    fn bury(&mut self, address: [u8; 16], expires_at_us: i64, until: u64, was_member: bool) {
        if !was_member
            && self.tombstones.len() >= self.max_members
            && !self.tombstones.contains_key(&address)
        {
            return;
        }
        let tombstone =
            self.tombstones.entry(address).or_insert(Tombstone { expires_at_us, until });
        tombstone.expires_at_us = tombstone.expires_at_us.max(expires_at_us);
        tombstone.until = tombstone.until.max(until);
        self.tombstones_earliest = self.tombstones_earliest.min(tombstone.until);
    }

    /// Forgets tombstones no announcement could get past any more.
    fn prune_tombstones(&mut self, now: u64) {
        if self.tombstones_earliest > now {
            return;
        }
        self.tombstones.retain(|_, tombstone| tombstone.until > now);
        self.tombstones_earliest =
            self.tombstones.values().map(|tombstone| tombstone.until).min().unwrap_or(u64::MAX);
    }

    /// Appends the members whose deadline is at or before `now` to `due` (as the group at
    /// `index`), sets `earliest` to the exact earliest of the others, and paces the next
    /// sweep by this one's cost.
    fn sweep(&mut self, index: u32, now: u64, due: &mut Vec<(u64, u32, [u8; 16])>) {
        let started = thread_cpu_time();
        let mut earliest = u64::MAX;
        for (member, &deadline) in self.members.iter().zip(&self.deadlines) {
            if deadline <= now {
                due.push((deadline, index, member.address));
            } else {
                earliest = earliest.min(deadline);
            }
        }
        self.earliest = earliest;
        self.sweep_pacer.record(thread_cpu_time().saturating_sub(started));
    }

    /// Whether a buffer of `capacity` for `len` members is worth shrinking.
    fn oversized(capacity: usize, len: usize) -> bool {
        capacity > len + len / 2 + TRIM_SLACK
    }

    /// Shrinks the group's own buffers when far larger than its members need (see
    /// `TRIM_SLACK`), to a quarter more than they need, so that a few joins do not grow
    /// them again at once.
    fn trim_excess(&mut self) {
        let len = self.members.len();
        let keep = len + len / 4;
        if Self::oversized(self.members.capacity(), len) {
            self.members.shrink_to(keep);
            self.deadlines.shrink_to(keep);
        }
        if Self::oversized(self.positions.capacity(), len) {
            self.positions.shrink_to(keep);
        }
    }

    /// Replaces `published` with a copy of `members`, in a retired list's memory if no
    /// output holds that list any more (and it is not far larger than needed).
    fn republish(&mut self) {
        let mut list = self.retired.take().unwrap_or_default();
        let oversized = Self::oversized(list.capacity(), self.members.len());
        match RArc::get_mut(&mut list).filter(|_| !oversized) {
            Some(reused) => {
                reused.clear();
                reused.extend_from_copy_slice(&self.members);
            }
            None => list = RArc::new(RVec::from(self.members.clone())),
        }
        let previous = std::mem::replace(&mut self.published, list);
        // Only a list malloc would map on its own is worth keeping: a smaller one is reused
        // from malloc's free lists at no page-fault cost, and keeping it would double the
        // memory of a table of many small groups (10 000 groups of 100: 24 MiB).
        if previous.capacity() * std::mem::size_of::<Member>() >= RETIRE_MIN_BYTES {
            self.retired = Some(previous);
        }
    }

    fn state(&self) -> GroupState {
        GroupState {
            id: self.id,
            ready: self.ready,
            revision: self.revision,
            membership_revision: self.membership_revision,
            members: self.published.clone(),
        }
    }
}

/// Membership of every group, with expiry and readiness.
pub struct GroupTable {
    groups: Vec<Group>,
    /// Members found expired by the last sweeps, (deadline, group index, address); kept for
    /// its memory.
    due: Vec<(u64, u32, [u8; 16])>,
    epoch: Instant,
    events: Vec<Event>,
    membership_changed: bool,
    refreshed_since: Option<Instant>,
    /// When the next publish may start (see `PUBLISH_COST_FACTOR`).
    publish_pacer: CostPacer,
    view: SharedView,
    /// Datagrams the sources accepted that the table turned away since the last
    /// [`GroupTable::take_rejected`] (`stale`, `group_full`).
    rejected: BatchCounts,
    /// Accepted, joined and left, by group index (slot), counted here...
    counters: Vec<Arc<GroupCounters>>,
    /// ...and the list of the configured groups' counters, for the monitoring endpoint.
    shared_counters: GroupStats,
    /// The hash of each announcement of the batch being applied (kept for its memory).
    batch_hashes: Vec<u64>,
    /// The groups (by index) changed since the last publish, each once: a publish, and
    /// what it hands the outputs, then costs work for the changed groups, not for all.
    stale_groups: Vec<u32>,
    /// The groups the last publish changed (see `spare_view`).
    last_changed: Vec<u32>,
    /// The view the last publish replaced, to be updated in place (only the groups changed
    /// since it was built) instead of rebuilt, once no delivery thread holds it any more.
    spare_view: Option<Arc<GroupsView>>,
    /// Where each group (by index) sits in the published view: removed groups are left out.
    view_positions: Vec<Option<u32>>,
    /// Groups in the published view.
    view_len: usize,
    /// No group needs a sweep or a tombstone prune before this (ticks; `u64::MAX` if none
    /// will), so that a table of 10 000 groups is not scanned at each wake-up.
    next_expiry: u64,
    /// No group becomes ready before this (`None` if all are).
    next_ready: Option<Instant>,
}

impl GroupTable {
    /// An empty table for `groups`, started at `start`; publishes the initial view.
    pub fn new(groups: &[GroupConfig], start: Instant, view: SharedView) -> GroupTable {
        let groups: Vec<Group> = groups.iter().map(|config| Group::new(config, start)).collect();
        let counters: Vec<Arc<GroupCounters>> =
            groups.iter().map(|group| Arc::new(GroupCounters::new(group.id))).collect();
        let shared_counters = GroupStats::default();
        shared_counters.store(counters.clone());
        let mut table = GroupTable {
            groups,
            due: Vec::new(),
            epoch: start,
            events: Vec::new(),
            membership_changed: true,
            refreshed_since: None,
            publish_pacer: CostPacer::new(PUBLISH_COST_FACTOR, MAX_PUBLISH_PAUSE)
                .with_knee(PUBLISH_COST_KNEE),
            view,
            rejected: BatchCounts::default(),
            counters,
            shared_counters,
            batch_hashes: Vec::new(),
            stale_groups: Vec::new(),
            last_changed: Vec::new(),
            spare_view: None,
            view_positions: Vec::new(),
            view_len: 0,
            next_expiry: u64::MAX,
            next_ready: Some(start),
        };
        table.view_positions = table.layout();
        table.view_len = table.view_positions.iter().flatten().count();
        table.mark_ready(start);
        table.publish();
        table
    }

    /// Applies one verified announcement or leave that arrived at `now` / `now_wall_us`.
    pub fn apply(&mut self, announcement: &Accepted, now: Instant, now_wall_us: i64) {
        self.apply_batch(std::slice::from_ref(announcement), now, now_wall_us);
    }

    /// Applies a source's batch of verified announcements and leaves, all arrived at `now`
    /// / `now_wall_us`. Each one's index slot is asked of memory before the first is
    /// applied, so that the cache misses of a batch overlap (see `position_index`).
    pub fn apply_batch(&mut self, batch: &[Accepted], now: Instant, now_wall_us: i64) {
        let now_ticks = self.ticks(now);
        self.batch_hashes.clear();
        for announcement in batch {
            let hash = match self.groups.get(announcement.group_index as usize) {
                Some(group) => {
                    let hash = group.tombstones.hasher().hash(&announcement.address);
                    group.positions.prefetch(hash);
                    hash
                }
                None => 0,
            };
            self.batch_hashes.push(hash);
        }
        let hashes = std::mem::take(&mut self.batch_hashes);
        for (announcement, &hash) in batch.iter().zip(&hashes) {
            self.apply_one(announcement, hash, now, now_ticks, now_wall_us);
        }
        self.batch_hashes = hashes;
    }

    /// Applies one announcement or leave whose address hashes to `hash` in its group.
    fn apply_one(
        &mut self,
        announcement: &Accepted,
        hash: u64,
        now: Instant,
        now_ticks: u64,
        now_wall_us: i64,
    ) {
        let Some(group) = self.groups.get_mut(announcement.group_index as usize) else {
            return;
        };
        if group.removed {
            return;
        }
        // Already expired when it reaches the table (stamped right at a clock_skew equal to
        // expire, or delayed on its way here): it would join and leave in the same breath.
        if announcement.kind == Kind::Announce && announcement.expires_at_us <= now_wall_us {
            self.rejected.drop(DropReason::Stale);
            return;
        }
        let counters = &self.counters[announcement.group_index as usize];
        counters.count_accepted();
        let remaining_us = announcement.expires_at_us.saturating_sub(now_wall_us).max(0);
        let deadline = now_ticks.saturating_add(remaining_us as u64);
        let address = announcement.address;
        if announcement.kind == Kind::Leave {
            self.apply_leave(announcement, deadline);
            return;
        }
        // Almost always empty: one branch for the common case.
        if !group.tombstones.is_empty() {
            if let Some(tombstone) = group.tombstones.get(&address) {
                if announcement.expires_at_us <= tombstone.expires_at_us {
                    self.rejected.drop(DropReason::Stale);
                    return;
                }
                // Newer than the leave: the member is back.
                group.tombstones.remove(&address);
            }
        }

        // One hash of the address, whether it is new or known.
        let members = &group.members;
        let found = group.positions.find(hash, |p| members[p as usize].address == address);
        match found {
            Ok(position) => {
                let position = position as usize;
                let member = &mut group.members[position];
                if announcement.expires_at_us > member.expires_at_unix_us {
                    member.expires_at_unix_us = announcement.expires_at_us;
                    group.deadlines[position] = deadline;
                    mark_stale(group, announcement.group_index, &mut self.stale_groups);
                    self.refreshed_since.get_or_insert(now);
                } else {
                    // Not newer than what was accepted: a replay, or the same datagram
                    // heard twice (on two sockets, say), which is normal.
                    if announcement.expires_at_us == member.expires_at_unix_us {
                        self.rejected.duplicates += 1;
                    }
                    self.rejected.drop(DropReason::Stale);
                }
            }
            Err(_) if group.members.len() >= group.max_members => {
                self.rejected.drop(DropReason::GroupFull);
                let warned_lately = group
                    .full_warned_at
                    .is_some_and(|at| now.saturating_duration_since(at) < GROUP_FULL_WARN_INTERVAL);
                if !warned_lately {
                    group.full_warned_at = Some(now);
                    tracing::warn!(
                        "group {} is full (max_members: {}): dropping announcements of new addresses (counted as group_full)",
                        group.id,
                        group.max_members
                    );
                }
            }
            Err(vacant) => {
                let member = Member {
                    address: announcement.address,
                    expires_at_unix_us: announcement.expires_at_us,
                };
                // A group would need 4 billion members (100 GB) to overflow a u32 position.
                group.positions.insert(vacant, hash, group.members.len() as u32);
                group.members.push(member);
                group.deadlines.push(deadline);
                group.earliest = group.earliest.min(deadline);
                self.next_expiry = self.next_expiry.min(deadline);
                mark_stale(group, announcement.group_index, &mut self.stale_groups);
                group.membership_revision += 1;
                self.membership_changed = true;
                counters.count_join();
                self.events.push(Event::Join { group: group.id, member });
            }
        }
    }

    /// A verified leave: the member goes at once unless it has announced since. Its
    /// tombstone lasts until `until` (ticks), when the leave itself would have expired as an
    /// announcement: by then no announcement from before it passes the clock-skew check
    /// (`clock_skew` is at most `expire`).
    fn apply_leave(&mut self, leave: &Accepted, until: u64) {
        let index = leave.group_index;
        let group = &mut self.groups[index as usize];
        let position = group.position_of(&leave.address);
        if let Some(position) = position {
            if leave.expires_at_us < group.members[position].expires_at_unix_us {
                // Older than the member's newest announcement: it came back since.
                self.rejected.drop(DropReason::Stale);
                return;
            }
            let member = group.remove(position);
            mark_stale(group, index, &mut self.stale_groups);
            group.membership_revision += 1;
            self.membership_changed = true;
            self.counters[index as usize].count_leave();
            self.events.push(Event::Leave { group: group.id, member });
        }
        group.bury(leave.address, leave.expires_at_us, until, position.is_some());
        self.next_expiry = self.next_expiry.min(group.tombstones_earliest);
    }

    /// The drops decided here since the last call (see [`ListenerStats::reject_accepted`]).
    pub fn take_rejected(&mut self) -> BatchCounts {
        std::mem::take(&mut self.rejected)
    }

    /// Microseconds from the epoch to `at` (0 before it).
    fn ticks(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Removes every member whose deadline has passed, earliest first.
    ///
    /// Deadlines are not kept in a queue of their own (a heap push per join costs a fifth of
    /// the table's time while 200 000 members join): a group whose earliest deadline has
    /// passed is swept, its contiguous `deadlines` read in one pass.
    pub fn expire(&mut self, at: Instant) {
        let now = self.ticks(at);
        if now < self.next_expiry {
            return;
        }
        let epoch = self.epoch;
        // Rounded up, so that waking at it finds the pacer ready.
        let ticks_after = |at: Instant| at.saturating_duration_since(epoch).as_micros() as u64 + 1;
        let mut next_expiry = u64::MAX;
        let mut due = std::mem::take(&mut self.due);
        for (index, group) in self.groups.iter_mut().enumerate() {
            if group.earliest <= now && group.sweep_pacer.is_ready(at) {
                group.sweep(index as u32, now, &mut due);
            }
            group.prune_tombstones(now);
            if group.earliest != u64::MAX {
                let sweep_at = group.earliest.max(ticks_after(group.sweep_pacer.next_at()));
                next_expiry = next_expiry.min(sweep_at);
            }
            next_expiry = next_expiry.min(group.tombstones_earliest);
        }
        self.next_expiry = next_expiry;
        // Stable: members due at the same moment leave in the order they were found.
        due.sort_by_key(|&(deadline, _, _)| deadline);
        for &(_, group_index, address) in &due {
            let group = &mut self.groups[group_index as usize];
            let Some(position) = group.position_of(&address) else {
                continue;
            };
            let member = group.remove(position);
            mark_stale(group, group_index, &mut self.stale_groups);
            group.membership_revision += 1;
            self.membership_changed = true;
            self.counters[group_index as usize].count_leave();
            self.events.push(Event::Leave { group: group.id, member });
        }
        due.clear();
        release_burst(&mut due);
        self.due = due;
    }

    /// Marks groups whose readiness delay has passed as ready.
    pub fn mark_ready(&mut self, now: Instant) {
        if self.next_ready.is_none_or(|at| now < at) {
            return;
        }
        let mut next_ready: Option<Instant> = None;
        for (index, group) in self.groups.iter_mut().enumerate() {
            if group.ready || group.removed {
                continue;
            }
            if group.ready_at <= now {
                group.ready = true;
                mark_stale(group, index as u32, &mut self.stale_groups);
                self.membership_changed = true;
                self.events.push(Event::Ready { group: group.id });
            } else {
                next_ready = Some(next_ready.map_or(group.ready_at, |at| at.min(group.ready_at)));
            }
        }
        self.next_ready = next_ready;
    }

    /// When the table next has work of its own to do (an expiry, a readiness, a publish).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let expiry = (self.next_expiry != u64::MAX)
            .then(|| self.epoch + Duration::from_micros(self.next_expiry));
        let readiness = self.next_ready;
        let publish = if self.membership_changed {
            Some(self.publish_pacer.next_at())
        } else {
            self.refreshed_since
                .map(|since| (since + REFRESH_PUBLISH_INTERVAL).max(self.publish_pacer.next_at()))
        };
        [expiry, readiness, publish].into_iter().flatten().min()
    }

    /// Whether there is something to publish at `now`.
    pub fn publish_due(&self, now: Instant) -> bool {
        let pending = self.membership_changed
            || self.refreshed_since.is_some_and(|since| now >= since + REFRESH_PUBLISH_INTERVAL);
        pending && self.publish_pacer.is_ready(now)
    }

    /// Rebuilds the member lists of changed groups (only those) and replaces the view.
    pub fn publish(&mut self) {
        let started = thread_cpu_time();
        // The spare view is two publishes old: first bring it to the last publish, which
        // also lets go of the member lists the groups changed now may reuse (`retired`).
        // (The view the table started with, or one a reload replaced, has another layout.)
        let configured = self.view_len;
        let mut spare = self
            .spare_view
            .take()
            .filter(|view| Arc::strong_count(view) == 1 && view.groups.len() == configured);
        if let Some(view) = spare.as_mut().and_then(Arc::get_mut) {
            self.refresh_view(view, &self.last_changed);
        }
        for &index in &self.stale_groups {
            let group = &mut self.groups[index as usize];
            group.trim_excess();
            group.republish();
            group.revision += 1;
            group.stale = false;
        }
        let view = match spare {
            Some(mut view) => {
                if let Some(groups) = Arc::get_mut(&mut view) {
                    self.refresh_view(groups, &self.stale_groups);
                }
                view
            }
            None => {
                let configured = self.groups.iter().filter(|group| !group.removed);
                Arc::new(GroupsView { groups: configured.map(Group::state).collect() })
            }
        };
        self.spare_view = Some(self.view.swap(view));
        std::mem::swap(&mut self.last_changed, &mut self.stale_groups);
        self.stale_groups.clear();
        self.membership_changed = false;
        self.refreshed_since = None;
        self.publish_pacer.record(thread_cpu_time().saturating_sub(started));
    }

    /// Copies into `view` the state of the groups at `indices`.
    fn refresh_view(&self, view: &mut GroupsView, indices: &[u32]) {
        for &index in indices {
            if let Some(position) = self.view_positions[index as usize] {
                view.groups[position as usize] = self.groups[index as usize].state();
            }
        }
    }

    /// Where each group sits in a view of the configured (not removed) groups.
    fn layout(&self) -> Vec<Option<u32>> {
        let mut position = 0;
        let place = |group: &Group| {
            (!group.removed).then(|| {
                position += 1;
                position - 1
            })
        };
        self.groups.iter().map(place).collect()
    }

    /// The events since the last call, in order.
    #[cfg(test)]
    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Hands the events since the last call to `notify`, in order, and forgets them,
    /// keeping the buffer for the next ones.
    fn flush_events(&mut self, notify: &mut impl FnMut(&[Event])) {
        notify(&self.events);
        self.events.clear();
        release_burst(&mut self.events);
    }

    /// The per-group counters, shared with whoever reads them.
    pub fn counters(&self) -> GroupStats {
        self.shared_counters.clone()
    }

    /// Makes the table's groups those of `slots` (each config with the slot the checker
    /// gives its announcements), at `now`. A group that keeps its slot keeps its members;
    /// its new settings apply from the next announcement, and a new `readiness_delay` counts
    /// from when it was configured. A slot beyond the table is a new group, configured now.
    /// A slot left out is a removed group: its members leave (with events, as on expiry).
    pub fn reconfigure(&mut self, slots: &[(u32, GroupConfig)], now: Instant) {
        for (slot, config) in slots {
            let slot = *slot as usize;
            match self.groups.get_mut(slot) {
                Some(group) => {
                    group.max_members = max_members(config);
                    if !group.ready {
                        group.ready_at = group.configured_at + config.readiness_delay.get();
                    }
                }
                None => {
                    debug_assert_eq!(slot, self.groups.len(), "new groups take the next slot");
                    let mut group = Group::new(config, now);
                    mark_stale(&mut group, slot as u32, &mut self.stale_groups);
                    self.groups.push(group);
                    self.counters.push(Arc::new(GroupCounters::new(config.id)));
                    self.membership_changed = true;
                }
            }
        }
        for (slot, group) in self.groups.iter_mut().enumerate() {
            if group.removed || slots.iter().any(|(kept, _)| *kept as usize == slot) {
                continue;
            }
            while let Some(position) = group.members.len().checked_sub(1) {
                let member = group.remove(position);
                self.counters[slot].count_leave();
                self.events.push(Event::Leave { group: group.id, member });
            }
            group.tombstones.clear();
            group.earliest = u64::MAX;
            group.removed = true;
            mark_stale(group, slot as u32, &mut self.stale_groups);
            self.membership_changed = true;
        }
        // The groups moved in the view: the next publish builds it whole, and every wait
        // is worked out afresh.
        self.view_positions = self.layout();
        self.view_len = self.view_positions.iter().flatten().count();
        self.spare_view = None;
        self.next_expiry = 0;
        self.next_ready = Some(now);
        let configured = self.groups.iter().zip(&self.counters).filter(|(group, _)| !group.removed);
        self.shared_counters.store(configured.map(|(_, counters)| counters.clone()).collect());
        self.mark_ready(now);
    }

    /// Number of live members in all groups.
    pub fn member_count(&self) -> usize {
        self.groups.iter().map(|group| group.members.len()).sum()
    }
}

/// Gives back the memory an emptied work buffer took for a burst (a stall that let 60 000
/// members expire at once), keeping what ordinary cycles need: otherwise each buffer would
/// hold its highest burst for the life of the process, and RSS would creep up by steps.
fn release_burst<T>(buffer: &mut Vec<T>) {
    if buffer.capacity() > KEPT_WORK_BUFFER {
        buffer.shrink_to(KEPT_WORK_BUFFER);
    }
}

/// Marks `group` (at `index`) changed since the last publish, listing it once.
fn mark_stale(group: &mut Group, index: u32, stale_groups: &mut Vec<u32>) {
    if !group.stale {
        group.stale = true;
        stale_groups.push(index);
    }
}

/// Input for the table thread: verified announcements, one batch per source read.
pub type TableInput = Vec<Accepted>;

/// Orders for the table thread besides announcements.
pub enum TableControl {
    /// Apply a reload's groups (see [`GroupTable::reconfigure`]), publish, then say so.
    Reconfigure { slots: Vec<(u32, GroupConfig)>, done: Sender<()> },
}

/// The table thread: applies batches, expires members, publishes and notifies `notify`
/// with the events (possibly none) after each publish. Ends when every source has gone.
///
/// Applied batches go back, emptied, to `spares` (when it has room), for sources to fill
/// again: a batch allocated by a source and freed here would cost a cross-thread free (an
/// allocator lock) per read.
pub fn run_table(
    mut table: GroupTable,
    input: Receiver<TableInput>,
    control: Receiver<TableControl>,
    spares: Sender<TableInput>,
    stats: &ListenerStats,
    mut notify: impl FnMut(&[Event]),
) {
    table.flush_events(&mut notify);
    loop {
        // Sent with an empty batch behind it, which wakes the table to take it.
        for TableControl::Reconfigure { slots, done } in control.try_iter() {
            table.reconfigure(&slots, Instant::now());
            table.publish();
            table.flush_events(&mut notify);
            let _ = done.send(());
        }
        let received = match table.next_wakeup() {
            Some(wakeup) => input.recv_deadline(wakeup),
            None => input.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let cycle_started = Instant::now();
        let got_input = received.is_ok();
        let disconnected = match received {
            Ok(batch) => {
                let now_wall_us = unix_micros(std::time::SystemTime::now());
                // Take what else is already queued before publishing once for all of it.
                let queued = input.try_iter().take(BATCHES_PER_CYCLE);
                for mut batch in std::iter::once(batch).chain(queued) {
                    table.apply_batch(&batch, cycle_started, now_wall_us);
                    batch.clear();
                    let _ = spares.try_send(batch);
                }
                stats.reject_accepted(&table.take_rejected());
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let now = Instant::now();
        table.expire(now);
        table.mark_ready(now);
        if table.publish_due(now) || disconnected {
            table.publish();
            table.flush_events(&mut notify);
        }
        if disconnected {
            return;
        }
        if got_input {
            // Possibly under load: let announcements gather for the rest of the cycle (this
            // one's changes are already published, so a lone announcement waits for nothing).
            if let Some(rest) = (cycle_started + MIN_CYCLE).checked_duration_since(Instant::now()) {
                std::thread::sleep(rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::GoDuration;
    use crate::plugin_host::shared_view;
    use crate::psk::Psk;

    const GROUP: u64 = 1000;

    fn group_config(readiness_delay: Duration) -> GroupConfig {
        GroupConfig {
            id: GROUP,
            psk: Psk::from_hex(&"ab".repeat(32)).unwrap().into(),
            expire: GoDuration(Duration::from_secs(15)),
            readiness_delay: GoDuration(readiness_delay),
            ..GroupConfig::default()
        }
    }

    fn announce(last_octet: u8, expires_at_us: i64) -> Accepted {
        let mut address = [0u8; 16];
        address[10] = 0xff;
        address[11] = 0xff;
        address[12..].copy_from_slice(&[10, 0, 0, last_octet]);
        Accepted { group_index: 0, kind: Kind::Announce, address, expires_at_us }
    }

    fn leave(last_octet: u8, expires_at_us: i64) -> Accepted {
        Accepted { kind: Kind::Leave, ..announce(last_octet, expires_at_us) }
    }

    /// A table of one group with no readiness delay, its `Ready` event already taken.
    fn one_ready_group() -> (Instant, SharedView, GroupTable) {
        let start = Instant::now();
        let view = shared_view(GroupsView::default());
        let mut table = GroupTable::new(&[group_config(Duration::ZERO)], start, view.clone());
        assert_eq!(table.take_events(), vec![Event::Ready { group: GROUP }]);
        (start, view, table)
    }

    fn members_of(view: &SharedView) -> Vec<Member> {
        view.load().groups[0].members.to_vec()
    }

    #[test]
    fn join_then_refresh_extends_without_rejoin() {
        let start = Instant::now();
        let view = shared_view(GroupsView::default());
        let mut table = GroupTable::new(&[group_config(Duration::ZERO)], start, view.clone());
        assert_eq!(table.take_events(), vec![Event::Ready { group: GROUP }]);
        table.apply(&announce(1, 15_000_000), start, 0);
        table.apply(&announce(1, 20_000_000), start, 0);
        table.apply(&announce(1, 18_000_000), start, 0);
        let events = table.take_events();
        assert_eq!(events.len(), 1, "one join, no re-join: {events:?}");
        table.publish();
        assert_eq!(members_of(&view)[0].expires_at_unix_us, 20_000_000, "never moved earlier");
    }

    #[test]
    fn member_leaves_at_its_latest_deadline() {
        let (start, _view, mut table) = one_ready_group();
        table.apply(&announce(1, 1_000_000), start, 0);
        table.apply(&announce(1, 3_000_000), start, 0);
        table.take_events();
        table.expire(start + Duration::from_secs(2));
        assert!(table.take_events().is_empty(), "refreshed member must survive the old deadline");
        table.expire(start + Duration::from_secs(3));
        let events = table.take_events();
        assert!(matches!(events.as_slice(), [Event::Leave { group: GROUP, .. }]), "{events:?}");
        assert_eq!(table.member_count(), 0);
    }

    #[test]
    fn members_leaving_just_after_a_sweep_leave_at_the_next_wakeup() {
        let (start, _view, mut table) = one_ready_group();
        table.apply(&announce(1, 1_000_000), start, 0);
        table.apply(&announce(2, 1_000_001), start, 0);
        table.take_events();
        table.expire(start + Duration::from_secs(1));
        let events = table.take_events();
        assert!(matches!(events.as_slice(), [Event::Leave { .. }]), "{events:?}");
        // Nothing else to wake for once published. The second is due 1 µs later; the sweep
        // that found the first may pace the next, but the table must then wake for it.
        table.publish();
        let wakeup = table.next_wakeup().expect("a member is left to expire");
        assert!(wakeup >= start + Duration::from_micros(1_000_001));
        table.expire(wakeup);
        let events = table.take_events();
        assert!(matches!(events.as_slice(), [Event::Leave { .. }]), "{events:?}");
        assert_eq!(table.member_count(), 0);
        table.publish();
        assert_eq!(table.next_wakeup(), None);
    }

    #[test]
    fn readiness_waits_for_the_delay() {
        let start = Instant::now();
        let view = shared_view(GroupsView::default());
        let mut table =
            GroupTable::new(&[group_config(Duration::from_secs(5))], start, view.clone());
        assert!(table.take_events().is_empty());
        assert!(!view.load().groups[0].ready);
        assert_eq!(table.next_wakeup(), Some(start + Duration::from_secs(5)));
        table.mark_ready(start + Duration::from_secs(5));
        table.publish();
        assert_eq!(table.take_events(), vec![Event::Ready { group: GROUP }]);
        assert!(view.load().groups[0].ready);
    }

    #[test]
    fn membership_revision_moves_on_join_and_leave_not_on_refresh() {
        let start = Instant::now();
        let view = shared_view(GroupsView::default());
        let mut table = GroupTable::new(&[group_config(Duration::ZERO)], start, view.clone());
        let revision = |view: &SharedView| view.load().groups[0].membership_revision;
        let before = revision(&view);
        table.apply(&announce(1, 1_000_000), start, 0);
        table.publish();
        let joined = revision(&view);
        assert_ne!(joined, before);
        table.apply(&announce(1, 5_000_000), start, 0);
        table.publish();
        assert_eq!(revision(&view), joined, "a refresh is not a membership change");
        table.expire(start + Duration::from_secs(5));
        table.publish();
        assert_ne!(revision(&view), joined);
    }

    #[test]
    fn only_changed_groups_are_rebuilt() {
        let start = Instant::now();
        let view = shared_view(GroupsView::default());
        let mut configs = vec![group_config(Duration::ZERO), group_config(Duration::ZERO)];
        configs[1].id = 2000;
        let mut table = GroupTable::new(&configs, start, view.clone());
        let before = view.load_full();
        table.apply(&announce(1, 1_000_000), start, 0);
        table.publish();
        let after = view.load_full();
        assert_ne!(before.groups[0].revision, after.groups[0].revision);
        assert_eq!(before.groups[1].revision, after.groups[1].revision);
        assert!(std::ptr::eq(
            before.groups[1].members.as_slice(),
            after.groups[1].members.as_slice()
        ));
    }

    fn stale_and_full(table: &mut GroupTable) -> (u64, u64, u64) {
        let rejected = table.take_rejected();
        (
            rejected.dropped[DropReason::Stale as usize],
            rejected.duplicates,
            rejected.dropped[DropReason::GroupFull as usize],
        )
    }

    #[test]
    fn older_and_repeated_announcements_are_stale_and_only_repeats_are_duplicates() {
        let (start, _view, mut table) = one_ready_group();
        table.apply(&announce(1, 20_000_000), start, 0);
        table.apply(&announce(1, 20_000_000), start, 0);
        table.apply(&announce(1, 19_000_000), start, 0);
        assert_eq!(stale_and_full(&mut table), (2, 1, 0));
        assert_eq!(table.take_events().len(), 1, "one join");
    }

    #[test]
    fn a_leave_removes_the_member_at_once_and_turns_away_older_announcements() {
        let (start, view, mut table) = one_ready_group();
        table.apply(&announce(1, 15_000_000), start, 0);
        table.take_events();
        table.apply(&leave(1, 16_000_000), start, 1_000_000);
        let events = table.take_events();
        assert!(matches!(events.as_slice(), [Event::Leave { group: GROUP, .. }]), "{events:?}");
        table.publish();
        assert!(members_of(&view).is_empty());
        // A replay of the announcement, or one as old as the leave, does not re-join...
        table.apply(&announce(1, 15_000_000), start, 1_000_000);
        table.apply(&announce(1, 16_000_000), start, 1_000_000);
        assert!(table.take_events().is_empty());
        assert_eq!(stale_and_full(&mut table), (2, 0, 0));
        // ...a newer one does.
        table.apply(&announce(1, 16_000_001), start, 1_000_000);
        assert!(matches!(table.take_events().as_slice(), [Event::Join { .. }]));
    }

    #[test]
    fn a_signed_leave_is_counted_as_a_leave_and_a_stale_one_is_not() {
        let (start, _view, mut table) = one_ready_group();
        table.apply(&announce(1, 15_000_000), start, 0);
        table.apply(&announce(2, 17_000_000), start, 0);
        table.apply(&leave(1, 16_000_000), start, 1_000_000);
        // Older than member 2's newest announcement: it stays, and nothing left.
        table.apply(&leave(2, 16_000_000), start, 1_000_000);
        let counted = table_counts(&table);
        assert_eq!((counted.joins, counted.leaves, counted.accepted), (2, 1, 4));
    }

    fn table_counts(table: &GroupTable) -> crate::listener::GroupCounts {
        table.counters().load()[0].read()
    }

    #[test]
    fn a_leave_older_than_the_newest_announcement_is_stale() {
        let (start, _view, mut table) = one_ready_group();
        table.apply(&announce(1, 15_000_000), start, 0);
        table.apply(&announce(1, 17_000_000), start, 0);
        table.take_events();
        table.apply(&leave(1, 16_000_000), start, 0);
        assert!(table.take_events().is_empty());
        assert_eq!(table.member_count(), 1);
        assert_eq!(stale_and_full(&mut table), (1, 0, 0));
    }

    #[test]
    fn tombstones_go_once_no_announcement_from_before_the_leave_can_be_valid() {
        let (start, _view, mut table) = one_ready_group();
        // A leave for an address that is no member still guards against its replays.
        table.apply(&leave(1, 15_000_000), start, 0);
        assert_eq!(table.groups[0].tombstones.len(), 1);
        table.expire(start + Duration::from_secs(14));
        assert_eq!(table.groups[0].tombstones.len(), 1);
        table.expire(start + Duration::from_secs(15));
        assert!(table.groups[0].tombstones.is_empty(), "memory is bounded in time");
    }

    #[test]
    fn a_full_group_turns_away_new_addresses_but_refreshes_its_members() {
        let start = Instant::now();
        let view = shared_view(GroupsView::default());
        let config = GroupConfig { max_members: Some(2), ..group_config(Duration::ZERO) };
        let mut table = GroupTable::new(&[config], start, view);
        table.take_events();
        for octet in 1..=4 {
            table.apply(&announce(octet, 15_000_000), start, 0);
        }
        assert_eq!(table.member_count(), 2);
        assert_eq!(stale_and_full(&mut table), (0, 0, 2));
        table.apply(&announce(1, 16_000_000), start, 0);
        table.publish();
        assert_eq!(stale_and_full(&mut table), (0, 0, 0), "a member's refresh is no drop");
        // Leaves of addresses that are not members hold no more than max_members tombstones.
        for octet in 10..20 {
            table.apply(&leave(octet, 15_000_000), start, 0);
        }
        assert_eq!(table.groups[0].tombstones.len(), 2);
    }

    #[test]
    fn the_address_hash_is_keyed_but_the_same_within_a_process() {
        let (a, b) = (AddressHasher::new(), AddressHasher::new());
        let address = [7u8; 16];
        assert_eq!(a.hash(&address), b.hash(&address));
        assert_ne!(a.hash(&address), foldhash::fast::FixedState::default().hash_one(address));
    }

    #[test]
    fn buffers_shrink_after_most_members_leave() {
        let (start, view, mut table) = one_ready_group();
        let announce_many =
            |table: &mut GroupTable, indices: std::ops::Range<u32>, expires_s: i64| {
                for index in indices {
                    let mut address = [0u8; 16];
                    address[10..12].copy_from_slice(&[0xff, 0xff]);
                    address[12..].copy_from_slice(&index.to_be_bytes());
                    let expires_at_us: i64 = expires_s * 1_000_000;
                    let accepted =
                        Accepted { group_index: 0, kind: Kind::Announce, address, expires_at_us };
                    table.apply(&accepted, start, 0);
                }
            };
        // 40 000 members, of which 30 000 leave at 1 s and 10 000 stay until 100 s.
        announce_many(&mut table, 0..30_000, 1);
        announce_many(&mut table, 30_000..40_000, 100);
        table.publish();
        let full = &table.groups[0];
        assert!(full.members.capacity() >= 40_000 && full.positions.capacity() >= 40_000);
        table.expire(start + Duration::from_secs(1));
        table.publish();
        // 10 000 left: refilled buffers keep at most a quarter more, and the reused lists
        // are not the 40 000-member ones.
        let group = &table.groups[0];
        assert_eq!(group.members.len(), 10_000);
        assert!(group.members.capacity() <= 12_500, "{}", group.members.capacity());
        assert!(group.deadlines.capacity() <= 12_500);
        assert!(group.positions.capacity() <= 15_000 + TRIM_SLACK);
        table.publish();
        table.apply(&announce(1, 100_000_000), start, 0);
        table.publish();
        assert!(view.load().groups[0].members.capacity() <= 15_000 + TRIM_SLACK);
        assert_eq!(members_of(&view).len(), 10_001);
        // The burst of 30 000 leaves went through the work buffers, which gave it back.
        table.flush_events(&mut |events| assert!(events.len() >= 30_000));
        assert!(table.events.capacity() <= KEPT_WORK_BUFFER, "{}", table.events.capacity());
        assert!(table.due.capacity() <= KEPT_WORK_BUFFER, "{}", table.due.capacity());
    }

    proptest::proptest! {
        /// Against a plain map of address to latest expiry: after any mix of joins, refreshes
        /// and expiries (which move members around inside the table), the table holds exactly
        /// the model's members, each with its latest expiry, and joined/left exactly as often.
        #[test]
        fn table_matches_a_simple_model(
            steps in proptest::collection::vec((0u8..40, 1i64..40, proptest::bool::ANY), 1..300)
        ) {
            use std::collections::BTreeMap;
            let (start, view, mut table) = one_ready_group();
            let mut model: BTreeMap<u8, i64> = BTreeMap::new();
            let (mut joins, mut leaves) = (0usize, 0usize);
            let mut now_s = 0i64;
            for (octet, lifetime_s, advance) in steps {
                if advance {
                    now_s += 1;
                    table.expire(start + Duration::from_secs(now_s as u64));
                    let before = model.len();
                    model.retain(|_, expires_s| *expires_s > now_s);
                    leaves += before - model.len();
                }
                let expires_s = now_s + lifetime_s;
                let at = start + Duration::from_secs(now_s as u64);
                table.apply(&announce(octet, expires_s * 1_000_000), at, now_s * 1_000_000);
                let latest = model.entry(octet).or_insert_with(|| {
                    joins += 1;
                    expires_s
                });
                *latest = (*latest).max(expires_s);
            }
            table.publish();
            let events = table.take_events();
            let count = |leave: bool| {
                events.iter().filter(|e| matches!(e, Event::Leave { .. }) == leave).count()
            };
            proptest::prop_assert_eq!(count(false), joins);
            proptest::prop_assert_eq!(count(true), leaves);
            let mut held: Vec<(u8, i64)> = members_of(&view)
                .iter()
                .map(|m| (m.address[15], m.expires_at_unix_us / 1_000_000))
                .collect();
            held.sort_unstable();
            let wanted: Vec<(u8, i64)> = model.into_iter().collect();
            proptest::prop_assert_eq!(held, wanted);
        }

        /// Several groups, each changed or not between publishes, some views held by a
        /// "delivery thread" across publishes: the view updated in place is always exactly
        /// the one a whole rebuild gives, and every group expires on time although the table
        /// only scans groups when one is due.
        #[test]
        fn a_view_updated_in_place_equals_one_built_whole(
            steps in proptest::collection::vec(
                (0u32..4, 0u8..20, 1i64..6, proptest::bool::ANY, proptest::bool::ANY, 0u8..4),
                1..200,
            )
        ) {
            use std::collections::BTreeMap;
            let start = Instant::now();
            let view = shared_view(GroupsView::default());
            let configs: Vec<GroupConfig> = (0..4u64)
                .map(|n| GroupConfig { id: GROUP + n, ..group_config(Duration::ZERO) })
                .collect();
            let mut table = GroupTable::new(&configs, start, view.clone());
            let mut model: BTreeMap<(u32, u8), i64> = BTreeMap::new();
            let mut held = None;
            let mut now_s = 0i64;
            for (group_index, octet, lifetime_s, advance, publish, hold) in steps {
                if advance {
                    now_s += 1;
                    table.expire(start + Duration::from_secs(now_s as u64));
                    model.retain(|_, expires_s| *expires_s > now_s);
                }
                let expires_s = now_s + lifetime_s;
                let at = start + Duration::from_secs(now_s as u64);
                let announcement =
                    Accepted { group_index, ..announce(octet, expires_s * 1_000_000) };
                table.apply(&announcement, at, now_s * 1_000_000);
                let latest = model.entry((group_index, octet)).or_insert(expires_s);
                *latest = (*latest).max(expires_s);
                if publish {
                    table.publish();
                    let whole: Vec<GroupState> = table.groups.iter().map(Group::state).collect();
                    let published = view.load_full();
                    proptest::prop_assert_eq!(published.groups.len(), whole.len());
                    for (got, want) in published.groups.iter().zip(&whole) {
                        proptest::prop_assert_eq!(
                            (got.id, got.ready, got.revision, got.membership_revision),
                            (want.id, want.ready, want.revision, want.membership_revision)
                        );
                        proptest::prop_assert_eq!(got.members.as_slice(), want.members.as_slice());
                    }
                    // A delivery thread still reading a view keeps it from being reused.
                    held = (hold == 0).then_some(published);
                }
            }
            drop(held);
            table.publish();
            for (index, group) in view.load().groups.iter().enumerate() {
                let mut got: Vec<(u8, i64)> = group
                    .members
                    .iter()
                    .map(|m| (m.address[15], m.expires_at_unix_us / 1_000_000))
                    .collect();
                got.sort_unstable();
                let want: Vec<(u8, i64)> = model
                    .iter()
                    .filter(|((g, _), _)| *g as usize == index)
                    .map(|((_, octet), expires_s)| (*octet, *expires_s))
                    .collect();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
