//! `UpstreamGroup::pick_with` and the drop of its guard (one attempt's bookkeeping) for every
//! balancing method, in groups of 2 to 1024 peers on loopback addresses.
//!
//! `cargo bench --bench pick` (all methods; `cargo bench --bench pick -- least_conn` for one).
//! The proxy calls this once per attempt, under the group's selection lock, so its cost is paid
//! per request and serialises the worker threads on one upstream.
//!
//! Each iteration is a new request: a fresh `Tried`, the next of 256 client addresses (`ip_hash`)
//! or rendered keys (`hash`), and the guard reported as a success, so in-flight counts return to
//! zero (`least_conn` and `least_time` then tie every peer and break the tie by round robin over
//! all of them: their worst case, as in nginx).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use imbang::config::model::Upstream;
use imbang::config::{LoadOptions, parse_str};
use imbang::upstream::{Affinity, PeerRegistry, Tried, UpstreamGroup};
use tokio::time::Instant;

/// The methods benchmarked: the name of the case and the `upstream` block's method directive
/// (empty for round robin). Weights 1..=5 for the weighted round robin only.
const METHODS: [(&str, &str, bool); 10] = [
    ("round_robin", "", false),
    ("round_robin_weighted", "", true),
    ("least_conn", "least_conn;", false),
    ("least_time_header", "least_time header;", false),
    ("ip_hash", "ip_hash;", false),
    ("hash", "hash $request_uri;", false),
    ("hash_consistent", "hash $request_uri consistent;", false),
    ("random", "random;", false),
    ("random_two", "random two;", false),
    (
        "random_two_least_time",
        "random two least_time=header;",
        false,
    ),
];

/// The `upstream` block of a small config with `method` and `peers` loopback servers (weights
/// 1..=5 when `weighted`), through the real parser, as a snapshot would get it.
fn upstream(method: &str, peers: usize, weighted: bool) -> Upstream {
    let mut text = format!("events {{}}\nhttp {{\n    upstream bench {{\n        {method}\n");
    for i in 0..peers {
        let weight = if weighted { 1 + i % 5 } else { 1 };
        text.push_str(&format!(
            "        server 127.0.{}.{}:8080 weight={weight};\n",
            i / 250,
            i % 250 + 1
        ));
    }
    text.push_str("    }\n    server {\n        listen 127.0.0.1:8080;\n");
    text.push_str("        location / { proxy_pass http://bench; }\n    }\n}\n");
    let options = LoadOptions {
        prefix: PathBuf::from("/tmp/"),
        default_listen_port: 8000,
    };
    let config = parse_str("/tmp/bench.conf", &text, &options).expect("a valid config");
    let http = config.http.expect("an http block");
    http.upstreams
        .into_iter()
        .find(|u| u.name == "bench")
        .expect("the bench upstream")
}

fn pick(c: &mut Criterion) {
    // 256 clients from different /24s (ip_hash hashes the first three octets) and 256 keys.
    let clients: Vec<IpAddr> = (0..=255u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, i, 255 - i, 7)))
        .collect();
    let keys: Vec<Vec<u8>> = (0..256)
        .map(|i| format!("/static/app.{i}.js?v=3").into_bytes())
        .collect();
    let mut g = c.benchmark_group("pick");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(1));
    for (name, method, weighted) in METHODS {
        for peers in [2usize, 16, 128, 1024] {
            let group =
                UpstreamGroup::new(&upstream(method, peers, weighted), &PeerRegistry::new());
            let now = Instant::now();
            let mut n = 0usize;
            g.bench_with_input(BenchmarkId::new(name, peers), &group, |b, group| {
                b.iter(|| {
                    n = n.wrapping_add(1);
                    let affinity = Affinity {
                        client_ip: Some(clients[n % 256]),
                        key: Some(&keys[n % 256]),
                    };
                    let mut tried = Tried::new();
                    let mut guard = group
                        .pick_with(&mut tried, now, affinity)
                        .expect("a live peer");
                    black_box(guard.addr());
                    guard.success_at(now);
                    drop(guard);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
