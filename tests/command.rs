//! End-to-end: the `command` output of the real listener runs real scripts with the live
//! addresses of its group on stdin, retries failures, logs their output (control characters
//! escaped), kills what runs past its timeout (children included), gives them the environment
//! asked for, reaps what they leave behind, and lets the listener stop promptly.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{
    announcement, config, eventually, listener_start_error, send_to, spawn_listener_with_env,
    start_listener, PSK,
};

/// Writes an executable `sh` script `name` into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A config with group 1000 (`group_extra` lines) and one command output.
fn command_config(port: u16, group_extra: &str, command: &Path, extra_spec: &str) -> String {
    config(
        port,
        group_extra,
        &format!(
            "- kind: command\n  spec:\n    group: 1000\n    command: [\"{}\"]\n{extra_spec}",
            command.display()
        ),
    )
}

fn announce(to: SocketAddr, ips: &[&str]) {
    for ip in ips {
        send_to(to, &announcement(1000, ip, PSK));
    }
}

/// The pid written into `file` by a script, once it is there.
fn pid_from(file: &Path) -> i32 {
    let mut pid = None;
    assert!(eventually(|| {
        pid = fs::read_to_string(file).ok().and_then(|text| text.trim().parse().ok());
        pid.is_some()
    }));
    pid.unwrap()
}

/// The state letter and parent pid of `pid`, from `/proc/<pid>/stat`; `None` once it is gone.
fn state_and_parent(pid: i32) -> Option<(String, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields follow the parenthesised command name, which may hold anything.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_owned();
    Some((state, fields.next()?.parse().ok()?))
}

/// Whether `pid` is a live process (a zombie waiting to be reaped does not count).
fn running(pid: i32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| state != "Z")
}

/// The zombies whose parent is `parent`.
fn zombies_of(parent: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| state_and_parent(pid).is_some_and(|(s, p)| s == "Z" && p == parent))
        .collect()
}

/// Kills a process the test started, if the test failed before rgap did.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if running(self.0) {
            common::signal(self.0, libc::SIGKILL);
        }
    }
}

#[test]
fn command_gets_the_live_addresses_retries_and_reruns_after_expiry() {
    let scripts = tempfile::tempdir().unwrap();
    let dir = scripts.path();
    fs::create_dir(dir.join("runs")).unwrap();
    // Fails its first attempt ever; then saves each run's stdin as runs/0000, runs/0001...
    let sync = script(
        dir,
        "sync.sh",
        &format!(
            "set -e\ndir='{}'\nif [ ! -e \"$dir/failed-once\" ]; then\n  : > \"$dir/failed-once\"\n  \
             echo 'first attempt fails on purpose' >&2\n  exit 3\nfi\n\
             run=\"$dir/runs/$(printf %04d \"$(ls \"$dir/runs\" | wc -l)\")\"\n\
             cat > \"$dir/stdin.tmp\"\nmv \"$dir/stdin.tmp\" \"$run\"\n\
             echo \"synced $(wc -l < \"$run\" | tr -d ' ') address(es)\"\n",
            dir.display()
        ),
    );
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let listener = start_listener(&command_config(
        port,
        "  expire: 2s\n",
        &sync,
        "    timeout: 10s\n    retries: 2\n",
    ));
    let runs = || -> Vec<String> {
        let mut names: Vec<PathBuf> =
            fs::read_dir(dir.join("runs")).unwrap().map(|entry| entry.unwrap().path()).collect();
        names.sort();
        names.iter().map(|path| fs::read_to_string(path).unwrap()).collect()
    };

    // Ready at once: one run with the (empty) list, which needs the retry.
    let line = listener.wait_for_log("stdout: synced 0 address(es)");
    assert!(line.contains("command#0: stdout: synced 0 address(es)"), "{line}");
    let failed = listener.wait_for_log("failed (attempt 1 of 2)");
    assert!(failed.ends_with("exit status: 3"), "{failed}");
    listener.wait_for_log("command#0: stderr: first attempt fails on purpose");
    assert_eq!(runs(), vec![String::new()]);

    // Members join (kept alive while we wait): stdin is exactly the live addresses.
    let all = "10.0.0.1\n10.0.0.2\n2001:db8::1\n";
    assert!(
        eventually(|| {
            announce(to, &["10.0.0.2", "2001:db8::1", "10.0.0.1"]);
            runs().last().is_some_and(|last| last == all)
        }),
        "{:?}",
        runs()
    );
    // Without refreshes they expire, and the command hears of the empty group.
    let before = runs().len();
    assert!(
        eventually(|| runs().len() > before && runs().last().is_some_and(String::is_empty)),
        "{:?}",
        runs()
    );
    // Refreshes change expiry times, not the member set: they never caused a run.
    let history = runs();
    for pair in history.windows(2) {
        assert_ne!(pair[0], pair[1], "two runs in a row with the same list: {history:?}");
    }
    assert!(listener.terminate().success());
}

#[test]
fn a_command_past_its_timeout_is_killed_with_its_children() {
    let scripts = tempfile::tempdir().unwrap();
    let child_pid = scripts.path().join("child.pid");
    let hang = script(
        scripts.path(),
        "hang.sh",
        &format!("sleep 1000 &\necho $! > '{}'\nwait\n", child_pid.display()),
    );
    let port = common::free_udp_port();
    let listener =
        start_listener(&command_config(port, "  expire: 15s\n", &hang, "    timeout: 1s\n"));
    let pid = pid_from(&child_pid);
    let _guard = KillOnDrop(pid);
    listener.wait_for_log("timed out after 1s; killed its process group");
    assert!(eventually(|| !running(pid)), "the command's child {pid} survived the timeout");
    listener.wait_for_log("failed 1 time(s)");
    assert!(listener.terminate().success());
}

#[test]
fn a_background_process_holding_stdout_does_not_hold_up_the_run() {
    let scripts = tempfile::tempdir().unwrap();
    let child_pid = scripts.path().join("child.pid");
    let detach = script(
        scripts.path(),
        "detach.sh",
        &format!(
            "sleep 1000 &\necho $! > '{}'\necho 'left a sleeper behind'\nexit 0\n",
            child_pid.display()
        ),
    );
    let port = common::free_udp_port();
    // The timeout is far beyond the test's patience: only wait_delay can end the run in time.
    let listener = start_listener(&command_config(
        port,
        "  expire: 15s\n",
        &detach,
        "    timeout: 1h\n    wait_delay: 200ms\n",
    ));
    let pid = pid_from(&child_pid);
    let _guard = KillOnDrop(pid);
    listener.wait_for_log("stdout: left a sleeper behind");
    listener.wait_for_log("stdout still open");
    listener.wait_for_log("succeeded");
    // A process the command left behind on purpose is not ours to kill after a clean exit.
    assert!(running(pid));
    assert!(listener.terminate().success());
}

#[test]
fn sigterm_while_a_command_runs_stops_promptly_and_leaves_no_process() {
    let scripts = tempfile::tempdir().unwrap();
    let pid_file = scripts.path().join("command.pid");
    let slow = script(
        scripts.path(),
        "slow.sh",
        &format!("echo $$ > '{}'\nexec sleep 1000\n", pid_file.display()),
    );
    let port = common::free_udp_port();
    let listener =
        start_listener(&command_config(port, "  expire: 15s\n", &slow, "    timeout: 1h\n"));
    let pid = pid_from(&pid_file);
    let _guard = KillOnDrop(pid);
    assert!(running(pid));
    // terminate() gives up (and fails the test) long before the 1 h timeout.
    assert!(listener.terminate().success());
    assert!(eventually(|| !running(pid)), "the command {pid} outlived the listener");
}

#[test]
fn a_missing_program_is_logged_at_each_run_and_is_not_fatal() {
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let missing = Path::new("/nonexistent/rgap-sync.sh");
    let listener =
        start_listener(&command_config(port, "  expire: 15s\n", missing, "    timeout: 1s\n"));
    let line = listener.wait_for_log("cannot run /nonexistent/rgap-sync.sh");
    assert!(line.contains("ERROR") && line.contains("No such file or directory"), "{line}");
    announce(to, &["10.0.0.1"]);
    listener.wait_for_log_count("cannot run /nonexistent/rgap-sync.sh", 2);
    assert!(listener.terminate().success());
}

#[test]
fn an_empty_command_or_a_zero_timeout_is_a_start_error() {
    let port = common::free_udp_port();
    let spec = |body: &str| {
        config(
            port,
            "  expire: 15s\n",
            &format!("- kind: command\n  spec:\n    group: 1000\n{body}"),
        )
    };
    let error = listener_start_error(&spec("    command: []\n    timeout: 5s\n"));
    assert!(error.contains("outputs[0]: kind \"command\""), "{error}");
    assert!(error.contains("spec.command: must name the program to run"), "{error}");

    let error = listener_start_error(&spec("    command: [/bin/true]\n    timeout: 0s\n"));
    assert!(error.contains("spec.timeout: must be greater than 0"), "{error}");

    let error = listener_start_error(&spec("    command: [/bin/true]\n"));
    assert!(error.contains("missing field `timeout`"), "{error}");
}

#[test]
fn env_clear_hides_the_listeners_environment_and_env_sets_variables() {
    let scripts = tempfile::tempdir().unwrap();
    let dir = scripts.path();
    let dump = |name: &str| {
        let out = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        script(
            dir,
            &format!("{name}.sh"),
            &format!("env > '{}'\nmv '{}' '{}'\n", tmp.display(), tmp.display(), out.display()),
        )
    };
    let (clean, inherit) = (dump("clean"), dump("inherit"));
    let port = common::free_udp_port();
    let listener = spawn_listener_with_env(
        &config(
            port,
            "  expire: 15s\n",
            &format!(
                "- kind: command\n  spec:\n    group: 1000\n    command: [\"{}\"]\n    timeout: 10s\n    \
                 env_clear: true\n    env:\n      RGAP_TEST_SET: \"set for the command\"\n\
                 - kind: command\n  spec:\n    group: 1000\n    command: [\"{}\"]\n    timeout: 10s\n    \
                 env:\n      RGAP_TEST_SET: also set\n",
                clean.display(),
                inherit.display()
            ),
        ),
        &[("RGAP_TEST_SECRET", "listener only")],
    );
    listener.wait_for_log("listener started");
    let env_of = |name: &str| {
        let path = dir.join(name);
        assert!(eventually(|| path.exists()), "{name} never ran");
        fs::read_to_string(path).unwrap()
    };
    // Inheriting (the default), the command sees the listener's variable: so it was there...
    let inherited = env_of("inherit");
    assert!(inherited.lines().any(|l| l == "RGAP_TEST_SECRET=listener only"), "{inherited}");
    assert!(inherited.lines().any(|l| l == "RGAP_TEST_SET=also set"), "{inherited}");
    // ...and env_clear hides it, while env still sets its own.
    let cleared = env_of("clean");
    assert!(!cleared.contains("RGAP_TEST_SECRET"), "{cleared}");
    assert!(!cleared.lines().any(|l| l.starts_with("PATH=")), "{cleared}");
    assert!(cleared.lines().any(|l| l == "RGAP_TEST_SET=set for the command"), "{cleared}");
    assert!(listener.terminate().success());
}

#[test]
fn a_background_child_a_command_leaves_is_reaped_when_it_exits() {
    let scripts = tempfile::tempdir().unwrap();
    let (child_pid, go) = (scripts.path().join("child.pid"), scripts.path().join("go"));
    // The background subshell outlives the command and exits when the test says so.
    let leave = script(
        scripts.path(),
        "leave.sh",
        &format!(
            "(while [ ! -e '{}' ]; do sleep 0.05; done) >/dev/null 2>&1 &\necho $! > '{}'\n\
             exit 0\n",
            go.display(),
            child_pid.display()
        ),
    );
    let port = common::free_udp_port();
    let listener =
        start_listener(&command_config(port, "  expire: 15s\n", &leave, "    timeout: 10s\n"));
    let pid = pid_from(&child_pid);
    let _guard = KillOnDrop(pid);
    listener.wait_for_log("succeeded");
    // Orphaned by the command's exit, the child is adopted by rgap, not by init...
    let rgap = listener.pid();
    assert!(
        eventually(|| state_and_parent(pid).is_some_and(|(_, parent)| parent == rgap)),
        "process {pid}: {:?}, rgap is {rgap}",
        state_and_parent(pid)
    );
    // ...which reaps it once it exits: no zombie is left.
    fs::write(&go, "").unwrap();
    assert!(
        eventually(|| state_and_parent(pid).is_none_or(|(_, parent)| parent != rgap)
            && zombies_of(rgap).is_empty()),
        "zombies of rgap ({rgap}): {:?}",
        zombies_of(rgap)
    );
    assert!(listener.terminate().success());
}

#[test]
fn control_characters_a_command_prints_are_escaped_in_the_log() {
    let scripts = tempfile::tempdir().unwrap();
    let noisy = script(
        scripts.path(),
        "noisy.sh",
        "printf 'red \\033[31mALERT\\033[0m\\tdone\\rFAKE line\\n'\n\
         printf 'title \\033]0;owned\\007 \\302\\233 end\\n' >&2\n",
    );
    let port = common::free_udp_port();
    let listener =
        start_listener(&command_config(port, "  expire: 15s\n", &noisy, "    timeout: 10s\n"));
    let line = listener.wait_for_log("stdout: red ");
    assert!(line.ends_with(r"stdout: red \x1b[31mALERT\x1b[0m\tdone\rFAKE line"), "{line:?}");
    let line = listener.wait_for_log("stderr: title ");
    assert!(line.ends_with(r"stderr: title \x1b]0;owned\x07 \u{9b} end"), "{line:?}");
    listener.wait_for_log("succeeded");
    for line in listener.log() {
        assert!(
            !line.contains(char::is_control),
            "a raw control character reached the log: {line:?}"
        );
    }
    assert!(listener.terminate().success());
}
