//! Micro-benchmark of the per-datagram work: verify (clone of the pre-keyed HMAC + update +
//! constant-time compare), sign (key + update + finalize), and the listener's own
//! `Checker::check` (every check a source runs) on a valid datagram, a forged one and one of
//! an unknown group. A plain timing loop keeps the dependency list short; run with
//! `cargo bench -p rgap-core --bench protocol`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rgap_core::config::GroupConfig;
use rgap_core::duration::GoDuration;
use rgap_core::listener::Checker;
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
    // As the listener is configured: a few groups, the announcement's among them; checked
    // "now", at the announcement's own timestamp.
    let now = announcement.timestamp_unix_us;
    let groups: Vec<GroupConfig> = [1000, 2000, 3000, 4000]
        .into_iter()
        .map(|id| GroupConfig {
            id,
            psk: psk.clone().into(),
            expire: GoDuration(Duration::from_secs(15)),
            ..GroupConfig::default()
        })
        .collect();
    let checker = Checker::new(&groups);
    let unknown = encode_signed(&Announcement { group: 4242, ..announcement }, &psk);

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
            "Checker::check, valid",
            time_per_call(|| {
                black_box(checker.check(black_box(&packet), now).unwrap());
            }),
        ),
        (
            "Checker::check, bad signature",
            time_per_call(|| {
                black_box(checker.check(black_box(&forged), now).unwrap_err());
            }),
        ),
        (
            "Checker::check, unknown group (dropped)",
            time_per_call(|| {
                black_box(checker.check(black_box(&unknown), now).unwrap_err());
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
