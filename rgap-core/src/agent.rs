//! The agent: announces "this address is in this group" to every destination, once or every
//! interval, optionally only while a health check passes; and says "this address has left"
//! with a signed leave when it turns unhealthy, when it is stopped, or on request.
//!
//! Each destination gets its own UDP socket, opened on first use and re-tried on the next round
//! if opening fails, so one broken destination (a missing interface, an unsupported address
//! family) is logged and skipped while the others keep receiving.

mod health;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use signal_hook::consts::{SIGINT, SIGTERM};
use socket2::{Domain, Protocol, Socket, Type};

use crate::addrspec::{AddrSpec, AddrSpecError};
use crate::duration;
use crate::protocol::{self, Announcement, Kind, ANNOUNCEMENT_LEN};
use crate::psk::Psk;

pub use health::{CheckResult, Health, HealthCheck, Transition};

/// Where the Go rgap sends by default.
pub const DEFAULT_DESTINATION: &str = "239.82.71.65:8271";

/// What to announce, where and how often.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Redundancy group.
    pub group: u64,
    /// The address this node offers to the group.
    pub address: IpAddr,
    /// Key that signs the announcements.
    pub psk: Psk,
    /// `None`: send once and return; otherwise repeat forever at this interval.
    pub interval: Option<Duration>,
    /// Where to send; each gets every announcement.
    pub destinations: Vec<AddrSpec>,
    /// Send one leave instead of an announcement, and return (no interval).
    pub leave: bool,
    /// Announce only while this check passes; it runs every interval (one is needed).
    pub check: Option<HealthCheck>,
    /// With an interval: send a leave when stopped by SIGTERM or SIGINT (while announcing).
    pub leave_on_signal: bool,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Nothing to send to.
    #[error("no destinations given")]
    NoDestinations,
    /// A zero interval would be a busy loop.
    #[error("interval must be greater than 0")]
    ZeroInterval,
    /// A one-shot run reached none of its destinations (each failure was logged).
    #[error("{what} not delivered to any of {count} destination(s); see warnings above")]
    NothingSent {
        /// "announcement" or "leave".
        what: &'static str,
        /// How many destinations were tried.
        count: usize,
    },
    /// A health check without an interval to run it at.
    #[error("--check needs --interval: the check runs every interval")]
    CheckNeedsInterval,
    /// `--leave` with an interval or a check.
    #[error("--leave sends one leave and exits: leave out --interval and --check")]
    LeaveIsOneShot,
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

/// Why one destination could not be served this round.
#[derive(Debug, thiserror::Error)]
enum DestinationError {
    #[error(transparent)]
    Interface(#[from] AddrSpecError),
    #[error("interface {0} has no IPv4 address to send multicast from")]
    NoIpv4OnInterface(String),
    #[error("cannot open socket: {0}")]
    Open(io::Error),
    #[error("cannot send: {0}")]
    Send(io::Error),
}

impl DestinationError {
    /// One log line naming the destination exactly once.
    fn describe(&self, spec: &AddrSpec) -> String {
        match self {
            // Interface lookup errors already start with the spec.
            DestinationError::Interface(e) => format!("cannot announce to {e}"),
            other => format!("cannot announce to {spec}: {other}"),
        }
    }
}

/// Outcome of one round of sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    /// Destinations that took the datagram.
    pub sent: usize,
    /// Destinations that failed (each logged at warn).
    pub failed: usize,
}

/// One destination and its socket, if opened.
struct Destination {
    spec: AddrSpec,
    socket: Option<UdpSocket>,
}

/// A configured agent; [`Agent::send_round`] sends one signed announcement everywhere.
pub struct Agent {
    group: u64,
    address: IpAddr,
    psk: Psk,
    destinations: Vec<Destination>,
}

impl Agent {
    /// Prepares the agent; sockets open on the first round.
    pub fn new(group: u64, address: IpAddr, psk: Psk, destinations: Vec<AddrSpec>) -> Self {
        let destinations =
            destinations.into_iter().map(|spec| Destination { spec, socket: None }).collect();
        Self { group, address, psk, destinations }
    }

    /// Signs a fresh announcement (timestamp = now) and sends it to every destination.
    pub fn send_round(&mut self) -> RoundReport {
        self.send(Kind::Announce)
    }

    /// Signs a leave (timestamp = now) and sends it to every destination.
    pub fn send_leave(&mut self) -> RoundReport {
        self.send(Kind::Leave)
    }

    fn send(&mut self, kind: Kind) -> RoundReport {
        let datagram = self.sign_now(kind);
        let mut report = RoundReport { sent: 0, failed: 0 };
        for destination in &mut self.destinations {
            match destination.send(&datagram) {
                Ok(()) => report.sent += 1,
                Err(error) => {
                    report.failed += 1;
                    tracing::warn!("{}", error.describe(&destination.spec));
                }
            }
        }
        tracing::debug!(sent = report.sent, failed = report.failed, ?kind, "round");
        report
    }

    fn sign_now(&self, kind: Kind) -> [u8; ANNOUNCEMENT_LEN] {
        let fields = Announcement {
            group: self.group,
            timestamp_unix_us: protocol::unix_micros(SystemTime::now()),
            address: self.address,
        };
        protocol::encode_signed_as(kind, &fields, &self.psk)
    }
}

impl Destination {
    fn send(&mut self, datagram: &[u8]) -> Result<(), DestinationError> {
        let socket = match &self.socket {
            Some(socket) => socket,
            None => self.socket.insert(open_socket(&self.spec)?),
        };
        match socket.send_to(datagram, self.spec.addr) {
            Ok(_) => Ok(()),
            Err(error) => {
                // Drop the socket so the next round starts afresh (e.g. after an interface
                // came back with a new index).
                self.socket = None;
                Err(DestinationError::Send(error))
            }
        }
    }
}

/// Opens a UDP socket of the destination's family, pointed at its interface if it has one.
fn open_socket(spec: &AddrSpec) -> Result<UdpSocket, DestinationError> {
    let addr = spec.addr;
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(DestinationError::Open)?;
    let interface = spec.resolve_interface()?;
    if addr.ip().is_multicast() {
        // Loop on so that a listener on the same host (tests, single-box setups) hears us;
        // the TTL stays at the OS default of 1, which keeps announcements on the local link.
        set_multicast_loop(&socket, addr).map_err(DestinationError::Open)?;
        if let Some(interface) = &interface {
            set_multicast_interface(&socket, addr, interface)?;
        }
    } else if let Some(interface) = &interface {
        // Unicast has no "send via" option; binding to the device is the equivalent.
        socket.bind_device(Some(interface.name.as_bytes())).map_err(DestinationError::Open)?;
    }
    Ok(socket.into())
}

fn set_multicast_loop(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    match addr {
        SocketAddr::V4(_) => socket.set_multicast_loop_v4(true),
        SocketAddr::V6(_) => socket.set_multicast_loop_v6(true),
    }
}

fn set_multicast_interface(
    socket: &Socket,
    addr: SocketAddr,
    interface: &crate::addrspec::Interface,
) -> Result<(), DestinationError> {
    match addr {
        // IPv4 names the outgoing interface by one of its addresses, IPv6 by its index.
        SocketAddr::V4(_) => {
            let ipv4 = interface
                .ipv4
                .ok_or_else(|| DestinationError::NoIpv4OnInterface(interface.name.clone()))?;
            socket.set_multicast_if_v4(&ipv4)
        }
        SocketAddr::V6(_) => socket.set_multicast_if_v6(interface.index),
    }
    .map_err(DestinationError::Open)
}

/// Runs the agent: one round and return, or rounds every interval until SIGINT or SIGTERM.
pub fn run(opts: AgentOptions) -> Result<(), AgentError> {
    if opts.destinations.is_empty() {
        return Err(AgentError::NoDestinations);
    }
    if opts.interval == Some(Duration::ZERO) {
        return Err(AgentError::ZeroInterval);
    }
    if opts.leave && (opts.interval.is_some() || opts.check.is_some()) {
        return Err(AgentError::LeaveIsOneShot);
    }
    if opts.check.is_some() && opts.interval.is_none() {
        return Err(AgentError::CheckNeedsInterval);
    }
    let count = opts.destinations.len();
    log_start(&opts);
    let mut agent = Agent::new(opts.group, opts.address, opts.psk, opts.destinations);
    match opts.interval {
        None => {
            let (report, what) = if opts.leave {
                (agent.send_leave(), "leave")
            } else {
                (agent.send_round(), "announcement")
            };
            match report {
                RoundReport { sent: 0, .. } => Err(AgentError::NothingSent { what, count }),
                _ => Ok(()),
            }
        }
        Some(interval) => {
            let stop = StopSignals::install().map_err(AgentError::Signals)?;
            run_every(&mut agent, interval, opts.check.as_ref(), &stop, opts.leave_on_signal);
            Ok(())
        }
    }
}

fn log_start(opts: &AgentOptions) {
    let destinations: Vec<String> = opts.destinations.iter().map(ToString::to_string).collect();
    let every = opts
        .interval
        .map_or_else(|| "once".to_string(), |i| format!("every {}", duration::format(i)));
    let what = match &opts.check {
        _ if opts.leave => "sending a leave".to_string(),
        None => format!("announcing {every}"),
        Some(check) => format!(
            "announcing {every} while the health check passes (rise {}, fall {}, timeout {}; starting unhealthy)",
            check.rise,
            check.fall,
            duration::format(check.timeout)
        ),
    };
    tracing::info!(
        group = opts.group,
        address = %opts.address,
        destinations = %destinations.join(", "),
        "{what}"
    );
}

/// SIGINT and SIGTERM, turned into messages so that the agent can wait for "the next round
/// or a signal, whichever comes first" and look at them while a check runs.
struct StopSignals {
    received: Receiver<i32>,
    seen: std::cell::Cell<Option<i32>>,
}

impl StopSignals {
    fn install() -> io::Result<StopSignals> {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let (sender, received) = crossbeam_channel::bounded(2);
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in signals.forever() {
                if sender.send(signal).is_err() {
                    return;
                }
            }
        })?;
        Ok(StopSignals { received, seen: std::cell::Cell::new(None) })
    }

    /// The signal received, if any, without waiting.
    fn poll(&self) -> Option<i32> {
        if self.seen.get().is_none() {
            self.seen.set(self.received.try_recv().ok());
        }
        self.seen.get()
    }

    /// Waits until `deadline` or a signal; returns the signal, if one came.
    fn wait_until(&self, deadline: Instant) -> Option<i32> {
        if let Some(signal) = self.poll() {
            return Some(signal);
        }
        self.seen.set(self.received.recv_deadline(deadline).ok());
        self.seen.get()
    }
}

/// Sends on a fixed schedule (start + n × interval) so that slow sends and checks do not make
/// the announcements drift later and later. With a check, each round first runs it and
/// announces only while healthy; turning unhealthy sends a leave at once, so listeners drop
/// the address within the round instead of after `expire`. Returns on SIGINT or SIGTERM,
/// after sending a leave if asked to and announcing.
fn run_every(
    agent: &mut Agent,
    interval: Duration,
    check: Option<&HealthCheck>,
    stop: &StopSignals,
    leave_on_signal: bool,
) {
    let mut health = check.map(|check| Health::new(check.rise, check.fall));
    let mut next = Instant::now();
    let signal = loop {
        if let (Some(check), Some(health)) = (check, &mut health) {
            let (result, transition) = health.check(check, || stop.poll().is_some());
            tracing::debug!("health check: {result}");
            match transition {
                Some(Transition::BecameHealthy) => tracing::info!(
                    "health check passed {} time(s) in a row: healthy, announcing",
                    check.rise
                ),
                Some(Transition::BecameUnhealthy) => {
                    tracing::info!(
                        "health check failed {} time(s) in a row (last: {result}): unhealthy, sending a leave",
                        check.fall
                    );
                    agent.send_leave();
                }
                None => {}
            }
        }
        let healthy = health.as_ref().is_none_or(Health::is_healthy);
        if healthy && stop.poll().is_none() {
            agent.send_round();
        }
        next += interval;
        let now = Instant::now();
        if next <= now {
            // Fell behind (suspend, very slow sends): restart the schedule instead of bursting.
            next = now;
        }
        if let Some(signal) = stop.wait_until(next) {
            break signal;
        }
    };
    let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
    let announcing = health.as_ref().is_none_or(Health::is_healthy);
    if !leave_on_signal {
        tracing::info!("received {name}; exiting without a leave (--no-leave)");
    } else if !announcing {
        tracing::info!("received {name}; exiting (not announcing, so no leave to send)");
    } else {
        let report = agent.send_leave();
        tracing::info!("received {name}; sent a leave to {} destination(s)", report.sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Verifier;

    fn receiver() -> (UdpSocket, AddrSpec) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let spec = AddrSpec::parse(&socket.local_addr().unwrap().to_string()).unwrap();
        (socket, spec)
    }

    fn psk() -> Psk {
        Psk::from_bytes([9; 32])
    }

    #[test]
    fn a_round_sends_a_fresh_signed_announcement() {
        let (socket, spec) = receiver();
        let mut agent = Agent::new(5, "10.9.8.7".parse().unwrap(), psk(), vec![spec]);
        let before = protocol::unix_micros(SystemTime::now());
        assert_eq!(agent.send_round(), RoundReport { sent: 1, failed: 0 });
        let mut buf = [0u8; 128];
        let len = socket.recv(&mut buf).unwrap();
        let got = Verifier::new(&psk()).verify_and_decode(&buf[..len]).unwrap();
        assert_eq!(got.group, 5);
        assert_eq!(got.address, "10.9.8.7".parse::<IpAddr>().unwrap());
        assert!(got.timestamp_unix_us >= before);
    }

    #[test]
    fn a_broken_destination_does_not_stop_the_others() {
        let (socket, good) = receiver();
        let bad = AddrSpec::parse("239.1.2.3:9@nosuch0").unwrap();
        let mut agent = Agent::new(5, "10.9.8.7".parse().unwrap(), psk(), vec![bad, good]);
        assert_eq!(agent.send_round(), RoundReport { sent: 1, failed: 1 });
        let mut buf = [0u8; 128];
        assert_eq!(socket.recv(&mut buf).unwrap(), ANNOUNCEMENT_LEN);
    }

    #[test]
    fn one_shot_fails_when_nothing_was_delivered() {
        let opts = AgentOptions {
            group: 1,
            address: "10.0.0.1".parse().unwrap(),
            psk: psk(),
            interval: None,
            destinations: vec![AddrSpec::parse("239.1.2.3:9@nosuch0").unwrap()],
            leave: false,
            check: None,
            leave_on_signal: true,
        };
        let err = run(opts).unwrap_err();
        assert!(matches!(err, AgentError::NothingSent { count: 1, .. }), "{err}");
    }

    #[test]
    fn rejects_empty_destinations_and_zero_interval() {
        let mut opts = AgentOptions {
            group: 1,
            address: "10.0.0.1".parse().unwrap(),
            psk: psk(),
            interval: Some(Duration::ZERO),
            destinations: vec![],
            leave: false,
            check: None,
            leave_on_signal: true,
        };
        assert!(matches!(run(opts.clone()), Err(AgentError::NoDestinations)));
        opts.destinations.push(AddrSpec::parse("127.0.0.1:9").unwrap());
        assert!(matches!(run(opts), Err(AgentError::ZeroInterval)));
    }

    #[test]
    fn a_leave_round_sends_a_signed_leave() {
        let (socket, spec) = receiver();
        let mut agent = Agent::new(5, "10.9.8.7".parse().unwrap(), psk(), vec![spec]);
        assert_eq!(agent.send_leave(), RoundReport { sent: 1, failed: 0 });
        let mut buf = [0u8; 128];
        let len = socket.recv(&mut buf).unwrap();
        let got = Verifier::new(&psk()).verify_and_decode_leave(&buf[..len]).unwrap();
        assert_eq!((got.group, got.address), (5, "10.9.8.7".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn a_check_needs_an_interval_and_a_leave_is_one_shot() {
        let check = HealthCheck {
            command: "true".into(),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
        };
        let opts = AgentOptions {
            group: 1,
            address: "10.0.0.1".parse().unwrap(),
            psk: psk(),
            interval: None,
            destinations: vec![AddrSpec::parse("127.0.0.1:9").unwrap()],
            leave: false,
            check: Some(check.clone()),
            leave_on_signal: true,
        };
        assert!(matches!(run(opts.clone()), Err(AgentError::CheckNeedsInterval)));
        let leave_with_interval = AgentOptions {
            leave: true,
            check: None,
            interval: Some(Duration::from_secs(1)),
            ..opts
        };
        assert!(matches!(run(leave_with_interval), Err(AgentError::LeaveIsOneShot)));
    }
}
