//! The sockets: UDP and TCP bound on `bind_address` at create (so that a busy port is an
//! error at start). Each UDP socket is served by a thread of its own; TCP by one thread
//! running the plugin's own current-thread tokio runtime (a cdylib cannot use the host's).
//!
//! UDP is a plain loop with no task per query and no event loop: block reading a batch of
//! datagrams, answer each from the published view (unless response rate limiting,
//! [`crate::limit`], drops or truncates it), send the batch of responses (see
//! [`crate::batch`]), and under load pause a moment so that the next read takes more at once
//! ([`COALESCE`]). Not registering the socket with epoll saves a wake-up callback for every
//! datagram sent (the kernel signals room to write after each) and a system call per
//! batch. TCP, which cannot be
//! spoofed, is not rate limited; it keeps at most [`MAX_TCP_CONNECTIONS`] connections (a new one
//! closes the oldest), each with its own task that reads length-prefixed queries one after
//! the other; a connection that stays silent, or sends half a message, for
//! [`TCP_IDLE_TIMEOUT`] is closed.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rgap_plugin_api::HostHandle;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::answer::{Responder, Transport};
use crate::batch::{Batch, BATCH};
use crate::limit::{RateLimiter, Verdict};
use crate::metrics::Limited;
use crate::spec::{BindTarget, RateLimit};

/// TCP connections served at once; a new one beyond this closes the oldest.
pub const MAX_TCP_CONNECTIONS: usize = 512;
/// How long a TCP connection may wait between queries, or take to send one, or to read one
/// response, before it is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The socket receive buffer asked for, so that bursts are not dropped by the kernel.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;
/// After a read that found more than one query waiting ([`COALESCE_FROM`] or more) but did
/// not fill a batch, the UDP loop pauses this long before reading again, so that the next
/// read takes many queries in one system call and their responses wake each client once per
/// batch rather than once per query: interrupt coalescing, in effect. On loopback with
/// dnsperf it cut the server's CPU per query by a fifth or more at the same rate and
/// latency. A lightly loaded server reads one query at a time and never pauses; under load
/// a query waits at most this long (plus the timer's slack) more.
pub const COALESCE: Duration = Duration::from_micros(50);
/// The fewest queries in one read that mean load: see [`COALESCE`].
pub const COALESCE_FROM: usize = 2;
/// How long a UDP thread blocks in a read or waits for room to send before it looks at
/// its stop flag again. Stopping shuts the socket down, which ends a read at once: this
/// only bounds a stop should that wake-up be missed, so it can be long and an idle server
/// wakes rarely.
const UDP_STOP_POLL: Duration = Duration::from_secs(1);
/// After a read fails for a reason other than those of [`is_transient`], the UDP thread
/// waits this long before reading again, so that a lasting failure neither spins nor floods
/// the log.
const UDP_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The bound sockets, not yet served.
pub struct Bound {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

impl Bound {
    /// The addresses bound, e.g. for the log.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|socket| socket.local_addr().ok()).collect()
    }
}

/// Binds UDP and TCP on `target`. `Any` binds `[::]` accepting IPv4 too, or `0.0.0.0` when
/// the host has no IPv6. Errors read `cannot bind 127.0.0.1:53 (TCP): Address already in use`.
pub fn bind(target: BindTarget) -> Result<Bound, String> {
    match target {
        BindTarget::One(address) => bind_one(address, false),
        BindTarget::Any(port) => {
            let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
            match bind_one(v6, true) {
                Err(why) if !ipv6_available() => {
                    tracing::debug!("no IPv6 ({why}); binding IPv4 only");
                    bind_one(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), false)
                }
                other => other,
            }
        }
    }
}

fn ipv6_available() -> bool {
    Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).is_ok()
}

/// Port 0 asks for any free port: UDP picks one and TCP takes the same number, which a TCP
/// socket elsewhere may already hold; then the pair is bound again on another port, up to
/// this many times.
const ANY_PORT_ATTEMPTS: usize = 16;

fn bind_one(address: SocketAddr, dual_stack: bool) -> Result<Bound, String> {
    let attempts = if address.port() == 0 { ANY_PORT_ATTEMPTS } else { 1 };
    let mut attempt = 1;
    loop {
        match bind_pair(address, dual_stack) {
            Err(PairError::TcpPortTaken(_)) if attempt < attempts => attempt += 1,
            Err(PairError::TcpPortTaken(why) | PairError::Other(why)) => return Err(why),
            Ok(bound) => return Ok(bound),
        }
    }
}

/// Why a UDP and TCP pair could not be bound.
enum PairError {
    /// The port UDP got is taken for TCP.
    TcpPortTaken(String),
    Other(String),
}

fn bind_pair(address: SocketAddr, dual_stack: bool) -> Result<Bound, PairError> {
    let fail = |what: &str, error: io::Error| {
        PairError::Other(format!("cannot bind {address} ({what}): {error}"))
    };
    let domain = Domain::for_address(address);

    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| fail("UDP", e))?;
    if dual_stack {
        udp.set_only_v6(false).map_err(|e| fail("UDP", e))?;
    }
    udp.bind(&address.into()).map_err(|e| fail("UDP", e))?;
    udp.set_nonblocking(true).map_err(|e| fail("UDP", e))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = udp.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    // Port 0 binds a free port: TCP then takes the same one.
    let address = udp.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(address);

    let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|e| fail("TCP", e))?;
    if dual_stack {
        tcp.set_only_v6(false).map_err(|e| fail("TCP", e))?;
    }
    // Lets a restarted rgap bind while old connections sit in TIME_WAIT; a live listener
    // on the port still makes bind fail.
    tcp.set_reuse_address(true).map_err(|e| fail("TCP", e))?;
    tcp.bind(&address.into()).map_err(|error| match error.kind() {
        io::ErrorKind::AddrInUse => {
            PairError::TcpPortTaken(format!("cannot bind {address} (TCP): {error}"))
        }
        _ => fail("TCP", error),
    })?;
    tcp.listen(1024).map_err(|e| fail("TCP", e))?;
    tcp.set_nonblocking(true).map_err(|e| fail("TCP", e))?;

    Ok(Bound { udp: vec![udp.into()], tcp: vec![tcp.into()] })
}

/// The running server; [`Server::stop`] ends it.
pub struct Server {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    udp: Vec<UdpThread>,
}

/// One UDP socket's thread, and what stops it.
struct UdpThread {
    stop: Arc<AtomicBool>,
    /// The same socket (a duplicate descriptor), to shut down so that a blocked read ends.
    socket: std::net::UdpSocket,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving `bound`: each UDP socket on a thread of its own, limited by
    /// `rate_limit`, and TCP on another.
    pub fn start(
        bound: Bound,
        responder: Arc<Responder>,
        rate_limit: Option<RateLimit>,
        host: HostHandle,
    ) -> io::Result<Server> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let mut server = Server { shutdown: None, thread: None, udp: Vec::new() };
        for socket in bound.udp {
            // Blocking, with a timeout: the thread waits in the read itself.
            socket.set_nonblocking(false)?;
            socket.set_read_timeout(Some(UDP_STOP_POLL))?;
            let stop = Arc::new(AtomicBool::new(false));
            let handle = socket.try_clone()?;
            let (responder, host, stopped) = (responder.clone(), host.clone(), stop.clone());
            let limiter = rate_limit.map(RateLimiter::new);
            let thread = std::thread::Builder::new()
                .name("rgap dns udp".into())
                .spawn(move || host.in_scope(|| serve_udp(&socket, &responder, limiter, &stopped)));
            // On an error here, dropping `server` stops the threads already started.
            server.udp.push(UdpThread { stop, socket: handle, thread: Some(thread?) });
        }
        let (shutdown, stopped) = oneshot::channel();
        server.shutdown = Some(shutdown);
        server.thread =
            Some(std::thread::Builder::new().name("rgap dns".into()).spawn(move || {
                host.in_scope(|| {
                    runtime.block_on(serve_tcp_all(bound.tcp, responder, stopped));
                    // Dropping the runtime cancels the connection tasks still open.
                    drop(runtime);
                })
            })?);
        Ok(server)
    }

    /// Stops accepting and answering, closes every socket and waits for the threads.
    pub fn stop(&mut self) -> Result<(), String> {
        for udp in self.udp.iter().filter(|udp| udp.thread.is_some()) {
            udp.stop.store(true, Ordering::Relaxed);
            // Ends a read that is waiting. On a socket with no peer this returns ENOTCONN,
            // but shuts the socket down all the same.
            // SAFETY: shutdown on a descriptor this struct owns.
            unsafe { libc::shutdown(udp.socket.as_raw_fd(), libc::SHUT_RD) };
        }
        let mut panicked = false;
        for udp in &mut self.udp {
            if let Some(thread) = udp.thread.take() {
                panicked |= thread.join().is_err();
            }
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            panicked |= thread.join().is_err();
        }
        if panicked {
            return Err("the DNS server thread panicked".to_owned());
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

async fn serve_tcp_all(
    listeners: Vec<std::net::TcpListener>,
    responder: Arc<Responder>,
    stopped: oneshot::Receiver<()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        match TcpListener::from_std(listener) {
            Ok(listener) => {
                tasks.spawn(serve_tcp(listener, responder.clone()));
            }
            Err(error) => tracing::error!("cannot serve TCP: {error}"),
        }
    }
    let _ = stopped.await;
    tasks.shutdown().await;
}

/// Answers `packet` (truncated, with no records, if `slip`), turning a panic in decoding or
/// encoding into no answer rather than a dead server.
fn respond(
    responder: &Responder,
    packet: &[u8],
    transport: Transport,
    slip: bool,
    out: &mut Vec<u8>,
) -> bool {
    catch_unwind(AssertUnwindSafe(|| responder.respond(packet, transport, slip, out)))
        .unwrap_or(false)
}

/// Whether `packet` would get an answer at all: a header with QR clear. Only those count
/// against a client's rate limit.
fn is_query(packet: &[u8]) -> bool {
    packet.len() >= 12 && packet[2] & 0x80 == 0
}

/// Answers the queries on `socket` until `stop` is set.
fn serve_udp(
    socket: &std::net::UdpSocket,
    responder: &Responder,
    mut limiter: Option<RateLimiter>,
    stop: &AtomicBool,
) {
    let fd = socket.as_raw_fd();
    let mut batch = Batch::default();
    while !stop.load(Ordering::Relaxed) {
        let received = match batch.receive(fd) {
            // Shut down: the stop flag is set.
            Ok(0) => continue,
            Ok(received) => received,
            Err(error) if is_transient(&error) => continue,
            Err(error) => {
                tracing::warn!("UDP receive: {error}");
                std::thread::sleep(UDP_ERROR_PAUSE);
                continue;
            }
        };
        // One clock reading per batch: the limiter needs milliseconds, not more.
        let now_ms = limiter.as_ref().map(|limiter| limiter.now_ms(Instant::now()));
        for i in 0..received {
            let Some(peer) = batch.answerable_peer(i) else { continue };
            let (query, response) = batch.slot(i);
            let mut slip = false;
            if let (Some(limiter), Some(now_ms)) = (limiter.as_mut(), now_ms) {
                if is_query(query) {
                    match limiter.check(peer, now_ms) {
                        Verdict::Answer => {}
                        Verdict::Slip => {
                            responder.metrics().rate_limited(Limited::Slipped);
                            slip = true;
                        }
                        Verdict::Drop => {
                            responder.metrics().rate_limited(Limited::Dropped);
                            continue;
                        }
                    }
                }
            }
            batch.answered[i] = respond(responder, query, Transport::Udp, slip, response);
        }
        send_all(&mut batch, fd, received, stop);
        if coalesces_after(received) {
            std::thread::sleep(COALESCE);
        }
    }
}

/// Errors a read reports that only mean "nothing yet": the timeout, a signal, or an ICMP
/// error from an earlier send (ECONNREFUSED and the like), which concerns no query here.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// Sends the responses to the first `received` queries of `batch`, waiting for room in the
/// socket's buffer when it is full, unless stopped.
fn send_all(batch: &mut Batch, fd: RawFd, received: usize, stop: &AtomicBool) {
    let mut sent = 0;
    while sent < received {
        match batch.send(fd, received, &mut sent) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                wait_writable(fd);
            }
            // The datagram that failed is skipped (see `Batch::send`).
            Err(error) => tracing::trace!("UDP send: {error}"),
        }
    }
}

/// Waits until `fd` has room to send, at most [`UDP_STOP_POLL`].
fn wait_writable(fd: RawFd) {
    let mut poll = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one pollfd, valid for the call.
    unsafe { libc::poll(&mut poll, 1, UDP_STOP_POLL.as_millis() as libc::c_int) };
}

/// Whether a read of `received` queries is followed by the [`COALESCE`] pause: it found
/// load, but not a full batch (after a full one more are waiting already).
fn coalesces_after(received: usize) -> bool {
    (COALESCE_FROM..BATCH).contains(&received)
}

async fn serve_tcp(listener: TcpListener, responder: Arc<Responder>) {
    let mut connections = tokio::task::JoinSet::new();
    // Open connections, oldest first.
    let mut by_age: VecDeque<AbortHandle> = VecDeque::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!("TCP accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        by_age.retain(|connection| !connection.is_finished());
        if connections.len() >= MAX_TCP_CONNECTIONS {
            // Full: the oldest connection makes room, so that clients holding connections
            // open cannot lock others out of TCP.
            if let Some(oldest) = by_age.pop_front() {
                tracing::debug!("{MAX_TCP_CONNECTIONS} TCP connections open: closing the oldest");
                oldest.abort();
            }
        }
        let responder = responder.clone();
        by_age.push_back(connections.spawn(async move {
            if let Err(error) = serve_connection(stream, &responder).await {
                tracing::trace!("TCP connection from {peer}: {error}");
            }
        }));
    }
}

/// Queries on one connection, answered in order. Returns at end of stream, on a timeout or
/// on a message too short to answer.
async fn serve_connection(mut stream: TcpStream, responder: &Responder) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut packet = Vec::new();
    let mut response = Vec::with_capacity(4096);
    let mut frame = Vec::with_capacity(4096);
    loop {
        let mut length = [0u8; 2];
        match within(stream.read_exact(&mut length)).await {
            Ok(_) => {}
            // A clean close between messages.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        }
        packet.resize(usize::from(u16::from_be_bytes(length)), 0);
        within(stream.read_exact(&mut packet)).await?;
        if !respond(responder, &packet, Transport::Tcp, false, &mut response) {
            return Ok(());
        }
        frame.clear();
        frame.extend_from_slice(&(response.len() as u16).to_be_bytes());
        frame.extend_from_slice(&response);
        within(stream.write_all(&frame)).await?;
    }
}

/// `io` bounded by [`TCP_IDLE_TIMEOUT`].
async fn within<T>(io: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(TCP_IDLE_TIMEOUT, io)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle for too long"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_only_after_a_read_that_found_load_but_not_a_full_batch() {
        assert!(!coalesces_after(0));
        assert!(!coalesces_after(1), "a lone query: no load, no pause");
        assert!(!coalesces_after(COALESCE_FROM - 1));
        assert!(coalesces_after(COALESCE_FROM));
        assert!(coalesces_after(BATCH - 1));
        assert!(!coalesces_after(BATCH), "a full batch: more are waiting already");
    }
}
