//! `sub_filter`, `sub_filter_once`, `sub_filter_types`, `sub_filter_last_modified` (nginx's sub
//! filter): what a client receives from proxied and returned responses, on the wire. The
//! expectations were checked against nginx 1.22 with the same configuration and upstream, and
//! the last test compares the two side by side when the machine has nginx.
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PAGE: &str = "<a href=\"/x\">Hello WORLD</a> <img src=\"/i.png\"> hello world";

/// Answers `PAGE` with fields chosen by the path's last segment (hyper adds `Content-Length`).
async fn app() -> SocketAddr {
    support::serve_hyper(|req: Request<Incoming>| async move {
        let last = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
        let body = if last == "empty" { "" } else { PAGE };
        let mut res = Response::new(Full::new(Bytes::from(body)));
        let h = res.headers_mut();
        let ct = match last.as_str() {
            "plain" => "text/plain",
            "css" => "text/css; charset=utf-8",
            "upper" => "TEXT/HTML",
            _ => "text/html",
        };
        h.insert("content-type", ct.parse().unwrap());
        match last.as_str() {
            "etag" | "empty" => {
                h.insert("etag", "\"v1\"".parse().unwrap());
                h.insert(
                    "last-modified",
                    "Mon, 07 Dec 2026 10:00:00 GMT".parse().unwrap(),
                );
            }
            "weak" => {
                h.insert("etag", "W/\"v1\"".parse().unwrap());
            }
            "bare" => {
                h.insert("etag", "v1".parse().unwrap());
            }
            "gzip" => {
                h.insert("content-encoding", "gzip".parse().unwrap());
            }
            _ => {}
        }
        Ok::<_, Infallible>(res)
    })
    .await
}

/// The whole answer to `request` (sent as is) on a new connection, up to the close.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to `GET path` over HTTP/1.1 with `Connection: close`: the head's field lines
/// (lower-case names, `Date`, `Server` and `Connection` left out) and the body, unchunked.
async fn get(addr: SocketAddr, path: &str) -> (Vec<String>, String) {
    let answer = raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let fields: Vec<String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| format!("{}: {v}", n.to_ascii_lowercase()))
        .filter(|l| !l.starts_with("date:") && !l.starts_with("server:"))
        .filter(|l| !l.starts_with("connection:"))
        .collect();
    let chunked = fields.iter().any(|f| f == "transfer-encoding: chunked");
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_owned()
    };
    (fields, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size, 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

const LOCATIONS: &str = "
    location /all/ { proxy_pass http://{app}/; sub_filter 'hello' 'bye'; sub_filter 'href=\"/' 'href=\"/app/'; sub_filter_once off; }
    location /once/ { proxy_pass http://{app}/; sub_filter 'hello' 'bye[$uri]'; sub_filter 'WORLD' 'earth'; }
    location /lm/ { proxy_pass http://{app}/; sub_filter 'hello' 'bye'; sub_filter_last_modified on; }
    location /types/ { proxy_pass http://{app}/; sub_filter 'hello' 'bye'; sub_filter_types text/css; }
    location /any/ { proxy_pass http://{app}/; sub_filter 'hello' 'bye'; sub_filter_types *; }
    location /var/ { proxy_pass http://{app}/; set $find 'world'; sub_filter $find '[$find]'; sub_filter_once off; }
    location = /ret { default_type text/html; sub_filter 'hello' 'bye'; return 200 'hello there'; }
    location = /ret-plain { sub_filter 'hello' 'bye'; return 200 'hello there'; }
";

/// Paths, and what nginx 1.22 answers to them through `LOCATIONS` (fields other than `Date`,
/// `Server` and `Connection`, in order, then the body).
fn expected() -> Vec<(&'static str, Vec<&'static str>, String)> {
    let bye_all = "<a href=\"/app/x\">bye WORLD</a> <img src=\"/i.png\"> bye world";
    let bye_once = "<a href=\"/x\">bye WORLD</a> <img src=\"/i.png\"> hello world";
    let chunked_html = vec!["content-type: text/html", "transfer-encoding: chunked"];
    vec![
        ("/all/page", chunked_html.clone(), bye_all.to_owned()),
        (
            "/all/upper",
            vec!["content-type: TEXT/HTML", "transfer-encoding: chunked"],
            bye_all.to_owned(),
        ),
        // nginx does not look at Content-Encoding: the bytes are searched all the same.
        (
            "/all/gzip",
            vec![
                "content-type: text/html",
                "transfer-encoding: chunked",
                "content-encoding: gzip",
            ],
            bye_all.to_owned(),
        ),
        // Without sub_filter_last_modified the validators go.
        ("/all/etag", chunked_html.clone(), bye_all.to_owned()),
        // An empty body is left alone.
        (
            "/all/empty",
            vec![
                "content-type: text/html",
                "content-length: 0",
                "etag: \"v1\"",
                "last-modified: Mon, 07 Dec 2026 10:00:00 GMT",
            ],
            String::new(),
        ),
        (
            "/once/page",
            chunked_html.clone(),
            "<a href=\"/x\">bye[/once/page] earth</a> <img src=\"/i.png\"> hello world".to_owned(),
        ),
        (
            "/lm/etag",
            vec![
                "content-type: text/html",
                "transfer-encoding: chunked",
                "etag: W/\"v1\"",
                "last-modified: Mon, 07 Dec 2026 10:00:00 GMT",
            ],
            bye_once.to_owned(),
        ),
        (
            "/lm/weak",
            vec![
                "content-type: text/html",
                "transfer-encoding: chunked",
                "etag: W/\"v1\"",
            ],
            bye_once.to_owned(),
        ),
        ("/lm/bare", chunked_html.clone(), bye_once.to_owned()),
        // Not a type it applies to: untouched, length and all.
        (
            "/all/plain",
            vec!["content-type: text/plain", "content-length: 59"],
            PAGE.to_owned(),
        ),
        (
            "/types/css",
            vec![
                "content-type: text/css; charset=utf-8",
                "transfer-encoding: chunked",
            ],
            bye_once.to_owned(),
        ),
        // text/html stays among the types listed.
        ("/types/page", chunked_html.clone(), bye_once.to_owned()),
        (
            "/any/plain",
            vec!["content-type: text/plain", "transfer-encoding: chunked"],
            bye_once.to_owned(),
        ),
        (
            "/var/page",
            chunked_html.clone(),
            "<a href=\"/x\">Hello [world]</a> <img src=\"/i.png\"> hello [world]".to_owned(),
        ),
        ("/ret", chunked_html, "bye there".to_owned()),
        (
            "/ret-plain",
            vec!["content-type: text/plain", "content-length: 11"],
            "hello there".to_owned(),
        ),
    ]
}

fn config(app: SocketAddr, listen: &str) -> String {
    format!(
        "server {{ listen {listen}; {} }}",
        LOCATIONS.replace("{app}", &app.to_string())
    )
}

#[tokio::test]
async fn responses_are_rewritten_as_nginx_rewrites_them() {
    let app = app().await;
    let lb = support::imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; {} }}",
        config(app, "127.0.0.1:0")
    ))
    .await;
    for (path, mut fields, body) in expected() {
        let (mut got_fields, got_body) = get(lb.addr, path).await;
        // nginx puts its framing field before the peer's fields, imbang after them.
        got_fields.sort();
        fields.sort();
        assert_eq!(got_fields, fields, "fields of {path}");
        assert_eq!(got_body, body, "body of {path}");
    }
}

#[tokio::test]
async fn an_http10_client_gets_the_body_until_the_close() {
    let app = app().await;
    let lb = support::imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; {} }}",
        config(app, "127.0.0.1:0")
    ))
    .await;
    let answer = raw(lb.addr, "GET /all/page HTTP/1.0\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert_eq!(
        body,
        "<a href=\"/app/x\">bye WORLD</a> <img src=\"/i.png\"> bye world"
    );
    // HEAD: no length (nginx drops it too), no body.
    let answer = raw(
        lb.addr,
        "HEAD /all/page HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("\r\n\r\n"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("content-length"),
        "{answer}"
    );
}

/// The upstream sends the page in pieces that split the strings searched for, each only after
/// the client received what could be decided before it: what is sure to match no string goes
/// out at once, the bytes that may begin a match wait for the next piece.
#[tokio::test]
async fn matches_split_between_pieces_of_the_body_are_replaced() {
    let (o, tx) = support::piecewise_origin("text/html", 1).await;
    let lb = support::imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://{o};
             sub_filter 'href=\"/' 'href=\"/app/'; sub_filter Hello Bye; sub_filter_once off; }} }} }}"
    ))
    .await;
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "t")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut res = sender.send_request(req).await.unwrap();
    assert!(res.headers().get("content-length").is_none());
    assert_eq!(res.headers()["transfer-encoding"], "chunked");
    let body = res.body_mut();
    for (piece, seen) in [
        ("<p>hel", "<p>"),
        ("lo, <a hr", "Bye, <a "),
        ("ef=\"", ""),
        ("/x\">HELLO</a> h", "href=\"/app/x\">Bye</a> "),
        ("ref=\"/y\" hre", "href=\"/app/y\" "),
    ] {
        tx.send(Bytes::from(piece)).await.unwrap();
        if seen.is_empty() {
            continue; // all of it may begin a match: nothing goes out yet
        }
        let frame = body.frame().await.expect("a frame").unwrap();
        let data = frame.into_data().unwrap();
        assert_eq!(std::str::from_utf8(&data).unwrap(), seen, "after {piece:?}");
    }
    // At the end, what began a match and did not complete goes out as it was.
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"hre");
}

/// The same configuration and upstream through nginx and imbang: the same fields and bodies.
#[tokio::test]
async fn nginx_answers_the_same() {
    let app = app().await;
    let dir = support::TempDir::new("sub-filter-nginx");
    let Some((_nginx, nginx)) = support::start_nginx(
        &dir,
        &format!("access_log off; {}", config(app, "127.0.0.1:{listen}")),
    )
    .await
    else {
        return;
    };
    for (path, fields, body) in expected() {
        let (got_fields, got_body) = get(nginx, path).await;
        // nginx puts its framing field before the peer's, imbang after them: order aside.
        let (mut got_sorted, mut want_sorted) = (got_fields.clone(), fields.clone());
        got_sorted.sort();
        want_sorted.sort();
        assert_eq!(got_sorted, want_sorted, "nginx's fields of {path}");
        assert_eq!(got_body, body, "nginx's body of {path}");
    }
}
