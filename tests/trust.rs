//! End-to-end: membership you can trust. The real `rgap agent` with health checks and signed
//! leaves against the real `rgap listener` (eventlog output), and hand-made datagrams for the
//! replay and address guards and for key rotation. Leaves are signed here with an HMAC
//! written in this file, independently of `rgap-core`.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime};

use common::vectors::vector_field;
use common::*;
use hmac::{Hmac, Mac};
use nix::sys::signal::Signal;
use rgap_core::protocol::unix_micros;
use sha2::Sha256;

const EVENTLOG: &str = "- kind: eventlog\n";
/// A second group whose joins show that everything sent before them has been dealt with.
const MARKER_GROUP: u64 = 2000;
const OTHER_PSK: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn now_us() -> i64 {
    unix_micros(SystemTime::now())
}

/// A leave as the design specifies it: the announcement layout with version 0x0101, signed
/// `HMAC-SHA256(psk, "RGAP leave" || first 34 bytes)`.
fn leave_at(group: u64, ip: &str, psk: &str, timestamp_unix_us: i64) -> [u8; 66] {
    let mut datagram = announcement_at(group, ip, psk, timestamp_unix_us);
    datagram[..2].copy_from_slice(&[0x01, 0x01]);
    let mut mac = Hmac::<Sha256>::new_from_slice(&hex::decode(psk).unwrap()).unwrap();
    mac.update(b"RGAP leave");
    mac.update(&datagram[..34]);
    datagram[34..].copy_from_slice(&mac.finalize().into_bytes());
    datagram
}

fn send_signal(pid: u32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// Stops the listener with SIGTERM and returns its whole log.
fn stop(listener: RunningListener) -> Vec<String> {
    send_signal(listener.pid() as u32, Signal::SIGTERM);
    let (status, log) = listener.wait_exit();
    assert!(status.success(), "exit status {status}");
    log
}

/// The `datagram totals` line of a stopped listener's log.
fn totals(log: &[String]) -> String {
    log.iter().find(|line| line.contains("datagram totals")).expect("totals line").clone()
}

fn assert_totals(totals: &str, expected: &[&str]) {
    for fragment in expected {
        // A trailing space or the line's end, so that `stale=1` does not match `stale=10`.
        let found = totals.contains(&format!("{fragment} ")) || totals.ends_with(fragment);
        assert!(found, "{fragment} missing in: {totals}");
    }
}

/// Group 1000 (its lines given, `psk` included) and the marker group, with eventlog.
fn trust_config(port: u16, group_1000: &str) -> String {
    format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1000\n{group_1000}- id: {MARKER_GROUP}\n  psk: {PSK}\n  expire: 10m\noutputs:\n{EVENTLOG}"
    )
}

/// Group 1000's lines with the usual key and `extra`.
fn keyed(extra: &str) -> String {
    format!("  psk: {PSK}\n{extra}")
}

/// Announces a new member of the marker group and waits for its join: whatever was sent
/// before it has been dealt with by then (one source reads its socket in order, and the
/// table applies what it read in order).
fn sync_with(listener: &RunningListener, port: u16) {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    let ip = format!("10.255.0.{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    send_to(local(port), &announcement(MARKER_GROUP, &ip, PSK));
    listener.wait_for_log(&format!("host {ip} has joined group {MARKER_GROUP}"));
}

/// Joins of group 1000 in the log so far.
fn joins(listener: &RunningListener) -> usize {
    listener.lines_with("has joined group 1000").len()
}

// ---------------------------------------------------------------------------------------
// The agent, run for real, with its log collected as it runs.

/// The agent's stderr lines so far, and whether it has closed.
#[derive(Default)]
struct AgentLog {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

struct RunningAgent {
    child: Option<Child>,
    log: Arc<AgentLog>,
}

fn spawn_agent(args: &[&str]) -> RunningAgent {
    let mut command = rgap_command(&["agent"]);
    command.args(args).env("RUST_LOG", "info").stdout(Stdio::null());
    let mut child = command.spawn().expect("starting rgap agent");
    let log = Arc::new(AgentLog::default());
    let stderr = child.stderr.take().unwrap();
    let reader = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[agent] {line}");
            reader.lines.lock().unwrap().0.push(line);
            reader.changed.notify_all();
        }
        reader.lines.lock().unwrap().1 = true;
        reader.changed.notify_all();
    });
    RunningAgent { child: Some(child), log }
}

impl RunningAgent {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let state = self.log.lines.lock().unwrap();
        state.0.iter().filter(|line| line.contains(needle)).cloned().collect()
    }

    fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_count(needle, 1)
    }

    /// Waits for the `count`-th line containing `needle`; returns it.
    fn wait_for_log_count(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + WAIT;
        let mut state = self.log.lines.lock().unwrap();
        loop {
            if let Some(line) = state.0.iter().filter(|line| line.contains(needle)).nth(count - 1) {
                return line.clone();
            }
            let now = Instant::now();
            if state.1 || now > deadline {
                panic!("agent: no {needle:?} in its log:\n{}", state.0.join("\n"));
            }
            state = self.log.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Sends `signal` and waits for the exit; returns whether it exited 0.
    fn signal_and_wait(mut self, signal: Signal) -> bool {
        let mut child = self.child.take().unwrap();
        send_signal(child.id(), signal);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "agent did not exit after {signal}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Health checks and leaves from the real agent.

#[test]
fn agent_joins_while_its_check_passes_leaves_when_it_fails_and_rejoins_after_rise() {
    let port = free_udp_port();
    // An expire far longer than the test's waits: every leave seen comes from a signed leave.
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n")));
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up");
    std::fs::write(&up, "").unwrap();
    let check = format!("test -e {}", up.display());
    let dst = format!("127.0.0.1:{port}");
    let agent = spawn_agent(&[
        "-g",
        "1000",
        "-a",
        "10.20.0.1",
        "-k",
        PSK,
        "-i",
        "100ms",
        "-d",
        &dst,
        "--check",
        &check,
        "--rise",
        "2",
        "--fall",
        "3",
    ]);
    listener.wait_for_log(&joined("10.20.0.1"));
    agent.wait_for_log("health check passed 2 time(s) in a row: healthy, announcing");

    std::fs::remove_file(&up).unwrap();
    listener.wait_for_log(&left("10.20.0.1"));
    let line = agent.wait_for_log("health check failed 3 time(s) in a row");
    assert!(line.contains("INFO") && line.contains("exit status: 1"), "{line}");

    std::fs::write(&up, "").unwrap();
    listener.wait_for_log_count(&joined("10.20.0.1"), 2);
    // One INFO line per transition, none for the checks in between (the agent's second one
    // may reach the test's log reader after the listener's join).
    agent.wait_for_log_count("healthy, announcing", 2);
    assert_eq!(agent.lines_with("healthy, announcing").len(), 2);
    assert_eq!(agent.lines_with("unhealthy, sending a leave").len(), 1);
    assert_eq!(listener.lines_with(&left("10.20.0.1")).len(), 1);
}

#[test]
fn a_check_that_hangs_is_killed_at_its_timeout_and_counts_as_a_failure() {
    let port = free_udp_port();
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n")));
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("hang");
    // Passes at once until `hang` exists, then hangs far past the timeout.
    let check = format!("if test -e {0}; then sleep 613; fi", hang.display());
    let dst = format!("127.0.0.1:{port}");
    let agent = spawn_agent(&[
        "-g",
        "1000",
        "-a",
        "10.20.0.2",
        "-k",
        PSK,
        "-i",
        "100ms",
        "-d",
        &dst,
        "--check",
        &check,
        "--check-timeout",
        "200ms",
        "--rise",
        "1",
        "--fall",
        "1",
    ]);
    listener.wait_for_log(&joined("10.20.0.2"));
    std::fs::write(&hang, "").unwrap();
    listener.wait_for_log(&left("10.20.0.2"));
    let line = agent.wait_for_log("health check failed 1 time(s) in a row");
    assert!(line.contains("killed after the 200ms timeout"), "{line}");
    // Checks pass again; no killed check's `sleep 613` (a grandchild of the agent, in the
    // check's process group) may be left running.
    std::fs::remove_file(&hang).unwrap();
    listener.wait_for_log_count(&joined("10.20.0.2"), 2);
    let sleepers = || {
        let output = std::process::Command::new("pgrep").args(["-f", "^sleep 613$"]).output();
        output.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    };
    assert!(eventually(|| sleepers().is_empty()), "killed checks left: {}", sleepers());
}

#[test]
fn sigterm_and_sigint_make_the_agent_leave_unless_no_leave() {
    for (signal, ip) in [(Signal::SIGTERM, "10.21.0.1"), (Signal::SIGINT, "10.21.0.2")] {
        let port = free_udp_port();
        let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n")));
        let dst = format!("127.0.0.1:{port}");
        let agent = spawn_agent(&["-g", "1000", "-a", ip, "-k", PSK, "-i", "100ms", "-d", &dst]);
        listener.wait_for_log(&joined(ip));
        assert!(agent.signal_and_wait(signal), "agent should exit 0 on {signal}");
        listener.wait_for_log(&left(ip));
    }

    let port = free_udp_port();
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n")));
    let dst = format!("127.0.0.1:{port}");
    let agent = spawn_agent(&[
        "-g",
        "1000",
        "-a",
        "10.21.0.3",
        "-k",
        PSK,
        "-i",
        "100ms",
        "-d",
        &dst,
        "--no-leave",
    ]);
    listener.wait_for_log(&joined("10.21.0.3"));
    assert!(agent.signal_and_wait(Signal::SIGTERM));
    sync_with(&listener, port);
    assert!(listener.lines_with(&left("10.21.0.3")).is_empty(), "--no-leave sent a leave");
}

#[test]
fn agent_leave_subcommand_removes_the_member_at_once() {
    let port = free_udp_port();
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n")));
    send_to(local(port), &announcement(1000, "10.22.0.1", PSK));
    listener.wait_for_log(&joined("10.22.0.1"));
    let dst = format!("127.0.0.1:{port}");
    let output = finish(rgap_command(&[
        "agent",
        "--leave",
        "-g",
        "1000",
        "-a",
        "10.22.0.1",
        "-k",
        PSK,
        "-d",
        &dst,
    ]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    listener.wait_for_log(&left("10.22.0.1"));
}

// ---------------------------------------------------------------------------------------
// Leaves and replays, hand-made.

#[test]
fn after_a_leave_a_replayed_older_announcement_does_not_rejoin_but_a_newer_one_does() {
    let port = free_udp_port();
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n  clock_skew: 1m\n")));
    let t = now_us();
    let old = announcement_at(1000, "10.23.0.1", PSK, t - 2_000);
    send_to(local(port), &old);
    listener.wait_for_log(&joined("10.23.0.1"));
    send_to(local(port), &leave_at(1000, "10.23.0.1", PSK, t - 1_000));
    listener.wait_for_log(&left("10.23.0.1"));

    send_to(local(port), &old);
    sync_with(&listener, port);
    assert_eq!(listener.lines_with(&joined("10.23.0.1")).len(), 1, "the replay re-joined");

    send_to(local(port), &announcement_at(1000, "10.23.0.1", PSK, t));
    listener.wait_for_log_count(&joined("10.23.0.1"), 2);
    let log = stop(listener);
    // The first announcement, the leave, the marker and the newer announcement.
    assert_totals(&totals(&log), &["accepted=4", "stale=1"]);
}

#[test]
fn leaves_with_the_wrong_key_or_forged_from_an_announcement_are_ignored() {
    let port = free_udp_port();
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n")));
    send_to(local(port), &announcement(1000, "10.24.0.1", PSK));
    listener.wait_for_log(&joined("10.24.0.1"));
    let t = now_us();
    let wrong_key = leave_at(1000, "10.24.0.1", OTHER_PSK, t);
    let mut forged = announcement_at(1000, "10.24.0.1", PSK, t);
    forged[..2].copy_from_slice(&[0x01, 0x01]);
    send_to(local(port), &wrong_key);
    send_to(local(port), &forged);
    sync_with(&listener, port);
    assert!(listener.lines_with(&left("10.24.0.1")).is_empty(), "a bad leave was obeyed");
    let log = stop(listener);
    assert_totals(&totals(&log), &["bad_signature=2", "bad_version=0"]);
}

#[test]
fn a_leave_older_than_the_members_newest_announcement_is_stale() {
    let port = free_udp_port();
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n")));
    let t = now_us();
    send_to(local(port), &announcement_at(1000, "10.25.0.1", PSK, t));
    listener.wait_for_log(&joined("10.25.0.1"));
    send_to(local(port), &leave_at(1000, "10.25.0.1", PSK, t - 1_000));
    sync_with(&listener, port);
    assert!(listener.lines_with(&left("10.25.0.1")).is_empty());
    assert_totals(&totals(&stop(listener)), &["stale=1"]);
}

#[test]
fn older_announcements_are_stale_and_exact_duplicates_are_counted_without_a_warning() {
    let port = free_udp_port();
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n")));
    let t = now_us();
    let newest = announcement_at(1000, "10.26.0.1", PSK, t);
    send_to(local(port), &newest);
    listener.wait_for_log(&joined("10.26.0.1"));
    send_to(local(port), &newest); // an exact duplicate
    send_to(local(port), &newest); // and another
    send_to(local(port), &[0u8; 3]); // wrong_length, so that a drop report comes
    let report = listener.wait_for_log("datagram(s) in the last 10s:");
    assert!(report.contains("wrong_length=1") && !report.contains("stale"), "{report}");
    send_to(local(port), &announcement_at(1000, "10.26.0.1", PSK, t - 1)); // older
    let report = listener.wait_for_log_count("datagram(s) in the last 10s:", 2);
    assert!(report.contains("stale=1"), "an older announcement is worth a warning: {report}");
    assert_totals(&totals(&stop(listener)), &["accepted=1", "stale=3", "wrong_length=1"]);
}

// ---------------------------------------------------------------------------------------
// Address guards.

#[test]
fn addresses_that_are_no_single_host_are_dropped_as_address_not_allowed() {
    let port = free_udp_port();
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n")));
    for ip in ["0.0.0.0", "255.255.255.255", "239.82.71.65", "224.0.0.1", "::", "ff02::1"] {
        send_to(local(port), &announcement(1000, ip, PSK));
    }
    send_to(local(port), &leave_at(1000, "0.0.0.0", PSK, now_us()));
    sync_with(&listener, port);
    assert_eq!(joins(&listener), 0);
    assert_totals(&totals(&stop(listener)), &["accepted=1", "address_not_allowed=7"]);
}

#[test]
fn allowed_networks_confine_the_members_of_a_group() {
    let port = free_udp_port();
    let group = "  expire: 10m\n  allowed_networks: [10.28.0.0/16, '2001:db8::/32']\n";
    let listener = start_listener(&trust_config(port, &keyed(group)));
    send_to(local(port), &announcement(1000, "10.29.0.1", PSK));
    send_to(local(port), &announcement(1000, "2001:db9::1", PSK));
    send_to(local(port), &announcement(1000, "2001:db8::1", PSK));
    send_to(local(port), &announcement(1000, "10.28.3.4", PSK));
    sync_with(&listener, port);
    assert_eq!(joins(&listener), 2);
    listener.wait_for_log(&joined("2001:db8::1"));
    listener.wait_for_log(&joined("10.28.3.4"));
    assert_totals(&totals(&stop(listener)), &["address_not_allowed=2"]);
}

#[test]
fn a_full_group_drops_new_addresses_with_one_warning_and_refreshes_its_members() {
    let port = free_udp_port();
    let listener = start_listener(&trust_config(port, &keyed("  expire: 10m\n  max_members: 2\n")));
    send_to(local(port), &announcement(1000, "10.30.0.1", PSK));
    send_to(local(port), &announcement(1000, "10.30.0.2", PSK));
    listener.wait_for_log(&joined("10.30.0.1"));
    listener.wait_for_log(&joined("10.30.0.2"));
    for last in 3..8 {
        send_to(local(port), &announcement(1000, &format!("10.30.0.{last}"), PSK));
    }
    let warning = listener.wait_for_log("is full");
    assert!(warning.contains("WARN") && warning.contains("group 1000"), "{warning}");
    // Members still refresh; a refresh is no drop.
    send_to(local(port), &announcement(1000, "10.30.0.1", PSK));
    sync_with(&listener, port);
    assert_eq!(joins(&listener), 2);
    let log = stop(listener);
    assert_eq!(log.iter().filter(|l| l.contains("is full")).count(), 1, "one rate-limited WARN");
    // Two joins, a refresh and the marker.
    assert_totals(&totals(&log), &["accepted=4", "group_full=5", "stale=0"]);
}

/// Tries to bind 127.0.0.1:`port` with SO_REUSEADDR and SO_REUSEPORT (the two ways to share
/// a port) in a forked child, as user `uid` if given; returns the child's errno (0: bound).
fn bind_both_ways_in_child(port: u16, uid: Option<u32>) -> i32 {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, setgid, setuid, ForkResult, Gid, Uid};
    // SAFETY: the child makes system calls only (no allocation, no locks) and leaves with
    // _exit, so nothing another thread of the test held at fork time is touched.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = (|| {
                if let Some(uid) = uid {
                    // The socket's owner is whoever creates it: drop to `uid` first.
                    setgid(Gid::from_raw(uid)).map_err(|_| 101)?;
                    setuid(Uid::from_raw(uid)).map_err(|_| 102)?;
                    if nix::unistd::geteuid().as_raw() != uid {
                        return Err(103);
                    }
                }
                let fd = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None)
                    .map_err(|e| e as i32)?;
                setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| e as i32)?;
                setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| e as i32)?;
                let address = SockaddrIn::new(127, 0, 0, 1, port);
                bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address).map_err(|e| e as i32)
            })();
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { nix::libc::_exit(code.err().unwrap_or(0)) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("the intruder child ended with {other:?}"),
        },
    }
}

#[test]
fn no_other_user_can_bind_the_listeners_unicast_address() {
    // The listener's sockets carry SO_REUSEPORT (its workers share the address), which the
    // kernel honours only among sockets of the same effective user, and never SO_REUSEADDR,
    // which would let anyone share a unicast port. So the intruder must be another user.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run the intruder as another user (nobody)");
        return;
    }
    let port = free_udp_port();
    let listener =
        start_listener(&format!("workers: 2\n{}", trust_config(port, &keyed("  expire: 10m\n"))));
    const NOBODY: u32 = 65534;
    let errno = bind_both_ways_in_child(port, Some(NOBODY));
    assert!(errno < 100, "the child could not become uid {NOBODY} (step {errno})");
    assert_eq!(
        nix::errno::Errno::from_raw(errno),
        nix::errno::Errno::EADDRINUSE,
        "another user bound the listener's port"
    );
    // What the security model says, shown: the same user (root here) can join the group,
    // which is why that user must be trusted with rgap as with its keys.
    assert_eq!(bind_both_ways_in_child(port, None), 0, "the kernel's same-user rule changed?");
    // And the listener still gets its announcements.
    sync_with(&listener, port);
}

// ---------------------------------------------------------------------------------------
// Keys.

#[test]
fn every_key_in_a_psk_list_is_accepted() {
    let port = free_udp_port();
    let keys = format!("  psk:\n  - {PSK}\n  - {OTHER_PSK}\n  expire: 10m\n");
    let listener = start_listener(&trust_config(port, &keys));
    send_to(local(port), &announcement(1000, "10.32.0.1", PSK));
    send_to(local(port), &announcement(1000, "10.32.0.2", OTHER_PSK));
    listener.wait_for_log(&joined("10.32.0.1"));
    listener.wait_for_log(&joined("10.32.0.2"));
    // Leaves too, under either key.
    send_to(local(port), &leave_at(1000, "10.32.0.2", PSK, now_us()));
    listener.wait_for_log(&left("10.32.0.2"));
    send_to(local(port), &announcement(1000, "10.32.0.3", &"22".repeat(32)));
    sync_with(&listener, port);
    let log = stop(listener);
    assert_totals(&totals(&log), &["bad_signature=1"]);
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn psk_file_keys_are_used_and_a_key_file_others_can_read_is_warned_about() {
    let port = free_udp_port();
    // The listener's directory is made by the harness; the key file goes beside the config,
    // written before the listener starts through a config naming it relatively.
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("group-1000.keys");
    write_mode(&keys, &format!("# rotated in March\n{OTHER_PSK}\n{PSK}  # old\n"), 0o644);
    let config = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1000\n  psk_file: {}\n  expire: 10m\noutputs:\n{EVENTLOG}",
        keys.display()
    );
    let listener = start_listener(&config);
    send_to(local(port), &announcement(1000, "10.33.0.1", PSK));
    send_to(local(port), &announcement(1000, "10.33.0.2", OTHER_PSK));
    listener.wait_for_log(&joined("10.33.0.1"));
    listener.wait_for_log(&joined("10.33.0.2"));
    let warning = listener.wait_for_log("holds pre-shared keys");
    assert!(
        warning.contains("WARN")
            && warning.contains(&format!(
                "{} is readable by others (mode 0644) and holds pre-shared keys: chmod 600 it",
                keys.display()
            )),
        "{warning}"
    );
    // The config itself holds no key, so it is not warned about.
    let log = stop(listener);
    assert_eq!(log.iter().filter(|l| l.contains("holds pre-shared keys")).count(), 1, "{log:?}");
}

/// Runs `rgap listener -c config_path` from another directory until `ip` (announced to
/// `port` once it has started) joins group 1000; returns its whole log.
fn run_from_elsewhere_until_join(config_path: &Path, port: u16, ip: &str) -> Vec<String> {
    plugin_dir();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(rgap_binary())
        .args(["listener", "-c"])
        .arg(config_path)
        .current_dir(elsewhere.path())
        .env("RUST_LOG", "info")
        .env_remove("RGAP_PLUGIN_PATH")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    for needle in ["listener started".to_string(), joined(ip)] {
        for line in lines.by_ref() {
            let found = line.contains(&needle);
            seen.push(line);
            if found {
                break;
            }
        }
        if needle == "listener started" {
            send_to(local(port), &announcement(1000, ip, PSK));
        }
    }
    send_signal(child.id(), Signal::SIGTERM);
    seen.extend(lines);
    assert!(child.wait().unwrap().success(), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains(&joined(ip))), "{seen:?}");
    seen
}

#[test]
fn a_relative_psk_file_is_read_from_the_configs_directory_and_a_private_one_is_not_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    write_mode(&dir.path().join("keys"), &format!("{PSK}\n"), 0o600);
    let config_path = dir.path().join("rgap.yaml");
    let text = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1000\n  psk_file: keys\n  expire: 10m\noutputs:\n{EVENTLOG}"
    );
    // Readable by all, but it holds no key: only key files matter.
    write_mode(&config_path, &text, 0o644);
    let log = run_from_elsewhere_until_join(&config_path, port, "10.34.0.1");
    assert!(!log.iter().any(|l| l.contains("holds pre-shared keys")), "{log:?}");
}

#[test]
fn a_config_holding_keys_that_others_can_read_is_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let config_path = dir.path().join("rgap.yaml");
    write_mode(&config_path, &trust_config(port, &keyed("  expire: 10m\n")), 0o640);
    let log = run_from_elsewhere_until_join(&config_path, port, "10.35.0.1");
    let warnings: Vec<&String> =
        log.iter().filter(|l| l.contains("holds pre-shared keys")).collect();
    let expected = format!(
        "{} is readable by others (mode 0640) and holds pre-shared keys: chmod 600 it",
        config_path.display()
    );
    assert!(warnings.len() == 1 && warnings[0].contains(&expected), "{warnings:?}");
    assert!(warnings[0].contains("WARN"), "{warnings:?}");
}

#[test]
fn psk_and_psk_file_together_or_a_bad_key_file_are_start_errors() {
    let port = free_udp_port();
    let both = config(port, "  expire: 10m\n  psk_file: keys\n", EVENTLOG);
    let error = listener_start_error(&both);
    let last = error.lines().last().unwrap();
    assert!(
        last.contains("rgap.yaml")
            && last.contains("groups[0].psk_file")
            && last.contains("not both"),
        "{last}"
    );

    let missing = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1000\n  psk_file: nosuch.keys\n  expire: 10m\noutputs:\n{EVENTLOG}"
    );
    let error = listener_start_error(&missing);
    let last = error.lines().last().unwrap();
    assert!(last.contains("groups[0].psk_file") && last.contains("nosuch.keys"), "{last}");
}

// ---------------------------------------------------------------------------------------
// Mixed fleets.

#[test]
fn the_go_agents_announcement_is_still_accepted() {
    let section = "valid go-agent-ipv4";
    let psk = vector_field("announcements.txt", section, "psk");
    let packet = hex::decode(vector_field("announcements.txt", section, "packet")).unwrap();
    let stamp: i64 =
        vector_field("announcements.txt", section, "timestamp_unix_us").parse().unwrap();
    // Whenever this runs, the vector's timestamp must fall within the clock skew.
    let hours = ((now_us() - stamp).unsigned_abs() / 3_600_000_000) + 24;
    let port = free_udp_port();
    let config = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1000\n  psk: {psk}\n  expire: {hours}h\noutputs:\n{EVENTLOG}"
    );
    let listener = start_listener(&config);
    send_to(local(port), &packet);
    listener.wait_for_log(&joined("127.1.2.3"));
}

#[test]
fn the_leave_vector_is_accepted_by_the_listener() {
    let section = "valid leave-ipv4";
    let psk = vector_field("leaves.txt", section, "psk");
    let packet = hex::decode(vector_field("leaves.txt", section, "packet")).unwrap();
    let stamp: i64 = vector_field("leaves.txt", section, "timestamp_unix_us").parse().unwrap();
    let hours = ((now_us() - stamp).unsigned_abs() / 3_600_000_000) + 24;
    let port = free_udp_port();
    let config = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 42\n  psk: {psk}\n  expire: {hours}h\n- id: {MARKER_GROUP}\n  psk: {PSK}\n  expire: 10m\noutputs:\n{EVENTLOG}"
    );
    let listener = start_listener(&config);
    // The member joins with an announcement older than the vector's leave, which removes it.
    let announce = {
        let mut datagram = leave_at(42, "10.0.0.1", &psk, stamp - 1);
        datagram[..2].copy_from_slice(&[0x01, 0x00]);
        let mut mac = Hmac::<Sha256>::new_from_slice(&hex::decode(&psk).unwrap()).unwrap();
        mac.update(b"RGAP announce");
        mac.update(&datagram[..34]);
        datagram[34..].copy_from_slice(&mac.finalize().into_bytes());
        datagram
    };
    send_to(local(port), &announce);
    listener.wait_for_log("host 10.0.0.1 has joined group 42");
    send_to(local(port), &packet);
    listener.wait_for_log("host 10.0.0.1 has left group 42");
    let forged =
        hex::decode(vector_field("leaves.txt", "invalid leave-forged-from-announcement", "packet"))
            .unwrap();
    send_to(local(port), &forged);
    sync_with(&listener, port);
    assert_totals(&totals(&stop(listener)), &["accepted=3", "bad_signature=1"]);
}
