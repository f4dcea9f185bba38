//! Forwarding one request: pick a peer, send, and on failure decide (with [`retry`]) whether the
//! next peer may be tried. The response body is streamed back with the peer's guard inside it.

use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{Checkin, ResponseBody, Streamed};
use super::retry::{self, Failure, Reached, RequestFacts};
use super::{ProxyError, RequestCtx, Shared, headers};
use crate::log;
use crate::pool::{Conn, ConnectError, UpstreamBody};
use crate::snapshot::{Proxy, Route};
use crate::upstream::{Affinity, PeerGuard, Tried};

/// What one attempt on one peer came to, when it did not produce a response to pass on.
struct AttemptFailed {
    reached: Reached,
    failure: Failure,
    error: ProxyError,
    /// The request when it was never written (so it can go to the next peer as it is).
    unsent: Option<Request<UpstreamBody>>,
}

pub async fn forward(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    route: &Route,
    proxy: &Proxy,
    path: &str,
    body: Incoming,
) -> Result<Response<ResponseBody>, ProxyError> {
    let settings = &route.conf.proxy;
    let group = &proxy.group;
    let uri = upstream_uri(ctx.parts, route, proxy, path);
    let mut headers = ctx.parts.headers.clone();
    headers::to_upstream(&mut headers, route, &proxy.proxy_host, ctx);
    let method = ctx.parts.method.clone();
    let version = if settings.http_version_1_0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let empty_body = body.is_end_stream();
    let facts = RequestFacts {
        idempotent: retry::is_idempotent(&method),
        // A streamed body is gone once sent; an empty one can be sent again.
        body_replayable: empty_body,
    };
    let body = if empty_body {
        UpstreamBody::Empty
    } else {
        UpstreamBody::Stream(body)
    };
    // nginx's budget: one try per peer not marked `down`, capped by proxy_next_upstream_tries.
    let peers = group.balancer.tries().max(1);
    let max_tries = match settings.next_upstream_tries {
        0 => peers,
        n => (n as usize).min(peers),
    };
    let deadline = settings.next_upstream_timeout.map(|t| Instant::now() + t);
    let mut request = Some(build(&method, &uri, version, headers.clone(), body));
    let mut tried = Tried::new();
    // What ip_hash and hash choose by (the same for every attempt of this request).
    let hash_key = group.hash_key.as_ref().map(|key| key.render_bytes(ctx));
    let affinity = Affinity {
        client_ip: Some(ctx.conn.remote.ip()),
        key: hash_key.as_deref(),
    };
    let mut attempts = 0;
    loop {
        let mut guard = match group
            .balancer
            .pick_with(&mut tried, Instant::now(), affinity)
        {
            Ok(guard) => guard,
            Err(_) => {
                log!(
                    Error,
                    "*{} no live upstreams while connecting to upstream{}",
                    ctx.conn.id,
                    ctx.log_context(Some(&format!("http://{}{uri}", group.balancer.name())))
                );
                return Err(ProxyError::NoLivePeer);
            }
        };
        attempts += 1;
        let addr = guard.addr();
        let req = match request.take() {
            Some(req) => req,
            // Only reached when the body is replayable (checked before `continue`).
            None => build(&method, &uri, version, headers.clone(), UpstreamBody::Empty),
        };
        match attempt(
            shared,
            settings.connect_timeout,
            settings.read_timeout,
            group,
            addr,
            req,
        )
        .await
        {
            Ok((response, conn)) => {
                let status = response.status().as_u16();
                let policy = &settings.next_upstream;
                if retry::status_is_failure(status, policy) {
                    guard.failure(Instant::now());
                } else {
                    guard.success();
                }
                let more = attempts < max_tries && deadline.is_none_or(|d| Instant::now() < d);
                let reached = Reached::ResponseHead(status);
                if more && retry::may_retry(reached, Failure::Status, facts, policy) {
                    log!(
                        Warn,
                        "*{} upstream answered {status}, trying the next one{}",
                        ctx.conn.id,
                        ctx.log_context(Some(&format!("http://{addr}{uri}")))
                    );
                    continue;
                }
                return Ok(client_response(
                    response,
                    guard,
                    conn,
                    shared,
                    group,
                    settings.read_timeout,
                    addr,
                ));
            }
            Err(failed) => {
                log!(
                    Error,
                    "*{} {}{}",
                    ctx.conn.id,
                    failed.error,
                    ctx.log_context(Some(&format!("http://{addr}{uri}")))
                );
                if guard.failure(Instant::now()) {
                    log!(
                        Warn,
                        "*{} upstream server temporarily disabled while connecting to upstream{}",
                        ctx.conn.id,
                        ctx.log_context(Some(&format!("http://{addr}{uri}")))
                    );
                }
                let more = attempts < max_tries && deadline.is_none_or(|d| Instant::now() < d);
                if !(more
                    && retry::may_retry(
                        failed.reached,
                        failed.failure,
                        facts,
                        &settings.next_upstream,
                    ))
                {
                    return Err(failed.error);
                }
                request = failed.unsent;
                if request.is_none() && !facts.body_replayable {
                    return Err(failed.error);
                }
            }
        }
    }
}

/// One attempt on one peer. A pooled connection that turns out to be closed before the request
/// was written is replaced by another (finally a fresh one) without counting as a try.
async fn attempt(
    shared: &Shared,
    connect_timeout: Duration,
    read_timeout: Duration,
    group: &crate::snapshot::Group,
    addr: std::net::SocketAddr,
    mut req: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, Conn), AttemptFailed> {
    loop {
        let mut conn = match shared
            .pool
            .checkout(addr, connect_timeout, group.keepalive_timeout)
            .await
        {
            Ok(conn) => conn,
            Err(e) => {
                let failure = match e {
                    ConnectError::Timeout => Failure::Timeout,
                    _ => Failure::Error,
                };
                return Err(AttemptFailed {
                    reached: Reached::Nothing,
                    failure,
                    error: ProxyError::Connect {
                        peer: addr,
                        source: e,
                    },
                    unsent: Some(req),
                });
            }
        };
        match tokio::time::timeout(read_timeout, conn.sender.try_send_request(req)).await {
            Ok(Ok(response)) => return Ok((response, conn)),
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) if conn.reused => req = unsent,
                unsent => {
                    let reached = if unsent.is_some() {
                        Reached::Nothing
                    } else {
                        Reached::RequestSent
                    };
                    return Err(AttemptFailed {
                        reached,
                        failure: Failure::Error,
                        error: ProxyError::Upstream {
                            peer: addr,
                            source: e.into_error(),
                        },
                        unsent,
                    });
                }
            },
            Err(_) => {
                return Err(AttemptFailed {
                    reached: Reached::RequestSent,
                    failure: Failure::Timeout,
                    error: ProxyError::Timeout { peer: addr },
                    unsent: None,
                });
            }
        }
    }
}

fn build(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: HeaderMap,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    req
}

fn client_response(
    response: Response<Incoming>,
    guard: PeerGuard,
    conn: Conn,
    shared: &Shared,
    group: &crate::snapshot::Group,
    read_timeout: Duration,
    addr: std::net::SocketAddr,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    headers::to_client(&mut parts.headers);
    let checkin = Checkin {
        pool: shared.pool.clone(),
        addr,
        sender: conn.sender,
        max_idle: group.keepalive,
    };
    let body = ResponseBody::Upstream(Box::new(Streamed::new(body, guard, checkin, read_timeout)));
    Response::from_parts(parts, body)
}

/// The request target sent upstream (origin form). Without a URI part in `proxy_pass` the
/// client's target passes unchanged; with one, the matched location prefix is replaced by it
/// (nginx's rule), applied to the normalised path.
fn upstream_uri(parts: &http::request::Parts, route: &Route, proxy: &Proxy, path: &str) -> Uri {
    let original = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = match (&proxy.uri, &route.prefix) {
        (Some(base), Some(prefix)) if path.starts_with(prefix.as_str()) => {
            let mut t = format!("{base}{}", escape_path(&path[prefix.len()..]));
            if let Some(q) = parts.uri.query() {
                t.push('?');
                t.push_str(q);
            }
            t
        }
        (Some(base), _) => base.clone(),
        (None, _) => original.to_owned(),
    };
    target.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// Percent-encodes what may not stand in a path as written (the path was decoded for routing).
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
