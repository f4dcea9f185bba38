//! The configuration in force, and how a new one replaces it: load → compile → reconcile
//! listeners → one atomic swap. Any error leaves the running configuration untouched.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::snapshot::Snapshot;

/// The configuration currently in force. Each request loads it once and keeps that `Arc` until it
/// finishes, so it never sees a half-applied configuration.
pub struct Live {
    current: ArcSwap<Snapshot>,
}

impl Live {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// An owned handle on the snapshot in force, safe to hold across `.await`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `next` in force; requests already running finish on the old one.
    pub fn swap(&self, next: Snapshot) -> Arc<Snapshot> {
        self.current.swap(Arc::new(next))
    }
}
