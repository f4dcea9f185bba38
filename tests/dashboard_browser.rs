//! The dashboard (`/api/dashboard.html`) rendered by a real browser: headless Chromium opens the
//! page served by imbang, and the test reads the live DOM over the DevTools protocol while it
//! sends requests: both peers up and the request rate moving, then one backend stopped and the
//! page showing that peer down; the layout, with a group of 50 peers beside, fits a 1280 px and
//! a 390 px (phone) window without a horizontal scroll. Screenshots of both windows go to
//! target/dashboard-screenshots/ (their paths are printed).
//! Skipped with a message when `chromium` is missing (./test.sh installs Debian's chromium).
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{TempDir, backend, free_port, imbang};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// Headless Chromium in its own process group (so its helper processes go with it), with a
/// DevTools websocket to one page.
struct Browser {
    child: tokio::process::Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium, or None when it is not installed.
    async fn start() -> Option<Browser> {
        let program = ["chromium", "chromium-browser"].into_iter().find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok()
        })?;
        let profile = TempDir::new("chromium");
        let mut child = tokio::process::Command::new(program)
            .args([
                "--headless",
                "--no-sandbox", // the tests may run as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it bound and the browser's websocket path once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some((port, path)) = text.split_once('\n')
                && path.starts_with("/devtools/")
            {
                break (port.trim().to_owned(), path.trim().to_owned());
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chromium exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not write {} within 30 s",
                port_file.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
            .await
            .expect("DevTools websocket");
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        Some(browser)
    }

    /// Sends a DevTools command (to the page once attached) and waits for its answer.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// [`Browser::call`], with Chromium's error answer as `Err`.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send to chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let frame = timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("chromium did not answer {method} within 20 s"))
                .expect("chromium closed the DevTools connection")
                .expect("DevTools websocket");
            let Message::Text(text) = frame else { continue };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                return match answer.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(answer["result"].clone()),
                };
            }
        }
    }

    /// Sets the window's size in CSS pixels (`mobile` as a phone: the viewport meta applies).
    async fn window(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    }

    /// What the page shows now, as [`SHOWN`] reads it (Chromium's error while a navigation
    /// replaces the page's context).
    async fn shown(&mut self) -> Value {
        let result = match self
            .try_call(
                "Runtime.evaluate",
                json!({ "expression": SHOWN, "returnByValue": true }),
            )
            .await
        {
            Ok(result) => result,
            Err(error) => return json!({ "exception": error }),
        };
        if let Some(e) = result.get("exceptionDetails") {
            panic!("reading the page failed: {e}");
        }
        serde_json::from_str(result["result"]["value"].as_str().unwrap()).unwrap()
    }

    /// Saves what the window shows as `dir/name`.
    async fn screenshot(&mut self, dir: &Path, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium and the helpers it started share its process group.
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Read in the page: the text a user sees in the summary cards, each group's badge, each
/// peer's row (its state cell and background colour), the charts' lines, the API error line
/// and the widths a horizontal scroll would show. While the page is still loading (a read can
/// land between Page.navigate and the first render), the exception is what it shows.
const SHOWN: &str = r##"(() => { try { return JSON.stringify({
  cards: Object.fromEntries([...document.querySelectorAll("#summary .card")].map(c =>
    [c.querySelector("span")?.textContent, c.querySelector("b")?.textContent])),
  groups: Object.fromEntries([...document.querySelectorAll("section.group")].map(g =>
    [g.id, g.querySelector(".badge")?.textContent])),
  peers: Object.fromEntries([...document.querySelectorAll("tr[data-peer]")].map(r =>
    [r.dataset.peer, {state: r.cells[1].textContent, background: getComputedStyle(r).backgroundColor}])),
  lines: [...document.querySelectorAll("#chart-rate polyline")].map(p => p.points.numberOfItems),
  charts: [...document.querySelectorAll(".chart svg")].map(s => s.getBoundingClientRect().width),
  error: document.getElementById("error")?.textContent ?? null,
  scrollWidth: document.documentElement.scrollWidth,
  width: window.innerWidth,
}); } catch (e) { return JSON.stringify({exception: String(e)}); } })()"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_peers_going_down_the_rate_moving_and_fits_a_phone() {
    let Some(mut browser) = Browser::start().await else {
        eprintln!("skipped: chromium is not installed; ./test.sh installs Debian's chromium");
        return;
    };
    let (a, b) = (backend("a").await, backend("b").await);
    // 50 addresses that would refuse connections, marked down.
    let many: String = (0..50)
        .map(|_| format!("server 127.0.0.1:{} down;", free_port()))
        .collect();
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{ access_log off;
           upstream app {{ server {a}; server {b}; }}
           upstream many {{ {many} }}
           server {{ listen 127.0.0.1:0; status_zone front;
             location / {{ proxy_pass http://app; health_check interval=100ms fails=1; }}
             location /many/ {{ status_zone many; proxy_pass http://many; }}
             location /api/ {{ api; }}
           }}
         }}",
        a = a.addr,
        b = b.addr
    );
    let lb = imbang(&conf).await;
    let started = Instant::now();
    // Load until the test ends: two clients, each sending a request every 10 ms at most (the
    // pace only keeps a shared machine's CPU for the rest; nothing waits on it).
    let load: Vec<_> = (0..2)
        .map(|_| {
            let addr = lb.addr;
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(Duration::from_millis(10));
                loop {
                    pace.tick().await;
                    let _ = support::try_request(addr, "GET", "/", "localhost", None).await;
                }
            })
        })
        .collect();

    browser.window(1280, 900, false).await;
    browser
        .call(
            "Page.navigate",
            json!({ "url": format!("http://{}/api/dashboard.html", lb.addr) }),
        )
        .await;

    // Polls the page until `done` holds (bounded), returning what it showed.
    async fn until(
        browser: &mut Browser,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let shown = browser.shown().await;
            if done(&shown) {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not show {what} within {within:?}; it shows {shown:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let group = |v: &Value, g: &str| {
        v["groups"][format!("group-{g}")]
            .as_str()
            .map(str::to_owned)
    };
    let rps = |v: &Value| {
        v["cards"]["req/s"]
            .as_str()
            .unwrap_or("")
            .parse::<f64>()
            .ok()
    };
    let peer = |v: &Value, addr: &std::net::SocketAddr| v["peers"][addr.to_string()].clone();

    // Both peers up, the request rate shown and non-zero.
    let first = until(
        &mut browser,
        "both peers up and a request rate",
        Duration::from_secs(15),
        |v| group(v, "app").as_deref() == Some("2 of 2 up") && rps(v).is_some_and(|r| r > 0.0),
    )
    .await;
    assert_eq!(first["error"], "", "{first:#}");
    assert_eq!(peer(&first, &a.addr)["state"], "up", "{first:#}");
    assert_eq!(peer(&first, &b.addr)["state"], "up", "{first:#}");
    // The rate moves: a later read shows another non-zero figure, and the chart grows.
    let first_rps = rps(&first).unwrap();
    let moved = until(
        &mut browser,
        "the request rate changing",
        Duration::from_secs(10),
        |v| rps(v).is_some_and(|r| r > 0.0 && r != first_rps),
    )
    .await;
    assert!(
        moved["lines"][0].as_u64().unwrap_or(0) >= 2,
        "the request-rate chart draws a line: {moved:#}"
    );
    let up_background = peer(&moved, &a.addr)["background"].clone();

    // The group of 50 refusing peers is shown down.
    until(
        &mut browser,
        "the 50 peers down",
        Duration::from_secs(15),
        |v| group(v, "many").as_deref() == Some("0 of 50 up"),
    )
    .await;

    // One backend stops: its row says so, in another colour, within a few seconds.
    b.stop();
    let stopped = Instant::now();
    let down = until(&mut browser, "b down", Duration::from_secs(5), |v| {
        group(v, "app").as_deref() == Some("1 of 2 up")
    })
    .await;
    let shown_after = stopped.elapsed();
    assert_eq!(peer(&down, &b.addr)["state"], "unhealthy", "{down:#}");
    assert_eq!(peer(&down, &a.addr)["state"], "up", "{down:#}");
    assert_ne!(
        peer(&down, &b.addr)["background"],
        up_background,
        "{down:#}"
    );
    assert_eq!(down["cards"]["peers up"], "1/52", "{down:#}");
    println!("the page showed b down {shown_after:?} after it stopped");

    // With 52 peers the layout fits the window: tables scroll inside their box, nothing makes
    // the page wider than a desktop window or a phone.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for (width, height, mobile, name) in [
        (1280, 900, false, "desktop-1280x900.png"),
        (390, 844, true, "phone-390x844.png"),
    ] {
        browser.window(width, height, mobile).await;
        // Layout follows the new size at once (reading scrollWidth lays the page out).
        let shown = browser.shown().await;
        let scroll = shown["scrollWidth"].as_u64().unwrap();
        assert!(
            scroll <= u64::from(width),
            "at {width} px the page is {scroll} px wide: {shown:#}"
        );
        let chart = shown["charts"][0].as_f64().unwrap();
        assert!(
            chart <= f64::from(width) && chart >= f64::from(width) * 0.4,
            "the chart is {chart} px wide in a {width} px window"
        );
        browser.screenshot(&dir, name).await;
    }
    for task in load {
        task.abort();
    }
    println!("the browser test took {:?}", started.elapsed());
}
