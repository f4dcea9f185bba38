//! `stub_status` and the `$connections_*` variables on the wire, side by side with nginx 1.22:
//! after the same sequence of connections and requests, imbang's page is nginx's to the byte.
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{ImbangGuard, TempDir, start_nginx, wait_accepting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The http block both servers run (`{listen}`: the port).
const HTTP: &str = "
    server {
        listen 127.0.0.1:{listen};
        location = /status { stub_status; }
        location = /vars {
            return 200 '$connections_active $connections_reading $connections_writing $connections_waiting\n';
        }
        location / { return 200 'ok\n'; }
    }
    server { listen 127.0.0.1:{listen2}; stub_status; }
";

/// Starts imbang (the binary, one worker, as nginx here) with [`HTTP`].
async fn start_imbang(dir: &TempDir) -> (ImbangGuard, SocketAddr, SocketAddr) {
    let (port, port2) = (support::free_port(), support::free_port());
    let http = HTTP
        .replace("{listen}", &port.to_string())
        .replace("{listen2}", &port2.to_string());
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; worker_processes 1; pid logs/imbang.pid; error_log logs/error.log;
             events {{}} http {{ access_log off; {http} }}"
        ),
    );
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let prefix = format!("{}/", dir.path().display());
    let guard = ImbangGuard::start(&prefix);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_accepting(addr, Duration::from_secs(10)).await;
    (guard, addr, ([127, 0, 0, 1], port2).into())
}

/// Sends one request on `stream` and reads its response: `(status, body)`.
async fn exchange(stream: &mut TcpStream, method: &str, path: &str, close: bool) -> (u16, String) {
    let connection = if close { "close" } else { "keep-alive" };
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream, close).await
}

async fn read_response(stream: &mut TcpStream, to_eof: bool) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            let done = buf.len() >= end + 4 + length;
            if (done && !to_eof) || n == 0 {
                let status = support::status(head);
                let body = text[end + 4..].to_owned();
                return (status, body);
            }
        } else if n == 0 {
            panic!("connection closed before a response head: {text:?}");
        }
    }
}

/// The sequence, on a server at `addr`: what the status page and `$connections_*` show while
/// one connection idles, one has sent half a request head, and the one asking is answered.
async fn sequence(addr: SocketAddr) -> (String, String, u16) {
    // A: one request, then idle (Waiting).
    let mut a = TcpStream::connect(addr).await.unwrap();
    assert_eq!(exchange(&mut a, "GET", "/", false).await.0, 200);
    // B: three requests on one connection, closed by the server after the third.
    let mut b = TcpStream::connect(addr).await.unwrap();
    for close in [false, false, true] {
        assert_eq!(exchange(&mut b, "GET", "/", close).await.0, 200);
    }
    // C: half a request head (Reading).
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // D: asks (Writing, while its answer is made).
    let mut d = TcpStream::connect(addr).await.unwrap();
    let (status, page) = exchange(&mut d, "GET", "/status", false).await;
    assert_eq!(status, 200);
    let (status, vars) = exchange(&mut d, "GET", "/vars", false).await;
    assert_eq!(status, 200);
    let (refused, _) = exchange(&mut d, "POST", "/status", false).await;
    drop((a, c));
    (page, vars, refused)
}

/// The page after [`sequence`] (the first connection is the test's wait for the listener):
/// 5 accepted and handled, 1 + 3 + 1 + 1 requests, A, C and D open.
const EXPECTED: &str = "Active connections: 3 \nserver accepts handled requests\n 5 5 6 \nReading: 1 Writing: 1 Waiting: 1 \n";

#[tokio::test]
async fn stub_status_counts_as_nginx_1_22_does() {
    let dir = TempDir::new("stub-status");
    let (_imbang, addr, _) = start_imbang(&dir).await;
    let (page, vars, refused) = sequence(addr).await;
    assert_eq!(page, EXPECTED);
    assert_eq!(
        vars, "3 1 1 1\n",
        "$connections_active, _reading, _writing, _waiting"
    );
    assert_eq!(refused, 405);

    let nginx_dir = TempDir::new("stub-status-nginx");
    let port2 = support::free_port();
    let http = HTTP.replace("{listen2}", &port2.to_string());
    let Some((_nginx, nginx_addr)) = start_nginx(&nginx_dir, &http).await else {
        return;
    };
    let (nginx_page, nginx_vars, nginx_refused) = sequence(nginx_addr).await;
    assert_eq!(page, nginx_page, "imbang's page against nginx's");
    assert_eq!(vars, nginx_vars);
    assert_eq!(refused, nginx_refused);
}

/// At server level, `stub_status` answers the requests no location matches (nginx's rule),
/// with nginx's `Content-Type`.
#[tokio::test]
async fn stub_status_at_server_level_answers_what_no_location_matches() {
    let dir = TempDir::new("stub-status-server");
    let (_imbang, _, addr) = start_imbang(&dir).await;
    wait_accepting(addr, Duration::from_secs(10)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /anything HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("Waiting:") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\nContent-Type: text/plain\r\n"), "{text}");
    assert!(text.contains("\r\n\r\nActive connections: "), "{text}");
}

#[test]
fn stub_status_takes_nginx_s_contexts_and_arguments() {
    use support::compile;
    let ok = |c: &str| compile(&format!("events {{}} http {{ {c} }}"));
    assert_eq!(ok("server { location /s { stub_status; } }"), Ok(()));
    assert_eq!(ok("server { location /s { stub_status on; } }"), Ok(()));
    assert_eq!(ok("server { stub_status; }"), Ok(()));
    let err = ok("stub_status;").unwrap_err();
    assert!(
        err.contains("\"stub_status\" directive is not allowed here"),
        "{err}"
    );
    let err =
        ok("server { location /s { stub_status; proxy_pass http://127.0.0.1:1; } }").unwrap_err();
    assert!(
        err.contains("\"stub_status\" cannot be used with \"proxy_pass\" in the same location"),
        "{err}"
    );
    let err = ok("server { location /s { stub_status; api; } }").unwrap_err();
    assert!(
        err.contains("\"api\" cannot be used with \"stub_status\" in the same location"),
        "{err}"
    );
}

/// NGINX Plus's API reads the same figures: `/connections`, `/http/requests`, `/workers`, and
/// `/slabs` (empty: imbang has no shared memory zones).
#[tokio::test]
async fn the_api_shows_the_same_figures_in_the_plus_api_s_shapes() {
    let dir = TempDir::new("api-connections");
    let port = support::free_port();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; worker_processes 1; pid logs/imbang.pid; error_log logs/error.log;
             events {{}} http {{ access_log off; server {{ listen 127.0.0.1:{port};
                 location /api/ {{ api; }} location / {{ return 200; }} }} }}"
        ),
    );
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let _imbang = ImbangGuard::start(&format!("{}/", dir.path().display()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_accepting(addr, Duration::from_secs(10)).await;
    // A: one request, then idle. C: half a head. D: asks.
    let mut a = TcpStream::connect(addr).await.unwrap();
    assert_eq!(exchange(&mut a, "GET", "/", false).await.0, 200);
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut d = TcpStream::connect(addr).await.unwrap();
    let mut json = async |path: &str| {
        let (status, body) = exchange(&mut d, "GET", path, false).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let connections = json("/api/9/connections").await;
    assert_eq!(
        connections,
        serde_json::json!({ "accepted": 4, "dropped": 0, "active": 2, "idle": 1 })
    );
    let requests = json("/api/9/http/requests").await;
    assert_eq!(requests, serde_json::json!({ "total": 4, "current": 2 }));
    let workers = json("/api/9/workers").await;
    assert_eq!(workers[0]["http"]["requests"]["total"], 5);
    assert_eq!(workers[0]["connections"]["accepted"], 4);
    assert_eq!(json("/api/9/slabs").await, serde_json::json!({}));
    assert_eq!(
        json("/api/9/processes").await,
        serde_json::json!({ "respawned": 0 })
    );
    drop((a, c));
}

/// NGINX Plus's `/ssl`: TLS handshakes with clients, failed ones and session reuses.
#[tokio::test]
async fn the_api_counts_tls_handshakes_failures_and_reuses() {
    use support::tls::{Ca, client_config, connect, get};
    let ca = Ca::new("test CA");
    let dir = TempDir::new("api-ssl");
    let leaf = ca.leaf(&["s.test"], false);
    let cert = dir.write("s.crt", &leaf.cert);
    let key = dir.write("s.key", &leaf.key);
    let (port, tls_port) = (support::free_port(), support::free_port());
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; worker_processes 1; pid logs/imbang.pid; error_log logs/error.log;
             events {{}} http {{ access_log off;
                 server {{ listen 127.0.0.1:{port}; location /api/ {{ api; }} }}
                 server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {}; ssl_certificate_key {};
                     return 200 ok; }} }}",
            cert.display(),
            key.display()
        ),
    );
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let _imbang = ImbangGuard::start(&format!("{}/", dir.path().display()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let tls_addr: SocketAddr = ([127, 0, 0, 1], tls_port).into();
    wait_accepting(addr, Duration::from_secs(10)).await;
    // A full handshake, then one resuming its session (one client config keeps the session).
    let config = std::sync::Arc::new(client_config(&ca, &[]));
    for _ in 0..2 {
        let tls = connect(config.clone(), tls_addr, "s.test").await.unwrap();
        assert_eq!(get(tls, "s.test", "/").await, (200, "ok".to_owned()));
    }
    // A record that starts as a handshake and is not one.
    let mut bad = TcpStream::connect(tls_addr).await.unwrap();
    bad.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut d = TcpStream::connect(addr).await.unwrap();
        let (status, body) = exchange(&mut d, "GET", "/api/9/ssl", true).await;
        assert_eq!(status, 200, "{body}");
        let ssl: serde_json::Value = serde_json::from_str(&body).unwrap();
        if ssl["handshakes_failed"] == 1 {
            assert_eq!(
                ssl,
                serde_json::json!({ "handshakes": 2, "handshakes_failed": 1, "session_reuses": 1 })
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ssl}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
