//! NGINX Plus's `slow_start=time`: a peer that comes back (its passive health recovers, or a
//! reload adds it to a group that was already serving) gets its weight back gradually, from
//! about 0 to `weight` in a straight line over `time`, so a cold server is not handed its full
//! share at once.
//!
//! Weights are integers in nginx, so a ramp on `weight=1` could only jump from 0 to 1. The
//! balancers therefore compare weights in thousandths ([`SCALE`]): a peer `elapsed` into its
//! ramp weighs `weight × SCALE × elapsed / time`, at least 1 (never exactly 0, so two peers
//! that recover together still share by round robin). Multiplying every weight by the same
//! constant changes nothing in smooth weighted round robin or in `least_conn`'s comparison, so
//! without a ramp the choices stay nginx's, step for step.
//!
//! Pure: takes `now`, reads no clock.

use std::time::Duration;

use tokio::time::Instant;

/// Weights are compared in thousandths of a unit.
pub const SCALE: u64 = 1000;

/// `weight` (whole units) as the balancers compare it at `now`, in thousandths: the full
/// `weight × SCALE` outside a ramp, a straight-line share of it during one. `since` is when
/// the ramp began (`None`: never). A weight of 0 (passive health took it all) stays 0.
pub fn scaled_weight(
    weight: u32,
    slow_start: Duration,
    since: Option<Instant>,
    now: Instant,
) -> u64 {
    let full = u64::from(weight) * SCALE;
    let Some(since) = since else {
        return full;
    };
    if slow_start.is_zero() || full == 0 {
        return full;
    }
    let elapsed = now.saturating_duration_since(since);
    if elapsed >= slow_start {
        return full;
    }
    let share = (u128::from(full) * elapsed.as_nanos()) / slow_start.as_nanos();
    (share as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn weight_climbs_in_a_straight_line_over_slow_start() {
        let t0 = Instant::now();
        let cases = [
            (0, 1),     // the very start: not 0, so it is not starved of round-robin turns
            (3, 300),   // 10% of 3000
            (15, 1500), // half way
            (27, 2700),
            (30, 3000), // full weight from then on
            (99, 3000),
        ];
        for (after, want) in cases {
            let got = scaled_weight(3, SECS(30), Some(t0), t0 + SECS(after));
            assert_eq!(got, want, "{after}s into the ramp");
        }
    }

    #[test]
    fn no_ramp_is_the_full_weight_scaled() {
        let t0 = Instant::now();
        assert_eq!(scaled_weight(5, SECS(30), None, t0), 5000);
        assert_eq!(scaled_weight(5, Duration::ZERO, Some(t0), t0), 5000);
        assert_eq!(scaled_weight(0, SECS(30), Some(t0), t0 + SECS(1)), 0);
    }

    #[test]
    fn an_instant_before_the_ramp_counts_as_its_start() {
        let t0 = Instant::now();
        assert_eq!(scaled_weight(2, SECS(10), Some(t0 + SECS(5)), t0), 1);
    }
}
