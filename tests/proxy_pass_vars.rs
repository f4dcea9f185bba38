//! `proxy_pass` with variables, as nginx: the rendered authority names an `upstream` block (or
//! the group of a literal `proxy_pass http://host:port`), or is an IP address; anything else
//! needs a resolver imbang does not have (502). A rendered URI part is the whole request target.
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use imbang::config::model::{ErrorLogSpec, LogLevel, LogTarget};
use imbang::error_log;
use support::{TempDir, backend, imbang, run_imbang};
use tokio::net::TcpStream;

const MAIN: &str = "daemon off; events {}";

/// Sends this process's error log (in-process instances leave it alone) to a file, once, and
/// returns what the file holds.
fn error_log() -> String {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let path = PATH.get_or_init(|| {
        let path = support::options()
            .prefix
            .join("logs/proxy_pass_vars.error.log");
        let spec = ErrorLogSpec {
            target: LogTarget::File(path.clone()),
            level: LogLevel::Error,
        };
        error_log::install(error_log::ErrorLog::open(&[spec]).unwrap());
        path
    });
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A GET with extra headers over a new connection: status, `Location`, body.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().uri(path).header("host", "localhost");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Answers `host=<Host> uri=<target>`; with an `X-Loc: URL` header a 302 to that URL.
async fn mirror() -> SocketAddr {
    support::serve_hyper(|req: Request<Incoming>| async move {
        let host = req
            .headers()
            .get("host")
            .map(|h| h.to_str().unwrap().to_owned());
        let text = format!("host={} uri={}", host.unwrap_or_default(), req.uri());
        let mut res = Response::new(Full::new(Bytes::from(text)));
        if let Some(loc) = req.headers().get("x-loc") {
            res.headers_mut().insert("location", loc.clone());
            *res.status_mut() = hyper::StatusCode::FOUND;
        }
        Ok::<_, Infallible>(res)
    })
    .await
}

#[tokio::test]
async fn a_variable_picks_the_upstream_block_with_all_its_balancing() {
    let blue = backend("blue").await;
    let (g1, g2) = (backend("g1").await, backend("g2").await);
    let lb = imbang(&format!(
        "{MAIN} http {{ access_log off;
           upstream blue {{ server {}; }}
           upstream Green {{ server {}; server {}; }}
           server {{ listen 127.0.0.1:0;
             location /arg/ {{ proxy_pass http://$arg_pool; }}
             location /header/ {{ proxy_pass http://$http_x_pool; }}
             location /set/ {{ set $pool green; proxy_pass http://$pool; }}
             location /literal/ {{ proxy_pass http://Green; }}
           }}
         }}",
        blue.addr, g1.addr, g2.addr
    ))
    .await;
    let body = |path: &'static str, headers: &'static [(&str, &str)]| {
        let addr = lb.addr;
        async move { get(addr, path, headers).await.2 }
    };
    assert_eq!(
        body("/arg/a?pool=blue", &[]).await,
        "blue GET /arg/a?pool=blue"
    );
    assert_eq!(
        body("/header/b", &[("x-pool", "blue")]).await,
        "blue GET /header/b"
    );
    // Group names match without regard to case, as in nginx; round robin goes on across the
    // literal and the variable location, which share the group.
    let mut seen = Vec::new();
    for path in ["/set/1", "/literal/2", "/arg/3?pool=GREEN", "/set/4"] {
        seen.push(body(path, &[]).await);
    }
    assert_eq!(
        seen,
        [
            "g1 GET /set/1",
            "g2 GET /literal/2",
            "g1 GET /arg/3?pool=GREEN",
            "g2 GET /set/4"
        ]
    );
    // Failover inside the chosen group: g1's refused connection is retried on g2.
    g1.stop();
    for _ in 0..4 {
        assert_eq!(body("/set/x", &[]).await, "g2 GET /set/x");
    }
}

#[tokio::test]
async fn an_ip_address_is_connected_to_without_a_resolver() {
    let m = mirror().await;
    let app = backend("app").await;
    let lb = imbang(&format!(
        "{MAIN} http {{ access_log off;
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://$arg_to; }}
             location /port/ {{ proxy_pass http://127.0.0.1:$arg_port; }}
           }}
         }}"
    ))
    .await;
    // `Host` (and `$proxy_host`) is the rendered authority.
    let (status, _, body) = get(lb.addr, &format!("/a?to={m}"), &[]).await;
    assert_eq!(
        (status, body),
        (200, format!("host={m} uri=/a?to={m}")),
        "IP address and port"
    );
    let port = app.addr.port();
    for _ in 0..3 {
        let (status, _, body) = get(lb.addr, &format!("/port/?port={port}"), &[]).await;
        assert_eq!((status, body), (200, format!("app GET /port/?port={port}")));
    }
    assert_eq!(app.hits(), 3);
    // Nothing listens on a port taken and freed: connect refused, 502.
    let closed = support::free_port();
    let (status, _, _) = get(lb.addr, &format!("/port/?port={closed}"), &[]).await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn a_rendered_uri_is_the_whole_request_target() {
    let app = backend("app").await;
    let lb = imbang(&format!(
        "{MAIN} http {{ access_log off;
           upstream app {{ server {}; }}
           server {{ listen 127.0.0.1:0;
             location /fixed/ {{ proxy_pass http://$arg_up/fixed$is_args$args; }}
             location /whole/ {{ proxy_pass http://$arg_up/whole; }}
             location /ru/ {{ proxy_pass http://app$request_uri; }}
             location /none/ {{ proxy_pass http://$arg_up; }}
             location /query/ {{ proxy_pass http://$arg_up?only=$arg_up; }}
             location /url/ {{ set $backend HTTP://app/from-set; proxy_pass $backend; }}
           }}
         }}",
        app.addr
    ))
    .await;
    let cases = [
        // No prefix replaced, nothing appended: the URI as written.
        ("/fixed/a/b?up=app&x=1", "/fixed?up=app&x=1"),
        ("/whole/deep/path?up=app", "/whole"),
        ("/ru/x%41/../y?up=1", "/ru/x%41/../y?up=1"),
        // No URI part: the client's target exactly as it came, not normalised.
        ("/none/./a%7e//b?up=app", "/none/./a%7e//b?up=app"),
        // A URI part that starts with `?` gets a `/` before it (nginx).
        ("/query/q?up=app", "/?only=app"),
        // The whole URL from a variable, scheme and all.
        ("/url/u?a=1", "/from-set"),
    ];
    for (path, want) in cases {
        let (status, _, body) = get(lb.addr, path, &[]).await;
        assert_eq!((status, body), (200, format!("app GET {want}")), "{path}");
    }
}

#[tokio::test]
async fn regex_captures_name_the_group_and_the_uri() {
    let (a, b) = (backend("a").await, backend("b").await);
    let lb = imbang(&format!(
        "{MAIN} http {{ access_log off;
           upstream one {{ server {}; }}
           upstream two {{ server {}; }}
           server {{ listen 127.0.0.1:0;
             location ~ ^/to/([a-z]+)/(.*)$ {{ proxy_pass http://$1/$2$is_args$args; }}
             location @named {{ proxy_pass http://$1/named/$2; }}
             location ~ ^/fallback/([a-z]+)/(.*)$ {{ error_page 418 = @named; return 418; }}
           }}
         }}",
        a.addr, b.addr
    ))
    .await;
    let cases = [
        ("/to/one/p/q?x=1", (200, "a GET /p/q?x=1")),
        ("/to/two/", (200, "b GET /")),
        // `$2` is the decoded path: a space cannot go into a request line as is.
        ("/to/two/a%20b", (200, "b GET /a%20b")),
        // A named location keeps the captures of the regex that led to it.
        ("/fallback/two/f", (200, "b GET /named/f")),
    ];
    for (path, (status, want)) in cases {
        let (got, _, body) = get(lb.addr, path, &[]).await;
        assert_eq!((got, body.as_str()), (status, want), "{path}");
    }
}

#[tokio::test]
async fn a_host_name_without_a_group_is_502_as_without_a_resolver() {
    let app = backend("app").await;
    let lb = imbang(&format!(
        "{MAIN} http {{ access_log off;
           upstream app {{ server {}; }}
           server {{ listen 127.0.0.1:0; server_name vars.test;
             location / {{ proxy_pass http://$arg_up; }}
           }}
         }}",
        app.addr
    ))
    .await;
    error_log();
    let status = |path: &'static str| {
        let addr = lb.addr;
        async move { get(addr, path, &[]).await.0 }
    };
    assert_eq!(status("/?up=app").await, 200);
    assert_eq!(status("/?up=nowhere.example").await, 502);
    // An `upstream` block is found only by its bare name (nginx compares the port too).
    assert_eq!(status("/?up=app:80").await, 502);
    // No host at all: not a URL nginx can read, 500.
    assert_eq!(status("/?up=").await, 500);
    assert_eq!(status("/?up=app:0").await, 500);
    let log = error_log();
    for line in [
        "no resolver defined to resolve nowhere.example, client: 127.0.0.1, server: vars.test, request: \"GET /?up=nowhere.example HTTP/1.1\", host: \"localhost\"",
        "no resolver defined to resolve app, client: 127.0.0.1, server: vars.test, request: \"GET /?up=app:80 HTTP/1.1\"",
        "invalid URL prefix in \"http://\", client: 127.0.0.1",
        "invalid port in upstream \"app:0\", client: 127.0.0.1",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("[error]") && l.contains(line)),
            "no error-log line with {line:?}:\n{log}"
        );
    }
}

#[tokio::test]
async fn a_name_a_literal_proxy_pass_made_a_group_of_finds_that_group() {
    let app = backend("app").await;
    let port = app.addr.port();
    let lb = imbang(&format!(
        "{MAIN} http {{ access_log off;
           server {{ listen 127.0.0.1:0;
             location /literal/ {{ proxy_pass http://localhost:{port}; }}
             location / {{ proxy_pass http://$arg_up; }}
           }}
         }}"
    ))
    .await;
    let (status, _, body) = get(lb.addr, &format!("/v?up=LOCALHOST:{port}"), &[]).await;
    assert_eq!(
        (status, body),
        (200, format!("app GET /v?up=LOCALHOST:{port}"))
    );
    // The port is part of the name: `localhost` alone (port 80) made no group.
    let (status, _, _) = get(lb.addr, "/v?up=localhost", &[]).await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn proxy_redirect_default_leaves_locations_alone_with_variables() {
    let m = mirror().await;
    let lb = imbang(&format!(
        "{MAIN} http {{ access_log off;
           upstream m {{ server {m}; }}
           server {{ listen 127.0.0.1:0;
             location /literal/ {{ proxy_pass http://m/two/; }}
             location /vars/ {{ proxy_pass http://$arg_up/two/; }}
           }}
         }}"
    ))
    .await;
    let loc = [("x-loc", "http://m/two/y")];
    let (status, location, _) = get(lb.addr, "/literal/x", &loc).await;
    assert_eq!((status, location.as_str()), (302, "/literal/y"));
    let (status, location, _) = get(lb.addr, "/vars/x?up=m", &loc).await;
    assert_eq!((status, location.as_str()), (302, "http://m/two/y"));
}

#[test]
fn errors_in_the_url_are_nginx_s() {
    let compile = support::compile;
    assert_eq!(
        compile("http { server { location / { proxy_pass http://$nope/; } } }").unwrap_err(),
        "unknown \"nope\" variable in /t/imbang.conf:1:41"
    );
    assert_eq!(
        compile("http { server { location / { proxy_pass http://a/${1}; } } }").unwrap_err(),
        "unknown \"1\" variable in /t/imbang.conf:1:41"
    );
}

#[tokio::test]
async fn t_is_clean_for_proxy_pass_with_variables_and_t_dumps_the_file() {
    let dir = TempDir::new("ppvar-t");
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let text = "events {}
http {
    upstream app { server 127.0.0.1:1; }
    server {
        listen 127.0.0.1:0;
        location / { proxy_pass http://$arg_up; }
        location ~ ^/x/(.*)$ { proxy_pass http://app/$1$is_args$args; }
        location @named { proxy_pass http://127.0.0.1:1$request_uri; }
    }
}
";
    let conf = dir.write("imbang.conf", text);
    let (c, p) = (
        conf.to_str().unwrap(),
        format!("{}/", dir.path().to_str().unwrap()),
    );
    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c]).await;
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (
            Some(0),
            "",
            format!(
                "imbang: the configuration file {c} syntax is ok\n\
                 imbang: configuration file {c} test is successful\n"
            )
            .as_str()
        )
    );
    let out = run_imbang(dir.path(), &["-T", "-q", "-p", &p, "-c", c]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("# configuration file {c}:\n{text}\n"),
        "{out:?}"
    );
}

#[tokio::test]
async fn proxy_host_after_the_answer_is_the_rendered_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = backend("app").await;
    let lb = imbang(&format!(
        "{MAIN} http {{ access_log off;
           upstream pool {{ server {}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ set $up pool; proxy_pass http://$up;
               add_header X-Proxy-Host $proxy_host always; }} }} }}",
        app.addr
    ))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-proxy-host: pool\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("app GET /x"), "{answer}");
}
