//! The body a client receives: bytes imbang made itself, or a peer's body streamed through.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::access_log::Pending;
use crate::http1::RawFields;
use crate::pool::{PeerBody, Pool};
use crate::proxy::gzip::Filter as Gzip;
use crate::proxy::sub_filter::Filter as SubFilter;
use crate::upstream::PeerGuard;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A response body for the client. When the request is logged, the log line is written as the
/// body is dropped: after its last byte went out, or when the client went away.
pub struct ResponseBody {
    kind: Kind,
    sent: u64,
    log: Option<Box<Pending>>,
    /// Fields of a response imbang made itself that `add_header` adds in the config's spelling
    /// (a peer's response keeps its fields in its [`Streamed`]).
    fields: Option<Box<RawFields>>,
    /// `sub_filter`: the body's bytes go through it on their way out.
    filter: Option<Box<SubFilter>>,
    /// `gzip`: the body (after `sub_filter`) is compressed on its way out.
    gzip: Option<Box<Gzip>>,
    /// `chunked_transfer_encoding off`: an unknown length is delimited by the close instead.
    no_chunked: bool,
    /// `limit_conn`'s counts of the request and `limit_rate`'s pace, until the body is done.
    held: Option<Box<crate::limit::Held>>,
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(Box<Streamed>),
    /// A file from disk ([`crate::files`]), read as it goes out.
    File(Box<crate::files::FileBody>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::from_kind(Kind::Full(Some(bytes.into())))
    }

    pub fn empty() -> Self {
        Self::from_kind(Kind::Full(None))
    }

    /// A file's body (or its ranges), read in chunks as the client takes them.
    pub fn file(f: crate::files::FileBody) -> Self {
        Self::from_kind(Kind::File(Box::new(f)))
    }

    /// The file body, for a writer that sends it with `sendfile` (unless a filter must see
    /// its bytes).
    pub fn file_mut(&mut self) -> Option<&mut crate::files::FileBody> {
        match (&mut self.kind, &self.filter) {
            (Kind::File(f), None) => Some(f),
            _ => None,
        }
    }

    /// `sendfile` wrote `n` bytes of the file body (`$body_bytes_sent` counts them).
    pub fn count_sent(&mut self, n: u64) {
        self.sent += n;
    }

    pub fn streamed(s: Streamed) -> Self {
        Self::from_kind(Kind::Upstream(Box::new(s)))
    }

    fn from_kind(kind: Kind) -> Self {
        Self {
            kind,
            sent: 0,
            log: None,
            fields: None,
            filter: None,
            gzip: None,
            no_chunked: false,
            held: None,
        }
    }

    /// `chunked_transfer_encoding off`: sent to an HTTP/1.1 client with no length known, the
    /// body ends with the connection instead of in chunks.
    pub fn forbid_chunked(&mut self) {
        self.no_chunked = true;
    }

    /// Whether the body may be sent chunked (`chunked_transfer_encoding`).
    pub fn may_chunk(&self) -> bool {
        !self.no_chunked
    }

    /// Sends the body through `filter` (`sub_filter`); its length is then unknown.
    pub fn set_filter(&mut self, filter: Box<SubFilter>) {
        self.filter = Some(filter);
    }

    /// Compresses the body with `gzip` (after any `sub_filter`); its length is then unknown.
    pub fn set_gzip(&mut self, gzip: Box<Gzip>) {
        self.gzip = Some(gzip);
    }

    /// The response's fields as spelled (the peer's as it sent them, then `add_header`'s),
    /// which go out before or beside the ones in its `HeaderMap`; `None` when it has none.
    pub fn fields(&self) -> Option<&RawFields> {
        match &self.kind {
            Kind::Upstream(s) => Some(&s.fields),
            Kind::Full(_) | Kind::File(_) => self.fields.as_deref(),
        }
    }

    /// The response's spelled fields, to add to.
    pub fn fields_mut(&mut self) -> &mut RawFields {
        match &mut self.kind {
            Kind::Upstream(s) => &mut s.fields,
            Kind::Full(_) | Kind::File(_) => self.fields.get_or_insert_with(Box::default),
        }
    }

    /// Lets the spelled fields go once the head is written (the peer's head bytes they share
    /// and their list are then free for the next message).
    pub fn drop_fields(&mut self) {
        match &mut self.kind {
            Kind::Upstream(s) => s.fields = RawFields::default(),
            Kind::Full(_) | Kind::File(_) => self.fields = None,
        }
    }

    /// Gives the response `fields` (a peer's 101, whose body is imbang's).
    pub fn set_fields(&mut self, fields: RawFields) {
        match &mut self.kind {
            Kind::Upstream(s) => s.fields = fields,
            Kind::Full(_) | Kind::File(_) => self.fields = Some(Box::new(fields)),
        }
    }

    /// Keeps `held` (limit_conn's counts, limit_rate's pace) until this body is done.
    pub fn hold(&mut self, held: Box<crate::limit::Held>) {
        self.held = Some(held);
    }

    /// Writes `pending`'s access-log lines when this body is done.
    pub fn log_when_done(&mut self, pending: Box<Pending>) {
        self.log = Some(pending);
    }

    /// The head went out in `len` bytes: `$bytes_sent` counts them exactly.
    pub fn head_written(&mut self, len: usize) {
        if let Some(pending) = &mut self.log {
            pending.done.header_bytes = len as u64;
        }
    }

    /// A chunked body's framing (sizes, line ends, the last chunk and trailers) went out in
    /// `len` bytes, which `$bytes_sent` counts as well.
    pub fn framing_written(&mut self, len: usize) {
        if let Some(pending) = &mut self.log {
            pending.done.header_bytes += len as u64;
        }
    }

    /// The access-log lines waiting for this body, taken back (for an answer never sent).
    pub fn take_log(&mut self) -> Option<Box<Pending>> {
        self.log.take()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(mut pending) = self.log.take() {
            pending.done.complete = match &self.kind {
                Kind::Full(bytes) => bytes.is_none(),
                Kind::Upstream(s) => s.ended,
                Kind::File(f) => f.is_empty(),
            } && self.filter.as_ref().is_none_or(|f| f.done())
                && self.gzip.as_ref().is_none_or(|g| g.done());
            if let Some(gzip) = &self.gzip {
                // `$gzip_ratio`: nginx's counts once the stream is finished.
                pending.done.gzip = gzip.done().then(|| gzip.counts());
            }
            pending.finish(self.sent);
        }
    }
}

/// Where a connection goes back when its response was read to the end.
pub struct Checkin {
    pub pool: Arc<Pool>,
    pub addr: crate::pool::PeerKey,
    pub age: crate::pool::Age,
    pub max_idle: usize,
    pub reuse: crate::pool::Reuse,
}

/// A peer's response body on its way to the client. Holds the peer's in-flight guard until the
/// body ends (so `least_conn` and `max_conns` see the request until then), returns the
/// connection to the pool at the end, and fails the body if the peer goes quiet for longer than
/// `proxy_read_timeout` (the client then sees the connection closed, never a short body that
/// looks complete).
pub struct Streamed {
    body: PeerBody,
    /// The peer's fields that go to the client, as it sent them.
    fields: RawFields,
    guard: Option<PeerGuard>,
    checkin: Option<Checkin>,
    read_timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The peer's body came to its end.
    ended: bool,
}

impl Streamed {
    pub fn new(
        body: PeerBody,
        fields: RawFields,
        guard: PeerGuard,
        checkin: Checkin,
        read_timeout: Duration,
    ) -> Self {
        let mut streamed = Self {
            body,
            fields,
            guard: Some(guard),
            checkin: Some(checkin),
            read_timeout,
            timer: None,
            ended: false,
        };
        if streamed.body.is_end_stream() {
            streamed.finish();
        }
        streamed
    }

    fn finish(&mut self) {
        self.ended = true;
        let now = Instant::now();
        if let Some(c) = self.checkin.take() {
            if let Some(conn) = self.body.take_idle() {
                c.pool
                    .checkin(c.addr, conn, c.age, c.max_idle, c.reuse, now);
            }
        }
        if let Some(guard) = self.guard.take() {
            guard.body_done(now); // `least_time last_byte`
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream timed out (110: Connection timed out) while reading upstream")]
pub struct BodyTimeout;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let poll = match this.held.as_mut().and_then(|h| h.pace.as_mut()) {
            None => match &mut this.gzip {
                None => source(&mut this.kind, &mut this.filter, cx),
                Some(gzip) => gzipped(&mut this.kind, &mut this.filter, gzip, cx),
            },
            Some(pace) => {
                let (kind, filter, gzip) = (&mut this.kind, &mut this.filter, &mut this.gzip);
                pace.poll(cx, |cx| match gzip {
                    None => source(kind, filter, cx),
                    Some(gzip) => gzipped(kind, filter, gzip, cx),
                })
            }
        };
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(data) = frame.data_ref() {
                this.sent += data.len() as u64;
            } else if let (Some(trailers), Some(log)) = (frame.trailers_ref(), &mut this.log) {
                // `$sent_trailer_*`, `$upstream_trailer_*`.
                log.done.trailers = Some(trailers.clone());
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        if self
            .held
            .as_ref()
            .and_then(|h| h.pace.as_ref())
            .is_some_and(|p| p.holds())
        {
            return false;
        }
        if let Some(gzip) = &self.gzip {
            return gzip.done();
        }
        if let Some(filter) = &self.filter {
            return filter.done();
        }
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(s) => s.body.is_end_stream(),
            Kind::File(f) => f.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.filter.is_some() || self.gzip.is_some() {
            return SizeHint::default();
        }
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(s) => s.body.size_hint(),
            Kind::File(f) => SizeHint::with_exact(f.len()),
        }
    }
}

/// The next frame of the body before `gzip`: the source's, through `sub_filter` if any.
fn source(
    kind: &mut Kind,
    filter: &mut Option<Box<SubFilter>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match filter {
        None => kind.poll_frame(cx),
        Some(filter) => filtered(kind, filter, cx),
    }
}

/// The next frame of a compressed body: chunks are compressed as they come; when the source
/// has nothing ready, what it gave so far is flushed out (nginx flushes each chunk of a
/// non-buffered peer the same way), so a slow body reaches the client as it goes.
fn gzipped(
    kind: &mut Kind,
    filter: &mut Option<Box<SubFilter>>,
    gzip: &mut Gzip,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    loop {
        if let Some(frame) = gzip.pop() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if gzip.done() {
            return Poll::Ready(None);
        }
        match source(kind, filter, cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => gzip.push(&data),
                Err(trailers) => gzip.end(Some(trailers)),
            },
            Poll::Ready(None) => gzip.end(None),
            Poll::Pending => {
                if !gzip.flush() {
                    return Poll::Pending;
                }
            }
            error => return error,
        }
    }
}

/// The next frame of a body that goes through `sub_filter`: chunks are fed to the filter until
/// it has something to hand out.
fn filtered(
    kind: &mut Kind,
    filter: &mut SubFilter,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    loop {
        if let Some(frame) = filter.pop() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if filter.done() {
            return Poll::Ready(None);
        }
        match kind.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => filter.push(data),
                Err(trailers) => filter.end(Some(trailers)),
            },
            Poll::Ready(None) => filter.end(None),
            other => return other,
        }
    }
}

impl Kind {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::File(f) => Poll::Ready(
                f.next_chunk(usize::MAX)
                    .map(|chunk| chunk.map(Frame::data).map_err(|e| Box::new(e) as BoxError)),
            ),
            Self::Upstream(s) => {
                if s.checkin.is_none() && s.guard.is_none() {
                    return Poll::Ready(None);
                }
                match s.body.poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(guard), Some(data)) = (&mut s.guard, frame.data_ref()) {
                            guard.count_bytes(0, data.len() as u64);
                        }
                        if let Some(timer) = s.timer.as_mut() {
                            timer.as_mut().reset(Instant::now() + s.read_timeout);
                        }
                        if s.body.is_end_stream() {
                            s.finish();
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        s.checkin = None;
                        s.guard = None;
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Poll::Ready(None) => {
                        s.finish();
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        let read_timeout = s.read_timeout;
                        let timer = s
                            .timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(read_timeout)));
                        match timer.as_mut().poll(cx) {
                            Poll::Ready(()) => {
                                s.checkin = None;
                                s.guard = None;
                                Poll::Ready(Some(Err(Box::new(BodyTimeout))))
                            }
                            Poll::Pending => Poll::Pending,
                        }
                    }
                }
            }
        }
    }
}

use std::future::Future;
