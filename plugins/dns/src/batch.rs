//! Batched UDP: up to [`BATCH`] queries read with one `recvmmsg` and their responses sent
//! with one `sendmmsg`, which halves the system calls per query and more under load. The
//! buffers are allocated once per socket and reused.

use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Room for one query. Real queries are far smaller; a larger datagram is cut (its header
/// still answers FORMERR).
const QUERY_SLOT: usize = 4096;

/// Buffers for one batch: the queries read, who sent them, and the responses to send.
pub struct Batch {
    queries: Box<[[u8; QUERY_SLOT]; BATCH]>,
    lengths: [usize; BATCH],
    peers: [libc::sockaddr_storage; BATCH],
    peer_lengths: [libc::socklen_t; BATCH],
    /// The response to query `i`, when `answered[i]`.
    pub responses: Vec<Vec<u8>>,
    pub answered: [bool; BATCH],
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            // Built on the heap: 128 KiB is too much for a stack.
            queries: vec![[0; QUERY_SLOT]; BATCH].into_boxed_slice().try_into().unwrap_or_else(
                |_: Box<[[u8; QUERY_SLOT]]>| unreachable!("the vector has BATCH slots"),
            ),
            lengths: [0; BATCH],
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid (empty) value.
            peers: unsafe { mem::zeroed() },
            peer_lengths: [0; BATCH],
            responses: (0..BATCH).map(|_| Vec::with_capacity(1500)).collect(),
            answered: [false; BATCH],
        }
    }
}

impl Batch {
    /// Reads up to [`BATCH`] datagrams from `fd`, waiting for the first as the socket does
    /// (a blocking socket: until its read timeout, which reports `WouldBlock`); returns how
    /// many, 0 once the socket is shut down.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovecs: [libc::iovec; BATCH] =
            std::array::from_fn(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, (iovec, header)) in iovecs.iter_mut().zip(&mut headers).enumerate() {
            iovec.iov_base = self.queries[i].as_mut_ptr().cast();
            iovec.iov_len = QUERY_SLOT;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
        }
        // SAFETY: every header points at an iovec, a query slot and a sockaddr_storage of
        // the stated sizes, all alive for the duration of the call.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let received = received as usize;
        for (i, header) in headers.iter().enumerate().take(received) {
            self.lengths[i] = (header.msg_len as usize).min(QUERY_SLOT);
            self.peer_lengths[i] = header.msg_hdr.msg_namelen;
        }
        self.answered = [false; BATCH];
        Ok(received)
    }

    /// Query `i` of the last read, and the buffer for its response.
    pub fn slot(&mut self, i: usize) -> (&[u8], &mut Vec<u8>) {
        (&self.queries[i][..self.lengths[i]], &mut self.responses[i])
    }

    /// The address query `i` came from, if it can be answered (an IP peer, port not 0).
    pub fn answerable_peer(&self, i: usize) -> Option<IpAddr> {
        let peer = &self.peers[i];
        let (ip, port) = match i32::from(peer.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says which sockaddr the storage holds; both fit in it.
                let v4 =
                    unsafe { *(peer as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                (IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()), v4.sin_port)
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for an IPv6 peer.
                let v6 = unsafe {
                    *(peer as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                (IpAddr::from(v6.sin6_addr.s6_addr), v6.sin6_port)
            }
            _ => return None,
        };
        (port != 0).then_some(ip)
    }

    /// Sends the answered responses of the first `count` queries, starting after those
    /// already sent (`*sent`, advanced). `WouldBlock` when the socket buffer is full: wait
    /// until writable and call again.
    pub fn send(&mut self, fd: RawFd, count: usize, sent: &mut usize) -> io::Result<()> {
        let mut iovecs: [libc::iovec; BATCH] =
            std::array::from_fn(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        // SAFETY: as in `receive`.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        // Which query each header answers.
        let mut order = [0usize; BATCH];
        let mut pending = 0;
        for i in *sent..count {
            if !self.answered[i] {
                continue;
            }
            iovecs[pending].iov_base = self.responses[i].as_mut_ptr().cast();
            iovecs[pending].iov_len = self.responses[i].len();
            order[pending] = i;
            pending += 1;
        }
        if pending == 0 {
            *sent = count;
            return Ok(());
        }
        for (j, header) in headers.iter_mut().enumerate().take(pending) {
            let i = order[j];
            header.msg_hdr.msg_iov = &mut iovecs[j];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = self.peer_lengths[i];
        }
        // SAFETY: every header points at an iovec over a response buffer and at the peer's
        // address, all alive for the duration of the call.
        let done = unsafe {
            libc::sendmmsg(fd, headers.as_mut_ptr(), pending as libc::c_uint, libc::MSG_DONTWAIT)
        };
        if done < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                // This datagram cannot go (e.g. an unreachable peer): skip it, keep the rest.
                *sent = order[0] + 1;
            }
            return Err(error);
        }
        let done = done as usize;
        *sent = if done == pending { count } else { order[done] };
        Ok(())
    }
}
