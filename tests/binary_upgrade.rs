//! nginx's USR2 binary upgrade: the running imbang hands its listening sockets to a new copy of
//! itself, which takes over; not one connection is refused during the switch.
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{TempDir, backend, free_port, imbang_bin, try_request};

/// Kills (by pid) every process it was told about, when the test ends however it ends.
struct Reaper(Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn read_pid(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn wait_child(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "process did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usr2_hands_over_without_refusing_a_connection() {
    let dir = TempDir::new("usr2");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let app = backend("app").await;
    let port = free_port();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off;
             pid logs/imbang.pid;
             error_log logs/error.log notice;
             http {{
               access_log off;
               upstream app {{ server {}; }}
               server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; }} }}
             }}",
            app.addr
        ),
    );
    let mut old = Command::new(imbang_bin())
        .arg("-p")
        .arg(format!("{}/", dir.path().display()))
        .args(["-c", "imbang.conf"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut reaper = Reaper(vec![old.id() as i32]);
    let pid_file = dir.path().join("logs/imbang.pid");
    support::eventually("the pid file", Duration::from_secs(10), || {
        read_pid(&pid_file).is_some()
    })
    .await;
    let old_pid = read_pid(&pid_file).unwrap();
    assert_eq!(old_pid, old.id() as i32);

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..3 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match try_request(addr, "GET", "/", "localhost", None).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    support::eventually("load before the switch", Duration::from_secs(10), || {
        ok.load(Ordering::SeqCst) > 50
    })
    .await;

    kill(Pid::from_raw(old_pid), Signal::SIGUSR2).unwrap();
    support::eventually("the new process's pid", Duration::from_secs(20), || {
        read_pid(&pid_file).is_some_and(|p| p != old_pid)
    })
    .await;
    let new_pid = read_pid(&pid_file).unwrap();
    reaper.0.push(new_pid);
    let status = wait_child(&mut old, Duration::from_secs(20)).await;
    assert!(status.success(), "the old process exits cleanly: {status}");
    assert!(!dir.path().join("logs/imbang.pid.oldbin").exists());

    let after_switch = ok.load(Ordering::SeqCst);
    support::eventually("load after the switch", Duration::from_secs(10), || {
        ok.load(Ordering::SeqCst) > after_switch + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the switch"
    );

    kill(Pid::from_raw(new_pid), Signal::SIGQUIT).unwrap();
    support::eventually("the new process to stop", Duration::from_secs(10), || {
        !pid_file.exists()
    })
    .await;
    let log = std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap();
    assert!(
        log.contains(&format!("start new binary process {new_pid}")),
        "{log}"
    );
}
