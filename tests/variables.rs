//! nginx's variables in the access log, with a real upstream: each value and format, and a
//! log line compared side by side with the machine's nginx (skipped when it is not installed).
mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{TempDir, imbang, serve_hyper};

const WAIT: Duration = Duration::from_secs(5);

/// One raw request from `source`; the whole raw response.
async fn send_from(source: &str, addr: SocketAddr, request: &str) -> String {
    let source: IpAddr = source.parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An upstream answering `hello` with a cookie, and the `X-Request-ID` it got in a field.
async fn app() -> SocketAddr {
    serve_hyper(|req: hyper::Request<hyper::body::Incoming>| async move {
        let id = req
            .headers()
            .get("x-request-id")
            .cloned()
            .unwrap_or(hyper::header::HeaderValue::from_static("none"));
        let mut res = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from("hello")));
        res.headers_mut().insert("x-got-id", id);
        res.headers_mut()
            .insert("set-cookie", "sid=abc123; Path=/".parse().unwrap());
        Ok::<_, std::convert::Infallible>(res)
    })
    .await
}

const POST: &str = "POST /p?a=1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nk=v";

#[tokio::test]
async fn values_and_formats() {
    let dir = TempDir::new("variables");
    let log = dir.path().join("v.log");
    let up = app().await;
    let dead = support::backend("dead").await;
    dead.stop();
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           log_format v '$proxy_port|$proxy_host|$upstream_response_length|$upstream_bytes_sent|$upstream_cache_status|$request_completion|$nginx_version|$server_protocol|$content_type|$content_length|$https|$limit_rate|$upstream_cookie_sid|$sent_trailer_x|$request_body|$upstream_status|$pipe|$request_id|$connection_time|$upstream_bytes_received|$document_root|$realpath_root';
           log_format t '$uri $upstream_addr|$upstream_status|$upstream_response_length|$upstream_connect_time';
           upstream app {{ server {up}; }}
           upstream flaky {{ server {dead}; server {up}; }}
           server {{
             listen 127.0.0.1:0;
             proxy_set_header X-Request-ID $request_id;
             location / {{ set $limit_rate 1k; access_log {log} v; proxy_pass http://app; }}
             location /fail {{ access_log {log} t; proxy_pass http://{dead}; error_page 502 = /after; }}
             location /after {{ internal; access_log {log} t; proxy_pass http://flaky; }}
           }}
         }}",
        dead = dead.addr,
        log = log.display(),
    ))
    .await;
    let r = send_from("127.0.0.1", lb.addr, POST).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let sent_id = r
        .lines()
        .find_map(|l| l.strip_prefix("x-got-id: "))
        .unwrap()
        .to_owned();
    support::eventually("the line", WAIT, || lines(&log).len() == 1).await;
    let line = lines(&log).remove(0);
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(
        &f[..17],
        [
            "80",
            "app",
            "5",
            f[3], // checked below
            "-",
            "OK",
            env!("CARGO_PKG_VERSION"),
            "HTTP/1.1",
            "text/plain",
            "3",
            "",     // $https: found and empty in nginx, so not `-`
            "1024", // `set $limit_rate 1k`
            "abc123",
            "-",
            "k=v",
            "200",
            ".",
        ],
        "{line}"
    );
    // The head imbang wrote and the 3 body bytes.
    let sent: u64 = f[3].parse().unwrap();
    assert!(sent > 60 && sent < 400, "{line}");
    // 32 hex digits, the same value the upstream got in `X-Request-ID`.
    assert_eq!(f[17].len(), 32, "{line}");
    assert!(f[17].bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    assert_eq!(f[17], sent_id);
    let (secs, millis) = f[18].split_once('.').unwrap();
    assert!(
        secs.parse::<u64>().unwrap() < 5 && millis.len() == 3,
        "{line}"
    );
    // The head hyper wrote (status line, four fields, blank line) and the 5 body bytes.
    let received: u64 = f[19].parse().unwrap();
    assert!(received > 80 && received < 200, "{line}");
    // nginx's default `root html` under the prefix; no such directory: no real path.
    let html = support::options().prefix.join("html");
    assert_eq!(&f[20..], [html.to_str().unwrap(), "-"], "{line}");

    // Tries across an internal redirect: `, ` within a location's tries, ` : ` between them.
    let r = send_from(
        "127.0.0.1",
        lb.addr,
        "GET /fail HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    support::eventually("the second line", WAIT, || lines(&log).len() == 2).await;
    let line = lines(&log).remove(1);
    let (head, tail) = line.split_once(' ').unwrap();
    assert_eq!(head, "/after", "nginx logs the redirected request's $uri");
    let d = dead.addr;
    let f: Vec<&str> = tail.split('|').collect();
    assert_eq!(
        &f[..3],
        [
            format!("{d} : {d}, {up}").as_str(),
            "502 : 502, 200",
            "0 : 0, 5"
        ],
        "{line}"
    );
    assert!(f[3].starts_with("- : -, 0.0"), "{line}");
}

/// The same log line from imbang and from the machine's nginx (apt's 1.22), for the variables
/// whose values do not depend on the instance (ports, times, ids aside). Also checks nginx's
/// realip precedence imbang follows (the server level's result stands).
#[tokio::test]
async fn a_log_line_is_nginx_s() {
    let up = app().await;
    let format = "'$remote_addr|$realip_remote_addr|$binary_remote_addr|$request|$status|$body_bytes_sent|$server_protocol|$content_type|$content_length|$https|$limit_rate|$upstream_response_length|$upstream_cache_status|$proxy_port|$proxy_host|$request_completion|$is_args|$args|$arg_a|$upstream_cookie_sid|$upstream_status|$upstream_http_x_got_id|$pipe|$request_body|$remote_user|$http_x_forwarded_for|$sent_http_content_length|$bytes_sent|$request_length|$upstream_bytes_sent|$upstream_bytes_received|$uri|$document_uri|$request_uri|$host|$http_host|$scheme|$connection_requests|$sent_http_content_type|$document_root|$request_filename|$realpath_root|$cookie_sid|$cookie_x|$cookie_other|$cookie_none|$arg_A|$upstream_header_time'";
    let dir = TempDir::new("nginx-cmp");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let http = |log: &Path, listen: &str| {
        format!(
            "log_format cmp {format};
             access_log {log} cmp;
             root {www}/;
             upstream app {{ server {up}; }}
             set_real_ip_from 127.0.0.1;
             set_real_ip_from 10.0.0.0/8;
             real_ip_header X-Forwarded-For;
             server {{
               listen 127.0.0.1:{listen};
               proxy_set_header X-Request-ID fixed;
               location / {{ real_ip_recursive on; proxy_pass http://app; }}
             }}",
            log = log.display(),
            www = www.display()
        )
    };
    let ours = dir.path().join("imbang.log");
    let theirs = dir.path().join("nginx.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; http {{ {} }}",
        http(&ours, "0")
    ))
    .await;
    let Some((_nginx, addr)) = support::start_nginx(&dir, &http(&theirs, "{listen}")).await else {
        return;
    };
    let request = "POST /p?a=1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nX-Forwarded-For: 203.0.113.9, 10.1.1.1\r\nCookie: SID=abc, x=1; other = 2\r\nConnection: close\r\n\r\nk=v";
    let a = send_from("127.0.0.1", lb.addr, request).await;
    let b = send_from("127.0.0.1", addr, request).await;
    assert!(
        a.starts_with("HTTP/1.1 200") && b.starts_with("HTTP/1.1 200"),
        "{a}\n{b}"
    );
    support::eventually("both lines", WAIT, || {
        lines(&ours).len() == 1 && lines(&theirs).len() == 1
    })
    .await;
    let (ours, theirs) = (lines(&ours), lines(&theirs));
    // `$bytes_sent`: every byte of the answer, head and body (the heads differ: `Server`, `Date`).
    let split = |l: &str, len: usize| {
        let mut f: Vec<String> = l.split('|').map(str::to_owned).collect();
        assert_eq!(f[27], len.to_string(), "$bytes_sent in {l}");
        // Neither $bytes_sent nor what each sends upstream (nginx: HTTP/1.0 and `Connection:
        // close`; imbang HTTP/1.1, keep-alive) nor the time is the same.
        f[27].clear();
        f[29].clear();
        f.truncate(f.len() - 1);
        f
    };
    assert_eq!(split(&ours[0], a.len()), split(&theirs[0], b.len()));
}

/// `$upstream_*` lists over failed tries and an `error_page` redirect, and `$uri` after it, as
/// nginx writes them.
#[tokio::test]
async fn upstream_lists_across_a_redirect_are_nginx_s() {
    let up = app().await;
    let dead = support::backend("dead").await;
    dead.stop();
    let dead2 = support::backend("dead2").await;
    dead2.stop();
    let dir = TempDir::new("nginx-redirect");
    let http = |log: &Path| {
        format!(
            "log_format t '$uri|$request_uri|$status|$upstream_addr|$upstream_status|$upstream_response_length|$upstream_cookie_sid|$upstream_connect_time|$upstream_header_time|$upstream_response_time';
             upstream flaky {{ server {dead}; server {up}; }}
             upstream gone {{ server {dead} max_fails=1 fail_timeout=60s; server {dead2} max_fails=1 fail_timeout=60s; }}
             server {{
               listen 127.0.0.1:{{listen}};
               location /gone {{ access_log {log} t; proxy_pass http://gone; }}
               location /fail {{ access_log {log} t; proxy_pass http://{dead}; error_page 502 = /after; }}
               location /after {{ internal; access_log {log} t; proxy_pass http://flaky; }}
             }}",
            dead = dead.addr,
            dead2 = dead2.addr,
            log = log.display(),
        )
    };
    let ours = dir.path().join("imbang.log");
    let theirs = dir.path().join("nginx.log");
    let Some((_nginx, addr)) = support::start_nginx(&dir, &http(&theirs)).await else {
        return;
    };
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; http {{ {} }}",
        http(&ours).replace("{listen}", "0")
    ))
    .await;
    let request = "GET /fail?x=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let a = send_from("127.0.0.1", lb.addr, request).await;
    let b = send_from("127.0.0.1", addr, request).await;
    assert!(
        a.starts_with("HTTP/1.1 200") && b.starts_with("HTTP/1.1 200"),
        "{a}\n{b}"
    );
    // Both peers fail, then are out for `fail_timeout`: "no live upstreams", named by the group.
    let gone = "GET /gone HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for _ in 0..2 {
        for to in [lb.addr, addr] {
            let r = send_from("127.0.0.1", to, gone).await;
            assert!(r.starts_with("HTTP/1.1 502"), "{r}");
        }
    }
    support::eventually("both logs", WAIT, || {
        lines(&ours).len() == 3 && lines(&theirs).len() == 3
    })
    .await;
    // Times differ from run to run: each `0.001` is written `T`, the `-`s and separators stay.
    let times = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                let t = f[7..].join("|");
                let t: String = t
                    .split_inclusive([' ', ',', '|'])
                    .map(|w| {
                        let end = w.trim_end_matches([' ', ',', '|']);
                        if end.contains('.') && end.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                        {
                            format!("T{}", &w[end.len()..])
                        } else {
                            w.to_owned()
                        }
                    })
                    .collect();
                format!("{}|{t}", f[..7].join("|"))
            })
            .collect()
    };
    assert_eq!(times(lines(&ours)), times(lines(&theirs)));
    assert!(lines(&ours)[2].contains("|gone|502|"), "{:?}", lines(&ours));
}

/// `$sent_trailer_*` and `$upstream_trailer_*`: the trailer fields the peer sent after its
/// chunked body, passed on to a client that accepts them.
#[tokio::test]
async fn trailers_are_in_the_log() {
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = origin.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-digest\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Digest: 99\r\n\r\n";
        s.write_all(answer.as_bytes()).await.unwrap();
    });
    let dir = TempDir::new("trailers");
    let log = dir.path().join("t.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           log_format t '$sent_trailer_x_digest|$upstream_trailer_x_digest|$sent_trailer_none|$request_completion|$upstream_response_length|$bytes_sent';
           server {{ listen 127.0.0.1:0; location / {{ access_log {log} t; proxy_pass http://{origin_addr}; }} }}
         }}",
        log = log.display(),
    ))
    .await;
    let r = send_from(
        "127.0.0.1",
        lb.addr,
        "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.contains("3\r\nabc\r\n0\r\nx-digest: 99\r\n\r\n"), "{r}");
    support::eventually("the line", WAIT, || lines(&log).len() == 1).await;
    // `$bytes_sent`: every byte, the chunked framing and the trailer section included.
    assert_eq!(lines(&log), [format!("99|99|-|OK|3|{}", r.len())]);
}

/// `$http2`, `$server_protocol` and `$request` over HTTP/2 with prior knowledge and HTTP/1.1.
#[tokio::test]
async fn protocol_variables_over_h2c_and_http_1_1() {
    use http_body_util::BodyExt as _;
    let lb = imbang(
        "daemon off; error_log stderr crit;
         http { access_log off;
           server { listen 127.0.0.1:0; location / { return 200 '[$http2] $server_protocol $request'; } } }",
    )
    .await;
    let stream = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://a.test/x?y=1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "[h2c] HTTP/2.0 GET /x?y=1 HTTP/2.0");
    let r = send_from(
        "127.0.0.1",
        lb.addr,
        "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.ends_with("\r\n\r\n[] HTTP/1.1 GET /x HTTP/1.1"), "{r}");
}
