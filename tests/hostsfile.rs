//! End-to-end: the `hostsfile` output of the real listener keeps a real hosts file as
//! members join and leave, holds it back until its groups are ready, replaces it atomically,
//! and refuses an unusable spec at start.

mod common;

use std::net::SocketAddr;
use std::path::Path;
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
        "  expire: 30s\n  readiness_delay: 3s\n",
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

    // Permissions do not stop root, so this part only runs as another user.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let locked = tempfile::tempdir().unwrap();
        std::fs::set_permissions(locked.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let file = locked.path().join("hosts");
        let error = listener_start_error(&config(
            port,
            "  expire: 15s\n",
            &hostsfile_output(&file.display().to_string()),
        ));
        assert!(
            error.contains(&format!("cannot create a file in {}", locked.path().display())),
            "{error}"
        );
        assert!(error.contains("Permission denied"), "{error}");
    }
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
