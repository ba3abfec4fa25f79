//! Sends prepared datagrams to one address at a steady rate with `sendmmsg`, in batches,
//! so that the sender is not the bottleneck. Every run is bounded by its datagram list.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const BATCH: usize = 64;

/// What a blast did.
pub struct BlastReport {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams the kernel refused (`ENOBUFS`, a pending `ECONNREFUSED`): never sent.
    pub failed: usize,
    pub elapsed: Duration,
}

/// What one batch did: how many datagrams the kernel accepted, how many it refused.
#[derive(Clone, Copy, Default)]
pub struct Sent {
    pub sent: usize,
    pub failed: usize,
}

/// Sends every datagram in `datagrams` to `to`, paced at `rate` per second (0 = unpaced).
pub fn blast(datagrams: &[Vec<u8>], to: SocketAddr, rate: u64) -> std::io::Result<BlastReport> {
    assert!(to.ip().is_loopback(), "benchmarks send to loopback only");
    let socket = UdpSocket::bind(if to.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" })?;
    socket.connect(to)?;
    let started = Instant::now();
    let (mut sent, mut failed) = (0, 0);
    for chunk in datagrams.chunks(BATCH) {
        if rate > 0 {
            // Wait until this batch is due, so the rate holds over any interval (refused
            // datagrams took their turn too).
            let due = started + Duration::from_secs_f64((sent + failed) as f64 / rate as f64);
            while Instant::now() < due {
                let left = due - Instant::now();
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        let batch = send_batch(&socket, chunk)?;
        sent += batch.sent;
        failed += batch.failed;
    }
    Ok(BlastReport { sent, failed, elapsed: started.elapsed() })
}

/// Sends `chunk` on the connected `socket` with `sendmmsg`; returns how many the kernel
/// accepted and how many it refused.
pub fn send_batch(socket: &UdpSocket, chunk: &[Vec<u8>]) -> std::io::Result<Sent> {
    let mut iovecs: Vec<libc::iovec> = chunk
        .iter()
        .map(|d| libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() })
        .collect();
    // SAFETY: plain data; zero is an empty header.
    let mut headers: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; chunk.len()];
    for (header, iovec) in headers.iter_mut().zip(iovecs.iter_mut()) {
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
    }
    let (mut done, mut failed) = (0, 0);
    while done < headers.len() {
        // SAFETY: headers and iovecs outlive the call; the socket is connected.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers[done..].as_mut_ptr(),
                (headers.len() - done) as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Loopback may refuse briefly when the receiver's buffer is full (or report an
            // earlier ICMP refusal): that datagram was not sent. Count it apart and go on.
            if error.raw_os_error() == Some(libc::ENOBUFS)
                || error.raw_os_error() == Some(libc::ECONNREFUSED)
            {
                done += 1;
                failed += 1;
                continue;
            }
            return Err(error);
        }
        done += n as usize;
    }
    Ok(Sent { sent: done - failed, failed })
}
