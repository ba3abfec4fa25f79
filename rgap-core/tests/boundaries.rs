//! Where the checks and the group table draw their lines, through the public API as the
//! listener wires them: a datagram checked by the [`Checker`] and applied by the table thread
//! ([`run_table`]), with the events the plugins would receive.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use rgap_core::config::GroupConfig;
use rgap_core::duration::GoDuration;
use rgap_core::listener::{run_table, Checker, GroupTable, ListenerStats};
use rgap_core::plugin_host::{shared_view, GroupsView};
use rgap_core::protocol::{encode_signed, unix_micros, Announcement};
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
