//! `limit_except`: requests whose method the block does not list (HEAD comes with GET) get the
//! block's `allow`/`deny` (and `proxy_pass`) instead of the location's, and, as in nginx, not the
//! location's rewrite statements. Expectations checked against nginx 1.22; compared side by side when installed.
mod support;

use std::net::SocketAddr;

fn locations(app: SocketAddr, other: SocketAddr) -> String {
    format!(
        "location /ret {{ limit_except GET {{ allow all; }} return 200 \"ret\"; }}
         location /retdeny {{ limit_except GET {{ deny all; }} return 200 \"ret\"; }}
         location /p {{ limit_except GET POST {{ deny all; }} proxy_pass http://{app}; }}
         location /p2 {{ limit_except GET {{ allow 127.0.0.1; deny all; }} deny 127.0.0.1; proxy_pass http://{app}; }}
         location /p3 {{ limit_except GET {{ deny all; }} allow all; proxy_pass http://{app}; }}
         location /set {{ set $a 1; limit_except GET {{ allow all; }} proxy_pass http://{app}; add_header X-A \"a=$a\"; }}
         location /pp {{ limit_except GET {{ proxy_pass http://{other}; }} proxy_pass http://{app}; }}"
    )
}

/// (method, path, body): which upstream a `proxy_pass` inside the block sends to.
const PROXIED: &[(&str, &str, &str)] = &[
    ("GET", "/pp", "app GET /pp"),
    ("POST", "/pp", "other POST /pp"),
    ("DELETE", "/pp", "other DELETE /pp"),
];

/// (method, path, status, `X-A` field or "") as nginx 1.22 answers.
const EXPECTED: &[(&str, &str, u16, &str)] = &[
    ("GET", "/ret", 200, ""),
    ("HEAD", "/ret", 200, ""),
    ("GET", "/retdeny", 200, ""),
    ("HEAD", "/retdeny", 200, ""),
    // Not listed: the location's `return` does not run for it (nginx: the static module's 404).
    ("POST", "/ret", 404, ""),
    ("POST", "/retdeny", 403, ""),
    ("DELETE", "/retdeny", 403, ""),
    ("GET", "/p", 200, ""),
    ("POST", "/p", 200, ""),
    ("HEAD", "/p", 200, ""),
    ("PUT", "/p", 403, ""),
    ("PATCH", "/p", 403, ""),
    // The location's `deny` is for GET and HEAD only; the block's rules for the others.
    ("GET", "/p2", 403, ""),
    ("HEAD", "/p2", 403, ""),
    ("POST", "/p2", 200, ""),
    ("PUT", "/p2", 200, ""),
    ("GET", "/p3", 200, ""),
    ("POST", "/p3", 403, ""),
    // `set` runs for GET only.
    ("GET", "/set", 200, "a=1"),
    ("POST", "/set", 200, "a="),
];

/// Status, `X-A` and body of a request with `method` on a new connection.
async fn ask(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = if method == "POST" || method == "PUT" || method == "PATCH" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{body}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let x_a = head
        .lines()
        .find_map(|l| l.strip_prefix("X-A: "))
        .unwrap_or("")
        .to_owned();
    (support::status(&text), x_a, body.to_owned())
}

async fn check(addr: SocketAddr, who: &str) {
    for &(method, path, status, x_a) in EXPECTED {
        let (got_status, got_x_a, _) = ask(addr, method, path).await;
        assert_eq!(
            (got_status, got_x_a),
            (status, x_a.to_owned()),
            "{who}: {method} {path}"
        );
    }
    for &(method, path, body) in PROXIED {
        let (status, _, got) = ask(addr, method, path).await;
        assert_eq!(
            (status, got.as_str()),
            (200, body),
            "{who}: {method} {path}"
        );
    }
}

#[tokio::test]
async fn other_methods_get_the_block_s_access_rules() {
    let app = support::backend("app").await;
    let other = support::backend("other").await;
    let lb = support::imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; server {{ listen 127.0.0.1:0; {} }} }}",
        locations(app.addr, other.addr)
    ))
    .await;
    check(lb.addr, "imbang").await;
}

#[tokio::test]
async fn nginx_answers_the_same() {
    let app = support::backend("app").await;
    let other = support::backend("other").await;
    let dir = support::TempDir::new("limit-except-nginx");
    let http = format!(
        "access_log off; server {{ listen 127.0.0.1:{{listen}}; {} }}",
        locations(app.addr, other.addr)
    );
    let Some((_nginx, addr)) = support::start_nginx(&dir, &http).await else {
        return;
    };
    check(addr, "nginx").await;
}
