//! The agent: announces "this address is in this group" to every destination, once or every
//! interval.
//!
//! Each destination gets its own UDP socket, opened on first use and re-tried on the next round
//! if opening fails, so one broken destination (a missing interface, an unsupported address
//! family) is logged and skipped while the others keep receiving.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, Socket, Type};

use crate::addrspec::{AddrSpec, AddrSpecError};
use crate::duration;
use crate::protocol::{self, Announcement, ANNOUNCEMENT_LEN};
use crate::psk::Psk;

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
    #[error("announcement not delivered to any of {count} destination(s); see warnings above")]
    NothingSent {
        /// How many destinations were tried.
        count: usize,
    },
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
        let datagram = self.sign_now();
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
        tracing::debug!(sent = report.sent, failed = report.failed, "announcement round");
        report
    }

    fn sign_now(&self) -> [u8; ANNOUNCEMENT_LEN] {
        let announcement = Announcement {
            group: self.group,
            timestamp_unix_us: protocol::unix_micros(SystemTime::now()),
            address: self.address,
        };
        protocol::encode_signed(&announcement, &self.psk)
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

/// Runs the agent: one round and return, or rounds every interval until the process is
/// stopped (SIGINT/SIGTERM end it; there is nothing to clean up).
pub fn run(opts: AgentOptions) -> Result<(), AgentError> {
    if opts.destinations.is_empty() {
        return Err(AgentError::NoDestinations);
    }
    if opts.interval == Some(Duration::ZERO) {
        return Err(AgentError::ZeroInterval);
    }
    let count = opts.destinations.len();
    let interval = opts.interval;
    log_start(&opts);
    let mut agent = Agent::new(opts.group, opts.address, opts.psk, opts.destinations);
    match interval {
        None => match agent.send_round() {
            RoundReport { sent: 0, .. } => Err(AgentError::NothingSent { count }),
            _ => Ok(()),
        },
        Some(interval) => run_forever(&mut agent, interval),
    }
}

fn log_start(opts: &AgentOptions) {
    let destinations: Vec<String> = opts.destinations.iter().map(ToString::to_string).collect();
    let every = opts
        .interval
        .map_or_else(|| "once".to_string(), |i| format!("every {}", duration::format(i)));
    tracing::info!(
        group = opts.group,
        address = %opts.address,
        destinations = %destinations.join(", "),
        "announcing {every}"
    );
}

/// Sends on a fixed schedule (start + n × interval) so that slow sends do not make the
/// announcements drift later and later.
fn run_forever(agent: &mut Agent, interval: Duration) -> ! {
    let mut next = Instant::now();
    loop {
        agent.send_round();
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Fell behind (suspend, very slow sends): restart the schedule instead of bursting.
            next = now;
        }
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
        };
        let err = run(opts).unwrap_err();
        assert!(matches!(err, AgentError::NothingSent { count: 1 }), "{err}");
    }

    #[test]
    fn rejects_empty_destinations_and_zero_interval() {
        let mut opts = AgentOptions {
            group: 1,
            address: "10.0.0.1".parse().unwrap(),
            psk: psk(),
            interval: Some(Duration::ZERO),
            destinations: vec![],
        };
        assert!(matches!(run(opts.clone()), Err(AgentError::NoDestinations)));
        opts.destinations.push(AddrSpec::parse("127.0.0.1:9").unwrap());
        assert!(matches!(run(opts), Err(AgentError::ZeroInterval)));
    }
}
