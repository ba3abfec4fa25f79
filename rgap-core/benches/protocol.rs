//! Micro-benchmark of the per-datagram crypto: verify (clone of the pre-keyed HMAC + update +
//! constant-time compare) and sign (key + update + finalize). A plain timing loop keeps the
//! dependency list short; run with `cargo bench -p rgap-core --bench protocol`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rgap_core::protocol::{encode_signed, peek_group, Announcement, RawAnnouncement, Verifier};
use rgap_core::psk::Psk;

/// Long enough for a stable figure, short enough to run in CI.
const TARGET: Duration = Duration::from_millis(500);

/// Runs `op` in growing batches until `TARGET` has passed; returns nanoseconds per call.
fn time_per_call(mut op: impl FnMut()) -> f64 {
    // Warm caches and the branch predictor first.
    for _ in 0..10_000 {
        op();
    }
    let mut calls: u64 = 0;
    let start = Instant::now();
    while start.elapsed() < TARGET {
        for _ in 0..10_000 {
            op();
        }
        calls += 10_000;
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn main() {
    let psk = Psk::from_bytes([0x5a; 32]);
    let announcement = Announcement {
        group: 1000,
        timestamp_unix_us: 1_795_549_038_652_449,
        address: "127.1.2.3".parse().unwrap(),
    };
    let packet = encode_signed(&announcement, &psk);
    let verifier = Verifier::new(&psk);
    let mut forged = packet;
    forged[65] ^= 1;

    let results = [
        (
            "sign (key + HMAC)",
            time_per_call(|| {
                black_box(encode_signed(black_box(&announcement), black_box(&psk)));
            }),
        ),
        (
            "verify, valid (length, version, HMAC)",
            time_per_call(|| {
                let raw = RawAnnouncement::parse(black_box(&packet)).unwrap();
                black_box(verifier.verify(&raw).unwrap());
            }),
        ),
        (
            "verify, bad signature",
            time_per_call(|| {
                black_box(verifier.verify_and_decode(black_box(&forged)).unwrap_err());
            }),
        ),
        (
            "peek_group (drop before crypto)",
            time_per_call(|| {
                black_box(peek_group(black_box(&packet)).unwrap());
            }),
        ),
    ];
    for (name, ns) in results {
        println!("{name:<40} {ns:>8.1} ns/op");
    }
}
