//! Runs the real `rgap listener` (the release binary next to this one) on a generated
//! config, watches its log, and measures it: CPU from `/proc` while it runs and exactly
//! (user + system, peak RSS) from `wait4` when it exits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Resource use of the finished listener.
pub struct Usage {
    pub cpu: Duration,
    pub peak_rss_kib: u64,
}

pub struct BenchListener {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Reads the listener's stderr until it closes (the listener has exited).
    reader: JoinHandle<()>,
    /// Whether the coarse-CPU warning has been printed (once per listener).
    warned_coarse: AtomicBool,
    pub dir: tempfile::TempDir,
}

/// The listener binary to measure: `RGAP_BENCH_LISTENER` if set (another build, such as the
/// Go rgap's, measured side by side), else the `rgap` built alongside this benchmark.
pub fn rgap_binary() -> PathBuf {
    if let Some(other) = foreign_listener() {
        return other;
    }
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("own directory").join("rgap")
}

/// Another listener binary to measure instead of ours (`RGAP_BENCH_LISTENER`).
pub fn foreign_listener() -> Option<PathBuf> {
    std::env::var_os("RGAP_BENCH_LISTENER").map(PathBuf::from)
}

/// What a listener logs once it serves: ours, and the Go rgap's.
const STARTED: [&str; 2] = ["listener started", "Listener is now operational"];

impl BenchListener {
    /// Starts the listener on `config` in a fresh directory and waits until it has started.
    pub fn start(config: &str) -> BenchListener {
        BenchListener::start_filtered(config, |_| true)
    }

    /// As [`BenchListener::start`], keeping only the log lines for which `keep` is true (a
    /// long run would otherwise hold every line it ever logged).
    pub fn start_filtered(config: &str, keep: fn(&str) -> bool) -> BenchListener {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rgap.yaml");
        std::fs::write(&path, config).expect("writing config");
        let binary = rgap_binary();
        assert!(
            binary.is_file(),
            "{} missing: cargo build --release --workspace",
            binary.display()
        );
        let mut command = Command::new(&binary);
        // RGAP_BENCH_PRELOAD=lib.so preloads a library into the listener only (an allocator
        // to compare, a heap profiler), not into the benchmark.
        if let Some(preload) = std::env::var_os("RGAP_BENCH_PRELOAD") {
            command.env("LD_PRELOAD", preload);
        }
        let mut child = command
            .args(["listener", "-c"])
            .arg(&path)
            .current_dir(dir.path())
            // RGAP_BENCH_LOG=debug shows the listener's debug lines (e.g. render costs).
            .env("RUST_LOG", std::env::var("RGAP_BENCH_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting rgap");
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader_log = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        let echo = std::env::var_os("RGAP_BENCH_LOG").is_some();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[rgap] {line}");
                }
                if keep(&line) {
                    reader_log.lock().unwrap().push(line);
                }
            }
        });
        let listener =
            BenchListener { child, log, reader, warned_coarse: AtomicBool::new(false), dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !STARTED.iter().any(|line| listener.has_log(line)) {
            assert!(
                Instant::now() < deadline,
                "the listener did not start:\n{}",
                listener.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        listener
    }

    /// The latest log line containing `needle`.
    pub fn last_log_line(&self, needle: &str) -> Option<String> {
        self.log.lock().unwrap().iter().rev().find(|line| line.contains(needle)).cloned()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Whether some log line so far contains `needle`.
    pub fn has_log(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|line| line.contains(needle))
    }

    /// CPU time used so far (user + system, all threads): the sum of the threads' run times
    /// from `/proc/<pid>/task/*/schedstat` (nanoseconds; rgap's threads live until it
    /// stops), or the process's from `/proc/<pid>/stat` (10 ms ticks, with a warning) where
    /// schedstat is missing.
    pub fn cpu_so_far(&self) -> Duration {
        self.snapshot().total()
    }

    /// The CPU used so far by each thread and by the whole process, to subtract from a
    /// later one ([`CpuSnapshot::since`]).
    pub fn snapshot(&self) -> CpuSnapshot {
        let threads = self.cpu_by_thread();
        let exact = !threads.is_empty() && threads.iter().all(|thread| thread.exact);
        if !exact && !self.warned_coarse.swap(true, Ordering::Relaxed) {
            eprintln!(
                "rgap-bench: warning: no /proc/{}/task/*/schedstat (kernel without \
                 CONFIG_SCHEDSTATS?): listener CPU comes from /proc/{}/stat in 10 ms ticks, \
                 too coarse for short phases",
                self.pid(),
                self.pid()
            );
        }
        CpuSnapshot { threads, process: proc_cpu(self.pid()), exact, at: Instant::now() }
    }

    /// Waits until the listener's CPU stops growing: samples it until it has grown by at
    /// most 1 % of a core (plus 0.2 ms) over `quiet`, up to `limit`. Returns the snapshots
    /// where that quiet stretch began (the end of the work before it) and ended (the start
    /// of the work after it). A listener that never quiets is reported (warning) and
    /// measured at `limit`.
    pub fn wait_until_quiet(&self, quiet: Duration, limit: Duration) -> Quiet {
        let step = (quiet / 5).max(Duration::from_millis(10));
        let deadline = Instant::now() + limit;
        let mut window: std::collections::VecDeque<CpuSnapshot> = Default::default();
        window.push_back(self.snapshot());
        loop {
            std::thread::sleep(step);
            let now = self.snapshot();
            while window.len() > 1 && now.at.duration_since(window[1].at) >= quiet {
                window.pop_front();
            }
            let first = &window[0];
            let span = now.at.duration_since(first.at);
            let grown = now.total().saturating_sub(first.total());
            if span >= quiet && grown <= span / 100 + Duration::from_micros(200) {
                return Quiet { began: window.pop_front().expect("a sample"), ended: now };
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "rgap-bench: warning: listener CPU still growing after {:.1} s \
                     ({:.1} ms in the last {:.0} ms); measuring anyway",
                    limit.as_secs_f64(),
                    grown.as_secs_f64() * 1e3,
                    span.as_secs_f64() * 1e3
                );
                return Quiet { began: now.clone(), ended: now };
            }
            window.push_back(now);
        }
    }

    /// CPU time used so far and times switched out, by thread name (threads sharing a name
    /// are summed), from /proc: schedstat where the kernel has it, else stat.
    pub fn cpu_by_thread(&self) -> Vec<ThreadUse> {
        let mut by_name: Vec<ThreadUse> = Vec::new();
        let dir = format!("/proc/{}/task", self.pid());
        for entry in std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok) {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let name = stat
                .split_once('(')
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .map_or("?", |(name, _)| name)
                .to_owned();
            let schedstat = std::fs::read_to_string(entry.path().join("schedstat")).ok();
            let run_ns = schedstat.and_then(|text| text.split_whitespace().next()?.parse().ok());
            let (cpu, exact) = match run_ns {
                Some(ns) => (Duration::from_nanos(ns), true),
                None => (cpu_from_stat(&stat), false),
            };
            let switches = status_value(&status, "voluntary_ctxt_switches:")
                + status_value(&status, "nonvoluntary_ctxt_switches:");
            match by_name.iter_mut().find(|known| known.name == name) {
                Some(known) => {
                    known.cpu += cpu;
                    known.switches += switches;
                    known.exact &= exact;
                }
                None => by_name.push(ThreadUse { name, cpu, switches, exact }),
            }
        }
        by_name
    }

    /// Resident memory now, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Stops it with SIGTERM and returns its exact resource use and its log.
    pub fn stop(self) -> (Usage, Vec<String>) {
        // VmHWM, not wait4's ru_maxrss: the latter counts the benchmark's own memory that the
        // child shared between fork and exec.
        let peak_rss_kib = proc_status_kib(self.pid(), "VmHWM:");
        // SAFETY: signalling and reaping our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let mut status = 0;
        // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes one status and one rusage through valid pointers.
        let reaped = unsafe { libc::wait4(self.pid(), &mut status, 0, &mut usage) };
        assert_eq!(reaped, self.pid(), "wait4 failed");
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        let used = Usage { cpu: tv(usage.ru_utime) + tv(usage.ru_stime), peak_rss_kib };
        // The listener has exited, so its stderr is closed: the reader ends after the last
        // line.
        self.reader.join().expect("log reader thread");
        let log = self.log.lock().unwrap().clone();
        (used, log)
    }
}

fn proc_cpu(pid: i32) -> Duration {
    cpu_from_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// User + system time from the text of a `/proc/.../stat` file.
fn cpu_from_stat(stat: &str) -> Duration {
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// A stretch in which the listener's CPU did not grow.
pub struct Quiet {
    pub began: CpuSnapshot,
    pub ended: CpuSnapshot,
}

/// The listener's CPU at one moment: by thread and for the whole process.
#[derive(Clone)]
pub struct CpuSnapshot {
    pub threads: Vec<ThreadUse>,
    /// User + system of the whole process from `/proc/<pid>/stat` (10 ms ticks), exited
    /// threads included.
    process: Duration,
    /// Every thread's time is from schedstat.
    exact: bool,
    pub at: Instant,
}

/// What the listener used between two snapshots.
pub struct CpuPhase {
    /// All threads (schedstat), or the process (ticks) where schedstat is missing.
    pub total: Duration,
    /// By thread name, only what each used in the phase.
    pub threads: Vec<ThreadUse>,
}

impl CpuSnapshot {
    /// CPU of all threads so far: exact where schedstat is there, else the process's ticks.
    pub fn total(&self) -> Duration {
        if self.exact {
            self.threads.iter().map(|thread| thread.cpu).sum()
        } else {
            self.process
        }
    }

    /// What was used from `before` to this snapshot, by thread and in all. Cross-checks the
    /// threads' sum against the process's own total (which also counts threads that exited
    /// meanwhile, which the threads' sum misses) and warns when they differ by more than
    /// 3 % (and more than the 25 ms two tick roundings may account for).
    pub fn since(&self, before: &CpuSnapshot, what: &str) -> CpuPhase {
        let threads: Vec<ThreadUse> = self
            .threads
            .iter()
            .map(|thread| {
                let earlier = before.threads.iter().find(|b| b.name == thread.name);
                ThreadUse {
                    name: thread.name.clone(),
                    cpu: thread.cpu.saturating_sub(earlier.map_or(Duration::ZERO, |b| b.cpu)),
                    switches: thread.switches.saturating_sub(earlier.map_or(0, |b| b.switches)),
                    exact: thread.exact,
                }
            })
            .collect();
        let total = self.total().saturating_sub(before.total());
        let process = self.process.saturating_sub(before.process);
        if self.exact && disagree(total, process) {
            eprintln!(
                "rgap-bench: warning: {what}: listener CPU by thread {:.1} ms, by process \
                 {:.1} ms ({:+.1} %): a thread came or went, or the clocks differ",
                total.as_secs_f64() * 1e3,
                process.as_secs_f64() * 1e3,
                100.0 * (process.as_secs_f64() / total.as_secs_f64().max(1e-9) - 1.0)
            );
        }
        CpuPhase { total, threads }
    }
}

/// Whether two measures of the same CPU time differ by more than 3 % and more than 25 ms
/// (the process total is floored to 10 ms ticks, user and system apart, at both ends).
fn disagree(a: Duration, b: Duration) -> bool {
    let diff = a.abs_diff(b);
    diff > Duration::from_millis(25) && diff.as_secs_f64() > 0.03 * a.max(b).as_secs_f64()
}

/// What one thread (or the threads of one name) used.
#[derive(Clone)]
pub struct ThreadUse {
    pub name: String,
    pub cpu: Duration,
    /// Context switches, voluntary (it waited) and not (it was preempted).
    pub switches: u64,
    /// `cpu` is from schedstat (nanoseconds), not from 10 ms ticks.
    pub exact: bool,
}

fn proc_status_kib(pid: i32, key: &str) -> u64 {
    status_value(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(), key)
}

/// The number after `key` in the text of a `/proc/.../status` file (0 if absent).
fn status_value(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Pins every thread of process `pid` (or of this process, for 0) to `cpu`, so that the
/// listener and the sender each have a core of their own.
pub fn pin(pid: i32, cpu: usize) {
    let dir = if pid == 0 { "/proc/self/task".to_owned() } else { format!("/proc/{pid}/task") };
    let tids = std::fs::read_dir(dir).expect("listing threads");
    for tid in tids.filter_map(Result::ok) {
        let Ok(tid) = tid.file_name().to_string_lossy().parse::<i32>() else { continue };
        // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get valid pointers.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// A value from the `datagram totals` log line the listener prints when it stops, e.g.
/// `accepted`. A missing line or key is an error (the count is unknown, not zero).
pub fn try_total(log: &[String], key: &str) -> Result<u64, String> {
    let line = log
        .iter()
        .rev()
        .find(|l| l.contains("datagram totals"))
        .ok_or("the listener logged no \"datagram totals\" line when it stopped")?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(&format!("{key}=")))
        .ok_or_else(|| format!("no {key}= in the listener's totals: {line}"))?
        .trim_end_matches(',')
        .parse()
        .map_err(|error| format!("{key}= in the listener's totals ({line}): {error}"))
}

/// [`try_total`], ending the benchmark with an error when the count is missing.
pub fn total(log: &[String], key: &str) -> u64 {
    try_total(log, key).unwrap_or_else(|error| {
        eprintln!("rgap-bench: {error}");
        std::process::exit(1)
    })
}

/// Lines of a file that contain `needle` (0 if the file does not exist yet).
pub fn count_lines(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map_or(0, |text| text.lines().filter(|l| l.contains(needle)).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| line.to_string()).collect()
    }

    #[test]
    fn a_total_is_read_from_the_last_totals_line() {
        let log = log(&[
            "INFO datagram totals: received=1 accepted=1",
            "INFO datagram totals: received=7 accepted=5 bad_signature=2",
        ]);
        assert_eq!(try_total(&log, "accepted"), Ok(5));
        assert_eq!(try_total(&log, "bad_signature"), Ok(2));
    }

    #[test]
    fn a_missing_totals_line_or_key_is_an_error_not_zero() {
        assert!(try_total(&log(&["INFO listener started"]), "accepted").is_err());
        let totals = log(&["INFO datagram totals: received=7"]);
        assert!(try_total(&totals, "accepted").unwrap_err().contains("accepted="));
    }

    #[test]
    fn cpu_measures_disagree_beyond_three_percent_and_25_ms() {
        let ms = Duration::from_millis;
        assert!(!disagree(ms(1000), ms(1025)));
        assert!(disagree(ms(1000), ms(1040)));
        assert!(!disagree(ms(100), ms(115)), "within two tick roundings");
    }
}
