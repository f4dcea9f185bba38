//! imbang's own HTTP/1.1 server side, byte for byte: pipelining, 100-continue, trailers both
//! ways, HTTP/1.0, `return 444`, `client_header_timeout`, `large_client_header_buffers`, and large
//! answers on connections that close after them.
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{backend, imbang};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads until the server closes (or 5 s pass): everything, and whether it closed.
async fn read_all(s: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// Reads until `got` contains `needle` (5 s at most).
async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within 5 s, got {:?}",
                    String::from_utf8_lossy(&got)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A peer speaking raw HTTP/1.1: it records each request it reads (up to the end of a chunked
/// body) and answers `response`.
async fn raw_origin(response: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).into_owned();
                    let chunked = text
                        .to_ascii_lowercase()
                        .contains("transfer-encoding: chunked");
                    let done = match text.split_once("\r\n\r\n") {
                        Some((_, body)) if chunked => {
                            body.starts_with("0\r\n") && body.ends_with("\r\n\r\n")
                                || body.contains("\r\n0\r\n") && body.ends_with("\r\n\r\n")
                        }
                        Some(_) => true,
                        None => false,
                    };
                    if done {
                        record.lock().unwrap().push(text);
                        got.clear();
                        if s.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn proxy_conf(origin: SocketAddr, extra: &str) -> String {
    format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; {extra} upstream o {{ server {origin}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://o; }}
             location /close {{ return 444; }} }} }}"
    )
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let app = backend("app").await;
    let lb = imbang(&proxy_conf(app.addr, "")).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let (answer, closed) = read_all(&mut s).await;
    let one = answer.find("app GET /one").expect(&answer);
    let two = answer.find("app POST /two body=3").expect(&answer);
    let three = answer.find("app GET /three").expect(&answer);
    assert!(one < two && two < three, "{answer}");
    assert!(closed, "Connection: close on the last one");
    assert_eq!(app.hits(), 3);
}

#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_is_sent() {
    let app = backend("app").await;
    let lb = imbang(&proxy_conf(app.addr, "")).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_until(&mut s, "\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{interim}"
    );
    s.write_all(b"hello").await.unwrap();
    let answer = read_until(&mut s, "body=5").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

#[tokio::test]
async fn a_refused_body_gets_no_100_continue() {
    let app = backend("app").await;
    let lb = imbang(&proxy_conf(app.addr, "client_max_body_size 4;")).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let (answer, closed) = read_all(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(closed);
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn trailers_pass_both_ways() {
    let (origin, seen) = raw_origin(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-digest\r\n\r\n3\r\nabc\r\n0\r\nx-digest: 99\r\n\r\n",
    )
    .await;
    // A streamed body keeps its chunks and trailers (a buffered one goes with its length).
    let lb = imbang(&proxy_conf(origin, "proxy_request_buffering off;")).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nTrailer: x-sum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_until(&mut s, "x-digest: 99\r\n\r\n").await;
    assert!(answer.contains("Transfer-Encoding: chunked"), "{answer}");
    assert!(answer.contains("3\r\nabc\r\n0\r\n"), "{answer}");
    let received = seen.lock().unwrap().concat();
    assert!(received.contains("5\r\nhello\r\n0\r\n"), "{received}");
    assert!(received.contains("x-sum: 42\r\n\r\n"), "{received}");
}

#[tokio::test]
async fn a_buffered_chunked_body_goes_with_its_length_and_without_trailers_as_in_nginx() {
    let (origin, seen) = raw_origin("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let lb = imbang(&proxy_conf(origin, "")).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: a\r\nTrailer: x-sum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n",
    )
    .await
    .unwrap();
    read_until(&mut s, "\r\n\r\nok").await;
    let received = seen.lock().unwrap().concat();
    assert!(received.contains("Content-Length: 5\r\n"), "{received}");
    assert!(received.ends_with("\r\n\r\nhello"), "{received}");
    assert!(
        !received.to_ascii_lowercase().contains("chunked"),
        "{received}"
    );
    assert!(!received.contains("x-sum"), "{received}");
}

#[tokio::test]
async fn http_1_0_gets_a_close_delimited_or_keep_alive_answer_as_it_asked() {
    let app = backend("app").await;
    let lb = imbang(&proxy_conf(app.addr, "")).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    let (answer, closed) = read_all(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("app GET /old"), "{answer}");
    assert!(closed);
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let first = read_until(&mut s, "app GET /a").await;
    assert!(first.contains("Connection: keep-alive\r\n"), "{first}");
    s.write_all(b"GET /b HTTP/1.0\r\n\r\n").await.unwrap();
    let (second, closed) = read_all(&mut s).await;
    assert!(second.ends_with("app GET /b"), "{second}");
    assert!(closed);
}

#[tokio::test]
async fn return_444_closes_without_an_answer() {
    let app = backend("app").await;
    let lb = imbang(&proxy_conf(app.addr, "")).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /close HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_all(&mut s).await;
    assert_eq!(answer, "");
    assert!(closed);
}

#[tokio::test]
async fn a_slow_head_is_closed_after_client_header_timeout() {
    let app = backend("app").await;
    let lb = imbang(&proxy_conf(app.addr, "client_header_timeout 300ms;")).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let (answer, closed) = read_all(&mut s).await;
    assert_eq!(answer, "", "nginx closes without an answer");
    assert!(closed);
    // A connection that never sends anything is closed after it too.
    let mut silent = TcpStream::connect(lb.addr).await.unwrap();
    assert!(read_all(&mut silent).await.1);
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn large_client_header_buffers_sets_the_limits() {
    let app = backend("app").await;
    let lb = imbang(&proxy_conf(app.addr, "large_client_header_buffers 2 1k;")).await;
    let ask = |raw: String| async move {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        read_all(&mut s).await.0
    };
    let uri = ask(format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "u".repeat(1100)
    ))
    .await;
    assert!(uri.starts_with("HTTP/1.1 414 "), "{uri:.80}");
    let line = ask(format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "v".repeat(1100)
    ))
    .await;
    assert!(line.starts_with("HTTP/1.1 400 "), "{line:.80}");
    let fields: String = (0..4)
        .map(|i| format!("X-{i}: {}\r\n", "v".repeat(600)))
        .collect();
    let total = ask(format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n")).await;
    assert!(total.starts_with("HTTP/1.1 400 "), "{total:.80}");
    let fine = ask(format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "u".repeat(900)
    ))
    .await;
    assert!(fine.starts_with("HTTP/1.1 200 "), "{fine:.80}");
    assert_eq!(app.hits(), 1);
}

/// A 3 MB answer on a connection that closes after it arrives whole, then the close, whether its
/// length is known (its last bytes carry the FIN), chunked (the last chunk does) or delimited by
/// the close (HTTP/1.0): more than the sockets hold, so the last writes wait for the client.
#[tokio::test]
async fn a_large_answer_on_a_closing_connection_arrives_whole_then_the_close() {
    use bytes::Bytes;
    use http_body_util::{Either, Full, StreamBody};
    use hyper::body::Frame;
    const N: usize = 3_000_000;
    let body: Vec<u8> = (0..N).map(|i| (i * 7 % 251) as u8).collect();
    let body = Bytes::from(body);
    let served = body.clone();
    let origin = support::serve_hyper(move |req: hyper::Request<hyper::body::Incoming>| {
        let body = served.clone();
        async move {
            let answer = if req.uri().path() == "/sized" {
                Either::Left(Full::new(body))
            } else {
                // 64 KiB frames of unknown total length: chunked to HTTP/1.1 clients.
                let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..N)
                    .step_by(65_536)
                    .map(|at| Ok(Frame::data(body.slice(at..(at + 65_536).min(N)))))
                    .collect();
                Either::Right(StreamBody::new(futures_util::stream::iter(frames)))
            };
            Ok::<_, std::convert::Infallible>(hyper::Response::new(answer))
        }
    })
    .await;
    let lb = imbang(&proxy_conf(origin, "")).await;
    for (request, shape) in [
        (
            "GET /sized HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "content-length",
        ),
        (
            "GET /streamed HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "chunked",
        ),
        (
            "GET /streamed HTTP/1.0\r\nHost: a\r\n\r\n",
            "until the close",
        ),
    ] {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| panic!("{shape}: no close"))
            .unwrap_or_else(|e| panic!("{shape}: {e}"));
        let split = got.windows(4).position(|w| w == b"\r\n\r\n").expect(shape) + 4;
        let head = String::from_utf8_lossy(&got[..split]).to_lowercase();
        let content = match shape {
            "chunked" => {
                assert!(head.contains("transfer-encoding: chunked"), "{head}");
                dechunk(&got[split..])
            }
            "content-length" => {
                assert!(head.contains(&format!("content-length: {N}")), "{head}");
                got[split..].to_vec()
            }
            _ => {
                assert!(
                    !head.contains("content-length") && !head.contains("chunked"),
                    "{head}"
                );
                got[split..].to_vec()
            }
        };
        assert!(
            content == body,
            "{shape}: {} bytes, {} expected",
            content.len(),
            N
        );
    }
}

/// The data of a whole chunked body (no trailers).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap(), 16).unwrap();
        raw = &raw[line + 2..];
        if size == 0 {
            assert_eq!(raw, b"\r\n", "the end of the chunked body");
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n");
        raw = &raw[size + 2..];
    }
}
