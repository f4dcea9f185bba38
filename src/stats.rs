//! What the server counts about its client connections and requests: nginx's stub_status
//! figures (`ngx_stat_accepted`, `_handled`, `_active`, `_requests`, `_reading`, `_writing`,
//! `_waiting`), read by [`stub_status`](crate::stub_status), the `$connections_*`
//! variables, the Prometheus metrics and the API's `/connections` and `/http/requests`; TLS
//! handshakes (the API's `/ssl`); NGINX Plus's `status_zone`s ([`Zone`]); and the
//! [`Histogram`] the peers and zones time their requests with.
//!
//! The figures are the process's, as nginx's live in shared memory for all its workers: they
//! survive reloads, and every [`Server`](crate::server::Server) of a process (tests run several)
//! adds to the same ones.
//!
//! Counting is on the request path (seven updates per keep-alive request), so it takes no lock
//! and no read-modify-write: each thread counts in a shard of its own, which only it writes (a
//! plain load and store of a relaxed atomic, as cheap as adding to a local), and a reader sums
//! the shards. A gauge (`reading`, ...) may go up on one thread and down on another; only the
//! sum means anything, and a sum read while others count may be a moment old, as nginx's.
//!
//! | figure | counted | nginx's |
//! |---|---|---|
//! | accepted | a connection accepted | `accepts` |
//! | handled | a connection that got served (not dropped) | `handled` |
//! | active | from the accept until the connection closes | `Active connections` |
//! | requests | a request's first bytes arrived (HTTP/1), a stream opened (HTTP/2) | `requests` |
//! | reading | from a request's first bytes until its head is read | `Reading` |
//! | writing | from then until its response is written | `Writing` |
//! | waiting | an open connection with no request (idle keep-alive, or no byte yet) | `Waiting` |

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

#[derive(Clone, Copy)]
enum Slot {
    Accepted,
    Handled,
    Active,
    Requests,
    Reading,
    Writing,
    Waiting,
    Handshakes,
    HandshakesFailed,
    SessionReuses,
}

const SLOTS: usize = 10;

/// One thread's counts, on a cache line pair of its own (no false sharing with another
/// thread's).
#[repr(align(128))]
#[derive(Default)]
struct Shard([AtomicU64; SLOTS]);

/// Every thread's shard that ever counted. A shard outlives its thread (its counts stay in the
/// sums); threads that count are the workers, made once, so this stays short. Read without a
/// lock (a `$connections_*` variable in every log line reads it per request).
static SHARDS: std::sync::LazyLock<arc_swap::ArcSwap<Vec<&'static Shard>>> =
    std::sync::LazyLock::new(Default::default);

thread_local! {
    static MINE: &'static Shard = {
        let shard: &'static Shard = Box::leak(Box::default());
        SHARDS.rcu(|all| {
            let mut all = Vec::clone(all);
            all.push(shard);
            all
        });
        shard
    };
}

/// Adds `n` (wrapping: a gauge's decrease is the addition of `-1`).
#[inline]
fn add(slot: Slot, n: u64) {
    // `try_with`: a count made while the thread's locals are being destroyed is lost.
    let _ = MINE.try_with(|shard| {
        // Only this thread writes its shard: no read-modify-write needed.
        let cell = &shard.0[slot as usize];
        cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
    });
}

#[inline]
fn up(slot: Slot) {
    add(slot, 1);
}

#[inline]
fn down(slot: Slot) {
    add(slot, u64::MAX);
}

/// A connection was accepted.
pub fn accepted() {
    up(Slot::Accepted);
}

/// An accepted connection is served: counted as handled and active until the guard drops.
pub fn handled() -> Active {
    up(Slot::Handled);
    up(Slot::Active);
    Active(())
}

/// An open client connection (nginx's `Active connections`), until dropped.
#[must_use]
#[derive(Debug)]
pub struct Active(());

impl Drop for Active {
    fn drop(&mut self) {
        down(Slot::Active);
    }
}

/// A connection waiting for a request (nginx's `Waiting`), until dropped.
#[must_use]
#[derive(Debug)]
pub struct Waiting(());

impl Waiting {
    pub fn start() -> Self {
        up(Slot::Waiting);
        Self(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        down(Slot::Waiting);
    }
}

/// One request: counted, then reading its head, then writing its answer, until dropped.
#[must_use]
#[derive(Debug)]
pub struct Request {
    writing: bool,
    counted: bool,
}

impl Request {
    /// A request's first bytes arrived: counted, and reading its head.
    pub fn reading() -> Self {
        up(Slot::Requests);
        up(Slot::Reading);
        Self {
            writing: false,
            counted: true,
        }
    }

    /// A request whose head came whole (an HTTP/2 stream, or over a connection whose head
    /// reading is not seen): counted, and writing.
    pub fn writing() -> Self {
        up(Slot::Requests);
        up(Slot::Writing);
        Self {
            writing: true,
            counted: true,
        }
    }

    /// Its head is read: now it is being answered.
    pub fn head_read(&mut self) {
        if !self.writing {
            self.writing = true;
            down(Slot::Reading);
            up(Slot::Writing);
        }
    }

    /// What looked like a request was not one (the HTTP/2 preface): not counted after all.
    pub fn not_a_request(mut self) {
        if std::mem::replace(&mut self.counted, false) {
            down(Slot::Requests);
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        down(if self.writing {
            Slot::Writing
        } else {
            Slot::Reading
        });
    }
}

/// A TLS handshake on a client connection (NGINX Plus's `/ssl`): counted as failed when
/// dropped before [`done`](Self::done), unless [`abandon`](Self::abandon)ed (a stop).
#[must_use]
#[derive(Debug)]
pub struct Handshake(bool);

impl Handshake {
    pub fn start() -> Self {
        Self(false)
    }

    /// The handshake succeeded; `resumed`: a session was reused.
    pub fn done(mut self, resumed: bool) {
        self.0 = true;
        up(Slot::Handshakes);
        if resumed {
            up(Slot::SessionReuses);
        }
    }

    /// Cut short by a stop: neither a success nor a failure.
    pub fn abandon(mut self) {
        self.0 = true;
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        if !self.0 {
            up(Slot::HandshakesFailed);
        }
    }
}

/// The figures at one moment (nginx's stub_status, and Plus's `/ssl`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// TLS handshakes that succeeded, failed, and reused a session.
    pub handshakes: u64,
    pub handshakes_failed: u64,
    pub session_reuses: u64,
    pub accepted: u64,
    pub handled: u64,
    pub active: u64,
    pub requests: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

/// Sums every thread's shard.
pub fn figures() -> Figures {
    let mut sum = [0u64; SLOTS];
    for shard in SHARDS.load().iter() {
        for (total, cell) in sum.iter_mut().zip(&shard.0) {
            *total = total.wrapping_add(cell.load(Relaxed));
        }
    }
    // A gauge read while it moves on two threads may sum to a moment's -1: shown as 0.
    let gauge = |slot: Slot| (sum[slot as usize] as i64).max(0) as u64;
    Figures {
        handshakes: sum[Slot::Handshakes as usize],
        handshakes_failed: sum[Slot::HandshakesFailed as usize],
        session_reuses: sum[Slot::SessionReuses as usize],
        accepted: sum[Slot::Accepted as usize],
        handled: sum[Slot::Handled as usize],
        active: gauge(Slot::Active),
        requests: sum[Slot::Requests as usize],
        reading: gauge(Slot::Reading),
        writing: gauge(Slot::Writing),
        waiting: gauge(Slot::Waiting),
    }
}

/// One of the four gauges, as `$connections_active` … `$connections_waiting` show it.
pub fn connections(which: ConnectionsVar) -> u64 {
    let f = figures();
    match which {
        ConnectionsVar::Active => f.active,
        ConnectionsVar::Reading => f.reading,
        ConnectionsVar::Writing => f.writing,
        ConnectionsVar::Waiting => f.waiting,
    }
}

/// Which `$connections_*` variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionsVar {
    Active,
    Reading,
    Writing,
    Waiting,
}

// === status zones (NGINX Plus's `status_zone`) ===

/// Whether a `status_zone` was set on a `server` (a server zone: every request of the server)
/// or a `location` (a location zone: the requests whose processing ends in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneKind {
    Server,
    Location,
}

/// One status zone's counters, shared by every configuration that names it (they survive
/// reloads, as Plus's do in shared memory). Counted only for requests in a zone: atomics
/// shared by the threads, as the peers' counters are.
#[derive(Debug, Default)]
pub struct Zone {
    requests: AtomicU64,
    /// Requests being processed (a wrapping gauge).
    processing: AtomicU64,
    responses: [AtomicU64; 5],
    /// Requests completed without a response (the client went away, or `return 444`).
    discarded: AtomicU64,
    /// From the request's location found to its response head made (or its abandonment).
    time: Histogram,
}

/// A zone's figures at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneFigures {
    pub requests: u64,
    pub processing: u64,
    pub responses: [u64; 5],
    pub discarded: u64,
    pub time: HistogramFigures,
}

impl Zone {
    pub fn figures(&self) -> ZoneFigures {
        ZoneFigures {
            time: self.time.figures(),
            requests: self.requests.load(Relaxed),
            processing: (self.processing.load(Relaxed) as i64).max(0) as u64,
            responses: self.responses.each_ref().map(|n| n.load(Relaxed)),
            discarded: self.discarded.load(Relaxed),
        }
    }
}

static ZONES: Mutex<std::collections::BTreeMap<(ZoneKind, String), std::sync::Arc<Zone>>> =
    Mutex::new(std::collections::BTreeMap::new());

/// The zone `name` of `kind`, made the first time a configuration names it.
pub fn zone(kind: ZoneKind, name: &str) -> std::sync::Arc<Zone> {
    let mut zones = ZONES.lock().unwrap_or_else(PoisonError::into_inner);
    zones.entry((kind, name.to_owned())).or_default().clone()
}

/// One request in its server's and location's zones, from the moment its location is known
/// until dropped: counted as processing, then as a response of its status class (or as
/// discarded when it got none).
#[must_use]
pub struct InZones<'a> {
    zones: [Option<&'a Zone>; 2],
    status: Option<u16>,
    /// When it entered (read only for a request in a zone).
    entered: Option<tokio::time::Instant>,
}

impl<'a> InZones<'a> {
    pub fn enter(server: Option<&'a Zone>, location: Option<&'a Zone>) -> Self {
        let zones = [server, location];
        for zone in zones.iter().flatten() {
            zone.requests.fetch_add(1, Relaxed);
            zone.processing.fetch_add(1, Relaxed);
        }
        let entered = (server.is_some() || location.is_some()).then(tokio::time::Instant::now);
        Self {
            zones,
            status: None,
            entered,
        }
    }

    /// The request is answered with `status`.
    pub fn answered(&mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for InZones<'_> {
    #[inline]
    fn drop(&mut self) {
        // In no zone (no `status_zone` configured): nothing to count, no clock to read.
        if let Some(entered) = self.entered {
            self.leave(entered);
        }
    }
}

impl InZones<'_> {
    fn leave(&mut self, entered: tokio::time::Instant) {
        let took = entered.elapsed();
        for zone in self.zones.iter().flatten() {
            zone.processing.fetch_sub(1, Relaxed);
            zone.time.observe(took);
            match self.status {
                // nginx's `return 444`: the connection is closed without an answer.
                Some(444) | None => zone.discarded.fetch_add(1, Relaxed),
                Some(status) => {
                    let class = usize::from(status / 100).clamp(1, 5) - 1;
                    zone.responses[class].fetch_add(1, Relaxed)
                }
            };
        }
    }
}

// === latency histograms ===

/// The upper bounds of [`Histogram`]'s buckets, in microseconds (Prometheus's default buckets:
/// 5 ms to 10 s); a last bucket takes the longer ones.
pub const BUCKETS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// Durations counted by bucket, and their sum: two relaxed adds per observation.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A [`Histogram`] read: counts per bucket (not cumulative) and the sum in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramFigures {
    pub buckets: [u64; BUCKETS_US.len() + 1],
    pub sum_us: u64,
}

impl Histogram {
    pub fn observe(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn figures(&self) -> HistogramFigures {
        HistogramFigures {
            buckets: self.buckets.each_ref().map(|n| n.load(Relaxed)),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

impl HistogramFigures {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s counts (a group's histogram is its peers').
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// The mean in milliseconds (the Plus API's `header_time`, `response_time`); `None`
    /// without observations.
    pub fn mean_ms(&self) -> Option<u64> {
        let n = self.count();
        (n > 0).then(|| self.sum_us / n / 1000)
    }
}

/// Reloads that failed (the configuration in force stayed), and whether the last one did.
static RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);
static LAST_RELOAD_FAILED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A reload (SIGHUP, `-s reload`) ended: put in force, or not.
pub fn reloaded(ok: bool) {
    if !ok {
        RELOAD_FAILURES.fetch_add(1, Relaxed);
    }
    LAST_RELOAD_FAILED.store(!ok, Relaxed);
}

/// `(failed reloads, whether the last reload failed)`.
pub fn reload_failures() -> (u64, bool) {
    (
        RELOAD_FAILURES.load(Relaxed),
        LAST_RELOAD_FAILED.load(Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's figures move with every test of this binary that serves: each assertion
    /// is on a difference this thread made, summed over all threads (this one's shard included).
    #[test]
    fn a_duration_lands_in_the_first_bucket_whose_bound_holds_it() {
        use std::time::Duration;
        let h = Histogram::default();
        h.observe(Duration::from_micros(5_000)); // on the bound: `le="0.005"`
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(11));
        let f = h.figures();
        assert_eq!(f.buckets[0], 1);
        assert_eq!(f.buckets[1], 1);
        assert_eq!(f.buckets[BUCKETS_US.len()], 1, "beyond the last bound");
        assert_eq!((f.count(), f.sum_us), (3, 11_012_000));
        assert_eq!(f.mean_ms(), Some(3670));
    }

    #[test]
    fn counts_move_as_a_request_goes_through_its_phases() {
        // Another thread counting meanwhile could move the totals: run where only this test
        // counts (the lib's other tests that serve run on threads of their own, so compare
        // this thread's shard alone).
        let mine = || MINE.with(|s| s.0.each_ref().map(|c| c.load(Relaxed)));
        let before = mine();
        let delta = |slot: Slot| mine()[slot as usize].wrapping_sub(before[slot as usize]) as i64;
        accepted();
        let active = handled();
        let waiting = Waiting::start();
        assert_eq!(delta(Slot::Waiting), 1);
        drop(waiting);
        let mut request = Request::reading();
        assert_eq!((delta(Slot::Reading), delta(Slot::Writing)), (1, 0));
        request.head_read();
        request.head_read();
        assert_eq!((delta(Slot::Reading), delta(Slot::Writing)), (0, 1));
        drop(request);
        Request::reading().not_a_request();
        assert_eq!(delta(Slot::Requests), 1);
        assert_eq!((delta(Slot::Active), delta(Slot::Accepted)), (1, 1));
        drop(active);
        assert_eq!(delta(Slot::Active), 0);
        for slot in [Slot::Reading, Slot::Writing, Slot::Waiting] {
            assert_eq!(delta(slot), 0);
        }
        // This thread's shard is among those summed.
        assert!(figures().requests >= 1);
    }
}
