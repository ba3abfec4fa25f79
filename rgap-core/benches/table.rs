//! Micro-benchmark of the group table thread alone: `run_table` fed batches of verified
//! announcements as sources hand them over, all joins of distinct members (the ingest
//! scenario's table half), then the same members again (refreshes). Reports the table
//! thread's CPU per announcement. Run with `cargo bench -p rgap-core --bench table`
//! [-- MEMBERS [BATCH]].

use std::time::{Duration, Instant};

use rgap_core::config::GroupConfig;
use rgap_core::duration::GoDuration;
use rgap_core::listener::{run_table, Accepted, GroupTable, ListenerStats, TableInput};
use rgap_core::plugin_host::{shared_view, GroupsView};
use rgap_core::protocol::{unix_micros, Kind};
use rgap_core::psk::Psk;
use rgap_plugin_api::Event;
use rgap_plugin_kit::pacing::thread_cpu_time;

const GROUP: u64 = 1000;

fn announcement(member: u32, expires_at_us: i64) -> Accepted {
    let mut address = [0u8; 16];
    address[10] = 0xff;
    address[11] = 0xff;
    address[12..].copy_from_slice(&(0x0a00_0000 | member).to_be_bytes());
    Accepted { group_index: 0, kind: Kind::Announce, address, expires_at_us }
}

/// Runs the table on its own thread over `rounds` passes of `members` announcements, sent
/// in batches of `batch`; returns the table thread's CPU time and the joins it reported.
fn run(members: u32, batch: usize, rounds: u32, rate: Option<u32>) -> (Duration, usize) {
    let config = GroupConfig {
        id: GROUP,
        psk: Psk::from_bytes([0x5a; 32]).into(),
        expire: GoDuration(Duration::from_secs(600)),
        readiness_delay: GoDuration(Duration::ZERO),
        max_members: None,
        ..GroupConfig::default()
    };
    let (input, table_input) = crossbeam_channel::bounded::<TableInput>(1024);
    let (spares, spare_output) = crossbeam_channel::bounded::<TableInput>(1024);
    let (_control, control_input) = crossbeam_channel::unbounded();
    let table = std::thread::Builder::new().name("group table".into()).spawn(move || {
        let table = GroupTable::new(&[config], Instant::now(), shared_view(GroupsView::default()));
        let stats = ListenerStats::default();
        let mut events = 0;
        let started = thread_cpu_time();
        run_table(table, table_input, control_input, spares, &stats, |batch| {
            events += batch.iter().filter(|event| matches!(event, Event::Join { .. })).count()
        });
        (thread_cpu_time() - started, events)
    });
    let table = table.expect("spawning the table thread");
    let now_us = unix_micros(std::time::SystemTime::now());
    let started = Instant::now();
    let mut sent = 0u64;
    for round in 0..rounds {
        let expires_at_us = now_us + 600_000_000 + i64::from(round);
        for first in (0..members).step_by(batch) {
            let mut accepted = spare_output.try_recv().unwrap_or_default();
            let last = (first + batch as u32).min(members);
            accepted.extend((first..last).map(|member| announcement(member, expires_at_us)));
            input.send(accepted).expect("the table thread ended early");
            sent += (last - first) as u64;
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        }
    }
    drop(input);
    table.join().expect("the table thread panicked")
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|arg| !arg.starts_with("--"));
    let members: u32 = args.next().map_or(200_000, |n| n.parse().expect("MEMBERS"));
    let batch: usize = args.next().map_or(200, |n| n.parse().expect("BATCH"));
    let rate: Option<u32> = args.next().map(|n| n.parse().expect("RATE"));
    for (label, rounds) in [("joins", 1), ("joins then 4 rounds of refreshes", 5)] {
        let mut samples: Vec<f64> = (0..5)
            .map(|_| {
                let (cpu, joins) = run(members, batch, rounds, rate);
                assert_eq!(joins, members as usize, "every member joins once");
                cpu.as_nanos() as f64 / f64::from(members * rounds)
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        println!(
            "table thread, {members} members in batches of {batch}, {label}: {:.0}–{:.0} ns, median {:.0} ns per announcement",
            samples[0], samples[4], samples[2]
        );
    }
}
