//! nginx's smooth weighted round robin (`ngx_http_upstream_get_peer`).
//!
//! On every pick, each eligible peer's `current_weight` grows by its effective weight; the
//! peer with the largest `current_weight` wins (the first in config order on a tie) and gives
//! back the sum of the effective weights it competed against. Over `sum(weights)` picks with
//! no failures each peer is chosen `weight` times, spread out: weights 5, 1, 1 give
//! `a a b a c a a`.
//!
//! Weights are added in thousandths so that a peer on its `slow_start` ramp can have a
//! fraction of its weight ([`slow_start`](crate::upstream::health::slow_start)); scaling every
//! weight alike leaves the sequence unchanged.

use super::{Balancer, Peer, PickContext};
use crate::upstream::health::slow_start::SCALE;

/// Smooth weighted round robin over one list of peers.
#[derive(Debug)]
pub struct SmoothWeighted {
    /// nginx's `current_weight`, by position in the list. Starts at 0 with each snapshot,
    /// as nginx's does on reload.
    current: Box<[i64]>,
}

impl SmoothWeighted {
    pub fn new(peers: &[Peer]) -> Self {
        Self {
            current: vec![0; peers.len()].into_boxed_slice(),
        }
    }

    /// The `current_weight`s, by position.
    #[cfg(test)]
    pub(crate) fn current(&self) -> &[i64] {
        &self.current
    }
}

impl SmoothWeighted {
    /// The round-robin choice among the eligible peers for which `among(position, peer)` holds;
    /// the others neither gain nor give back weight. nginx runs this among the least-loaded
    /// peers for least_conn and among the peers of one `server` line for consistent hash.
    pub fn pick_among(
        &mut self,
        peers: &[Peer],
        ctx: &PickContext<'_>,
        among: impl Fn(usize, &Peer) -> bool,
    ) -> Option<usize> {
        // (position, its current weight)
        let mut best: Option<(usize, i64)> = None;
        let mut total: i64 = 0;
        for (i, (peer, current)) in peers.iter().zip(self.current.iter_mut()).enumerate() {
            if !among(i, peer) {
                continue;
            }
            let effective = if peer.state().at_rest() {
                // Available, full weight, and the pick changes nothing: no lock.
                if !ctx.is_eligible_at_rest(peer) {
                    continue;
                }
                (u64::from(peer.weight()) * SCALE) as i64
            } else {
                let mut health = peer.state().health();
                if !ctx.is_eligible(peer, &health) {
                    continue;
                }
                health.take_scaled_weight(peer.weight(), peer.slow_start(), ctx.now) as i64
            };
            *current += effective;
            total += effective;
            if best.is_none_or(|(_, top)| *current > top) {
                best = Some((i, *current));
            }
        }
        let (best, _) = best?;
        self.current[best] -= total;
        Some(best)
    }
}

impl Balancer for SmoothWeighted {
    fn pick(&mut self, peers: &[Peer], ctx: &mut PickContext<'_>) -> Option<usize> {
        self.pick_among(peers, ctx, |_, _| true)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::upstream::Tried;
    use crate::upstream::balancer::tests::{letter, peers, peers_with};

    /// `n` picks, each for a new request, as letters separated by spaces.
    pub(crate) fn sequence(balancer: &mut dyn Balancer, peers: &[Peer], n: usize) -> String {
        let now = Instant::now();
        let picks: Vec<String> = (0..n)
            .map(|_| {
                let mut tried = Tried::new();
                match balancer.pick(peers, &mut PickContext::new(&mut tried, now)) {
                    Some(i) => letter(i).to_string(),
                    None => "-".to_owned(),
                }
            })
            .collect();
        picks.join(" ")
    }

    #[test]
    fn sequences_match_nginx() {
        // Derived by hand from ngx_http_upstream_get_peer (current += effective for each
        // eligible peer, the first maximum wins, the winner loses the total).
        let cases: [(&[u32], &str); 7] = [
            (&[5, 1, 1], "a a b a c a a a a b a c a a"),
            (&[3, 2], "a b a b a a b a b a"),
            (&[1, 1, 1], "a b c a b c a b c"),
            (&[4, 3, 2], "a b c a b a c b a"),
            (&[1], "a a a"),
            (&[2, 1], "a b a a b a"),
            (&[1, 2], "b a b b a b"),
        ];
        for (weights, want) in cases {
            let peers = peers(weights);
            let mut balancer = SmoothWeighted::new(&peers);
            let n = want.split(' ').count();
            assert_eq!(
                sequence(&mut balancer, &peers, n),
                want,
                "weights {weights:?}"
            );
        }
    }

    #[test]
    fn down_peers_are_left_out_of_the_weights() {
        // a=2, b=5 down, c=1: a and c alone, as weights 2, 1 would give.
        let peers = peers_with(&[2, 5, 1], |i, spec| spec.down = i == 1);
        let mut balancer = SmoothWeighted::new(&peers);
        assert_eq!(sequence(&mut balancer, &peers, 6), "a c a a c a");
    }

    #[test]
    fn tried_peers_are_skipped_and_do_not_gain_weight() {
        // Weights 1, 1, 1. One request tries a, b, c in turn; then new requests.
        let peers = peers(&[1, 1, 1]);
        let mut balancer = SmoothWeighted::new(&peers);
        let now = Instant::now();
        let mut pick = |tried: &mut Tried| balancer.pick(&peers, &mut PickContext::new(tried, now));

        let mut tried = Tried::new();
        let steps = [
            Some(0), // [1, 1, 1] -> a -> [-2, 1, 1]
            Some(1), // a tried: [-2, 2, 2] -> b wins the tie -> [-2, 0, 2]
            Some(2), // a, b tried: [-2, 0, 3] -> c -> [-2, 0, 2]
            None,    // all tried: weights untouched
        ];
        for (n, want) in steps.into_iter().enumerate() {
            let got = pick(&mut tried);
            assert_eq!(got, want, "attempt {n}");
            got.into_iter().for_each(|i| tried.insert(i));
        }
        // New requests: [-1, 1, 3] -> c, [0, 2, 1] -> b, [1, 0, 2] -> c, [2, 1, 0] -> a.
        let got: Vec<_> = (0..4).map(|_| pick(&mut Tried::new())).collect();
        assert_eq!(got, [Some(2), Some(1), Some(2), Some(0)]);
    }

    #[test]
    fn no_eligible_peer_gives_none_and_leaves_weights_alone() {
        let peers = peers_with(&[3, 2], |_, spec| spec.down = true);
        let mut balancer = SmoothWeighted::new(&peers);
        assert_eq!(sequence(&mut balancer, &peers, 2), "- -");
        assert_eq!(*balancer.current, [0, 0]);
    }
}
