//! `floor`: what the kernel's receive path alone costs, as a floor under the listener's CPU
//! per announcement. A thread in this process reads the ingest scenario's traffic exactly as
//! a listener source does (the same `RecvBatch`, `recvmmsg` with the same batch, the same
//! 2 ms pause after a read that did not fill it), optionally checks each datagram as the
//! source does, and does nothing else: no group table, no outputs. Its CPU per datagram is
//! what no change above the socket API can take away.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use rgap_core::listener::{
    set_receive_buffer, Checker, RecvBatch, Wait, RECEIVE_BATCH, RECEIVE_COALESCE,
};
use rgap_core::protocol::unix_micros;

use crate::blaster::blast;
use crate::scenarios::{member_ip, signed_at, PSK};

#[derive(Args)]
pub struct FloorArgs {
    /// Distinct valid announcements to send
    #[arg(long, default_value_t = 200_000)]
    count: usize,
    /// Announcements per second
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Also check each datagram (cheap checks and HMAC) as a source does
    #[arg(long)]
    check: bool,
}

fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

pub fn floor(args: &FloorArgs) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a loopback port");
    set_receive_buffer(&socket);
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
    let to: SocketAddr = socket.local_addr().expect("local address");
    let config = rgap_core::config::Config::parse(&format!(
        "listen:\n- {to}\ngroups:\n{}",
        crate::scenarios::group_yaml([1000].into_iter())
    ))
    .expect("the floor's config");
    let checker = Checker::new(&config.groups);
    let stamp = unix_micros(SystemTime::now());
    let datagrams: Vec<Vec<u8>> =
        (0..args.count).map(|index| signed_at(1000, member_ip(index, 10), PSK, stamp)).collect();

    let expected = args.count;
    let check = args.check;
    let stop = Arc::new(AtomicBool::new(false));
    let receiver_stop = stop.clone();
    let receiver = std::thread::spawn(move || {
        let mut batch = RecvBatch::default();
        let (mut received, mut accepted) = (0usize, 0usize);
        let mut started: Option<Duration> = None;
        while received < expected && !receiver_stop.load(Ordering::Relaxed) {
            let now_us = unix_micros(SystemTime::now());
            let mut accept = |datagram: &[u8]| {
                if check && checker.check(datagram, now_us).is_ok() {
                    accepted += 1;
                }
            };
            let count = match batch.receive(&socket, Wait::ForOne) {
                Ok(count) => count,
                Err(_) => continue,
            };
            (0..count).for_each(|i| accept(batch.datagram(i)));
            // CPU from the first read on, as the ingest scenario counts the listener's.
            started.get_or_insert_with(thread_cpu);
            received += count;
            if count < RECEIVE_BATCH {
                std::thread::sleep(RECEIVE_COALESCE);
            }
        }
        (thread_cpu() - started.unwrap_or_default(), received, accepted)
    });
    let sent_at = Instant::now();
    let report = blast(&datagrams, to, args.rate).expect("sending");
    // Whatever has not arrived a few seconds after the last send was lost.
    while !receiver.is_finished() && sent_at.elapsed() < report.elapsed + Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let (cpu, received, accepted) = receiver.join().expect("the receiver panicked");
    let per = cpu.as_nanos() as f64 / 1000.0 / received.max(1) as f64;
    println!(
        "receive floor{}: {received} of {} datagrams at {:.0}/s; receiver CPU {:.3} µs per datagram",
        if check { " with checks" } else { "" },
        report.sent,
        report.sent as f64 / report.elapsed.as_secs_f64(),
        per
    );
    if check {
        println!("accepted {accepted}");
    }
    println!("@figure floor_cpu_per_datagram_us {per}");
    println!("@figure floor_lost {}", report.sent.saturating_sub(received));
}
