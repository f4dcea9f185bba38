//! `gzip` and its companions (nginx's gzip filter and the core module's `gzip_*`) with the real
//! binary and real origins: bodies decompressed by a real decompressor (flate2 here, `curl
//! --compressed` when installed) come back byte for byte; the fields a client sees (Vary, a weak
//! ETag, no Content-Length, chunked on HTTP/1.1, nothing on HTTP/2) and every case where nginx
//! leaves the body alone; a slow origin's first chunk reaches the client compressed before the
//! origin finishes; and the same requests to nginx 1.22 give the same fields, side by side.
mod support;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{ImbangGuard, TempDir, free_port};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// A JSON document of about 100 KiB, the same every time.
fn json() -> Vec<u8> {
    let mut out = b"[".to_vec();
    let mut i = 0u32;
    while out.len() < 100 * 1024 {
        if i > 0 {
            out.push(b',');
        }
        write!(
            out,
            "{{\"id\":{i},\"name\":\"user{}\",\"active\":{},\"score\":{}}}",
            i * 7919 % 1000,
            i.is_multiple_of(3),
            i * 31 % 977
        )
        .unwrap();
        i += 1;
    }
    out.push(b']');
    out
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut d = flate2::write::GzDecoder::new(Vec::new());
    d.write_all(data).expect("a gzip stream");
    d.finish().expect("a complete gzip stream")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The origin: the JSON with fields chosen by the path's last segment.
async fn origin() -> SocketAddr {
    support::serve_hyper(|req: Request<Incoming>| async move {
        let last = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
        let mut res = Response::new(Full::new(Bytes::from(json())));
        let h = res.headers_mut();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("etag", "\"v1\"".parse().unwrap());
        h.insert("accept-ranges", "bytes".parse().unwrap());
        match last.as_str() {
            "small" => *res.body_mut() = Full::new(Bytes::from_static(b"{\"ok\":1}")),
            "plain" => {
                res.headers_mut()
                    .insert("content-type", "text/plain".parse().unwrap());
            }
            "html" => {
                res.headers_mut()
                    .insert("content-type", "TEXT/HTML; charset=utf-8".parse().unwrap());
            }
            "encoded" => {
                *res.body_mut() = Full::new(Bytes::from(gzip(&json())));
                res.headers_mut()
                    .insert("content-encoding", "gzip".parse().unwrap());
            }
            "range" => {
                *res.status_mut() = hyper::StatusCode::PARTIAL_CONTENT;
                *res.body_mut() = Full::new(Bytes::from(json()[..1000].to_vec()));
                res.headers_mut()
                    .insert("content-range", "bytes 0-999/102400".parse().unwrap());
            }
            "private" => {
                res.headers_mut()
                    .insert("cache-control", "max-age=0, private".parse().unwrap());
            }
            "public" => {
                res.headers_mut()
                    .insert("cache-control", "public".parse().unwrap());
            }
            "expired" => {
                res.headers_mut()
                    .insert("expires", "Thu, 01 Jan 1970 00:00:01 GMT".parse().unwrap());
            }
            "future" => {
                res.headers_mut()
                    .insert("expires", "Fri, 01 Jan 2100 00:00:00 GMT".parse().unwrap());
            }
            "modified" => {
                res.headers_mut().remove("etag");
                res.headers_mut().insert(
                    "last-modified",
                    "Mon, 07 Dec 2026 10:00:00 GMT".parse().unwrap(),
                );
            }
            "weak" => {
                res.headers_mut()
                    .insert("etag", "W/\"v1\"".parse().unwrap());
            }
            "missing" => *res.status_mut() = hyper::StatusCode::NOT_FOUND,
            "created" => *res.status_mut() = hyper::StatusCode::CREATED,
            _ => {}
        }
        Ok::<_, Infallible>(res)
    })
    .await
}

/// The http block both servers run (`{listen}` is the port; `{origin}` the origin).
const HTTP: &str = "access_log off;
    gzip on; gzip_types application/json; gzip_vary on; gzip_min_length 1000;
    server { listen 127.0.0.1:{listen}{http2};
        location / { proxy_pass http://{origin}; }
        location /p/ { gzip_proxied private expired no_last_modified; proxy_pass http://{origin}; }
        location /e/ { gzip_proxied no_etag; proxy_pass http://{origin}; }
        location /auth/ { gzip_proxied auth; proxy_pass http://{origin}; }
        location /any/ { gzip_proxied any; proxy_pass http://{origin}; }
        location /off/ { gzip off; proxy_pass http://{origin}; }
        location /all/ { gzip_types *; proxy_pass http://{origin}; }
        location /level9/ { gzip_comp_level 9; proxy_pass http://{origin}; }
        location /ua/ { gzip_disable msie6 \"^curl/\"; proxy_pass http://{origin}; }
        location /h10/ { gzip_http_version 1.0; proxy_pass http://{origin}; }
        location /sub/ { sub_filter user USER; sub_filter_once off;
                         sub_filter_types application/json; proxy_pass http://{origin}; }
        location /if/ { gzip off; if ($arg_z) { gzip on; } proxy_pass http://{origin}; }
        location = /text { default_type text/html; return 200 \"{text}\"; }
        location = /short { default_type text/html; return 200 \"short\"; }
    }";

fn http_block(listen: &str, origin: SocketAddr, http2: bool) -> String {
    HTTP.replace("{listen}", listen)
        .replace("{origin}", &origin.to_string())
        .replace("{http2}", if http2 { " http2" } else { "" })
        .replace("{text}", &"returned text ".repeat(200))
}

struct Running {
    _dir: TempDir,
    _guard: ImbangGuard,
    addr: SocketAddr,
}

/// The real binary with [`HTTP`] (`http2`: the listener speaks h2c too).
async fn start(origin: SocketAddr, http2: bool) -> Running {
    let dir = TempDir::new("gzip");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let port = free_port();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; error_log logs/error.log; events {{}} http {{ {} }}",
            http_block(&port.to_string(), origin, http2)
        ),
    );
    let guard = ImbangGuard::start(&format!("{}/", dir.path().display()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    support::wait_accepting(addr, WAIT).await;
    Running {
        _dir: dir,
        _guard: guard,
        addr,
    }
}

/// A response as the client saw it: status, fields, body bytes (unchunked, not decompressed).
struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn field(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn gzipped(&self) -> bool {
        self.field("content-encoding") == Some("gzip")
    }
}

/// One HTTP/1.1 request with `fields` on a new connection.
async fn get(addr: SocketAddr, method: &str, path: &str, fields: &[(&str, &str)]) -> Got {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "t");
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    let res = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Got {
        status,
        headers,
        body,
    }
}

/// Request fields of a case.
type Fields = &'static [(&'static str, &'static str)];

const GZ: (&str, &str) = ("accept-encoding", "gzip, deflate, br");
const VIA: (&str, &str) = ("via", "1.1 proxy.example");

#[tokio::test]
async fn a_proxied_json_is_compressed_and_decompresses_to_the_origins_bytes() {
    let lb = start(origin().await, false).await;
    let got = get(lb.addr, "GET", "/doc", &[GZ]).await;
    assert_eq!(got.status, 200);
    assert!(got.gzipped(), "{:?}", got.headers);
    assert_eq!(gunzip(&got.body), json());
    assert!(
        got.body.len() < json().len() / 3,
        "{} bytes",
        got.body.len()
    );
    assert_eq!(got.field("content-length"), None);
    assert_eq!(got.field("transfer-encoding"), Some("chunked"));
    assert_eq!(got.field("vary"), Some("Accept-Encoding"));
    assert_eq!(
        got.field("etag"),
        Some("W/\"v1\""),
        "weakened as nginx 1.22"
    );
    assert_eq!(got.field("accept-ranges"), None);
    // Level 9 is smaller still, and as exact.
    let nine = get(lb.addr, "GET", "/level9/doc", &[GZ]).await;
    assert_eq!(gunzip(&nine.body), json());
    assert!(nine.body.len() < got.body.len());
    // An ETag already weak stays as it is; a 404 is compressed as nginx does.
    let weak = get(lb.addr, "GET", "/weak", &[GZ]).await;
    assert_eq!(weak.field("etag"), Some("W/\"v1\""));
    let missing = get(lb.addr, "GET", "/missing", &[GZ]).await;
    assert_eq!((missing.status, missing.gzipped()), (404, true));
    assert_eq!(gunzip(&missing.body), json());
    // text/html is always among the types, whatever its case and parameters.
    let html = get(lb.addr, "GET", "/html", &[GZ]).await;
    assert!(html.gzipped());
    // sub_filter first, then gzip (nginx's order): the rewritten body is what is compressed.
    let sub = get(lb.addr, "GET", "/sub/doc", &[GZ]).await;
    assert!(sub.gzipped());
    let want = String::from_utf8(json()).unwrap().replace("user", "USER");
    assert_eq!(gunzip(&sub.body), want.as_bytes());
    // `gzip` inside a location's `if`.
    assert!(get(lb.addr, "GET", "/if/doc?z=1", &[GZ]).await.gzipped());
    assert!(!get(lb.addr, "GET", "/if/doc", &[GZ]).await.gzipped());
    // A `return` with text is compressed too (it is a response like any other).
    let text = get(lb.addr, "GET", "/text", &[GZ]).await;
    assert!(text.gzipped());
    assert_eq!(gunzip(&text.body), "returned text ".repeat(200).as_bytes());
}

#[tokio::test]
async fn what_nginx_leaves_alone_stays_as_the_origin_sent_it() {
    let lb = start(origin().await, false).await;
    let plain = |g: &Got| !g.gzipped() && g.body == json();
    // No Accept-Encoding, or gzip refused with q=0: Vary still says it could differ.
    let none = get(lb.addr, "GET", "/doc", &[]).await;
    assert!(plain(&none));
    assert_eq!(none.field("vary"), Some("Accept-Encoding"));
    assert_eq!(none.field("etag"), Some("\"v1\""));
    assert!(none.field("content-length").is_some());
    for ae in ["gzip;q=0", "deflate, br", "identity", "x-gzip"] {
        let got = get(lb.addr, "GET", "/doc", &[("accept-encoding", ae)]).await;
        assert!(plain(&got), "{ae}");
    }
    // A type not in gzip_types, no Vary either; `*` takes any.
    let text = get(lb.addr, "GET", "/plain", &[GZ]).await;
    assert!(!text.gzipped() && text.field("vary").is_none());
    assert!(get(lb.addr, "GET", "/all/plain", &[GZ]).await.gzipped());
    // Shorter than gzip_min_length by its Content-Length (the origin's, or a `return`'s).
    let small = get(lb.addr, "GET", "/small", &[GZ]).await;
    assert!(!small.gzipped() && small.body == b"{\"ok\":1}");
    assert!(!get(lb.addr, "GET", "/short", &[GZ]).await.gzipped());
    // Already encoded: passed on once, never compressed again.
    let encoded = get(lb.addr, "GET", "/encoded", &[GZ]).await;
    assert_eq!(encoded.field("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&encoded.body), json());
    // A range answer (206), a status other than 200/403/404, HEAD, `gzip off`.
    let range = get(lb.addr, "GET", "/range", &[GZ, ("range", "bytes=0-999")]).await;
    assert_eq!((range.status, range.gzipped()), (206, false));
    assert_eq!(range.body, &json()[..1000]);
    let created = get(lb.addr, "GET", "/created", &[GZ]).await;
    assert_eq!((created.status, created.gzipped()), (201, false));
    // HEAD: nginx's fields say what the GET would get; there is no body.
    let head = get(lb.addr, "HEAD", "/doc", &[GZ]).await;
    assert!(head.gzipped() && head.body.is_empty() && head.field("content-length").is_none());
    assert!(plain(&get(lb.addr, "GET", "/off/doc", &[GZ]).await));
    // gzip_disable: the User-Agent regex (any case) and msie6.
    let curl = get(lb.addr, "GET", "/ua/doc", &[GZ, ("user-agent", "CURL/8.0")]).await;
    assert!(!curl.gzipped());
    let ie6 = (
        "user-agent",
        "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)",
    );
    assert!(!get(lb.addr, "GET", "/ua/doc", &[GZ, ie6]).await.gzipped());
    let firefox = ("user-agent", "Mozilla/5.0 Firefox/120.0");
    assert!(
        get(lb.addr, "GET", "/ua/doc", &[GZ, firefox])
            .await
            .gzipped()
    );
}

#[tokio::test]
async fn gzip_http_version_keeps_http_1_0_clients_out_unless_it_says_1_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lb = start(origin().await, false).await;
    let answer = |path: &'static str| async move {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.0\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    };
    let old = answer("/doc").await;
    let (head, body) = split_head(&old);
    assert!(
        !head.to_ascii_lowercase().contains("content-encoding"),
        "{head}"
    );
    assert_eq!(body, json());
    let allowed = answer("/h10/doc").await;
    let (head, body) = split_head(&allowed);
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-encoding: gzip"), "{head}");
    // HTTP/1.0 has no chunks: the body ends with the connection.
    assert!(!lower.contains("transfer-encoding") && !lower.contains("content-length"));
    assert_eq!(gunzip(body), json());
}

fn split_head(raw: &[u8]) -> (String, &[u8]) {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&raw[..at]).into_owned(),
        &raw[at + 4..],
    )
}

#[tokio::test]
async fn gzip_proxied_decides_for_requests_through_a_proxy_as_nginx() {
    let lb = start(origin().await, false).await;
    let z = |path: &'static str, extra: &'static [(&'static str, &'static str)]| async move {
        let mut fields = vec![GZ, VIA];
        fields.extend_from_slice(extra);
        let got = get(lb.addr, "GET", path, &fields).await;
        if got.gzipped() {
            assert_eq!(gunzip(&got.body), json(), "{path}");
        }
        got.gzipped()
    };
    // off (the default): never with Via; any: always.
    assert!(!z("/doc", &[]).await);
    assert!(z("/any/doc", &[]).await);
    // private, expired, no_last_modified.
    assert!(z("/p/private", &[]).await);
    assert!(!z("/p/public", &[]).await, "a Cache-Control decides alone");
    assert!(z("/p/expired", &[]).await);
    assert!(!z("/p/future", &[]).await);
    assert!(!z("/p/modified", &[]).await, "no_last_modified");
    assert!(z("/p/doc", &[]).await, "no Last-Modified");
    // no_etag: the origin's ETag keeps it out; auth: Authorization lets it in.
    assert!(!z("/e/doc", &[]).await);
    assert!(z("/e/modified", &[]).await);
    // auth alone: the rest of the tests still run (no Expires, Cache-Control: compressed).
    assert!(z("/auth/doc", &[]).await);
    assert!(!z("/auth/private", &[]).await);
    assert!(z("/auth/private", &[("authorization", "Basic dTpw")]).await);
}

#[tokio::test]
async fn http2_clients_get_it_compressed_with_no_length() {
    let lb = start(origin().await, true).await;
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    for (path, want) in [("/doc", true), ("/plain", false)] {
        let req = Request::builder()
            .uri(format!("http://t{path}"))
            .header("accept-encoding", "gzip")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let gzipped = headers.get("content-encoding").is_some_and(|v| v == "gzip");
        assert_eq!(gzipped, want, "{path}: {headers:?}");
        if want {
            assert!(headers.get("content-length").is_none(), "{headers:?}");
            assert_eq!(headers.get("vary").unwrap(), "Accept-Encoding");
            assert_eq!(headers.get("etag").unwrap(), "W/\"v1\"");
            assert_eq!(gunzip(&body), json());
        }
    }
}

#[tokio::test]
async fn a_slow_origins_first_chunk_reaches_the_client_compressed_before_it_finishes() {
    let (origin, tx) = support::piecewise_origin("application/json", 4).await;
    let lb = start(origin, false).await;
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/stream")
        .header("host", "t")
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let first =
        Bytes::from_static(b"{\"event\":\"first\",\"data\":\"the first piece of a stream\"}\n");
    tx.send(first.clone()).await.unwrap();
    let res = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("the head before the origin finishes")
        .unwrap();
    assert_eq!(res.headers().get("content-encoding").unwrap(), "gzip");
    let mut body = res.into_body();
    // What arrives while the origin still holds the rest decompresses to the first piece.
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    while decoder.get_ref().len() < first.len() {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("the first piece before the origin finishes")
            .expect("a frame")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            decoder.write_all(data).unwrap();
            decoder.flush().unwrap();
        }
    }
    assert_eq!(decoder.get_ref().as_slice(), &first[..]);
    let second = Bytes::from_static(b"{\"event\":\"second\"}\n");
    tx.send(second.clone()).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    decoder.write_all(&rest).unwrap();
    let all = decoder.finish().unwrap();
    assert_eq!(all, [&first[..], &second[..]].concat());
}

#[tokio::test]
async fn gzip_ratio_is_logged_as_nginx_writes_it() {
    let origin = origin().await;
    let dir = TempDir::new("gzip-ratio");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let port = free_port();
    let log = dir.path().join("logs/ratio.log");
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; error_log logs/error.log; events {{}} http {{
               log_format r '$request_uri [$gzip_ratio]';
               gzip on; gzip_types application/json;
               server {{ listen 127.0.0.1:{port}; access_log {} r;
                 location / {{ proxy_pass http://{origin}; }} }} }}",
            log.display()
        ),
    );
    let _guard = ImbangGuard::start(&format!("{}/", dir.path().display()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    support::wait_accepting(addr, WAIT).await;
    let got = get(addr, "GET", "/doc", &[GZ]).await;
    assert!(got.gzipped());
    get(addr, "GET", "/plain", &[GZ]).await;
    let want = json().len() as f64 / got.body.len() as f64;
    support::eventually("two log lines", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("/doc [{want:.2}]"), "{text}");
    assert_eq!(
        lines[1], "/plain [-]",
        "not compressed: not found, as nginx"
    );
}

#[tokio::test]
async fn curl_compressed_gets_the_origins_bytes() {
    if !std::path::Path::new("/usr/bin/curl").exists() {
        eprintln!("skipped: /usr/bin/curl is not installed");
        return;
    }
    let lb = start(origin().await, false).await;
    let url = format!("http://{}/doc", lb.addr);
    let out = tokio::process::Command::new("/usr/bin/curl")
        .args(["-s", "--compressed", "-D", "-", &url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let (head, body) = split_head(&out.stdout);
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    assert_eq!(body, json());
}

/// The fields that tell what the filter did, as a comparable line.
fn summary(got: &Got) -> String {
    let f = |n: &str| got.field(n).unwrap_or("-").to_owned();
    format!(
        "{} ce={} vary={} etag={} cl={} ar={} te={}",
        got.status,
        f("content-encoding"),
        f("vary"),
        f("etag"),
        if got.headers.contains_key("content-length") {
            "yes"
        } else {
            "no"
        },
        f("accept-ranges"),
        f("transfer-encoding"),
    )
}

#[tokio::test]
async fn the_same_requests_to_nginx_give_the_same_fields() {
    let origin = origin().await;
    let dir = TempDir::new("gzip-nginx");
    let Some((_nginx, nginx)) =
        support::start_nginx(&dir, &http_block("{listen}", origin, false)).await
    else {
        return;
    };
    let lb = start(origin, false).await;
    let cases: &[(&str, &str, Fields)] = &[
        ("GET", "/doc", &[GZ]),
        ("GET", "/doc", &[]),
        ("GET", "/doc", &[("accept-encoding", "gzip;q=0")]),
        ("GET", "/doc", &[("accept-encoding", "deflate, gzip;q=0.5")]),
        ("GET", "/doc", &[("accept-encoding", "GZIP")]),
        ("GET", "/doc", &[GZ, VIA]),
        ("GET", "/weak", &[GZ]),
        ("GET", "/html", &[GZ]),
        ("GET", "/plain", &[GZ]),
        ("GET", "/all/plain", &[GZ]),
        ("GET", "/small", &[GZ]),
        ("GET", "/encoded", &[GZ]),
        ("GET", "/range", &[GZ, ("range", "bytes=0-999")]),
        ("GET", "/missing", &[GZ]),
        ("GET", "/created", &[GZ]),
        ("HEAD", "/doc", &[GZ]),
        ("GET", "/off/doc", &[GZ]),
        ("GET", "/p/private", &[GZ, VIA]),
        ("GET", "/p/public", &[GZ, VIA]),
        ("GET", "/p/expired", &[GZ, VIA]),
        ("GET", "/p/future", &[GZ, VIA]),
        ("GET", "/p/modified", &[GZ, VIA]),
        ("GET", "/p/doc", &[GZ, VIA]),
        ("GET", "/e/doc", &[GZ, VIA]),
        ("GET", "/e/modified", &[GZ, VIA]),
        (
            "GET",
            "/auth/private",
            &[GZ, VIA, ("authorization", "Basic dTpw")],
        ),
        ("GET", "/auth/doc", &[GZ, VIA]),
        ("GET", "/auth/private", &[GZ, VIA]),
        ("HEAD", "/text", &[GZ]),
        ("GET", "/any/doc", &[GZ, VIA]),
        ("GET", "/ua/doc", &[GZ, ("user-agent", "curl/8.0")]),
        ("GET", "/text", &[GZ]),
        ("GET", "/sub/doc", &[GZ]),
        ("GET", "/if/doc?z=1", &[GZ]),
        ("GET", "/if/doc", &[GZ]),
        ("GET", "/short", &[GZ]),
    ];
    let mut differ = Vec::new();
    for (method, path, fields) in cases {
        let ours = get(lb.addr, method, path, fields).await;
        let theirs = get(nginx, method, path, fields).await;
        if ours.gzipped() && *method == "GET" {
            assert_eq!(gunzip(&ours.body), gunzip(&theirs.body), "{path}");
        }
        let (a, b) = (summary(&ours), summary(&theirs));
        if a != b {
            differ.push(format!(
                "{method} {path} {fields:?}:\n  imbang {a}\n  nginx  {b}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
