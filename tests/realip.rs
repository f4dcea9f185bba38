//! The realip module: the client address from a trusted proxy's field. Observed in the access
//! log, in what the backend receives (`X-Forwarded-For` built with
//! `$proxy_add_x_forwarded_for`), in `allow`/`deny` and in `ip_hash`'s choice. Clients connect
//! from different loopback addresses, as proxies on other hosts would.
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{TempDir, backend, imbang, serve_hyper};

const WAIT: Duration = Duration::from_secs(5);

/// One request from `source` with extra header lines; the whole raw response.
async fn send_from(source: &str, addr: SocketAddr, path: &str, fields: &str) -> String {
    let source: IpAddr = source.parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{fields}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A backend answering with the `X-Forwarded-For` and `X-Real-IP` it received.
async fn header_echo() -> SocketAddr {
    serve_hyper(|req: hyper::Request<hyper::body::Incoming>| async move {
        let get = |n: &str| {
            req.headers()
                .get(n)
                .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned())
        };
        let body = format!(
            "xff=[{}] real=[{}]",
            get("x-forwarded-for"),
            get("x-real-ip")
        );
        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
    })
    .await
}

#[tokio::test]
async fn x_forwarded_for_from_trusted_hops_recursive_or_not() {
    let dir = TempDir::new("realip");
    let log = dir.path().join("a.log");
    let echo = header_echo().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           log_format r '$uri $remote_addr [$remote_port] $realip_remote_addr $binary_remote_addr';
           access_log {log} r;
           real_ip_header X-Forwarded-For;
           server {{
             listen 127.0.0.1:0;
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
             proxy_set_header X-Real-IP $remote_addr;
             location / {{
               set_real_ip_from 127.0.0.1;
               set_real_ip_from 10.0.0.0/8;
               location /once {{ proxy_pass http://{echo}; }}
               location /rec {{ real_ip_recursive on; proxy_pass http://{echo}; }}
             }}
           }}
         }}",
        log = log.display(),
    ))
    .await;
    let xff = "X-Forwarded-For: 203.0.113.9, 10.1.1.1\r\n";
    // Trusted peer, not recursive: the last address, trusted or not.
    let r = send_from("127.0.0.1", lb.addr, "/once", xff).await;
    assert!(
        r.ends_with("xff=[203.0.113.9, 10.1.1.1, 10.1.1.1] real=[10.1.1.1]"),
        "{r}"
    );
    // Recursive: back past the trusted 10.1.1.1 to the first untrusted address.
    let r = send_from("127.0.0.1", lb.addr, "/rec", xff).await;
    assert!(
        r.ends_with("xff=[203.0.113.9, 10.1.1.1, 203.0.113.9] real=[203.0.113.9]"),
        "{r}"
    );
    // An untrusted peer's field changes nothing.
    let r = send_from("127.0.0.2", lb.addr, "/rec", xff).await;
    assert!(
        r.ends_with("xff=[203.0.113.9, 10.1.1.1, 127.0.0.2] real=[127.0.0.2]"),
        "{r}"
    );
    // Every hop trusted: the first address; an address with a port gives the port.
    let r = send_from(
        "127.0.0.1",
        lb.addr,
        "/rec",
        "X-Forwarded-For: 10.0.0.7:4711, 10.2.2.2\r\n",
    )
    .await;
    assert!(r.ends_with("real=[10.0.0.7]"), "{r}");
    support::eventually("four lines", WAIT, || lines(&log).len() == 4).await;
    let got = lines(&log);
    assert_eq!(got[0], r"/once 10.1.1.1 [] 127.0.0.1 \x0A\x01\x01\x01");
    assert_eq!(got[1], r"/rec 203.0.113.9 [] 127.0.0.1 \xCB\x00q\x09");
    assert!(got[2].starts_with("/rec 127.0.0.2 ["), "{}", got[2]);
    assert!(
        got[2].contains("] 127.0.0.2 \\x7F\\x00\\x00\\x02"),
        "{}",
        got[2]
    );
    assert_eq!(got[3], r"/rec 10.0.0.7 [4711] 127.0.0.1 \x0A\x00\x00\x07");
}

/// nginx runs the module with the server's settings first (post-read phase): what it finds
/// there stands, and a location's `real_ip_recursive` does not run it again.
#[tokio::test]
async fn the_server_level_result_stands() {
    let echo = header_echo().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           access_log off;
           set_real_ip_from 127.0.0.1;
           set_real_ip_from 10.0.0.0/8;
           real_ip_header X-Forwarded-For;
           server {{
             listen 127.0.0.1:0;
             proxy_set_header X-Real-IP $remote_addr;
             location /rec {{ real_ip_recursive on; proxy_pass http://{echo}; }}
           }}
         }}"
    ))
    .await;
    let r = send_from(
        "127.0.0.1",
        lb.addr,
        "/rec",
        "X-Forwarded-For: 203.0.113.9, 10.1.1.1\r\n",
    )
    .await;
    assert!(r.ends_with("real=[10.1.1.1]"), "{r}");
}

#[tokio::test]
async fn x_real_ip_and_any_field_and_server_before_location() {
    let dir = TempDir::new("realip-field");
    let log = dir.path().join("b.log");
    let app = backend("app").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           log_format r '$uri $remote_addr $x';
           access_log {log} r;
           upstream app {{ server {app}; }}
           server {{
             listen 127.0.0.1:0;
             set $x -;
             location /real {{ set_real_ip_from 127.0.0.0/8; set $x $remote_addr; proxy_pass http://app; }}
             location /cdn {{
               set_real_ip_from 127.0.0.1; real_ip_header CF-Connecting-IP;
               proxy_pass http://app;
             }}
             location /ret {{ set_real_ip_from 127.0.0.0/8; return 200 $remote_addr; }}
           }}
         }}",
        app = app.addr,
        log = log.display(),
    ))
    .await;
    send_from("127.0.0.1", lb.addr, "/real", "X-Real-IP: 198.51.100.1\r\n").await;
    send_from(
        "127.0.0.1",
        lb.addr,
        "/cdn",
        "cf-connecting-ip: 2001:db8::1\r\n",
    )
    .await;
    // The location's settings act in nginx's preaccess phase: after `return`.
    let r = send_from("127.0.0.1", lb.addr, "/ret", "X-Real-IP: 198.51.100.1\r\n").await;
    assert!(r.ends_with("\r\n\r\n127.0.0.1"), "{r}");
    support::eventually("three lines", WAIT, || lines(&log).len() == 3).await;
    assert_eq!(
        lines(&log),
        [
            // The location's `set` ran before its realip (rewrite phase, then preaccess).
            "/real 198.51.100.1 127.0.0.1",
            "/cdn 2001:db8::1 -",
            "/ret 127.0.0.1 -",
        ]
    );
}

#[tokio::test]
async fn the_real_address_is_what_allow_deny_and_ip_hash_see() {
    let a = backend("a").await;
    let b = backend("b").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           access_log off;
           upstream pair {{ ip_hash; server {a}; server {b}; }}
           server {{
             listen 127.0.0.1:0;
             set_real_ip_from 127.0.0.1;
             set_real_ip_from 127.0.0.3;
             real_ip_header X-Forwarded-For;
             location / {{ deny 192.0.2.66; allow all; proxy_pass http://pair; }}
           }}
         }}",
        a = a.addr,
        b = b.addr,
    ))
    .await;
    let denied = send_from("127.0.0.1", lb.addr, "/", "X-Forwarded-For: 192.0.2.66\r\n").await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    // From an untrusted peer the field is ignored: the peer itself is allowed.
    let untrusted = send_from("127.0.0.2", lb.addr, "/", "X-Forwarded-For: 192.0.2.66\r\n").await;
    assert!(untrusted.starts_with("HTTP/1.1 200"), "{untrusted}");
    // ip_hash chooses by the real client: the same for both trusted proxies, and clients of
    // different /24 networks spread over both peers.
    let mut seen = std::collections::HashSet::new();
    for net in 0..16 {
        let field = format!("X-Forwarded-For: 198.51.{net}.7\r\n");
        let one = send_from("127.0.0.1", lb.addr, "/x", &field).await;
        let three = send_from("127.0.0.3", lb.addr, "/x", &field).await;
        let body = |r: &str| r.rsplit("\r\n\r\n").next().unwrap().to_owned();
        assert_eq!(body(&one), body(&three), "198.51.{net}.7");
        seen.insert(body(&one));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn directives_are_checked_as_nginx_checks_them() {
    use support::compile;
    let wrap = |s: &str| format!("events {{}} http {{ {s} server {{ listen 127.0.0.1:0; }} }}");
    assert!(compile(&wrap("set_real_ip_from 10.0.0.0/8; set_real_ip_from unix:; set_real_ip_from ::1; real_ip_recursive on;")).is_ok());
    let e = compile(&wrap("set_real_ip_from no-such-host.invalid;")).unwrap_err();
    assert!(
        e.contains("host not found in set_real_ip_from \"no-such-host.invalid\""),
        "{e}"
    );
    let e = compile(&wrap(
        "real_ip_header X-Real-IP; real_ip_header X-Forwarded-For;",
    ))
    .unwrap_err();
    assert!(
        e.contains("\"real_ip_header\" directive is duplicate"),
        "{e}"
    );
    let e = compile(&wrap("real_ip_recursive maybe;")).unwrap_err();
    assert!(e.contains("real_ip_recursive"), "{e}");
    let e = compile("events {} set_real_ip_from 10.0.0.1; http {}").unwrap_err();
    assert!(
        e.contains("\"set_real_ip_from\" directive is not allowed here"),
        "{e}"
    );
}

/// The same requests through imbang and the machine's nginx 1.22 give the same addresses
/// (skipped when nginx is not installed): lists, ports, IPv6, several fields, bad values.
#[tokio::test]
async fn addresses_are_nginx_s() {
    let echo = header_echo().await;
    let dir = TempDir::new("realip-nginx");
    let http = |log: &std::path::Path| {
        format!(
            "log_format r '$uri|$remote_addr|$remote_port|$realip_remote_port|$binary_remote_addr|$proxy_add_x_forwarded_for';
             access_log {log} r;
             server {{
               listen 127.0.0.1:{{listen}};
               set_real_ip_from 127.0.0.1;
               set_real_ip_from 10.0.0.0/8;
               set_real_ip_from 2001:db8::/32;
               location /once {{ real_ip_header X-Forwarded-For; proxy_pass http://{echo}; }}
               location /rec {{ real_ip_header X-Forwarded-For; real_ip_recursive on; proxy_pass http://{echo}; }}
               location /real {{ real_ip_recursive on; proxy_pass http://{echo}; }}
               location /cf {{ real_ip_header cf-connecting-ip; proxy_pass http://{echo}; }}
             }}",
            log = log.display(),
        )
    };
    let theirs = dir.path().join("nginx.log");
    let Some((_nginx, addr)) = support::start_nginx(&dir, &http(&theirs)).await else {
        return;
    };
    let ours = dir.path().join("imbang.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; http {{ {} }}",
        http(&ours).replace("{listen}", "0")
    ))
    .await;
    let cases = [
        ("/once", "X-Forwarded-For: 203.0.113.9, 10.1.1.1\r\n"),
        ("/rec", "X-Forwarded-For: 203.0.113.9, 10.1.1.1\r\n"),
        ("/rec", "X-Forwarded-For: 10.0.0.1, 10.1.1.1\r\n"),
        (
            "/rec",
            "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 10.2.2.2, 10.1.1.1\r\n",
        ),
        (
            "/once",
            "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 10.2.2.2\r\n",
        ),
        ("/rec", "X-Forwarded-For: 198.51.100.4:8080\r\n"),
        ("/rec", "X-Forwarded-For: 2001:db8::5, [2001:db8::6]:99\r\n"),
        ("/rec", "X-Forwarded-For: unknown, 10.1.1.1\r\n"),
        ("/rec", "X-Forwarded-For: 10.1.1.1,, 203.0.113.1 ,\r\n"),
        ("/once", "X-Forwarded-For: garbage\r\n"),
        // The server level's settings (X-Real-IP, not recursive) act first and find 10.3.3.3:
        // the location's `real_ip_recursive on` never runs.
        ("/real", "X-Real-IP: 203.0.113.7, 10.3.3.3\r\n"),
        ("/cf", "CF-Connecting-IP: 192.0.2.200\r\n"),
    ];
    for (path, fields) in cases {
        for to in [lb.addr, addr] {
            send_from("127.0.0.1", to, path, fields).await;
        }
    }
    support::eventually("both logs", WAIT, || {
        lines(&ours).len() == cases.len() && lines(&theirs).len() == cases.len()
    })
    .await;
    // The connection's own port differs from run to run: written `P` where it appears.
    let tidy = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| {
                let mut f: Vec<String> = l.split('|').map(str::to_owned).collect();
                if f[2] == f[3] {
                    f[2] = "P".into();
                }
                f[3] = "P".into();
                f.join("|")
            })
            .collect()
    };
    assert_eq!(tidy(lines(&ours)), tidy(lines(&theirs)));
}
