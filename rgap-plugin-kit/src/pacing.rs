//! Pacing of expensive, repeatable work by its own CPU cost: after work that took `t` of CPU,
//! the next run waits `t × factor` (capped). Cheap work (a small group, a short file) runs at
//! once; work that grows with a fleet (copying or rendering 100 000 members) runs at most a
//! `1 / (1 + factor)` share of the time, instead of as often as changes arrive.
//!
//! With a knee, costly work is weighed more than its cost: `t × (1 + t / knee)`. A run that
//! costs tens of microseconds then waits about `factor` times that, so small changes still
//! follow each other within milliseconds, while one that costs milliseconds (and copies
//! megabytes downstream) waits several times longer, up to the cap.
//!
//! The cost is the calling thread's CPU time, not wall time, so a thread that was merely
//! preempted does not mistake the wait for cost and pause for long.

use std::time::{Duration, Instant};

/// When the next run of some paced work may start.
#[derive(Debug, Clone)]
pub struct CostPacer {
    factor: u32,
    max_pause: Duration,
    knee: Option<Duration>,
    next_at: Instant,
}

impl CostPacer {
    /// A pacer allowing work at once, then `factor` times its cost later, at most `max_pause`.
    pub fn new(factor: u32, max_pause: Duration) -> CostPacer {
        CostPacer { factor, max_pause, knee: None, next_at: Instant::now() }
    }

    /// The same, weighing a run's cost `t` as `t × (1 + t / knee)`.
    pub fn with_knee(self, knee: Duration) -> CostPacer {
        CostPacer { knee: Some(knee).filter(|knee| !knee.is_zero()), ..self }
    }

    /// The earliest start of the next run.
    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Whether the next run may start at `now`.
    pub fn is_ready(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    /// Records a run that cost `cost` of CPU and has just finished.
    pub fn record(&mut self, cost: Duration) {
        self.next_at = Instant::now() + self.pause_after(cost);
    }

    /// How long the next run waits after one that cost `cost`.
    pub fn pause_after(&self, cost: Duration) -> Duration {
        let weight = self.knee.map_or(1.0, |knee| 1.0 + cost.as_secs_f64() / knee.as_secs_f64());
        cost.mul_f64(weight).saturating_mul(self.factor).min(self.max_pause)
    }
}

/// CPU time used by the calling thread so far (Linux: `CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if result != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_the_cost_times_the_factor_capped() {
        let mut pacer = CostPacer::new(10, Duration::from_millis(50));
        assert!(pacer.is_ready(Instant::now()));
        // Bracketing `record` with two readings of the clock keeps this exact, however slow
        // the machine: the next start is 20 ms after some moment between them.
        let before = Instant::now();
        pacer.record(Duration::from_millis(2));
        let after = Instant::now();
        assert!(pacer.next_at() >= before + Duration::from_millis(20));
        assert!(pacer.next_at() <= after + Duration::from_millis(20));
        assert!(!pacer.is_ready(before));
        pacer.record(Duration::from_secs(1));
        assert!(pacer.next_at() <= Instant::now() + Duration::from_millis(50), "capped");
    }

    #[test]
    fn with_a_knee_costly_runs_wait_more_than_proportionally() {
        let ms = Duration::from_millis(1);
        let pacer = CostPacer::new(100, Duration::from_secs(1)).with_knee(ms);
        // Far below the knee: about the plain pause (25 µs × 100 = 2.5 ms, plus 2.5 %).
        let small = pacer.pause_after(Duration::from_micros(25));
        assert!(small > Duration::from_micros(2_500) && small < Duration::from_micros(2_600));
        // At the knee, twice the plain pause; ten times the cost, more than ten times the pause.
        assert_eq!(pacer.pause_after(ms), 200 * ms);
        assert!(pacer.pause_after(2 * ms) > pacer.pause_after(ms / 5) * 10);
        // Capped.
        assert_eq!(pacer.pause_after(5 * ms), Duration::from_secs(1));
    }

    #[test]
    fn thread_cpu_time_counts_work_not_sleep() {
        let start = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time() - start;
        assert!(slept < Duration::from_millis(10), "sleeping cost {slept:?}");
        // Work makes it advance (however busy the machine is, within a generous deadline).
        let before = thread_cpu_time();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while thread_cpu_time() - before < Duration::from_millis(5) {
            assert!(Instant::now() < deadline, "thread CPU time does not advance with work");
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}
