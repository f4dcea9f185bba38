//! HTTP/2 with prior knowledge (h2c) on the same listeners: a connection that opens with
//! HTTP/2's preface is handed to hyper's HTTP/2 server, and each stream goes through the same
//! [`proxy::handle`] as an HTTP/1 request.

use std::convert::Infallible;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{RequestBody, Stop, Upgraded};
use crate::proxy::{self, ConnInfo, Shared};

/// What an HTTP/2 connection starts with (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one HTTP/2 connection until the client closes it or a stop drains it (GOAWAY, then
/// the streams in flight finish).
pub async fn serve(io: Upgraded, shared: Arc<Shared>, info: Arc<ConnInfo>, stop: Arc<Stop>) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let info = info.clone();
        // Boxed: hyper moves each stream's future into a task of its own, and a request's
        // state is kilobytes; moved as a pointer it costs one allocation instead of copies.
        pin_box!(async move {
            let (parts, body) = req.into_parts();
            // hyper leaves out the fields HTTP/2 forbids (RFC 9113 §8.2.2), among them the
            // `Connection: close` an HTTP/1 answer may carry.
            // Pinned where it is built rather than awaited as a value (a copy of kilobytes).
            let handling = std::pin::pin!(proxy::handle(
                &shared,
                &info,
                parts,
                RequestBody::h2(body),
                None
            ));
            let (response, _) = handling.await;
            Ok::<_, Infallible>(response)
        })
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stop.stopped() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
