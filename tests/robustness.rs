//! End-to-end robustness: a flood of junk around valid announcements, and shutdown under
//! load. The real binary, the real hostsfile plugin, real datagrams on loopback.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

const PREPEND: &str = "# rgap robustness test";
const APPEND: &str = "# end of file";

fn hostsfile_outputs() -> String {
    format!(
        "- kind: hostsfile\n  spec:\n    interval: 1s\n    filename: hosts\n    mappings:\n    - group: 1000\n      hostname: backend\n    prepend_lines: ['{PREPEND}']\n    append_lines: ['{APPEND}']\n"
    )
}

fn member(index: usize) -> String {
    format!("10.{}.{}.{}", index >> 16 & 255, index >> 8 & 255, index & 255)
}

/// The members listed in the hosts file (empty if it does not exist yet).
fn members_in(hosts: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(hosts).unwrap_or_default();
    text.lines()
        .filter(|line| line.ends_with(" backend"))
        .map(|line| line.trim_end_matches(" backend").to_owned())
        .collect()
}

/// One counter from the `datagram totals` line.
fn counter(totals: &str, key: &str) -> u64 {
    totals
        .split_whitespace()
        .find_map(|field| field.strip_prefix(&format!("{key}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {totals}"))
}

/// Junk of every kind the listener checks for, in turn.
fn junk(index: usize) -> Vec<u8> {
    match index % 5 {
        0 => vec![0xab; index % 200],                         // wrong length
        1 => announcement(777, &member(index), PSK).to_vec(), // unknown group
        2 => {
            let mut datagram = announcement(1000, "192.0.2.1", PSK); // bad version
            datagram[0] = 9;
            datagram.to_vec()
        }
        3 => announcement_at(1000, "192.0.2.2", PSK, 1).to_vec(), // clock skew
        _ => announcement(1000, "192.0.2.3", &"22".repeat(32)).to_vec(), // bad signature
    }
}

#[test]
fn flood_of_junk_around_valid_announcements_loses_nothing_after_a_calm_resend() {
    const VALID: usize = 2_000;
    const JUNK_PER_VALID: usize = 100;
    let port = free_udp_port();
    let listener =
        start_listener(&config(port, "  expire: 120s\n  clock_skew: 30s\n", &hostsfile_outputs()));
    let hosts = listener.dir.path().join("hosts");
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();

    // The flood: 200 000 junk datagrams with the 2 000 valid ones spread among them, sent
    // as fast as the socket takes them. Some may be lost in the kernel; none may crash rgap.
    let mut sent_junk = 0usize;
    for index in 0..VALID {
        for j in 0..JUNK_PER_VALID {
            let _ = socket.send_to(&junk(index * JUNK_PER_VALID + j), to);
            sent_junk += 1;
        }
        let _ = socket.send_to(&announcement(1000, &member(index), PSK), to);
    }

    // The calm resend: the same 2 000, in small bursts the listener can take.
    for chunk in (0..VALID).collect::<Vec<_>>().chunks(100) {
        for &index in chunk {
            socket.send_to(&announcement(1000, &member(index), PSK), to).unwrap();
        }
        // Pacing the load, not synchronising: each burst waits for the file to show it.
        let last = member(*chunk.last().unwrap());
        assert!(eventually(|| members_in(&hosts).contains(&last)), "{last} never listed");
    }
    let expected: HashSet<String> = (0..VALID).map(member).collect();
    assert!(eventually(|| members_in(&hosts) == expected), "hosts file does not list all 2000");

    let pid = listener.pid();
    common::signal(pid, libc::SIGTERM);
    let (status, log) = listener.wait_exit();
    assert!(status.success(), "listener did not survive the flood: {status}");
    let totals = log.iter().find(|l| l.contains("datagram totals")).expect("totals line").clone();
    let received = counter(&totals, "received");
    let accepted = counter(&totals, "accepted");
    let dropped: u64 =
        ["wrong_length", "unknown_group", "bad_version", "clock_skew", "bad_signature"]
            .iter()
            .map(|reason| {
                let count = counter(&totals, reason);
                assert!(count > 0, "no {reason} drops counted: {totals}");
                count
            })
            .sum();
    assert_eq!(received, accepted + dropped, "every datagram is accepted or counted: {totals}");
    assert!(dropped <= sent_junk as u64, "more drops than junk sent: {totals}");
    assert!(accepted >= VALID as u64, "{totals}");
}

#[test]
fn sigterm_under_load_exits_zero_promptly_and_leaves_a_complete_hosts_file() {
    let port = free_udp_port();
    let mut listener = start_listener(&config(port, "  expire: 120s\n", &hostsfile_outputs()));
    let hosts = listener.dir.path().join("hosts");
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = Arc::new(AtomicBool::new(false));
    let sender_stop = stop.clone();
    // Bounded load: at most 50 000 distinct members, until told to stop.
    let sender = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for index in 0..50_000 {
            if sender_stop.load(Ordering::Relaxed) {
                break;
            }
            let _ = socket.send_to(&announcement(1000, &member(index), PSK), to);
        }
    });
    assert!(eventually(|| members_in(&hosts).len() >= 100), "load never reached the hosts file");
    let pid = listener.pid();
    common::signal(pid, libc::SIGTERM);
    let (status, _log) = listener.wait_exit_keeping_dir();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    assert!(status.success(), "exit status {status}");
    // "Promptly": wait_exit gives up (and fails the test) after WAIT; no time is asserted.
    let text = std::fs::read_to_string(&hosts).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&PREPEND), "hosts file head: {:?}", lines.first());
    assert_eq!(lines.last(), Some(&APPEND), "hosts file tail: {:?}", lines.last());
    assert!(text.ends_with('\n'));
    for line in &lines[1..lines.len() - 1] {
        let (ip, name) = line.split_once(' ').unwrap_or_else(|| panic!("malformed line {line:?}"));
        assert_eq!(name, "backend");
        assert!(ip.parse::<std::net::IpAddr>().is_ok(), "bad address in {line:?}");
    }
}
