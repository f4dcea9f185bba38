//! What a client sees when a peer answers oddly: imbang's HTTP/1.1 client (src/pool/h1.rs)
//! against scripted peers that send raw bytes. A peer's mistake is a 502, never a hang; a body
//! that ends early closes the client connection; interim and early answers pass through.
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{imbang, status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A peer that reads each request head, answers `answer` and closes.
async fn scripted(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_head(&mut s).await;
                let _ = s.write_all(answer).await;
                // Read what else comes (a body), so closing sends a FIN, not a reset.
                let _ = tokio::time::timeout(Duration::from_millis(300), drain(&mut s)).await;
            });
        }
    });
    addr
}

async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

async fn drain(s: &mut TcpStream) {
    let mut buf = [0u8; 65536];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
}

fn conf(peer: SocketAddr) -> String {
    format!(
        "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0; \
         location / {{ proxy_pass http://{peer}; proxy_read_timeout 5s; }} }} }}"
    )
}

/// Sends `raw` to imbang and reads until it closes or 5 s pass: the answer, and whether the
/// connection was closed.
async fn ask(lb: SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(lb).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                // A complete answer (by its length, or its last chunk): stop here.
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|n| n.trim().parse::<usize>().ok());
                    let chunked_end =
                        head.contains("Transfer-Encoding: chunked") && body.ends_with("0\r\n\r\n");
                    if len == Some(body.len()) || chunked_end {
                        break false;
                    }
                }
            }
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";

#[tokio::test]
async fn answers_that_are_not_http_are_502() {
    let too_big = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
            "a".repeat(70 * 1024)
        )
        .into_boxed_str(),
    )
    .as_bytes();
    let cases: [(&str, &'static [u8]); 5] = [
        ("garbage", b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
        (
            "two lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ),
        ("bad status", b"HTTP/1.1 999999 No\r\n\r\n"),
        ("unasked 101", b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        ("head over 64 KiB", too_big),
    ];
    for (what, answer) in cases {
        let lb = imbang(&conf(scripted(answer).await)).await;
        let (got, _) = ask(lb.addr, GET).await;
        assert_eq!(status(&got), 502, "{what}: {got:.200}");
    }
}

#[tokio::test]
async fn interim_answers_are_passed_over() {
    let peer = scripted(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
    )
    .await;
    let lb = imbang(&conf(peer)).await;
    let (got, closed) = ask(lb.addr, GET).await;
    assert_eq!(status(&got), 200, "{got}");
    assert!(got.ends_with("\r\n\r\nfinal"), "{got}");
    assert!(!closed, "the client connection stays open");
}

#[tokio::test]
async fn a_body_delimited_by_the_peer_s_close_arrives_whole_and_chunked() {
    let peer =
        scripted(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close").await;
    let lb = imbang(&conf(peer)).await;
    let (got, closed) = ask(lb.addr, GET).await;
    assert_eq!(status(&got), 200, "{got}");
    assert!(
        got.contains("Transfer-Encoding: chunked"),
        "re-framed for the client: {got}"
    );
    assert!(
        got.contains("\r\nf\r\nuntil the close\r\n0\r\n\r\n"),
        "{got}"
    );
    assert!(!closed);
}

#[tokio::test]
async fn a_length_body_cut_short_closes_the_client_connection_unfinished() {
    let peer = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this").await;
    let lb = imbang(&conf(peer)).await;
    let (got, closed) = ask(lb.addr, GET).await;
    assert_eq!(status(&got), 200);
    assert!(got.contains("Content-Length: 100"), "{got}");
    assert!(got.ends_with("only this"), "{got}");
    assert!(
        closed,
        "the client must not take the short body for a complete one"
    );
}

#[tokio::test]
async fn an_early_answer_to_a_streamed_body_reaches_the_client() {
    // The peer refuses the upload after its head, without reading the body.
    let peer = scripted(
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
    )
    .await;
    // Streamed (`proxy_request_buffering off`): buffered, the body would be awaited first.
    let lb = imbang(&conf(peer).replace(
        "proxy_read_timeout 5s;",
        "proxy_read_timeout 5s; proxy_request_buffering off;",
    ))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    // A chunked body that never ends: only the early answer can finish this exchange.
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with("nope") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "no answer: {other:?} after {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let got = String::from_utf8_lossy(&got);
    assert_eq!(status(&got), 413, "{got}");
}
