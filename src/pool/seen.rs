//! What an upstream connection's socket has seen: how many bytes the peer sent, and whether the
//! peer reset the connection. The request that uses the connection reads it after a failure to
//! tell "the peer never read the request" from "the peer may have acted on it".
//!
//! Linux answers with a reset (RST) when a socket is closed while data sent to it is still
//! unread (`tcp_close`, RFC 2525 §2.17), and when data arrives at a socket already closed. A
//! peer that read the whole request and then closed (or died) sends a plain FIN instead. So a
//! reset seen before any byte of a response means the peer's application did not read all of
//! the request — unless it chose an abortive close (`SO_LINGER` 0), which this cannot tell.
//!
//! The same socket also bounds a blocked write by `proxy_send_timeout`: when the peer stops
//! reading and a write stays blocked that long, the write fails and the attempt gets 504.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Shared between a connection's socket and whoever sends requests on it.
#[derive(Debug)]
pub struct Seen {
    received: AtomicU64,
    reset: AtomicBool,
    /// Set when a write blocked past `proxy_send_timeout`.
    write_timed_out: AtomicBool,
}

impl Seen {
    /// True once a write on this connection blocked past `proxy_send_timeout`.
    pub fn write_timed_out(&self) -> bool {
        self.write_timed_out.load(Ordering::SeqCst)
    }

    /// Bytes read from the peer since the connection was opened.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// True once the peer reset the connection: `ECONNRESET` or `EPIPE` from a read or a write,
    /// or still pending on the socket when the peer's FIN was read (the reset that answers a
    /// request sent to a socket already closed).
    pub fn reset(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }
}

/// The peer's socket, noting into [`Seen`] what it reads, and failing a write that stays
/// blocked for `send_timeout`.
pub struct Watched {
    inner: TcpStream,
    seen: Arc<Seen>,
    send_timeout: Duration,
    /// Armed while a write is blocked; cleared when one makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Watched {
    pub fn new(inner: TcpStream, send_timeout: Duration) -> Self {
        let seen = Arc::new(Seen {
            received: AtomicU64::new(0),
            reset: AtomicBool::new(false),
            write_timed_out: AtomicBool::new(false),
        });
        Self {
            inner,
            seen,
            send_timeout,
            stalled: None,
        }
    }

    /// Notes a reset, and bounds a blocked write by `send_timeout`.
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending if !self.send_timeout.is_zero() => {
                let deadline = Instant::now() + self.send_timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.seen.write_timed_out.store(true, Ordering::SeqCst);
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "timed out (110: Connection timed out) while sending",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            other => {
                self.stalled = None;
                if let Poll::Ready(Err(e)) = &other {
                    self.note_error(e);
                }
                other
            }
        }
    }

    pub fn seen(&self) -> Arc<Seen> {
        self.seen.clone()
    }

    fn note_error(&self, e: &io::Error) {
        if is_reset(e.kind()) {
            self.seen.reset.store(true, Ordering::SeqCst);
        }
    }
}

/// The error kinds a reset produces: on a read `ECONNRESET`; on a write, or pending after a FIN,
/// `EPIPE` (Linux reports a reset received in `CLOSE_WAIT` as `EPIPE`).
fn is_reset(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &poll {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    this.seen.received.fetch_add(n as u64, Ordering::Relaxed);
                } else if buf.remaining() > 0 {
                    // The peer's FIN. A reset that came after it is only visible as SO_ERROR.
                    if let Ok(Some(e)) = this.inner.take_error() {
                        this.note_error(&e);
                    }
                }
            }
            Poll::Ready(Err(e)) => this.note_error(e),
            Poll::Pending => {}
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, data);
        this.on_write(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.on_write(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    //! Real sockets on 127.0.0.1, so these check the kernel's behaviour as much as ours.
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
    use tokio::net::{TcpListener, TcpStream};

    const REQUEST: &[u8] = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc";

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    fn watched(stream: TcpStream) -> Watched {
        Watched::new(stream, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_peer_closing_with_the_request_unread_resets_the_connection() {
        let (client, peer) = pair().await;
        let mut io = watched(client);
        io.write_all(REQUEST).await.unwrap();
        peer.peek(&mut [0; 1]).await.unwrap(); // it arrived; nothing is read
        drop(peer);
        let read = io.read(&mut [0; 64]).await;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        assert!(io.seen().reset());
        assert_eq!(io.seen().received(), 0);
    }

    #[tokio::test]
    async fn a_peer_that_read_the_request_and_closed_sends_a_plain_fin() {
        let (client, mut peer) = pair().await;
        let mut io = watched(client);
        io.write_all(REQUEST).await.unwrap();
        peer.read_exact(&mut [0; REQUEST.len()]).await.unwrap();
        drop(peer);
        assert_eq!(io.read(&mut [0; 64]).await.unwrap(), 0, "EOF");
        assert!(!io.seen().reset());
    }

    #[tokio::test]
    async fn a_request_sent_to_a_connection_the_peer_closed_is_reset_after_the_fin() {
        // The keep-alive race: the peer closed an idle connection; the request arrives after.
        let (client, peer) = pair().await;
        drop(peer);
        assert_eq!(
            client.peek(&mut [0; 1]).await.unwrap(),
            0,
            "the FIN is here"
        );
        let mut client = client;
        client.write_all(REQUEST).await.unwrap(); // accepted locally; the peer answers RST
        client.ready(Interest::ERROR).await.unwrap();
        let mut io = watched(client);
        assert_eq!(
            io.read(&mut [0; 64]).await.unwrap(),
            0,
            "the FIN is read first"
        );
        assert!(io.seen().reset(), "the reset was pending behind it");
    }

    #[tokio::test]
    async fn response_bytes_are_counted() {
        let (client, mut peer) = pair().await;
        let mut io = watched(client);
        peer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        drop(peer);
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(io.seen().received(), 17);
        assert!(!io.seen().reset());
    }
}
