//! Pooled upstream connections: those the peer closes while idle never become client errors;
//! `keepalive_requests`, `proxy_read_timeout` per request, and the idle limit (`keepalive N`).
mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use support::imbang;
use tokio::net::TcpListener;

/// A backend that closes each keep-alive connection after it has been idle for a random
/// 1–12 ms (a different timeout per connection, from a fixed seed). `closed` counts the
/// connections it closed.
async fn impatient_backend(
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let idle = Duration::from_millis(1 + seed % 12);
            let closed = closed.clone();
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(idle)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    addr
}

/// One upstream with a single peer (so a failure cannot be hidden by moving to another) and
/// a pool of 16.
fn one_peer(backend: std::net::SocketAddr) -> String {
    format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           upstream one {{ server {backend}; keepalive 16; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://one; }} }} }}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_closing_idle_connections_causes_no_client_error() {
    let connections = Arc::new(AtomicUsize::new(0));
    let backend = impatient_backend(connections.clone(), Arc::default()).await;
    let lb = imbang(&one_peer(backend)).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let failures = failures.clone();
        let addr = lb.addr;
        tasks.push(tokio::spawn(async move {
            for i in 0..120u64 {
                match support::try_request(addr, "GET", "/", "localhost", None).await {
                    Ok((200, body)) if body == "ok" => {}
                    other => {
                        eprintln!("request {t}/{i}: {other:?}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Pauses around the peer's idle timeouts, so requests meet closing connections.
                tokio::time::sleep(Duration::from_millis((t * 7 + i * 3) % 14)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    // The race was exercised: the peer closed many pooled connections along the way (59 to
    // 121 connections in 24 runs on a 2-core machine; 50 was once too many).
    assert!(
        connections.load(Ordering::SeqCst) > 20,
        "{} connections",
        connections.load(Ordering::SeqCst)
    );
}

/// A backend that keeps connections open and counts how many it accepted. It answers `ok` at
/// once, to `/slow` 100 ms late, and never to `/hang`.
async fn counting_backend(connections: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let count = support::Connections {
        accepted: connections,
        ..Default::default()
    };
    support::serve_hyper_counted(
        |req: Request<hyper::body::Incoming>| async move {
            match req.uri().path() {
                "/slow" => tokio::time::sleep(Duration::from_millis(100)).await,
                "/hang" => std::future::pending().await,
                _ => {}
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        },
        count,
    )
    .await
}

#[tokio::test]
async fn upstream_keepalive_requests_bounds_the_requests_per_connection() {
    for (limit, connections_expected) in [("", 1), ("keepalive_requests 2;", 5)] {
        let connections = Arc::new(AtomicUsize::new(0));
        let backend = counting_backend(connections.clone()).await;
        let lb = imbang(&format!(
            "daemon off; error_log stderr crit; events {{}}
             http {{ access_log off;
               upstream one {{ server {backend}; {limit} }}
               server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://one; }} }} }}"
        ))
        .await;
        for _ in 0..10 {
            assert_eq!(lb.get("/").await, (200, "ok".to_owned()));
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            connections_expected,
            "{limit:?}"
        );
    }
}

/// `proxy_read_timeout` counts for each request on a kept connection: not from an earlier
/// request's end (the connection's timer, kept between requests, fired while it was idle), and
/// still for a later request that gets no answer.
#[tokio::test]
async fn proxy_read_timeout_counts_per_request_on_a_kept_connection() {
    let connections = Arc::new(AtomicUsize::new(0));
    let backend = counting_backend(connections.clone()).await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; proxy_read_timeout 500ms;
           upstream one {{ server {backend}; keepalive 4; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://one; }} }} }}"
    ))
    .await;
    assert_eq!(lb.get("/").await, (200, "ok".to_owned()));
    // Idle past the first request's deadline: the time passing is the scenario.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(lb.get("/slow").await, (200, "ok".to_owned()));
    assert_eq!(lb.get("/slow").await, (200, "ok".to_owned()));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the connection was kept"
    );
    let hung = tokio::time::timeout(Duration::from_secs(10), lb.get("/hang")).await;
    assert_eq!(hung.expect("answered, not hung").0, 504);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// Sockets to `port` in `CLOSE_WAIT` (the peer closed, this side did not yet), from
/// /proc/net/tcp: state 08, remote port in hex.
fn close_wait_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "08"
                && cols[2].rsplit(':').next() == Some(&format!("{port:04X}"))
        })
        .count()
}

#[tokio::test]
async fn idle_connections_the_peer_closed_are_closed_here_too() {
    let connections = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let backend = impatient_backend(connections.clone(), closed.clone()).await;
    let lb = imbang(&one_peer(backend)).await;
    // Several connections at once, so several go back to the pool.
    let answers = futures_join(lb.addr, 4).await;
    assert!(answers.iter().all(|a| a == "ok"), "{answers:?}");
    // The peer closes them within 12 ms; nothing asks for them again.
    support::eventually(
        "the peer to close every connection",
        Duration::from_secs(2),
        || closed.load(Ordering::SeqCst) == connections.load(Ordering::SeqCst),
    )
    .await;
    support::eventually(
        "imbang to close its side of idle connections the peer closed",
        Duration::from_secs(5),
        || close_wait_to(backend.port()) == 0,
    )
    .await;
}

async fn futures_join(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(support::request(addr, "GET", "/", "localhost", None)))
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap().1);
    }
    bodies
}

/// A backend that answers a request once `go` is past the value it had when the request arrived
/// (at once when it is `usize::MAX`), counting requests arrived and connections.
async fn gated_backend(
    arrived: Arc<AtomicUsize>,
    count: support::Connections,
    go: tokio::sync::watch::Receiver<usize>,
) -> std::net::SocketAddr {
    let handler = move |_req: Request<hyper::body::Incoming>| {
        let (arrived, mut go) = (arrived.clone(), go.clone());
        async move {
            let round = *go.borrow();
            arrived.fetch_add(1, Ordering::SeqCst);
            let _ = go.wait_for(|r| *r > round || *r == usize::MAX).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    };
    support::serve_hyper_counted(handler, count).await
}

/// Four requests in flight at once take four upstream connections; with `keepalive 1` the three
/// over the limit stay idle a while (imbang closes them after a second idle, nginx at once), so
/// a second burst right after reuses them rather than opening three more; then they are closed.
#[tokio::test]
async fn connections_one_burst_opened_serve_the_next_then_close_over_the_limit() {
    let (arrived, count) = (
        Arc::new(AtomicUsize::new(0)),
        support::Connections::default(),
    );
    let (go, gone) = tokio::sync::watch::channel(0usize);
    let backend = gated_backend(arrived.clone(), count.clone(), gone).await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           upstream one {{ server {backend}; keepalive 1; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://one; }} }} }}"
    ))
    .await;
    let lb = Arc::new(lb);
    for round in 1..=2 {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let lb = lb.clone();
                tokio::spawn(async move { lb.get("/").await })
            })
            .collect();
        support::eventually(
            "four requests at the backend",
            Duration::from_secs(5),
            || arrived.load(Ordering::SeqCst) == 4 * round,
        )
        .await;
        go.send_replace(round);
        for client in clients {
            assert_eq!(client.await.unwrap(), (200, "ok".to_owned()));
        }
    }
    assert_eq!(
        count.accepted.load(Ordering::SeqCst),
        4,
        "the second burst went over the first one's connections"
    );
    support::eventually(
        "the three over the limit closed",
        Duration::from_secs(5),
        || count.closed.load(Ordering::SeqCst) == 3,
    )
    .await;
    go.send_replace(usize::MAX);
    assert_eq!(lb.get("/").await.1, "ok", "the kept one still serves");
    assert_eq!(count.accepted.load(Ordering::SeqCst), 4);
}
