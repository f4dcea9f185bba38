//! Reloads under load lose nothing; a broken reload changes nothing; a graceful stop lets
//! in-flight requests finish.
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use imbang::config;
use support::{Behaviour, backend, backend_with, imbang, try_request};
use tokio::net::TcpStream;

fn conf(route_to: &str, a: &support::TestBackend, b: &support::TestBackend) -> String {
    format!(
        "daemon off; error_log stderr crit;
         http {{
           upstream a {{ server {}; }}
           upstream b {{ server {}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://{route_to}; }} }}
         }}",
        a.addr, b.addr
    )
}

/// Keep-alive GETs and POSTs on one connection until `stop`; counts failures (anything but 200).
async fn keepalive_client(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let (method, body) = if i.is_multiple_of(2) {
            ("POST", "payload")
        } else {
            ("GET", "")
        };
        let req = Request::builder()
            .method(method)
            .uri("/")
            .header("host", "localhost")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let good = match sender.send_request(req).await {
            Ok(res) => {
                let status = res.status();
                res.into_body().collect().await.is_ok() && status == 200
            }
            Err(_) => false,
        };
        if good {
            ok.fetch_add(1, Ordering::SeqCst);
        } else {
            failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_fail_no_request_and_switch_routing() {
    let a = backend("a").await;
    let b = backend("b").await;
    let lb = imbang(&conf("a", &a, &b)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(tokio::spawn(keepalive_client(
            lb.addr,
            stop.clone(),
            ok.clone(),
            failed.clone(),
        )));
    }
    // New connection per request, too.
    for _ in 0..2 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), lb.addr);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match try_request(addr, "GET", "/", "localhost", None).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    for i in 0..50 {
        let target = if i % 2 == 0 { "b" } else { "a" };
        lb.reload(&conf(target, &a, &b)).await;
        // Each configuration serves at least one request before the next reload.
        let (status, body) = lb.get("/").await;
        assert_eq!(status, 200);
        assert!(
            body.starts_with(&format!("{target} ")),
            "reload {i}: {body}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests across 50 reloads"
    );
    assert!(ok.load(Ordering::SeqCst) > 50, "the load ran");
    assert!(a.hits() > 0 && b.hits() > 0);
}

#[tokio::test]
async fn a_broken_reload_leaves_the_running_config_untouched() {
    let a = backend("a").await;
    let b = backend("b").await;
    let lb = imbang(&conf("a", &a, &b)).await;
    let broken =
        "http { server { listen 127.0.0.1:0; location / { proxy_pass http://nowhere.invalid; } } }";
    let errors = config::parse_str("/test/broken.conf", broken, &support::options()).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "host not found in upstream \"nowhere.invalid\" in /test/broken.conf:1:50"
    );
    // A config that parses but cannot be bound is refused as a whole, too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let unbindable = format!(
        "http {{ upstream b {{ server {}; }} server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://b; }} }} }}",
        b.addr
    );
    let config =
        config::parse_str("/test/unbindable.conf", &unbindable, &support::options()).unwrap();
    let err = lb.server.apply(config).await.unwrap_err();
    assert!(
        err.to_string().contains("(98: Address already in use)"),
        "{err}"
    );
    assert_eq!(lb.get("/").await, (200, "a GET /".to_owned()));
    assert_eq!(lb.server.bound().await.len(), 1);
}

#[tokio::test]
async fn graceful_stop_finishes_requests_in_flight_and_refuses_new_connections() {
    let slow = backend_with("slow", Behaviour::Hang, "127.0.0.1:0".parse().unwrap()).await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{ upstream s {{ server {}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://s; proxy_read_timeout 1s; }} }} }}",
        slow.addr
    ))
    .await;
    let addr = lb.addr;
    let in_flight =
        tokio::spawn(async move { try_request(addr, "GET", "/", "localhost", None).await });
    support::eventually(
        "the request to reach the backend",
        Duration::from_secs(5),
        || slow.hits() == 1,
    )
    .await;
    let server = lb.server.clone();
    let stopping =
        tokio::spawn(async move { server.shutdown(true, Some(Duration::from_secs(10))).await });
    // The in-flight request ends (with the backend's read timeout: 504), not with a reset.
    let (status, _) = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(status, 504);
    stopping.await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "new connections are refused after stop"
    );
    assert_eq!(lb.server.open_connections(), 0);
}

#[tokio::test]
async fn a_removed_listen_address_stops_accepting_and_its_connections_drain() {
    let a = backend("a").await;
    let b = backend("b").await;
    let two_ports = format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream a {{ server {}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://a; }} }}
           server {{ listen 127.0.0.2:0; location / {{ proxy_pass http://a; }} }} }}",
        a.addr
    );
    let lb = imbang(&two_ports).await;
    let bound = lb.server.bound().await;
    let second = bound
        .iter()
        .find(|(k, _)| k.ip().to_string() == "127.0.0.2")
        .unwrap()
        .1;
    // A keep-alive connection on the address the reload will remove.
    let stream = TcpStream::connect(second).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = || {
        Request::get("/")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let res = sender.send_request(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();

    lb.reload(&conf("b", &a, &b)).await;
    // The idle keep-alive connection is closed by imbang, and the address refuses new ones.
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the drained connection closes")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(second).await.is_err());
    assert_eq!(lb.get("/").await.1, "b GET /");
}

#[tokio::test]
async fn worker_shutdown_timeout_bounds_a_draining_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let held = backend_with("held", Behaviour::Hold, "127.0.0.1:0".parse().unwrap()).await;
    let listens = |second: bool| {
        format!(
            "daemon off; error_log stderr crit; worker_shutdown_timeout 300ms; events {{}}
             http {{ access_log off; upstream h {{ server {}; }}
               server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://h; }} }}
               {} }}",
            held.addr,
            if second {
                "server { listen 127.0.0.2:0; location / { proxy_pass http://h; } }"
            } else {
                ""
            }
        )
    };
    let lb = imbang(&listens(true)).await;
    let second = lb
        .server
        .bound()
        .await
        .into_iter()
        .find(|(k, _)| k.ip().to_string() == "127.0.0.2")
        .unwrap()
        .1;
    let mut client = TcpStream::connect(second).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    support::eventually("the peer holds the request", Duration::from_secs(5), || {
        held.hits() == 1
    })
    .await;
    lb.reload(&listens(false)).await;
    // The peer never answers: the connection is cut once worker_shutdown_timeout is over.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the draining connection was not closed");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    held.release();
}
