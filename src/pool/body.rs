//! The body sent upstream: the client's body streamed as it arrives, or bytes kept for a replay.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body on its way to a peer.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    /// Bytes in memory (a body kept so it can be sent again).
    Full(Option<Bytes>),
    /// The client's body, streamed with backpressure.
    Stream(Incoming),
    /// The client's body of unknown length, failed once it passes `client_max_body_size`.
    Limited(Limited),
}

/// A streamed body cut off at a byte limit; `tripped` tells the sender why the send failed.
#[derive(Debug)]
pub struct Limited {
    pub body: Incoming,
    pub left: u64,
    pub tripped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("client intended to send too large body")]
pub struct TooLarge;

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
            Self::Stream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Limited(l) => match Pin::new(&mut l.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    if n > l.left {
                        l.tripped.store(true, std::sync::atomic::Ordering::SeqCst);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    l.left -= n;
                    Poll::Ready(Some(Ok(frame)))
                }
                other => other.map_err(Into::into),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Stream(body) => body.is_end_stream(),
            Self::Limited(l) => l.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(body) => body.size_hint(),
            Self::Limited(l) => l.body.size_hint(),
        }
    }
}
