//! The dashboard's script, run by Node.js against a live API: what it would put on the page
//! (the summary, the zones, each group's health and its peers' rows) as peers answer, and when
//! one goes down. Node stands in for a browser's JavaScript engine with `fetch`; the page's
//! layout is not rendered here: tests/dashboard_browser.rs renders it in headless Chromium.
//! Skipped with a message when `node` is missing (./test.sh installs it).
mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{TempDir, backend, imbang};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs the page's script with a `document` that keeps what it is given, and `fetch` resolving
/// the page's relative paths against the API; prints the elements' contents once a second.
const DRIVER: &str = r#"
const api = process.argv[2];
const els = {};
globalThis.document = { getElementById: id => (els[id] ??= { innerHTML: "", textContent: "" }) };
const realFetch = globalThis.fetch;
globalThis.fetch = (path, options) => realFetch(new URL(path, api), options);
setTimeout(() => setInterval(() => console.log(JSON.stringify(els)), 1000), 500);
"#;

#[tokio::test]
async fn the_dashboard_shows_the_groups_health_rates_and_zones() {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: node (Node.js) is not installed; ./test.sh installs nodejs");
        return;
    }
    let (a, b) = (backend("a").await, backend("b").await);
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{ access_log off;
           upstream app {{ server {a}; server {b}; }}
           server {{ listen 127.0.0.1:0; status_zone front;
             location / {{ proxy_pass http://app; health_check interval=100ms fails=1; }}
             location /api/ {{ api; }}
           }}
         }}",
        a = a.addr,
        b = b.addr
    );
    let lb = imbang(&conf).await;
    let (_, page) = lb.get("/api/dashboard.html").await;
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .expect("the page's script")
        .0;
    let dir = TempDir::new("dashboard");
    let driver = dir.write("driver.js", &format!("{DRIVER}\n{script}"));
    let mut node = tokio::process::Command::new("node")
        .arg(&driver)
        .arg(format!("http://{}/api/dashboard.html", lb.addr))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    // Polls what the page shows until `done` holds, sending requests meanwhile.
    let mut until = async |what: &str, done: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            for _ in 0..5 {
                lb.get("/").await;
            }
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("the page did not show {what} within 10 s"))
                .unwrap()
                .expect("node ended");
            let shown: Value = serde_json::from_str(&line).unwrap();
            if done(&shown) {
                return shown;
            }
        }
    };
    let html = |v: &Value, id: &str| v[id]["innerHTML"].as_str().unwrap_or("").to_owned();
    let shown = until("both peers up and requests moving", &|v| {
        html(v, "upstreams").contains("2 of 2 up")
            && !html(v, "summary").contains("<b>–</b><span>req/s")
    })
    .await;
    assert_eq!(shown["error"]["textContent"], "", "{shown:#}");
    assert!(
        html(&shown, "summary").contains("<span>peers up</span>"),
        "{shown:#}"
    );
    assert!(
        html(&shown, "zones").contains("<td class=\"l\">front</td>"),
        "{shown:#}"
    );
    assert!(
        html(&shown, "upstreams").contains(&a.addr.to_string()),
        "{shown:#}"
    );

    b.stop();
    let shown = until("b down", &|v| html(v, "upstreams").contains("1 of 2 up")).await;
    let rows = html(&shown, "upstreams");
    assert!(
        rows.contains(&format!(
            "<tr class=\"unhealthy\" data-peer=\"{0}\"><td class=\"l\">{0}</td>",
            b.addr
        )),
        "{rows}"
    );
    assert!(
        html(&shown, "summary").contains("<b>1/2</b><span>peers up</span>"),
        "{shown:#}"
    );
}
