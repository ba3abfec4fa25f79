//! `log`: every `interval`, writes the state of every group to the listener's log: READY or
//! NOT READY, the member count, and each address with its expiry time.
//!
//! The delivery thread only keeps the latest snapshot's member lists (shared with the
//! listener, not copied); a timer thread of the plugin's own writes the dump.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rgap_plugin_api::duration::GoDuration;
use rgap_plugin_api::{
    export_output, BoxError, GroupSnapshot, HostHandle, MemberList, OutputPlugin,
};
use serde::Deserialize;

/// `spec:` of a `log` output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSpec {
    /// Time between dumps.
    #[serde(default = "default_interval")]
    interval: GoDuration,
}

fn default_interval() -> GoDuration {
    GoDuration(Duration::from_secs(60))
}

/// One group as last seen.
struct GroupCopy {
    id: u64,
    ready: bool,
    revision: u64,
    members: MemberList,
}

#[derive(Default)]
struct Shared {
    groups: Vec<GroupCopy>,
    stopping: bool,
}

struct LogOutput {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    timer: Option<JoinHandle<()>>,
}

impl OutputPlugin for LogOutput {
    const KIND: &'static str = "log";
    const DESCRIPTION: &'static str = "Dumps every group's members to the log every interval";
    // Snapshots only: events are answered without entering the plugin.
    const WANTS_EVENTS: bool = false;
    type Spec = LogSpec;

    fn validate(spec: &LogSpec, _host: &HostHandle) -> Result<(), BoxError> {
        if spec.interval.get().is_zero() {
            return Err("spec.interval: must be greater than 0".into());
        }
        Ok(())
    }

    fn create(spec: LogSpec, host: HostHandle) -> Result<Self, BoxError> {
        Self::validate(&spec, &host)?;
        let interval = spec.interval.get();
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let timer_shared = shared.clone();
        let timer = std::thread::Builder::new()
            .name("rgap log output".into())
            .spawn(move || host.in_scope(|| dump_every(interval, &timer_shared)))?;
        Ok(LogOutput { shared, timer: Some(timer) })
    }

    fn on_snapshot(&mut self, groups: &[GroupSnapshot<'_>]) -> Result<(), BoxError> {
        let mut shared = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        // Groups come in config order every time, so the copy to reuse is at the same
        // position: no lookup, and only groups whose revision moved are copied again, in
        // place (a new list of 10 000 groups at each change would be 400 KB to map).
        let copy_of = |group: &GroupSnapshot<'_>| GroupCopy {
            id: group.id,
            ready: group.ready,
            revision: group.revision,
            members: group.share_members(),
        };
        if shared.groups.len() == groups.len() {
            for (copy, group) in shared.groups.iter_mut().zip(groups) {
                if copy.id != group.id || copy.revision != group.revision {
                    *copy = copy_of(group);
                }
            }
        } else {
            shared.groups = groups.iter().map(copy_of).collect();
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), BoxError> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).stopping = true;
        self.shared.1.notify_all();
        if let Some(timer) = self.timer.take() {
            timer.join().map_err(|_| "the log timer thread panicked")?;
        }
        Ok(())
    }
}

impl Drop for LogOutput {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn dump_every(interval: Duration, shared: &(Mutex<Shared>, Condvar)) {
    let (lock, wake) = shared;
    let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let (next, timeout) = wake.wait_timeout(state, interval).unwrap_or_else(|e| e.into_inner());
        state = next;
        if state.stopping {
            return;
        }
        if timeout.timed_out() {
            dump(&state.groups);
        }
    }
}

fn dump(groups: &[GroupCopy]) {
    let now_us = unix_micros_now();
    for group in groups {
        let readiness = if group.ready { "READY" } else { "NOT READY" };
        tracing::info!("group {}: {readiness}, {} member(s)", group.id, group.members.len());
        for member in group.members.iter() {
            let expires =
                UNIX_EPOCH + Duration::from_micros(member.expires_at_unix_us.max(0) as u64);
            let left = Duration::from_micros((member.expires_at_unix_us - now_us).max(0) as u64);
            tracing::info!(
                "group {}: member {} expires at {} (in {:.1}s)",
                group.id,
                member.ip(),
                humantime::format_rfc3339_millis(expires),
                left.as_secs_f64()
            );
        }
    }
}

fn unix_micros_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

export_output!(LogOutput);
