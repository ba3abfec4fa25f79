//! End-to-end: the `template` output of the real listener renders a real file from a
//! Jinja2 template as members join and leave, waits out bursts, refuses a candidate its
//! check rejects, reloads its consumer after each install, and refuses a broken template at
//! start. A real HAProxy checks what it renders.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    announcement, announcement_at, eventually, send_to, spawn_listener_with_files, RunningListener,
    PSK,
};

/// One group (1000, `expire`), then `outputs`.
fn one_group(port: u16, expire: &str, outputs: &str) -> String {
    format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1000\n  psk: {PSK}\n  expire: {expire}\n\
         outputs:\n{outputs}"
    )
}

/// Starts a listener with `files` in its directory and waits until it has started.
fn start(config: &str, files: &[(&str, &str)]) -> RunningListener {
    let listener = spawn_listener_with_files(config, files);
    listener.wait_for_log("listener started");
    listener
}

/// Starts a listener expected to fail at start; returns its log.
fn start_error(config: &str, files: &[(&str, &str)]) -> String {
    let listener = spawn_listener_with_files(config, files);
    let (status, log) = listener.wait_exit();
    assert!(!status.success(), "rgap should have failed; log:\n{}", log.join("\n"));
    log.join("\n")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn announce(to: SocketAddr, group: u64, ips: &[&str]) {
    for ip in ips {
        send_to(to, &announcement(group, ip, PSK));
    }
}

/// Candidate files left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

/// Unix seconds as RFC 3339, by date(1): a formatter independent of rgap's.
fn rfc3339_by_date(unix_seconds: u64) -> String {
    let output = Command::new("date")
        .args(["-u", "-d", &format!("@{unix_seconds}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("running date");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Lists each group with its members; expiry times for group 1000.
const LIST_TEMPLATE: &str = "\
{% for id, group in groups|items %}
group {{ id }} ({{ group.members|length }}):
{% for m in group.members %}
  {{ m.address }}{{ ' until ' ~ m.expires_at if id == 1000 else '' }}
{% endfor %}
{% endfor %}
";

#[test]
fn renders_exact_content_through_joins_and_leaves() {
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 2000\n  psk: {PSK}\n  expire: 1s\n\
         - id: 1000\n  psk: {PSK}\n  expire: 5m\noutputs:\n- kind: template\n  spec:\n    \
         source: templates/list.j2\n    destination: out/list.conf\n"
    );
    // Relative paths are taken from the config file's directory.
    let listener = start(&config, &[("templates/list.j2", LIST_TEMPLATE), ("out/.keep", "")]);
    let path = listener.dir.path().join("out/list.conf");
    assert!(
        eventually(|| read(&path) == "group 1000 (0):\ngroup 2000 (0):\n"),
        "{:?}",
        read(&path)
    );

    // Group 1000 joins with a whole-second timestamp, so its expiry is known exactly.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    for ip in ["10.0.0.10", "2001:db8::1", "10.0.0.2"] {
        send_to(to, &announcement_at(1000, ip, PSK, now as i64 * 1_000_000));
    }
    let until = rfc3339_by_date(now + 300);
    // Sorted by number, not text (10.0.0.2 before 10.0.0.10), IPv4 before IPv6.
    let workers = format!(
        "group 1000 (3):\n  10.0.0.2 until {until}\n  10.0.0.10 until {until}\n  \
         2001:db8::1 until {until}\n"
    );
    let expected = format!("{workers}group 2000 (0):\n");
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));

    // Group 2000 expires after 1 s: keep both alive until they show, then one, then none.
    let both = format!("{workers}group 2000 (2):\n  192.0.2.7\n  192.0.2.8\n");
    let shown = eventually(|| {
        announce(to, 2000, &["192.0.2.8", "192.0.2.7"]);
        read(&path) == both
    });
    assert!(shown, "{:?}", read(&path));
    let one = format!("{workers}group 2000 (1):\n  192.0.2.8\n");
    let shown = eventually(|| {
        announce(to, 2000, &["192.0.2.8"]);
        read(&path) == one
    });
    assert!(shown, "{:?}", read(&path));
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));
    assert!(leftovers(&listener.dir.path().join("out")).is_empty());
    assert!(listener.terminate().success());
}

const ADDRESSES_TEMPLATE: &str = "\
# workers
{% for m in groups[1000].members %}
{{ m.address }}
{% endfor %}
";

#[test]
fn a_burst_of_joins_under_wait_gives_one_render_and_one_reload() {
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    // Each reload records how many lines the file had when it ran.
    let listener = start(
        &one_group(
            port,
            "5m",
            "- kind: template\n  spec:\n    source: t.j2\n    destination: out.conf\n    \
             wait: {min: 2s, max: 30s}\n    mode: \"0600\"\n    \
             reload_command: [sh, -c, 'echo $(wc -l < out.conf) >> reloads']\n",
        ),
        &[("t.j2", ADDRESSES_TEMPLATE)],
    );
    let reloads = listener.dir.path().join("reloads");
    assert!(eventually(|| read(&reloads) == "1\n"), "{:?}", read(&reloads));

    // Spread over about a second, so that without `wait` the joins would reach the output
    // in many snapshots and be rendered many times.
    for i in 1..=50 {
        announce(to, 1000, &[&format!("10.1.0.{i}")]);
        std::thread::sleep(Duration::from_millis(20));
    }
    // One more change after the burst was rendered: its render comes last, so any extra
    // render of the burst would show before it.
    assert!(eventually(|| read(&reloads).lines().count() >= 2), "{:?}", read(&reloads));
    announce(to, 1000, &["10.2.0.1"]);
    assert!(eventually(|| read(&reloads).ends_with("52\n")), "{:?}", read(&reloads));
    assert_eq!(read(&reloads), "1\n51\n52\n", "one render and one reload per quiet period");
    assert_eq!(listener.lines_with(": wrote ").len(), 3, "{:#?}", listener.log());
    let mode = std::fs::metadata(listener.dir.path().join("out.conf")).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777, 0o600);
    assert!(listener.terminate().success());
}

#[test]
fn a_failing_check_leaves_the_destination_and_a_later_passing_one_replaces_it() {
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    // The check refuses while the file `refuse` exists; it notes where the candidate was.
    let check = "dirname \"$0\" >> checked-in; if [ -e refuse ]; then \
                 echo \"refusing $(wc -l < \"$0\") lines\" >&2; exit 3; fi";
    let listener = start(
        &one_group(
            port,
            "5m",
            &format!(
                "- kind: template\n  spec:\n    source: t.j2\n    destination: out.conf\n    \
                 check_command: [sh, -c, '{check}', '{{file}}']\n    \
                 reload_command: [sh, -c, 'echo reload >> reloads']\n"
            ),
        ),
        &[("t.j2", ADDRESSES_TEMPLATE), ("out.conf", "hand-written\n")],
    );
    let dir = listener.dir.path();
    let (path, reloads) = (dir.join("out.conf"), dir.join("reloads"));
    assert!(eventually(|| read(&reloads) == "reload\n"), "{:?}", read(&reloads));
    assert_eq!(read(&path), "# workers\n");

    std::fs::write(dir.join("refuse"), "").unwrap();
    announce(to, 1000, &["10.0.0.1"]);
    let error = listener.wait_for_log("rejected the new");
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("(exit status: 3)"), "{error}");
    assert!(error.contains("stderr: refusing 2 lines"), "{error}");
    assert!(error.contains(&format!("{} left as it is", path.display())), "{error}");
    assert_eq!(read(&path), "# workers\n", "the destination changed");
    assert_eq!(read(&reloads), "reload\n", "reloaded after a rejected check");
    assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));

    // Tried again at the next change.
    std::fs::remove_file(dir.join("refuse")).unwrap();
    announce(to, 1000, &["10.0.0.2"]);
    let expected = "# workers\n10.0.0.1\n10.0.0.2\n";
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));
    assert!(eventually(|| read(&reloads) == "reload\nreload\n"), "{:?}", read(&reloads));
    // Every candidate was checked in the destination's own directory.
    let checked = read(&dir.join("checked-in"));
    assert_eq!(checked.lines().count(), 3, "{checked:?}");
    let dir_text = dir.display().to_string();
    assert!(checked.lines().all(|line| line == dir_text), "{checked:?}");
    assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
    assert!(listener.terminate().success());
}

fn template_output(spec: &str) -> String {
    format!("- kind: template\n  spec:\n{spec}")
}

#[test]
fn a_template_syntax_error_is_a_start_error_naming_the_file_and_line() {
    let port = common::free_udp_port();
    let config = one_group(
        port,
        "15s",
        &template_output("    source: broken.j2\n    destination: out.conf\n"),
    );
    let log = start_error(&config, &[("broken.j2", "# ok\n# ok\n{{ foo bar }}\n")]);
    let last = log.lines().last().unwrap();
    assert!(last.starts_with("error: "), "{log}");
    assert!(last.contains("outputs[0]: kind \"template\""), "{last}");
    assert!(last.contains("/broken.j2 line 3: syntax error"), "{last}");
}

#[test]
fn missing_source_and_unusable_destination_are_start_errors() {
    let port = common::free_udp_port();
    let cases = [
        ("    source: absent.j2\n    destination: out.conf\n", "spec.source: cannot read the template /"),
        ("    source: t.j2\n    destination: nodir/out.conf\n", "spec.destination: directory /"),
        ("    source: t.j2\n    destination: t.j2/out.conf\n", "is not a directory"),
        (
            "    source: t.j2\n    destination: out.conf\n    check_command: [no-such-checker, '{file}']\n",
            "spec.check_command[0]: no-such-checker not found in PATH",
        ),
        ("    source: t.j2\n    destination: out.conf\n    wait: {max: 1s}\n", "missing field `min`"),
    ];
    for (spec, expected) in cases {
        let log = start_error(&one_group(port, "15s", &template_output(spec)), &[("t.j2", "x\n")]);
        let last = log.lines().last().unwrap();
        assert!(last.contains("outputs[0]: kind \"template\""), "{last}");
        assert!(last.contains(expected), "{spec}: {last}");
    }
}

#[test]
fn a_render_error_is_logged_with_its_line_and_leaves_the_destination() {
    let port = common::free_udp_port();
    // Group 2000 is not configured: strict undefined refuses to render it as empty.
    let template = "# ok\n{% for m in groups[2000].members %}{{ m.address }}{% endfor %}\n";
    let listener = start(
        &one_group(port, "15s", &template_output("    source: t.j2\n    destination: out.conf\n")),
        &[("t.j2", template), ("out.conf", "previous\n")],
    );
    let error = listener.wait_for_log("cannot render");
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("/t.j2 line 2: undefined value"), "{error}");
    let path = listener.dir.path().join("out.conf");
    assert!(error.contains(&format!("{} left as it is", path.display())), "{error}");
    assert_eq!(read(&path), "previous\n");
    assert!(listener.terminate().success());
}

#[test]
fn a_group_not_in_the_listener_is_named_and_nothing_is_rendered() {
    let port = common::free_udp_port();
    let listener = start(
        &one_group(
            port,
            "15s",
            &template_output(
                "    source: t.j2\n    destination: out.conf\n    groups: [1000, 3000]\n",
            ),
        ),
        &[("t.j2", ADDRESSES_TEMPLATE)],
    );
    let warning = listener.wait_for_log("not rendering");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("group(s) 3000 are not configured in the listener"), "{warning}");
    assert!(!listener.dir.path().join("out.conf").exists());
    assert!(listener.terminate().success());
}

/// Whether HAProxy is installed; outside CI its tests are skipped (with a note) if not.
fn have_haproxy(test: &str) -> bool {
    let found = Command::new("haproxy").arg("-v").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "CI must install haproxy (.ci/run does)");
        eprintln!("SKIPPED {test}: haproxy is not installed (apt-get install haproxy)");
    }
    found
}

fn haproxy_output(extra: &str) -> String {
    template_output(&format!(
        "    source: haproxy.cfg.j2\n    destination: haproxy.cfg\n    groups: [1000]\n    \
         check_command: [haproxy, -c, -f, '{{file}}']\n{extra}"
    ))
}

#[test]
fn haproxy_accepts_the_example_config_as_rendered() {
    if !have_haproxy("haproxy_accepts_the_example_config_as_rendered") {
        return;
    }
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/templates/haproxy.cfg.j2");
    let template = std::fs::read_to_string(example).unwrap();
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let listener =
        start(&one_group(port, "5m", &haproxy_output("")), &[("haproxy.cfg.j2", &template)]);
    let path = listener.dir.path().join("haproxy.cfg");
    assert!(eventually(|| read(&path).contains("backend workers")), "{:?}", read(&path));

    announce(to, 1000, &["10.0.0.2", "2001:db8::7", "10.0.0.1"]);
    let servers =
        "    server 10.0.0.1 10.0.0.1:80 check\n    server 10.0.0.2 10.0.0.2:80 check\n    \
                   server 2001:db8::7 2001:db8::7:80 check\n";
    assert!(eventually(|| read(&path).ends_with(servers)), "{:?}", read(&path));
    // What was installed is what HAProxy accepts.
    let check = Command::new("haproxy").arg("-c").arg("-f").arg(&path).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(listener.lines_with("rejected").is_empty(), "{:#?}", listener.log());
    assert!(listener.terminate().success());
}

/// A valid HAProxy config, until the backend has three servers: then, deliberately, a
/// line HAProxy refuses.
const BREAKABLE_HAPROXY: &str = "\
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend web
    bind 127.0.0.1:8080
    default_backend app

backend app
{% for m in groups[1000].members %}
    server {{ m.address }} {{ m.address }}:8080 check
{% endfor %}
{% if groups[1000].members|length >= 3 %}
    no-such-keyword
{% endif %}
";

#[test]
fn haproxy_rejects_a_broken_config_which_is_never_installed() {
    if !have_haproxy("haproxy_rejects_a_broken_config_which_is_never_installed") {
        return;
    }
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let listener = start(
        &one_group(
            port,
            "5m",
            &haproxy_output("    reload_command: [sh, -c, 'cp haproxy.cfg reloaded.cfg']\n"),
        ),
        &[("haproxy.cfg.j2", BREAKABLE_HAPROXY)],
    );
    let dir = listener.dir.path();
    let (path, reloaded) = (dir.join("haproxy.cfg"), dir.join("reloaded.cfg"));
    announce(to, 1000, &["10.0.0.1", "10.0.0.2"]);
    let two = "    server 10.0.0.1 10.0.0.1:8080 check\n    server 10.0.0.2 10.0.0.2:8080 check\n";
    assert!(eventually(|| read(&reloaded).ends_with(two)), "{:?}", read(&reloaded));
    let good = read(&path);

    announce(to, 1000, &["10.0.0.3"]);
    let error = listener.wait_for_log("rejected the new");
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("check_command haproxy"), "{error}");
    // HAProxy's own words, from its stderr.
    assert!(error.contains("unknown keyword 'no-such-keyword'"), "{error}");
    assert_eq!(read(&path), good, "the rejected config was installed");
    assert_eq!(read(&reloaded), good, "reloaded after a rejected check");
    assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
    assert!(listener.terminate().success());
}
