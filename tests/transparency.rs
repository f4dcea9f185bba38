//! The same exchange directly against a backend and through imbang: what the client sees must be
//! the same, but for hop-by-hop headers and `Server`/`Date`.
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use support::imbang;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn origin() -> SocketAddr {
    support::serve_hyper(|req: Request<Incoming>| async move {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let collected = req.into_body().collect().await.ok();
        let trailers = collected.as_ref().and_then(|c| c.trailers().cloned());
        let body = collected.map(|c| c.to_bytes()).unwrap_or_default();
        if path == "/trailers" {
            // Echoes the request's trailers back as the response's, plus one.
            let mut back = trailers.unwrap_or_default();
            back.insert("x-origin-trailer", "done".parse().unwrap());
            let names: Vec<String> = back.keys().map(|k| k.to_string()).collect();
            let body = WithTrailers::new(format!("{} bytes", body.len()), Some(back));
            let mut res = Response::new(body.boxed());
            // hyper sends only the trailer fields its `Trailer` header declares.
            res.headers_mut()
                .insert("trailer", names.join(", ").parse().unwrap());
            return Ok::<_, Infallible>(res);
        }
        let mut res = Response::new(Full::new(Bytes::new()));
        res.headers_mut().insert("x-origin", "yes".parse().unwrap());
        res.headers_mut()
            .insert("content-type", "text/x-test".parse().unwrap());
        match path.as_str() {
            "/small" => *res.body_mut() = Full::new(Bytes::from_static(b"small body")),
            "/echo" => {
                *res.body_mut() = Full::new(Bytes::from(format!(
                    "{method} {} {}",
                    body.len(),
                    body.iter().map(|&b| b as u64).sum::<u64>()
                )))
            }
            "/big" => {
                *res.body_mut() = Full::new(Bytes::from(
                    (0..5_000_000u32)
                        .map(|i| (i % 251) as u8)
                        .collect::<Vec<u8>>(),
                ))
            }
            "/204" => *res.status_mut() = StatusCode::NO_CONTENT,
            "/304" => *res.status_mut() = StatusCode::NOT_MODIFIED,
            "/404" => {
                *res.status_mut() = StatusCode::NOT_FOUND;
                *res.body_mut() = Full::new(Bytes::from_static(b"nope"));
            }
            _ => *res.status_mut() = StatusCode::IM_A_TEAPOT,
        }
        Ok::<_, Infallible>(res.map(|b| b.boxed()))
    })
    .await
}

/// What a client sees of one exchange, without hop-by-hop headers, `Server` and `Date`.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

/// A body of unknown length (sent chunked) that ends with trailers.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl WithTrailers {
    fn new(data: impl Into<Bytes>, trailers: Option<HeaderMap>) -> Self {
        Self {
            data: Some(data.into()),
            trailers,
        }
    }
}

impl http_body::Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let frame = match self.data.take() {
            Some(data) => Some(http_body::Frame::data(data)),
            None => self.trailers.take().map(http_body::Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

/// What a request sends.
#[derive(Clone)]
enum Send {
    Nothing,
    Sized(Vec<u8>),
    /// Chunked, with these trailers.
    Chunked(Vec<u8>, Vec<(&'static str, &'static str)>),
}

fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = map
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

async fn exchange(addr: SocketAddr, method: &str, path: &str, body: Send, expect: bool) -> Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "t")
        .header("te", "trailers");
    if expect {
        req = req.header("expect", "100-continue");
    }
    let body = match body {
        Send::Nothing => Full::new(Bytes::new()).boxed(),
        Send::Sized(b) => Full::new(Bytes::from(b)).boxed(),
        Send::Chunked(b, trailers) => {
            let names: Vec<&str> = trailers.iter().map(|(n, _)| *n).collect();
            if !names.is_empty() {
                req = req.header("trailer", names.join(", "));
            }
            let mut map = HeaderMap::new();
            for (n, v) in trailers {
                map.insert(n, v.parse().unwrap());
            }
            WithTrailers::new(b, Some(map).filter(|m| !m.is_empty())).boxed()
        }
    };
    let req: Request<BoxBody<Bytes, Infallible>> = req.body(body).unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let mut headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "server" | "date" | "connection" | "keep-alive" | "transfer-encoding" | "trailer"
            )
        })
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().map(pairs).unwrap_or_default();
    Seen {
        status,
        headers,
        body: collected.to_bytes().to_vec(),
        trailers,
    }
}

#[tokio::test]
async fn exchanges_look_the_same_directly_and_through_imbang() {
    let o = origin().await;
    // Streamed request bodies: their chunks and trailers pass end to end. (The default,
    // `proxy_request_buffering on`, sends a body with its length and without trailers, as
    // nginx does: tests/request_buffering.rs.)
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; client_max_body_size 0; proxy_request_buffering off;
           upstream o {{ server {o}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://o; }} }} }}"
    ))
    .await;
    let big_body: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    let cases: Vec<(&str, &str, Send, bool)> = vec![
        ("GET", "/small", Send::Nothing, false),
        ("HEAD", "/small", Send::Nothing, false),
        ("GET", "/big", Send::Nothing, false),
        ("GET", "/204", Send::Nothing, false),
        ("GET", "/304", Send::Nothing, false),
        ("GET", "/404", Send::Nothing, false),
        ("GET", "/other", Send::Nothing, false),
        ("POST", "/echo", Send::Sized(b"hello".to_vec()), false),
        ("PUT", "/echo", Send::Sized(big_body.clone()), false),
        ("POST", "/echo", Send::Sized(big_body.clone()), true),
        (
            "POST",
            "/echo",
            Send::Chunked(big_body.clone(), vec![]),
            false,
        ),
        (
            "PATCH",
            "/echo",
            Send::Chunked(b"small".to_vec(), vec![]),
            true,
        ),
        (
            "POST",
            "/trailers",
            Send::Chunked(big_body, vec![("x-sum", "42"), ("x-more", "a b")]),
            false,
        ),
        ("GET", "/trailers", Send::Nothing, false),
        ("DELETE", "/echo", Send::Nothing, false),
        ("OPTIONS", "/echo", Send::Nothing, false),
    ];
    for (method, path, body, expect) in cases {
        let direct = exchange(o, method, path, body.clone(), expect).await;
        let proxied = exchange(lb.addr, method, path, body, expect).await;
        assert_eq!(proxied, direct, "{method} {path} (expect: {expect})");
        if path == "/trailers" {
            assert!(
                direct.trailers.iter().any(|(n, _)| n == "x-origin-trailer"),
                "the origin sends trailers: {direct:?}"
            );
        }
    }
}

/// A peer that declares more body than it sends, then closes.
async fn short_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly fifty bytes of the hundred that were promised!")
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_short_body_from_the_peer_is_never_a_complete_looking_response() {
    let o = short_origin().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream o {{ server {o}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://o; }} }} }}"
    ))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("imbang closes the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 100"),
        "{head}"
    );
    assert!(
        body.len() < 100,
        "the client sees fewer bytes than announced, then the close"
    );
}

#[tokio::test]
async fn each_event_reaches_the_client_before_the_next_is_sent() {
    let (o, events_tx) = support::piecewise_origin("text/event-stream", 4).await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream o {{ server {o}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://o; proxy_buffering off; }} }} }}"
    ))
    .await;
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/events")
        .header("host", "t")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let mut body = res.into_body();
    for i in 1..=3 {
        // The peer sends event i only now; the client must get it before event i+1 exists.
        events_tx
            .send(Bytes::from(format!("data: {i}\n\n")))
            .await
            .unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the event arrives while the peer holds the next one")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), format!("data: {i}\n\n"));
    }
}

/// An upgrade request (with `early` bytes sent right behind its head), then `later` bytes once
/// switched: the status, the headers but `Server`/`Date`/`Connection`, and what came back.
async fn upgrade_exchange(
    addr: SocketAddr,
    early: &[u8],
    later: &[u8],
) -> (String, Vec<String>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req =
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n".to_vec();
    req.extend_from_slice(early);
    s.write_all(&req).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let want = early.len() + later.len();
    let mut sent_later = false;
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if !sent_later && got.len() - (end + 4) >= early.len() {
                s.write_all(later).await.unwrap();
                sent_later = true;
            }
            if got.len() - (end + 4) >= want {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let mut lines = head.split("\r\n");
                let status = lines.next().unwrap_or("").to_owned();
                let mut headers: Vec<String> = lines
                    .filter(|l| {
                        !(l.starts_with("server:")
                            || l.starts_with("date:")
                            || l.starts_with("connection:"))
                    })
                    .map(str::to_owned)
                    .collect();
                headers.sort();
                return (status, headers, got[end + 4..].to_vec());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the echo within 5 s")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn an_upgrade_looks_the_same_directly_and_through_imbang() {
    let o = support::echo_backend().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream o {{ server {o}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://o; }} }} }}"
    ))
    .await;
    for (early, later) in [
        (&b""[..], &b"hello"[..]),
        (&b"early bytes "[..], &b"and later"[..]),
    ] {
        let direct = upgrade_exchange(o, early, later).await;
        let proxied = upgrade_exchange(lb.addr, early, later).await;
        assert!(direct.0.starts_with("http/1.1 101"), "{direct:?}");
        assert_eq!(proxied, direct, "early {early:?}");
    }
}
