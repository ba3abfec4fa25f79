//! Ingest under hostile load, end to end: the real listener, real UDP on loopback. A flood of
//! forged announcements for a known group (66 bytes, fresh timestamps: they pass every cheap
//! check and each costs an HMAC) must not push out the valid announcements sent beside it.
//! The full-rate version is `rgap-bench flood`; here the flood is bounded, so the test holds
//! on a debug build and a busy machine.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

/// A key nobody configured: what the forged announcements are signed with.
const FORGER_PSK: &str = "1111111111111111111111111111111111111111111111111111111111111111";
/// Only this group's joins are logged: it marks the end of a sender's datagrams.
const MARKER_GROUP: u64 = 2000;

fn to(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn flood_config(port: u16) -> String {
    format!(
        "workers: 2\nlisten:\n- 127.0.0.1:{port}\ngroups:\n- id: 1000\n  psk: {PSK}\n  expire: 10m\n- id: {MARKER_GROUP}\n  psk: {PSK}\n  expire: 10m\noutputs:\n- kind: eventlog\n  spec:\n    only_groups: [{MARKER_GROUP}]\n"
    )
}

/// A value of the `datagram totals` line, e.g. `accepted`.
fn total(totals: &str, key: &str) -> u64 {
    totals
        .split_whitespace()
        .find_map(|field| field.strip_prefix(&format!("{key}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {totals:?}"))
}

/// Sends forged announcements for group 1000 from one socket at `rate` a second until
/// `until`; returns how many went out.
fn forge(port: u16, rate: u32, until: Instant) -> u64 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(to(port)).unwrap();
    // Fresh timestamps (within the default clock_skew, which is `expire`), distinct addresses.
    let forged: Vec<[u8; 66]> = (0..1024u32)
        .map(|n| announcement(1000, &Ipv4Addr::from(0x0b00_0000 + n).to_string(), FORGER_PSK))
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while Instant::now() < until {
        // In bursts of 100, each due at its time: a steady rate over any interval.
        let due = started + Duration::from_secs_f64(sent as f64 / f64::from(rate));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for datagram in forged.iter().cycle().skip(sent as usize % forged.len()).take(100) {
            // A full receive buffer refuses briefly on loopback: that datagram is lost.
            if socket.send(datagram).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

#[test]
fn valid_announcements_all_get_in_during_a_flood_of_forged_ones() {
    const SECONDS: u64 = 3;
    const VALID_PER_SECOND: u64 = 1_000;
    const JUNK_PER_SECOND: u32 = 50_000;
    let port = free_udp_port();
    let listener = start_listener(&flood_config(port));
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let forger = std::thread::spawn(move || forge(port, JUNK_PER_SECOND, until));

    // Valid announcements of distinct addresses at 1 000 a second, from one socket, then a
    // marker from the same socket: datagrams of one sender stay on one worker's socket, in
    // order, so once the marker has joined every valid one has been read.
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let valid = SECONDS * VALID_PER_SECOND;
    for n in 0..valid {
        let due = started + Duration::from_millis(n * 1_000 / VALID_PER_SECOND);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let ip = Ipv4Addr::from(0x0a00_0000 + n as u32).to_string();
        sender.send_to(&announcement(1000, &ip, PSK), to(port)).unwrap();
    }
    let forged = forger.join().unwrap();
    sender.send_to(&announcement(MARKER_GROUP, "10.255.0.1", PSK), to(port)).unwrap();
    listener.wait_for_log(&format!("host 10.255.0.1 has joined group {MARKER_GROUP}"));

    let (status, log) = listener.terminate_and_wait();
    assert!(status.success());
    let totals = log.iter().find(|line| line.contains("datagram totals")).expect("totals line");
    // Every valid announcement (and the marker) accepted...
    assert_eq!(total(totals, "accepted"), valid + 1, "{totals}");
    // ...while a flood really reached the listener and cost it an HMAC each. How much of
    // it the kernel delivers depends on how busy the machine is: at least a sizeable part.
    let rejected = total(totals, "bad_signature");
    assert!(
        forged >= SECONDS * u64::from(JUNK_PER_SECOND) / 2 && rejected >= forged / 4,
        "sent {forged} forged, {rejected} checked: {totals}"
    );
}
