//! imbang's HTTP/1.1 client: one request at a time on an upstream connection, driven by the
//! task that serves the client (no task per upstream connection, no channels between the two
//! sides), with the connection's read buffer kept from one request to the next.
//!
//! Purpose-built rather than hyper's client for the same reasons as the server side
//! (bench/PROFILE.md): hyper runs each upstream connection as its own task and hands every
//! request, response and body chunk across channels to it, and re-reserves an 8 KiB read buffer
//! per request. Here the request head is encoded from the header map in one buffer and written
//! with a kept body in one `writev`; the response head is parsed with `httparse` into a header
//! map sharing the bytes read; the body is decoded with the server side's strict decoder.
//!
//! It also sees exactly how an attempt failed, which decides whether the request may go to
//! another peer ([`Broken`]): how many bytes the peer sent, and whether it *reset* the
//! connection. Linux answers with a reset (RST) when a socket is closed while data sent to it
//! is still unread (`tcp_close`, RFC 2525 §2.17), and when data arrives at a socket already
//! closed. A peer that read the whole request and then closed (or died) sends a plain FIN
//! instead. So a reset seen before any byte of a response means the peer's application did not
//! read all of the request — unless it chose an abortive close (`SO_LINGER` 0), which this
//! cannot tell.

use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::UpstreamBody;
use super::stream::{self, Stream};
use crate::http1::{Decoded, Decoder, Framing, Named, RawFields, chunk_header, itoa};
use crate::scratch::Scratch;

/// The first read of a response asks for this much; a read that fills its space doubles the
/// next one, up to [`MAX_READ`] (large bodies then cost few reads).
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;
/// The largest response head accepted (nginx's is `proxy_buffer_size`, 4k or 8k; imbang is
/// more lenient, as hyper was).
const MAX_HEAD: usize = 64 * 1024;
/// Header fields a response head may have.
const MAX_FIELDS: usize = 128;

/// An open connection to a peer, between requests or carrying one.
#[derive(Debug)]
pub struct Conn {
    pub(super) stream: Stream,
    /// Bytes read from the peer and not used yet (empty between requests).
    buf: BytesMut,
    /// How much the next read asks for.
    read_size: usize,
    /// `proxy_send_timeout`: the longest one write may stay blocked (zero: no limit).
    send_timeout: Duration,
    /// The thread that opened it: its event loop reports the socket's readiness.
    pub(super) home: std::thread::ThreadId,
    /// `proxy_read_timeout`'s timer, kept from one request to the next on the home thread (its
    /// runtime's timer wheel holds it): an exchange moves only the deadline it checks against,
    /// and the timer itself is moved when it fires before that deadline (once per timeout at
    /// most), instead of a timer registered and removed per request.
    read_timer: Option<Pin<Box<Sleep>>>,
}

/// The response fields the caller would drop anyway (hop-by-hop, hidden), left out as the head
/// is parsed; given a field's name (as the peer spelled it) and the head's `Connection`
/// tokens. Not applied to a `101` (its `Upgrade` is read).
pub type Hide<'a> = Option<&'a (dyn Fn(&[u8], &Named<'_>) -> bool + Sync)>;

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (HEAD, 204, 304, or a length of 0).
    None,
    Length(u64),
    Chunked,
    /// Until the peer closes the connection.
    Close,
}

/// A response head, and what it says about the body and the connection.
#[derive(Debug)]
pub struct Answer {
    /// The status and version; its map is empty (room for what imbang adds).
    pub head: http::response::Parts,
    /// The fields that go on to the client, as the peer sent them.
    pub fields: RawFields,
    /// All of the peer's fields, hidden ones too, when [`Shape::upstream_headers`] asked for
    /// them (`$upstream_http_*`).
    pub upstream_headers: Option<Box<http::HeaderMap>>,
    pub body: BodyKind,
    /// The connection may carry another request once this body is read to its end (not
    /// when the peer answered before the whole request body was sent).
    pub keep_alive: bool,
    /// The bytes of the final response head on the wire (`$upstream_bytes_received`).
    pub head_len: usize,
}

/// How an exchange failed.
#[derive(Debug)]
pub enum Failed {
    /// Nothing of the request was written: its body comes back whole.
    NotSent(io::Error, UpstreamBody),
    /// The connection closed or broke before a complete response head.
    Broken(Broken),
    /// A write stayed blocked for `proxy_send_timeout`.
    SendTimeout,
    /// No complete response head within `proxy_read_timeout` of the request's end.
    ReadTimeout,
    /// The peer's response head is not HTTP imbang can pass on.
    Invalid(&'static str),
    /// Reading the client's body failed (what went wrong is in its `ClientFault`).
    ClientBody,
}

/// What a broken connection showed before it broke.
#[derive(Debug)]
pub struct Broken {
    /// The error, or `None` for a close (FIN) from the peer.
    pub error: Option<io::Error>,
    /// The peer sent at least one byte of a response.
    pub answered: bool,
    /// The peer reset the connection: `ECONNRESET` or `EPIPE` from a read or a write, or still
    /// pending on the socket when its FIN was read (the reset that answers a request sent to a
    /// socket already closed).
    pub reset: bool,
}

impl std::error::Error for Broken {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.as_ref().map(|e| e as _)
    }
}

impl std::fmt::Display for Broken {
    /// nginx's words: the OS error, or "upstream prematurely closed connection".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(e) => write!(
                f,
                "upstream connection failed ({})",
                crate::error_log::errno_text(e)
            ),
            None => f.write_str("upstream prematurely closed connection"),
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

/// Where an exchange stopped (made where it is matched: its size is not moved around).
#[allow(clippy::large_enum_variant)]
enum Step {
    Read(Result<Answer, ReadFail>),
    /// The first write failed: nothing went out.
    NotSent,
    SendTimeout,
    ClientBody,
    ReadTimeout,
}

/// Why writing the request stopped.
enum WriteFail {
    /// An error after `written` bytes.
    Io(io::Error, usize),
    Timeout,
    Client,
}

impl Conn {
    pub(crate) fn new(stream: Stream, send_timeout: Duration) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            read_size: FIRST_READ,
            send_timeout,
            home: std::thread::current().id(),
            read_timer: None,
        }
    }

    /// This connection, served from now on by the event loop of thread `me` (the current one). A connection
    /// another worker opened reports its readiness to that worker, which then has to wake this
    /// one for every response (a context switch on each side); moving it costs two `epoll_ctl`
    /// once. `None` if the socket cannot be registered here (it is closed).
    pub(super) fn adopt(self, me: std::thread::ThreadId) -> Option<Self> {
        if self.home == me {
            return Some(self);
        }
        let Self {
            stream,
            buf,
            read_size,
            send_timeout,
            ..
        } = self;
        let stream = stream.reregister()?;
        Some(Self {
            stream,
            buf,
            read_size,
            send_timeout,
            home: me,
            read_timer: None,
        })
    }

    /// Readies a connection for the idle list: a read buffer grown for a large body is let go
    /// (an idle connection keeps at most a small one).
    pub(super) fn settle(&mut self) {
        if self.buf.capacity() > 2 * FIRST_READ {
            self.buf = BytesMut::new();
        }
    }

    /// Whether an idle connection still looks usable: the peer has neither closed it nor sent
    /// anything unasked. Costs no system call unless the socket became readable.
    pub(super) fn is_reusable(&self) -> bool {
        self.buf.is_empty() && self.stream.is_reusable()
    }

    /// Sends a request (its encoded `head`, then `body`) and reads the response head. The body
    /// is written while the response is awaited, so a peer that answers before reading all of
    /// it (a 413, say) is heard. `proxy_read_timeout` counts from the end of the request.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        mut body: UpstreamBody,
        shape: Shape,
        read_timeout: Duration,
        hide: Hide<'_>,
    ) -> Result<Answer, Failed> {
        let Shape {
            framing, http10, ..
        } = shape;
        self.read_size = FIRST_READ;
        // Another thread's runtime may not hold a timer of this one's wheel past the request.
        let at_home = std::thread::current().id() == self.home;
        let Self {
            stream,
            buf,
            read_size,
            send_timeout,
            read_timer,
            ..
        } = self;
        let stream = &*stream;
        let mut own_timer = None;
        let timer = if at_home { read_timer } else { &mut own_timer };
        let mut received = 0u64;
        let mut written = false;
        let mut write_error = None;
        let step = {
            // Built where they are pinned (not built, then moved there: a copy of each).
            let mut write = pin!(write_request(
                stream,
                head,
                &mut body,
                framing,
                *send_timeout
            ));
            let mut read = pin!(read_head(
                stream,
                buf,
                read_size,
                &mut received,
                shape,
                hide,
            ));
            let mut deadline = None;
            poll_fn(|cx| {
                if !written && write_error.is_none() {
                    match write.as_mut().poll(cx) {
                        Poll::Ready(Ok(())) => written = true,
                        Poll::Ready(Err(WriteFail::Timeout)) => {
                            return Poll::Ready(Step::SendTimeout);
                        }
                        Poll::Ready(Err(WriteFail::Client)) => {
                            return Poll::Ready(Step::ClientBody);
                        }
                        Poll::Ready(Err(WriteFail::Io(e, 0))) => {
                            write_error = Some(e);
                            return Poll::Ready(Step::NotSent);
                        }
                        // Broken after a first write: the peer's answer (or its close) decides.
                        Poll::Ready(Err(WriteFail::Io(e, _))) => write_error = Some(e),
                        Poll::Pending => {}
                    }
                    if written || write_error.is_some() {
                        deadline = Some(Instant::now() + read_timeout);
                    }
                }
                if let Poll::Ready(r) = read.as_mut().poll(cx) {
                    return Poll::Ready(Step::Read(r));
                }
                match deadline.map(|d| poll_deadline(timer, d, cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Step::ReadTimeout),
                    _ => Poll::Pending,
                }
            })
            .await
        };
        match step {
            Step::Read(Ok(mut answer)) => {
                if !written || http10 {
                    answer.keep_alive = false;
                }
                Ok(answer)
            }
            Step::Read(Err(ReadFail::Invalid(why))) => Err(Failed::Invalid(why)),
            Step::Read(Err(ReadFail::Closed(error))) => {
                let reset = match &error {
                    Some(e) => is_reset(e.kind()),
                    // A reset that came after the FIN is only visible as SO_ERROR.
                    None => matches!(stream.tcp().take_error(), Ok(Some(e)) if is_reset(e.kind())),
                } || write_error.as_ref().is_some_and(|e| is_reset(e.kind()));
                Err(Failed::Broken(Broken {
                    error: error.or(write_error),
                    answered: received > 0,
                    reset,
                }))
            }
            Step::SendTimeout => Err(Failed::SendTimeout),
            Step::ClientBody => Err(Failed::ClientBody),
            Step::ReadTimeout => Err(Failed::ReadTimeout),
            Step::NotSent => {
                let e = write_error.unwrap_or_else(|| io::ErrorKind::BrokenPipe.into());
                Err(Failed::NotSent(e, body))
            }
        }
    }

    /// The response body that follows `answer`, read from this connection.
    pub fn body(self, kind: BodyKind, keep_alive: bool) -> PeerBody {
        let decoder = match kind {
            BodyKind::None | BodyKind::Length(0) => Decoder::Done,
            BodyKind::Length(n) => Decoder::new(Framing::Length(n)),
            BodyKind::Chunked => Decoder::new(Framing::Chunked),
            BodyKind::Close => Decoder::Length(u64::MAX),
        };
        PeerBody {
            conn: Some(self),
            decoder,
            until_close: kind == BodyKind::Close,
            keep_alive: keep_alive && kind != BodyKind::Close,
        }
    }

    /// The socket and the bytes already read past a `101` head (the peer's first bytes in the
    /// new protocol).
    pub fn into_upgraded(self) -> (Bytes, Stream) {
        (self.buf.freeze(), self.stream)
    }
}

/// Ready once `deadline` has passed, on `timer` (made on first use). A timer left at an earlier
/// request's deadline is moved on when it fires; one set later than `deadline` (a shorter
/// `proxy_read_timeout` since) is moved back at once. Also the HTTP/2 side's `send_timeout`.
pub(crate) fn poll_deadline(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        let Some(t) = timer else {
            *timer = Some(Box::pin(tokio::time::sleep_until(deadline)));
            continue;
        };
        if t.deadline() > deadline {
            t.as_mut().reset(deadline);
        }
        ready!(t.as_mut().poll(cx));
        if t.deadline() >= deadline {
            return Poll::Ready(());
        }
        t.as_mut().reset(deadline);
    }
}

/// How the request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, and no length said.
    None,
    Length(u64),
    Chunked,
}

/// What the exchange needs to know about the request besides its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub framing: RequestFraming,
    /// A HEAD request: the answer has no body, whatever its length says.
    pub head_only: bool,
    /// Sent as HTTP/1.0 (`proxy_http_version 1.0`): the connection is not kept.
    pub http10: bool,
    /// The request asks to switch protocols: a `101` answer is expected.
    pub upgrade: bool,
    /// Keep all of the response's fields in a map too ([`Answer::upstream_headers`]).
    pub upstream_headers: bool,
}

/// Encodes a request head: the request line, the fields `fields` writes (with [`put_field`]),
/// then the framing field for `framing`.
pub fn request_head(
    method: &Method,
    target: &str,
    http10: bool,
    framing: RequestFraming,
    fields: impl FnOnce(&mut Vec<u8>),
) -> Scratch {
    let mut out = Scratch::new(512);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    fields(&mut out);
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            put_field(&mut out, b"Content-Length", itoa(n, &mut [0; 20]));
        }
        RequestFraming::Chunked => put_field(&mut out, b"Transfer-Encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Appends one header field.
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes all of `parts` (one `writev` when the socket takes it), bounded by `timeout` while
/// blocked. `written` counts the bytes that went out.
async fn write_parts(
    stream: &Stream,
    parts: &[&[u8]],
    timeout: Duration,
    written: &mut usize,
) -> Result<(), WriteFail> {
    let tcp = match stream {
        Stream::Plain(tcp) => tcp,
        Stream::Tls(_) => {
            return (stream::write_all(stream, parts, timeout, written).await).map_err(
                |(e, written)| match e {
                    Some(e) => WriteFail::Io(e, written),
                    None => WriteFail::Timeout,
                },
            );
        }
    };
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let (slices, count) = stream::unwritten(parts, done);
        match tcp.try_write_vectored(&slices[..count]) {
            Ok(n) => {
                done += n;
                *written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ready = tcp.writable();
                let ready = if timeout.is_zero() {
                    ready.await
                } else {
                    match tokio::time::timeout(timeout, ready).await {
                        Ok(r) => r,
                        Err(_) => return Err(WriteFail::Timeout),
                    }
                };
                ready.map_err(|e| WriteFail::Io(e, *written))?;
            }
            Err(e) => return Err(WriteFail::Io(e, *written)),
        }
    }
    Ok(())
}

/// The request head, then its body: a kept body in the same `writev`, a client's body as it
/// arrives (chunked when its length is unknown, with its trailers).
async fn write_request(
    stream: &Stream,
    head: &[u8],
    body: &mut UpstreamBody,
    framing: RequestFraming,
    timeout: Duration,
) -> Result<(), WriteFail> {
    let mut written = 0;
    match body {
        UpstreamBody::Full(Some(bytes)) => {
            return write_parts(stream, &[head, bytes], timeout, &mut written).await;
        }
        UpstreamBody::Empty | UpstreamBody::Full(None) => {
            return write_parts(stream, &[head], timeout, &mut written).await;
        }
        UpstreamBody::Client(_) | UpstreamBody::File(_) => {}
    }
    write_parts(stream, &[head], timeout, &mut written).await?;
    let chunked = framing == RequestFraming::Chunked;
    let mut trailers = None;
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) if chunked => {
                    let mut size = [0u8; 18];
                    let n = chunk_header(data.len(), &mut size);
                    let parts: [&[u8]; 3] = [&size[..n], &data, b"\r\n"];
                    write_parts(stream, &parts, timeout, &mut written).await?;
                }
                Ok(data) => write_parts(stream, &[&data], timeout, &mut written).await?,
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Some(Err(_)) => return Err(WriteFail::Client),
            None => break,
        }
    }
    if chunked {
        let mut end = b"0\r\n".to_vec();
        for (name, value) in trailers.iter().flatten() {
            put_field(&mut end, name.as_str().as_bytes(), value.as_bytes());
        }
        end.extend_from_slice(b"\r\n");
        write_parts(stream, &[&end], timeout, &mut written).await?;
    }
    Ok(())
}

/// Why no response head was read.
enum ReadFail {
    /// The peer closed (`None`) or the read failed before a complete head.
    Closed(Option<io::Error>),
    Invalid(&'static str),
}

/// Reads until a complete final response head (1xx interim heads are passed over, except a
/// `101` to a request that asked for an upgrade).
async fn read_head(
    stream: &Stream,
    buf: &mut BytesMut,
    read_size: &mut usize,
    received: &mut u64,
    shape: Shape,
    hide: Hide<'_>,
) -> Result<Answer, ReadFail> {
    let (head_only, upgrade, all) = (shape.head_only, shape.upgrade, shape.upstream_headers);
    loop {
        if !buf.is_empty() {
            match parse_response(buf, head_only, upgrade, all, hide) {
                Ok(Parsed::Answer(answer)) => return Ok(answer),
                Ok(Parsed::Interim) => continue,
                Ok(Parsed::Partial) if buf.len() > MAX_HEAD => {
                    return Err(ReadFail::Invalid("a response head over 64 KiB"));
                }
                Ok(Parsed::Partial) => {}
                Err(why) => return Err(ReadFail::Invalid(why)),
            }
        }
        match poll_fn(|cx| stream.poll_fill(buf, read_size, MAX_READ, cx)).await {
            Ok(0) => return Err(ReadFail::Closed(None)),
            Ok(n) => *received += n as u64,
            Err(e) => return Err(ReadFail::Closed(Some(e))),
        }
    }
}

/// The `Content-Length` fields of a head, as they are met.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Length {
    Absent,
    Is(u64),
    /// Not a number, or two that differ.
    Invalid,
}

impl Length {
    /// With one more `Content-Length` value.
    fn and(self, value: &[u8]) -> Self {
        let n = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        match (self, n) {
            (_, None) | (Length::Invalid, _) => Length::Invalid,
            (Length::Absent, Some(n)) => Length::Is(n),
            (Length::Is(m), Some(n)) if m == n => self,
            (Length::Is(_), Some(_)) => Length::Invalid,
        }
    }
}

#[allow(clippy::large_enum_variant)]
pub(crate) enum Parsed {
    Answer(Answer),
    /// A 1xx head was taken out of the buffer; read on.
    Interim,
    Partial,
}

/// Parses the response head at the start of `buf`; its bytes are taken out of `buf`, and the
/// fields kept for the client point into them (no map is made of them: they are copied to the
/// client's head as they came). With `all`, every field also goes into a map
/// ([`Answer::upstream_headers`]).
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    head_only: bool,
    upgrade: bool,
    all: bool,
    hide: Hide<'_>,
) -> Result<Parsed, &'static str> {
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err("a response head over 64 KiB");
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err("more than 128 header lines"),
        Err(_) => return Err("a malformed status line or header line"),
    };
    let code = res.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| "an invalid status")?;
    if status.is_informational() && !(code == 101 && upgrade) {
        if code == 101 {
            return Err("101 to a request that asked for no upgrade");
        }
        let _ = buf.split_to(len);
        return Ok(Parsed::Interim);
    }
    let version = match res.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let mut at = crate::scratch::Fields::take();
    at.extend(res.headers.iter().map(|h| {
        // Within the head, at most MAX_HEAD bytes.
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let (name, value) = (h.name.as_bytes(), h.value);
        [
            offset(name),
            name.len() as u32,
            offset(value),
            value.len() as u32,
        ]
    }));
    let head = buf.split_to(len).freeze();
    let field = |&[name_at, name_len, value_at, value_len]: &[u32; 4]| {
        let name = &head[name_at as usize..(name_at + name_len) as usize];
        let value = &head[value_at as usize..(value_at + value_len) as usize];
        (name, value)
    };
    let upstream_headers = all.then(|| {
        let mut map = Box::new(http::HeaderMap::with_capacity(at.len()));
        for f in at.iter() {
            let (name, value) = field(f);
            let value = head.slice_ref(value);
            if let (Ok(name), Ok(value)) = (
                crate::http1::field_name(name),
                HeaderValue::from_maybe_shared(value),
            ) {
                map.append(name, value);
            }
        }
        map
    });
    // The `Connection` tokens, split once: the connection's reuse and the fields they name.
    let named = Named::new(at.iter().filter_map(|f| {
        let (name, value) = field(f);
        name.eq_ignore_ascii_case(b"connection").then_some(value)
    }));
    // What the framing depends on, noted as the fields are sorted (no lookups after).
    // The last Transfer-Encoding value (where it lies in `head`).
    let mut last_te = None;
    let mut length = Length::Absent;
    let hide = hide.filter(|_| code != 101);
    at.retain(|f| {
        let (name, value) = field(f);
        if name.len() == 17 && name.eq_ignore_ascii_case(b"transfer-encoding") {
            last_te = Some(value);
        } else if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
            length = length.and(value);
        }
        !hide.is_some_and(|hide| hide(name, &named))
    });
    let mut keep_alive =
        !named.has(b"close") && (version == Version::HTTP_11 || named.has(b"keep-alive"));
    let mut drop_length = false;
    let body = if code == 101 {
        keep_alive = false;
        BodyKind::None
    } else if head_only || code == 204 || code == 304 {
        BodyKind::None
    } else if let Some(te) = last_te {
        // Transfer-Encoding wins over a Content-Length, which then must not reach the client.
        drop_length = length != Length::Absent;
        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") && version == Version::HTTP_11 {
            BodyKind::Chunked
        } else {
            keep_alive = false;
            BodyKind::Close
        }
    } else if length != Length::Absent {
        match length {
            Length::Is(0) => BodyKind::None,
            Length::Is(n) => BodyKind::Length(n),
            _ => return Err("an invalid Content-Length, or two that differ"),
        }
    } else {
        keep_alive = false;
        BodyKind::Close
    };
    if drop_length {
        at.retain(|f| !field(f).0.eq_ignore_ascii_case(b"content-length"));
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    // Room for what imbang adds (`Server`; `Connection: close` at `keepalive_requests`).
    parts.headers = crate::scratch::header_map(2);
    Ok(Parsed::Answer(Answer {
        head: parts,
        fields: RawFields::new(head, at),
        upstream_headers,
        body,
        keep_alive,
        head_len: len,
    }))
}

/// A response body read from the peer's connection by whoever polls it. Once it ends, the
/// connection is given back ([`PeerBody::into_idle`]) when it may carry another request.
#[derive(Debug)]
pub struct PeerBody {
    conn: Option<Conn>,
    decoder: Decoder,
    /// Delimited by the peer's close: its FIN is the end, not an error.
    until_close: bool,
    keep_alive: bool,
}

/// Why a response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum PeerBodyError {
    #[error("upstream prematurely closed connection while reading upstream")]
    Closed,
    #[error("upstream sent invalid chunked response while reading upstream")]
    Invalid,
    #[error("recv() failed ({}) while reading upstream", crate::error_log::errno_text(.0))]
    Io(io::Error),
}

impl PeerBody {
    pub fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) if !self.until_close => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }

    /// The connection, when the body was read to its end and nothing follows it (it is
    /// closed otherwise).
    pub fn take_idle(&mut self) -> Option<Conn> {
        let conn = self.conn.take()?;
        (self.keep_alive && self.decoder.is_done() && conn.buf.is_empty()).then_some(conn)
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, PeerBodyError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match self.decoder.decode(&mut conn.buf) {
                Decoded::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Decoded::Trailers(map) => return Poll::Ready(Some(Ok(Frame::trailers(map)))),
                Decoded::End => return Poll::Ready(None),
                Decoded::Invalid(_) => {
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(PeerBodyError::Invalid)));
                }
                Decoded::More => {
                    let Conn {
                        stream,
                        buf,
                        read_size,
                        ..
                    } = conn;
                    match ready!(stream.poll_fill(buf, read_size, MAX_READ, cx)) {
                        Ok(0) if self.until_close => {
                            self.decoder = Decoder::Done;
                            self.keep_alive = false;
                            return Poll::Ready(None);
                        }
                        Ok(0) => {
                            self.keep_alive = false;
                            return Poll::Ready(Some(Err(PeerBodyError::Closed)));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            self.keep_alive = false;
                            return Poll::Ready(Some(Err(PeerBodyError::Io(e))));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Real sockets on 127.0.0.1, so these check the kernel's behaviour as much as ours.
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
    use tokio::net::{TcpListener, TcpStream};

    const BODY: &[u8] = b"abc";

    async fn pair() -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (
            Conn::new(Stream::Plain(client.unwrap()), Duration::from_secs(5)),
            accepted.unwrap().0,
        )
    }

    const SHAPE: Shape = Shape {
        framing: RequestFraming::Length(3),
        head_only: false,
        http10: false,
        upgrade: false,
        upstream_headers: false,
    };

    fn post() -> (Scratch, UpstreamBody) {
        let head = request_head(&Method::POST, "/x?y=1", false, SHAPE.framing, |out| {
            put_field(out, b"host", b"peer")
        });
        (head, UpstreamBody::Full(Some(Bytes::from_static(BODY))))
    }

    const WIRE: &[u8] = b"POST /x?y=1 HTTP/1.1\r\nhost: peer\r\nContent-Length: 3\r\n\r\nabc";

    async fn exchange(
        conn: &mut Conn,
        (head, body): (Scratch, UpstreamBody),
    ) -> Result<Answer, Failed> {
        conn.exchange(&head, body, SHAPE, Duration::from_secs(5), None)
            .await
    }

    #[tokio::test]
    async fn a_request_goes_out_as_one_write_and_the_answer_comes_back_with_its_body() {
        let (mut conn, mut peer) = pair().await;
        let serve = async {
            let mut got = vec![0; WIRE.len()];
            peer.read_exact(&mut got).await.unwrap();
            peer.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 2\r\n\r\n")
                .await
                .unwrap();
            got
        };
        let (answer, got) = tokio::join!(exchange(&mut conn, post()), serve);
        assert_eq!(got, WIRE);
        let answer = answer.unwrap();
        assert_eq!(answer.head.status, 201);
        assert_eq!(answer.fields.get(b"x-a"), Some(&b"1"[..]));
        assert_eq!(answer.body, BodyKind::Chunked);
        assert!(answer.keep_alive);
        let mut body = conn.body(answer.body, answer.keep_alive);
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = poll_fn(|cx| body.poll_frame(cx)).await {
            match frame.unwrap().into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        assert_eq!(data, b"abc");
        assert_eq!(trailers.unwrap()["x-t"], "2");
        assert!(body.take_idle().is_some(), "the connection may be reused");
    }

    #[tokio::test]
    async fn a_body_delimited_by_the_close_ends_at_the_fin_and_is_not_reused() {
        let (mut conn, mut peer) = pair().await;
        let serve = async {
            peer.read_exact(&mut vec![0; WIRE.len()]).await.unwrap();
            peer.write_all(b"HTTP/1.0 200 OK\r\n\r\nall of it")
                .await
                .unwrap();
            drop(peer);
        };
        let (answer, ()) = tokio::join!(exchange(&mut conn, post()), serve);
        let answer = answer.unwrap();
        assert_eq!(answer.body, BodyKind::Close);
        let mut body = conn.body(answer.body, answer.keep_alive);
        let mut data = Vec::new();
        while let Some(frame) = poll_fn(|cx| body.poll_frame(cx)).await {
            data.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(data, b"all of it");
        assert!(body.take_idle().is_none());
    }

    #[tokio::test]
    async fn a_short_length_body_is_an_error_not_an_end() {
        let (mut conn, mut peer) = pair().await;
        let serve = async {
            peer.read_exact(&mut vec![0; WIRE.len()]).await.unwrap();
            peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
                .await
                .unwrap();
            drop(peer);
        };
        let (answer, ()) = tokio::join!(exchange(&mut conn, post()), serve);
        let answer = answer.unwrap();
        let mut body = conn.body(answer.body, answer.keep_alive);
        let first = poll_fn(|cx| body.poll_frame(cx)).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "short");
        let err = poll_fn(|cx| body.poll_frame(cx))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, PeerBodyError::Closed), "{err}");
    }

    #[tokio::test]
    async fn bad_heads_and_lengths_are_invalid() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let (mut conn, mut peer) = pair().await;
            let serve = async {
                peer.read_exact(&mut vec![0; WIRE.len()]).await.unwrap();
                peer.write_all(bad).await.unwrap();
                peer
            };
            let (answer, _peer) = tokio::join!(exchange(&mut conn, post()), serve);
            assert!(
                matches!(answer, Err(Failed::Invalid(_))),
                "{}: {answer:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// How a response head's fields decide its body's framing and the connection's reuse.
    #[test]
    fn framing_and_reuse_follow_the_head() {
        use BodyKind::*;
        let cases: &[(&[u8], bool, BodyKind, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                false,
                Length(3),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nContent-Length:  3 \r\n\r\n",
                false,
                Length(3),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                None,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: Keep-Alive, close\r\n\r\n",
                false,
                Length(3),
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                false,
                Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Close,
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Close,
                false,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", false, Close, false),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
                false,
                Length(3),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
                false,
                Length(3),
                true,
            ),
            (
                b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
                false,
                None,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                true,
                None,
                true,
            ),
        ];
        for &(raw, head_only, body, keep_alive) in cases {
            let mut buf = BytesMut::from(raw);
            let Ok(Parsed::Answer(answer)) =
                parse_response(&mut buf, head_only, false, false, Option::None)
            else {
                panic!("{}: not parsed", String::from_utf8_lossy(raw));
            };
            let what = String::from_utf8_lossy(raw);
            assert_eq!(
                (answer.body, answer.keep_alive),
                (body, keep_alive),
                "{what}"
            );
            // A Content-Length beside Transfer-Encoding never reaches the client.
            if body == Chunked {
                assert!(!answer.fields.has(b"content-length"), "{what}");
            }
        }
    }

    /// Fields the caller hides are left out of the map, after their say on the framing and the
    /// connection's reuse; a `101`'s fields are all kept.
    #[test]
    fn hidden_fields_are_left_out_after_framing_is_read() {
        let hide = |name: &[u8], named: &Named<'_>| {
            name.eq_ignore_ascii_case(b"server")
                || name.eq_ignore_ascii_case(b"connection")
                || name.eq_ignore_ascii_case(b"transfer-encoding")
                || named.has(name)
        };
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nServer: peer\r\nX-Gone: 1\r\nTransfer-Encoding: chunked\r\n\
               Connection: close, X-Gone\r\nX-Kept: 2\r\n\r\n"[..],
        );
        let Ok(Parsed::Answer(answer)) = parse_response(&mut buf, false, false, false, Some(&hide))
        else {
            panic!("not parsed");
        };
        assert_eq!((answer.body, answer.keep_alive), (BodyKind::Chunked, false));
        let names: Vec<&[u8]> = answer.fields.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"X-Kept"[..]]);
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
        );
        let Ok(Parsed::Answer(answer)) = parse_response(&mut buf, false, true, false, Some(&hide))
        else {
            panic!("101 not parsed");
        };
        assert_eq!(answer.fields.len(), 2);
    }

    #[tokio::test]
    async fn a_peer_closing_with_the_request_unread_resets_the_connection() {
        let (mut conn, peer) = pair().await;
        let serve = async {
            peer.peek(&mut [0; 1]).await.unwrap(); // it arrived; nothing is read
            drop(peer);
        };
        let (answer, ()) = tokio::join!(exchange(&mut conn, post()), serve);
        let Err(Failed::Broken(broken)) = answer else {
            panic!("{answer:?}")
        };
        assert!(broken.reset, "{broken:?}");
        assert!(!broken.answered);
    }

    #[tokio::test]
    async fn a_peer_that_read_the_request_and_closed_sends_a_plain_fin() {
        let (mut conn, mut peer) = pair().await;
        let serve = async {
            peer.read_exact(&mut vec![0; WIRE.len()]).await.unwrap();
            drop(peer);
        };
        let (answer, ()) = tokio::join!(exchange(&mut conn, post()), serve);
        let Err(Failed::Broken(broken)) = answer else {
            panic!("{answer:?}")
        };
        assert!(!broken.reset, "{broken:?}");
        assert!(broken.error.is_none());
        assert!(!broken.answered);
    }

    #[tokio::test]
    async fn a_request_sent_to_a_connection_the_peer_closed_is_reset_after_the_fin() {
        // The keep-alive race: the peer closed an idle connection; the request arrives after.
        let (mut conn, peer) = pair().await;
        drop(peer);
        conn.stream.tcp().ready(Interest::READABLE).await.unwrap();
        assert!(!conn.is_reusable(), "the FIN is seen before reuse");
        let answer = exchange(&mut conn, post()).await;
        match answer {
            Err(Failed::Broken(broken)) => assert!(broken.reset, "{broken:?}"),
            Err(Failed::NotSent(..)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_partial_answer_counts_as_answered() {
        let (mut conn, mut peer) = pair().await;
        let serve = async {
            peer.read_exact(&mut vec![0; WIRE.len()]).await.unwrap();
            peer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            drop(peer);
        };
        let (answer, ()) = tokio::join!(exchange(&mut conn, post()), serve);
        let Err(Failed::Broken(broken)) = answer else {
            panic!("{answer:?}")
        };
        assert!(broken.answered);
        assert!(!broken.reset);
    }

    #[tokio::test]
    async fn no_answer_within_the_read_timeout_is_a_timeout() {
        let (mut conn, _peer) = pair().await;
        let (head, body) = post();
        let answer = conn
            .exchange(&head, body, SHAPE, Duration::from_millis(50), None)
            .await;
        assert!(matches!(answer, Err(Failed::ReadTimeout)), "{answer:?}");
    }
}
