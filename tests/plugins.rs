//! End-to-end tests of output plugins: the real `rgap` binary loading real `.so` files.
//!
//! Besides the built-ins, they use `tests/fixtures/testkit-output` (a workspace member whose
//! spec makes it panic, hold or record what it saw), the plugins of
//! `tests/fixtures/incompatible-api` (built against other `rgap-plugin-api`s; built here, once)
//! and `examples/third-party-output`. Every case must end in one clear error or in correct
//! behaviour: never an abort, never a Rust panic report from the host.

mod common;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    announcement, config, free_udp_port, plugin_dir, rgap_binary, send_to, spawn_listener_with_env,
    RunningListener, PSK, WAIT,
};

const GROUP: u64 = 1000;
const PLUGIN_PATH: &str = "RGAP_PLUGIN_PATH";
/// `RUST_LOG` that adds the plugin host's debug lines (e.g. each output stopping).
const DEBUG_HOST: &str = "info,rgap_core::plugin_host=debug";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The YAML of one output.
fn output(kind: &str, spec: &str) -> String {
    if spec.is_empty() {
        format!("- kind: {kind}\n")
    } else {
        let spec: String = spec.lines().map(|line| format!("    {line}\n")).collect();
        format!("- kind: {kind}\n  spec:\n{spec}")
    }
}

/// A path as a YAML scalar (double-quoted; JSON-style escapes are valid YAML).
fn yaml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A `testkit` spec recording to `record` plus `extra` lines.
fn testkit(record: &Path, extra: &str) -> String {
    output("testkit", &format!("record_to: {}\n{extra}", yaml_path(record)))
}

/// A listener config on `port`: group 1000 (expire 5m) with `group_extra`, then `outputs`.
fn listener_config(port: u16, group_extra: &str, outputs: &str) -> String {
    config(port, &format!("  expire: 5m\n{group_extra}"), outputs)
}

fn start(config: &str, env: &[(&str, &str)]) -> RunningListener {
    let listener = spawn_listener_with_env(config, env);
    listener.wait_for_log("listener started");
    listener
}

fn announce(port: u16, ip: &str) {
    send_to(([127, 0, 0, 1], port).into(), &announcement(GROUP, ip, PSK));
}

/// The lines of a testkit record file (empty if it does not exist yet).
fn record_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Polls `path` until `condition` holds for its lines; returns them. Panics after `WAIT`.
fn wait_for_record(path: &Path, what: &str, condition: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = record_lines(path);
        if condition(&lines) {
            return lines;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what} in {}:\n{}", path.display(), lines.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the record has a line equal to `line` after the line `after` (if given).
fn wait_for_line_after(path: &Path, after: Option<&str>, line: &str) -> Vec<String> {
    wait_for_record(path, &format!("{line:?} after {after:?}"), |lines| {
        let start = match after {
            Some(after) => match lines.iter().position(|l| l == after) {
                Some(index) => index + 1,
                None => return false,
            },
            None => 0,
        };
        lines[start..].iter().any(|l| l == line)
    })
}

/// Fails if the host let a Rust panic report or an abort message through: plugin panics
/// must reach the log only as the message the host reports.
fn assert_no_leaked_panic(log: &[String]) {
    let text = log.join("\n");
    for needle in ["panicked at", "RUST_BACKTRACE", "stack backtrace", "Aborted", "core dumped"] {
        assert!(!text.contains(needle), "found {needle:?} in the log:\n{text}");
    }
}

/// Runs a listener that must fail at start; checks it exits 1 (not a signal: no abort) with
/// one short `error:` line, which it returns.
fn start_error(config: &str, env: &[(&str, &str)]) -> String {
    let (status, log) = spawn_listener_with_env(config, env).wait_exit();
    let text = log.join("\n");
    assert_eq!(status.code(), Some(1), "rgap should exit 1; {status}; log:\n{text}");
    assert_no_leaked_panic(&log);
    let errors: Vec<&String> = log.iter().filter(|line| line.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected; log:\n{text}");
    // No abi_stable layout dump (thousands of lines), no multi-line reports.
    assert!(log.len() < 10, "too much output for a start error:\n{text}");
    errors[0].clone()
}

fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

/// A directory holding copies of `files` under the given names.
fn plugin_dir_with(files: &[(&Path, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (source, name) in files {
        fs::copy(source, dir.path().join(name))
            .unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
    }
    dir
}

/// A built plugin of the workspace, e.g. `built("testkit")`.
fn built(kind: &str) -> PathBuf {
    let path = plugin_dir().join(format!("librgap_output_{kind}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// The target directory the tests run from (parent of `debug/` or `release/`).
fn target_dir() -> PathBuf {
    let binary = rgap_binary();
    binary.parent().and_then(Path::parent).expect("binary sits in target/<profile>").to_owned()
}

/// Builds `tests/fixtures/incompatible-api` once (its own workspace, into
/// `<target>/fixtures`) and returns the directory of its `.so` files.
fn incompatible_plugin_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/incompatible-api/Cargo.toml");
        let target = target_dir().join("fixtures");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("running cargo build for the incompatible-api fixtures");
        assert!(status.success(), "building {} failed", manifest.display());
        target.join("debug")
    })
}

fn incompatible(kind: &str) -> PathBuf {
    let path = incompatible_plugin_dir().join(format!("librgap_output_{kind}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A real shared library that is not an rgap plugin: the system's libz if there is one,
/// else a tiny cdylib compiled here.
fn foreign_shared_library() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let candidates = [
                "/lib/x86_64-linux-gnu/libz.so.1",
                "/usr/lib/x86_64-linux-gnu/libz.so.1",
                "/lib/aarch64-linux-gnu/libz.so.1",
                "/usr/lib/aarch64-linux-gnu/libz.so.1",
                "/lib64/libz.so.1",
                "/usr/lib64/libz.so.1",
                "/usr/lib/libz.so.1",
                "/lib/libz.so.1",
            ];
            if let Some(found) = candidates.iter().map(PathBuf::from).find(|p| p.is_file()) {
                return found;
            }
            let out = target_dir().join("fixtures").join("not-a-plugin");
            fs::create_dir_all(&out).unwrap();
            let source = out.join("lib.rs");
            fs::write(&source, "#[no_mangle]\npub extern \"C\" fn answer() -> u32 { 42 }\n")
                .unwrap();
            let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
            let status = Command::new(rustc)
                .args(["--crate-type", "cdylib", "--crate-name", "not_a_plugin", "--out-dir"])
                .arg(&out)
                .arg(&source)
                .status()
                .expect("running rustc");
            assert!(status.success(), "compiling a plain shared library failed");
            out.join("libnot_a_plugin.so")
        })
        .clone()
}

/// A process of some `rgap` binary (perhaps a copy), with stdout and stderr in files.
struct Rgap {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Rgap {
    /// Starts `binary args` in `cwd` with only `env` added to a clean plugin environment.
    fn spawn(binary: &Path, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Rgap {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(binary);
        command
            .args(args)
            .current_dir(cwd)
            .env_remove(PLUGIN_PATH)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(fs::File::create(dir.path().join("stderr")).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("starting rgap");
        Rgap { child: Some(child), dir }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn wait_for_stderr(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to end on its own (killing it after `WAIT`).
    fn wait(mut self) -> (ExitStatus, String, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("rgap did not exit; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, self.stdout(), self.stderr())
    }

    /// SIGTERM, then waits for the exit.
    fn terminate(self) -> (ExitStatus, String, String) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        common::signal(pid, libc::SIGTERM);
        self.wait()
    }
}

impl Drop for Rgap {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `rgap plugins` of the binary under test with `env`; checks it exits 0, returns stdout.
fn rgap_plugins(env: &[(&str, &str)]) -> String {
    plugin_dir();
    let cwd = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) =
        Rgap::spawn(&rgap_binary(), &["plugins"], cwd.path(), env).wait();
    assert!(status.success(), "rgap plugins failed: {status}\n{stdout}\n{stderr}");
    assert_no_leaked_panic(&[stdout.clone(), stderr]);
    stdout
}

/// The listing line of `kind` in the listing section of `dir`.
fn listing_line<'a>(listing: &'a str, dir: &Path, kind: &str) -> &'a str {
    let header = format!("{}:", dir.display());
    let section = listing
        .split_once(&format!("\n{header}"))
        .unwrap_or_else(|| panic!("no section for {}:\n{listing}", dir.display()))
        .1;
    section
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .find(|line| line.split_whitespace().next() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} under {}:\n{listing}", dir.display()))
}

// ---------------------------------------------------------------------------------------
// `rgap plugins`
// ---------------------------------------------------------------------------------------

#[test]
fn rgap_plugins_lists_the_built_in_kinds_with_versions_and_descriptions() {
    let listing = rgap_plugins(&[]);
    let header = format!("rgap 0.1.0 (plugin API {})\n", rgap_plugin_api::API_VERSION);
    assert!(listing.starts_with(&header), "{listing}");
    let dir = plugin_dir();
    for kind in ["noop", "log", "eventlog", "hostsfile", "dns", "command", "testkit", "acme_audit"]
    {
        let line = listing_line(&listing, dir, kind);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(!line.contains("BROKEN"), "{line}");
        // kind, version, then a description.
        assert!(words.len() > 3, "{line}");
        let version = if kind == "acme_audit" { "1.0.0" } else { "0.1.0" };
        assert_eq!(words[1], version, "{line}");
    }
    assert_contains_all(listing_line(&listing, dir, "noop"), &["Does nothing"]);
    assert_contains_all(listing_line(&listing, dir, "eventlog"), &["Logs every join and leave"]);
    assert!(listing.contains("/usr/lib/rgap/plugins"), "the system directory is searched");
}

#[test]
fn rgap_plugins_explains_each_broken_file_in_one_line_and_exits_0() {
    let garbage = tempfile::NamedTempFile::new().unwrap();
    fs::write(garbage.path(), b"this is not an ELF file").unwrap();
    let foreign = foreign_shared_library();
    let (newer, older, changed) =
        (incompatible("newer_api"), incompatible("older_api"), incompatible("changed_layout"));
    let noop = built("noop");
    let testkit = built("testkit");
    let dir = plugin_dir_with(&[
        (garbage.path(), "librgap_output_x.so"),
        (&foreign, "librgap_output_notaplugin.so"),
        (&newer, "librgap_output_newer_api.so"),
        (&older, "librgap_output_older_api.so"),
        (&changed, "librgap_output_changed_layout.so"),
        (&noop, "librgap_output_other.so"),
        (&testkit, "librgap_output_testkit.so"),
    ]);
    let listing = rgap_plugins(&[(PLUGIN_PATH, path_str(dir.path()))]);
    let file =
        |kind: &str| dir.path().join(format!("librgap_output_{kind}.so")).display().to_string();
    let expectations: [(&str, &[&str]); 6] = [
        ("x", &["not a loadable shared object"]),
        ("notaplugin", &["a shared object, but not an rgap plugin"]),
        ("newer_api", &["built against rgap-plugin-api 0.2.0, this rgap needs 0.1.x: rebuild"]),
        ("older_api", &["built against rgap-plugin-api 0.0.9, this rgap needs 0.1.x: rebuild"]),
        ("changed_layout", &["built against rgap-plugin-api 0.1.0 with other type layouts"]),
        ("other", &["named for kind \"other\" but the plugin says it is \"noop\""]),
    ];
    for (kind, needles) in expectations {
        let line = listing_line(&listing, dir.path(), kind);
        assert!(line.contains(" BROKEN "), "{line}");
        assert!(line.contains(&file(kind)), "{line}");
        assert_contains_all(line, needles);
    }
    let good = listing_line(&listing, dir.path(), "testkit");
    assert!(!good.contains("BROKEN"), "{good}");
    // The copy in the exe's directory is shadowed by the one found first.
    assert!(listing_line(&listing, plugin_dir(), "testkit").contains("shadowed"), "{listing}");
    assert!(listing.lines().count() < 40, "no layout dumps in the listing:\n{listing}");
}

// ---------------------------------------------------------------------------------------
// Start errors: one line naming the output, its kind and file
// ---------------------------------------------------------------------------------------

/// A config with eventlog first and `kind` second, found through a plugin directory.
fn error_config(kind: &str) -> String {
    listener_config(free_udp_port(), "", &format!("{}{}", output("eventlog", ""), output(kind, "")))
}

#[test]
fn garbage_file_fails_start_naming_kind_and_file() {
    let garbage = tempfile::NamedTempFile::new().unwrap();
    fs::write(garbage.path(), vec![0x7f; 4096]).unwrap();
    let dir = plugin_dir_with(&[(garbage.path(), "librgap_output_x.so")]);
    let error = start_error(&error_config("x"), &[(PLUGIN_PATH, path_str(dir.path()))]);
    let file = dir.path().join("librgap_output_x.so");
    assert_contains_all(
        &error,
        &["outputs[1]: kind \"x\"", &file.display().to_string(), "not a loadable shared object"],
    );
}

#[test]
fn shared_library_that_is_not_a_plugin_fails_start() {
    let dir = plugin_dir_with(&[(&foreign_shared_library(), "librgap_output_notaplugin.so")]);
    let error = start_error(&error_config("notaplugin"), &[(PLUGIN_PATH, path_str(dir.path()))]);
    assert_contains_all(
        &error,
        &["outputs[1]: kind \"notaplugin\"", "librgap_output_notaplugin.so", "not an rgap plugin"],
    );
}

#[test]
fn plugins_built_against_another_api_version_fail_start_with_one_line() {
    for (kind, version) in [("newer_api", "0.2.0"), ("older_api", "0.0.9")] {
        let dir = plugin_dir_with(&[(&incompatible(kind), &format!("librgap_output_{kind}.so"))]);
        let error = start_error(&error_config(kind), &[(PLUGIN_PATH, path_str(dir.path()))]);
        assert_contains_all(
            &error,
            &[
                &format!("outputs[1]: kind \"{kind}\""),
                &format!("librgap_output_{kind}.so"),
                &format!("built against rgap-plugin-api {version}, this rgap needs 0.1.x"),
                "rebuild the plugin",
            ],
        );
    }
}

#[test]
fn plugin_with_the_same_api_version_but_other_types_fails_start_with_one_line() {
    let kind = "changed_layout";
    let dir = plugin_dir_with(&[(&incompatible(kind), "librgap_output_changed_layout.so")]);
    let error = start_error(&error_config(kind), &[(PLUGIN_PATH, path_str(dir.path()))]);
    assert_contains_all(
        &error,
        &[
            "outputs[1]: kind \"changed_layout\"",
            "built against rgap-plugin-api 0.1.0 with other type layouts, this rgap needs 0.1.x",
            "rebuild the plugin",
        ],
    );
}

#[test]
fn plugin_whose_kind_differs_from_its_file_name_is_refused() {
    let dir = plugin_dir_with(&[(&built("noop"), "librgap_output_other.so")]);
    let error = start_error(&error_config("other"), &[(PLUGIN_PATH, path_str(dir.path()))]);
    assert_contains_all(
        &error,
        &[
            "outputs[1]: kind \"other\"",
            "librgap_output_other.so",
            "named for kind \"other\" but the plugin says it is \"noop\"",
        ],
    );
}

#[test]
fn unknown_kind_lists_the_directories_searched_in_order() {
    let (first, second, configured) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let plugin_path = format!("{}:{}", path_str(first.path()), path_str(second.path()));
    let config =
        format!("{}plugin_dirs:\n- {}\n", error_config("nosuchkind"), yaml_path(configured.path()));
    let error = start_error(&config, &[(PLUGIN_PATH, &plugin_path)]);
    let searched = [
        first.path(),
        second.path(),
        configured.path(),
        plugin_dir(),
        Path::new("/usr/lib/rgap/plugins"),
    ]
    .map(|dir| dir.display().to_string());
    assert_contains_all(
        &error,
        &[
            "outputs[1]: kind \"nosuchkind\" not found",
            "librgap_output_nosuchkind.so",
            &searched.join(", "),
        ],
    );
}

#[test]
fn kind_with_a_path_in_it_is_refused() {
    // Refused by the config check, or else by the plugin host: never looked up as a path.
    let error = start_error(&error_config("\"../debug/noop\""), &[]);
    assert_contains_all(&error, &["outputs[1]", "kind", "\"../debug/noop\""]);
    assert!(!error.contains("not found"), "{error}");
}

#[test]
fn unknown_spec_key_fails_start_naming_the_key() {
    let port = free_udp_port();
    let outputs = format!("{}{}", output("eventlog", ""), output("testkit", "bogus_key: 1"));
    let error = start_error(&listener_config(port, "", &outputs), &[]);
    assert_contains_all(
        &error,
        &[
            "outputs[1]: kind \"testkit\"",
            "librgap_output_testkit.so",
            "spec.bogus_key: unknown field",
        ],
    );
    // The same through a built-in, for a key in a nested value.
    let outputs = output("eventlog", "only_groups: [1000, x]");
    let error = start_error(&listener_config(port, "", &outputs), &[]);
    assert_contains_all(&error, &["outputs[0]: kind \"eventlog\"", "spec.only_groups[1]"]);
}

#[test]
fn panic_in_create_fails_start_with_the_panic_message() {
    let outputs = format!("{}{}", output("eventlog", ""), output("testkit", "panic_in: create"));
    let error = start_error(&listener_config(free_udp_port(), "", &outputs), &[]);
    assert_contains_all(
        &error,
        &[
            "outputs[1]: kind \"testkit\"",
            "librgap_output_testkit.so",
            "panicked: testkit: asked to panic in Create (panic 1)",
            // Where it panicked, for the plugin's author.
            "src/lib.rs:",
        ],
    );
}

#[test]
fn error_from_create_fails_start_and_stops_the_outputs_already_made() {
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("first.txt");
    let outputs = format!("{}{}", testkit(&record, ""), output("testkit", "fail_in: create"));
    let error = start_error(&listener_config(free_udp_port(), "", &outputs), &[]);
    assert_contains_all(
        &error,
        &[
            "outputs[1]: kind \"testkit\"",
            "librgap_output_testkit.so",
            "testkit: asked to fail in Create",
        ],
    );
    assert!(!error.contains("panicked"), "{error}");
    // The first output was made, never fed, and stopped.
    assert_eq!(record_lines(&record), ["create 1", "stop"]);
}

// ---------------------------------------------------------------------------------------
// Running plugins
// ---------------------------------------------------------------------------------------

#[test]
fn two_different_plugins_run_in_one_process() {
    let port = free_udp_port();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    let outputs = format!("{}{}", output("eventlog", ""), testkit(&record, ""));
    let listener = start(&listener_config(port, "", &outputs), &[("RUST_LOG", DEBUG_HOST)]);

    announce(port, "10.0.0.1");
    listener.wait_for_log("host 10.0.0.1 has joined group 1000");
    wait_for_line_after(
        &record,
        Some("event join 1000 10.0.0.1"),
        "snapshot 1000 ready=true members=1",
    );
    // Plugin log lines come back through the host, under the instance's name.
    listener.wait_for_log("testkit#1: testkit instance 1 created");

    let (status, log) = {
        common::signal(listener.pid(), libc::SIGTERM);
        listener.wait_exit()
    };
    assert!(status.success(), "{status}");
    assert_no_leaked_panic(&log);
    assert_eq!(record_lines(&record).last().map(String::as_str), Some("stop"));
    // Stopped in reverse order of the config.
    let position = |needle: &str| {
        log.iter().position(|line| line.contains(needle)).unwrap_or_else(|| {
            panic!("no {needle:?} in the log:\n{}", log.join("\n"));
        })
    };
    assert!(position("output testkit#1 stopped") < position("output eventlog#0 stopped"));
}

#[test]
fn plugin_errors_are_logged_and_the_instance_keeps_running() {
    let port = free_udp_port();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    let listener = start(&listener_config(port, "", &testkit(&record, "fail_in: on_event")), &[]);
    announce(port, "10.0.0.4");
    let line = listener.wait_for_log("output testkit#0: on_event failed:");
    assert!(line.contains("testkit: asked to fail in OnEvent"), "{line}");
    // The same instance gets the snapshot after the failed event: an error is not a panic.
    wait_for_line_after(&record, Some("create 1"), "snapshot 1000 ready=true members=1");
    let log = listener.log();
    assert!(listener.terminate().success());
    assert_no_leaked_panic(&log);
    let lines = record_lines(&record);
    assert!(!lines.iter().any(|line| line == "create 2"), "not re-created: {lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("stop"), "{lines:?}");
}

#[test]
fn stuck_plugin_does_not_hold_up_ingestion_or_shutdown() {
    let port = free_udp_port();
    let work = tempfile::tempdir().unwrap();
    let (stuck, other) = (work.path().join("stuck.txt"), work.path().join("other.txt"));
    let never = work.path().join("never-created");
    let outputs = format!(
        "{}{}",
        testkit(&other, ""),
        testkit(&stuck, &format!("hold_until: {}", yaml_path(&never)))
    );
    let listener = start(&listener_config(port, "", &outputs), &[]);
    wait_for_line_after(&stuck, None, "holding");
    announce(port, "10.0.0.5");
    wait_for_line_after(&other, None, "snapshot 1000 ready=true members=1");
    let status = {
        common::signal(listener.pid(), libc::SIGTERM);
        listener.wait_exit()
    };
    let (status, log) = status;
    let text = log.join("\n");
    assert!(status.success(), "{status}\n{text}");
    assert_contains_all(&text, &["output testkit#1 did not stop within", "listener stopped"]);
    // The others are still stopped, after the stuck one (reverse order).
    assert_eq!(record_lines(&other).last().map(String::as_str), Some("stop"));
    assert_no_leaked_panic(&log);
}

#[test]
fn panic_while_handling_an_event_recreates_the_instance_from_a_fresh_snapshot() {
    let port = free_udp_port();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    let outputs = format!(
        "{}{}",
        output("eventlog", ""),
        testkit(&record, "panic_in: on_event\npanic_times: 1")
    );
    // Not ready for an hour: no Ready event, so the first event is the join below.
    let config = listener_config(port, "  readiness_delay: 1h\n", &outputs);
    let listener = start(&config, &[]);
    wait_for_line_after(&record, Some("create 1"), "snapshot 1000 ready=false members=0");

    announce(port, "10.0.0.1");
    let reported = listener.wait_for_log("output testkit#1 panicked:");
    assert_contains_all(
        &reported,
        &["testkit: asked to panic in OnEvent (panic 1)", "re-creating it from its spec in 1s"],
    );
    // The other output and ingestion carry on while testkit is down.
    listener.wait_for_log("host 10.0.0.1 has joined group 1000");
    announce(port, "10.0.0.2");
    listener.wait_for_log("host 10.0.0.2 has joined group 1000");

    // Re-created after the backoff, it starts from a snapshot that has both members.
    listener.wait_for_log("output testkit#1 re-created; delivering a fresh snapshot");
    wait_for_line_after(&record, Some("create 2"), "snapshot 1000 ready=false members=2");
    announce(port, "10.0.0.3");
    wait_for_line_after(&record, Some("create 2"), "event join 1000 10.0.0.3");
    wait_for_line_after(
        &record,
        Some("event join 1000 10.0.0.3"),
        "snapshot 1000 ready=false members=3",
    );
    listener.wait_for_log("host 10.0.0.3 has joined group 1000");

    let log = listener.log();
    let status = listener.terminate();
    assert!(status.success(), "{status}");
    assert_no_leaked_panic(&log);
    let lines = record_lines(&record);
    assert!(
        !lines.iter().any(|line| line == "event join 1000 10.0.0.1"),
        "the event that panicked is not delivered again: {lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("stop"), "{lines:?}");
}

#[test]
fn repeated_panics_back_off_doubling_then_heal() {
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    // Every delivery carries a snapshot, so each new instance panics at once, three times.
    let outputs = testkit(&record, "panic_in: on_snapshot\npanic_times: 3");
    let listener = start(&listener_config(free_udp_port(), "", &outputs), &[]);
    for (count, wait) in [(1, "1s"), (2, "2s"), (3, "4s")] {
        let line = listener.wait_for_log_count("output testkit#0 panicked:", count);
        assert_contains_all(
            &line,
            &[&format!("(panic {count})"), &format!("re-creating it from its spec in {wait}")],
        );
    }
    // The fourth instance no longer panics and gets the state.
    wait_for_line_after(&record, Some("create 4"), "snapshot 1000 ready=true members=0");
    // The line is logged just before that snapshot, but read from stderr by another thread.
    listener.wait_for_log_count("output testkit#0 re-created", 3);
    let log = listener.log();
    assert!(listener.terminate().success());
    assert_no_leaked_panic(&log);
    // The waits really happened: each re-creation comes at least its backoff after the panic
    // (a lower bound, however slow the machine), and they double.
    let panicked = log_times(&log, "output testkit#0 panicked:");
    let recreated = log_times(&log, "output testkit#0 re-created");
    assert_eq!((panicked.len(), recreated.len()), (3, 3), "{}", log.join("\n"));
    for (k, wait_secs) in [1.0, 2.0, 4.0].into_iter().enumerate() {
        let gap = recreated[k].duration_since(panicked[k]).unwrap().as_secs_f64();
        assert!(gap >= wait_secs * 0.95, "re-creation {k} came {gap:.3}s after its panic");
    }
}

/// The timestamps of the log lines containing `needle`.
fn log_times(log: &[String], needle: &str) -> Vec<std::time::SystemTime> {
    log.iter()
        .filter(|line| line.contains(needle))
        .map(|line| {
            let stamp = line.split_whitespace().next().unwrap_or_default();
            humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp:?}: {e}"))
        })
        .collect()
}

#[test]
fn a_thousand_panics_on_a_plugin_thread_log_a_bounded_number_of_lines() {
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    let outputs = testkit(&record, "thread_panics: 1000");
    let listener = start(&listener_config(free_udp_port(), "", &outputs), &[]);
    listener.wait_for_log("testkit: 1000 thread panic(s) done");
    let log = listener.log();
    assert!(listener.terminate().success());
    let reported =
        log.iter().filter(|line| line.contains("panicked: testkit: thread panic")).count();
    // The first ones are reported, with their message; the rest only counted.
    assert!(reported >= 1, "no panic reported:\n{}", log.join("\n"));
    assert!(reported <= 20, "{reported} panic lines for 1000 panics");
    assert!(log.len() < 100, "{} log lines for 1000 panics", log.len());
    assert_no_leaked_panic(&log);
}

#[test]
fn panic_on_a_plugin_thread_is_logged_and_the_listener_keeps_running() {
    let port = free_udp_port();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    let outputs =
        format!("{}{}", output("eventlog", ""), testkit(&record, "panic_in: spawned_thread"));
    let listener = start(&listener_config(port, "", &outputs), &[]);
    let line = listener.wait_for_log("plugin thread testkit-worker panicked:");
    assert!(line.contains("testkit#1"), "attributed to the instance: {line}");
    assert!(line.contains("testkit: asked to panic in a spawned thread"), "{line}");

    announce(port, "10.0.0.9");
    listener.wait_for_log("host 10.0.0.9 has joined group 1000");
    wait_for_line_after(&record, None, "event join 1000 10.0.0.9");
    let log = listener.log();
    assert!(listener.terminate().success());
    assert_no_leaked_panic(&log);
}

#[test]
fn panic_in_stop_is_reported_and_shutdown_completes() {
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("testkit.txt");
    let outputs = format!("{}{}", output("eventlog", ""), testkit(&record, "panic_in: stop"));
    let listener = start(&listener_config(free_udp_port(), "", &outputs), &[]);
    wait_for_line_after(&record, None, "snapshot 1000 ready=true members=0");
    let (status, log) = {
        let pid = listener.pid();
        common::signal(pid, libc::SIGTERM);
        listener.wait_exit()
    };
    let text = log.join("\n");
    assert!(status.success(), "{status}\n{text}");
    assert_contains_all(
        &text,
        &[
            "output testkit#1: stop failed: panicked: testkit: asked to panic in Stop",
            "listener stopped",
        ],
    );
    assert_no_leaked_panic(&log);
}

/// Distinct member addresses, 10.1.0.0 upwards.
fn storm_addresses(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("10.1.{}.{}", i / 256, i % 256)).collect()
}

#[test]
fn slow_plugin_gets_resync_and_a_correct_final_snapshot_while_ingestion_continues() {
    const MEMBERS: usize = 16_000;
    let port = free_udp_port();
    let work = tempfile::tempdir().unwrap();
    let (slow, fast, gate) =
        (work.path().join("slow.txt"), work.path().join("fast.txt"), work.path().join("gate"));
    let outputs = format!(
        "{}{}",
        testkit(&slow, &format!("hold_until: {}\nsleep_ms_per_event: 1", yaml_path(&gate))),
        testkit(&fast, "")
    );
    let listener = start(&listener_config(port, "", &outputs), &[]);
    // The slow instance is stuck in on_event (the Ready event) before any join is sent.
    wait_for_line_after(&slow, None, "holding");

    let datagrams: Vec<[u8; 66]> =
        storm_addresses(MEMBERS).iter().map(|ip| announcement(GROUP, ip, PSK)).collect();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let all_joined = format!("snapshot 1000 ready=true members={MEMBERS}");
    // Refreshes are harmless, so a datagram the kernel dropped is simply sent again.
    let mut rounds = 0;
    loop {
        for datagram in &datagrams {
            socket.send_to(datagram, ("127.0.0.1", port)).unwrap();
        }
        rounds += 1;
        let deadline = Instant::now() + WAIT / 4;
        while Instant::now() < deadline && !record_lines(&fast).contains(&all_joined) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if record_lines(&fast).contains(&all_joined) {
            break;
        }
        assert!(rounds < 4, "the fast output never saw all {MEMBERS} members");
    }

    // Everything was ingested and delivered elsewhere while the slow output was stuck.
    fs::File::create(&gate).unwrap().flush().unwrap();
    let lines = wait_for_line_after(&slow, Some("event resync"), &all_joined);
    assert_eq!(lines.iter().filter(|line| *line == "event resync").count(), 1, "{lines:?}");
    assert!(
        !lines.iter().any(|line| line.starts_with("event join")),
        "the joins it could not take collapsed into the Resync: {lines:?}"
    );

    let status = {
        let pid = listener.pid();
        common::signal(pid, libc::SIGTERM);
        listener.wait_exit()
    };
    let (status, log) = status;
    assert!(status.success(), "{status}");
    assert_no_leaked_panic(&log);
    let totals = log.iter().find(|line| line.contains("datagram totals:")).expect("totals logged");
    let accepted: usize = totals
        .split_once("accepted=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no accepted count in {totals:?}"));
    assert!(accepted >= MEMBERS, "{totals}");
    assert_eq!(record_lines(&slow).last().map(String::as_str), Some("stop"));
}

// ---------------------------------------------------------------------------------------
// Discovery with a binary away from its sibling plugins
// ---------------------------------------------------------------------------------------

/// A copy of the rgap binary alone in a fresh directory.
fn lonely_rgap() -> (tempfile::TempDir, PathBuf) {
    plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("rgap");
    fs::copy(rgap_binary(), &copy).unwrap();
    (dir, copy)
}

/// Runs the copied binary as a listener with a testkit output that records to `record`;
/// checks that it runs and stops cleanly.
fn run_copied_listener(
    binary: &Path,
    config_dir: &Path,
    config: &str,
    env: &[(&str, &str)],
    record: &Path,
) {
    fs::write(config_dir.join("rgap.yaml"), config).unwrap();
    let rgap = Rgap::spawn(binary, &["listener", "-c", "rgap.yaml"], config_dir, env);
    rgap.wait_for_stderr("listener started");
    wait_for_line_after(record, Some("create 1"), "snapshot 1000 ready=true members=0");
    let (status, _, stderr) = rgap.terminate();
    assert!(status.success(), "{status}\n{stderr}");
    assert_no_leaked_panic(&[stderr]);
}

#[test]
fn copied_binary_finds_a_plugin_through_rgap_plugin_path() {
    let (exe_dir, binary) = lonely_rgap();
    let plugins = plugin_dir_with(&[(&built("testkit"), "librgap_output_testkit.so")]);
    let env = [(PLUGIN_PATH, path_str(plugins.path()))];

    let work = tempfile::tempdir().unwrap();
    let (status, listing, _) = Rgap::spawn(&binary, &["plugins"], work.path(), &env).wait();
    assert!(status.success());
    assert!(!listing_line(&listing, plugins.path(), "testkit").contains("BROKEN"), "{listing}");
    assert!(listing.contains(&format!("{}: (no plugins)", exe_dir.path().display())), "{listing}");
    assert!(!listing.contains(&plugin_dir().display().to_string()), "{listing}");

    let record = work.path().join("record.txt");
    let config = listener_config(free_udp_port(), "", &testkit(&record, ""));
    run_copied_listener(&binary, work.path(), &config, &env, &record);

    // A built-in that was not copied is not found: the build tree is not searched.
    let config = listener_config(free_udp_port(), "", &output("eventlog", ""));
    fs::write(work.path().join("rgap.yaml"), config).unwrap();
    let (status, _, stderr) =
        Rgap::spawn(&binary, &["listener", "-c", "rgap.yaml"], work.path(), &env).wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let searched = format!(
        "no librgap_output_eventlog.so in {}, {}, /usr/lib/rgap/plugins",
        plugins.path().display(),
        exe_dir.path().display()
    );
    assert!(stderr.contains(&searched), "{stderr}");
}

#[test]
fn copied_binary_finds_a_plugin_through_config_plugin_dirs() {
    let (_exe_dir, binary) = lonely_rgap();
    let work = tempfile::tempdir().unwrap();
    // Relative to the config file's directory.
    fs::create_dir(work.path().join("plugins")).unwrap();
    fs::copy(built("testkit"), work.path().join("plugins/librgap_output_testkit.so")).unwrap();
    let record = work.path().join("record.txt");
    let config = format!(
        "{}plugin_dirs:\n- plugins\n",
        listener_config(free_udp_port(), "", &testkit(&record, ""))
    );
    run_copied_listener(&binary, work.path(), &config, &[], &record);

    // `rgap plugins -c FILE` searches the same directories as the listener on FILE.
    let config_path = work.path().join("rgap.yaml");
    let args = ["plugins", "-c", path_str(&config_path)];
    let (status, listing, stderr) = Rgap::spawn(&binary, &args, work.path(), &[]).wait();
    assert!(status.success(), "{status}\n{stderr}");
    let line = listing_line(&listing, &work.path().join("plugins"), "testkit");
    assert!(!line.contains("BROKEN"), "{listing}");
}

// ---------------------------------------------------------------------------------------
// The third-party example
// ---------------------------------------------------------------------------------------

#[test]
fn third_party_plugin_works_from_a_directory_on_rgap_plugin_path() {
    let plugins = plugin_dir_with(&[(&built("acme_audit"), "librgap_output_acme_audit.so")]);
    let env = [(PLUGIN_PATH, path_str(plugins.path()))];
    let listing = rgap_plugins(&env);
    let line = listing_line(&listing, plugins.path(), "acme_audit");
    assert_contains_all(line, &["1.0.0", "ACME audit trail"]);

    let port = free_udp_port();
    let work = tempfile::tempdir().unwrap();
    let audit = work.path().join("audit.jsonl");
    let outputs = output("acme_audit", &format!("path: {}\ngroups: [1000]", yaml_path(&audit)));
    // Expire after 1 s, so the member also leaves.
    let config = config(port, "  expire: 1s\n", &outputs);
    let listener = start(&config, &env);
    listener.wait_for_log(&format!("acme_audit#0: auditing to {}", audit.display()));
    announce(port, "10.0.0.7");
    let lines = wait_for_record(&audit, "a join and a leave", |lines| {
        lines.iter().any(|l| l.contains(r#""event":"leave""#))
    });
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_contains_all(
        &lines[0],
        &[
            r#""event":"join""#,
            r#""group":1000"#,
            r#""address":"10.0.0.7""#,
            r#""expires_at_unix_us":"#,
        ],
    );
    assert_contains_all(&lines[1], &[r#""event":"leave""#, r#""address":"10.0.0.7""#]);
    let log = listener.log();
    assert!(listener.terminate().success());
    assert_no_leaked_panic(&log);

    // Its spec is checked like a built-in's: a typo is named.
    let error =
        start_error(&config.replace(&format!("path: {}", yaml_path(&audit)), "group: [1]"), &env);
    assert_contains_all(&error, &["outputs[0]: kind \"acme_audit\"", "spec.group: unknown field"]);
}
