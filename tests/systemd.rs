//! `Type=notify`: imbang tells systemd when it serves, reloads and stops (sd_notify protocol on
//! the datagram socket named by NOTIFY_SOCKET).
mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{TempDir, imbang_bin};

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_reloading_and_stopping_are_announced() {
    let dir = TempDir::new("notify");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    dir.write(
        "imbang.conf",
        "daemon off; events {} http { access_log off; server { listen 127.0.0.1:0; return 200 ok; } }",
    );
    let mut child = Command::new(imbang_bin())
        .arg("-p")
        .arg(format!("{}/", dir.path().display()))
        .args(["-c", "imbang.conf", "-e", "stderr"])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let run = || -> Result<(), String> {
        let ready = recv(&socket);
        if ready != format!("MAINPID={}\nREADY=1\n", child.id()) {
            return Err(format!("start: {ready:?}"));
        }
        kill(pid, Signal::SIGHUP).unwrap();
        let reloading = recv(&socket);
        if !reloading.starts_with("RELOADING=1\nMONOTONIC_USEC=") {
            return Err(format!("reload: {reloading:?}"));
        }
        let again = recv(&socket);
        if again != "READY=1\n" {
            return Err(format!("after reload: {again:?}"));
        }
        kill(pid, Signal::SIGQUIT).unwrap();
        let stopping = recv(&socket);
        if stopping != "STOPPING=1\n" {
            return Err(format!("stop: {stopping:?}"));
        }
        Ok(())
    };
    let result = run();
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    result.unwrap();
    assert!(status.success());
}
