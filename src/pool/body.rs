//! The body sent upstream: the client's body streamed as it arrives, or bytes kept for a replay.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

use crate::http1::RequestBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A request body on its way to a peer.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    /// Bytes in memory (a body kept so it can be sent again).
    Full(Option<Bytes>),
    /// The client's body, streamed with backpressure.
    Client(ClientBody),
    /// A body read whole into a temporary file (`proxy_request_buffering on`), read back.
    File(FileBody),
}

/// A buffered request body read back from its temporary file, a chunk at a time, with
/// positional reads (`pread`): each attempt has its own position, so a read an abandoned
/// attempt left running on the blocking pool cannot move the next attempt's.
#[derive(Debug)]
pub struct FileBody {
    file: Arc<std::fs::File>,
    /// Where the next chunk starts.
    pos: u64,
    /// Bytes still to send.
    left: u64,
    reading: Option<tokio::task::JoinHandle<std::io::Result<Vec<u8>>>>,
}

/// How much of a buffered body one frame carries.
const FILE_CHUNK: u64 = 64 * 1024;

impl FileBody {
    pub fn new(file: Arc<std::fs::File>, len: u64) -> Self {
        Self {
            file,
            pos: 0,
            left: len,
            reading: None,
        }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Bytes>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let reading = self.reading.get_or_insert_with(|| {
            let (file, pos, want) = (self.file.clone(), self.pos, self.left.min(FILE_CHUNK));
            tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt as _;
                let mut buf = vec![0; want as usize];
                let n = file.read_at(&mut buf, pos)?;
                buf.truncate(n);
                Ok(buf)
            })
        });
        let read = match Pin::new(reading).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(joined) => joined.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        };
        self.reading = None;
        match read {
            Err(e) => Poll::Ready(Some(Err(e))),
            // The file is shorter than what was written to it.
            Ok(buf) if buf.is_empty() => {
                Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into())))
            }
            Ok(buf) => {
                self.pos += buf.len() as u64;
                self.left -= buf.len() as u64;
                Poll::Ready(Some(Ok(Bytes::from(buf))))
            }
        }
    }
}

/// The client's body as it streams upstream. When it fails, `fault` says it was the client's
/// doing (too large, or broken framing), so the request is answered 413/400 and the peer is not
/// blamed.
#[derive(Debug)]
pub struct ClientBody {
    pub body: RequestBody,
    /// Bytes still allowed by `client_max_body_size` (`None`: no limit to enforce here).
    pub left: Option<u64>,
    pub fault: Arc<ClientFault>,
    /// `client_body_timeout`: the longest the client may pause between two reads.
    pub timeout: Duration,
    pub timer: Option<Pin<Box<Sleep>>>,
}

/// What went wrong on the client's side of a streamed body, if anything.
#[derive(Debug, Default)]
pub struct ClientFault(AtomicU8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    TooLarge,
    Broken,
    Timeout,
}

impl ClientFault {
    fn set(&self, fault: Fault) {
        let v = match fault {
            Fault::TooLarge => 1,
            Fault::Broken => 2,
            Fault::Timeout => 3,
        };
        self.0.store(v, Ordering::SeqCst);
    }

    pub fn get(&self) -> Option<Fault> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(Fault::TooLarge),
            2 => Some(Fault::Broken),
            3 => Some(Fault::Timeout),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("client intended to send too large body")]
pub struct TooLarge;

#[derive(Debug, thiserror::Error)]
#[error("client timed out (110: Connection timed out) while reading client request body")]
pub struct BodyTimeout;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Client(c) => match Pin::new(&mut c.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    if let Some(timer) = c.timer.as_mut() {
                        timer.as_mut().reset(Instant::now() + c.timeout);
                    }
                    if let Some(left) = c.left.as_mut() {
                        if n > *left {
                            c.fault.set(Fault::TooLarge);
                            return Poll::Ready(Some(Err(Box::new(TooLarge))));
                        }
                        *left -= n;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    c.fault.set(Fault::Broken);
                    Poll::Ready(Some(Err(Box::new(e))))
                }
                Poll::Pending => {
                    let timeout = c.timeout;
                    let timer = c
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            c.fault.set(Fault::Timeout);
                            Poll::Ready(Some(Err(Box::new(BodyTimeout))))
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
                Poll::Ready(None) => Poll::Ready(None),
            },
            Self::File(f) => f
                .poll_chunk(cx)
                .map(|c| c.map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as _))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Client(c) => c.body.is_end_stream(),
            Self::File(f) => f.left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Client(c) => c.body.size_hint(),
            Self::File(f) => SizeHint::with_exact(f.left),
        }
    }
}
