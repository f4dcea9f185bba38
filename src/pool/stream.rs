//! What an upstream connection carries its bytes over: the socket itself, or TLS on it
//! (`proxy_pass https://`). An enum rather than a trait object or a type parameter: the plain
//! socket, the common case, keeps the readiness-driven reads and `writev`s of [`super::h1`]
//! (no per-call indirection, no extra copies), and TLS is one branch beside it.
//!
//! TLS is rustls's [`ClientConnection`] driven here over the same socket calls (`try_read`
//! into rustls, `try_write` out of it), after the handshake (made by tokio-rustls). The
//! exchange writes the request while it reads the response (two futures polled by one task,
//! each holding `&Stream`), so the TLS state sits behind a mutex: it is never contended (one
//! task) and is held only inside one poll, never across an `.await`.

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use rustls::ClientConnection;
use tokio::net::TcpStream;

/// An open connection's byte stream.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

/// TLS over a socket, handshake done.
#[derive(Debug)]
pub struct Tls {
    tcp: TcpStream,
    conn: Mutex<ClientConnection>,
}

impl Tls {
    pub(crate) fn new(tcp: TcpStream, conn: ClientConnection) -> Self {
        Self {
            tcp,
            conn: Mutex::new(conn),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClientConnection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `io::Read`/`io::Write` on a socket's readiness-checked calls: `WouldBlock` when it is not
/// ready (no system call then).
struct Nonblocking<'a>(&'a TcpStream);

impl Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A rustls error as an I/O error (its text is what the error log shows).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Stream {
    /// The socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.tcp,
        }
    }

    /// Reads what is available into `buf` (at least half of `read_size` free before the
    /// read). `Ready(Ok(0))` is the end of the peer's bytes. A read that fills its space
    /// doubles `read_size` (up to `max`).
    pub(super) fn poll_fill(
        &self,
        buf: &mut BytesMut,
        read_size: &mut usize,
        max: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(tcp) => poll_fill_plain(tcp, buf, read_size, max, cx),
            Stream::Tls(tls) => tls.poll_fill(buf, cx),
        }
    }

    /// Writes as much of `parts` as the connection takes now (a TLS connection first sends
    /// what it holds). `Pending` only when nothing could be taken.
    pub(super) fn poll_write_parts(
        &self,
        parts: &[IoSlice<'_>],
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(tcp) => loop {
                match tcp.try_write_vectored(parts) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(tcp.poll_write_ready(cx))?;
                    }
                    r => return Poll::Ready(r),
                }
            },
            Stream::Tls(tls) => tls.poll_write(parts, cx),
        }
    }

    /// Sends what a TLS connection still holds (nothing to do on a plain socket).
    pub(super) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(_) => Poll::Ready(Ok(())),
            Stream::Tls(tls) => tls.poll_flush(&mut tls.lock(), cx),
        }
    }

    /// Whether an idle connection still looks usable: the peer has neither closed it nor sent
    /// anything unasked (a TLS session ticket is taken in). No system call unless the socket
    /// became readable.
    pub(super) fn is_reusable(&self) -> bool {
        match self {
            Stream::Plain(tcp) => {
                matches!(tcp.try_read(&mut [0; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Tls(tls) => tls.is_reusable(),
        }
    }

    /// This stream, its socket registered with the current thread's event loop. `None` if it
    /// cannot be (it is closed).
    pub(super) fn reregister(self) -> Option<Self> {
        let move_tcp = |tcp: TcpStream| TcpStream::from_std(tcp.into_std().ok()?).ok();
        Some(match self {
            Stream::Plain(tcp) => Stream::Plain(move_tcp(tcp)?),
            Stream::Tls(tls) => {
                let Tls { tcp, conn } = *tls;
                let conn = conn.into_inner().unwrap_or_else(PoisonError::into_inner);
                Stream::Tls(Box::new(Tls::new(move_tcp(tcp)?, conn)))
            }
        })
    }
}

/// A plain socket's read: what is there, in one `read`. A short read marks the socket drained,
/// so no `EAGAIN` read is paid for (as the server side does).
fn poll_fill_plain(
    stream: &TcpStream,
    buf: &mut BytesMut,
    read_size: &mut usize,
    max: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        if buf.capacity() - buf.len() < *read_size / 2 {
            buf.reserve(*read_size);
        }
        let room = buf.capacity() - buf.len();
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Ok(n) if n > 0 && n < room => {
                crate::http1::drained(stream);
                return Poll::Ready(Ok(n));
            }
            Ok(n) if n > 0 => {
                *read_size = (*read_size * 2).min(max);
                return Poll::Ready(Ok(n));
            }
            r => return Poll::Ready(r),
        }
    }
}

impl Tls {
    /// Moves the plaintext rustls holds into `buf`, reading records from the socket until
    /// there is some. The peer's `close_notify`, or its FIN without one (many servers close
    /// so), is the end: `Ok(0)`.
    fn poll_fill(&self, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut conn = self.lock();
        loop {
            let state = conn.process_new_packets().map_err(|e| {
                // The alert that says why goes out if it can.
                let _ = conn.write_tls(&mut Nonblocking(&self.tcp));
                tls_error(e)
            })?;
            if state.plaintext_bytes_to_read() > 0 {
                let mut reader = conn.reader();
                let mut moved = 0;
                while let Ok(chunk) = reader.fill_buf() {
                    if chunk.is_empty() {
                        break;
                    }
                    let n = chunk.len();
                    buf.extend_from_slice(chunk);
                    reader.consume(n);
                    moved += n;
                }
                return Poll::Ready(Ok(moved));
            }
            if state.peer_has_closed() {
                return Poll::Ready(Ok(0));
            }
            if conn.wants_write() {
                // A post-handshake message of ours (a key update's answer): best effort; the
                // next write sends the rest.
                let _ = conn.write_tls(&mut Nonblocking(&self.tcp));
            }
            match conn.read_tls(&mut Nonblocking(&self.tcp)) {
                Ok(0) => return Poll::Ready(Ok(0)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Encrypts as much of `parts` as rustls's send buffer takes, after sending what it held.
    fn poll_write(&self, parts: &[IoSlice<'_>], cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut conn = self.lock();
        ready!(self.poll_flush(&mut conn, cx))?;
        let n = conn.writer().write_vectored(parts)?;
        // Sent now when the socket takes it; what it does not is sent by the next write or
        // flush.
        match self.poll_flush(&mut conn, cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(n)),
        }
    }

    /// Sends the records rustls holds.
    fn poll_flush(
        &self,
        conn: &mut ClientConnection,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while conn.wants_write() {
            match conn.write_tls(&mut Nonblocking(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn is_reusable(&self) -> bool {
        let mut conn = self.lock();
        loop {
            match conn.read_tls(&mut Nonblocking(&self.tcp)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        match conn.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed(),
            Err(_) => false,
        }
    }
}

/// What of `parts` (at most four) is left after the first `done` bytes, as slices for one
/// vectored write, and how many there are.
#[inline]
pub(super) fn unwritten<'a>(parts: &[&'a [u8]], done: usize) -> ([IoSlice<'a>; 4], usize) {
    let mut slices = [IoSlice::new(&[]); 4];
    let mut count = 0;
    let mut skip = done;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        slices[count] = IoSlice::new(&part[skip..]);
        skip = 0;
        count += 1;
    }
    (slices, count)
}

/// Writes all of `parts` over TLS (a plain socket's writes are [`super::h1`]'s own `writev`s),
/// bounded by `timeout` while blocked (zero: no bound). `written` counts the request's bytes
/// once their records are sent.
pub(super) async fn write_all(
    stream: &Stream,
    parts: &[&[u8]],
    timeout: Duration,
    written: &mut usize,
) -> Result<(), (Option<io::Error>, usize)> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    let mut deadline = None;
    let mut timer = None;
    std::future::poll_fn(|cx| {
        loop {
            if done == total {
                ready!(stream.poll_flush(cx)).map_err(|e| (Some(e), *written))?;
                *written += total;
                return Poll::Ready(Ok(()));
            }
            let (slices, count) = unwritten(parts, done);
            match stream.poll_write_parts(&slices[..count], cx) {
                Poll::Ready(Ok(n)) => {
                    done += n;
                    deadline = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err((Some(e), *written))),
                Poll::Pending => {
                    if timeout.is_zero() {
                        return Poll::Pending;
                    }
                    let at = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
                    ready!(super::h1::poll_deadline(&mut timer, at, cx));
                    return Poll::Ready(Err((None, *written)));
                }
            }
        }
    })
    .await
}

/// An upgraded connection (`101` over TLS) as a byte stream for the tunnel.
impl tokio::io::AsyncRead for Tls {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let conn = this.conn.get_mut().unwrap_or_else(PoisonError::into_inner);
        loop {
            let state = conn.process_new_packets().map_err(tls_error)?;
            if state.plaintext_bytes_to_read() > 0 {
                let mut reader = conn.reader();
                let chunk = reader.fill_buf()?;
                let n = chunk.len().min(out.remaining());
                out.put_slice(&chunk[..n]);
                reader.consume(n);
                return Poll::Ready(Ok(()));
            }
            if state.peer_has_closed() {
                return Poll::Ready(Ok(()));
            }
            match conn.read_tls(&mut Nonblocking(&this.tcp)) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(this.tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for Tls {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Tls::poll_write(&self, &[IoSlice::new(buf)], cx)
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let conn = this.conn.get_mut().unwrap_or_else(PoisonError::into_inner);
        let tcp = &this.tcp;
        while conn.wants_write() {
            match conn.write_tls(&mut Nonblocking(tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.conn
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .send_close_notify();
        ready!(self.as_mut().poll_flush(cx))?;
        let tcp = &mut self.get_mut().tcp;
        std::pin::Pin::new(tcp).poll_shutdown(cx)
    }
}
