//! An upstream group whose peers follow DNS (nginx's `ngx_http_upstream_zone_resolve_handler`):
//! the fixed `server` lines plus, for each `server name resolve` line, one peer per address
//! its last good answer gave.
//!
//! A change builds a new [`UpstreamGroup`] with the peers' state from the registry, so a peer
//! whose address stays keeps its health, counters and pooled connections (the pool is keyed
//! by address); a new one starts its `slow_start` ramp; a removed one drains: requests that
//! picked it hold the group they started with until they end, and new requests no longer see
//! it. Each request reads the membership once ([`Group::balancer`](crate::snapshot::Group)).

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::config::model::{PeerSpec, ResolveSpec, Resolver, Upstream};
use crate::upstream::{PeerRegistry, UpstreamGroup};

/// One peer a `resolve` line yields.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Found {
    pub addr: SocketAddr,
    /// With `service=`: the SRV target's name (the peer's `server` in the API), its weight
    /// and whether its priority is not the best (a backup).
    pub srv: Option<(String, u16, bool)>,
}

/// The peers of one upstream group with `resolve` lines, as the last answers say.
#[derive(Debug)]
pub struct Followed {
    /// The `upstream` block: its fixed peers and its `resolve` lines.
    spec: Upstream,
    current: ArcSwap<UpstreamGroup>,
    /// Per `resolve` line: the peers of its last good answer (`None`: never resolved).
    found: Mutex<Vec<Option<Vec<Found>>>>,
}

impl Followed {
    /// The group of `spec` with only its fixed peers, until its names are resolved.
    pub fn new(spec: &Upstream, registry: &PeerRegistry) -> Self {
        let names = spec.resolve.as_ref().map_or(0, |r| r.names.len());
        Self {
            current: ArcSwap::from_pointee(UpstreamGroup::new(spec, registry)),
            spec: spec.clone(),
            found: Mutex::new(vec![None; names]),
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The `resolve` lines, in order.
    pub fn names(&self) -> &[ResolveSpec] {
        self.spec.resolve.as_ref().map_or(&[], |r| &r.names)
    }

    /// The resolver that follows the lines.
    pub fn resolver(&self) -> &Resolver {
        &self
            .spec
            .resolve
            .as_ref()
            .expect("a group with resolve lines")
            .resolver
    }

    /// The membership in force now.
    pub fn current(&self) -> Arc<UpstreamGroup> {
        self.current.load_full()
    }

    /// The last good answer of line `i`, if any.
    pub fn found(&self, i: usize) -> Option<Vec<Found>> {
        self.found.lock().unwrap_or_else(PoisonError::into_inner)[i].clone()
    }

    /// Makes `found` the peers of line `i`; when that changes the membership, puts a new
    /// group in force and returns true.
    pub fn set(&self, i: usize, mut found: Vec<Found>, registry: &PeerRegistry) -> bool {
        found.sort();
        found.dedup();
        let mut all = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        if all[i].as_ref() == Some(&found) {
            return false;
        }
        all[i] = Some(found);
        let mut spec = self.spec.clone();
        for (line, found) in self.names().iter().zip(all.iter()) {
            for f in found.iter().flatten() {
                spec.peers.push(peer(line, f));
            }
        }
        // Under the lock, so two lines that change at once put their groups in force in order.
        self.current
            .store(Arc::new(UpstreamGroup::new(&spec, registry)));
        true
    }
}

/// The peer `f` of line `line`, with the line's parameters (nginx's `zone_copy_peer` from the
/// template): a SRV record's weight counts unless the line sets one, and a SRV target of a
/// worse priority is a backup.
fn peer(line: &ResolveSpec, f: &Found) -> PeerSpec {
    let mut p = line.template.clone();
    p.addr = f.addr;
    if let Some((target, weight, backup)) = &f.srv {
        p.name = format!("{target}:{}", f.addr.port());
        if p.weight == 1 {
            p.weight = u32::from(*weight).max(1);
        }
        p.backup |= *backup;
    }
    p
}

/// The peers of one upstream group for one request: fixed for a group without `resolve`
/// lines, or the membership in force when the request began.
pub enum Members<'a> {
    Fixed(&'a UpstreamGroup),
    Followed(Arc<UpstreamGroup>),
}

impl Deref for Members<'_> {
    type Target = UpstreamGroup;

    fn deref(&self) -> &UpstreamGroup {
        match self {
            Self::Fixed(group) => group,
            Self::Followed(group) => group,
        }
    }
}
