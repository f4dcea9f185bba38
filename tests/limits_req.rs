//! `limit_req`, `limit_conn` and `limit_rate` (docs/limits.md): exact admit/reject counts for a
//! burst, delays seen as the order and spacing of answers, `limit_req_status`, dry runs,
//! `$limit_req_status`/`$limit_conn_status` in an access log, requests held in progress at a
//! real origin, a paced body measured, and the same request sequence against the machine's nginx.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::{TempDir, backend, compile, eventually, imbang, request};
use tokio::time::Instant;

fn http(origin: SocketAddr, zones: &str, locations: &str) -> String {
    format!(
        "events {{}} http {{ access_log off; {zones}
           server {{ listen 127.0.0.1:0; {locations}
             location / {{ proxy_pass http://{origin}; }} }} }}"
    )
}

/// The statuses of `n` GETs of `path` sent one after the other.
async fn statuses(addr: SocketAddr, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(request(addr, "GET", path, "localhost", None).await.0);
    }
    out
}

#[tokio::test]
async fn a_burst_with_nodelay_admits_burst_plus_one_and_rejects_the_rest_with_503() {
    let origin = backend("app").await;
    // 1r/m: nothing drains during the test (16 milli-requests a second).
    let lb = imbang(&http(
        origin.addr,
        "limit_req_zone $binary_remote_addr zone=burst:1m rate=1r/m;",
        "location /a { limit_req zone=burst burst=3 nodelay; proxy_pass http://ORIGIN; }"
            .replace("ORIGIN", &origin.addr.to_string())
            .as_str(),
    ))
    .await;
    let got = statuses(lb.addr, "/a", 8).await;
    assert_eq!(got, [200, 200, 200, 200, 503, 503, 503, 503]);
    assert_eq!(origin.hits(), 4, "rejected requests never reach the origin");
    // Another location without limit_req is not limited.
    assert_eq!(statuses(lb.addr, "/", 2).await, [200, 200]);
}

#[tokio::test]
async fn limit_req_status_429_and_no_burst() {
    let origin = backend("app").await;
    let o = origin.addr;
    let lb = imbang(&http(
        o,
        "limit_req_zone $binary_remote_addr zone=status:1m rate=1r/m; limit_req_status 429;",
        &format!("location /a {{ limit_req zone=status; proxy_pass http://{o}; }}"),
    ))
    .await;
    assert_eq!(statuses(lb.addr, "/a", 3).await, [200, 429, 429]);
}

/// Concurrent requests, at 2r/s with burst=3: one passes at once, three wait 0.5, 1 and 1.5 s
/// (their excess over the rate), two are rejected at once.
#[tokio::test]
async fn a_burst_without_nodelay_waits_for_the_excess_to_drain() {
    let origin = backend("app").await;
    let o = origin.addr;
    let lb = imbang(&http(
        o,
        "limit_req_zone $binary_remote_addr zone=delay:1m rate=2r/s;",
        &format!(
            "location /a {{ limit_req zone=delay burst=3; proxy_pass http://{o}; }}
             location /d {{ limit_req zone=delay burst=3 delay=2; proxy_pass http://{o}; }}"
        ),
    ))
    .await;
    for (path, expected) in [("/a", [0, 500, 1000, 1500]), ("/d", [0, 0, 0, 500])] {
        let start = Instant::now();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let addr = lb.addr;
                tokio::spawn(async move {
                    let (status, _) = request(addr, "GET", path, "localhost", None).await;
                    (status, start.elapsed())
                })
            })
            .collect();
        let mut admitted = Vec::new();
        let mut rejected = 0;
        for t in tasks {
            match t.await.unwrap() {
                (200, took) => admitted.push(took),
                (503, _) => rejected += 1,
                (s, _) => panic!("{path}: status {s}"),
            }
        }
        assert_eq!((admitted.len(), rejected), (4, 2), "{path}");
        admitted.sort();
        for (took, want) in admitted.iter().zip(expected) {
            // Each waits at least its share (less the spread of the arrivals), and not much more.
            let want = Duration::from_millis(want);
            assert!(
                *took + Duration::from_millis(150) >= want
                    && *took < want + Duration::from_millis(900),
                "{path}: answered after {took:?}, expected about {want:?} ({admitted:?})"
            );
        }
        // The bucket drains (2 s at 2r/s) before the next location's round.
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
}

#[tokio::test]
async fn dry_run_passes_everything_and_the_status_variables_say_what_would_have_happened() {
    let origin = backend("app").await;
    let o = origin.addr;
    let dir = TempDir::new("limits-log");
    let log = dir.path().join("access.log");
    let lb = imbang(&format!(
        "events {{}} http {{
           log_format lim '$uri $status $limit_req_status $limit_conn_status';
           limit_req_zone $binary_remote_addr zone=dry:1m rate=1r/m;
           limit_conn_zone $binary_remote_addr zone=dryconn:1m;
           server {{ listen 127.0.0.1:0; access_log {log} lim;
             location /dry {{ limit_req zone=dry; limit_req_dry_run on; proxy_pass http://{o}; }}
             location /real {{ limit_req zone=dry burst=1 nodelay; limit_conn dryconn 5; proxy_pass http://{o}; }}
             location /none {{ proxy_pass http://{o}; }}
           }} }}",
        log = log.display()
    ))
    .await;
    assert_eq!(statuses(lb.addr, "/dry", 3).await, [200, 200, 200]);
    // The zone's bucket saw none of the dry run's requests beyond the first (a dry-run
    // rejection takes nothing): /real gets one more within its burst.
    assert_eq!(statuses(lb.addr, "/real", 2).await, [200, 503]);
    assert_eq!(statuses(lb.addr, "/none", 1).await, [200]);
    eventually("6 log lines", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 6)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "/dry 200 PASSED -",
            "/dry 200 REJECTED_DRY_RUN -",
            "/dry 200 REJECTED_DRY_RUN -",
            "/real 200 PASSED PASSED",
            "/real 503 REJECTED -",
            "/none 200 - -",
        ]
    );
}

/// An origin that holds every request until told to answer, counting those it holds.
async fn holding_origin() -> (
    SocketAddr,
    Arc<AtomicUsize>,
    tokio::sync::watch::Sender<bool>,
) {
    let held = Arc::new(AtomicUsize::new(0));
    let (release, rx) = tokio::sync::watch::channel(false);
    let count = held.clone();
    let addr = support::serve_hyper(move |_req| {
        let (count, mut rx) = (count.clone(), rx.clone());
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = rx.wait_for(|go| *go).await;
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
        }
    })
    .await;
    (addr, held, release)
}

#[tokio::test]
async fn limit_conn_refuses_a_key_s_request_beyond_n_in_progress() {
    let (o, held, release) = holding_origin().await;
    let lb = imbang(&http(
        o,
        "limit_conn_zone $binary_remote_addr zone=held:1m; limit_conn_status 429;",
        &format!("location /a {{ limit_conn held 2; proxy_pass http://{o}; }}"),
    ))
    .await;
    let addr = lb.addr;
    let first: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { request(addr, "GET", "/a", "localhost", None).await.0 }))
        .collect();
    eventually(
        "two requests held at the origin",
        Duration::from_secs(5),
        || held.load(Ordering::SeqCst) == 2,
    )
    .await;
    // The third of the same address is refused at once; another location is not limited.
    assert_eq!(request(addr, "GET", "/a", "localhost", None).await.0, 429);
    assert_eq!(held.load(Ordering::SeqCst), 2);
    release.send(true).unwrap();
    for t in first {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Both answered: the count is back to zero.
    assert_eq!(statuses(addr, "/a", 3).await, [200, 200, 200]);
}

/// A body of `len` bytes, with the time it took to arrive.
async fn timed_body(addr: SocketAddr, path: &str) -> (usize, Duration) {
    let start = Instant::now();
    let (status, body) = request(addr, "GET", path, "localhost", None).await;
    assert_eq!(status, 200, "{path}");
    (body.len(), start.elapsed())
}

#[tokio::test]
async fn limit_rate_paces_the_body_after_limit_rate_after() {
    const LEN: usize = 300 * 1024;
    let o = support::serve_hyper(|_req| async {
        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(vec![
            b'x';
            LEN
        ]))))
    })
    .await;
    let lb = imbang(&http(
        o,
        "",
        &format!(
            "location /rate {{ limit_rate 100k; proxy_pass http://{o}; }}
             location /after {{ limit_rate 100k; limit_rate_after 200k; proxy_pass http://{o}; }}
             location /set {{ set $limit_rate 100k; proxy_pass http://{o}; }}
             location /free {{ proxy_pass http://{o}; }}
             location /if {{ if ($arg_slow) {{ limit_rate 100k; }} proxy_pass http://{o}; }}"
        ),
    ))
    .await;
    let (rate, after, set, free, in_if, not_if) = tokio::join!(
        timed_body(lb.addr, "/rate"),
        timed_body(lb.addr, "/after"),
        timed_body(lb.addr, "/set"),
        timed_body(lb.addr, "/free"),
        timed_body(lb.addr, "/if?slow=1"),
        timed_body(lb.addr, "/if"),
    );
    for (len, _) in [rate, after, set, free, in_if, not_if] {
        assert_eq!(len, LEN);
    }
    // 300k at 100k/s with the first second's worth at once: about 2 s.
    for (what, took) in [
        ("limit_rate", rate.1),
        ("set $limit_rate", set.1),
        ("limit_rate in if", in_if.1),
    ] {
        assert!(
            took > Duration::from_millis(1700) && took < Duration::from_secs(5),
            "{what}: {took:?}"
        );
    }
    // 200k free, then 100k within the first second's allowance: no wait.
    assert!(
        after.1 < Duration::from_millis(1500),
        "limit_rate_after: {:?}",
        after.1
    );
    assert!(
        free.1 < Duration::from_millis(1500),
        "no limit: {:?}",
        free.1
    );
    assert!(
        not_if.1 < Duration::from_millis(1500),
        "if not taken: {:?}",
        not_if.1
    );
}

#[tokio::test]
async fn an_empty_key_is_not_limited_and_an_inner_level_replaces_the_outer_limits() {
    let origin = backend("app").await;
    let o = origin.addr;
    let lb = imbang(&format!(
        "events {{}} http {{ access_log off;
           limit_req_zone $arg_user zone=emptyuser:1m rate=1r/m;
           limit_req_zone $binary_remote_addr zone=emptyaddr:1m rate=1r/m;
           limit_req zone=emptyaddr;
           server {{ listen 127.0.0.1:0;
             location /u {{ limit_req zone=emptyuser; proxy_pass http://{o}; }}
             location /outer {{ proxy_pass http://{o}; }}
           }} }}"
    ))
    .await;
    // No `user` argument: the key is empty, nothing is limited (and the http level's
    // `limit_req zone=addr` is replaced by the location's own).
    assert_eq!(statuses(lb.addr, "/u", 3).await, [200, 200, 200]);
    assert_eq!(statuses(lb.addr, "/u?user=a", 2).await, [200, 503]);
    assert_eq!(statuses(lb.addr, "/u?user=b", 1).await, [200]);
    // The inherited http-level limit.
    assert_eq!(statuses(lb.addr, "/outer", 2).await, [200, 503]);
}

#[tokio::test]
async fn a_zone_survives_a_reload_when_its_name_size_and_key_are_unchanged() {
    let origin = backend("app").await;
    let o = origin.addr;
    let conf = |size: &str| {
        format!(
            "events {{}} http {{ access_log off;
               limit_req_zone $binary_remote_addr zone=reload:{size} rate=1r/m;
               server {{ listen 127.0.0.1:0;
                 location /a {{ limit_req zone=reload; proxy_pass http://{o}; }} }} }}"
        )
    };
    let lb = imbang(&conf("1m")).await;
    assert_eq!(statuses(lb.addr, "/a", 2).await, [200, 503]);
    lb.reload(&conf("1m")).await;
    assert_eq!(
        statuses(lb.addr, "/a", 1).await,
        [503],
        "the bucket was kept"
    );
    lb.reload(&conf("2m")).await;
    assert_eq!(
        statuses(lb.addr, "/a", 1).await,
        [200],
        "a new size: a new zone"
    );
}

#[test]
fn bad_limit_configs_are_refused_with_nginx_s_words() {
    let with = |zones: &str, loc: &str| {
        compile(&format!(
            "events {{}} http {{ {zones} server {{ listen 127.0.0.1:0; location / {{ {loc} proxy_pass http://127.0.0.1:9; }} }} }}"
        ))
    };
    let cases = [
        (
            with("", "limit_req zone=nope;"),
            "zero size shared memory zone \"nope\"",
        ),
        (
            with(
                "limit_req_zone $binary_remote_addr zone=z:1k rate=1r/s;",
                "",
            ),
            "zone \"zone=z:1k\" is too small",
        ),
        (
            with(
                "limit_req_zone $binary_remote_addr zone=z:1m rate=0r/s;",
                "",
            ),
            "invalid rate \"rate=0r/s\"",
        ),
        (
            with(
                "limit_req_zone $binary_remote_addr zone=z:1m rate=1r/s;",
                "limit_req zone=z burst=0;",
            ),
            "invalid burst value \"burst=0\"",
        ),
        (
            with(
                "limit_req_zone $binary_remote_addr zone=z:1m rate=1r/s;",
                "limit_req zone=z; limit_req zone=z;",
            ),
            "\"limit_req\" directive is duplicate",
        ),
        (
            with(
                "limit_conn_zone $binary_remote_addr zone=c:1m;",
                "limit_conn c 0;",
            ),
            "invalid number of connections \"0\"",
        ),
        (
            with(
                "limit_req_zone $binary_remote_addr zone=z:1m rate=1r/s;",
                "limit_req_status 200;",
            ),
            "value must be between 400 and 599",
        ),
        (
            with(
                "limit_req_zone $a zone=z:1m rate=1r/s; limit_req_zone $b zone=z:1m rate=1r/s;",
                "",
            ),
            "limit_req_zone \"z\" is already bound to key \"$a\"",
        ),
    ];
    for (result, expected) in cases {
        let err = result.expect_err(expected);
        assert!(err.contains(expected), "{err}\nexpected: {expected}");
        assert!(err.contains("/t/imbang.conf:1:"), "{err}");
    }
}

// Zones live in a process-wide table (kept across reloads by name, size and key): each test
// names its own, as the in-process instances of parallel tests share the process.

/// The same request sequence against the machine's nginx and imbang: which requests each
/// admitted (and with which status), with several limits on one location, empty keys, burst
/// with and without nodelay, and a 429.
#[tokio::test]
async fn the_same_sequence_is_admitted_and_rejected_as_by_nginx() {
    let origin = backend("app").await;
    let o = origin.addr;
    let zones = "limit_req_zone $binary_remote_addr zone=addr:1m rate=1r/m;
         limit_req_zone $arg_u zone=user:1m rate=1r/m;
         limit_req_zone $arg_t zone=tok:1m rate=30r/m;";
    let locations = format!(
        "location /a {{ limit_req zone=user burst=2 nodelay; proxy_pass http://{o}; }}
         location /b {{ limit_req zone=user burst=1 nodelay; limit_req zone=tok burst=3 nodelay; limit_req_status 429; proxy_pass http://{o}; }}
         location /c {{ limit_req zone=tok nodelay; limit_req zone=user burst=4 nodelay; proxy_pass http://{o}; }}
         location /d {{ limit_req zone=addr burst=5 nodelay; proxy_pass http://{o}; }}"
    );
    let sequence = [
        "/a?u=1",
        "/a?u=1",
        "/a?u=2",
        "/a?u=1",
        "/a?u=1",
        "/a",
        "/a",
        "/b?u=3&t=x",
        "/b?u=3&t=x",
        "/b?u=3&t=x",
        "/b?t=x",
        "/b?t=x",
        "/b?u=4",
        "/b?u=4",
        "/b?u=4",
        "/c?t=y&u=5",
        "/c?t=y&u=5",
        "/c?t=z&u=5",
        "/c?u=5",
        "/c?u=5",
        "/c?u=5",
        "/c?t=w",
        "/c?t=w",
        "/d",
        "/d",
        "/d",
        "/d",
        "/d",
        "/d",
        "/d",
        "/d",
        "/a?u=3",
        "/b?u=1&t=q",
    ];
    let dir = TempDir::new("limits-nginx");
    let Some((_nginx, nginx)) = support::start_nginx(
        &dir,
        &format!("access_log off; {zones} server {{ listen 127.0.0.1:{{listen}}; {locations} }}"),
    )
    .await
    else {
        return;
    };
    let lb = imbang(&http(o, zones, &locations)).await;
    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    for path in sequence {
        theirs.push((path, request(nginx, "GET", path, "localhost", None).await.0));
        ours.push((
            path,
            request(lb.addr, "GET", path, "localhost", None).await.0,
        ));
    }
    assert_eq!(ours, theirs);
    // The sequence rejects some and admits some.
    assert!(ours.iter().any(|(_, s)| *s == 503) && ours.iter().any(|(_, s)| *s == 429));
}
