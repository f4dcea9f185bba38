//! HTTP/2 with prior knowledge (h2c) on an ordinary listener: streams are routed, balanced and
//! proxied like HTTP/1 requests, many at once on one connection, and HTTP/1 still works there.
mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{backend, imbang};
use tokio::net::TcpStream;

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
    // A `Connection: close` imbang would add for HTTP/1 must not reach an HTTP/2 client.
    let (status, headers, body) = send(&mut sender, "GET", "http://h2.test/here", b"").await;
    assert_eq!((status, body.as_str()), (200, "answered by imbang"));
    assert!(!headers.contains_key("connection"));
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
    // HTTP/1 on the same listener.
    let (status, body) = lb.get_host("h2.test", "/one").await;
    assert_eq!(status, 200);
    assert!(body.ends_with("GET /one"), "{body}");
}

#[tokio::test]
async fn h2c_heads_are_held_to_nginx_s_line_limits() {
    let a = backend("a").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://{}; }} }} }}",
        a.addr
    ))
    .await;
    let mut sender = h2(lb.addr).await;
    // A target over `large_client_header_buffers`' 8k is 414 over HTTP/2 too.
    let long = format!("http://h2.test/{}", "a".repeat(9 * 1024));
    let (status, _, _) = send(&mut sender, "GET", &long, b"").await;
    assert_eq!(status, 414);
    assert_eq!(a.hits(), 0, "nothing reached the backend");
    let (status, _, body) = send(&mut sender, "GET", "http://h2.test/ok", b"").await;
    assert_eq!((status, body.as_str()), (200, "a GET /ok"));
}
