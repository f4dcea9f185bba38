//! `imbang -s reopen` (USR1): log files moved away by logrotate are opened again.
mod support;

use std::time::Duration;

use support::{ImbangGuard, TempDir, backend, imbang_bin, request, run_imbang, wait_pid_file};

#[tokio::test]
async fn reopen_starts_fresh_access_and_error_logs_after_a_rotation() {
    let dir = TempDir::new("reopen");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let app = backend("app").await;
    let port = support::free_port();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; pid logs/imbang.pid; error_log logs/error.log notice; events {{}}
             http {{
               log_format short '$request_method $uri $status';
               access_log logs/access.log short;
               upstream app {{ server {}; }}
               server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; }} }}
             }}",
            app.addr
        ),
    );
    let prefix = format!("{}/", dir.path().display());
    let mut guard = ImbangGuard::new(dir.path().join("logs/imbang.pid"));
    guard.child = Some(
        std::process::Command::new(imbang_bin())
            .args(["-p", &prefix, "-c", "imbang.conf"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_pid_file(&guard.pid_file, Duration::from_secs(10)).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(request(addr, "GET", "/before", "x", None).await.0, 200);
    let log = |name: &str| {
        std::fs::read_to_string(dir.path().join("logs").join(name)).unwrap_or_default()
    };
    support::eventually("the first access line", Duration::from_secs(5), || {
        log("access.log") == "GET /before 200\n"
    })
    .await;

    // logrotate: move the files away, then tell imbang.
    for name in ["access.log", "error.log"] {
        std::fs::rename(
            dir.path().join("logs").join(name),
            dir.path().join("logs").join(format!("{name}.1")),
        )
        .unwrap();
    }
    let out = run_imbang(
        dir.path(),
        &["-p", &prefix, "-c", "imbang.conf", "-s", "reopen"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    support::eventually("a fresh error log", Duration::from_secs(5), || {
        log("error.log").contains("logs reopened")
    })
    .await;
    assert_eq!(request(addr, "GET", "/after", "x", None).await.0, 200);
    support::eventually("the second access line", Duration::from_secs(5), || {
        log("access.log") == "GET /after 200\n"
    })
    .await;
    assert_eq!(log("access.log.1"), "GET /before 200\n");
}
