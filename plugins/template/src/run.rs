//! Running `check_command` and `reload_command`: argv (no shell), in a process group of its
//! own, bounded by a timeout past which the whole group is killed; its output is kept to
//! explain a failure.
//!
//! Output goes to unnamed temporary files, not pipes: a reload command that leaves a daemon
//! behind holding its stdout (as `haproxy -D` can) then cannot keep us waiting for an end of
//! file that never comes. We only wait for the process itself.
//!
//! The process group, the exit polling and the kill are `rgap_plugin_kit::process`'s.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rgap_plugin_kit::process::GroupLeader;
pub(crate) use rgap_plugin_kit::process::{Outcome, STOP_GRACE};
/// How often the exit, the deadline and a stop request are checked.
const TICK: Duration = Duration::from_millis(5);
/// The most of each output stream kept for the log.
const MAX_OUTPUT: u64 = 8 * 1024;

/// What a command did and said.
#[derive(Debug)]
pub(crate) struct Finished {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        self.outcome.succeeded()
    }

    /// What went wrong, for the log: "exit status: 1", "timed out after 30s"...
    pub fn failure(&self, timeout: Duration) -> String {
        match &self.outcome {
            Outcome::Exited(status) => status.to_string(),
            Outcome::TimedOut => format!(
                "timed out after {}; killed its process group",
                rgap_plugin_api::duration::format(timeout)
            ),
            Outcome::Interrupted => "interrupted: the listener is stopping".to_owned(),
            Outcome::NotStarted(error) => format!("cannot start it: {error}"),
        }
    }

    /// Its stderr on one line, or a note that it was silent.
    pub fn stderr_line(&self) -> String {
        let lines: Vec<&str> =
            self.stderr.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
        if lines.is_empty() {
            "stderr: (empty)".to_owned()
        } else {
            format!("stderr: {}", lines.join(" | "))
        }
    }
}

/// Runs `argv` to its end, at most `timeout` (less once `stop` is set).
pub(crate) fn run(argv: &[String], timeout: Duration, stop: &AtomicBool) -> Finished {
    let not_started = |error| Finished {
        outcome: Outcome::NotStarted(error),
        stdout: String::new(),
        stderr: String::new(),
    };
    let (mut stdout, mut stderr) = match (tempfile::tempfile(), tempfile::tempfile()) {
        (Ok(stdout), Ok(stderr)) => (stdout, stderr),
        (Err(error), _) | (_, Err(error)) => return not_started(error),
    };
    let spawned = (|| {
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(stdout.try_clone()?)
            .stderr(stderr.try_clone()?)
            // Its own process group, led by the child: a timeout kills its children too.
            .process_group(0)
            .spawn()
    })();
    let leader = match spawned {
        Ok(child) => GroupLeader::new(child),
        Err(error) => return not_started(error),
    };
    let started = Instant::now();
    let mut deadline = started + timeout;
    let mut stopping = false;
    let mut killed = None;
    while !leader.has_exited() {
        let now = Instant::now();
        if !stopping && stop.load(Ordering::Relaxed) {
            stopping = true;
            deadline = deadline.min(now + STOP_GRACE);
        }
        if now >= deadline {
            if let Err(error) = leader.kill_group() {
                tracing::warn!("cannot kill a command's process group: {error}");
            }
            killed = Some(if stopping { Outcome::Interrupted } else { Outcome::TimedOut });
            break;
        }
        std::thread::sleep(TICK.min(deadline - now));
    }
    // Exited (seen above) or killed: this only reaps it.
    let outcome = leader.reap(killed);
    Finished { outcome, stdout: read_start(&mut stdout), stderr: read_start(&mut stderr) }
}

/// The first [`MAX_OUTPUT`] bytes written to `file`, as text.
fn read_start(file: &mut File) -> String {
    let mut bytes = Vec::new();
    let read = file.rewind().and_then(|()| file.take(MAX_OUTPUT).read_to_end(&mut bytes));
    if let Err(error) = read {
        tracing::debug!("cannot read a command's output back: {error}");
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;
    use std::io;

    fn sh(script: &str, timeout: Duration) -> Finished {
        let argv = ["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
        run(&argv, timeout, &AtomicBool::new(false))
    }

    #[test]
    fn output_and_status_are_kept() {
        let done =
            sh("echo out; echo 'bad line' >&2; echo more >&2; exit 3", Duration::from_secs(30));
        assert!(!done.succeeded());
        assert!(matches!(done.outcome, Outcome::Exited(s) if s.code() == Some(3)));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr_line(), "stderr: bad line | more");
        assert_eq!(done.failure(Duration::ZERO), "exit status: 3");
        assert!(sh("true", Duration::from_secs(30)).succeeded());
    }

    #[test]
    fn the_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The grandchild would outlive a kill of the shell alone.
        let script = format!("sleep 1000 & echo $! > '{}'; wait", pid_file.display());
        let done = sh(&script, Duration::from_millis(300));
        assert!(matches!(done.outcome, Outcome::TimedOut), "{done:?}");
        let grandchild: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // Killed, and (re-parented to init or a subreaper) reaped soon after.
        let deadline = Instant::now() + Duration::from_secs(30);
        let gone = loop {
            let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            let alive = state.is_ok_and(|s| !s.contains(") Z "));
            if !alive || Instant::now() > deadline {
                break !alive;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(gone, "the sleep in the command's group survived the timeout");
    }

    #[test]
    fn a_daemon_holding_stdout_does_not_hold_us() {
        // Were we waiting for the end of its output, the left-behind sleep would make this
        // run into its timeout.
        let done = sh("sleep 1000 & echo $!", Duration::from_secs(60));
        assert!(done.succeeded(), "{done:?}");
        let daemon: i32 = done.stdout.trim().parse().unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(daemon), Signal::SIGKILL);
    }

    #[test]
    fn a_missing_program_is_not_started() {
        let done =
            run(&["/nonexistent/x".to_owned()], Duration::from_secs(1), &AtomicBool::new(false));
        assert!(
            matches!(&done.outcome, Outcome::NotStarted(e) if e.kind() == io::ErrorKind::NotFound)
        );
        assert!(done.failure(Duration::ZERO).starts_with("cannot start it: "));
    }
}
