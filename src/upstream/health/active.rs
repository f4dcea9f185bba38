//! NGINX Plus's active health checks (`health_check`): what the checks say about one peer, and
//! whether a response passes a check.
//!
//! Each running check keeps a [`Verdict`] on each peer it probes, in the peer's
//! [`PeerState`](crate::upstream::PeerState) (so it survives a reload that keeps both the peer
//! and the check). A peer is *out* while any check holds it out: unhealthy (failed `fails`
//! checks in a row, until it passes `passes` in a row), or still `checking` (a `mandatory`
//! check has not yet had its first answer). Passive health (`max_fails`) is separate, as in
//! NGINX Plus: a peer may be unavailable by either.
//!
//! Pure, like [`passive`](super::passive): no clock, no I/O; the prober in `crate::checks`
//! feeds it.

use http::HeaderMap;

use crate::config::model::{HeaderTest, Match};

/// How much of a response body a `match` block's `body` test sees (NGINX Plus: "only the first
/// 256k of the response body are examined").
pub const BODY_LIMIT: usize = 256 * 1024;

/// What one check says about one peer now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckState {
    /// Not checked yet, under `mandatory`: no requests until the first check passes.
    Checking,
    Up,
    /// Failed `fails` checks in a row; no requests until it passes `passes` in a row.
    Unhealthy,
}

/// A change of a peer's [`CheckState`] that the error log reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// Up or checking → unhealthy (nginx: `[warn] peer is unhealthy while ...`).
    Unhealthy,
    /// Unhealthy or checking → up (nginx: `[notice] peer is healthy while ...`).
    Healthy,
}

/// One check's record on one peer, with NGINX Plus's counters (its API's `health_checks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The running check's own number (one per check and peer).
    pub id: u64,
    pub state: CheckState,
    fails_in_row: u32,
    passes_in_row: u32,
    /// Checks made.
    pub checks: u64,
    /// Checks failed.
    pub failed: u64,
    /// Times the peer became unhealthy.
    pub went_unhealthy: u64,
    /// Whether the last check passed (`None` before the first).
    pub last_passed: Option<bool>,
}

impl Verdict {
    pub fn new(id: u64, state: CheckState) -> Self {
        Self {
            id,
            state,
            fails_in_row: 0,
            passes_in_row: 0,
            checks: 0,
            failed: 0,
            went_unhealthy: 0,
            last_passed: None,
        }
    }

    /// Counts one check's outcome under `fails=` and `passes=`. A peer still `checking` is
    /// decided by its first check, either way.
    pub fn report(&mut self, passed: bool, fails: u32, passes: u32) -> Change {
        self.checks += 1;
        self.last_passed = Some(passed);
        if passed {
            self.fails_in_row = 0;
            self.passes_in_row = self.passes_in_row.saturating_add(1);
            let back = match self.state {
                CheckState::Checking => true,
                CheckState::Unhealthy => self.passes_in_row >= passes,
                CheckState::Up => false,
            };
            if back {
                self.state = CheckState::Up;
                return Change::Healthy;
            }
        } else {
            self.failed += 1;
            self.passes_in_row = 0;
            self.fails_in_row = self.fails_in_row.saturating_add(1);
            let out = match self.state {
                CheckState::Checking => true,
                CheckState::Up => self.fails_in_row >= fails,
                CheckState::Unhealthy => false,
            };
            if out {
                self.state = CheckState::Unhealthy;
                self.went_unhealthy += 1;
                return Change::Unhealthy;
            }
        }
        Change::None
    }
}

/// The verdicts of every check running on one peer.
#[derive(Clone, Debug, Default)]
pub struct ActiveHealth {
    verdicts: Vec<Verdict>,
}

impl ActiveHealth {
    /// Whether any check holds the peer out.
    pub fn is_out(&self) -> bool {
        self.verdicts.iter().any(|v| v.state != CheckState::Up)
    }

    /// Whether some check runs on the peer.
    pub fn is_checked(&self) -> bool {
        !self.verdicts.is_empty()
    }

    pub fn verdicts(&self) -> &[Verdict] {
        &self.verdicts
    }

    pub fn add(&mut self, verdict: Verdict) {
        self.verdicts.push(verdict);
    }

    /// Forgets the verdict of a check that stopped.
    pub fn remove(&mut self, id: u64) {
        self.verdicts.retain(|v| v.id != id);
    }

    /// [`Verdict::report`] for check `id`; `None` when that check no longer runs here (its
    /// outcome is dropped).
    pub fn report(&mut self, id: u64, passed: bool, fails: u32, passes: u32) -> Option<Change> {
        let verdict = self.verdicts.iter_mut().find(|v| v.id == id)?;
        Some(verdict.report(passed, fails, passes))
    }
}

/// Which test of a response failed, in nginx's words for the log ("while checking ...").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    Status,
    Header,
    Body,
}

impl Test {
    pub fn doing(self) -> &'static str {
        match self {
            Self::Status => "checking status code",
            Self::Header => "checking header",
            Self::Body => "checking body",
        }
    }
}

/// Whether a check needs the response body (a `match` with a `body` test).
pub fn needs_body(matcher: Option<&Match>) -> bool {
    matcher.is_some_and(|m| m.body.is_some())
}

/// Whether a response passes: without a `match`, a 2xx or 3xx status; with one, every test of
/// it. `body` is what was read of the body, at most [`BODY_LIMIT`] bytes.
pub fn judge(
    matcher: Option<&Match>,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Test> {
    let Some(m) = matcher else {
        return if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(Test::Status)
        };
    };
    if m.status.as_ref().is_some_and(|t| !t.passes(status)) {
        return Err(Test::Status);
    }
    if !m.headers.iter().all(|t| header_passes(t, headers)) {
        return Err(Test::Header);
    }
    if let Some(t) = &m.body {
        let body = &body[..body.len().min(BODY_LIMIT)];
        if t.regex.is_match(body) == t.negate {
            return Err(Test::Body);
        }
    }
    Ok(())
}

fn header_passes(test: &HeaderTest, headers: &HeaderMap) -> bool {
    let any = |name: &str, f: &dyn Fn(&str) -> bool| {
        (headers.get_all(name).iter()).any(|v| v.to_str().is_ok_and(f))
    };
    match test {
        HeaderTest::Present(name) => headers.contains_key(name.as_str()),
        HeaderTest::Absent(name) => !headers.contains_key(name.as_str()),
        HeaderTest::Equals(name, value) => any(name, &|v| v == value),
        HeaderTest::NotEquals(name, value) => any(name, &|v| v != value),
        HeaderTest::Matches(name, re) => any(name, &|v| re.is_match(v)),
        HeaderTest::NotMatches(name, re) => any(name, &|v| !re.is_match(v)),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::config::model::{BodyTest, StatusTest};

    #[test]
    fn fails_in_a_row_make_a_peer_unhealthy_and_passes_in_a_row_bring_it_back() {
        let mut v = Verdict::new(1, CheckState::Up);
        // fails=3 passes=2: two failures, a pass (the count starts again), three failures.
        let outcomes = [
            false, false, true, false, false, false, true, false, true, true,
        ];
        let changes: Vec<_> = outcomes.iter().map(|&p| v.report(p, 3, 2)).collect();
        use Change::{Healthy as H, None as N, Unhealthy as U};
        assert_eq!(changes, [N, N, N, N, N, U, N, N, N, H]);
        assert_eq!((v.checks, v.failed, v.went_unhealthy), (10, 6, 1));
        assert_eq!((v.state, v.last_passed), (CheckState::Up, Some(true)));
    }

    #[test]
    fn a_mandatory_check_decides_on_its_first_answer() {
        let mut passed = Verdict::new(1, CheckState::Checking);
        assert_eq!(passed.report(true, 3, 3), Change::Healthy);
        let mut failed = Verdict::new(2, CheckState::Checking);
        assert_eq!(failed.report(false, 3, 3), Change::Unhealthy);
        assert_eq!(failed.state, CheckState::Unhealthy);
    }

    #[test]
    fn any_check_holding_the_peer_out_keeps_it_out_and_a_stopped_check_is_forgotten() {
        let mut health = ActiveHealth::default();
        assert!(!health.is_out() && !health.is_checked());
        health.add(Verdict::new(1, CheckState::Up));
        health.add(Verdict::new(2, CheckState::Up));
        assert_eq!(health.report(2, false, 1, 1), Some(Change::Unhealthy));
        assert!(health.is_out());
        health.remove(2);
        assert!(!health.is_out() && health.is_checked());
        assert_eq!(
            health.report(2, true, 1, 1),
            None,
            "a stopped check's outcome is dropped"
        );
        assert_eq!(health.verdicts().len(), 1);
    }

    fn matcher(status: Option<StatusTest>, headers: Vec<HeaderTest>, body: Option<&str>) -> Match {
        Match {
            name: "m".into(),
            status,
            headers,
            body: body.map(|re| BodyTest {
                negate: re.starts_with('!'),
                regex: regex::bytes::Regex::new(re.trim_start_matches('!')).unwrap(),
            }),
        }
    }

    #[test]
    fn without_a_match_2xx_and_3xx_pass() {
        let h = HeaderMap::new();
        let verdicts: Vec<_> = [199, 200, 204, 302, 399, 400, 404, 500]
            .map(|s| judge(None, s, &h, b"").is_ok())
            .to_vec();
        assert_eq!(
            verdicts,
            [false, true, true, true, true, false, false, false]
        );
    }

    #[test]
    fn a_match_passes_only_when_every_test_does() {
        let mut h = HeaderMap::new();
        h.append("content-type", HeaderValue::from_static("text/html"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let status = |negate, ranges: &[(u16, u16)]| StatusTest {
            negate,
            ranges: ranges.to_vec(),
        };
        let re = |s| regex::Regex::new(s).unwrap();
        let cases: Vec<(Match, u16, Result<(), Test>)> = vec![
            (
                matcher(Some(status(false, &[(200, 200)])), vec![], None),
                200,
                Ok(()),
            ),
            (
                matcher(Some(status(false, &[(200, 200)])), vec![], None),
                204,
                Err(Test::Status),
            ),
            (
                matcher(Some(status(true, &[(500, 599)])), vec![], None),
                404,
                Ok(()),
            ),
            (
                matcher(Some(status(true, &[(500, 599)])), vec![], None),
                503,
                Err(Test::Status),
            ),
            (matcher(None, vec![], None), 500, Ok(())),
            (
                matcher(None, vec![HeaderTest::Present("x-a".into())], None),
                200,
                Ok(()),
            ),
            (
                matcher(None, vec![HeaderTest::Absent("x-a".into())], None),
                200,
                Err(Test::Header),
            ),
            (
                matcher(None, vec![HeaderTest::Absent("x-b".into())], None),
                200,
                Ok(()),
            ),
            (
                matcher(
                    None,
                    vec![HeaderTest::Equals("x-a".into(), "2".into())],
                    None,
                ),
                200,
                Ok(()),
            ),
            (
                matcher(
                    None,
                    vec![HeaderTest::NotEquals("x-b".into(), "2".into())],
                    None,
                ),
                200,
                Err(Test::Header),
            ),
            (
                matcher(
                    None,
                    vec![HeaderTest::Matches("content-type".into(), re("^text/"))],
                    None,
                ),
                200,
                Ok(()),
            ),
            (
                matcher(
                    None,
                    vec![HeaderTest::NotMatches("content-type".into(), re("html"))],
                    None,
                ),
                200,
                Err(Test::Header),
            ),
            (matcher(None, vec![], Some("Welcome")), 200, Ok(())),
            (
                matcher(None, vec![], Some("!Welcome")),
                200,
                Err(Test::Body),
            ),
            (matcher(None, vec![], Some("^Bye")), 200, Err(Test::Body)),
        ];
        for (i, (m, status, want)) in cases.iter().enumerate() {
            let got = judge(Some(m), *status, &h, b"Welcome home");
            assert_eq!(got, *want, "case {i}: {m:?} on {status}");
        }
    }

    #[test]
    fn the_body_test_sees_the_first_256k_only() {
        let m = matcher(None, vec![], Some("END"));
        let mut body = vec![b'.'; BODY_LIMIT];
        body.extend_from_slice(b"END");
        assert_eq!(
            judge(Some(&m), 200, &HeaderMap::new(), &body),
            Err(Test::Body)
        );
        body.drain(..3);
        assert_eq!(judge(Some(&m), 200, &HeaderMap::new(), &body), Ok(()));
    }
}
