//! `dnsload`: a DNS load generator for `bench/dns/run.sh` (`LOADGEN=rgap-bench`), for when
//! dnsperf, not the server, sets the pace. On a 2-core machine the server has one core and
//! the load generator the other; dnsperf spends more CPU per query than a batching server
//! does, so it cannot fill the server's core and queries per second understate what the
//! server can serve. This one sends with `sendmmsg` on connected sockets (the blaster's
//! `send_batch`) and reads with `recvmmsg` (a listener source's `RecvBatch`).
//!
//! Closed loop, like dnsperf: each client socket keeps `outstanding / clients` queries in
//! flight and sends a new one for each response. Queries go to loopback only, and the run
//! is bounded by `--seconds`. It prints dnsperf's summary lines (sent, completed, lost, run
//! time, queries per second, mean latency), which `run.sh` reads the same way.

use std::collections::VecDeque;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use rgap_core::listener::{RecvBatch, Wait, RECEIVE_BATCH};

use crate::blaster::send_batch;

#[derive(Args)]
pub struct DnsLoadArgs {
    /// The DNS server (a loopback address)
    #[arg(long)]
    server: SocketAddr,
    /// Queries to send in turn, one per line: `name TYPE` (dnsperf's data file format)
    #[arg(long)]
    queries: PathBuf,
    /// How long to send
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Client sockets
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Queries in flight at once, over all clients
    #[arg(long, default_value_t = 256)]
    outstanding: usize,
}

/// Queries per `sendmmsg`.
const BATCH: usize = 64;
/// A query with no answer after this long is lost: its place in the window goes to a new
/// one (and the totals count it as sent but not completed).
const LOST_AFTER: Duration = Duration::from_millis(500);
/// After the last send, how long answers are still awaited.
const DRAIN: Duration = Duration::from_secs(1);
/// The longest query in a data file.
const QUERY_ROOM: usize = 512;

/// One client socket and what it has in flight.
struct Client {
    socket: UdpSocket,
    /// When each message id was sent.
    sent_at: Vec<Option<Instant>>,
    next_id: u16,
    next_query: usize,
    in_flight: usize,
    /// The ids sent, oldest first, until answered or lost.
    pending: VecDeque<u16>,
    /// The batch being sent, its buffers reused.
    out: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Totals {
    sent: u64,
    completed: u64,
    latency: Duration,
}

pub fn dnsload(args: &DnsLoadArgs) {
    assert!(args.server.ip().is_loopback(), "dnsload sends to loopback only");
    let templates = read_queries(&args.queries).unwrap_or_else(|error| {
        eprintln!("dnsload: {}: {error}", args.queries.display());
        std::process::exit(2);
    });
    let seconds = Duration::from_secs(args.seconds);
    let totals = run(args.server, &templates, seconds, args.clients, args.outstanding);
    let lost = totals.sent - totals.completed;
    let percent = |n: u64| n as f64 * 100.0 / totals.sent.max(1) as f64;
    println!("  Queries sent:         {}", totals.sent);
    println!("  Queries completed:    {} ({:.2}%)", totals.completed, percent(totals.completed));
    println!("  Queries lost:         {} ({:.2}%)", lost, percent(lost));
    println!("  Run time (s):         {:.6}", seconds.as_secs_f64());
    println!("  Queries per second:   {:.6}", totals.completed as f64 / seconds.as_secs_f64());
    println!(
        "  Average Latency (s):  {:.6}",
        totals.latency.as_secs_f64() / totals.completed.max(1) as f64
    );
}

/// Sends `templates` in turn to `server` for `duration` from `clients` sockets keeping
/// `outstanding` queries in flight, then waits for the last answers (at most [`DRAIN`]).
fn run(
    server: SocketAddr,
    templates: &[Vec<u8>],
    duration: Duration,
    clients: usize,
    outstanding: usize,
) -> Totals {
    let clients = clients.max(1);
    let window = (outstanding / clients).max(1);
    let started = Instant::now();
    let mut pool: Vec<Client> = (0..clients)
        .map(|index| {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a client socket");
            socket.connect(server).expect("connecting to the server");
            socket.set_nonblocking(true).expect("non-blocking");
            // Room for a whole window of answers, which the default buffer may not have.
            rgap_core::listener::set_receive_buffer(&socket);
            Client {
                socket,
                sent_at: vec![None; 1 << 16],
                next_id: 0,
                // Clients start at different queries, as dnsperf's do.
                next_query: index % templates.len(),
                in_flight: 0,
                pending: VecDeque::new(),
                out: (0..BATCH).map(|_| Vec::with_capacity(QUERY_ROOM)).collect(),
            }
        })
        .collect();
    let mut totals = Totals::default();
    // A source's buffers keep the first 80 bytes of each datagram: an answer's id is all
    // this reads.
    let mut answers = RecvBatch::default();
    let deadline = started + duration;
    let mut sending = true;
    loop {
        let now = Instant::now();
        if sending && now >= deadline {
            sending = false;
        }
        if !sending && (pool.iter().all(|c| c.in_flight == 0) || now >= deadline + DRAIN) {
            break;
        }
        let mut answered = 0;
        for client in &mut pool {
            answered += client.receive(&mut answers, &mut totals);
            client.forget_lost();
            if sending {
                client.send(window - client.in_flight.min(window), templates, &mut totals);
            }
        }
        if answered == 0 {
            wait_readable(&pool);
        }
    }
    totals
}

/// The queries of a dnsperf data file, encoded (id 0).
fn read_queries(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut queries = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            return Err(format!("line {}: expected `name TYPE`", number + 1));
        };
        let name = Name::from_ascii(name).map_err(|e| format!("line {}: {e}", number + 1))?;
        let kind: RecordType = kind.parse().map_err(|e| format!("line {}: {e}", number + 1))?;
        let mut message = Message::query();
        message.add_query(Query::query(name, kind));
        let bytes = message.to_vec().map_err(|e| e.to_string())?;
        if bytes.len() > QUERY_ROOM {
            return Err(format!("line {}: a query over {QUERY_ROOM} bytes", number + 1));
        }
        queries.push(bytes);
    }
    if queries.is_empty() {
        return Err("no queries".to_owned());
    }
    Ok(queries)
}

impl Client {
    /// Reads the answers waiting; returns how many.
    fn receive(&mut self, answers: &mut RecvBatch, totals: &mut Totals) -> usize {
        let mut total = 0;
        loop {
            let received = match answers.receive(&self.socket, Wait::No) {
                Ok(received) => received,
                Err(_) => return total,
            };
            let now = Instant::now();
            for index in 0..received {
                let answer = answers.datagram(index);
                if answer.len() < 12 {
                    continue;
                }
                let id = u16::from_be_bytes([answer[0], answer[1]]);
                if let Some(sent) = self.sent_at[usize::from(id)].take() {
                    totals.completed += 1;
                    totals.latency += now - sent;
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
            }
            total += received;
            if received < RECEIVE_BATCH {
                return total;
            }
        }
    }

    /// Drops the answered ids from the front of `pending`, and gives up on those waiting
    /// for longer than [`LOST_AFTER`].
    fn forget_lost(&mut self) {
        while let Some(&id) = self.pending.front() {
            let slot = &mut self.sent_at[usize::from(id)];
            match slot {
                Some(sent) if sent.elapsed() <= LOST_AFTER => return,
                Some(_) => {
                    *slot = None;
                    self.in_flight -= 1;
                }
                None => {}
            }
            self.pending.pop_front();
        }
    }

    /// Sends `count` more queries, in batches.
    fn send(&mut self, mut count: usize, templates: &[Vec<u8>], totals: &mut Totals) {
        while count > 0 {
            let batch = count.min(BATCH);
            let now = Instant::now();
            for out in &mut self.out[..batch] {
                out.clear();
                out.extend_from_slice(&templates[self.next_query]);
                out[..2].copy_from_slice(&self.next_id.to_be_bytes());
                self.next_query = (self.next_query + 1) % templates.len();
                self.sent_at[usize::from(self.next_id)] = Some(now);
                self.pending.push_back(self.next_id);
                self.next_id = self.next_id.wrapping_add(1);
            }
            let result = send_batch(&self.socket, &self.out[..batch]);
            // Each is answered or, after LOST_AFTER, given up on; one the kernel refused is
            // never answered, and not counted as sent.
            self.in_flight += batch;
            let Ok(result) = result else { return };
            totals.sent += result.sent as u64;
            count -= batch;
        }
    }
}

/// Waits up to a millisecond for any client to have an answer.
fn wait_readable(pool: &[Client]) {
    let mut fds: Vec<libc::pollfd> = pool
        .iter()
        .map(|c| libc::pollfd { fd: c.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    // SAFETY: the pollfds are valid for the call.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A stand-in server on loopback that answers each query by sending it back with QR set,
    /// except those whose id `ignore` picks; until `stop`.
    fn echo_server(ignore: fn(u16) -> bool) -> (SocketAddr, Arc<AtomicBool>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let address = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((length, peer)) = socket.recv_from(&mut buffer) else { continue };
                if !ignore(u16::from_be_bytes([buffer[0], buffer[1]])) {
                    buffer[2] |= 0x80;
                    let _ = socket.send_to(&buffer[..length], peer);
                }
            }
        });
        (address, stop)
    }

    fn templates() -> Vec<Vec<u8>> {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), "a.example. A\n\nb.example. AAAA\n").unwrap();
        read_queries(file.path()).unwrap()
    }

    #[test]
    fn every_query_sent_is_answered_or_counted_lost() {
        let (server, stop) = echo_server(|_| false);
        let totals = run(server, &templates(), Duration::from_millis(300), 2, 16);
        stop.store(true, Ordering::Relaxed);
        assert!(totals.completed > 100, "{} completed", totals.completed);
        assert_eq!(totals.completed, totals.sent, "all answered");
    }

    #[test]
    fn unanswered_queries_free_their_place_so_the_load_goes_on() {
        // The first window of each client (ids 0 to 7) is never answered: unless the client
        // gives up on those, it never sends again.
        let (server, stop) = echo_server(|id| id < 8);
        let totals = run(server, &templates(), LOST_AFTER * 3, 2, 16);
        stop.store(true, Ordering::Relaxed);
        let lost = totals.sent - totals.completed;
        assert!(lost >= 16, "{lost} lost");
        assert!(totals.completed > 100 * lost, "{} completed, {lost} lost", totals.completed);
    }

    #[test]
    fn a_data_file_line_needs_a_name_and_a_type() {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), "a.example. A\nb.example.\n").unwrap();
        let error = read_queries(file.path()).unwrap_err();
        assert_eq!(error, "line 2: expected `name TYPE`");
        assert_eq!(templates().len(), 2, "blank lines are skipped");
    }
}
