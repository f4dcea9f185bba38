//! Variable evaluation on the request path, against a browser-like request of 9 headers: single
//! variables and a composite rendered by `Template::render` (as `proxy_set_header`,
//! `add_header`, `return` and `set` values are), a `hash` key by `Template::render_bytes`, and
//! one access-log line in nginx's `combined` format by `Template::render_escaped` (as
//! `access_log` writes it once the response is sent).
//!
//! `cargo bench --bench vars`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use imbang::access_log::Done;
use imbang::config::model::COMBINED;
use imbang::proxy::RequestCtx;
use imbang::vars::{Escape, Template};
use tokio::time::Instant;

mod support;

fn render(c: &mut Criterion) {
    let parts = support::request();
    let conn = support::conn();
    let ctx = support::ctx(&conn, &parts, "app");
    let mut g = c.benchmark_group("template_render");
    for (name, text) in [
        ("host", "$host"),
        ("remote_addr", "$remote_addr"),
        ("request_uri", "$request_uri"),
        ("proxy_add_x_forwarded_for", "$proxy_add_x_forwarded_for"),
        ("http_user_agent", "$http_user_agent"),
        ("scheme_host_request_uri", "$scheme://$host$request_uri"),
        // Formatted from the clock for each use (part of every `combined` line).
        ("time_local", "$time_local"),
    ] {
        let t = Template::compile(text).expect("known variables");
        g.bench_function(name, |b| b.iter(|| black_box(t.render(black_box(&ctx)))));
    }
    g.finish();

    // `hash $request_uri consistent;`: the key the balancer hashes, per request.
    let key = Template::compile("$request_uri").expect("known variables");
    c.bench_function("template_render_bytes/hash_key_request_uri", |b| {
        b.iter(|| black_box(key.render_bytes(black_box(&ctx))))
    });
}

fn access_log(c: &mut Criterion) {
    let parts = support::request();
    let conn = support::conn();
    let start = Instant::now();
    let done = Done {
        status: 200,
        body_bytes: 5120,
        header_bytes: 214,
        start,
        end: start + Duration::from_micros(1800),
        response_headers: None,
        upstream_headers: None,
        tries: Vec::new(),
        complete: true,
        trailers: None,
        gzip: None,
    };
    let ctx = RequestCtx {
        done: Some(&done),
        ..support::ctx(&conn, &parts, "app")
    };
    let combined = Template::compile(COMBINED).expect("known variables");
    // What `Pending::finish` does for each line, short of the write.
    let mut line = String::with_capacity(256);
    combined.render_escaped(&ctx, Escape::Default, &mut line);
    assert!(line.starts_with("198.51.100.23 - - ["), "{line}");
    let tail = concat!(
        "] \"GET /products/42?ref=home&sort=price HTTP/1.1\" 200 5120 ",
        "\"https://shop.example.com/products?page=2\" ",
        "\"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\"",
    );
    assert!(line.ends_with(tail), "{line}");
    c.bench_function("access_log_line/combined", |b| {
        b.iter(|| {
            line.clear();
            combined.render_escaped(black_box(&ctx), Escape::Default, &mut line);
            line.push('\n');
            black_box(line.len())
        })
    });
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = render, access_log
}
criterion_main!(benches);
