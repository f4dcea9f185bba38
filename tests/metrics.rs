//! `prometheus all` on the wire: after a known sequence of requests, failures and reloads, the
//! page parses with Prometheus's own linter (`promtool check metrics`, Debian's `prometheus`
//! package; that check is skipped with a message when it is missing) and says what happened.
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{
    Behaviour, ImbangGuard, TempDir, backend, backend_with, request, wait_accepting, wait_pid_file,
};
use tokio::io::AsyncWriteExt;

fn config(port: u16, good: SocketAddr, five: SocketAddr, dead: SocketAddr) -> String {
    format!(
        "daemon off; worker_processes 1; pid logs/imbang.pid; error_log logs/error.log;
         events {{}}
         http {{
             access_log off;
             upstream app {{ server {good}; }}
             upstream \"five\" {{ server {five}; }}
             upstream dead {{ server {dead}; }}
             server {{
                 listen 127.0.0.1:{port};
                 status_zone front;
                 location /a {{ status_zone loc_a; proxy_pass http://app; }}
                 location /five {{ proxy_pass http://five; }}
                 location /dead {{ proxy_pass http://dead; }}
                 location = /metrics {{ prometheus all; }}
             }}
         }}"
    )
}

/// The value of the sample `series` (name and labels as written) on `page`.
fn value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{page}"))
}

/// `promtool check metrics` on `page`: its complaints, or `None` when promtool is missing.
async fn promtool(page: &str) -> Option<String> {
    let mut child = match tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(_) => {
            eprintln!(
                "skipped promtool check: promtool is not installed (Debian's prometheus package)"
            );
            return None;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(page.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("promtool within 30 s")
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() {
        said
    } else {
        format!("exit {:?}: {said}", out.status.code())
    })
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, page) = request(addr, "GET", "/metrics", "localhost", None).await;
    assert_eq!(status, 200);
    page
}

async fn reload(pid: i32, dir: &Path, text: &str) {
    std::fs::write(dir.join("imbang.conf"), text).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
}

#[tokio::test]
async fn the_metrics_say_what_happened_and_promtool_reads_them() {
    let good = backend("good").await;
    let five = backend_with(
        "five",
        Behaviour::Status(503),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    // A port nothing listens on: connections are refused.
    let dead: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let dir = TempDir::new("metrics");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let port = support::free_port();
    let text = config(port, good.addr, five.addr, dead);
    dir.write("imbang.conf", &text);
    let prefix = format!("{}/", dir.path().display());
    let _imbang = ImbangGuard::start(&prefix);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_accepting(addr, Duration::from_secs(10)).await;
    let pid = wait_pid_file(&dir.path().join("logs/imbang.pid"), Duration::from_secs(10)).await;

    for _ in 0..3 {
        assert_eq!(request(addr, "GET", "/a", "localhost", None).await.0, 200);
    }
    assert_eq!(
        request(addr, "GET", "/five", "localhost", None).await.0,
        503
    );
    for _ in 0..2 {
        assert_eq!(
            request(addr, "GET", "/dead", "localhost", None).await.0,
            502
        );
    }
    let (status, _) = request(addr, "POST", "/metrics", "localhost", None).await;
    assert_eq!(status, 405);
    let page = scrape(addr).await;

    if let Some(complaints) = promtool(&page).await {
        assert_eq!(complaints, "", "promtool check metrics on\n{page}");
    }
    let app = "upstream=\"app\",peer=\"".to_owned() + &good.addr.to_string() + "\"";
    let v = |series: &str| value(&page, series);
    assert_eq!(
        v(&format!("imbang_upstream_peer_requests_total{{{app}}}")),
        3.0
    );
    let class =
        |c: &str| format!("imbang_upstream_peer_responses_total{{{app},code_class=\"{c}\"}}");
    assert_eq!(v(&class("2xx")), 3.0);
    assert_eq!(v(&class("5xx")), 0.0);
    assert_eq!(
        v(&format!("imbang_upstream_peer_failures_total{{{app}}}")),
        0.0
    );
    assert_eq!(v(&format!("imbang_upstream_peer_active{{{app}}}")), 0.0);
    assert_eq!(
        v(&format!("imbang_upstream_peer_state{{{app},state=\"up\"}}")),
        1.0
    );
    assert_eq!(
        v(&format!(
            "imbang_upstream_peer_state{{{app},state=\"down\"}}"
        )),
        0.0
    );
    // Three heads of `GET /a` went out; three heads and bodies (`good`) came back.
    let sent = v(&format!("imbang_upstream_peer_sent_bytes_total{{{app}}}"));
    let received = v(&format!(
        "imbang_upstream_peer_received_bytes_total{{{app}}}"
    ));
    assert!(
        sent > 3.0 * "GET /a HTTP/1.0\r\n".len() as f64,
        "sent {sent}"
    );
    assert!(
        received > 3.0 * ("HTTP/1.1 200 OK\r\n".len() + "good".len()) as f64,
        "received {received}"
    );
    // Idle pooled connections to the group's peers (a number; what the pool kept).
    v("imbang_upstream_keepalive_connections{upstream=\"app\"}");

    // Latency histograms per group: the three answers of `app` (a local peer: under 5 ms... or
    // at least under 10 s), none of `dead`.
    for name in ["header", "response"] {
        let series = |suffix: &str, labels: &str| {
            v(&format!(
                "imbang_upstream_{name}_duration_seconds_{suffix}{{{labels}}}"
            ))
        };
        assert_eq!(series("count", "upstream=\"app\""), 3.0);
        assert_eq!(series("bucket", "upstream=\"app\",le=\"+Inf\""), 3.0);
        assert_eq!(series("bucket", "upstream=\"app\",le=\"10\""), 3.0);
        assert!(series("sum", "upstream=\"app\"") < 30.0);
        assert_eq!(series("count", "upstream=\"dead\""), 0.0);
        assert_eq!(series("count", "upstream=\"five\""), 1.0);
    }

    let five_peer = format!("upstream=\"five\",peer=\"{}\"", five.addr);
    assert_eq!(
        v(&format!(
            "imbang_upstream_peer_responses_total{{{five_peer},code_class=\"5xx\"}}"
        )),
        1.0
    );
    let dead_peer = format!("upstream=\"dead\",peer=\"{dead}\"");
    assert_eq!(
        v(&format!(
            "imbang_upstream_peer_requests_total{{{dead_peer}}}"
        )),
        2.0
    );
    assert_eq!(
        v(&format!(
            "imbang_upstream_peer_failures_total{{{dead_peer}}}"
        )),
        2.0
    );
    assert_eq!(
        v(&format!(
            "imbang_upstream_peer_sent_bytes_total{{{dead_peer}}}"
        )),
        0.0
    );

    // Status zones: the server's counts every request (the scrape too, still processing).
    assert_eq!(
        v("imbang_http_server_zone_requests_total{zone=\"front\"}"),
        8.0
    );
    assert_eq!(v("imbang_http_server_zone_processing{zone=\"front\"}"), 1.0);
    let zone_class = |zone: &str, c: &str| {
        format!(
            "imbang_http_{zone}_zone_responses_total{{zone=\"{}\",code_class=\"{c}\"}}",
            if zone == "server" { "front" } else { "loc_a" }
        )
    };
    assert_eq!(v(&zone_class("server", "5xx")), 3.0, "one 503, two 502");
    assert_eq!(v(&zone_class("server", "4xx")), 1.0, "the refused POST");
    assert_eq!(v(&zone_class("location", "2xx")), 3.0);
    // Their times: the seven requests done (not the scrape), and the three of `/a`.
    let zone_time = |kind: &str, zone: &str| {
        let name = format!("imbang_http_{kind}_zone_request_duration_seconds");
        let count = v(&format!("{name}_count{{zone=\"{zone}\"}}"));
        let all = v(&format!("{name}_bucket{{zone=\"{zone}\",le=\"+Inf\"}}"));
        assert_eq!(count, all);
        count
    };
    assert_eq!(zone_time("server", "front"), 7.0);
    assert_eq!(zone_time("location", "loc_a"), 3.0);
    assert_eq!(
        v("imbang_http_location_zone_discarded_total{zone=\"loc_a\"}"),
        0.0
    );

    // The test's wait for the listener, 6 + 1 proxied and refused requests, and the scrape:
    // each a connection of its own.
    assert_eq!(v("imbang_connections_accepted_total"), 9.0);
    assert_eq!(v("imbang_connections_handled_total"), 9.0);
    assert_eq!(v("imbang_connections_dropped_total"), 0.0);
    assert_eq!(v("imbang_http_requests_total"), 8.0);
    assert!(v("imbang_connections_active") >= 1.0);
    assert_eq!(v("imbang_connections_writing"), 1.0, "the scrape itself");
    assert_eq!(v("imbang_config_reloads_total"), 0.0);
    assert_eq!(v("imbang_config_last_reload_successful"), 1.0);
    let loaded = v("imbang_config_last_reload_success_timestamp_seconds");
    let build = format!(
        "imbang_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&page, &build), 1.0);

    // A reload refused, then one put in force.
    reload(pid, dir.path(), "events {} http { nonsense; }").await;
    let page = scrape_until(addr, "the refused reload", |page| {
        value(page, "imbang_config_reload_failures_total") == 1.0
    })
    .await;
    assert_eq!(value(&page, "imbang_config_last_reload_successful"), 0.0);
    assert_eq!(value(&page, "imbang_config_reloads_total"), 0.0);
    reload(pid, dir.path(), &text).await;
    let page = scrape_until(addr, "the reload", |page| {
        value(page, "imbang_config_reloads_total") == 1.0
    })
    .await;
    assert_eq!(value(&page, "imbang_config_last_reload_successful"), 1.0);
    assert_eq!(value(&page, "imbang_config_reload_failures_total"), 1.0);
    assert!(value(&page, "imbang_config_last_reload_success_timestamp_seconds") >= loaded);
    // The peers' counters survive the reload.
    assert_eq!(
        value(
            &page,
            &format!("imbang_upstream_peer_requests_total{{{app}}}")
        ),
        3.0
    );
}

/// Scrapes until `done` says the page shows what a reload (signalled, so asynchronous) did;
/// bounded by 10 s.
async fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = scrape(addr).await;
        if done(&page) {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not in the metrics after 10 s:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn prometheus_takes_the_built_in_template_only() {
    use support::compile;
    let ok = |c: &str| compile(&format!("events {{}} http {{ server {{ {c} }} }}"));
    assert_eq!(ok("location = /metrics { prometheus all; }"), Ok(()));
    let err = ok("location = /metrics { prometheus custom; }").unwrap_err();
    assert!(
        err.contains("unknown prometheus template \"custom\""),
        "{err}"
    );
    let err = ok("prometheus all;").unwrap_err();
    assert!(
        err.contains("\"prometheus\" directive is not allowed here"),
        "{err}"
    );
    let err = compile("events {} http { prometheus_template t { } }").unwrap_err();
    assert!(err.contains("is not supported by imbang yet"), "{err}");
}
