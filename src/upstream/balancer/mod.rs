//! Which eligible peer gets the next attempt.
//!
//! | balancer                                  | nginx directive          | chooses                                   |
//! |-------------------------------------------|--------------------------|-------------------------------------------|
//! | [`round_robin::SmoothWeighted`]           | (default)                | smooth weighted round robin               |
//! | [`least_conn::LeastConn`]                 | `least_conn`             | fewest in flight per weight; ties by round robin |
//! | [`least_time::LeastTime`]                 | `least_time` (Plus)      | lowest latency × (in flight + 1) per weight; ties by round robin |
//! | [`ip_hash::IpHash`]                       | `ip_hash`                | by the client address (IPv4: a /24)       |
//! | [`hash::Hash`]                            | `hash key`               | by a key, modulo the total weight         |
//! | [`consistent_hash::ConsistentHash`]       | `hash key consistent [bounded=]` | by a key on a ketama ring; `bounded`: past peers over their share of the load |
//! | [`random::Random`]                        | `random [two [least_time=]]` | weighted random; `two`: the less loaded (or faster) of two |
//!
//! Every balancer applies the same eligibility tests ([`PickContext::is_eligible`]); what
//! differs is the choice among eligible peers. The group around a balancer handles what nginx
//! does around `get_peer` for all methods: the single-peer shortcut, falling back to backups,
//! marking the chosen peer tried, starting its `fail_timeout` window, and counting it in flight.
//!
//! The hash and random methods walk candidates: when one is not eligible they try another, up
//! to [`MAX_WALK`] times per request, and then fall back to smooth weighted round robin over
//! the same peers for the rest of the request, as nginx does. Each keeps a
//! [`SmoothWeighted`](round_robin::SmoothWeighted) for that, sharing its `current_weight`s with
//! any round robin of its own (consistent hash among peers of one `server` line, least_conn
//! among ties), as nginx shares one `current_weight` per peer.

use std::fmt;
use std::net::IpAddr;

use tokio::time::Instant;

use super::Peer;
use super::Tried;
use super::health::PassiveHealth;
use crate::config::model::BalanceMethod;

pub mod consistent_hash;
pub mod hash;
pub mod ip_hash;
pub mod least_conn;
pub mod least_time;
pub mod random;
pub mod round_robin;

/// Candidates a hash or random walk may reject for one request before it falls back to round
/// robin: nginx's `tries > 20`.
pub const MAX_WALK: u32 = 20;

/// Chooses one peer of a list (a group's primaries or its backups) for one attempt.
///
/// A balancer keeps only its own selection state (round-robin weights, a hash ring, a random
/// generator). Health and in-flight counts live in each peer's [`PeerState`](super::PeerState),
/// so every method sees the same view and a reload can rebuild balancers without losing it.
/// What one request carries from attempt to attempt (tried peers, a hash walk) lives in its
/// [`Tried`].
///
/// `pick` takes `&mut self`: the group calls it under its selection lock, which also covers
/// the bookkeeping on the chosen peer, as nginx does the whole of `get_peer` under its lock.
pub trait Balancer: Send + fmt::Debug {
    /// Returns the position in `peers` of the chosen peer, or `None` when no peer is
    /// eligible. `peers` is the same list, in the same order, on every call.
    ///
    /// Must not allocate, block, or lock anything but a candidate peer's health (one at a time).
    fn pick(&mut self, peers: &[Peer], ctx: &mut PickContext<'_>) -> Option<usize>;
}

/// What a balancer knows about the attempt it chooses for.
#[derive(Debug)]
pub struct PickContext<'a> {
    /// Peers this request was already sent to, and its hash walk so far.
    pub tried: &'a mut Tried,
    pub now: Instant,
    /// The rendered `hash` key of this request (`None` or empty: round robin, as nginx).
    pub key: Option<&'a [u8]>,
    /// The client's address, for `ip_hash` (`None`, e.g. a Unix socket client: nginx hashes
    /// three zero bytes).
    pub client_ip: Option<IpAddr>,
}

impl<'a> PickContext<'a> {
    /// A context with no key and no client address (round robin, least_conn, random).
    pub fn new(tried: &'a mut Tried, now: Instant) -> Self {
        Self {
            tried,
            now,
            key: None,
            client_ip: None,
        }
    }

    /// nginx's tests for every candidate: not tried by this request, not `down`, not failed
    /// `max_fails` times within `fail_timeout`, below `max_conns`; and NGINX Plus's: not held
    /// out by a `health_check`.
    pub fn is_eligible(&self, peer: &Peer, health: &PassiveHealth) -> bool {
        self.is_eligible_at_rest(peer) && health.is_available(peer.fail_policy(), self.now)
    }

    /// [`is_eligible`](Self::is_eligible), taking the peer's health lock for the test only,
    /// and only for a peer with failures (with none it is available under any policy).
    pub fn is_eligible_now(&self, peer: &Peer) -> bool {
        self.is_eligible_at_rest(peer) && peer.passively_available(self.now)
    }

    /// [`is_eligible`](Self::is_eligible) for a peer without failures.
    pub fn is_eligible_at_rest(&self, peer: &Peer) -> bool {
        !self.tried.contains(peer.index()) && !peer.is_out() && !peer.at_max_conns()
    }
}

/// The balancer for one list of peers: the group's primaries (`backups` false) or its backups.
///
/// Backups are balanced by round robin, except under `least_conn` and `least_time`: nginx's
/// hash and random methods reach backups only through their round-robin fallback, while
/// `least_conn` (and Plus's `least_time`) balance backups the same way as primaries. (nginx accepts `backup` with a hash or random
/// method only on `server` lines written before the method directive.)
pub fn from_config(method: &BalanceMethod, peers: &[Peer], backups: bool) -> Box<dyn Balancer> {
    match method {
        BalanceMethod::LeastConn => Box::new(least_conn::LeastConn::new(peers)),
        BalanceMethod::LeastTime { mode, inflight } => {
            Box::new(least_time::LeastTime::new(peers, *mode, *inflight))
        }
        _ if backups => Box::new(round_robin::SmoothWeighted::new(peers)),
        BalanceMethod::RoundRobin => Box::new(round_robin::SmoothWeighted::new(peers)),
        BalanceMethod::IpHash => Box::new(ip_hash::IpHash::new(peers)),
        BalanceMethod::Hash {
            consistent: false, ..
        } => Box::new(hash::Hash::new(peers)),
        BalanceMethod::Hash {
            consistent: true,
            bounded,
            ..
        } => Box::new(consistent_hash::ConsistentHash::new(peers).bounded(*bounded)),
        BalanceMethod::Random { two, least_time } => {
            Box::new(random::Random::new(peers, *two, *least_time))
        }
    }
}

/// Peers laid end to end by weight, `down` ones included: the weight-`w` peer owns `w`
/// consecutive numbers of `0..total`. nginx maps hashes and random numbers to peers this way
/// (its ip_hash and hash walk the list subtracting weights; random bisects the same ranges).
#[derive(Debug)]
pub(crate) struct WeightRanges {
    /// Where each peer's range starts.
    starts: Box<[u64]>,
    total: u64,
}

impl WeightRanges {
    pub fn new(peers: &[Peer]) -> Self {
        let mut total = 0;
        let starts = peers
            .iter()
            .map(|peer| {
                let start = total;
                total += u64::from(peer.weight());
                start
            })
            .collect();
        Self { starts, total }
    }

    /// The sum of the weights (0 only for no peers).
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The position of the peer whose range holds `n % total`. `total` must not be 0.
    pub fn find(&self, n: u64) -> usize {
        let n = n % self.total;
        self.starts.partition_point(|&start| start <= n) - 1
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::model::PeerSpec;
    use crate::upstream::PeerState;
    use crate::upstream::tests::peer_spec;

    /// Peers `a`, `b`, `c`… (see [`peer_spec`]) with these weights.
    pub(crate) fn peers(weights: &[u32]) -> Vec<Peer> {
        peers_with(weights, |_, _| {})
    }

    pub(crate) fn peers_with(weights: &[u32], edit: impl Fn(usize, &mut PeerSpec)) -> Vec<Peer> {
        let specs = weights.iter().enumerate().map(|(i, &weight)| {
            let mut spec = peer_spec(i, weight);
            edit(i, &mut spec);
            spec
        });
        specs
            .enumerate()
            .map(|(i, spec)| Peer::new(i, &spec, Arc::new(PeerState::new())))
            .collect()
    }

    pub(crate) fn letter(i: usize) -> char {
        (b'a' + i as u8) as char
    }

    /// The peers one request with `key` tries in turn until none is left (hash balancers).
    pub(crate) fn key_order(balancer: &mut dyn Balancer, peers: &[Peer], key: &str) -> String {
        let mut tried = crate::upstream::Tried::new();
        let mut order = String::new();
        loop {
            let mut ctx = PickContext::new(&mut tried, tokio::time::Instant::now());
            ctx.key = Some(key.as_bytes());
            let Some(i) = balancer.pick(peers, &mut ctx) else {
                return order;
            };
            order.push(letter(i));
            tried.insert(i);
        }
    }

    #[test]
    fn weight_ranges_give_each_peer_its_weight_of_numbers() {
        let ranges = WeightRanges::new(&peers(&[2, 1, 3]));
        assert_eq!(ranges.total(), 6);
        let owners: String = (0..12).map(|n| letter(ranges.find(n))).collect();
        assert_eq!(owners, "aabcccaabccc");
    }
}
