//! HTTP/2 with prior knowledge (h2c) on an ordinary listener: streams are routed, balanced and
//! proxied like HTTP/1 requests, many at once on one connection, and HTTP/1 still works there;
//! flow control both ways, resets both ways, and how a connection ends (keepalive_requests,
//! keepalive_timeout, send_timeout, a graceful stop).
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Behaviour, backend, imbang};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

/// The configuration most tests here run: one server proxying everything to `origin`, with
/// `http`-level directives of the test's own.
fn proxy_conf(origin: SocketAddr, http: &str) -> String {
    format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; {http}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://{origin}; }} }} }}"
    )
}

async fn h2(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    uri: &str,
    body: &'static [u8],
) -> (u16, http::HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let res = sender.send_request(req).await.expect("response");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn h2c_streams_are_proxied_and_balanced() {
    let a = backend("a").await;
    let b = backend("b").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream app {{ server {}; server {}; }}
           server {{ listen 127.0.0.1:0 http2; server_name h2.test;
             location / {{ proxy_pass http://app; }}
             location /here {{ keepalive_requests 1; return 200 \"answered by imbang\"; }} }} }}",
        a.addr, b.addr
    ))
    .await;
    let mut sender = h2(lb.addr).await;
    let (status, _, body) = send(&mut sender, "GET", "http://h2.test/x", b"").await;
    assert_eq!(status, 200);
    assert!(body == "a GET /x" || body == "b GET /x", "{body}");
    let (status, _, body) = send(&mut sender, "POST", "http://h2.test/p", b"hello").await;
    assert_eq!(status, 200);
    assert!(body.ends_with("POST /p body=5"), "{body}");
    // Many streams at once on the one connection, spread over both peers.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut s = sender.clone();
        tasks.push(tokio::spawn(async move {
            send(&mut s, "GET", &format!("http://h2.test/n{i}"), b"").await
        }));
    }
    let mut by = [0, 0];
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, 200);
        by[usize::from(body.starts_with('b'))] += 1;
    }
    assert!(by[0] > 0 && by[1] > 0, "both peers answer: {by:?}");
    // The `Connection: close` imbang adds for HTTP/1 when `keepalive_requests` is reached must
    // not reach an HTTP/2 client (the connection is drained instead: the last request here).
    let (status, headers, body) = send(&mut sender, "GET", "http://h2.test/here", b"").await;
    assert_eq!((status, body.as_str()), (200, "answered by imbang"));
    assert!(!headers.contains_key("connection"));
    // HTTP/1 on the same listener.
    let (status, body) = lb.get_host("h2.test", "/one").await;
    assert_eq!(status, 200);
    assert!(body.ends_with("GET /one"), "{body}");
}

#[tokio::test]
async fn h2c_heads_are_held_to_nginx_s_line_limits() {
    let a = backend("a").await;
    let lb = imbang(&proxy_conf(a.addr, "")).await;
    let mut sender = h2(lb.addr).await;
    // A target over `large_client_header_buffers`' 8k is 414 over HTTP/2 too.
    let long = format!("http://h2.test/{}", "a".repeat(9 * 1024));
    let (status, _, _) = send(&mut sender, "GET", &long, b"").await;
    assert_eq!(status, 414);
    assert_eq!(a.hits(), 0, "nothing reached the backend");
    let (status, _, body) = send(&mut sender, "GET", "http://h2.test/ok", b"").await;
    assert_eq!((status, body.as_str()), (200, "a GET /ok"));
}

/// An HTTP/2 connection to `addr` with the client's windows at RFC 9113's 64 KiB (imbang must
/// wait for WINDOW_UPDATEs to send more), and a receiver told when the connection ends.
async fn h2_small_windows(
    addr: SocketAddr,
) -> (SendRequest<Full<Bytes>>, tokio::sync::oneshot::Receiver<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .adaptive_window(false)
        .handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    let (ended, on_end) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = ended.send(());
    });
    (sender, on_end)
}

/// Waits (bounded) for the connection behind `ended` to end; panics with `what` otherwise.
async fn closed(ended: tokio::sync::oneshot::Receiver<()>, what: &str) {
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .unwrap_or_else(|_| panic!("{what}"))
        .unwrap();
}

/// Byte `i` of the test bodies: not a repeating short pattern, so a lost or repeated frame shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

#[tokio::test]
async fn h2c_big_bodies_cross_in_both_directions_within_flow_control() {
    use http_body_util::Full as Body;
    // `/up` answers with the length and a checksum of what it received; `/big/N` with N bytes
    // of the pattern.
    let origin = support::serve_hyper(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_owned();
        let reply = if path == "/up" {
            let got = req.into_body().collect().await.unwrap().to_bytes();
            let sum = got
                .iter()
                .fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
            Bytes::from(format!("{} {sum}", got.len()))
        } else {
            let n: usize = path.trim_start_matches("/big/").parse().unwrap();
            Bytes::from(pattern(n, 1))
        };
        Ok::<_, std::convert::Infallible>(hyper::Response::new(Body::new(reply)))
    })
    .await;
    let lb = imbang(&proxy_conf(origin, "client_max_body_size 8m;")).await;
    let (sender, _) = h2_small_windows(lb.addr).await;
    // Three downloads and two uploads at once on the one connection: the downloads share the
    // client's 64 KiB connection window, the uploads imbang's 1 MiB one.
    let mut tasks = Vec::new();
    for (i, n) in [300_000usize, 1_500_000, 70_000].into_iter().enumerate() {
        let mut s = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get(format!("http://h2.test/big/{n}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let res = s.send_request(req).await.expect("response");
            assert_eq!(res.status(), 200);
            let length = res.headers().get("content-length").cloned();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(length.unwrap(), n.to_string().as_str(), "download {i}");
            assert!(
                body == pattern(n, 1),
                "download {i}: {} bytes differ",
                body.len()
            );
        }));
    }
    for n in [2_500_000usize, 10] {
        let mut s = sender.clone();
        tasks.push(tokio::spawn(async move {
            let sent = pattern(n, 7);
            let sum = sent
                .iter()
                .fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
            let req = Request::post("http://h2.test/up")
                .body(Full::new(Bytes::from(sent)))
                .unwrap();
            let res = s.send_request(req).await.expect("response");
            assert_eq!(res.status(), 200);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("{n} {sum}").as_bytes(), "upload of {n}");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("the bodies cross (a stall on a window would end here)")
            .unwrap();
    }
}

#[tokio::test]
async fn h2c_answers_carry_date_and_keepalive_requests_drains_the_connection() {
    let a = backend("a").await;
    let lb = imbang(&proxy_conf(
        a.addr,
        "keepalive_requests 3; keepalive_timeout 60s;",
    ))
    .await;
    let (mut sender, mut ended) = h2_small_windows(lb.addr).await;
    for i in 0..2 {
        let (status, headers, _) =
            send(&mut sender, "GET", &format!("http://h2.test/{i}"), b"").await;
        assert_eq!(status, 200);
        let date = headers.get("date").expect("a Date field");
        assert!(
            httpdate::parse_http_date(date.to_str().unwrap()).is_ok(),
            "{date:?}"
        );
        assert!(
            ended.try_recv().is_err(),
            "the connection is open after {i}"
        );
    }
    // The third request is the last: answered in full, then GOAWAY, and the connection ends
    // (long before `keepalive_timeout`).
    let (status, headers, body) = send(&mut sender, "GET", "http://h2.test/last", b"").await;
    assert_eq!((status, body.as_str()), (200, "a GET /last"));
    assert!(!headers.contains_key("connection"));
    closed(ended, "the connection is closed after keepalive_requests").await;
}

#[tokio::test]
async fn h2c_idle_connections_close_after_keepalive_timeout() {
    let a = backend("a").await;
    let lb = imbang(&proxy_conf(a.addr, "keepalive_timeout 1s;")).await;
    let (mut sender, ended) = h2_small_windows(lb.addr).await;
    let (status, _, _) = send(&mut sender, "GET", "http://h2.test/x", b"").await;
    assert_eq!(status, 200);
    closed(ended, "an idle HTTP/2 connection is closed").await;
    // `keepalive_timeout 0`: the first request is still answered, then the connection closes.
    lb.reload(&proxy_conf(a.addr, "keepalive_timeout 0;")).await;
    let (mut sender, ended) = h2_small_windows(lb.addr).await;
    let (status, _, _) = send(&mut sender, "GET", "http://h2.test/y", b"").await;
    assert_eq!(status, 200);
    closed(
        ended,
        "with keepalive_timeout 0 the connection closes after its request",
    )
    .await;
}

#[tokio::test]
async fn h2c_a_reset_stream_is_logged_499_and_a_broken_peer_resets_the_stream() {
    let dir = support::TempDir::new("h2-499");
    let held = support::backend_with("held", Behaviour::Hold, "127.0.0.1:0".parse().unwrap()).await;
    let broken = support::backend_with(
        "broken",
        Behaviour::BreakMidBody,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let log = dir.path().join("a.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{ log_format s '$status $request';
           server {{ listen 127.0.0.1:0; access_log {} s;
             location /held {{ proxy_pass http://{}; }}
             location /broken {{ proxy_pass http://{}; }} }} }}",
        log.display(),
        held.addr,
        broken.addr
    ))
    .await;
    let (mut sender, _) = h2_small_windows(lb.addr).await;
    // Dropping the response future resets the stream (RST_STREAM CANCEL).
    let asked = sender.send_request(
        Request::get("http://h2.test/held")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    );
    let asking = tokio::spawn(asked);
    support::eventually("the peer holds the request", WAIT, || held.hits() == 1).await;
    asking.abort();
    support::eventually("the 499 line", WAIT, || {
        // `$request` of an HTTP/2 request as nginx logs it: the path, not the authority.
        std::fs::read_to_string(&log).unwrap_or_default() == "499 GET /held HTTP/2.0\n"
    })
    .await;
    held.release();
    // A peer that dies after 10 of its 1000 bytes: the client's stream fails, never ends as if
    // the body were complete.
    let res = sender
        .send_request(
            Request::get("http://h2.test/broken")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("the head arrives");
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await;
    assert!(
        body.is_err(),
        "a cut-off body must not look complete: {body:?}"
    );
    // The connection serves on.
    let (status, _, _) = send(&mut sender, "GET", "http://h2.test/held", b"").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn h2c_a_graceful_stop_lets_open_streams_finish_then_closes() {
    let held = support::backend_with("held", Behaviour::Hold, "127.0.0.1:0".parse().unwrap()).await;
    let lb = imbang(&proxy_conf(held.addr, "keepalive_timeout 60s;")).await;
    let (mut sender, ended) = h2_small_windows(lb.addr).await;
    // A second connection, idle: the stop must reach it too (not only at its next stream).
    let (_idle, idle_ended) = h2_small_windows(lb.addr).await;
    let asking = tokio::spawn(async move {
        let answer = send(&mut sender, "GET", "http://h2.test/slow", b"").await;
        (answer, sender)
    });
    support::eventually("the peer holds the request", WAIT, || held.hits() == 1).await;
    let server = lb.server.clone();
    let stopping =
        tokio::spawn(async move { server.shutdown(true, Some(Duration::from_secs(20))).await });
    // The listener is closed once the stop went out to the connections too.
    support::eventually("the listener closed", WAIT, || {
        std::net::TcpStream::connect(lb.addr).is_err()
    })
    .await;
    closed(idle_ended, "the idle connection is closed at the stop").await;
    held.release();
    let ((status, _, body), mut sender) = asking.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "held GET /slow"));
    closed(ended, "the connection closes once its streams are done").await;
    let late = sender
        .send_request(
            Request::get("http://h2.test/late")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert!(late.is_err(), "no stream after the stop");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the stop returns once no connection is left")
        .unwrap();
    assert_eq!(lb.server.open_connections(), 0);
}

#[tokio::test]
async fn h2c_a_client_that_gives_no_window_for_send_timeout_loses_the_stream() {
    let origin = support::serve_hyper(|_req: Request<hyper::body::Incoming>| async move {
        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(pattern(
            2_000_000, 3,
        )))))
    })
    .await;
    let dir = support::TempDir::new("h2-send-timeout");
    let log = dir.path().join("a.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{ log_format s '$status $body_bytes_sent';
           server {{ listen 127.0.0.1:0; access_log {} s; send_timeout 1s;
             location / {{ proxy_pass http://{origin}; }} }} }}",
        log.display()
    ))
    .await;
    let (mut sender, _) = h2_small_windows(lb.addr).await;
    // The head arrives; the body is not read, so the client's 64 KiB window stays shut.
    let res = sender
        .send_request(
            Request::get("http://h2.test/big")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("the head");
    assert_eq!(res.status(), 200);
    let sent = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.strip_prefix("200 ")
            .and_then(|n| n.trim_end().parse::<u64>().ok())
    };
    support::eventually(
        "the stream given up (its log line)",
        Duration::from_secs(10),
        || sent().is_some(),
    )
    .await;
    assert!(
        sent().unwrap() < 2_000_000,
        "not all of it went: {:?}",
        sent()
    );
    let body = res.into_body().collect().await;
    assert!(body.is_err(), "the stream was reset, not ended: {body:?}");
    // The connection itself serves on (the reset stream's unread data no longer counts
    // against its window).
    let res = sender
        .send_request(
            Request::get("http://h2.test/again")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 2_000_000);
}

/// A socket whose reading can be stopped: once `paused`, reads stay pending (nothing is taken
/// off the socket, so the peer's writes fill its buffers and then block).
struct Pausable {
    stream: TcpStream,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncRead for Pausable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Pausable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn h2c_a_client_that_stops_reading_altogether_is_closed_on() {
    // More than the client's windows and both sockets' buffers can take.
    let origin = support::serve_hyper(|_req: Request<hyper::body::Incoming>| async move {
        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(vec![
            7u8;
            48 << 20
        ]))))
    })
    .await;
    let lb = imbang(&proxy_conf(
        origin,
        "send_timeout 1s; keepalive_timeout 1s;",
    ))
    .await;
    let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let io = Pausable {
        stream: TcpStream::connect(lb.addr).await.unwrap(),
        paused: paused.clone(),
    };
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(64 << 20)
        .initial_connection_window_size(64 << 20)
        .handshake(TokioIo::new(io))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let res = sender
        .send_request(
            Request::get("http://h2.test/huge")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("the head");
    assert_eq!(res.status(), 200);
    paused.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(lb.server.open_connections(), 1);
    // The stream is reset after send_timeout, the connection goes idle, its GOAWAY cannot be
    // written either: after another send_timeout imbang closes it, while the client still
    // holds its end.
    support::eventually("the connection closed on", Duration::from_secs(20), || {
        lb.server.open_connections() == 0
    })
    .await;
    drop(res);
}

#[tokio::test]
async fn h2c_an_answer_given_before_the_upload_ends_leaves_the_connection_usable() {
    let a = backend("a").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; client_max_body_size 8m;
           server {{ listen 127.0.0.1:0; location / {{ return 200 \"not read\"; }}
             location /up {{ proxy_pass http://{}; }} }} }}",
        a.addr
    ))
    .await;
    let (sender, _) = h2_small_windows(lb.addr).await;
    let post = |path: &str, n: usize| {
        let mut s = sender.clone();
        let req = Request::post(format!("http://h2.test{path}"))
            .body(Full::new(Bytes::from(pattern(n, 9))))
            .unwrap();
        async move {
            let res = tokio::time::timeout(Duration::from_secs(10), s.send_request(req))
                .await
                .expect("an answer, not a stall")
                .expect("the answer");
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    // 3 MB against imbang's 1 MiB window: the answer comes before the body could all be sent,
    // and the rest of the upload is refused (RST_STREAM NO_ERROR) without failing the answer.
    assert_eq!(
        post("/early", 3_000_000).await,
        (200, "not read".to_owned())
    );
    // The stream's end dropped its unread upload, which gives the connection's window back
    // (held, up to 1 MiB of it would stay counted): two uploads of 700 kB reach the peer whole.
    for _ in 0..2 {
        let (status, body) = post("/up", 700_000).await;
        assert_eq!((status, body.as_str()), (200, "a POST /up body=700000"));
    }
    assert_eq!(a.body_bytes(), 1_400_000);
}
