//! nginx's `least_conn` (`ngx_http_upstream_get_least_conn_peer`).
//!
//! The eligible peer with the fewest attempts in flight relative to its weight wins: `a` beats
//! `b` when `a.in_flight * b.weight < b.in_flight * a.weight`, so a weight-2 peer takes twice the
//! load of a weight-1 peer. Peers tied at the lowest ratio share by smooth weighted round robin
//! among themselves alone (they gain `current_weight`, the others neither gain nor pay).
//!
//! Two details follow nginx exactly:
//! - The comparison uses the configured `weight`; only the tie-break uses the effective weight
//!   that failures lower.
//! - With no tie the winner is taken directly, and nobody's round-robin state moves.
//!
//! A peer on its `slow_start` ramp (NGINX Plus) counts with the share of its weight it has
//! reached: idle, it still wins against busy peers, but one request in flight makes it look as
//! loaded as `1 / share` requests would on a full-weight peer, so its load climbs with the ramp.
//!
//! In-flight counts are shared by every thread and every snapshot (nginx's `conns` with a
//! `zone`), so a reload does not forget the load a peer carries.

use tokio::time::Instant;

use super::round_robin::SmoothWeighted;
use super::{Balancer, Peer, PickContext};

/// Fewest in flight per weight, ties broken by smooth weighted round robin.
#[derive(Debug)]
pub struct LeastConn {
    /// The round robin that breaks ties.
    ties: SmoothWeighted,
}

impl LeastConn {
    pub fn new(peers: &[Peer]) -> Self {
        Self {
            ties: SmoothWeighted::new(peers),
        }
    }
}

/// A peer's load as least_conn compares it at `now`: `(in flight, weight)`, the weight in
/// thousandths and on the peer's `slow_start` ramp (a recovering peer counts as a small one).
fn load(peer: &Peer, now: Instant) -> (u64, u64) {
    (u64::from(peer.state().in_flight()), peer.weight_at(now))
}

/// `a` carries less per unit of weight than `b` (`Less`), as much (`Equal`), or more.
fn compare((a_conns, a_weight): (u64, u64), (b_conns, b_weight): (u64, u64)) -> std::cmp::Ordering {
    let cross = |conns: u64, weight: u64| u128::from(conns) * u128::from(weight);
    cross(a_conns, b_weight).cmp(&cross(b_conns, a_weight))
}

impl Balancer for LeastConn {
    fn pick(&mut self, peers: &[Peer], ctx: &mut PickContext<'_>) -> Option<usize> {
        // The first eligible peer of the lowest load, and whether another one ties it.
        let mut best: Option<(usize, (u64, u64))> = None;
        let mut tied = false;
        for (i, peer) in peers.iter().enumerate() {
            if !ctx.is_eligible_now(peer) {
                continue;
            }
            let load = load(peer, ctx.now);
            match best.map(|(_, best)| compare(load, best)) {
                None | Some(std::cmp::Ordering::Less) => {
                    best = Some((i, load));
                    tied = false;
                }
                Some(std::cmp::Ordering::Equal) => tied = true,
                Some(std::cmp::Ordering::Greater) => {}
            }
        }
        let (first, lowest) = best?;
        if !tied {
            return Some(first);
        }
        let now = ctx.now;
        let among_lowest = |_: usize, peer: &Peer| compare(load(peer, now), lowest).is_eq();
        // Counts may move between the two passes (a response ends): if no peer is at the
        // lowest load any more, plain round robin among the eligible still gives an answer.
        (self.ties.pick_among(peers, ctx, among_lowest)).or_else(|| self.ties.pick(peers, ctx))
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::upstream::balancer::round_robin::tests::sequence;
    use crate::upstream::balancer::tests::{letter, peers, peers_with};
    use crate::upstream::{PeerGuard, Tried};

    /// Holds `n` attempts in flight on `peer`.
    fn hold(peer: &Peer, n: usize) -> Vec<PeerGuard> {
        (0..n)
            .map(|_| PeerGuard::new(peer, false, Instant::now()))
            .collect()
    }

    #[test]
    fn idle_peers_share_by_smooth_weighted_round_robin() {
        // Nothing in flight: every pick is a tie among all, so least_conn is round robin.
        let cases: [(&[u32], &str); 3] = [
            (&[1, 1, 1], "a b c a b c"),
            (&[5, 1, 1], "a a b a c a a"),
            (&[3, 2], "a b a b a"),
        ];
        for (weights, want) in cases {
            let peers = peers(weights);
            let mut balancer = LeastConn::new(&peers);
            let n = want.split(' ').count();
            assert_eq!(sequence(&mut balancer, &peers, n), want, "{weights:?}");
        }
    }

    #[test]
    fn the_peer_with_fewest_in_flight_wins() {
        let peers = peers(&[1, 1, 1]);
        let mut balancer = LeastConn::new(&peers);
        let _a = hold(&peers[0], 2);
        let _b = hold(&peers[1], 1);
        let _c = hold(&peers[2], 3);
        assert_eq!(sequence(&mut balancer, &peers, 3), "b b b");
    }

    #[test]
    fn in_flight_is_compared_per_unit_of_weight() {
        // a: 3 in flight, weight 4 (0.75); b: 1 in flight, weight 1 (1.0): a wins.
        let peers = peers(&[4, 1]);
        let mut balancer = LeastConn::new(&peers);
        let _a = hold(&peers[0], 3);
        let _b = hold(&peers[1], 1);
        assert_eq!(sequence(&mut balancer, &peers, 1), "a");
        // a: 4 in flight (1.0) ties b (1.0): round robin among the tie, a first (weight 4).
        let _a4 = hold(&peers[0], 1);
        assert_eq!(sequence(&mut balancer, &peers, 5), "a a b a a");
    }

    #[test]
    fn ties_move_only_the_tied_peers_round_robin_weights() {
        // b is busy; a and c tie at 0 and alternate. b's current weight never moves, so when
        // b is idle again the three start from a and c's state, not from a fresh one.
        let peers = peers(&[1, 1, 1]);
        let mut balancer = LeastConn::new(&peers);
        let busy = hold(&peers[1], 1);
        assert_eq!(sequence(&mut balancer, &peers, 4), "a c a c");
        assert_eq!(*balancer.ties_current(), [0, 0, 0]);
        let _one_more = sequence(&mut balancer, &peers, 1); // a: [-1, 0, 1]
        drop(busy);
        // [0, 1, 2] -> c, [1, 2, 0] -> b, [2, 0, 1] -> a
        assert_eq!(sequence(&mut balancer, &peers, 3), "c b a");
    }

    #[test]
    fn a_single_winner_takes_no_round_robin_step() {
        let peers = peers(&[1, 1]);
        let mut balancer = LeastConn::new(&peers);
        let _a = hold(&peers[0], 1);
        assert_eq!(sequence(&mut balancer, &peers, 2), "b b");
        assert_eq!(*balancer.ties_current(), [0, 0]);
    }

    #[test]
    fn ineligible_peers_are_skipped_even_when_least_loaded() {
        let peers = peers_with(&[1, 1, 1], |i, spec| {
            spec.down = i == 0;
            spec.max_conns = if i == 1 { 1 } else { 0 };
        });
        let mut balancer = LeastConn::new(&peers);
        let _b = hold(&peers[1], 1); // at max_conns
        let _c = hold(&peers[2], 5);
        assert_eq!(sequence(&mut balancer, &peers, 2), "c c");

        let mut tried = Tried::new();
        tried.insert(2);
        let now = Instant::now();
        let got = balancer.pick(&peers, &mut PickContext::new(&mut tried, now));
        assert_eq!(got, None);
    }

    #[test]
    fn a_request_retrying_skips_the_peers_it_tried() {
        let peers = peers(&[1, 1, 1]);
        let mut balancer = LeastConn::new(&peers);
        let _c = hold(&peers[2], 1);
        let now = Instant::now();
        let mut tried = Tried::new();
        let mut order = String::new();
        while let Some(i) = balancer.pick(&peers, &mut PickContext::new(&mut tried, now)) {
            order.push(letter(i));
            tried.insert(i);
        }
        assert_eq!(order, "abc");
    }

    impl LeastConn {
        fn ties_current(&self) -> &[i64] {
            self.ties.current()
        }
    }
}
