//! NGINX Plus's active health checks (`health_check`, `match`): real backends whose health
//! page the test turns bad and good, imbang in-process, and what clients see.
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use support::{
    ImbangGuard, Lb, TempDir, eventually, free_port, imbang, serve_hyper, wait_pid_file,
};
use tokio::sync::watch;

/// A backend that answers `/health` with the status and body the test sets (after the gate
/// opens, when it is closed) and anything else with its name.
#[derive(Clone)]
struct App {
    name: &'static str,
    health: Arc<Mutex<(u16, &'static str)>>,
    /// Check requests received, and other requests.
    checks: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    /// The `Host` and `User-Agent` of the last check request.
    seen: Arc<Mutex<(String, String)>>,
    gate: watch::Sender<bool>,
}

impl App {
    async fn start(name: &'static str) -> (Self, std::net::SocketAddr) {
        let app = Self {
            name,
            health: Arc::new(Mutex::new((200, "fine"))),
            checks: Arc::default(),
            served: Arc::default(),
            seen: Arc::default(),
            gate: watch::channel(true).0,
        };
        let handler = app.clone();
        let addr = serve_hyper(move |req: Request<hyper::body::Incoming>| {
            let app = handler.clone();
            async move {
                if req.uri().path() != "/health" {
                    app.served.fetch_add(1, Ordering::SeqCst);
                    return Ok(Response::new(Full::new(Bytes::from(app.name))));
                }
                let header = |name| {
                    let value = req.headers().get(name);
                    value.map_or("", |v| v.to_str().unwrap_or("")).to_owned()
                };
                *app.seen.lock().unwrap() = (header("host"), header("user-agent"));
                let _ = app.gate.subscribe().wait_for(|open| *open).await;
                app.checks.fetch_add(1, Ordering::SeqCst);
                let (status, body) = *app.health.lock().unwrap();
                let mut res = Response::new(Full::new(Bytes::from(body)));
                *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                Ok::<_, std::convert::Infallible>(res)
            }
        })
        .await;
        (app, addr)
    }

    fn set(&self, status: u16, body: &'static str) {
        *self.health.lock().unwrap() = (status, body);
    }

    fn checks(&self) -> usize {
        self.checks.load(Ordering::SeqCst)
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

fn config(a: std::net::SocketAddr, b: std::net::SocketAddr, check: &str, extra: &str) -> String {
    format!(
        "daemon off; error_log stderr crit;
         http {{
           {extra}
           upstream app {{ server {a}; server {b}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; {check} }} }}
         }}"
    )
}

/// The names that answer `n` requests in a row.
async fn answers(lb: &Lb, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        let (status, body) = lb.get("/").await;
        v.push(format!("{status} {body}"));
    }
    v
}

/// Waits (bounded) until `n` requests in a row are all answered by `want`.
async fn until_only(lb: &Lb, want: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = answers(lb, n).await;
        if got.iter().all(|a| a == want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never only {want:?}; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends requests (bounded) until `app` has served more than `more_than` of them.
async fn until_served(lb: &Lb, app: &App, more_than: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.served() <= more_than {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never got a request",
            app.name
        );
        answers(lb, 2).await;
    }
}

async fn until_checked(app: &App, more_than: usize) {
    let what = format!("a check of {} past {more_than}", app.name);
    eventually(&what, Duration::from_secs(10), || app.checks() > more_than).await;
}

#[tokio::test]
async fn a_peer_failing_its_check_gets_no_requests_until_it_passes_again() {
    let (a, a_addr) = App::start("a").await;
    let (b, b_addr) = App::start("b").await;
    let check = "health_check uri=/health interval=50ms fails=2 passes=2;";
    let lb = imbang(&config(a_addr, b_addr, check, "")).await;
    assert_eq!(lb.server.health_checks(), (1, 2));
    until_checked(&a, 0).await;
    assert_eq!(answers(&lb, 4).await, ["200 a", "200 b", "200 a", "200 b"]);

    a.set(503, "down");
    until_only(&lb, "200 b", 6).await;
    // Out means out: while unhealthy it is sent nothing but checks.
    let (served, checks) = (a.served(), a.checks());
    answers(&lb, 10).await;
    until_checked(&a, checks + 2).await;
    assert_eq!(answers(&lb, 6).await, vec!["200 b"; 6]);
    assert_eq!(a.served(), served, "requests reached the unhealthy peer");

    a.set(200, "fine");
    until_served(&lb, &a, served).await;
    assert!(b.checks() > 0, "b is checked too");
    // The check request's Host is the proxy_pass host (no proxy_set_header Host here).
    let (host, agent) = a.seen.lock().unwrap().clone();
    assert_eq!(host, "app");
    assert!(agent.starts_with("imbang/"), "{agent}");
}

#[tokio::test]
async fn a_match_block_tests_status_headers_and_body() {
    let (a, a_addr) = App::start("a").await;
    let (_b, b_addr) = App::start("b").await;
    let matcher = "match good { status 200; header Content-Length; body !~ \"maint\"; }";
    let check = "health_check uri=/health interval=50ms match=good;";
    let lb = imbang(&config(a_addr, b_addr, check, matcher)).await;
    until_checked(&a, 0).await;
    assert_eq!(answers(&lb, 2).await, ["200 a", "200 b"]);

    // A 200 that the default rule would pass fails the body test.
    a.set(200, "under maintenance");
    until_only(&lb, "200 b", 6).await;
    a.set(200, "all good");
    until_served(&lb, &a, a.served()).await;
    // A 3xx passes without a match, but not this one.
    a.set(302, "moved");
    until_only(&lb, "200 b", 6).await;
}

#[tokio::test]
async fn mandatory_holds_a_peer_out_until_its_first_check_answers() {
    let (a, a_addr) = App::start("a").await;
    let (_b, b_addr) = App::start("b").await;
    a.gate.send_replace(false); // a's check waits
    let check = "health_check uri=/health interval=50ms mandatory;";
    let lb = imbang(&config(a_addr, b_addr, check, "")).await;
    // b passes its first check (the count rises before imbang has the answer: wait for b to
    // serve); a has not answered its check: checking, so out.
    until_only(&lb, "200 b", 4).await;
    assert_eq!(a.served(), 0);
    a.gate.send_replace(true);
    until_checked(&a, 0).await;
    until_served(&lb, &a, 0).await;
}

#[tokio::test]
async fn with_every_peer_unhealthy_the_answer_is_502_and_a_lone_peer_is_checked_too() {
    let (a, a_addr) = App::start("a").await;
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{ upstream one {{ server {a_addr}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://one; health_check uri=/health interval=50ms; }} }} }}"
    );
    let lb = imbang(&conf).await;
    until_checked(&a, 0).await;
    assert_eq!(lb.get("/").await, (200, "a".to_owned()));
    a.set(500, "broken");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lb.get("/").await.0 != 502 {
        assert!(tokio::time::Instant::now() < deadline, "never 502");
    }
    let served = a.served();
    assert_eq!(lb.get("/").await.0, 502);
    assert_eq!(a.served(), served);
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_checks_verdicts_and_dropping_the_check_frees_the_peer() {
    let (a, a_addr) = App::start("a").await;
    let (b, b_addr) = App::start("b").await;
    let check = "health_check uri=/health interval=50ms;";
    let lb = imbang(&config(a_addr, b_addr, check, "")).await;
    until_checked(&a, 0).await;
    a.set(503, "down");
    until_only(&lb, "200 b", 6).await;

    // The same check, written elsewhere in the file: still running, a still out at once.
    let checks = a.checks();
    lb.reload(&format!("\n\n{}", config(a_addr, b_addr, check, "")))
        .await;
    assert_eq!(lb.server.health_checks(), (1, 2));
    assert_eq!(answers(&lb, 6).await, vec!["200 b"; 6]);
    until_checked(&a, checks).await;

    // Without the check, nothing holds a out.
    lb.reload(&config(a_addr, b_addr, "", "")).await;
    assert_eq!(lb.server.health_checks(), (0, 0));
    let got = answers(&lb, 4).await;
    assert_eq!(got.iter().filter(|g| *g == "200 a").count(), 2, "{got:?}");
    // And nothing checks any more: after a request to each, no new check arrives meanwhile.
    let (checks_a, checks_b) = (a.checks(), b.checks());
    answers(&lb, 10).await;
    assert!(a.checks() <= checks_a + 1 && b.checks() <= checks_b + 1);
}

/// Whether `log` has a line at `level` (`2026/12/06 22:23:10 [warn] 1#0: ...`) saying `what`.
fn logged(log: &str, level: &str, what: &str) -> bool {
    let level = format!(" [{level}] ");
    (log.lines()).any(|l| l.contains(&level) && l.split_once(": ").is_some_and(|(_, m)| m == what))
}

#[tokio::test]
async fn the_error_log_says_when_a_peer_turns_unhealthy_and_healthy_in_nginx_plus_words() {
    // The real binary: the error log is the process's.
    let dir = TempDir::new("hc-log");
    let (a, a_addr) = App::start("a").await;
    let (_b, b_addr) = App::start("b").await;
    let (port, dead) = (free_port(), free_port());
    let conf = format!(
        "daemon off; pid logs/imbang.pid; error_log logs/error.log notice;
         http {{
           upstream app {{ server {a_addr}; server {b_addr}; server 127.0.0.1:{dead}; }}
           server {{ listen 127.0.0.1:{port};
             location / {{ proxy_pass http://app; health_check uri=/health interval=50ms; }} }}
         }}"
    );
    dir.write("imbang.conf", &conf);
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let prefix = format!("{}/", dir.path().display());
    let guard = ImbangGuard::start(&prefix);
    wait_pid_file(&guard.pid_file, Duration::from_secs(10)).await;
    until_checked(&a, 0).await;
    a.set(503, "down");
    let log = dir.path().join("logs/error.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let unhealthy = format!(
        "peer is unhealthy while checking status code, health check \"\" of peer {a_addr} in upstream \"app\""
    );
    eventually("the unhealthy line", Duration::from_secs(10), || {
        logged(&read(), "warn", &unhealthy)
    })
    .await;
    a.set(200, "fine");
    let healthy = format!(
        "peer is healthy while checking status code, health check \"\" of peer {a_addr} in upstream \"app\""
    );
    eventually("the healthy line", Duration::from_secs(10), || {
        logged(&read(), "notice", &healthy)
    })
    .await;
    // A peer that refuses connections: the error itself at [error], and the change.
    let text = read();
    let about = format!("health check \"\" of peer 127.0.0.1:{dead} in upstream \"app\"");
    let refused =
        format!("connect() failed (111: Connection refused) while connecting to upstream, {about}");
    assert!(logged(&text, "error", &refused), "{text}");
    let out = format!("peer is unhealthy while connecting to upstream, {about}");
    assert!(logged(&text, "warn", &out), "{text}");
    drop(guard);
}

#[tokio::test]
async fn persistent_lets_a_healthy_peer_through_a_reload_that_changes_a_mandatory_check() {
    let (a, a_addr) = App::start("a").await;
    let (b, b_addr) = App::start("b").await;
    let check = |params: &str| format!("health_check uri=/health mandatory {params};");
    let lb = imbang(&config(
        a_addr,
        b_addr,
        &check("persistent interval=50ms"),
        "",
    ))
    .await;
    // Both pass their first checks (waited for by what they serve: `mandatory` holds each out
    // until imbang has the answer).
    until_served(&lb, &a, 0).await;
    until_served(&lb, &b, 0).await;

    // From now on a's checks never answer. A changed check is a new check; `persistent` keeps
    // a, healthy until now, in while the new check's first probe waits.
    a.gate.send_replace(false);
    lb.reload(&config(
        a_addr,
        b_addr,
        &check("persistent interval=60ms"),
        "",
    ))
    .await;
    let served = a.served();
    answers(&lb, 4).await;
    assert_eq!(a.served(), served + 2);

    // Without `persistent`, a waits for its first check again, which never comes.
    let checks_b = b.checks();
    lb.reload(&config(a_addr, b_addr, &check("interval=70ms"), ""))
        .await;
    until_checked(&b, checks_b).await;
    until_only(&lb, "200 b", 6).await;
    assert_eq!(a.served(), served + 2);
}

#[tokio::test]
async fn with_two_checks_on_a_group_either_one_holds_a_peer_out() {
    let (a, a_addr) = App::start("a").await;
    let (_b, b_addr) = App::start("b").await;
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{
           match fine {{ body ~ fine; }}
           upstream app {{ server {a_addr}; server {b_addr}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; health_check uri=/health interval=50ms; }}
             location /x {{ proxy_pass http://app; health_check uri=/health interval=60ms match=fine; }}
           }}
         }}"
    );
    let lb = imbang(&conf).await;
    assert_eq!(lb.server.health_checks(), (2, 4));
    until_checked(&a, 1).await;
    until_served(&lb, &a, 0).await;
    // A 200 passes the first check; the second wants "fine" in the body.
    a.set(200, "meh");
    until_only(&lb, "200 b", 6).await;
    a.set(200, "fine");
    until_served(&lb, &a, a.served()).await;
}
