//! `uninitialized_variable_warn`: a variable only `set` declares, read where no `set` gave it a
//! value, is empty and makes nginx's warn line in the error log, once per variable and request,
//! unless the directive says `off` where it is read. The real binary's error log is compared with
//! nginx 1.22's for the same requests (when the machine has nginx; the expected lines were taken
//! from it).
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::TempDir;

const SERVER: &str = r#"
    server { listen {listen}; server_name s1;
        location /set { set $a 1; return 200 "$a|$b"; }
        location /two { return 200 "$b|$b|$a"; }
        location /off { uninitialized_variable_warn off; return 200 "$b"; }
        location /hdr { add_header X-B "h$b"; return 200 "$b"; }
        location /if { if ($b) { return 200 "yes"; } return 200 "no|$b"; }
        location ~ ^/x/(?<seg>.*)$ { return 200 "$seg"; }
        location /y { return 200 "[$seg]"; }
        location /z { set $seg q; return 200 "[$seg]"; }
    }
    # `$b` is declared by a `set` elsewhere, never on the requests above.
    server { listen {listen}; server_name s2; location / { set $b x; return 200 "$b"; } }"#;

/// (path, body) in order, then the warn lines after their connection number.
const REQUESTS: &[(&str, &str)] = &[
    ("/set", "1|"),
    ("/two", "||"),
    ("/off", ""),
    ("/hdr", ""),
    ("/if", "no|"),
    // A named group's variable is not warned about, even where `set` declares it too.
    ("/y", "[]"),
];

fn expected_lines() -> Vec<String> {
    let line = |var: &str, path: &str| {
        format!(
            "using uninitialized \"{var}\" variable, client: 127.0.0.1, server: s1, request: \"GET {path} HTTP/1.1\", host: \"s1\""
        )
    };
    vec![
        line("b", "/set"),
        line("b", "/two"),
        line("a", "/two"),
        line("b", "/hdr"),
        line("b", "/if"),
    ]
}

/// The warn lines of the log at `path`, from the connection number's end on.
fn warn_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("[warn]") && l.contains("uninitialized"))
        .filter_map(|l| l.find(" *").map(|i| &l[i + 1..]))
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_owned()))
        .collect()
}

async fn ask_all(addr: SocketAddr) {
    for (path, body) in REQUESTS {
        let got = support::request(addr, "GET", path, "s1", None).await;
        assert_eq!(got, (200, (*body).to_owned()), "{path}");
    }
}

#[tokio::test]
async fn the_warn_lines_are_nginx_s() {
    let dir = TempDir::new("uninitialized-warn");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let port = support::free_port();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; pid logs/imbang.pid; error_log logs/error.log warn; events {{}}
             http {{ access_log off; {} }}",
            SERVER.replace("{listen}", &format!("127.0.0.1:{port}"))
        ),
    );
    let prefix = format!("{}/", dir.path().display());
    let _guard = support::ImbangGuard::start(&prefix);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    support::wait_accepting(addr, Duration::from_secs(10)).await;
    ask_all(addr).await;
    let log = dir.path().join("logs/error.log");
    let want = expected_lines();
    support::eventually("the warn lines", Duration::from_secs(10), || {
        warn_lines(&log).len() >= want.len()
    })
    .await;
    assert_eq!(warn_lines(&log), want);
}

#[tokio::test]
async fn nginx_writes_the_same_lines() {
    let dir = TempDir::new("uninitialized-warn-nginx");
    let log = dir.path().join("warn.log");
    let http = format!(
        "access_log off; error_log {} warn; {}",
        log.display(),
        SERVER.replace("{listen}", "127.0.0.1:{listen}")
    );
    let Some((_nginx, addr)) = support::start_nginx(&dir, &http).await else {
        return;
    };
    ask_all(addr).await;
    let want = expected_lines();
    support::eventually("nginx's warn lines", Duration::from_secs(10), || {
        warn_lines(&log).len() >= want.len()
    })
    .await;
    assert_eq!(warn_lines(&log), want);
}
