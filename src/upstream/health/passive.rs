//! nginx's passive health check: `max_fails` and `fail_timeout` on a `server` line.
//!
//! The state machine follows `ngx_http_upstream_round_robin.c` field by field (`fails`,
//! `checked`, `accessed`, `effective_weight`), which differs from a plain sliding window:
//!
//! - **Unavailable** while `fails >= max_fails` and no more than `fail_timeout` has passed since
//!   `checked`. `max_fails = 0` disables the check (failures are still counted).
//! - **A failure** adds one to `fails`, sets `checked` and `accessed` to now, and lowers the
//!   effective weight by `weight / max_fails` (integer division, not below 0).
//! - **Being chosen** more than `fail_timeout` after `checked` sets `checked` to now. For an
//!   unavailable peer this is the trial request: other picks skip the peer again (for up to
//!   `fail_timeout`) until the trial reports.
//! - **A success** resets `fails` only if `accessed < checked`, that is, if the peer was chosen
//!   after a quiet `fail_timeout` since its last failure. A success shortly after a failure does
//!   not forgive it, so failures in back-to-back windows add up.
//! - **Each pick** that finds the peer eligible raises its effective weight by one, back up to
//!   `weight`.
//! - **Recovery** (imbang's name): a success that forgives failures which had made the peer
//!   unavailable. It starts the peer's [`slow_start`](super::slow_start) ramp at the moment
//!   the trial request was chosen.
//!
//! One deliberate difference: nginx compares whole seconds of wall-clock time (`ngx_time()`);
//! this module compares monotonic [`Instant`]s at full resolution. "No more than `fail_timeout`"
//! therefore ends exactly `fail_timeout` after the event rather than at the next second boundary.

use std::time::Duration;

use tokio::time::Instant; // std's Instant would defeat paused-time tests

use super::slow_start::scaled_weight;

/// A peer's `max_fails` and `fail_timeout`, as its `server` line sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailPolicy {
    /// Failures that make the peer unavailable; 0 disables the check.
    pub max_fails: u32,
    /// How long failures keep counting, and how long an unavailable peer is skipped.
    pub fail_timeout: Duration,
}

/// A bit of [`PassiveHealth::unrest`]: the peer has failures (`fails > 0`).
pub const FAILING: u8 = 1;
/// A bit of [`PassiveHealth::unrest`]: failures took weight off the peer, or it is on its
/// `slow_start` ramp.
pub const REDUCED: u8 = 2;

/// What passive health knows about one peer. Pure: every method takes `now` instead of reading
/// a clock, and nothing here locks or allocates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Failures since the last success that forgave them.
    fails: u32,
    /// Start of the current window: the last failure, or the last choice after a quiet
    /// `fail_timeout`. `None` = never (nginx's 0).
    checked: Option<Instant>,
    /// The last failure. `None` = never (nginx's 0, so `None < Some(_)` as `0 < t` there).
    accessed: Option<Instant>,
    /// `weight - effective_weight`: stored as a penalty so a reload that changes `weight`
    /// needs no fix-up (it is clamped to the current weight wherever it is read).
    penalty: u32,
    /// When the peer last came back (recovered, or was added by a reload): the start of its
    /// `slow_start` ramp. `None` = no ramp, or the last one is over.
    back_since: Option<Instant>,
}

impl PassiveHealth {
    /// A peer with no history: available, full weight.
    pub const fn new() -> Self {
        Self {
            fails: 0,
            checked: None,
            accessed: None,
            penalty: 0,
            back_since: None,
        }
    }

    /// Failures counted so far (nginx's `fails`).
    pub fn fails(&self) -> u32 {
        self.fails
    }

    /// [`FAILING`] and [`REDUCED`]: 0 (at rest) for a peer with no failures, no weight penalty
    /// and no ramp, the state of nearly every peer nearly always. At rest the peer is
    /// available under any policy, weighs its full weight, and neither being chosen nor
    /// answering changes anything here (`checked` only matters once `fails > 0`, and a
    /// failure sets it), so a pick can leave this state alone ([`PeerState`]'s unlocked copy).
    ///
    /// [`PeerState`]: crate::upstream::PeerState
    pub fn unrest(&self) -> u8 {
        let mut bits = 0;
        if self.fails > 0 {
            bits |= FAILING;
        }
        if self.penalty > 0 || self.back_since.is_some() {
            bits |= REDUCED;
        }
        bits
    }

    /// False while the peer has failed `max_fails` times and the current window (the last
    /// `fail_timeout` since `checked`) has not run out.
    pub fn is_available(&self, policy: FailPolicy, now: Instant) -> bool {
        policy.max_fails == 0
            || self.fails < policy.max_fails
            || self.window_expired(policy.fail_timeout, now)
    }

    /// Records that a balancer chose this peer: starts a new window if the last one ran out.
    pub fn on_chosen(&mut self, policy: FailPolicy, now: Instant) {
        if self.window_expired(policy.fail_timeout, now) {
            self.checked = Some(now);
        }
    }

    /// Records a failed attempt. Returns true when the peer is now unavailable (nginx logs
    /// "upstream server temporarily disabled" then).
    pub fn on_failure(&mut self, policy: FailPolicy, weight: u32, now: Instant) -> bool {
        self.fails = self.fails.saturating_add(1);
        self.accessed = Some(now);
        self.checked = Some(now);
        if policy.max_fails == 0 {
            return false;
        }
        self.penalty = (self.penalty.min(weight) + weight / policy.max_fails).min(weight);
        self.fails >= policy.max_fails
    }

    /// Records a successful attempt: forgives the failures if the peer was chosen after a quiet
    /// `fail_timeout` since the last one. Returns true when that made an unavailable peer
    /// available again (a recovery): its `slow_start` ramp then runs from when the trial
    /// request was chosen.
    pub fn on_success(&mut self, policy: FailPolicy) -> bool {
        if self.accessed >= self.checked {
            return false;
        }
        let was_out = policy.max_fails != 0 && self.fails >= policy.max_fails;
        self.fails = 0;
        if was_out {
            self.back_since = self.checked;
        }
        was_out
    }

    /// Starts a `slow_start` ramp at `now` (for a peer a reload added to a serving group).
    pub fn start_ramp(&mut self, now: Instant) {
        self.back_since = Some(now);
    }

    /// When the current `slow_start` ramp began (`None`: no ramp, or it is over).
    pub fn back_since(&self) -> Option<Instant> {
        self.back_since
    }

    /// [`take_effective_weight`](Self::take_effective_weight) in thousandths, on the
    /// `slow_start` ramp: what smooth weighted round robin adds for this pick.
    pub fn take_scaled_weight(&mut self, weight: u32, slow_start: Duration, now: Instant) -> u64 {
        let effective = self.take_effective_weight(weight);
        scaled_weight(effective, slow_start, self.ramp(slow_start, now), now)
    }

    /// The configured `weight` in thousandths, on the `slow_start` ramp: what `least_conn`
    /// and `least_time` divide a peer's load by (nginx uses the configured weight there).
    pub fn scaled_weight(&mut self, weight: u32, slow_start: Duration, now: Instant) -> u64 {
        scaled_weight(weight, slow_start, self.ramp(slow_start, now), now)
    }

    /// The start of the ramp the peer is on at `now`, ending a ramp that has run its course
    /// (so the peer can come to rest). A reload that lengthens `slow_start` after that does
    /// not put a peer that already serves at full weight back on a ramp.
    fn ramp(&mut self, slow_start: Duration, now: Instant) -> Option<Instant> {
        let since = self.back_since?;
        if now.saturating_duration_since(since) >= slow_start {
            self.back_since = None;
        }
        self.back_since
    }

    /// Forgets all failures. nginx does this on every report for the only peer of a group
    /// without backups, whose failures never make it unavailable.
    pub fn clear_fails(&mut self) {
        self.fails = 0;
    }

    /// The weight balancers use now (nginx's `effective_weight`): `weight` minus what recent
    /// failures took off.
    pub fn effective_weight(&self, weight: u32) -> u32 {
        weight - self.penalty.min(weight)
    }

    /// Returns the effective weight for this pick, then raises it by one for the next (nginx
    /// does both for every eligible peer on every pick).
    pub fn take_effective_weight(&mut self, weight: u32) -> u32 {
        let effective = self.effective_weight(weight);
        self.penalty = self.penalty.min(weight).saturating_sub(1);
        effective
    }

    /// True if more than `fail_timeout` passed since `checked` (or nothing was ever checked).
    fn window_expired(&self, fail_timeout: Duration, now: Instant) -> bool {
        self.checked
            .is_none_or(|checked| now.saturating_duration_since(checked) > fail_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    fn policy(max_fails: u32, fail_timeout: u64) -> FailPolicy {
        FailPolicy {
            max_fails,
            fail_timeout: SECS(fail_timeout),
        }
    }

    #[test]
    fn unavailable_after_max_fails_until_fail_timeout_has_passed() {
        let t0 = Instant::now();
        let p = policy(2, 10);
        let mut h = PassiveHealth::new();

        assert!(!h.on_failure(p, 1, t0));
        assert!(h.is_available(p, t0 + SECS(1)));
        assert!(h.on_failure(p, 1, t0 + SECS(2)));
        // The window runs from the last failure (checked = t0+2s), inclusive at its end.
        let cases = [(SECS(2), false), (SECS(12), false), (SECS(13), true)];
        for (after, want) in cases {
            assert_eq!(h.is_available(p, t0 + after), want, "at t0+{after:?}");
        }
        assert!(h.is_available(p, t0 + SECS(12) + Duration::from_millis(1)));
    }

    #[test]
    fn max_fails_zero_never_makes_a_peer_unavailable() {
        let t0 = Instant::now();
        let p = policy(0, 10);
        let mut h = PassiveHealth::new();
        for _ in 0..100 {
            assert!(!h.on_failure(p, 5, t0));
        }
        assert!(h.is_available(p, t0));
        assert_eq!(h.fails(), 100); // counted, as nginx does
        assert_eq!(h.effective_weight(5), 5); // but the weight is not lowered
    }

    #[test]
    fn trial_after_fail_timeout_then_success_forgives() {
        let t0 = Instant::now();
        let p = policy(1, 10);
        let mut h = PassiveHealth::new();
        h.on_failure(p, 1, t0);

        let t1 = t0 + SECS(11);
        assert!(h.is_available(p, t1));
        h.on_chosen(p, t1); // the trial request starts a new window...
        assert!(!h.is_available(p, t1)); // ...so concurrent picks skip the peer
        assert!(!h.is_available(p, t1 + SECS(10)));
        assert!(h.on_success(p), "a recovery");
        assert_eq!(h.fails(), 0);
        assert!(h.is_available(p, t1));
        assert_eq!(
            h.back_since(),
            Some(t1),
            "the ramp starts when the trial was chosen"
        );
    }

    #[test]
    fn trial_that_fails_keeps_the_peer_out_for_another_fail_timeout() {
        let t0 = Instant::now();
        let p = policy(1, 10);
        let mut h = PassiveHealth::new();
        h.on_failure(p, 1, t0);
        let t1 = t0 + SECS(11);
        h.on_chosen(p, t1);
        assert!(h.on_failure(p, 1, t1 + SECS(1)));
        assert_eq!(h.fails(), 2);
        assert!(!h.is_available(p, t1 + SECS(11)));
        assert!(h.is_available(p, t1 + SECS(12)));
    }

    #[test]
    fn failures_chain_across_windows_while_no_choice_falls_after_a_quiet_fail_timeout() {
        // nginx resets `fails` only when accessed < checked. Each failure restarts the window,
        // so failures 9s apart keep adding up, and successes in between forgive nothing:
        // three failures over 18s reach max_fails = 3 with fail_timeout = 10s.
        let t0 = Instant::now();
        let p = policy(3, 10);
        let mut h = PassiveHealth::new();
        for at in [0, 9, 18] {
            h.on_chosen(p, t0 + SECS(at));
            h.on_success(p); // an earlier request, reporting now
            h.on_failure(p, 1, t0 + SECS(at));
        }
        assert_eq!(h.fails(), 3);
        assert!(!h.is_available(p, t0 + SECS(28)));
        assert!(h.is_available(p, t0 + SECS(29)));
    }

    #[test]
    fn success_forgives_when_chosen_after_a_quiet_fail_timeout() {
        let t0 = Instant::now();
        let p = policy(3, 10);
        let mut h = PassiveHealth::new();
        h.on_failure(p, 1, t0);
        h.on_failure(p, 1, t0 + SECS(1));
        h.on_chosen(p, t0 + SECS(20)); // window over: checked = t0+20 > accessed
        assert!(!h.on_success(p), "forgiven, but it was never out: no ramp");
        assert_eq!(h.fails(), 0);
        assert_eq!(h.back_since(), None);
    }

    #[test]
    fn a_fresh_peer_is_not_forgiven_by_accident_and_stays_clean() {
        let mut h = PassiveHealth::new();
        assert!(!h.on_success(policy(1, 10))); // accessed == checked == never: nothing to do
        assert_eq!(h, PassiveHealth::new());
    }

    #[test]
    fn failure_lowers_effective_weight_and_picks_restore_it_one_by_one() {
        let t0 = Instant::now();
        let cases: [(u32, u32, &[u32]); 4] = [
            // (weight, max_fails, effective weights seen by successive picks after one failure)
            (10, 2, &[5, 6, 7, 8, 9, 10, 10]),
            (10, 3, &[7, 8, 9, 10, 10]),
            (4, 1, &[0, 1, 2, 3, 4, 4]),
            (1, 3, &[1, 1]), // 1 / 3 == 0: nothing taken off
        ];
        for (weight, max_fails, want) in cases {
            let mut h = PassiveHealth::new();
            h.on_failure(policy(max_fails, 10), weight, t0);
            let got: Vec<u32> = want
                .iter()
                .map(|_| h.take_effective_weight(weight))
                .collect();
            assert_eq!(got, want, "weight {weight} max_fails {max_fails}");
        }
    }

    #[test]
    fn effective_weight_never_goes_below_zero() {
        let t0 = Instant::now();
        let mut h = PassiveHealth::new();
        for _ in 0..5 {
            h.on_failure(policy(2, 10), 3, t0); // 3 / 2 == 1 per failure
        }
        assert_eq!(h.effective_weight(3), 0);
        assert_eq!(h.take_effective_weight(3), 0);
        assert_eq!(h.take_effective_weight(3), 1);
    }

    #[test]
    fn penalty_is_clamped_when_a_reload_lowers_the_weight() {
        let t0 = Instant::now();
        let mut h = PassiveHealth::new();
        h.on_failure(policy(1, 10), 10, t0); // effective 0 of 10
        assert_eq!(h.effective_weight(2), 0);
        assert_eq!(h.take_effective_weight(2), 0);
        assert_eq!(h.take_effective_weight(2), 1);
        assert_eq!(h.take_effective_weight(2), 2);
    }

    #[test]
    fn clear_fails_forgets_failures_but_not_the_window() {
        let t0 = Instant::now();
        let p = policy(1, 10);
        let mut h = PassiveHealth::new();
        h.on_failure(p, 1, t0);
        h.clear_fails();
        assert_eq!(h.fails(), 0);
        assert!(h.is_available(p, t0));
    }
}
