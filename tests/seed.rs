//! The lesson end to end, with imbang in place of nginx: the shipped `nginx.conf` and site file
//! (only the addresses and the `/etc`, `/var/log`, `/run` paths moved into a temporary
//! directory), two real `node examples/seed/app.js`, `-t`, a daemonized start, round-robin,
//! one app stopped with Ctrl+C (SIGINT), brought back, the other killed (SIGKILL), `-s quit`.
mod support;

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{
    ChildGuard, ImbangGuard, TempDir, free_port, is_imbang, process_alive, run_imbang, try_request,
    wait_child, wait_exited, wait_pid_file,
};

const NGINX_CONF: &str = include_str!("../examples/seed/nginx.conf");
const SITE_CONF: &str = include_str!("../examples/seed/my.reverse-proxy.conf");
const APP_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed/app.js");
const HOST: &str = "mydomain.xyz";
const WAIT: Duration = Duration::from_secs(10);

/// The lesson needs Node.js: without it this test fails (it is never skipped).
fn require_node() {
    let found = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the lesson's end-to-end test needs `node` (Node.js) on PATH: run ./test.sh (it installs \
         nodejs on Debian when run as root) or install nodejs, e.g. `sudo apt-get install nodejs`"
    );
}

/// `PORT=<port> NAME=<name> node examples/seed/app.js`, once it accepts connections and answers
/// as itself (so a port taken by someone else cannot pass for the app).
async fn start_app(name: &str, port: u16) -> ChildGuard {
    let child = Command::new("node")
        .arg(APP_JS)
        .env("PORT", port.to_string())
        .env("NAME", name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node for {name}: {e}"));
    let mut app = ChildGuard(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = app.0.try_wait().unwrap() {
            panic!("{name} (node, port {port}) exited at start: {status}");
        }
        if let Ok(answer) = try_request(addr, "GET", "/", "localhost", None).await {
            assert_eq!(answer, (200, body(name, port)), "{name} answers as itself");
            return app;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} does not answer on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What app.js answers to `GET /`.
fn body(name: &str, port: u16) -> String {
    format!("Hello from {name} (port {port}) GET /\n")
}

/// Distinct free ports.
fn ports<const N: usize>() -> [u16; N] {
    let mut out = [0; N];
    for i in 0..N {
        out[i] = loop {
            let p = free_port();
            if !out[..i].contains(&p) {
                break p;
            }
        };
    }
    out
}

/// The lesson's files laid out like `/etc/nginx` under `root`, changing only the upstream
/// addresses, the absolute paths, and one `listen` line (the site has none: nginx would take
/// port 80). Returns the main file's path.
fn lay_out(root: &TempDir, app1: u16, app2: u16, listen: u16) -> String {
    let r = root.path().to_str().expect("utf-8 temp path");
    let (etc, log, pid) = (
        format!("{r}/etc/nginx/"),
        format!("{r}/var/log/nginx/"),
        format!("{r}/run/nginx.pid"),
    );
    let main = NGINX_CONF
        .replace("/etc/nginx/", &etc)
        .replace("/var/log/nginx/", &log)
        .replace("/run/nginx.pid", &pid);
    assert!(!main.replace(&etc, "").contains("/etc/nginx/"));
    assert!(!main.replace(&log, "").contains("/var/log/"));
    assert!(main.contains(&format!("pid {pid};")));
    // Everything else is the shipped text, byte for byte.
    assert_eq!(
        main.replace(&pid, "/run/nginx.pid")
            .replace(&log, "/var/log/nginx/")
            .replace(&etc, "/etc/nginx/"),
        NGINX_CONF
    );

    let listen_line = format!("    listen 127.0.0.1:{listen};\n");
    let server_line = "\nserver { \n";
    assert_eq!(SITE_CONF.matches(server_line).count(), 1);
    let site = SITE_CONF
        .replace("192.168.64.6:3000", &format!("127.0.0.1:{app1}"))
        .replace("192.168.64.2:3000", &format!("127.0.0.1:{app2}"))
        .replace(server_line, &format!("{server_line}{listen_line}"));
    assert_eq!(
        site.replace(&listen_line, "")
            .replace(&format!("127.0.0.1:{app1}"), "192.168.64.6:3000")
            .replace(&format!("127.0.0.1:{app2}"), "192.168.64.2:3000"),
        SITE_CONF
    );
    assert!(site.contains(&format!(
        "    server 127.0.0.1:{app1};\n    server 127.0.0.1:{app2};\n"
    )));

    root.write("etc/nginx/nginx.conf", &main);
    root.write("etc/nginx/dumbways/my.reverse-proxy.conf", &site);
    root.write("etc/nginx/mime.types", "types { text/html html; }\n");
    for dir in ["etc/nginx/conf.d", "var/log/nginx", "run"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    format!("{etc}nginx.conf")
}

/// `n` sequential requests, then `tasks` × `each` concurrent ones, to the site; returns every
/// answer that is not `(200, want)`, with its request.
async fn load(site: SocketAddr, want: &str, n: usize, tasks: usize, each: usize) -> Vec<String> {
    let mut bad = Vec::new();
    for i in 0..n {
        match try_request(site, "GET", "/", HOST, None).await {
            Ok((200, b)) if b == want => {}
            other => bad.push(format!("sequential #{i}: {other:?}")),
        }
    }
    let mut handles = Vec::new();
    for t in 0..tasks {
        let want = want.to_owned();
        handles.push(tokio::spawn(async move {
            let mut bad = Vec::new();
            for i in 0..each {
                match try_request(site, "GET", "/", HOST, None).await {
                    Ok((200, b)) if b == want => {}
                    other => bad.push(format!("task {t} #{i}: {other:?}")),
                }
            }
            bad
        }));
    }
    for h in handles {
        bad.extend(h.await.unwrap());
    }
    bad
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lesson_runs_unchanged_and_the_site_survives_each_app_stopping() {
    require_node();
    let root = TempDir::new("seed");
    let [p1, p2, listen] = ports::<3>();
    let main = lay_out(&root, p1, p2, listen);
    let pid_file = root.path().join("run/nginx.pid");
    let error_log = root.path().join("var/log/nginx/error.log");
    let site = SocketAddr::from(([127, 0, 0, 1], listen));
    let (app1_body, app2_body) = (body("app1", p1), body("app2", p2));

    let mut app1 = start_app("app1", p1).await;
    let mut app2 = start_app("app2", p2).await;

    // sudo nginx -t
    let out = run_imbang(root.path(), &["-t", "-c", &main]).await;
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let n = lines.len();
    assert!(n >= 2, "{out:?}");
    assert_eq!(
        lines[n - 2..],
        [
            format!("imbang: the configuration file {main} syntax is ok"),
            format!("imbang: configuration file {main} test is successful"),
        ]
    );
    for line in &lines[..n - 2] {
        assert!(line.starts_with("imbang: [warn] "), "{line}");
    }
    // `user www-data;` acts as root (imbang becomes www-data once it listens); anyone else gets
    // nginx's warning.
    let user_warning = format!(
        "imbang: [warn] the \"user\" directive makes sense only if the master process runs with \
         super-user privileges, ignored in {main}:3:1"
    );
    assert_eq!(
        lines.contains(&user_warning.as_str()),
        !nix::unistd::geteuid().is_root(),
        "{lines:#?}"
    );
    let want = format!(
        "imbang: [warn] the \"tcp_nopush\" directive has no effect in imbang: imbang chooses \
         its own socket options in {main}:13:5"
    );
    assert!(lines.contains(&want.as_str()), "no {want:?} in {lines:#?}");
    // `sendfile on;` acts (docs/static.md): no warning for it.
    assert!(
        !lines.iter().any(|l| l.contains("\"sendfile\"")),
        "{lines:#?}"
    );

    // sudo nginx -c /etc/nginx/nginx.conf: as shipped, it daemonizes and writes the pid file.
    let _imbang = ImbangGuard::new(pid_file.clone());
    let out = run_imbang(root.path(), &["-c", &main]).await;
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out:?}");
    assert!(!out.stderr.contains("[emerg]"), "{out:?}");
    let pid = wait_pid_file(&pid_file, WAIT).await;
    assert!(
        process_alive(pid) && is_imbang(pid),
        "no imbang runs as {pid}"
    );

    // The browser: app1, app2, app1, app2.
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(try_request(site, "GET", "/", HOST, None).await.unwrap());
    }
    let one = (200, app1_body.clone());
    let two = (200, app2_body.clone());
    assert_eq!(got, [one.clone(), two.clone(), one.clone(), two.clone()]);

    // Ctrl+C on app2: every request still gets 200, from app1.
    kill(Pid::from_raw(app2.pid()), Signal::SIGINT).unwrap();
    let status = wait_child(&mut app2.0, WAIT).await;
    assert_eq!(status.signal(), Some(Signal::SIGINT as i32), "{status:?}");
    let bad = load(site, &app1_body, 200, 20, 10).await;
    assert!(
        bad.is_empty(),
        "with app2 stopped, {} of 400 requests were not 200 from app1:\n{}\nerror log:\n{}",
        bad.len(),
        bad.join("\n"),
        read(&error_log)
    );
    let refused = format!(
        "connect() failed (111: Connection refused) while connecting to upstream, client: \
         127.0.0.1, server: mydomain.xyz, request: \"GET / HTTP/1.1\", upstream: \
         \"http://127.0.0.1:{p2}/\", host: \"mydomain.xyz\""
    );
    let log = read(&error_log);
    assert!(
        log.lines()
            .any(|l| l.contains("[error] ") && l.ends_with(&refused)),
        "the lesson's error log has no {refused:?}:\n{log}"
    );

    // app2 comes back on its port: after fail_timeout (10s) traffic returns to it.
    let app2 = start_app("app2", p2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = try_request(site, "GET", "/", HOST, None).await.unwrap();
        if answer == two {
            break;
        }
        assert_eq!(answer, one, "while app2 is still marked failed");
        assert!(
            tokio::time::Instant::now() < deadline,
            "app2 got no traffic within 15 s of coming back (fail_timeout is 10s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // app1 killed outright: every request gets 200, from app2.
    kill(Pid::from_raw(app1.pid()), Signal::SIGKILL).unwrap();
    let status = wait_child(&mut app1.0, WAIT).await;
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");
    let bad = load(site, &app2_body, 200, 20, 10).await;
    assert!(
        bad.is_empty(),
        "with app1 killed, {} of 400 requests were not 200 from app2:\n{}\nerror log:\n{}",
        bad.len(),
        bad.join("\n"),
        read(&error_log)
    );

    // sudo nginx -s quit
    let out = run_imbang(root.path(), &["-s", "quit", "-c", &main]).await;
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out:?}");
    assert!(
        out.stderr.lines().all(|l| l.starts_with("imbang: [warn] ")),
        "{out:?}"
    );
    wait_exited(pid, "imbang to exit after -s quit", WAIT).await;
    // Started as root, imbang is www-data by now and cannot unlink a file in root's run/: it
    // empties it instead (nginx's root master removes it; docs/hardening.md, "Privileges").
    let left = std::fs::read_to_string(&pid_file).ok();
    assert!(
        left.is_none() || left.as_deref() == Some(""),
        "the pid file still names a process after quit: {left:?}"
    );
    assert!(
        try_request(site, "GET", "/", HOST, None).await.is_err(),
        "something still answers on {site}"
    );
    // The apps' guards kill and reap app2 (and the already reaped app1) here.
    drop((app1, app2));
}

/// The lesson's upstream as the API shows it: each app's `state`.
async fn states(site: SocketAddr) -> Vec<String> {
    let (status, body) = try_request(site, "GET", "/api/9/http/upstreams/domain", HOST, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    let peers = value["peers"].as_array().unwrap();
    peers
        .iter()
        .map(|p| p["state"].as_str().unwrap().to_owned())
        .collect()
}

async fn until_states(site: SocketAddr, want: [&str; 2], log: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = states(site).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "states {got:?}, not {want:?}; error log:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_lesson_with_nginx_plus_s_health_check_and_api_added() {
    require_node();
    let root = TempDir::new("seed-hc");
    let [p1, p2, listen] = ports::<3>();
    let main = lay_out(&root, p1, p2, listen);
    // Two lines more in the site file: NGINX Plus's active check, and its API.
    let site_file = root.path().join("etc/nginx/dumbways/my.reverse-proxy.conf");
    let text = read(&site_file);
    let pass = "             proxy_pass http://domain;\n";
    assert!(
        text.contains(pass) && text.ends_with("    }\n}\n"),
        "{text}"
    );
    let text = text.replace(
        pass,
        &format!("{pass}             health_check interval=100ms;\n"),
    );
    let text = format!(
        "{}    location /api/ {{ api; }}\n}}\n",
        &text[..text.len() - 2]
    );
    std::fs::write(&site_file, text).unwrap();
    let pid_file = root.path().join("run/nginx.pid");
    let error_log = root.path().join("var/log/nginx/error.log");
    let site = SocketAddr::from(([127, 0, 0, 1], listen));

    let app1 = start_app("app1", p1).await;
    let mut app2 = start_app("app2", p2).await;
    let _imbang = ImbangGuard::new(pid_file.clone());
    let out = run_imbang(root.path(), &["-c", &main]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let pid = wait_pid_file(&pid_file, WAIT).await;
    until_states(site, ["up", "up"], &error_log).await;

    // Ctrl+C on app2: its next check fails, and the API and the error log say so, with no
    // client request needed to find out.
    kill(Pid::from_raw(app2.pid()), Signal::SIGINT).unwrap();
    wait_child(&mut app2.0, WAIT).await;
    until_states(site, ["up", "unhealthy"], &error_log).await;
    // (The lesson's `error_log` is at `error`: the failed check, not the `[warn]` change. Which
    // error depends on when the check met the app's shutdown: refused, or closed unanswered.)
    let failed = format!(", health check \"\" of peer 127.0.0.1:{p2} in upstream \"domain\"");
    let log = read(&error_log);
    assert!(
        log.lines()
            .any(|l| l.contains("[error] ") && l.ends_with(&failed)),
        "no failed check of app2 in:\n{log}"
    );
    let app1_body = (200, body("app1", p1));
    for _ in 0..4 {
        let answer = try_request(site, "GET", "/", HOST, None).await.unwrap();
        assert_eq!(answer, app1_body);
    }

    // app2 back: its next check passes and it gets requests again at once (no fail_timeout:
    // no request failed on it).
    let app2 = start_app("app2", p2).await;
    until_states(site, ["up", "up"], &error_log).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(try_request(site, "GET", "/", HOST, None).await.unwrap().1);
    }
    assert!(got.contains(&body("app2", p2)), "{got:?}");

    let out = run_imbang(root.path(), &["-s", "quit", "-c", &main]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_exited(pid, "imbang to exit after -s quit", WAIT).await;
    drop((app1, app2));
}
