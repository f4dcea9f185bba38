//! One peer three ways: as a snapshot configures it ([`Peer`]), as all snapshots share its live
//! state ([`PeerState`]), and as one attempt holds it ([`PeerGuard`]).

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::health::active::{ActiveHealth, Change, Verdict};
use super::health::passive::{FAILING, REDUCED};
use super::health::slow_start::SCALE;
use super::health::{FailPolicy, PassiveHealth};
use super::latency::Timing;
use super::queue::WaitQueue;
use crate::config::model::PeerSpec;

/// The live state of one peer, shared by every thread and by every snapshot that has the peer
/// (looked up by upstream name and address in the [`PeerRegistry`](super::PeerRegistry)), so it
/// survives a reload that keeps the peer.
///
/// - The in-flight count is an atomic: a guard's drop must not take a lock.
/// - Passive health (nginx's `fails`, `checked`, `accessed`, `effective_weight`) sits behind a
///   per-peer mutex rather than the group's selection lock. The group lock cannot cover it: an
///   old snapshot still finishing requests and the new one share this state but not their
///   locks. A per-peer lock also keeps reports (nginx takes a per-peer lock in `free` too) from
///   waiting on picks of other peers. Beside it, an atomic copy of its
///   [`unrest`](PassiveHealth::unrest), written under the lock whenever the state changes: a
///   peer at rest (no failures, no weight penalty, no ramp) is what a pick, a choice and a
///   success would leave unchanged, so they skip the lock. Only a peer with a history takes
///   it, once per candidate. (Read without the lock, the copy may be a moment old; that is the
///   same as the reader having taken the lock just before the writer.)
/// - Latency estimates for `least_time` sit behind their own per-peer mutex, taken once per
///   response to record and by `least_time` picks to read.
/// - The smooth round-robin `current_weight` is not here: it is balancer state, rebuilt with
///   each snapshot as nginx rebuilds it on reload.
#[derive(Debug, Default)]
pub struct PeerState {
    in_flight: AtomicU32,
    /// Attempts sent to this peer, those that failed, and the times failures made it
    /// unavailable (NGINX Plus's API: `requests`, `fails`, `unavail`): one relaxed add per
    /// attempt beside the `in_flight` ones it makes anyway, and one per failure.
    requests: AtomicU64,
    failed: AtomicU64,
    went_unavailable: AtomicU64,
    /// Response heads received from this peer, by status class (1xx … 5xx).
    responses: [AtomicU64; 5],
    /// Bytes written to the peer (request heads and bodies of the attempts it answered) and
    /// read from it (response heads and bodies), added once per attempt when its guard drops.
    sent: AtomicU64,
    received: AtomicU64,
    /// Time from the pick to the response head, and to the response's last byte, of the
    /// attempts it answered (the metrics' histograms, the API's `header_time`, `response_time`).
    header_time: crate::stats::Histogram,
    response_time: crate::stats::Histogram,
    /// The sum of the start times of the timed attempts in flight (nanoseconds since
    /// [`epoch`]), and how many they are, for their average age (`least_time ... inflight`).
    in_flight_since: AtomicU64,
    in_flight_timed: AtomicU32,
    health: Mutex<PassiveHealth>,
    /// `health`'s [`unrest`](PassiveHealth::unrest) as of its last change.
    unrest: AtomicU8,
    timing: Mutex<Timing>,
    /// The upstream's `queue` line: woken when an attempt on this peer ends.
    queue: Option<Arc<WaitQueue>>,
    /// The verdicts of the `health_check`s probing this peer.
    active: Mutex<ActiveHealth>,
    /// `active`'s [`is_out`](ActiveHealth::is_out) as of its last change: read by every pick
    /// without the lock.
    checked_out: AtomicBool,
}

impl PeerState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of a peer of the upstream whose waiting requests `queue` holds.
    pub(crate) fn with_queue(queue: Arc<WaitQueue>) -> Self {
        Self {
            queue: Some(queue),
            ..Self::default()
        }
    }

    /// Attempts holding a [`PeerGuard`] on this peer right now (nginx's `conns`), counted across
    /// all snapshots.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Attempts sent to this peer so far (picks), over all snapshots.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Response heads received so far, by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn responses(&self) -> [u64; 5] {
        self.responses.each_ref().map(|n| n.load(Ordering::Relaxed))
    }

    /// The API's `DELETE /http/upstreams/NAME`: the counters start again from zero (requests,
    /// fails, unavail, responses, bytes); the health and the load are left alone.
    pub fn reset_counters(&self) {
        for n in [
            &self.requests,
            &self.failed,
            &self.went_unavailable,
            &self.sent,
            &self.received,
        ]
        .into_iter()
        .chain(&self.responses)
        {
            n.store(0, Ordering::Relaxed);
        }
    }

    /// `(sent, received)`: bytes written to and read from the peer so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    /// `(to the response head, to its last byte)` of the attempts the peer answered.
    pub fn latency(
        &self,
    ) -> (
        crate::stats::HistogramFigures,
        crate::stats::HistogramFigures,
    ) {
        (self.header_time.figures(), self.response_time.figures())
    }

    /// Attempts that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Times failures made the peer unavailable (`max_fails` within `fail_timeout`).
    pub fn went_unavailable(&self) -> u64 {
        self.went_unavailable.load(Ordering::Relaxed)
    }

    /// Failures counted by passive health (nginx's `fails`).
    pub fn fails(&self) -> u32 {
        self.health().fails()
    }

    /// How long, on average, the timed attempts in flight on this peer have been running at `now`,
    /// in microseconds (0 with none).
    pub fn in_flight_age_us(&self, now: Instant) -> f64 {
        let n = u64::from(self.in_flight_timed.load(Ordering::SeqCst));
        if n == 0 {
            return 0.0;
        }
        let mean_start = self.in_flight_since.load(Ordering::SeqCst) / n;
        since_epoch(now).saturating_sub(mean_start) as f64 / 1e3
    }

    /// The latency estimates (`least_time`). Never held across an `.await` or another lock.
    pub(crate) fn timing(&self) -> MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the passive health state. Never held across an `.await` or another peer's lock.
    pub(crate) fn health(&self) -> HealthGuard<'_> {
        // The state stays consistent even if a holder panicked: every update is a few stores.
        HealthGuard {
            health: self.health.lock().unwrap_or_else(PoisonError::into_inner),
            unrest: &self.unrest,
        }
    }

    /// Whether an active health check holds this peer out (unhealthy, or not yet checked under
    /// `mandatory`): no request is sent to it.
    pub fn checked_out(&self) -> bool {
        self.checked_out.load(Ordering::Acquire)
    }

    /// A copy of what the active health checks say about this peer.
    pub fn active_health(&self) -> ActiveHealth {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the active health state with `f`, then publishes whether the peer is out.
    pub(crate) fn with_active<R>(&self, f: impl FnOnce(&mut ActiveHealth) -> R) -> R {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let r = f(&mut active);
        self.checked_out.store(active.is_out(), Ordering::Release);
        r
    }

    /// Starts keeping check `verdict.id`'s verdicts on this peer.
    pub(crate) fn add_check(&self, verdict: Verdict) {
        self.with_active(|a| a.add(verdict));
    }

    /// Forgets check `id` (it stopped, or no longer probes this peer).
    pub(crate) fn remove_check(&self, id: u64) {
        self.with_active(|a| a.remove(id));
    }

    /// Counts one outcome of check `id`; `None` when that check was removed meanwhile.
    pub(crate) fn report_check(
        &self,
        id: u64,
        passed: bool,
        fails: u32,
        passes: u32,
    ) -> Option<Change> {
        self.with_active(|a| a.report(id, passed, fails, passes))
    }

    /// The passive health state's [`unrest`](PassiveHealth::unrest) without its lock.
    pub(crate) fn unrest(&self) -> u8 {
        self.unrest.load(Ordering::Acquire)
    }

    /// No failures, no weight penalty, no ramp (see [`unrest`](Self::unrest)).
    pub(crate) fn at_rest(&self) -> bool {
        self.unrest() == 0
    }
}

/// The locked passive health state of a peer; publishes its
/// [`unrest`](PassiveHealth::unrest) when unlocked.
pub(crate) struct HealthGuard<'a> {
    health: MutexGuard<'a, PassiveHealth>,
    unrest: &'a AtomicU8,
}

impl Deref for HealthGuard<'_> {
    type Target = PassiveHealth;

    fn deref(&self) -> &PassiveHealth {
        &self.health
    }
}

impl DerefMut for HealthGuard<'_> {
    fn deref_mut(&mut self) -> &mut PassiveHealth {
        &mut self.health
    }
}

impl Drop for HealthGuard<'_> {
    fn drop(&mut self) {
        // Still under the lock (the field drops after this), so stores land in lock order.
        let now = self.health.unrest();
        if self.unrest.load(Ordering::Relaxed) != now {
            self.unrest.store(now, Ordering::Release);
        }
    }
}

/// The instant in-flight start times count from: an hour before the first time anyone asked.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

fn since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64
}

/// A peer as one snapshot's group sees it: the `server` line's settings plus the shared state.
#[derive(Debug)]
pub struct Peer {
    index: usize,
    /// The API's id: the server's own in a group the API may change, else `index`.
    id: usize,
    addr: SocketAddr,
    /// The `server` line's address as written (`app1.internal:3000`).
    server: Box<str>,
    weight: u32,
    fail_policy: FailPolicy,
    max_conns: u32,
    slow_start: Duration,
    /// `down`, or `drain` (which takes no new requests either).
    down: bool,
    drain: bool,
    backup: bool,
    /// The group's balancer ranks peers by latency (`least_time`, `random two least_time=`):
    /// attempts' latency estimates are kept and their start times summed. Other groups skip
    /// both (an `exp`, a lock and two atomic updates per request; they still read the clock at
    /// the response head for the latency histograms); a reload to `least_time` starts its
    /// estimates from the group's average, as for a new peer.
    timed: bool,
    state: Arc<PeerState>,
}

impl Peer {
    pub(crate) fn new(index: usize, spec: &PeerSpec, state: Arc<PeerState>) -> Self {
        Self {
            index,
            id: spec.id.map_or(index, |id| id as usize),
            addr: spec.addr,
            server: spec.name.as_str().into(),
            weight: spec.weight,
            fail_policy: FailPolicy {
                max_fails: spec.max_fails,
                fail_timeout: spec.fail_timeout,
            },
            max_conns: spec.max_conns,
            slow_start: spec.slow_start,
            down: spec.down || spec.drain,
            drain: spec.drain,
            backup: spec.backup,
            timed: true,
            state,
        }
    }

    /// This peer as a member of a group whose balancer does not rank by latency.
    pub(crate) fn untimed(self) -> Self {
        Self {
            timed: false,
            ..self
        }
    }

    /// Position in the group: primaries first, then backups, each in config order.
    /// [`Tried`](super::Tried) uses this numbering.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The id the API shows and addresses the peer by (`/servers/ID`).
    pub fn id(&self) -> usize {
        self.id
    }

    /// `drain` (set through the API): no new requests, shown as `draining`.
    pub fn is_draining(&self) -> bool {
        self.drain
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `server` line's address as written; the peers of a name that resolved to several
    /// addresses share it.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub fn fail_policy(&self) -> FailPolicy {
        self.fail_policy
    }

    /// `slow_start` on the `server` line (zero: off).
    pub fn slow_start(&self) -> Duration {
        self.slow_start
    }

    /// The configured weight at `now` in thousandths, on the peer's `slow_start` ramp if it is
    /// on one (see [`slow_start`](super::health::slow_start)). Takes the health lock only when
    /// the peer has `slow_start` and may be on its ramp.
    pub fn weight_at(&self, now: Instant) -> u64 {
        if self.slow_start.is_zero() || self.state.unrest() & REDUCED == 0 {
            return u64::from(self.weight) * SCALE;
        }
        (self.state.health()).scaled_weight(self.weight, self.slow_start, now)
    }

    /// `max_conns` on the `server` line (0: no limit).
    pub fn max_conns(&self) -> u32 {
        self.max_conns
    }

    /// Not taken out by passive health (`max_fails` failures within `fail_timeout`) at `now`.
    pub fn passively_available(&self, now: Instant) -> bool {
        self.state.unrest() & FAILING == 0
            || (self.state.health()).is_available(self.fail_policy, now)
    }

    /// `down` on the `server` line.
    pub fn is_down(&self) -> bool {
        self.down
    }

    pub fn is_backup(&self) -> bool {
        self.backup
    }

    /// True if `max_conns` is set and that many attempts are in flight.
    /// `down`, or held out by an active health check: no request may go to it.
    pub fn is_out(&self) -> bool {
        self.down || self.state.checked_out()
    }

    pub fn at_max_conns(&self) -> bool {
        self.max_conns != 0 && self.state.in_flight() >= self.max_conns
    }

    pub fn state(&self) -> &PeerState {
        &self.state
    }

    /// The state, to keep beyond this snapshot (a health check's probe).
    pub(crate) fn shared_state(&self) -> &Arc<PeerState> {
        &self.state
    }
}

/// One attempt on one peer, from the pick until its outcome is reported.
///
/// While it exists the peer counts the attempt as in flight (for `max_conns`, `least_conn`
/// and `random two`), so a response body that owns the guard keeps counting until the body ends.
/// Report the outcome once (a second report is ignored); the guard keeps counting the request
/// in flight until it is dropped, so a response body holds it until the body ends:
///
/// - [`success`](Self::success): nginx's `free` without `NGX_PEER_FAILED`. Use it for a
///   response, including a 403/404 that `proxy_next_upstream http_403|http_404` moves past
///   (nginx's `NGX_PEER_NEXT`, which takes the same path).
/// - [`failure`](Self::failure): `NGX_PEER_FAILED` (error, timeout, invalid header, and the
///   `proxy_next_upstream` statuses other than 403/404).
/// - [`neutral`](Self::neutral), or dropping the guard: only ends the attempt. For attempts
///   that say nothing about the peer (cancelled before the peer was reached). nginx has no
///   such outcome; it reports success when a request ends for reasons of its own.
///
#[must_use = "dropping a PeerGuard ends the attempt without reporting its outcome"]
pub struct PeerGuard {
    state: Arc<PeerState>,
    addr: SocketAddr,
    weight: u32,
    fail_policy: FailPolicy,
    /// The group's only peer (no backups): nginx never counts its failures.
    single: bool,
    /// The peer has `max_conns`: ending the attempt frees a slot someone may be waiting for.
    limited: bool,
    /// The outcome was reported (the guard still counts the request in flight until dropped).
    reported: bool,
    /// The reported outcome was a success (a response to time to its last byte).
    answered: bool,
    /// The attempt's latency is recorded ([`Peer`]'s `timed`).
    timed: bool,
    /// When the peer was picked: attempts' latencies are measured from here.
    started: Instant,
    /// `started` as added to the peer's `in_flight_since`.
    since: u64,
    /// Bytes written to and read from the peer in this attempt, added to its totals on drop
    /// (one update per attempt, not one per body frame).
    sent: u64,
    received: u64,
}

impl PeerGuard {
    /// Counts the attempt as in flight. Called under the group's selection lock, so that
    /// `max_conns` is checked and the count raised in one step.
    pub(crate) fn new(peer: &Peer, single: bool, now: Instant) -> Self {
        let mut since = 0;
        if peer.timed {
            since = since_epoch(now);
            peer.state
                .in_flight_since
                .fetch_add(since, Ordering::SeqCst);
            peer.state.in_flight_timed.fetch_add(1, Ordering::SeqCst);
        }
        peer.state.in_flight.fetch_add(1, Ordering::SeqCst);
        peer.state.requests.fetch_add(1, Ordering::Relaxed);
        Self {
            state: Arc::clone(&peer.state),
            addr: peer.addr,
            weight: peer.weight,
            fail_policy: peer.fail_policy,
            single,
            limited: peer.max_conns != 0,
            reported: false,
            answered: false,
            timed: peer.timed,
            started: now,
            since,
            sent: 0,
            received: 0,
        }
    }

    /// `sent` bytes went to the peer, `received` came from it (the Plus API's `sent` and
    /// `received`, the Prometheus metrics' bytes).
    pub fn count_bytes(&mut self, sent: u64, received: u64) {
        self.sent += sent;
        self.received += received;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts a response head with `status` from the peer (the API's `responses`).
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.state.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// When the peer was picked (a clock read the attempt can use rather than make again).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The peer answered (its response head arrived): forgives its failures if it was chosen
    /// after a quiet `fail_timeout`, and records the time to the head for `least_time header`.
    /// Only the first report of an attempt counts.
    pub fn success(&mut self) {
        self.succeeded(None);
    }

    /// [`success`](Self::success), the head having arrived at `now`.
    pub fn success_at(&mut self, now: Instant) {
        self.succeeded(Some(now));
    }

    /// The clock is read when `now` is `None` (the header-time histogram needs it).
    fn succeeded(&mut self, now: Option<Instant>) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        self.answered = true;
        // With no failures a success forgives nothing and ends no outage.
        let recovered = self.state.unrest() & FAILING != 0 && {
            let mut health = self.state.health();
            if self.single {
                health.clear_fails();
                false
            } else {
                health.on_success(self.fail_policy)
            }
        };
        let now = now.unwrap_or_else(Instant::now);
        (self.state.header_time).observe(now.saturating_duration_since(self.started));
        if !self.timed {
            return;
        }
        let mut timing = self.state.timing();
        if recovered {
            // Times from before the outage say nothing now: start again from the average.
            *timing = Timing::default();
        }
        let took = now.saturating_duration_since(self.started);
        timing.header.observe(took, now);
    }

    /// The response body ended at `now` after a [`success`](Self::success): records the time to
    /// the last byte for `least_time last_byte`, and ends the attempt.
    pub fn body_done(self, now: Instant) {
        if !self.answered {
            return;
        }
        let took = now.saturating_duration_since(self.started);
        self.state.response_time.observe(took);
        if self.timed {
            self.state.timing().last_byte.observe(took, now);
        }
    }

    /// The attempt failed at `now`: counts a failure and lowers the peer's effective weight.
    /// Returns true when this failure took the peer out for `fail_timeout` (nginx logs
    /// "upstream server temporarily disabled"). Only the first report of an attempt counts.
    pub fn failure(&mut self, now: Instant) -> bool {
        if std::mem::replace(&mut self.reported, true) {
            return false;
        }
        self.state.failed.fetch_add(1, Ordering::Relaxed);
        let mut health = self.state.health();
        let out = if self.single {
            health.clear_fails();
            false
        } else {
            health.on_failure(self.fail_policy, self.weight, now)
        };
        if out {
            self.state.went_unavailable.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// Ends the attempt without a verdict on the peer (same as dropping the guard).
    pub fn neutral(self) {}
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        // The group lock orders the increments. A `max_conns` slot someone may wait for: the
        // fence pairs with the one in `WaitQueue::join`, so either this sees the waiter or the
        // waiter's pick sees the slot.
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.sent != 0 {
            self.state.sent.fetch_add(self.sent, Ordering::Relaxed);
        }
        if self.received != 0 {
            (self.state.received).fetch_add(self.received, Ordering::Relaxed);
        }
        if self.timed {
            (self.state.in_flight_since).fetch_sub(self.since, Ordering::SeqCst);
            (self.state.in_flight_timed).fetch_sub(1, Ordering::SeqCst);
        }
        if self.limited {
            if let Some(queue) = &self.state.queue {
                std::sync::atomic::fence(Ordering::SeqCst);
                queue.slot_freed();
            }
        }
    }
}

impl fmt::Debug for PeerGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerGuard")
            .field("addr", &self.addr)
            .field("in_flight", &self.state.in_flight())
            .finish_non_exhaustive()
    }
}
