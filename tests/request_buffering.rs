//! `proxy_request_buffering` and `client_body_temp_path`: what a peer receives of a request
//! body, buffered (nginx's default: read whole first, then sent with its length) or streamed,
//! compared with nginx's behaviour where the machine has nginx.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, mpsc};

use support::{TempDir, imbang, serve_hyper};

/// An origin answering with the framing its request came with and the body's length:
/// `cl=<Content-Length> te=<Transfer-Encoding> len=<bytes>`.
async fn framing_origin() -> SocketAddr {
    serve_hyper(|req: Request<Incoming>| async move {
        let field = |name: &str| {
            req.headers()
                .get(name)
                .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned())
        };
        let (cl, te) = (field("content-length"), field("transfer-encoding"));
        let len = req.into_body().collect().await.unwrap().to_bytes().len();
        let text = format!("cl={cl} te={te} len={len}");
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(text))))
    })
    .await
}

fn conf(origin: SocketAddr, extra: &str) -> String {
    format!(
        "daemon off; error_log stderr crit;
         http {{ {extra}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://{origin}; }} }} }}"
    )
}

/// Sends a chunked POST of `chunks` chunks of `size` bytes over a new connection and returns
/// the response's status line and body.
async fn chunked_post(addr: SocketAddr, chunks: usize, size: usize) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req =
        b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..chunks {
        req.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        req.extend(std::iter::repeat_n(b'x', size));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The answer may come before every byte is written (413): a failed write is not an error.
    let _ = s.write_all(&req).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = support::status(&answer);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test]
async fn a_chunked_body_is_read_whole_and_sent_with_its_length() {
    let origin = framing_origin().await;
    // 3 × 5000 bytes: beyond the 8k buffer, so through a temporary file.
    for (extra, want) in [
        ("", "cl=15000 te=- len=15000"),
        ("client_body_buffer_size 64k;", "cl=15000 te=- len=15000"),
        ("proxy_request_buffering off;", "cl=- te=chunked len=15000"),
    ] {
        let lb = imbang(&conf(origin, extra)).await;
        let (status, body) = chunked_post(lb.addr, 3, 5000).await;
        assert_eq!((status, body.as_str()), (200, want), "{extra:?}");
    }
}

#[tokio::test]
async fn nginx_sends_a_buffered_chunked_body_with_its_length_too() {
    let origin = framing_origin().await;
    let dir = TempDir::new("buffering-nginx");
    for (extra, want) in [
        ("", "cl=15000 te=- len=15000"),
        (
            "proxy_request_buffering off; proxy_http_version 1.1;",
            "cl=- te=chunked len=15000",
        ),
    ] {
        let http = format!(
            "server {{ listen 127.0.0.1:{{listen}}; {extra} location / {{ proxy_pass http://{origin}; }} }}"
        );
        let Some((_nginx, addr)) = support::start_nginx(&dir, &http).await else {
            return;
        };
        let (status, body) = chunked_post(addr, 3, 5000).await;
        assert_eq!((status, body.as_str()), (200, want), "nginx {extra:?}");
        let lb = imbang(&conf(origin, extra)).await;
        assert_eq!(
            chunked_post(lb.addr, 3, 5000).await,
            (status, body),
            "imbang as nginx, {extra:?}"
        );
    }
}

#[tokio::test]
async fn a_chunked_body_over_client_max_body_size_is_a_413_and_never_reaches_the_peer() {
    let origin = framing_origin().await;
    let lb = imbang(&conf(origin, "client_max_body_size 10k;")).await;
    let (status, _) = chunked_post(lb.addr, 3, 5000).await;
    assert_eq!(status, 413);
    // Within the limit it passes.
    assert_eq!(chunked_post(lb.addr, 2, 5000).await.0, 200);
}

/// An origin that reports each request's arrival on `arrived` and answers only when `go` is
/// notified.
async fn held_origin(arrived: mpsc::UnboundedSender<()>, go: std::sync::Arc<Notify>) -> SocketAddr {
    serve_hyper(move |req: Request<Incoming>| {
        let (arrived, go) = (arrived.clone(), go.clone());
        async move {
            let len = req.into_body().collect().await.unwrap().to_bytes().len();
            let _ = arrived.send(());
            go.notified().await;
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(format!(
                "len={len}"
            )))))
        }
    })
    .await
}

/// The open files of this process (imbang runs in it) that lie in `dir`.
fn open_files_in(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy().into_owned();
            if target.starts_with(&*dir.to_string_lossy()) {
                found.push(target);
            }
        }
    }
    found
}

#[tokio::test]
async fn the_temporary_file_is_in_client_body_temp_path_and_has_no_name() {
    let dir = TempDir::new("buffering-spool");
    let spool = dir.path().join("body");
    std::fs::create_dir(&spool).unwrap();
    let (tx, mut arrived) = mpsc::unbounded_channel();
    let go = std::sync::Arc::new(Notify::new());
    let origin = held_origin(tx, go.clone()).await;
    let extra = format!("client_body_temp_path {} 1 2;", spool.display());
    let lb = imbang(&conf(origin, &extra)).await;
    let addr = lb.addr;
    let request = tokio::spawn(async move { chunked_post(addr, 4, 10_000).await });
    arrived.recv().await.unwrap();
    // While the request is in flight, its body is open in the directory, with no name there.
    let open = open_files_in(&spool);
    assert_eq!(
        open.len(),
        1,
        "one spooled body open in {}: {open:?}",
        spool.display()
    );
    assert!(open[0].ends_with("(deleted)"), "unnamed: {open:?}");
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "nothing to list"
    );
    go.notify_one();
    assert_eq!(request.await.unwrap(), (200, "len=40000".to_owned()));
    // Closed once the request is done (the response answered it).
    support::eventually("the body file closed", Duration::from_secs(5), || {
        open_files_in(&spool).is_empty()
    })
    .await;
}

#[tokio::test]
async fn an_unusable_client_body_temp_path_is_a_500_for_large_bodies_only() {
    let origin = framing_origin().await;
    let lb = imbang(&conf(
        origin,
        "client_body_temp_path /nonexistent/imbang-body;",
    ))
    .await;
    assert_eq!(chunked_post(lb.addr, 3, 5000).await.0, 500);
    // A body that fits in client_body_buffer_size needs no file.
    assert_eq!(
        chunked_post(lb.addr, 1, 5000).await,
        (200, "cl=5000 te=- len=5000".to_owned())
    );
}

#[tokio::test]
async fn a_missing_client_body_temp_path_is_made_at_start_and_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let origin = framing_origin().await;
    let dir = TempDir::new("buffering-mkdir");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let port = support::free_port();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; pid logs/imbang.pid; error_log logs/error.log;
             events {{}}
             http {{ client_body_temp_path tmp/client_body 1 2;
               server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://{origin}; }} }} }}"
        ),
    );
    let made = dir.path().join("tmp/client_body");
    assert!(!made.exists());
    let prefix = format!("{}/", dir.path().display());
    let guard = support::ImbangGuard::start(&prefix);
    support::wait_pid_file(&guard.pid_file, Duration::from_secs(10)).await;
    let mode = std::fs::metadata(&made)
        .expect("made at start")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{}", made.display());
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        chunked_post(addr, 3, 5000).await,
        (200, "cl=15000 te=- len=15000".to_owned())
    );
}
