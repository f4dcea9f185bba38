//! Per-request lookups on the hot path: `server_name` (virtual hosts) and `location` matching
//! with many servers and locations, the URI/Host normalisation before them, a typical
//! `proxy_set_header` value rendered against a real request, and hop-by-hop header stripping.
//!
//! `cargo bench --bench route`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use imbang::config::model::{LocationMatch, ServerName};
use imbang::proxy::headers::strip_hop_by_hop;
use imbang::proxy::{ConnInfo, RequestCtx};
use imbang::route::{
    LocationEntry, LocationTree, VirtualHost, VirtualHosts, normalize_host, normalize_path,
};
use imbang::vars::Template;

/// `n` servers: exact names `site<i>.example.com`, every tenth also `*.site<i>.example.net`,
/// every fiftieth `www.site<i>.*`, plus two regex names; the first is the default.
fn virtual_hosts(n: usize) -> VirtualHosts<usize> {
    let mut entries: Vec<VirtualHost<usize>> = (0..n)
        .map(|i| {
            let mut names = vec![ServerName::Exact(format!("site{i}.example.com"))];
            if i % 10 == 0 {
                names.push(ServerName::LeadingWildcard {
                    suffix: format!(".site{i}.example.net"),
                    also_bare: false,
                });
            }
            if i % 50 == 0 {
                names.push(ServerName::TrailingWildcard(format!("www.site{i}.")));
            }
            VirtualHost {
                names,
                default_server: i == 0,
                value: i,
            }
        })
        .collect();
    for (j, re) in [
        r"^api\d+\.example\.org$",
        r"^(?<tenant>[a-z]+)\.apps\.example\.io$",
    ]
    .into_iter()
    .enumerate()
    {
        entries.push(VirtualHost {
            names: vec![ServerName::Regex(re.to_owned())],
            default_server: false,
            value: n + j,
        });
    }
    VirtualHosts::build(entries).expect("valid names")
}

fn entry(kind: LocationMatch, pattern: &str, value: usize) -> LocationEntry<usize> {
    LocationEntry {
        kind,
        pattern: pattern.to_owned(),
        value,
        children: Vec::new(),
        location: "bench.conf:1:1".to_owned(),
    }
}

/// `n` prefix locations `/app<i>/` (each with a nested `/app<i>/static/`), an exact `= /health`,
/// a `^~ /assets/`, and five regex locations at the end, as a big site would have them.
fn locations(n: usize) -> LocationTree<usize> {
    let mut entries = vec![
        entry(LocationMatch::Exact, "/health", 0),
        entry(LocationMatch::PrefixNoRegex, "/assets/", 1),
        entry(LocationMatch::Prefix, "/", 2),
    ];
    for i in 0..n {
        let mut e = entry(LocationMatch::Prefix, &format!("/app{i}/"), 10 + i);
        e.children.push(entry(
            LocationMatch::Prefix,
            &format!("/app{i}/static/"),
            10 + n + i,
        ));
        entries.push(e);
    }
    for (j, re) in [
        r"\.php$",
        r"\.(gif|jpe?g|png|webp)$",
        r"^/api/v\d+/",
        r"/\.git",
        r"\.map$",
    ]
    .into_iter()
    .enumerate()
    {
        entries.push(entry(
            LocationMatch::Regex {
                case_insensitive: j == 1,
            },
            re,
            10 + 2 * n + j,
        ));
    }
    LocationTree::build(entries).expect("valid locations")
}

fn server_name(c: &mut Criterion) {
    let mut g = c.benchmark_group("server_name");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 1000] {
        let hosts = virtual_hosts(n);
        let last = format!("site{}.example.com", n - 1);
        let cases = [
            ("exact", last.as_str()),
            ("leading_wildcard", "a.b.site0.example.net"),
            ("regex", "shop.apps.example.io"),
            ("unknown_default", "nowhere.example.com"),
        ];
        for (case, host) in cases {
            g.bench_with_input(BenchmarkId::new(case, n), &hosts, |b, hosts| {
                b.iter(|| black_box(hosts.find(black_box(host))))
            });
        }
    }
    g.finish();
}

fn location(c: &mut Criterion) {
    let mut g = c.benchmark_group("location");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 100, 1000] {
        let tree = locations(n);
        let deep = format!("/app{}/static/js/main.js", n / 2);
        let cases = [
            ("exact", "/health"),
            ("nested_prefix", deep.as_str()),
            ("regex_wins", "/app1/img/logo.png"),
            ("no_regex_prefix", "/assets/app.css"),
            ("root_fallback", "/unknown/page"),
        ];
        for (case, uri) in cases {
            g.bench_with_input(BenchmarkId::new(case, n), &tree, |b, tree| {
                b.iter(|| black_box(tree.find(black_box(uri))))
            });
        }
    }
    g.finish();
}

fn normalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize");
    g.bench_function("host", |b| {
        b.iter(|| black_box(normalize_host(black_box("Site42.Example.com:8080"))))
    });
    g.bench_function("path_plain", |b| {
        b.iter(|| black_box(normalize_path(black_box("/api/v1/items/42"))))
    });
    g.bench_function("path_dots_escapes", |b| {
        b.iter(|| black_box(normalize_path(black_box("/a/./b/../c%20d//e"))))
    });
    g.finish();
}

fn request_parts() -> http::request::Parts {
    http::Request::builder()
        .uri("/api/v1/items?id=42&sort=asc")
        .header("host", "site42.example.com")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .header("x-forwarded-for", "203.0.113.7")
        .header("cookie", "session=abc123; theme=dark")
        .header("connection", "keep-alive, x-trace")
        .header("keep-alive", "timeout=5")
        .header("x-trace", "1")
        .body(())
        .expect("valid request")
        .into_parts()
        .0
}

fn variables(c: &mut Criterion) {
    let parts = request_parts();
    let remote: SocketAddr = "198.51.100.23:54321".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let conn = ConnInfo {
        id: 7,
        requests: AtomicU64::new(1),
        remote,
        local,
        key: local,
        accepted: tokio::time::Instant::now(),
        tls: None,
        proxy_protocol: None,
    };
    let ctx = RequestCtx {
        conn: &conn,
        parts: &parts,
        fields: None,
        host: "site42.example.com",
        server_name: "site42.example.com",
        proxy_host: "origins",
        path: "/api/v1/items",
        done: None,
        sets: &[],
        captures: imbang::proxy::Captures::NONE,
        state: imbang::proxy::RequestState::none(),
        root: "/usr/share/nginx/html",
        rewritten: None,
    };
    let mut g = c.benchmark_group("proxy_set_header_render");
    for (name, text) in [
        ("constant", "close"),
        ("host", "$host"),
        ("remote_addr", "$remote_addr"),
        ("x_forwarded_for", "$proxy_add_x_forwarded_for"),
        ("forwarded_url", "$scheme://$host$request_uri"),
        ("cookie_and_arg", "$cookie_session-$arg_id"),
    ] {
        let t = Template::compile(text).expect("known variables");
        g.bench_function(name, |b| b.iter(|| black_box(t.render(&ctx))));
    }
    g.finish();
}

fn headers(c: &mut Criterion) {
    let parts = request_parts();
    c.bench_function("strip_hop_by_hop_9_headers", |b| {
        b.iter_batched_ref(
            || parts.headers.clone(),
            |h: &mut HeaderMap| strip_hop_by_hop(black_box(h)),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("clone_header_map_9_headers", |b| {
        b.iter(|| black_box(parts.headers.clone()))
    });
}

criterion_group!(
    benches,
    server_name,
    location,
    normalize,
    variables,
    headers
);
criterion_main!(benches);
