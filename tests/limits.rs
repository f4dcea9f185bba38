//! Limits that hold under abuse, on the real binary over real sockets: `worker_connections`,
//! and memory that stays bounded whatever a client sends or does not read. Each case asserts
//! what the client sees on the wire, that another client is served meanwhile, and how much the
//! imbang process's resident memory grew: its peak (`VmHWM` in /proc/PID/status, reset before
//! the case through /proc/PID/clear_refs) minus its `VmRSS` before the case.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::abuse::{MIB, Rss, exchange, read_answer, served, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a client that sent `request` (written from a task of its own, so that a server that
/// stops reading cannot block it) reads back before the end: the first line.
async fn abuse(addr: SocketAddr, request: Vec<u8>) -> String {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let writer = tokio::spawn(async move {
        // A refused client's write fails once imbang has closed; that is expected. Then its
        // FIN, so that imbang's lingering close does not wait for more.
        let _ = write.write_all(&request).await;
        let _ = write.shutdown().await;
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut answer))
        .await
        .expect("the connection ends within 30 s");
    writer.abort();
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Waits until `counter` stops moving (unchanged for half a second, bounded by 60 s): how a
/// test knows a writer or a server has filled every buffer it will fill. A measurement over
/// time, not a synchronisation: what is waited for is the absence of progress.
async fn settled(mut counter: impl FnMut() -> u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = counter();
    let mut still = 0;
    while still < 5 {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// The CPU time the process has used, in clock ticks (/proc/PID/stat's utime + stime).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn worker_connections_refuses_new_connections_and_keeps_the_open_ones() {
    let lb = start(
        "worker_connections 8;",
        "server { listen LISTEN; location / { return 200 ok; } }",
        1,
    )
    .await;
    // The startup probe's connection may still be counted: wait until a full set is served.
    let mut open = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while open.len() < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} served",
            open.len()
        );
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        if let Some(answer) = read_answer(&mut s).await {
            assert_eq!(answer, (200, b"ok".to_vec()));
            open.push(s);
        }
    }
    // The ninth: accepted by the kernel, closed by imbang at once, without an answer.
    for _ in 0..3 {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
            .await
            .expect("closed within 10 s");
        assert!(
            answer.is_empty(),
            "{read:?}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let log = std::fs::read_to_string(&lb.log).unwrap();
    assert!(
        log.contains("[alert]") && log.contains("8 worker_connections are not enough"),
        "{log}"
    );
    // The open ones keep working.
    for s in &mut open {
        assert_eq!(exchange(s, "/").await, (200, b"ok".to_vec()));
    }
    // One closes: there is room again (once imbang has seen the close).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        if let Some(answer) = read_answer(&mut s).await {
            assert_eq!(answer.0, 200);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after a close"
        );
    }
}

#[tokio::test]
async fn huge_and_many_header_lines_are_refused_with_bounded_memory() {
    let lb = start(
        "worker_connections 1024;",
        "server { listen LISTEN; location / { return 200 ok; } }",
        2,
    )
    .await;
    let addr = lb.addr;
    // The statuses, as nginx (large_client_header_buffers 4 8k): a request line over 8k is
    // 414, a header line over 8k and a head over 32k are 400; more than 100 fields is 431.
    let line = |n: usize| format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(n));
    assert!(
        abuse(addr, line(9000).into_bytes())
            .await
            .starts_with("HTTP/1.1 414")
    );
    let field = |n: usize| format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "b".repeat(n));
    assert!(
        abuse(addr, field(9000).into_bytes())
            .await
            .starts_with("HTTP/1.1 400")
    );
    let many = |n: usize, len: usize| {
        let mut r = "GET / HTTP/1.1\r\nHost: a\r\n".to_owned();
        for i in 0..n {
            r += &format!("X-{i}: {}\r\n", "c".repeat(len));
        }
        r + "\r\n"
    };
    assert!(
        abuse(addr, many(40, 1000).into_bytes())
            .await
            .starts_with("HTTP/1.1 400")
    );
    assert!(
        abuse(addr, many(150, 10).into_bytes())
            .await
            .starts_with("HTTP/1.1 431")
    );
    assert_eq!(served(addr, "/").await, 200);

    // 100 clients each send 1 MiB of one line, and 100 more 1 MiB of short header lines:
    // each is refused after its first 8k (or 32k), and imbang holds no more than that.
    let rss = Rss::start(lb.pid);
    let mut clients = Vec::new();
    for i in 0..200 {
        let request = if i % 2 == 0 {
            let mut r = b"GET /".to_vec();
            r.resize(MIB as usize, b'a');
            r
        } else {
            let mut r = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
            while r.len() < MIB as usize {
                r.extend_from_slice(
                    b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
                );
            }
            r
        };
        clients.push(tokio::spawn(abuse(addr, request)));
    }
    // Another client is served meanwhile.
    assert_eq!(served(addr, "/").await, 200);
    for (i, client) in clients.into_iter().enumerate() {
        let first = client.await.unwrap();
        let want = if i % 2 == 0 {
            "HTTP/1.1 414"
        } else {
            "HTTP/1.1 4"
        };
        assert!(first.starts_with(want), "client {i}: {first:?}");
    }
    // 200 connections × the 32k a head may hold, twice over for the buffer's growth.
    rss.assert_under(200 * 64 * 1024, "200 clients sending 1 MiB heads");

    // 300 clients hold a head just under the limits (30 lines of 1000 bytes), unfinished; a
    // client is served meanwhile; then each finishes its head and is answered.
    let rss = Rss::start(lb.pid);
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..30 {
            head.extend_from_slice(format!("X-{i:02}: {}\r\n", "d".repeat(992)).as_bytes());
        }
        s.write_all(&head).await.unwrap();
        held.push(s);
    }
    assert_eq!(served(addr, "/").await, 200);
    for s in &mut held {
        s.write_all(b"\r\n").await.unwrap();
        assert_eq!(read_answer(s).await, Some((200, b"ok".to_vec())));
    }
    rss.assert_under(300 * 96 * 1024, "300 clients holding 30 KiB heads");
}

#[tokio::test]
async fn huge_chunk_extensions_are_refused_with_bounded_memory() {
    let backend = support::backend("b").await;
    let lb = start(
        "worker_connections 1024;",
        &format!(
            "server {{ listen LISTEN; location / {{ proxy_pass http://{}; }} }}",
            backend.addr
        ),
        2,
    )
    .await;
    let addr = lb.addr;
    let rss = Rss::start(lb.pid);
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut r = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        while r.len() < MIB as usize {
            r.extend_from_slice(b"name=value;");
        }
        clients.push(tokio::spawn(abuse(addr, r)));
    }
    assert_eq!(served(addr, "/").await, 200);
    for client in clients {
        let first = client.await.unwrap();
        assert!(first.starts_with("HTTP/1.1 400"), "{first:?}");
    }
    assert_eq!(served(addr, "/").await, 200);
    // A chunk-size line may be 4k long: 100 connections hold little more than their heads.
    rss.assert_under(
        100 * 64 * 1024 + 4 * MIB,
        "100 clients sending 1 MiB chunk extensions",
    );
}

#[tokio::test]
async fn many_pipelined_requests_are_answered_in_turn_with_bounded_memory() {
    // 4 KiB answers: 5,000 of them fill every socket buffer between imbang and the client.
    let lb = start(
        "worker_connections 1024;",
        &format!(
            "keepalive_requests 100000;
             server {{ listen LISTEN; location / {{ return 200 {}; }} }}",
            "p".repeat(4096)
        ),
        2,
    )
    .await;
    let addr = lb.addr;
    const CLIENTS: usize = 5;
    const REQUESTS: usize = 5_000;
    let rss = Rss::start(lb.pid);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..CLIENTS {
        let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
        writers.push(tokio::spawn(async move {
            let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(REQUESTS);
            write.write_all(&request).await.unwrap();
            write
        }));
        readers.push(read);
    }
    // No client reads: imbang answers until the sockets are full, then waits (its CPU time
    // stops).
    settled(|| cpu_ticks(lb.pid)).await;
    assert_eq!(served(addr, "/").await, 200);
    rss.assert_under(
        16 * MIB,
        "5 clients pipelining 5,000 requests, answers unread",
    );
    // Then each reads all its answers, in order.
    let answer = b"HTTP/1.1 200 OK\r\n";
    for mut read in readers {
        let mut seen = 0;
        let mut bytes = 0;
        let mut buf = vec![0; 1 << 16];
        let mut carry = Vec::new();
        while seen < REQUESTS {
            let n = read.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {seen} answers");
            bytes += n;
            carry.extend_from_slice(&buf[..n]);
            let mut at = 0;
            while let Some(i) = carry[at..].windows(answer.len()).position(|w| w == answer) {
                seen += 1;
                at += i + answer.len();
            }
            carry.drain(..at);
        }
        assert_eq!(seen, REQUESTS);
        assert!(bytes > REQUESTS * 4096);
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

/// A peer that answers every request with `len` bytes, counting what it wrote.
async fn big_backend(len: u64, written: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let written = written.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![b'x'; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    if s.write_all(&block[..n]).await.is_err() {
                        return;
                    }
                    written.fetch_add(n as u64, Ordering::SeqCst);
                    left -= n as u64;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_client_that_stops_reading_a_large_response_pins_little_memory() {
    const LEN: u64 = 200 * MIB;
    let written = Arc::new(AtomicU64::new(0));
    let peer = big_backend(LEN, written.clone()).await;
    let lb = start(
        "worker_connections 1024;",
        &format!(
            "server {{ listen LISTEN; location / {{ proxy_pass http://{peer}; }}
               location = /small {{ return 200 ok; }} }}"
        ),
        2,
    )
    .await;
    let rss = Rss::start(lb.pid);
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Read the head and the first MiB, then stop.
    let mut got = Vec::new();
    let mut buf = vec![0; 1 << 16];
    while got.len() < MIB as usize {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("Content-Length: {LEN}")), "{head}");
    let pinned = settled(|| written.load(Ordering::SeqCst)).await;
    eprintln!(
        "the peer wrote {:.1} MiB before imbang stopped reading it",
        pinned as f64 / MIB as f64
    );
    // What the four socket buffers between the peer and the client hold (a few MiB each with
    // Linux's autotuning), not the response.
    assert!(
        pinned < 48 * MIB,
        "imbang read {pinned} bytes of the peer's response"
    );
    assert_eq!(served(lb.addr, "/small").await, 200);
    rss.assert_under(8 * MIB, "a client not reading a 200 MiB response");
    // Reading again, the client gets all of it.
    let mut total = (got.len() - head_end) as u64;
    while total < LEN {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {total} bytes");
        total += n as u64;
    }
    assert_eq!(total, LEN);
    assert_eq!(written.load(Ordering::SeqCst), LEN);
}
