//! The rewrite module (`rewrite`, `if`, `set`, `return`, `break`) with real upstreams, and the
//! same configuration run side by side with the machine's nginx (when it is installed).
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::{ChildGuard, TempDir, backend, free_port, imbang, wait_accepting};
use tokio::net::TcpStream;

/// What a client sees of one answer: status, the headers asked for, and the body.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// Headers a test looks at.
const WATCHED: [&str; 4] = ["location", "x-first", "x-second", "x-if"];

async fn fetch(addr: SocketAddr, host: &str, path: &str) -> Seen {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.expect("request");
    let status = res.status().as_u16();
    let headers = WATCHED
        .iter()
        .filter_map(|name| {
            let v = res.headers().get(*name)?.to_str().ok()?;
            Some((name.to_string(), v.to_owned()))
        })
        .collect();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Seen {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The `http {}` block both servers run: `LISTEN` and `APP` are filled in, `FILE` is a regular
/// file and `DIR` a directory.
const SITE: &str = r#"
  access_log off;
  upstream app { server APP; }
  upstream other { server OTHER; }
  server {
    listen LISTEN;
    server_name rw.test www.rw.test;
    if ($host ~* ^www\.(.*)$) { return 301 https://$1$request_uri; }
    rewrite ^/old/(.*)$ /new/$1 permanent;
    rewrite ^/legacy/(\d+)$ /items?id=$1 last;
    rewrite ^/srv/(.*)$ /items/$1;
    location /items { proxy_pass http://app; }
    location /new/ { proxy_pass http://app; }
    location /api/ { rewrite ^/api/(.*)$ /$1 break; proxy_pass http://app/v1/; }
    location /keep/ { rewrite ^/keep/(.*)$ /keep/x/$1 break; proxy_pass http://app/v1/; }
    location /again/ { rewrite ^/again/(.*)$ /items/$1; return 403; }
    location /loop { rewrite ^ /loop last; }
    location /addargs { rewrite ^ /items?x=1 last; }
    location /dropargs { rewrite ^ /items? last; }
    location /setargs { rewrite ^ /items?y=$arg_a? last; }
    location /evil { set $t 1; if ($t) { add_header X-First 1; } if ($t) { add_header X-Second 2; } return 204; }
    location /ifreturn { if ($arg_to = app) { proxy_pass http://app; } return 403; }
    location /ifbreak { if ($arg_to = app) { proxy_pass http://app; break; } return 403; }
    location /ifnotproxy { if ($arg_to != app) { return 404; } proxy_pass http://app; }
    location /order1 { return 200 "a=$a"; set $a 1; }
    location /order2 { set $a 1; return 200 "a=$a"; }
    location /ifset { set $v none; if ($arg_x) { set $v $arg_x; } return 200 "v=$v"; }
    location /named/ { if ($uri ~ ^/named/(?<word>[a-z]+)/(\d+)$) { return 200 "$word $2"; } return 404; }
    location /neg { if ($arg_a !~* ^yes$) { return 418; } return 200 ok; }
    location /ci { if ($arg_a ~* ^YES$) { return 200 yes; } return 200 no; }
    location /file { if (-f FILE) { return 200 file; } return 404; }
    location /notfile { if (!-f FILE) { return 200 not-file; } return 200 file; }
    location /dir { if (-d DIR) { return 200 dir; } return 404; }
    location /exists { if (-e DIR/nothing) { return 200 exists; } return 200 missing; }
    location /redir/ { rewrite ^/redir/(.*)$ /items/$1 redirect; }
    location /perm/ { rewrite ^/perm/(.*)$ https://rw.test/$1 permanent; }
    location /abs/ { rewrite ^/abs/(.*)$ http://other.test/$1; }
    location /ret { return 302 /items; }
    location /last/ { rewrite ^/last/(.*)$ /items/$1 last; return 500; }
    location /locif/ { proxy_pass http://app/base/; if ($arg_a) { add_header X-If 1; } }
    location /ifrewrite { if ($arg_a) { rewrite ^ /items/z break; } proxy_pass http://app; }
    location ~ ^/re/(\w+)/(\w+)$ { rewrite ^ /items/$2/$1 last; }
    location /persist { set $p kept; rewrite ^ /show?a=1 last; }
    location = /show { return 200 "p=$p uri=$uri args=$args is_args=$is_args arg_a=$arg_a"; }
    location /brk { set $a 1; break; set $a 2; return 200 $a; }
    location ~ ^/cap/(\d+) { return 200 "cap=$1"; }
    location /capif { if ($arg_v ~ ^(\w)) { return 200 "first=$1"; } return 200 "none=$1"; }
    location /method { if ($request_method = POST) { return 405; } return 200 $request_method; }
    location /slash { rewrite ^([^.]*[^/])$ $1/ permanent; return 200 slash; }
    location /host { return 301 $scheme://$host$request_uri; }
    location /esc/ { rewrite ^/esc/(.*)$ /items/$1 last; }
    location /twoups { proxy_pass http://app; if ($arg_b) { proxy_pass http://other; } }
    location /ep { error_page 418 = /epfix; return 418; }
    location = /epfix { rewrite ^ /items/fixed?from=ep last; }
    location /epnamed { error_page 418 = @ep; set $why teapot; return 418; }
    location @ep { rewrite ^ /items/named?why=$why last; }
    location /qa/ { rewrite ^/qa/(.*)$ /items?v=$1 last; }
    location = /internal { internal; return 200 internal; }
    location /tointernal { rewrite ^ /internal last; }
  }
  server {
    listen LISTEN;
    server_name secure.test;
    if ($scheme = http) { return 301 https://$host$request_uri; }
    return 200 secure;
  }
  server {
    listen LISTEN;
    server_name plain.test;
    return 301 https://$host$request_uri;
  }
"#;

/// Requests and what nginx 1.22 answers them with the configuration above: (Host, path,
/// status, `Location` or "", body: the upstream's echo of what it received, a `return`'s text,
/// or "" for a server's own error page). `PORT` stands for the port the request came to.
const EXPECTED: &[(&str, &str, u16, &str, &str)] = &[
    // The www redirect of a server-level `if`, with the regex's capture.
    (
        "www.rw.test",
        "/a/b?c=1",
        301,
        "https://rw.test/a/b?c=1",
        "",
    ),
    // Server-level rewrites: a permanent redirect (made absolute, arguments kept), a legacy
    // URL to new arguments (the request's appended), a flagless one the search then follows.
    (
        "rw.test",
        "/old/x?y=2",
        301,
        "http://rw.test:PORT/new/x?y=2",
        "",
    ),
    (
        "rw.test",
        "/legacy/42?z=3",
        200,
        "",
        "app GET /items?id=42&z=3",
    ),
    ("rw.test", "/srv/p?q=1", 200, "", "app GET /items/p?q=1"),
    (
        "rw.test",
        "/items/plain?k=v",
        200,
        "",
        "app GET /items/plain?k=v",
    ),
    // `rewrite ... break` with `proxy_pass http://app/v1/`: the new URI goes as it is.
    ("rw.test", "/api/users?id=1", 200, "", "app GET /users?id=1"),
    ("rw.test", "/keep/users", 200, "", "app GET /keep/x/users"),
    // A flagless rewrite goes on to the `return` after it.
    ("rw.test", "/again/a?b=c", 403, "", ""),
    // Ten searches again at most.
    ("rw.test", "/loop", 500, "", ""),
    (
        "rw.test",
        "/addargs?orig=1",
        200,
        "",
        "app GET /items?x=1&orig=1",
    ),
    ("rw.test", "/dropargs?orig=1", 200, "", "app GET /items"),
    ("rw.test", "/setargs?a=5&b=6", 200, "", "app GET /items?y=5"),
    // If is evil: the last true `if` gives the settings; the script goes on after its block.
    ("rw.test", "/evil", 204, "", ""),
    ("rw.test", "/ifreturn?to=app", 403, "", ""),
    (
        "rw.test",
        "/ifbreak?to=app",
        200,
        "",
        "app GET /ifbreak?to=app",
    ),
    ("rw.test", "/ifbreak?to=x", 403, "", ""),
    (
        "rw.test",
        "/ifnotproxy?to=app",
        200,
        "",
        "app GET /ifnotproxy?to=app",
    ),
    ("rw.test", "/ifnotproxy", 404, "", ""),
    // Statements run in order.
    ("rw.test", "/order1", 200, "", "a="),
    ("rw.test", "/order2", 200, "", "a=1"),
    ("rw.test", "/ifset", 200, "", "v=none"),
    ("rw.test", "/ifset?x=0", 200, "", "v=none"),
    ("rw.test", "/ifset?x=7", 200, "", "v=7"),
    ("rw.test", "/named/abc/12", 200, "", "abc 12"),
    ("rw.test", "/named/ABC/12", 404, "", ""),
    ("rw.test", "/neg?a=YES", 200, "", "ok"),
    ("rw.test", "/neg?a=no", 418, "", ""),
    ("rw.test", "/ci?a=yes", 200, "", "yes"),
    ("rw.test", "/file", 200, "", "file"),
    ("rw.test", "/notfile", 200, "", "file"),
    ("rw.test", "/dir", 200, "", "dir"),
    ("rw.test", "/exists", 200, "", "missing"),
    (
        "rw.test",
        "/redir/r?s=1",
        302,
        "http://rw.test:PORT/items/r?s=1",
        "",
    ),
    ("rw.test", "/perm/p?s=1", 301, "https://rw.test/p?s=1", ""),
    ("rw.test", "/abs/a", 302, "http://other.test/a", ""),
    ("rw.test", "/ret", 302, "http://rw.test:PORT/items", ""),
    ("rw.test", "/last/l?m=1", 200, "", "app GET /items/l?m=1"),
    ("rw.test", "/locif/x?a=1", 200, "", "app GET /base/x?a=1"),
    ("rw.test", "/locif/x", 200, "", "app GET /base/x"),
    ("rw.test", "/ifrewrite?a=1", 200, "", "app GET /items/z?a=1"),
    ("rw.test", "/ifrewrite", 200, "", "app GET /ifrewrite"),
    // `rewrite ^` has no groups: it clears the location's `$1` and `$2`.
    (
        "rw.test",
        "/re/one/two?t=1",
        200,
        "",
        "app GET /items//?t=1",
    ),
    // Variables set before `last` live on; `$uri`, `$args` and `$arg_*` are the rewritten ones.
    (
        "rw.test",
        "/persist?b=2",
        200,
        "",
        "p=kept uri=/show args=a=1&b=2 is_args=? arg_a=1",
    ),
    (
        "rw.test",
        "/show",
        200,
        "",
        "p= uri=/show args= is_args= arg_a=",
    ),
    // `break` ends the script: no `return`, no `proxy_pass`, so 404.
    ("rw.test", "/brk", 404, "", ""),
    ("rw.test", "/cap/12", 200, "", "cap=12"),
    ("rw.test", "/capif?v=xy", 200, "", "first=x"),
    ("rw.test", "/capif", 200, "", "none="),
    ("rw.test", "/method", 200, "", "GET"),
    (
        "rw.test",
        "/slash/a",
        301,
        "http://rw.test:PORT/slash/a/",
        "",
    ),
    ("rw.test", "/slash/a.html", 200, "", "slash"),
    ("rw.test", "/host?x=1", 301, "http://rw.test/host?x=1", ""),
    (
        "rw.test",
        "/esc/a%20b?q=%20",
        200,
        "",
        "app GET /items/a%20b?q=%20",
    ),
    // Captures from an escaped URI are escaped again in arguments and redirects.
    (
        "rw.test",
        "/redir/a%20b%26c",
        302,
        "http://rw.test:PORT/items/a%20b&c",
        "",
    ),
    (
        "rw.test",
        "/qa/a%26b%20c",
        200,
        "",
        "app GET /items?v=a%26b%20c",
    ),
    ("rw.test", "/qa/a+b", 200, "", "app GET /items?v=a%2Bb"),
    ("rw.test", "/qa/plain", 200, "", "app GET /items?v=plain"),
    // `error_page` targets run their rewrite phases (a named location its own only).
    (
        "rw.test",
        "/ep?q=1",
        200,
        "",
        "app GET /items/fixed?from=ep",
    ),
    (
        "rw.test",
        "/epnamed?q=1",
        200,
        "",
        "app GET /items/named?why=teapot&q=1",
    ),
    // An `internal` location: not from outside, but after a rewrite.
    ("rw.test", "/internal", 404, "", ""),
    ("rw.test", "/tointernal", 200, "", "internal"),
    // HTTP to HTTPS with `if ($scheme = http)` in a server.
    (
        "secure.test",
        "/s?t=1",
        301,
        "https://secure.test/s?t=1",
        "",
    ),
];

/// The headers the `if` blocks add, per path (the others add none).
fn expected_headers(path: &str) -> Vec<(String, String)> {
    match path {
        "/evil" => vec![("x-second".into(), "2".into())],
        "/locif/x?a=1" => vec![("x-if".into(), "1".into())],
        _ => Vec::new(),
    }
}

fn expected(path: &str, status: u16, location: &str, body: &str) -> Seen {
    let mut headers = expected_headers(path);
    if !location.is_empty() {
        headers.insert(0, ("location".into(), location.into()));
    }
    Seen {
        status,
        headers,
        body: body.into(),
    }
}

fn site(listen: &str, app: SocketAddr, other: SocketAddr, dir: &Path) -> String {
    SITE.replace("LISTEN", listen)
        .replace("APP", &app.to_string())
        .replace("OTHER", &other.to_string())
        .replace("FILE", &dir.join("file.txt").display().to_string())
        .replace("DIR", &dir.display().to_string())
}

/// The port of an absolute `Location` written as `PORT`, so two servers' answers compare.
fn without_port(mut seen: Seen, port: u16) -> Seen {
    for (_, v) in &mut seen.headers {
        *v = v.replace(&format!(":{port}/"), ":PORT/");
    }
    // nginx's and imbang's own pages differ in the server's name; the status says it all.
    if !seen.body.contains("app GET")
        && (seen.body.starts_with("<html>") || seen.body.contains("<hr><center>"))
    {
        seen.body = String::new();
    }
    seen
}

/// Starts the machine's nginx with `http` in a prefix of its own, or `None` when it is not
/// installed (or cannot start here).
async fn nginx(dir: &TempDir, http: &str, port: u16) -> Option<ChildGuard> {
    let bin = Path::new("/usr/sbin/nginx");
    if !bin.exists() {
        return None;
    }
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let conf = dir.write(
        "nginx.conf",
        &format!(
            "pid logs/nginx.pid; error_log logs/error.log notice; events {{}} http {{ {http} }}"
        ),
    );
    let child = std::process::Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off; master_process off;"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let guard = ChildGuard(child);
    wait_accepting(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )
    .await;
    Some(guard)
}

/// Asks `addr` every request of [`EXPECTED`]; the differences, one per line.
async fn differences(addr: SocketAddr, who: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (host, path, status, location, body) in EXPECTED {
        let seen = without_port(fetch(addr, host, path).await, addr.port());
        let want = expected(path, *status, location, body);
        if seen != want {
            out.push(format!(
                "{host} {path}:\n  {who}: {seen:?}\n  want:  {want:?}"
            ));
        }
    }
    out
}

#[tokio::test]
async fn redirects_rewrites_and_ifs_answer_as_nginx_does() {
    let app = backend("app").await;
    let other = backend("other").await;
    let files = TempDir::new("rewrite-files");
    files.write("file.txt", "x");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}} http {{ {} }}",
        site("127.0.0.1:0", app.addr, other.addr, files.path())
    ))
    .await;
    let wrong = differences(lb.addr, "imbang").await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The table the test above holds imbang to is what the machine's nginx answers.
#[tokio::test]
async fn nginx_answers_the_same_configuration_as_the_table_says() {
    let app = backend("app").await;
    let other = backend("other").await;
    let files = TempDir::new("rewrite-files");
    files.write("file.txt", "x");
    let prefix = TempDir::new("rewrite-nginx");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(_nginx) = nginx(
        &prefix,
        &site(&listen, app.addr, other.addr, files.path()),
        port,
    )
    .await
    else {
        eprintln!("skipped: /usr/sbin/nginx is not installed");
        return;
    };
    let wrong = differences(listen.parse().unwrap(), "nginx").await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let log = std::fs::read_to_string(prefix.path().join("logs/error.log")).unwrap();
    assert!(
        log.contains("rewrite or internal redirection cycle while processing \"/loop\""),
        "{log}"
    );
}

/// `rewrite_log on` writes nginx's notice lines for each regex and rewrite, and a cycle of
/// rewrites nginx's error line, in the real binary's error log.
#[tokio::test]
async fn rewrite_log_and_the_cycle_line_read_as_nginx_s() {
    let dir = TempDir::new("rewrite-log");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let port = free_port();
    dir.write(
        "imbang.conf",
        &format!(
            r"daemon off; pid logs/imbang.pid; error_log logs/error.log notice;
             events {{}}
             http {{ access_log off;
               server {{ listen 127.0.0.1:{port}; rewrite_log on;
                 rewrite ^/legacy/(\d+)$ /items?id=$1 last;
                 location /items {{ if ($arg_id ~ ^4) {{ return 200 ok; }} return 404; }}
                 location /r {{ rewrite ^/r/(.*) http://x/$1 permanent; }}
                 location /loop {{ rewrite_log off; rewrite ^ /loop; }}
               }}
             }}"
        ),
    );
    let prefix = format!("{}/", dir.path().display());
    let _guard = support::ImbangGuard::start(&prefix);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_accepting(addr, Duration::from_secs(10)).await;
    let host = format!("127.0.0.1:{port}");
    assert_eq!(fetch(addr, &host, "/legacy/42?z=3").await.body, "ok");
    assert_eq!(fetch(addr, &host, "/r/a?b=1").await.status, 301);
    assert_eq!(fetch(addr, &host, "/loop").await.status, 500);
    let log_path = dir.path().join("logs/error.log");
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    support::eventually("the cycle line", Duration::from_secs(10), || {
        read().contains("cycle")
    })
    .await;
    // What nginx 1.22 wrote for the same requests, after the connection number (`wait_accepting`
    // took imbang's first).
    let context = |request: &str| {
        format!(
            ", client: 127.0.0.1, server: , request: \"GET {request} HTTP/1.1\", host: \"{host}\""
        )
    };
    let want = [
        format!(
            r#""^/legacy/(\d+)$" matches "/legacy/42"{}"#,
            context("/legacy/42?z=3")
        ),
        format!(
            r#"rewritten data: "/items", args: "id=42&z=3"{}"#,
            context("/legacy/42?z=3")
        ),
        format!(r#""^4" matches "42"{}"#, context("/legacy/42?z=3")),
        format!(
            r#""^/legacy/(\d+)$" does not match "/r/a"{}"#,
            context("/r/a?b=1")
        ),
        format!(r#""^/r/(.*)" matches "/r/a"{}"#, context("/r/a?b=1")),
        format!(
            r#"rewritten redirect: "http://x/a?b=1"{}"#,
            context("/r/a?b=1")
        ),
        format!(
            r#""^/legacy/(\d+)$" does not match "/loop"{}"#,
            context("/loop")
        ),
        format!(
            r#"rewrite or internal redirection cycle while processing "/loop"{}"#,
            context("/loop")
        ),
    ];
    let log = read();
    let got: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[notice]") || l.contains("[error]"))
        .filter_map(|l| l.find(" *").map(|i| &l[i + 1..]))
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .collect();
    assert_eq!(got, want, "{log}");
}

/// `$uri` and `$args` in the access log are the rewritten ones; `$request_uri` is the
/// client's.
#[tokio::test]
async fn the_access_log_sees_the_rewritten_uri() {
    let app = backend("app").await;
    let dir = TempDir::new("rewrite-access");
    let log = dir.path().join("access.log");
    let lb = imbang(&format!(
        r"daemon off; error_log stderr crit; events {{}}
          http {{ log_format u '$uri|$args|$request_uri|$is_args';
            server {{ listen 127.0.0.1:0; access_log {} u;
              rewrite ^/legacy/(\d+)$ /items?id=$1 last;
              location /items {{ proxy_pass http://{}; }}
            }}
          }}",
        log.display(),
        app.addr
    ))
    .await;
    assert_eq!(
        lb.get("/legacy/42?z=3").await,
        (200, "app GET /items?id=42&z=3".to_owned())
    );
    support::eventually("the log line", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "/items|id=42&z=3|/legacy/42?z=3|?\n"
    );
}
