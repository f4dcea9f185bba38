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

// === what each failure does to a request with a body (issue 5's failover matrix) ===

/// `servers` (each `server ...;` line) in `upstream app`, `http` holding `extra` directives.
fn conf_with(servers: &str, extra: &str) -> String {
    format!(
        "daemon off; error_log stderr crit;
         http {{
           {extra}
           upstream app {{ {servers} }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://app; }} }}
         }}"
    )
}

/// `method /` with a body of `len` bytes, over a new connection.
async fn send(lb: &support::Lb, method: &str, len: usize) -> Result<(u16, String), String> {
    let body = "x".repeat(len);
    let body = (len > 0).then_some(body.as_str());
    support::try_request(lb.addr, method, "/", "localhost", body).await
}

/// Below nginx's default `client_body_buffer_size` (8k): kept in memory, can be sent again.
const KEPT: usize = 6000;
/// Above it: kept in a temporary file (`proxy_request_buffering on`, the default), or streamed
/// to the first peer and not kept (`proxy_request_buffering off`).
const STREAMED: usize = 50_000;

/// Bodies go to the peer as they arrive, as with nginx's `proxy_request_buffering off`.
const UNBUFFERED: &str = "proxy_request_buffering off;";

async fn crashing() -> support::TestBackend {
    let any = "127.0.0.1:0".parse().unwrap();
    backend_with("crash", Behaviour::CloseAfterRead, any).await
}

#[tokio::test]
async fn a_post_whose_first_peer_refused_arrives_complete_at_the_next() {
    for len in [KEPT, STREAMED] {
        let dead = backend("dead").await;
        dead.stop();
        let a = backend("a").await;
        let lb = imbang(&two(&dead, &a, "")).await;
        let (status, body) = send(&lb, "POST", len).await.unwrap();
        assert_eq!((status, body), (200, format!("a POST / body={len}")));
        assert_eq!((a.hits(), a.body_bytes()), (1, len), "once, whole");
    }
}

#[tokio::test]
async fn a_kept_put_is_sent_again_after_the_peer_crashed_with_it() {
    let crash = crashing().await;
    let b = backend("b").await;
    let lb = imbang(&two(&crash, &b, "")).await;
    let (status, body) = send(&lb, "PUT", KEPT).await.unwrap();
    assert_eq!((status, body), (200, format!("b PUT / body={KEPT}")));
    assert_eq!((crash.hits(), b.hits(), b.body_bytes()), (1, 1, KEPT));
}

#[tokio::test]
async fn a_post_that_reached_a_peer_is_never_sent_again() {
    for len in [0, KEPT, STREAMED] {
        let crash = crashing().await;
        let b = backend("b").await;
        let lb = imbang(&two(&crash, &b, "")).await;
        let (status, _) = send(&lb, "POST", len).await.unwrap();
        assert_eq!(status, 502, "body of {len}");
        assert_eq!(
            (crash.hits(), b.hits()),
            (1, 0),
            "executed once, body of {len}"
        );
    }
}

#[tokio::test]
async fn a_put_larger_than_the_buffer_is_sent_again_from_its_file() {
    // nginx's default: the body is read whole (beyond client_body_buffer_size into a
    // temporary file) before the first peer, so the next peer gets all of it.
    let crash = crashing().await;
    let b = backend("b").await;
    let lb = imbang(&two(&crash, &b, "")).await;
    let (status, body) = send(&lb, "PUT", STREAMED).await.unwrap();
    assert_eq!((status, body), (200, format!("b PUT / body={STREAMED}")));
    assert_eq!((crash.hits(), b.hits(), b.body_bytes()), (1, 1, STREAMED));
}

#[tokio::test]
async fn an_unbuffered_put_is_not_sent_again() {
    let crash = crashing().await;
    let b = backend("b").await;
    let servers = format!("server {}; server {};", crash.addr, b.addr);
    let lb = imbang(&conf_with(&servers, UNBUFFERED)).await;
    assert_eq!(send(&lb, "PUT", STREAMED).await.unwrap().0, 502);
    assert_eq!((crash.hits(), b.hits()), (1, 0));
}

#[tokio::test]
async fn non_idempotent_lets_a_kept_post_go_to_the_next_peer() {
    let crash = crashing().await;
    let b = backend("b").await;
    let servers = format!("server {}; server {};", crash.addr, b.addr);
    let lb = imbang(&conf_with(
        &servers,
        "proxy_next_upstream error timeout non_idempotent;",
    ))
    .await;
    let (status, body) = send(&lb, "POST", KEPT).await.unwrap();
    assert_eq!((status, body), (200, format!("b POST / body={KEPT}")));
    // Executed by both: what `non_idempotent` asks for.
    assert_eq!((crash.hits(), b.hits()), (1, 1));
}

#[tokio::test]
async fn a_peer_breaking_mid_response_closes_the_client_connection_and_nothing_is_retried() {
    for (method, len) in [("GET", 0), ("POST", KEPT)] {
        let any = "127.0.0.1:0".parse().unwrap();
        let broken = backend_with("broken", Behaviour::BreakMidBody, any).await;
        let b = backend("b").await;
        let lb = imbang(&two(&broken, &b, "")).await;
        let got = send(&lb, method, len).await;
        assert!(
            got.is_err(),
            "{method}: a short body must not look complete: {got:?}"
        );
        assert_eq!((broken.hits(), b.hits()), (1, 0), "{method}: not retried");
    }
}

#[tokio::test]
async fn a_peer_breaking_mid_response_leaves_the_client_a_short_body_and_a_closed_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let any = "127.0.0.1:0".parse().unwrap();
    let broken = backend_with("broken", Behaviour::BreakMidBody, any).await;
    let lb = imbang(&two(&broken, &backend("b").await, "")).await;
    let mut stream = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes));
    read.await.expect("the connection is closed").ok();
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 1000"),
        "{head}"
    );
    assert_eq!(
        body, "0123456789",
        "the bytes the peer sent, then the connection closed"
    );
}

#[tokio::test]
async fn a_502_with_http_502_listed_moves_a_get_on_but_not_a_post() {
    for (method, len, want) in [
        ("GET", 0, "b GET /"),
        ("POST", KEPT, "bad POST / body=6000"),
    ] {
        let any = "127.0.0.1:0".parse().unwrap();
        let bad = backend_with("bad", Behaviour::Status(502), any).await;
        let b = backend("b").await;
        let servers = format!("server {}; server {};", bad.addr, b.addr);
        let lb = imbang(&conf_with(
            &servers,
            "proxy_next_upstream error timeout http_502;",
        ))
        .await;
        let (status, body) = send(&lb, method, len).await.unwrap();
        let status_want = if method == "GET" { 200 } else { 502 };
        assert_eq!((status, body.as_str()), (status_want, want), "{method}");
        let b_hits = usize::from(method == "GET");
        assert_eq!((bad.hits(), b.hits()), (1, b_hits), "{method}");
    }
}

#[tokio::test]
async fn a_hung_peer_s_timeout_is_a_504_for_a_post_with_a_body_never_resent() {
    let any = "127.0.0.1:0".parse().unwrap();
    let hung = backend_with("hung", Behaviour::Hang, any).await;
    let b = backend("b").await;
    let servers = format!("server {}; server {};", hung.addr, b.addr);
    let lb = imbang(&conf_with(&servers, "proxy_read_timeout 300ms;")).await;
    assert_eq!(send(&lb, "POST", KEPT).await.unwrap().0, 504);
    assert_eq!((hung.hits(), b.hits()), (1, 0));
}

#[tokio::test]
async fn unbuffered_client_body_buffer_size_decides_which_bodies_can_be_sent_again() {
    for (setting, len, want) in [
        (
            "proxy_request_buffering off; client_body_buffer_size 1k;",
            KEPT,
            502,
        ),
        (
            "proxy_request_buffering off; client_body_buffer_size 64k;",
            STREAMED,
            200,
        ),
        ("client_body_buffer_size 1k;", KEPT, 200),
    ] {
        let crash = crashing().await;
        let b = backend("b").await;
        let servers = format!("server {}; server {};", crash.addr, b.addr);
        let lb = imbang(&conf_with(&servers, setting)).await;
        let (status, _) = send(&lb, "PUT", len).await.unwrap();
        assert_eq!(status, want, "{setting} PUT of {len}");
        assert_eq!(
            b.body_bytes(),
            if want == 200 { len } else { 0 },
            "{setting}"
        );
    }
}

// === a peer that dies under a request: did it read it? (issue 5, scenario (f)) ===

/// A backend that answers `after` requests, then meets every later one with `behaviour`'s
/// failure, beside a healthy `b`; imbang in front, round robin starting with the first.
async fn failing_then_healthy(
    behaviour: Behaviour,
) -> (support::TestBackend, support::TestBackend, support::Lb) {
    let any = "127.0.0.1:0".parse().unwrap();
    let failing = backend_with("failing", behaviour, any).await;
    let b = backend("b").await;
    let lb = imbang(&two(&failing, &b, "")).await;
    (failing, b, lb)
}

#[tokio::test]
async fn a_post_the_peer_reset_unread_goes_to_the_next_peer() {
    // On a new connection: the first request reaches the failing peer, which closes the
    // connection with the request unread (the kernel resets it).
    for len in [0, KEPT] {
        let (failing, b, lb) = failing_then_healthy(Behaviour::ResetUnread { after: 0 }).await;
        let (status, body) = send(&lb, "POST", len).await.unwrap();
        let want = if len > 0 {
            format!("b POST / body={len}")
        } else {
            "b POST /".to_owned()
        };
        assert_eq!((status, body), (200, want), "body of {len}");
        assert_eq!(
            failing.resets(),
            1,
            "the first peer was tried, body of {len}"
        );
        assert_eq!(
            (failing.hits(), b.hits(), b.body_bytes()),
            (0, 1, len),
            "executed once, by b, body of {len}"
        );
    }
}

#[tokio::test]
async fn a_post_reset_unread_on_a_pooled_connection_goes_to_the_next_peer() {
    // Scenario (f): a keep-alive connection to a peer whose process is killed while the next
    // request waits unread in its socket.
    let (failing, b, lb) = failing_then_healthy(Behaviour::ResetUnread { after: 1 }).await;
    // `failing` answers the first GET and keeps the connection; b answers the second.
    assert_eq!(names(lb.bodies("/", 2).await), ["failing", "b"]);
    let (status, body) = send(&lb, "POST", KEPT).await.unwrap();
    assert_eq!((status, body), (200, format!("b POST / body={KEPT}")));
    // The pooled connection was reset, then a new one to the same peer (what a peer that
    // merely closed an idle connection needs), then the POST moved on.
    assert_eq!(failing.resets(), 2);
    assert_eq!((failing.hits(), b.hits(), b.body_bytes()), (1, 2, KEPT));
}

#[tokio::test]
async fn a_large_post_reset_unread_goes_to_the_next_peer_from_its_file() {
    let (failing, b, lb) = failing_then_healthy(Behaviour::ResetUnread { after: 0 }).await;
    let (status, body) = send(&lb, "POST", STREAMED).await.unwrap();
    assert_eq!((status, body), (200, format!("b POST / body={STREAMED}")));
    assert_eq!(
        (failing.resets(), b.hits(), b.body_bytes()),
        (1, 1, STREAMED)
    );
}

#[tokio::test]
async fn an_unbuffered_post_reset_unread_is_not_sent_again() {
    // The body went out as it arrived and was not kept: there is nothing to send again.
    let any = "127.0.0.1:0".parse().unwrap();
    let failing = backend_with("failing", Behaviour::ResetUnread { after: 0 }, any).await;
    let b = backend("b").await;
    let servers = format!("server {}; server {};", failing.addr, b.addr);
    let lb = imbang(&conf_with(&servers, UNBUFFERED)).await;
    assert_eq!(send(&lb, "POST", STREAMED).await.unwrap().0, 502);
    assert_eq!((failing.resets(), b.hits()), (1, 0));
}

#[tokio::test]
async fn a_post_the_peer_read_and_closed_unanswered_is_a_502_executed_once() {
    // A FIN after the whole request was read: the peer may have acted on it. On a new
    // connection and on a pooled one.
    for after in [0, 1] {
        let (failing, b, lb) = failing_then_healthy(Behaviour::FinAfterRead { after }).await;
        if after == 1 {
            assert_eq!(names(lb.bodies("/", 2).await), ["failing", "b"]);
        }
        let (status, _) = send(&lb, "POST", KEPT).await.unwrap();
        assert_eq!(status, 502, "after {after}");
        assert_eq!(
            (failing.hits(), failing.body_bytes(), b.hits()),
            (after + 1, KEPT, after),
            "executed exactly once, by the peer that closed, after {after}"
        );
    }
}
