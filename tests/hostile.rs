//! Hostile and malformed requests: the right 4xx, the connection closed where framing is
//! unsure, and nothing smuggled to the backend. Each case sends raw bytes over TCP.
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{backend, imbang, status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `raw`, then reads until the server closes (or 3 s pass): everything it answered, and
/// whether it closed the connection.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn malformed_framing_is_rejected_and_closed_with_nothing_sent_upstream() {
    let app = backend("app").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream app {{ server {}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://app; }} }} }}",
        app.addr
    ))
    .await;
    // Content-Length beside Transfer-Encoding: 400 and closed, as nginx (RFC 9112 §6.1 lets a
    // server refuse it): neither reading is guessed, so nothing can be smuggled behind it.
    let (answer, closed) = exchange(
        lb.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 400, "{answer}");
    assert!(!answer.contains("smuggled"), "{answer}");
    assert!(closed);
    assert_eq!(app.hits(), 0, "nothing reached the backend");
    // A well-formed request on the same server still works.
    let (answer, _) = exchange(
        lb.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
    )
    .await;
    assert!(answer.ends_with("app POST / body=4"), "{answer}");
    let cases: &[(&str, &[u8], u16)] = &[
        (
            "two differing Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            400,
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
            400,
        ),
        (
            "NUL in a header value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n",
            400,
        ),
        (
            "a Transfer-Encoding other than chunked (nginx: 501)",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxxxx",
            501,
        ),
        (
            "Transfer-Encoding on an HTTP/1.0 request",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "two Transfer-Encoding headers",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "a Content-Length that is not a number",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4x\r\n\r\nabcd",
            400,
        ),
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        (
            "a bare LF in a chunk-size line",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n",
            400,
        ),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ];
    for (what, raw, want) in cases {
        let (answer, closed) = exchange(lb.addr, raw).await;
        assert_eq!(status(&answer), *want, "{what}: {answer:?}");
        assert!(closed, "{what}: the connection must be closed");
    }
    assert_eq!(
        app.hits(),
        1,
        "none of the malformed requests reached the backend, only the good POST"
    );
}

#[tokio::test]
async fn a_bad_chunk_size_is_a_400_and_the_backend_gets_no_complete_request() {
    let app = backend("app").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream app {{ server {}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://app; }} }} }}",
        app.addr
    ))
    .await;
    let (answer, closed) = exchange(
        lb.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 400, "{answer:?}");
    assert!(closed);
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn limits_on_uri_and_headers_follow_nginx() {
    let lb = imbang(
        "daemon off; error_log stderr crit; events {}
         http { access_log off; server { listen 127.0.0.1:0; location / { return 200 ok; } } }",
    )
    .await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(9000));
    let (answer, _) = exchange(lb.addr, long_uri.as_bytes()).await;
    assert_eq!(status(&answer), 414, "{answer:.60}");
    let many = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let (answer, closed) = exchange(lb.addr, many.as_bytes()).await;
    assert_eq!(status(&answer), 431, "{answer:.60}");
    assert!(closed);
}

#[tokio::test]
async fn an_absolute_form_target_is_routed_by_its_own_host() {
    let lb = imbang(
        "daemon off; error_log stderr crit; events {}
         http { access_log off;
           server { listen 127.0.0.1:0; server_name a.example; return 200 a; }
           server { listen 127.0.0.1:0; server_name b.example; return 200 b; }
         }",
    )
    .await;
    let (answer, _) = exchange(
        lb.addr,
        b"GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nb"), "{answer}");
}
