//! `soak`: churn for a long time and watch the listener's memory, as an operator would.
//!
//! A sender thread announces addresses cycling through an address space at a steady rate,
//! each stamped when sent, so with `expire` E and rate R about `min(R·E, space)` members are
//! live and, once the space wraps, R join and R leave every second. The main thread samples
//! the listener's RSS, CPU and live members, prints them per minute (and per 10 s for short
//! runs), and writes a CSV and a PNG plot ([`crate::plot`]). Everything stops at `duration`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Name;
use rgap_core::duration::GoDuration;
use rgap_core::protocol::{encode_signed, unix_micros, Announcement};
use rgap_core::psk::Psk;

use crate::blaster::send_batch;
use crate::figures::figure;
use crate::listener::{count_lines, total, BenchListener};
use crate::plot::{plot, Sample};
use crate::scenarios::{member_ip, port, port_for_dns, PSK};

const GROUP: u64 = 1000;
const BATCH: usize = 64;
/// Runs up to this long are also reported every 10 s.
const SHORT_RUN: Duration = Duration::from_secs(15 * 60);

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Announcements per second
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Distinct addresses the announcements cycle through
    #[arg(long, default_value_t = 200_000)]
    addresses: usize,
    /// The group's expire (a Go duration)
    #[arg(long, default_value = "3s")]
    expire: GoDuration,
    /// Outputs to load, comma-separated: any of hostsfile, dns, log, noop
    #[arg(long, default_value = "hostsfile,dns,log", value_delimiter = ',')]
    outputs: Vec<String>,
    /// The log output's interval
    #[arg(long, default_value = "30s")]
    log_interval: GoDuration,
    /// How long to churn (a Go duration)
    #[arg(long, default_value = "10m")]
    duration: GoDuration,
    /// Time between samples (a Go duration)
    #[arg(long, default_value = "2s")]
    sample: GoDuration,
    /// The PNG plot to write; a CSV of the samples is written beside it
    #[arg(long, default_value = "soak.png")]
    plot: PathBuf,
}

/// Where the live member count comes from, best first.
#[derive(Clone, Copy, PartialEq)]
enum LiveSource {
    HostsFile,
    LogDump,
    /// The sender's count of addresses announced within the last `expire`.
    Sent,
}

impl LiveSource {
    fn describe(self) -> &'static str {
        match self {
            LiveSource::HostsFile => "lines of the hosts file",
            LiveSource::LogDump => "the log output's latest dump",
            LiveSource::Sent => "addresses sent within the last expire (no output to count them)",
        }
    }
}

fn config(args: &SoakArgs, port: u16, dns_port: u16) -> Result<String, String> {
    let mut outputs = String::new();
    for output in &args.outputs {
        outputs += &match output.as_str() {
            "hostsfile" => "- kind: hostsfile\n  spec:\n    interval: 60s\n    filename: hosts\n    mappings:\n    - group: 1000\n      hostname: backend\n".to_owned(),
            "dns" => format!("- kind: dns\n  spec:\n    bind_address: 127.0.0.1:{dns_port}\n    mappings:\n      backend.bench.example:\n        group: 1000\n"),
            "log" => format!("- kind: log\n  spec:\n    interval: {}\n", args.log_interval),
            "noop" => "- kind: noop\n".to_owned(),
            other => return Err(format!("--outputs: unknown output {other:?}: use hostsfile, dns, log or noop")),
        };
    }
    if outputs.is_empty() {
        return Err("--outputs: name at least one output".into());
    }
    Ok(format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: {GROUP}\n  psk: {PSK}\n  expire: {}\noutputs:\n{outputs}",
        args.expire
    ))
}

/// Keeps the listener's log lines the soak reads, not the log output's one line per member
/// (a dump of 60 000 members every 30 s would otherwise pile up in the benchmark).
fn keep_line(line: &str) -> bool {
    !line.contains(": member ")
}

/// The member count of the last `group N: READY, M member(s)` line, if any.
fn last_dump_count(listener: &BenchListener) -> Option<usize> {
    let line = listener.last_log_line(&format!("group {GROUP}: "))?;
    let (_, after) = line.rsplit_once(", ")?;
    after.split_whitespace().next()?.parse().ok()
}

/// A sender this far behind its schedule (starved of CPU) does not catch up in a burst: it
/// skips what it missed, so that the churn stays at `rate` over any window and about
/// `rate × expire` members are live, as on a real network. (Catching up sent 100 000
/// announcements in a second after a stall, and the listener rightly kept twice the members.)
const MAX_LAG: Duration = Duration::from_millis(20);

/// What the sender did.
#[derive(Default)]
struct Sent {
    /// Announcements the kernel accepted.
    sent: AtomicU64,
    /// Announcements the kernel refused (`ENOBUFS`): tried, never sent.
    failed: AtomicU64,
    /// Announcements not sent because the sender fell behind by more than `MAX_LAG`.
    skipped: AtomicU64,
}

/// Sends announcements until `stop_at`: `rate` per second in batches, address index
/// cycling through `addresses`, each batch stamped when sent.
fn churn(to: SocketAddr, rate: u64, addresses: usize, stop_at: Instant, sent: &Sent) {
    assert!(to.ip().is_loopback(), "benchmarks send to loopback only");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("sender socket");
    socket.connect(to).expect("connecting the sender");
    let psk = Psk::from_hex(PSK).expect("bench key");
    let rate = rate.max(1) as f64;
    let mut origin = Instant::now();
    let (mut scheduled, mut index, mut skipped) = (0u64, 0u64, 0u64);
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    loop {
        let mut due = origin + Duration::from_secs_f64(scheduled as f64 / rate);
        let now = Instant::now();
        if now >= stop_at || due >= stop_at {
            return;
        }
        if now > due + MAX_LAG {
            skipped += ((now - due).as_secs_f64() * rate) as u64;
            sent.skipped.store(skipped, Ordering::Relaxed);
            (origin, scheduled, due) = (now, 0, now);
        }
        if due > now {
            std::thread::sleep(due - now);
        }
        let timestamp_unix_us = unix_micros(SystemTime::now());
        batch.clear();
        for offset in 0..BATCH as u64 {
            let address = member_ip(((index + offset) % addresses as u64) as usize, 10);
            let announcement =
                Announcement { group: GROUP, timestamp_unix_us, address: IpAddr::V4(address) };
            batch.push(encode_signed(&announcement, &psk).to_vec());
        }
        let done = send_batch(&socket, &batch).expect("sending announcements");
        let tried = (done.sent + done.failed) as u64;
        (index, scheduled) = (index + tried, scheduled + tried);
        sent.sent.fetch_add(done.sent as u64, Ordering::Relaxed);
        sent.failed.fetch_add(done.failed as u64, Ordering::Relaxed);
    }
}

/// Asks the dns output for the mapped name; true if it answered NOERROR (a large answer
/// comes back truncated, which is still an answer).
fn dns_answers(socket: &UdpSocket, name: &Name, id: u16) -> bool {
    crate::scenarios::ask_a(socket, name, id).is_some_and(|answer| {
        answer.metadata.response_code == ResponseCode::NoError && answer.metadata.id == id
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn clock(at: Duration) -> String {
    let secs = at.as_secs();
    format!("{:3}:{:02}", secs / 60, secs % 60)
}

/// The sample nearest to `at`.
fn sample_at(samples: &[Sample], at: Duration) -> Option<&Sample> {
    samples.iter().min_by_key(|sample| sample.at.abs_diff(at))
}

pub fn soak(args: &SoakArgs) {
    let port = port();
    let dns_port = port_for_dns();
    let config = config(args, port, dns_port).unwrap_or_else(|error| {
        eprintln!("rgap-bench soak: {error}");
        std::process::exit(2);
    });
    let duration = args.duration.get();
    let step = args.sample.get().max(Duration::from_millis(100));
    let has = |kind: &str| args.outputs.iter().any(|output| output == kind);
    let source = if has("hostsfile") {
        LiveSource::HostsFile
    } else if has("log") {
        LiveSource::LogDump
    } else {
        LiveSource::Sent
    };
    let expire = args.expire.get();
    let expected_live = ((args.rate as f64 * expire.as_secs_f64()) as usize).min(args.addresses);
    println!(
        "soak: {} announcements/s cycling through {} addresses, expire {}, outputs {}, for {}",
        args.rate,
        args.addresses,
        args.expire,
        args.outputs.join("+"),
        args.duration
    );
    println!(
        "  about {expected_live} members live; live members counted from {}",
        source.describe()
    );

    let listener = BenchListener::start_filtered(&config, keep_line);
    let hosts = listener.path("hosts");
    let started = Instant::now();
    let stop_at = started + duration;
    let sent = Arc::new(Sent::default());
    let sender = {
        let sent = sent.clone();
        let (rate, addresses) = (args.rate, args.addresses.max(1));
        std::thread::spawn(move || {
            churn(SocketAddr::from(([127, 0, 0, 1], port)), rate, addresses, stop_at, &sent)
        })
    };
    let resolver = UdpSocket::bind("127.0.0.1:0").expect("resolver socket");
    resolver.connect(("127.0.0.1", dns_port)).expect("resolver connect");
    resolver.set_read_timeout(Some(Duration::from_millis(500))).expect("resolver timeout");
    let dns_name = Name::from_ascii("backend.bench.example.").expect("name");
    let (mut dns_asked, mut dns_answered) = (0u64, 0u64);

    let report_every =
        if duration <= SHORT_RUN { Duration::from_secs(10) } else { Duration::from_secs(60) };
    println!("  {:>6}  {:>9}  {:>11}  {:>8}", "time", "RSS MiB", "CPU % core", "live");
    let mut samples: Vec<Sample> = Vec::new();
    let mut csv = Csv::create(args.plot.with_extension("csv"));
    let mut last_report = (Duration::ZERO, listener.cpu_so_far());
    let mut next = started;
    let mut last = false;
    while !last {
        next += step;
        let now = Instant::now();
        if next >= stop_at {
            last = true;
            next = stop_at;
        }
        if next > now {
            std::thread::sleep(next - now);
        }
        let at = started.elapsed();
        let live = match source {
            LiveSource::HostsFile => count_lines(&hosts, " backend"),
            LiveSource::LogDump => last_dump_count(&listener).unwrap_or(0),
            LiveSource::Sent => {
                let count = sent.sent.load(Ordering::Relaxed) as f64;
                let window = (args.rate as f64 * expire.as_secs_f64()).min(count);
                (window as usize).min(args.addresses)
            }
        };
        if has("dns") {
            dns_asked += 1;
            dns_answered += u64::from(dns_answers(&resolver, &dns_name, dns_asked as u16));
        }
        let cpu = listener.cpu_so_far();
        let sample = Sample { at, rss_kib: listener.rss_kib(), cpu, live };
        if at >= last_report.0 + report_every || last {
            let used = cpu.saturating_sub(last_report.1).as_secs_f64();
            let span = (at - last_report.0).as_secs_f64().max(1e-9);
            println!(
                "  {:>6}  {:>9.1}  {:>11.1}  {:>8}",
                clock(at),
                mib(sample.rss_kib),
                100.0 * used / span,
                live
            );
            std::io::stdout().flush().ok();
            last_report = (at, cpu);
        }
        csv.sample(&sample);
        samples.push(sample);
    }
    sender.join().expect("sender thread");
    let (usage, log) = listener.stop();

    let csv = csv.path;
    let title = format!(
        "rgap soak: {}/s over {} addresses, expire {}, outputs {}",
        args.rate,
        args.addresses,
        args.expire,
        args.outputs.join("+")
    );
    match plot(&args.plot, &title, &samples) {
        Ok(with_text) => println!(
            "  plot: {}{}; samples: {}",
            args.plot.display(),
            if with_text { "" } else { " (no TrueType font found: drawn without text)" },
            csv.display()
        ),
        Err(error) => eprintln!("rgap-bench soak: plotting {}: {error}", args.plot.display()),
    }
    summary(&samples, duration, usage.peak_rss_kib, usage.cpu, &log, &sent);
    if has("dns") {
        println!("  dns answered {dns_answered} of {dns_asked} probes during the run");
    }
}

/// The median RSS of the samples in the minute up to `at`.
fn minute_median(samples: &[Sample], at: Duration) -> u64 {
    let from = at.saturating_sub(Duration::from_secs(60));
    let mut rss: Vec<u64> =
        samples.iter().filter(|s| s.at >= from && s.at <= at).map(|s| s.rss_kib).collect();
    rss.sort_unstable();
    rss.get(rss.len() / 2).copied().unwrap_or(0)
}

/// The CSV of samples, written as they come (a long run can be looked at while it goes).
struct Csv {
    path: PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
}

impl Csv {
    fn create(path: PathBuf) -> Csv {
        let out = std::fs::File::create(&path).map(std::io::BufWriter::new);
        let mut csv = match out {
            Ok(out) => Csv { path, out: Some(out) },
            Err(error) => {
                eprintln!("rgap-bench soak: cannot write {}: {error}", path.display());
                Csv { path, out: None }
            }
        };
        csv.line(format_args!("seconds,rss_kib,cpu_seconds,live_members"));
        csv
    }

    fn sample(&mut self, sample: &Sample) {
        self.line(format_args!(
            "{:.1},{},{:.3},{}",
            sample.at.as_secs_f64(),
            sample.rss_kib,
            sample.cpu.as_secs_f64(),
            sample.live
        ));
    }

    fn line(&mut self, line: std::fmt::Arguments<'_>) {
        let Some(out) = self.out.as_mut() else { return };
        if let Err(error) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            eprintln!("rgap-bench soak: writing {}: {error}", self.path.display());
            self.out = None;
        }
    }
}

fn summary(
    samples: &[Sample],
    duration: Duration,
    peak_kib: u64,
    cpu: Duration,
    log: &[String],
    sent: &Sent,
) {
    let accepted = total(log, "accepted");
    let (skipped, failed) =
        (sent.skipped.load(Ordering::Relaxed), sent.failed.load(Ordering::Relaxed));
    let sent = sent.sent.load(Ordering::Relaxed);
    let max_live = samples.iter().map(|sample| sample.live).max().unwrap_or(0);
    println!(
        "  sender skipped {skipped} announcements while it was starved of CPU; most live members seen {max_live}"
    );
    println!(
        "  sent {sent} (and {failed} refused by the kernel, not sent), listener accepted {accepted}; CPU {:.1} s in all ({:.2} µs per announcement)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / accepted.max(1) as f64
    );
    let mut marks = String::new();
    for minutes in [1u64, 5, 10, 20, 30, 60] {
        let at = Duration::from_secs(minutes * 60);
        if at <= duration {
            if let Some(sample) = sample_at(samples, at) {
                marks += &format!(" {minutes} min {:.1};", mib(sample.rss_kib));
            }
        }
    }
    let last = samples.last();
    if let Some(last) = last {
        marks += &format!(" end ({}) {:.1}", clock(last.at).trim(), mib(last.rss_kib));
    }
    println!("  RSS MiB:{marks}; peak {:.1}", mib(peak_kib));
    figure("peak_rss_mib", mib(peak_kib));
    figure("refused_sends", failed as f64);
    figure("skipped", skipped as f64);
    if let Some(last) = last {
        figure("rss_end_mib", mib(last.rss_kib));
    }
    // The goal: RSS at the end within 5 % of RSS at 10 minutes.
    let ten = Duration::from_secs(600);
    if let (Some(at_ten), Some(last)) = (sample_at(samples, ten), last) {
        if last.at > ten + Duration::from_secs(60) {
            let growth = 100.0 * (last.rss_kib as f64 / at_ten.rss_kib as f64 - 1.0);
            println!(
                "  RSS end vs 10 min: {growth:+.1} % ({})",
                if growth <= 5.0 { "within 5 %" } else { "more than 5 %" }
            );
            // A single sample may catch a megabyte buffer just before it is freed: the
            // medians of the minute before each point say the same without that noise.
            let (early, late) = (minute_median(samples, ten), minute_median(samples, last.at));
            let growth = 100.0 * (late as f64 / early.max(1) as f64 - 1.0);
            println!(
                "  RSS median of the minute before: 10 min {:.1}, end {:.1} MiB: {growth:+.1} %",
                mib(early),
                mib(late)
            );
            figure("rss_10min_median_mib", mib(early));
            figure("rss_end_median_mib", mib(late));
            figure("rss_growth_pct", growth);
        }
    }
}
