//! The plugin contract, end to end: a plugin binary built against rgap-plugin-api 0.1.0 and
//! frozen in `testdata/` keeps loading and working beside plugins of the current API; the
//! optional entry points (`validate`, `wants_events`) are honoured and their absence is
//! coped with; plugin files or directories others could have written are refused.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{
    announcement, config, free_udp_port, plugin_dir, rgap_command, send_to,
    spawn_listener_with_env, PSK,
};

const FROZEN_0_1_0: &str = "testdata/frozen-plugins/api-0.1.0";

/// A private copy of the frozen 0.1.0 plugin (mode 0644 in a 0755 directory), so that the
/// test does not depend on the umask the repository was checked out with.
fn frozen_dir() -> PathBuf {
    static COPY: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = COPY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let name = "librgap_output_acme_audit.so";
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(FROZEN_0_1_0).join(name);
        let copy = dir.path().join(name);
        fs::copy(&source, &copy).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).unwrap();
        dir
    });
    dir.path().to_path_buf()
}

/// A directory of mode 0755 holding a copy of the built plugin `kind`, mode 0644.
fn private_plugin_dir(kind: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let name = format!("librgap_output_{kind}.so");
    let copy = dir.path().join(&name);
    fs::copy(plugin_dir().join(&name), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).unwrap();
    dir
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[test]
fn a_plugin_built_against_0_1_0_runs_beside_current_plugins_in_one_listener() {
    plugin_dir();
    let work = tempfile::tempdir().unwrap();
    let audit = work.path().join("audit.jsonl");
    let record = work.path().join("testkit.txt");
    let port = free_udp_port();
    let outputs = format!(
        "- kind: acme_audit\n  spec:\n    path: {}\n- kind: testkit\n  spec:\n    record_to: {}\n",
        audit.display(),
        record.display()
    );
    let frozen = frozen_dir();
    let plugin_path = frozen.to_str().unwrap();
    let listener = spawn_listener_with_env(
        &config(port, "  expire: 2s\n", &outputs),
        &[("RGAP_PLUGIN_PATH", plugin_path)],
    );
    listener.wait_for_log("listener started: 1 group(s), 2 output(s)");

    let to = format!("127.0.0.1:{port}").parse().unwrap();
    send_to(to, &announcement(1000, "10.0.0.1", PSK));
    // Expiry after 2 s makes the leave come by itself.
    listener.wait_for_log("acme_audit#0");
    assert!(
        common::eventually(|| read_lines(&audit).len() >= 2),
        "no join and leave in the frozen plugin's audit file: {:?}",
        read_lines(&audit)
    );
    let (status, log) = listener.terminate_and_wait();
    assert!(status.success(), "{}", log.join("\n"));

    let records: Vec<String> = read_lines(&audit);
    assert!(records[0].contains(r#""event":"join""#), "{records:?}");
    assert!(records[0].contains(r#""address":"10.0.0.1""#), "{records:?}");
    assert!(records[1].contains(r#""event":"leave""#), "{records:?}");
    // The current plugin saw the same member through the same listener.
    let seen = read_lines(&record);
    assert!(seen.contains(&"event join 1000 10.0.0.1".to_owned()), "{seen:?}");
    assert!(seen.contains(&"event leave 1000 10.0.0.1".to_owned()), "{seen:?}");
}

#[test]
fn rgap_plugins_shows_which_optional_entry_points_each_plugin_has() {
    let frozen = frozen_dir();
    let output = common::finish({
        let mut command = rgap_command(&["plugins"]);
        command.env("RGAP_PLUGIN_PATH", &frozen);
        command
    });
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    let line_of = |dir: &Path, kind: &str| -> String {
        let header = format!("{}:", dir.display());
        listing
            .lines()
            .skip_while(|line| !line.starts_with(&header))
            .skip(1)
            .take_while(|line| line.starts_with("  "))
            .find(|line| line.split_whitespace().next() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} under {}:\n{listing}", dir.display()))
            .to_owned()
    };
    let old = line_of(&frozen, "acme_audit");
    assert!(old.contains("[optional entry points: none]"), "{old}");
    let current = line_of(plugin_dir(), "dns");
    assert!(current.contains("validate") && current.contains("wants_events"), "{current}");
    // The freshly built acme_audit is shadowed by the frozen one and not loaded.
    let shadowed = line_of(plugin_dir(), "acme_audit");
    assert!(shadowed.contains("shadowed by") && shadowed.contains("not loaded"), "{shadowed}");
}

#[test]
fn validate_catches_a_spec_error_without_side_effects() {
    plugin_dir();
    let work = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let missing_dir = work.path().join("nowhere/record.txt");
    let bad = config(
        port,
        "  expire: 15s\n",
        &format!("- kind: testkit\n  spec:\n    record_to: {}\n", missing_dir.display()),
    );
    let bad_path = work.path().join("bad.yaml");
    fs::write(&bad_path, bad).unwrap();
    let output = common::finish(rgap_command(&["validate", "-c", bad_path.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("outputs[0]") && stderr.contains("spec.record_to: no directory"),
        "{stderr}"
    );

    let record = work.path().join("record.txt");
    let good = config(
        port,
        "  expire: 15s\n",
        &format!("- kind: testkit\n  spec:\n    record_to: {}\n", record.display()),
    );
    let good_path = work.path().join("good.yaml");
    fs::write(&good_path, good).unwrap();
    let output = common::finish(rgap_command(&["validate", "-c", good_path.to_str().unwrap()]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout, format!("ok: {}: 1 group(s), 1 output(s)\n", good_path.display()));
    assert!(!record.exists(), "validate created the output's file");
}

#[test]
fn validate_warns_that_a_0_1_0_plugin_spec_is_not_checked() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("rgap.yaml");
    let audit = work.path().join("audit.jsonl");
    let outputs = format!("- kind: acme_audit\n  spec:\n    path: {}\n", audit.display());
    fs::write(&path, config(free_udp_port(), "  expire: 15s\n", &outputs)).unwrap();
    let output = common::finish({
        let mut command = rgap_command(&["validate", "-c", path.to_str().unwrap()]);
        command.env("RGAP_PLUGIN_PATH", frozen_dir());
        command
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("acme_audit#0: spec not checked"),
        "{stderr}"
    );
    assert!(!audit.exists(), "validate created the audit file");
}

#[test]
fn a_snapshot_only_plugin_receives_no_event_calls() {
    plugin_dir();
    let work = tempfile::tempdir().unwrap();
    let snapshots = work.path().join("snapshots.txt");
    let events = work.path().join("events.txt");
    let port = free_udp_port();
    let outputs = format!(
        "- kind: snapshot_only\n  spec:\n    record_to: {}\n- kind: testkit\n  spec:\n    record_to: {}\n    report_boundary_calls: true\n",
        snapshots.display(),
        events.display()
    );
    let listener = common::spawn_listener(&config(port, "  expire: 15s\n", &outputs));
    listener.wait_for_log("listener started");
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        send_to(to, &announcement(1000, ip, PSK));
    }
    assert!(common::eventually(|| {
        read_lines(&events).iter().filter(|line| line.starts_with("event join")).count() == 3
    }));
    let (status, log) = listener.terminate_and_wait();
    assert!(status.success(), "{}", log.join("\n"));
    // The plugin that wants events got every one across the boundary...
    let testkit = read_lines(&events);
    let boundary = testkit.iter().find(|line| line.starts_with("boundary")).unwrap();
    let event_calls: u64 = boundary.split(['=', ' ']).nth(2).unwrap().parse().unwrap();
    assert!(event_calls >= 3, "{testkit:?}");
    // ...the snapshot-only one none at all, but snapshots.
    let record = read_lines(&snapshots);
    assert_eq!(record.len(), 1, "{record:?}");
    assert!(record[0].starts_with("boundary events=0 snapshots="), "{record:?}");
    assert_ne!(record[0], "boundary events=0 snapshots=0", "{record:?}");
}

#[test]
fn a_world_writable_plugin_file_is_refused_with_its_mode() {
    let dir = private_plugin_dir("testkit");
    let file = dir.path().join("librgap_output_testkit.so");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    let outputs = "- kind: testkit\n";
    let error = start_error_with_plugins(dir.path(), outputs);
    assert!(error.contains(&format!("refusing plugin file {}", file.display())), "{error}");
    assert!(error.contains("writable by others") && error.contains("mode 0666"), "{error}");
}

#[test]
fn a_group_writable_plugin_directory_is_refused_with_its_mode() {
    let dir = private_plugin_dir("testkit");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o775)).unwrap();
    let error = start_error_with_plugins(dir.path(), "- kind: testkit\n");
    assert!(
        error.contains(&format!("refusing plugin directory {}", dir.path().display())),
        "{error}"
    );
    assert!(error.contains("writable by its group") && error.contains("mode 0775"), "{error}");
}

#[test]
fn a_plugin_file_owned_by_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        // Only root can hand a file to another user; CI runs as root.
        return;
    }
    let dir = private_plugin_dir("testkit");
    let file = dir.path().join("librgap_output_testkit.so");
    nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let error = start_error_with_plugins(dir.path(), "- kind: testkit\n");
    assert!(error.contains("owned by another user") && error.contains("65534"), "{error}");
}

/// Starts a listener with `RGAP_PLUGIN_PATH=dir`, expecting it to fail; returns its log.
fn start_error_with_plugins(dir: &Path, outputs: &str) -> String {
    plugin_dir();
    let listener = spawn_listener_with_env(
        &config(free_udp_port(), "  expire: 15s\n", outputs),
        &[("RGAP_PLUGIN_PATH", dir.to_str().unwrap())],
    );
    let (status, log) = listener.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", log.join("\n"));
    let last = log.last().cloned().unwrap_or_default();
    assert!(last.starts_with("error: "), "{}", log.join("\n"));
    last
}

/// `rgap validate -c <config with outputs>` in a fresh directory: (exit code, stdout, stderr,
/// the files in that directory afterwards).
fn validate_outputs(outputs: &str) -> (Option<i32>, String, String, Vec<String>) {
    plugin_dir();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("rgap.yaml");
    fs::write(&path, config(free_udp_port(), "  expire: 15s\n", outputs)).unwrap();
    let output = common::finish({
        let mut command = rgap_command(&["validate", "-c", "rgap.yaml"]);
        command.current_dir(work.path());
        command
    });
    let mut files: Vec<String> = fs::read_dir(work.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        files,
    )
}

#[test]
fn validate_checks_built_in_specs_and_writes_nothing() {
    let hostsfile = "- kind: hostsfile\n  spec:\n    interval: 5s\n    filename: hosts\n    mappings:\n    - {group: 1000, hostname: web}\n";
    let command =
        "- kind: command\n  spec:\n    group: 1000\n    command: [/bin/true]\n    timeout: 5s\n";
    let dns = "- kind: dns\n  spec:\n    bind_address: 127.0.0.1:1\n    mappings:\n      web.example.: {group: 1000}\n";
    let all = format!("{hostsfile}{command}{dns}");
    let (code, stdout, stderr, files) = validate_outputs(&all);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "ok: rgap.yaml: 1 group(s), 3 output(s)\n");
    assert_eq!(files, ["rgap.yaml"], "validate wrote files");

    let cases = [
        (
            hostsfile.replace("filename: hosts", "filename: nowhere/hosts"),
            "outputs[0]",
            "spec.filename: cannot write in",
        ),
        (
            hostsfile.replace("interval: 5s", "interval: 0s"),
            "outputs[0]",
            "spec.interval: must be greater than 0",
        ),
        (command.replace("[/bin/true]", "[]"), "outputs[0]", "spec.command: must name the program"),
        (
            format!("{hostsfile}{}", command.replace("group: 1000", "group: 1000\n    bogus: 1")),
            "outputs[1]",
            "spec.bogus: unknown field",
        ),
    ];
    for (outputs, key, message) in cases {
        let (code, _, stderr, files) = validate_outputs(&outputs);
        assert_eq!(code, Some(1), "{outputs}\n{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: rgap.yaml: ") && last.contains(key), "{last}");
        assert!(last.contains(message), "{message:?} not in {last}");
        assert_eq!(files, ["rgap.yaml"], "validate wrote files");
    }
}
