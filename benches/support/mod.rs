//! What the header and variable benches share: a browser-like request, the client connection it
//! came on, the variables' view of both, and criterion's settings.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use criterion::Criterion;
use imbang::proxy::{Captures, ConnInfo, RequestCtx};

/// 1 s warm-up and 2 s of measurement per case, so `cargo bench` stays a few minutes in all.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// A page load from a browser behind one proxy: 9 headers, as the proxy receives them.
pub fn request() -> http::request::Parts {
    http::Request::builder()
        .uri("/products/42?ref=home&sort=price")
        .header("host", "shop.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("accept-language", "en-US,en;q=0.5")
        .header("connection", "keep-alive")
        .header("cookie", "session=3f9a1c0e7b2d4a68; theme=dark; cart=7")
        .header("x-forwarded-for", "203.0.113.7")
        .header("referer", "https://shop.example.com/products?page=2")
        .body(())
        .expect("a valid request")
        .into_parts()
        .0
}

/// The connection the request came on: a client on the internet, a listener on port 8080.
pub fn conn() -> ConnInfo {
    let local: SocketAddr = "127.0.0.1:8080".parse().expect("an address");
    ConnInfo {
        id: 7,
        requests: AtomicU64::new(1),
        remote: "198.51.100.23:54321".parse().expect("an address"),
        local,
        key: local,
        accepted: tokio::time::Instant::now(),
        tls: None,
        proxy_protocol: None,
    }
}

/// The request as variables see it once routed to `server_name shop.example.com`,
/// `location /`, proxied to `proxy_host`: before the response (`$status` and the like empty).
pub fn ctx<'a>(
    conn: &'a ConnInfo,
    parts: &'a http::request::Parts,
    proxy_host: &'a str,
) -> RequestCtx<'a> {
    RequestCtx {
        conn,
        parts,
        fields: None,
        host: "shop.example.com",
        server_name: "shop.example.com",
        proxy_host,
        path: "/products/42",
        done: None,
        sets: &[],
        captures: Captures::NONE,
        state: imbang::proxy::RequestState::none(),
        root: "/usr/share/nginx/html",
        rewritten: None,
    }
}
