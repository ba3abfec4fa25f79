//! The monitoring endpoint and `rgap members`, end to end: the real listener with an
//! `http.listen`, asked by a real HTTP client (ureq), fed real signed datagrams; and JSON
//! logs read line by line.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use rgap_core::protocol::unix_micros;

/// A PSK other than the group's: its announcements fail the signature check.
const WRONG_PSK: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// A free TCP port on loopback for the endpoint.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// [`config`] plus `http: {listen: 127.0.0.1:<http_port>}`.
fn config_with_http(port: u16, http_port: u16, group_extra: &str, outputs: &str) -> String {
    format!("{}http:\n  listen: 127.0.0.1:{http_port}\n", config(port, group_extra, outputs))
}

/// One HTTP answer: status, headers we look at, body.
struct Answer {
    status: u16,
    allow: Option<String>,
    content_type: Option<String>,
    body: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let header =
        |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (allow, content_type) = (header("allow"), header("content-type"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("reading the body");
    Answer { status, allow, content_type, body }
}

fn get(http_port: u16, path: &str) -> Answer {
    let url = format!("http://127.0.0.1:{http_port}{path}");
    answer(agent().get(&url).call().unwrap_or_else(|e| panic!("GET {url}: {e}")))
}

/// The samples of a Prometheus text exposition, as `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line: series value");
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("value in {line:?}")))
        })
        .collect()
}

fn metrics(http_port: u16) -> BTreeMap<String, f64> {
    let answer = get(http_port, "/metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    samples(&answer.body)
}

/// Polls `/metrics` until every `(series, value)` in `wanted` holds; panics with the
/// last exposition if they do not within `WAIT`.
fn wait_for_metrics(http_port: u16, wanted: &[(&str, f64)]) -> BTreeMap<String, f64> {
    let mut last = BTreeMap::new();
    let held = eventually(|| {
        last = metrics(http_port);
        wanted.iter().all(|(series, value)| last.get(*series) == Some(value))
    });
    assert!(held, "wanted {wanted:?}; last /metrics:\n{last:#?}");
    last
}

#[test]
fn metrics_equal_the_live_state_after_joins_leaves_and_bad_datagrams() {
    let (port, http_port) = (free_udp_port(), free_tcp_port());
    let listener =
        start_listener(&config_with_http(port, http_port, "  expire: 30s\n", "- kind: noop\n"));
    // Two members that stay, one that leaves 1 s after it is sent (its timestamp is 29 s
    // old), a datagram signed with the wrong key and one of the wrong length.
    send_to(local(port), &announcement(1000, "10.0.0.1", PSK));
    send_to(local(port), &announcement(1000, "10.0.0.2", PSK));
    send_to(local(port), &announcement(1000, "10.0.0.1", PSK));
    let old = unix_micros(SystemTime::now()) - 29_000_000;
    send_to(local(port), &announcement_at(1000, "10.0.0.3", PSK, old));
    send_to(local(port), &announcement(1000, "10.0.0.4", WRONG_PSK));
    send_to(local(port), &[0u8; 10]);

    let now = wait_for_metrics(
        http_port,
        &[
            ("rgap_datagrams_received_total", 6.0),
            ("rgap_datagrams_dropped_total{reason=\"bad_signature\"}", 1.0),
            ("rgap_datagrams_dropped_total{reason=\"wrong_length\"}", 1.0),
            ("rgap_announcements_accepted_total{group=\"1000\"}", 4.0),
            ("rgap_member_joins_total{group=\"1000\"}", 3.0),
            ("rgap_member_leaves_total{group=\"1000\"}", 1.0),
            ("rgap_group_members{group=\"1000\"}", 2.0),
            ("rgap_group_ready{group=\"1000\"}", 1.0),
            ("rgap_output_up{output=\"noop#0\",kind=\"noop\"}", 1.0),
            ("rgap_output_restarts_total{output=\"noop#0\"}", 0.0),
            ("rgap_output_resyncs_total{output=\"noop#0\"}", 0.0),
        ],
    );
    // Every other drop reason is there, at 0.
    for reason in ["unknown_group", "bad_version", "clock_skew"] {
        let series = format!("rgap_datagrams_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(now.get(&series), Some(&0.0), "{series}");
    }
    // The members gauge is what /v1/members lists.
    let members: serde_json::Value =
        serde_json::from_str(&get(http_port, "/v1/members").body).unwrap();
    let listed = members["groups"][0]["members"].as_array().unwrap().len();
    assert_eq!(listed, 2);

    let build = format!(
        "rgap_build_info{{version=\"{}\",plugin_api=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        rgap_plugin_api::API_VERSION
    );
    assert_eq!(now.get(&build), Some(&1.0), "{build} in {now:#?}");
    for series in ["process_resident_memory_bytes", "process_open_fds", "process_max_fds"] {
        assert!(now.get(series).is_some_and(|v| *v > 0.0), "{series} in {now:#?}");
    }
    let started = now["process_start_time_seconds"];
    let unix_now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    assert!((unix_now.as_secs_f64() - started).abs() < 600.0, "start time {started}");
    assert!(now.contains_key("process_cpu_seconds_total"));
    listener.terminate();
}

#[test]
fn ready_is_503_naming_the_group_until_its_readiness_delay_passes() {
    let (port, http_port) = (free_udp_port(), free_tcp_port());
    let started = Instant::now();
    let listener = start_listener(&config_with_http(
        port,
        http_port,
        "  expire: 30s\n  readiness_delay: 4s\n",
        "- kind: noop\n",
    ));
    let before = get(http_port, "/ready");
    assert!(started.elapsed() < Duration::from_secs(4), "too slow to see the group not ready");
    assert_eq!(before.status, 503);
    assert_eq!(before.body.trim(), "group 1000 not ready");
    assert_eq!(metrics(http_port).get("rgap_group_ready{group=\"1000\"}"), Some(&0.0));
    let mut after = get(http_port, "/ready");
    assert!(eventually(|| {
        after = get(http_port, "/ready");
        after.status == 200
    }));
    assert!(started.elapsed() >= Duration::from_secs(4), "ready before readiness_delay");
    assert_eq!(metrics(http_port).get("rgap_group_ready{group=\"1000\"}"), Some(&1.0));
    listener.terminate();
}

#[test]
fn health_is_503_naming_the_output_while_it_is_panicked_then_ok_again() {
    let (port, http_port) = (free_udp_port(), free_tcp_port());
    // testkit panics in its first two snapshots: down 1 s, re-created, down 2 s, re-created.
    let outputs =
        "- kind: noop\n- kind: testkit\n  spec:\n    panic_in: on_snapshot\n    panic_times: 2\n";
    let listener = start_listener(&config_with_http(port, http_port, "  expire: 30s\n", outputs));
    let mut health = get(http_port, "/health");
    assert!(eventually(|| {
        health = get(http_port, "/health");
        health.status == 503
    }));
    assert!(health.body.contains("testkit#1"), "{}", health.body);
    assert!(!health.body.contains("noop#0"), "{}", health.body);
    assert_eq!(health.body.trim().lines().count(), 1, "one line: {:?}", health.body);
    wait_for_metrics(http_port, &[("rgap_output_up{output=\"testkit#1\",kind=\"testkit\"}", 0.0)]);
    assert!(eventually(|| {
        health = get(http_port, "/health");
        health.status == 200
    }));
    assert_eq!(health.body.trim(), "ok");
    wait_for_metrics(
        http_port,
        &[
            ("rgap_output_up{output=\"testkit#1\",kind=\"testkit\"}", 1.0),
            ("rgap_output_restarts_total{output=\"testkit#1\"}", 2.0),
            ("rgap_output_up{output=\"noop#0\",kind=\"noop\"}", 1.0),
        ],
    );
    listener.terminate();
}

/// The addresses of the `backend` lines of a hosts file, in numeric order.
fn hosts_file_members(path: &std::path::Path) -> Vec<IpAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ips: Vec<IpAddr> = text
        .lines()
        .filter(|line| line.ends_with(" backend"))
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect();
    ips.sort();
    ips
}

const HOSTS_OUTPUT: &str =
    "- kind: hostsfile\n  spec:\n    interval: 60s\n    filename: hosts\n    mappings:\n    - group: 1000\n      hostname: backend\n";

/// A listener with a hosts file output and three members in group 1000 (sent in an order
/// that is neither numeric nor textual), once the file lists them.
fn listener_with_three_members() -> (RunningListener, u16, Vec<IpAddr>) {
    let (port, http_port) = (free_udp_port(), free_tcp_port());
    let listener =
        start_listener(&config_with_http(port, http_port, "  expire: 30s\n", HOSTS_OUTPUT));
    for ip in ["10.0.0.10", "10.0.0.9", "10.0.0.100"] {
        send_to(local(port), &announcement(1000, ip, PSK));
    }
    let hosts = listener.dir.path().join("hosts");
    assert!(eventually(|| hosts_file_members(&hosts).len() == 3), "hosts file incomplete");
    let members = hosts_file_members(&hosts);
    (listener, http_port, members)
}

#[test]
fn members_endpoint_lists_the_hosts_files_members_in_numeric_order() {
    let (listener, http_port, in_file) = listener_with_three_members();
    let answer = get(http_port, "/v1/members");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let keys = |value: &serde_json::Value| -> Vec<String> {
        value.as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(keys(&json), ["groups"]);
    let groups = json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    assert_eq!(group["id"], 1000);
    assert_eq!(group["ready"], true);
    let members = group["members"].as_array().unwrap();
    let listed: Vec<IpAddr> =
        members.iter().map(|m| m["address"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(listed, in_file, "same members, numeric order");
    for member in members {
        let mut member_keys = keys(member);
        member_keys.sort();
        assert_eq!(member_keys, ["address", "expires_at", "expires_in_ms"]);
        let left = member["expires_in_ms"].as_u64().unwrap();
        assert!(left > 0 && left <= 30_000, "{member}");
        let at = member["expires_at"].as_str().unwrap();
        // RFC 3339 in UTC: 2026-11-30T11:47:01.975Z
        assert!(at.len() == 24 && at.ends_with('Z') && &at[10..11] == "T", "{at}");
    }
    // Text order would put 10.0.0.100 before 10.0.0.9.
    assert_eq!(members[0]["address"], "10.0.0.9");

    let only = get(http_port, "/v1/members?group=1000");
    assert_eq!(only.status, 200);
    let only: serde_json::Value = serde_json::from_str(&only.body).unwrap();
    assert_eq!(only["groups"][0]["members"].as_array().unwrap().len(), 3);
    let unknown = get(http_port, "/v1/members?group=4242");
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("4242"), "{}", unknown.body);
    assert_eq!(get(http_port, "/v1/members?group=abc").status, 400);
    listener.terminate();
}

#[test]
fn members_command_prints_a_table_or_the_json() {
    let (listener, http_port, in_file) = listener_with_three_members();
    let config = listener.config_path.to_str().unwrap().to_owned();

    let output = finish(rgap_command(&["members", "-c", &config]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["GROUP", "ADDRESS", "EXPIRES", "IN"], "{text}");
    let listed: Vec<IpAddr> = rows[1..].iter().map(|row| row[1].parse().unwrap()).collect();
    assert_eq!(listed, in_file, "{text}");
    for row in &rows[1..] {
        assert_eq!(row[0], "1000", "{text}");
        let seconds: f64 = row[2].strip_suffix('s').unwrap().parse().unwrap();
        assert!(seconds > 0.0 && seconds <= 30.0, "{text}");
    }

    let url = format!("http://127.0.0.1:{http_port}");
    let output = finish(rgap_command(&["members", "--url", &url, "--group", "1000", "--json"]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let addresses: Vec<IpAddr> = json["groups"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["address"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(addresses, in_file);

    let output = finish(rgap_command(&["members", "--url", &url, "--group", "4242"]));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("4242"));
    listener.terminate();
}

/// `rgap members ARGS` that must fail: exit 1 and exactly one line on stderr, returned.
fn members_error(args: &[&str]) -> String {
    let output = finish(rgap_command(args));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(output.stdout.is_empty());
    stderr
}

#[test]
fn members_command_says_in_one_line_when_nobody_answers_or_http_is_not_configured() {
    let nobody = format!("http://127.0.0.1:{}", free_tcp_port());
    let stderr = members_error(&["members", "--url", &nobody]);
    assert!(stderr.contains("no rgap listener answering") && stderr.contains(&nobody), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgap.yaml");
    std::fs::write(&path, config(free_udp_port(), "  expire: 30s\n", "- kind: noop\n")).unwrap();
    let stderr = members_error(&["members", "-c", path.to_str().unwrap()]);
    assert!(stderr.contains("rgap.yaml") && stderr.contains("http.listen"), "{stderr}");
}

#[test]
fn other_methods_get_405_and_other_paths_404() {
    let (port, http_port) = (free_udp_port(), free_tcp_port());
    let listener =
        start_listener(&config_with_http(port, http_port, "  expire: 30s\n", "- kind: noop\n"));
    let base = format!("http://127.0.0.1:{http_port}");
    for path in ["/metrics", "/health", "/ready", "/v1/members"] {
        let posted = answer(agent().post(&format!("{base}{path}")).send("x").unwrap());
        assert_eq!(posted.status, 405, "POST {path}");
        assert_eq!(posted.allow.as_deref(), Some("GET, HEAD"), "POST {path}");
        let deleted = answer(agent().delete(&format!("{base}{path}")).call().unwrap());
        assert_eq!(deleted.status, 405, "DELETE {path}");
    }
    for path in ["/", "/nope", "/metrics/x", "/v1/member"] {
        assert_eq!(get(http_port, path).status, 404, "GET {path}");
    }
    assert_eq!(get(http_port, "/health").status, 200);
    listener.terminate();
}

#[test]
fn bad_http_listen_is_a_start_error_naming_the_key() {
    let port = free_udp_port();
    let nonsense =
        format!("{}http:\n  listen: nonsense\n", config(port, "  expire: 30s\n", "- kind: noop\n"));
    let error = listener_start_error(&nonsense);
    let last = error.lines().last().unwrap();
    assert!(last.starts_with("error: ") && last.contains("rgap.yaml"), "{error}");
    assert!(last.contains("http.listen") && last.contains("nonsense"), "{error}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let in_use = config_with_http(port, taken_port, "  expire: 30s\n", "- kind: noop\n");
    let error = listener_start_error(&in_use);
    let last = error.lines().last().unwrap();
    assert!(last.contains("http.listen") && last.contains("cannot listen on"), "{error}");
    assert!(last.contains(&format!("127.0.0.1:{taken_port}")), "{error}");
    assert!(!error.contains("panicked"), "{error}");
}

/// Checks that `line` is one JSON object with the fields every log line has; returns it.
fn log_object(line: &str) -> serde_json::Map<String, serde_json::Value> {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let object = value.as_object().unwrap_or_else(|| panic!("not an object: {line}")).clone();
    for key in ["timestamp", "level", "target", "message"] {
        assert!(object.get(key).is_some_and(|v| v.is_string()), "no {key} in {line}");
    }
    object
}

#[test]
fn json_logs_are_one_object_per_line_and_plugin_lines_carry_their_output() {
    let port = free_udp_port();
    let outputs = "- kind: noop\n- kind: eventlog\n";
    let listener = spawn_listener_with_env(
        &config(port, "  expire: 30s\n", outputs),
        &[("RGAP_LOG_FORMAT", "json")],
    );
    listener.wait_for_log("listener started");
    send_to(local(port), &announcement(1000, "10.0.0.7", PSK));
    listener.wait_for_log("has joined group 1000");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(listener.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, log) = listener.wait_exit();
    assert!(status.success());
    let objects: Vec<_> = log.iter().map(|line| log_object(line)).collect();
    let joined =
        objects.iter().find(|o| o["message"].as_str().unwrap().contains("has joined")).unwrap();
    assert_eq!(joined["message"], "host 10.0.0.7 has joined group 1000");
    assert_eq!(joined["output"], "eventlog#1");
    assert_eq!(joined["level"], "INFO");
    assert_eq!(joined["target"], "rgap::output");
    assert!(objects.iter().any(|o| o["message"].as_str().unwrap().contains("datagram totals")));
}

#[test]
fn log_format_flag_turns_on_json_with_the_events_fields() {
    let port = free_udp_port();
    let output = finish(rgap_command(&[
        "agent",
        "--log-format",
        "json",
        "-g",
        "1000",
        "-a",
        "10.0.0.8",
        "-k",
        PSK,
        "-d",
        &format!("127.0.0.1:{port}"),
    ]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.trim().is_empty(), "the agent logs what it sends");
    for line in stderr.lines() {
        let object = log_object(line);
        if object["message"] == "announcing once" {
            assert_eq!(object["group"].to_string().trim_matches('"'), "1000", "{line}");
        }
    }
    assert!(stderr.contains("announcing once"), "{stderr}");
}

#[test]
fn idle_clients_are_disconnected_and_never_hold_up_ingest() {
    use std::io::Read;
    let (port, http_port) = (free_udp_port(), free_tcp_port());
    let outputs = "- kind: eventlog\n";
    let listener = start_listener(&config_with_http(port, http_port, "  expire: 30s\n", outputs));
    // More idle connections than the endpoint serves at once, none sending a byte.
    let idle: Vec<std::net::TcpStream> =
        (0..40).map(|_| std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap()).collect();
    send_to(local(port), &announcement(1000, "10.0.0.5", PSK));
    listener.wait_for_log("host 10.0.0.5 has joined group 1000");
    // Each is closed by the server: at once beyond the cap, the others when their header
    // timeout passes. A read returns end-of-file (or a reset) instead of blocking.
    for mut stream in idle {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("the server sent something to a client that asked nothing"),
            Err(error) => assert_ne!(error.kind(), std::io::ErrorKind::WouldBlock, "still open"),
        }
    }
    assert_eq!(get(http_port, "/health").status, 200);
    listener.terminate();
}

#[test]
fn plugin_metrics_appear_under_their_kind_and_follow_what_the_plugins_did() {
    let (port, http_port) = (free_udp_port(), free_tcp_port());
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    let outputs =
        format!("{HOSTS_OUTPUT}- kind: testkit\n  spec:\n    record_to: {}\n", record.display());
    let listener = start_listener(&config_with_http(port, http_port, "  expire: 30s\n", &outputs));
    send_to(local(port), &announcement(1000, "10.0.0.1", PSK));
    send_to(local(port), &announcement(1000, "10.0.0.2", PSK));
    let joins = r#"rgap_plugin_testkit_events_total{output="testkit#1",event="join"}"#;
    let members = r#"rgap_plugin_testkit_members{output="testkit#1"}"#;
    let seen = wait_for_metrics(http_port, &[(joins, 2.0), (members, 2.0)]);
    // The testkit's own record agrees with what it exposed.
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert_eq!(recorded.lines().filter(|l| l.starts_with("event join")).count(), 2);
    // The hosts file counts its writes (it renders on its own thread, paced), and no failure.
    let writes = r#"rgap_plugin_hostsfile_writes_total{output="hostsfile#0"}"#;
    let mut seen = seen;
    assert!(
        eventually(|| {
            seen = metrics(http_port);
            seen.get(writes).is_some_and(|&n| n >= 1.0)
        }),
        "{seen:#?}"
    );
    let errors = r#"rgap_plugin_hostsfile_write_errors_total{output="hostsfile#0"}"#;
    assert_eq!(seen.get(errors), Some(&0.0), "{seen:#?}");
    let exposition = get(http_port, "/metrics").body;
    assert!(exposition.contains("# TYPE rgap_plugin_testkit_events_total counter"), "{exposition}");
    assert!(exposition.contains("# TYPE rgap_plugin_testkit_members gauge"), "{exposition}");
    assert!(listener.terminate().success());
}

/// Asks the dns output at `server` for `name` A over UDP (hickory's message, a real query).
fn dns_query(server: SocketAddr, name: &str) -> hickory_proto::op::Message {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    socket.send_to(&message.to_vec().unwrap(), server).unwrap();
    let mut buffer = [0u8; 4096];
    let length = socket.recv(&mut buffer).expect("a DNS answer");
    Message::from_vec(&buffer[..length]).expect("a well-formed answer")
}

#[test]
fn a_dns_query_moves_the_dns_plugins_query_counter() {
    let (port, http_port) = (free_udp_port(), free_tcp_port());
    let dns_port = free_port();
    let outputs = format!(
        "- kind: dns\n  spec:\n    bind_address: 127.0.0.1:{dns_port}\n    mappings:\n      web.example.com.: {{group: 1000}}\n"
    );
    let listener = start_listener(&config_with_http(port, http_port, "  expire: 30s\n", &outputs));
    send_to(local(port), &announcement(1000, "10.0.0.1", PSK));
    let server = local(dns_port);
    let noerror = r#"rgap_plugin_dns_queries_total{output="dns#0",rcode="NOERROR"}"#;
    let nxdomain = r#"rgap_plugin_dns_queries_total{output="dns#0",rcode="NXDOMAIN"}"#;
    let before = metrics(http_port);
    let base = |series: &str| before.get(series).copied().unwrap_or(0.0);
    let (noerror_before, nxdomain_before) = (base(noerror), base(nxdomain));
    // Wait until the member is served, then count exactly what we ask from here on.
    assert!(eventually(|| !dns_query(server, "web.example.com.").answers.is_empty()));
    let after_wait = metrics(http_port).get(noerror).copied().unwrap_or(0.0);
    assert!(after_wait > noerror_before, "{after_wait} <= {noerror_before}");
    for _ in 0..3 {
        dns_query(server, "web.example.com.");
    }
    dns_query(server, "nobody.example.com.");
    wait_for_metrics(http_port, &[(noerror, after_wait + 3.0), (nxdomain, nxdomain_before + 1.0)]);
    assert!(listener.terminate().success());
}

/// Three groups on one port: 1000 with `count` members, 1001 with three, 1002 with none.
/// Returns the listener, the endpoint's port and every (group, address) sent, sorted as the
/// reply must list them (groups by id, addresses in numeric order: std's `Ord` of `IpAddr`,
/// IPv4 before IPv6).
fn listener_with_many_members(count: u32) -> (RunningListener, u16, Vec<(u64, IpAddr)>) {
    let (port, http_port) = (free_udp_port(), free_tcp_port());
    let group = |id: u64| format!("- id: {id}\n  psk: {PSK}\n  expire: 300s\n");
    let config = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n{}{}{}outputs:\n- kind: noop\n  spec:\nhttp:\n  listen: 127.0.0.1:{http_port}\n",
        group(1000),
        group(1001),
        group(1002)
    );
    let listener = start_listener(&config);
    // Sent in an order that is neither numeric nor textual (7919 is prime to any count
    // used here), a fifth of them IPv6.
    let mut sent: Vec<(u64, IpAddr)> = (0..count)
        .map(|i| (i * 7919) % count)
        .map(|n| {
            let ip: IpAddr = if n % 5 == 4 {
                format!("fd00::{:x}", n * 3).parse().unwrap()
            } else {
                format!("10.20.{}.{}", n / 250, n % 250).parse().unwrap()
            };
            (1000, ip)
        })
        .collect();
    for ip in ["192.168.1.1", "10.0.0.1", "::1"] {
        sent.push((1001, ip.parse().unwrap()));
    }
    let joined = |http_port| {
        let seen = metrics(http_port);
        let members = |group: &str| seen.get(&format!("rgap_group_members{{group=\"{group}\"}}"));
        (members("1000").copied(), members("1001").copied())
    };
    // UDP on a loaded machine may drop some: send again (a refresh) until every one is in.
    let wanted = (Some(f64::from(count)), Some(3.0));
    for _round in 0..5 {
        for (n, (group, ip)) in sent.iter().enumerate() {
            send_to(local(port), &announcement(*group, &ip.to_string(), PSK));
            if n % 200 == 199 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while joined(http_port) != wanted && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if joined(http_port) == wanted {
            sent.sort();
            return (listener, http_port, sent);
        }
    }
    panic!("members (group 1000, group 1001) {:?}, not {wanted:?}", joined(http_port));
}

/// The JSON of a 200 from `path`.
fn json_of(http_port: u16, path: &str) -> serde_json::Value {
    let answer = get(http_port, path);
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", answer.body))
}

/// Follows `next` from `/v1/members?{query}&limit={limit}`; the (group, address) pairs in
/// the order served, the ids of the groups each page listed, and the number of pages.
fn follow_pages(
    http_port: u16,
    query: &str,
    limit: usize,
) -> (Vec<(u64, IpAddr)>, Vec<u64>, usize) {
    let (mut members, mut groups, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut path = format!("/v1/members?{query}&limit={limit}");
    loop {
        let page = json_of(http_port, &path);
        pages += 1;
        assert!(pages <= 100, "still paging after 100 pages: {path}");
        let mut listed = 0;
        for group in page["groups"].as_array().unwrap() {
            let id = group["id"].as_u64().unwrap();
            groups.push(id);
            for member in group["members"].as_array().unwrap() {
                members.push((id, member["address"].as_str().unwrap().parse().unwrap()));
                listed += 1;
            }
        }
        assert!(listed <= limit, "{listed} members on a page of {limit}: {path}");
        let Some(next) = page.get("next") else { return (members, groups, pages) };
        assert_eq!(listed, limit, "a page before the last is full: {path}");
        path = format!("/v1/members?{query}&limit={limit}&after={}", next.as_str().unwrap());
    }
}

/// The standard output of `rgap ARGS` that must succeed, through a file: more than a pipe
/// holds, which `finish` reads only once the command has exited.
fn members_to_file(args: &[&str]) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut command = rgap_command(args);
    command.stdout(out.reopen().unwrap());
    let output = finish(command);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::read_to_string(out.path()).unwrap()
}

#[test]
fn members_pages_list_a_group_of_thousands_each_member_once_in_order() {
    // More than one reply lists without `limit` (10 000).
    let (listener, http_port, sent) = listener_with_many_members(10_500);
    let in_1000: Vec<(u64, IpAddr)> = sent.iter().copied().filter(|(g, _)| *g == 1000).collect();

    // One group, by address: 10 500 in pages of 1 000 is eleven pages, the last of 500.
    let (served, groups, pages) = follow_pages(http_port, "group=1000", 1_000);
    assert_eq!(served.len(), in_1000.len());
    assert!(served == in_1000, "not each member once in numeric order: {served:?}");
    assert_eq!(pages, 11);
    assert!(groups.iter().all(|&id| id == 1000), "{groups:?}");

    // Every group: the pages end mid-group and at a group's end; the empty group 1002 is
    // listed once, when paging reaches it.
    for limit in [2_000, 3_501, 10_000] {
        let (served, groups, _) = follow_pages(http_port, "", limit);
        assert!(served == sent, "limit {limit}: not each member once in order: {served:?}");
        assert_eq!(groups.iter().filter(|&&id| id == 1002).count(), 1, "{groups:?}");
    }

    // Without limit: refused past 10 000, saying how to page; whole (without `next`) below.
    let refused = get(http_port, "/v1/members");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.starts_with("10503 members are more than one reply"), "{}", refused.body);
    assert!(refused.body.contains("limit=N"), "{}", refused.body);
    let whole = json_of(http_port, "/v1/members?group=1001");
    assert!(whole.get("next").is_none(), "an unpaged reply has no next: {whole}");
    assert_eq!(whole["groups"][0]["members"].as_array().unwrap().len(), 3);

    // `rgap members` follows the pages (of 10 000) and prints every member once, in order.
    let url = format!("http://127.0.0.1:{http_port}");
    let json: serde_json::Value =
        serde_json::from_str(&members_to_file(&["members", "--url", &url, "--json"])).unwrap();
    assert!(json.get("next").is_none(), "the pages are joined into one reply");
    let groups = json["groups"].as_array().unwrap();
    let ids: Vec<u64> = groups.iter().map(|g| g["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1000, 1001, 1002], "each group once");
    let printed: Vec<(u64, IpAddr)> = groups
        .iter()
        .flat_map(|g| {
            let id = g["id"].as_u64().unwrap();
            g["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |m| (id, m["address"].as_str().unwrap().parse().unwrap()))
        })
        .collect();
    assert!(printed == sent, "rgap members --json: not each member once in order");
    let text = members_to_file(&["members", "--url", &url, "--group", "1000"]);
    let rows: Vec<(u64, IpAddr)> = text
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells[0].parse().unwrap(), cells[1].parse().unwrap())
        })
        .collect();
    assert!(rows == in_1000, "rgap members --group 1000: not each member once in order");
    listener.terminate();
}

#[test]
fn members_paging_parameters_that_make_no_sense_get_400_naming_them() {
    let (listener, http_port, in_file) = listener_with_three_members();
    for (query, says) in [
        ("group=1000&limit=0", "limit: \"0\""),
        ("group=1000&limit=many", "limit: \"many\""),
        ("group=1000&limit=10001", "limit: \"10001\""),
        ("limit=-5", "limit: \"-5\""),
        ("group=1000&limit=2&after=10.0.0", "after: \"10.0.0\" is not an address"),
        // Across groups, a cursor names its group too.
        ("limit=2&after=10.0.0.9", "after: \"10.0.0.9\" is not GROUP/ADDRESS"),
        ("group=x&limit=2", "group: \"x\""),
    ] {
        let answer = get(http_port, &format!("/v1/members?{query}"));
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        assert!(answer.body.starts_with(says), "{query}: {}", answer.body);
        assert_eq!(answer.body.lines().count(), 1, "{query}: one line: {}", answer.body);
    }
    // A good page of the same group, and its `next` read back (percent-encoded, as a client
    // may send it), to the end.
    let first = json_of(http_port, "/v1/members?group=1000&limit=2");
    let listed = |page: &serde_json::Value| -> Vec<IpAddr> {
        page["groups"][0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["address"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(listed(&first), in_file[..2]);
    let next = first["next"].as_str().expect("a next after the first two of three");
    let encoded = next.replace(':', "%3A").replace('.', "%2E");
    let second = json_of(http_port, &format!("/v1/members?group=1000&limit=2&after={encoded}"));
    assert_eq!(listed(&second), in_file[2..]);
    assert!(second.get("next").is_none(), "{second}");
    listener.terminate();
}
