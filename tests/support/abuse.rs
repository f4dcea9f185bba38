//! Abuse on the real binary over real sockets: imbang started with a config of the test's, its
//! resident memory measured over a case — the peak (`VmHWM` in /proc/PID/status, reset before
//! the case through /proc/PID/clear_refs) minus `VmRSS` before it — and a fresh client's view
//! of the service meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ImbangGuard, TempDir, free_port, wait_accepting};

pub const MIB: u64 = 1024 * 1024;

/// A running imbang binary, its prefix and pid.
pub struct Running {
    _dir: TempDir,
    _guard: ImbangGuard,
    pub pid: i32,
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
}

/// Starts the binary with `events` and `http` (its server listens on `addr`, given as
/// `LISTEN`).
pub async fn start(events: &str, http: &str, workers: usize) -> Running {
    let dir = TempDir::new("limits");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; worker_processes {workers}; error_log logs/error.log info;
             events {{ {events} }}
             http {{ access_log off; {} }}",
            http.replace("LISTEN", &addr.to_string())
        ),
    );
    let prefix = format!("{}/", dir.path().display());
    let guard = ImbangGuard::start(&prefix);
    let pid = guard.child.as_ref().unwrap().id() as i32;
    wait_accepting(addr, Duration::from_secs(10)).await;
    let log = dir.path().join("logs/error.log");
    Running {
        _dir: dir,
        _guard: guard,
        pid,
        addr,
        log,
    }
}

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`).
pub fn status_bytes(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
    kb * 1024
}

/// Resident memory measured over a case.
pub struct Rss {
    pid: i32,
    before: u64,
}

impl Rss {
    /// Resets the process's peak to what it has now and notes that.
    pub fn start(pid: i32) -> Self {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
        Self {
            pid,
            before: status_bytes(pid, "VmRSS"),
        }
    }

    /// How far the peak rose above the start.
    pub fn growth(&self) -> u64 {
        status_bytes(self.pid, "VmHWM").saturating_sub(self.before)
    }

    pub fn assert_under(&self, bound: u64, case: &str) {
        let growth = self.growth();
        eprintln!(
            "{case}: peak RSS grew {:.1} MiB (from {:.1} MiB; bound {:.0} MiB)",
            growth as f64 / MIB as f64,
            self.before as f64 / MIB as f64,
            bound as f64 / MIB as f64
        );
        assert!(
            growth < bound,
            "{case}: imbang's peak RSS grew by {growth} bytes, over the bound of {bound}"
        );
    }
}

/// Sends `GET path` on `s` (kept alive) and reads the answer: status and body.
pub async fn exchange(s: &mut TcpStream, path: &str) -> (u16, Vec<u8>) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_answer(s).await.expect("an answer")
}

/// One answer with a Content-Length body, or `None` when the connection ends first.
pub async fn read_answer(s: &mut TcpStream) -> Option<(u16, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("an answer within 10 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.get(9..12)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    s.read_exact(&mut body).await.ok()?;
    Some((status, body))
}

/// A fresh client's `GET path`: what another client sees while the abuse goes on.
pub async fn served(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    exchange(&mut s, path).await.0
}
