//! The agent's health check: a shell command run every interval, and the rise/fall rule that
//! turns its results into "healthy" or "unhealthy" (as keepalived's `track_script`).
//!
//! Each run gets a process group of its own, so a check that hangs is killed whole,
//! grandchildren included, when it runs past its timeout. Its exit is observed with
//! `waitid(WNOWAIT)`, which leaves the process a zombie until it is reaped at the end: its
//! pid, and so its process group id, cannot be reused meanwhile, so the kill never hits a
//! stranger.

use std::fmt;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::duration;

/// Longest pause between two looks at a running check (the first ones are shorter, so that
/// a quick check is seen finishing within a millisecond or two).
const MAX_POLL: Duration = Duration::from_millis(20);

/// What to run, how long to let it run, and how many results in a row change the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Run with `sh -c`.
    pub command: String,
    /// Past it, the check's process group is killed and the run counts as a failure.
    pub timeout: Duration,
    /// Passes in a row that make an unhealthy agent healthy.
    pub rise: u32,
    /// Failures in a row that make a healthy agent unhealthy.
    pub fall: u32,
}

/// How one run of the check ended.
#[derive(Debug)]
pub enum CheckResult {
    /// Exit status 0.
    Passed,
    /// Another exit status, or killed by a signal.
    Failed(ExitStatus),
    /// Ran past the timeout; its process group was killed.
    TimedOut(Duration),
    /// `sh` could not be started.
    NotStarted(io::Error),
    /// The agent was asked to stop while the check ran; its process group was killed.
    Interrupted,
}

impl CheckResult {
    fn passed(&self) -> bool {
        matches!(self, CheckResult::Passed)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Passed => f.write_str("passed"),
            CheckResult::Failed(status) => write!(f, "{status}"),
            CheckResult::TimedOut(timeout) => {
                write!(f, "killed after the {} timeout", duration::format(*timeout))
            }
            CheckResult::NotStarted(error) => write!(f, "could not run sh: {error}"),
            CheckResult::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl HealthCheck {
    /// Runs the check once, to its end or its timeout, looking at `stop` every few
    /// milliseconds; returns at once (killing the check) when `stop` says so.
    pub fn run(&self, mut stop: impl FnMut() -> bool) -> CheckResult {
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            // Its output is not ours to print on stdout; errors still reach the agent's log.
            .stdout(Stdio::null())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => return CheckResult::NotStarted(error),
        };
        let pid = Pid::from_raw(child.id() as i32);
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match has_exited(pid) {
                Ok(true) | Err(_) => break,
                Ok(false) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                kill_group(pid, &mut child);
                return CheckResult::TimedOut(self.timeout);
            }
            if stop() {
                kill_group(pid, &mut child);
                return CheckResult::Interrupted;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(MAX_POLL);
        }
        match child.wait() {
            Ok(status) if status.success() => CheckResult::Passed,
            Ok(status) => CheckResult::Failed(status),
            Err(error) => CheckResult::NotStarted(error),
        }
    }
}

/// Whether the process has exited, leaving it to be reaped (see the module doc).
fn has_exited(pid: Pid) -> nix::Result<bool> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    Ok(!matches!(waitid(Id::Pid(pid), flags)?, WaitStatus::StillAlive))
}

/// Kills the check's whole process group (the check leads it) and reaps the check.
fn kill_group(pid: Pid, child: &mut Child) {
    if let Err(error) = killpg(pid, Signal::SIGKILL) {
        tracing::debug!("cannot kill the health check's process group {pid}: {error}");
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A change of state, to be logged and acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameHealthy,
    BecameUnhealthy,
}

/// The rise/fall rule: the agent starts unhealthy, becomes healthy after `rise` passes in a
/// row and unhealthy after `fall` failures in a row.
#[derive(Debug, Clone)]
pub struct Health {
    rise: u32,
    fall: u32,
    healthy: bool,
    /// Results in a row that disagree with the current state.
    streak: u32,
}

impl Health {
    pub fn new(rise: u32, fall: u32) -> Health {
        Health { rise: rise.max(1), fall: fall.max(1), healthy: false, streak: 0 }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Counts one result; returns the transition it completes, if any.
    pub fn record(&mut self, passed: bool) -> Option<Transition> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if passed { self.rise } else { self.fall };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(if passed { Transition::BecameHealthy } else { Transition::BecameUnhealthy })
    }

    /// Runs `check` once and counts its result (an interrupted run is not counted).
    pub fn check(
        &mut self,
        check: &HealthCheck,
        stop: impl FnMut() -> bool,
    ) -> (CheckResult, Option<Transition>) {
        let result = check.run(stop);
        if matches!(result, CheckResult::Interrupted) {
            return (result, None);
        }
        let transition = self.record(result.passed());
        (result, transition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(command: &str, timeout_ms: u64) -> HealthCheck {
        HealthCheck {
            command: command.into(),
            timeout: Duration::from_millis(timeout_ms),
            rise: 2,
            fall: 2,
        }
    }

    #[test]
    fn starts_unhealthy_rises_and_falls_after_results_in_a_row() {
        let mut health = Health::new(2, 3);
        assert!(!health.is_healthy());
        assert_eq!(health.record(true), None);
        assert_eq!(health.record(false), None, "the streak is broken");
        assert_eq!(health.record(true), None);
        assert_eq!(health.record(true), Some(Transition::BecameHealthy));
        assert_eq!(health.record(true), None);
        assert_eq!(health.record(false), None);
        assert_eq!(health.record(false), None);
        assert_eq!(health.record(true), None, "the streak is broken");
        for _ in 0..2 {
            assert_eq!(health.record(false), None);
        }
        assert_eq!(health.record(false), Some(Transition::BecameUnhealthy));
        assert!(!health.is_healthy());
    }

    #[test]
    fn exit_status_decides_pass_or_fail() {
        assert!(matches!(check("exit 0", 5_000).run(|| false), CheckResult::Passed));
        let failed = check("exit 3", 5_000).run(|| false);
        assert!(matches!(&failed, CheckResult::Failed(status) if status.code() == Some(3)));
        assert_eq!(failed.to_string(), "exit status: 3");
    }

    #[test]
    fn a_check_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // The grandchild would write the marker if it outlived the kill.
        let command = format!("(sleep 1; touch {}) & sleep 5", marker.display());
        let result = check(&command, 100).run(|| false);
        assert!(matches!(result, CheckResult::TimedOut(_)), "{result}");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "the check's child outlived the timeout");
    }

    #[test]
    fn a_stop_request_interrupts_a_running_check_and_is_not_counted() {
        let mut health = Health::new(1, 1);
        let mut polls = 0;
        let (result, transition) = health.check(&check("sleep 5", 10_000), || {
            polls += 1;
            polls > 3
        });
        assert!(matches!(result, CheckResult::Interrupted), "{result}");
        assert_eq!(transition, None);
    }
}
