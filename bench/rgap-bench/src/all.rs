//! `rgap-bench all`: every scenario behind the README's Performance figures, N times each
//! (interleaved: each scenario once per round, so the drift of a shared machine hits all of
//! them alike), then min / median / max of every figure, the commit and the machine, and
//! optionally the README's Performance tables as Markdown.
//!
//! Each scenario runs as a child process of this same binary (a crash or an error in one
//! is reported and the others go on); the figures come from its `@figure` lines
//! ([`crate::figures`]). The protocol micro-benchmark runs through `cargo bench`, the DNS
//! figures through `bench/dns/run.sh` when `dnsperf` is installed, the hour-long soak only
//! with `--with-soak`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::figures;

#[derive(clap::Args)]
pub struct AllArgs {
    /// Runs of each scenario (default 5; 1 with --quick)
    #[arg(long)]
    runs: Option<usize>,
    /// Smoke test: small loads and short runs; the figures are not the README's
    #[arg(long)]
    quick: bool,
    /// Write the README's Performance tables, as Markdown, to this file
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also run the soak (an hour; two minutes with --quick)
    #[arg(long)]
    with_soak: bool,
    /// Only the scenarios whose name contains this (e.g. `ingest`, `scale`, `dns`)
    #[arg(long)]
    only: Option<String>,
}

/// How a scenario is run.
enum Kind {
    /// A scenario of this binary, with these arguments.
    Bench(Vec<String>),
    /// `cargo bench -p rgap-core --bench protocol` in the workspace.
    Protocol,
    /// `bench/dns/run.sh` with `MODE`, `SECONDS_TO_RUN` and `LOADGEN`.
    Dns { mode: &'static str, seconds: u32, loadgen: &'static str },
}

struct Job {
    name: &'static str,
    kind: Kind,
}

impl Job {
    fn command(&self) -> String {
        match &self.kind {
            Kind::Bench(args) => format!("target/release/rgap-bench {}", args.join(" ")),
            Kind::Protocol => "cargo bench -p rgap-core --bench protocol".into(),
            Kind::Dns { mode, seconds, loadgen: "dnsperf" } => {
                format!("MODE={mode} SECONDS_TO_RUN={seconds} bench/dns/run.sh")
            }
            Kind::Dns { mode, seconds, loadgen } => {
                format!("LOADGEN={loadgen} MODE={mode} SECONDS_TO_RUN={seconds} bench/dns/run.sh")
            }
        }
    }
}

fn bench(name: &'static str, args: &str) -> Job {
    Job { name, kind: Kind::Bench(args.split_whitespace().map(str::to_owned).collect()) }
}

/// `bench/dns/run.sh` over `mode` with `loadgen` as the load, 15 s (2 s if `quick`).
fn dns(name: &'static str, mode: &'static str, loadgen: &'static str, quick: bool) -> Job {
    Job { name, kind: Kind::Dns { mode, seconds: if quick { 2 } else { 15 }, loadgen } }
}

/// The scenarios behind the README's figures; `quick` shrinks every load.
fn jobs(quick: bool, with_soak: bool, out_dir: &Path) -> Vec<Job> {
    let q = |full: &'static str, small: &'static str| if quick { small } else { full };
    let ingest = q("--count 200000 --rate 100000", "--count 20000 --rate 100000");
    let scale = q("--members 100000", "--members 10000 --changes 200 --isolated 2");
    let million = q("--members 1000000", "--members 50000 --samples 2");
    let flood = q("--seconds 5", "--seconds 1");
    let mut jobs = vec![
        Job { name: "protocol", kind: Kind::Protocol },
        bench("ingest", &format!("ingest {ingest}")),
        bench("ingest-pin", &format!("ingest {ingest} --pin")),
        bench("ingest-noop", &format!("ingest {ingest} --output noop")),
        bench("ingest-noop-pin", &format!("ingest {ingest} --output noop --pin")),
        bench(
            "ingest-rounds",
            q("ingest --count 20000 --rounds 10", "ingest --count 2000 --rounds 10"),
        ),
        bench(
            "ingest-junk-50k",
            &format!(
                "ingest {} --junk 10",
                q("--count 200000 --rate 50000", "--count 10000 --rate 50000")
            ),
        ),
        bench("ingest-junk-100k", &format!("ingest {ingest} --junk 10")),
        bench("ingest-http", &format!("ingest {ingest} --http-scrape")),
        bench("floor", &format!("floor {ingest}")),
        bench("floor-check", &format!("floor {ingest} --check")),
        bench(
            "metrics",
            q(
                "metrics --groups 1000 --members-per-group 10 --scrapes 300",
                "metrics --groups 100 --members-per-group 10 --scrapes 30",
            ),
        ),
        bench("scale-1", &format!("scale {scale} --groups 1")),
        bench("scale-1000", &format!("scale {scale} --groups {}", q("1000", "100"))),
        bench("flood-1", &format!("flood {flood} --junk-threads 1")),
        bench("flood-2", &format!("flood {flood} --junk-threads 2")),
        bench("million-1", &format!("million {million} --groups 1")),
        bench("million-10000", &format!("million {million} --groups {}", q("10000", "1000"))),
        bench("propagation", q("propagation --samples 200", "propagation --samples 20")),
        dns("dns-udp", "udp", "dnsperf", quick),
        dns("dns-udp-batched", "udp", "rgap-bench", quick),
        dns("dns-tcp", "tcp", "dnsperf", quick),
    ];
    if with_soak {
        let plot = out_dir.join("soak.png");
        let args = format!(
            "soak --rate 20000 --addresses 200000 --expire 3s --outputs hostsfile,dns,log --duration {} --plot {}",
            q("60m", "2m"),
            plot.display()
        );
        jobs.push(Job {
            name: "soak",
            kind: Kind::Bench(args.split(' ').map(str::to_owned).collect()),
        });
    }
    jobs
}

/// Every figure of every scenario, one value per run.
#[derive(Default)]
struct Results {
    figures: BTreeMap<&'static str, BTreeMap<String, Vec<f64>>>,
    failures: Vec<String>,
    skipped: BTreeMap<&'static str, String>,
    took: BTreeMap<&'static str, Vec<Duration>>,
}

/// Where this run happened: commit and machine.
struct Context {
    commit: String,
    dirty: bool,
    cpus: usize,
    cpu_model: String,
    memory_gib: f64,
    kernel: String,
    load_start: String,
    load_end: String,
    runs: usize,
    quick: bool,
    started: Instant,
}

pub fn all(args: &AllArgs) {
    let root = workspace_root().unwrap_or_else(|error| {
        eprintln!("rgap-bench all: {error}");
        std::process::exit(2)
    });
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 5 }).max(1);
    let out_dir = args
        .markdown
        .as_ref()
        .and_then(|path| path.parent())
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut jobs = jobs(args.quick, args.with_soak, &out_dir);
    if let Some(only) = &args.only {
        jobs.retain(|job| job.name.contains(only.as_str()));
    }
    let mut results = Results::default();
    if !has_program("dnsperf") {
        for job in
            jobs.iter().filter(|job| matches!(job.kind, Kind::Dns { loadgen: "dnsperf", .. }))
        {
            results
                .skipped
                .insert(job.name, "dnsperf is not installed (apt-get install dnsperf)".into());
        }
    }
    if !has_program("cargo") {
        results.skipped.insert("protocol", "cargo is not on PATH".into());
    }
    if !args.with_soak {
        results.skipped.insert("soak", "takes an hour: add --with-soak".into());
    }
    for (name, why) in &results.skipped {
        println!("rgap-bench all: skipping {name}: {why}");
    }
    let (commit, dirty) = git_commit(&root);
    let stale = newer_than_build(&root);
    if !stale.is_empty() {
        eprintln!(
            "rgap-bench all: warning: changed since target/release/rgap was built: {} (run \
             `cargo build --release --workspace` first, or the figures are not this tree's)",
            stale.join(", ")
        );
    }
    let mut context = Context {
        commit,
        dirty,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model: cpu_model(),
        memory_gib: meminfo_kib("MemTotal:") as f64 / 1024.0 / 1024.0,
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        load_start: load_average(),
        load_end: String::new(),
        runs,
        quick: args.quick,
        started: Instant::now(),
    };
    println!(
        "rgap-bench all: {} scenario(s) x {runs} run(s){}; commit {}{}; {} CPUs, load average {}",
        jobs.iter().filter(|job| !results.skipped.contains_key(job.name)).count(),
        if args.quick { " (quick: small loads, not the README's figures)" } else { "" },
        context.commit,
        if context.dirty { " with uncommitted changes" } else { "" },
        context.cpus,
        context.load_start
    );
    for run in 1..=runs {
        for job in &jobs {
            if results.skipped.contains_key(job.name) {
                continue;
            }
            println!("== {} (run {run}/{runs}): {}", job.name, job.command());
            let started = Instant::now();
            match run_job(job, &root) {
                Ok(figures) => {
                    for (key, value) in figures {
                        results
                            .figures
                            .entry(job.name)
                            .or_default()
                            .entry(key)
                            .or_default()
                            .push(value);
                    }
                }
                Err(error) => {
                    eprintln!("rgap-bench all: {} run {run}: {error}", job.name);
                    results.failures.push(format!("{} run {run}: {error}", job.name));
                }
            }
            results.took.entry(job.name).or_default().push(started.elapsed());
        }
        // Written after every round, so an interrupted run leaves what it measured.
        context.load_end = load_average();
        if let Some(path) = &args.markdown {
            write_markdown(path, &results, &context);
        }
    }
    context.load_end = load_average();
    print_summary(&results, &context);
    if let Some(path) = &args.markdown {
        write_markdown(path, &results, &context);
        println!("markdown: {}", path.display());
    }
    if !results.failures.is_empty() {
        std::process::exit(1);
    }
}

/// Runs one scenario once; its figures, or why it failed.
fn run_job(job: &Job, root: &Path) -> Result<Vec<(String, f64)>, String> {
    let mut command = match &job.kind {
        Kind::Bench(args) => {
            let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
            command.args(args);
            command
        }
        Kind::Protocol => {
            let mut command = Command::new("cargo");
            command.args(["bench", "-p", "rgap-core", "--bench", "protocol"]);
            command
        }
        Kind::Dns { mode, seconds, loadgen } => {
            let mut command = Command::new("bash");
            command.arg(root.join("bench/dns/run.sh"));
            command.env("MODE", mode).env("SECONDS_TO_RUN", seconds.to_string());
            command.env("LOADGEN", loadgen);
            // Measure the build this binary belongs to, not a rebuild.
            command.env("SKIP_BUILD", "1");
            command
        }
    };
    let mut child = command
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("starting {}: {error}", job.command()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut figures = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(figure) = figures::parse(&line) {
            figures.push(figure);
            continue;
        }
        println!("  {line}");
        let parsed = match job.kind {
            Kind::Protocol => protocol_figure(&line),
            Kind::Dns { .. } => dns_figure(&line),
            Kind::Bench(_) => None,
        };
        figures.extend(parsed);
    }
    let status = child.wait().map_err(|error| format!("waiting: {error}"))?;
    if !status.success() {
        return Err(format!("{} exited with {status}", job.command()));
    }
    if figures.is_empty() {
        return Err(format!("{} printed no figures", job.command()));
    }
    Ok(figures)
}

/// `sign (key + HMAC)      330.1 ns/op` → (`sign_key_hmac_ns`, 330.1).
fn protocol_figure(line: &str) -> Option<(String, f64)> {
    let head = line.strip_suffix("ns/op")?.trim_end();
    let (name, value) = head.rsplit_once(' ')?;
    let key =
        figures::key_of(name).split('_').filter(|w| !w.is_empty()).collect::<Vec<_>>().join("_");
    Some((format!("{key}_ns"), value.parse().ok()?))
}

/// The figures of `bench/dns/run.sh`'s summary (dnsperf's lines and the server's CPU).
fn dns_figure(line: &str) -> Option<(String, f64)> {
    let line = line.trim();
    let number = |rest: &str| rest.split_whitespace().next()?.trim_end_matches('%').parse().ok();
    if let Some(rest) = line.strip_prefix("Queries per second:") {
        return Some(("qps".into(), number(rest)?));
    }
    if let Some(rest) = line.strip_prefix("Queries lost:") {
        return Some(("lost".into(), number(rest)?));
    }
    if let Some(rest) = line.strip_prefix("Average Latency (s):") {
        return Some(("latency_ms".into(), number(rest)? * 1e3));
    }
    if let Some(rest) = line.strip_prefix("Server CPU:") {
        return Some(("server_cpu_pct".into(), number(rest)?));
    }
    None
}

/// Min, median, max of `values` (not empty).
fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    (sorted[0], median, sorted[n - 1])
}

fn print_summary(results: &Results, context: &Context) {
    println!();
    println!(
        "summary: commit {}{}; {} runs each; took {:.1} min; load average at start {}, at end {}",
        context.commit,
        if context.dirty { " (uncommitted changes)" } else { "" },
        context.runs,
        context.started.elapsed().as_secs_f64() / 60.0,
        context.load_start,
        context.load_end
    );
    for (job, figures) in &results.figures {
        let took: Duration = results.took.get(job).map_or(Duration::ZERO, |t| t.iter().sum());
        println!("{job} ({:.0} s in all):", took.as_secs_f64());
        for (key, values) in figures {
            let (min, median, max) = stats(values);
            println!(
                "  {key:<36} min {min:>12.3}  median {median:>12.3}  max {max:>12.3}  ({} runs)",
                values.len()
            );
        }
    }
    for (job, why) in &results.skipped {
        println!("{job}: skipped: {why}");
    }
    for failure in &results.failures {
        println!("FAILED: {failure}");
    }
}

/// A figure as the README writes it: `low–high, median` over several runs, the value alone
/// for one run or when every run gave it, `?` when it was not measured.
fn fig(results: &Results, job: &str, key: &str, decimals: usize, unit: &str) -> String {
    let Some(values) = results.figures.get(job).and_then(|figures| figures.get(key)) else {
        return "?".into();
    };
    let (min, median, max) = stats(values);
    let f = |v: f64| format!("{v:.decimals$}");
    if values.len() == 1 || f(min) == f(max) {
        format!("{}{unit}", f(median))
    } else {
        format!("{}–{}{unit}, {}", f(min), f(max), f(median))
    }
}

/// The figure's median alone (for the README's prose).
fn med(results: &Results, job: &str, key: &str, decimals: usize) -> String {
    results
        .figures
        .get(job)
        .and_then(|figures| figures.get(key))
        .map_or("?".into(), |values| format!("{:.decimals$}", stats(values).1))
}

fn runs_of(results: &Results, job: &str) -> usize {
    results.figures.get(job).and_then(|f| f.values().map(Vec::len).max()).unwrap_or(0)
}

fn command_of(job: &str, context: &Context) -> String {
    jobs(context.quick, true, Path::new("."))
        .into_iter()
        .find(|j| j.name == job)
        .map_or_else(String::new, |j| j.command())
}

fn render_markdown(results: &Results, context: &Context) -> String {
    let r = results;
    let mut md = String::new();
    let mut line = |text: String| {
        md += &text;
        md += "\n";
    };
    line("## Performance".into());
    line(String::new());
    line(format!(
        "Generated by `target/release/rgap-bench all --runs {}{}` at commit `{}`{}: {} CPUs ({}), \
         {:.0} GiB, Linux {}; load average at start {}, at end {}. Release build, traffic on \
         loopback; the sender shares the cores with the listener. Each figure is min–max, \
         median over the runs (every scenario once per round, so a shared machine's drift hits \
         all alike); a single value is one run; `?` was not measured.",
        context.runs,
        if context.quick { " --quick" } else { "" },
        context.commit,
        if context.dirty { " (with uncommitted changes)" } else { "" },
        context.cpus,
        context.cpu_model,
        context.memory_gib,
        context.kernel,
        context.load_start,
        context.load_end
    ));
    if context.quick {
        line(String::new());
        line(
            "**Quick run (`--quick`): small loads for a smoke test; these are not comparable with \
              full runs.**"
                .into(),
        );
    }
    line(String::new());
    line(
        "Build once with `cargo build --release --workspace`, then \
         `target/release/rgap-bench all [--runs 5] [--markdown out.md] [--with-soak]` measures \
         everything below and writes this section (`--quick` for a smoke test; the DNS figures \
         need `dnsperf`); each row also names the command that measures it alone."
            .into(),
    );
    line(String::new());

    line(format!(
        "**Protocol** (`{}`): verify (length, version, HMAC-SHA256): {} ns; sign: {} ns; \
         `Checker::check` dropping a datagram of an unknown group: {} ns; `Checker::check` on \
         a valid announcement: {} ns; on a bad signature: {} ns.",
        command_of("protocol", context),
        fig(r, "protocol", "verify_valid_length_version_hmac_ns", 0, ""),
        fig(r, "protocol", "sign_key_hmac_ns", 0, ""),
        fig(r, "protocol", "checker_check_unknown_group_dropped_ns", 1, ""),
        fig(r, "protocol", "checker_check_valid_ns", 0, ""),
        fig(r, "protocol", "checker_check_bad_signature_ns", 0, ""),
    ));
    line(String::new());

    line(
        "**Ingest**: valid announcements into one group; listener CPU (user + system, all \
          threads, schedstat run times) from the first datagram until its CPU stops growing:"
            .into(),
    );
    line(String::new());
    line("| load | CPU per valid announcement | lost | refused by the kernel at send | peak RSS | command |".into());
    line("|---|---|---|---|---|---|".into());
    for (job, label) in [
        ("ingest", "distinct members (all joins), hostsfile output"),
        ("ingest-pin", "the same, the listener confined to one core (`--pin`)"),
        ("ingest-noop", "the same, noop output"),
        ("ingest-noop-pin", "on one core, noop"),
        ("ingest-rounds", "members × 10 rounds (mostly refreshes), hostsfile"),
        ("ingest-http", "all joins, hostsfile, `/metrics` scraped every second"),
    ] {
        line(format!(
            "| {label} (n={}) | **{}** | {} | {} | {} | `{}` |",
            runs_of(r, job),
            fig(r, job, "cpu_per_valid_us", 2, " µs"),
            fig(r, job, "lost_valid", 0, ""),
            fig(r, job, "refused_sends", 0, ""),
            fig(r, job, "peak_rss_mib", 0, " MiB"),
            command_of(job, context)
        ));
    }
    for (job, label) in [
        ("ingest-junk-50k", "distinct at 50 000/s + 10× junk"),
        ("ingest-junk-100k", "distinct at 100 000/s + 10× junk offered"),
    ] {
        line(format!(
            "| {label} (n={}; the sender reached {} datagrams/s) | {} per datagram | {} | {} | {} | `{}` |",
            runs_of(r, job),
            fig(r, job, "sent_per_s", 0, ""),
            fig(r, job, "cpu_per_datagram_us", 2, " µs"),
            fig(r, job, "lost_valid", 0, ""),
            fig(r, job, "refused_sends", 0, ""),
            fig(r, job, "peak_rss_mib", 0, " MiB"),
            command_of(job, context)
        ));
    }
    line(String::new());
    if let Some(figures) = r.figures.get("ingest") {
        let threads: Vec<String> = figures
            .keys()
            .filter_map(|key| {
                key.strip_prefix("thread_")?.strip_suffix("_us").map(|name| (key, name))
            })
            .map(|(key, name)| {
                format!("`{}` {}", name.replace('_', " ").trim(), fig(r, "ingest", key, 3, " µs"))
            })
            .collect();
        line(format!(
            "By thread, per valid announcement (all joins, hostsfile; only the CPU of the \
             measured phase): {}.",
            threads.join(", ")
        ));
        line(String::new());
    }
    line(format!(
        "The floor under those figures: a thread that only reads the same traffic as a source \
         does (`recvmmsg`, the same batch and pause), no table and no output, spends {} per \
         datagram in the kernel's receive path (`{}`); checking each datagram as a source does \
         brings it to {} (`{}`).",
        fig(r, "floor", "floor_cpu_per_datagram_us", 2, " µs"),
        command_of("floor", context),
        fig(r, "floor-check", "floor_cpu_per_datagram_us", 2, " µs"),
        command_of("floor-check", context)
    ));
    line(String::new());

    line(format!(
        "**Monitoring**: `/metrics` with many groups, each scrape on a new connection \
         (`{}`): p50 {} ms, p99 {} ms, max {} ms; the reply is {} bytes.",
        command_of("metrics", context),
        fig(r, "metrics", "p50_ms", 2, ""),
        fig(r, "metrics", "p99_ms", 2, ""),
        fig(r, "metrics", "max_ms", 2, ""),
        med(r, "metrics", "reply_bytes", 0)
    ));
    line(String::new());

    line(format!(
        "**Scale**: {} live members with the hostsfile, dns and log outputs loaded; then a \
             burst of changes to one group at the rate stated, then isolated changes (each sent \
             alone to a quiet listener, measured until it is in the hosts file and the CPU is \
             quiet again, idle subtracted; median per run):",
        med(r, "scale-1", "members", 0)
    ));
    line(String::new());
    line("| groups | hosts file complete after | CPU per member | RSS full | CPU per change, burst (rate) | CPU of one isolated change | command |".into());
    line("|---|---|---|---|---|---|---|".into());
    for job in ["scale-1", "scale-1000"] {
        line(format!(
            "| {} | {} | {} | {} | {} (at {}/s) | {} | `{}` |",
            med(r, job, "groups", 0),
            fig(r, job, "absorbed_s", 2, " s"),
            fig(r, job, "cpu_per_member_us", 2, " µs"),
            fig(r, job, "rss_full_mib", 0, " MiB"),
            fig(r, job, "burst_cpu_per_change_us", 1, " µs"),
            med(r, job, "change_rate_per_s", 0),
            fig(r, job, "isolated_cpu_per_change_us", 0, " µs"),
            command_of(job, context)
        ));
    }
    line(String::new());

    line(
        "**Under a flood of forged announcements** (fresh timestamps, a wrong key; valid \
          announcements of new members at 1 000/s beside them):"
            .into(),
    );
    line(String::new());
    line("| flood | forged sent (accepted by the kernel) | refused at send | valid accepted / sent | listener CPU per datagram | command |".into());
    line("|---|---|---|---|---|---|".into());
    for (job, label) in [("flood-1", "1 sender thread"), ("flood-2", "2 sender threads")] {
        line(format!(
            "| {label} | {} /s | {} | {} / {} | {} | `{}` |",
            fig(r, job, "forged_per_s", 0, ""),
            fig(r, job, "refused_sends", 0, ""),
            fig(r, job, "valid_accepted", 0, ""),
            fig(r, job, "valid_sent", 0, ""),
            fig(r, job, "cpu_per_datagram_us", 2, " µs"),
            command_of(job, context)
        ));
    }
    line(String::new());

    line(format!(
        "**A million members** ({} members loaded at 100 000/s, hostsfile, dns and log \
             outputs; then one join and one leave at a time, each from a quiet listener until it \
             is quiet again, idle subtracted; median of the samples per run):",
        med(r, "million-1", "members", 0)
    ));
    line(String::new());
    line("| groups | absorbed in | CPU per member | RSS empty | RSS full | peak RSS | CPU per later join | per later leave | command |".into());
    line("|---|---|---|---|---|---|---|---|---|".into());
    for job in ["million-1", "million-10000"] {
        line(format!(
            "| {} | {} | {} | {} | {} | **{}** | {} | {} | `{}` |",
            med(r, job, "groups", 0),
            fig(r, job, "absorbed_s", 1, " s"),
            fig(r, job, "cpu_per_member_us", 2, " µs"),
            fig(r, job, "rss_empty_mib", 0, " MiB"),
            fig(r, job, "rss_full_mib", 0, " MiB"),
            fig(r, job, "peak_rss_mib", 0, " MiB"),
            fig(r, job, "join_cpu_ms", 1, " ms"),
            fig(r, job, "leave_cpu_ms", 1, " ms"),
            command_of(job, context)
        ));
    }
    line(String::new());

    line(format!(
        "**Propagation**: from an announcement leaving the sender to its address being served, \
         each a new member of its own group (`{}`):",
        command_of("propagation", context)
    ));
    line(String::new());
    line("| to | p50 | p99 | max |".into());
    line("|---|---|---|---|".into());
    for (key, label) in [("dns", "DNS answer"), ("hosts", "hosts file")] {
        line(format!(
            "| {label} | {} | {} | {} |",
            fig(r, "propagation", &format!("{key}_p50_ms"), 2, " ms"),
            fig(r, "propagation", &format!("{key}_p99_ms"), 2, " ms"),
            fig(r, "propagation", &format!("{key}_max_ms"), 1, " ms"),
        ));
    }
    line(String::new());

    match r.skipped.get("dns-udp") {
        Some(why) => line(format!("**DNS**: not measured: {why}.")),
        None => line(format!(
            "**DNS** (`bench/dns/run.sh`: server pinned to CPU 0, dnsperf to CPU 1, 4 groups of \
             10 members, A and AAAA, 256 outstanding): **{} queries per second over UDP** at {} % \
             of one core (the CPU divided by the time measured), {} lost, {} ms mean latency; \
             {} per second over TCP ({} % of one core).",
            fig(r, "dns-udp", "qps", 0, ""),
            fig(r, "dns-udp", "server_cpu_pct", 0, ""),
            fig(r, "dns-udp", "lost", 0, ""),
            fig(r, "dns-udp", "latency_ms", 2, ""),
            fig(r, "dns-tcp", "qps", 0, ""),
            fig(r, "dns-tcp", "server_cpu_pct", 0, ""),
        )),
    }
    if !r.skipped.contains_key("dns-udp-batched") {
        line(String::new());
        line(format!(
            "The same with `rgap-bench dnsload` as the load (`LOADGEN=rgap-bench`: it batches \
             its sends and reads, so it spends less CPU per query than dnsperf and can fill the \
             server's core): **{} queries per second over UDP** at {} % of one core, {} lost, {} \
             ms mean latency.",
            fig(r, "dns-udp-batched", "qps", 0, ""),
            fig(r, "dns-udp-batched", "server_cpu_pct", 0, ""),
            fig(r, "dns-udp-batched", "lost", 0, ""),
            fig(r, "dns-udp-batched", "latency_ms", 2, ""),
        ));
    }
    line(String::new());

    match r.skipped.get("soak") {
        Some(why) => line(format!("**Memory under churn** (soak): not run here ({why}).")),
        None => line(format!(
            "**Memory under churn** (`{}`): RSS median of the minute at 10 min {} MiB, at the \
             end {} MiB ({} %); peak {} MiB; refused at send {}; skipped by a starved sender {}.",
            command_of("soak", context),
            fig(r, "soak", "rss_10min_median_mib", 1, ""),
            fig(r, "soak", "rss_end_median_mib", 1, ""),
            fig(r, "soak", "rss_growth_pct", 1, ""),
            fig(r, "soak", "peak_rss_mib", 1, ""),
            fig(r, "soak", "refused_sends", 0, ""),
            fig(r, "soak", "skipped", 0, ""),
        )),
    }
    line(String::new());
    line(
        "Not reproduced by this command: comparisons with other builds (an earlier rgap, the \
          Go rgap), which need those builds."
            .into(),
    );
    if !r.failures.is_empty() {
        line(String::new());
        line("Failed runs (their figures are missing above):".into());
        line(String::new());
        for failure in &r.failures {
            line(format!("- {failure}"));
        }
    }
    md
}

fn write_markdown(path: &Path, results: &Results, context: &Context) {
    if let Err(error) = std::fs::write(path, render_markdown(results, context)) {
        eprintln!("rgap-bench all: writing {}: {error}", path.display());
    }
}

/// The workspace this binary was built in: `<root>/target/release/rgap-bench`.
fn workspace_root() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| format!("own path: {error}"))?;
    let root = exe.ancestors().nth(3).map(Path::to_path_buf);
    root.filter(|root| root.join("Cargo.toml").is_file() && root.join("bench").is_dir()).ok_or_else(
        || {
            format!(
                "{} is not in <workspace>/target/release: run the rgap-bench built by \
                 `cargo build --release --workspace`",
                exe.display()
            )
        },
    )
}

/// The short commit of `root`'s HEAD and whether tracked files differ from it.
fn git_commit(root: &Path) -> (String, bool) {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

/// Tracked source files changed after the binary built from them (this one for the bench's
/// own sources, the release `rgap` for the rest): the figures would not be those of the tree
/// (or commit) named.
fn newer_than_build(root: &Path) -> Vec<String> {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(rgap) = modified(&root.join("target/release/rgap")) else {
        return vec!["target/release/rgap is missing".into()];
    };
    let bench = std::env::current_exe().ok().and_then(|exe| modified(&exe)).unwrap_or(rgap);
    let listed = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "--", "*.rs", "Cargo.toml", "Cargo.lock"])
        .stderr(Stdio::null())
        .output();
    let Ok(listed) = listed else { return Vec::new() };
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|file| !file.starts_with("tests/") && !file.contains("/tests/"))
        .filter(|file| {
            let built = if file.starts_with("bench/") { bench } else { rgap };
            modified(&root.join(file)).is_some_and(|changed| changed > built)
        })
        .map(str::to_owned)
        .collect()
}

fn has_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "?".into(), |text| text.trim().to_owned())
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    read_trimmed("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "?".into())
}

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_median_max() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), (1.0, 2.5, 4.0));
        assert_eq!(stats(&[7.0]), (7.0, 7.0, 7.0));
    }

    #[test]
    fn protocol_lines_become_figures() {
        assert_eq!(
            protocol_figure("Checker::check, unknown group (dropped)     16.2 ns/op"),
            Some(("checker_check_unknown_group_dropped_ns".into(), 16.2))
        );
        assert_eq!(protocol_figure("   Compiling rgap-core"), None);
    }

    #[test]
    fn dns_summary_lines_become_figures() {
        assert_eq!(dns_figure("  Queries per second:   226431.2"), Some(("qps".into(), 226431.2)));
        assert_eq!(dns_figure("  Queries lost:         0 (0.00%)"), Some(("lost".into(), 0.0)));
        assert_eq!(
            dns_figure("  Server CPU:           98% of one core (230000 queries per CPU-second)"),
            Some(("server_cpu_pct".into(), 98.0))
        );
        let latency = dns_figure("  Average Latency (s):  0.000812 (min 0.000021, max 0.004)");
        assert!(latency.is_some_and(|(key, ms)| key == "latency_ms" && (ms - 0.812).abs() < 1e-9));
    }

    #[test]
    fn a_figure_reads_as_the_readme_writes_it() {
        let mut results = Results::default();
        results.figures.entry("ingest").or_default().insert("cpu".into(), vec![1.5, 1.2, 1.4]);
        assert_eq!(fig(&results, "ingest", "cpu", 2, " µs"), "1.20–1.50 µs, 1.40");
        assert_eq!(fig(&results, "ingest", "missing", 2, " µs"), "?");
        results.figures.entry("one").or_default().insert("cpu".into(), vec![1.5]);
        assert_eq!(fig(&results, "one", "cpu", 1, " µs"), "1.5 µs");
        results.figures.entry("same").or_default().insert("lost".into(), vec![0.0, 0.0]);
        assert_eq!(fig(&results, "same", "lost", 0, ""), "0");
    }
}
