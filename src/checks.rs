//! NGINX Plus's active health checks, run: for each `health_check` in force, one task per peer
//! of its upstream that sends the check request every `interval` and reports the outcome to
//! the peer's [`ActiveHealth`](crate::upstream::health::active::ActiveHealth), which every pick
//! reads.
//!
//! The set of running checks is reconciled with each snapshot put in force ([`HealthChecks::
//! reconcile`]): a check the new configuration keeps unchanged (same upstream and parameters,
//! wherever it is written) keeps running, with its verdicts; a peer it probes that the
//! reload keeps is probed on. Checks and peers that are gone stop, and their verdicts are
//! forgotten, so a peer is never held out by a check no longer in force.
//!
//! A check request is `GET <uri>` with `Host`, `User-Agent` and `Connection: close`, on a
//! connection of its own (not the pool's), with the location's `proxy_connect_timeout`,
//! `proxy_send_timeout` and `proxy_read_timeout`; over TLS when the location's `proxy_pass` is
//! `https://`, with its `proxy_ssl_*` (a failed handshake fails the check).

use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Method;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::model::HealthCheck;
use crate::error_log::errno_text;
use crate::log;
use crate::pool::h1::{self, RequestFraming, Shape};
use crate::pool::{Failed, UpstreamBody};
use crate::snapshot::Snapshot;
use crate::upstream::PeerState;
use crate::upstream::health::active::{self, BODY_LIMIT, Change, CheckState, Test, Verdict};

/// The checks running now.
#[derive(Default)]
pub struct HealthChecks {
    running: Mutex<HashMap<String, Running>>,
    next_id: AtomicU64,
}

/// One `health_check` in force: its probes by peer.
struct Running {
    /// Keyed by the address of the peer's state (the same `Arc` for the same peer in every
    /// snapshot); the `Arc` in the probe keeps the address from being reused.
    probes: HashMap<usize, Probe>,
}

struct Probe {
    id: u64,
    state: Arc<PeerState>,
    task: JoinHandle<()>,
}

impl HealthChecks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the running checks those of `snapshot`: starts new checks and probes of new
    /// peers, stops those no longer configured. Must run inside a tokio runtime (probes are
    /// spawned on it).
    pub fn reconcile(&self, snapshot: &Snapshot) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let checks = (snapshot.config.http.iter())
            .flat_map(|h| &h.health_checks)
            .chain(snapshot.config.stream.iter().flat_map(|s| &s.health_checks));
        let mut wanted: HashMap<String, (Arc<HealthCheck>, Vec<Target>)> = HashMap::new();
        for check in checks {
            let identity = check.identity();
            if wanted.contains_key(&identity) {
                continue; // the same check written twice: probed once
            }
            let group = match check.stream {
                None => snapshot.group(&check.upstream),
                Some(_) => snapshot.stream.group(&check.upstream),
            };
            let Some(group) = group else {
                continue;
            };
            let targets = (group.balancer().peers().iter())
                .filter(|peer| !peer.is_down())
                .map(|peer| Target {
                    state: peer.shared_state().clone(),
                    addr: peer.addr(),
                    slow_start: peer.slow_start(),
                })
                .collect();
            wanted.insert(identity, (Arc::new(check.clone()), targets));
        }
        // Start what is new before stopping what is gone: `persistent` asks whether a peer
        // was healthy under the checks in force until now.
        let mut stop = Vec::new();
        for (identity, (spec, targets)) in &wanted {
            let fresh = !running.contains_key(identity);
            let entry = running.entry(identity.clone()).or_insert_with(|| Running {
                probes: HashMap::new(),
            });
            let mut keep = HashMap::new();
            for target in targets {
                let key = Arc::as_ptr(&target.state) as usize;
                if let Some(probe) = entry.probes.remove(&key) {
                    keep.insert(key, probe);
                    continue;
                }
                // `mandatory`: out until the first check; `persistent`: unless the peer was
                // healthy under the checks in force before this one.
                let held =
                    spec.mandatory && !(fresh && spec.persistent && was_healthy(&target.state));
                let initial = if held {
                    CheckState::Checking
                } else {
                    CheckState::Up
                };
                let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                target.state.add_check(Verdict::new(id, initial));
                let task = tokio::spawn(probe_loop(spec.clone(), target.clone(), id));
                keep.insert(
                    key,
                    Probe {
                        id,
                        state: target.state.clone(),
                        task,
                    },
                );
            }
            stop.extend(std::mem::replace(&mut entry.probes, keep).into_values());
        }
        running.retain(|identity, r| {
            let keep = wanted.contains_key(identity);
            if !keep {
                stop.extend(r.probes.drain().map(|(_, probe)| probe));
            }
            keep
        });
        drop(running);
        for probe in stop {
            probe.stop();
        }
    }

    /// Stops every check (the server stops).
    pub fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, mut r) in running.drain() {
            for (_, probe) in r.probes.drain() {
                probe.stop();
            }
        }
    }

    /// Checks running now, and their probes.
    pub fn count(&self) -> (usize, usize) {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let probes = running.values().map(|r| r.probes.len()).sum();
        (running.len(), probes)
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Probe {
    /// Stops the task and forgets its verdict. A report the task makes after this finds no
    /// verdict and is dropped, so the order of the two does not matter.
    fn stop(self) {
        self.task.abort();
        self.state.remove_check(self.id);
    }
}

/// Healthy under the checks in force: probed by some check, and none holds it out.
fn was_healthy(state: &PeerState) -> bool {
    let active = state.active_health();
    active.is_checked() && !active.is_out()
}

/// A peer as one check probes it.
#[derive(Clone)]
struct Target {
    state: Arc<PeerState>,
    addr: SocketAddr,
    slow_start: Duration,
}

/// Checks one peer every `interval` (counted from the end of the last check) until stopped.
async fn probe_loop(spec: Arc<HealthCheck>, target: Target, id: u64) {
    let to = SocketAddr::new(target.addr.ip(), spec.port.unwrap_or(target.addr.port()));
    let mut jitter = Jitter::new(id);
    // TLS to TLS peers, with the location's settings (compiled with the snapshot already, so
    // this finds them compiled unless a file changed since).
    let tls = spec.tls.as_ref().map(|(ssl, name)| {
        (
            crate::pool::tls::compile(ssl, &spec.location).map_err(|e| e.message),
            crate::pool::tls::SslName::new(name),
        )
    });
    loop {
        let connector = match &tls {
            None => Ok(None),
            Some((Ok(tls), name)) => Ok(Some((&**tls, name))),
            Some((Err(why), _)) => Err(why.clone()),
        };
        let outcome = match (connector, &spec.stream) {
            (_, Some(stream)) => probe_stream(&spec, stream, to).await,
            (Ok(connector), None) => probe(&spec, to, connector).await,
            (Err(why), None) => Err(Failure::Io {
                error: why,
                doing: "SSL handshaking to upstream",
            }),
        };
        let about = About {
            spec: &spec,
            peer: target.addr,
        };
        if let Err(Failure::Io { error, doing }) = &outcome {
            log!(Error, "{error} while {doing}, {about}");
        }
        let passed = outcome.is_ok();
        let Some(change) = target
            .state
            .report_check(id, passed, spec.fails, spec.passes)
        else {
            return; // stopped meanwhile
        };
        let doing = match &outcome {
            Ok(test) => test.doing(),
            Err(Failure::Io { doing, .. }) => doing,
            Err(Failure::Test(test)) => test.doing(),
        };
        match change {
            Change::Unhealthy => log!(Warn, "peer is unhealthy while {doing}, {about}"),
            Change::Healthy => {
                log!(Notice, "peer is healthy while {doing}, {about}");
                if !target.slow_start.is_zero() {
                    target.state.health().start_ramp(Instant::now());
                }
            }
            Change::None => {}
        }
        tokio::time::sleep(spec.interval + jitter.next(spec.jitter)).await;
    }
}

/// The tail of a check's log lines, as NGINX Plus writes it.
struct About<'a> {
    spec: &'a HealthCheck,
    peer: SocketAddr,
}

impl std::fmt::Display for About<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.spec.matcher.as_ref().map_or("", |m| m.name.as_str());
        write!(
            f,
            "health check \"{name}\" of peer {} in upstream \"{}\"",
            self.peer, self.spec.upstream
        )
    }
}

/// Why a check failed.
#[derive(Debug)]
enum Failure {
    /// No answer to test: what went wrong, and during what (nginx's "while ..." words).
    Io { error: String, doing: &'static str },
    /// The answer failed a test.
    Test(Test),
}

/// One check of the peer at `to`: the test that passed last, or why it failed.
async fn probe(
    spec: &HealthCheck,
    to: SocketAddr,
    tls: Option<(&crate::pool::tls::UpstreamTls, &crate::pool::tls::SslName)>,
) -> Result<Test, Failure> {
    let io = |error: String, doing| Failure::Io { error, doing };
    const CONNECTING: &str = "connecting to upstream";
    const READING_HEAD: &str = "reading response header from upstream";
    const READING_BODY: &str = "reading response body from upstream";
    let stream = match tokio::time::timeout(spec.connect_timeout, TcpStream::connect(to)).await {
        Err(_) => return Err(io(TIMED_OUT.to_owned(), CONNECTING)),
        Ok(Err(e)) => {
            return Err(io(
                format!("connect() failed ({})", errno_text(&e)),
                CONNECTING,
            ));
        }
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let stream = match tls {
        None => crate::pool::stream::Stream::Plain(stream),
        Some((tls, name)) => match tls.handshake(stream, name, spec.connect_timeout).await {
            Ok(stream) => stream,
            Err(e) => return Err(io(e.to_string(), "SSL handshaking to upstream")),
        },
    };
    let mut conn = h1::Conn::new(stream, spec.send_timeout);
    let head = h1::request_head(
        &Method::GET,
        &spec.uri,
        spec.http10,
        RequestFraming::None,
        |out| {
            h1::put_field(out, b"Host", spec.host.as_bytes());
            h1::put_field(out, b"User-Agent", USER_AGENT.as_bytes());
            h1::put_field(out, b"Connection", b"close");
        },
    );
    let shape = Shape {
        framing: RequestFraming::None,
        head_only: false,
        http10: spec.http10,
        upgrade: false,
        upstream_headers: false,
    };
    let answer =
        match (conn.exchange(&head, UpstreamBody::Empty, shape, spec.read_timeout, None)).await {
            Ok(answer) => answer,
            Err(failed) => return Err(io(failed_text(failed), READING_HEAD)),
        };
    let mut body = Vec::new();
    if active::needs_body(spec.matcher.as_deref()) {
        let mut peer_body = conn.body(answer.body, false);
        let read = async {
            while body.len() < BODY_LIMIT {
                match poll_fn(|cx| peer_body.poll_frame(cx)).await {
                    None => break,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            body.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => return Err(io(e.to_string(), READING_BODY)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(spec.read_timeout, read).await {
            Ok(result) => result?,
            Err(_) => return Err(io(TIMED_OUT.to_owned(), READING_BODY)),
        }
    }
    let matcher = spec.matcher.as_deref();
    let status = answer.head.status.as_u16();
    let headers = answer.fields.to_map();
    active::judge(matcher, status, &headers, &body).map_err(Failure::Test)?;
    Ok(if active::needs_body(matcher) {
        Test::Body
    } else {
        Test::Status
    })
}

/// A stream check of the peer at `to`: connect within `health_check_timeout`, then the
/// `match`'s `send`, then its `expect` tested against what arrives (up to 256 KiB, until it
/// matches, the peer closes, or the time is up).
async fn probe_stream(
    spec: &HealthCheck,
    check: &crate::config::model::StreamCheck,
    to: SocketAddr,
) -> Result<Test, Failure> {
    use crate::config::model::StreamExpect;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = |error: String, doing| Failure::Io { error, doing };
    const CONNECTING: &str = "connecting to upstream";
    const SENDING: &str = "sending to upstream";
    const READING: &str = "reading from upstream";
    let deadline = Instant::now() + spec.connect_timeout;
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(to)).await {
        Err(_) => return Err(io(TIMED_OUT.to_owned(), CONNECTING)),
        Ok(Err(e)) => {
            return Err(io(
                format!("connect() failed ({})", errno_text(&e)),
                CONNECTING,
            ));
        }
        Ok(Ok(stream)) => stream,
    };
    if !check.send.is_empty() {
        match tokio::time::timeout_at(deadline, stream.write_all(&check.send)).await {
            Err(_) => return Err(io(TIMED_OUT.to_owned(), SENDING)),
            Ok(Err(e)) => return Err(io(format!("send() failed ({})", errno_text(&e)), SENDING)),
            Ok(Ok(())) => {}
        }
    }
    let Some(expect) = &check.expect else {
        return Ok(Test::Status);
    };
    let matches = |got: &[u8]| match expect {
        StreamExpect::Prefix(p) => got.starts_with(p),
        StreamExpect::Regex(re) => re.is_match(got),
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if matches(&got) {
            return Ok(Test::Body);
        }
        if got.len() >= BODY_LIMIT {
            return Err(Failure::Test(Test::Body));
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(io(TIMED_OUT.to_owned(), READING)),
            Ok(Err(e)) => return Err(io(format!("recv() failed ({})", errno_text(&e)), READING)),
            Ok(Ok(0)) => return Err(Failure::Test(Test::Body)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const TIMED_OUT: &str = "upstream timed out (110: Connection timed out)";

/// The `User-Agent` of check requests.
const USER_AGENT: &str = concat!("imbang/", env!("CARGO_PKG_VERSION"), " (health check)");

/// nginx's words for an exchange that failed before a whole response head.
fn failed_text(failed: Failed) -> String {
    match failed {
        Failed::NotSent(e, _) => format!("send() failed ({})", errno_text(&e)),
        Failed::Broken(broken) => broken.to_string(),
        Failed::SendTimeout | Failed::ReadTimeout => TIMED_OUT.to_owned(),
        Failed::Invalid(why) => why.to_owned(),
        Failed::ClientBody => "request body failed".to_owned(),
    }
}

/// `jitter=`'s random delays: a xorshift generator per probe, seeded from std's random hasher
/// keys and the probe's id.
struct Jitter(u64);

impl Jitter {
    fn new(id: u64) -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(id);
        Self(h.finish() | 1)
    }

    /// A delay in `[0, max)`.
    fn next(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_nanos(self.0 % nanos)
    }
}
