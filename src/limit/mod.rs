//! nginx's request limits: `limit_req` ([`req`]: a leaky bucket per key, nginx's arithmetic in
//! milli-requests), `limit_conn` ([`conn`]: requests in progress per key) and `limit_rate`
//! ([`Pace`]: the response body paced). Run from the request path's preaccess step
//! (`crate::proxy`): after the rewrite phase and realip, before `allow`/`deny`; `limit_req`
//! first, then `limit_conn`, in nginx's order. A location without limits has no
//! [`RouteLimits`] and pays nothing.
//!
//! Zones are tables in the process, shared by every worker thread and split into locked
//! shards ([`table`]). A reload keeps a zone whose name, kind, size and key are unchanged
//! (nginx keeps the shared memory then), with the new configuration's rate; any other zone
//! starts empty.

pub mod conn;
pub mod req;
pub mod table;

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use tokio::time::{Instant, Sleep};

use crate::FastMap;
use crate::config::error::{ConfigError, ConfigErrors, ErrorKind};
use crate::config::model::{LimitZone, LimitZoneKind, Limits, LogLevel};
use crate::vars::{Scope, Template, Vars};

pub use conn::{Acquired, ConnGuard, ConnTable};
pub use req::ReqZone;

/// Milliseconds on a monotonic clock (nginx's `ngx_current_msec`). nginx's starts at the
/// machine's boot and is read once per event-loop turn; this one is the kernel's coarse
/// monotonic clock (a few milliseconds' resolution, as nginx's cached time, for a third of the
/// instructions of the precise one), started at 2^30 ms (12 days) when the process first asks,
/// so that a node nginx marks "updated at 0" reads, as there, as drained long ago.
pub fn now_ms() -> u64 {
    fn clock() -> u64 {
        use nix::time::{ClockId, clock_gettime};
        match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
            Ok(t) => t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000,
            Err(_) => 0,
        }
    }
    static EPOCH: OnceLock<u64> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(clock);
    (1 << 30) + clock().saturating_sub(epoch)
}

/// The tables of every zone in use, by name, kind, size and key: what a reload finds again.
type Kept = Vec<(
    String,
    bool,
    u64,
    String,
    Weak<dyn std::any::Any + Send + Sync>,
)>;
static KEPT: Mutex<Kept> = Mutex::new(Vec::new());

/// The table for a zone of this name, kind, size and key: the one a previous configuration
/// used, if it still exists, or a new one.
fn table<V: Send + 'static>(zone: &LimitZone, node_bytes: usize) -> Arc<table::Table<V>> {
    let is_req = matches!(zone.kind, LimitZoneKind::Req { .. });
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    kept.retain(|k| k.4.strong_count() > 0);
    for (name, req, size, key, weak) in kept.iter() {
        if *name == zone.name && *req == is_req && *size == zone.size && *key == zone.key {
            if let Some(t) = weak
                .upgrade()
                .and_then(|t| t.downcast::<table::Table<V>>().ok())
            {
                return t;
            }
        }
    }
    let t = Arc::new(table::Table::<V>::new(zone.size, node_bytes));
    let any: Arc<dyn std::any::Any + Send + Sync> = t.clone();
    kept.push((
        zone.name.clone(),
        is_req,
        zone.size,
        zone.key.clone(),
        Arc::downgrade(&any),
    ));
    t
}

/// A `limit_conn_zone` as one configuration sees it.
pub struct ConnZone {
    pub name: Box<str>,
    pub key: Template,
    pub table: Arc<ConnTable>,
}

/// The zones of one configuration, by name.
#[derive(Default)]
pub struct Zones {
    req: FastMap<String, Arc<ReqZone>>,
    conn: FastMap<String, Arc<ConnZone>>,
}

impl Zones {
    pub fn compile(zones: &[LimitZone], scope: &Scope, errors: &mut ConfigErrors) -> Self {
        let mut out = Self::default();
        for z in zones {
            let key = match Template::compile_in(&z.key, scope) {
                Ok(key) => key,
                Err(message) => {
                    errors.push(ConfigError::new(
                        ErrorKind::Invalid(message),
                        Some(z.location.clone()),
                    ));
                    continue;
                }
            };
            match z.kind {
                LimitZoneKind::Req { rate } => {
                    out.req.insert(
                        z.name.clone(),
                        Arc::new(ReqZone {
                            name: z.name.as_str().into(),
                            rate: rate as i64,
                            key,
                            table: table(z, req::NODE_BYTES),
                        }),
                    );
                }
                LimitZoneKind::Conn => {
                    out.conn.insert(
                        z.name.clone(),
                        Arc::new(ConnZone {
                            name: z.name.as_str().into(),
                            key,
                            table: table(z, conn::NODE_BYTES),
                        }),
                    );
                }
            }
        }
        out
    }
}

/// `$limit_req_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqStatus {
    Passed,
    Delayed,
    Rejected,
    DelayedDryRun,
    RejectedDryRun,
}

impl ReqStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "PASSED",
            Self::Delayed => "DELAYED",
            Self::Rejected => "REJECTED",
            Self::DelayedDryRun => "DELAYED_DRY_RUN",
            Self::RejectedDryRun => "REJECTED_DRY_RUN",
        }
    }
}

/// `$limit_conn_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnStatus {
    Passed,
    Rejected,
    RejectedDryRun,
}

impl ConnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "PASSED",
            Self::Rejected => "REJECTED",
            Self::RejectedDryRun => "REJECTED_DRY_RUN",
        }
    }
}

struct ReqLimit {
    zone: Arc<ReqZone>,
    burst: u64,
    delay: u64,
}

struct ConnLimit {
    zone: Arc<ConnZone>,
    conn: u32,
}

/// A location's limits, compiled against the configuration's zones.
pub struct RouteLimits {
    req: Box<[ReqLimit]>,
    conn: Box<[ConnLimit]>,
    spec: Arc<Limits>,
    rate: Option<Template>,
    rate_after: Option<Template>,
}

impl RouteLimits {
    pub fn compile(
        spec: &Arc<Limits>,
        zones: &Zones,
        scope: &Scope,
        errors: &mut ConfigErrors,
        at: &str,
    ) -> Option<Self> {
        let mut missing = |zone: &str, location: &str| {
            // nginx's words for a zone no `*_zone` directive declared.
            errors.push(ConfigError::new(
                ErrorKind::Invalid(format!("zero size shared memory zone \"{zone}\"")),
                Some(location.to_owned()),
            ));
        };
        let mut req = Vec::new();
        for l in &spec.req {
            match zones.req.get(&l.zone) {
                Some(zone) => req.push(ReqLimit {
                    zone: zone.clone(),
                    burst: l.burst,
                    delay: l.delay,
                }),
                None => missing(&l.zone, &l.location),
            }
        }
        let mut conn = Vec::new();
        for l in &spec.conn {
            match zones.conn.get(&l.zone) {
                Some(zone) => conn.push(ConnLimit {
                    zone: zone.clone(),
                    conn: l.conn,
                }),
                None => missing(&l.zone, &l.location),
            }
        }
        let mut template = |text: &Option<String>| {
            let text = text.as_ref()?;
            Template::compile_in(text, scope)
                .map_err(|m| {
                    errors.push(ConfigError::new(ErrorKind::Invalid(m), Some(at.to_owned())))
                })
                .ok()
        };
        let rate = template(&spec.rate);
        let rate_after = template(&spec.rate_after);
        Some(Self {
            req: req.into(),
            conn: conn.into(),
            spec: spec.clone(),
            rate,
            rate_after,
        })
    }
}

/// What the preaccess step decided.
pub enum Verdict {
    /// Go on (after waiting `delay`, when set).
    Pass { delay: Option<Duration> },
    /// Answer with this status.
    Reject(u16),
}

thread_local! {
    /// The key of the limit being checked, rendered (a buffer per worker thread, reused).
    static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn render_key(key: &Template, vars: &dyn Vars, out: &mut Vec<u8>) {
    out.clear();
    key.render_bytes_into(vars, out);
}

/// nginx's `ngx_http_limit_req_handler`: `None` when no limit applied (every key empty), else
/// the status for `$limit_req_status` and, for a request to hold back, the delay.
/// `log` gives the error log's `*id` and context of the request.
pub fn limit_req(
    limits: &RouteLimits,
    vars: &dyn Vars,
    log: &dyn Fn() -> (u64, String),
) -> Option<(ReqStatus, Verdict)> {
    if limits.req.is_empty() {
        return None;
    }
    let spec = &limits.spec;
    let last = limits.req.len() - 1;
    let now = now_ms();
    // Keys of earlier limits that said `Again`, to account or undo (several limits only).
    let mut pending: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut found = None;
    let mut at = 0;
    let mut excess = 0;
    KEY.with_borrow_mut(|key| {
        for (n, limit) in limits.req.iter().enumerate() {
            at = n;
            render_key(&limit.zone.key, vars, key);
            if key.is_empty() {
                continue;
            }
            if key.len() > 65535 {
                let (id, context) = log();
                crate::log!(
                    Error,
                    "*{id} the value of the \"{}\" key is more than 65535 bytes{context}",
                    limit.zone.name
                );
                continue;
            }
            let (f, e) = limit.zone.lookup(key, limit.burst, n == last, now);
            found = Some(f);
            excess = e;
            if f == req::Found::Again {
                pending.push((n, key.clone()));
                continue;
            }
            break;
        }
    });
    let found = found?;
    let dry = spec.req_dry_run;
    let dry_text = if dry { ", dry run" } else { "" };
    if matches!(found, req::Found::Busy | req::Found::NoRoom) {
        if found == req::Found::Busy {
            let (id, context) = log();
            crate::error_log::log(
                spec.req_log_level,
                format_args!(
                    "*{id} limiting requests{dry_text}, excess: {}.{:03} by zone \"{}\"{context}",
                    excess / 1000,
                    excess % 1000,
                    limits.req[at].zone.name
                ),
            );
        }
        for (n, key) in &pending {
            limits.req[*n].zone.unlock(key);
        }
        return Some(match dry {
            true => (ReqStatus::RejectedDryRun, Verdict::Pass { delay: None }),
            false => (ReqStatus::Rejected, Verdict::Reject(spec.req_status)),
        });
    }
    // nginx's `ngx_http_limit_req_account`: the delay is the longest any limit asks for.
    let (mut limit, mut excess) = match found {
        // The last limit had an empty key: the earlier ones decide.
        req::Found::Again => (&limits.req[last], 0),
        _ => (&limits.req[at], excess),
    };
    let mut max_delay = match excess <= limit.delay {
        true => 0,
        false => (excess - limit.delay) * 1000 / limit.zone.rate as u64,
    };
    for (n, key) in pending.iter().rev() {
        let l = &limits.req[*n];
        let Some(e) = l.zone.account(key, now) else {
            continue;
        };
        if e <= l.delay {
            continue;
        }
        let delay = (e - l.delay) * 1000 / l.zone.rate as u64;
        if delay > max_delay {
            max_delay = delay;
            excess = e;
            limit = l;
        }
    }
    if max_delay == 0 {
        return Some((ReqStatus::Passed, Verdict::Pass { delay: None }));
    }
    let (id, context) = log();
    // Delays are logged a level below `limit_req_log_level` (info stays info).
    let level = match spec.req_log_level {
        LogLevel::Info => LogLevel::Info,
        LogLevel::Notice => LogLevel::Info,
        LogLevel::Warn => LogLevel::Notice,
        _ => LogLevel::Warn,
    };
    crate::error_log::log(
        level,
        format_args!(
            "*{id} delaying request{dry_text}, excess: {}.{:03}, by zone \"{}\"{context}",
            excess / 1000,
            excess % 1000,
            limit.zone.name
        ),
    );
    Some(match dry {
        true => (ReqStatus::DelayedDryRun, Verdict::Pass { delay: None }),
        false => (
            ReqStatus::Delayed,
            Verdict::Pass {
                delay: Some(Duration::from_millis(max_delay)),
            },
        ),
    })
}

/// nginx's `ngx_http_limit_conn_handler`: `None` when no limit applied (every key empty),
/// else the status for `$limit_conn_status` and the verdict; the guards of a passed request
/// go into `held` (kept until its response body is done).
pub fn limit_conn(
    limits: &RouteLimits,
    vars: &dyn Vars,
    log: &dyn Fn() -> (u64, String),
    held: &mut Vec<ConnGuard>,
) -> Option<(ConnStatus, Verdict)> {
    let spec = &limits.spec;
    let mut status = None;
    KEY.with_borrow_mut(|key| {
        for limit in limits.conn.iter() {
            render_key(&limit.zone.key, vars, key);
            if key.len() > conn::MAX_KEY {
                let (id, context) = log();
                crate::log!(
                    Error,
                    "*{id} the value of the \"{}\" key is more than 255 bytes{context}",
                    limit.zone.name
                );
                continue;
            }
            if key.is_empty() {
                continue;
            }
            status = Some(ConnStatus::Passed);
            match conn::acquire(&limit.zone.table, key, limit.conn) {
                Acquired::Held(guard) => held.push(guard),
                Acquired::Skipped => {}
                refused => {
                    if let Acquired::Limited = refused {
                        let (id, context) = log();
                        crate::error_log::log(
                            spec.conn_log_level,
                            format_args!(
                                "*{id} limiting connections{} by zone \"{}\"{context}",
                                if spec.conn_dry_run { ", dry run," } else { "" },
                                limit.zone.name
                            ),
                        );
                    } else {
                        crate::log!(
                            Alert,
                            "could not allocate node in limit_conn_zone \"{}\"",
                            limit.zone.name
                        );
                    }
                    held.clear();
                    status = Some(match spec.conn_dry_run {
                        true => ConnStatus::RejectedDryRun,
                        false => ConnStatus::Rejected,
                    });
                    return;
                }
            }
        }
    });
    let status = status?;
    Some((
        status,
        match status {
            ConnStatus::Rejected => Verdict::Reject(spec.conn_status),
            _ => Verdict::Pass { delay: None },
        },
    ))
}

/// What a response body keeps until it is done: the `limit_conn` counts of its request and
/// the pace of `limit_rate`.
#[derive(Debug, Default)]
pub struct Held {
    pub conns: Vec<ConnGuard>,
    pub pace: Option<Pace>,
}

impl Held {
    /// The pace of a response whose location has no limits but whose script said
    /// `set $limit_rate`.
    pub fn from_set(rate: &str) -> Option<Box<Self>> {
        let rate = crate::config::values::size(rate.trim()).unwrap_or(0);
        (rate > 0).then(|| {
            Box::new(Self {
                conns: Vec::new(),
                pace: Some(Pace::new(rate, 0)),
            })
        })
    }

    /// The held guards and, when `limit_rate` applies (`set $limit_rate` first, as nginx),
    /// the pace for a response of this route; `None` when there is nothing to hold.
    pub fn new(
        limits: &RouteLimits,
        conns: Vec<ConnGuard>,
        vars: &dyn Vars,
        set_rate: Option<&str>,
    ) -> Option<Box<Self>> {
        let size = |text: &str| crate::config::values::size(text.trim()).unwrap_or(0);
        let rate = match (set_rate, &limits.rate) {
            (Some(text), _) => size(text),
            (None, Some(t)) => size(&t.render(vars)),
            (None, None) => 0,
        };
        let pace = (rate > 0).then(|| {
            let after = limits
                .rate_after
                .as_ref()
                .map_or(0, |t| size(&t.render(vars)));
            Pace::new(rate, after)
        });
        if conns.is_empty() && pace.is_none() {
            return None;
        }
        Some(Box::new(Self { conns, pace }))
    }
}

/// nginx's `limit_rate` (`ngx_http_write_filter`'s arithmetic): after `after` bytes, the body
/// goes out no faster than `rate` bytes a second, counted from the response's start with one
/// second's worth allowed at once. A frame larger than what may go now is split; the rest waits
/// on a timer.
pub struct Pace {
    rate: u64,
    after: u64,
    start: Instant,
    /// Body bytes handed out so far.
    sent: u64,
    /// What is left of a frame that could not all go.
    held: Option<Bytes>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("rate", &self.rate)
            .field("sent", &self.sent)
            .finish()
    }
}

type Polled<E> = Poll<Option<Result<Frame<Bytes>, E>>>;

impl Pace {
    fn new(rate: u64, after: u64) -> Self {
        Self {
            rate,
            after,
            start: Instant::now(),
            sent: 0,
            held: None,
            timer: None,
        }
    }

    /// Bytes a second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Whether a part of a frame still waits.
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// The next frame from `inner`, paced.
    pub fn poll<E>(
        &mut self,
        cx: &mut Context<'_>,
        mut inner: impl FnMut(&mut Context<'_>) -> Polled<E>,
    ) -> Polled<E> {
        loop {
            if let Some(timer) = &mut self.timer {
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.timer = None;
            }
            let mut data = match self.held.take() {
                Some(data) => data,
                None => match inner(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    },
                    other => return other,
                },
            };
            if self.sent + (data.len() as u64) <= self.after {
                self.sent += data.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            let elapsed = self.start.elapsed().as_millis() as u64;
            let allowed = self.rate * (elapsed + 1000) / 1000;
            let limit = allowed as i64 - (self.sent.saturating_sub(self.after)) as i64;
            if limit <= 0 {
                let wait = (-limit) as u64 * 1000 / self.rate + 1;
                self.held = Some(data);
                self.timer = Some(Box::pin(tokio::time::sleep(Duration::from_millis(wait))));
                continue;
            }
            // Below `after`, the rest of the allowance is free too.
            let free = self.after.saturating_sub(self.sent);
            let n = (limit as u64 + free).min(data.len() as u64) as usize;
            if n < data.len() {
                self.held = Some(data.split_off(n));
            }
            self.sent += n as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }
}
