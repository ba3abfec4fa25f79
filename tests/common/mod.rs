//! Shared helpers for end-to-end tests: build the plugin `.so` files once, start the real
//! `rgap listener` on a config in a temporary directory, read its log as it runs, send it
//! real signed datagrams, and wait for conditions by polling with a deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rgap_core::protocol::{encode_signed, unix_micros, Announcement};
use rgap_core::psk::Psk;

pub mod vectors;

/// The PSK of the seed README's example.
pub const PSK: &str = "8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431";
/// Generous: CI machines are slow, and every wait ends as soon as its condition holds.
pub const WAIT: Duration = Duration::from_secs(30);

/// The `rgap` binary under test.
pub fn rgap_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rgap"))
}

/// Builds every workspace member once per test binary, so the plugin `.so` files sit next
/// to the `rgap` binary (`cargo test` alone does not build cdylibs). Returns that directory.
pub fn plugin_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let binary = rgap_binary();
        let profile_dir = binary.parent().expect("binary has a directory").to_path_buf();
        let target_dir = profile_dir.parent().expect("profile dir has a parent");
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--workspace", "--quiet", "--target-dir"])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build for the plugins");
        assert!(status.success(), "building the plugins failed");
        profile_dir
    })
}

/// `rgap ARGS...` with a clean environment (no `RGAP_*`, no `RUST_LOG`) and captured output.
pub fn rgap_command(args: &[&str]) -> Command {
    let mut command = Command::new(rgap_binary());
    command
        .args(args)
        .env_remove("RGAP_ADDRESS")
        .env_remove("RGAP_PSK")
        .env_remove("RGAP_PSK_FILE")
        .env_remove("RGAP_CHECK")
        .env_remove("RGAP_CHECK_TIMEOUT")
        .env_remove("RGAP_RISE")
        .env_remove("RGAP_FALL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a one-shot command to completion, killing it (and failing) if it outlives `WAIT`.
pub fn finish(mut command: Command) -> std::process::Output {
    let child = command.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Its output is read while it runs (by `wait_with_output`, on a thread of its own): a
    // command that prints more than a pipe holds would otherwise wait for us forever.
    let (exited, exit) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = exited.send(());
        output
    });
    if exit.recv_timeout(WAIT).is_err() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waiter.join();
        panic!("rgap did not exit within {WAIT:?}");
    }
    waiter.join().unwrap().unwrap()
}

/// A port that is free for UDP and TCP on loopback, for a listener to bind.
///
/// Taken below the kernel's ephemeral range (32768 and up), so that no socket bound to port
/// 0 (a test's sender, a client) can be handed the same port between this check and the
/// listener's bind; each test process starts at its own offset and counts up.
pub fn free_udp_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        let udp = UdpSocket::bind(("127.0.0.1", port));
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN);
}

/// A free TCP+UDP port on loopback, for servers that bind both.
pub fn free_port() -> u16 {
    free_udp_port()
}

/// A signed announcement of `ip` in `group`, stamped now.
pub fn announcement(group: u64, ip: &str, psk: &str) -> [u8; 66] {
    announcement_at(group, ip, psk, unix_micros(SystemTime::now()))
}

/// A signed announcement with an explicit timestamp (Unix µs).
pub fn announcement_at(group: u64, ip: &str, psk: &str, timestamp_unix_us: i64) -> [u8; 66] {
    let address: IpAddr = ip.parse().expect("test IP");
    let psk = Psk::from_hex(psk).expect("test PSK");
    encode_signed(&Announcement { group, timestamp_unix_us, address }, &psk)
}

/// Sends one datagram to `to`, always from the same socket (one per address family). The
/// listener's workers share its port (SO_REUSEPORT) and the kernel spreads senders over them
/// by source address and port, so datagrams keep their order only when they come from one
/// sender, as an agent's do: a test that sends, then waits for a marker, needs that order.
pub fn send_to(to: SocketAddr, datagram: &[u8]) {
    static V4: OnceLock<UdpSocket> = OnceLock::new();
    static V6: OnceLock<UdpSocket> = OnceLock::new();
    let socket = match to {
        SocketAddr::V4(_) => V4.get_or_init(|| UdpSocket::bind("127.0.0.1:0").unwrap()),
        SocketAddr::V6(_) => V6.get_or_init(|| UdpSocket::bind("[::1]:0").unwrap()),
    };
    socket.send_to(datagram, to).unwrap();
}

/// Polls `condition` until it holds or `WAIT` passes; returns whether it held.
pub fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The listener's stderr, collected line by line as it arrives.
#[derive(Default)]
struct LogLines {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

/// A running `rgap listener`, stopped with SIGKILL if the test forgets to stop it.
pub struct RunningListener {
    child: Option<Child>,
    log: Arc<LogLines>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Writes `config` to `rgap.yaml` in a fresh directory and starts the listener there.
pub fn spawn_listener(config: &str) -> RunningListener {
    spawn_listener_with_env(config, &[])
}

/// As [`spawn_listener`], with extra environment variables.
pub fn spawn_listener_with_env(config: &str, env: &[(&str, &str)]) -> RunningListener {
    spawn_listener_full(config, env, &[])
}

/// As [`spawn_listener`], run through `wrapper` (e.g. `ip netns exec NAME`), which must
/// exec rgap in its place so that signals reach it.
pub fn spawn_listener_wrapped(config: &str, wrapper: &[&str]) -> RunningListener {
    spawn_listener_full(config, &[], wrapper)
}

/// As [`spawn_listener`], with `files` (relative path, content) written into the
/// listener's directory first, e.g. a template the config names relatively.
pub fn spawn_listener_with_files(config: &str, files: &[(&str, &str)]) -> RunningListener {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    spawn_listener_in(dir, config, &[], &[])
}

fn spawn_listener_full(config: &str, env: &[(&str, &str)], wrapper: &[&str]) -> RunningListener {
    spawn_listener_in(tempfile::tempdir().unwrap(), config, env, wrapper)
}

fn spawn_listener_in(
    dir: tempfile::TempDir,
    config: &str,
    env: &[(&str, &str)],
    wrapper: &[&str],
) -> RunningListener {
    plugin_dir();
    let config_path = dir.path().join("rgap.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(rgap_binary());
            command
        }
        None => Command::new(rgap_binary()),
    };
    command
        .arg("listener")
        .arg("-c")
        .arg(&config_path)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("RGAP_PLUGIN_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("starting rgap listener");
    let log = Arc::new(LogLines::default());
    let stderr = child.stderr.take().unwrap();
    let reader_log = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[rgap] {line}");
            // A test that panicked while holding the lock poisons it; keep reading anyway.
            reader_log.lines.lock().unwrap_or_else(|e| e.into_inner()).0.push(line);
            reader_log.changed.notify_all();
        }
        reader_log.lines.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        reader_log.changed.notify_all();
    });
    RunningListener { child: Some(child), log, dir, config_path }
}

/// Starts a listener and waits until it says it has started; panics with its log if not.
pub fn start_listener(config: &str) -> RunningListener {
    let listener = spawn_listener(config);
    listener.wait_for_log("listener started");
    listener
}

impl RunningListener {
    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lines.lock().unwrap().0.clone()
    }

    /// Lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.log().into_iter().filter(|line| line.contains(needle)).collect()
    }

    /// Waits for a log line containing `needle` and returns it; panics after `WAIT`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_count(needle, 1)
    }

    /// Waits until `count` lines contain `needle`; returns the last of them.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + WAIT;
        let mut state = self.log.lines.lock().unwrap();
        loop {
            let matching: Vec<&String> = state.0.iter().filter(|l| l.contains(needle)).collect();
            if matching.len() >= count {
                return matching[count - 1].clone();
            }
            let now = Instant::now();
            if state.1 || now > deadline {
                let why = if state.1 { "rgap exited" } else { "timed out" };
                panic!("{why} waiting for {count}× {needle:?}; log:\n{}", state.0.join("\n"));
            }
            state = self.log.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends SIGTERM and waits for exit (SIGKILL after `WAIT`); returns the status.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id() as i32, libc::SIGTERM);
        wait_with_deadline(&mut child)
    }

    /// Sends SIGTERM and waits for exit (SIGKILL after `WAIT`); returns the status and
    /// every log line, the shutdown lines included.
    pub fn terminate_and_wait(mut self) -> (ExitStatus, Vec<String>) {
        signal(self.pid(), libc::SIGTERM);
        self.wait_exit_keeping_dir()
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(mut self) -> (ExitStatus, Vec<String>) {
        self.wait_exit_keeping_dir()
    }

    /// As [`Self::wait_exit`], keeping `self` (and so its directory) for inspection.
    pub fn wait_exit_keeping_dir(&mut self) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("listener already waited for");
        let status = wait_with_deadline(&mut child);
        // The reader thread finishes once stderr closes.
        let mut state = self.log.lines.lock().unwrap();
        while !state.1 {
            state = self.log.changed.wait_timeout(state, WAIT).unwrap().0;
        }
        (status, state.0.clone())
    }
}

fn wait_with_deadline(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rgap did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` to the process `pid` (a child of this test); a process already gone is fine.
pub fn signal(pid: i32, signal: i32) {
    let signal = nix::sys::signal::Signal::try_from(signal).expect("a valid signal number");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

impl Drop for RunningListener {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `rgap listener` on `config`, expecting it to fail at start; returns its stderr.
pub fn listener_start_error(config: &str) -> String {
    let listener = spawn_listener(config);
    let (status, log) = listener.wait_exit();
    assert!(!status.success(), "rgap should have failed; log:\n{}", log.join("\n"));
    log.join("\n")
}

/// A minimal config: one unicast listen address, group 1000 with `group_extra` lines
/// (indented two spaces, e.g. "  expire: 15s\n"), then `outputs`.
pub fn config(port: u16, group_extra: &str, outputs: &str) -> String {
    format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1000\n  psk: {PSK}\n{group_extra}outputs:\n{outputs}"
    )
}

/// 127.0.0.1 at `port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The eventlog output's line for `ip` joining group 1000.
pub fn joined(ip: &str) -> String {
    format!("host {ip} has joined group 1000")
}

/// The eventlog output's line for `ip` leaving group 1000.
pub fn left(ip: &str) -> String {
    format!("host {ip} has left group 1000")
}
