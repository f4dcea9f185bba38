//! The header work of one proxied request, on a browser-like request of 9 headers: the client's
//! headers made into the request head sent upstream (`forward()` encodes it once with
//! `for_upstream`, which renders the `proxy_set_header` values, leaves out hop-by-hop headers
//! and sets `Host`, and `request_head`), and the peer's response headers made into the client's
//! (`to_client`, then `add_header` and `Server`).
//! Locations come from the real config parser and snapshot compiler.
//!
//! `cargo bench --bench headers`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Response;
use imbang::config::{LoadOptions, parse_str};
use imbang::http1::RawFields;
use imbang::pool::h1::{RequestFraming, put_field, request_head};
use imbang::proxy::ResponseBody;
use imbang::proxy::headers::{Replaced, add_headers, for_upstream, set_server, to_client};
use imbang::snapshot::{Route, RouteAction, Snapshot};
use imbang::upstream::PeerRegistry;

mod support;

/// The `location /` of a one-server config whose body is `location`, compiled as a reload
/// would compile it.
fn route(location: &str) -> Arc<Route> {
    let text = format!(
        "events {{}}
         http {{
             access_log off;
             upstream app {{ server 127.0.0.1:3000; server 127.0.0.1:3001; }}
             server {{
                 listen 127.0.0.1:8080;
                 server_name shop.example.com;
                 location / {{ proxy_pass http://app; {location} }}
             }}
         }}"
    );
    let options = LoadOptions {
        prefix: "/tmp/".into(),
        default_listen_port: 8000,
    };
    let config = parse_str("/tmp/bench.conf", &text, &options).expect("a valid config");
    let snapshot = Snapshot::compile(config, &PeerRegistry::new()).expect("a valid config");
    let addr = "127.0.0.1:8080".parse().expect("an address");
    let server = snapshot
        .vhosts(addr, addr)
        .expect("the listener's servers")
        .find("shop.example.com");
    let route = server.locations.find("/products/42").expect("location /");
    route.clone()
}

fn proxy_host(route: &Route) -> &str {
    match &route.action {
        RouteAction::Proxy(proxy) => &proxy.proxy_host,
        _ => unreachable!("every bench location proxies"),
    }
}

/// Going upstream: what `forward()` does for each request sent.
fn upstream(c: &mut Criterion) {
    let parts = support::request();
    let conn = support::conn();
    // (name, location body, the `Host` sent upstream)
    let cases = [
        // No `proxy_set_header`: nginx's defaults (`Host: $proxy_host`, hop-by-hop removed).
        ("default", "", "app"),
        // What most reverse-proxy guides add.
        (
            "forwarded_real_ip_host",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
             proxy_set_header X-Real-IP $remote_addr;
             proxy_set_header Host $host;",
            "shop.example.com",
        ),
    ];
    let mut g = c.benchmark_group("upstream_head_9_headers");
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    for (name, location, host) in cases {
        let route = route(location);
        let ctx = support::ctx(&conn, &parts, proxy_host(&route));
        let encode = || {
            request_head(&parts.method, target, false, RequestFraming::None, |out| {
                for_upstream(
                    &parts.headers,
                    None,
                    &route,
                    ctx.proxy_host,
                    &ctx,
                    Replaced::default(),
                    |n, v| put_field(out, n, v),
                )
            })
        };
        let sent = String::from_utf8(encode().to_vec()).expect("a text head");
        assert!(
            sent.to_ascii_lowercase()
                .contains(&format!("\r\nhost: {host}\r\n")),
            "{name}: {sent}"
        );
        assert!(!sent.contains("\r\nconnection:"), "{name}: {sent}");
        g.bench_function(name, |b| b.iter(|| black_box(encode())));
    }
    g.finish();
}

/// A Node (Express) app's answer, as the peer sends it: 8 headers.
const PEER_RESPONSE: &[u8] = b"X-Powered-By: Express\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Length: 5120\r\n\
ETag: W/\"1400-Yx3kZ0m5sVJmE7yCq1nQ\"\r\n\
Cache-Control: private, max-age=0\r\n\
Date: Wed, 25 Nov 2026 10:00:00 GMT\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\r\n";

/// Coming back: `to_client` in `forward()`, then `add_header` and `Server` in `respond()`.
fn client(c: &mut Criterion) {
    let parts = support::request();
    let conn = support::conn();
    // (name, location body, how many headers the client gets: the peer's end-to-end ones
    // not hidden, the added ones, and `Server`)
    let cases = [
        ("default", "", 6),
        (
            "hide_1_add_3",
            "proxy_hide_header X-Powered-By;
             add_header X-Frame-Options SAMEORIGIN;
             add_header X-Content-Type-Options nosniff;
             add_header Strict-Transport-Security \"max-age=31536000\" always;",
            8,
        ),
    ];
    let mut g = c.benchmark_group("to_client_8_headers");
    for (name, location, count) in cases {
        let route = route(location);
        let ctx = support::ctx(&conn, &parts, proxy_host(&route));
        // The peer's headers are parsed, not cloned, on the real path: setup, not measured.
        let fresh = || {
            let mut response = Response::new(ResponseBody::empty());
            let fields = RawFields::parse(Bytes::from_static(PEER_RESPONSE)).expect("fields");
            response.body_mut().set_fields(fields);
            response
        };
        let mut sent = fresh();
        let mut fields = RawFields::parse(Bytes::from_static(PEER_RESPONSE)).expect("fields");
        to_client(&mut fields, &route);
        sent.body_mut().set_fields(fields);
        add_headers(&mut sent, &route, &ctx);
        set_server(&mut sent, &route);
        let names: Vec<String> = (sent.body().fields().into_iter())
            .flat_map(|f| f.iter())
            .map(|(n, _)| String::from_utf8_lossy(n).to_ascii_lowercase())
            .chain(sent.headers().keys().map(|n| n.as_str().to_owned()))
            .collect();
        assert!(
            !names.iter().any(|n| n == "keep-alive" || n == "date"),
            "{name}"
        );
        assert_eq!(names.len(), count, "{name}: {names:?}");
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                fresh,
                |response| {
                    to_client(response.body_mut().fields_mut(), &route);
                    add_headers(response, &route, &ctx);
                    set_server(response, &route);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = upstream, client
}
criterion_main!(benches);
