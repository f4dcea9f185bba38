//! The real binary's command line, as an ops person uses nginx's: `-t`, `-T`, `-q`, `-c`, `-p`,
//! `-g`, `-v`, `-V`, `-s`, the pid file, daemon on/off, reload and stop.
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{
    ImbangGuard, Output, TempDir, backend, bound_port, free_port, imbang_bin, process_alive,
    request, run_imbang, wait_child, wait_exited, wait_pid_file,
};

const WAIT: Duration = Duration::from_secs(10);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A fresh prefix directory with nginx's `logs/` (the default `access_log logs/access.log` and
/// error log live there), and its path with the trailing `/`.
fn prefix_dir(tag: &str) -> (TempDir, String) {
    let dir = TempDir::new(tag);
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let prefix = format!("{}/", s(dir.path()));
    (dir, prefix)
}

fn assert_output(out: &Output, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(code), stdout, stderr),
        "exit code, stdout, stderr"
    );
}

/// The error log's lines without their timestamp (`2026/11/24 22:00:00 `).
/// What `-t` prints on stderr for a good configuration `c`, after any warnings.
fn test_ok(c: &str) -> String {
    format!(
        "imbang: the configuration file {c} syntax is ok\n\
         imbang: configuration file {c} test is successful\n"
    )
}

fn log_lines(dir: &TempDir) -> Vec<String> {
    std::fs::read_to_string(dir.path().join("logs/error.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap_or_default().to_owned())
        .collect()
}

fn assert_logged(dir: &TempDir, line: &str) {
    let lines = log_lines(dir);
    assert!(
        lines.iter().any(|l| l == line),
        "error log has no line {line:?}:\n{}",
        lines.join("\n")
    );
}

async fn wait_logged(dir: &TempDir, line: &str) {
    support::eventually(&format!("error log line {line:?}"), WAIT, || {
        log_lines(dir).iter().any(|l| l == line)
    })
    .await;
}

// === -t, -T, -q ===

const GOOD: &str = "events {
    worker_connections 64;
}
http {
    include sites/*.conf;
}
";

const SITE: &str = "server {
    listen 127.0.0.1:0;
    location / {
        return 200 ok;
    }
}
";

#[tokio::test]
async fn t_on_a_good_config_prints_nginx_s_two_lines_and_q_silences_them() {
    let (dir, p) = prefix_dir("cli-t-good");
    let conf = dir.write("imbang.conf", GOOD);
    dir.write("sites/site.conf", SITE);
    let c = s(&conf);

    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c]).await;
    assert_output(&out, 0, "", &test_ok(c));

    let out = run_imbang(dir.path(), &["-t", "-q", "-p", &p, "-c", c]).await;
    assert_output(&out, 0, "", "");
}

#[tokio::test]
async fn t_reports_every_semantic_error_with_its_place_even_in_included_files() {
    let (dir, p) = prefix_dir("cli-t-errors");
    let conf = dir.write(
        "imbang.conf",
        "events {}
http {
    server {
        listen 127.0.0.1:0;
        location / {
            proxy_pas http://app;
        }
        server {
        }
    }
    server {
        listen;
    }
    include sites/*.conf;
}
",
    );
    let site = dir.write(
        "sites/broken.conf",
        "server {
    listen 127.0.0.1:0;
    location / { proxy_pass; }
}
",
    );
    let (c, site) = (s(&conf), s(&site));

    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c]).await;
    assert_eq!((out.code, out.stdout.as_str()), (Some(1), ""), "{out:?}");
    let mut lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.pop(),
        Some(format!("imbang: configuration file {c} test failed").as_str()),
        "the last line: {out:?}"
    );
    // Every error once; the order is imbang's (it reports all of them, nginx only the first).
    lines.sort_unstable();
    let mut want = vec![
        format!("imbang: [emerg] unknown directive \"proxy_pas\" in {c}:6:13"),
        format!("imbang: [emerg] \"server\" directive is not allowed here in {c}:8:9"),
        format!("imbang: [emerg] invalid number of arguments in \"listen\" directive in {c}:12:9"),
        format!(
            "imbang: [emerg] invalid number of arguments in \"proxy_pass\" directive in {site}:3:18"
        ),
    ];
    want.sort_unstable();
    assert_eq!(lines, want);
}

#[tokio::test]
async fn t_reports_access_log_parameter_errors_in_nginx_s_words() {
    let (dir, p) = prefix_dir("cli-t-access-log");
    let conf = dir.write(
        "imbang.conf",
        "events {}
http {
    access_log logs/a.log combined flush=5s;
    server {
        listen 127.0.0.1:0;
        location / { access_log logs/b.log combined if=$no_such; return 200; }
    }
}
",
    );
    let c = s(&conf);
    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c]).await;
    let failed = format!("imbang: configuration file {c} test failed\n");
    assert_output(
        &out,
        1,
        "",
        &format!(
            "imbang: [emerg] no buffer is defined for access_log \"logs/a.log\" in {c}:3:36\n{failed}"
        ),
    );
    // Once that is fixed, the condition's variable is checked (where `set` names are known).
    dir.write(
        "imbang.conf",
        &std::fs::read_to_string(&conf)
            .unwrap()
            .replace("flush=5s", "buffer=8k flush=5s"),
    );
    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c]).await;
    assert_output(
        &out,
        1,
        "",
        &format!("imbang: [emerg] unknown \"no_such\" variable in {c}:6:53\n{failed}"),
    );
}

#[tokio::test]
async fn t_reports_syntax_errors_where_they_are() {
    let (dir, p) = prefix_dir("cli-t-syntax");
    let extra = dir.write("extra.conf", "events {}\nhttp {\n}\n}\n");
    let eof = dir.write(
        "eof.conf",
        "events {}\nhttp {\n    server {\n        listen 127.0.0.1:0;\n",
    );
    let (extra, eof) = (s(&extra), s(&eof));

    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", extra]).await;
    assert_output(
        &out,
        1,
        "",
        &format!(
            "imbang: [emerg] unexpected \"}}\" in {extra}:4:1\n\
             imbang: configuration file {extra} test failed\n"
        ),
    );

    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", eof]).await;
    assert_output(
        &out,
        1,
        "",
        &format!(
            "imbang: [emerg] unexpected end of file, expecting \"}}\" in {eof}:5:1\n\
             imbang: configuration file {eof} test failed\n"
        ),
    );
}

#[tokio::test]
async fn t_warns_about_directives_without_effect() {
    let (dir, p) = prefix_dir("cli-t-warn");
    let conf = dir.write(
        "imbang.conf",
        "events {}
http {
    gzip_buffers 16 8k;
    include sites/*.conf;
}
",
    );
    dir.write("sites/site.conf", SITE);
    let c = s(&conf);
    let warn = format!(
        "imbang: [warn] the \"gzip_buffers\" directive has no effect in imbang: imbang hands \
         compressed bytes on as zlib makes them, in buffers it sizes itself in {c}:3:5\n"
    );

    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c]).await;
    assert_output(&out, 0, "", &format!("{warn}{}", test_ok(c)));
    // -q keeps warnings (as nginx: it suppresses only the non-error messages of the test).
    let out = run_imbang(dir.path(), &["-t", "-q", "-p", &p, "-c", c]).await;
    assert_output(&out, 0, "", &warn);
}

#[tokio::test]
async fn t_warns_that_reuseport_on_an_address_a_wildcard_serves_has_no_effect() {
    let (dir, p) = prefix_dir("cli-t-reuseport");
    let conf = dir.write(
        "imbang.conf",
        "events {}
http {
    access_log off;
    server { listen 8080; }
    server { listen 127.0.0.1:8080 reuseport; }
}
",
    );
    let c = s(&conf);
    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c]).await;
    assert_output(
        &out,
        0,
        "",
        &format!(
            "imbang: [warn] the \"reuseport\" parameter of \"listen 127.0.0.1:8080\" has no \
             effect: the wildcard listen on port 8080 serves the address (imbang does not bind it \
             apart) in {c}:5:14\n{}",
            test_ok(c)
        ),
    );
}

#[tokio::test]
async fn capital_t_dumps_every_file_after_testing() {
    let (dir, p) = prefix_dir("cli-dump");
    let conf = dir.write("imbang.conf", GOOD);
    let site = dir.write("sites/site.conf", SITE);
    let (c, site) = (s(&conf), s(&site));

    let out = run_imbang(dir.path(), &["-T", "-p", &p, "-c", c]).await;
    assert_output(
        &out,
        0,
        &format!("# configuration file {c}:\n{GOOD}\n# configuration file {site}:\n{SITE}\n"),
        &test_ok(c),
    );
}

#[tokio::test]
async fn t_with_the_default_access_log_s_directory_missing_is_one_open_failed_emerg() {
    // No logs/ under the prefix: nginx's default `access_log logs/access.log` cannot be opened.
    // nginx reports that once, without a place (no directive names the file).
    let dir = TempDir::new("cli-t-access-log");
    let p = format!("{}/", s(dir.path()));
    let conf = dir.write(
        "imbang.conf",
        "events {}
http {
    server {
        listen 127.0.0.1:0;
        location /a {
            return 200 a;
        }
        location /b {
            return 200 b;
        }
    }
}
",
    );
    let c = s(&conf);

    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c]).await;
    assert_output(
        &out,
        1,
        "",
        &format!(
            "imbang: [emerg] open() \"{p}logs/access.log\" failed (2: No such file or directory)\n\
             imbang: configuration file {c} test failed\n"
        ),
    );
}

// === -c, -p, -g ===

#[tokio::test]
async fn a_relative_c_is_relative_to_the_prefix_not_the_working_directory() {
    let (prefix, _) = prefix_dir("cli-prefix");
    let elsewhere = TempDir::new("cli-cwd");
    prefix.write("conf/imbang.conf", GOOD);
    prefix.write("conf/sites/site.conf", SITE);
    prefix.write("conf/other.conf", GOOD);
    // A decoy with the same relative path under the working directory must not be read.
    elsewhere.write("conf/other.conf", "this is not a configuration;\n");
    let p = s(prefix.path());

    for (args, file) in [
        // -p without its trailing slash, as nginx accepts it.
        (
            vec!["-t", "-p", p, "-c", "conf/other.conf"],
            "conf/other.conf",
        ),
        // No -c: nginx's default conf/<name>.conf under the prefix.
        (vec!["-t", "-p", p], "conf/imbang.conf"),
    ] {
        let out = run_imbang(elsewhere.path(), &args).await;
        let path = format!("{p}/{file}");
        assert_output(&out, 0, "", &test_ok(&path));
    }
}

#[tokio::test]
async fn a_missing_main_file_is_nginx_s_open_failed_emerg() {
    let dir = TempDir::new("cli-missing");
    let p = format!("{}/", s(dir.path()));
    let missing = format!("{p}missing.conf");

    let out = run_imbang(dir.path(), &["-p", &p, "-c", "missing.conf"]).await;
    assert_output(
        &out,
        1,
        "",
        &format!("imbang: [emerg] open() \"{missing}\" failed (2: No such file or directory)\n"),
    );

    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", "missing.conf"]).await;
    assert_output(
        &out,
        1,
        "",
        &format!(
            "imbang: [emerg] open() \"{missing}\" failed (2: No such file or directory)\n\
             imbang: configuration file {missing} test failed\n"
        ),
    );
}

#[tokio::test]
async fn g_daemon_off_with_daemon_off_in_the_file_is_a_duplicate() {
    let (dir, p) = prefix_dir("cli-g");
    let conf = dir.write("imbang.conf", &format!("daemon off;\n{GOOD}"));
    dir.write("sites/site.conf", SITE);
    let c = s(&conf);

    let out = run_imbang(dir.path(), &["-t", "-g", "daemon off;", "-p", &p, "-c", c]).await;
    assert_output(
        &out,
        1,
        "",
        &format!(
            "imbang: [emerg] \"daemon\" directive is duplicate in {c}:1:1\n\
             imbang: configuration file {c} test failed\n"
        ),
    );
    // Without -g the same file is fine.
    let out = run_imbang(dir.path(), &["-t", "-q", "-p", &p, "-c", c]).await;
    assert_output(&out, 0, "", "");
}

// === -v, -V ===

#[tokio::test]
async fn v_and_capital_v_print_the_version_on_stderr() {
    let dir = TempDir::new("cli-version");
    let version = format!("imbang version: imbang/{}", env!("CARGO_PKG_VERSION"));

    let out = run_imbang(dir.path(), &["-v"]).await;
    assert_output(&out, 0, "", &format!("{version}\n"));

    let out = run_imbang(dir.path(), &["-V"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], version);
    assert!(lines[1].starts_with("built by rustc "), "{lines:?}");
    assert!(lines[1].contains(" for "), "{lines:?}");
    assert!(
        lines[2].starts_with("configure arguments: --prefix=/usr/local/imbang/ "),
        "{lines:?}"
    );
}

// === running: pid file, daemon, signals ===

/// A config serving on 127.0.0.1:0: `/` proxies to `backend`, `= /version` returns `version`.
fn running_conf(daemon: &str, backend: SocketAddr, version: &str) -> String {
    format!(
        "{daemon}error_log logs/error.log notice;
pid logs/imbang.pid;
events {{
    worker_connections 64;
}}
http {{
    upstream app {{
        server {backend};
    }}
    server {{
        listen 127.0.0.1:0;
        location / {{
            proxy_pass http://app;
        }}
        location = /version {{
            return 200 {version};
        }}
    }}
}}
"
    )
}

/// The address imbang bound for `listen 127.0.0.1:0`, from its notice line.
fn bound_addr(dir: &TempDir) -> SocketAddr {
    let log = std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap_or_default();
    let port = bound_port(&log, "127.0.0.1:0")
        .unwrap_or_else(|| panic!("no \"listening on 127.0.0.1:0\" line in the error log:\n{log}"));
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, "localhost", None).await
}

#[tokio::test]
async fn daemon_off_serves_reloads_refuses_a_broken_reload_and_quits() {
    let app = backend("a").await;
    let dir = TempDir::new("cli-run-fg");
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let conf = dir.write(
        "imbang.conf",
        &running_conf("daemon off;\n", app.addr, "v1"),
    );
    let pid_file = dir.path().join("logs/imbang.pid");
    let prefix = format!("{}/", s(dir.path()));
    let args = ["-p", prefix.as_str(), "-c", "imbang.conf"];

    let mut guard = ImbangGuard::new(pid_file.clone());
    let child = std::process::Command::new(imbang_bin())
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imbang");
    let child_pid = child.id() as i32;
    guard.child = Some(child);

    // The pid file names the foreground process itself, and only appears once it accepts.
    let pid = wait_pid_file(&pid_file, WAIT).await;
    assert_eq!(pid, child_pid);
    assert!(process_alive(pid));
    let addr = bound_addr(&dir);
    assert_logged(
        &dir,
        &format!("[notice] {pid}#0: listening on 127.0.0.1:0 (bound to {addr})"),
    );
    assert_eq!(get(addr, "/hello").await, (200, "a GET /hello".to_owned()));
    assert_eq!(get(addr, "/version").await, (200, "v1".to_owned()));

    // -s reload with a changed file: new requests get the new configuration.
    std::fs::write(&conf, running_conf("daemon off;\n", app.addr, "v2")).unwrap();
    let out = run_imbang(
        dir.path(),
        &["-s", "reload", "-p", &prefix, "-c", "imbang.conf"],
    )
    .await;
    assert_output(&out, 0, "", "");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(addr, "/version").await;
        assert_eq!(status, 200);
        if body == "v2" {
            break;
        }
        assert_eq!(body, "v1");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload never took effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_logged(&dir, &format!("[notice] {pid}#0: reconfiguring done")).await;
    assert_eq!(get(addr, "/hello").await, (200, "a GET /hello".to_owned()));

    // A broken file: `-s reload` reads it first and refuses, as nginx does; nothing is signalled.
    let good_v2 = std::fs::read_to_string(&conf).unwrap();
    let broken = good_v2.replace("return 200 v2;", "proxy_pas http://app;");
    std::fs::write(&conf, &broken).unwrap();
    let c = format!("{prefix}imbang.conf");
    let out = run_imbang(
        dir.path(),
        &["-s", "reload", "-p", &prefix, "-c", "imbang.conf"],
    )
    .await;
    assert_output(
        &out,
        1,
        "",
        &format!("imbang: [emerg] unknown directive \"proxy_pas\" in {c}:17:13\n"),
    );
    // A SIGHUP straight to the process (kill -HUP, systemctl reload): the error goes to the error
    // log with its place, and the running configuration stays.
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    wait_logged(
        &dir,
        &format!("[error] {pid}#0: reload failed, the previous configuration stays in force"),
    )
    .await;
    assert_logged(
        &dir,
        &format!("[emerg] {pid}#0: unknown directive \"proxy_pas\" in {c}:17:13"),
    );
    assert_eq!(get(addr, "/version").await, (200, "v2".to_owned()));
    assert_eq!(get(addr, "/hello").await, (200, "a GET /hello".to_owned()));
    assert!(process_alive(pid));

    // -s quit: a graceful stop; the foreground process exits 0 and removes its pid file.
    std::fs::write(&conf, &good_v2).unwrap();
    let out = run_imbang(
        dir.path(),
        &["-s", "quit", "-p", &prefix, "-c", "imbang.conf"],
    )
    .await;
    assert_output(&out, 0, "", "");
    let child = guard.child.as_mut().unwrap();
    let status = wait_child(child, WAIT).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!pid_file.exists(), "the pid file stays after quit");
    assert_logged(
        &dir,
        &format!("[notice] {pid}#0: signal 3 (SIGQUIT) received, shutting down gracefully"),
    );
    assert_logged(&dir, &format!("[notice] {pid}#0: exit"));
    // The foreground process printed nothing: this config has nothing to warn about, and its
    // log goes to the file.
    let mut stderr = String::new();
    let mut stdout = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!((stdout.as_str(), stderr.as_str()), ("", ""));
}

#[tokio::test]
async fn daemon_on_returns_at_once_and_the_daemon_serves_until_stop() {
    let app = backend("a").await;
    let dir = TempDir::new("cli-run-daemon");
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    // No `daemon` directive: nginx's default, on.
    dir.write("imbang.conf", &running_conf("", app.addr, "v1"));
    let pid_file = dir.path().join("logs/imbang.pid");
    let prefix = format!("{}/", s(dir.path()));
    let _guard = ImbangGuard::new(pid_file.clone());

    let started = tokio::time::Instant::now();
    let parent = tokio::process::Command::new(imbang_bin())
        .args(["-p", prefix.as_str(), "-c", "imbang.conf"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn imbang");
    let parent_pid = parent.id().expect("parent pid") as i32;
    // The parent returns once the daemon is forked, and the daemon holds none of its pipes
    // (or this would wait for the daemon's end).
    let out = tokio::time::timeout(WAIT, parent.wait_with_output())
        .await
        .expect("the daemonizing parent did not return")
        .unwrap();
    assert!(started.elapsed() < WAIT);
    assert_eq!(
        (
            out.status.code(),
            out.stdout.as_slice(),
            out.stderr.as_slice()
        ),
        (Some(0), &b""[..], &b""[..]),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pid = wait_pid_file(&pid_file, WAIT).await;
    assert_ne!(
        pid, parent_pid,
        "the pid file names the daemon, not the parent"
    );
    assert!(process_alive(pid), "the daemon {pid} is not running");
    assert!(support::is_imbang(pid));
    let addr = bound_addr(&dir);
    assert_eq!(get(addr, "/hello").await, (200, "a GET /hello".to_owned()));
    assert_eq!(get(addr, "/version").await, (200, "v1".to_owned()));

    // -s stop: a fast stop; the daemon exits and removes its pid file.
    let out = run_imbang(
        dir.path(),
        &["-s", "stop", "-p", &prefix, "-c", "imbang.conf"],
    )
    .await;
    assert_output(&out, 0, "", "");
    wait_exited(pid, "the daemon to exit after -s stop", WAIT).await;
    assert!(!pid_file.exists(), "the pid file stays after stop");
    assert_logged(
        &dir,
        &format!("[notice] {pid}#0: signal 15 (SIGTERM) received, exiting"),
    );
    assert!(
        support::try_request(addr, "GET", "/", "localhost", None)
            .await
            .is_err(),
        "something still answers on {addr}"
    );
}

#[tokio::test]
async fn s_without_a_running_instance_is_nginx_s_open_failed_error() {
    let app = backend("a").await;
    let dir = TempDir::new("cli-s-none");
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    dir.write("imbang.conf", &running_conf("", app.addr, "v1"));
    let prefix = format!("{}/", s(dir.path()));

    for signal in ["reload", "quit"] {
        let out = run_imbang(
            dir.path(),
            &["-s", signal, "-p", &prefix, "-c", "imbang.conf"],
        )
        .await;
        assert_output(
            &out,
            1,
            "",
            &format!(
                "imbang: [error] open() \"{prefix}logs/imbang.pid\" failed (2: No such file or directory)\n"
            ),
        );
    }
}

#[tokio::test]
async fn a_port_already_bound_fails_the_start_with_nginx_s_bind_error_and_no_pid_file() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("cli-bind");
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    dir.write(
        "imbang.conf",
        &format!(
            "error_log logs/error.log notice;
pid logs/imbang.pid;
events {{}}
http {{
    server {{
        listen 127.0.0.1:{port};
        location / {{
            return 200 ok;
        }}
    }}
}}
"
        ),
    );
    let pid_file = dir.path().join("logs/imbang.pid");
    let prefix = format!("{}/", s(dir.path()));
    let _guard = ImbangGuard::new(pid_file.clone());

    let out = run_imbang(dir.path(), &["-p", &prefix, "-c", "imbang.conf"]).await;
    assert_output(
        &out,
        1,
        "",
        &format!(
            "imbang: [emerg] bind() to 127.0.0.1:{port} failed (98: Address already in use)\n"
        ),
    );
    assert!(
        !pid_file.exists(),
        "a pid file was written by a failed start"
    );
    drop(taken);
}

/// How many sockets listen on 127.0.0.1:`port` (state LISTEN in the kernel's table).
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

/// Twenty new connections to 127.0.0.1:`port`, each answered `body`. The kernel puts each new
/// connection in one listening socket's queue: all answered means every worker accepts on the
/// socket it has (one that nobody accepts on would leave its connections waiting for good).
async fn twenty_answered(port: u16, body: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for i in 0..20 {
        let answer = tokio::time::timeout(WAIT, get(addr, "/"))
            .await
            .unwrap_or_else(|_| panic!("connection {i} not accepted"));
        assert_eq!(answer, (200, body.to_owned()));
    }
}

#[tokio::test]
async fn reuseport_gives_each_worker_a_listening_socket_of_its_own() {
    let (dir, prefix) = prefix_dir("cli-reuseport");
    let (shared, own) = (free_port(), free_port());
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; worker_processes 2; pid logs/imbang.pid; error_log logs/error.log notice;
events {{}}
http {{
    access_log off;
    server {{ listen 127.0.0.1:{shared}; return 200 shared; }}
    server {{ listen 127.0.0.1:{own} reuseport; return 200 own; }}
}}
"
        ),
    );
    let guard = ImbangGuard::start(&prefix);
    wait_pid_file(&guard.pid_file, WAIT).await;
    assert_eq!(
        listening_sockets(shared),
        1,
        "one socket both workers accept on"
    );
    assert_eq!(listening_sockets(own), 2, "a socket for each worker");
    twenty_answered(own, "own").await;
    let addr = SocketAddr::from(([127, 0, 0, 1], shared));
    assert_eq!(get(addr, "/").await, (200, "shared".to_owned()));
}

#[tokio::test]
async fn reuseport_on_a_socket_handed_down_without_it_is_shared_with_a_warning() {
    let (dir, prefix) = prefix_dir("cli-reuseport-inherited");
    let port = free_port();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; worker_processes 2; pid logs/imbang.pid; error_log logs/error.log notice;
events {{}}
http {{
    access_log off;
    server {{ listen 127.0.0.1:{port} reuseport; return 200 ok; }}
}}
"
        ),
    );
    // As systemd's socket activation does: the socket bound without SO_REUSEPORT, passed as
    // fd 3 with LISTEN_FDS=1 to the process imbang becomes.
    let launcher = "import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1])))
s.listen(16)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ['LISTEN_FDS'] = '1'
os.environ['LISTEN_PID'] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
";
    let mut guard = ImbangGuard::new(dir.path().join("logs/imbang.pid"));
    guard.child = Some(
        std::process::Command::new("python3")
            .args(["-c", launcher, &port.to_string()])
            .arg(imbang_bin())
            .args(["-p", &prefix, "-c", "imbang.conf"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn python3"),
    );
    let pid = wait_pid_file(&guard.pid_file, WAIT).await;
    assert_logged(
        &dir,
        &format!(
            "[warn] {pid}#0: worker 1 accepts on the shared socket of 127.0.0.1:{port}: bind() \
             to 127.0.0.1:{port} with SO_REUSEPORT failed (98: Address already in use)"
        ),
    );
    assert_eq!(listening_sockets(port), 1, "the one socket handed down");
    twenty_answered(port, "ok").await;
}
