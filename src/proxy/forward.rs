//! Forwarding one request: pick a peer, send, and on failure decide (with [`retry`]) whether the
//! next peer may be tried. The response body is streamed back with the peer's guard inside it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, Uri, header};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::time::Instant;

use super::body::{Checkin, ResponseBody, Streamed};
use super::retry::{self, Failure, Reached, RequestFacts};
use super::spool::{self, SpoolError, Spooled};
use super::{ProxyError, RequestCtx, Shared, headers, upgrade};
use crate::access_log::Record;
use crate::http1::{Named, OnUpgrade, RequestBody, Upgraded};
use crate::log;
use crate::pool::body::{ClientBody, ClientFault, Fault};
use crate::pool::h1::{Hide, RequestFraming, Shape, put_field, request_head};
use crate::pool::stream::Stream;
use crate::pool::tls::{Connector, HandshakeError, SslName, TargetName, TlsTarget};
use crate::pool::{Answer, Conn, ConnectError, Failed, PeerKey, UpstreamBody};
use crate::snapshot::{PassUri, Proxy, Route};
use crate::upstream::{Affinity, PeerGuard, Tried};

/// What one attempt on one peer came to, when it did not produce a response to pass on.
struct AttemptFailed {
    reached: Reached,
    failure: Failure,
    error: ProxyError,
    /// The body when the request was never written (so it can go to the next peer as it is).
    unsent: Option<UpstreamBody>,
}

pub async fn forward(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    route: &Route,
    proxy: &Proxy,
    body: Option<RequestBody>,
    client_upgrade: Option<(HeaderValue, OnUpgrade)>,
    record: &mut Record,
) -> Result<Response<ResponseBody>, ProxyError> {
    let settings = &route.conf.proxy;
    let group = &proxy.group;
    // Hop-by-hop and hidden response fields are left out as the peer's head is parsed (the
    // access log's `$upstream_http_*` read a map of all of them, made only when it needs it).
    let hide = |name: &[u8], named: &Named<'_>| headers::hidden_from_client(name, named, route);
    let uri = match ctx.rewritten {
        Some(rewritten) => rewritten_uri(rewritten, route, proxy),
        None => upstream_uri(ctx.parts, route, proxy, ctx.path),
    };
    let mut client_upgrade = client_upgrade;
    let protocol = client_upgrade.as_ref().map(|(p, _)| p.clone());
    let client = &ctx.parts.headers;
    let chunked = headers::has(client, &header::TRANSFER_ENCODING);
    let method = &ctx.parts.method;
    let limit = route.conf.client_max_body_size;
    let length = headers::has(client, &header::CONTENT_LENGTH)
        .then(|| client.get(header::CONTENT_LENGTH))
        .flatten()
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if limit > 0 && length.is_some_and(|n| n > limit) {
        log!(
            Error,
            "*{} client intended to send too large body: {} bytes{}",
            ctx.conn.id,
            length.unwrap_or_default(),
            ctx.log_context(None)
        );
        return Err(ProxyError::BodyTooLarge);
    }
    let body = body.filter(|b| settings.pass_request_body && !b.is_end_stream());
    // What went wrong with a streamed body, if it is streamed.
    let mut fault = None;
    // A kept body (read whole before the first attempt) can go to every attempt; a streamed
    // one only to the first.
    let mut kept: Option<Spooled> = None;
    let buffer_size = route.conf.client_body_buffer_size;
    let body_timeout = route.conf.client_body_timeout;
    let body = match body {
        None => keep(ctx, kept.insert(Spooled::Memory(Bytes::new()))),
        // `proxy_request_buffering on`: the whole body first, whatever its size or framing.
        Some(body) if settings.request_buffering => {
            let dir = &route.conf.client_body_temp_path;
            match spool::read(body, buffer_size, limit, body_timeout, dir).await {
                Ok(spooled) => keep(ctx, kept.insert(spooled)),
                Err(e) => {
                    log_spool_error(ctx, &e, limit, dir);
                    return Err(e.into());
                }
            }
        }
        Some(body) => match keep_body(Some(body), buffer_size, body_timeout).await {
            Ok(Ok(bytes)) => keep(ctx, kept.insert(Spooled::Memory(bytes))),
            Ok(Err(body)) => UpstreamBody::Client(ClientBody {
                body,
                left: (limit > 0 && length.is_none()).then_some(limit),
                fault: fault.insert(Arc::new(ClientFault::default())).clone(),
                timeout: body_timeout,
                timer: None,
            }),
            Err(e) => {
                log!(
                    Info,
                    "*{} client sent invalid request body or timed out ({e}){}",
                    ctx.conn.id,
                    ctx.log_context(None)
                );
                return Err(e);
            }
        },
    };
    let facts = RequestFacts {
        idempotent: retry::is_idempotent(method),
        body_replayable: kept.is_some(),
    };
    // The group's peers as they are now: one view for every attempt of this request (a group
    // that follows DNS may change meanwhile).
    let members = group.balancer();
    // nginx's budget: one try per peer not marked `down`, capped by proxy_next_upstream_tries.
    let peers = members.tries().max(1);
    let max_tries = match settings.next_upstream_tries {
        0 => peers,
        n => (n as usize).min(peers),
    };
    let deadline = settings.next_upstream_timeout.map(|t| Instant::now() + t);
    let framing = match &body {
        UpstreamBody::Full(Some(bytes)) => RequestFraming::Length(bytes.len() as u64),
        UpstreamBody::File(_) => RequestFraming::Length(kept.as_ref().map_or(0, Spooled::size)),
        UpstreamBody::Client(c) => match c.body.size_hint().exact() {
            Some(n) => RequestFraming::Length(n),
            None => RequestFraming::Chunked,
        },
        // An empty body keeps the length the client said (0), when its body is passed on.
        _ if settings.pass_request_body && length.is_some() => RequestFraming::Length(0),
        _ => RequestFraming::None,
    };
    let shape = Shape {
        framing,
        head_only: *method == Method::HEAD,
        http10: settings.http_version_1_0,
        upgrade: protocol.is_some(),
        upstream_headers: record.want_upstream_headers,
    };
    // The head sent upstream: the same for every attempt, so encoded once.
    let head = upstream_head(ctx, route, proxy, &uri, &protocol, chunked, shape);
    // `$upstream_bytes_sent` of a try that wrote the request (a chunked body's size is not
    // known here: only its head counts).
    let request_bytes = head.len() as u64
        + match framing {
            RequestFraming::Length(n) => n,
            _ => 0,
        };
    let mut unsent = Some(body);
    // The kept body again: for the next peer, and for the keep-alive race.
    let resend = kept.as_ref().map(|kept| move || kept.body());
    let mut tried = Tried::new();
    // What ip_hash and hash choose by (the same for every attempt of this request).
    let hash_key = group.hash_key.as_ref().map(|key| key.render_bytes(ctx));
    let affinity = Affinity {
        client_ip: Some(ctx.remote().ip()),
        key: hash_key.as_deref(),
    };
    // `proxy_pass https://`: the TLS settings and the name (rendered once when it has
    // variables) its connections are opened and pooled with.
    let mut rendered_name = None;
    let tls = match &proxy.tls {
        None => None,
        Some(TlsTarget {
            tls,
            name: TargetName::Fixed { name, key },
        }) => Some(Connector {
            tls,
            name,
            key: *key,
        }),
        Some(TlsTarget {
            tls,
            name: TargetName::Template(template),
        }) => {
            let name = rendered_name.insert(SslName::new(&template.render(ctx)));
            Some(Connector {
                tls,
                key: tls.key(name),
                name,
            })
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut attempts = 0;
    loop {
        // With `queue`, waits for a `max_conns` slot; without, fails at once.
        let mut guard = match members.pick_waiting(&mut tried, affinity).await {
            Ok(guard) => guard,
            Err(unavailable) => {
                log!(
                    Error,
                    "*{} {unavailable} while connecting to upstream{}",
                    ctx.conn.id,
                    ctx.log_context(Some(&format!("{scheme}://{}{uri}", members.name())))
                );
                record.no_live_peer(members.name());
                return Err(ProxyError::NoLivePeer);
            }
        };
        attempts += 1;
        let addr = guard.addr();
        record.try_started(addr);
        let body = match unsent.take() {
            Some(body) => body,
            // Only reached when the body is kept (checked before `continue`).
            None => kept.as_ref().expect("a kept body").body(),
        };
        let target = Target {
            shared,
            addr,
            tls,
            picked: guard.started(),
            connect_timeout: settings.connect_timeout,
            read_timeout: settings.read_timeout,
            send_timeout: settings.send_timeout,
            socket_keepalive: settings.socket_keepalive,
            resend: resend
                .as_ref()
                .map(|r| r as &(dyn Fn() -> UpstreamBody + Sync)),
            facts,
            ctx,
            uri: &uri,
            head: &head,
            shape,
            hide: Some(&hide),
        };
        match target.attempt(record, body).await {
            Ok((mut answer, conn)) => {
                let status = answer.head.status.as_u16();
                guard.count_response(status);
                guard.count_bytes(request_bytes, answer.head_len as u64);
                record.answered(status, true);
                record.sent(request_bytes);
                record.head_received(answer.head_len);
                if record.want_upstream_headers {
                    record.upstream_headers = answer.upstream_headers.take().map(|m| *m);
                }
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
                        ctx.log_context(Some(&format!("{scheme}://{addr}{uri}")))
                    );
                    continue;
                }
                if status == 101 {
                    let upgrade = client_upgrade.take();
                    return switch_protocols(
                        answer,
                        conn,
                        route,
                        upgrade,
                        settings.read_timeout,
                        ctx.conn.id,
                    );
                }
                headers::redirects(&mut answer.fields, route);
                return Ok(client_response(
                    answer,
                    guard,
                    conn,
                    shared,
                    group,
                    settings.read_timeout,
                    PeerKey::new(addr, tls),
                ));
            }
            Err(_) if fault.as_ref().and_then(|f| f.get()) == Some(Fault::TooLarge) => {
                log!(
                    Error,
                    "*{} client intended to send too large chunked body: more than {limit} bytes{}",
                    ctx.conn.id,
                    ctx.log_context(None)
                );
                return Err(ProxyError::BodyTooLarge);
            }
            Err(_) if fault.as_ref().and_then(|f| f.get()) == Some(Fault::Timeout) => {
                log!(
                    Info,
                    "*{} client timed out (110: Connection timed out) while reading client request body{}",
                    ctx.conn.id,
                    ctx.log_context(None)
                );
                return Err(ProxyError::ClientTimeout);
            }
            Err(_) if fault.as_ref().and_then(|f| f.get()) == Some(Fault::Broken) => {
                log!(
                    Info,
                    "*{} client sent invalid request body{}",
                    ctx.conn.id,
                    ctx.log_context(None)
                );
                return Err(ProxyError::BadRequest("invalid request body"));
            }
            Err(failed) => {
                record.answered(failed.error.status().as_u16(), false);
                if failed.reached != Reached::Nothing {
                    record.sent(request_bytes);
                }
                log!(
                    Error,
                    "*{} {}{}",
                    ctx.conn.id,
                    failed.error,
                    ctx.log_context(Some(&format!("{scheme}://{addr}{uri}")))
                );
                if guard.failure(Instant::now()) {
                    log!(
                        Warn,
                        "*{} upstream server temporarily disabled while connecting to upstream{}",
                        ctx.conn.id,
                        ctx.log_context(Some(&format!("{scheme}://{addr}{uri}")))
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
                unsent = failed.unsent;
                if unsent.is_none() && !facts.body_replayable {
                    return Err(failed.error);
                }
            }
        }
    }
}

/// Where and how one attempt connects.
struct Target<'a> {
    shared: &'a Shared,
    addr: std::net::SocketAddr,
    /// `proxy_pass https://`: how a new connection's TLS is made.
    tls: Option<Connector<'a>>,
    /// When the peer was picked: the pool checks idle connections' age against it.
    picked: Instant,
    connect_timeout: Duration,
    read_timeout: Duration,
    /// `proxy_send_timeout`, for a connection this attempt opens.
    send_timeout: Duration,
    /// `proxy_socket_keepalive`, for a connection this attempt opens.
    socket_keepalive: bool,
    /// The kept body again (`None`: the body is streamed, it cannot be sent twice).
    resend: Option<&'a (dyn Fn() -> UpstreamBody + Sync)>,
    /// What decides whether sending it again is safe.
    facts: RequestFacts,
    /// For the error log.
    ctx: &'a RequestCtx<'a>,
    uri: &'a Uri,
    /// The request head, encoded.
    head: &'a [u8],
    shape: Shape,
    /// The response fields left out as the head is parsed.
    hide: Hide<'a>,
}

impl Target<'_> {
    /// One attempt on one peer. A pooled connection found closed before the request was written
    /// is replaced without counting as a try; one that the peer closed or reset while the
    /// request was on its way (the keep-alive race: no byte of a response) is replaced too, when
    /// sending the request again is safe by its nature ([`retry::may_send_again`]: it has a kept
    /// body, and is idempotent or was not read).
    async fn attempt(
        &self,
        record: &mut Record,
        mut body: UpstreamBody,
    ) -> Result<(Answer, Conn), AttemptFailed> {
        let addr = self.addr;
        loop {
            let checkout = self
                .shared
                .pool
                .checkout(
                    addr,
                    self.tls,
                    self.picked,
                    self.connect_timeout,
                    self.send_timeout,
                    self.socket_keepalive,
                )
                .await;
            let mut conn = match checkout {
                Ok(conn) => {
                    record.connected();
                    conn
                }
                Err(e) => {
                    let failure = match &e {
                        ConnectError::Timeout => Failure::Timeout,
                        ConnectError::Handshake(h) if matches!(**h, HandshakeError::Timeout) => {
                            Failure::Timeout
                        }
                        _ => Failure::Error,
                    };
                    let error = match e {
                        ConnectError::Handshake(source) => {
                            ProxyError::Handshake { peer: addr, source }
                        }
                        e => ProxyError::Connect {
                            peer: addr,
                            source: e,
                        },
                    };
                    return Err(AttemptFailed {
                        reached: Reached::Nothing,
                        failure,
                        error,
                        unsent: Some(body),
                    });
                }
            };
            let exchange =
                conn.io
                    .exchange(self.head, body, self.shape, self.read_timeout, self.hide);
            let broken = match exchange.await {
                Ok(answer) => return Ok((answer, conn)),
                Err(Failed::NotSent(e, unsent)) => {
                    if conn.reused {
                        // A pooled connection found closed: not a try, the request is whole.
                        body = unsent;
                        continue;
                    }
                    return Err(AttemptFailed {
                        reached: Reached::Nothing,
                        failure: Failure::Error,
                        error: ProxyError::Connect {
                            peer: addr,
                            source: ConnectError::Io(e),
                        },
                        unsent: Some(unsent),
                    });
                }
                Err(Failed::Broken(broken)) => broken,
                Err(Failed::SendTimeout | Failed::ReadTimeout) => {
                    // proxy_send_timeout (the peer stopped reading the request) or
                    // proxy_read_timeout (it sent no answer).
                    return Err(AttemptFailed {
                        reached: Reached::RequestSent,
                        failure: Failure::Timeout,
                        error: ProxyError::Timeout { peer: addr },
                        unsent: None,
                    });
                }
                Err(Failed::Invalid(why)) => {
                    return Err(AttemptFailed {
                        reached: Reached::RequestSent,
                        failure: Failure::Error,
                        error: ProxyError::InvalidHeader(why),
                        unsent: None,
                    });
                }
                Err(Failed::ClientBody) => {
                    // What went wrong is in the body's `ClientFault`, which the caller reads.
                    return Err(AttemptFailed {
                        reached: Reached::RequestSent,
                        failure: Failure::Error,
                        error: ProxyError::BadRequest("invalid request body"),
                        unsent: None,
                    });
                }
            };
            let reached = if !broken.answered && broken.reset {
                Reached::Unread
            } else {
                Reached::RequestSent
            };
            // The keep-alive race: a pooled connection the peer closed or reset under the
            // request, before any byte of an answer.
            let stale = conn.reused
                && !broken.answered
                && broken.error.as_ref().is_none_or(|e| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::BrokenPipe
                            | std::io::ErrorKind::ConnectionAborted
                    )
                });
            let resend = self
                .resend
                .filter(|_| stale && retry::may_send_again(reached, self.facts, false));
            if let Some(resend) = resend {
                let why = match reached {
                    Reached::Unread => "reset: the request was not read",
                    _ => "an idempotent request",
                };
                log!(
                    Info,
                    "*{} {broken} while reading response header from upstream ({why}), sending the request again on another connection{}",
                    self.ctx.conn.id,
                    self.ctx.log_context(Some(&format!(
                        "{}://{addr}{}",
                        self.tls.map_or("http", |_| "https"),
                        self.uri
                    )))
                );
                body = resend();
                continue;
            }
            return Err(AttemptFailed {
                reached,
                failure: Failure::Error,
                error: ProxyError::Upstream {
                    peer: addr,
                    source: broken,
                },
                unsent: None,
            });
        }
    }
}

/// The peer agreed to switch protocols: answer the client 101 and join the two connections.
fn switch_protocols(
    answer: Answer,
    conn: Conn,
    route: &Route,
    client_upgrade: Option<(HeaderValue, OnUpgrade)>,
    idle_timeout: Duration,
    conn_id: u64,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Some((_, client)) = client_upgrade else {
        return Err(ProxyError::InvalidHeader(
            "101 to a request that asked for no upgrade",
        ));
    };
    let Answer {
        head: mut parts,
        mut fields,
        ..
    } = answer;
    let protocol = fields
        .get(b"upgrade")
        .and_then(|p| HeaderValue::from_bytes(p).ok());
    headers::to_client(&mut fields, route);
    if let Some(protocol) = protocol {
        upgrade::set_upgrade_headers(&mut parts.headers, protocol);
    }
    let upstream = match conn.io.into_upgraded() {
        (prefix, Stream::Plain(tcp)) => Upgraded::new(prefix, tcp),
        (prefix, Stream::Tls(tls)) => Upgraded::other(prefix, tls),
    };
    upgrade::tunnel(client, upstream, idle_timeout, conn_id);
    let mut body = ResponseBody::empty();
    body.set_fields(fields);
    Ok(Response::from_parts(parts, body))
}

/// Reads the client's body into memory when it can be kept for another attempt: it is empty,
/// or framed by a `Content-Length` of at most `client_body_buffer_size` (nginx reads such a
/// body into its buffer before connecting, too). `Ok(Err(body))`: stream it once, as it
/// arrives (chunked, or larger). `Err`: the client broke the body off.
async fn keep_body(
    body: Option<RequestBody>,
    buffer_size: u64,
    timeout: Duration,
) -> Result<Result<Bytes, RequestBody>, ProxyError> {
    let Some(body) = body else {
        return Ok(Ok(Bytes::new()));
    };
    // The body's framing, not the header, says whether its length is known (an HTTP/1 request
    // with both Content-Length and Transfer-Encoding never gets here: `http1::parse` refuses
    // it; an HTTP/2 body's length is its content-length, checked by hyper).
    if body.size_hint().exact().is_none_or(|n| n > buffer_size) {
        return Ok(Err(body));
    }
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(Ok(collected.to_bytes())),
        Ok(Err(_)) => Err(ProxyError::BadRequest("invalid request body")),
        Err(_) => Err(ProxyError::ClientTimeout),
    }
}

/// The first attempt's body from a kept one; `$request_body` when it is in memory.
fn keep(ctx: &RequestCtx<'_>, kept: &Spooled) -> UpstreamBody {
    if let Some(bytes) = kept.in_memory().filter(|b| !b.is_empty()) {
        // `$request_body`: nginx's value when the body is in memory.
        let _ = ctx.state.body.set(bytes.clone());
    }
    kept.body()
}

/// The error log's line for a body that could not be read whole, in nginx's words.
fn log_spool_error(ctx: &RequestCtx<'_>, e: &SpoolError, limit: u64, dir: &std::path::Path) {
    let id = ctx.conn.id;
    let at = ctx.log_context(None);
    match e {
        SpoolError::TooLarge => log!(
            Error,
            "*{id} client intended to send too large body: more than {limit} bytes{at}"
        ),
        SpoolError::Timeout => log!(
            Info,
            "*{id} client timed out (110: Connection timed out) while reading client request body{at}"
        ),
        SpoolError::Broken => log!(Info, "*{id} client sent invalid request body{at}"),
        SpoolError::File(e) => log!(
            Crit,
            "*{id} cannot write the request body to a temporary file in \"{}\" ({}){at}",
            dir.display(),
            crate::error_log::errno_text(e)
        ),
    }
}

/// The request head sent upstream: the request line with the upstream target, the headers the
/// location's rules give ([`headers::for_upstream`]), the upgrade pair, `Trailer`/`TE` when
/// trailers go through, and the framing field.
fn upstream_head(
    ctx: &RequestCtx<'_>,
    route: &Route,
    proxy: &Proxy,
    uri: &Uri,
    protocol: &Option<HeaderValue>,
    chunked: bool,
    shape: Shape,
) -> crate::scratch::Scratch {
    let client = &ctx.parts.headers;
    // The one case where `Trailer` means something end to end: a chunked body going on
    // chunked, whose trailer fields it declares.
    let trailer = (chunked && shape.framing == RequestFraming::Chunked)
        .then(|| client.get(header::TRAILER))
        .flatten();
    // `TE: trailers` is hop-by-hop, but imbang passes trailers on, so it may say it accepts
    // them when the client does.
    let te_trailers = headers::has(client, &header::TE)
        && client.get_all(header::TE).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        });
    let replaced = headers::Replaced {
        upgrade: protocol.is_some(),
        trailer: trailer.is_some(),
        te: te_trailers,
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    request_head(
        &ctx.parts.method,
        target,
        shape.http10,
        shape.framing,
        |out| {
            let (host, fields) = (&proxy.proxy_host, ctx.fields);
            headers::for_upstream(client, fields, route, host, ctx, replaced, |n, v| {
                put_field(out, n, v)
            });
            if let Some(protocol) = protocol {
                put_field(out, b"Upgrade", protocol.as_bytes());
                put_field(out, b"Connection", b"upgrade");
            }
            if let Some(trailer) = trailer {
                put_field(out, b"Trailer", trailer.as_bytes());
            }
            if te_trailers {
                put_field(out, b"TE", b"trailers");
            }
        },
    )
}

fn client_response(
    answer: Answer,
    guard: PeerGuard,
    conn: Conn,
    shared: &Shared,
    group: &crate::snapshot::Group,
    read_timeout: Duration,
    addr: PeerKey,
) -> Response<ResponseBody> {
    let checkin = Checkin {
        pool: shared.pool.clone(),
        addr,
        age: conn.age,
        max_idle: group.keepalive,
        reuse: group.reuse,
    };
    let body = conn.io.body(answer.body, answer.keep_alive);
    let streamed = Streamed::new(body, answer.fields, guard, checkin, read_timeout);
    Response::from_parts(answer.head, ResponseBody::streamed(streamed))
}

/// The request target sent upstream (origin form). Without a URI part in `proxy_pass` the
/// client's target passes unchanged; with one, the matched location prefix is replaced by it
/// (nginx's rule), applied to the normalised path; a `proxy_pass` with variables gives the
/// whole target.
fn upstream_uri(parts: &http::request::Parts, route: &Route, proxy: &Proxy, path: &str) -> Uri {
    let base = match &proxy.uri {
        PassUri::Whole(uri) => return uri.clone(),
        PassUri::ReplacePrefix(base) => Some(base),
        PassUri::Unchanged => {
            // The client's target as it came (shares its bytes; nothing is parsed again).
            let mut uri = http::uri::Parts::default();
            uri.path_and_query = parts.uri.path_and_query().cloned();
            if let Ok(uri) = Uri::from_parts(uri) {
                return uri;
            }
            None
        }
    };
    let original = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = match (base, &route.prefix) {
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

/// The target sent for a URI a `rewrite` changed, as nginx's proxy builds it: the new `$uri`
/// escaped, with the location's prefix replaced by a `proxy_pass` URI part unless a
/// `rewrite ... break` (or `break`) kept the URI as it is, then `?$args`.
fn rewritten_uri(rewritten: &crate::rewrite::Rewritten, route: &Route, proxy: &Proxy) -> Uri {
    let path = rewritten.path.as_str();
    let mut target = match (&proxy.uri, &route.prefix) {
        (PassUri::Whole(uri), _) => return uri.clone(),
        (PassUri::ReplacePrefix(base), Some(prefix))
            if rewritten.valid_location && path.starts_with(prefix.as_str()) =>
        {
            format!("{base}{}", escape_path(&path[prefix.len()..]))
        }
        _ => escape_path(path),
    };
    if !rewritten.args.is_empty() {
        target.push('?');
        target.push_str(&rewritten.args);
    }
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
