//! Which eligible peer gets the next attempt.
//!
//! | balancer                        | nginx directive     | chooses                              |
//! |---------------------------------|---------------------|--------------------------------------|
//! | [`round_robin::SmoothWeighted`] | (default)           | smooth weighted round robin          |
//!
//! least_conn, hash, random and least_time will sit beside it. Every balancer applies the same
//! eligibility tests ([`PickContext::is_eligible`]); what differs is the choice among eligible
//! peers. The group around a balancer handles what nginx does around `get_peer` for all
//! methods: the single-peer shortcut, falling back to backups, marking the chosen peer tried,
//! starting its `fail_timeout` window, and counting it in flight.

use std::fmt;

use tokio::time::Instant;

use super::Peer;
use super::Tried;
use super::health::PassiveHealth;

pub mod round_robin;

/// Chooses one peer of a list (a group's primaries or its backups) for one attempt.
///
/// A balancer keeps only its own selection state (round-robin weights, a cursor, a hash ring).
/// Health and in-flight counts live in each peer's [`PeerState`](super::PeerState), so every
/// method sees the same view and a reload can rebuild balancers without losing it.
///
/// `pick` takes `&mut self`: the group calls it under its selection lock, which also covers
/// the bookkeeping on the chosen peer, as nginx does the whole of `get_peer` under its lock.
pub trait Balancer: Send + fmt::Debug {
    /// Returns the position in `peers` of the chosen peer, or `None` when no peer is
    /// eligible. `peers` is the same list, in the same order, on every call.
    ///
    /// Must not allocate, block, or lock anything but a candidate peer's health (one at a time).
    fn pick(&mut self, peers: &[Peer], ctx: &PickContext<'_>) -> Option<usize>;
}

/// What a balancer knows about the attempt it chooses for.
#[derive(Debug)]
pub struct PickContext<'a> {
    /// Peers this request was already sent to.
    pub tried: &'a Tried,
    pub now: Instant,
}

impl PickContext<'_> {
    /// nginx's tests for every candidate, in its order: not tried by this request, not `down`,
    /// not failed `max_fails` times within `fail_timeout`, below `max_conns`.
    pub fn is_eligible(&self, peer: &Peer, health: &PassiveHealth) -> bool {
        !self.tried.contains(peer.index())
            && !peer.is_down()
            && health.is_available(peer.fail_policy(), self.now)
            && !peer.at_max_conns()
    }
}

/// The balancer for one list of peers. Round robin until the config model has a balancing
/// method; then this matches on it.
pub fn from_config(peers: &[Peer]) -> Box<dyn Balancer> {
    Box::new(round_robin::SmoothWeighted::new(peers))
}
