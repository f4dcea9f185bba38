//! error_page, proxy_intercept_errors, internal and named locations, as nginx.
mod support;

use support::{Behaviour, backend, backend_with, imbang};

#[tokio::test]
async fn error_pages_replace_imbang_s_own_errors_and_intercepted_peer_errors() {
    let dead = backend("dead").await;
    dead.stop();
    let missing = backend_with(
        "missing",
        Behaviour::Status(404),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let fallback = backend("fallback").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           upstream dead {{ server {}; }}
           upstream missing {{ server {}; }}
           upstream fallback {{ server {}; }}
           server {{ listen 127.0.0.1:0;
             error_page 502 503 /50x.html;
             location = /50x.html {{ internal; return 200 'sorry, try later'; }}
             location /down {{ proxy_pass http://dead; }}
             location /intercepted {{ proxy_pass http://missing; proxy_intercept_errors on; error_page 404 = @fallback; }}
             location /passed {{ proxy_pass http://missing; error_page 404 = @fallback; }}
             location /renumbered {{ return 404; error_page 404 =200 /50x.html; }}
             location /maintenance {{ return 503; error_page 503 http://status.example/; }}
             location @fallback {{ proxy_pass http://fallback; }}
           }}
         }}",
        dead.addr, missing.addr, fallback.addr
    ))
    .await;
    // imbang's own 502 (no peer answered) → the error page's text, with the original status.
    assert_eq!(lb.get("/down").await, (502, "sorry, try later".to_owned()));
    // A peer's 404 with proxy_intercept_errors → the named location, with its status (`=`).
    assert_eq!(
        lb.get("/intercepted/x").await,
        (200, "fallback GET /intercepted/x".to_owned())
    );
    // Without proxy_intercept_errors the peer's 404 passes as it is.
    assert_eq!(
        lb.get("/passed").await,
        (404, "missing GET /passed".to_owned())
    );
    assert_eq!(
        lb.get("/renumbered").await,
        (200, "sorry, try later".to_owned())
    );
    let (status, body) = lb.get("/maintenance").await;
    assert_eq!(status, 302);
    assert!(body.contains("302 Found"), "{body}");
    // An internal location is not reachable from outside.
    assert_eq!(lb.get("/50x.html").await.0, 404);
}

#[test]
fn error_page_codes_are_checked_as_nginx() {
    let errors = imbang::config::parse_str(
        "/t/imbang.conf",
        "http { server { error_page 200 /x; error_page 404 =abc /y; error_page /z; } }",
        &support::options(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        errors,
        "value \"200\" must be between 300 and 599 in /t/imbang.conf:1:28\n\
         invalid value \"=abc\" in /t/imbang.conf:1:51\n\
         invalid number of arguments in \"error_page\" directive in /t/imbang.conf:1:60"
    );
}
