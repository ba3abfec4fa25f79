//! The worker thread: it alone renders, checks, installs and reloads, so the host's delivery
//! thread never waits for the disk or a command.
//!
//! The delivery thread submits the groups after each membership change; the newest replaces
//! any not yet rendered. A change is rendered once quiet for `wait.min`, or `wait.max` after
//! the first change still pending ([`Quiescence`]), and no sooner than rendering's cost
//! allows (a CPU pacer, as the hostsfile output has). Then: the text is compared with the
//! destination (equal: nothing to do), written as a candidate, checked, installed, and the
//! consumer reloaded. Any failure leaves the destination as it was, says why at ERROR, and
//! is tried again at the next change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rgap_plugin_api::HostHandle;
use rgap_plugin_kit::pacing::{thread_cpu_time, CostPacer};

use crate::install::Candidate;
use crate::render::GroupCopy;
use crate::run::{self, Finished};
use crate::spec::{Validated, Wait, FILE_PLACEHOLDER};

/// After a render that cost `t` of CPU the next waits `t × 100 × (1 + t / 1 ms)`, at most
/// 1 s: a small file follows changes within milliseconds, one listing 100 000 members is
/// not re-rendered dozens of times a second while a fleet starts (see `CostPacer`).
const RENDER_COST_FACTOR: u32 = 100;
const RENDER_COST_KNEE: Duration = Duration::from_millis(1);
const MAX_RENDER_PAUSE: Duration = Duration::from_secs(1);

/// When a pending change is due, given `wait`.
#[derive(Debug, Clone)]
pub(crate) struct Quiescence {
    wait: Option<Wait>,
    /// The first and the last change not yet rendered.
    pending: Option<(Instant, Instant)>,
}

impl Quiescence {
    pub fn new(wait: Option<Wait>) -> Quiescence {
        Quiescence { wait, pending: None }
    }

    pub fn changed(&mut self, now: Instant) {
        let first = self.pending.map_or(now, |(first, _)| first);
        self.pending = Some((first, now));
    }

    /// When to render what is pending; `None` when nothing is.
    pub fn due_at(&self) -> Option<Instant> {
        let (first, last) = self.pending?;
        Some(match self.wait {
            None => first,
            Some(wait) => (last + wait.min).min(first + wait.max),
        })
    }

    pub fn rendered(&mut self) {
        self.pending = None;
    }
}

/// What the delivery thread and the worker share.
struct State {
    /// The groups to render next.
    groups: Option<Vec<GroupCopy>>,
    quiescence: Quiescence,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Set at stop, for a command that is running to be cut short.
    stopping: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the worker thread.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread that keeps the destination rendered, logging as this instance.
    pub fn spawn(job: Validated, host: HostHandle) -> std::io::Result<Worker> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                groups: None,
                quiescence: Quiescence::new(job.wait),
                stopping: false,
            }),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rgap template worker".into())
            .spawn(move || host.in_scope(|| work_loop(&job, &thread_shared)))?;
        Ok(Worker { shared, thread: Some(thread) })
    }

    /// Hands over the groups after a membership change; replaces any not yet rendered.
    pub fn submit(&self, groups: Vec<GroupCopy>) {
        let mut state = self.shared.lock();
        state.groups = Some(groups);
        state.quiescence.changed(Instant::now());
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Ends the thread: a running command gets a short grace, a pending change is dropped.
    pub fn stop(&mut self) -> Result<(), &'static str> {
        self.shared.lock().stopping = true;
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| "the template worker thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn work_loop(job: &Validated, shared: &Shared) {
    let mut pacer =
        CostPacer::new(RENDER_COST_FACTOR, MAX_RENDER_PAUSE).with_knee(RENDER_COST_KNEE);
    loop {
        let groups = {
            let mut state = shared.lock();
            loop {
                if state.stopping {
                    if state.quiescence.due_at().is_some() {
                        tracing::info!(
                            "stopping: not rendering the last change for {}",
                            job.destination.display()
                        );
                    }
                    return;
                }
                let Some(due) = state.quiescence.due_at() else {
                    state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                    continue;
                };
                let due = due.max(pacer.next_at());
                let now = Instant::now();
                if now >= due {
                    state.quiescence.rendered();
                    break state.groups.clone().unwrap_or_default();
                }
                state =
                    shared.wake.wait_timeout(state, due - now).unwrap_or_else(|e| e.into_inner()).0;
            }
        };
        let started = thread_cpu_time();
        let rendered = job.template.render(&groups, SystemTime::now());
        pacer.record(thread_cpu_time().saturating_sub(started));
        match rendered {
            Ok(text) => update(job, &text, &shared.stopping),
            Err(error) => {
                let shown = job.destination.display();
                tracing::error!("cannot render {shown}: {error}; {shown} left as it is")
            }
        }
    }
}

/// Installs `text` as the destination if it differs, checked before and reloaded after.
fn update(job: &Validated, text: &str, stop: &AtomicBool) {
    let destination = &job.destination;
    let shown = destination.display();
    if std::fs::read(destination).is_ok_and(|current| current == text.as_bytes()) {
        tracing::debug!("{shown} is up to date");
        return;
    }
    let candidate = match Candidate::write(destination, text.as_bytes(), job.mode) {
        Ok(candidate) => candidate,
        Err(error) => {
            tracing::error!("cannot update {shown}: {error}; retrying at the next change");
            return;
        }
    };
    if let Some(argv) = &job.check_command {
        let argv: Vec<String> = argv
            .iter()
            .map(|arg| arg.replace(FILE_PLACEHOLDER, &candidate.path().to_string_lossy()))
            .collect();
        let done = run_logged("check_command", &argv, job.command_timeout, stop);
        if !done.succeeded() {
            // Removed before saying so, so that whoever reads the log finds it gone.
            drop(candidate);
            tracing::error!(
                "check_command {} rejected the new {shown} ({}); {shown} left as it is, \
                 retrying at the next change; {}",
                argv[0],
                done.failure(job.command_timeout),
                done.stderr_line()
            );
            return;
        }
    }
    if let Err(error) = candidate.install(destination) {
        tracing::error!("cannot update {shown}: {error}; retrying at the next change");
        return;
    }
    tracing::info!("wrote {shown} ({} bytes)", text.len());
    if let Some(argv) = &job.reload_command {
        let done = run_logged("reload_command", argv, job.command_timeout, stop);
        if done.succeeded() {
            tracing::info!("reload_command {} succeeded", argv[0]);
        } else {
            tracing::error!(
                "reload_command {} failed ({}) after {shown} was replaced; {}",
                argv[0],
                done.failure(job.command_timeout),
                done.stderr_line()
            );
        }
    }
}

/// Runs a command; its output goes to the debug log (a failure is reported by the caller).
fn run_logged(key: &str, argv: &[String], timeout: Duration, stop: &AtomicBool) -> Finished {
    tracing::debug!("running {key}: {argv:?}");
    let done = run::run(argv, timeout, stop);
    for (stream, text) in [("stdout", &done.stdout), ("stderr", &done.stderr)] {
        for line in text.lines() {
            tracing::debug!("{key} {stream}: {line}");
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    const MS: Duration = Duration::from_millis(1);

    /// Candidate files left in `dir`.
    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn without_wait_a_change_is_due_at_once() {
        let mut quiet = Quiescence::new(None);
        assert_eq!(quiet.due_at(), None);
        let t0 = Instant::now();
        quiet.changed(t0);
        quiet.changed(t0 + 5 * MS);
        assert_eq!(quiet.due_at(), Some(t0));
        quiet.rendered();
        assert_eq!(quiet.due_at(), None);
    }

    #[test]
    fn with_wait_a_change_is_due_when_quiet_for_min_or_max_after_the_first() {
        let mut quiet = Quiescence::new(Some(Wait { min: 200 * MS, max: 1000 * MS }));
        let t0 = Instant::now();
        quiet.changed(t0);
        assert_eq!(quiet.due_at(), Some(t0 + 200 * MS));
        // Each change within `min` pushes it back...
        quiet.changed(t0 + 150 * MS);
        assert_eq!(quiet.due_at(), Some(t0 + 350 * MS));
        // ...but never past `max` after the first.
        quiet.changed(t0 + 900 * MS);
        assert_eq!(quiet.due_at(), Some(t0 + 1000 * MS));
        quiet.rendered();
        quiet.changed(t0 + 2000 * MS);
        assert_eq!(quiet.due_at(), Some(t0 + 2200 * MS));
    }

    fn job(dir: &Path, check: Option<&str>, reload: Option<&str>) -> Validated {
        let sh = |script: &str| {
            vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned(), "{file}".to_owned()]
        };
        std::fs::write(dir.join("t.j2"), "x").unwrap();
        let template = crate::render::Template::compile(&dir.join("t.j2"), "x".to_owned()).unwrap();
        Validated {
            destination: dir.join("out"),
            template,
            groups: None,
            wait: None,
            check_command: check.map(sh),
            reload_command: reload.map(sh),
            command_timeout: Duration::from_secs(30),
            mode: None,
        }
    }

    #[test]
    fn a_rejected_candidate_leaves_the_destination_and_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let reloads = dir.path().join("reloads");
        let reload = format!("echo >> '{}'", reloads.display());
        let job = job(dir.path(), Some("grep -q good \"$0\""), Some(&reload));
        std::fs::write(&job.destination, "old\n").unwrap();
        let stop = AtomicBool::new(false);
        update(&job, "bad\n", &stop);
        assert_eq!(std::fs::read_to_string(&job.destination).unwrap(), "old\n");
        assert!(!reloads.exists(), "reloaded after a rejected check");
        update(&job, "good\n", &stop);
        assert_eq!(std::fs::read_to_string(&job.destination).unwrap(), "good\n");
        // The same text again: no write, no reload.
        update(&job, "good\n", &stop);
        assert_eq!(std::fs::read_to_string(&reloads).unwrap(), "\n");
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    }
}
