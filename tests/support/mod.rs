//! Test support: real backends on 127.0.0.1:0, imbang in-process or as the real binary, and a
//! small HTTP client. No mocks of the network, no sleeps as synchronisation.
#![allow(dead_code)]

pub mod abuse;
pub mod dns;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use imbang::config::{self, LoadOptions};
use imbang::server::Server;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a test backend does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the backend's name as the body (plus ` body=N` when the request had a body).
    Answer,
    /// Reads the request and never answers.
    Hang,
    /// Answers with this status and the name.
    Status(u16),
    /// Reads the request, counts it, and answers only once [`TestBackend::release`] is called.
    Hold,
    /// Answers like `Answer`, this many milliseconds late.
    Delay(u64),
    /// Sends the head at once and the body this many milliseconds later.
    SlowBody(u64),
    /// Reads the whole request, counts it, and closes the connection without answering (a peer
    /// that crashed while handling it).
    CloseAfterRead,
    /// Reads the request, counts it, sends a 200 head announcing 1000 bytes and the first 10 of
    /// them, then breaks the connection (a peer that died mid-response).
    BreakMidBody,
    /// Answers its first `after` requests (over all connections, keeping them alive), then
    /// closes every connection on which a request arrives without reading a byte of it: the
    /// kernel resets a socket closed with unread data, as when a process is killed with a
    /// request waiting in its socket. Such requests are not counted as hits but as resets.
    ResetUnread { after: usize },
    /// Answers its first `after` requests (keeping the connections alive), then reads each later
    /// request whole, counts it, and closes the connection without answering: a FIN, as from a
    /// process that died while handling it.
    FinAfterRead { after: usize },
}

/// An HTTP/1.1 server on 127.0.0.1:0 that counts what it received.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Request body bytes received, over all requests.
    pub body_bytes: Arc<AtomicUsize>,
    /// Connections closed with a request unread ([`Behaviour::ResetUnread`]).
    pub resets: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    release: watch::Sender<bool>,
}

pub async fn backend(name: &str) -> TestBackend {
    backend_with(name, Behaviour::Answer, "127.0.0.1:0".parse().unwrap()).await
}

pub async fn backend_with(name: &str, behaviour: Behaviour, addr: SocketAddr) -> TestBackend {
    let listener = TcpListener::bind(addr).await.expect("bind backend");
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let body_bytes = Arc::new(AtomicUsize::new(0));
    let received = body_bytes.clone();
    let resets = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let (release, released) = watch::channel(false);
    if let Behaviour::ResetUnread { .. } | Behaviour::FinAfterRead { .. } = behaviour {
        let raw = RawBackend {
            name: name.to_owned(),
            behaviour,
            hits: hits.clone(),
            body_bytes: body_bytes.clone(),
            resets: resets.clone(),
        };
        tokio::spawn(raw.serve(listener, stopped));
        return TestBackend {
            name: name.to_owned(),
            addr,
            hits,
            body_bytes,
            resets,
            stop,
            release,
        };
    }
    let name_owned = name.to_owned();
    let counter = hits.clone();
    tokio::spawn(async move {
        let mut stop_accepting = stopped.clone();
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                _ = stop_accepting.wait_for(|s| *s) => return,
            };
            let name = name_owned.clone();
            let counter = counter.clone();
            let received = received.clone();
            let mut stopped = stopped.clone();
            let released = released.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let name = name.clone();
                    let counter = counter.clone();
                    let received = received.clone();
                    let mut released = released.clone();
                    async move {
                        let method = req.method().clone();
                        let uri = req.uri().clone();
                        // Only a complete request counts as received (an app acts on nothing less).
                        let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
                            let mut res = Response::new(BackendBody::Full(Full::new(
                                Bytes::from_static(b"incomplete"),
                            )));
                            *res.status_mut() = hyper::StatusCode::BAD_REQUEST;
                            return Ok(res);
                        };
                        received.fetch_add(body.len(), Ordering::SeqCst);
                        counter.fetch_add(1, Ordering::SeqCst);
                        let mut text = format!("{name} {method} {uri}");
                        if !body.is_empty() {
                            text.push_str(&format!(" body={}", body.len()));
                        }
                        let status = match behaviour {
                            Behaviour::Answer => 200,
                            Behaviour::Hold => {
                                let _ = released.wait_for(|r| *r).await;
                                200
                            }
                            Behaviour::Delay(ms) => {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                                200
                            }
                            Behaviour::SlowBody(ms) => {
                                let body = Bytes::from(text);
                                let late = Box::pin(tokio::time::sleep(Duration::from_millis(ms)));
                                return Ok(Response::new(BackendBody::Late(late, Some(body))));
                            }
                            Behaviour::Status(s) => s,
                            Behaviour::Hang => {
                                std::future::pending::<()>().await;
                                unreachable!()
                            }
                            // hyper closes a connection whose service fails, answering nothing.
                            Behaviour::CloseAfterRead => {
                                return Err(std::io::Error::other("crashed"));
                            }
                            Behaviour::BreakMidBody => {
                                let mut res = Response::new(BackendBody::Broken(None));
                                res.headers_mut()
                                    .insert("content-length", "1000".parse().unwrap());
                                return Ok(res);
                            }
                            Behaviour::ResetUnread { .. } | Behaviour::FinAfterRead { .. } => {
                                unreachable!("served by RawBackend")
                            }
                        };
                        let mut res =
                            Response::new(BackendBody::Full(Full::new(Bytes::from(text))));
                        *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::io::Error>(res)
                    }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            });
        }
    });
    TestBackend {
        name: name.to_owned(),
        addr,
        hits,
        body_bytes,
        resets,
        stop,
        release,
    }
}

/// A backend on plain TCP, for what hyper's server cannot do: look at a request without
/// reading it. Requests have a `Content-Length` body or none.
struct RawBackend {
    name: String,
    behaviour: Behaviour,
    hits: Arc<AtomicUsize>,
    body_bytes: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
}

impl RawBackend {
    async fn serve(self, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let answered = Arc::new(AtomicUsize::new(0));
        loop {
            let stream = tokio::select! {
                a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                _ = stopped.wait_for(|s| *s) => return,
            };
            let (this, answered, mut stopped) = (this.clone(), answered.clone(), stopped.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = this.connection(stream, &answered) => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            });
        }
    }

    async fn connection(&self, mut stream: TcpStream, answered: &AtomicUsize) {
        use tokio::io::AsyncWriteExt;
        let (Behaviour::ResetUnread { after } | Behaviour::FinAfterRead { after }) = self.behaviour
        else {
            unreachable!("a raw backend's behaviour")
        };
        loop {
            // Wait for the next request without taking any of it from the socket.
            if !matches!(stream.peek(&mut [0u8; 1]).await, Ok(1)) {
                return;
            }
            let answer = answered.fetch_add(1, Ordering::SeqCst) < after;
            if !answer && matches!(self.behaviour, Behaviour::ResetUnread { .. }) {
                self.resets.fetch_add(1, Ordering::SeqCst);
                return; // closed with the request unread: the kernel sends RST
            }
            let Some((method, path, body)) = read_request(&mut stream).await else {
                return;
            };
            self.hits.fetch_add(1, Ordering::SeqCst);
            self.body_bytes.fetch_add(body, Ordering::SeqCst);
            if !answer {
                return; // read whole, closed unanswered: FIN
            }
            let mut text = format!("{} {method} {path}", self.name);
            if body > 0 {
                text.push_str(&format!(" body={body}"));
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Reads one request with a `Content-Length` body (or none): method, target, body length.
async fn read_request(stream: &mut TcpStream) -> Option<(String, String, usize)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < length {
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        have += n;
    }
    Some((method, path, length))
}

/// A test backend's response body: whole, or broken after its first 10 bytes.
enum BackendBody {
    Full(Full<Bytes>),
    /// A pause once the 10 bytes went out (so hyper writes them), then the error.
    Broken(Option<std::pin::Pin<Box<tokio::time::Sleep>>>),
    /// The bytes once the pause is over.
    Late(std::pin::Pin<Box<tokio::time::Sleep>>, Option<Bytes>),
}

impl hyper::body::Body for BackendBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        match self.get_mut() {
            Self::Full(full) => std::pin::Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Self::Broken(pause @ None) => {
                *pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
                    b"0123456789",
                )))))
            }
            Self::Broken(Some(pause)) => {
                std::task::ready!(pause.as_mut().poll(cx));
                Poll::Ready(Some(Err(std::io::Error::other("died mid-response"))))
            }
            Self::Late(pause, bytes) => {
                std::task::ready!(pause.as_mut().poll(cx));
                Poll::Ready(bytes.take().map(|b| Ok(hyper::body::Frame::data(b))))
            }
        }
    }

    // Whole bodies keep their exact length, so they go out with a Content-Length as before.
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(full) => full.is_end_stream(),
            Self::Broken(_) => false,
            Self::Late(_, bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Full(full) => full.size_hint(),
            Self::Broken(_) => hyper::body::SizeHint::default(),
            Self::Late(_, bytes) => {
                hyper::body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl TestBackend {
    /// Stops accepting and closes every open connection (as a killed process would).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Lets every request held by a [`Behaviour::Hold`] backend (now and later) be answered.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Request body bytes received so far.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes.load(Ordering::SeqCst)
    }

    /// Connections closed with a request unread so far ([`Behaviour::ResetUnread`]).
    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }
}

/// imbang running in this process.
pub struct Lb {
    pub server: Arc<Server>,
    pub addr: SocketAddr,
}

/// The prefix in-process instances use: a directory of this test process with `logs/`, so
/// nginx's default `access_log logs/access.log` has somewhere to go.
pub fn options() -> LoadOptions {
    static PREFIX: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        // Under target/ (cargo's scratch space for tests), so nothing is left in /tmp.
        let p =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prefix-{}", std::process::id()));
        std::fs::create_dir_all(p.join("logs")).unwrap();
        p
    });
    LoadOptions {
        prefix: prefix.clone(),
        default_listen_port: 8000,
    }
}

/// Parses and compiles `text` as `/t/imbang.conf`: the first error message, as `-t` prints it.
pub fn compile(text: &str) -> Result<(), String> {
    config::parse_str("/t/imbang.conf", text, &options())
        .map_err(|e| e.to_string())
        .and_then(|c| {
            Server::new(c, None, None)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
}

/// Starts imbang in-process with `conf` (main-context text); its first listener's real address
/// is `lb.addr` (configs listen on `127.0.0.1:0`).
pub async fn imbang(conf: &str) -> Lb {
    let config = config::parse_str("/test/imbang.conf", conf, &options())
        .unwrap_or_else(|e| panic!("config errors:\n{e}"));
    let server = Server::new(config, None, None).unwrap_or_else(|e| panic!("compile errors:\n{e}"));
    let bound = server.bind().expect("bind");
    server.serve(bound).await.expect("serve");
    let addr = server.bound().await[0].1;
    Lb { server, addr }
}

impl Lb {
    pub async fn get(&self, path: &str) -> (u16, String) {
        request(self.addr, "GET", path, "localhost", None).await
    }

    pub async fn get_host(&self, host: &str, path: &str) -> (u16, String) {
        request(self.addr, "GET", path, host, None).await
    }

    /// Bodies of `n` sequential GETs.
    pub async fn bodies(&self, path: &str, n: usize) -> Vec<String> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.get(path).await.1);
        }
        v
    }

    pub async fn reload(&self, conf: &str) {
        let config = config::parse_str("/test/imbang.conf", conf, &options()).expect("config");
        self.server.apply(config).await.expect("reload");
    }
}

/// One request over a new connection: `(status, body)`. Panics on transport errors.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    body: Option<&str>,
) -> (u16, String) {
    try_request(addr, method, path, host, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    exchange(stream, method, path, host, body).await
}

/// A GET over a new connection from the local address `source` (any of 127.0.0.0/8 works on
/// Linux), as a client on another host would connect. Panics on transport errors.
pub async fn get_from(source: std::net::IpAddr, addr: SocketAddr, path: &str) -> (u16, String) {
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let socket = socket.expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind client");
    let stream = socket.connect(addr).await.expect("connect");
    exchange(stream, "GET", path, "localhost", None)
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {source}: {e}"))
}

async fn exchange(
    stream: TcpStream,
    method: &str,
    path: &str,
    host: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

// === the real binary ===

pub fn imbang_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imbang"))
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "imbang-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (bounded) until `cond` holds, polling; panics with `what` when it never does.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago (for processes that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// === processes of the real binary and other real programs (cli.rs, seed.rs) ===

/// What a finished command printed: exit code, stdout, stderr.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs imbang with `args` in `cwd` to completion, bounded by 30 s (the process is killed when
/// the time is up and the test fails).
pub async fn run_imbang(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(imbang_bin());
    cmd.args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("imbang {args:?} did not finish within 30 s"))
        .unwrap_or_else(|e| panic!("cannot run imbang {args:?}: {e}"));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The pid in a pid file that is completely written (`"<pid>\n"`), if any.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.strip_suffix('\n')?.parse().ok().filter(|&p| p > 0)
}

/// Waits (bounded) for `path` to hold a pid, and returns it.
pub async fn wait_pid_file(path: &Path, timeout: Duration) -> i32 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(pid) = read_pid_file(path) {
            return pid;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "no pid file {} after {timeout:?} (text: {:?})",
                path.display(),
                std::fs::read_to_string(path).ok()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is a process that has not exited (a zombie has exited). Linux `/proc`.
pub fn process_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    match stat.rsplit_once(')') {
        Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X') | None),
        None => false,
    }
}

/// Whether `pid` runs the imbang binary under test (so a guard never kills a reused pid).
pub fn is_imbang(pid: i32) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let ours = std::fs::canonicalize(imbang_bin()).unwrap_or_else(|_| imbang_bin());
    // A binary rebuilt while running shows as "<path> (deleted)".
    exe.to_string_lossy().starts_with(&*ours.to_string_lossy())
}

/// Waits (bounded) until `pid` has exited; panics with `what` otherwise.
pub async fn wait_exited(pid: i32, what: &str, timeout: Duration) {
    eventually(what, timeout, || !process_alive(pid)).await;
}

/// The real port of `listen <configured>` from the error log's notice line
/// `listening on <configured> (bound to <addr>)`.
pub fn bound_port(log: &str, configured: &str) -> Option<u16> {
    let needle = format!("listening on {configured} (bound to ");
    log.lines().rev().find_map(|line| {
        let rest = &line[line.find(&needle)? + needle.len()..];
        let addr: SocketAddr = rest.strip_suffix(')')?.parse().ok()?;
        Some(addr.port())
    })
}

/// Owns imbang processes started by a test: a foreground child (killed and waited for on drop)
/// and, for a daemon, the pid found in its pid file (SIGKILLed on drop if it still runs imbang).
pub struct ImbangGuard {
    pub child: Option<std::process::Child>,
    pub pid_file: PathBuf,
    pub pid: Option<i32>,
}

impl ImbangGuard {
    /// A binary upgrade (`USR2`) of the process the test started (`child`, pid `pid`): waits for
    /// the new binary's pid in the pid file and for the old process to exit successfully, as
    /// nginx's dance ends. The guard then stops the new one. Returns the new pid.
    pub async fn upgrade(&mut self, pid: i32, timeout: Duration) -> i32 {
        use nix::sys::signal::{Signal, kill};
        kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR2).unwrap();
        let pid_file = self.pid_file.clone();
        eventually("the new binary's pid", timeout, || {
            read_pid_file(&pid_file).is_some_and(|p| p != pid)
        })
        .await;
        let new = read_pid_file(&self.pid_file).unwrap();
        self.pid = Some(new);
        let old = self.child.as_mut().expect("a process the test started");
        let status = wait_child(old, timeout).await;
        assert!(status.success(), "the old process: {status:?}");
        new
    }

    pub fn new(pid_file: PathBuf) -> Self {
        Self {
            child: None,
            pid_file,
            pid: None,
        }
    }

    /// imbang started in the foreground on `prefix` (ending in `/`), with the `imbang.conf`
    /// there, whose pid file is `logs/imbang.pid`.
    pub fn start(prefix: &str) -> Self {
        let mut guard = Self::new(Path::new(prefix).join("logs/imbang.pid"));
        guard.child = Some(
            std::process::Command::new(imbang_bin())
                .args(["-p", prefix, "-c", "imbang.conf"])
                .stdin(std::process::Stdio::null())
                .spawn()
                .expect("spawn imbang"),
        );
        guard
    }

    fn kill_daemon(pid: i32) {
        if process_alive(pid) && is_imbang(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for ImbangGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = self.pid {
            Self::kill_daemon(pid);
        }
        if let Some(pid) = read_pid_file(&self.pid_file) {
            Self::kill_daemon(pid);
        }
    }
}

/// Waits (bounded, polling) for `child` to exit and returns its status.
pub async fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process (e.g. a node app), killed and waited for on drop.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Killing an exited-and-reaped child is a harmless error; waiting again returns the
        // status std kept.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until something accepts TCP connections on `addr`.
pub async fn wait_accepting(addr: SocketAddr, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("nothing accepts connections on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A backend that switches to the `echo` protocol and echoes every byte back.
pub async fn echo_backend() -> SocketAddr {
    serve_hyper(|mut req: Request<Incoming>| async move {
        let asked = req.headers().get("upgrade").cloned();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut res = Response::new(http_body_util::Empty::<Bytes>::new());
        match asked {
            Some(p) if p == "echo" => {
                *res.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                res.headers_mut().insert("upgrade", p);
                res.headers_mut()
                    .insert("connection", "upgrade".parse().unwrap());
            }
            _ => *res.status_mut() = hyper::StatusCode::BAD_REQUEST,
        }
        Ok::<_, std::convert::Infallible>(res)
    })
    .await
}

/// Serves `handler` with hyper's HTTP/1 server (upgrades allowed) on 127.0.0.1:0: the origins
/// tests need beyond [`backend`].
pub async fn serve_hyper<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, std::convert::Infallible>>
        + Send
        + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_hyper_counted(handler, Connections::default()).await
}

/// The connections a test server accepted, and those of them that ended.
#[derive(Clone, Default)]
pub struct Connections {
    pub accepted: Arc<AtomicUsize>,
    pub closed: Arc<AtomicUsize>,
}

/// [`serve_hyper`], counting its connections in `count`.
pub async fn serve_hyper_counted<F, Fut, B>(handler: F, count: Connections) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, std::convert::Infallible>>
        + Send
        + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            count.accepted.fetch_add(1, Ordering::SeqCst);
            let (handler, closed) = (handler.clone(), count.closed.clone());
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handler))
                    .with_upgrades()
                    .await;
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    addr
}

/// The status code of a raw HTTP/1.1 answer (`HTTP/1.1 502 Bad Gateway ...`), 0 if none.
pub fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// === the machine's nginx, for side-by-side comparisons ===

/// Starts the machine's nginx (one process, stopped on drop) with `http` as its http block, on a
/// free port of 127.0.0.1 (`{listen}` in the text). `None` when nginx is not installed.
pub async fn start_nginx(dir: &TempDir, http: &str) -> Option<(ChildGuard, SocketAddr)> {
    let nginx = Path::new("/usr/sbin/nginx");
    if !nginx.exists() {
        eprintln!("skipped: /usr/sbin/nginx is not installed");
        return None;
    }
    let port = free_port();
    let conf = dir.write(
        "nginx.conf",
        &format!(
            "error_log {dir}/error.log; pid {dir}/nginx.pid; events {{}}
             http {{ client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; {} }}",
            http.replace("{listen}", &port.to_string()),
            dir = dir.path().display()
        ),
    );
    let child = std::process::Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off; master_process off;"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    let guard = ChildGuard(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_accepting(addr, Duration::from_secs(5)).await;
    Some((guard, addr))
}

/// Each thread of process `pid` (Linux `/proc/<pid>/task`): its name, and the fields of its
/// `status` (`Uid`, `CapEff`, ...) with runs of whitespace made one space. Sorted by name.
pub fn threads(pid: i32) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // The thread ended meanwhile.
        };
        let fields: std::collections::HashMap<String, String> = status
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        out.push((fields.get("Name").cloned().unwrap_or_default(), fields));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn caps(fields: &std::collections::HashMap<String, String>, set: &str) -> u64 {
    u64::from_str_radix(&fields[set], 16).unwrap()
}

/// Every thread of `pid` runs as `(uid, gid)` (real, effective, saved and file-system ids, so
/// there is no way back to root and no file root could write is writable), with only that
/// group; the `workers` worker threads hold no capability; the main thread holds `CAP_DAC_READ_SEARCH` and `CAP_NET_BIND_SERVICE`
/// permitted, none effective.
pub fn assert_unprivileged(pid: i32, (uid, gid): (u32, u32), workers: usize) {
    let threads = threads(pid);
    let ids = |id: u32| format!("{id} {id} {id} {id}");
    for (name, status) in &threads {
        assert_eq!(status["Uid"], ids(uid), "{name}: {status:?}");
        assert_eq!(status["Gid"], ids(gid), "{name}: {status:?}");
        assert_eq!(status["Groups"], gid.to_string(), "{name}: {status:?}");
        assert_eq!(status["NoNewPrivs"], "1", "{name}");
        assert_eq!(
            caps(status, "CapEff"),
            0,
            "{name} has effective capabilities"
        );
        assert_eq!(caps(status, "CapAmb"), 0, "{name} has ambient capabilities");
        if name.starts_with("imbang-worker-") {
            assert_eq!(caps(status, "CapPrm"), 0, "{name} may raise capabilities");
            assert_eq!(caps(status, "CapInh"), 0, "{name}");
        } else {
            assert_eq!(name, "imbang", "a thread imbang did not name: {status:?}");
            assert_eq!(
                caps(status, "CapPrm"),
                (1 << 2) | (1 << 10),
                "the main thread keeps"
            );
        }
    }
    let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<String> = std::iter::once("imbang".to_owned())
        .chain((0..workers).map(|i| format!("imbang-worker-{i}")))
        .collect();
    assert_eq!(names, want, "the threads of {pid}");
}

/// The head of the response to `GET path` (Host `t`, `Connection: close`) on a new connection to
/// `addr`, as the bytes came: status line and fields, without the blank line.
pub async fn response_head(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    text.split("\r\n\r\n").next().unwrap().to_owned()
}

/// An origin that answers one request with `content_type` and a body of unknown length made of
/// the pieces the test sends through the returned channel, each as it is sent (Server-Sent
/// Events, a page that streams); the body ends when the sender is dropped.
pub async fn piecewise_origin(
    content_type: &'static str,
    capacity: usize,
) -> (SocketAddr, tokio::sync::mpsc::Sender<Bytes>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(capacity);
    let slot = Arc::new(std::sync::Mutex::new(Some(rx)));
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(move |_req: Request<Incoming>| {
            let rx = slot.lock().unwrap().take().expect("one request");
            async move {
                let mut res = Response::new(Pieces(rx));
                res.headers_mut()
                    .insert("content-type", content_type.parse().unwrap());
                Ok::<_, std::convert::Infallible>(res)
            }
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    (addr, tx)
}

/// A body that yields what the test sends it, as it is sent.
struct Pieces(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}
