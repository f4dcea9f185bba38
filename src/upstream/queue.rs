//! NGINX Plus's `queue N [timeout=time]`: a request that finds every eligible peer at its
//! `max_conns` waits for a free slot instead of failing.
//!
//! **Order.** Waiters form one FIFO line per upstream. While anyone waits, a new request does
//! not pick ahead of them: it joins the end of the line. A waiter picks only when woken, and
//! the oldest is the one woken:
//!
//! - when an attempt on a peer with `max_conns` ends ([`PeerGuard`](super::PeerGuard)'s drop:
//!   a slot freed);
//! - when the waiter ahead of it leaves the line (it got a peer, gave up, or its client went
//!   away), so room for several is found one after the other;
//! - when a new request joins behind it, so room that appeared without an attempt ending (a
//!   failed peer's `fail_timeout` ran out, a reload) is found.
//!
//! A woken waiter that still finds no room stays where it is; one that is retrying (it has
//! tried peers, so a slot may be free on a peer it may not use) passes the wake-up on to the
//! waiter behind it.
//!
//! **Limits.** More than `N` waiting: 502 at once. Waiting longer than `timeout`: 502. When a
//! woken waiter finds no peer at all (every one failed or `down`, rather than busy), it stops
//! waiting with "no live upstreams" as without a queue: the queue waits out load, not outages.
//!
//! **Sharing.** One line per upstream name, kept by the [`PeerRegistry`](super::PeerRegistry)
//! and held by each peer's state, so attempts that end on an old snapshot's group after a
//! reload still wake the requests waiting on the new one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The requests of one upstream waiting for a free `max_conns` slot, oldest first.
#[derive(Debug, Default)]
pub struct WaitQueue {
    /// The line's length, readable without the lock (an attempt ending checks it).
    waiting: AtomicUsize,
    line: Mutex<VecDeque<Arc<Notify>>>,
}

/// Why a request could not wait for a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// No peer may take the request and it cannot wait (no `queue`, or no peer is merely busy).
    #[error("no live upstreams")]
    NoLivePeer,
    /// `queue N` requests were already waiting.
    #[error("upstream queue is full")]
    QueueFull,
    /// No slot freed up within the queue's `timeout`.
    #[error("upstream queue timed out")]
    QueueTimeout,
}

impl WaitQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn line(&self) -> MutexGuard<'_, VecDeque<Arc<Notify>>> {
        self.line.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the end of the line unless `capacity` requests already wait. The ticket says
    /// whether it is first; dropping it leaves the line.
    pub(crate) fn join(&self, capacity: usize) -> Option<Ticket<'_>> {
        let mut line = self.line();
        if line.len() >= capacity {
            return None;
        }
        let notify = Arc::new(Notify::new());
        line.push_back(notify.clone());
        self.waiting.store(line.len(), Ordering::SeqCst);
        let first = line.len() == 1;
        drop(line);
        // Pairs with the fence in `slot_freed`'s caller: either the attempt ending sees this
        // waiter, or this waiter's next pick sees the slot the attempt freed.
        std::sync::atomic::fence(Ordering::SeqCst);
        Some(Ticket {
            queue: self,
            notify,
            first,
        })
    }

    /// A slot may have freed up: wakes the oldest waiter, if any. Cheap when nobody waits.
    pub(crate) fn slot_freed(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.wake_first();
        }
    }

    /// Wakes the oldest waiter (the wake-up is kept if it is not listening right now).
    pub(crate) fn wake_first(&self) {
        if let Some(first) = self.line().front() {
            first.notify_one();
        }
    }
}

/// A place in the line. Dropping it leaves the line and wakes whoever is first then.
#[derive(Debug)]
pub(crate) struct Ticket<'q> {
    queue: &'q WaitQueue,
    notify: Arc<Notify>,
    first: bool,
}

impl Ticket<'_> {
    /// True if the line was empty when this ticket joined.
    pub fn was_first(&self) -> bool {
        self.first
    }

    /// Resolves when this waiter is woken (at once if a wake-up came since the last one).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Passes a wake-up to the waiter right behind this one.
    pub fn wake_next(&self) {
        let line = self.queue.line();
        let mut behind = line.iter().skip_while(|n| !Arc::ptr_eq(n, &self.notify));
        if let Some(next) = behind.nth(1) {
            next.notify_one();
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut line = self.queue.line();
        if let Some(at) = line.iter().position(|n| Arc::ptr_eq(n, &self.notify)) {
            line.remove(at);
        }
        self.queue.waiting.store(line.len(), Ordering::SeqCst);
        // The next one looks for room: this one may have taken a wake-up meant for the line.
        if let Some(first) = line.front() {
            first.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_bounded_and_leaving_it_wakes_the_next() {
        let queue = WaitQueue::new();
        let a = queue.join(2).expect("room");
        let b = queue.join(2).expect("room");
        assert!(a.was_first() && !b.was_first());
        assert!(queue.join(2).is_none(), "full");
        assert_eq!(queue.len(), 2);
        drop(a);
        assert_eq!(queue.len(), 1);
        // b was woken by a leaving: its wait ends at once.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), b.woken())
                .await
                .expect("woken");
        });
        drop(b);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_freed_slot_wakes_only_the_oldest() {
        let queue = WaitQueue::new();
        let a = queue.join(5).unwrap();
        let b = queue.join(5).unwrap();
        queue.slot_freed();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let short = std::time::Duration::from_millis(50);
            assert!(tokio::time::timeout(short, a.woken()).await.is_ok());
            assert!(tokio::time::timeout(short, b.woken()).await.is_err());
            a.wake_next();
            assert!(tokio::time::timeout(short, b.woken()).await.is_ok());
        });
    }
}
