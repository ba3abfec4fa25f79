//! Where the checks and the group table draw their lines, through the public API as the
//! listener wires them: a datagram checked by the [`Checker`] and applied by the table thread
//! ([`run_table`]), with the events the plugins would receive; and the table alone on a clock
//! the test drives, for replay tombstones, duplicates, the full-group warning, when it
//! publishes and wakes, its counters, and a reload's groups.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use rgap_core::config::GroupConfig;
use rgap_core::duration::GoDuration;
use rgap_core::listener::{run_table, Accepted, Checker, DropReason, GroupTable, ListenerStats};
use rgap_core::plugin_host::{shared_view, GroupsView};
use rgap_core::protocol::{encode_signed, unix_micros, Announcement, Kind};
use rgap_core::psk::Psk;
use rgap_plugin_api::Event;

const GROUP: u64 = 1000;

fn key() -> Psk {
    Psk::from_bytes([5; 32])
}

/// Group 1000 with a 10 s expire and no `clock_skew` (so the skew is the expire too).
fn config() -> GroupConfig {
    GroupConfig {
        id: GROUP,
        psk: key().into(),
        expire: GoDuration(Duration::from_secs(10)),
        ..GroupConfig::default()
    }
}

/// Checks each datagram at `checked_at_us` (Unix µs) as a source would, hands what passes to
/// a table thread, and returns every event it emitted until it stopped, and the view's
/// member count at the end.
fn through_the_table(datagrams: &[[u8; 66]], checked_at_us: i64) -> (Vec<Event>, usize) {
    let configs = [config()];
    let checker = Checker::new(&configs);
    let accepted: Vec<_> =
        datagrams.iter().filter_map(|d| checker.check(d, checked_at_us).ok()).collect();
    assert_eq!(accepted.len(), datagrams.len(), "every datagram passes the checker");
    let view = shared_view(GroupsView::default());
    let table = GroupTable::new(&configs, Instant::now(), view.clone());
    let (input, batches) = crossbeam_channel::unbounded();
    let (_control_sender, control) = crossbeam_channel::unbounded();
    let (spares, _spare_batches) = crossbeam_channel::unbounded();
    input.send(accepted).unwrap();
    // With no sender left, the table applies the batch, publishes once more and returns.
    drop(input);
    let mut events = Vec::new();
    let stats = ListenerStats::default();
    run_table(table, batches, control, spares, &stats, |batch: &[Event]| {
        events.extend_from_slice(batch)
    });
    let members = view.load().groups[0].members.len();
    (events, members)
}

fn stamped(ip: &str, timestamp_unix_us: i64) -> [u8; 66] {
    let address: IpAddr = ip.parse().unwrap();
    encode_signed(&Announcement { group: GROUP, timestamp_unix_us, address }, &key())
}

fn joins(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Join { .. })).count()
}

#[test]
fn an_announcement_already_expired_on_arrival_never_joins() {
    let now = unix_micros(SystemTime::now());
    // Stamped exactly `expire` ago: at the clock-skew edge (clock_skew is expire here), so it
    // passes the checker, and its expiry (timestamp + expire) is now, or already past by the
    // time the table sees it.
    let (events, members) = through_the_table(&[stamped("10.0.0.1", now - 10_000_000)], now);
    assert_eq!(joins(&events), 0, "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::Leave { .. })), "{events:?}");
    assert_eq!(members, 0);
}

#[test]
fn an_announcement_with_time_left_joins_and_stays() {
    let now = unix_micros(SystemTime::now());
    let (events, members) = through_the_table(&[stamped("10.0.0.2", now - 5_000_000)], now);
    assert_eq!(joins(&events), 1, "{events:?}");
    assert_eq!(members, 1);
}

// The table on its own, on a clock the test drives: `at(s)` is `s` seconds after the table's
// start, in monotonic time and in wall-clock µs.

/// An arbitrary wall-clock start, Unix µs.
const WALL: i64 = 1_800_000_000_000_000;

struct Driven {
    start: Instant,
    view: rgap_core::plugin_host::SharedView,
    table: GroupTable,
}

impl Driven {
    fn new(max_members: Option<u32>) -> Driven {
        Driven::with(&[GroupConfig { max_members, ..config() }])
    }

    fn with(configs: &[GroupConfig]) -> Driven {
        let start = Instant::now();
        let view = shared_view(GroupsView::default());
        let table = GroupTable::new(configs, start, view.clone());
        Driven { start, view, table }
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Applies a datagram of `kind` for 10.0.0.`octet` stamped `stamped_s`, arriving at
    /// `now_s` (the group's expire is 10 s).
    fn apply(&mut self, now_s: u64, kind: Kind, octet: u8, stamped_s: i64) {
        let mut address = [0u8; 16];
        address[10..12].copy_from_slice(&[0xff, 0xff]);
        address[12..].copy_from_slice(&[10, 0, 0, octet]);
        let expires_at_us = WALL + (stamped_s + 10) * 1_000_000;
        let accepted = Accepted { group_index: 0, kind, address, expires_at_us };
        let now = self.start + Duration::from_secs(now_s);
        self.table.apply(&accepted, now, WALL + now_s as i64 * 1_000_000);
    }

    fn expire(&mut self, now_s: u64) {
        self.table.expire(self.start + Duration::from_secs(now_s));
    }

    /// The last octets of the members, as published.
    fn members(&mut self) -> Vec<u8> {
        self.table.publish();
        let mut octets: Vec<u8> =
            self.view.load().groups[0].members.iter().map(|m| m.address[15]).collect();
        octets.sort_unstable();
        octets
    }
}

#[test]
fn a_tombstone_is_kept_until_its_own_time_while_an_earlier_one_goes() {
    let mut table = Driven::new(None);
    table.apply(0, Kind::Announce, 1, 0);
    table.apply(0, Kind::Announce, 2, 0);
    // Member 1 leaves at 0 s (its tombstone lasts until 10 s), member 2 at 5 s (until 15 s).
    table.apply(0, Kind::Leave, 1, 0);
    table.apply(5, Kind::Leave, 2, 5);
    assert_eq!(table.members(), Vec::<u8>::new());
    // At 12 s the first tombstone goes; the second must still turn away an announcement
    // stamped before member 2's leave (replayed, say), which the clock-skew check still passes.
    table.expire(12);
    table.apply(12, Kind::Announce, 2, 4);
    assert_eq!(table.members(), Vec::<u8>::new(), "an announcement older than the leave rejoined");
    assert_eq!(table.table.take_rejected().dropped[DropReason::Stale as usize], 1);
    // Newer than the leave: back.
    table.apply(12, Kind::Announce, 2, 6);
    assert_eq!(table.members(), vec![2]);
}

#[test]
fn tombstones_that_have_gone_make_room_for_new_ones_in_a_capped_group() {
    // max_members 1 caps tombstones of addresses that were no members at one, too.
    let mut table = Driven::new(Some(1));
    table.apply(0, Kind::Leave, 1, 0);
    // Its tombstone lasts until 10 s: gone at 11 s, leaving room for the next leave's.
    table.expire(11);
    table.apply(11, Kind::Leave, 2, 11);
    table.apply(11, Kind::Announce, 2, 10);
    assert_eq!(table.members(), Vec::<u8>::new(), "an announcement older than the leave joined");
}

#[test]
fn only_an_exact_repeat_counts_as_a_duplicate() {
    let mut table = Driven::new(None);
    table.apply(0, Kind::Announce, 1, 0);
    // The same twice again (heard on two sockets, say): stale, and duplicates.
    table.apply(0, Kind::Announce, 1, 0);
    table.apply(0, Kind::Announce, 1, 0);
    // Older: stale, not a duplicate.
    table.apply(0, Kind::Announce, 1, -1);
    let rejected = table.table.take_rejected();
    assert_eq!(rejected.dropped[DropReason::Stale as usize], 3);
    assert_eq!(rejected.duplicates, 2);
}

/// Log lines written while `run` runs on this thread.
fn logged_while(run: impl FnOnce()) -> Vec<String> {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).finish();
    tracing::subscriber::with_default(subscriber, run);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn a_full_group_is_warned_about_once_a_minute_not_per_datagram() {
    let mut table = Driven::new(Some(1));
    let warnings = |lines: &[String]| lines.iter().filter(|l| l.contains("is full")).count();
    let lines = logged_while(|| {
        table.apply(0, Kind::Announce, 1, 0);
        for octet in 2..20 {
            table.apply(1, Kind::Announce, octet, 0);
        }
    });
    assert_eq!(warnings(&lines), 1, "{lines:#?}");
    assert_eq!(table.table.take_rejected().dropped[DropReason::GroupFull as usize], 18);
    // A minute and more later, once more.
    let lines = logged_while(|| {
        table.apply(62, Kind::Announce, 1, 60);
        for octet in 2..5 {
            table.apply(62, Kind::Announce, octet, 60);
        }
    });
    assert_eq!(warnings(&lines), 1, "{lines:#?}");
}

#[test]
fn a_leave_as_new_as_the_newest_announcement_removes_the_member() {
    let mut table = Driven::new(None);
    table.apply(0, Kind::Announce, 1, 5);
    table.apply(0, Kind::Announce, 2, 5);
    // Stamped the same microsecond as the announcement: not older, so it counts.
    table.apply(0, Kind::Leave, 1, 5);
    // Older than member 2's announcement: it came back since, the leave is stale.
    table.apply(0, Kind::Leave, 2, 4);
    assert_eq!(table.members(), vec![2]);
}

#[test]
fn every_join_and_leave_moves_the_membership_revision_forward() {
    let mut table = Driven::new(None);
    let revision = |table: &mut Driven| {
        table.members();
        table.view.load().groups[0].membership_revision
    };
    let mut seen = vec![revision(&mut table)];
    table.apply(0, Kind::Announce, 1, 0);
    seen.push(revision(&mut table));
    table.apply(0, Kind::Announce, 1, 1); // a refresh: no membership change
    seen.push(revision(&mut table));
    table.apply(1, Kind::Leave, 1, 1);
    seen.push(revision(&mut table));
    table.apply(1, Kind::Announce, 2, 1);
    table.expire(20);
    seen.push(revision(&mut table));
    assert!(seen[0] < seen[1] && seen[1] == seen[2], "{seen:?}");
    assert!(seen[2] < seen[3] && seen[3] < seen[4], "{seen:?}");
}

#[test]
fn joins_publish_at_once_and_refreshes_wait_their_interval() {
    let mut table = Driven::new(None);
    // Seconds after the start: any pause the publish pacer took after the first publish
    // (at most 250 ms) is over.
    table.apply(1, Kind::Announce, 1, 1);
    assert!(table.table.publish_due(table.at(1_000)), "a join waits for nothing");
    table.table.publish();
    assert!(!table.table.publish_due(table.at(1_000)), "nothing left to publish");
    // A refresh moves only an expiry: published REFRESH_PUBLISH_INTERVAL later, and the table
    // wakes for it then (the member's expiry is later still).
    table.apply(2, Kind::Announce, 1, 2);
    let interval = rgap_core::listener::REFRESH_PUBLISH_INTERVAL;
    assert_eq!(table.table.next_wakeup(), Some(table.at(2_000) + interval));
    assert!(!table.table.publish_due(table.at(2_000)));
    assert!(!table.table.publish_due(table.at(2_000) + interval - Duration::from_millis(1)));
    assert!(table.table.publish_due(table.at(2_000) + interval));
}

#[test]
fn the_table_thread_publishes_while_it_runs_not_only_when_it_stops() {
    let configs = [config()];
    let view = shared_view(GroupsView::default());
    let table = GroupTable::new(&configs, Instant::now(), view.clone());
    let (input, batches) = crossbeam_channel::unbounded();
    let (_control_sender, control) = crossbeam_channel::unbounded();
    let (spares, _spare_batches) = crossbeam_channel::unbounded();
    let thread = std::thread::spawn(move || {
        let stats = ListenerStats::default();
        run_table(table, batches, control, spares, &stats, |_: &[Event]| {});
    });
    let now = unix_micros(SystemTime::now());
    let checker = Checker::new(&configs);
    input.send(vec![checker.check(&stamped("10.0.0.3", now), now).unwrap()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while view.load().groups[0].members.is_empty() {
        assert!(Instant::now() < deadline, "the join was not published while running");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(input);
    thread.join().unwrap();
}

#[test]
fn counters_count_each_group_and_follow_a_reload() {
    let second = GroupConfig { id: 2000, ..config() };
    let mut table = Driven::with(&[config(), second.clone()]);
    table.apply(1, Kind::Announce, 1, 1);
    table.apply(1, Kind::Announce, 1, 1); // a repeat: stale, but it passed the checks
    table.apply(1, Kind::Announce, 2, 1);
    table.expire(20);
    let counts = |table: &Driven| -> Vec<(u64, u64, u64, u64)> {
        let counters = table.table.counters().load();
        counters.iter().map(|c| c.read()).map(|c| (c.id, c.accepted, c.joins, c.leaves)).collect()
    };
    // Accepted: all three reached the group; both members joined, then expired.
    assert_eq!(counts(&table), vec![(GROUP, 3, 2, 2), (2000, 0, 0, 0)]);
    // Group 1000 dropped by a reload: only group 2000's counters are listed.
    table.table.reconfigure(&[(1, second)], table.at(2_000));
    assert_eq!(counts(&table), vec![(2000, 0, 0, 0)]);
}

#[test]
fn a_reload_keeps_the_members_of_kept_groups_and_removes_the_others() {
    let second = GroupConfig { id: 2000, ..config() };
    let mut table = Driven::with(&[config(), second.clone()]);
    table.apply(1, Kind::Announce, 1, 1);
    let mut in_second = Accepted {
        group_index: 1,
        kind: Kind::Announce,
        address: [0; 16],
        expires_at_us: WALL + 11_000_000,
    };
    in_second.address[15] = 9;
    table.table.apply(&in_second, table.at(1_000), WALL + 1_000_000);
    table.table.publish();
    // Group 1000 (slot 0) kept, group 2000 (slot 1) removed.
    table.table.reconfigure(&[(0, config())], table.at(2_000));
    table.table.publish();
    let view = table.view.load();
    let groups: Vec<(u64, usize)> = view.groups.iter().map(|g| (g.id, g.members.len())).collect();
    assert_eq!(groups, vec![(GROUP, 1)]);
    assert_eq!(table.table.member_count(), 1);
}

#[test]
fn a_reload_sets_a_new_readiness_delay_counted_from_when_the_group_was_configured() {
    let waiting = GroupConfig { readiness_delay: GoDuration(Duration::from_secs(60)), ..config() };
    let mut table = Driven::with(&[waiting]);
    let ready = |table: &mut Driven| {
        table.table.publish();
        table.view.load().groups[0].ready
    };
    assert!(!ready(&mut table));
    // 30 s from the start: not ready at 1 s...
    let shorter = GroupConfig { readiness_delay: GoDuration(Duration::from_secs(30)), ..config() };
    table.table.reconfigure(&[(0, shorter.clone())], table.at(1_000));
    assert!(!ready(&mut table));
    table.table.mark_ready(table.at(29_999));
    assert!(!ready(&mut table));
    table.table.mark_ready(table.at(30_000));
    assert!(ready(&mut table));
}
