//! Response rate limiting (RRL), as BIND and Knot do it, per client prefix: a /24 for IPv4,
//! a /56 for IPv6 (what one site usually holds). Each prefix has a token bucket that fills
//! at `responses_per_second` and holds one second's worth; a UDP query that finds it empty is
//! over the limit, and then every `slip`-th such query is answered truncated (TC, no
//! records: a real client retries over TCP, which cannot be spoofed) and the rest are
//! dropped. A spoofed flood aimed at a victim's address therefore reflects at most the
//! limit plus a trickle of small TC answers, and a client that stops sending finds its
//! bucket refilled within a second.
//!
//! The table is bounded: a fixed number of sets of [`WAYS`] entries, chosen by a seeded hash
//! of the prefix; a new prefix takes the least recently seen entry of its set. Only the
//! UDP loop owns it (one thread), so it needs no lock; time comes in as an argument,
//! read once per batch of datagrams.

use std::net::IpAddr;
use std::time::Instant;

use crate::spec::RateLimit;

/// Entries per set: a new prefix evicts the least recently seen of these.
const WAYS: usize = 4;
/// Sets in the table; with [`WAYS`], 16 384 prefixes are tracked in 512 KiB.
const SETS: usize = 4096;
/// Credit is kept in thousandths of a response, so that refill per millisecond is exact.
const MILLI: i64 = 1000;

/// What to do with one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: answer normally.
    Answer,
    /// Over the limit, a slip: answer truncated (TC, no records).
    Slip,
    /// Over the limit: send nothing.
    Drop,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The prefix with a family tag ([`prefix_key`]); 0 for an unused entry.
    key: u64,
    /// When this prefix was last seen, in ms since the limiter started.
    seen_ms: u64,
    /// Responses it may still get now, in thousandths.
    credit: i64,
    /// Queries over the limit so far, to pick every `slip`-th.
    limited: u32,
}

/// The per-prefix buckets of one UDP socket.
pub struct RateLimiter {
    /// Credit added per ms, in thousandths: numerically the rate per second.
    refill_per_ms: i64,
    /// A full bucket: one second's worth.
    capacity: i64,
    slip: u32,
    seed: u64,
    started: Instant,
    sets: Box<[[Entry; WAYS]]>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let rate = i64::from(limit.responses_per_second);
        RateLimiter {
            refill_per_ms: rate,
            capacity: rate * MILLI,
            slip: limit.slip,
            // Unpredictable, so that no one can aim many prefixes at one set.
            seed: fastrand::u64(..),
            started: Instant::now(),
            sets: vec![[Entry::default(); WAYS]; SETS].into_boxed_slice(),
        }
    }

    /// Milliseconds since the limiter started, the clock [`RateLimiter::check`] takes.
    pub fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Counts one response to `client` at `now_ms` and says whether it may go out.
    pub fn check(&mut self, client: IpAddr, now_ms: u64) -> Verdict {
        let key = prefix_key(client);
        let set = self.set_of(key);
        let capacity = self.capacity;
        let ways = &mut self.sets[set];
        let entry = match ways.iter().position(|entry| entry.key == key) {
            Some(way) => &mut ways[way],
            None => {
                // The least recently seen entry (unused ones have seen_ms 0) makes room.
                let oldest = (0..WAYS).min_by_key(|&way| ways[way].seen_ms).unwrap_or(0);
                ways[oldest] = Entry { key, seen_ms: now_ms, credit: capacity, limited: 0 };
                &mut ways[oldest]
            }
        };
        let elapsed = now_ms.saturating_sub(entry.seen_ms) as i64;
        entry.credit = entry.credit.saturating_add(elapsed.saturating_mul(self.refill_per_ms));
        entry.credit = entry.credit.min(capacity);
        entry.seen_ms = entry.seen_ms.max(now_ms);
        if entry.credit >= MILLI {
            entry.credit -= MILLI;
            return Verdict::Answer;
        }
        entry.limited = entry.limited.wrapping_add(1);
        if self.slip > 0 && entry.limited % self.slip == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    fn set_of(&self, key: u64) -> usize {
        // Multiplicative hashing: the high bits of the product mix every bit of the key.
        let hash = (key ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (hash >> (64 - SETS.trailing_zeros())) as usize
    }
}

/// The client's prefix with its family in the top bits, never 0: IPv4 /24 (an IPv4-mapped
/// IPv6 address, as a dual-stack socket reports IPv4 clients, counts as IPv4), IPv6 /56.
fn prefix_key(client: IpAddr) -> u64 {
    match client.to_canonical() {
        IpAddr::V4(v4) => (4 << 60) | u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => {
            (6 << 60) | (u64::from_be_bytes(v6.octets()[..8].try_into().unwrap_or([0; 8])) >> 8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(responses_per_second: u32, slip: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { responses_per_second, slip })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The verdicts for `count` queries from `client` at `now_ms`.
    fn burst(limiter: &mut RateLimiter, client: &str, count: usize, now_ms: u64) -> Vec<Verdict> {
        (0..count).map(|_| limiter.check(ip(client), now_ms)).collect()
    }

    #[test]
    fn a_prefix_gets_its_rate_then_every_slipth_answer_is_truncated() {
        let mut limiter = limiter(5, 2);
        let verdicts = burst(&mut limiter, "192.0.2.1", 11, 1000);
        assert_eq!(verdicts[..5], [Verdict::Answer; 5]);
        assert_eq!(
            verdicts[5..],
            [
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip
            ]
        );
        // Another address of the same /24 shares the bucket; another /24 does not.
        assert_eq!(limiter.check(ip("192.0.2.200"), 1000), Verdict::Drop);
        assert_eq!(limiter.check(ip("192.0.3.1"), 1000), Verdict::Answer);
        // An IPv4 client seen through a dual-stack socket is the same client.
        assert_eq!(limiter.check(ip("::ffff:192.0.2.7"), 1000), Verdict::Slip);
    }

    #[test]
    fn slip_0_drops_everything_and_slip_1_truncates_everything() {
        let mut never = limiter(1, 0);
        assert_eq!(burst(&mut never, "10.0.0.1", 4, 0)[1..], [Verdict::Drop; 3]);
        let mut always = limiter(1, 1);
        assert_eq!(burst(&mut always, "10.0.0.1", 4, 0)[1..], [Verdict::Slip; 3]);
    }

    #[test]
    fn ipv6_clients_are_limited_per_56() {
        let mut limiter = limiter(2, 0);
        assert_eq!(
            burst(&mut limiter, "2001:db8:0:ab00::1", 3, 0),
            [Verdict::Answer, Verdict::Answer, Verdict::Drop]
        );
        // The same /56 (only the last 8 bits of the fourth group differ).
        assert_eq!(limiter.check(ip("2001:db8:0:abff::9"), 0), Verdict::Drop);
        // The next /56.
        assert_eq!(limiter.check(ip("2001:db8:0:ac00::1"), 0), Verdict::Answer);
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_holds_one_second() {
        let mut limiter = limiter(10, 0);
        let client = "198.51.100.1";
        assert!(burst(&mut limiter, client, 10, 0).iter().all(|v| *v == Verdict::Answer));
        assert_eq!(limiter.check(ip(client), 0), Verdict::Drop);
        // A flood at a steady pace is answered at the rate: one per 100 ms.
        let answered =
            (1..=2000u64).filter(|ms| limiter.check(ip(client), *ms) == Verdict::Answer).count();
        assert_eq!(answered, 20, "2 s of flooding at 10 per second");
        // Quiet for a long time: a full bucket again, but never more than one second's worth.
        let verdicts = burst(&mut limiter, client, 11, 60_000);
        assert_eq!(verdicts[..10], [Verdict::Answer; 10]);
        assert_eq!(verdicts[10], Verdict::Drop);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recently_seen() {
        let mut limiter = limiter(1, 0);
        let table_size = limiter.sets.len() * WAYS;
        // Far more prefixes than entries: memory does not grow.
        for i in 0..(table_size as u32 * 4) {
            limiter.check(IpAddr::from((i << 8).to_be_bytes()), 5);
        }
        assert_eq!(limiter.sets.len() * WAYS, table_size);
        // A prefix that has been flooding keeps its entry while it keeps sending, however
        // many others pass (each new prefix evicts the least recently seen of its set).
        let flooder = "203.0.113.1";
        limiter.check(ip(flooder), 10);
        let mut dropped = 0;
        for round in 0..200u32 {
            let now = 11 + u64::from(round) / 4;
            if limiter.check(ip(flooder), now) == Verdict::Drop {
                dropped += 1;
            }
            // Three others per round, never repeated.
            for other in 0..3 {
                limiter.check(IpAddr::from(((round * 3 + other + 1) << 8).to_be_bytes()), now);
            }
        }
        assert!(dropped >= 190, "the flooder kept its empty bucket: {dropped} of 200 dropped");
    }
}
