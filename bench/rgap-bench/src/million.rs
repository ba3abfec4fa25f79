//! The `million` scenario: a million live members, in one group or spread over many, with
//! the hostsfile, dns and log outputs loaded. Reports the time and CPU to take them in, the
//! resident memory, and what one later join or leave of one member costs the listener (all
//! threads, outputs included), one change at a time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use rgap_core::protocol::{encode_signed_leave, unix_micros, Announcement};
use rgap_core::psk::Psk;

use crate::blaster::blast;
use crate::figures::figure;
use crate::listener::{count_lines, total, BenchListener};
use crate::scenarios::{
    hosts_and_dns_config, member_ip, micros_per, per, port, port_for_dns, signed, PSK, QUIET,
};

#[derive(clap::Args)]
pub struct MillionArgs {
    /// Live members in all
    #[arg(long, default_value_t = 1_000_000)]
    members: usize,
    /// Groups to spread them over (member n goes to group n % groups + 1)
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Announcements per second while loading
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Later joins, then as many leaves, each timed alone
    #[arg(long, default_value_t = 10)]
    samples: usize,
}

pub fn million(args: &MillionArgs) {
    let (port, dns_port) = (port(), port_for_dns());
    let groups = args.groups.max(1);
    let outputs = "- kind: log\n  spec:\n    interval: 1h\n";
    // Members must outlive the whole run, however slow the machine.
    let config = hosts_and_dns_config(port, dns_port, groups as u64, "g", outputs)
        .replace("expire: 120s", "expire: 1h");
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let datagrams: Vec<Vec<u8>> = (0..args.members)
        .map(|index| signed((index % groups) as u64 + 1, member_ip(index, 10), PSK))
        .collect();
    let listener = BenchListener::start(&config);
    let hosts = listener.path("hosts");
    let rss_empty = listener.rss_kib();
    let before = listener.snapshot();
    let started = Instant::now();
    let loaded = blast(&datagrams, to, args.rate).expect("sending");
    drop(datagrams);
    let present = wait_for_lines(&hosts, args.members, Duration::from_secs(300));
    let absorbed = started.elapsed();
    let cpu_load = listener.snapshot().since(&before, "load").total;
    std::thread::sleep(Duration::from_secs(2));
    let rss_full = listener.rss_kib();

    // What the listener spends doing nothing (timers, the hosts file's periodic check).
    let idle_started = (Instant::now(), listener.cpu_so_far());
    std::thread::sleep(Duration::from_secs(2));
    let idle_per_second = listener.cpu_so_far().saturating_sub(idle_started.1).as_secs_f64()
        / idle_started.0.elapsed().as_secs_f64();

    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding the sender");
    let psk = Psk::from_hex(PSK).unwrap();
    // Each change is measured from a quiet listener until, after the hosts file shows it,
    // the listener's CPU is quiet again (the dns and log outputs work beside the hosts file,
    // not after it).
    let timed = |datagram: &[u8]| {
        let before = listener.wait_until_quiet(QUIET, Duration::from_secs(30)).ended;
        let old_inode = inode(&hosts);
        sender.send_to(datagram, to).expect("sending");
        let seen = wait_for_new_file(&hosts, old_inode, Duration::from_secs(30));
        let after = listener.wait_until_quiet(QUIET, Duration::from_secs(30)).began;
        let spent = after.since(&before, "one change").total.as_secs_f64();
        let cpu = spent - idle_per_second * after.at.duration_since(before.at).as_secs_f64();
        (Duration::from_secs_f64(cpu.max(0.0)), seen)
    };
    let threads_before = listener.cpu_by_thread();
    let joins: Vec<_> =
        (0..args.samples).map(|sample| timed(&signed(1, member_ip(sample, 20), PSK))).collect();
    // Members of group 1 that joined while loading: indices 0, groups, 2 × groups, ...
    let leaves: Vec<_> = (0..args.samples)
        .map(|sample| {
            let address = IpAddr::V4(member_ip(sample * groups, 10));
            let fields = Announcement {
                group: 1,
                timestamp_unix_us: unix_micros(SystemTime::now()),
                address,
            };
            timed(&encode_signed_leave(&fields, &psk))
        })
        .collect();
    let changes = (2 * args.samples).max(1) as u64;
    let by_thread: Vec<String> = listener
        .cpu_by_thread()
        .iter()
        .filter_map(|thread| {
            let before = threads_before.iter().find(|b| b.name == thread.name)?;
            let spent = thread.cpu.saturating_sub(before.cpu);
            (spent.as_micros() >= 10)
                .then(|| format!("{} {}", thread.name.trim(), per(spent, changes)))
        })
        .collect();
    let after = count_lines(&hosts, ".");
    let (usage, log) = listener.stop();

    println!("million: {} members in {groups} group(s); outputs hostsfile, dns, log", args.members);
    println!(
        "  absorbed {present} of {} in {:.2} s (sent at {}/s, {} refused by the kernel, not sent); CPU {:.3} s = {} per member",
        args.members,
        absorbed.as_secs_f64(),
        args.rate,
        loaded.failed,
        cpu_load.as_secs_f64(),
        per(cpu_load, args.members as u64)
    );
    println!(
        "  RSS: {:.1} MiB empty, {:.1} MiB full, peak {:.1} MiB",
        rss_empty as f64 / 1024.0,
        rss_full as f64 / 1024.0,
        usage.peak_rss_kib as f64 / 1024.0
    );
    println!("  idle: {:.2} ms CPU per second", idle_per_second * 1e3);
    for (what, samples) in [("join", &joins), ("leave", &leaves)] {
        println!("  one {what} to group 1: {}", describe(samples));
        let mut cpu: Vec<Duration> = samples.iter().map(|(cpu, _)| *cpu).collect();
        cpu.sort();
        if let Some(median) = cpu.get(cpu.len() / 2) {
            figure(&format!("{what}_cpu_ms"), median.as_secs_f64() * 1e3);
        }
    }
    println!("  per change, by thread (idle included): {}", by_thread.join(", "));
    println!(
        "  hosts file after: {after} lines (expected {}); accepted {} in all",
        args.members,
        total(&log, "accepted")
    );
    figure("members", args.members as f64);
    figure("groups", groups as f64);
    figure("absorbed_s", absorbed.as_secs_f64());
    figure("cpu_per_member_us", micros_per(cpu_load, args.members as u64));
    figure("rss_full_mib", rss_full as f64 / 1024.0);
    figure("peak_rss_mib", usage.peak_rss_kib as f64 / 1024.0);
    figure("rss_empty_mib", rss_empty as f64 / 1024.0);
}

/// `CPU min–max, median; hosts file updated after min–max` over the samples.
fn describe(samples: &[(Duration, Option<Duration>)]) -> String {
    let mut cpu: Vec<Duration> = samples.iter().map(|(cpu, _)| *cpu).collect();
    let mut seen: Vec<Duration> = samples.iter().filter_map(|(_, seen)| *seen).collect();
    cpu.sort();
    seen.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let (Some(low), Some(high)) = (cpu.first(), cpu.last()) else { return "no samples".into() };
    let mut text =
        format!("CPU {:.2}–{:.2} ms, median {:.2} ms", ms(low), ms(high), ms(&cpu[cpu.len() / 2]));
    match (seen.first(), seen.last()) {
        (Some(first), Some(last)) => {
            text += &format!(
                "; hosts file rewritten after {:.1}–{:.1} ms ({} of {})",
                ms(first),
                ms(last),
                seen.len(),
                samples.len()
            )
        }
        _ => text += "; the hosts file never changed",
    }
    text
}

/// The inode of `path` (0 if absent): the hosts file is replaced by a rename on each write.
fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.ino())
}

/// Waits until `path` is another file than `old` (a rewrite), up to `limit`; how long it took.
fn wait_for_new_file(path: &Path, old: u64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if inode(path) != old {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

/// Waits until the hosts file has `wanted` member lines or stops growing for 10 s; counts
/// only after a rewrite (reading a million lines is not free), returns the last count.
fn wait_for_lines(path: &Path, wanted: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let (mut last, mut last_inode, mut grew_at) = (0, 0, Instant::now());
    while Instant::now() < deadline && last < wanted && grew_at.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
        let now_inode = inode(path);
        if now_inode != last_inode {
            last_inode = now_inode;
            let count = count_lines(path, ".");
            if count != last {
                last = count;
                grew_at = Instant::now();
            }
        }
    }
    last
}
