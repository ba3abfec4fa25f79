//! systemd's notify protocol (`Type=notify` units): `READY=1` once every source is bound and
//! every output started, `RELOADING=1` with `MONOTONIC_USEC=` while a reload runs and
//! `READY=1` after it, `STOPPING=1` at shutdown, a one-line `STATUS=`, and `WATCHDOG=1` every
//! half of `WATCHDOG_USEC` when the unit has a watchdog. Without `NOTIFY_SOCKET` (not run by
//! systemd) every call does nothing. A failure to notify is logged once at debug level and
//! never stops the listener.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends `states` to systemd if it is listening.
fn send(states: &[NotifyState<'_>]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(error) = sd_notify::notify(states) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::debug!("cannot notify systemd: {error}");
        }
    }
}

/// The listener is up: sources bound, outputs started.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts now.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// A new status line.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The watchdog interval systemd asked for, if any (`WatchdogSec=` in the unit).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog every half of its interval, and refreshes the status line from
/// `status` every `status_every`, until `stop` is dropped or sent to.
pub fn spawn_heartbeat(
    status_every: Duration,
    status: impl Fn() -> String + Send + 'static,
    stop: crossbeam_channel::Receiver<()>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Ok(None);
    }
    let watchdog = watchdog_interval().map(|interval| interval / 2);
    let tick = watchdog.map_or(status_every, |half| half.min(status_every));
    let thread = std::thread::Builder::new().name("systemd notify".into()).spawn(move || {
        let mut since_status = Duration::ZERO;
        loop {
            match stop.recv_timeout(tick) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            if watchdog.is_some() {
                send(&[NotifyState::Watchdog]);
            }
            since_status += tick;
            if since_status >= status_every {
                since_status = Duration::ZERO;
                self::status(&status());
            }
        }
    })?;
    Ok(Some(thread))
}
