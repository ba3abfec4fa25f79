//! One attempt at running the command: spawn it in a process group of its own, with the
//! environment the spec asks for, feed it the addresses on stdin, log its output line by line
//! (control characters escaped), and bound every wait.
//!
//! A single loop polls the pipes (non-blocking, so a child that never reads its input or a
//! grandchild that keeps a pipe open cannot block us) and checks every few milliseconds
//! whether the process has exited (how, and how its group is killed, is
//! `rgap_plugin_kit::process`'s).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rgap_plugin_api::duration::GoDuration;
use rgap_plugin_kit::process::GroupLeader;
pub use rgap_plugin_kit::process::{Outcome, STOP_GRACE};

use crate::escape::escape_controls;

/// How often the loop checks for the exit, the deadlines and a stop request.
const TICK: u16 = 10;
/// A longer line is logged in pieces of this size.
const MAX_LINE: usize = 16 * 1024;

/// The command's environment: the listener's own, or none at all if `clear`, then `set` on
/// top.
#[derive(Debug, Default)]
pub struct Environment {
    pub clear: bool,
    pub set: BTreeMap<String, String>,
}

/// What to run and within which limits.
pub struct Attempt<'a> {
    pub argv: &'a [String],
    pub env: &'a Environment,
    pub input: &'a [u8],
    pub timeout: Duration,
    /// How long to keep reading output after the process exits; zero means until the
    /// timeout's deadline.
    pub wait_delay: Duration,
    /// Set when the listener is stopping.
    pub stop: &'a AtomicBool,
}

impl Attempt<'_> {
    /// Runs the command once, to the end; never waits longer than the timeout plus the
    /// wait delay (or [`STOP_GRACE`] once stopping).
    pub fn run(&self) -> Outcome {
        let mut command = Command::new(&self.argv[0]);
        if self.env.clear {
            command.env_clear();
        }
        let spawned = command
            .args(&self.argv[1..])
            .envs(&self.env.set)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, led by the child: a timeout kills its children too, and
            // the orphan reaper (see `reaper`) knows it for one that we wait for ourselves.
            .process_group(0)
            .spawn();
        let mut leader = match spawned {
            Ok(child) => GroupLeader::new(child),
            Err(error) => return Outcome::NotStarted(error),
        };
        let child = leader.child_mut();
        let started = Instant::now();
        let mut input = Input {
            pipe: child.stdin.take().map(|pipe| nonblocking(pipe.into())),
            data: self.input,
            written: 0,
        };
        if self.input.is_empty() {
            input.pipe = None;
        }
        let mut streams = [
            OutputStream::new(StreamKind::Stdout, child.stdout.take().map(Into::into)),
            OutputStream::new(StreamKind::Stderr, child.stderr.take().map(Into::into)),
        ];

        let mut exited_at: Option<Instant> = None;
        let mut stop_deadline: Option<Instant> = None;
        let mut killed: Option<Outcome> = None;
        loop {
            let now = Instant::now();
            if exited_at.is_none() && leader.has_exited() {
                exited_at = Some(now);
            }
            if stop_deadline.is_none() && self.stop.load(Ordering::Relaxed) {
                stop_deadline = Some(now + STOP_GRACE);
            }
            match exited_at {
                None if killed.is_none() => {
                    if now >= started + self.timeout {
                        kill_group(&leader);
                        killed = Some(Outcome::TimedOut);
                    } else if stop_deadline.is_some_and(|deadline| now >= deadline) {
                        kill_group(&leader);
                        killed = Some(Outcome::Interrupted);
                    }
                }
                None => {}
                Some(exited_at) => {
                    if streams.iter().all(OutputStream::is_closed) {
                        break;
                    }
                    let mut pipes_deadline = if self.wait_delay.is_zero() {
                        (started + self.timeout).max(exited_at)
                    } else {
                        exited_at + self.wait_delay
                    };
                    if let Some(stop_deadline) = stop_deadline {
                        pipes_deadline = pipes_deadline.min(stop_deadline);
                    }
                    if now >= pipes_deadline {
                        // Whole milliseconds read better than the exact overrun.
                        let waited = Duration::from_millis((now - exited_at).as_millis() as u64);
                        for stream in streams.iter().filter(|s| !s.is_closed()) {
                            tracing::warn!(
                                "{} still open {} after the command exited (a process it left \
                                 running holds it?); no longer reading it",
                                stream.kind.name(),
                                GoDuration(waited)
                            );
                        }
                        break;
                    }
                }
            }
            wait_for_io(&mut input, &mut streams);
        }
        for stream in &mut streams {
            stream.finish();
        }
        // Closing our ends: a leftover process writing to them gets EPIPE, not us stuck.
        drop(input);
        drop(streams);
        // The process has exited (seen above), so this only reaps it.
        leader.reap(killed)
    }
}

fn kill_group(leader: &GroupLeader) {
    if let Err(error) = leader.kill_group() {
        tracing::warn!("cannot kill a command's process group: {error}");
    }
}

fn nonblocking(fd: OwnedFd) -> File {
    // Only our end of the pipe changes: the child's end is a separate open file.
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    File::from(fd)
}

/// The addresses on their way to the command's stdin, closed once all are written.
struct Input<'a> {
    pipe: Option<File>,
    data: &'a [u8],
    written: usize,
}

impl Input<'_> {
    fn write_some(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else { return };
        match pipe.write(&self.data[self.written..]) {
            Ok(n) => {
                self.written += n;
                if self.written == self.data.len() {
                    self.pipe = None;
                }
            }
            Err(e)
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(error) => {
                // Typically EPIPE: the command exited or closed stdin without reading it all.
                tracing::debug!(
                    "stdin: {} of {} bytes written: {error}",
                    self.written,
                    self.data.len()
                );
                self.pipe = None;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// One of the command's output pipes, split into lines for the log.
struct OutputStream {
    kind: StreamKind,
    pipe: Option<File>,
    partial: Vec<u8>,
}

impl OutputStream {
    fn new(kind: StreamKind, pipe: Option<OwnedFd>) -> Self {
        OutputStream { kind, pipe: pipe.map(nonblocking), partial: Vec::new() }
    }

    fn is_closed(&self) -> bool {
        self.pipe.is_none()
    }

    /// Reads what is there (a bounded amount, so one chatty stream cannot starve the loop).
    fn read_some(&mut self) {
        let mut buffer = [0u8; 8192];
        for _ in 0..16 {
            let Some(pipe) = self.pipe.as_mut() else { return };
            match pipe.read(&mut buffer) {
                Ok(0) => self.pipe = None,
                Ok(n) => self.take(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::debug!("{}: read failed: {error}", self.kind.name());
                    self.pipe = None;
                }
            }
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[start..start + end];
            self.log(line.strip_suffix(b"\r").unwrap_or(line));
            start += end + 1;
        }
        self.partial.drain(..start);
        while self.partial.len() >= MAX_LINE {
            let piece: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            self.log(&piece);
        }
    }

    /// Logs an unterminated last line.
    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.log(&rest);
        }
    }

    fn log(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = escape_controls(&line);
        match self.kind {
            StreamKind::Stdout => tracing::info!("stdout: {line}"),
            StreamKind::Stderr => tracing::warn!("stderr: {line}"),
        }
    }
}

/// Waits up to one tick for any pipe to be ready, then moves what it can.
fn wait_for_io(input: &mut Input<'_>, streams: &mut [OutputStream; 2]) {
    let (input_ready, streams_ready) = {
        let mut fds = Vec::with_capacity(3);
        if let Some(pipe) = &input.pipe {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLOUT));
        }
        let first_stream = fds.len();
        let mut polled = [false; 2];
        for (index, stream) in streams.iter().enumerate() {
            if let Some(pipe) = &stream.pipe {
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
                polled[index] = true;
            }
        }
        // With no descriptor left this is just the tick's sleep. EINTR: look again next tick.
        let _ = poll(&mut fds, PollTimeout::from(TICK));
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|events| !events.is_empty());
        let input_ready = first_stream == 1 && ready(&fds[0]);
        let mut next = first_stream;
        let mut streams_ready = [false; 2];
        for (index, was_polled) in polled.into_iter().enumerate() {
            if was_polled {
                streams_ready[index] = ready(&fds[next]);
                next += 1;
            }
        }
        (input_ready, streams_ready)
    };
    if input_ready {
        input.write_some();
    }
    for (stream, ready) in streams.iter_mut().zip(streams_ready) {
        if ready {
            stream.read_some();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], input: &[u8], timeout: Duration) -> Outcome {
        run_with(argv, &Environment::default(), input, timeout)
    }

    fn run_with(argv: &[&str], env: &Environment, input: &[u8], timeout: Duration) -> Outcome {
        let argv: Vec<String> = argv.iter().map(|arg| arg.to_string()).collect();
        let stop = AtomicBool::new(false);
        let wait_delay = Duration::from_millis(100);
        Attempt { argv: &argv, env, input, timeout, wait_delay, stop: &stop }.run()
    }

    #[test]
    fn the_environment_is_inherited_cleared_or_set_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let script = format!("env > '{}'", out.display());
        let argv = ["/bin/sh", "-c", script.as_str()];
        let set = BTreeMap::from([("RGAP_TEST_SET".to_owned(), "a value=with equals".to_owned())]);
        let env_of = |env: &Environment| {
            let outcome = run_with(&argv, env, b"", Duration::from_secs(60));
            assert!(matches!(outcome, Outcome::Exited(s) if s.success()), "{outcome:?}");
            std::fs::read_to_string(&out).unwrap()
        };
        // Every test process has PATH; a cleared environment does not.
        let inherited = env_of(&Environment::default());
        assert!(inherited.lines().any(|l| l.starts_with("PATH=")), "{inherited}");
        let cleared = env_of(&Environment { clear: true, set: set.clone() });
        assert!(!cleared.lines().any(|l| l.starts_with("PATH=")), "{cleared}");
        assert!(cleared.lines().any(|l| l == "RGAP_TEST_SET=a value=with equals"), "{cleared}");
        let added = env_of(&Environment { clear: false, set });
        assert!(added.lines().any(|l| l.starts_with("PATH=")), "{added}");
        assert!(added.lines().any(|l| l == "RGAP_TEST_SET=a value=with equals"), "{added}");
    }

    #[test]
    fn a_large_input_reaches_stdin_whole() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        let input: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("10.{}.{}.1\n", i / 256 % 256, i % 256).into_bytes())
            .collect();
        let script = format!("cat > '{}'", copy.display());
        let outcome = run(&["/bin/sh", "-c", &script], &input, Duration::from_secs(60));
        assert!(matches!(outcome, Outcome::Exited(status) if status.success()), "{outcome:?}");
        assert_eq!(std::fs::read(&copy).unwrap(), input);
    }

    #[test]
    fn a_command_that_ignores_its_input_still_finishes() {
        let input = vec![b'x'; 1 << 20];
        let outcome = run(&["/bin/sh", "-c", "exit 4"], &input, Duration::from_secs(60));
        assert!(
            matches!(outcome, Outcome::Exited(status) if status.code() == Some(4)),
            "{outcome:?}"
        );
    }

    #[test]
    fn the_timeout_kills_the_command() {
        let outcome = run(&["/bin/sh", "-c", "sleep 1000"], b"", Duration::from_millis(100));
        assert!(matches!(outcome, Outcome::TimedOut), "{outcome:?}");
    }

    #[test]
    fn a_missing_program_is_not_started() {
        let outcome = run(&["/nonexistent/program"], b"", Duration::from_secs(1));
        assert!(
            matches!(&outcome, Outcome::NotStarted(e) if e.kind() == io::ErrorKind::NotFound),
            "{outcome:?}"
        );
    }
}
