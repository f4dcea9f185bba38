//! The shipped systemd unit, packaging/imbang.service: its exposure score, a reason for each
//! setting, and imbang run the way the unit runs it — as its user, with its ambient
//! capabilities, bounding set, `NoNewPrivileges=`, `UMask=`, and its `LogsDirectory=` and
//! `RuntimeDirectory=` the user's — through start, reload, reopen, binary upgrade and stop.
//! (No systemd runs here to start the unit itself: `setpriv` gives the process the same
//! credentials systemd would.)
mod support;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Group, Pid, User};
use support::{
    ImbangGuard, TempDir, assert_unprivileged, free_port, imbang_bin, request, wait_exited,
    wait_pid_file,
};

const WAIT: Duration = Duration::from_secs(10);

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/imbang.service")
}

fn unit() -> String {
    std::fs::read_to_string(unit_path()).unwrap()
}

/// The `[Service]` section's settings: `(line number, key, value)`.
fn service_settings(unit: &str) -> Vec<(usize, String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for (n, line) in unit.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((n + 1, k.to_owned(), v.to_owned()));
            }
        }
    }
    out
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn the_unit_scores_2_or_less_in_systemd_analyze_security() {
    if !has("systemd-analyze") {
        eprintln!("skipped: no systemd-analyze (Debian's `systemd` package has it)");
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for imbang.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

#[test]
fn every_setting_of_the_unit_says_why() {
    let unit = unit();
    let lines: Vec<&str> = unit.lines().collect();
    let settings = service_settings(&unit);
    assert!(settings.len() > 30, "{settings:?}");
    for (n, key, _) in &settings {
        // The line above is a comment, or the same setting given again (ExecReload=, ...).
        let above = lines[n - 2].trim();
        let repeated = above.split_once('=').is_some_and(|(k, _)| k == key);
        assert!(
            above.starts_with('#') || repeated,
            "packaging/imbang.service:{n}: {key}= has no comment above it"
        );
    }
    // What start, reload and upgrade need, and nothing more: the same set in both places.
    let value = |key: &str| {
        settings
            .iter()
            .find(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key}="))
    };
    let caps = "CAP_NET_BIND_SERVICE CAP_DAC_READ_SEARCH";
    assert_eq!(value("AmbientCapabilities"), caps);
    assert_eq!(value("CapabilityBoundingSet"), caps);
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert_ne!(value("User"), "root");
}

/// The unit's capability names as `setpriv` spells them: `-all,+net_bind_service,...`.
fn setpriv_caps(unit: &str, key: &str) -> String {
    let settings = service_settings(unit);
    let (_, _, value) = settings.iter().find(|(_, k, _)| k == key).unwrap();
    let mut out = "-all".to_owned();
    for cap in value.split_whitespace() {
        out.push_str(",+");
        out.push_str(&cap.trim_start_matches("CAP_").to_ascii_lowercase());
    }
    out
}

/// `imbang args` started as the unit starts it, with `uid`/`gid` for its `User=`/`Group=`.
fn as_the_unit(unit: &str, (uid, gid): (u32, u32), args: &[&str]) -> Command {
    let settings = service_settings(unit);
    let umask = &settings.iter().find(|(_, k, _)| k == "UMask").unwrap().2;
    let ambient = setpriv_caps(unit, "AmbientCapabilities");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$@\""))
        .arg("sh")
        .arg("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--init-groups")
        .arg(format!("--inh-caps={ambient}"))
        .arg(format!("--ambient-caps={ambient}"))
        .arg(format!(
            "--bounding-set={}",
            setpriv_caps(unit, "CapabilityBoundingSet")
        ))
        .arg("--no-new-privs")
        .arg("--")
        .arg(imbang_bin())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Ports below 1024 that nothing listens on now.
fn free_low_ports<const N: usize>() -> [u16; N] {
    let free: Vec<u16> = (900..1024)
        .filter(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .take(N)
        .collect();
    free.try_into().expect("free ports below 1024")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_the_unit_runs_it_start_reload_reopen_upgrade_and_stop_work() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: starting imbang as the unit's user needs root (CI runs as root)");
        return;
    }
    if !has("setpriv") {
        eprintln!("skipped: no setpriv (Debian's util-linux has it)");
        return;
    }
    let unit = unit();
    let user = User::from_name("nobody").unwrap().expect("a user nobody");
    let group = Group::from_name("nogroup")
        .unwrap()
        .expect("a group nogroup");
    let ids = (user.uid.as_raw(), group.gid.as_raw());
    let dir = TempDir::new("unit");
    // LogsDirectory= and RuntimeDirectory=: made by systemd, owned by the unit's user.
    let (logs, run) = (dir.path().join("log"), dir.path().join("run"));
    for d in [&logs, &run] {
        std::fs::create_dir_all(d).unwrap();
        std::os::unix::fs::chown(d, Some(ids.0), Some(ids.1)).unwrap();
    }
    let [https, more] = free_low_ports::<2>();
    let port = free_port();
    // packaging/imbang.conf's shape: `user` names the unit's user, the pid file in /run/imbang.
    let conf = |extra: &str| {
        format!(
            "user nobody nogroup;
             worker_processes 2;
             pid {run}/imbang.pid;
             error_log {logs}/error.log notice;
             events {{}}
             http {{
               log_format short '$request_method $uri $status';
               access_log {logs}/access.log short;
               server {{ listen 127.0.0.1:{https}; listen 127.0.0.1:{port}; return 200 ok; }}
               {extra}
             }}",
            run = run.display(),
            logs = logs.display(),
        )
    };
    let main = dir.write("imbang.conf", &conf(""));
    let main = main.to_str().unwrap();
    let pid_file = run.join("imbang.pid");

    // ExecStartPre: -t as the user says nothing (already that user).
    let out = as_the_unit(&unit, ids, &["-t", "-q", "-c", main])
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(0), "")
    );

    // ExecStart: it binds a port below 1024 as the user.
    let mut guard = ImbangGuard::new(pid_file.clone());
    guard.child = Some(
        as_the_unit(&unit, ids, &["-c", main, "-g", "daemon off;"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = wait_pid_file(&pid_file, WAIT).await;
    assert_eq!(
        request(addr(https), "GET", "/first", "x", None).await.0,
        200
    );
    assert_unprivileged(pid, ids, 2);
    let mode = std::fs::metadata(logs.join("access.log")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o600, "UMask=0077");

    // ExecReload (-s reload as the user): another port below 1024.
    dir.write(
        "imbang.conf",
        &conf(&format!(
            "server {{ listen 127.0.0.1:{more}; return 200 more; }}"
        )),
    );
    let out = as_the_unit(&unit, ids, &["-s", "reload", "-c", main])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    support::eventually("the reload", WAIT, || {
        read(&logs.join("error.log")).contains("reconfiguring done")
    })
    .await;
    assert_eq!(
        request(addr(more), "GET", "/", "x", None).await,
        (200, "more".to_owned()),
        "{}",
        read(&logs.join("error.log"))
    );
    assert_unprivileged(pid, ids, 2);

    // logrotate and USR1: the directory is the user's, so imbang makes the files again itself.
    for name in ["access.log", "error.log"] {
        std::fs::rename(logs.join(name), logs.join(format!("{name}.1"))).unwrap();
    }
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    support::eventually("the reopen", WAIT, || {
        read(&logs.join("error.log")).contains("logs reopened")
    })
    .await;
    assert_eq!(
        request(addr(port), "GET", "/second", "x", None).await.0,
        200
    );
    support::eventually("the line in the new access.log", WAIT, || {
        read(&logs.join("access.log")) == "GET /second 200\n"
    })
    .await;

    // USR2 (`systemctl kill -s USR2 imbang`): nginx's .oldbin dance in /run/imbang.
    let new = guard.upgrade(pid, WAIT).await;
    assert!(!run.join("imbang.pid.oldbin").exists());
    assert_unprivileged(new, ids, 2);
    for p in [https, more, port] {
        assert_eq!(request(addr(p), "GET", "/", "x", None).await.0, 200);
    }

    // systemctl stop: QUIT, and the pid file goes.
    kill(Pid::from_raw(new), Signal::SIGQUIT).unwrap();
    wait_exited(new, "the new binary's exit", WAIT).await;
    assert!(!pid_file.exists());
    // Neither process said anything about `user` (both already were that user). The stderr
    // pipe is shared with the new binary, so it ends only now.
    let stderr = guard.child.take().unwrap().stderr.take().unwrap();
    let stderr = std::io::read_to_string(stderr).unwrap();
    assert!(!stderr.contains("\"user\""), "{stderr}");
}
