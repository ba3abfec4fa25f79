//! Changing a running listener: `rgap validate` beside it, SIGHUP reloads that keep state
//! and keep the old config when the new one is bad, and systemd's notify protocol, all with
//! the real binary.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    announcement, eventually, finish, free_udp_port, listener_start_error, rgap_command, send_to,
    signal, spawn_listener, spawn_listener_with_env, RunningListener, PSK,
};

/// A second key, for the psk change.
const OTHER_PSK: &str = "1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f";

fn to(port: u16) -> std::net::SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn group(id: u64, psk: &str) -> String {
    format!("- id: {id}\n  psk: {psk}\n  expire: 60s\n")
}

fn config_with(listen: &[u16], groups: &str, outputs: &str) -> String {
    let listen: String = listen.iter().map(|port| format!("- 127.0.0.1:{port}\n")).collect();
    format!("listen:\n{listen}groups:\n{groups}outputs:\n{outputs}")
}

fn hostsfile(groups: &[(u64, &str)]) -> String {
    let mappings: String = groups
        .iter()
        .map(|(group, name)| format!("    - {{group: {group}, hostname: {name}}}\n"))
        .collect();
    format!("- kind: hostsfile\n  spec:\n    interval: 1s\n    filename: hosts\n    mappings:\n{mappings}")
}

fn testkit(record: &Path) -> String {
    format!("- kind: testkit\n  spec:\n    record_to: {}\n", record.display())
}

/// The addresses listed in the hosts file for `name`.
fn hosts_members(listener: &RunningListener, name: &str) -> BTreeSet<String> {
    let text = fs::read_to_string(listener.dir.path().join("hosts")).unwrap_or_default();
    text.lines()
        .filter(|line| line.split_whitespace().nth(1) == Some(name))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Rewrites the config and sends SIGHUP; returns the reload's result line.
fn reload(listener: &RunningListener, config: &str, previous_reloads: usize) -> String {
    fs::write(&listener.config_path, config).unwrap();
    signal(listener.pid(), libc::SIGHUP);
    let results = |l: &RunningListener| {
        l.log()
            .into_iter()
            .filter(|line| line.contains("reloaded ") || line.contains("reload of "))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(|| results(listener).len() > previous_reloads),
        "no reload result line:\n{}",
        listener.log().join("\n")
    );
    results(listener)[previous_reloads].clone()
}

fn record_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[test]
fn validate_succeeds_beside_a_listener_holding_the_same_ports() {
    let port = free_udp_port();
    let config = config_with(&[port], &group(1000, PSK), &hostsfile(&[(1000, "web")]));
    let listener = spawn_listener(&config);
    listener.wait_for_log("listener started");
    let output = finish({
        let mut command = rgap_command(&["validate", "-c", "rgap.yaml"]);
        command.current_dir(listener.dir.path());
        command
    });
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok: rgap.yaml: 1 group(s), 1 output(s)\n");
    let (status, log) = listener.terminate_and_wait();
    assert!(status.success(), "{}", log.join("\n"));
}

#[test]
fn validate_prints_the_same_error_as_the_listener_for_each_kind_of_mistake() {
    let port = free_udp_port();
    let good_group = group(1000, PSK);
    let cases = [
        format!("listen: [127.0.0.1:{port}]\ngroups: [\n"),
        config_with(&[port], &good_group.replace("expire: 60s", "expire: 0s"), ""),
        config_with(&[port], &good_group.replace(PSK, "zz"), ""),
        config_with(&[port], &good_group, "- kind: nosuchkind\n"),
        config_with(&[port], &good_group, "- kind: hostsfile\n  spec:\n    interval: 1s\n"),
        format!("listen: [nonsense]\ngroups:\n{good_group}"),
    ];
    for config in cases {
        let work = tempfile::tempdir().unwrap();
        fs::write(work.path().join("rgap.yaml"), &config).unwrap();
        let output = finish({
            let mut command = rgap_command(&["validate", "-c", "rgap.yaml"]);
            command.current_dir(work.path());
            command
        });
        assert_eq!(output.status.code(), Some(1), "{config}");
        let validate_error =
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap().to_owned();
        // The listener, started on the same file from its own directory, says the same.
        let listener_error = listener_start_error(&config);
        let listener_error = listener_error.lines().last().unwrap();
        assert!(validate_error.starts_with("error: rgap.yaml: "), "{validate_error}");
        // The listener was given the file's absolute path; the rest is the same.
        let after_file =
            |line: &str| line.split_once("rgap.yaml: ").map(|(_, rest)| rest.to_owned());
        assert!(listener_error.starts_with("error: /"), "{listener_error}");
        assert_eq!(after_file(&validate_error), after_file(listener_error), "{config}");
    }
}

#[test]
fn sighup_adds_a_group_and_an_output_without_losing_members() {
    let port = free_udp_port();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    let before = config_with(
        &[port],
        &group(1000, PSK),
        &format!("{}{}", hostsfile(&[(1000, "web")]), testkit(&record)),
    );
    let listener = spawn_listener(&before);
    listener.wait_for_log("listener started");
    send_to(to(port), &announcement(1000, "10.0.0.1", PSK));
    send_to(to(port), &announcement(1000, "10.0.0.2", PSK));
    let both: BTreeSet<String> = ["10.0.0.1", "10.0.0.2"].map(str::to_owned).into();
    assert!(eventually(|| hosts_members(&listener, "web") == both));

    // Watch the hosts file through the reload: the members must never be missing.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let path = listener.dir.path().join("hosts");
        std::thread::spawn(move || {
            let mut gaps = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let text = fs::read_to_string(&path).unwrap_or_default();
                if !(text.contains("10.0.0.1 web") && text.contains("10.0.0.2 web")) {
                    gaps.push(text);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            gaps
        })
    };
    let after = config_with(
        &[port],
        &format!("{}{}", group(1000, PSK), group(2000, PSK)),
        &format!(
            "{}{}- kind: eventlog\n",
            hostsfile(&[(1000, "web"), (2000, "db")]),
            testkit(&record)
        ),
    );
    let result = reload(&listener, &after, 0);
    assert!(
        result.contains("reloaded ")
            && result.contains("groups +1 -0 ~0, outputs +1 -0 ~1 =1, listen +0 -0"),
        "{result}"
    );
    // The new group works, through the new output.
    send_to(to(port), &announcement(2000, "10.0.0.3", PSK));
    listener.wait_for_log("host 10.0.0.3 has joined group 2000");
    assert!(eventually(|| hosts_members(&listener, "db").contains("10.0.0.3")));
    stop.store(true, Ordering::Relaxed);
    let gaps = watcher.join().unwrap();
    assert!(gaps.is_empty(), "the hosts file lost members during the reload: {gaps:?}");

    let (status, log) = listener.terminate_and_wait();
    assert!(status.success(), "{}", log.join("\n"));
    assert!(!log.iter().any(|line| line.contains("has left group 1000")), "{}", log.join("\n"));
    // The unchanged testkit output kept its instance and saw no leave.
    let seen = record_lines(&record);
    assert_eq!(seen.iter().filter(|line| line.starts_with("create ")).count(), 1, "{seen:?}");
    assert!(!seen.iter().any(|line| line.starts_with("event leave")), "{seen:?}");
}

#[test]
fn a_broken_reload_is_refused_and_a_later_good_one_applies() {
    let port = free_udp_port();
    let listener = spawn_listener(&config_with(&[port], &group(1000, PSK), "- kind: eventlog\n"));
    listener.wait_for_log("listener started");
    let result = reload(&listener, "listen: [\n", 0);
    assert!(result.contains("ERROR") && result.contains("reload of "), "{result}");
    assert!(result.contains("keeping the running configuration"), "{result}");
    // Still serving.
    send_to(to(port), &announcement(1000, "10.0.0.7", PSK));
    listener.wait_for_log("host 10.0.0.7 has joined group 1000");

    let second = free_udp_port();
    let good = config_with(&[port, second], &group(1000, PSK), "- kind: eventlog\n");
    let result = reload(&listener, &good, 1);
    assert!(result.contains("listen +1 -0"), "{result}");
    send_to(to(second), &announcement(1000, "10.0.0.8", PSK));
    listener.wait_for_log("host 10.0.0.8 has joined group 1000");
    let (status, log) = listener.terminate_and_wait();
    assert!(status.success(), "{}", log.join("\n"));
}

#[test]
fn a_changed_psk_drops_the_old_keys_announcements_and_keeps_members() {
    let port = free_udp_port();
    let listener = spawn_listener(&config_with(&[port], &group(1000, PSK), "- kind: eventlog\n"));
    listener.wait_for_log("listener started");
    send_to(to(port), &announcement(1000, "10.0.0.1", PSK));
    listener.wait_for_log("host 10.0.0.1 has joined group 1000");

    let result =
        reload(&listener, &config_with(&[port], &group(1000, OTHER_PSK), "- kind: eventlog\n"), 0);
    assert!(result.contains("groups +0 -0 ~1"), "{result}");
    send_to(to(port), &announcement(1000, "10.0.0.2", PSK));
    send_to(to(port), &announcement(1000, "10.0.0.3", OTHER_PSK));
    listener.wait_for_log("host 10.0.0.3 has joined group 1000");
    let (status, log) = listener.terminate_and_wait();
    assert!(status.success());
    let text = log.join("\n");
    assert!(!text.contains("host 10.0.0.2 has joined"), "{text}");
    assert!(!text.contains("has left group 1000"), "{text}");
    let totals = log.iter().find(|line| line.contains("datagram totals")).unwrap();
    assert!(totals.contains("bad_signature=1"), "{totals}");
}

#[test]
fn a_removed_group_s_members_leave() {
    let port = free_udp_port();
    let groups = format!("{}{}", group(1000, PSK), group(2000, PSK));
    let listener = spawn_listener(&config_with(&[port], &groups, "- kind: eventlog\n"));
    listener.wait_for_log("listener started");
    send_to(to(port), &announcement(2000, "10.0.0.5", PSK));
    listener.wait_for_log("host 10.0.0.5 has joined group 2000");
    let result =
        reload(&listener, &config_with(&[port], &group(1000, PSK), "- kind: eventlog\n"), 0);
    assert!(result.contains("groups +0 -1 ~0"), "{result}");
    listener.wait_for_log("host 10.0.0.5 has left group 2000");
    let (status, _) = listener.terminate_and_wait();
    assert!(status.success());
}

#[test]
fn a_new_output_that_fails_to_start_rolls_the_reload_back() {
    let port = free_udp_port();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    let before = config_with(&[port], &group(1000, PSK), &testkit(&record));
    let listener = spawn_listener(&before);
    listener.wait_for_log("listener started");
    // A new group and an output that refuses to start: neither may take effect.
    let failing = "- kind: testkit\n  spec:\n    fail_in: create\n";
    let after = config_with(
        &[port],
        &format!("{}{}", group(1000, PSK), group(2000, PSK)),
        &format!("{}{failing}", testkit(&record)),
    );
    let result = reload(&listener, &after, 0);
    assert!(result.contains("ERROR") && result.contains("outputs[1]"), "{result}");
    assert!(result.contains("asked to fail in Create"), "{result}");
    send_to(to(port), &announcement(2000, "10.0.0.9", PSK));
    send_to(to(port), &announcement(1000, "10.0.0.1", PSK));
    assert!(eventually(|| record_lines(&record).iter().any(|l| l == "event join 1000 10.0.0.1")));
    let (status, log) = listener.terminate_and_wait();
    assert!(status.success());
    let totals = log.iter().find(|line| line.contains("datagram totals")).unwrap();
    assert!(totals.contains("unknown_group=1"), "group 2000 was applied: {totals}");
    let seen = record_lines(&record);
    assert_eq!(seen.iter().filter(|line| line.starts_with("create ")).count(), 1, "{seen:?}");
}

#[test]
fn systemd_hears_ready_reloading_ready_stopping_in_order() {
    let work = tempfile::tempdir().unwrap();
    let socket_path = work.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(common::WAIT)).unwrap();
    let port = free_udp_port();
    let config = config_with(&[port], &group(1000, PSK), "- kind: eventlog\n");
    let listener =
        spawn_listener_with_env(&config, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    // The next message that is not only a heartbeat (STATUS=, WATCHDOG=1).
    let next = || loop {
        let mut buffer = [0u8; 4096];
        let length = socket.recv(&mut buffer).expect("a notify message");
        let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
        if !message.lines().all(|l| l.starts_with("STATUS=") || l == "WATCHDOG=1") {
            return message;
        }
    };
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.lines().any(|l| l.starts_with("STATUS=1 group(s), 0 member(s)")), "{ready}");
    signal(listener.pid(), libc::SIGHUP);
    let reloading = next();
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading}");
    let ready_again = next();
    assert!(ready_again.lines().any(|l| l == "READY=1"), "{ready_again}");
    signal(listener.pid(), libc::SIGTERM);
    let stopping = next();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let (status, _) = listener.terminate_and_wait();
    assert!(status.success());
}

#[test]
fn a_reload_under_load_loses_no_announcement_on_an_unchanged_socket() {
    let port = free_udp_port();
    let http_port =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let http = format!("http:\n  listen: 127.0.0.1:{http_port}\n");
    let base = config_with(&[port], &group(1000, PSK), "- kind: noop\n");
    let listener = spawn_listener(&format!("{base}{http}"));
    listener.wait_for_log("listener started");
    const COUNT: u32 = 20_000;
    let sender = std::thread::spawn(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for n in 0..COUNT {
            let ip = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
            socket.send_to(&announcement(1000, &ip, PSK), to(port)).unwrap();
            if n % 100 == 0 {
                // About 20 000 a second: a steady load, well within what the kernel buffers.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    // Reload twice while the load runs: add a group and an output, then take them away.
    let bigger = config_with(
        &[port],
        &format!("{}{}", group(1000, PSK), group(2000, PSK)),
        "- kind: noop\n- kind: eventlog\n",
    );
    assert!(reload(&listener, &format!("{bigger}{http}"), 0).contains("reloaded "));
    assert!(reload(&listener, &format!("{base}{http}"), 1).contains("reloaded "));
    sender.join().unwrap();
    // Every datagram sent reaches the listener and is accepted (read before stopping: a
    // stop does not drain what the kernel still queues).
    let accepted = format!("rgap_datagrams_received_total {COUNT}");
    let metrics = || {
        let url = format!("http://127.0.0.1:{http_port}/metrics");
        ureq::get(&url).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok())
    };
    assert!(
        eventually(|| metrics().is_some_and(|text| text.lines().any(|l| l == accepted))),
        "{:?}",
        metrics().map(|text| text
            .lines()
            .filter(|l| l.starts_with("rgap_datagrams"))
            .collect::<Vec<_>>()
            .join("\n"))
    );
    let (status, log) = listener.terminate_and_wait();
    assert!(status.success());
    let totals = log.iter().find(|line| line.contains("datagram totals")).unwrap();
    assert!(totals.contains(&format!("received={COUNT} accepted={COUNT}")), "{totals}");
}
