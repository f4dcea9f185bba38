//! Client-side limits: keepalive_timeout, keepalive_requests, keepalive_time, client_body_timeout.
mod support;

use std::time::Duration;

use support::{backend, imbang};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one response head (up to the blank line) from `s`.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("a response")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed in the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(limit, s.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn keepalive_requests_and_keepalive_timeout_close_connections_as_nginx() {
    let lb = imbang(
        "daemon off; error_log stderr crit; events {}
         http { access_log off; keepalive_timeout 300ms;
           server { listen 127.0.0.1:0;
             location / { return 200 ok; }
             location /two { keepalive_requests 2; return 200 ok; } } }",
    )
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let first = read_head(&mut s).await;
    assert!(!first.contains("connection: close"), "{first}");
    let mut body = [0u8; 2];
    s.read_exact(&mut body).await.unwrap();
    s.write_all(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let second = read_head(&mut s).await;
    assert!(
        second.contains("connection: close"),
        "the second request is the last: {second}"
    );
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);

    // An idle keep-alive connection is closed after keepalive_timeout.
    let mut idle = TcpStream::connect(lb.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut idle).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "idle connection closed"
    );
}

/// keepalive_time (nginx 1.19.10): a connection older than it is closed after the request being
/// answered, whatever keepalive_requests and keepalive_timeout allow; a location's own value
/// applies to its requests.
#[tokio::test]
async fn keepalive_time_closes_a_connection_that_lived_long_enough() {
    let lb = imbang(
        "daemon off; error_log stderr crit; events {}
         http { access_log off; keepalive_time 150ms;
           server { listen 127.0.0.1:0;
             location / { return 200 ok; }
             location /long { keepalive_time 1h; return 200 ok; } } }",
    )
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let first = read_head(&mut s).await;
    assert!(!first.contains("connection: close"), "young: {first}");
    let mut body = [0u8; 2];
    s.read_exact(&mut body).await.unwrap();
    // The connection's age is the input here: it must pass keepalive_time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"GET /long HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let long = read_head(&mut s).await;
    assert!(
        !long.contains("connection: close"),
        "the location's 1h: {long}"
    );
    s.read_exact(&mut body).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let old = read_head(&mut s).await;
    assert!(old.contains("connection: close"), "older than 150ms: {old}");
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
}

/// keepalive_timeout counts from the end of the last request: a connection used more often
/// than that stays open however long it lives (the idle timer is armed once and moved when it
/// fires early, not made per request).
#[tokio::test]
async fn a_connection_in_use_outlives_keepalive_timeout() {
    let lb = imbang(
        "daemon off; error_log stderr crit; events {}
         http { access_log off; keepalive_timeout 1s;
           server { listen 127.0.0.1:0; location / { return 200 ok; } } }",
    )
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut requests = 0;
    // Every 400 ms until well past the first request's idle deadline.
    while started.elapsed() < Duration::from_millis(2500) {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(
            head.starts_with("http/1.1 200"),
            "request {requests}: {head}"
        );
        let mut body = [0u8; 2];
        s.read_exact(&mut body).await.unwrap();
        requests += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(requests >= 5, "{requests}");
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "closed once idle for keepalive_timeout"
    );
}

#[tokio::test]
async fn keepalive_timeout_zero_disables_keep_alive() {
    let lb = imbang(
        "daemon off; error_log stderr crit; events {}
         http { access_log off; keepalive_timeout 0;
           server { listen 127.0.0.1:0; location / { return 200 ok; } } }",
    )
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.contains("connection: close"), "{head}");
}

#[tokio::test]
async fn the_answering_location_s_keepalive_timeout_applies() {
    let lb = imbang(
        "daemon off; error_log stderr crit; events {}
         http { access_log off; keepalive_timeout 0;
           server { listen 127.0.0.1:0; keepalive_timeout 300ms;
             location / { return 200 ok; }
             location /long { keepalive_timeout 60s; return 200 ok; }
             location /none { keepalive_timeout 0; return 200 ok; } } }",
    )
    .await;
    // The server level's 300ms (the http level's 0 is overridden): kept, then closed.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(!head.contains("connection: close"), "{head}");
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    // A location's 0 closes after its answer.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /none HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.contains("connection: close"), "{head}");
    // A location's 60s keeps the connection past the server's 300ms.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /long HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(!head.contains("connection: close"), "{head}");
    assert!(
        !closed_within(&mut s, Duration::from_secs(1)).await,
        "closed before the location's keepalive_timeout"
    );
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_after_client_body_timeout() {
    let app = backend("app").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream app {{ server {}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; client_body_timeout 300ms; }} }} }}",
        app.addr
    ))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert_eq!(app.hits(), 0, "the backend never got a complete request");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                    let big = Bytes::from(vec![b'x'; 32 * 1024 * 1024]);
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(big)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream o {{ server {origin}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ send_timeout 300ms; proxy_pass http://o; }} }} }}"
    ))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    support::eventually(
        "the connection to be served",
        Duration::from_secs(10),
        || lb.server.open_connections() == 1,
    )
    .await;
    // The client reads nothing: once the socket buffers are full imbang's writes block, and after
    // the location's send_timeout (the http level's is 60s) the connection is dropped.
    support::eventually(
        "the stalled connection to be dropped",
        Duration::from_secs(10),
        || lb.server.open_connections() == 0,
    )
    .await;
    drop(s);
}

#[tokio::test]
async fn a_peer_that_stops_reading_the_request_gets_504_after_proxy_send_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    // Accepts, then never reads: imbang's writes of the request body block.
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            streams.push(s);
        }
    });
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream o {{ server {origin}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://o; proxy_send_timeout 300ms; client_max_body_size 0; }} }} }}"
    ))
    .await;
    let s = TcpStream::connect(lb.addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let size = 64 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let head = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n");
        let _ = write.write_all(head.as_bytes()).await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut byte))
            .await
            .expect("an answer before the body is sent")
            .unwrap();
        assert_eq!(n, 1, "closed without an answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 504"), "{head}");
    writer.abort();
    held.abort();
}
