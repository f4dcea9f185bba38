//! NGINX Plus's `least_time header|last_byte [inflight]`: the eligible peer with the lowest
//! latency × load wins; ties share by smooth weighted round robin, as Plus does.
//!
//! A peer's score is `latency × (in flight + 1) / weight` ([`latency::score`]):
//! - `latency` is the peer's peak EWMA of the time to the response head (`header`) or to its
//!   last byte (`last_byte`), fading when it is not refreshed (so a peer slow once is tried
//!   again), and the group average for a peer without samples (see
//!   [`crate::upstream::latency`]);
//! - `in flight + 1` is the load the peer would carry with this request, so a fast peer is not
//!   buried under every request (Plus: "least average response time and least number of active
//!   connections");
//! - `weight` is in thousandths and follows the `slow_start` ramp.
//!
//! `inflight` (Plus: "incomplete requests are also taken into account"): the latency used is at
//! least the average age of the peer's requests still in flight, so a peer that stops answering
//! looks slower with every second, before any of its requests completes or times out.
//! Without it only completed requests count, as in Plus since 1.11.6.

use tokio::time::Instant;

use super::round_robin::SmoothWeighted;
use super::{Balancer, Peer, PickContext};
use crate::upstream::latency::{self, TimeMode};

/// Lowest latency × load, ties broken by smooth weighted round robin.
#[derive(Debug)]
pub struct LeastTime {
    mode: TimeMode,
    inflight: bool,
    ties: SmoothWeighted,
    /// Per peer, by position: its own latency estimate during a pick, then its score. Kept here
    /// so that a pick reads each peer's estimate once and does not allocate.
    scores: Box<[f64]>,
}

impl LeastTime {
    pub fn new(peers: &[Peer], mode: TimeMode, inflight: bool) -> Self {
        Self {
            mode,
            inflight,
            ties: SmoothWeighted::new(peers),
            scores: vec![0.0; peers.len()].into_boxed_slice(),
        }
    }
}

/// The sum and number of the estimates at `now` of the peers that have one (for the group
/// average that a peer without samples is given: exactly what a lone measured peer scores, so
/// the two share until both are measured).
pub(crate) fn known_sum(peers: &[Peer], mode: TimeMode, now: Instant) -> (f64, usize) {
    peers
        .iter()
        .filter_map(|peer| own_estimate(peer, mode, now))
        .fold((0.0, 0), |(sum, n), estimate| (sum + estimate, n + 1))
}

/// `peer`'s own estimate at `now`, if it has samples.
fn own_estimate(peer: &Peer, mode: TimeMode, now: Instant) -> Option<f64> {
    let latency = *peer.state().timing().get(mode);
    latency.known().map(|_| latency.estimate(now, 0.0))
}

/// `peer`'s score at `now` (lower is better), given the group's [`known_sum`].
pub(crate) fn score(
    peer: &Peer,
    mode: TimeMode,
    inflight: bool,
    now: Instant,
    (sum, count): (f64, usize),
) -> f64 {
    let average = latency::average(sum, count);
    let own = own_estimate(peer, mode, now).unwrap_or(average);
    score_of(peer, own, inflight, now)
}

/// `peer`'s score at `now` with `latency` as its estimate.
fn score_of(peer: &Peer, mut latency: f64, inflight: bool, now: Instant) -> f64 {
    let state = peer.state();
    if inflight {
        latency = latency.max(state.in_flight_age_us(now));
    }
    latency::score(latency, state.in_flight(), peer.weight_at(now))
}

impl Balancer for LeastTime {
    fn pick(&mut self, peers: &[Peer], ctx: &mut PickContext<'_>) -> Option<usize> {
        let Self {
            mode,
            inflight,
            ties,
            scores,
        } = self;
        let now = ctx.now;
        // Every peer's own estimate (NaN: none yet), and the average of the known ones.
        let (mut sum, mut count) = (0.0, 0);
        for (peer, slot) in peers.iter().zip(scores.iter_mut()) {
            *slot = match own_estimate(peer, *mode, now) {
                Some(estimate) => {
                    sum += estimate;
                    count += 1;
                    estimate
                }
                None => f64::NAN,
            };
        }
        let average = latency::average(sum, count);
        // The eligible peers' scores (the others: infinity), the lowest and whether it ties.
        let mut best: Option<(usize, f64)> = None;
        let mut tied = false;
        for (i, (peer, slot)) in peers.iter().zip(scores.iter_mut()).enumerate() {
            if !ctx.is_eligible_now(peer) {
                *slot = f64::INFINITY;
                continue;
            }
            let own = if slot.is_nan() { average } else { *slot };
            let score = score_of(peer, own, *inflight, now);
            *slot = score;
            match best {
                Some((_, lowest)) if score > lowest => {}
                Some((_, lowest)) if score == lowest => tied = true,
                _ => {
                    best = Some((i, score));
                    tied = false;
                }
            }
        }
        let (first, lowest) = best?;
        if !tied {
            return Some(first);
        }
        let scores = &*scores;
        let among_lowest = |i: usize, _: &Peer| scores[i] == lowest;
        (ties.pick_among(peers, ctx, among_lowest)).or_else(|| ties.pick(peers, ctx))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::balancer::round_robin::tests::sequence;
    use crate::upstream::balancer::tests::{letter, peers, peers_with};
    use crate::upstream::{PeerGuard, Tried};

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Records that `peer` answered in `took`, finishing at `at`.
    fn answered(peer: &Peer, took: Duration, at: Instant) {
        let mut guard = PeerGuard::new(peer, false, at - took);
        guard.success_at(at);
        guard.body_done(at);
    }

    fn pick_at(balancer: &mut LeastTime, peers: &[Peer], now: Instant) -> char {
        let mut tried = Tried::new();
        letter(
            balancer
                .pick(peers, &mut PickContext::new(&mut tried, now))
                .expect("a peer"),
        )
    }

    #[test]
    fn without_samples_it_is_the_least_loaded_per_weight_then_round_robin() {
        let peers = peers(&[1, 1]);
        let mut balancer = LeastTime::new(&peers, TimeMode::Header, false);
        assert_eq!(sequence(&mut balancer, &peers, 4), "a b a b");
        let _busy = PeerGuard::new(&peers[0], false, Instant::now());
        assert_eq!(sequence(&mut balancer, &peers, 2), "b b");
        // Weight divides the load: idle, the weight-2 peer wins; with one request in flight it
        // ties with the idle weight-1 peer.
        let peers = crate::upstream::balancer::tests::peers(&[2, 1]);
        let mut balancer = LeastTime::new(&peers, TimeMode::Header, false);
        assert_eq!(sequence(&mut balancer, &peers, 2), "a a");
        let _busy = PeerGuard::new(&peers[0], false, Instant::now());
        let got = sequence(&mut balancer, &peers, 3);
        assert!(got.contains('a') && got.contains('b'), "{got}");
    }

    #[test]
    fn the_faster_peer_wins_until_its_load_outweighs_its_speed() {
        let t0 = Instant::now();
        let peers = peers(&[1, 1]);
        answered(&peers[0], MS(40), t0);
        answered(&peers[1], MS(10), t0);
        let mut balancer = LeastTime::new(&peers, TimeMode::Header, false);
        // b: 10 ms × (n+1) against a: 40 ms × 1; b takes requests until it holds 4.
        let mut held = Vec::new();
        let mut got = String::new();
        for _ in 0..5 {
            let c = pick_at(&mut balancer, &peers, t0);
            got.push(c);
            let i = (c as u8 - b'a') as usize;
            held.push(PeerGuard::new(&peers[i], false, t0));
        }
        // At 3 held, b's 10 × 4 = 40 ties a's 40: round robin between them.
        assert_eq!(&got[..3], "bbb");
        assert!(got[3..].contains('a'), "{got}");
    }

    #[test]
    fn header_and_last_byte_are_separate_measures() {
        let t0 = Instant::now();
        let peers = peers(&[1, 1]);
        // a answers its head fast and streams a long body; b the opposite.
        for (peer, head, end) in [(&peers[0], 1, 500), (&peers[1], 20, 30)] {
            let mut guard = PeerGuard::new(peer, false, t0);
            guard.success_at(t0 + MS(head));
            guard.body_done(t0 + MS(end));
        }
        let now = t0 + MS(500);
        let mut header = LeastTime::new(&peers, TimeMode::Header, false);
        let mut last_byte = LeastTime::new(&peers, TimeMode::LastByte, false);
        assert_eq!(pick_at(&mut header, &peers, now), 'a');
        assert_eq!(pick_at(&mut last_byte, &peers, now), 'b');
    }

    #[test]
    fn a_peer_slow_once_gets_tried_again_after_its_estimate_fades() {
        let t0 = Instant::now();
        let peers = peers(&[1, 1]);
        answered(&peers[0], MS(500), t0);
        answered(&peers[1], MS(5), t0);
        let mut balancer = LeastTime::new(&peers, TimeMode::Header, false);
        assert_eq!(pick_at(&mut balancer, &peers, t0), 'b');
        // b keeps answering in 5 ms; a gets no request until its 500 ms has faded below 5 ms.
        let mut seen_a = None;
        for s in 1..=120 {
            let now = t0 + Duration::from_secs(s);
            answered(&peers[1], MS(5), now);
            if pick_at(&mut balancer, &peers, now) == 'a' {
                seen_a = Some(s);
                break;
            }
        }
        // τ × ln 100 ≈ 46 s.
        assert_eq!(seen_a, Some(47));
        // Still slow: one answer and it is avoided again.
        let now = t0 + Duration::from_secs(47);
        answered(&peers[0], MS(500), now);
        assert_eq!(pick_at(&mut balancer, &peers, now), 'b');
    }

    #[test]
    fn a_new_peer_starts_at_the_group_average() {
        let t0 = Instant::now();
        let peers = peers(&[1, 1, 1]);
        answered(&peers[0], MS(10), t0);
        answered(&peers[1], MS(30), t0);
        // c has no sample: it counts as 20 ms, between a and b.
        let mut balancer = LeastTime::new(&peers, TimeMode::Header, false);
        let known = known_sum(&peers, TimeMode::Header, t0);
        let s = |i: usize| score(&peers[i], TimeMode::Header, false, t0, known);
        assert!(s(0) < s(2) && s(2) < s(1), "{} {} {}", s(0), s(1), s(2));
        assert_eq!(pick_at(&mut balancer, &peers, t0), 'a');
    }

    #[test]
    fn inflight_counts_requests_still_waiting_for_an_answer() {
        let t0 = Instant::now();
        let peers = peers(&[1, 1]);
        answered(&peers[0], MS(10), t0);
        answered(&peers[1], MS(20), t0);
        // a has had one request in flight for 2 s with no answer.
        let _stuck = PeerGuard::new(&peers[0], false, t0 - Duration::from_secs(2));
        let mut plain = LeastTime::new(&peers, TimeMode::Header, false);
        let mut inflight = LeastTime::new(&peers, TimeMode::Header, true);
        // Plain: a is 10 ms × 2 = 20, a tie with b's 20 ms × 1. With inflight, a is 2 s × 2.
        let got: String = (0..2).map(|_| pick_at(&mut plain, &peers, t0)).collect();
        assert!(got.contains('a'), "{got}");
        assert_eq!(pick_at(&mut inflight, &peers, t0), 'b');
    }

    #[test]
    fn a_recovering_peer_weighs_as_its_slow_start_ramp_says() {
        let t0 = Instant::now();
        let peers = peers_with(&[1, 1], |i, spec| {
            if i == 0 {
                spec.slow_start = Duration::from_secs(10);
            }
        });
        peers[0].state().health().start_ramp(t0);
        answered(&peers[0], MS(10), t0);
        answered(&peers[1], MS(10), t0);
        let mut balancer = LeastTime::new(&peers, TimeMode::Header, false);
        // 1 s into the ramp a weighs 0.1: 10 ms / 0.1 = 100 against b's 10 ms × (n+1).
        let now = t0 + Duration::from_secs(1);
        let mut held = Vec::new();
        let mut got = String::new();
        for _ in 0..12 {
            let c = pick_at(&mut balancer, &peers, now);
            got.push(c);
            held.push(PeerGuard::new(
                &peers[(c as u8 - b'a') as usize],
                false,
                now,
            ));
        }
        assert_eq!(got.matches('a').count(), 1, "{got}");
    }
}
