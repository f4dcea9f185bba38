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

/// The peers of one upstream group that changes at run time: with `resolve` lines, as the
/// last answers say, and with a `zone`, as the API's writes say (the same path: a change builds
/// the next membership, whose peers keep their state by address through the registry).
#[derive(Debug)]
pub struct Followed {
    /// The `upstream` block: its `resolve` lines and settings (its `server` lines are in
    /// `servers`).
    spec: Upstream,
    current: ArcSwap<UpstreamGroup>,
    /// Per `resolve` line: the peers of its last good answer (`None`: never resolved).
    found: Mutex<Vec<Option<Vec<Found>>>>,
    /// The group's servers with their API ids: the `server` lines (or the `state` file's),
    /// then what the API changed.
    servers: Mutex<Servers>,
    registry: PeerRegistry,
}

#[derive(Debug)]
struct Servers {
    list: Vec<PeerSpec>,
    /// The id the next server added gets: ids are never reused while the group lives.
    next_id: u32,
}

/// Why an API write was refused (the API turns it into Plus's error object).
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    ServerNotFound,
    /// A server with the same address is there already (Plus's `EntryExists`).
    Exists,
}

impl Followed {
    /// The group of `spec` with only its fixed peers, until its names are resolved.
    pub fn new(spec: &Upstream, registry: &PeerRegistry) -> Self {
        let names = spec.resolve.as_ref().map_or(0, |r| r.names.len());
        let mut list = spec.peers.clone();
        for (id, p) in list.iter_mut().enumerate() {
            p.id = Some(id as u32);
        }
        let mut spec = spec.clone();
        spec.peers = list.clone();
        Self {
            current: ArcSwap::from_pointee(UpstreamGroup::new(&spec, registry)),
            spec: Upstream {
                peers: Vec::new(),
                ..spec
            },
            found: Mutex::new(vec![None; names]),
            servers: Mutex::new(Servers {
                next_id: list.len() as u32,
                list,
            }),
            registry: registry.clone(),
        }
    }

    /// The servers the API shows and changes (`server` lines and API-added ones), by id.
    pub fn servers(&self) -> Vec<PeerSpec> {
        self.servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .list
            .clone()
    }

    /// Adds `server` (the API's POST): it gets the next id, and the membership in force
    /// changes at once. The added server as stored.
    pub fn add(&self, mut server: PeerSpec) -> Result<PeerSpec, WriteError> {
        self.write(|servers| {
            if servers.list.iter().any(|s| s.addr == server.addr) {
                return Err(WriteError::Exists);
            }
            server.id = Some(servers.next_id);
            servers.next_id += 1;
            servers.list.push(server.clone());
            Ok(server)
        })
    }

    /// Changes server `id` with `change` (the API's PATCH); the server as changed.
    pub fn modify(
        &self,
        id: u32,
        change: impl FnOnce(&mut PeerSpec),
    ) -> Result<PeerSpec, WriteError> {
        self.write(|servers| {
            let server = servers
                .list
                .iter_mut()
                .find(|s| s.id == Some(id))
                .ok_or(WriteError::ServerNotFound)?;
            change(server);
            Ok(server.clone())
        })
    }

    /// Removes server `id` (the API's DELETE): requests that picked it finish on the
    /// membership they started with. The servers left.
    pub fn remove(&self, id: u32) -> Result<Vec<PeerSpec>, WriteError> {
        self.write(|servers| {
            let at = servers
                .list
                .iter()
                .position(|s| s.id == Some(id))
                .ok_or(WriteError::ServerNotFound)?;
            servers.list.remove(at);
            Ok(servers.list.clone())
        })
    }

    /// Runs one change of the servers, puts the new membership in force, and writes the
    /// `state` file. Under the locks, so that concurrent writes apply in order.
    fn write<T>(
        &self,
        change: impl FnOnce(&mut Servers) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        let done = change(&mut servers)?;
        self.rebuild(&found, &servers);
        // A file that cannot be written loses nothing in force now: the change stands, and
        // the failure is logged (it would be lost at the next restart).
        if let Some(path) = &self.spec.state
            && let Err(e) = crate::upstream::state::save(path, &servers.list)
        {
            crate::log!(
                Alert,
                "cannot write the state file \"{}\" of upstream \"{}\" ({})",
                path.display(),
                self.spec.name,
                crate::error_log::errno_text(&e)
            );
        }
        Ok(done)
    }

    /// Puts in force the membership of `servers` plus the peers the `resolve` lines found.
    fn rebuild(&self, found: &[Option<Vec<Found>>], servers: &Servers) {
        let mut spec = self.spec.clone();
        spec.peers = servers.list.clone();
        let mut id = servers.next_id;
        for (line, found) in self.names().iter().zip(found.iter()) {
            for f in found.iter().flatten() {
                let mut p = peer(line, f);
                // Ids after the servers' (not stable: a name's peers come and go with DNS).
                p.id = Some(id);
                id += 1;
                spec.peers.push(p);
            }
        }
        self.current
            .store(Arc::new(UpstreamGroup::new(&spec, &self.registry)));
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
    /// group in force and returns true. (`_registry` is the one the group was made with.)
    pub fn set(&self, i: usize, mut found: Vec<Found>, _registry: &PeerRegistry) -> bool {
        found.sort();
        found.dedup();
        let mut all = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        if all[i].as_ref() == Some(&found) {
            return false;
        }
        all[i] = Some(found);
        // Under the lock, so two lines that change at once put their groups in force in order.
        let servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        self.rebuild(&all, &servers);
        true
    }

    /// Whether the API may change the group's servers (`zone`, as NGINX Plus requires).
    pub fn writable(&self) -> bool {
        self.spec.zone
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
