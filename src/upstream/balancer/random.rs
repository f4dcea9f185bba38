//! nginx's `random` and `random two [least_conn]` (`ngx_http_upstream_get_random_peer`,
//! `ngx_http_upstream_get_random2_peer`).
//!
//! - `random`: a peer drawn with probability proportional to its weight (`down` ones
//!   included in the draw, then rejected). A drawn peer that may not take the attempt is drawn
//!   again, up to 20 more draws per request, then round robin.
//! - `random two`: two different eligible peers are drawn, and the one with fewer attempts in
//!   flight per unit of weight wins (the second on a tie). Every draw but the one that
//!   completes the pair counts toward the 20.
//! - `random two least_time=header|last_byte` (NGINX Plus): the one with the lower `least_time`
//!   score wins instead (latency × load, see [`super::least_time`]). The group
//!   average that new and stale estimates lean on is recomputed at most once a second, so a
//!   pick still looks at two peers only.
//!
//! The generator is a xorshift64* per group, under the group's selection lock; its seed is
//! random per group (tests give their own). Draws are not nginx's `random()` sequence: only the
//! distribution matches.

use std::hash::{BuildHasher, Hasher};

use std::time::Duration;

use tokio::time::Instant;

use super::least_time;
use super::round_robin::SmoothWeighted;
use super::{Balancer, MAX_WALK, Peer, PickContext, WeightRanges};
use crate::upstream::latency::TimeMode;

/// How long `random two least_time=` reuses the group's latency average.
const KNOWN_FOR: Duration = Duration::from_secs(1);

/// Weighted random, optionally the less loaded of two, falling back to round robin.
#[derive(Debug)]
pub struct Random {
    ranges: WeightRanges,
    two: bool,
    /// `least_time=`: compare the two by latency × load instead of load.
    least_time: Option<TimeMode>,
    /// The group's known estimates (sum, count) and when they were added up.
    known: Option<((f64, usize), Instant)>,
    rng: XorShift,
    fallback: SmoothWeighted,
}

impl Random {
    /// Seeded from the process's random hash keys.
    pub fn new(peers: &[Peer], two: bool, least_time: Option<TimeMode>) -> Self {
        let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
        seed.write_usize(peers.len());
        Self::with_seed(peers, two, seed.finish()).with_least_time(least_time)
    }

    pub fn with_seed(peers: &[Peer], two: bool, seed: u64) -> Self {
        Self {
            ranges: WeightRanges::new(peers),
            two,
            least_time: None,
            known: None,
            rng: XorShift::new(seed),
            fallback: SmoothWeighted::new(peers),
        }
    }

    /// `random two least_time=mode`.
    pub fn with_least_time(mut self, mode: Option<TimeMode>) -> Self {
        self.least_time = mode;
        self
    }

    /// True if `a` should lose to `b`.
    fn worse(&mut self, peers: &[Peer], a: usize, b: usize, now: Instant) -> bool {
        let Some(mode) = self.least_time else {
            return busier(&peers[a], &peers[b]);
        };
        let known = match self.known {
            Some((known, at)) if now.saturating_duration_since(at) < KNOWN_FOR => known,
            _ => {
                let known = least_time::known_sum(peers, mode, now);
                self.known = Some((known, now));
                known
            }
        };
        let score = |i: usize| least_time::score(&peers[i], mode, false, now, known);
        score(a) > score(b)
    }

    /// A peer position drawn by weight.
    fn draw(&mut self) -> usize {
        self.ranges.find(self.rng.next())
    }
}

/// `a` carries more per unit of weight than `b`.
fn busier(a: &Peer, b: &Peer) -> bool {
    let load = |p: &Peer| (u64::from(p.state().in_flight()), u64::from(p.weight()));
    let ((a_conns, a_weight), (b_conns, b_weight)) = (load(a), load(b));
    a_conns * b_weight > b_conns * a_weight
}

impl Balancer for Random {
    fn pick(&mut self, peers: &[Peer], ctx: &mut PickContext<'_>) -> Option<usize> {
        let mut walk = ctx.tried.walk();
        if walk.steps > MAX_WALK || peers.len() < 2 {
            return self.fallback.pick(peers, ctx);
        }
        let mut first: Option<usize> = None;
        loop {
            let i = self.draw();
            if first != Some(i) && ctx.is_eligible_now(&peers[i]) {
                if !self.two {
                    ctx.tried.set_walk(walk);
                    return Some(i);
                }
                if let Some(first) = first {
                    ctx.tried.set_walk(walk);
                    let i_worse = self.worse(peers, i, first, ctx.now);
                    return Some(if i_worse { first } else { i });
                }
                first = Some(i);
            }
            walk.steps += 1;
            if walk.steps > MAX_WALK {
                ctx.tried.set_walk(walk);
                return self.fallback.pick(peers, ctx);
            }
        }
    }
}

/// Marsaglia's xorshift64* generator: fast, tiny state, good enough to spread load.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // The state must not be 0; mix the seed so that small seeds start well apart.
        Self((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::upstream::balancer::tests::{letter, peers, peers_with};
    use crate::upstream::{PeerGuard, Tried};

    fn counts(balancer: &mut Random, peers: &[Peer], n: usize) -> Vec<usize> {
        let mut counts = vec![0; peers.len()];
        for _ in 0..n {
            let mut tried = Tried::new();
            let i = balancer
                .pick(peers, &mut PickContext::new(&mut tried, Instant::now()))
                .expect("a peer");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn draws_follow_the_weights() {
        let peers = peers(&[1, 2, 5]);
        let mut balancer = Random::with_seed(&peers, false, 7);
        let got = counts(&mut balancer, &peers, 8000);
        // Expected 1000, 2000, 5000; allow 10%.
        for (count, want) in got.iter().zip([1000, 2000, 5000]) {
            assert!(count.abs_diff(want) < want / 10, "{got:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_choices() {
        let peers = peers(&[1, 1, 1]);
        let run = |seed| {
            let mut balancer = Random::with_seed(&peers, false, seed);
            (0..20)
                .map(|_| {
                    let mut tried = Tried::new();
                    let ctx = &mut PickContext::new(&mut tried, Instant::now());
                    letter(balancer.pick(&peers, ctx).unwrap())
                })
                .collect::<String>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn ineligible_peers_are_drawn_again() {
        let peers = peers_with(&[5, 1], |i, spec| spec.down = i == 0);
        let mut balancer = Random::with_seed(&peers, false, 3);
        // a has most of the weight but is down: every request ends on b (by redrawing or,
        // after 21 draws of a, by round robin).
        assert_eq!(counts(&mut balancer, &peers, 200), [0, 200]);
    }

    #[test]
    fn two_takes_the_less_loaded_of_two_different_peers() {
        // Two peers: every pair is {a, b}, so the less loaded one always wins.
        let peers = peers(&[1, 1]);
        let mut balancer = Random::with_seed(&peers, true, 11);
        let _busy: Vec<PeerGuard> = (0..3)
            .map(|_| PeerGuard::new(&peers[0], false, Instant::now()))
            .collect();
        assert_eq!(counts(&mut balancer, &peers, 100), [0, 100]);
    }

    #[test]
    fn two_compares_load_per_unit_of_weight() {
        // a: 1 in flight, weight 2 (0.5); b: 1 in flight, weight 1 (1.0): a wins every pair.
        let peers = peers(&[2, 1]);
        let mut balancer = Random::with_seed(&peers, true, 5);
        let _a = PeerGuard::new(&peers[0], false, Instant::now());
        let _b = PeerGuard::new(&peers[1], false, Instant::now());
        assert_eq!(counts(&mut balancer, &peers, 100), [100, 0]);
    }

    #[test]
    fn two_least_time_takes_the_faster_of_two() {
        let t0 = Instant::now();
        let peers = peers(&[1, 1, 1]);
        let ms = std::time::Duration::from_millis;
        for (peer, took) in peers.iter().zip([50, 5, 20]) {
            let mut guard = PeerGuard::new(peer, false, t0 - ms(took));
            guard.success_at(t0);
        }
        let mut balancer =
            Random::with_seed(&peers, true, 17).with_least_time(Some(TimeMode::Header));
        let got = counts(&mut balancer, &peers, 300);
        // a (50 ms) loses every pair it is drawn into; b (5 ms) wins every pair.
        assert_eq!(got[0], 0, "{got:?}");
        assert!(got[1] > got[2], "{got:?}");
        // Plain `two` ignores latency: a gets its share.
        let mut plain = Random::with_seed(&peers, true, 17);
        assert!(counts(&mut plain, &peers, 300)[0] > 50);
    }

    #[test]
    fn two_spreads_idle_peers_by_weight() {
        // Idle peers tie, and a tie goes to the second draw: still proportional to weight.
        let peers = peers(&[1, 1, 1, 1]);
        let mut balancer = Random::with_seed(&peers, true, 9);
        let got = counts(&mut balancer, &peers, 4000);
        assert!(got.iter().all(|&c| c.abs_diff(1000) < 150), "{got:?}");
    }

    #[test]
    fn a_request_tries_every_peer_once_then_none() {
        for two in [false, true] {
            let peers = peers(&[1, 1, 1]);
            let mut balancer = Random::with_seed(&peers, two, 13);
            let mut tried = Tried::new();
            let mut got = Vec::new();
            while let Some(i) =
                balancer.pick(&peers, &mut PickContext::new(&mut tried, Instant::now()))
            {
                assert!(!got.contains(&i), "{i} twice");
                got.push(i);
                tried.insert(i);
            }
            assert_eq!(got.len(), 3, "two={two}");
        }
    }

    #[test]
    fn twenty_rejected_draws_hand_over_to_round_robin() {
        let peers = peers_with(&[1, 1], |_, spec| spec.down = true);
        let mut balancer = Random::with_seed(&peers, false, 1);
        let mut tried = Tried::new();
        assert_eq!(
            balancer.pick(&peers, &mut PickContext::new(&mut tried, Instant::now())),
            None
        );
        assert_eq!(tried.walk().steps, MAX_WALK + 1);
    }
}
