//! HTTP/2 abuse, each from a hostile client written here frame by frame, against the real
//! binary (h2c with prior knowledge: the same HTTP/2 server serves TLS connections after ALPN):
//! rapid reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316 class), HPACK bomb,
//! SETTINGS and PING floods, zero-window stalls. Each case asserts how the abusive connection
//! ends, that another client is served meanwhile, and that imbang's resident memory stays
//! bounded (tests/support/abuse.rs).
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use support::abuse::{MIB, Rss, served, start};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET path` (static-table names, no Huffman, nothing indexed).
fn get_block(path: &str) -> Vec<u8> {
    // :method GET (2), :scheme http (6), then :path and :authority as literals without
    // indexing, with the static table's names (4, 1).
    let mut b = vec![0x82, 0x86, 0x04, path.len() as u8];
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x01, 0x01, b'a']);
    b
}

/// The preface and an empty SETTINGS frame, with `settings` (id, value) pairs.
fn hello(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &payload));
    out
}

/// How an abusive connection ended, as its client read it.
#[derive(Debug, Default)]
struct Ending {
    /// The GOAWAY's error code, if one came.
    goaway: Option<u32>,
    /// Streams answered with a HEADERS frame.
    answered: usize,
    /// RST_STREAM frames received.
    resets: usize,
    /// Whether the read side reached its end (or was reset) within the time allowed.
    closed: bool,
}

/// Reads frames until the connection ends or `within` passes, noting what came.
async fn read_frames(mut read: OwnedReadHalf, within: Duration) -> Ending {
    let mut ending = Ending::default();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, payload) = (buf[3], &buf[9..9 + len]);
            match kind {
                HEADERS => ending.answered += 1,
                RST_STREAM => ending.resets += 1,
                GOAWAY if payload.len() >= 8 => {
                    ending.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                _ => {}
            }
            buf.drain(..9 + len);
        }
        match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
            Err(_) => return ending,
            Ok(Ok(0) | Err(_)) => {
                ending.closed = true;
                return ending;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// imbang in front of an origin that counts its requests and answers `/big` with 8 MiB.
async fn setup(extra: &str) -> (support::abuse::Running, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let origin: SocketAddr = support::serve_hyper(move |req: Request<Incoming>| {
        counted.fetch_add(1, Ordering::Relaxed);
        async move {
            let body = if req.uri().path() == "/big" {
                Bytes::from(vec![b'x'; 8 * 1024 * 1024])
            } else {
                Bytes::from_static(b"ok")
            };
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
        }
    })
    .await;
    let lb = start(
        "worker_connections 1024;",
        &format!(
            "{extra} server {{ listen LISTEN; location / {{ proxy_pass http://{origin}; }} }}"
        ),
        1,
    )
    .await;
    (lb, hits)
}

/// Connects, writes `opening`, then lets `abuse` write on while the frames are read.
async fn hostile<F, Fut>(addr: SocketAddr, opening: Vec<u8>, within: Duration, abuse: F) -> Ending
where
    F: FnOnce(tokio::net::tcp::OwnedWriteHalf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let s = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = s.into_split();
    write.write_all(&opening).await.unwrap();
    let writer = tokio::spawn(async move { abuse(write).await });
    let ending = read_frames(read, within).await;
    writer.abort();
    ending
}

#[tokio::test]
async fn rapid_reset_is_cut_off_and_the_origin_sees_a_bounded_number_of_requests() {
    for batch in [32 * 1024, 0] {
        rapid_reset(batch).await;
    }
}

async fn rapid_reset(batch_bytes: usize) {
    let (lb, hits) = setup("").await;
    let rss = Rss::start(lb.pid);
    const STREAMS: u32 = 20_000;
    let ending = hostile(
        lb.addr,
        hello(&[]),
        Duration::from_secs(30),
        move |mut w| async move {
            let block = get_block("/");
            let mut batch = Vec::new();
            for i in 0..STREAMS {
                let id = 1 + 2 * i;
                batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
                batch.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
                if batch.len() > batch_bytes {
                    if w.write_all(&batch).await.is_err() {
                        return;
                    }
                    batch.clear();
                }
            }
            let _ = w.write_all(&batch).await;
            // Then silence: the connection's end is imbang's doing.
            std::future::pending::<()>().await;
        },
    )
    .await;
    eprintln!(
        "rapid reset: {ending:?}, origin saw {}",
        hits.load(Ordering::Relaxed)
    );
    assert!(
        ending.closed,
        "the connection is closed on the abuser: {ending:?}"
    );
    // ENHANCE_YOUR_CALM (11): the h2 server's answer to too many resets.
    assert_eq!(ending.goaway, Some(11), "{ending:?}");
    let seen = hits.load(Ordering::Relaxed);
    assert!(
        seen < 2_000,
        "the origin saw {seen} of {STREAMS} reset requests"
    );
    assert_eq!(served(lb.addr, "/").await, 200);
    rss.assert_under(32 * MIB, "rapid reset");
}

#[tokio::test]
async fn a_continuation_flood_closes_the_connection_with_bounded_memory() {
    let (lb, hits) = setup("").await;
    let rss = Rss::start(lb.pid);
    let ending = hostile(
        lb.addr,
        hello(&[]),
        Duration::from_secs(30),
        |mut w| async move {
            // A HEADERS frame without END_HEADERS, then CONTINUATION frames of new literal
            // fields forever (each 'x-N: <1000 bytes>'), 64 MiB at most.
            if w.write_all(&frame(HEADERS, 0, 1, &get_block("/")))
                .await
                .is_err()
            {
                return;
            }
            for i in 0..65_536u32 {
                let name = format!("x-{i}");
                let mut block = vec![0x00, name.len() as u8];
                block.extend_from_slice(name.as_bytes());
                // A 1000-byte value: HPACK's 7-bit prefix integer (127 + 873 = 0x7f, 0xe9 0x06).
                block.extend_from_slice(&[0x7f, 0xe9, 0x06]);
                block.extend(std::iter::repeat_n(b'v', 1000));
                if w.write_all(&frame(CONTINUATION, 0, 1, &block))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            std::future::pending::<()>().await;
        },
    )
    .await;
    eprintln!("continuation flood: {ending:?}");
    assert!(ending.closed, "{ending:?}");
    assert_eq!(ending.goaway, Some(11), "{ending:?}");
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "nothing reached the origin"
    );
    assert_eq!(served(lb.addr, "/").await, 200);
    rss.assert_under(32 * MIB, "CONTINUATION flood");
}

#[tokio::test]
async fn an_hpack_bomb_is_refused_without_decoding_it_into_memory() {
    let (lb, hits) = setup("").await;
    let rss = Rss::start(lb.pid);
    let ending = hostile(
        lb.addr,
        hello(&[]),
        Duration::from_secs(30),
        |mut w| async move {
            // One 4000-byte field put in the dynamic table (literal with incremental indexing),
            // then, on each of 100 streams, a block referencing it 4000 times (one byte each):
            // 16 MB of fields per 4 KB block.
            let mut block = get_block("/");
            block.extend_from_slice(&[0x40, 0x01, b'b', 0x7f, 0xa1, 0x1e]); // 127 + 3873 = 4000
            block.extend(std::iter::repeat_n(b'v', 4000));
            block.extend(std::iter::repeat_n(0xbe, 4000)); // index 62: the newest dynamic entry
            for i in 0..100u32 {
                let block = if i == 0 {
                    block.clone()
                } else {
                    let mut b = get_block("/");
                    b.extend(std::iter::repeat_n(0xbe, 4000));
                    b
                };
                if w.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, &block))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            std::future::pending::<()>().await;
        },
    )
    .await;
    eprintln!("hpack bomb: {ending:?}");
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "no bombed request reached the origin"
    );
    // COMPRESSION_ERROR would be as right; h2 answers ENHANCE_YOUR_CALM (11) for a header list
    // over its limit.
    assert!(ending.closed, "{ending:?}");
    assert_eq!(ending.goaway, Some(11), "{ending:?}");
    assert_eq!(served(lb.addr, "/").await, 200);
    rss.assert_under(32 * MIB, "HPACK bomb");
}

#[tokio::test]
async fn settings_and_ping_floods_from_a_client_that_never_reads_stay_bounded() {
    let (lb, _hits) = setup("").await;
    for (case, kind, payload) in [
        ("SETTINGS flood", SETTINGS, vec![0u8, 3, 0, 0, 0, 100]),
        ("PING flood", PING, vec![0u8; 8]),
    ] {
        let rss = Rss::start(lb.pid);
        // The client writes 200,000 frames and reads nothing: imbang's acknowledgements pile
        // up on its side unless it stops reading or closes.
        let s = TcpStream::connect(lb.addr).await.unwrap();
        let (read, mut w) = s.into_split();
        w.write_all(&hello(&[])).await.unwrap();
        let one = frame(kind, 0, 0, &payload);
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        let writer = tokio::spawn(async move {
            for _ in 0..200 {
                let write = w.write_all(&batch);
                match tokio::time::timeout(Duration::from_secs(5), write).await {
                    Ok(Ok(())) => {}
                    // imbang closed, or stopped reading (its buffers full): both bound it.
                    _ => return,
                }
            }
        });
        let _ = writer.await;
        assert_eq!(served(lb.addr, "/").await, 200, "{case}");
        rss.assert_under(32 * MIB, case);
        drop(read);
    }
}

#[tokio::test]
async fn a_zero_window_stall_is_reset_after_send_timeout_then_closed_when_idle() {
    let (lb, hits) = setup("send_timeout 1s; keepalive_timeout 2s;").await;
    let rss = Rss::start(lb.pid);
    // SETTINGS_INITIAL_WINDOW_SIZE 0: no response body may be sent, on 100 streams of /big.
    let opening = hello(&[(4, 0)]);
    let started = tokio::time::Instant::now();
    let ending = hostile(
        lb.addr,
        opening,
        Duration::from_secs(30),
        |mut w| async move {
            let block = get_block("/big");
            for i in 0..100u32 {
                let f = frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, &block);
                if w.write_all(&f).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        },
    )
    .await;
    eprintln!(
        "zero window: {ending:?} after {:?}, origin saw {}",
        started.elapsed(),
        hits.load(Ordering::Relaxed)
    );
    // Each stalled stream is reset once `send_timeout` passes without progress (as nginx
    // ends a stream whose client does not take its data), then the idle connection closes
    // after `keepalive_timeout`.
    assert_eq!((ending.answered, ending.resets), (100, 100), "{ending:?}");
    assert!(ending.closed, "closed within 30 s: {ending:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(served(lb.addr, "/").await, 200);
    // 100 streams of 8 MiB not taken: what imbang holds for them is bounded by its send
    // buffer per stream, not by the responses' size.
    rss.assert_under(64 * MIB, "zero-window stall");
}
