//! End-to-end: the real `rgap listener` with the real `eventlog` and `log` plugins,
//! receiving real datagrams on loopback (and multicast across network namespaces).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use hmac::{Hmac, Mac};
use rgap_core::protocol::unix_micros;
use sha2::Sha256;

const EVENTLOG: &str = "- kind: eventlog\n";

/// A datagram with any version, signed correctly with `psk`.
fn signed_with_version(version: u16, ip: [u8; 4], psk: &str) -> Vec<u8> {
    let mut datagram = announcement(1000, &std::net::Ipv4Addr::from(ip).to_string(), psk).to_vec();
    datagram[..2].copy_from_slice(&version.to_be_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(&hex::decode(psk).unwrap()).unwrap();
    mac.update(b"RGAP announce");
    mac.update(&datagram[..34]);
    datagram[34..].copy_from_slice(&mac.finalize().into_bytes());
    datagram
}

/// Stops the listener and returns its `datagram totals` line.
fn totals_after_stop(listener: RunningListener) -> String {
    let pid = listener.pid();
    common::signal(pid, libc::SIGTERM);
    let (status, log) = listener.wait_exit();
    assert!(status.success(), "exit status {status}");
    log.into_iter().find(|line| line.contains("datagram totals")).expect("totals line")
}

#[test]
fn join_is_logged_by_eventlog() {
    let port = free_udp_port();
    let listener = start_listener(&config(port, "  expire: 15s\n", EVENTLOG));
    send_to(local(port), &announcement(1000, "127.1.2.3", PSK));
    listener.wait_for_log(&joined("127.1.2.3"));
    assert!(listener.terminate().success());
}

#[test]
fn refresh_extends_without_rejoin() {
    // A 4 s expire, refreshed every 250 ms for 9 s: more than twice the first announcement's
    // expiry. Ignored refreshes would make it leave about 4 s in; a refresh taken for a new
    // member would log a second join.
    let port = free_udp_port();
    let listener = start_listener(&config(port, "  expire: 4s\n", EVENTLOG));
    send_to(local(port), &announcement(1000, "10.0.0.1", PSK));
    listener.wait_for_log(&joined("10.0.0.1"));
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(250));
        send_to(local(port), &announcement(1000, "10.0.0.1", PSK));
    }
    // Events reach the eventlog in order: once this later join is logged, a leave the
    // table decided before it would be logged too.
    send_to(local(port), &announcement(1000, "10.0.0.2", PSK));
    listener.wait_for_log(&joined("10.0.0.2"));
    assert_eq!(listener.lines_with(&joined("10.0.0.1")).len(), 1, "re-joined on refresh");
    assert!(listener.lines_with("has left").is_empty(), "{:#?}", listener.log());
}

#[test]
fn unrefreshed_member_leaves_after_expire() {
    let port = free_udp_port();
    let listener = start_listener(&config(port, "  expire: 1s\n", EVENTLOG));
    send_to(local(port), &announcement(1000, "10.0.0.9", PSK));
    listener.wait_for_log(&joined("10.0.0.9"));
    listener.wait_for_log(&left("10.0.0.9"));
    let log = listener.log();
    let join_at = log.iter().position(|l| l.contains(&joined("10.0.0.9"))).unwrap();
    let leave_at = log.iter().position(|l| l.contains(&left("10.0.0.9"))).unwrap();
    assert!(join_at < leave_at);
}

#[test]
fn expiry_follows_the_announcement_timestamp_not_arrival() {
    // Stamped 17 s before it is sent, with a 20 s expire (and a clock_skew that lets it in):
    // it must leave 3 s after it was sent. Counted from arrival it would stay 20 s; counted
    // from nothing (no expire added) it would leave at once. The bounds sit far from both
    // so that a loaded machine, which only makes the leave show later, cannot fail them.
    let port = free_udp_port();
    let listener = start_listener(&config(port, "  expire: 20s\n  clock_skew: 20s\n", EVENTLOG));
    let sent = Instant::now();
    let stamped = unix_micros(SystemTime::now()) - 17_000_000;
    send_to(local(port), &announcement_at(1000, "10.0.0.8", PSK, stamped));
    listener.wait_for_log(&joined("10.0.0.8"));
    listener.wait_for_log(&left("10.0.0.8"));
    let after = sent.elapsed();
    assert!(after >= Duration::from_millis(2_500), "left {after:?} after it was sent, not 3 s");
    assert!(after < Duration::from_millis(11_500), "left {after:?} after it was sent, not 3 s");
}

#[test]
fn bad_datagrams_are_dropped_and_counted_and_a_good_one_after_them_is_accepted() {
    let port = free_udp_port();
    let listener = start_listener(&config(port, "  expire: 15s\n  clock_skew: 5s\n", EVENTLOG));
    let other_psk = "11".repeat(32);
    let good = announcement(1000, "10.1.0.1", PSK);
    let mut flipped = announcement(1000, "10.1.0.2", PSK);
    flipped[65] ^= 1;
    let stale = announcement_at(1000, "10.1.0.3", PSK, unix_micros(SystemTime::now()) - 60_000_000);
    let junk: Vec<Vec<u8>> = vec![
        good[..65].to_vec(),                                 // wrong_length
        [&good[..], &[0u8]].concat(),                        // wrong_length
        Vec::new(),                                          // wrong_length
        announcement(4242, "10.1.0.4", PSK).to_vec(),        // unknown_group
        signed_with_version(0x0200, [10, 1, 0, 5], PSK),     // bad_version
        stale.to_vec(),                                      // clock_skew
        flipped.to_vec(),                                    // bad_signature
        announcement(1000, "10.1.0.6", &other_psk).to_vec(), // bad_signature
    ];
    for datagram in &junk {
        send_to(local(port), datagram);
    }
    send_to(local(port), &good);
    listener.wait_for_log(&joined("10.1.0.1"));
    assert!(listener.lines_with("has joined").len() == 1, "only the good one joins");
    // The operator hears of the drops while rgap runs (every 10 s), not only at shutdown.
    let report = listener.wait_for_log("datagram(s) in the last 10s:");
    assert!(report.contains("WARN") && report.contains("bad_signature="), "{report}");
    let totals = totals_after_stop(listener);
    for expected in [
        "received=9",
        "accepted=1",
        "wrong_length=3",
        "unknown_group=1",
        "bad_version=1",
        "clock_skew=1",
        "bad_signature=2",
    ] {
        assert!(totals.contains(expected), "{expected} missing in: {totals}");
    }
}

#[test]
fn readiness_delay_holds_the_group_back_then_reports_it_ready() {
    let port = free_udp_port();
    let outputs = "- kind: log\n  spec:\n    interval: 100ms\n";
    // Long enough that a slow start still logs the group before it is ready.
    let listener = start_listener(&config(port, "  expire: 15s\n  readiness_delay: 5s\n", outputs));
    listener.wait_for_log("group 1000: NOT READY, 0 member(s)");
    listener.wait_for_log("group 1000: READY, 0 member(s)");
    let log = listener.log();
    let not_ready = log.iter().position(|l| l.contains("group 1000: NOT READY")).unwrap();
    let ready = log.iter().position(|l| l.contains("group 1000: READY")).unwrap();
    assert!(not_ready < ready);
}

#[test]
fn log_output_shows_the_live_members_with_their_expiry() {
    let port = free_udp_port();
    let outputs = "- kind: log\n  spec:\n    interval: 100ms\n";
    let listener = start_listener(&config(port, "  expire: 30s\n", outputs));
    let stamped = unix_micros(SystemTime::now());
    send_to(local(port), &announcement_at(1000, "10.2.0.1", PSK, stamped));
    send_to(local(port), &announcement_at(1000, "2001:db8::2", PSK, stamped));
    listener.wait_for_log("group 1000: READY, 2 member(s)");
    let first = listener.wait_for_log("member 10.2.0.1 expires at");
    listener.wait_for_log("member 2001:db8::2 expires at");
    // The expiry shown is the announcement's timestamp plus `expire`, in RFC 3339.
    let expected =
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(stamped as u64 + 30_000_000);
    let shown = humantime_rfc3339_millis(expected);
    assert!(first.contains(&shown), "expected {shown} in {first}");
}

/// RFC 3339 with milliseconds, computed independently of the plugin (civil-from-days).
fn humantime_rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[test]
fn ipv6_listen_address_and_ipv6_member() {
    let port = free_udp_port();
    let config = format!(
        "listen:\n- '[::1]:{port}'\ngroups:\n- id: 1000\n  psk: {PSK}\n  expire: 15s\noutputs:\n{EVENTLOG}"
    );
    let listener = start_listener(&config);
    send_to(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        &announcement(1000, "2001:db8::7", PSK),
    );
    listener.wait_for_log(&joined("2001:db8::7"));
}

#[test]
fn two_listen_addresses_on_one_port() {
    let port = free_udp_port();
    let config = format!(
        "listen:\n- 127.0.0.1:{port}\n- 127.0.0.2:{port}\ngroups:\n- id: 1000\n  psk: {PSK}\n  expire: 15s\noutputs:\n{EVENTLOG}"
    );
    let listener = start_listener(&config);
    send_to(local(port), &announcement(1000, "10.3.0.1", PSK));
    send_to(SocketAddr::from(([127, 0, 0, 2], port)), &announcement(1000, "10.3.0.2", PSK));
    listener.wait_for_log(&joined("10.3.0.1"));
    listener.wait_for_log(&joined("10.3.0.2"));
}

#[test]
fn sigterm_and_sigint_exit_zero() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let port = free_udp_port();
        let listener = start_listener(&config(port, "  expire: 15s\n", EVENTLOG));
        common::signal(listener.pid(), signal);
        let (status, log) = listener.wait_exit();
        assert!(status.success(), "signal {signal}: {status}");
        assert!(log.iter().any(|line| line.contains("listener stopped")), "{log:?}");
    }
}

fn assert_start_error(config: &str, fragments: &[&str]) {
    let stderr = listener_start_error(config);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "last line should be the error: {stderr}");
    assert!(last.contains("rgap.yaml"), "error should name the file: {last}");
    for fragment in fragments {
        assert!(last.contains(fragment), "{fragment:?} missing in: {last}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn config_errors_name_the_file_the_key_and_the_problem() {
    let port = free_udp_port();
    assert_start_error(
        &config(port, "  expire: 15 parsecs\n", EVENTLOG),
        &["groups[0].expire", "15 parsecs", "line"],
    );
    let short_psk =
        format!("listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1\n  psk: abcd\n  expire: 1s\n");
    assert_start_error(&short_psk, &["groups[0].psk", "64"]);
    let duplicate = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 7\n  psk: {PSK}\n  expire: 1s\n- id: 7\n  psk: {PSK}\n  expire: 1s\n"
    );
    assert_start_error(&duplicate, &["groups[1].id", "duplicate"]);
    let empty_listen = format!("listen: []\ngroups:\n- id: 7\n  psk: {PSK}\n  expire: 1s\n");
    assert_start_error(&empty_listen, &["listen"]);
    let bad_listen =
        format!("listen:\n- 127.0.0.1\ngroups:\n- id: 7\n  psk: {PSK}\n  expire: 1s\n");
    assert_start_error(&bad_listen, &["listen[0]", "127.0.0.1"]);
    assert_start_error(
        &config(port, "  expire: 15s\n", "- kind: nosuchkind\n"),
        &["outputs[0]", "nosuchkind", "librgap_output_nosuchkind.so", "/usr/lib/rgap/plugins"],
    );
    assert_start_error(
        &config(port, "  expire: 15s\n  expirre: 1s\n", EVENTLOG),
        &["groups[0].expirre", "unknown field"],
    );
    // Errors raised inside a value name its key once, not once more in the message.
    let bad_hex = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1\n  psk: {}\n  expire: 1s\n",
        "z".repeat(64)
    );
    for (text, key) in [
        (bad_hex, "groups[0].psk"),
        (config(port, "  expire: 15 parsecs\n", EVENTLOG), "groups[0].expire"),
    ] {
        let stderr = listener_start_error(&text);
        let last = stderr.lines().last().unwrap_or_default();
        assert_eq!(last.matches(key).count(), 1, "{key} not said exactly once: {last}");
    }
}

#[test]
fn port_in_use_is_a_clear_start_error() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    // Without SO_REUSEADDR on the holder, the listener cannot bind the same address.
    assert_start_error(
        &config(port, "  expire: 15s\n", EVENTLOG),
        &["listen[0]", &format!("127.0.0.1:{port}")],
    );
}

#[test]
fn missing_config_file_is_named() {
    let output = Command::new(rgap_binary())
        .args(["listener", "-c", "/nonexistent/rgap.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/rgap.yaml"), "{stderr}");
}

/// Network namespaces joined by a veth pair; removed on drop.
struct NetnsPair {
    names: [String; 2],
    /// The veth ends: `veths[i]` is in namespace `names[i]`.
    veths: [String; 2],
}

impl NetnsPair {
    fn create() -> NetnsPair {
        // Unique per pair: tests in one process run in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = std::process::id() % 10_000 * 10 + serial;
        let names = [format!("rgapA{tag}"), format!("rgapB{tag}")];
        let (veth_a, veth_b) = (format!("va{tag}"), format!("vb{tag}"));
        let pair = NetnsPair { names: names.clone(), veths: [veth_a.clone(), veth_b.clone()] };
        let run = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("running ip");
            assert!(status.success(), "ip {}", args.join(" "));
        };
        run(&["netns", "add", &names[0]]);
        run(&["netns", "add", &names[1]]);
        run(&[
            "link", "add", &veth_a, "netns", &names[0], "type", "veth", "peer", "name", &veth_b,
            "netns", &names[1],
        ]);
        run(&["-n", &names[0], "addr", "add", "10.77.0.1/24", "dev", &veth_a]);
        run(&["-n", &names[1], "addr", "add", "10.77.0.2/24", "dev", &veth_b]);
        // Usable at once: no duplicate address detection to wait for.
        run(&["-n", &names[0], "addr", "add", "fd77::1/64", "dev", &veth_a, "nodad"]);
        run(&["-n", &names[1], "addr", "add", "fd77::2/64", "dev", &veth_b, "nodad"]);
        for (ns, dev) in [(&names[0], &veth_a), (&names[1], &veth_b)] {
            run(&["-n", ns, "link", "set", dev, "up"]);
            run(&["-n", ns, "link", "set", "lo", "up"]);
            // Multicast without an interface named goes where the route says, as on a host.
            run(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        pair
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The tests that build network namespaces are `#[ignore = "needs root"]`: `.ci/run` runs
/// them as root with `--ignored`, and a plain `cargo test` lists them as ignored, so a skip is
/// visible. Run by hand without root, they fail here, saying why.
fn assert_root() {
    assert!(nix::unistd::geteuid().is_root(), "needs root (ip netns): run as root or via .ci/run");
}

#[test]
#[ignore = "needs root"]
fn multicast_between_network_namespaces() {
    assert_root();
    let pair = NetnsPair::create();
    let port = free_udp_port();
    let config = format!(
        "listen:\n- 239.82.71.65:{port}@10.77.0.0/24\ngroups:\n- id: 1000\n  psk: {PSK}\n  expire: 15s\noutputs:\n{EVENTLOG}"
    );
    // The listener runs inside namespace B through `ip netns exec`.
    let listener = spawn_listener_wrapped(&config, &["ip", "netns", "exec", &pair.names[1]]);
    listener.wait_for_log("listener started");
    let agent_dir = tempfile::tempdir().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", &pair.names[0]])
        .arg(rgap_binary())
        .args(["agent", "-g", "1000", "-a", "10.77.0.1", "-k", PSK, "-d"])
        .arg(format!("239.82.71.65:{port}@10.77.0.0/24"))
        .current_dir(agent_dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    listener.wait_for_log(&joined("10.77.0.1"));
}

#[test]
#[ignore = "needs root"]
fn ipv6_link_local_multicast_between_network_namespaces() {
    assert_root();
    let pair = NetnsPair::create();
    let port = free_udp_port();
    // ff02:: is link-local: the listener binds it with the interface's scope id and joins it
    // on that interface; the agent sends it out of the interface it names.
    let config = format!(
        "listen:\n- '[ff02::8271]:{port}@{}'\ngroups:\n- id: 1000\n  psk: {PSK}\n  expire: 15s\noutputs:\n{EVENTLOG}",
        pair.veths[1]
    );
    let listener = spawn_listener_wrapped(&config, &["ip", "netns", "exec", &pair.names[1]]);
    listener.wait_for_log("listener started");
    let agent_dir = tempfile::tempdir().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", &pair.names[0]])
        .arg(rgap_binary())
        .args(["agent", "-g", "1000", "-a", "fd77::1", "-k", PSK, "-d"])
        .arg(format!("[ff02::8271]:{port}@{}", pair.veths[0]))
        .current_dir(agent_dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    listener.wait_for_log(&joined("fd77::1"));
}

/// The seed README's example config, unchanged but for ports and paths.
fn seed_example_config(multicast_port: u16, port: u16, dns_port: u16, script: &str) -> String {
    format!(
        r##"listen:
- 239.82.71.65:{multicast_port} # or "239.82.71.65:8271@eth0" or "239.82.71.65:8271@192.168.0.0/16"
- 127.0.0.1:{port}
groups:
- id: 1000
  psk: 8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431
  expire: 15s
  clock_skew: 10s
  readiness_delay: 15s
outputs:
- kind: noop
  spec:
- kind: log
  spec:
    interval: 60s
- kind: eventlog
  spec: # or skip spec at all
    only_groups: # or specify null for all groups
    - 1000
- kind: hostsfile
  spec:
    interval: 5s
    filename: hosts
    mappings:
    - group: 1000
      hostname: worker
      fallback_addresses:
      - 1.2.3.4
      - 5.6.7.8
    prepend_lines:
    - "# Auto-generated hosts file"
    - "# Do not edit manually, changes will be overwritten by RGAP"
    append_lines:
    - "# End of auto-generated file"
- kind: dns
  spec:
    bind_address: 127.0.0.1:{dns_port}
    mappings:
      worker.example.com:
        group: 1000
        fallback_addresses:
        - 1.2.3.4
        - 5.6.7.8
      worker.example.org:
        group: 1000
        fallback_addresses:
        - 1.2.3.4
        - 5.6.7.8
- kind: command
  spec:
    group: 1000
    command:
    - "{script}"
    - "--group"
    - "1000"
    timeout: 5s
    retries: 3
"##
    )
}

#[test]
fn seed_readme_example_config_runs_unchanged_but_for_ports_and_paths() {
    let (multicast_port, port, dns_port) = (free_udp_port(), free_udp_port(), free_port());
    let listener =
        start_listener(&seed_example_config(multicast_port, port, dns_port, "/bin/true"));
    send_to(local(port), &announcement(1000, "127.1.2.3", PSK));
    listener.wait_for_log(&joined("127.1.2.3"));
    assert_eq!(listener.lines_with("listener started").len(), 1);
    assert!(listener.terminate().success());
}

#[test]
fn shipped_example_config_starts_on_loopback() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rgap.yaml");
    let text = std::fs::read_to_string(example).unwrap();
    // Fixed ports in the example; give this run free ones so tests never collide.
    let (port, dns_port) = (free_udp_port(), free_port());
    let text = text
        .replace("127.0.0.1:8282", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:8253", &format!("127.0.0.1:{dns_port}"));
    let listener = start_listener(&text);
    send_to(local(port), &announcement(1000, "127.1.2.3", PSK));
    listener.wait_for_log(&joined("127.1.2.3"));
    // The command output (`cat`) echoes the member into the log once the group is ready.
    listener.wait_for_log("stdout: 127.1.2.3");
    assert!(listener.terminate().success());
}

#[test]
#[ignore = "needs root"]
fn agent_default_destination_reaches_a_listener_on_the_default_multicast_group() {
    assert_root();
    let pair = NetnsPair::create();
    // The Go rgap's defaults on both sides: 239.82.71.65:8271, no interface named.
    let config = format!(
        "listen:\n- 239.82.71.65:8271\ngroups:\n- id: 1000\n  psk: {PSK}\n  expire: 15s\noutputs:\n{EVENTLOG}"
    );
    let listener = spawn_listener_wrapped(&config, &["ip", "netns", "exec", &pair.names[1]]);
    listener.wait_for_log("listener started");
    let status = Command::new("ip")
        .args(["netns", "exec", &pair.names[0]])
        .arg(rgap_binary())
        .args(["agent", "-g", "1000", "-a", "10.77.0.1", "-k", PSK])
        .status()
        .unwrap();
    assert!(status.success());
    listener.wait_for_log(&joined("10.77.0.1"));
}

/// Also: the reader of rgap's stderr goes away after the start line (as when a log collector
/// restarts); rgap must keep running and exit 0, not panic on the broken pipe.
#[test]
fn listener_reads_rgap_yaml_by_default_and_survives_its_stderr_closing() {
    plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    std::fs::write(dir.path().join("rgap.yaml"), config(port, "  expire: 15s\n", EVENTLOG))
        .unwrap();
    let mut child = Command::new(rgap_binary())
        .arg("listener")
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let started = std::io::BufRead::lines(stderr)
        .map_while(Result::ok)
        .any(|line| line.contains("listener started"));
    // stderr is closed now; this join is logged into the void.
    send_to(local(port), &announcement(1000, "10.4.0.1", PSK));
    common::signal(child.id() as i32, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(started, "no start line");
    assert!(status.success(), "{status}");
}
