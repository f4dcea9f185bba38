//! Where per-peer state outlives snapshots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::PeerState;
use super::queue::WaitQueue;

/// Hands out each peer's [`PeerState`], keyed by upstream name and peer address, so a group
/// built for a new snapshot gets the state of the same peer in the previous one.
///
/// The registry holds only weak references: snapshots own the state. A peer that a reload
/// removes keeps its state while an old snapshot still uses it; once the last such snapshot is
/// dropped the state goes too, and a peer added later with that address starts fresh.
///
/// A clone is the same registry (groups whose servers the API changes keep one, to build their
/// next membership with).
#[derive(Debug, Default, Clone)]
pub struct PeerRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    states: Mutex<HashMap<PeerKey, Weak<PeerState>>>,
    /// Each upstream's `queue` line, alive while a peer state of the upstream is.
    queues: Mutex<HashMap<Box<str>, Weak<WaitQueue>>>,
    /// The peers of `stream { }`'s upstreams: keyed the same way, in a namespace of their own
    /// (an http `upstream app` and a stream `upstream app` are different groups, as in nginx).
    stream: std::sync::OnceLock<Box<PeerRegistry>>,
}

/// A peer's identity across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PeerKey {
    upstream: Box<str>,
    addr: SocketAddr,
    /// 0 for the first peer of the group with this address, 1 for the second…: nginx keeps
    /// separate state for `server` lines that repeat an address, and so does imbang.
    nth: u32,
}

impl PeerRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The states for `addrs` (in order) of upstream `upstream`: the live ones reused, new
    /// ones created. Also forgets entries whose state no snapshot uses any more.
    ///
    /// Each state comes with `joined`: true for a new peer of an upstream that already had live
    /// peers, i.e. a server a reload added to a group that is serving (its `slow_start` ramp
    /// begins). Peers of a new upstream, and every peer at startup, are not "joining": they all
    /// start together.
    pub(crate) fn states(
        &self,
        upstream: &str,
        addrs: &[SocketAddr],
    ) -> Vec<(Arc<PeerState>, bool)> {
        let mut states = self
            .inner
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        states.retain(|_, state| state.strong_count() > 0);
        let serving = states.keys().any(|key| &*key.upstream == upstream);
        let queue = self.queue(upstream);
        let mut seen: HashMap<SocketAddr, u32> = HashMap::new();
        addrs
            .iter()
            .map(|&addr| {
                let nth = seen.entry(addr).or_default();
                let key = PeerKey {
                    upstream: upstream.into(),
                    addr,
                    nth: *nth,
                };
                *nth += 1;
                if let Some(state) = states.get(&key).and_then(Weak::upgrade) {
                    return (state, false);
                }
                let state = Arc::new(PeerState::with_queue(queue.clone()));
                states.insert(key, Arc::downgrade(&state));
                (state, serving)
            })
            .collect()
    }

    /// The line where requests to `upstream` wait for a `max_conns` slot: the same one for
    /// every snapshot while any peer state of the upstream lives.
    pub(crate) fn queue(&self, upstream: &str) -> Arc<WaitQueue> {
        let mut queues = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        queues.retain(|_, queue| queue.strong_count() > 0);
        if let Some(queue) = queues.get(upstream).and_then(Weak::upgrade) {
            return queue;
        }
        let queue = Arc::new(WaitQueue::new());
        queues.insert(upstream.into(), Arc::downgrade(&queue));
        queue
    }

    /// The registry of `stream { }`'s upstreams.
    pub fn stream(&self) -> &PeerRegistry {
        self.inner.stream.get_or_init(Box::default)
    }

    /// How many peer states are alive (used by at least one group).
    pub fn live_states(&self) -> usize {
        let states = self
            .inner
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        states
            .values()
            .filter(|state| state.strong_count() > 0)
            .count()
    }
}
