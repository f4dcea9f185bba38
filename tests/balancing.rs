//! Balancing methods end to end: real backends behind imbang, one method per upstream block.
mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use imbang::config;
use imbang::server::Server;
use support::{Behaviour, Lb, TestBackend, backend, backend_with, eventually, get_from, imbang};

/// A config with one `upstream app` of `lines` (directives inside the block) and a server
/// proxying everything to it.
fn conf(lines: &str) -> String {
    format!(
        "daemon off; error_log stderr crit;
         http {{
           upstream app {{ {lines} }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://app; }} }}
         }}"
    )
}

/// `server` lines for `backends`, each followed by `extra`.
fn servers(backends: &[&TestBackend], extra: &str) -> String {
    backends
        .iter()
        .map(|b| format!("server {}{extra};", b.addr))
        .collect()
}

async fn three() -> [TestBackend; 3] {
    [backend("a").await, backend("b").await, backend("c").await]
}

/// The name of the backend that answered (the first word of its body).
fn name(body: &str) -> String {
    body.split(' ').next().unwrap_or_default().to_owned()
}

async fn names(lb: &Lb, paths: &[&str]) -> String {
    let mut out = String::new();
    for path in paths {
        settle(lb).await;
        let (status, body) = lb.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        out.push_str(&name(&body));
    }
    out
}

/// Attempts in flight on the peers of `app`.
fn in_flight(lb: &Lb) -> Vec<u32> {
    let snapshot = lb.server.snapshot();
    let group = snapshot.group("app").expect("upstream app");
    let members = group.balancer();
    members
        .peers()
        .iter()
        .map(|p| p.state().in_flight())
        .collect()
}

/// Waits until no attempt is in flight: a response's last byte can reach the client just
/// before imbang sees the end of the upstream body and lets go of the peer.
async fn settle(lb: &Lb) {
    eventually("no attempt in flight", Duration::from_secs(5), || {
        in_flight(lb).iter().all(|&n| n == 0)
    })
    .await;
}

#[tokio::test]
async fn least_conn_without_load_is_weighted_round_robin() {
    let [a, b, c] = three().await;
    let lines = format!(
        "least_conn; server {} weight=3; server {}; server {};",
        a.addr, b.addr, c.addr
    );
    let lb = imbang(&conf(&lines)).await;
    // Weights 3, 1, 1 and nothing in flight between requests: nginx's smooth sequence
    // (currents [3,1,1] a, [1,2,2] b, [4,-2,3] a, [2,-1,4] c, [5,0,0] a, and again).
    assert_eq!(names(&lb, &["/"; 10]).await, "abacaabaca");
}

#[tokio::test]
async fn least_conn_sends_new_requests_away_from_a_backend_holding_slow_ones() {
    let slow = backend_with("slow", Behaviour::Hold, "127.0.0.1:0".parse().unwrap()).await;
    let fast = backend("fast").await;
    let lb = imbang(&conf(&format!(
        "least_conn; server {}; server {};",
        slow.addr, fast.addr
    )))
    .await;
    // Both idle: the tie goes to the first peer, which holds the request.
    let addr = lb.addr;
    let held = tokio::spawn(async move { support::request(addr, "GET", "/", "x", None).await });
    eventually(
        "a request held by the slow backend",
        Duration::from_secs(5),
        || slow.hits() == 1,
    )
    .await;
    for i in 0..6 {
        wait_in_flight(&lb, &[1, 0]).await;
        let (status, body) = lb.get("/").await;
        assert_eq!(
            (status, name(&body)),
            (200, "fast".to_owned()),
            "request {i}"
        );
    }
    assert_eq!(slow.hits(), 1, "no new request reached the busy backend");
    slow.release();
    assert_eq!(held.await.unwrap(), (200, "slow GET /".to_owned()));
    // Idle again: both share the load.
    let got = names(&lb, &["/"; 4]).await;
    assert_eq!(got.matches("slow").count(), 2, "{got}");
}

/// Waits until the peers of `app` have exactly these attempts in flight.
async fn wait_in_flight(lb: &Lb, want: &[u32]) {
    eventually("in-flight counts", Duration::from_secs(5), || {
        in_flight(lb) == want
    })
    .await;
}

#[tokio::test]
async fn ip_hash_keeps_a_client_network_on_one_backend() {
    let [a, b, c] = three().await;
    let lb = imbang(&conf(&format!("ip_hash; {}", servers(&[&a, &b, &c], "")))).await;
    // nginx's ip_hash of 127.0.0.0/24 (bytes 127, 0, 0) is 4040; 4040 % 3 = 2: the third.
    // 127.0.1.0/24 hashes to the first.
    for host in [1, 2, 77] {
        for _ in 0..3 {
            let client: IpAddr = [127, 0, 0, host].into();
            let (_, body) = get_from(client, lb.addr, "/").await;
            assert_eq!(name(&body), "c", "{client}");
        }
        let other: IpAddr = [127, 0, 1, host].into();
        let (_, body) = get_from(other, lb.addr, "/").await;
        assert_eq!(name(&body), "a", "{other}");
    }
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn ip_hash_moves_a_client_only_while_its_backend_is_down() {
    let [a, b, c] = three().await;
    let lb = imbang(&conf(&format!(
        "ip_hash; {}",
        servers(&[&a, &b, &c], " fail_timeout=1s")
    )))
    .await;
    c.stop(); // 127.0.0.0/24's backend
    let (status, body) = lb.get("/").await;
    assert_eq!(status, 200, "retried on another backend");
    let moved_to = name(&body);
    assert_ne!(moved_to, "c");
    // While c is out the client stays on its second choice.
    for _ in 0..4 {
        assert_eq!(name(&lb.get("/").await.1), moved_to);
    }
}

#[tokio::test]
async fn hash_maps_each_key_to_nginx_s_backend() {
    let [a, b, c] = three().await;
    let lb = imbang(&conf(&format!(
        "hash $request_uri; {}",
        servers(&[&a, &b, &c], "")
    )))
    .await;
    // (crc32(uri) >> 16) & 0x7fff modulo 3, worked out separately for each URI.
    let paths = ["/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h"];
    assert_eq!(names(&lb, &paths).await, "bcbabbbc");
    assert_eq!(names(&lb, &paths).await, "bcbabbbc", "the same again");
}

#[tokio::test]
async fn hash_by_binary_remote_addr_hashes_the_address_bytes_as_nginx() {
    let [a, b, c] = three().await;
    let lb = imbang(&conf(&format!(
        "hash $binary_remote_addr; {}",
        servers(&[&a, &b, &c], "")
    )))
    .await;
    // crc32 of the 4 bytes 127.0.0.N, as above: N = 1..4 give a, c, b, a. (Hashing the text
    // "127.0.0.2" would give b.)
    let mut got = String::new();
    for n in 1..=4 {
        let (_, body) = get_from([127, 0, 0, n].into(), lb.addr, "/").await;
        got.push_str(&name(&body));
    }
    assert_eq!(got, "acba");
}

#[tokio::test]
async fn hash_key_with_several_variables() {
    let [a, b, c] = three().await;
    let lb = imbang(&conf(&format!(
        "hash \"$request_method$uri\"; {}",
        servers(&[&a, &b, &c], "")
    )))
    .await;
    // The query string is not in the key: the same backend for every query.
    let first = name(&lb.get("/same?x=1").await.1);
    for q in ["x=2", "y", "z=3&w=4"] {
        assert_eq!(name(&lb.get(&format!("/same?{q}")).await.1), first, "{q}");
    }
}

/// The backend each of `uris` reaches.
async fn mapping(lb: &Lb, uris: &[String]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for uri in uris {
        let (status, body) = lb.get(uri).await;
        assert_eq!(status, 200);
        map.insert(uri.clone(), name(&body));
    }
    map
}

#[tokio::test]
async fn consistent_hash_keeps_keys_and_moves_only_a_removed_backend_s_share() {
    let backends = [
        backend("a").await,
        backend("b").await,
        backend("c").await,
        backend("d").await,
    ];
    let all: Vec<&TestBackend> = backends.iter().collect();
    let method = "hash $request_uri consistent;";
    let lb = imbang(&conf(&format!("{method} {}", servers(&all, "")))).await;
    let uris: Vec<String> = (0..200).map(|n| format!("/object/{n}")).collect();
    let before = mapping(&lb, &uris).await;
    assert_eq!(before, mapping(&lb, &uris).await, "same URI, same backend");
    let used: std::collections::HashSet<_> = before.values().collect();
    assert_eq!(used.len(), 4, "every backend gets keys");

    // Remove d from the config.
    lb.reload(&conf(&format!("{method} {}", servers(&all[..3], ""))))
        .await;
    let after = mapping(&lb, &uris).await;
    let mut moved = 0;
    for uri in &uris {
        if before[uri] == "d" {
            moved += 1;
            assert_ne!(after[uri], "d");
        } else {
            assert_eq!(
                after[uri], before[uri],
                "{uri} moved though its backend stayed"
            );
        }
    }
    // About a quarter of the keys were on d.
    assert!((20..=100).contains(&moved), "{moved} of 200 moved");
}

#[tokio::test]
async fn random_spreads_requests_over_every_backend() {
    for method in ["random;", "random two;", "random two least_conn;"] {
        let [a, b, c] = three().await;
        let lb = imbang(&conf(&format!("{method} {}", servers(&[&a, &b, &c], "")))).await;
        let got: String = names(&lb, &["/"; 60]).await;
        for backend in ["a", "b", "c"] {
            let n = got.matches(backend).count();
            assert!(n >= 5, "{method}: {backend} got {n} of 60 ({got})");
        }
    }
}

#[tokio::test]
async fn random_two_avoids_a_busy_backend() {
    let slow = backend_with("slow", Behaviour::Hold, "127.0.0.1:0".parse().unwrap()).await;
    let fast = backend("fast").await;
    let lb = imbang(&conf(&format!(
        "random two; server {}; server {};",
        slow.addr, fast.addr
    )))
    .await;
    // Send requests until one is held by the slow backend.
    let addr = lb.addr;
    let mut held = None;
    for _ in 0..50 {
        let request =
            tokio::spawn(async move { support::request(addr, "GET", "/", "x", None).await });
        let answered = fast.hits();
        eventually(
            "the request answered or held",
            Duration::from_secs(5),
            || slow.hits() > 0 || fast.hits() > answered,
        )
        .await;
        if slow.hits() > 0 {
            held = Some(request);
            break;
        }
        assert_eq!(request.await.unwrap().0, 200);
    }
    let held = held.expect("a request reached the slow backend");
    // With two peers, `two` always draws both: the busy one never wins.
    for _ in 0..10 {
        wait_in_flight(&lb, &[1, 0]).await;
        assert_eq!(name(&lb.get("/").await.1), "fast");
    }
    assert_eq!(slow.hits(), 1);
    slow.release();
    assert_eq!(held.await.unwrap().0, 200);
}

#[test]
fn an_unknown_variable_in_the_hash_key_is_a_config_error() {
    let text = conf("hash $no_such_thing; server 127.0.0.1:1;");
    let config =
        config::parse_str("/test/imbang.conf", &text, &support::options()).expect("parses");
    let error = Server::new(config, None, None)
        .err()
        .expect("compile error")
        .to_string();
    assert_eq!(
        error,
        "unknown \"no_such_thing\" variable in /test/imbang.conf:3:27"
    );
}

#[tokio::test]
async fn slow_start_keeps_a_server_a_reload_adds_nearly_idle_at_first() {
    let [a, b, c] = three().await;
    let lb = imbang(&conf(&servers(&[&a, &b], ""))).await;
    assert_eq!(names(&lb, &["/"; 4]).await, "abab");
    // c joins a serving group with slow_start=1h: seconds into its ramp it weighs about a
    // thousandth of a or b, so round robin gives it nothing in 40 requests.
    let with_c = format!(
        "{} server {} slow_start=1h;",
        servers(&[&a, &b], ""),
        c.addr
    );
    lb.reload(&conf(&with_c)).await;
    let got = names(&lb, &["/"; 40]).await;
    assert_eq!(got.matches('c').count(), 0, "{got}");
    // Without slow_start a new server gets its share at once.
    let d = backend("d").await;
    let with_d = format!("{with_c} server {};", d.addr);
    lb.reload(&conf(&with_d)).await;
    let got = names(&lb, &["/"; 40]).await;
    assert!(got.matches('d').count() >= 12, "{got}");
}

#[tokio::test]
async fn slow_start_after_a_backend_comes_back_from_its_fail_timeout() {
    let a = backend("a").await;
    let b = backend("b").await;
    let b_addr = b.addr;
    let lb = imbang(&conf(&format!(
        "server {}; server {} fail_timeout=1s slow_start=1h;",
        a.addr, b.addr
    )))
    .await;
    b.stop();
    for _ in 0..4 {
        assert_eq!(lb.get("/").await.0, 200);
    }
    let b = backend_with("b", Behaviour::Answer, b_addr).await;
    // After fail_timeout one trial request reaches b; it succeeds, and b starts its ramp.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.hits() == 0 {
        assert_eq!(lb.get("/").await.0, 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never tried again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = names(&lb, &["/"; 40]).await;
    assert_eq!(got.matches('b').count(), 0, "{got}");
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn queue_holds_requests_for_a_max_conns_slot_then_502s_on_overflow_and_timeout() {
    let slow = backend_with("slow", Behaviour::Hold, "127.0.0.1:0".parse().unwrap()).await;
    let lb = imbang(&conf(&format!(
        "server {} max_conns=1; queue 1 timeout=30s;",
        slow.addr
    )))
    .await;
    let addr = lb.addr;
    let get =
        move || tokio::spawn(async move { support::request(addr, "GET", "/", "x", None).await });
    let first = get();
    eventually("the first request held", Duration::from_secs(5), || {
        slow.hits() == 1
    })
    .await;
    let second = get(); // waits in the queue for the slot
    let waiting = || {
        lb.server
            .snapshot()
            .group("app")
            .unwrap()
            .balancer()
            .waiting()
    };
    eventually("the second request queued", Duration::from_secs(5), || {
        waiting() == 1
    })
    .await;
    // The queue holds 1: a third request is refused at once.
    let (status, _) = lb.get("/").await;
    assert_eq!(status, 502);
    slow.release();
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(
        second.await.unwrap().0,
        200,
        "served once the slot was free"
    );
    assert_eq!(slow.hits(), 2);
}

#[tokio::test]
async fn a_queued_request_gets_502_when_no_slot_frees_within_the_timeout() {
    let slow = backend_with("slow", Behaviour::Hold, "127.0.0.1:0".parse().unwrap()).await;
    let lb = imbang(&conf(&format!(
        "server {} max_conns=1; queue 10 timeout=300ms;",
        slow.addr
    )))
    .await;
    let addr = lb.addr;
    let held = tokio::spawn(async move { support::request(addr, "GET", "/", "x", None).await });
    eventually("the first request held", Duration::from_secs(5), || {
        slow.hits() == 1
    })
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(lb.get("/").await.0, 502);
    assert!(started.elapsed() >= Duration::from_millis(300));
    slow.release();
    assert_eq!(held.await.unwrap().0, 200);
}

/// How many of `n` sequential requests each named backend answered.
async fn tally(lb: &Lb, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        settle(lb).await;
        let (status, body) = lb.get("/").await;
        assert_eq!(status, 200, "{body}");
        *counts.entry(name(&body)).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn least_time_sends_requests_to_the_faster_backend() {
    for method in [
        "least_time header;",
        "least_time last_byte inflight;",
        "random two least_time=header;",
    ] {
        let any = "127.0.0.1:0".parse().unwrap();
        let slow = backend_with("slow", Behaviour::Delay(150), any).await;
        let fast = backend("fast").await;
        let lb = imbang(&conf(&format!("{method} {}", servers(&[&slow, &fast], "")))).await;
        // The first requests measure both; then the fast one gets (nearly) everything.
        let counts = tally(&lb, 20).await;
        assert!(
            counts.get("slow").copied().unwrap_or(0) <= 2,
            "{method}: {counts:?}"
        );
    }
}

#[tokio::test]
async fn least_time_header_and_last_byte_measure_different_things() {
    // `streamer` answers its head at once and the body 150 ms later; `thinker` thinks 40 ms and
    // then answers all at once.
    let any = "127.0.0.1:0".parse().unwrap();
    for (mode, want) in [("header", "streamer"), ("last_byte", "thinker")] {
        let streamer = backend_with("streamer", Behaviour::SlowBody(150), any).await;
        let thinker = backend_with("thinker", Behaviour::Delay(40), any).await;
        let lines = format!("least_time {mode}; {}", servers(&[&streamer, &thinker], ""));
        let lb = imbang(&conf(&lines)).await;
        let counts = tally(&lb, 12).await;
        assert!(
            counts.get(want).copied().unwrap_or(0) >= 10,
            "{mode}: {counts:?}"
        );
    }
}

#[tokio::test]
async fn bounded_consistent_hash_spreads_a_hot_key_past_its_overloaded_backend() {
    let any = "127.0.0.1:0".parse().unwrap();
    for (method, most) in [
        ("hash $request_uri consistent;", 6),
        ("hash $request_uri consistent bounded=1.25;", 3),
    ] {
        let held = [
            backend_with("a", Behaviour::Hold, any).await,
            backend_with("b", Behaviour::Hold, any).await,
            backend_with("c", Behaviour::Hold, any).await,
        ];
        let all: Vec<&TestBackend> = held.iter().collect();
        let lb = imbang(&conf(&format!("{method} {}", servers(&all, "")))).await;
        // Six requests for one URI, each held by its backend until all have arrived.
        let addr = lb.addr;
        let mut requests = Vec::new();
        for n in 1..=6 {
            requests.push(tokio::spawn(async move {
                support::request(addr, "GET", "/hot", "x", None).await
            }));
            let arrived = || held.iter().map(|b| b.hits()).sum::<usize>() == n;
            eventually("the request held", Duration::from_secs(5), arrived).await;
        }
        let hits: Vec<usize> = held.iter().map(|b| b.hits()).collect();
        // Bounded: at most ceil(1.25 × 6 / 3) = 3 on any backend.
        assert_eq!(hits.iter().copied().max(), Some(most), "{method}: {hits:?}");
        held.iter().for_each(TestBackend::release);
        for request in requests {
            assert_eq!(request.await.unwrap().0, 200);
        }
    }
}
