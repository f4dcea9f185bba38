//! How fast a peer answers, for NGINX Plus's `least_time` (and `random two least_time=`).
//!
//! Each peer keeps two estimates ([`Timing`]): time to the response head (`header`) and to the
//! last byte of the body (`last_byte`), both measured from the pick, kept in its
//! [`PeerState`](super::PeerState) so they survive a reload and serve whichever mode the new
//! configuration asks for.
//!
//! **Peak EWMA** ([`Latency::observe`]), as in Finagle and linkerd: a sample slower than the
//! estimate replaces it at once (a peer that turns slow is avoided at once); a faster one pulls
//! it down with weight `1 - e^(-Δt/τ)`, Δt being the time since the previous sample and τ =
//! [`DECAY`]. The estimate thus forgets over about τ of wall time whatever the request rate.
//!
//! **No starvation** ([`Latency::estimate`]). A peer that looked slow once stops getting
//! requests, and so stops getting samples; its estimate would never come down. So an estimate
//! not refreshed for a while fades by the same `e^(-idle/τ)`: a peer 100 times slower than the
//! best is tried again after about `τ × ln 100` ≈ 46 s of silence, a peer 20% slower after
//! about 2 s. If it is still slow, its answer puts the estimate back up at once (peak), so
//! the probe costs one request. A peer with no samples at all (new, or just recovered from a
//! failure) is taken to be exactly as fast as the group's average.
//!
//! Pure: every method takes `now`.

use std::time::Duration;

use tokio::time::Instant;

/// τ: how fast estimates forget (linkerd's default decay).
pub const DECAY: Duration = Duration::from_secs(10);

/// Which moment of a response `least_time` measures to.
pub use crate::config::model::TimeMode;

/// One latency estimate, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    ewma: f64,
    /// The last sample; `None`: no sample yet.
    at: Option<Instant>,
}

/// `e^(-elapsed/τ)`: how much of an old value remains after `elapsed`.
fn remains(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

impl Latency {
    /// Records that a response took `sample`, finished at `now`.
    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let x = sample.as_secs_f64() * 1e6;
        self.ewma = match self.at {
            None => x,
            Some(_) if x >= self.ewma => x,
            Some(at) => {
                let w = remains(now.saturating_duration_since(at));
                w * self.ewma + (1.0 - w) * x
            }
        };
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    /// The estimate as last updated, if there is one.
    pub fn known(&self) -> Option<f64> {
        self.at.map(|_| self.ewma)
    }

    /// The estimate at `now`: the EWMA, fading as it ages; `average` (the group's) with no
    /// sample.
    pub fn estimate(&self, now: Instant, average: f64) -> f64 {
        match self.at {
            None => average,
            Some(at) => self.ewma * remains(now.saturating_duration_since(at)),
        }
    }
}

/// A peer's two estimates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    pub header: Latency,
    pub last_byte: Latency,
}

impl Timing {
    pub fn get(&self, mode: TimeMode) -> &Latency {
        match mode {
            TimeMode::Header => &self.header,
            TimeMode::LastByte => &self.last_byte,
        }
    }
}

/// The group's average estimate from the `sum` and `count` of its known ones (0 with none).
pub fn average(sum: f64, count: usize) -> f64 {
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// How `least_time` ranks a peer: its latency (at least 1 µs, so that with no samples at all
/// the load still counts) times the requests it would have in flight with this one, per unit
/// of weight. Lower is better.
pub fn score(latency_us: f64, in_flight: u32, weight: u64) -> f64 {
    latency_us.max(1.0) * f64::from(in_flight + 1) / weight.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_slower_sample_counts_at_once_a_faster_one_gradually() {
        let t0 = Instant::now();
        let mut l = Latency::default();
        assert_eq!(l.known(), None);
        l.observe(MS(10), t0);
        assert_eq!(l.known(), Some(10_000.0));
        l.observe(MS(50), t0 + MS(1));
        assert_eq!(
            l.known(),
            Some(50_000.0),
            "peak: the slow answer wins at once"
        );
        // A fast answer one τ later pulls the estimate 1 - 1/e of the way down.
        l.observe(MS(10), t0 + MS(1) + DECAY);
        let want = 10_000.0 + 40_000.0 / std::f64::consts::E;
        assert!((l.known().unwrap() - want).abs() < 1.0, "{:?}", l.known());
    }

    #[test]
    fn fast_answers_in_quick_succession_move_the_estimate_by_elapsed_time_not_count() {
        let t0 = Instant::now();
        let mut many = Latency::default();
        many.observe(MS(100), t0);
        for n in 1..=1000 {
            many.observe(MS(1), t0 + MS(n)); // 1000 answers within one second
        }
        let mut one = Latency::default();
        one.observe(MS(100), t0);
        one.observe(MS(1), t0 + SECS(1));
        let (many, one) = (many.known().unwrap(), one.known().unwrap());
        assert!((many - one).abs() / one < 0.01, "{many} vs {one}");
    }

    #[test]
    fn a_stale_estimate_fades_so_a_once_slow_peer_is_tried_again() {
        let t0 = Instant::now();
        let mut slow = Latency::default();
        slow.observe(MS(500), t0);
        assert_eq!(slow.estimate(t0, 2_000.0), 500_000.0);
        let after = |secs| slow.estimate(t0 + SECS(secs), 2_000.0);
        assert!(after(10) < 200_000.0);
        // Below the others' 2 ms after τ × ln 250 ≈ 55 s.
        assert!(after(50) > 2_000.0 && after(60) < 2_000.0, "{}", after(60));
    }

    #[test]
    fn a_peer_without_samples_counts_as_the_group_average() {
        assert_eq!(Latency::default().estimate(Instant::now(), 30.0), 30.0);
        assert_eq!(average(90.0, 3), 30.0);
        assert_eq!(average(0.0, 0), 0.0);
    }

    #[test]
    fn score_is_latency_times_load_per_weight() {
        assert_eq!(score(2_000.0, 0, 1000), 2.0);
        assert_eq!(score(2_000.0, 3, 1000), 8.0);
        assert_eq!(score(2_000.0, 3, 2000), 4.0);
        // No samples anywhere: 1 µs, so the least loaded still wins.
        assert!(score(0.0, 0, 1000) < score(0.0, 1, 1000));
    }
}
