//! The `flood` scenario: forged announcements for a known group (66 bytes, fresh
//! timestamps, a wrong key: each passes the cheap checks and costs the listener an HMAC),
//! sent unpaced from one or more threads, while valid announcements of new members go out
//! beside them at a steady rate. Reports the flood's rate, how many valid ones got in, and
//! the listener's CPU per datagram.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use rgap_core::protocol::unix_micros;

use crate::blaster::send_batch;
use crate::figures::figure;
use crate::listener::{pin, total, BenchListener};
use crate::scenarios::{group_yaml, member_ip, port, signed, signed_at, OTHER_PSK, PSK};

#[derive(clap::Args)]
pub struct FloodArgs {
    /// How long the flood lasts
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Threads sending forged announcements, each as fast as it can from its own socket
    #[arg(long, default_value_t = 1)]
    junk_threads: usize,
    /// Valid announcements (each a new member) per second during the flood
    #[arg(long, default_value_t = 1_000)]
    valid_rate: u64,
    /// The listener's `workers` (default: its own default, one per core up to 4)
    #[arg(long)]
    workers: Option<u32>,
    /// Pin the listener to CPU 0 and the senders to CPU 1
    #[arg(long)]
    pin: bool,
}

/// The group whose joins mark the end of the valid sender's datagrams.
const MARKER_GROUP: u64 = 2000;

pub fn flood(args: &FloodArgs) {
    let port = port();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let workers = args.workers.map_or(String::new(), |n| format!("workers: {n}\n"));
    let config = format!(
        "{workers}listen:\n- 127.0.0.1:{port}\ngroups:\n{}outputs:\n- kind: eventlog\n",
        group_yaml([1000, MARKER_GROUP].into_iter())
    );
    let listener = BenchListener::start(&config);
    if args.pin {
        pin(listener.pid(), 0);
        pin(0, 1);
    }
    let duration = Duration::from_secs(args.seconds.max(1));
    let before = listener.snapshot();
    let flood_started = Instant::now();
    let until = flood_started + duration;
    let forgers: Vec<_> = (0..args.junk_threads.max(1))
        .map(|thread| std::thread::spawn(move || forge(thread, to, until)))
        .collect();
    let (sender, valid, valid_elapsed) = send_valid(to, args.valid_rate, until);
    let (forged, refused) = forgers
        .into_iter()
        .map(|forger| forger.join().unwrap())
        .fold((0, 0), |(sent, failed), (s, f)| (sent + s, failed + f));
    let flood_elapsed = flood_started.elapsed();
    // A marker from the valid sender's socket lands behind every valid announcement in the
    // same socket's queue: once it has joined, all of them have been read. Sent again
    // should the flood have crowded it out.
    let marked_by = Instant::now() + Duration::from_secs(30);
    let joined = format!("has joined group {MARKER_GROUP}");
    for n in 0.. {
        let _ = sender.send_to(&signed(MARKER_GROUP, member_ip(n, 10), PSK), to);
        std::thread::sleep(Duration::from_millis(200));
        if listener.has_log(&joined) || Instant::now() > marked_by {
            break;
        }
    }
    let after = listener.snapshot();
    let cpu = after.since(&before, "flood").total;
    let measured = after.at.duration_since(before.at).as_secs_f64();
    let (_, log) = listener.stop();
    let accepted = log.iter().filter(|line| line.contains("has joined group 1000")).count() as u64;
    let (received, checked) = (total(&log, "received"), total(&log, "bad_signature"));
    let seconds = flood_elapsed.as_secs_f64();
    println!(
        "flood: {} thread(s) of forged announcements for {:.0} s, valid ones at {}/s",
        args.junk_threads.max(1),
        seconds,
        args.valid_rate
    );
    println!(
        "  forged sent {forged} ({:.0}/s; {refused} more refused by the kernel, not sent); the listener received {received}, rejected {checked} as bad_signature",
        forged as f64 / seconds
    );
    println!(
        "  valid sent {valid} ({:.0}/s), accepted {accepted}, lost {}",
        valid as f64 / valid_elapsed.as_secs_f64(),
        valid.saturating_sub(accepted)
    );
    println!(
        "  listener CPU {:.3} s = {:.3} µs per datagram received ({:.0}% of one core over the {:.1} s measured)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / received.max(1) as f64,
        cpu.as_secs_f64() * 100.0 / measured,
        measured
    );
    figure("forged_per_s", forged as f64 / seconds);
    figure("refused_sends", refused as f64);
    figure("valid_sent", valid as f64);
    figure("valid_accepted", accepted as f64);
    figure("cpu_per_datagram_us", cpu.as_secs_f64() * 1e6 / received.max(1) as f64);
}

/// Forged announcements (group 1000, fresh timestamps, a key the listener does not have),
/// unpaced from one socket until `until`; returns how many the kernel accepted and how many
/// it refused.
fn forge(thread: usize, to: SocketAddr, until: Instant) -> (u64, u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a sender");
    socket.connect(to).expect("connecting a sender");
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut forged = forged_batch(thread);
    let mut stamped = Instant::now();
    while Instant::now() < until {
        // Timestamps stay fresh (well within the group's clock_skew) for the whole flood.
        if stamped.elapsed() > Duration::from_secs(10) {
            forged = forged_batch(thread);
            stamped = Instant::now();
        }
        let batch = send_batch(&socket, &forged).expect("sending");
        sent += batch.sent as u64;
        failed += batch.failed as u64;
    }
    (sent, failed)
}

fn forged_batch(thread: usize) -> Vec<Vec<u8>> {
    let now = unix_micros(SystemTime::now());
    (0..64).map(|n| signed_at(1000, member_ip(thread * 64 + n, 11), OTHER_PSK, now)).collect()
}

/// Valid announcements of new members at `rate` until `until`; returns the socket they
/// went from, how many and how long it took.
fn send_valid(to: SocketAddr, rate: u64, until: Instant) -> (UdpSocket, u64, Duration) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding the sender");
    let started = Instant::now();
    let mut sent = 0u64;
    while Instant::now() < until {
        let due = started + Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let datagram = signed(1000, member_ip(sent as usize, 10), PSK);
        if socket.send_to(&datagram, to).is_ok() {
            sent += 1;
        }
    }
    let elapsed = started.elapsed();
    (socket, sent, elapsed)
}
