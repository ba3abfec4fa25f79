//! `command`: runs an external command with the live addresses of one group on its stdin,
//! once when the group becomes ready and again after each change of its membership, as the
//! Go rgap's output of that name did (a shell-free argv, output lines to the log, timeout,
//! retries, wait delay).
//!
//! The delivery thread only compares member sets and hands the newest list to a runner
//! thread of the plugin's own; while a run is in progress at most one more list waits, and
//! a newer list replaces it. [`run`] runs one attempt within its limits; [`reaper`] reaps
//! the background processes commands leave behind once they exit; [`escape`] keeps their
//! output from steering the operator's terminal.

mod escape;
mod reaper;
mod run;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rgap_plugin_api::duration::GoDuration;
use rgap_plugin_api::{export_output, BoxError, Counter, GroupSnapshot, HostHandle, OutputPlugin};
use serde::{Deserialize, Deserializer};

use run::{Attempt, Environment, Outcome, STOP_GRACE};

/// `spec:` of a `command` output (the Go rgap's keys).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    /// The group whose addresses the command receives.
    group: u64,
    /// Program and arguments, run directly (no shell).
    #[serde(default, deserialize_with = "null_as_empty")]
    command: Vec<String>,
    /// Limit for one attempt; the whole process group is killed past it.
    timeout: GoDuration,
    /// Attempts in all (as in Go, anything below 1 means 1).
    #[serde(default = "default_retries")]
    retries: i64,
    /// How long to keep reading output after the process exits (0: until the timeout).
    #[serde(default = "default_wait_delay")]
    wait_delay: GoDuration,
    /// Start the command with an empty environment instead of the listener's.
    #[serde(default)]
    env_clear: bool,
    /// Variables to set for the command (on top of the listener's, or of none).
    #[serde(default, deserialize_with = "null_as_empty_map")]
    env: BTreeMap<String, String>,
}

fn default_retries() -> i64 {
    1
}

fn default_wait_delay() -> GoDuration {
    GoDuration(Duration::from_millis(100))
}

/// `command:` with no value reads as an empty list, so that it gets the same clear error.
fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// `env:` with no value sets nothing.
fn null_as_empty_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Checks `env` for what `execve` cannot pass on: a name that is empty or holds `=` or NUL,
/// a value that holds NUL.
fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!(
                "spec.env: {name:?} cannot be a variable name (it must not be empty or contain \
                 '=' or NUL)"
            ));
        }
        if value.contains('\0') {
            return Err(format!("spec.env.{name}: the value must not contain NUL"));
        }
    }
    Ok(())
}

/// The command and its limits, as the runner thread uses them.
struct Job {
    argv: Vec<String>,
    env: Environment,
    timeout: Duration,
    wait_delay: Duration,
    attempts: u32,
    runs: Runs,
}

/// `runs_total{result}`, exposed as `rgap_plugin_command_runs_total`: every attempt, by
/// how it ended.
struct Runs {
    ok: Counter,
    failed: Counter,
    timeout: Counter,
}

impl Runs {
    fn register(host: &HostHandle) -> Runs {
        let runs = host.counter("runs_total", "Command runs by result", &["result"]);
        Runs {
            ok: runs.with_labels(&["ok"]),
            failed: runs.with_labels(&["failed"]),
            timeout: runs.with_labels(&["timeout"]),
        }
    }
}

/// What the delivery thread and the runner share.
#[derive(Default)]
struct Shared {
    /// The member list waiting to be run with; a newer one replaces it.
    pending: Mutex<Option<Vec<IpAddr>>>,
    wake: Condvar,
    stopping: AtomicBool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Option<Vec<IpAddr>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

struct CommandOutput {
    group: u64,
    /// The group's membership revision at the last snapshot; unchanged means nothing to compare.
    revision: Option<u64>,
    /// The member set last handed to the runner; `None` until the group is first ready.
    handed: Option<Vec<IpAddr>>,
    warned_unknown_group: bool,
    shared: Arc<Shared>,
    runner: Option<JoinHandle<()>>,
}

impl OutputPlugin for CommandOutput {
    const KIND: &'static str = "command";
    const DESCRIPTION: &'static str =
        "Runs a command with the group's addresses on stdin after each membership change";
    // Snapshots only: events are answered without entering the plugin.
    const WANTS_EVENTS: bool = false;
    type Spec = CommandSpec;

    fn validate(spec: &CommandSpec, _host: &HostHandle) -> Result<(), BoxError> {
        check_spec(spec)
    }

    fn create(spec: CommandSpec, host: HostHandle) -> Result<Self, BoxError> {
        check_spec(&spec)?;
        if let Err(error) = reaper::start(&host) {
            tracing::warn!("{error}; processes that commands leave behind go to init instead");
        }
        let job = Job {
            argv: spec.command,
            env: Environment { clear: spec.env_clear, set: spec.env },
            timeout: spec.timeout.get(),
            wait_delay: spec.wait_delay.get(),
            attempts: spec.retries.clamp(1, i64::from(u32::MAX)) as u32,
            runs: Runs::register(&host),
        };
        let shared = Arc::new(Shared::default());
        let runner_shared = shared.clone();
        let runner = std::thread::Builder::new()
            .name("rgap command runner".into())
            .spawn(move || host.in_scope(|| run_loop(&job, &runner_shared)))?;
        Ok(CommandOutput {
            group: spec.group,
            revision: None,
            handed: None,
            warned_unknown_group: false,
            shared,
            runner: Some(runner),
        })
    }

    fn on_snapshot(&mut self, groups: &[GroupSnapshot<'_>]) -> Result<(), BoxError> {
        let Some(group) = groups.iter().find(|group| group.id == self.group) else {
            if !self.warned_unknown_group {
                tracing::warn!(
                    "group {} is not configured in the listener: the command will never run",
                    self.group
                );
                self.warned_unknown_group = true;
            }
            return Ok(());
        };
        // The membership revision moves only on joins and leaves: refreshes cost nothing here.
        if !group.ready || self.revision == Some(group.membership_revision) {
            return Ok(());
        }
        self.revision = Some(group.membership_revision);
        // A leave and a join between two snapshots can leave the set as it was: no change.
        let mut addresses: Vec<IpAddr> = group.members().iter().map(|m| m.ip()).collect();
        addresses.sort_unstable();
        addresses.dedup();
        if self.handed.as_ref() == Some(&addresses) {
            return Ok(());
        }
        self.handed = Some(addresses.clone());
        *self.shared.pending() = Some(addresses);
        self.shared.wake.notify_one();
        Ok(())
    }

    fn stop(&mut self) -> Result<(), BoxError> {
        let Some(runner) = self.runner.take() else { return Ok(()) };
        {
            // Set under the lock so the runner cannot miss the wake-up.
            let _pending = self.shared.pending();
            self.shared.stopping.store(true, Ordering::Relaxed);
        }
        self.shared.wake.notify_one();
        runner.join().map_err(|_| "the command runner thread panicked")?;
        Ok(())
    }
}

impl Drop for CommandOutput {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The runner thread: runs each list handed over, until stopped.
fn run_loop(job: &Job, shared: &Shared) {
    loop {
        let addresses = {
            let mut pending = shared.pending();
            loop {
                if shared.is_stopping() {
                    if let Some(skipped) = pending.take() {
                        tracing::info!(
                            "stopping: not running the command for the last change ({} \
                             address(es))",
                            skipped.len()
                        );
                    }
                    return;
                }
                if let Some(addresses) = pending.take() {
                    break addresses;
                }
                pending = shared.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
        };
        job.run(&addresses, shared);
    }
}

impl Job {
    /// Runs the command with `addresses`, retrying a failure up to `attempts` in all.
    fn run(&self, addresses: &[IpAddr], shared: &Shared) {
        let input: String = addresses.iter().map(|address| format!("{address}\n")).collect();
        let program = &self.argv[0];
        for attempt in 1..=self.attempts {
            let of = if self.attempts > 1 {
                format!(" (attempt {attempt} of {})", self.attempts)
            } else {
                String::new()
            };
            tracing::info!("running {program} with {} address(es){of}", addresses.len());
            let outcome = Attempt {
                argv: &self.argv,
                env: &self.env,
                input: input.as_bytes(),
                timeout: self.timeout,
                wait_delay: self.wait_delay,
                stop: &shared.stopping,
            }
            .run();
            match outcome {
                Outcome::Exited(status) if status.success() => {
                    self.runs.ok.inc();
                    tracing::info!("{program} succeeded{of}");
                    return;
                }
                Outcome::Exited(status) => {
                    self.runs.failed.inc();
                    tracing::warn!("{program} failed{of}: {status}");
                }
                Outcome::TimedOut => {
                    self.runs.timeout.inc();
                    tracing::warn!(
                        "{program} timed out after {}{of}; killed its process group",
                        GoDuration(self.timeout)
                    );
                }
                Outcome::Interrupted => {
                    tracing::warn!(
                        "{program} still running {} after the listener began to stop; killed \
                         its process group",
                        GoDuration(STOP_GRACE)
                    );
                    return;
                }
                Outcome::NotStarted(error) => {
                    self.runs.failed.inc();
                    // Not retried: a missing or non-executable file stays so for now.
                    let hint =
                        if error.kind() != std::io::ErrorKind::NotFound || program.contains('/') {
                            ""
                        } else if self.env.clear && !self.env.set.contains_key("PATH") {
                            // The lookup then uses the C library's default path, not ours.
                            " (not found in /bin:/usr/bin: env_clear leaves no PATH; give an \
                         absolute path or set env.PATH)"
                        } else {
                            " (not found in PATH)"
                        };
                    tracing::error!("cannot run {program}: {error}{hint}");
                    return;
                }
            }
            if shared.is_stopping() {
                return;
            }
            if attempt < self.attempts && shared.pending().is_some() {
                tracing::info!("not retrying: the membership changed again; running for that");
                return;
            }
        }
        tracing::error!(
            "{program} failed {} time(s); it runs again at the next membership change",
            self.attempts
        );
    }
}

/// Every check of a spec that touches nothing.
fn check_spec(spec: &CommandSpec) -> Result<(), BoxError> {
    match spec.command.first() {
        None => {
            return Err("spec.command: must name the program to run, then its arguments \
                        (a list, e.g. [\"/usr/local/bin/sync\", \"--group\", \"1000\"])"
                .into())
        }
        Some(program) if program.is_empty() => {
            return Err("spec.command[0]: the program must not be empty".into())
        }
        Some(_) => {}
    }
    if spec.timeout.get().is_zero() {
        return Err("spec.timeout: must be greater than 0 (e.g. 5s)".into());
    }
    check_env(&spec.env)?;
    Ok(())
}

export_output!(CommandOutput);

#[cfg(test)]
mod tests {
    use super::*;
    use rgap_plugin_api::decode_spec;

    #[test]
    fn defaults_are_the_go_ones() {
        let spec: CommandSpec =
            decode_spec("group: 1000\ncommand: [/bin/true]\ntimeout: 5s\n").unwrap();
        assert_eq!(spec.retries, 1);
        assert_eq!(spec.wait_delay.get(), Duration::from_millis(100));
        let error = decode_spec::<CommandSpec>("group: 1\ncommand: [x]\n").unwrap_err().to_string();
        assert!(error.contains("missing field `timeout`"), "{error}");
        let error = decode_spec::<CommandSpec>("group: 1\ncommand: [x]\ntimeout: 1s\nretry: 2\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("spec.retry: unknown field `retry`"), "{error}");
    }

    #[test]
    fn env_keys_are_optional_and_checked() {
        let spec: CommandSpec = decode_spec(
            "group: 1\ncommand: [x]\ntimeout: 1s\nenv_clear: true\nenv:\n  LANG: C.UTF-8\n  \
             EMPTY: ''\n",
        )
        .unwrap();
        assert!(spec.env_clear);
        assert_eq!(spec.env.get("LANG").map(String::as_str), Some("C.UTF-8"));
        assert!(check_env(&spec.env).is_ok());
        let spec: CommandSpec = decode_spec("group: 1\ncommand: [x]\ntimeout: 1s\nenv:\n").unwrap();
        assert!(!spec.env_clear && spec.env.is_empty());

        let env = |name: &str, value: &str| BTreeMap::from([(name.into(), value.into())]);
        let error = check_env(&env("A=B", "x")).unwrap_err();
        assert!(error.starts_with("spec.env: \"A=B\" cannot be a variable name"), "{error}");
        assert!(check_env(&env("", "x")).is_err());
        let error = check_env(&env("A", "x\0y")).unwrap_err();
        assert_eq!(error, "spec.env.A: the value must not contain NUL");
    }
}
