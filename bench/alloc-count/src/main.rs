//! Counts heap allocations per proxied request in imbang's real request path.
//!
//! One process: two tiny blocking origins (nginx's five header fields and a 100-byte body, no
//! allocation per request), imbang's `Server` on a tokio current-thread runtime (as
//! `worker_processes 1`; process.rs), and a blocking client that sends keep-alive GETs (no allocation per request either). The
//! global allocator counts every allocation, so the count over N requests, divided by N, is what
//! imbang (hyper server + routing + pool + hyper client + tokio) allocates per request. A control
//! run of the client straight against an origin shows the harness itself allocates nothing.
//!
//! `imbang-alloc-count 1 idle` instead opens 1,000 connections, one GET on each, keeps them
//! idle, and lists the heap blocks they still hold per connection, by size (scenario (e)).

use std::alloc::{GlobalAlloc, Layout};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Live (allocated, not yet freed) blocks by size, and by size for alignments above 16; the last
/// slot holds every larger size.
const SIZES: usize = 4097;
static LIVE: [AtomicI64; SIZES] = [const { AtomicI64::new(0) }; SIZES];
static LIVE_ALIGNED: [AtomicI64; SIZES] = [const { AtomicI64::new(0) }; SIZES];

fn live(layout: Layout, delta: i64) {
    let slot = layout.size().min(SIZES - 1);
    let table = if layout.align() > 16 { &LIVE_ALIGNED } else { &LIVE };
    table[slot].fetch_add(delta, Relaxed);
}

/// The allocator counted: the system's (glibc), or mimalloc with `--features mimalloc`.
#[cfg(not(feature = "mimalloc"))]
use std::alloc::System as Inner;
#[cfg(feature = "mimalloc")]
use mimalloc::MiMalloc as Inner;

// SAFETY: forwards every call unchanged to the inner allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        live(layout, 1);
        unsafe { Inner.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        live(layout, 1);
        unsafe { Inner.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(layout, -1);
        unsafe { Inner.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size.saturating_sub(layout.size()) as u64, Relaxed);
        live(layout, -1);
        live(Layout::from_size_align(new_size, layout.align()).unwrap(), 1);
        unsafe { Inner.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Counts {
    allocs: u64,
    reallocs: u64,
    bytes: u64,
}

fn counts() -> Counts {
    Counts {
        allocs: ALLOCS.load(Relaxed),
        reallocs: REALLOCS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
    }
}

const BODY: &[u8] = &[b'a'; 100];

/// A blocking origin: one thread per connection, fixed reply, keep-alive, no allocation per
/// request (fixed buffers).
fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_origin(stream));
        }
    });
    addr
}

fn serve_origin(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut reply = [0u8; 512];
    // The fields bench/run.sh's nginx origins send (a proxy hides Server, Date and Connection).
    let head = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 10:20:00 GMT\r\n\
                 Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n";
    reply[..head.len()].copy_from_slice(head);
    reply[head.len()..head.len() + BODY.len()].copy_from_slice(BODY);
    let reply = &reply[..head.len() + BODY.len()];
    let mut buf = [0u8; 16384];
    let mut have = 0;
    loop {
        match s.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
        // GETs without bodies: every head ends with a blank line.
        while let Some(end) = find(&buf[..have], b"\r\n\r\n") {
            if s.write_all(reply).is_err() {
                return;
            }
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `n` GETs (keep-alive, or a new connection each when `close`), reading each response.
fn client(addr: SocketAddr, n: u64, close: bool) {
    let req_ka = b"GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: alloc-count\r\nAccept: */*\r\n\r\n";
    let req_close = b"GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: alloc-count\r\nAccept: */*\r\nConnection: close\r\n\r\n";
    let mut buf = [0u8; 16384];
    let mut conn: Option<TcpStream> = None;
    for _ in 0..n {
        let s = match &mut conn {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                conn.insert(s)
            }
        };
        s.write_all(if close { req_close } else { req_ka }).unwrap();
        let mut have = 0;
        loop {
            let r = s.read(&mut buf[have..]).unwrap();
            assert!(
                r > 0,
                "connection closed before a whole response: {:?}",
                String::from_utf8_lossy(&buf[..have])
            );
            have += r;
            if let Some(end) = find(&buf[..have], b"\r\n\r\n") {
                let len = content_length(&buf[..end]);
                if have >= end + 4 + len {
                    assert!(buf.starts_with(b"HTTP/1.1 200"), "not a 200");
                    break;
                }
            }
        }
        if close {
            conn = None;
        }
    }
}

fn content_length(head: &[u8]) -> usize {
    for line in head.split(|&b| b == b'\n') {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            let mut v = 0;
            for &b in &line[15..] {
                if b.is_ascii_digit() {
                    v = v * 10 + (b - b'0') as usize;
                }
            }
            return v;
        }
    }
    0
}

fn live_table() -> Vec<(usize, bool, i64)> {
    let mut v = Vec::new();
    for (aligned, table) in [(false, &LIVE), (true, &LIVE_ALIGNED)] {
        for (size, n) in table.iter().enumerate() {
            v.push((size, aligned, n.load(Relaxed)));
        }
    }
    v
}

/// Opens `n` connections, one GET on each, and keeps them idle: the blocks they still hold,
/// per connection (what scenario (e) measures as RSS), by size.
fn measure_idle(addr: SocketAddr, n: usize) {
    let req = b"GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: alloc-count\r\n\r\n";
    client(addr, 200, false); // warm-up
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = live_table();
    let mut conns = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req).unwrap();
        let mut have = 0;
        loop {
            let r = s.read(&mut buf[have..]).unwrap();
            assert!(r > 0, "closed before a whole response");
            have += r;
            if let Some(end) = find(&buf[..have], b"\r\n\r\n") {
                if have >= end + 4 + content_length(&buf[..end]) {
                    break;
                }
            }
        }
        conns.push(s);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = live_table();
    let (mut blocks, mut bytes, mut chunks) = (0i64, 0i64, 0i64);
    println!("idle connections: live blocks per connection by size (n = {n})");
    for ((size, aligned, a), (_, _, b)) in before.into_iter().zip(after) {
        let d = b - a;
        if d.unsigned_abs() as usize * 10 < n {
            continue; // noise: held by fewer than one connection in ten
        }
        // glibc's chunk: the size plus an 8-byte header, rounded up to 16, at least 32.
        let chunk = ((size + 8 + 15) & !15).max(32) as i64;
        println!(
            "  {size:>5} bytes{} x {:.2}",
            if aligned { " (aligned > 16)" } else { "" },
            d as f64 / n as f64
        );
        blocks += d;
        bytes += d * size as i64;
        chunks += d * chunk;
    }
    let per = |x: i64| x as f64 / n as f64;
    println!(
        "  total {:.2} blocks, {:.0} bytes requested, ~{:.0} bytes as glibc chunks, per connection",
        per(blocks),
        per(bytes),
        per(chunks)
    );
    drop(conns);
}

fn measure(label: &str, addr: SocketAddr, n: u64, close: bool) {
    client(addr, 2000, close); // warm-up: pools, buffers, lazy statics
    let before = counts();
    let t = Instant::now();
    client(addr, n, close);
    let secs = t.elapsed().as_secs_f64();
    let after = counts();
    let per = |a: u64, b: u64| (b - a) as f64 / n as f64;
    println!(
        "{label:<44} {:>7.2} allocs/req  {:>6.2} reallocs/req  {:>8.0} bytes/req  ({n} requests, {:.1} µs/req wall)",
        per(before.allocs, after.allocs),
        per(before.reallocs, after.reallocs),
        per(before.bytes, after.bytes),
        secs * 1e6 / n as f64
    );
}

/// `imbang-alloc-count origins`: two origins, their addresses printed on one line, held until
/// killed. `imbang-alloc-count client ADDR N [close]`: N GETs to ADDR, keep-alive (or a new
/// connection each). With these,
/// bench/callgrind.sh drives another proxy (nginx) exactly as imbang is driven here.
fn tools(args: &[String]) -> bool {
    match args.get(1).map(String::as_str) {
        Some("origins") => {
            println!("{} {}", origin(), origin());
            loop {
                std::thread::park();
            }
        }
        Some("client") => {
            let addr = args[2].parse().expect("client ADDR N [close]: ADDR");
            let n = args[3].parse().expect("client ADDR N [close]: N");
            client(addr, n, args.get(4).is_some_and(|a| a == "close"));
            true
        }
        _ => false,
    }
}

fn main() {
    if tools(&std::env::args().collect::<Vec<_>>()) {
        return;
    }
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20000);
    let o1 = origin();
    let o2 = origin();
    let text = format!(
        "events {{}}\nhttp {{\n    access_log off;\n    keepalive_requests 100000000;\n    upstream origins {{\n        server {o1};\n        server {o2};\n        keepalive 64;\n    }}\n    server {{\n        listen 127.0.0.1:0;\n        location / {{\n            proxy_pass http://origins;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n        }}\n    }}\n}}\n"
    );
    let options = imbang::config::LoadOptions {
        prefix: PathBuf::from("/tmp/"),
        default_listen_port: 8000,
    };
    let config = imbang::config::parse_str("/tmp/alloc-count.conf", &text, &options)
        .unwrap_or_else(|e| panic!("config: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let server = imbang::server::Server::new(config, None, None).expect("compiles");
            let bound = server.bind().expect("binds");
            server.serve(bound).await.expect("serves");
            let addr = server.bound().await[0].1;
            tx.send(addr).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let proxy = rx.recv().unwrap();
    if std::env::var_os("ALLOC_COUNT_HOLD").is_some() {
        eprintln!("proxy on {proxy}, origins {o1} {o2}; holding");
        std::thread::sleep(std::time::Duration::from_secs(600));
    }

    // `imbang-alloc-count N proxy-only`: only keep-alive requests through imbang (for valgrind's
    // DHAT, which then attributes the allocations to call sites).
    if std::env::args().nth(2).as_deref() == Some("proxy-only") {
        measure("imbang, keep-alive (scenario a)", proxy, n, false);
        return;
    }
    if std::env::args().nth(2).as_deref() == Some("proxy-close") {
        measure("imbang, new connection each (scenario b)", proxy, n, true);
        return;
    }
    if std::env::args().nth(2).as_deref() == Some("idle") {
        measure_idle(proxy, 1000);
        return;
    }
    measure("control: client -> origin, keep-alive", o1, n, false);
    measure("imbang, keep-alive (scenario a)", proxy, n, false);
    measure("control: client -> origin, new connection each", o1, n / 4, true);
    measure("imbang, new connection each (scenario b)", proxy, n / 4, true);
}
