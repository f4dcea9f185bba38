//! `chunked_transfer_encoding off`: a response of unknown length reaches an HTTP/1.1 client
//! delimited by the connection's close, as from nginx 1.22 (checked side by side when the
//! machine has nginx); one of known length keeps its `Content-Length` and the connection.
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: &str = "first piece, second piece";

/// `/sized` answers with a Content-Length; anything else in two frames of unknown total length
/// (chunked on the wire).
async fn app() -> SocketAddr {
    support::serve_hyper(|req: hyper::Request<hyper::body::Incoming>| async move {
        let answer = if req.uri().path().ends_with("/sized") {
            Either::Left(Full::new(Bytes::from(BODY)))
        } else {
            let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
                Ok(Frame::data(Bytes::from(&BODY[..13]))),
                Ok(Frame::data(Bytes::from(&BODY[13..]))),
            ];
            Either::Right(StreamBody::new(futures_util::stream::iter(frames)))
        };
        Ok::<_, std::convert::Infallible>(hyper::Response::new(answer))
    })
    .await
}

fn locations(app: SocketAddr) -> String {
    format!(
        "chunked_transfer_encoding off;
         location / {{ proxy_pass http://{app}; }}
         location /on/ {{ chunked_transfer_encoding on; proxy_pass http://{app}/; }}"
    )
}

/// A keep-alive GET (no `Connection: close`): the head's lines other than `Date` and `Server`,
/// and the body; read until the close, or to the end of a body whose length the head gives.
async fn get(addr: SocketAddr, path: &str) -> (Vec<String>, String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0; 4096];
    let closed = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no close after {:?}", String::from_utf8_lossy(&raw)))
            .unwrap();
        if n == 0 {
            break true;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let done = head.lines().any(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .is_some_and(|n| n.parse::<usize>().unwrap() == body.len())
            }) || (head.contains("Transfer-Encoding: chunked")
                && body.ends_with("0\r\n\r\n"));
            if done {
                break false;
            }
        }
    };
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let lines = head
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("Date:") && !l.starts_with("Server:"))
        .map(str::to_owned)
        .collect();
    (lines, body.to_owned(), closed)
}

async fn check(addr: SocketAddr, who: &str) {
    // Unknown length: no framing field, `Connection: close`, the body, then the close.
    let (head, body, closed) = get(addr, "/").await;
    assert_eq!(head, ["Connection: close"], "{who}");
    assert_eq!(body, BODY, "{who}");
    assert!(closed, "{who}: the connection closes");
    // Known length: unchanged.
    let (head, body, closed) = get(addr, "/sized").await;
    // (hyper's origin spells it `content-length`, which imbang passes as it came.)
    assert!(
        head.iter()
            .any(|l| l.eq_ignore_ascii_case("content-length: 25")),
        "{who}: {head:?}"
    );
    assert!(
        !head.contains(&"Connection: close".to_owned()),
        "{who}: {head:?}"
    );
    assert_eq!(body, BODY, "{who}");
    assert!(!closed, "{who}");
    // `on` in the location: chunked.
    let (head, _, closed) = get(addr, "/on/").await;
    assert!(
        head.contains(&"Transfer-Encoding: chunked".to_owned()),
        "{who}: {head:?}"
    );
    assert!(!closed, "{who}");
}

#[tokio::test]
async fn off_delimits_unknown_lengths_by_the_close() {
    let app = app().await;
    let lb = support::imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; server {{ listen 127.0.0.1:0; {} }} }}",
        locations(app)
    ))
    .await;
    check(lb.addr, "imbang").await;
}

#[tokio::test]
async fn nginx_does_the_same() {
    let app = app().await;
    let dir = support::TempDir::new("chunked-off-nginx");
    let http = format!(
        "access_log off; server {{ listen 127.0.0.1:{{listen}}; {} }}",
        locations(app)
    );
    let Some((_nginx, addr)) = support::start_nginx(&dir, &http).await else {
        return;
    };
    check(addr, "nginx").await;
}
