//! The configuration in force, and how a new one replaces it: load → compile → reconcile
//! listeners → one atomic swap. Any error leaves the running configuration untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::snapshot::Snapshot;

/// The configuration currently in force. Each request loads it once and keeps that `Arc` until it
/// finishes, so it never sees a half-applied configuration.
pub struct Live {
    current: ArcSwap<Snapshot>,
    /// Reloads so far, and when the snapshot in force was put in force (NGINX Plus's API:
    /// `generation`, `load_timestamp`).
    reloads: AtomicU64,
    loaded: ArcSwap<SystemTime>,
    /// Runs after a group's servers changed without a reload (the API's writes): the server
    /// has its health checks probe the new membership.
    members_changed: std::sync::Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl Live {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            reloads: AtomicU64::new(0),
            loaded: ArcSwap::from_pointee(SystemTime::now()),
            members_changed: std::sync::Mutex::default(),
        }
    }

    /// Sets what runs after a group's servers changed at run time.
    pub fn on_members_changed(&self, f: Arc<dyn Fn() + Send + Sync>) {
        *self
            .members_changed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(f);
    }

    /// A group's servers changed at run time (an API write).
    pub fn members_changed(&self) {
        let f = self
            .members_changed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(f) = f {
            f();
        }
    }

    /// An owned handle on the snapshot in force, safe to hold across `.await`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `next` in force; requests already running finish on the old one.
    pub fn swap(&self, next: Snapshot) -> Arc<Snapshot> {
        let old = self.current.swap(Arc::new(next));
        self.loaded.store(Arc::new(SystemTime::now()));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        old
    }

    /// How many times a new configuration was put in force.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// When the configuration in force was put in force.
    pub fn loaded_at(&self) -> SystemTime {
        **self.loaded.load()
    }
}
