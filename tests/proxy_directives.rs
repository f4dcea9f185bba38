//! proxy_cookie_domain, proxy_cookie_path and proxy_cookie_flags (the peer's Set-Cookie headers
//! as the client receives them on the wire) and proxy_socket_keepalive.
mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sets the cookies an app behind `app.internal` under `/app/` would set.
async fn app() -> std::net::SocketAddr {
    support::serve_hyper(|_req: Request<Incoming>| async move {
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        for c in [
            "sid=1; Domain=.App.Internal; Path=/app/; HttpOnly",
            "theme=dark; Path=/app/settings; SameSite=Strict",
            "plain=1; Path=/",
            "nodomain; Path=/app/",
        ] {
            res.headers_mut().append("set-cookie", c.parse().unwrap());
        }
        Ok::<_, std::convert::Infallible>(res)
    })
    .await
}

/// The `Set-Cookie` lines of the response to `GET path`, as sent.
async fn set_cookies(addr: std::net::SocketAddr, path: &str) -> Vec<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    head.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.to_owned())
        .collect()
}

#[tokio::test]
async fn set_cookie_headers_are_rewritten_as_nginx_rewrites_them() {
    let app = app().await;
    let lb = support::imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off;
           proxy_cookie_domain app.internal example.org;
           server {{ listen 127.0.0.1:0;
             location /site/ {{
               proxy_pass http://{app}/app/;
               proxy_cookie_path /app/ /site/;
               proxy_cookie_flags sid secure samesite=lax;
               proxy_cookie_flags ~^the nohttponly nosamesite;
             }}
             location /regex/ {{
               proxy_pass http://{app}/app/;
               proxy_cookie_path ~*^/APP/(.*)$ /regex/$1;
               proxy_cookie_domain off;
             }}
             location /off/ {{ proxy_pass http://{app}/app/; }}
           }}
         }}"
    ))
    .await;
    assert_eq!(
        set_cookies(lb.addr, "/site/").await,
        [
            "sid=1; Domain=.example.org; Path=/site/; HttpOnly; Secure; SameSite=Lax",
            "theme=dark; Path=/site/settings",
            "plain=1; Path=/",
            "nodomain; Path=/app/",
        ]
    );
    assert_eq!(
        set_cookies(lb.addr, "/regex/").await,
        [
            "sid=1; Domain=.App.Internal; Path=/regex/; HttpOnly",
            "theme=dark; Path=/regex/settings; SameSite=Strict",
            "plain=1; Path=/",
            "nodomain; Path=/app/",
        ]
    );
    // The http level's domain rule, nothing else: headers it does not match pass unchanged.
    assert_eq!(
        set_cookies(lb.addr, "/off/").await,
        [
            "sid=1; Domain=.example.org; Path=/app/; HttpOnly",
            "theme=dark; Path=/app/settings; SameSite=Strict",
            "plain=1; Path=/",
            "nodomain; Path=/app/",
        ]
    );
}

#[test]
fn bad_rules_are_refused_at_their_place() {
    let conf = |rule: &str| {
        format!(
            "events {{}} http {{ server {{ location / {{ proxy_pass http://127.0.0.1:1; {rule} }} }} }}"
        )
    };
    for (rule, want) in [
        ("proxy_cookie_path /a;", "invalid parameter \"/a\""),
        (
            "proxy_cookie_path off; proxy_cookie_path /a /b;",
            "\"proxy_cookie_path\" directive is duplicate",
        ),
        (
            "proxy_cookie_flags sid sometimes;",
            "invalid flag \"sometimes\" in \"proxy_cookie_flags\" directive",
        ),
        (
            "proxy_cookie_domain $host example.org;",
            "variables in \"$host\" are not supported by imbang yet",
        ),
        (
            "proxy_cookie_path ~(unclosed /b;",
            "invalid regular expression \"(unclosed\"",
        ),
    ] {
        let err = support::compile(&conf(rule)).unwrap_err();
        assert!(err.contains(want), "{rule}: {err}");
        assert!(err.contains("/t/imbang.conf:1:"), "{rule}: {err}");
    }
}

/// The kernel's timer of each established IPv4 socket connected to `port` (the `tr` column of
/// /proc/net/tcp: 2 is the keepalive timer, armed only on sockets with SO_KEEPALIVE).
fn timers_towards(port: u16) -> Vec<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let rem_port = u16::from_str_radix(f[2].split(':').nth(1)?, 16).ok()?;
            let established = f[3] == "01";
            let timer = f[5].split(':').next()?.parse().ok()?;
            (rem_port == port && established).then_some(timer)
        })
        .collect()
}

/// `proxy_socket_keepalive on` puts SO_KEEPALIVE on the connections to the peer (seen by the
/// kernel, which arms its keepalive timer); without it there is none.
#[tokio::test]
async fn proxy_socket_keepalive_sets_so_keepalive_on_upstream_connections() {
    for (setting, want) in [("on", 2), ("off", 0)] {
        let app = app().await;
        let lb = support::imbang(&format!(
            "daemon off; error_log stderr crit; events {{}}
             http {{ access_log off;
               upstream app {{ server {app}; keepalive 2; }}
               server {{ listen 127.0.0.1:0;
                 location / {{ proxy_pass http://app; proxy_http_version 1.1;
                   proxy_set_header Connection \"\"; proxy_socket_keepalive {setting}; }}
               }}
             }}"
        ))
        .await;
        set_cookies(lb.addr, "/").await;
        // The pooled connection to the app stays open after the response.
        assert_eq!(
            timers_towards(app.port()),
            [want],
            "proxy_socket_keepalive {setting}"
        );
    }
}
