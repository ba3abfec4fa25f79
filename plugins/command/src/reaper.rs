//! Reaping what commands leave behind: rgap becomes a child subreaper, so a process a command
//! started in the background and left running is adopted by rgap (not by init) when the
//! command exits, and one thread per process reaps such orphans once they exit, so they never
//! linger as zombies. This matters most when rgap is PID 1 of a container, where nobody else
//! would ever reap them.
//!
//! # Which zombies are reaped
//!
//! rgap's own code waits for the children it starts (this plugin for its command, another
//! plugin for its own), and reaping one of those here would steal its exit status. Every
//! command rgap starts is made the leader of a process group of its own (the runner needs that
//! to kill the group at a timeout), so the rule is: **a zombie child of rgap that is not a
//! process-group leader is an orphan, and is reaped; a group leader never is**. A command's
//! background children stay in its group without leading it, so they are reaped; so is a
//! daemon that forked twice. A process that made itself a group leader (`setsid`, `setpgid`)
//! and outlived its parent stays a zombie until rgap exits.
//!
//! The scan is cheap: `/proc/self/task/*/children` lists rgap's children (a full `/proc` scan
//! stands in on kernels without it), and `/proc/<pid>/stat` gives each one's state and group.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rgap_plugin_api::HostHandle;

/// How often rgap's children are checked for orphans that exited. A zombie holds only a
/// process-table slot, so a second of delay costs nothing; a scan took about 0.23 ms (17
/// threads, 5 children), so this is about 0.02 % of one core.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Makes rgap a child subreaper and starts the reaping thread, once per process (every
/// `command` output calls it; the first one's name is on the thread's log lines). An error
/// means rgap could not become a subreaper: orphans then go to init, as before.
pub fn start(host: &HostHandle) -> Result<(), String> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| format!("cannot make rgap a child subreaper: {e}"))?;
            let host = host.clone();
            std::thread::Builder::new()
                .name("rgap orphan reaper".into())
                .spawn(move || {
                    host.in_scope(|| loop {
                        std::thread::sleep(SCAN_EVERY);
                        reap_orphans();
                    })
                })
                .map(drop)
                .map_err(|e| format!("cannot start the orphan reaper thread: {e}"))
        })
        .clone()
}

/// Reaps every zombie child of rgap that is not a process-group leader; returns how many.
pub fn reap_orphans() -> usize {
    let mut reaped = 0;
    for pid in children() {
        let Some(stat) = read_stat(pid) else { continue };
        if !stat.is_orphan_zombie(pid) {
            continue;
        }
        // WNOHANG: the check above says it has exited; never block on a mistaken guess.
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => {}
            Ok(status) => {
                tracing::debug!("reaped process {pid}, left behind by a command: {status:?}");
                reaped += 1;
            }
            Err(error) => tracing::debug!("cannot reap process {pid}: {error}"),
        }
    }
    reaped
}

/// What the reaper needs from `/proc/<pid>/stat`.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    state: char,
    parent: i32,
    group: i32,
}

impl Stat {
    /// The rule of the module comment: exited, ours, and not leading a process group.
    fn is_orphan_zombie(&self, pid: i32) -> bool {
        self.state == 'Z' && self.parent == std::process::id() as i32 && self.group != pid
    }
}

/// Parses a stat line: `pid (comm) state ppid pgrp ...`. `comm` may hold spaces and
/// parentheses, so the fields start after its last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let mut fields = line.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some(Stat { state, parent, group })
}

fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// rgap's children: those of each of its threads (a child belongs to the thread that forked
/// it, an adopted orphan to the one the kernel picked).
fn children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return vec![] };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(list) => {
                pids.extend(list.split_whitespace().filter_map(|pid| pid.parse::<i32>().ok()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return children_by_scan(),
            // The thread ended meanwhile.
            Err(_) => {}
        }
    }
    pids
}

/// rgap's children found by reading every process's stat (kernels built without the
/// `children` files).
fn children_by_scan() -> Vec<i32> {
    let ours = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir(Path::new("/proc")) else { return vec![] };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| read_stat(pid).is_some_and(|stat| stat.parent == ours))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_follow_the_last_parenthesis() {
        let stat = parse_stat("4242 (a (weird) name) Z 17 4240 4240 0 -1 4194564 0 0").unwrap();
        assert_eq!(stat, Stat { state: 'Z', parent: 17, group: 4240 });
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn only_exited_children_that_lead_no_group_are_orphans() {
        let ours = std::process::id() as i32;
        let stat = |state, parent, group| Stat { state, parent, group };
        assert!(stat('Z', ours, 100).is_orphan_zombie(101));
        // A command rgap started leads its group: its status belongs to whoever waits for it.
        assert!(!stat('Z', ours, 101).is_orphan_zombie(101));
        assert!(!stat('S', ours, 100).is_orphan_zombie(101));
        assert!(!stat('Z', ours + 1, 100).is_orphan_zombie(101));
    }

    /// Waits until `pid` has exited (and is still unreaped).
    fn wait_for_zombie(pid: i32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while read_stat(pid).is_some_and(|stat| stat.state != 'Z') {
            assert!(std::time::Instant::now() < deadline, "process {pid} never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn zombies_leading_no_group_are_reaped_and_group_leaders_are_left_to_their_waiter() {
        use std::os::unix::process::CommandExt;
        use std::process::Command;
        let mut leader =
            Command::new("/bin/sh").args(["-c", "exit 7"]).process_group(0).spawn().unwrap();
        // In the test process's group, as an orphan adopted by rgap would be in its command's.
        let mut plain = Command::new("/bin/sh").args(["-c", "exit 8"]).spawn().unwrap();
        let (leader_pid, plain_pid) = (leader.id() as i32, plain.id() as i32);
        wait_for_zombie(leader_pid);
        wait_for_zombie(plain_pid);
        assert!(children().contains(&leader_pid), "{:?} lacks {leader_pid}", children());
        assert!(children().contains(&plain_pid), "{:?} lacks {plain_pid}", children());

        assert_eq!(reap_orphans(), 1);
        assert!(read_stat(plain_pid).is_none(), "process {plain_pid} is still there");
        // Its status was taken: there is nothing left to wait for.
        assert!(plain.wait().is_err());
        // The leader is still ours to wait for, with its status.
        assert_eq!(leader.wait().unwrap().code(), Some(7));
    }
}
