//! End-to-end: the `hostsfile` output of the real listener keeps a real hosts file as
//! members join and leave, holds it back until its groups are ready, replaces it atomically,
//! and refuses an unusable spec at start.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{
    announcement, config, eventually, listener_start_error, send_to, start_listener, PSK,
};

const PREPEND: &str = "# Auto-generated hosts file\n# Do not edit manually\n";
const APPEND: &str = "# End of auto-generated file\n";

/// Group 1000 (long expiry) and group 2000 (1 s expiry), one hostsfile output with `spec`
/// (YAML lines indented four spaces).
fn two_groups(port: u16, spec: &str) -> String {
    format!(
        "listen:\n- 127.0.0.1:{port}\ngroups:\n- id: 1000\n  psk: {PSK}\n  expire: 30s\n\
         - id: 2000\n  psk: {PSK}\n  expire: 1s\noutputs:\n- kind: hostsfile\n  spec:\n{spec}"
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn announce(to: SocketAddr, group: u64, ips: &[&str]) {
    for ip in ips {
        send_to(to, &announcement(group, ip, PSK));
    }
}

#[test]
fn file_lists_members_and_falls_back_when_a_group_empties() {
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let listener = start_listener(&two_groups(
        port,
        "    interval: 1m\n    filename: hosts\n    mappings:\n    - group: 1000\n      \
         hostname: worker\n      fallback_addresses: [1.2.3.4]\n    - group: 2000\n      \
         hostname: db.example.com\n      fallback_addresses: [5.6.7.8, \"2001:db8::5\"]\n    \
         prepend_lines:\n    - \"# Auto-generated hosts file\"\n    - \"# Do not edit manually\"\n    \
         append_lines:\n    - \"# End of auto-generated file\"\n",
    ));
    // A relative filename is in the listener's working directory.
    let path = listener.dir.path().join("hosts");
    let workers = "10.0.0.1 worker\n10.0.0.2 worker\n2001:db8::1 worker\n";
    let worker_fallback = "1.2.3.4 worker # fallback address used!\n";
    let db_fallback = "5.6.7.8 db.example.com # fallback address used!\n\
                       2001:db8::5 db.example.com # fallback address used!\n";

    let expected = format!("{PREPEND}{worker_fallback}{db_fallback}{APPEND}");
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));

    // Members are listed sorted, IPv4 dotted before IPv6 compressed.
    announce(to, 1000, &["10.0.0.2", "2001:db8::1", "10.0.0.1"]);
    let expected = format!("{PREPEND}{workers}{db_fallback}{APPEND}");
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));

    // Group 2000 expires after 1 s: keep both members alive until they show...
    let both =
        format!("{PREPEND}{workers}192.0.2.7 db.example.com\n192.0.2.8 db.example.com\n{APPEND}");
    assert!(
        eventually(|| {
            announce(to, 2000, &["192.0.2.8", "192.0.2.7"]);
            read(&path) == both
        }),
        "{:?}",
        read(&path)
    );
    // ...then only one, so the other leaves...
    let one = format!("{PREPEND}{workers}192.0.2.8 db.example.com\n{APPEND}");
    assert!(
        eventually(|| {
            announce(to, 2000, &["192.0.2.8"]);
            read(&path) == one
        }),
        "{:?}",
        read(&path)
    );
    // ...then none: the fallback addresses come back.
    let expected = format!("{PREPEND}{workers}{db_fallback}{APPEND}");
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));
    assert!(listener.terminate().success());
}

#[test]
fn readiness_delay_holds_the_file_back() {
    let port = common::free_udp_port();
    let listener = start_listener(&config(
        port,
        // Long enough that a loaded machine does not reach it between the "not writing"
        // line and the check that no file exists.
        "  expire: 30s\n  readiness_delay: 8s\n",
        "- kind: hostsfile\n  spec:\n    interval: 1m\n    filename: hosts\n    mappings:\n    \
         - group: 1000\n      hostname: worker\n      fallback_addresses: [1.2.3.4]\n",
    ));
    let path = listener.dir.path().join("hosts");
    let why = listener.wait_for_log("not writing");
    assert!(why.contains("group(s) 1000 not ready yet"), "{why}");
    assert!(!path.exists(), "written before the group was ready: {:?}", read(&path));

    let expected = "1.2.3.4 worker # fallback address used!\n";
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));
    // Said once, not at every snapshot or interval.
    assert_eq!(listener.lines_with("not writing").len(), 1, "{:#?}", listener.log());
    assert!(listener.terminate().success());
}

#[test]
fn readers_never_see_a_partial_file_while_members_churn() {
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    // Long fixed lines make the file span several pages.
    let prepend: Vec<String> =
        (0..3).map(|i| format!("# header {i} {}", "=".repeat(100))).collect();
    let prepend_yaml: String = prepend.iter().map(|line| format!("    - \"{line}\"\n")).collect();
    let listener = start_listener(&config(
        port,
        "  expire: 1s\n",
        &format!(
            "- kind: hostsfile\n  spec:\n    interval: 1m\n    filename: hosts\n    mappings:\n    \
             - group: 1000\n      hostname: node.example.com\n      fallback_addresses: \
             [192.0.2.1]\n    prepend_lines:\n{prepend_yaml}    append_lines:\n    \
             - \"# end of file\"\n"
        ),
    ));
    let path = listener.dir.path().join("hosts");
    let head: String = prepend.iter().map(|line| format!("{line}\n")).collect();
    let fallback =
        format!("{head}192.0.2.1 node.example.com # fallback address used!\n# end of file\n");
    assert!(eventually(|| read(&path) == fallback), "{:?}", read(&path));

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, path, head) = (stop.clone(), path.clone(), head.clone());
        std::thread::spawn(move || {
            let (mut reads, mut most_members, mut torn) = (0u64, 0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).expect("the hosts file is always there");
                reads += 1;
                if !(text.starts_with(&head) && text.ends_with("\n# end of file\n")) {
                    torn.push(text);
                    continue;
                }
                most_members = most_members.max(text.matches(" node.example.com\n").count());
            }
            (reads, most_members, torn)
        })
    };

    let members: Vec<String> =
        (0..200).map(|i| format!("10.1.{}.{}", i / 100, i % 100 + 1)).collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    for _round in 0..3 {
        // Joining one by one, refreshed until all 200 are listed; then they all expire.
        assert!(eventually(|| {
            announce(to, 1000, &members);
            read(&path).matches(" node.example.com\n").count() == 200
        }));
        assert!(eventually(|| read(&path) == fallback), "{:?}", read(&path));
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, most_members, torn) = reader.join().unwrap();
    assert!(
        torn.is_empty(),
        "{} of {reads} reads saw a partial file, e.g. {:?}",
        torn.len(),
        torn[0]
    );
    assert_eq!(most_members, 200, "the reader should have seen the full file ({reads} reads)");
    assert!(listener.terminate().success());
}

#[test]
fn a_file_changed_by_someone_else_is_rewritten_at_the_next_interval() {
    let port = common::free_udp_port();
    let listener = start_listener(&config(
        port,
        "  expire: 30s\n",
        "- kind: hostsfile\n  spec:\n    interval: 200ms\n    filename: hosts\n    mappings:\n    \
         - group: 1000\n      hostname: worker\n      fallback_addresses: [1.2.3.4]\n",
    ));
    let path = listener.dir.path().join("hosts");
    let expected = "1.2.3.4 worker # fallback address used!\n";
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));

    std::fs::write(&path, "127.0.0.1 hijacked\n").unwrap();
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));
    listener.wait_for_log("was changed or removed by someone else");

    std::fs::remove_file(&path).unwrap();
    assert!(eventually(|| read(&path) == expected), "{:?}", read(&path));
    assert!(listener.terminate().success());
}

fn hostsfile_output(filename: &str) -> String {
    format!(
        "- kind: hostsfile\n  spec:\n    interval: 5s\n    filename: {filename}\n    mappings:\n    \
         - group: 1000\n      hostname: worker\n"
    )
}

#[test]
fn an_unwritable_directory_is_a_start_error_naming_it() {
    let port = common::free_udp_port();
    // Relative to the listener's directory, which has no `missing` subdirectory.
    let error =
        listener_start_error(&config(port, "  expire: 15s\n", &hostsfile_output("missing/hosts")));
    assert!(error.contains("outputs[0]: kind \"hostsfile\""), "{error}");
    assert!(error.contains("spec.filename: cannot write /"), "{error}");
    assert!(error.contains("/missing/hosts: cannot create a file in /"), "{error}");
    assert!(error.contains("No such file or directory"), "{error}");

    // A directory that is a file (rgap.yaml is the listener's config, always there).
    let error = listener_start_error(&config(
        port,
        "  expire: 15s\n",
        &hostsfile_output("rgap.yaml/hosts"),
    ));
    assert!(error.contains("/rgap.yaml/hosts: cannot create a file in /"), "{error}");
    assert!(error.contains("Not a directory"), "{error}");
}

#[test]
fn a_directory_the_user_may_not_write_to_is_a_start_error_even_for_root() {
    // Permissions do not stop root, so as root the listener runs as `nobody` (uid 65534), and
    // the directory stays root's; as another user the directory is made read-only. Either
    // way the permission check runs and must refuse the start.
    use std::os::unix::fs::PermissionsExt;
    let port = common::free_udp_port();
    let locked = tempfile::tempdir().unwrap();
    std::fs::set_permissions(locked.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let file = locked.path().join("hosts");
    let config = config(port, "  expire: 15s\n", &hostsfile_output(&file.display().to_string()));
    let error = if nix::unistd::geteuid().is_root() {
        start_error_as_nobody(&config)
    } else {
        listener_start_error(&config)
    };
    assert!(
        error.contains(&format!("cannot create a file in {}", locked.path().display())),
        "{error}"
    );
    assert!(error.contains("Permission denied"), "{error}");
}

/// Runs `rgap listener` on `config` as the unprivileged user 65534 (`nobody`), from a
/// directory that user owns, expecting it to fail at start; returns its stderr.
fn start_error_as_nobody(config: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    common::plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgap.yaml");
    std::fs::write(&path, config).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut command = Command::new(common::rgap_binary());
    command
        .arg("listener")
        .arg("-c")
        .arg(&path)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("RGAP_PLUGIN_PATH")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = common::finish(command);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "rgap should have failed:\n{stderr}");
    stderr
}

#[test]
fn unknown_spec_keys_are_start_errors() {
    let port = common::free_udp_port();
    let error = listener_start_error(&config(
        port,
        "  expire: 15s\n",
        "- kind: hostsfile\n  spec:\n    interval: 5s\n    filenme: hosts\n",
    ));
    assert!(error.contains("outputs[0]: kind \"hostsfile\""), "{error}");
    assert!(error.contains("unknown field `filenme`"), "{error}");

    let error = listener_start_error(&config(
        port,
        "  expire: 15s\n",
        "- kind: hostsfile\n  spec:\n    interval: 5s\n    filename: hosts\n    mappings:\n    \
         - group: 1000\n      hostname: worker\n      fallback: [1.2.3.4]\n",
    ));
    assert!(error.contains("spec.mappings[0].fallback: unknown field `fallback`"), "{error}");
}

/// A hostsfile output writing `file` (an absolute path) with group 1000's fallback address,
/// plus `extra` spec lines (indented four spaces).
fn fallback_output(file: &Path, extra: &str) -> String {
    format!(
        "- kind: hostsfile\n  spec:\n    interval: 1m\n    filename: {}\n    mappings:\n    \
         - group: 1000\n      hostname: worker\n      fallback_addresses: [1.2.3.4]\n{extra}",
        file.display()
    )
}

const FALLBACK: &str = "1.2.3.4 worker # fallback address used!\n";

/// The permission bits of `path` itself (a link is not followed).
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn is_regular_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

#[test]
fn a_link_planted_at_the_hosts_path_is_replaced_and_its_target_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // A world-writable file elsewhere, and a link to it where the hosts file goes.
    let planted = dir.path().join("planted");
    std::fs::write(&planted, "planted content\n").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    let hosts = dir.path().join("hosts");
    std::os::unix::fs::symlink(&planted, &hosts).unwrap();

    let port = common::free_udp_port();
    let listener = start_listener(&config(port, "  expire: 30s\n", &fallback_output(&hosts, "")));
    assert!(
        eventually(|| is_regular_file(&hosts) && read(&hosts) == FALLBACK),
        "{:?}",
        std::fs::symlink_metadata(&hosts)
    );
    assert_eq!(mode_of(&hosts), 0o644, "the link's target lent the hosts file its mode");
    assert_eq!(read(&planted), "planted content\n");
    assert_eq!(mode_of(&planted), 0o666);
    assert!(listener.terminate().success());
}

#[test]
fn a_hosts_file_owned_by_another_user_keeps_its_owner_group_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root can give a file to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "# the user's own file\n").unwrap();
    std::os::unix::fs::chown(&hosts, Some(65534), Some(65533)).unwrap();
    std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o640)).unwrap();

    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let listener = start_listener(&config(port, "  expire: 30s\n", &fallback_output(&hosts, "")));
    let owner = |path: &Path| {
        let meta = std::fs::symlink_metadata(path).unwrap();
        (meta.uid(), meta.gid())
    };
    assert!(eventually(|| read(&hosts) == FALLBACK), "{:?}", read(&hosts));
    assert_eq!(owner(&hosts), (65534, 65533));
    assert_eq!(mode_of(&hosts), 0o640);
    // And again on the next rewrite, a membership change.
    announce(to, 1000, &["10.0.0.1"]);
    assert!(eventually(|| read(&hosts) == "10.0.0.1 worker\n"), "{:?}", read(&hosts));
    assert_eq!(owner(&hosts), (65534, 65533));
    assert_eq!(mode_of(&hosts), 0o640);
    assert!(listener.terminate().success());
}

#[test]
fn stale_temporary_files_are_removed_at_start_and_nothing_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    // Named as the writer names its temporary files, by a pid that cannot exist (pid_max is
    // at most 2^22), as a run killed mid-write leaves them.
    let stale = dir.path().join(".hosts.rgap-99999999-7.tmp");
    std::fs::write(&stale, "half a hosts fi").unwrap();
    let beside: Vec<_> = [
        ".hosts.rgap-backup",
        ".other.rgap-99999999-7.tmp",
        "hosts.rgap-99999999-7.tmp",
        ".hosts.rgap-99999999-7.tmp.keep",
        "notes.txt",
    ]
    .iter()
    .map(|name| dir.path().join(name))
    .collect();
    for file in &beside {
        std::fs::write(file, "keep me\n").unwrap();
    }

    let port = common::free_udp_port();
    let listener = start_listener(&config(
        port,
        "  expire: 30s\n",
        &fallback_output(&hosts, "    mode: \"0600\"\n"),
    ));
    let line = listener.wait_for_log("left by an earlier run");
    assert!(line.contains(&stale.display().to_string()), "{line}");
    assert!(!stale.exists());
    for file in &beside {
        assert_eq!(read(file), "keep me\n", "{} was touched", file.display());
    }
    assert_eq!(listener.lines_with("left by an earlier run").len(), 1);
    // The spec's mode applies to a file that did not exist.
    assert!(eventually(|| read(&hosts) == FALLBACK), "{:?}", read(&hosts));
    assert_eq!(mode_of(&hosts), 0o600);
    assert!(listener.terminate().success());
}

/// A hostsfile output writing `file` with group 1000's fallback address, checking the file
/// every 200 ms (so recovery does not wait for a change).
fn quick_output(file: &Path) -> String {
    format!(
        "- kind: hostsfile\n  spec:\n    interval: 200ms\n    filename: {}\n    mappings:\n    \
         - group: 1000\n      hostname: worker\n      fallback_addresses: [1.2.3.4]\n",
        file.display()
    )
}

#[test]
fn the_hosts_directory_removed_while_running_is_reported_and_the_file_written_once_it_is_back() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("etc");
    std::fs::create_dir(&dir).unwrap();
    let hosts = dir.join("hosts");
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let listener = start_listener(&config(port, "  expire: 60s\n", &quick_output(&hosts)));
    assert!(eventually(|| read(&hosts) == FALLBACK), "{:?}", read(&hosts));

    std::fs::remove_dir_all(&dir).unwrap();
    announce(to, 1000, &["10.0.0.1"]);
    let warning = listener.wait_for_log(&format!("cannot update {}", hosts.display()));
    assert!(warning.contains("No such file or directory"), "{warning}");
    // Still running, and still failing while the directory is missing.
    listener.wait_for_log_count(&format!("cannot update {}", hosts.display()), 2);
    assert!(!dir.exists());

    std::fs::create_dir(&dir).unwrap();
    assert!(eventually(|| read(&hosts) == "10.0.0.1 worker\n"), "{:?}", read(&hosts));
    listener.wait_for_log(&format!("wrote {} again", hosts.display()));
    assert!(listener.terminate().success());
}

/// Makes a directory unwritable for whoever runs the listener, root included, until dropped:
/// immutable (`chattr +i`) as root, mode 0555 as another user.
struct Unwritable<'a>(&'a Path);

impl<'a> Unwritable<'a> {
    fn make(dir: &'a Path) -> Unwritable<'a> {
        use std::os::unix::fs::PermissionsExt;
        if nix::unistd::geteuid().is_root() {
            let status =
                Command::new("chattr").arg("+i").arg(dir).status().expect("running chattr");
            assert!(status.success(), "chattr +i {} (needs ext4 or alike)", dir.display());
        } else {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        Unwritable(dir)
    }
}

impl Drop for Unwritable<'_> {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if nix::unistd::geteuid().is_root() {
            let _ = Command::new("chattr").arg("-i").arg(self.0).status();
        } else {
            let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o755));
        }
    }
}

#[test]
fn a_hosts_directory_made_read_only_keeps_the_old_file_whole_until_writable_again() {
    // In the target directory: on the build's filesystem, which takes `chattr +i` (a tmpfs
    // /tmp may not).
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = base.path().join("etc");
    std::fs::create_dir(&dir).unwrap();
    let hosts = dir.join("hosts");
    let port = common::free_udp_port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let listener = start_listener(&config(port, "  expire: 60s\n", &quick_output(&hosts)));
    assert!(eventually(|| read(&hosts) == FALLBACK), "{:?}", read(&hosts));

    let locked = Unwritable::make(&dir);
    announce(to, 1000, &["10.0.0.1"]);
    let warning = listener.wait_for_log(&format!("cannot update {}", hosts.display()));
    assert!(warning.contains(&format!("cannot create a file in {}", dir.display())), "{warning}");
    listener.wait_for_log_count(&format!("cannot update {}", hosts.display()), 2);
    assert_eq!(read(&hosts), FALLBACK, "the old file must stay whole");

    drop(locked);
    assert!(eventually(|| read(&hosts) == "10.0.0.1 worker\n"), "{:?}", read(&hosts));
    listener.wait_for_log(&format!("wrote {} again", hosts.display()));
    // No temporary file left behind by the failed attempts.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("hosts")]);
    assert!(listener.terminate().success());
}
