//! The lesson: two apps, stop one, the site stays up. Plus what failover must never do.
mod support;

use std::time::Duration;

use support::{Behaviour, backend, backend_with, imbang, request};

fn two(a: &support::TestBackend, b: &support::TestBackend, extra: &str) -> String {
    format!(
        "daemon off; error_log stderr crit;
         http {{
           upstream app {{ server {a}{extra}; server {b}{extra}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://app; }} }}
         }}",
        a = a.addr,
        b = b.addr,
    )
}

fn names(bodies: Vec<String>) -> Vec<String> {
    bodies
        .into_iter()
        .map(|b| b.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn requests_alternate_and_the_site_stays_up_when_one_backend_stops() {
    let a = backend("a").await;
    let b = backend("b").await;
    let lb = imbang(&two(&a, &b, "")).await;

    assert_eq!(names(lb.bodies("/", 4).await), ["a", "b", "a", "b"]);

    b.stop();
    for i in 0..20 {
        let (status, body) = lb.get("/").await;
        assert_eq!((status, body.as_str()), (200, "a GET /"), "request {i}");
    }
}

#[tokio::test]
async fn post_whose_connect_failed_goes_to_the_next_peer_once() {
    let a = backend("a").await;
    let dead = backend("dead").await;
    dead.stop();
    // The stopped backend's port refuses connections; it comes first in round-robin order.
    let lb = imbang(&two(&dead, &a, "")).await;
    let (status, body) = request(lb.addr, "POST", "/form", "localhost", Some("x=1")).await;
    assert_eq!((status, body.as_str()), (200, "a POST /form body=3"));
    assert_eq!(
        a.hits(),
        1,
        "the POST reached the live backend exactly once"
    );
}

#[tokio::test]
async fn all_peers_down_is_a_502_page_and_quick_recovery_follows() {
    let a = backend("a").await;
    let b = backend("b").await;
    a.stop();
    b.stop();
    let lb = imbang(&two(&a, &b, "")).await;
    let (status, body) = lb.get("/").await;
    assert_eq!(status, 502);
    assert!(body.contains("<title>502 Bad Gateway</title>"), "{body}");
    // Both peers are now marked failed: the next request finds no live upstream (also 502).
    assert_eq!(lb.get("/").await.0, 502);
}

#[tokio::test]
async fn a_hung_peer_times_out_with_504_and_a_get_moves_on() {
    let hung = backend_with("hung", Behaviour::Hang, "127.0.0.1:0".parse().unwrap()).await;
    let b = backend("b").await;
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{
           proxy_read_timeout 300ms;
           upstream app {{ server {}; server {}; }}
           upstream solo {{ server {}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; }}
             location /solo {{ proxy_pass http://solo; }}
           }}
         }}",
        hung.addr, b.addr, hung.addr
    );
    let lb = imbang(&conf).await;
    // GET: the timeout counts as `timeout`, so the idempotent request is retried on b.
    assert_eq!(lb.get("/").await, (200, "b GET /".to_owned()));
    // POST once sent is never re-sent: the hung peer's timeout is the client's 504.
    let lb_post = request(lb.addr, "POST", "/solo", "localhost", Some("once")).await;
    assert_eq!(lb_post.0, 504);
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn a_failed_peer_gets_traffic_again_after_fail_timeout() {
    let a = backend("a").await;
    let b = backend("b").await;
    let lb = imbang(&two(&a, &b, " fail_timeout=1s")).await;
    let b_addr = b.addr;
    b.stop();
    for _ in 0..4 {
        assert_eq!(lb.get("/").await.0, 200);
    }
    let b2 = backend_with("b2", Behaviour::Answer, b_addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = lb.get("/").await;
        assert_eq!(status, 200);
        if body.starts_with("b2 ") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b2 never got traffic back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b2.hits() >= 1);
}

#[tokio::test]
async fn backups_serve_only_while_every_primary_is_down() {
    let a = backend("a").await;
    let spare = backend("spare").await;
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{
           upstream app {{ server {}; server {} backup; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://app; }} }}
         }}",
        a.addr, spare.addr
    );
    let lb = imbang(&conf).await;
    assert_eq!(names(lb.bodies("/", 3).await), ["a", "a", "a"]);
    a.stop();
    assert_eq!(names(lb.bodies("/", 3).await), ["spare", "spare", "spare"]);
}

#[tokio::test]
async fn weights_give_nginx_s_smooth_sequence() {
    let a = backend("a").await;
    let b = backend("b").await;
    let c = backend("c").await;
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{
           upstream app {{ server {} weight=5; server {}; server {}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://app; }} }}
         }}",
        a.addr, b.addr, c.addr
    );
    let lb = imbang(&conf).await;
    assert_eq!(
        names(lb.bodies("/", 7).await),
        ["a", "a", "b", "a", "c", "a", "a"]
    );
}
