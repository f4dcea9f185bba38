//! One HTTP request: route it, then answer it (`return`) or forward it to a peer.
//!
//! [`handle`] never fails: every [`ProxyError`] becomes a response at one boundary, with the
//! status chosen by [`ProxyError::status`].

pub mod body;
pub mod charset;
pub mod cookie;
pub mod error;
pub mod expires;
pub mod forward;
pub mod gzip;
pub mod headers;
pub mod retry;
pub mod spool;
pub mod sub_filter;
pub mod target;
pub mod upgrade;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::time::Instant;

use crate::http1::{OnUpgrade, RequestBody};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};

pub use body::ResponseBody;
pub use error::ProxyError;

use crate::access_log::{Done, Pending, Record};
use crate::config::model::{ErrorPage, ErrorPageStatus, access_allowed};
use crate::log;
use crate::pool::Pool;
use crate::reload::Live;
use crate::rewrite::Flow;
use crate::route::{normalize_host, normalize_path};
use crate::snapshot::{Answer, Proxy, Route, RouteAction, ServerRoute, Snapshot};
use crate::vars::{Var, Vars, append_display};

/// What every request of the process shares.
pub struct Shared {
    pub live: Arc<Live>,
    pub pool: Arc<Pool>,
}

/// Facts about one client connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// nginx's connection number (`*5` in the error log, `$connection`).
    pub id: u64,
    /// Requests started on this connection so far (`$connection_requests`).
    pub requests: AtomicU64,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The configured listen address of the listener that accepted it.
    pub key: SocketAddr,
    /// When it was accepted (`$connection_time`).
    pub accepted: Instant,
    /// What the TLS handshake agreed on, on a `listen ... ssl` address.
    pub tls: Option<Box<crate::tls::TlsInfo>>,
    /// The PROXY protocol header the connection began with, on a `listen ... proxy_protocol`
    /// address (`$proxy_protocol_*`, `real_ip_header proxy_protocol`).
    pub proxy_protocol: Option<Box<crate::proxy_protocol::Header>>,
}

/// One request as the variables and the error log see it.
#[derive(Clone, Copy)]
pub struct RequestCtx<'a> {
    pub conn: &'a ConnInfo,
    pub parts: &'a http::request::Parts,
    /// An HTTP/1 request's fields as they came (what goes upstream, in their spelling and
    /// order); `None` over HTTP/2, whose fields are `parts`' own.
    pub fields: Option<&'a crate::http1::RawFields>,
    pub host: &'a str,
    pub server_name: &'a str,
    pub proxy_host: &'a str,
    /// `$uri`: the normalised path locations were matched against.
    pub path: &'a str,
    /// Set once the response is sent (the access log): `$status`, `$upstream_*`, times.
    pub done: Option<&'a Done>,
    /// Values given by `set` for this request, in order (a later one wins).
    pub sets: &'a [(Arc<str>, String)],
    /// `$1`..`$9`.
    pub captures: &'a Captures<'a>,
    /// What the request learned on its way (realip's address, `$request_id`, a kept body).
    pub state: &'a RequestState,
    /// The location's `root` (`$document_root`).
    pub root: &'a str,
    /// `$uri` (in `path`) and `$args` as a `rewrite` left them; `None`: the request's.
    pub rewritten: Option<&'a crate::rewrite::Rewritten>,
    /// An `auth_request` subrequest: no access phase, and sent upstream as a GET without a
    /// body (its `$request_method`, `$request_uri` stay the main request's, as nginx's).
    pub subrequest: bool,
}

/// What one request finds out as it goes that its variables read: set at most once each, and
/// only when needed (a request that no variable asks about pays for none of it).
#[derive(Clone, Debug, Default)]
pub struct RequestState {
    /// The client address the realip module found (unset: the connection's).
    pub realip: OnceLock<SocketAddr>,
    /// `$request_id`: made on first use, the same for every later one.
    request_id: OnceLock<u128>,
    /// The request body, when it was kept in memory (`$request_body`).
    pub body: OnceLock<Bytes>,
    /// `uninitialized_variable_warn`: in force, and the variables warned about.
    pub uninitialized: crate::rewrite::Uninitialized,
    /// The values `auth_request_set` gave (after the subrequest): newer than any `set`.
    auth_values: OnceLock<Vec<(Arc<str>, String)>>,
    /// `$limit_req_status`, `$limit_conn_status` (set once a limit applied, as nginx's
    /// `r->main->limit_*_status`: an internal redirect is not limited again).
    pub limit_req: OnceLock<crate::limit::ReqStatus>,
    pub limit_conn: OnceLock<crate::limit::ConnStatus>,
    /// The `limit_rate` the response got (`$limit_rate`).
    pub limit_rate: OnceLock<u64>,
}

/// An empty state, for lines logged before a request was routed.
static NO_STATE: OnceLock<RequestState> = OnceLock::new();

impl RequestState {
    pub fn none() -> &'static Self {
        NO_STATE.get_or_init(Self::default)
    }

    /// Keeps what `auth_request_set` gave (the first time only: an `error_page` target's own
    /// `auth_request` does not change them again).
    pub fn set_auth_values(&self, values: Vec<(Arc<str>, String)>) {
        let _ = self.auth_values.set(values);
    }

    /// The value `auth_request_set` gave `name`, if it did.
    fn auth_value(&self, name: &str) -> Option<&str> {
        let values = self.auth_values.get()?;
        let found = values.iter().rev().find(|(n, _)| &**n == name)?;
        Some(&found.1)
    }

    /// `$request_id`: 128 random bits.
    fn request_id(&self) -> u128 {
        *self.request_id.get_or_init(|| fastrand::u128(..))
    }
}

/// `$1`..`$9`: the groups of the regex location that matched `$uri`, found on first use (the
/// regex runs a second time only for a request that reads one), or those of the last regex
/// of a `rewrite` or `if` (see [`crate::rewrite`]).
#[derive(Debug)]
pub struct Captures<'r> {
    regex: Option<&'r crate::route::Regex>,
    spans: OnceLock<Vec<Option<(usize, usize)>>>,
    /// What a `rewrite`/`if` regex matched (`spans` index it); `None`: the location's `$uri`.
    subject: Option<String>,
}

/// No captures, for requests that matched no regex location.
static NO_CAPTURES: Captures<'static> = Captures {
    regex: None,
    spans: OnceLock::new(),
    subject: None,
};

impl<'r> Captures<'r> {
    /// None, for requests that matched no regex location.
    pub const NONE: &'static Captures<'static> = &NO_CAPTURES;

    /// The captures of `route`'s regex, if it has groups.
    pub fn of(route: &'r Route) -> Self {
        Self {
            regex: route.regex.as_ref(),
            spans: OnceLock::new(),
            subject: None,
        }
    }

    /// What `$1`.. are once a location is chosen: these (made by [`Captures::of`] the location)
    /// when it is a regex location, else `inherited` (a prefix location keeps the ones before).
    pub fn or<'s>(&'s self, inherited: &'s Captures<'s>) -> &'s Captures<'s> {
        if self.regex.is_some() {
            self
        } else {
            inherited
        }
    }

    /// The groups (`spans`) a `rewrite` or `if` regex found in `subject`.
    pub fn matched(subject: String, spans: Vec<Option<(usize, usize)>>) -> Captures<'static> {
        Captures {
            regex: None,
            spans: OnceLock::from(spans),
            subject: Some(subject),
        }
    }

    /// These captures on their own, for a request whose `$uri` changes: an internal redirect
    /// keeps them (nginx leaves `r->captures` as they are). `path` is the `$uri` a location's
    /// captures are of.
    pub fn detached(&self, path: &str) -> Option<Captures<'static>> {
        let (subject, spans) = match &self.subject {
            Some(subject) => (subject.clone(), self.spans.get()?.clone()),
            None => {
                let regex = self.regex?;
                let spans = self
                    .spans
                    .get_or_init(|| regex.captures(path.as_bytes()).unwrap_or_default());
                (path.to_owned(), spans.clone())
            }
        };
        Some(Captures::matched(subject, spans))
    }

    /// Group `n` of the match on `path` (the `$uri` the location was matched against).
    fn get<'p>(&'p self, n: u8, path: &'p str) -> Option<&'p str> {
        let (subject, spans) = match &self.subject {
            Some(subject) => (subject.as_str(), self.spans.get()?),
            None => {
                let regex = self.regex?;
                let spans = self
                    .spans
                    .get_or_init(|| regex.captures(path.as_bytes()).unwrap_or_default());
                (path, spans)
            }
        };
        let (start, end) = (*spans.get(usize::from(n))?)?;
        subject.get(start..end)
    }
}

impl RequestCtx<'_> {
    /// `$args`: as a `rewrite` left them, or the request's.
    pub fn args(&self) -> Option<&str> {
        match self.rewritten {
            Some(r) => Some(r.args.as_str()),
            None => self.parts.uri.query(),
        }
    }
}

impl RequestCtx<'_> {
    /// The client: the connection's peer, or the address the realip module found.
    pub fn remote(&self) -> SocketAddr {
        self.state.realip.get().copied().unwrap_or(self.conn.remote)
    }

    /// Whether the request came over TLS (`$https`, `$scheme`).
    pub fn is_https(&self) -> bool {
        self.conn.tls.is_some()
    }

    /// `, client: 127.0.0.1, server: example.com, request: "GET / HTTP/1.1", host: "example.com"`
    /// for an error-log line, as nginx appends it.
    pub fn log_context(&self, upstream: Option<&str>) -> String {
        let mut s = format!(
            ", client: {}, server: {}, request: \"{} {} {:?}\"",
            self.remote().ip(),
            self.server_name,
            self.parts.method,
            self.parts.uri,
            self.parts.version
        );
        if let Some(u) = upstream {
            s.push_str(&format!(", upstream: \"{u}\""));
        }
        if let Some(h) = self
            .parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            s.push_str(&format!(", host: \"{h}\""));
        }
        s
    }
}

/// `$time_local` (or, with `iso`, `$time_iso8601`): formatted once a second per thread, as nginx
/// caches its time strings (formatting local time costs ~0.3 µs, a log line ~0.7).
pub(crate) fn append_local_time(out: &mut String, iso: bool) {
    use chrono::TimeZone as _;
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new(), String::new())) };
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            let Some(local) = chrono::Local.timestamp_opt(secs as i64, 0).single() else {
                return;
            };
            cache.0 = secs;
            cache.1 = local.format("%d/%b/%Y:%H:%M:%S %z").to_string();
            cache.2 = local.format("%Y-%m-%dT%H:%M:%S%:z").to_string();
        }
        out.push_str(if iso { &cache.2 } else { &cache.1 });
    });
}

impl Vars for RequestCtx<'_> {
    fn append(&self, var: &Var, out: &mut String) {
        let uri = &self.parts.uri;
        match var {
            Var::Host => out.push_str(if self.host.is_empty() {
                self.server_name
            } else {
                self.host
            }),
            Var::HttpHost => {
                if let Some(h) = self
                    .parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                {
                    out.push_str(h);
                } else if self.parts.version == http::Version::HTTP_2
                    && let Some(authority) = uri.authority()
                {
                    // nginx's HTTP/2 module makes a `Host` field of `:authority`.
                    out.push_str(authority.as_str());
                }
            }
            Var::RemoteAddr | Var::BinaryRemoteAddr => append_display(out, self.remote().ip()),
            // Port 0: realip took an address without one (nginx's value is then empty too).
            Var::RemotePort => match self.remote().port() {
                0 => {}
                port => append_display(out, port),
            },
            Var::RealipRemoteAddr => append_display(out, self.conn.remote.ip()),
            Var::RealipRemotePort => append_display(out, self.conn.remote.port()),
            Var::ServerAddr => append_display(out, self.conn.local.ip()),
            Var::ServerPort => append_display(out, self.conn.local.port()),
            Var::ServerName => out.push_str(self.server_name),
            Var::Ssl(var) => crate::tls::append_var(self.conn.tls.as_deref(), *var, out),
            Var::Scheme => out.push_str(if self.is_https() { "https" } else { "http" }),
            Var::Https => {
                if self.is_https() {
                    out.push_str("on");
                }
            }
            Var::ServerProtocol => out.push_str(match self.parts.version {
                http::Version::HTTP_09 => "HTTP/0.9",
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2.0",
                http::Version::HTTP_3 => "HTTP/3.0",
                _ => "HTTP/1.1",
            }),
            Var::RequestId => {
                let _ = write!(out, "{:032x}", self.state.request_id());
            }
            Var::RequestBody => {
                if let Some(body) = self.state.body.get() {
                    out.push_str(&String::from_utf8_lossy(body));
                }
            }
            // nginx keeps `set $limit_rate 1k` as a number: 1024.
            Var::LimitRate => {
                let set = self.sets.iter().rev().find(|(n, _)| &**n == "limit_rate");
                let rate = match set {
                    Some((_, value)) => crate::config::values::size(value.trim()).unwrap_or(0),
                    None => self.state.limit_rate.get().copied().unwrap_or(0),
                };
                append_display(out, rate);
            }
            Var::LimitReqStatus => {
                if let Some(s) = self.state.limit_req.get() {
                    out.push_str(s.as_str());
                }
            }
            Var::LimitConnStatus => {
                if let Some(s) = self.state.limit_conn.get() {
                    out.push_str(s.as_str());
                }
            }
            Var::Pipe => out.push('.'),
            Var::NginxVersion => out.push_str(env!("CARGO_PKG_VERSION")),
            Var::ConnectionTime => {
                let age = self.conn.accepted.elapsed();
                let _ = write!(out, "{}.{:03}", age.as_secs(), age.subsec_millis());
            }
            Var::ProxyPort => out.push_str(proxy_port(self.proxy_host)),
            Var::ProxyProtocol(var) => var.append(self.conn.proxy_protocol.as_deref(), out),
            Var::RequestBodyFile | Var::UpstreamCacheStatus => {}
            Var::Http2 => {
                if self.parts.version == http::Version::HTTP_2 {
                    out.push_str(if self.is_https() { "h2" } else { "h2c" });
                }
            }
            Var::DocumentRoot => out.push_str(self.root),
            Var::RequestFilename => {
                out.push_str(self.root);
                out.push_str(self.path);
            }
            // Resolved when used, as nginx; a root that does not exist gives nothing.
            Var::RealpathRoot => {
                if let Ok(real) = std::fs::canonicalize(self.root) {
                    out.push_str(&real.to_string_lossy());
                }
            }
            // An HTTP/2 request has no request line: nginx logs its method, path and version
            // (`GET /x HTTP/2.0`), not the authority its URI carries.
            Var::Request if self.parts.version == http::Version::HTTP_2 => append_display(
                out,
                format_args!(
                    "{} {} HTTP/2.0",
                    self.parts.method,
                    uri.path_and_query().map_or("/", |p| p.as_str())
                ),
            ),
            Var::Request => append_display(
                out,
                format_args!("{} {} {:?}", self.parts.method, uri, self.parts.version),
            ),
            Var::RequestMethod => out.push_str(self.parts.method.as_str()),
            Var::RequestUri => out.push_str(uri.path_and_query().map_or("/", |p| p.as_str())),
            Var::Uri => out.push_str(self.path),
            Var::Args => out.push_str(self.args().unwrap_or("")),
            Var::IsArgs => {
                if self.args().is_some_and(|q| !q.is_empty()) {
                    out.push('?');
                }
            }
            Var::ProxyHost => out.push_str(self.proxy_host),
            Var::ProxyAddXForwardedFor => {
                let prior: Vec<&str> = self
                    .parts
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                for p in prior {
                    out.push_str(p);
                    out.push_str(", ");
                }
                append_display(out, self.remote().ip());
            }
            Var::Header(name) => {
                let values = self.parts.headers.get_all(name.as_str());
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if name == "cookie" { "; " } else { ", " });
                    }
                    out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
            }
            Var::Pid => append_display(out, std::process::id()),
            Var::Connection => append_display(out, self.conn.id),
            Var::ConnectionRequests => {
                append_display(out, self.conn.requests.load(Ordering::Relaxed))
            }
            Var::Connections(which) => append_display(out, crate::stats::connections(*which)),
            Var::Hostname => out.push_str(hostname()),
            Var::RemoteUser => crate::auth::basic::remote_user(&self.parts.headers, out),
            Var::Arg(name) => {
                if let Some(v) = self.args().and_then(|q| query_arg(q, name)) {
                    out.push_str(v);
                }
            }
            Var::Cookie(name) => {
                let found = self
                    .parts
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(|v| cookie(v, name));
                if let Some(v) = found {
                    out.push_str(v);
                }
            }
            Var::TimeLocal => append_local_time(out, false),
            Var::TimeIso8601 => append_local_time(out, true),
            Var::Msec => {
                let now = chrono::Utc::now();
                append_display(
                    out,
                    format_args!("{}.{:03}", now.timestamp(), now.timestamp_subsec_millis()),
                )
            }
            Var::RequestLength => {
                let head: usize = self
                    .parts
                    .headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len() + 4)
                    .sum();
                let body: u64 = self
                    .parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                let line = self.parts.method.as_str().len()
                    + uri.path_and_query().map_or(1, |p| p.as_str().len())
                    + 12;
                append_display(out, line as u64 + head as u64 + 2 + body)
            }
            Var::Set(name) | Var::Declared(name) => {
                let value = self.state.auth_value(name).or_else(|| {
                    let (_, v) = self.sets.iter().rev().find(|(n, _)| n == name)?;
                    Some(v.as_str())
                });
                match (value, var) {
                    (Some(v), _) => out.push_str(v),
                    (None, Var::Declared(_)) => self.state.uninitialized.warn(name, self),
                    (None, _) => {}
                }
            }
            Var::Capture(n) => {
                if let Some(v) = self.captures.get(*n, self.path) {
                    out.push_str(v);
                }
            }
            Var::Map(map) => map.0.append(self, out),
            done_var => {
                if let Some(done) = self.done {
                    done.append(done_var, out);
                }
            }
        }
    }

    fn append_bytes(&self, var: &Var, out: &mut Vec<u8>) {
        match (var, self.remote().ip()) {
            (Var::BinaryRemoteAddr, IpAddr::V4(ip)) => out.extend_from_slice(&ip.octets()),
            (Var::BinaryRemoteAddr, IpAddr::V6(ip)) => out.extend_from_slice(&ip.octets()),
            _ => {
                let mut text = String::new();
                self.append(var, &mut text);
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
}

/// The client-side timeouts of the level that answered a request (`None` where no location
/// was chosen: the connection keeps the http level's).
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientTimeouts {
    /// `keepalive_timeout`: how long the connection may then stay idle.
    pub keepalive: Option<std::time::Duration>,
    /// `send_timeout` for writing this response.
    pub send: Option<std::time::Duration>,
    /// `keepalive_requests` reached: this was the connection's last request (over HTTP/1 the
    /// answer also says `Connection: close`; HTTP/2 drains the connection with a GOAWAY).
    pub last: bool,
}

/// Answers one request. Never fails: errors become nginx-style error pages. When the location
/// logs, the access-log line is written once the response body is done.
// Not an `async fn`: that keeps its arguments and the locals they move to apart (the request's
// parts twice); the block captures them once.
#[allow(clippy::manual_async_fn)]
pub fn handle<'a>(
    shared: &'a Shared,
    conn: &'a Arc<ConnInfo>,
    parts: http::request::Parts,
    fields: Option<crate::http1::RawFields>,
    body: RequestBody,
    on_upgrade: Option<OnUpgrade>,
) -> impl Future<Output = (Response<ResponseBody>, ClientTimeouts)> + Send + 'a {
    async move {
        let start = Instant::now();
        conn.requests.fetch_add(1, Ordering::Relaxed);
        let snap = shared.live.snapshot();
        let state = RequestState::default();
        let client_upgrade =
            on_upgrade.and_then(|on| Some((upgrade::requested(&parts.headers)?, on)));
        // Logged as 499 if the client goes away before the answer (this future is then dropped).
        let mut unanswered = Unanswered {
            conn,
            start,
            parts: &parts,
            state: &state,
            out: Outcome::default(),
            answered: false,
        };
        // Pinned where it is built: awaited as a value, its state (kilobytes) would first be
        // copied into this future's.
        let mut response = std::pin::pin!(respond(
            shared,
            &snap,
            conn,
            &parts,
            &state,
            fields.as_ref(),
            body,
            client_upgrade,
            &mut unanswered.out,
        ))
        .await;
        unanswered.answered = true;
        let timeouts = unanswered.out.timeouts;
        let Some(route) = unanswered.out.log_route.take() else {
            drop(unanswered);
            crate::scratch::return_header_map(parts.headers);
            return (response, timeouts);
        };
        let out = std::mem::take(&mut unanswered.out);
        drop(unanswered);
        log_when_sent(&mut response, route, conn, parts, state, out, start);
        (response, timeouts)
    }
}

/// Has `route`'s access logs written for this answer once its body has gone out (or the client
/// went away), with what `out` gathered about the request.
fn log_when_sent(
    response: &mut Response<ResponseBody>,
    route: Arc<Route>,
    conn: &Arc<ConnInfo>,
    parts: http::request::Parts,
    state: RequestState,
    mut out: Outcome,
    start: Instant,
) {
    let done = Done {
        status: response.status().as_u16(),
        body_bytes: 0,
        header_bytes: header_bytes(response),
        start,
        end: start,
        response_headers: route.access_log.needs.response_headers.then(|| {
            let mut map = response.headers().clone();
            if let Some(fields) = response.body().fields() {
                fields.append_to(&mut map);
            }
            map
        }),
        upstream_headers: out.record.upstream_headers.take(),
        tries: std::mem::take(&mut out.record.tries),
        complete: false,
        trailers: None,
        gzip: None,
    };
    response.body_mut().log_when_done(Box::new(Pending {
        logs: route,
        conn: conn.clone(),
        parts,
        host: out.host,
        server_name: out.server_name,
        proxy_host: out.proxy_host,
        path: out.path,
        sets: out.sets,
        state,
        rewritten: out.rewritten,
        done,
    }));
}

/// A request whose answer is not ready yet. Dropped unanswered (the client closed the
/// connection, so the request was abandoned: nginx's `proxy_ignore_client_abort off`), it
/// writes the access-log line nginx writes then, with status 499.
struct Unanswered<'a> {
    conn: &'a Arc<ConnInfo>,
    start: Instant,
    parts: &'a http::request::Parts,
    state: &'a RequestState,
    out: Outcome,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let Some(route) = self.out.log_route.take() else {
            return;
        };
        let out = &mut self.out;
        Pending {
            logs: route,
            conn: self.conn.clone(),
            parts: self.parts.clone(),
            host: std::mem::take(&mut out.host),
            server_name: std::mem::take(&mut out.server_name),
            proxy_host: std::mem::take(&mut out.proxy_host),
            path: std::mem::take(&mut out.path),
            sets: std::mem::take(&mut out.sets),
            state: self.state.clone(),
            rewritten: out.rewritten.take(),
            done: Done {
                status: 499,
                body_bytes: 0,
                header_bytes: 0,
                start: self.start,
                end: self.start,
                response_headers: None,
                upstream_headers: out.record.upstream_headers.take(),
                tries: std::mem::take(&mut out.record.tries),
                complete: false,
                trailers: None,
                gzip: None,
            },
        }
        .finish(0);
    }
}

/// What [`respond`] found out that the access log needs.
#[derive(Default)]
struct Outcome {
    /// The location whose `access_log` applies (`None`: not logged).
    log_route: Option<Arc<Route>>,
    host: String,
    server_name: String,
    proxy_host: String,
    path: String,
    sets: Vec<(Arc<str>, String)>,
    rewritten: Option<crate::rewrite::Rewritten>,
    record: Record,
    timeouts: ClientTimeouts,
    /// The host a `proxy_pass` with variables rendered to (its `$proxy_host`).
    rendered_proxy_host: String,
    /// `limit_conn`'s counts of this request, kept until its response body is done.
    conns: Vec<crate::limit::ConnGuard>,
    /// Internal redirects so far (`index`, `try_files`).
    redirects: u8,
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    shared: &Shared,
    snap: &Snapshot,
    conn: &ConnInfo,
    parts: &http::request::Parts,
    state: &RequestState,
    fields: Option<&crate::http1::RawFields>,
    body: RequestBody,
    client_upgrade: Option<(HeaderValue, OnUpgrade)>,
    out: &mut Outcome,
) -> Response<ResponseBody> {
    let Some(vhosts) = snap.vhosts(conn.key, conn.local) else {
        return error_response(&ProxyError::NoRoute);
    };
    // An HTTP/1 head was held to these limits as it was parsed (`http1::parse`).
    let limits = match parts.version {
        http::Version::HTTP_2 => check_head(parts),
        _ => Ok(()),
    };
    if let Err(e) = limits {
        let server = vhosts.default_server();
        out.log(&server.fallback, "", &server.name);
        let mut response = error_response(&e);
        headers::set_server(&mut response, &server.fallback);
        return response;
    }
    // RFC 9112 §3.2.2: an absolute-form target's authority wins over the Host header.
    let raw_host = match parts.uri.authority() {
        Some(a) => Some(a.as_str()),
        None => parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    };
    let host = match raw_host.map(normalize_host) {
        None if parts.version == http::Version::HTTP_11 => None,
        None => Some(Cow::Borrowed("")),
        Some(h) => h,
    };
    let Some(host) = host else {
        let server = vhosts.default_server();
        out.log(&server.fallback, "", &server.name);
        let mut response = error_response(&ProxyError::BadRequest("invalid or missing Host"));
        headers::set_server(&mut response, &server.fallback);
        return response;
    };
    let (server, name_captures) = vhosts.find_captures(&host);
    let server: &ServerRoute = server;
    if let Some(why) = crate::tls::refuse(conn.tls.as_deref(), server.tls.as_ref()) {
        log!(
            Info,
            "*{} {}, client: {}",
            conn.id,
            match why {
                crate::tls::Refusal::NoCertificate => "client sent no required SSL certificate",
                crate::tls::Refusal::BadCertificate => "client SSL certificate verify error",
                crate::tls::Refusal::Misdirected =>
                    "client attempted to request the server name different from the one that was negotiated",
            },
            conn.remote.ip()
        );
        out.log(&server.fallback, &host, &server.name);
        let mut response = error_response(&ProxyError::ClientCertificate(why));
        headers::set_server(&mut response, &server.fallback);
        return response;
    }
    // An ACME HTTP-01 challenge being validated (crate::acme): answered before the server's
    // rewrite phase and locations, so a `return 301 https://...` does not hide it.
    if conn.tls.is_none() {
        if let Some(answer) = crate::acme::http01(parts.uri.path(), &host) {
            out.log(&server.fallback, &host, &server.name);
            let mut response = Response::new(ResponseBody::full(answer));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers::set_server(&mut response, &server.fallback);
            return response;
        }
    }
    // The realip module with the server level's settings (nginx's post-read phase).
    realip(&server.fallback, conn, parts, state);
    let Ok(path) = normalize_path(parts.uri.path()) else {
        out.log(&server.fallback, &host, &server.name);
        let mut response = error_response(&ProxyError::BadRequest("invalid URI"));
        headers::set_server(&mut response, &server.fallback);
        return response;
    };
    let base = RequestCtx {
        conn,
        parts,
        fields,
        host: &host,
        server_name: &server.name,
        proxy_host: "",
        path: &path,
        done: None,
        sets: &[],
        captures: Captures::NONE,
        state,
        root: &server.fallback.conf.root,
        rewritten: None,
        subrequest: false,
    };
    // nginx's server and location rewrite phases (`set`, `rewrite`, `if`, `return`), with the
    // location search between them and again after a `rewrite ... last`.
    let mut state = crate::rewrite::State::default();
    // The groups of the `server_name` regex that chose the server: `$1`.. until another regex
    // matches, and its named groups as variables.
    let server_captures = name_captures.map(|found| {
        for (i, name) in found.names {
            let value = found.spans.get(*i).copied().flatten();
            let value = value.map_or("", |(start, end)| host.get(start..end).unwrap_or(""));
            state.sets.push((name.clone(), value.to_owned()));
        }
        Captures::matched(host.clone().into_owned(), found.spans)
    });
    let base = RequestCtx {
        captures: server_captures.as_ref().unwrap_or(Captures::NONE),
        ..base
    };
    let (route, flow) = crate::rewrite::phases(server, &base, &mut state);
    base.state.uninitialized.set(&route.conf);
    // `status_zone`s: counted from here until the answer is made (or the request abandoned).
    let mut zones = crate::stats::InZones::enter(server.zone.as_deref(), route.zone.as_deref());
    let captures = Captures::of(route);
    let located = RequestCtx {
        // A regex location's groups; any other keeps the server name's.
        captures: captures.or(base.captures),
        root: &route.conf.root,
        ..base
    };
    let mut ctx = state.ctx(&located);
    out.log(route, &host, &server.name);
    out.timeouts = ClientTimeouts {
        keepalive: Some(route.conf.keepalive_timeout),
        send: Some(route.conf.client_send_timeout),
        last: false,
    };
    if out.log_route.is_some() {
        out.path = ctx.path.to_owned();
        if !state.sets.is_empty() {
            out.sets = state.sets.clone();
        }
        out.rewritten = state.rewritten.clone();
    }
    let (mut response, from_peer) = run(
        shared,
        &mut ctx,
        server,
        route,
        flow,
        Some(body),
        client_upgrade,
        out,
    )
    .await;
    if !from_peer {
        absolute_location(&mut response, &ctx);
    }
    let rendered_proxy_host = std::mem::take(&mut out.rendered_proxy_host);
    let ctx = match rendered_proxy_host.as_str() {
        "" => ctx,
        host => RequestCtx {
            proxy_host: host,
            ..ctx
        },
    };
    let status = response.status().as_u16();
    let page = route
        .conf
        .error_pages
        .iter()
        .position(|p| p.codes.contains(&status));
    if let Some(i) = page.filter(|_| !from_peer || route.conf.intercept_errors) {
        let page = &route.conf.error_pages[i];
        // A target with variables (`error_page 401 =302 $redirection_url`), rendered now.
        let rendered = route.error_page_targets.get(i).and_then(Option::as_ref);
        let target = rendered.map(|t| t.render(&ctx));
        let target = target.as_deref().unwrap_or(&page.target);
        // Boxed: an `error_page` holds a whole second request's state, which every request
        // would otherwise carry (and move) for the rare one that needs it.
        // nginx keeps the fields the access phase added (a 401's `WWW-Authenticate`) in the
        // answer the error page gives.
        let challenges: Vec<HeaderValue> = match (status, from_peer) {
            (401, false) => (response.headers().get_all(header::WWW_AUTHENTICATE))
                .iter()
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        response = pin_box!(error_page(shared, &ctx, server, page, target, status, out)).await;
        for c in challenges {
            response.headers_mut().append(header::WWW_AUTHENTICATE, c);
        }
    }
    if let Some(charset) = &route.conf.charset {
        charset::apply(&mut response, charset);
    }
    if let Some(e) = route.conf.expires {
        expires::apply(&mut response, e, std::time::SystemTime::now());
    }
    if let Some(rules) = &route.sub_filter {
        sub_filter::apply(&mut response, rules, &ctx);
    }
    if !route.conf.chunked_transfer_encoding {
        response.body_mut().forbid_chunked();
    }
    let set_rate = match ctx.sets.is_empty() {
        true => None,
        false => (ctx.sets.iter().rev())
            .find(|(name, _)| &**name == "limit_rate")
            .map(|(_, value)| value.as_str()),
    };
    if route.limits.is_some() || set_rate.is_some() {
        let conns = std::mem::take(&mut out.conns);
        let held = match &route.limits {
            Some(limits) => crate::limit::Held::new(limits, conns, &ctx, set_rate),
            None => set_rate.and_then(crate::limit::Held::from_set),
        };
        if let Some(held) = held {
            if let Some(pace) = &held.pace {
                let _ = ctx.state.limit_rate.set(pace.rate());
            }
            response.body_mut().hold(held);
        }
    }
    headers::add_headers(&mut response, route, &ctx);
    // nginx's gzip filter comes after its headers filter (`expires`, `add_header`) and the
    // sub filter: it sees their fields and compresses what sub_filter made.
    if route.conf.gzip.enable {
        gzip::apply(&mut response, &route.conf.gzip, ctx.parts);
    }
    headers::set_server(&mut response, route);
    if conn.requests.load(Ordering::Relaxed) >= route.conf.keepalive_requests
        || conn.accepted.elapsed() > route.conf.keepalive_time
    {
        // keepalive_requests / keepalive_time: this connection has served its share.
        out.timeouts.last = true;
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    zones.answered(response.status().as_u16());
    response
}

/// Runs a location's action: `return`, files, or forwarding. The flag is true when the
/// response came from a peer (only those need `proxy_intercept_errors` for `error_page`).
#[allow(clippy::too_many_arguments)]
async fn dispatch<'a>(
    shared: &Shared,
    ctx: &mut RequestCtx<'a>,
    server: &ServerRoute,
    route: &'a Route,
    answer: Option<&Answer>,
    body: Option<RequestBody>,
    client_upgrade: Option<(HeaderValue, OnUpgrade)>,
    out: &mut Outcome,
) -> (Response<ResponseBody>, bool) {
    // nginx's access phase: after `return` (the rewrite phase), before anything else; a
    // subrequest skips it.
    let answers = answer.is_some() || ctx.subrequest;
    if !answers {
        // The realip module with the location's settings (nginx's preaccess phase), unless
        // the server level's already found the address.
        realip(route, ctx.conn, ctx.parts, ctx.state);
        // nginx's preaccess phase: limit_req (which may make the request wait, on a timer
        // boxed so that requests that never wait do not carry it), then limit_conn.
        if let Some(limits) = &route.limits {
            match limit_req(limits, ctx) {
                Err(status) => return (error::error_page(status_code(status)), false),
                Ok(Some(delay)) => pin_box!(tokio::time::sleep(delay)).await,
                Ok(None) => {}
            }
            if let Some(status) = limit_conn(limits, ctx, out) {
                return (error::error_page(status_code(status)), false);
            }
        }
    }
    if let Some(auth) = route.auth.as_deref().filter(|_| !answers) {
        // `auth_basic`, `auth_request`, `satisfy` (with `allow`/`deny`): see crate::auth.
        if let Some(refused) = crate::auth::access(shared, ctx, server, route, auth).await {
            return (refused, false);
        }
    } else if !route.conf.access.is_empty()
        && !answers
        && !access_allowed(&route.conf.access, ctx.remote().ip())
    {
        log!(
            Error,
            "*{} access forbidden by rule{}",
            ctx.conn.id,
            ctx.log_context(None)
        );
        return (error::error_page(StatusCode::FORBIDDEN), false);
    }
    match (answer, &route.action) {
        (Some(answer), _) => (
            answer_response(answer, ctx, &route.conf.default_type),
            false,
        ),
        (None, RouteAction::NotFound) => {
            let Some(files) = &route.files else {
                return (error_response(&ProxyError::NoRoute), false);
            };
            match crate::files::serve(ctx, route, files) {
                crate::files::Served::Response(response) => (response, false),
                crate::files::Served::Redirect(target) => {
                    internal_redirect(shared, ctx, server, target, body, client_upgrade, out).await
                }
            }
        }
        (None, RouteAction::Api { write }) => {
            let method = &ctx.parts.method;
            if method == http::Method::GET || method == http::Method::HEAD {
                (crate::api::respond(shared, ctx, route), false)
            } else {
                (
                    crate::api::write(shared, ctx, route, *write, body).await,
                    false,
                )
            }
        }
        (None, RouteAction::StubStatus) => (crate::stub_status::respond(&ctx.parts.method), false),
        (None, RouteAction::Prometheus) => (crate::metrics::respond(shared, ctx), false),
        (None, RouteAction::Proxy(proxy)) => {
            ctx.proxy_host = &proxy.proxy_host;
            proxied(shared, ctx, route, proxy, body, client_upgrade, out).await
        }
        (None, RouteAction::ProxyVars(pass)) => {
            let proxy = match pass.resolve(ctx).await {
                Ok(proxy) => proxy,
                Err(e) => {
                    log!(Error, "*{} {e}{}", ctx.conn.id, ctx.log_context(None));
                    return (error_response(&e), false);
                }
            };
            let ctx = RequestCtx {
                proxy_host: &proxy.proxy_host,
                ..*ctx
            };
            let answered = proxied(shared, &ctx, route, &proxy, body, client_upgrade, out).await;
            // `$proxy_host` for what follows the answer (`add_header`, `error_page`).
            out.rendered_proxy_host = proxy.proxy_host.clone();
            answered
        }
    }
}

/// nginx's `limit_req` for a location with limits: `Err(status)` to refuse the request, or how
/// long it must wait first.
/// Ends the rewrite phases' `flow` for `route`: its action (the body and upgrade go to it), the
/// `return`'s answer, a redirect, or a status. The flag is [`dispatch`]'s.
#[allow(clippy::too_many_arguments)]
async fn run<'a>(
    shared: &Shared,
    ctx: &mut RequestCtx<'a>,
    server: &ServerRoute,
    route: &'a Route,
    flow: Flow<'_>,
    body: Option<RequestBody>,
    client_upgrade: Option<(HeaderValue, OnUpgrade)>,
    out: &mut Outcome,
) -> (Response<ResponseBody>, bool) {
    match flow {
        Flow::Next => dispatch(shared, ctx, server, route, None, body, client_upgrade, out).await,
        Flow::Return(answer) => {
            dispatch(shared, ctx, server, route, Some(answer), None, None, out).await
        }
        Flow::Redirect(code, location) => (redirect(code, &location), false),
        Flow::Status(code) => (error::error_page(status_code(code)), false),
    }
}

fn limit_req(
    limits: &crate::limit::RouteLimits,
    ctx: &RequestCtx<'_>,
) -> Result<Option<std::time::Duration>, u16> {
    use crate::limit::Verdict;
    if ctx.state.limit_req.get().is_some() {
        return Ok(None);
    }
    let log = || (ctx.conn.id, ctx.log_context(None));
    let Some((status, verdict)) = crate::limit::limit_req(limits, ctx, &log) else {
        return Ok(None);
    };
    let _ = ctx.state.limit_req.set(status);
    match verdict {
        Verdict::Reject(code) => Err(code),
        Verdict::Pass { delay } => Ok(delay),
    }
}

/// nginx's `limit_conn` for a location with limits: the status to refuse the request with; the
/// counts of a passed one go to `out` (kept until its response body is done).
fn limit_conn(
    limits: &crate::limit::RouteLimits,
    ctx: &RequestCtx<'_>,
    out: &mut Outcome,
) -> Option<u16> {
    use crate::limit::Verdict;
    if ctx.state.limit_conn.get().is_some() {
        return None;
    }
    let log = || (ctx.conn.id, ctx.log_context(None));
    let (status, verdict) = crate::limit::limit_conn(limits, ctx, &log, &mut out.conns)?;
    let _ = ctx.state.limit_conn.set(status);
    match verdict {
        Verdict::Reject(code) => Some(code),
        Verdict::Pass { .. } => None,
    }
}

/// Forwards to `proxy`, whose host `ctx` already has as `$proxy_host`.
async fn proxied(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    route: &Route,
    proxy: &Proxy,
    body: Option<RequestBody>,
    client_upgrade: Option<(HeaderValue, OnUpgrade)>,
    out: &mut Outcome,
) -> (Response<ResponseBody>, bool) {
    if out.log_route.is_some() {
        out.proxy_host = proxy.proxy_host.clone();
    }
    let record = &mut out.record;
    // Not boxed: the request's future is already in a box of its own (the HTTP/1 exchange's,
    // the HTTP/2 stream's), and a second one of ~3 KiB, beyond glibc's per-thread cache, cost
    // more than carrying forward's state in the first (`bench/callgrind.sh`: 310 instructions
    // per keep-alive request, 760 per new connection). Pinned where it is built, as in `handle`.
    match std::pin::pin!(forward::forward(
        shared,
        ctx,
        route,
        proxy,
        body,
        client_upgrade,
        record
    ))
    .await
    {
        Ok(response) => (response, true),
        Err(e) => (error_response(&e), false),
    }
}

/// nginx's `error_page`: an internal redirect to a URI (`/...`) or a named location (`@...`)
/// (no request body; a URI target is fetched with GET unless the request was HEAD), or else a
/// redirect to `target` (302 unless `=301`, `=303`, `=307`, `=308` say otherwise). `target`
/// is the page's, its variables rendered. The target's own `error_page`s are not applied again
/// (nginx's `recursive_error_pages off`).
async fn error_page(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    server: &ServerRoute,
    page: &ErrorPage,
    target: &str,
    status: u16,
    out: &mut Outcome,
) -> Response<ResponseBody> {
    let fixed = match page.status {
        ErrorPageStatus::Fixed(code) => Some(code),
        ErrorPageStatus::Original => Some(status),
        ErrorPageStatus::Target => None,
    };
    if !target.starts_with('/') && !target.starts_with('@') {
        let code = match page.status {
            ErrorPageStatus::Fixed(c) if matches!(c, 301 | 302 | 303 | 307 | 308) => c,
            _ => 302,
        };
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FOUND);
        let mut response = error::error_page(status);
        if let Ok(v) = HeaderValue::from_str(target) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        return response;
    }
    // A named location keeps the request's captures (nginx matches no regex on the way there)
    // and starts at its location's rewrite phase; a URI goes through both phases again.
    let (named, method, uri, path) = match target.strip_prefix('@') {
        Some(_) => match server.locations.named(target) {
            Some(route) => (
                Some(route),
                ctx.parts.method.clone(),
                ctx.parts.uri.clone(),
                ctx.path.to_owned(),
            ),
            None => return error::error_page(status_code(status)),
        },
        None => {
            let (target_path, _) = target.split_once('?').unwrap_or((target, ""));
            let Ok(path) = normalize_path(target_path) else {
                return error::error_page(status_code(status));
            };
            let method = if ctx.parts.method == http::Method::HEAD {
                http::Method::HEAD
            } else {
                http::Method::GET
            };
            let uri = target
                .parse()
                .unwrap_or_else(|_| http::Uri::from_static("/"));
            (None, method, uri, path.into_owned())
        }
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = ctx.parts.version;
    parts.headers = ctx.parts.headers.clone();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    // A URI target keeps the captures too (the last regex's, on the `$uri` it matched).
    let kept = match named {
        Some(_) => None,
        None => ctx.captures.detached(ctx.path),
    };
    let base = RequestCtx {
        conn: ctx.conn,
        parts: &parts,
        fields: ctx.fields,
        host: ctx.host,
        server_name: ctx.server_name,
        proxy_host: "",
        path: &path,
        done: None,
        sets: &[],
        captures: match &kept {
            Some(kept) => kept,
            None if named.is_some() => ctx.captures,
            None => Captures::NONE,
        },
        rewritten: if named.is_some() { ctx.rewritten } else { None },
        state: ctx.state,
        root: ctx.root,
        subrequest: false,
    };
    out.record.internal_redirect();
    let (mut response, _) = redispatch(shared, ctx, server, base, named, None, None, out).await;
    if let Some(code) = fixed {
        *response.status_mut() = status_code(code);
    }
    response
}

/// A subrequest, as nginx's `auth_request` makes it: `uri` routed in `server` from its
/// rewrite phases on (an `internal` location may answer), with the main request's headers and
/// variables (`set` values, `$remote_addr`, `$request_uri`, `$request_method`), no body, and
/// no access phase; a peer gets it as a GET. Nothing is logged for it (nginx's
/// `log_subrequest off`). `then` sees the answer with the subrequest's variables
/// (`$upstream_http_*`, `$upstream_status`, `$uri`) before its body is dropped unread.
pub(crate) async fn subrequest<T>(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    server: &ServerRoute,
    uri: &str,
    then: impl FnOnce(&RequestCtx<'_>, &Response<ResponseBody>) -> T,
) -> T {
    let start = Instant::now();
    let (target, args) = uri.split_once('?').unwrap_or((uri, ""));
    let path = match normalize_path(target) {
        Ok(path) => path.into_owned(),
        Err(_) => target.to_owned(),
    };
    let mut parts = ctx.parts.clone();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    let mut state = crate::rewrite::State::internal_redirect(ctx.sets.to_vec());
    state.rewritten = Some(crate::rewrite::Rewritten {
        path: path.clone(),
        args: args.to_owned(),
        valid_location: true,
    });
    let base = RequestCtx {
        parts: &parts,
        proxy_host: "",
        path: &path,
        done: None,
        sets: &[],
        captures: Captures::NONE,
        rewritten: None,
        subrequest: true,
        ..*ctx
    };
    let (route, flow) = crate::rewrite::phases(server, &base, &mut state);
    let captures = Captures::of(route);
    let located = RequestCtx {
        captures: captures.or(base.captures),
        root: &route.conf.root,
        ..base
    };
    let mut sub = state.ctx(&located);
    let mut out = Outcome::default();
    out.record.enabled = true;
    out.record.want_upstream_headers = true;
    let (response, _) = run(shared, &mut sub, server, route, flow, None, None, &mut out).await;
    let done = Done {
        status: response.status().as_u16(),
        body_bytes: 0,
        header_bytes: 0,
        start,
        end: Instant::now(),
        response_headers: None,
        upstream_headers: out.record.upstream_headers.take(),
        tries: std::mem::take(&mut out.record.tries),
        complete: false,
        trailers: None,
        gzip: None,
    };
    let proxy_host = std::mem::take(&mut out.rendered_proxy_host);
    let sub = RequestCtx {
        done: Some(&done),
        proxy_host: if proxy_host.is_empty() {
            sub.proxy_host
        } else {
            &proxy_host
        },
        ..sub
    };
    then(&sub, &response)
}

/// nginx's limit on internal redirects of one request (`NGX_HTTP_MAX_URI_CHANGES`).
const MAX_REDIRECTS: u8 = 10;

/// An internal redirect from the content phase (`index`, `try_files`): the request goes on,
/// with its method, body and captures, to the location `target` names (a URI, with `?args` of
/// its own or the request's, or `@name`).
/// Boxed: a redirect runs a whole second request's dispatch (and dispatch may come back here).
fn internal_redirect<'a>(
    shared: &'a Shared,
    ctx: &'a RequestCtx<'_>,
    server: &'a ServerRoute,
    target: String,
    body: Option<RequestBody>,
    client_upgrade: Option<(HeaderValue, OnUpgrade)>,
    out: &'a mut Outcome,
) -> std::pin::Pin<Box<dyn Future<Output = (Response<ResponseBody>, bool)> + Send + 'a>> {
    Box::pin(internal_redirect_inner(
        shared,
        ctx,
        server,
        target,
        body,
        client_upgrade,
        out,
    ))
}

async fn internal_redirect_inner(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    server: &ServerRoute,
    target: String,
    body: Option<RequestBody>,
    client_upgrade: Option<(HeaderValue, OnUpgrade)>,
    out: &mut Outcome,
) -> (Response<ResponseBody>, bool) {
    out.redirects += 1;
    if out.redirects > MAX_REDIRECTS {
        log!(
            Error,
            "*{} rewrite or internal redirection cycle while internally redirecting to \"{target}\"{}",
            ctx.conn.id,
            ctx.log_context(None)
        );
        return (error::error_page(StatusCode::INTERNAL_SERVER_ERROR), false);
    }
    let named = match target.strip_prefix('@') {
        Some(_) => match server.locations.named(&target) {
            Some(route) => Some(route),
            None => {
                log!(
                    Error,
                    "*{} could not find named location \"{target}\"{}",
                    ctx.conn.id,
                    ctx.log_context(None)
                );
                return (error::error_page(StatusCode::INTERNAL_SERVER_ERROR), false);
            }
        },
        None => None,
    };
    let (path, args) = match named {
        Some(_) => (ctx.path.to_owned(), ctx.args().map(str::to_owned)),
        None => match target.split_once('?') {
            Some((path, args)) => (path.to_owned(), Some(args.to_owned())),
            None => (target.clone(), ctx.args().map(str::to_owned)),
        },
    };
    let mut uri = crate::files::escape_uri(&path);
    if let Some(args) = args.as_deref().filter(|a| !a.is_empty()) {
        uri.push('?');
        uri.push_str(args);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = ctx.parts.method.clone();
    parts.uri = match named {
        Some(_) => ctx.parts.uri.clone(),
        None => uri.parse().unwrap_or_else(|_| http::Uri::from_static("/")),
    };
    parts.version = ctx.parts.version;
    parts.headers = ctx.parts.headers.clone();
    let base = RequestCtx {
        parts: &parts,
        proxy_host: "",
        path: &path,
        done: None,
        sets: &[],
        rewritten: None,
        ..*ctx
    };
    redispatch(shared, ctx, server, base, named, body, client_upgrade, out).await
}

/// The second routing of an internal redirect (`error_page`, `index`, `try_files`): `base`,
/// the request with its new URI, goes from `named`'s rewrite phase or through both phases
/// again, is logged as its target location's (nginx's `access_log` and `$uri` of the target),
/// and is dispatched, with the body when it still has one. A `Location` made on the way is
/// made absolute.
#[allow(clippy::too_many_arguments)]
async fn redispatch(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    server: &ServerRoute,
    base: RequestCtx<'_>,
    named: Option<&Arc<Route>>,
    body: Option<RequestBody>,
    client_upgrade: Option<(HeaderValue, OnUpgrade)>,
    out: &mut Outcome,
) -> (Response<ResponseBody>, bool) {
    let mut state = crate::rewrite::State::internal_redirect(ctx.sets.to_vec());
    let (route, flow) = match named {
        Some(route) => crate::rewrite::locations(server, Some(route), &base, &mut state),
        None => crate::rewrite::phases(server, &base, &mut state),
    };
    let captures = Captures::of(route);
    let located = RequestCtx {
        captures: if named.is_none() && route.regex.is_some() {
            &captures
        } else {
            base.captures
        },
        root: &route.conf.root,
        ..base
    };
    if route.access_log.is_empty() {
        out.log_route = None;
    } else {
        out.log(route, ctx.host, ctx.server_name);
        out.path.clear();
        out.path.push_str(base.path);
    }
    let mut inner = state.ctx(&located);
    let (mut response, from_peer) = run(
        shared,
        &mut inner,
        server,
        route,
        flow,
        body,
        client_upgrade,
        out,
    )
    .await;
    if !from_peer {
        absolute_location(&mut response, &inner);
    }
    (response, from_peer)
}

/// Runs the realip module with `route`'s settings, unless an earlier phase found the address.
fn realip(route: &Route, conn: &ConnInfo, parts: &http::request::Parts, state: &RequestState) {
    let Some(spec) = &route.conf.realip else {
        return;
    };
    if state.realip.get().is_none() {
        if let Some(addr) = crate::realip::find(
            spec,
            conn.remote,
            &parts.headers,
            conn.proxy_protocol.as_deref(),
        ) {
            let _ = state.realip.set(addr);
        }
    }
}

/// A `rewrite`'s redirect: nginx's page for the status, with the `Location`.
fn redirect(code: u16, location: &str) -> Response<ResponseBody> {
    let mut response = error::error_page(status_code(code));
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl Outcome {
    /// Notes that `route`'s access logs apply (if it has any).
    fn log(&mut self, route: &Arc<Route>, host: &str, server_name: &str) {
        if route.access_log.is_empty() {
            return;
        }
        self.log_route = Some(route.clone());
        self.host = host.to_owned();
        self.server_name = server_name.to_owned();
        self.record.enabled = true;
        self.record.want_upstream_headers = route.access_log.needs.upstream_headers;
    }
}

/// About what the status line and headers took on the wire (for `$bytes_sent`).
fn header_bytes(response: &Response<ResponseBody>) -> u64 {
    let fields: usize = response
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + response.body().fields().map_or(0, |f| f.encoded_len());
    (17 + fields + 2 + 37) as u64 // status line, fields, blank line, Date
}

/// The answer to a request head that could not be parsed or broke a limit (the connection
/// closes after it): nginx's error page, with the default server's `Server` header. When the
/// request line was readable, the default server's access logs get a line for it, as nginx
/// writes one (without a request line imbang writes none: `$request` would have nothing true
/// to say).
pub fn reject(
    shared: &Shared,
    conn: &Arc<ConnInfo>,
    status: StatusCode,
    line: Option<Box<crate::http1::RequestLine>>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    let mut response = error::error_page(status);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let snap = shared.live.snapshot();
    let Some(vhosts) = snap.vhosts(conn.key, conn.local) else {
        return response;
    };
    let server = vhosts.default_server();
    headers::set_server(&mut response, &server.fallback);
    log_refused(&mut response, server, conn, line, start);
    response
}

/// A request head that did not come whole in `client_header_timeout`: nothing is answered (the
/// connection closes), and the default server's access logs get nginx's 408 line when the
/// request line had arrived.
pub fn log_unanswered(
    shared: &Shared,
    conn: &Arc<ConnInfo>,
    status: StatusCode,
    line: Option<Box<crate::http1::RequestLine>>,
) {
    let snap = shared.live.snapshot();
    let Some(vhosts) = snap.vhosts(conn.key, conn.local) else {
        return;
    };
    // An answer that is never sent: its line says 0 bytes.
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    log_refused(
        &mut response,
        vhosts.default_server(),
        conn,
        line,
        Instant::now(),
    );
    if let Some(mut pending) = response.body_mut().take_log() {
        pending.done.header_bytes = 0;
        pending.finish(0);
    }
}

/// The access-log line of a request refused before routing, for the default server's logs.
fn log_refused(
    response: &mut Response<ResponseBody>,
    server: &ServerRoute,
    conn: &Arc<ConnInfo>,
    line: Option<Box<crate::http1::RequestLine>>,
    start: Instant,
) {
    let Some(crate::http1::RequestLine(method, uri, version)) = line.map(|l| *l) else {
        return;
    };
    let mut out = Outcome::default();
    out.log(&server.fallback, "", &server.name);
    let Some(route) = out.log_route.take() else {
        return;
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    log_when_sent(
        response,
        route,
        conn,
        parts,
        RequestState::default(),
        out,
        start,
    );
}

fn error_response(e: &ProxyError) -> Response<ResponseBody> {
    let mut response = match e {
        ProxyError::ClientCertificate(why) => error::client_certificate_page(*why),
        _ => error::error_page(e.status()),
    };
    if e.closes_connection() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// nginx's 8k line limits of `large_client_header_buffers` on an HTTP/2 request's head (hyper's
/// HTTP/2 server decoded it; an HTTP/1 head is checked by `http1::parse` as it is read).
fn check_head(parts: &http::request::Parts) -> Result<(), ProxyError> {
    const LINE_LIMIT: usize = 8 * 1024;
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if parts.method.as_str().len() + target + 10 > LINE_LIMIT {
        return Err(ProxyError::UriTooLong);
    }
    if parts
        .headers
        .iter()
        .any(|(n, v)| n.as_str().len() + v.len() + 2 > LINE_LIMIT)
    {
        return Err(ProxyError::HeaderTooLarge);
    }
    Ok(())
}

/// A `Location` imbang made that starts with `/` made absolute with the request's host and
/// the port it came to, as nginx's `absolute_redirect on` (its default) does.
fn absolute_location(response: &mut Response<ResponseBody>, ctx: &RequestCtx<'_>) {
    let Some(location) = response.headers().get(header::LOCATION) else {
        return;
    };
    if !location.as_bytes().starts_with(b"/") {
        return;
    }
    let host = if ctx.host.is_empty() {
        ctx.server_name
    } else {
        ctx.host
    };
    let port = ctx.conn.local.port();
    let https = ctx.is_https();
    let mut absolute = format!("{}://{host}", if https { "https" } else { "http" });
    if port != if https { 443 } else { 80 } {
        absolute.push_str(&format!(":{port}"));
    }
    absolute.push_str(&String::from_utf8_lossy(location.as_bytes()));
    if let Ok(v) = HeaderValue::from_str(&absolute) {
        response.headers_mut().insert(header::LOCATION, v);
    }
}

/// `return code [text|URL]`, as nginx answers it.
fn answer_response(answer: &Answer, vars: &dyn Vars, default_type: &str) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = answer.text.as_ref().map(|t| t.render(vars));
    let redirect = matches!(answer.status, 301 | 302 | 303 | 307 | 308);
    let mut response = match (&text, redirect) {
        (Some(url), true) => {
            let mut r = error::error_page(status);
            if let Ok(v) = HeaderValue::from_str(url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        (Some(text), false) => {
            let mut r = Response::new(ResponseBody::full(Bytes::from(text.clone())));
            if let Ok(v) = HeaderValue::from_str(default_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        (None, _) if answer.status >= 300 => error::error_page(status),
        (None, _) => Response::new(ResponseBody::empty()),
    };
    *response.status_mut() = status;
    response
}

/// `$proxy_port`: the port `$proxy_host` names, else the scheme's (imbang's peers speak
/// `http`); empty before `proxy_pass`.
fn proxy_port(proxy_host: &str) -> &str {
    if proxy_host.is_empty() {
        return "";
    }
    match proxy_host.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            port
        }
        _ => "80",
    }
}

/// `$hostname`, read once.
pub(crate) fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    })
}

/// The value of cookie `name` in one `Cookie` field, as nginx's
/// `ngx_http_parse_multi_header_lines` finds it: the name without regard to case at the start of
/// the field or after `;` or `,` (and spaces), spaces around `=`, the value up to `;`.
fn cookie<'v>(value: &'v str, name: &str) -> Option<&'v str> {
    let (b, n) = (value.as_bytes(), name.as_bytes());
    let mut i = 0;
    while i < b.len() {
        if b.len() - i >= n.len() && b[i..i + n.len()].eq_ignore_ascii_case(n) {
            i += n.len();
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            if b.get(i) == Some(&b'=') {
                i += 1;
                while b.get(i) == Some(&b' ') {
                    i += 1;
                }
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b';')
                    .map_or(b.len(), |p| i + p);
                return value.get(i..end);
            }
        }
        while i < b.len() {
            i += 1;
            if matches!(b[i - 1], b';' | b',') {
                break;
            }
        }
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
    }
    None
}

/// The raw value of query argument `name` (`$arg_name`), as nginx: not decoded.
fn query_arg<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::{append_local_time, cookie};

    #[test]
    fn cookies_are_found_as_nginx_finds_them() {
        let v = "SID=abc, x=1; other = 2;sidx=9";
        assert_eq!(cookie(v, "sid"), Some("abc, x=1"));
        assert_eq!(cookie(v, "x"), Some("1"));
        assert_eq!(cookie(v, "other"), Some("2"));
        assert_eq!(cookie(v, "sidx"), Some("9"));
        assert_eq!(cookie(v, "id"), None);
        assert_eq!(cookie("a", "a"), None);
    }

    #[test]
    fn time_variables_are_nginx_s_formats_of_the_current_second() {
        for (iso, format) in [
            (false, "%d/%b/%Y:%H:%M:%S %z"),
            (true, "%Y-%m-%dT%H:%M:%S%:z"),
        ] {
            let before = chrono::Local::now().format(format).to_string();
            let mut cached = String::new();
            append_local_time(&mut cached, iso);
            let mut again = String::new();
            append_local_time(&mut again, iso);
            let after = chrono::Local::now().format(format).to_string();
            assert!(
                cached == before || cached == after,
                "{cached} vs {before}/{after}"
            );
            assert!(again == cached || again == after, "{again}");
        }
    }
}
