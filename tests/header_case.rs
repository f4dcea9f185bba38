//! Header names as they arrived, checked on the raw bytes both ways: a raw-TCP client and a
//! raw-TCP upstream. The client's fields reach the upstream, and the upstream's the client, with
//! their spelling, order and duplicates; the fields imbang adds are spelled as nginx spells them
//! (`Server`, `Date`, `Content-Length`, `Connection`, `Location`, `Host`, and `proxy_set_header`'s
//! and `add_header`'s names as the config writes them); an HTTP/2 client gets them lowercase.
mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The upstream's answer: fields in mixed case, duplicates interleaved, hop-by-hop and hidden
/// ones among them.
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: upstream/1.0\r\n\
X-Port: 8081\r\n\
x-MiXeD: MiXeD value\r\n\
Set-Cookie: a=1\r\n\
X-Dup: 1\r\n\
Connection: keep-alive, X-Conn-Named\r\n\
set-cookie: b=2\r\n\
X-Conn-Named: gone\r\n\
X-Dup: 2\r\n\
x-hide-ME: gone\r\n\
Keep-Alive: timeout=5\r\n\
content-TYPE: text/plain\r\n\
Content-Length: 2\r\n\
Date: Mon, 07 Dec 2026 20:00:00 GMT\r\n\
\r\n\
ok";

/// A raw upstream: each request head it reads goes to the channel, and every request is
/// answered with `answer` (on the same connection as long as the client keeps it).
async fn raw_upstream(answer: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut stream).await {
                    let _ = tx.send(head);
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// One message head (up to the empty line), or `None` at the end of the stream.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8(head).unwrap())
}

/// Sends `request` on a new connection, reads the response head and the `len` body bytes.
async fn exchange(addr: SocketAddr, request: &str, len: usize) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await.expect("a response head");
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    (head, body)
}

/// The field lines of a head, without its first line and its final empty line.
fn lines(head: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = head.split("\r\n").skip(1).collect();
    lines.retain(|l| !l.is_empty());
    lines
}

fn conf(upstream: SocketAddr, location: &str) -> String {
    format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           server {{ listen 127.0.0.1:0 http2; server_name case.test;
             location / {{ proxy_pass http://{upstream}; {location} }}
             location = /moved {{ return 301 /elsewhere; }} }} }}"
    )
}

/// The request goes upstream as the client spelled it: order and duplicates kept, hop-by-hop
/// fields and the ones `Connection` names left out; `Host` and `proxy_set_header`'s fields
/// spelled as nginx spells them.
#[tokio::test]
async fn request_fields_reach_the_upstream_as_the_client_spelled_them() {
    let (upstream, mut heads) = raw_upstream(ANSWER).await;
    let lb = support::imbang(&conf(
        upstream,
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
         proxy_set_header x-REAL-ip $remote_addr;",
    ))
    .await;
    let request = "GET /path?q=1 HTTP/1.1\r\n\
        host: case.test\r\n\
        X-Port: 1\r\n\
        x-MiXeD: MiXeD value\r\n\
        X-Dup: a\r\n\
        ACCEPT: */*\r\n\
        Connection: keep-alive, X-Client-Named\r\n\
        X-Client-Named: gone\r\n\
        x-dup: b\r\n\
        Keep-Alive: 300\r\n\
        X-Real-IP: spoofed\r\n\
        \r\n";
    let (head, body) = exchange(lb.addr, request, 2).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"ok");
    let sent = heads.recv().await.expect("the upstream got the request");
    assert!(sent.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{sent}");
    assert_eq!(
        lines(&sent),
        [
            "X-Port: 1",
            "x-MiXeD: MiXeD value",
            "X-Dup: a",
            "ACCEPT: */*",
            "x-dup: b",
            &format!("Host: {upstream}"),
            "X-Forwarded-For: 127.0.0.1",
            "x-REAL-ip: 127.0.0.1",
        ],
        "{sent}"
    );
}

/// The response comes back as the upstream spelled it: order and duplicates kept (two
/// `Set-Cookie`, two `X-Dup`, interleaved), hop-by-hop, `Connection`-named and hidden fields left
/// out; `Server` and `Date` are imbang's, first, as nginx writes them; `add_header` adds in the
/// config's spelling, and reads the request's and the peer's fields in any case.
#[tokio::test]
async fn response_fields_reach_the_client_as_the_upstream_spelled_them() {
    let (upstream, _heads) = raw_upstream(ANSWER).await;
    let lb = support::imbang(&conf(
        upstream,
        "proxy_hide_header X-Hide-Me;
         add_header x-ADDED \"$http_x_mixed|$sent_http_x_port\";",
    ))
    .await;
    let request = "GET / HTTP/1.1\r\nHost: case.test\r\nX-MIXED: from the client\r\n\r\n";
    let (head, body) = exchange(lb.addr, request, 2).await;
    assert_eq!(body, b"ok");
    let got = lines(&head);
    assert!(got[0].starts_with("Server: imbang"), "{head}");
    assert!(got[1].starts_with("Date: "), "{head}");
    assert!(!got[1].contains("Mon, 07 Dec 2026 20:00:00"), "{head}");
    assert_eq!(
        got[2..],
        [
            "X-Port: 8081",
            "x-MiXeD: MiXeD value",
            "Set-Cookie: a=1",
            "X-Dup: 1",
            "set-cookie: b=2",
            "X-Dup: 2",
            "content-TYPE: text/plain",
            "Content-Length: 2",
            "x-ADDED: from the client|",
        ],
        "{head}"
    );
}

/// The fields of imbang's own answers are nginx's spelling.
#[tokio::test]
async fn imbang_s_own_fields_are_spelled_as_nginx_spells_them() {
    let (upstream, _heads) = raw_upstream(ANSWER).await;
    let lb = support::imbang(&conf(upstream, "")).await;
    let request = "GET /moved HTTP/1.1\r\nhost: case.test\r\nconnection: close\r\n\r\n";
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let head = answer.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("HTTP/1.1 301 "), "{answer}");
    let names: Vec<&str> = lines(head)
        .iter()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Server",
            "Date",
            "Content-Type",
            "Location",
            "Content-Length",
            "Connection"
        ],
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(head.contains("\r\nLocation: "), "{head}");
    assert!(head.contains("/elsewhere\r\n"), "{head}");
}

/// An HTTP/2 client gets the same fields, lowercase (RFC 9113 §8.2.1: an uppercase name is a
/// malformed message, which the client's h2 library would refuse), duplicates kept.
#[tokio::test]
async fn http2_clients_get_the_fields_lowercase() {
    let (upstream, mut heads) = raw_upstream(ANSWER).await;
    let lb = support::imbang(&conf(upstream, "add_header X-Added yes;")).await;
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let request = http::Request::builder()
        .uri("http://case.test/h2")
        .header("x-mixed", "over h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
    assert!(
        names.iter().all(|n| *n == n.to_ascii_lowercase()),
        "{names:?}"
    );
    assert_eq!(headers["x-port"], "8081");
    assert_eq!(headers["x-mixed"], "MiXeD value");
    assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
    assert_eq!(headers.get_all("x-dup").iter().count(), 2);
    assert_eq!(headers["x-added"], "yes");
    assert!(headers.get("x-conn-named").is_none() && headers.get("keep-alive").is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok");
    // Upstream, over HTTP/1: the HTTP/2 client's (lowercase) names as it sent them.
    let sent = heads.recv().await.expect("the upstream got the request");
    assert!(sent.contains("\r\nx-mixed: over h2\r\n"), "{sent}");
    assert!(
        sent.contains(&format!("\r\nHost: {upstream}\r\n")),
        "{sent}"
    );
}
