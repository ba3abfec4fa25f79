//! The three benchmark scenarios. Each builds its config, drives the real listener, and
//! prints one block of figures.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use rgap_core::protocol::{encode_signed, unix_micros, Announcement};
use rgap_core::psk::Psk;

use crate::blaster::blast;
use crate::listener::{count_lines, pin, total, BenchListener};

pub(crate) const PSK: &str = "8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431";
const OTHER_PSK: &str = "1111111111111111111111111111111111111111111111111111111111111111";

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Distinct valid announcements to send
    #[arg(long, default_value_t = 200_000)]
    count: usize,
    /// Valid announcements per second
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Junk datagrams per valid one (a third each: wrong length, unknown group, bad signature)
    #[arg(long, default_value_t = 0)]
    junk: usize,
    /// Times each member is announced: 1 = all joins; more adds refreshes (the steady state
    /// of a live fleet), each round stamped a little later than the one before
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Pin the listener to CPU 0 and the sender to CPU 1
    #[arg(long)]
    pin: bool,
    /// Output to load: hostsfile (the members are counted in its file) or noop
    #[arg(long, default_value = "hostsfile")]
    output: String,
}

#[derive(clap::Args)]
pub struct ScaleArgs {
    /// Live members in all
    #[arg(long, default_value_t = 100_000)]
    members: usize,
    /// Groups to spread them over
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Announcements per second while loading
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Changes (new members of one group) sent after loading, to measure CPU per change
    #[arg(long, default_value_t = 2_000)]
    changes: usize,
}

#[derive(clap::Args)]
pub struct PropagationArgs {
    /// Announcements to time
    #[arg(long, default_value_t = 200)]
    samples: usize,
}

pub(crate) fn port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn member_ip(index: usize, base: u8) -> Ipv4Addr {
    Ipv4Addr::new(base, (index >> 16) as u8, (index >> 8) as u8, index as u8)
}

fn signed(group: u64, ip: Ipv4Addr, psk: &str) -> Vec<u8> {
    signed_at(group, ip, psk, unix_micros(SystemTime::now()))
}

fn signed_at(group: u64, ip: Ipv4Addr, psk: &str, timestamp_unix_us: i64) -> Vec<u8> {
    let psk = Psk::from_hex(psk).unwrap();
    let announcement = Announcement { group, timestamp_unix_us, address: IpAddr::V4(ip) };
    encode_signed(&announcement, &psk).to_vec()
}

/// Junk of three kinds in turn: wrong length, unknown group, bad signature (the dearest:
/// it passes every cheap check and costs an HMAC).
fn junk(index: usize) -> Vec<u8> {
    match index % 3 {
        0 => vec![0x01; 1 + index % 120],
        1 => signed(4242, member_ip(index, 11), PSK),
        _ => signed(1000, member_ip(index, 12), OTHER_PSK),
    }
}

fn group_yaml(ids: impl Iterator<Item = u64>) -> String {
    ids.map(|id| format!("- id: {id}\n  psk: {PSK}\n  expire: 120s\n  clock_skew: 60s\n")).collect()
}

fn per(duration: Duration, count: u64) -> String {
    if count == 0 {
        return "n/a".into();
    }
    format!("{:.3} µs", duration.as_secs_f64() * 1e6 / count as f64)
}

/// Waits until `probe` stops changing for `quiet` (or reaches `target`), up to `limit`.
fn settle(
    mut probe: impl FnMut() -> usize,
    target: usize,
    quiet: Duration,
    limit: Duration,
) -> usize {
    let deadline = Instant::now() + limit;
    let mut last = probe();
    let mut stable_since = Instant::now();
    while Instant::now() < deadline && last < target {
        std::thread::sleep(Duration::from_millis(10));
        let now = probe();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > quiet {
            break;
        }
    }
    last
}

pub fn ingest(args: &IngestArgs) {
    let port = port();
    let outputs = match args.output.as_str() {
        "hostsfile" => "- kind: hostsfile\n  spec:\n    interval: 60s\n    filename: hosts\n    mappings:\n    - group: 1000\n      hostname: backend\n",
        _ => "- kind: noop\n",
    };
    let config = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n{}outputs:\n{outputs}",
        group_yaml([1000].into_iter())
    );
    let rounds = args.rounds.max(1);
    let mut datagrams = Vec::with_capacity(args.count * (args.junk + 1) * rounds);
    for round in 0..rounds {
        // Later rounds carry later timestamps, so each refresh really extends the expiry.
        let stamp = unix_micros(SystemTime::now()) + round as i64 * 1_000;
        for index in 0..args.count {
            datagrams.push(signed_at(1000, member_ip(index, 10), PSK, stamp));
            for j in 0..args.junk {
                datagrams.push(junk(index * args.junk + j));
            }
        }
    }
    let listener = BenchListener::start(&config);
    if args.pin {
        pin(listener.pid(), 0);
        pin(0, 1);
    }
    let hosts = listener.path("hosts");
    let cpu_before = listener.cpu_so_far();
    let rate = args.rate * (args.junk as u64 + 1);
    let report =
        blast(&datagrams, SocketAddr::from(([127, 0, 0, 1], port)), rate).expect("sending");
    let present = if args.output == "hostsfile" {
        settle(
            || count_lines(&hosts, " backend"),
            args.count,
            Duration::from_secs(2),
            Duration::from_secs(60),
        )
    } else {
        // No file to count: give the listener a moment to drain its socket.
        std::thread::sleep(Duration::from_millis(500));
        0
    };
    let cpu_during = listener.cpu_so_far().saturating_sub(cpu_before);
    let threads = listener.cpu_by_thread();
    let (usage, log) = listener.stop();
    let accepted = total(&log, "accepted");
    let received = total(&log, "received");
    let valid = (args.count * rounds) as u64;
    println!(
        "ingest: {} members x {rounds} round(s) = {valid} valid + {} junk datagrams at {} valid/s",
        args.count,
        valid as usize * args.junk,
        args.rate
    );
    println!(
        "  sent {} datagrams in {:.2} s ({:.0}/s, of which {:.0} valid/s)",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.sent as f64 / report.elapsed.as_secs_f64(),
        valid as f64 / report.elapsed.as_secs_f64()
    );
    println!(
        "  listener received {received}, accepted {accepted}; members in hosts file {present}"
    );
    println!("  lost valid announcements: {} of {valid}", valid - accepted.min(valid));
    println!(
        "  listener CPU while loaded (/proc): {:.3} s = {} per valid announcement, {} per datagram",
        cpu_during.as_secs_f64(),
        per(cpu_during, accepted),
        per(cpu_during, received)
    );
    println!(
        "  listener CPU whole run (wait4): {:.3} s = {} per valid announcement",
        usage.cpu.as_secs_f64(),
        per(usage.cpu, accepted)
    );
    let busy = threads.iter().filter(|thread| !thread.cpu.is_zero());
    let by_thread: Vec<String> = busy
        .map(|thread| {
            let name = thread.name.trim();
            format!("{name} {} ({} switches)", per(thread.cpu, accepted), thread.switches)
        })
        .collect();
    println!("  of which, per valid announcement, by thread: {}", by_thread.join(", "));
    println!("  peak RSS: {:.1} MiB", usage.peak_rss_kib as f64 / 1024.0);
}

pub fn scale(args: &ScaleArgs) {
    let port = port();
    let dns_port = port_for_dns();
    let groups = args.groups.max(1);
    let outputs = "- kind: log\n  spec:\n    interval: 1h\n";
    let config = hosts_and_dns_config(port, dns_port, groups as u64, "g", outputs);
    let datagrams: Vec<Vec<u8>> = (0..args.members)
        .map(|index| signed((index % groups) as u64 + 1, member_ip(index, 10), PSK))
        .collect();
    let listener = BenchListener::start(&config);
    let hosts = listener.path("hosts");
    let rss_empty = listener.rss_kib();
    let cpu_before = listener.cpu_so_far();
    let started = Instant::now();
    blast(&datagrams, SocketAddr::from(([127, 0, 0, 1], port)), args.rate).expect("sending");
    let present = settle(
        || count_lines(&hosts, "."),
        args.members,
        Duration::from_secs(5),
        Duration::from_secs(120),
    );
    let absorbed = started.elapsed();
    let cpu_load = listener.cpu_so_far().saturating_sub(cpu_before);
    let rss_full = listener.rss_kib();

    // Then changes to one group only: new members of group 1.
    let changes: Vec<Vec<u8>> =
        (0..args.changes).map(|index| signed(1, member_ip(index, 20), PSK)).collect();
    let cpu_before = listener.cpu_so_far();
    blast(&changes, SocketAddr::from(([127, 0, 0, 1], port)), 5_000).expect("sending");
    settle(
        || count_lines(&hosts, "."),
        args.members + args.changes,
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    let cpu_changes = listener.cpu_so_far().saturating_sub(cpu_before);
    let (usage, log) = listener.stop();
    println!("scale: {} members in {} group(s); outputs hostsfile, dns, log", args.members, groups);
    println!(
        "  absorbed {present} of {} in {:.2} s (sent at {}/s)",
        args.members,
        absorbed.as_secs_f64(),
        args.rate
    );
    println!(
        "  CPU to absorb: {:.3} s = {} per member",
        cpu_load.as_secs_f64(),
        per(cpu_load, args.members as u64)
    );
    println!(
        "  RSS: {:.1} MiB empty, {:.1} MiB full, peak {:.1} MiB",
        rss_empty as f64 / 1024.0,
        rss_full as f64 / 1024.0,
        usage.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "  {} later joins to group 1 at 5000/s: CPU {:.3} s = {} per change",
        args.changes,
        cpu_changes.as_secs_f64(),
        per(cpu_changes, args.changes as u64)
    );
    println!("  accepted {} in all", total(&log, "accepted"));
}

/// A listener on `port` with groups 1..=`groups`, each mapped in the hostsfile output (as
/// `<prefix><id>`) and the dns output on `dns_port` (as `<prefix><id>.bench.example`), then
/// `more_outputs` (YAML list items).
fn hosts_and_dns_config(
    port: u16,
    dns_port: u16,
    groups: u64,
    prefix: &str,
    more_outputs: &str,
) -> String {
    let ids = 1..=groups;
    let hosts_mappings: String = ids
        .clone()
        .map(|id| format!("    - group: {id}\n      hostname: {prefix}{id}\n"))
        .collect();
    let dns_mappings: String = ids
        .clone()
        .map(|id| format!("      {prefix}{id}.bench.example:\n        group: {id}\n"))
        .collect();
    format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n{}outputs:\n- kind: hostsfile\n  spec:\n    interval: 60s\n    filename: hosts\n    mappings:\n{hosts_mappings}- kind: dns\n  spec:\n    bind_address: 127.0.0.1:{dns_port}\n    mappings:\n{dns_mappings}{more_outputs}",
        group_yaml(ids)
    )
}

pub(crate) fn port_for_dns() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Asks the dns output for `name` (A) and says whether `ip` is among the answers.
fn dns_has(socket: &UdpSocket, name: &Name, ip: Ipv4Addr) -> bool {
    let mut query = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    query.add_query(Query::query(name.clone(), RecordType::A));
    let Ok(bytes) = query.to_vec() else { return false };
    if socket.send(&bytes).is_err() {
        return false;
    }
    let mut buffer = [0u8; 4096];
    let Ok(len) = socket.recv(&mut buffer) else { return false };
    let Ok(answer) = Message::from_vec(&buffer[..len]) else { return false };
    answer.answers.iter().any(|record| matches!(&record.data, RData::A(a) if a.0 == ip))
}

fn rand_id() -> u16 {
    (unix_micros(SystemTime::now()) & 0xffff) as u16
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub fn propagation(args: &PropagationArgs) {
    let port = port();
    let dns_port = port_for_dns();
    let samples = args.samples.max(1);
    let config = hosts_and_dns_config(port, dns_port, samples as u64, "s", "");
    let listener = BenchListener::start(&config);
    let hosts = listener.path("hosts");
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    resolver.connect(("127.0.0.1", dns_port)).unwrap();
    resolver.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (mut to_dns, mut to_hosts) = (Vec::new(), Vec::new());
    for sample in 0..samples {
        let group = sample as u64 + 1;
        let ip = member_ip(sample, 10);
        let name = Name::from_ascii(format!("s{group}.bench.example.")).unwrap();
        let line = format!("{ip} s{group}");
        let datagram = signed(group, ip, PSK);
        let sent = Instant::now();
        sender.send_to(&datagram, ("127.0.0.1", port)).unwrap();
        let (mut dns_at, mut hosts_at) = (None, None);
        while (dns_at.is_none() || hosts_at.is_none()) && sent.elapsed() < Duration::from_secs(5) {
            if dns_at.is_none() && dns_has(&resolver, &name, ip) {
                dns_at = Some(sent.elapsed());
            }
            if hosts_at.is_none()
                && std::fs::read_to_string(&hosts).is_ok_and(|t| t.contains(&line))
            {
                hosts_at = Some(sent.elapsed());
            }
        }
        to_dns.extend(dns_at);
        to_hosts.extend(hosts_at);
        std::thread::sleep(Duration::from_millis(5));
    }
    listener.stop();
    println!("propagation: {samples} announcements, each into its own group");
    for (what, mut times) in [("DNS answer", to_dns), ("hosts file", to_hosts)] {
        times.sort();
        if times.is_empty() {
            println!("  {what}: never seen");
            continue;
        }
        println!(
            "  {what}: seen {}/{samples}; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            times.len(),
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3
        );
    }
}
