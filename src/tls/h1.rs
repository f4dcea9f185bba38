//! HTTP/1.1 over TLS, on hyper's server: each request goes through the same
//! [`proxy::handle`] as one on a plain connection.
//!
//! Why not imbang's own HTTP/1 server ([`crate::http1`]): it is written against the socket
//! itself (reads by readiness, `writev` with `MSG_MORE`, `shutdown` for the last segment, the
//! read side lent to the request body while the response is written), none of which a TLS
//! stream can do without a flush step its writer does not have. Until it is generic over the
//! stream, TLS connections use hyper, which differs in small ways: a malformed request gets
//! hyper's bare `400` instead of nginx's page, and an idle keep-alive connection is closed after
//! `client_header_timeout` rather than `keepalive_timeout` (hyper has one timer for both).

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http1::{Listener, OnUpgrade, RequestBody, Upgraded};
use crate::proxy::{self, ConnInfo, ResponseBody};

/// Why hyper is told to close the connection without an answer (`return 444`).
#[derive(Debug)]
struct Close;

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed without an answer (444)")
    }
}

impl std::error::Error for Close {}

/// Serves HTTP/1.1 on a TLS stream until it closes, times out, or a stop drains it.
pub async fn serve<S>(io: S, listener: Arc<Listener>, info: Arc<ConnInfo>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let settings = listener.settings;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .title_case_headers(true)
        .header_read_timeout(settings.header_timeout)
        .keep_alive(!settings.keepalive_timeout.is_zero())
        .max_buf_size(settings.limits.head.max(8192));
    let service = {
        let listener = listener.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let listener = listener.clone();
            let info = info.clone();
            let on_upgrade = match proxy::upgrade::requested(request.headers()) {
                Some(_) => {
                    let upgrading = hyper::upgrade::on(&mut request);
                    let (tx, on) = OnUpgrade::channel();
                    tokio::spawn(async move {
                        if let Ok(upgraded) = upgrading.await {
                            let io = TokioIo::new(upgraded);
                            let _ = tx.send(Upgraded::other(bytes::Bytes::new(), io));
                        }
                    });
                    Some(on)
                }
                None => None,
            };
            async move {
                // hyper reads the head: counted from here, as being answered.
                let _counted = crate::stats::Request::writing();
                let (parts, body) = request.into_parts();
                let body = RequestBody::hyper(body);
                let handling =
                    proxy::handle(&listener.shared, &info, parts, None, body, on_upgrade);
                let (response, _) = Box::pin(handling).await;
                // hyper writes only the map: the fields as spelled (the peer's, `add_header`'s)
                // join it, as over HTTP/2; hyper title-cases their names.
                let (mut head, mut body) = response.into_parts();
                if let Some(fields) = body.fields() {
                    fields.append_to(&mut head.headers);
                    body.drop_fields();
                }
                let response = Response::from_parts(head, body);
                if response.status().as_u16() == 444 {
                    return Err(Close);
                }
                Ok::<Response<ResponseBody>, Close>(response)
            }
        })
    };
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = listener.stop.stopped() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
