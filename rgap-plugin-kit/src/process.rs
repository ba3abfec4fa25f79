//! What the outputs that run commands (command, template) share about a child process: it
//! runs in a process group of its own, led by it, so that a timeout kills whatever it
//! started too; its exit is polled with `waitid(WNOWAIT)`, which leaves it a zombie until it
//! is reaped at the end, so its pid, and so its process group id, cannot be reused
//! meanwhile and killing the group never hits a stranger.

use std::io;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Once the listener stops, a running command gets this long (or what is left of its
/// timeout, if less) before its process group is killed: stop stays well within the
/// host's own grace for an output, and no command outlives the listener.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How a command ended.
#[derive(Debug)]
pub enum Outcome {
    /// It exited (or was killed by someone else) with this status.
    Exited(ExitStatus),
    /// It ran past its timeout; its process group was killed.
    TimedOut,
    /// It ran past [`STOP_GRACE`] after the listener began to stop; its group was killed.
    Interrupted,
    /// It could not be started (not found, not executable...).
    NotStarted(io::Error),
}

impl Outcome {
    /// Whether it exited with status 0.
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Exited(status) if status.success())
    }
}

/// A spawned child that leads its own process group (`Command::process_group(0)`).
pub struct GroupLeader {
    child: Child,
    pid: Pid,
}

impl GroupLeader {
    /// Takes charge of `child`, which must have been spawned with `process_group(0)`.
    pub fn new(child: Child) -> GroupLeader {
        let pid = Pid::from_raw(child.id() as i32);
        GroupLeader { child, pid }
    }

    /// The child itself, for its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the child has exited, without reaping it (see the module documentation).
    pub fn has_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.pid), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => false,
            // Exited, or (ECHILD) already reaped: either way there is nothing left to wait for.
            Ok(_) | Err(_) => true,
        }
    }

    /// Kills the child's whole process group. A group that is already gone is no error.
    pub fn kill_group(&self) -> io::Result<()> {
        match killpg(self.pid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(error) => Err(io::Error::from(error)),
        }
    }

    /// Reaps the child, once it has exited or been killed: `killed` is how it was killed, if
    /// it was (that, not the status of the kill, is how it ended).
    pub fn reap(mut self, killed: Option<Outcome>) -> Outcome {
        let status = self.child.wait();
        match (killed, status) {
            (Some(outcome), _) => outcome,
            (None, Ok(status)) => Outcome::Exited(status),
            (None, Err(error)) => Outcome::NotStarted(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::time::Instant;

    fn spawn(script: &str) -> GroupLeader {
        let child = Command::new("/bin/sh").args(["-c", script]).process_group(0).spawn().unwrap();
        GroupLeader::new(child)
    }

    fn wait_until_exited(leader: &GroupLeader) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !leader.has_exited() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn an_exit_is_seen_without_reaping_and_its_status_kept() {
        let leader = spawn("exit 3");
        assert!(wait_until_exited(&leader));
        // Still a zombie: seen again, and reaped with its status.
        assert!(leader.has_exited());
        assert!(matches!(leader.reap(None), Outcome::Exited(status) if status.code() == Some(3)));
    }

    #[test]
    fn killing_the_group_ends_the_child_and_reports_how() {
        let leader = spawn("sleep 1000");
        assert!(!leader.has_exited());
        leader.kill_group().unwrap();
        assert!(wait_until_exited(&leader));
        assert!(matches!(leader.reap(Some(Outcome::TimedOut)), Outcome::TimedOut));
    }
}
