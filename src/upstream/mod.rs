//! Which peer gets an attempt: upstream groups, balancing, passive health.
//!
//! | module       | holds                                                                  |
//! |--------------|------------------------------------------------------------------------|
//! | this one     | [`UpstreamGroup`] (one per `upstream` block per snapshot), [`Tried`], [`PeerRegistry`] |
//! | [`peer`]     | [`Peer`] (settings), [`PeerState`] (shared live state), [`PeerGuard`] (one attempt) |
//! | [`balancer`] | the [`Balancer`] trait and nginx's methods: round robin, least_conn, ip_hash, hash (plain and consistent), random |
//! | [`health`]   | `max_fails` / `fail_timeout` as a pure state machine, `slow_start`      |
//! | [`queue`]    | NGINX Plus's `queue`: requests waiting in line for a `max_conns` slot ([`UpstreamGroup::pick_waiting`]) |
//!
//! A request picks, attempts, reports, and picks again while its retry budget lasts. Only the
//! first report of an attempt counts; the guard counts the request in flight until dropped:
//!
//! ```
//! use imbang::upstream::{NoLivePeer, Tried, UpstreamGroup};
//! use tokio::time::Instant;
//! # fn attempt(_: std::net::SocketAddr) -> Result<(), ()> { Ok(()) }
//!
//! fn forward(group: &UpstreamGroup) -> Result<(), NoLivePeer> {
//!     let mut tried = Tried::new();
//!     for _ in 0..group.tries() {
//!         let mut peer = group.pick(&mut tried, Instant::now())?; // Err: 502 "no live upstreams"
//!         match attempt(peer.addr()) {
//!             Ok(()) => {
//!                 peer.success(); // a streamed body then owns `peer` until its end
//!                 return Ok(());
//!             }
//!             Err(()) => {
//!                 peer.failure(Instant::now());
//!             }
//!         }
//!     }
//!     Ok(()) // tries used up: answer with the last attempt's error, as nginx does
//! }
//! ```
//!
//! The group reproduces nginx's `ngx_http_upstream_get_round_robin_peer`: a group with one
//! primary peer and no backups skips passive health entirely; otherwise the balancer chooses
//! among eligible primaries, and when none is eligible (failed, `down`, at `max_conns`, or
//! tried by this request) the request moves to the backups, if any, for good. When no backup
//! is eligible either, `pick` fails with [`NoLivePeer`] and leaves peer state alone: like nginx
//! since 1.11.5, failure counts are not reset, so peers return as their `fail_timeout` runs out.
//!
//! All threads share one view, as nginx's `zone` shares it between workers: smooth
//! round-robin weights per group, failure counts and in-flight counts per peer.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use crate::config::model::{QueueSpec, Upstream};

pub mod balancer;
pub mod health;
pub mod latency;
pub mod peer;
pub mod queue;
mod registry;
pub mod state;
mod tried;

use balancer::{Balancer, PickContext};
use health::passive::FAILING;
pub use peer::{Peer, PeerGuard, PeerState};
pub use queue::{Unavailable, WaitQueue};
pub use registry::PeerRegistry;
pub use tried::Tried;

/// No peer of the group may take this attempt; the proxy answers 502 (nginx logs "no live
/// upstreams").
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no live upstreams")]
pub struct NoLivePeer;

/// Why a pick that may wait found no peer.
enum NoPeer {
    /// Some peer the request may use is only at its `max_conns`: worth waiting for.
    Busy,
    /// Every peer is failed, `down` or tried.
    Dead,
}

/// What `ip_hash` and `hash` choose a peer by, for one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Affinity<'a> {
    /// The client's address (`ip_hash`).
    pub client_ip: Option<IpAddr>,
    /// The `hash` key rendered for this request.
    pub key: Option<&'a [u8]>,
}

impl<'a> Affinity<'a> {
    fn context<'t>(self, tried: &'t mut Tried, now: Instant) -> PickContext<'t>
    where
        'a: 't,
    {
        PickContext {
            tried,
            now,
            key: self.key,
            client_ip: self.client_ip,
        }
    }
}

/// One `upstream` block as one snapshot runs it.
#[derive(Debug)]
pub struct UpstreamGroup {
    name: Box<str>,
    /// Primaries, then backups, each in config order; a peer's position is its index.
    peers: Box<[Peer]>,
    primaries: usize,
    /// nginx's `peers->single`: exactly one primary (even if `down`) and no backups.
    single: bool,
    tries: usize,
    /// The selection lock: held for one pick, never across an attempt.
    selection: Mutex<Selection>,
    /// `queue N [timeout=]`: whether and how long requests wait for a `max_conns` slot.
    queue: Option<QueueSpec>,
    /// The upstream's waiting line (shared across reloads).
    waiting: Arc<WaitQueue>,
}

#[derive(Debug)]
struct Selection {
    primary: Box<dyn Balancer>,
    backup: Option<Box<dyn Balancer>>,
}

impl UpstreamGroup {
    /// Builds the group for `spec`, taking each peer's state from `registry` (so a peer kept
    /// by a reload keeps its failures and in-flight count). A peer that a reload adds to a
    /// serving group starts its `slow_start` ramp now.
    pub fn new(spec: &Upstream, registry: &PeerRegistry) -> Self {
        Self::new_at(spec, registry, Instant::now())
    }

    /// [`new`](Self::new) at `now`.
    pub fn new_at(spec: &Upstream, registry: &PeerRegistry, now: Instant) -> Self {
        let ordered: Vec<_> = (spec.peers.iter().filter(|p| !p.backup))
            .chain(spec.peers.iter().filter(|p| p.backup))
            .collect();
        let addrs: Vec<_> = ordered.iter().map(|p| p.addr).collect();
        let states = registry.states(&spec.name, &addrs);
        let timed = spec.method.ranks_by_latency();
        let peers: Box<[Peer]> = ordered
            .into_iter()
            .zip(states)
            .enumerate()
            .map(|(index, (spec, (state, joined)))| {
                if joined {
                    state.health().start_ramp(now);
                }
                let peer = Peer::new(index, spec, state);
                if timed { peer } else { peer.untimed() }
            })
            .collect();
        let primaries = peers.iter().filter(|p| !p.is_backup()).count();
        let (primary, backup) = peers.split_at(primaries);
        let selection = Selection {
            primary: balancer::from_config(&spec.method, primary, false),
            backup: (!backup.is_empty()).then(|| balancer::from_config(&spec.method, backup, true)),
        };
        Self {
            name: spec.name.as_str().into(),
            single: primaries == 1 && backup.is_empty(),
            tries: peers.iter().filter(|p| !p.is_down()).count(),
            primaries,
            peers,
            selection: Mutex::new(selection),
            queue: spec.queue,
            waiting: registry.queue(&spec.name),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Peers, backups included.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// False for a group from a valid config, except one whose `resolve` names have no
    /// address (yet).
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// nginx's default attempt budget for one request: the peers not marked `down`, backups
    /// included (nginx counts `down` peers out since 1.19.6). `proxy_next_upstream_tries`
    /// lowers it.
    pub fn tries(&self) -> usize {
        self.tries
    }

    /// The `queue` line, if the upstream has one.
    pub fn queue_spec(&self) -> Option<QueueSpec> {
        self.queue
    }

    /// Requests waiting in this upstream's `queue` now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Peers by index: primaries, then backups.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Chooses a peer for the next attempt of the request that owns `tried`, marks it tried,
    /// and counts it in flight until the returned guard is reported or dropped.
    ///
    /// `now` starts the chosen peer's next `fail_timeout` window when its last one ran out.
    /// Call at most [`tries`](Self::tries) times per request: past that nginx stops retrying
    /// and answers with the last attempt's error rather than "no live upstreams".
    ///
    /// Does not allocate for groups of up to 64 peers.
    pub fn pick(&self, tried: &mut Tried, now: Instant) -> Result<PeerGuard, NoLivePeer> {
        self.pick_with(tried, now, Affinity::default())
    }

    /// [`pick`](Self::pick) for a request with a client address and a rendered `hash` key,
    /// which `ip_hash` and `hash` choose by (other methods ignore them). Pass the same
    /// `affinity` to every pick of one request.
    pub fn pick_with(
        &self,
        tried: &mut Tried,
        now: Instant,
        affinity: Affinity<'_>,
    ) -> Result<PeerGuard, NoLivePeer> {
        let mut selection = self
            .selection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (primaries, backups) = self.peers.split_at(self.primaries);
        if !tried.on_backups() {
            let chosen = if self.single {
                self.pick_single(tried)
            } else if self.primaries == 0 {
                None // a group that follows DNS while its names have no address
            } else {
                let mut ctx = affinity.context(tried, now);
                selection.primary.pick(primaries, &mut ctx)
            };
            if let Some(i) = chosen {
                return Ok(self.take(&primaries[i], tried, now));
            }
            if selection.backup.is_none() {
                return Err(NoLivePeer);
            }
            tried.switch_to_backups();
        }
        let backup = selection.backup.as_mut().ok_or(NoLivePeer)?;
        let i = backup
            .pick(backups, &mut affinity.context(tried, now))
            .ok_or(NoLivePeer)?;
        Ok(self.take(&backups[i], tried, now))
    }

    /// [`pick_with`](Self::pick_with) that, with `queue` configured, waits in line for a
    /// `max_conns` slot when every peer that could take the request is busy (see [`queue`]).
    /// Without `queue`, or when no peer is merely busy, it fails at once like `pick_with`.
    pub async fn pick_waiting(
        &self,
        tried: &mut Tried,
        affinity: Affinity<'_>,
    ) -> Result<PeerGuard, Unavailable> {
        let Some(spec) = self.queue else {
            return (self.pick_with(tried, Instant::now(), affinity))
                .map_err(|NoLivePeer| Unavailable::NoLivePeer);
        };
        // Nobody waiting: try at once. Otherwise join the line behind the others.
        if self.waiting.is_empty() {
            match self.try_pick(tried, affinity) {
                Ok(guard) => return Ok(guard),
                Err(NoPeer::Dead) => return Err(Unavailable::NoLivePeer),
                Err(NoPeer::Busy) => {}
            }
        }
        let ticket = self.waiting.join(spec.size).ok_or(Unavailable::QueueFull)?;
        let deadline = Instant::now() + spec.timeout;
        if !ticket.was_first() {
            self.waiting.wake_first(); // room may have appeared without an attempt ending
        } else if let Some(done) = self.pick_in_line(tried, affinity, &ticket) {
            return done; // a slot freed between the first try and joining
        }
        loop {
            if tokio::time::timeout_at(deadline, ticket.woken())
                .await
                .is_err()
            {
                return Err(Unavailable::QueueTimeout);
            }
            if let Some(done) = self.pick_in_line(tried, affinity, &ticket) {
                return done;
            }
        }
    }

    /// One pick by a request that may wait. A failed pick leaves `tried` as it was, so a later
    /// one can still reach the primaries.
    fn try_pick(&self, tried: &mut Tried, affinity: Affinity<'_>) -> Result<PeerGuard, NoPeer> {
        let now = Instant::now();
        let before = tried.clone();
        self.pick_with(tried, now, affinity).map_err(|NoLivePeer| {
            *tried = before;
            if self.busy(tried, now) {
                NoPeer::Busy
            } else {
                NoPeer::Dead
            }
        })
    }

    /// A waiter's pick: `Some` when it is done waiting (a peer, or no live peer at all),
    /// `None` to keep its place. A retrying waiter that finds no room passes the wake-up on.
    fn pick_in_line(
        &self,
        tried: &mut Tried,
        affinity: Affinity<'_>,
        ticket: &queue::Ticket<'_>,
    ) -> Option<Result<PeerGuard, Unavailable>> {
        match self.try_pick(tried, affinity) {
            Ok(guard) => Some(Ok(guard)),
            Err(NoPeer::Dead) => Some(Err(Unavailable::NoLivePeer)),
            Err(NoPeer::Busy) => {
                if tried.count() > 0 {
                    ticket.wake_next();
                }
                None
            }
        }
    }

    /// True if some peer this request may still use is kept out only by its `max_conns`.
    fn busy(&self, tried: &Tried, now: Instant) -> bool {
        self.peers.iter().any(|peer| {
            !tried.contains(peer.index())
                && !peer.is_out()
                && peer.at_max_conns()
                && (self.single || peer.state().health().is_available(peer.fail_policy(), now))
        })
    }

    /// nginx's shortcut for a lone peer: only `down`, a `health_check` and `max_conns` can keep
    /// it out (passive health does not). (nginx does not look at `tried` here because it allows
    /// a lone peer a single try; checking it keeps that rule for callers that ask again.)
    fn pick_single(&self, tried: &Tried) -> Option<usize> {
        let peer = &self.peers[0];
        let out = peer.is_out() || peer.at_max_conns() || tried.contains(peer.index());
        (!out).then_some(0)
    }

    /// Bookkeeping on the chosen peer, still under the selection lock.
    fn take(&self, peer: &Peer, tried: &mut Tried, now: Instant) -> PeerGuard {
        tried.insert(peer.index());
        // Being chosen only matters to a peer with failures (see `PassiveHealth::unrest`).
        if !self.single && peer.state().unrest() & FAILING != 0 {
            peer.state().health().on_chosen(peer.fail_policy(), now);
        }
        PeerGuard::new(peer, self.single, now)
    }
}

#[cfg(test)]
pub(crate) mod tests;
