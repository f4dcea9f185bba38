//! Header directives: add_header, proxy_hide_header / proxy_pass_header, server_tokens,
//! proxy_pass_request_headers / _body, proxy_redirect, client_max_body_size.
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use support::imbang;
use tokio::net::TcpStream;

/// Answers with the request's headers and body size as text, and sets `X-Secret`, `Server`,
/// and `Location` (from `?loc=`).
async fn mirror() -> SocketAddr {
    support::serve_hyper(|req: Request<Incoming>| async move {
        let mut lines: Vec<String> = req
            .headers()
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
            .collect();
        lines.sort();
        let loc = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("loc="))
            .map(str::to_owned);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        lines.push(format!("body={body}"));
        let mut res = Response::new(Full::new(Bytes::from(lines.join("\n"))));
        res.headers_mut()
            .insert("x-secret", "s3cret".parse().unwrap());
        res.headers_mut()
            .insert("server", "backend/1".parse().unwrap());
        if let Some(loc) = loc {
            res.headers_mut().insert("location", loc.parse().unwrap());
            *res.status_mut() = hyper::StatusCode::FOUND;
        }
        Ok::<_, Infallible>(res)
    })
    .await
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: String,
}

async fn send(
    addr: SocketAddr,
    req: Request<http_body_util::combinators::BoxBody<Bytes, Infallible>>,
) -> Got {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(path: &str) -> Request<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    Request::get(path)
        .header("host", "site")
        .header("x-client", "c1")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

fn post(
    path: &str,
    body: &str,
) -> Request<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    Request::post(path)
        .header("host", "site")
        .body(Full::new(Bytes::from(body.to_owned())).boxed())
        .unwrap()
}

/// A body of unknown length (sent chunked) in 100-byte frames.
struct Chunks(Vec<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop().map(|b| Ok(Frame::data(b))))
    }
}

/// A POST whose body is sent chunked (no Content-Length).
fn post_chunked(
    path: &str,
    size: usize,
) -> Request<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    let frames = (0..size.div_ceil(100))
        .map(|i| Bytes::from(vec![b'x'; 100.min(size - i * 100)]))
        .collect();
    Request::post(path)
        .header("host", "site")
        .body(Chunks(frames).boxed())
        .unwrap()
}

#[tokio::test]
async fn add_header_hide_pass_and_server_tokens() {
    let m = mirror().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           upstream m {{ server {m}; }}
           add_header X-Http http;
           server {{ listen 127.0.0.1:0;
             location /inherit {{ proxy_pass http://m; }}
             location /own {{ proxy_pass http://m; add_header X-Own $uri; add_header X-Always yes always; }}
             location /missing {{ return 404; add_header X-Own no; add_header X-Always yes always; }}
             location /hide {{ proxy_pass http://m; proxy_hide_header X-Secret; proxy_pass_header Server; server_tokens off; }}
           }}
         }}"
    ))
    .await;
    let r = send(lb.addr, get("/inherit")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-http"], "http");
    assert_eq!(r.headers["x-secret"], "s3cret");
    assert_eq!(
        r.headers["server"],
        concat!("imbang/", env!("CARGO_PKG_VERSION"))
    );
    assert!(!r.headers.contains_key("x-own"));

    let r = send(lb.addr, get("/own")).await;
    assert_eq!(r.headers["x-own"], "/own");
    assert_eq!(r.headers["x-always"], "yes");
    assert!(
        !r.headers.contains_key("x-http"),
        "a level with add_header inherits none"
    );

    let r = send(lb.addr, get("/missing")).await;
    assert_eq!(r.status, 404);
    assert!(
        !r.headers.contains_key("x-own"),
        "not on a 404 without always"
    );
    assert_eq!(r.headers["x-always"], "yes");

    let r = send(lb.addr, get("/hide")).await;
    assert!(!r.headers.contains_key("x-secret"));
    assert_eq!(
        r.headers["server"], "backend/1",
        "proxy_pass_header lets the peer's Server through"
    );
}

#[tokio::test]
async fn request_headers_and_body_can_be_held_back() {
    let m = mirror().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           upstream m {{ server {m}; }}
           server {{ listen 127.0.0.1:0;
             location /all {{ proxy_pass http://m; }}
             location /bare {{ proxy_pass http://m; proxy_pass_request_headers off; proxy_pass_request_body off;
                              proxy_set_header X-Set yes; }}
           }}
         }}"
    ))
    .await;
    let r = send(lb.addr, post("/all", "12345")).await;
    assert!(r.body.contains("content-length: 5"), "{}", r.body);
    assert!(r.body.ends_with("body=5"), "{}", r.body);
    let mut req = post("/bare", "12345");
    req.headers_mut().insert("x-client", "c1".parse().unwrap());
    let r = send(lb.addr, req).await;
    assert_eq!(
        r.body, "host: m\nx-set: yes\nbody=0",
        "only Host ($proxy_host) and proxy_set_header"
    );
}

#[tokio::test]
async fn client_max_body_size_gives_413_as_nginx() {
    let m = mirror().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           upstream m {{ server {m}; }}
           server {{ listen 127.0.0.1:0;
             location /default {{ proxy_pass http://m; }}
             location /small {{ proxy_pass http://m; client_max_body_size 1k; }}
             location /unlimited {{ proxy_pass http://m; client_max_body_size 0; }}
           }}
         }}"
    ))
    .await;
    let big = "y".repeat(1024 * 1024 + 1);
    let r = send(lb.addr, post("/default", &big)).await;
    assert_eq!(r.status, 413, "nginx's default limit is 1m");
    assert!(
        r.body.contains("413 Request Entity Too Large"),
        "{}",
        r.body
    );
    assert!(
        send(lb.addr, post("/unlimited", &big))
            .await
            .body
            .ends_with("body=1048577")
    );
    assert_eq!(
        send(lb.addr, post("/small", &"z".repeat(1024)))
            .await
            .status,
        200
    );
    assert_eq!(
        send(lb.addr, post("/small", &"z".repeat(1025)))
            .await
            .status,
        413
    );
    assert_eq!(
        send(lb.addr, post_chunked("/small", 1000)).await.status,
        200
    );
    assert_eq!(
        send(lb.addr, post_chunked("/small", 5000)).await.status,
        413
    );
}

#[tokio::test]
async fn proxy_redirect_rewrites_location_as_nginx() {
    let m = mirror().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           upstream app {{ server {m}; }}
           server {{ listen 127.0.0.1:0;
             location /one/ {{ proxy_pass http://app/two/; }}
             location /off/ {{ proxy_pass http://app/two/; proxy_redirect off; }}
             location /rule/ {{ proxy_pass http://app; proxy_redirect http://elsewhere/ /there/; }}
           }}
         }}"
    ))
    .await;
    let r = send(lb.addr, get("/one/x?loc=http://app/two/next")).await;
    assert_eq!(r.headers["location"], "/one/next");
    let r = send(lb.addr, get("/off/x?loc=http://app/two/next")).await;
    assert_eq!(r.headers["location"], "http://app/two/next");
    let r = send(lb.addr, get("/rule/x?loc=http://elsewhere/page")).await;
    assert_eq!(r.headers["location"], "/there/page");
}
