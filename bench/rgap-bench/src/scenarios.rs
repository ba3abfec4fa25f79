//! The three benchmark scenarios. Each builds its config, drives the real listener, and
//! prints one block of figures.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use rgap_core::protocol::{encode_signed, unix_micros, Announcement};
use rgap_core::psk::Psk;

use crate::blaster::blast;
use crate::figures::figure;
use crate::listener::{count_lines, foreign_listener, pin, total, BenchListener};
use crate::scrape::{self, Scraper};

pub(crate) const PSK: &str = "8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431";
pub(crate) const OTHER_PSK: &str =
    "1111111111111111111111111111111111111111111111111111111111111111";

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
    /// Configure the monitoring endpoint and scrape /metrics every second meanwhile
    #[arg(long)]
    http_scrape: bool,
}

#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Groups
    #[arg(long, default_value_t = 1_000)]
    groups: usize,
    /// Live members in each group
    #[arg(long, default_value_t = 10)]
    members_per_group: usize,
    /// Scrapes to time
    #[arg(long, default_value_t = 200)]
    scrapes: usize,
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
    /// Changes (new members of one group) sent in a burst after loading, to measure CPU
    /// per change under a steady stream of changes
    #[arg(long, default_value_t = 2_000)]
    changes: usize,
    /// Changes per second in that burst (the pacing of the outputs merges changes that come
    /// faster than they publish, so the figure depends on it)
    #[arg(long, default_value_t = 5_000)]
    change_rate: u64,
    /// Then this many isolated changes, each sent alone to a quiet listener and measured
    /// until it is in the hosts file and the listener's CPU is quiet again
    #[arg(long, default_value_t = 5)]
    isolated: usize,
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

pub(crate) fn signed(group: u64, ip: Ipv4Addr, psk: &str) -> Vec<u8> {
    signed_at(group, ip, psk, unix_micros(SystemTime::now()))
}

pub(crate) fn signed_at(group: u64, ip: Ipv4Addr, psk: &str, timestamp_unix_us: i64) -> Vec<u8> {
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

pub(crate) fn group_yaml(ids: impl Iterator<Item = u64>) -> String {
    ids.map(|id| format!("- id: {id}\n  psk: {PSK}\n  expire: 120s\n  clock_skew: 60s\n")).collect()
}

pub(crate) fn per(duration: Duration, count: u64) -> String {
    if count == 0 {
        return "n/a".into();
    }
    format!("{:.3} µs", duration.as_secs_f64() * 1e6 / count as f64)
}

/// Waits until `probe` stops changing for `quiet` (or reaches `target`), up to `limit`.
pub(crate) fn settle(
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
    // Ours writes the hosts file on each change (the interval is only its periodic check);
    // the Go rgap writes it at each interval only.
    let foreign = foreign_listener().is_some();
    let hosts_interval = if foreign { "1s" } else { "60s" };
    let hostsfile = format!("- kind: hostsfile\n  spec:\n    interval: {hosts_interval}\n    filename: hosts\n    mappings:\n    - group: 1000\n      hostname: backend\n");
    let outputs = match args.output.as_str() {
        "hostsfile" => hostsfile.as_str(),
        _ => "- kind: noop\n",
    };
    let http_port = tcp_port();
    let http = if args.http_scrape {
        format!("http:\n  listen: 127.0.0.1:{http_port}\n")
    } else {
        String::new()
    };
    let config = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n{}outputs:\n{outputs}{http}",
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
    let scraper = args.http_scrape.then(|| {
        Scraper::start(SocketAddr::from(([127, 0, 0, 1], http_port)), Duration::from_secs(1))
    });
    let before = listener.snapshot();
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
        0
    };
    // The work is done when the listener's CPU stops growing (its socket drained, every
    // output caught up), not after a guessed pause.
    let after = listener.wait_until_quiet(QUIET, Duration::from_secs(30)).began;
    let phase = after.since(&before, "ingest");
    let scrapes = scraper.map(Scraper::stop);
    let (usage, log) = listener.stop();
    let valid = (args.count * rounds) as u64;
    let (accepted, received) = if foreign && args.output == "hostsfile" && rounds == 1 {
        // Another listener logs no totals: every member in its hosts file was accepted, and
        // it was offered what was sent.
        println!("  (another listener: accepted = members in its hosts file, received = sent)");
        (present as u64, report.sent as u64)
    } else {
        (total(&log, "accepted"), total(&log, "received"))
    };
    let cpu_during = phase.total;
    println!(
        "ingest: {} members x {rounds} round(s) = {valid} valid + {} junk datagrams at {} valid/s ({} datagrams/s offered)",
        args.count,
        valid as usize * args.junk,
        args.rate,
        rate
    );
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "  sent {} datagrams in {:.2} s ({:.0}/s, of which {:.0} valid/s); refused by the kernel (ENOBUFS), not sent: {}",
        report.sent,
        seconds,
        report.sent as f64 / seconds,
        valid as f64 / seconds,
        report.failed
    );
    println!(
        "  listener received {received}, accepted {accepted}; members in hosts file {present}"
    );
    let lost = valid - accepted.min(valid);
    println!("  lost valid announcements: {lost} of {valid}");
    println!(
        "  listener CPU while loaded (/proc, until its CPU stopped growing): {:.3} s = {} per valid announcement, {} per datagram",
        cpu_during.as_secs_f64(),
        per(cpu_during, accepted),
        per(cpu_during, received)
    );
    println!(
        "  listener CPU whole run (wait4): {:.3} s = {} per valid announcement",
        usage.cpu.as_secs_f64(),
        per(usage.cpu, accepted)
    );
    let busy: Vec<_> = phase.threads.iter().filter(|thread| !thread.cpu.is_zero()).collect();
    let by_thread: Vec<String> = busy
        .iter()
        .map(|thread| {
            let name = thread.name.trim();
            format!("{name} {} ({} switches)", per(thread.cpu, accepted), thread.switches)
        })
        .collect();
    println!(
        "  of which, per valid announcement, by thread (while loaded): {}",
        by_thread.join(", ")
    );
    println!("  peak RSS: {:.1} MiB", usage.peak_rss_kib as f64 / 1024.0);
    figure("cpu_per_valid_us", micros_per(cpu_during, accepted));
    figure("cpu_per_datagram_us", micros_per(cpu_during, received));
    figure("lost_valid", lost as f64);
    figure("refused_sends", report.failed as f64);
    figure("sent_per_s", report.sent as f64 / seconds);
    figure("peak_rss_mib", usage.peak_rss_kib as f64 / 1024.0);
    for thread in busy {
        figure(&format!("thread {}_us", thread.name.trim()), micros_per(thread.cpu, accepted));
    }
    if let Some(mut scrapes) = scrapes {
        scrapes.sort();
        let max = scrapes.last().copied().unwrap_or_default();
        println!(
            "  /metrics scraped {} time(s) meanwhile, the slowest in {:.2} ms",
            scrapes.len(),
            max.as_secs_f64() * 1e3
        );
    }
}

/// How long the listener's CPU must stay flat for its work to count as done.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

/// Microseconds of `duration` per one of `count` (NaN for none, which no table hides).
pub(crate) fn micros_per(duration: Duration, count: u64) -> f64 {
    if count == 0 {
        return f64::NAN;
    }
    duration.as_secs_f64() * 1e6 / count as f64
}

pub fn metrics(args: &MetricsArgs) {
    let (port, http_port) = (port(), tcp_port());
    let groups = args.groups.max(1) as u64;
    let config = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n{}outputs:\n- kind: noop\nhttp:\n  listen: 127.0.0.1:{http_port}\n",
        group_yaml(1..=groups)
    );
    let members = groups as usize * args.members_per_group;
    let datagrams: Vec<Vec<u8>> = (0..members)
        .map(|index| signed((index % groups as usize) as u64 + 1, member_ip(index, 10), PSK))
        .collect();
    let listener = BenchListener::start(&config);
    let addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    blast(&datagrams, SocketAddr::from(([127, 0, 0, 1], port)), 50_000).expect("sending");
    let wanted =
        format!("rgap_member_joins_total{{group=\"{groups}\"}} {}", args.members_per_group);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !metrics_text(addr).contains(&wanted) {
        assert!(Instant::now() < deadline, "members did not all join: no {wanted:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut times = Vec::with_capacity(args.scrapes);
    let mut bytes = 0;
    for _ in 0..args.scrapes.max(1) {
        let scrape = scrape::get(addr, "/metrics").expect("scraping");
        times.push(scrape.took);
        bytes = scrape.bytes;
        std::thread::sleep(Duration::from_millis(5));
    }
    listener.stop();
    times.sort();
    println!(
        "metrics: {groups} groups x {} members; {} scrapes of {bytes} bytes on a new connection each",
        args.members_per_group,
        times.len()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p99, max) =
        (ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)), ms(*times.last().unwrap()));
    println!("  p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    figure("p50_ms", p50);
    figure("p99_ms", p99);
    figure("max_ms", max);
    figure("reply_bytes", bytes as f64);
}

/// The body of one GET /metrics (empty if it failed).
fn metrics_text(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return String::new() };
    let _ = write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

fn tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let rss_empty = listener.rss_kib();
    let before = listener.snapshot();
    let started = Instant::now();
    let loaded = blast(&datagrams, to, args.rate).expect("sending");
    let present = settle(
        || count_lines(&hosts, "."),
        args.members,
        Duration::from_secs(5),
        Duration::from_secs(120),
    );
    let absorbed = started.elapsed();
    let cpu_load =
        listener.wait_until_quiet(QUIET, Duration::from_secs(30)).began.since(&before, "load");
    let rss_full = listener.rss_kib();

    // Then a burst of changes to one group only: new members of group 1, at change_rate.
    let changes: Vec<Vec<u8>> =
        (0..args.changes).map(|index| signed(1, member_ip(index, 20), PSK)).collect();
    let before = listener.snapshot();
    let burst = blast(&changes, to, args.change_rate.max(1)).expect("sending");
    settle(
        || count_lines(&hosts, "."),
        args.members + args.changes,
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    let cpu_changes =
        listener.wait_until_quiet(QUIET, Duration::from_secs(30)).began.since(&before, "burst");

    // Then isolated changes: one new member of group 1 at a time, into a quiet listener,
    // measured until it is in the hosts file and the CPU is quiet again, idle subtracted.
    let idle_before = listener.snapshot();
    std::thread::sleep(Duration::from_secs(1));
    let idle_after = listener.snapshot();
    let idle_per_second = idle_after.since(&idle_before, "idle").total.as_secs_f64()
        / idle_after.at.duration_since(idle_before.at).as_secs_f64();
    let sender = UdpSocket::bind("127.0.0.1:0").expect("binding the sender");
    let mut isolated: Vec<Duration> = Vec::with_capacity(args.isolated);
    let mut published_after: Vec<Duration> = Vec::with_capacity(args.isolated);
    for sample in 0..args.isolated {
        let ip = member_ip(sample, 21);
        let line = format!("{ip} g1");
        let before = listener.wait_until_quiet(QUIET, Duration::from_secs(30)).ended;
        let sent = Instant::now();
        sender.send_to(&signed(1, ip, PSK), to).expect("sending");
        let deadline = sent + Duration::from_secs(30);
        while !std::fs::read_to_string(&hosts).is_ok_and(|text| text.contains(&line)) {
            if Instant::now() > deadline {
                eprintln!("rgap-bench: isolated change {ip} never reached the hosts file");
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        published_after.push(sent.elapsed());
        let after = listener.wait_until_quiet(QUIET, Duration::from_secs(30)).began;
        let spent = after.since(&before, "isolated change").total.as_secs_f64()
            - idle_per_second * after.at.duration_since(before.at).as_secs_f64();
        isolated.push(Duration::from_secs_f64(spent.max(0.0)));
    }
    let (usage, log) = listener.stop();
    let accepted = total(&log, "accepted");
    println!("scale: {} members in {} group(s); outputs hostsfile, dns, log", args.members, groups);
    println!(
        "  absorbed {present} of {} in {:.2} s (sent at {}/s; refused by the kernel, not sent: {})",
        args.members,
        absorbed.as_secs_f64(),
        args.rate,
        loaded.failed
    );
    println!(
        "  CPU to absorb (until the CPU stopped growing): {:.3} s = {} per member",
        cpu_load.total.as_secs_f64(),
        per(cpu_load.total, args.members as u64)
    );
    println!(
        "  RSS: {:.1} MiB empty, {:.1} MiB full, peak {:.1} MiB",
        rss_empty as f64 / 1024.0,
        rss_full as f64 / 1024.0,
        usage.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "  burst: {} later joins to group 1 at {}/s ({} refused, not sent): CPU {:.3} s = {} per change",
        args.changes,
        args.change_rate.max(1),
        burst.failed,
        cpu_changes.total.as_secs_f64(),
        per(cpu_changes.total, burst.sent as u64)
    );
    isolated.sort();
    published_after.sort();
    if let (Some(low), Some(high)) = (isolated.first(), isolated.last()) {
        println!(
            "  isolated: {} single joins to group 1, each alone: CPU {} – {}, median {} per change (idle {:.2} ms/s subtracted); in the hosts file after {:.1} – {:.1} ms",
            isolated.len(),
            per(*low, 1),
            per(*high, 1),
            per(isolated[isolated.len() / 2], 1),
            idle_per_second * 1e3,
            published_after[0].as_secs_f64() * 1e3,
            published_after[published_after.len() - 1].as_secs_f64() * 1e3
        );
        figure("isolated_cpu_per_change_us", micros_per(isolated[isolated.len() / 2], 1));
    }
    println!("  accepted {accepted} in all");
    figure("members", args.members as f64);
    figure("groups", groups as f64);
    figure("absorbed_s", absorbed.as_secs_f64());
    figure("cpu_per_member_us", micros_per(cpu_load.total, args.members as u64));
    figure("rss_full_mib", rss_full as f64 / 1024.0);
    figure("peak_rss_mib", usage.peak_rss_kib as f64 / 1024.0);
    figure("burst_cpu_per_change_us", micros_per(cpu_changes.total, burst.sent as u64));
    figure("change_rate_per_s", args.change_rate.max(1) as f64);
}

/// A listener on `port` with groups 1..=`groups`, each mapped in the hostsfile output (as
/// `<prefix><id>`) and the dns output on `dns_port` (as `<prefix><id>.bench.example`), then
/// `more_outputs` (YAML list items).
pub(crate) fn hosts_and_dns_config(
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

/// Asks the dns output (the server `socket` is connected to) for the A records of `name`
/// with query `id`; the reply, if one came and parsed.
pub(crate) fn ask_a(socket: &UdpSocket, name: &Name, id: u16) -> Option<Message> {
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(name.clone(), RecordType::A));
    socket.send(&query.to_vec().ok()?).ok()?;
    let mut buffer = [0u8; 4096];
    let len = socket.recv(&mut buffer).ok()?;
    Message::from_vec(&buffer[..len]).ok()
}

/// Asks the dns output for `name` (A) and says whether `ip` is among the answers.
fn dns_has(socket: &UdpSocket, name: &Name, ip: Ipv4Addr) -> bool {
    ask_a(socket, name, rand_id()).is_some_and(|answer| {
        answer.answers.iter().any(|record| matches!(&record.data, RData::A(a) if a.0 == ip))
    })
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
    for (what, key, mut times) in [("DNS answer", "dns", to_dns), ("hosts file", "hosts", to_hosts)]
    {
        times.sort();
        figure(&format!("{key}_seen"), times.len() as f64);
        if times.is_empty() {
            println!("  {what}: never seen");
            continue;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (p50, p99) = (ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)));
        let max = ms(*times.last().unwrap());
        println!(
            "  {what}: seen {}/{samples}; p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
            times.len()
        );
        figure(&format!("{key}_p50_ms"), p50);
        figure(&format!("{key}_p99_ms"), p99);
        figure(&format!("{key}_max_ms"), max);
    }
}
