//! nginx's `stream { }`: TCP connections balanced over real TCP backends on 127.0.0.1, through
//! imbang in-process (and the real binary for a reload with a session open), bytes asserted.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{TempDir, eventually, free_port, imbang};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(10);

/// A TCP backend: on each connection it sends `name\n`, then echoes what it reads; at the
/// client's end of stream it sends `<name> saw eof\n` and closes.
struct Tcp {
    addr: SocketAddr,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
}

async fn tcp_backend(name: &str) -> Tcp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let name = name.clone();
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => {
                            let _ = s.write_all(format!("{name} saw eof\n").as_bytes()).await;
                            let _ = s.shutdown().await;
                            return;
                        }
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    Tcp { addr, accepted }
}

/// A port nothing listens on (connects are refused).
fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Reads one line (up to `\n`) within `T`.
async fn line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    tokio::time::timeout(T, async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) => out.push(b[0]),
            }
        }
    })
    .await
    .expect("a line in time");
    String::from_utf8(out).unwrap()
}

/// Everything until the end of stream, within `T`.
async fn rest(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .expect("end of stream in time")
        .ok();
    out
}

/// The first line (the backend's name) of a new connection through `addr`.
async fn first_line(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    line(&mut s).await
}

fn conf(stream: &str) -> String {
    format!("events {{}}\nstream {{\n{stream}\n}}\n")
}

#[tokio::test]
async fn round_robin_with_weights_and_bytes_both_ways() {
    let (a, b) = (tcp_backend("a").await, tcp_backend("b").await);
    let lb = imbang(&conf(&format!(
        "upstream app {{ server {} weight=2; server {}; }}
         server {{ listen 127.0.0.1:0; proxy_pass app; }}",
        a.addr, b.addr
    )))
    .await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(first_line(lb.addr).await);
    }
    // nginx's smooth weighted round robin: a b a, a b a.
    assert_eq!(seen, ["a", "b", "a", "a", "b", "a"]);

    // Raw bytes (every value of a byte) go through unchanged, both ways.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(line(&mut s).await, "a");
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let (mut r, mut w) = s.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w
    });
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(T, r.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, payload);
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn proxy_pass_to_an_address_and_return() {
    let a = tcp_backend("direct").await;
    let lb = imbang(&conf(&format!(
        "server {{ listen 127.0.0.1:0; proxy_pass {}; }}",
        a.addr
    )))
    .await;
    assert_eq!(first_line(lb.addr).await, "direct");

    let lb = imbang(&conf(
        "server { listen 127.0.0.1:0; return \"hello $remote_addr $protocol\\n\"; }",
    ))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(rest(&mut s).await, b"hello 127.0.0.1 TCP\n");
}

#[tokio::test]
async fn a_failed_connect_moves_to_the_next_peer_and_counts_against_it() {
    let b = tcp_backend("b").await;
    let dead = closed_port();
    let lb = imbang(&conf(&format!(
        "upstream app {{ server {dead} max_fails=1 fail_timeout=30s; server {}; }}
         server {{ listen 127.0.0.1:0; proxy_pass app; }}",
        b.addr
    )))
    .await;
    // The dead peer is tried first, fails, and the session goes on to b.
    assert_eq!(first_line(lb.addr).await, "b");
    // It is out for fail_timeout: every later session goes straight to b.
    for _ in 0..3 {
        assert_eq!(first_line(lb.addr).await, "b");
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 4);

    // proxy_next_upstream off: the failed connect ends the session (nothing reaches b).
    let lb = imbang(&conf(&format!(
        "upstream app {{ server {dead}; server {}; }}
         server {{ listen 127.0.0.1:0; proxy_pass app; proxy_next_upstream off; }}",
        b.addr
    )))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(rest(&mut s).await, b"");
}

#[tokio::test]
async fn backup_and_down_peers() {
    let (a, b, c) = (
        tcp_backend("a").await,
        tcp_backend("b").await,
        tcp_backend("c").await,
    );
    let lb = imbang(&conf(&format!(
        "upstream app {{ server {} down; server {}; server {} backup; }}
         server {{ listen 127.0.0.1:0; proxy_pass app; }}",
        a.addr, b.addr, c.addr
    )))
    .await;
    assert_eq!(first_line(lb.addr).await, "b");
    assert_eq!(first_line(lb.addr).await, "b");
    assert_eq!(a.accepted.load(Ordering::SeqCst), 0);

    // Only the backup is alive: it takes the sessions.
    let dead = closed_port();
    let lb = imbang(&conf(&format!(
        "upstream app {{ server {dead}; server {} backup; }}
         server {{ listen 127.0.0.1:0; proxy_pass app; }}",
        c.addr
    )))
    .await;
    assert_eq!(first_line(lb.addr).await, "c");
}

#[tokio::test]
async fn least_conn_counts_open_sessions() {
    let (a, b) = (tcp_backend("a").await, tcp_backend("b").await);
    let lb = imbang(&conf(&format!(
        "upstream app {{ least_conn; server {}; server {}; }}
         server {{ listen 127.0.0.1:0; proxy_pass app; }}",
        a.addr, b.addr
    )))
    .await;
    // A session held open on the first peer: every new one goes to the other.
    let mut held = TcpStream::connect(lb.addr).await.unwrap();
    let first = line(&mut held).await;
    let other = if first == "a" { "b" } else { "a" };
    for _ in 0..3 {
        assert_eq!(first_line(lb.addr).await, other);
    }
    held.shutdown().await.unwrap();
}

#[tokio::test]
async fn hash_and_max_conns() {
    let (a, b) = (tcp_backend("a").await, tcp_backend("b").await);
    let lb = imbang(&conf(&format!(
        "upstream app {{ hash $remote_addr consistent; server {}; server {}; }}
         server {{ listen 127.0.0.1:0; proxy_pass app; }}",
        a.addr, b.addr
    )))
    .await;
    let first = first_line(lb.addr).await;
    for _ in 0..5 {
        assert_eq!(first_line(lb.addr).await, first);
    }

    // max_conns=1: while a holds its one session, the next goes to b.
    let lb = imbang(&conf(&format!(
        "upstream app {{ server {} max_conns=1; server {} max_conns=1; }}
         server {{ listen 127.0.0.1:0; proxy_pass app; }}",
        a.addr, b.addr
    )))
    .await;
    let mut one = TcpStream::connect(lb.addr).await.unwrap();
    let mut two = TcpStream::connect(lb.addr).await.unwrap();
    let mut names = [line(&mut one).await, line(&mut two).await];
    names.sort();
    assert_eq!(names, ["a", "b"]);
    // Both at max_conns: the third session finds no live upstream and is closed.
    let mut three = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(rest(&mut three).await, b"");
}

#[tokio::test]
async fn proxy_pass_with_variables_map_and_set() {
    let (a, b) = (tcp_backend("a").await, tcp_backend("b").await);
    let p1 = free_port();
    let p2 = free_port();
    let lb = imbang(&conf(&format!(
        "upstream pool_a {{ server {}; }}
         map $server_port $pool {{ {p1} pool_a; default {}; }}
         server {{ listen 127.0.0.1:{p1}; proxy_pass $pool; }}
         server {{ listen 127.0.0.1:{p2}; set $to {}; proxy_pass $to; }}",
        a.addr, b.addr, b.addr
    )))
    .await;
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(first_line(at(p1)).await, "a");
    assert_eq!(first_line(at(p2)).await, "b");
    drop(lb);
}

#[tokio::test]
async fn allow_and_deny() {
    let a = tcp_backend("a").await;
    let lb = imbang(&conf(&format!(
        "server {{ listen 127.0.0.1:0; deny 127.0.0.1; allow all; proxy_pass {}; }}",
        a.addr
    )))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(rest(&mut s).await, b"");
    assert_eq!(a.accepted.load(Ordering::SeqCst), 0);

    let lb = imbang(&conf(&format!(
        "allow 127.0.0.0/8; deny all;
         server {{ listen 127.0.0.1:0; proxy_pass {}; }}",
        a.addr
    )))
    .await;
    assert_eq!(first_line(lb.addr).await, "a");
}

#[tokio::test]
async fn access_log_with_stream_variables() {
    let dir = TempDir::new("stream-log");
    let log = dir.path().join("stream.log");
    let a = tcp_backend("a").await;
    let dead = closed_port();
    let lb = imbang(&conf(&format!(
        "log_format basic '$remote_addr $protocol $status $bytes_sent $bytes_received \"$upstream_addr\" $upstream_bytes_sent $upstream_bytes_received $upstream_connect_time';
         upstream app {{ server {dead}; server {}; }}
         server {{ listen 127.0.0.1:0; access_log {} basic; proxy_pass app; }}",
        a.addr,
        log.display()
    )))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(line(&mut s).await, "a");
    s.write_all(b"hello\n").await.unwrap();
    assert_eq!(line(&mut s).await, "hello");
    s.shutdown().await.unwrap();
    let _ = rest(&mut s).await;
    eventually("the log line", T, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let text = &text[..text.rfind(", ").unwrap() + 2];
    // As nginx 1.22 logs it (compared side by side). To the client: "a\n" and the echo "hello\n" (8 bytes); from it: "hello\n" (6). The dead
    // peer's try shows with 0 bytes.
    assert_eq!(
        text,
        format!("127.0.0.1 TCP 200 8 6 \"{dead}, {}\" 0, 6 0, 8 -, ", a.addr)
    );
}

#[tokio::test]
async fn proxy_timeout_ends_an_idle_session() {
    let a = tcp_backend("a").await;
    let lb = imbang(&conf(&format!(
        "server {{ listen 127.0.0.1:0; proxy_timeout 300ms; proxy_pass {}; }}",
        a.addr
    )))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(line(&mut s).await, "a");
    let started = tokio::time::Instant::now();
    // Nothing more comes: imbang ends the session after the timeout.
    assert_eq!(rest(&mut s).await, b"");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn half_close_passes_the_fin_on_when_asked() {
    let a = tcp_backend("a").await;
    // proxy_half_close on: the client's FIN reaches the peer, whose answer still comes back.
    let lb = imbang(&conf(&format!(
        "server {{ listen 127.0.0.1:0; proxy_half_close on; proxy_pass {}; }}",
        a.addr
    )))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(line(&mut s).await, "a");
    s.write_all(b"x\n").await.unwrap();
    assert_eq!(line(&mut s).await, "x");
    s.shutdown().await.unwrap();
    assert_eq!(rest(&mut s).await, b"a saw eof\n");

    // Off (nginx's default): the client's FIN ends the session; the answer is not waited for.
    let lb = imbang(&conf(&format!(
        "server {{ listen 127.0.0.1:0; proxy_pass {}; }}",
        a.addr
    )))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(line(&mut s).await, "a");
    s.shutdown().await.unwrap();
    assert_eq!(rest(&mut s).await, b"");
}

#[tokio::test]
async fn download_rate_holds_the_peer_to_client_direction() {
    // A peer that sends 60 KB at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(&[7u8; 60_000]).await;
                let _ = s.shutdown().await;
            });
        }
    });
    let lb = imbang(&conf(&format!(
        "server {{ listen 127.0.0.1:0; proxy_download_rate 40k; proxy_half_close on; proxy_pass {peer}; }}"
    )))
    .await;
    let started = tokio::time::Instant::now();
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.shutdown().await.unwrap();
    let got = rest(&mut s).await;
    assert_eq!(got.len(), 60_000);
    // 60 KB at 40 KB/s: about 1.5 s (the first 40 KB may go at once).
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[tokio::test]
async fn reload_keeps_a_running_session_on_its_peer() {
    let (a, b) = (tcp_backend("a").await, tcp_backend("b").await);
    let port = free_port();
    let text = |peer: SocketAddr| {
        conf(&format!(
            "upstream app {{ server {peer}; }}
             server {{ listen 127.0.0.1:{port}; proxy_pass app; }}"
        ))
    };
    let lb = imbang(&text(a.addr)).await;
    let mut old = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(line(&mut old).await, "a");
    lb.reload(&text(b.addr)).await;
    // New sessions use the new configuration...
    assert_eq!(first_line(lb.addr).await, "b");
    // ...while the one that was open goes on with its peer.
    old.write_all(b"still here\n").await.unwrap();
    assert_eq!(line(&mut old).await, "still here");
}

#[tokio::test]
async fn http_and_stream_side_by_side() {
    let a = tcp_backend("a").await;
    let web = support::backend("web").await;
    let (p1, p2) = (free_port(), free_port());
    let lb = imbang(&format!(
        "events {{}}
         http {{ access_log off; server {{ listen 127.0.0.1:{p1}; location / {{ proxy_pass http://{}; }} }} }}
         stream {{ server {{ listen 127.0.0.1:{p2}; proxy_pass {}; }} }}",
        web.addr, a.addr
    ))
    .await;
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let (status, body) = support::request(at(p1), "GET", "/", "x", None).await;
    assert_eq!((status, body.starts_with("web")), (200, true), "{body}");
    assert_eq!(first_line(at(p2)).await, "a");
    drop(lb);
}

#[test]
fn config_errors_say_where_and_what() {
    let err = |text: &str| support::compile(&conf(text)).unwrap_err();
    let e = err("upstream app { server 127.0.0.1:1; keepalive 2; }
                 server { listen 1.2.3.4:5; proxy_pass app; }");
    assert!(
        e.contains("\"keepalive\" directive is not allowed here"),
        "{e}"
    );
    assert!(e.contains("/t/imbang.conf:3:"), "{e}");
    let e = err("upstream app { server 127.0.0.1; }
                 server { listen 1.2.3.4:5; proxy_pass app; }");
    assert!(e.contains("no port in upstream \"127.0.0.1\""), "{e}");
    let e = err("upstream app { ip_hash; server 127.0.0.1:1; }
                 server { listen 1.2.3.4:5; proxy_pass app; }");
    assert!(
        e.contains("\"ip_hash\" directive is not allowed here"),
        "{e}"
    );
    let e = err("upstream app { least_time header; server 127.0.0.1:1; }
                 server { listen 1.2.3.4:5; proxy_pass app; }");
    assert!(e.contains("invalid parameter \"header\""), "{e}");
    for mode in ["connect", "first_byte", "last_byte inflight"] {
        support::compile(&conf(&format!(
            "upstream app {{ least_time {mode}; server 127.0.0.1:1; }}
             server {{ listen 1.2.3.4:5; proxy_pass app; }}"
        )))
        .unwrap();
    }
    let e = err("server { listen 1.2.3.4:5; }");
    assert!(e.contains("no handler for server"), "{e}");
    let e = err("server { proxy_pass 127.0.0.1:1; }");
    assert!(e.contains("no \"listen\" is defined"), "{e}");
    let e = err("server { listen 1.2.3.4:5; proxy_pass 127.0.0.1:1; proxy_buffers 4 4k; }");
    assert!(
        e.contains("\"proxy_buffers\" directive is not allowed here"),
        "{e}"
    );
    let e = err("server { listen 1.2.3.4:5; return \"$host\"; }");
    assert!(e.contains("unknown \"host\" variable"), "{e}");
    let e = err("server { listen 1.2.3.4:5 ssl; proxy_pass 127.0.0.1:1; }");
    assert!(e.contains("\"ssl\" parameter"), "{e}");
    let e = err("server { listen 1.2.3.4:5; proxy_pass 127.0.0.1:1; }
                 server { listen 1.2.3.4:5; proxy_pass 127.0.0.1:1; }");
    assert!(
        e.contains("duplicate \"1.2.3.4:5\" address and port pair"),
        "{e}"
    );
    let e = support::compile(
        "events {}
         http { server { listen 127.0.0.1:7; } }
         stream { server { listen 127.0.0.1:7; proxy_pass 127.0.0.1:1; } }",
    )
    .unwrap_err();
    assert!(e.contains("both an http and a stream listen"), "{e}");
    // An http-only directive at the stream level, and stream's proxy_timeout in http.
    let e = support::compile("events {} http { proxy_timeout 1s; }").unwrap_err();
    assert!(
        e.contains("\"proxy_timeout\" directive is not allowed here"),
        "{e}"
    );
}

/// The real binary: SIGHUP with a session open (it goes on with its peer while new sessions use
/// the new configuration), then USR2 hands the stream socket to a new binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_and_upgrades_with_stream_listeners() {
    use nix::sys::signal::{Signal, kill};
    let dir = TempDir::new("stream-bin");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let (a, b) = (tcp_backend("a").await, tcp_backend("b").await);
    let port = free_port();
    let text = |peer: SocketAddr| {
        format!(
            "daemon off;
             pid logs/imbang.pid;
             error_log logs/error.log notice;
             events {{}}
             stream {{
               upstream app {{ server {peer}; }}
               server {{ listen 127.0.0.1:{port}; proxy_pass app; }}
             }}"
        )
    };
    dir.write("imbang.conf", &text(a.addr));
    let prefix = format!("{}/", dir.path().display());
    let mut guard = support::ImbangGuard::start(&prefix);
    let pid = support::wait_pid_file(&dir.path().join("logs/imbang.pid"), T).await;
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    support::wait_accepting(lb, T).await;

    let mut open = TcpStream::connect(lb).await.unwrap();
    assert_eq!(line(&mut open).await, "a");
    dir.write("imbang.conf", &text(b.addr));
    kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while first_line(lb).await != "b" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload never took"
        );
    }
    open.write_all(b"across the reload\n").await.unwrap();
    assert_eq!(line(&mut open).await, "across the reload");
    drop(open);

    let new = guard.upgrade(pid, T).await;
    assert_ne!(new, pid);
    assert_eq!(first_line(lb).await, "b");
}

/// NGINX Plus's `/stream/upstreams`: stream's groups with the same counters as http's.
#[tokio::test]
async fn the_api_shows_stream_upstreams() {
    let a = tcp_backend("a").await;
    let dead = closed_port();
    let (p1, p2) = (free_port(), free_port());
    let lb = imbang(&format!(
        "events {{}}
         http {{ access_log off; server {{ listen 127.0.0.1:{p1}; location /api {{ api; }} }} }}
         stream {{
           upstream app {{ server {dead} max_fails=1 fail_timeout=60s; server {}; }}
           server {{ listen 127.0.0.1:{p2}; proxy_pass app; }}
         }}",
        a.addr
    ))
    .await;
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..2 {
        let mut s = TcpStream::connect(at(p2)).await.unwrap();
        assert_eq!(line(&mut s).await, "a");
        s.write_all(b"12345\n").await.unwrap();
        assert_eq!(line(&mut s).await, "12345");
        s.shutdown().await.unwrap();
        let _ = rest(&mut s).await;
    }
    let get = |path: &'static str| async move {
        let (status, body) = support::request(at(p1), "GET", path, "x", None).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let endpoints = get("/api/9/").await;
    assert!(endpoints.as_array().unwrap().contains(&"stream".into()));
    assert_eq!(get("/api/9/stream").await, serde_json::json!(["upstreams"]));
    // The sessions' counters are written when they end.
    let mut all = get("/api/9/stream/upstreams").await;
    let deadline = tokio::time::Instant::now() + T;
    while all["app"]["peers"][1]["active"] != 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
        all = get("/api/9/stream/upstreams").await;
    }
    let peers = &all["app"]["peers"];
    assert_eq!(peers[0]["server"], dead.to_string());
    assert_eq!(peers[0]["state"], "unavail");
    assert_eq!(peers[0]["fails"], 1);
    assert_eq!(peers[0]["connections"], 1);
    assert_eq!(peers[1]["state"], "up");
    assert_eq!(peers[1]["connections"], 2);
    assert_eq!(peers[1]["sent"], 12);
    // "a\n" and the echo, per session (the FIN ends a session: nginx's proxy_half_close off).
    assert_eq!(peers[1]["received"], 2 * (2 + 6));
    assert!(peers[1].get("responses").is_none());
    assert!(peers[1]["connect_time"].is_number(), "{}", peers[1]);
    assert_eq!(all["app"]["zone"], "app");
    assert_eq!(
        get("/api/9/stream/upstreams/app/servers/1").await["server"],
        a.addr.to_string()
    );
    drop(lb);
}

/// NGINX Plus's stream `health_check` with a `match` that sends and expects: a peer whose
/// answer does not match gets no sessions.
#[tokio::test]
async fn health_checks_take_a_failing_peer_out() {
    let (a, b) = (tcp_backend("a").await, tcp_backend("b").await);
    let lb = imbang(&conf(&format!(
        "match hello {{ send \"ping\\n\"; expect ~ \"^a\\nping\"; }}
         upstream app {{ server {}; server {}; }}
         server {{
           listen 127.0.0.1:0;
           proxy_pass app;
           health_check interval=100ms match=hello mandatory;
           health_check_timeout 2s;
         }}",
        a.addr, b.addr
    )))
    .await;
    assert_eq!(lb.server.health_checks(), (1, 2));
    // `mandatory`: no peer takes sessions before its first check passed.
    let deadline = tokio::time::Instant::now() + T;
    while first_line(lb.addr).await != "a" {
        assert!(tokio::time::Instant::now() < deadline, "a never passed");
    }
    for _ in 0..4 {
        assert_eq!(first_line(lb.addr).await, "a");
    }
    // b was checked (its connections) but took no session.
    assert!(b.accepted.load(Ordering::SeqCst) >= 1);

    let e = support::compile(&conf(
        "server { listen 1.2.3.4:5; return x; health_check; }",
    ))
    .unwrap_err();
    assert!(
        e.contains("\"health_check\" requires \"proxy_pass\""),
        "{e}"
    );
    let e = support::compile(&conf(
        "upstream app { server 127.0.0.1:1; }
         server { listen 1.2.3.4:5; proxy_pass app; health_check match=nope; }",
    ))
    .unwrap_err();
    assert!(e.contains("match \"nope\" is not defined"), "{e}");
}

/// `listen ... proxy_protocol`: the header's addresses in `$proxy_protocol_*`; a broken header
/// closes the connection. `proxy_protocol on`: a v1 header goes to the peer first.
#[tokio::test]
async fn proxy_protocol_in_and_out() {
    let lb = imbang(&conf(
        "server { listen 127.0.0.1:0 proxy_protocol; proxy_protocol_timeout 2s;
                  return \"$proxy_protocol_addr:$proxy_protocol_port>$proxy_protocol_server_addr:$proxy_protocol_server_port $remote_addr\\n\"; }",
    ))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    // Split across two writes: the header is read whole all the same.
    s.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 ")
        .await
        .unwrap();
    s.write_all(b"4321 443\r\n").await.unwrap();
    assert_eq!(
        rest(&mut s).await,
        b"192.0.2.7:4321>198.51.100.1:443 127.0.0.1\n"
    );
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(rest(&mut s).await, b"");

    // set_real_ip_from: a trusted client's header gives $remote_addr (and `allow`/`deny` see it).
    let lb = imbang(&conf(
        "server { listen 127.0.0.1:0 proxy_protocol; set_real_ip_from 127.0.0.0/8;
                  deny 192.0.2.66; return \"$remote_addr:$remote_port $realip_remote_addr\n\"; }",
    ))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 4321 443\r\n")
        .await
        .unwrap();
    assert_eq!(rest(&mut s).await, b"192.0.2.7:4321 127.0.0.1\n");
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.66 198.51.100.1 4321 443\r\n")
        .await
        .unwrap();
    assert_eq!(rest(&mut s).await, b"");

    // Out: the peer (which echoes) reads the header before the client's bytes.
    let a = tcp_backend("a").await;
    let lb = imbang(&conf(&format!(
        "server {{ listen 127.0.0.1:0; proxy_protocol on; proxy_pass {}; }}",
        a.addr
    )))
    .await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    let client = s.local_addr().unwrap();
    assert_eq!(line(&mut s).await, "a");
    assert_eq!(
        line(&mut s).await,
        format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r",
            client.port(),
            lb.addr.port()
        )
    );
}

/// The bytes of a real ClientHello (rustls's) for `name`, offering `alpn`.
fn client_hello(name: &str, alpn: &[&str]) -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(support::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// `ssl_preread on`: TLS routed by the name in the ClientHello without terminating it, the
/// ClientHello passed on to the peer untouched.
#[tokio::test]
async fn ssl_preread_routes_by_server_name() {
    let (a, b) = (tcp_backend("a").await, tcp_backend("b").await);
    let (p1, p2) = (free_port(), free_port());
    let lb = imbang(&conf(&format!(
        "map $ssl_preread_server_name $pool {{ one.test pool_a; default pool_b; }}
         upstream pool_a {{ server {}; }}
         upstream pool_b {{ server {}; }}
         server {{ listen 127.0.0.1:{p1}; ssl_preread on; proxy_pass $pool; }}
         server {{ listen 127.0.0.1:{p2}; ssl_preread on;
                   return \"$ssl_preread_server_name $ssl_preread_alpn_protocols $ssl_preread_protocol\\n\"; }}",
        a.addr, b.addr
    )))
    .await;
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    for (name, want) in [("one.test", "a"), ("two.test", "b")] {
        let hello = client_hello(name, &["h2"]);
        let mut s = TcpStream::connect(at(p1)).await.unwrap();
        s.write_all(&hello).await.unwrap();
        assert_eq!(line(&mut s).await, want);
        // The peer (an echo) got the ClientHello as it was sent.
        let mut echoed = vec![0u8; hello.len()];
        tokio::time::timeout(T, s.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, hello);
    }
    let mut s = TcpStream::connect(at(p2)).await.unwrap();
    s.write_all(&client_hello("one.test", &["h2", "http/1.1"]))
        .await
        .unwrap();
    assert_eq!(rest(&mut s).await, b"one.test h2,http/1.1 TLSv1.3\n");
    // Not TLS: the variables are empty and the session goes on.
    let mut s = TcpStream::connect(at(p1)).await.unwrap();
    s.write_all(b"hello\n").await.unwrap();
    assert_eq!(line(&mut s).await, "b");
    assert_eq!(line(&mut s).await, "hello");
    drop(lb);
}

/// A real Redis client and server (Debian's redis-server) through imbang's stream proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_through_imbang() {
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("redis-server") || !have("redis-cli") {
        eprintln!(
            "skipped: redis-server or redis-cli is not installed (apt-get install redis-server)"
        );
        return;
    }
    let dir = TempDir::new("stream-redis");
    let port = free_port();
    let redis = support::ChildGuard(
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let redis_addr = SocketAddr::from(([127, 0, 0, 1], port));
    support::wait_accepting(redis_addr, T).await;
    let lb = imbang(&conf(&format!(
        "upstream redis {{ server {redis_addr}; }}
         server {{ listen 127.0.0.1:0; proxy_pass redis; }}"
    )))
    .await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &lb.addr.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(cli(&["SET", "through", "imbang"]), "OK\n");
    assert_eq!(cli(&["GET", "through"]), "imbang\n");
    drop(redis);
}
