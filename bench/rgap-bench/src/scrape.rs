//! Scraping the listener's `/metrics` as Prometheus would: one HTTP/1.1 GET per scrape on
//! a fresh connection, timed from connect to the last byte of the reply; and a thread that
//! does so every interval while another scenario runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One scrape: how long it took and how many bytes the reply had.
pub struct Scrape {
    pub took: Duration,
    pub bytes: usize,
}

/// GETs `path` from `addr`; the reply must be 200.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Scrape> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut reply = Vec::with_capacity(64 * 1024);
    stream.read_to_end(&mut reply)?;
    let took = started.elapsed();
    if !reply.starts_with(b"HTTP/1.1 200") {
        let head = String::from_utf8_lossy(&reply[..reply.len().min(80)]).into_owned();
        return Err(std::io::Error::other(format!("GET {path}: {head}")));
    }
    Ok(Scrape { took, bytes: reply.len() })
}

/// Scrapes `/metrics` every `every` on its own thread until stopped.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Duration>>,
}

impl Scraper {
    pub fn start(addr: SocketAddr, every: Duration) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut times = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let scrape = get(addr, "/metrics").expect("scraping /metrics");
                times.push(scrape.took);
                // Sleeps in short steps so that stopping is prompt.
                let next = Instant::now() + every.saturating_sub(scrape.took);
                while Instant::now() < next && !stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            times
        });
        Scraper { stop, thread }
    }

    /// Stops and returns how long each scrape took.
    pub fn stop(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("scraper thread")
    }
}
