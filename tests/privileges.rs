//! `user USER [GROUP]` as nginx: started as root, imbang binds, opens its logs and reads its
//! configuration, then becomes that user before it serves a request. Worker threads hold no
//! capability; the main thread keeps CAP_NET_BIND_SERVICE and CAP_DAC_READ_SEARCH (permitted,
//! not effective) so that a reload may bind a port below 1024 and read a root-only file, and
//! passes them to the binary USR2 starts. Checked on the real binary through
//! /proc/<pid>/task/<tid>/status. These tests need root (CI runs as root) and say so otherwise.
mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Group, Pid, User};
use support::{
    ImbangGuard, TempDir, assert_unprivileged, free_port, imbang_bin, process_alive, read_pid_file,
    request, wait_exited, wait_pid_file,
};

const WAIT: Duration = Duration::from_secs(10);

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: dropping privileges needs the test to run as root (CI does)");
    false
}

/// `nobody`'s uid and `nogroup`'s gid (Debian's names, as in nginx's Debian configs).
fn nobody() -> (u32, u32) {
    let user = User::from_name("nobody").unwrap().expect("a user nobody");
    let group = Group::from_name("nogroup")
        .unwrap()
        .expect("a group nogroup");
    (user.uid.as_raw(), group.gid.as_raw())
}

/// A port below 1024 that nothing listens on now, other than `taken`.
fn free_low_port(taken: &[u16]) -> u16 {
    (900..1024)
        .filter(|p| !taken.contains(p))
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below 1024")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_root_with_user_it_serves_as_that_user_and_reload_reopen_and_upgrade_still_work() {
    if !root() {
        return;
    }
    let (uid, gid) = nobody();
    let dir = TempDir::new("privileges");
    // Root's directories, as /var/log/nginx and /run are: the user cannot create files there.
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let port = free_port();
    let conf = |extra: &str| {
        format!(
            "user nobody nogroup;
             worker_processes 2;
             worker_rlimit_nofile 4096;
             daemon off;
             pid logs/imbang.pid;
             error_log logs/error.log notice;
             events {{}}
             http {{
               log_format short '$request_method $uri $status';
               access_log logs/access.log short;
               server {{ listen 127.0.0.1:{port}; return 200 ok; }}
               {extra}
             }}"
        )
    };
    dir.write("imbang.conf", &conf(""));
    let prefix = format!("{}/", dir.path().display());
    let logs = dir.path().join("logs");
    let mut guard = ImbangGuard::start(&prefix);
    let pid = wait_pid_file(&guard.pid_file, WAIT).await;
    assert_eq!(request(addr(port), "GET", "/first", "x", None).await.0, 200);

    assert_unprivileged(pid, (uid, gid), 2);
    let limits = read(Path::new(&format!("/proc/{pid}/limits")));
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_owned();
    assert_eq!(nofile, "4096", "{limits}");
    // The files it opened as root are the user's now, so that it can open them again.
    for name in ["error.log", "access.log", "imbang.pid"] {
        let meta = std::fs::metadata(logs.join(name)).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid, "{name}");
    }

    // A reload that binds a port below 1024 and reads a file only root may read.
    let low = free_low_port(&[]);
    let secret = dir.write(
        "secret.conf",
        &format!("server {{ listen 127.0.0.1:{low}; return 200 secret; }}"),
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir.write("imbang.conf", &conf("include secret.conf;"));
    kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    support::eventually("the reload", WAIT, || {
        read(&logs.join("error.log")).contains("reconfiguring done")
    })
    .await;
    assert_eq!(
        request(addr(low), "GET", "/", "x", None).await,
        (200, "secret".to_owned()),
        "{}",
        read(&logs.join("error.log"))
    );
    // The reload's capabilities were lowered again.
    assert_unprivileged(pid, (uid, gid), 2);

    // USR1 after logrotate: access.log was made again for the user (`create 0640 nobody`), so it
    // is reopened; error.log was not, and the user cannot create it in root's directory: that
    // log keeps its old file and says so there.
    for name in ["access.log", "error.log"] {
        std::fs::rename(logs.join(name), logs.join(format!("{name}.1"))).unwrap();
    }
    std::fs::write(logs.join("access.log"), "").unwrap();
    std::os::unix::fs::chown(logs.join("access.log"), Some(uid), None).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    let refused = format!(
        "[alert] {pid}#0: open() \"{}\" failed (13: Permission denied)",
        logs.join("error.log").display()
    );
    support::eventually("the reopen", WAIT, || {
        read(&logs.join("error.log.1")).contains(&refused)
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
    assert_eq!(
        read(&logs.join("access.log.1")),
        "GET /first 200\nGET / 200\n"
    );
    assert!(!logs.join("error.log").exists());
    assert_unprivileged(pid, (uid, gid), 2);

    // USR2 while error.log is missing: the new binary, not root, cannot create it and exits;
    // this process keeps serving and the pid file names it again.
    let pid_file = guard.pid_file.clone();
    kill(Pid::from_raw(pid), Signal::SIGUSR2).unwrap();
    support::eventually("the failed upgrade", WAIT, || {
        read(&logs.join("error.log.1")).contains("before serving")
    })
    .await;
    assert_eq!(read_pid_file(&pid_file), Some(pid));
    assert_eq!(request(addr(port), "GET", "/", "x", None).await.0, 200);

    // USR2 once logrotate made error.log for the user: the unprivileged process starts the new
    // binary, which runs as the same user with the same capabilities, serves both ports, and
    // can reload a new port below 1024.
    std::fs::write(logs.join("error.log"), "").unwrap();
    std::os::unix::fs::chown(logs.join("error.log"), Some(uid), None).unwrap();
    let new = guard.upgrade(pid, WAIT).await;
    assert_unprivileged(new, (uid, gid), 2);
    for p in [port, low] {
        assert_eq!(request(addr(p), "GET", "/", "x", None).await.0, 200);
    }
    let lower = free_low_port(&[low]);
    dir.write(
        "secret.conf",
        &format!("server {{ listen 127.0.0.1:{lower}; return 200 lower; }}"),
    );
    kill(Pid::from_raw(new), Signal::SIGHUP).unwrap();
    support::eventually("the new binary's reload", WAIT, || {
        read(&logs.join("error.log")).contains(&format!("{new}#0: reconfiguring done"))
    })
    .await;
    assert_eq!(
        request(addr(lower), "GET", "/", "x", None).await,
        (200, "lower".to_owned()),
        "{}",
        read(&logs.join("error.log"))
    );

    // Stop: the pid file (in root's directory) no longer names a process.
    kill(Pid::from_raw(new), Signal::SIGQUIT).unwrap();
    wait_exited(new, "the new binary's exit", WAIT).await;
    assert_eq!(read_pid_file(&pid_file), None);
    assert!(!process_alive(new));
}

/// Runs `imbang args` in `dir` as `(uid, gid)` (no supplementary groups) or as root.
fn run_as(dir: &Path, ids: Option<(u32, u32)>, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(imbang_bin());
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn user_is_looked_up_as_nginx_and_ignored_with_its_warning_when_not_root() {
    if !root() {
        return;
    }
    let dir = TempDir::new("privileges-t");
    let ids = Some(nobody());
    let prefix = format!("{}/", dir.path().display());
    let t = |file: &str, ids| run_as(dir.path(), ids, &["-t", "-q", "-p", &prefix, "-c", file]);
    let at = |file: &str| format!("{}/{file}:1:1", dir.path().display());
    for (file, text) in [
        (
            "unknown-user.conf",
            "user no-such-user-imbang;\nevents {}\n",
        ),
        // nginx's default group is the user's name, and Debian has no group "nobody".
        ("default-group.conf", "user nobody;\nevents {}\n"),
        ("nobody.conf", "user nobody nogroup;\nevents {}\n"),
        ("www-data.conf", "user www-data;\nevents {}\n"),
    ] {
        dir.write(file, text);
    }

    let (code, err) = t("unknown-user.conf", None);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "imbang: [emerg] getpwnam(\"no-such-user-imbang\") failed in {}\n",
            at("unknown-user.conf")
        )),
        "{err}"
    );
    let (code, err) = t("default-group.conf", None);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "imbang: [emerg] getgrnam(\"nobody\") failed in {}\n",
            at("default-group.conf")
        )),
        "{err}"
    );
    // Starting fails the same way, before anything is bound.
    let (code, err) = run_as(
        dir.path(),
        None,
        &[
            "-p",
            &prefix,
            "-c",
            "unknown-user.conf",
            "-g",
            "daemon off;",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("getpwnam(\"no-such-user-imbang\") failed"),
        "{err}"
    );

    assert_eq!(t("nobody.conf", None), (Some(0), String::new()));
    // Not root: nginx's warning, and the test still passes; already that user: nothing said.
    let (code, err) = t("www-data.conf", ids);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        err,
        format!(
            "imbang: [warn] the \"user\" directive makes sense only if the master process runs \
             with super-user privileges, ignored in {}\n",
            at("www-data.conf")
        )
    );
    assert_eq!(t("nobody.conf", ids), (Some(0), String::new()));
}
