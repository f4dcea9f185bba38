//! `expires`: the Expires and Cache-Control headers clients receive. Each case was checked
//! against nginx 1.22 with the same configuration and upstream.
mod support;

use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

/// Sets its own caching headers; `/missing` answers 404.
async fn app() -> std::net::SocketAddr {
    support::serve_hyper(|req: Request<Incoming>| async move {
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        if req.uri().path().ends_with("missing") {
            *res.status_mut() = hyper::StatusCode::NOT_FOUND;
        }
        let h = res.headers_mut();
        h.append("cache-control", "private".parse().unwrap());
        h.append("cache-control", "no-transform".parse().unwrap());
        h.append("expires", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        Ok::<_, std::convert::Infallible>(res)
    })
    .await
}

/// (Date, Expires, the Cache-Control fields) of `GET path`, as sent.
async fn caching(addr: std::net::SocketAddr, path: &str) -> (String, String, Vec<String>) {
    let head = support::response_head(addr, path).await;
    let fields: Vec<(String, String)> = head
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let one = |name: &str| {
        let found = fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone());
        found.collect::<Vec<_>>()
    };
    let expires = one("expires").join(", ");
    (one("date").join(""), expires, one("cache-control"))
}

fn secs(date: &str) -> i64 {
    httpdate::parse_http_date(date)
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn expires_sets_expires_and_cache_control_as_nginx() {
    let app = app().await;
    let lb = support::imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           server {{ listen 127.0.0.1:0; expires 1h;
             location /p/ {{ proxy_pass http://{app}/; }}
             location /epoch/ {{ proxy_pass http://{app}/; expires epoch; }}
             location /max/ {{ proxy_pass http://{app}/; expires max; }}
             location /neg/ {{ proxy_pass http://{app}/; expires -1; }}
             location /zero/ {{ proxy_pass http://{app}/; expires 0; }}
             location /off/ {{ proxy_pass http://{app}/; expires off; }}
             location = /ret {{ return 200 \"hi\"; }}
           }}
         }}"
    ))
    .await;
    // Relative to the response's Date (the same clock, read at most a second apart).
    for (path, offset, cc) in [
        ("/p/x", 3600, "max-age=3600"),
        ("/ret", 3600, "max-age=3600"),
        ("/neg/x", -1, "no-cache"),
        ("/zero/x", 0, "max-age=0"),
    ] {
        let (date, expires, got_cc) = caching(lb.addr, path).await;
        let off = secs(&expires) - secs(&date);
        assert!(
            (offset - 1..=offset).contains(&off),
            "{path}: {expires} vs {date}"
        );
        assert_eq!(got_cc, [cc], "{path}");
    }
    for (path, expires, cc) in [
        (
            "/epoch/x",
            "Thu, 01 Jan 1970 00:00:01 GMT",
            vec!["no-cache"],
        ),
        (
            "/max/x",
            "Thu, 31 Dec 2037 23:55:55 GMT",
            vec!["max-age=315360000"],
        ),
        // Off, and not on a 404: the upstream's own headers, unchanged.
        (
            "/off/x",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            vec!["private", "no-transform"],
        ),
        (
            "/p/missing",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            vec!["private", "no-transform"],
        ),
    ] {
        let (_, got, got_cc) = caching(lb.addr, path).await;
        assert_eq!(
            (got.as_str(), got_cc),
            (expires, cc.iter().map(|s| s.to_string()).collect()),
            "{path}"
        );
    }
}

#[test]
fn forms_imbang_lacks_are_refused() {
    for (rule, want) in [
        (
            "expires modified 1h;",
            "\"expires\" modified is not supported by imbang yet",
        ),
        (
            "expires @15h;",
            "\"expires\" at a time of day (@) is not supported by imbang yet",
        ),
        (
            "expires $e;",
            "\"expires\" with variables is not supported by imbang yet",
        ),
        ("expires soon;", "\"expires\" directive invalid value"),
        (
            "expires 1h; expires 2h;",
            "\"expires\" directive is duplicate",
        ),
    ] {
        let err = support::compile(&format!("events {{}} http {{ {rule} }}")).unwrap_err();
        assert!(err.contains(want), "{rule}: {err}");
    }
}
