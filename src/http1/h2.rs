//! HTTP/2 with prior knowledge (h2c) on the same listeners: a connection that opens with
//! HTTP/2's preface is served on the `h2` crate, and each stream goes through the same
//! [`proxy::handle`] as an HTTP/1 request.
//!
//! Every stream of a connection is polled by the connection's own task (a [`FuturesUnordered`]
//! beside the `h2` connection) rather than in a task of its own as hyper's server does: no task
//! to allocate, spawn and complete per stream, and no wake-ups between a stream's task and the
//! connection's to pass each frame (bench/PROFILE.md, session 7).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::Body;

use super::{RequestBody, Stop, Upgraded};
use crate::pool::h1::poll_deadline;
use crate::proxy::{self, ConnInfo, ResponseBody, Shared};

/// What an HTTP/2 connection starts with (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// nginx's `http2_max_concurrent_streams` default.
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Flow-control windows a client may fill before imbang reads on (RFC 9113's 64 KiB would hold
/// an upload to one window per round trip).
const WINDOW: u32 = 1024 * 1024;
/// The largest header block a client may send, decoded (nginx: `large_client_header_buffers`
/// bounds a request line and each field; the line limits are checked per request).
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// How much of a response may wait in the connection's send buffer per stream.
const MAX_SEND_BUFFER: usize = 400 * 1024;

/// A listener's client-side timeouts, as an HTTP/2 connection uses them.
pub struct Timeouts {
    /// `client_header_timeout`: for the client's SETTINGS, and its first stream.
    pub handshake: Duration,
    /// `keepalive_timeout`: with no stream open.
    pub idle: Duration,
    /// `send_timeout`, where the answering location has none.
    pub send: Duration,
}

/// Serves one HTTP/2 connection until the client closes it, it has been idle (no stream open)
/// for `idle` (`keepalive_timeout`), or a stop drains it (GOAWAY, then the streams in flight
/// finish).
pub async fn serve(
    io: Upgraded,
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    stop: Arc<Stop>,
    timeouts: Timeouts,
) {
    let Timeouts {
        handshake,
        idle,
        send: send_timeout,
    } = timeouts;
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_send_buffer_size(MAX_SEND_BUFFER);
    let mut stopped = pin!(stop.stopped());
    let mut timer = pin!(tokio::time::sleep(handshake));
    let mut conn = tokio::select! {
        // `stopped` first: once polled it is registered, and a stop wakes this task, which
        // from then on reads the flag (polling a registered `Notified` takes its lock).
        biased;
        () = &mut stopped => return,
        () = &mut timer => return,
        conn = builder.handshake::<_, Bytes>(io) => match conn {
            Ok(conn) => conn,
            Err(_) => return,
        },
    };
    // Until a first stream, the longer of the two (as HTTP/1's first request has
    // `client_header_timeout`): a zero `keepalive_timeout` must not refuse the first request.
    timer
        .as_mut()
        .reset(tokio::time::Instant::now() + idle.max(handshake));
    let mut streams = FuturesUnordered::new();
    // Streams finished since the idle timer was last armed: the timer is re-armed when it
    // fires, not per stream (a connection goes idle `idle` to twice that after its last stream).
    let mut finished = 0u64;
    let mut waiting_for_first = true;
    // GOAWAY sent (a stop, `keepalive_requests`, or idle): no new streams. Once none is open
    // the timer gives the client `send_timeout` to take the last frames and close; one that
    // neither reads nor closes is then closed on (its socket may be too full for any frame).
    let mut going_away = false;
    // Counted as waiting (stub_status) while no stream is open.
    let mut waiting = None;
    poll_fn(|cx| {
        loop {
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((request, respond)))) => {
                    let (shared, info) = (&shared, &info);
                    // The stream's state (kilobytes) is built in a box of its own, in place:
                    // pushed as a value it would be copied twice into the set's node.
                    streams.push(async move {
                        pin_box!(stream(shared, info, request, respond, send_timeout)).await
                    });
                    continue;
                }
                // The connection is closed (or broke): streams still in flight cannot answer.
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            let mut progressed = false;
            let mut drain = false;
            while let Poll::Ready(Some(last)) = streams.poll_next_unpin(cx) {
                finished += 1;
                progressed = true;
                // `keepalive_requests` reached: no new streams; those open finish.
                drain |= last;
            }
            drain |= !going_away && stop.is_stopping();
            let now = || tokio::time::Instant::now();
            if drain && !going_away {
                going_away = true;
                conn.graceful_shutdown();
                timer.as_mut().reset(now() + send_timeout);
            } else if progressed && streams.is_empty() {
                if going_away {
                    timer.as_mut().reset(now() + send_timeout);
                } else if waiting_for_first {
                    // The first streams are done: from now on the idle time is
                    // `keepalive_timeout`.
                    waiting_for_first = false;
                    finished = 0;
                    timer.as_mut().reset(now() + idle);
                }
            }
            if streams.is_empty() {
                waiting.get_or_insert_with(crate::stats::Waiting::start);
            } else {
                waiting = None;
            }
            if streams.is_empty() && timer.as_mut().poll(cx).is_ready() {
                if going_away {
                    return Poll::Ready(());
                }
                if finished == 0 {
                    going_away = true;
                    conn.graceful_shutdown();
                    timer.as_mut().reset(now() + send_timeout);
                } else {
                    finished = 0;
                    timer.as_mut().reset(now() + idle);
                }
                continue;
            }
            // A finished stream may have queued frames: let the connection write them.
            if !progressed && !drain {
                return Poll::Pending;
            }
        }
    })
    .await;
}

/// One stream: the request handled as any other, its answer sent as HTTP/2 frames. A client's
/// `RST_STREAM` drops the handling (logged as 499 when no answer was ready, as for a client
/// closing an HTTP/1 connection). True when it was the connection's last (`keepalive_requests`).
async fn stream(
    shared: &Shared,
    info: &Arc<ConnInfo>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    send_timeout: Duration,
) -> bool {
    let _counted = crate::stats::Request::writing();
    let (parts, recv) = request.into_parts();
    let body = RequestBody::h2(recv, &parts.headers);
    // Pinned where it is built rather than awaited as a value (a copy of kilobytes).
    let mut handling = pin!(proxy::handle(shared, info, parts, None, body, None));
    let answer = poll_fn(|cx| {
        if let Poll::Ready(answer) = handling.as_mut().poll(cx) {
            return Poll::Ready(Some(answer));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    let Some((response, timeouts)) = answer else {
        return false;
    };
    let (mut head, mut body) = response.into_parts();
    // The fields as spelled join the map, lowercased (RFC 9113 §8.2.1).
    if let Some(fields) = body.fields() {
        fields.append_to(&mut head.headers);
        body.drop_fields();
    }
    // RFC 9113 §8.2.2: no connection-specific fields (the `Connection: close` an HTTP/1
    // answer may carry among them).
    proxy::headers::strip_for_http2(&mut head.headers);
    if !proxy::headers::has(&head.headers, &header::DATE) {
        head.headers
            .insert(header::DATE, super::write::date_value());
    }
    let end = body.is_end_stream();
    if !end && !proxy::headers::has(&head.headers, &header::CONTENT_LENGTH) {
        if let Some(n) = body.size_hint().exact() {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(tx) if !end => send_body(tx, body, timeouts.send.unwrap_or(send_timeout)).await,
        Ok(_) => {}
        Err(_) => respond.send_reset(Reason::INTERNAL_ERROR),
    }
    timeouts.last
}

/// Sends `body` as DATA frames within the client's flow-control windows (and its trailers, if
/// any). A body that fails (a peer gone quiet or closing early) resets the stream: the client
/// never sees a short body end as if complete. So does a client that gives no window for
/// `send_timeout` (nginx's `send_timeout`: between two writes), which would otherwise hold the
/// peer's connection as long as it liked.
async fn send_body(mut tx: SendStream<Bytes>, body: ResponseBody, send_timeout: Duration) {
    let mut body = pin!(body);
    // A chunk waiting for window, and whether it is the last.
    let mut waiting: Option<(Bytes, bool)> = None;
    // When the chunk waiting for window gives up (set as it starts to wait), and the timer
    // for it: made at the first wait and kept, moved only when it fires early (a body that
    // waits for window chunk after chunk costs no timer per chunk).
    let mut stall_deadline = None;
    let mut stall_timer = None;
    poll_fn(|cx| {
        loop {
            if let Some((chunk, last)) = waiting.take() {
                if tx.capacity() == 0 {
                    match tx.poll_capacity(cx) {
                        Poll::Pending => {
                            let deadline = *stall_deadline
                                .get_or_insert_with(|| tokio::time::Instant::now() + send_timeout);
                            if poll_deadline(&mut stall_timer, deadline, cx).is_ready() {
                                tx.send_reset(Reason::CANCEL);
                                return Poll::Ready(());
                            }
                            waiting = Some((chunk, last));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {
                            stall_deadline = None;
                            waiting = Some((chunk, last));
                            continue;
                        }
                        // Reset by the client, or the connection went.
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    }
                }
                if tx.send_data(chunk, last).is_err() || last {
                    return Poll::Ready(());
                }
                continue;
            }
            match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(chunk) => {
                        let last = body.is_end_stream();
                        if chunk.is_empty() {
                            if tx.send_data(chunk, last).is_err() || last {
                                return Poll::Ready(());
                            }
                            continue;
                        }
                        // A claim on the window of one byte, not the chunk: h2 raises it to
                        // what is buffered, and a stream waiting for window holds no more of
                        // the connection's than that (hyper#4003).
                        tx.reserve_capacity(1);
                        waiting = Some((chunk, last));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            tx.reserve_capacity(0);
                            let _ = tx.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Poll::Ready(None) => {
                    let _ = tx.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Err(_))) => {
                    tx.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    // Waiting on the peer: a client that reset the stream ends it here.
                    if tx.poll_reset(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            }
        }
    })
    .await;
}
