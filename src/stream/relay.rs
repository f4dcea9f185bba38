//! Bytes both ways between a client and its peer: nginx's `ngx_stream_proxy_process`.
//!
//! One task, two directions, each with a buffer of `proxy_buffer_size`. `proxy_timeout` is the
//! longest both directions may stay idle together (any read or write restarts it). An end of
//! stream from one side ends the session once what was read is written (nginx's default), or,
//! with `proxy_half_close on`, is passed on (`shutdown(SHUT_WR)` to the other side) and the
//! session ends when both sides are done. `proxy_upload_rate`/`proxy_download_rate` hold a
//! direction to a number of bytes per second.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How a relay ended, with the bytes that went each way.
#[derive(Debug, Default)]
pub struct Relayed {
    /// Client to peer.
    pub up: u64,
    /// Peer to client.
    pub down: u64,
    /// When the peer's first byte arrived.
    pub first_byte: Option<Instant>,
    pub timed_out: bool,
    /// A read or write error ended the session (nginx still ends it as `200`).
    pub error: Option<std::io::Error>,
}

pub struct Limits {
    pub buffer_size: usize,
    pub timeout: Duration,
    pub half_close: bool,
    pub upload_rate: u64,
    pub download_rate: u64,
}

/// Copies until the session ends (see the module's comment).
pub async fn relay<CR, CW, PR, PW>(
    (mut client_r, mut client_w): (CR, CW),
    (mut peer_r, mut peer_w): (PR, PW),
    limits: &Limits,
) -> Relayed
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    PR: AsyncRead + Unpin,
    PW: AsyncWrite + Unpin,
{
    // The task's futures must be `Send`: atomics rather than cells, read and written by the
    // one task only. Times are microseconds since `origin`; `first_byte` 0 is "none yet".
    let origin = Instant::now();
    let activity = Clock {
        origin,
        at: AtomicU64::new(0),
    };
    let first_byte = Clock {
        origin,
        at: AtomicU64::new(0),
    };
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let upward = pump(
        &mut client_r,
        &mut peer_w,
        limits.buffer_size,
        limits.upload_rate,
        &up,
        &activity,
        None,
    );
    let downward = pump(
        &mut peer_r,
        &mut client_w,
        limits.buffer_size,
        limits.download_rate,
        &down,
        &activity,
        Some(&first_byte),
    );
    let both = async {
        if limits.half_close {
            // Each direction runs to its end; a FIN is passed on by `pump`.
            let (a, b) = tokio::join!(upward, downward);
            a.and(b)
        } else {
            // The first direction to end (or fail) ends the session.
            tokio::select! {
                r = upward => r,
                r = downward => r,
            }
        }
    };
    tokio::pin!(both);
    let mut out = Relayed::default();
    loop {
        let deadline = activity.get() + limits.timeout;
        tokio::select! {
            r = &mut both => {
                out.error = r.err();
                break;
            }
            () = tokio::time::sleep_until(deadline) => {
                if activity.get() + limits.timeout <= Instant::now() {
                    out.timed_out = true;
                    break;
                }
            }
        }
    }
    out.up = up.load(Relaxed);
    out.down = down.load(Relaxed);
    out.first_byte = (first_byte.at.load(Relaxed) != 0).then(|| first_byte.get());
    out
}

/// A time within a relay, as microseconds since its start.
struct Clock {
    origin: Instant,
    at: AtomicU64,
}

impl Clock {
    fn get(&self) -> Instant {
        self.origin + Duration::from_micros(self.at.load(Relaxed))
    }

    /// Sets the time to `now` (at least a microsecond after the origin, so that 0 stays
    /// "never").
    fn set(&self, now: Instant) {
        let micros = now.saturating_duration_since(self.origin).as_micros() as u64;
        self.at.store(micros.max(1), Relaxed);
    }
}

/// One direction: read, write all, repeat; at the end of stream, `shutdown` the writer (a FIN
/// to the other side, which matters with `proxy_half_close`).
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    buffer_size: usize,
    rate: u64,
    count: &AtomicU64,
    activity: &Clock,
    first_byte: Option<&Clock>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buffer_size];
    let started = Instant::now();
    loop {
        // At most a second's worth under a rate, as nginx reads at most what the rate allows.
        let room = match rate {
            0 => buf.len(),
            rate => buf.len().min(rate.max(1) as usize),
        };
        let n = from.read(&mut buf[..room]).await?;
        let now = Instant::now();
        activity.set(now);
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        if let Some(first) = first_byte
            && first.at.load(Relaxed) == 0
        {
            first.set(now);
        }
        to.write_all(&buf[..n]).await?;
        activity.set(Instant::now());
        let total = count.fetch_add(n as u64, Relaxed) + n as u64;
        if rate > 0 {
            // The bytes so far may take `total / rate` seconds since the start.
            let due = started + Duration::from_secs_f64(total as f64 / rate as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
                activity.set(Instant::now());
            }
        }
    }
}
