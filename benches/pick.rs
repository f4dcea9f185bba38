//! `UpstreamGroup::pick` and the drop of its guard (one attempt's bookkeeping), nginx's smooth
//! weighted round robin, for groups of 2 to 1024 peers on loopback addresses.
//!
//! `cargo bench --bench pick`. The proxy calls this once per attempt, under the group's
//! selection lock, so its cost is paid per request and serialises all threads.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use imbang::config::model::Upstream;
use imbang::config::{LoadOptions, parse_str};
use imbang::upstream::{PeerRegistry, Tried, UpstreamGroup};
use tokio::time::Instant;

/// The `upstream` block of a small config with `peers` loopback servers (weights 1..=5 when
/// `weighted`), through the real parser, as a snapshot would get it.
fn upstream(peers: usize, weighted: bool) -> Upstream {
    let mut text = String::from("events {}\nhttp {\n    upstream bench {\n");
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
    let mut g = c.benchmark_group("pick_round_robin");
    g.throughput(Throughput::Elements(1));
    for weighted in [false, true] {
        for peers in [2usize, 16, 128, 1024] {
            let group = UpstreamGroup::new(&upstream(peers, weighted), &PeerRegistry::new());
            let now = Instant::now();
            let id = BenchmarkId::new(if weighted { "weighted" } else { "equal" }, peers);
            g.bench_with_input(id, &group, |b, group| {
                b.iter(|| {
                    let mut tried = Tried::new();
                    let mut guard = group.pick(&mut tried, now).expect("a live peer");
                    black_box(guard.addr());
                    guard.success();
                    drop(guard);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
