//! UDP sources: per `listen` entry, one socket and thread, or for a unicast address one per
//! worker (`workers`), all bound to it with `SO_REUSEPORT`. The read loop is the hot path:
//! datagrams are read in batches with `recvmmsg`, checked in place (cheap checks before the
//! HMAC, nothing allocated per datagram), and each batch's accepted announcements go to the
//! group table in one message.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::addrspec::AddrSpec;
use crate::protocol::unix_micros;

use super::check::Checker;
use super::stats::{BatchCounts, ListenerStats};
use super::table::TableInput;

/// Datagrams read per system call.
pub const BATCH: usize = 256;
/// Larger than an announcement, so an oversized datagram shows as the wrong length.
const SLOT: usize = 80;
/// How often a blocked read wakes to look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// At most this many batches are read once stopped (more than a full receive buffer holds),
/// so that a flood still arriving cannot hold the stop up.
const DRAIN_BATCHES: usize = 256;
/// Kernel receive buffer asked for, to ride out bursts while the thread is busy or pausing.
const RECEIVE_BUFFER: usize = 32 << 20;
/// After a read that did not fill a batch, the source pauses this long so that the next read
/// takes many datagrams in one system call (interrupt coalescing, in effect). An idle
/// listener still blocks in the read, so a lone announcement is not delayed; under load this
/// turns one system call and one wake-up per datagram into one per batch.
/// 2 ms: at 100 000 datagrams a second, a read of about 200 and a wake-up (a few µs of
/// kernel time) per 2 ms.
pub const COALESCE: Duration = Duration::from_micros(2000);

/// Opens the sockets for `spec`: one for a multicast address, joined on the interface it
/// names; `workers` for a unicast one, sharing the address with `SO_REUSEPORT` so that the
/// kernel spreads senders over them (by address and port: one sender stays on one socket).
///
/// `held`: this listener already has the address bound (a reload changing the number of
/// workers), so the new sockets join its own; otherwise the address must be free.
pub fn open(spec: &AddrSpec, workers: usize, held: bool) -> io::Result<Vec<UdpSocket>> {
    let addr = spec.addr;
    let interface = spec
        .resolve_interface()
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?;
    if addr.ip().is_multicast() {
        return Ok(vec![open_multicast(addr, interface.as_ref())?]);
    }
    let device = interface.as_ref().map(|interface| interface.name.as_bytes());
    if !held && addr.port() != 0 {
        // SO_REUSEPORT would let our first socket join a group another process of the same
        // user already holds, and each would then get part of the announcements. A socket
        // without it binds only where nobody is: the check that startup always made.
        drop(open_unicast(addr, device, false)?);
    }
    let first = open_first_worker(addr, device)?;
    // The port the first got, should the config ask for any (port 0).
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(open_unicast(bound, device, true)?);
    }
    Ok(sockets)
}

/// The first `SO_REUSEPORT` socket for `addr`, just after the probe above let go of it.
///
/// An output that starts a process meanwhile (a command at startup, say) forks, and until
/// the child execs it holds a copy of every descriptor, the probe's included, close-on-exec
/// or not: for those few milliseconds the address still looks taken. So "in use" is retried
/// briefly; an address another process really holds stays in use and is reported as such.
fn open_first_worker(addr: SocketAddr, device: Option<&[u8]>) -> io::Result<UdpSocket> {
    const RETRIES: u32 = 50;
    const PAUSE: Duration = Duration::from_millis(5);
    let mut attempt = 0;
    loop {
        match open_unicast(addr, device, true) {
            Err(error) if error.kind() == io::ErrorKind::AddrInUse && attempt < RETRIES => {
                attempt += 1;
                std::thread::sleep(PAUSE);
            }
            result => return result,
        }
    }
}

/// A unicast socket bound to `addr` (on `device`, if given). Never with SO_REUSEADDR: with
/// it, any local user could bind the same address and port and take announcements meant
/// for this listener. `SO_REUSEPORT` shares the address only among sockets of the same
/// effective user (the kernel checks), so another user still cannot.
fn open_unicast(
    addr: SocketAddr,
    device: Option<&[u8]>,
    reuse_port: bool,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
        set_receive_buffer(&socket);
    }
    if let Some(device) = device {
        socket.bind_device(Some(device))?;
    }
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket.into())
}

/// A multicast socket joined to the group of `addr` on `interface` (or the default one).
fn open_multicast(
    addr: SocketAddr,
    interface: Option<&crate::addrspec::Interface>,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Multicast sockets share their group and port with other listeners on the host, as the
    // Go rgap's do.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_receive_buffer(&socket);
    match addr.ip() {
        IpAddr::V4(group) => {
            socket.bind(&addr.into())?;
            let local = interface.and_then(|i| i.ipv4).unwrap_or(Ipv4Addr::UNSPECIFIED);
            socket.join_multicast_v4(&group, &local)?;
            // Only this group's datagrams, not every group some socket joined.
            socket.set_multicast_all_v4(false)?;
        }
        IpAddr::V6(group) => {
            let index = interface.map_or(0, |i| i.index);
            let mut bind_addr = addr;
            if let SocketAddr::V6(v6) = &mut bind_addr {
                v6.set_scope_id(index);
            }
            socket.bind(&bind_addr.into())?;
            socket.join_multicast_v6(&group, index)?;
            socket.set_multicast_all_v6(false)?;
        }
    }
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket.into())
}

/// Asks for a large receive buffer (`RECEIVE_BUFFER`); as root past `rmem_max`. Best
/// effort: the default works.
pub fn set_receive_buffer(socket: &impl AsFd) {
    let size = RECEIVE_BUFFER as libc::c_int;
    // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the stated size.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced != 0 {
        let _ = SockRef::from(socket).set_recv_buffer_size(RECEIVE_BUFFER);
    }
}

/// Whether a read waits for a first datagram (up to the socket's read timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    ForOne,
    No,
}

/// Reusable buffers for `recvmmsg`: the datagram slots and the headers and iovecs that
/// point at them, set up once (each lives in a box of its own, so the pointers stay valid
/// when the batch moves). The raw pointers keep it on the thread that made it.
pub struct RecvBatch {
    slots: Box<[[u8; SLOT]; BATCH]>,
    iovecs: Box<[libc::iovec; BATCH]>,
    headers: Box<[libc::mmsghdr; BATCH]>,
    lengths: [usize; BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        let mut slots = Box::new([[0u8; SLOT]; BATCH]);
        let mut iovecs: Box<[libc::iovec; BATCH]> = Box::new(std::array::from_fn(|index| {
            libc::iovec { iov_base: slots[index].as_mut_ptr().cast(), iov_len: SLOT }
        }));
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut headers: Box<[libc::mmsghdr; BATCH]> = Box::new(unsafe { std::mem::zeroed() });
        for (header, iovec) in headers.iter_mut().zip(iovecs.iter_mut()) {
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        RecvBatch { slots, iovecs, headers, lengths: [0; BATCH] }
    }
}

impl RecvBatch {
    /// Reads up to `BATCH` datagrams, waiting for the first or not; returns how many.
    pub fn receive(&mut self, socket: &UdpSocket, wait: Wait) -> io::Result<usize> {
        let flags = match wait {
            Wait::ForOne => libc::MSG_WAITFORONE,
            Wait::No => libc::MSG_DONTWAIT,
        };
        debug_assert!(std::ptr::eq(self.headers[0].msg_hdr.msg_iov, &self.iovecs[0]));
        // SAFETY: the headers point at the iovecs, which point at the slots: all boxed,
        // owned by `self` and borrowed mutably for the call. The kernel sets `msg_len` and
        // the other output fields of each header it fills.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let received = received as usize;
        for (length, header) in self.lengths.iter_mut().zip(self.headers.iter()).take(received) {
            *length = header.msg_len as usize;
        }
        Ok(received)
    }

    /// The `index`th datagram of the last read.
    pub fn datagram(&self, index: usize) -> &[u8] {
        &self.slots[index][..self.lengths[index]]
    }
}

/// Everything a source thread needs.
pub struct Source {
    pub name: String,
    pub socket: UdpSocket,
    /// Swapped whole by a reload; read once per batch.
    pub checker: Arc<ArcSwap<Checker>>,
    pub stats: Arc<ListenerStats>,
    pub table: Sender<TableInput>,
    /// Emptied batches back from the table, to fill again (see `run_table`).
    pub spares: Receiver<TableInput>,
    pub stop: Arc<AtomicBool>,
}

impl Source {
    /// Reads, checks and forwards until `stop` is set or the table has gone; then takes
    /// what the kernel still holds for the socket, so that stopping loses no datagram that
    /// had already arrived.
    pub fn run(self) {
        let mut batch = RecvBatch::default();
        while !self.stop.load(Ordering::Relaxed) {
            let received = match batch.receive(&self.socket, Wait::ForOne) {
                Ok(received) => received,
                Err(error) if is_transient(&error) => continue,
                Err(error) => {
                    tracing::warn!("{}: receive failed: {error}", self.name);
                    std::thread::sleep(STOP_POLL);
                    continue;
                }
            };
            if !self.forward(&batch, received) {
                return;
            }
            if received < BATCH {
                std::thread::sleep(COALESCE);
            }
        }
        for _ in 0..DRAIN_BATCHES {
            match batch.receive(&self.socket, Wait::No) {
                Ok(received @ 1..) if self.forward(&batch, received) => {}
                _ => return,
            }
        }
    }

    /// Checks the first `received` datagrams of `batch` and sends the accepted ones to the
    /// table in one message; false if the table has gone.
    fn forward(&self, batch: &RecvBatch, received: usize) -> bool {
        let now_us = unix_micros(SystemTime::now());
        let mut counts = BatchCounts { received: received as u64, ..BatchCounts::default() };
        let mut accepted = self.spares.try_recv().unwrap_or_default();
        accepted.reserve(received);
        let checker = self.checker.load();
        for index in 0..received {
            match checker.check(batch.datagram(index), now_us) {
                Ok(announcement) => accepted.push(announcement),
                Err(reason) => counts.drop(reason),
            }
        }
        drop(checker);
        counts.accepted = accepted.len() as u64;
        self.stats.add(&counts);
        accepted.is_empty() || self.table.send(accepted).is_ok()
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
