//! `resolver`, `server name resolve` (A/AAAA and SRV) and `proxy_pass` with a name in a
//! variable, against a real DNS server on loopback (tests/support/dns.rs) whose records each
//! test changes while imbang runs. Backends listen on 127.0.0.2, .3, .4… with one port, since
//! an A record gives an address and the `server` line the port.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::dns::DnsServer;
use support::{Behaviour, Lb, TestBackend, backend, backend_with, compile, eventually, imbang};

const WAIT: Duration = Duration::from_secs(15);

/// Backends named `names` on 127.0.0.2, 127.0.0.3, … all on one port.
async fn same_port_backends(names: &[(&str, Behaviour)]) -> (u16, Vec<TestBackend>) {
    'retry: loop {
        let first = backend_with(names[0].0, names[0].1, "127.0.0.2:0".parse().unwrap()).await;
        let port = first.addr.port();
        let mut all = vec![first];
        for (i, (name, behaviour)) in names.iter().enumerate().skip(1) {
            let addr: SocketAddr = format!("127.0.0.{}:{port}", i + 2).parse().unwrap();
            if std::net::TcpListener::bind(addr).is_err() {
                continue 'retry;
            }
            all.push(backend_with(name, *behaviour, addr).await);
        }
        return (port, all);
    }
}

fn answering(names: &[&'static str]) -> Vec<(&'static str, Behaviour)> {
    names.iter().map(|n| (*n, Behaviour::Answer)).collect()
}

/// A config with `upstream app` following `line`, `resolver` as given.
fn conf(resolver: &str, line: &str) -> String {
    format!(
        "events {{}}
         http {{
           {resolver}
           upstream app {{ zone app 64k; {line} }}
           server {{
             listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; }}
             location /api {{ api; }}
           }}
         }}"
    )
}

/// Clients sending requests one after another on `n` connections until stopped: what they saw.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(lb: &Lb, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..n)
            .map(|_| {
                let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), lb.addr);
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match support::try_request(addr, "GET", "/", "localhost", None).await {
                            Ok((200, _)) => ok.fetch_add(1, Ordering::SeqCst),
                            Ok((status, body)) => {
                                eprintln!("load: {status} {body}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                            Err(e) => {
                                eprintln!("load: {e}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the clients: `(answered 200, failed)`.
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// Waits until `b` gets requests again (so the load reaches it), from now.
async fn sees_traffic(b: &TestBackend) {
    let before = b.hits();
    eventually(&format!("{} gets requests", b.name), WAIT, || {
        b.hits() > before + 5
    })
    .await;
}

#[tokio::test]
async fn peers_follow_added_and_removed_records_under_load() {
    let (port, bs) = same_port_backends(&answering(&["a", "b", "c"])).await;
    let dns = DnsServer::start(1).await;
    dns.set("app.test", &["127.0.0.2"]);
    let lb = imbang(&conf(
        &format!("resolver {};", dns.addr),
        &format!("server app.test:{port} resolve;"),
    ))
    .await;
    // Resolved before the first request: no 502 at start.
    assert_eq!(get(&lb, "/").await, (200, "a".to_owned()));
    let load = Load::start(&lb, 4);
    // Added: b joins.
    dns.set("app.test", &["127.0.0.2", "127.0.0.3"]);
    sees_traffic(&bs[1]).await;
    sees_traffic(&bs[0]).await;
    // a removed, c added.
    dns.set("app.test", &["127.0.0.3", "127.0.0.4"]);
    sees_traffic(&bs[2]).await;
    let a_after = bs[0].hits();
    sees_traffic(&bs[1]).await;
    sees_traffic(&bs[2]).await;
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "{ok} answered");
    assert!(
        bs[0].hits() <= a_after + 4,
        "a still gets requests after it left DNS"
    );
    // The API shows the peers DNS gave, with the `server` line's name.
    let (status, api) = lb.get("/api/9/http/upstreams/app").await;
    assert_eq!(status, 200);
    assert!(api.contains(&format!("\"127.0.0.3:{port}\"")), "{api}");
    assert!(api.contains(&format!("\"127.0.0.4:{port}\"")), "{api}");
    assert!(api.contains(&format!("\"app.test:{port}\"")), "{api}");
    assert!(!api.contains("127.0.0.2"), "{api}");
}

#[tokio::test]
async fn a_removed_peer_drains_its_requests() {
    let (port, bs) = same_port_backends(&[("a", Behaviour::Hold), ("b", Behaviour::Answer)]).await;
    let dns = DnsServer::start(1).await;
    dns.set("app.test", &["127.0.0.2"]);
    let lb = imbang(&conf(
        &format!("resolver {};", dns.addr),
        &format!("server app.test:{port} resolve;"),
    ))
    .await;
    let addr = lb.addr;
    let held = tokio::spawn(async move { support::request(addr, "GET", "/", "x", None).await });
    eventually("a holds a request", WAIT, || bs[0].hits() == 1).await;
    dns.set("app.test", &["127.0.0.3"]);
    eventually("the group follows the change", WAIT, || {
        peer_addrs(&lb) == [format!("127.0.0.3:{port}")]
    })
    .await;
    // New requests go to b …
    assert_eq!(get(&lb, "/").await, (200, "b".to_owned()));
    assert_eq!(bs[0].hits(), 1);
    // … while the request a holds still finishes there.
    bs[0].release();
    let (status, body) = held.await.unwrap();
    assert_eq!((status, first_word(&body)), (200, "a".to_owned()));
}

#[tokio::test]
async fn dns_down_keeps_the_last_good_peers() {
    let (port, bs) = same_port_backends(&answering(&["a", "b"])).await;
    let dns = DnsServer::start(1).await;
    dns.set("app.test", &["127.0.0.2", "127.0.0.3"]);
    let lb = imbang(&conf(
        &format!("resolver {}; resolver_timeout 1s;", dns.addr),
        &format!("server app.test:{port} resolve;"),
    ))
    .await;
    dns.set_down(true);
    // Lookups are tried again and time out…
    let before = dns.queries().0;
    eventually("lookups while DNS is down", WAIT, || {
        dns.queries().0 >= before + 3
    })
    .await;
    // … and both peers still take requests.
    let mut bodies = bodies(&lb, "/", 4).await;
    bodies.sort();
    assert_eq!(bodies, ["a", "a", "b", "b"]);
    // Back up: a record change is followed again.
    dns.set("app.test", &["127.0.0.3"]);
    dns.set_down(false);
    let _ = bs;
    eventually_bodies(&lb, &["b", "b", "b", "b"]).await;
}

/// A GET's status and the name of the backend that answered (its body's first word).
async fn get(lb: &Lb, path: &str) -> (u16, String) {
    let (status, body) = lb.get(path).await;
    (status, first_word(&body))
}

fn first_word(body: &str) -> String {
    body.split(' ').next().unwrap_or_default().to_owned()
}

/// The backends that answered `n` GETs of `path`, by name.
async fn bodies(lb: &Lb, path: &str, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(get(lb, path).await.1);
    }
    v
}

/// The addresses of `app`'s peers now.
fn peer_addrs(lb: &Lb) -> Vec<String> {
    let snapshot = lb.server.snapshot();
    let members = snapshot.group("app").unwrap().balancer();
    members
        .peers()
        .iter()
        .map(|p| p.addr().to_string())
        .collect()
}

/// Waits until 4 requests in a row get `want`.
async fn eventually_bodies(lb: &Lb, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = bodies(lb, "/", want.len()).await;
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn srv_targets_ports_and_priorities() {
    let a = backend("a").await;
    let b = backend("b").await;
    let c = backend("c").await;
    let dns = DnsServer::start(1).await;
    dns.set("a.app.test", &["127.0.0.1"]);
    dns.set("b.app.test", &["127.0.0.1"]);
    dns.set("c.app.test", &["127.0.0.1"]);
    dns.set_srv(
        "_http._tcp.app.test",
        &[
            (10, 1, a.addr.port(), "a.app.test"),
            (10, 1, b.addr.port(), "b.app.test"),
            (20, 1, c.addr.port(), "c.app.test"),
        ],
    );
    let lb = imbang(&conf(
        &format!("resolver {};", dns.addr),
        "server app.test service=http resolve;",
    ))
    .await;
    let mut bodies = bodies(&lb, "/", 4).await;
    bodies.sort();
    assert_eq!(bodies, ["a", "a", "b", "b"], "priority 20 is a backup");
    a.stop();
    b.stop();
    // The primaries are gone: the backup answers.
    assert_eq!(get(&lb, "/").await, (200, "c".to_owned()));
    let (_, api) = lb.get("/api/9/http/upstreams/app/servers").await;
    assert!(api.contains("c.app.test"), "{api}");
    // `service=_http._tcp` names the same records.
    let lb2 = imbang(&conf(
        &format!("resolver {};", dns.addr),
        "server app.test service=_http._tcp resolve;",
    ))
    .await;
    assert_eq!(get(&lb2, "/").await, (200, "c".to_owned()));
    // Re-weighted: the record's weight is the peer's (the line sets none).
    dns.set_srv(
        "_http._tcp.app.test",
        &[(10, 7, c.addr.port(), "c.app.test")],
    );
    let weights = |api: &str| {
        let v: serde_json::Value = serde_json::from_str(api).unwrap();
        let peers = v["peers"].as_array().unwrap().clone();
        (peers.iter())
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["weight"].as_u64().unwrap(),
                    p["backup"].as_bool().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let want = vec![(format!("c.app.test:{}", c.addr.port()), 7, false)];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, api) = lb.get("/api/9/http/upstreams/app").await;
        if weights(&api) == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{api}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn truncated_answers_are_asked_again_over_tcp() {
    let (port, _bs) = same_port_backends(&answering(&["a"])).await;
    let dns = DnsServer::start(1).await;
    dns.set("app.test", &["127.0.0.2"]);
    dns.set_truncate(true);
    let lb = imbang(&conf(
        &format!("resolver {};", dns.addr),
        &format!("server app.test:{port} resolve;"),
    ))
    .await;
    assert_eq!(get(&lb, "/").await, (200, "a".to_owned()));
    let (udp, tcp) = dns.queries();
    assert!(udp > 0 && tcp > 0, "udp {udp}, tcp {tcp}");
}

#[tokio::test]
async fn a_second_name_server_answers_when_the_first_does_not() {
    let (port, _bs) = same_port_backends(&answering(&["a"])).await;
    let dead = DnsServer::start(1).await;
    dead.set_down(true);
    let dns = DnsServer::start(1).await;
    dns.set("app.test", &["127.0.0.2"]);
    let lb = imbang(&conf(
        &format!("resolver {} {}; resolver_timeout 2s;", dead.addr, dns.addr),
        &format!("server app.test:{port} resolve;"),
    ))
    .await;
    assert_eq!(get(&lb, "/").await, (200, "a".to_owned()));
}

#[tokio::test]
async fn reload_keeps_peer_state_of_resolved_addresses() {
    let (port, _bs) = same_port_backends(&answering(&["a"])).await;
    let dns = DnsServer::start(30).await;
    dns.set("app.test", &["127.0.0.2"]);
    let text = conf(
        &format!("resolver {};", dns.addr),
        &format!("server app.test:{port} resolve;"),
    );
    let lb = imbang(&text).await;
    bodies(&lb, "/", 3).await;
    let requests = || {
        let snapshot = lb.server.snapshot();
        let members = snapshot.group("app").unwrap().balancer();
        members
            .peers()
            .iter()
            .map(|p| p.state().requests())
            .collect::<Vec<_>>()
    };
    assert_eq!(requests(), [3]);
    let queries = dns.queries();
    lb.reload(&text).await;
    // The answer still holds: the new snapshot has the peer at once, with its counters.
    assert_eq!(requests(), [3]);
    assert_eq!(dns.queries(), queries, "no lookup for a known answer");
    get(&lb, "/").await;
    assert_eq!(requests(), [4]);
}

#[tokio::test]
async fn proxy_pass_with_a_name_in_a_variable_asks_the_resolver() {
    let (port, _bs) = same_port_backends(&answering(&["a", "b"])).await;
    let dns = DnsServer::start(30).await;
    dns.set("a.test", &["127.0.0.2"]);
    dns.set("b.test", &["127.0.0.3"]);
    let lb = imbang(&format!(
        "events {{}}
         http {{
           server {{
             listen 127.0.0.1:0;
             location / {{ resolver {dns}; proxy_pass http://$arg_h:{port}; }}
             location /none {{ proxy_pass http://$arg_h:{port}; }}
           }}
         }}",
        dns = dns.addr
    ))
    .await;
    assert_eq!(get(&lb, "/?h=a.test").await, (200, "a".to_owned()));
    assert_eq!(get(&lb, "/?h=b.test").await, (200, "b".to_owned()));
    // Unknown name: 502, as nginx ("could not be resolved (3: Host not found)").
    assert_eq!(get(&lb, "/?h=nope.test").await.0, 502);
    // No resolver in force: 502 ("no resolver defined to resolve").
    assert_eq!(get(&lb, "/none?h=a.test").await.0, 502);
    // Cached by TTL: a second request inside it asks nothing.
    let before = dns.queries();
    assert_eq!(get(&lb, "/?h=a.test").await, (200, "a".to_owned()));
    assert_eq!(dns.queries(), before);
}

#[test]
fn config_errors_say_what_nginx_says() {
    let with = |resolver: &str, line: &str| compile(&conf(resolver, line));
    let err = with("", "server app.test resolve;").unwrap_err();
    assert!(
        err.contains(
            "no resolver defined to resolve names at run time in upstream \"app\" in /t/imbang.conf:4:"
        ),
        "{err}"
    );
    // The upstream's own resolver, or the http level's, will do.
    with("resolver 127.0.0.1;", "server app.test resolve;").unwrap();
    compile(
        "events {} http { upstream app { resolver 127.0.0.1:5353 valid=5s ipv6=off; resolver_timeout 2s; server app.test resolve; }
         server { listen 127.0.0.1:0; location / { proxy_pass http://app; } } }",
    )
    .unwrap();
    let cases = [
        (
            "server app.test service=http;",
            "service upstream \"app.test\" requires \"resolve\" parameter",
        ),
        (
            "server app.test:80 service=http resolve;",
            "service upstream \"app.test:80\" may not have port",
        ),
        (
            "server 127.0.0.1 service=http resolve;",
            "service upstream \"127.0.0.1\" requires domain name",
        ),
        ("server app.test service= resolve;", "service is empty"),
        (
            "server app.test:x resolve;",
            "invalid port in upstream \"app.test:x\"",
        ),
    ];
    for (line, want) in cases {
        let err = with("resolver 127.0.0.1;", line).unwrap_err();
        assert!(err.contains(want), "{line}: {err}");
    }
    let resolvers = [
        ("resolver valid=5s;", "no name servers defined"),
        ("resolver 127.0.0.1 valid=x;", "invalid parameter: valid=x"),
        (
            "resolver 127.0.0.1 ipv6=maybe;",
            "invalid parameter: ipv6=maybe",
        ),
        (
            "resolver 127.0.0.1 ipv4=off ipv6=off;",
            "\"ipv4\" and \"ipv6\" cannot both be \"off\"",
        ),
        (
            "resolver 127.0.0.1:99999;",
            "invalid port in resolver \"127.0.0.1:99999\"",
        ),
        (
            "resolver 127.0.0.1; resolver 127.0.0.2;",
            "\"resolver\" directive is duplicate",
        ),
    ];
    for (resolver, want) in resolvers {
        let err = with(resolver, "server 127.0.0.1:1;").unwrap_err();
        assert!(err.contains(want), "{resolver}: {err}");
    }
    // An address with `resolve` is never looked up: no resolver needed.
    with("", "server 127.0.0.1:8080 resolve;").unwrap();
}

#[tokio::test]
async fn health_checks_probe_the_peers_dns_adds() {
    let (port, _bs) = same_port_backends(&answering(&["a", "b"])).await;
    let dns = DnsServer::start(1).await;
    dns.set("app.test", &["127.0.0.2"]);
    let lb = imbang(&format!(
        "events {{}}
         http {{
           resolver {};
           upstream app {{ zone app 64k; server app.test:{port} resolve; }}
           server {{
             listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; health_check interval=1s; }}
           }}
         }}",
        dns.addr
    ))
    .await;
    assert_eq!(lb.server.health_checks(), (1, 1));
    dns.set("app.test", &["127.0.0.2", "127.0.0.3"]);
    eventually("a probe for the added peer", WAIT, || {
        lb.server.health_checks() == (1, 2)
    })
    .await;
    dns.set("app.test", &["127.0.0.3"]);
    eventually("the removed peer's probe stops", WAIT, || {
        lb.server.health_checks() == (1, 1)
    })
    .await;
}

#[tokio::test]
async fn a_reload_that_adds_a_name_resolves_it_before_it_goes_in_force() {
    let (port, _bs) = same_port_backends(&answering(&["a", "b"])).await;
    let dns = DnsServer::start(30).await;
    dns.set("app.test", &["127.0.0.3"]);
    let resolver = format!("resolver {};", dns.addr);
    let lb = imbang(&conf(&resolver, &format!("server 127.0.0.2:{port};"))).await;
    assert_eq!(bodies(&lb, "/", 2).await, ["a", "a"]);
    lb.reload(&conf(
        &resolver,
        &format!("server 127.0.0.2:{port}; server app.test:{port} resolve;"),
    ))
    .await;
    // In force with the name's address already: no request sees a half-built group.
    assert_eq!(
        peer_addrs(&lb),
        [format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}")]
    );
    let mut got = bodies(&lb, "/", 4).await;
    got.sort();
    assert_eq!(got, ["a", "a", "b", "b"]);
    assert_eq!(lb.server.resolving(), 1);
}

/// The real binary with two workers: the groups follow DNS from the main thread's tasks, and
/// per-request lookups run on the workers; `-t` refuses `resolve` without a `resolver`.
#[tokio::test]
async fn the_binary_follows_dns_with_two_workers() {
    let (port, bs) = same_port_backends(&answering(&["a", "b"])).await;
    let dns = DnsServer::start(1).await;
    dns.set("app.test", &["127.0.0.2"]);
    dns.set("b.test", &["127.0.0.3"]);
    let dir = support::TempDir::new("dns-bin");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let listen = support::free_port();
    let text = |resolver: &str| {
        format!(
            "daemon off; pid logs/imbang.pid; error_log logs/error.log; worker_processes 2;
             events {{}}
             http {{ access_log off; {resolver}
               upstream app {{ zone app 64k; server app.test:{port} resolve; }}
               server {{ listen 127.0.0.1:{listen};
                 location / {{ proxy_pass http://app; }}
                 location /var {{ proxy_pass http://$arg_h:{port}; }}
               }}
             }}"
        )
    };
    dir.write("imbang.conf", &text(""));
    let prefix = format!("{}/", dir.path().display());
    let out = support::run_imbang(dir.path(), &["-t", "-p", &prefix, "-c", "imbang.conf"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("no resolver defined to resolve names at run time in upstream \"app\" in "),
        "{}",
        out.stderr
    );
    dir.write("imbang.conf", &text(&format!("resolver {};", dns.addr)));
    let _guard = support::ImbangGuard::start(&prefix);
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    support::wait_accepting(addr, Duration::from_secs(10)).await;
    let get = |path: &'static str| async move {
        let (status, body) = support::request(addr, "GET", path, "localhost", None).await;
        (status, first_word(&body))
    };
    // Several requests: each worker answers some.
    for _ in 0..4 {
        assert_eq!(get("/").await, (200, "a".to_owned()));
        assert_eq!(get("/var?h=b.test").await, (200, "b".to_owned()));
    }
    dns.set("app.test", &["127.0.0.3"]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while get("/").await != (200, "b".to_owned()) {
        assert!(tokio::time::Instant::now() < deadline, "never followed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = bs;
}

/// As in nginx, a name that no longer exists empties its line (502 "no live upstreams"), and
/// the peers come back with the name; `valid=` bounds how long either answer is kept.
#[tokio::test]
async fn a_name_that_disappears_empties_its_line_until_it_returns() {
    let (port, _bs) = same_port_backends(&answering(&["a"])).await;
    let dns = DnsServer::start(300).await;
    dns.set("app.test", &["127.0.0.2"]);
    let lb = imbang(&conf(
        &format!("resolver {} valid=1s;", dns.addr),
        &format!("server app.test:{port} resolve;"),
    ))
    .await;
    assert_eq!(get(&lb, "/").await, (200, "a".to_owned()));
    dns.set("app.test", &[]);
    eventually("the line is emptied", WAIT, || peer_addrs(&lb).is_empty()).await;
    assert_eq!(lb.get("/").await.0, 502);
    dns.set("app.test", &["127.0.0.2"]);
    eventually("the peer is back", WAIT, || !peer_addrs(&lb).is_empty()).await;
    assert_eq!(get(&lb, "/").await, (200, "a".to_owned()));
}
