//! What the Debian package ships, tested as an operator meets it: completion scripts that load
//! in the shell, man pages that render, the agent unit's settings taken from the environment,
//! and (as root, with dpkg) the `.deb` itself: built, inspected, installed, its units checked by
//! `systemd-analyze verify`, its binary run, then purged without a trace.
//!
//! The expected subcommands and plugins are read from `rgap --help` and from `plugins/`, not
//! written down here, so that a new subcommand or plugin is checked without editing this file.

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{finish, rgap_command, PSK, WAIT};
use rgap_core::protocol::Verifier;
use rgap_core::psk::Psk;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The subcommands `rgap --help` lists (clap's own `help` aside).
fn subcommands() -> Vec<String> {
    let output = finish(rgap_command(&["--help"]));
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let listed: Vec<String> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|name| name != "help")
        .collect();
    assert!(listed.len() >= 5, "too few subcommands found in `rgap --help`:\n{help}");
    listed
}

/// `program args...` to completion (within `WAIT`), output captured.
fn run(program: &str, args: &[&str]) -> Output {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    finish_any(command)
}

/// Runs `command` to completion, reading its output as it comes (a full pipe must not stall
/// it); panics if it has not finished within `limit`, a guard against a hang only.
fn finish_within(mut command: Command, limit: Duration) -> Output {
    let program = format!("{:?}", command.get_program());
    let child = command.spawn().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let pid = child.id() as i32;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(output) => output.unwrap_or_else(|e| panic!("waiting for {program}: {e}")),
        Err(_) => {
            common::signal(pid, libc::SIGKILL);
            panic!("{program} did not exit within {limit:?}");
        }
    }
}

fn finish_any(command: Command) -> Output {
    finish_within(command, WAIT * 20)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn has_program(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn completion_script(shell: &str) -> tempfile::NamedTempFile {
    let output = finish(rgap_command(&["completions", shell]));
    assert!(output.status.success(), "rgap completions {shell}: {}", text(&output.stderr));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &output.stdout).unwrap();
    file
}

/// What bash's completion offers for the words of `line` (the last one being completed).
fn bash_completes(script: &Path, line: &str) -> Vec<String> {
    let program = r#"set -e
source "$1"
spec=$(complete -p rgap)
function=${spec#*-F }; function=${function%% *}
COMP_LINE="$2"; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$2"
if [[ "$2" == *" " ]]; then COMP_WORDS+=(""); fi
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
"$function" rgap "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    let output = run("bash", &["-c", program, "bash", script.to_str().unwrap(), line]);
    assert!(
        output.status.success(),
        "bash completion for {line:?} failed: {}",
        text(&output.stderr)
    );
    assert!(output.stderr.is_empty(), "bash printed errors: {}", text(&output.stderr));
    text(&output.stdout).lines().map(str::to_owned).filter(|w| !w.is_empty()).collect()
}

#[test]
fn bash_completion_loads_and_completes_subcommands_and_flags() {
    let script = completion_script("bash");
    let loaded = run(
        "bash",
        &["-c", "source \"$1\" && complete -p rgap", "bash", script.path().to_str().unwrap()],
    );
    assert!(loaded.status.success(), "sourcing the script failed: {}", text(&loaded.stderr));
    assert!(loaded.stderr.is_empty(), "bash printed errors: {}", text(&loaded.stderr));

    for subcommand in subcommands() {
        let prefix = &subcommand[..2];
        let offered = bash_completes(script.path(), &format!("rgap {prefix}"));
        assert!(
            offered.contains(&subcommand),
            "`rgap {prefix}<TAB>` offered {offered:?}, not {subcommand}"
        );
    }
    assert_eq!(bash_completes(script.path(), "rgap agent --gr"), ["--group"]);
    let shells = bash_completes(script.path(), "rgap completions ");
    assert!(shells.iter().any(|s| s == "zsh") && shells.iter().any(|s| s == "fish"), "{shells:?}");
}

#[test]
fn zsh_and_fish_completions_parse_where_those_shells_exist() {
    for (shell, check) in [("zsh", vec!["-n"]), ("fish", vec!["--no-execute"])] {
        let script = completion_script(shell);
        let body = std::fs::read_to_string(script.path()).unwrap();
        assert!(body.contains("rgap"), "{shell} script does not mention rgap");
        if !has_program(shell) {
            eprintln!("SKIPPED parsing the {shell} completion script: {shell} is not installed");
            continue;
        }
        let mut args = check;
        args.push(script.path().to_str().unwrap());
        let output = run(shell, &args);
        assert!(
            output.status.success(),
            "{shell} rejects its completion script: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn completions_for_an_unknown_shell_is_an_error() {
    let output = finish(rgap_command(&["completions", "cmd.exe"]));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("cmd.exe"), "{}", text(&output.stderr));
}

#[test]
fn man_pages_one_per_subcommand_render_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let output = finish(rgap_command(&["manpages", out.to_str().unwrap()]));
    assert!(output.status.success(), "rgap manpages: {}", text(&output.stderr));

    let mut expected: BTreeSet<String> =
        subcommands().iter().map(|s| format!("rgap-{s}.1")).collect();
    expected.insert("rgap.1".into());
    let written: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, expected);

    if !has_program("man") {
        assert!(std::env::var_os("CI").is_none(), "CI must have man (man-db) to render the pages");
        eprintln!("SKIPPED rendering the man pages: man is not installed");
        return;
    }
    for page in &expected {
        let path = out.join(page);
        let mut command = Command::new("man");
        command
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "");
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let rendered = finish_any(command);
        assert!(rendered.status.success(), "man {page}: {}", text(&rendered.stderr));
        assert!(rendered.stderr.is_empty(), "man {page} warns: {}", text(&rendered.stderr));
        let name = page.trim_end_matches(".1");
        let body = text(&rendered.stdout);
        assert!(body.contains("NAME") && body.contains(name), "{page} has no NAME {name}:\n{body}");
    }
    // The top page points at every subcommand's page and names the files and variables.
    // roff escapes every hyphen.
    let top = std::fs::read_to_string(out.join("rgap.1")).unwrap().replace("\\-", "-");
    let see_also = top.split(".SH \"SEE ALSO\"").nth(1).expect("rgap.1 has SEE ALSO");
    for subcommand in subcommands() {
        assert!(
            see_also.contains(&format!("rgap-{subcommand}(1)")),
            "SEE ALSO lacks rgap-{subcommand}(1)"
        );
    }
    assert!(top.contains(".SH ENVIRONMENT") && top.contains("RGAP_PLUGIN_PATH"), "{top}");
    assert!(top.contains(".SH FILES") && top.contains("/etc/rgap/rgap.yaml"), "{top}");
    // A subcommand's page carries its flags, as its --help does.
    let agent = std::fs::read_to_string(out.join("rgap-agent.1")).unwrap();
    assert!(agent.contains("group") && agent.contains("RGAP_GROUP"), "{agent}");
}

/// The shipped config with its commented-out outputs switched on, moved to loopback, free ports
/// and a temporary directory: every example in it is a configuration that runs.
#[test]
fn shipped_config_and_its_commented_examples_start_a_listener() {
    let shipped = std::fs::read_to_string(Path::new(REPO).join("packaging/rgap.yaml")).unwrap();
    let mut config = String::new();
    for line in shipped.lines() {
        // Example YAML is "  # - kind: ..." or "  #   spec: ..."; prose is "  # A hosts file ...".
        match line.strip_prefix("  # ") {
            Some(yaml) if yaml.starts_with("- ") || yaml.starts_with("  ") => {
                config += &format!("  {yaml}")
            }
            _ => config += line,
        }
        config.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let replacements = [
        ("239.82.71.65:8271", format!("127.0.0.1:{}", common::free_udp_port())),
        ("\":53\"", format!("\"127.0.0.1:{}\"", common::free_port())),
        ("/var/lib/rgap/hosts", dir.path().join("hosts").display().to_string()),
        ("/usr/local/bin/update-pool", "/bin/cat".to_owned()),
    ];
    for (from, to) in &replacements {
        assert!(config.contains(from), "the shipped config no longer has {from}");
        config = config.replace(from, to);
    }
    let outputs = config.lines().filter(|line| line.trim_start().starts_with("- kind:")).count();
    assert!(outputs >= 4, "expected the commented outputs to be switched on:\n{config}");

    let listener = common::start_listener(&config);
    listener.wait_for_log(&format!("1 group(s), {outputs} output(s)"));
    assert!(listener.terminate().success());
}

/// `(key, value)` of each `Environment=` line and the words of `ExecStart=` in a unit file.
fn unit_environment_and_command(unit: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut environment = Vec::new();
    let mut command = Vec::new();
    for line in unit.lines() {
        if let Some(assignment) = line.strip_prefix("Environment=") {
            let (key, value) = assignment.split_once('=').expect("Environment=KEY=VALUE");
            environment.push((key.to_owned(), value.to_owned()));
        } else if let Some(exec) = line.strip_prefix("ExecStart=") {
            command = exec.split_whitespace().map(str::to_owned).collect();
        }
    }
    (environment, command)
}

#[test]
fn agent_unit_runs_from_environment_settings_alone() {
    let unit =
        std::fs::read_to_string(Path::new(REPO).join("packaging/systemd/rgap-agent@.service"))
            .unwrap();
    let (environment, command) = unit_environment_and_command(&unit);
    assert_eq!(command.first().map(String::as_str), Some("/usr/bin/rgap"), "{command:?}");
    assert!(unit.contains("EnvironmentFile=/etc/rgap/agent-%i.env"));

    // The settings an env file would hold; two destinations, comma-separated.
    let first = UdpSocket::bind("127.0.0.1:0").unwrap();
    let second = UdpSocket::bind("127.0.0.1:0").unwrap();
    let destinations = format!("{},{}", first.local_addr().unwrap(), second.local_addr().unwrap());
    let mut agent = rgap_command(&command[1..].iter().map(String::as_str).collect::<Vec<_>>());
    agent.envs(environment.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    agent
        .env("RGAP_GROUP", "4242")
        .env("RGAP_ADDRESS", "192.0.2.77")
        .env("RGAP_PSK", PSK)
        .env("RGAP_DST", &destinations);
    let mut child = agent.spawn().unwrap();

    let verifier = Verifier::new(&Psk::from_hex(PSK).unwrap());
    for socket in [&first, &second] {
        socket.set_read_timeout(Some(WAIT)).unwrap();
        let mut buffer = [0u8; 128];
        let received = socket.recv(&mut buffer);
        if received.is_err() {
            child.kill().unwrap();
        }
        let length = received.expect("an announcement from the agent within WAIT");
        let announcement =
            verifier.verify_and_decode(&buffer[..length]).expect("a valid signature");
        assert_eq!(announcement.group, 4242);
        assert_eq!(announcement.address.to_string(), "192.0.2.77");
    }
    // The unit's default interval keeps it running, as a service must.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent exited instead of announcing periodically"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    // systemd counts both a clean exit and death by SIGTERM as a clean stop.
    let status = child.wait().unwrap();
    assert!(status.success() || status.signal() == Some(15), "agent exit after SIGTERM: {status}");
}

// ---------------------------------------------------------------------------------------------
// The package itself (root, dpkg, cargo-deb).

const CONFIG: &str = "/etc/rgap/rgap.yaml";
const PLUGIN_DIR: &str = "/usr/lib/rgap/plugins";

/// One line of `dpkg-deb -c`: mode string, owner, path (without the leading `.`).
struct Entry {
    mode: String,
    owner: String,
    path: String,
}

fn contents(deb: &Path) -> Vec<Entry> {
    let output = run("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    assert!(output.status.success(), "dpkg-deb -c: {}", text(&output.stderr));
    text(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Entry {
                mode: fields[0].to_owned(),
                owner: fields[1].to_owned(),
                path: fields[5].trim_start_matches('.').trim_end_matches('/').to_owned(),
            }
        })
        .collect()
}

/// The kinds of the built-in plugins: one crate per directory of `plugins/`.
fn built_in_kinds() -> BTreeSet<String> {
    std::fs::read_dir(Path::new(REPO).join("plugins"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

fn dpkg_architecture() -> String {
    let output = run("dpkg", &["--print-architecture"]);
    text(&output.stdout).trim().to_owned()
}

/// Purges the package when the test ends, however it ends, so a failed run leaves no install.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "rgap"]);
    }
}

/// Checks that do not stop the test: the later steps (down to the purge) still run, and every
/// failure is reported at the end.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("FAILED: {what}");
            self.0.push(what);
        }
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
#[ignore = "needs root: installs and purges the .deb with dpkg"]
fn debian_package_installs_runs_and_purges_cleanly() {
    assert!(is_root(), "this test installs a package: run it as root");
    let mut findings = Findings::default();

    // Build.
    // A release build of the whole workspace: slow on a busy machine, so a generous guard.
    let mut build = Command::new(format!("{REPO}/packaging/build-deb.sh"));
    build.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let build = finish_within(build, Duration::from_secs(60 * 60));
    assert!(build.status.success(), "build-deb.sh failed:\n{}", text(&build.stderr));
    let deb = PathBuf::from(format!(
        "{REPO}/target/debian/rgap_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        dpkg_architecture()
    ));
    assert!(deb.is_file(), "{} was not built", deb.display());

    // Contents: paths, owners, modes.
    let entries = contents(&deb);
    let entry = |path: &str| entries.iter().find(|e| e.path == path);
    let expect_file = |findings: &mut Findings, path: &str, mode: &str| match entry(path) {
        Some(e) => findings
            .check(e.mode == mode && ["root/root", "0/0"].contains(&e.owner.as_str()), || {
                format!("{path}: {} {}, want {mode} root/root", e.mode, e.owner)
            }),
        None => findings.check(false, || format!("{path} is not in the package")),
    };
    expect_file(&mut findings, "/usr/bin/rgap", "-rwxr-xr-x");
    let kinds = built_in_kinds();
    for kind in &kinds {
        expect_file(&mut findings, &format!("{PLUGIN_DIR}/librgap_output_{kind}.so"), "-rw-r--r--");
    }
    let shipped_plugins: BTreeSet<&str> = entries
        .iter()
        .filter_map(|e| e.path.strip_prefix(&format!("{PLUGIN_DIR}/")))
        .filter(|name| !name.is_empty())
        .collect();
    let wanted_plugins: BTreeSet<String> =
        kinds.iter().map(|k| format!("librgap_output_{k}.so")).collect();
    findings.check(shipped_plugins.iter().all(|p| wanted_plugins.contains(*p)), || {
        format!("plugins other than the built-in ones ship: {shipped_plugins:?}")
    });
    findings.check(
        !entries.iter().any(|e| {
            e.path.contains("testkit") || e.path.contains("acme") || e.path.contains("bench")
        }),
        || "test-only or example files ship".into(),
    );
    expect_file(&mut findings, CONFIG, "-rw-------");
    expect_file(&mut findings, "/etc/rgap/agent.env.example", "-rw-r--r--");
    expect_file(&mut findings, "/usr/lib/systemd/system/rgap.service", "-rw-r--r--");
    expect_file(&mut findings, "/usr/lib/systemd/system/rgap-agent@.service", "-rw-r--r--");
    let mut pages = vec!["rgap".to_owned()];
    pages.extend(subcommands().iter().map(|s| format!("rgap-{s}")));
    for page in &pages {
        expect_file(&mut findings, &format!("/usr/share/man/man1/{page}.1.gz"), "-rw-r--r--");
    }
    expect_file(&mut findings, "/usr/share/bash-completion/completions/rgap", "-rw-r--r--");
    expect_file(&mut findings, "/usr/share/zsh/vendor-completions/_rgap", "-rw-r--r--");
    expect_file(&mut findings, "/usr/share/fish/vendor_completions.d/rgap.fish", "-rw-r--r--");
    expect_file(&mut findings, "/usr/share/doc/rgap/README.md", "-rw-r--r--");
    expect_file(&mut findings, "/usr/share/doc/rgap/copyright", "-rw-r--r--");
    expect_file(&mut findings, "/usr/share/doc/rgap/changelog.Debian.gz", "-rw-r--r--");

    // Control: the conffiles, and the changelog that names this version.
    let conffiles = run("dpkg-deb", &["-I", deb.to_str().unwrap(), "conffiles"]);
    let conffiles: BTreeSet<String> = text(&conffiles.stdout).lines().map(str::to_owned).collect();
    findings.check(
        conffiles == BTreeSet::from([CONFIG.to_owned(), "/etc/rgap/agent.env.example".to_owned()]),
        || format!("conffiles: {conffiles:?}"),
    );
    let changelog =
        std::fs::read_to_string(Path::new(REPO).join("packaging/debian/changelog")).unwrap();
    findings
        .check(changelog.starts_with(&format!("rgap ({}) ", env!("CARGO_PKG_VERSION"))), || {
            "packaging/debian/changelog does not start with this version".into()
        });

    // Install.
    let _ = run("dpkg", &["--purge", "rgap"]);
    let _purge = PurgeOnDrop;
    let install = run("dpkg", &["-i", deb.to_str().unwrap()]);
    assert!(
        install.status.success(),
        "dpkg -i failed:\n{}{}",
        text(&install.stdout),
        text(&install.stderr)
    );
    let installed_files = run("dpkg", &["-L", "rgap"]);
    let installed_files: Vec<String> =
        text(&installed_files.stdout).lines().map(str::to_owned).collect();

    let config = std::fs::metadata(CONFIG).unwrap();
    findings.check(config.permissions().mode() & 0o777 == 0o600 && config.uid() == 0, || {
        format!("{CONFIG} installed as {:o} uid {}", config.permissions().mode(), config.uid())
    });
    let config_text = std::fs::read_to_string(CONFIG).unwrap();
    let shipped_text =
        std::fs::read_to_string(Path::new(REPO).join("packaging/rgap.yaml")).unwrap();
    let key = |yaml: &str| {
        yaml.lines()
            .find_map(|l| l.trim().strip_prefix("psk: ").map(str::to_owned))
            .unwrap_or_default()
    };
    findings.check(
        key(&config_text) != key(&shipped_text) && Psk::from_hex(&key(&config_text)).is_ok(),
        || "postinst did not give the installed config a fresh key".into(),
    );

    let version = run("/usr/bin/rgap", &["version"]);
    findings.check(
        version.status.success() && text(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        || format!("/usr/bin/rgap version: {}{}", text(&version.stdout), text(&version.stderr)),
    );

    // Units.
    for unit in ["rgap.service", "rgap-agent@.service"] {
        let path = format!("/usr/lib/systemd/system/{unit}");
        let verify = run("systemd-analyze", &["verify", &path]);
        let complaints: Vec<String> = text(&verify.stderr)
            .lines()
            .filter(|line| line.contains("rgap"))
            .map(str::to_owned)
            .collect();
        findings.check(verify.status.success() && complaints.is_empty(), || {
            format!("systemd-analyze verify {unit}: {}", text(&verify.stderr))
        });
    }

    // Plugins found in the system directory with a bare environment.
    let mut plugins = Command::new("/usr/bin/rgap");
    plugins.arg("plugins").env_clear().env("PATH", "/usr/bin:/bin").current_dir("/");
    plugins.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let plugins = finish_any(plugins);
    let listing = text(&plugins.stdout);
    let in_system_dir: Vec<&str> = listing
        .lines()
        .skip_while(|line| !line.starts_with(&format!("{PLUGIN_DIR}:")))
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .collect();
    for kind in &kinds {
        let loaded = in_system_dir.iter().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(kind.as_str()) && words.next() != Some("BROKEN")
        });
        findings.check(plugins.status.success() && loaded, || {
            format!(
                "`rgap plugins` does not load {kind} from {PLUGIN_DIR}:\n{listing}{}",
                text(&plugins.stderr)
            )
        });
    }

    // The installed config loads (keys, groups, durations) ...
    let loads = run("/usr/bin/rgap", &["plugins", "-c", CONFIG]);
    findings.check(loads.status.success(), || {
        format!("rgap plugins -c {CONFIG}: {}", text(&loads.stderr))
    });
    // ... and passes the check the unit's ExecStartPre makes.
    let validate = run("/usr/bin/rgap", &["validate", "-c", CONFIG]);
    findings.check(validate.status.success() && text(&validate.stdout).starts_with("ok: "), || {
        format!("rgap validate -c {CONFIG}: {}{}", text(&validate.stdout), text(&validate.stderr))
    });

    // Man pages where man looks.
    for page in &pages {
        let found = run("man", &["-w", page]);
        findings.check(
            found.status.success() && text(&found.stdout).starts_with("/usr/share/man/man1/"),
            || format!("man -w {page}: {}{}", text(&found.stdout), text(&found.stderr)),
        );
    }

    // The installed bash completion loads.
    let completion = run(
        "bash",
        &["-c", "source /usr/share/bash-completion/completions/rgap && complete -p rgap"],
    );
    findings.check(completion.status.success() && completion.stderr.is_empty(), || {
        format!("installed bash completion: {}", text(&completion.stderr))
    });

    // An agent env file and an enabled unit, as an operator would leave them, then purge.
    std::fs::write("/etc/rgap/agent-test.env", "RGAP_GROUP=1000\n").unwrap();
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(wants).unwrap();
    let enabled = wants.join("rgap.service");
    let _ = std::fs::remove_file(&enabled);
    std::os::unix::fs::symlink("/usr/lib/systemd/system/rgap.service", &enabled).unwrap();

    let purge = run("dpkg", &["--purge", "rgap"]);
    assert!(purge.status.success(), "dpkg --purge failed:\n{}", text(&purge.stderr));
    let status = run("dpkg-query", &["-W", "-f", "${db:Status-Status}", "rgap"]);
    findings.check(!status.status.success() || text(&status.stdout) == "not-installed", || {
        format!("dpkg still knows rgap: {}", text(&status.stdout))
    });
    // Directories shared with other packages (/usr/bin, ...) stay; every file goes, and so do
    // the directories that are rgap's alone.
    let left: Vec<&String> = installed_files
        .iter()
        .filter(|path| Path::new(path).symlink_metadata().is_ok_and(|m| !m.is_dir()))
        .collect();
    findings.check(left.is_empty(), || format!("left behind after purge: {left:?}"));
    let own_dirs = ["/etc/rgap", "/var/lib/rgap", "/usr/lib/rgap", "/usr/share/doc/rgap"];
    for path in own_dirs.into_iter().chain([enabled.to_str().unwrap()]) {
        findings.check(Path::new(path).symlink_metadata().is_err(), || {
            format!("{path} left behind after purge")
        });
    }

    assert!(
        findings.0.is_empty(),
        "{} check(s) failed:\n{}",
        findings.0.len(),
        findings.0.join("\n")
    );
}
