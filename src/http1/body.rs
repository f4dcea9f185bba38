//! A client's request body, read straight from its connection by whoever polls it (the task
//! writing it to a peer), and handed back to the connection when it ends.
//!
//! The decoder is strict where lenient parsers disagree: chunk sizes are hex digits only (at
//! most 15 of them), every line ends in CRLF, and trailers are parsed as header fields.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::parse::Framing;

/// How much a read asks for at least.
pub(crate) const READ_CHUNK: usize = 8 * 1024;
/// Longest chunk-size line (with extensions) and largest trailer section accepted.
const CHUNK_LINE_LIMIT: usize = 4 * 1024;
const TRAILER_LIMIT: usize = 8 * 1024;
/// `HTTP/1.1 100 Continue`, sent when the body is first wanted.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request body's read side: the client's socket and the bytes read but not yet used.
#[derive(Debug)]
pub struct Reader {
    pub stream: Arc<TcpStream>,
    pub buf: BytesMut,
}

impl Reader {
    /// Reads what is available into the buffer. `Ready(Ok(0))` is end of stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        poll_fill(&self.stream, &mut self.buf, cx)
    }
}

/// Reads what `stream` has into `buf`, growing it when little room is left. `Ready(Ok(0))` is
/// end of stream.
pub(crate) fn poll_fill(
    stream: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let room = buf.capacity() - buf.len();
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Ok(n) if n > 0 && n < room => {
                drained(stream);
                return Poll::Ready(Ok(n));
            }
            r => return Poll::Ready(r),
        }
    }
}

/// A read returned less than it asked for: the socket's receive queue is empty, so forget
/// its readiness without the `EAGAIN` read that would otherwise tell tokio (nginx does the
/// same with edge-triggered epoll). Data that arrived meanwhile raised a new event, which
/// this does not clear.
pub(crate) fn drained(stream: &TcpStream) {
    let _ = stream.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
}

/// The state of the body's decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk's data, this many bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::None => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::ChunkSize,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// More bytes are needed.
    More,
    Invalid(&'static str),
}

impl Decoder {
    /// Decodes what `buf` holds; data frames share its bytes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Decoded {
        loop {
            match *self {
                Self::Done => return Decoded::End,
                Self::Length(left) => {
                    if buf.is_empty() {
                        return Decoded::More;
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    *self = match left - n as u64 {
                        0 => Self::Done,
                        rest => Self::Length(rest),
                    };
                    return Decoded::Data(data);
                }
                Self::ChunkSize => {
                    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                        return if buf.len() > CHUNK_LINE_LIMIT {
                            Decoded::Invalid("client sent too long chunk size line")
                        } else {
                            Decoded::More
                        };
                    };
                    if lf == 0 || buf[lf - 1] != b'\r' || lf > CHUNK_LINE_LIMIT {
                        return Decoded::Invalid("client sent invalid chunked body");
                    }
                    let Some(size) = chunk_size(&buf[..lf - 1]) else {
                        return Decoded::Invalid("client sent invalid chunked body");
                    };
                    buf.advance(lf + 1);
                    *self = if size == 0 {
                        Self::Trailers
                    } else {
                        Self::ChunkData(size)
                    };
                }
                Self::ChunkData(left) => {
                    if buf.is_empty() {
                        return Decoded::More;
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    *self = match left - n as u64 {
                        0 => Self::ChunkEnd,
                        rest => Self::ChunkData(rest),
                    };
                    return Decoded::Data(data);
                }
                Self::ChunkEnd => {
                    if buf.len() < 2 {
                        return Decoded::More;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Decoded::Invalid("client sent invalid chunked body");
                    }
                    buf.advance(2);
                    *self = Self::ChunkSize;
                }
                Self::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Self::Done;
                        return Decoded::End;
                    }
                    if buf.len() < 2 {
                        return Decoded::More;
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut map = HeaderMap::new();
                            for f in fields.iter() {
                                let (Ok(name), Ok(value)) = (
                                    http::HeaderName::from_bytes(f.name.as_bytes()),
                                    http::HeaderValue::from_bytes(f.value),
                                ) else {
                                    return Decoded::Invalid("client sent invalid trailer");
                                };
                                map.append(name, value);
                            }
                            if !buf[..len].ends_with(b"\r\n\r\n") {
                                return Decoded::Invalid("client sent invalid trailer");
                            }
                            buf.advance(len);
                            *self = Self::Done;
                            return Decoded::Trailers(map);
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= TRAILER_LIMIT => {
                            return Decoded::More;
                        }
                        _ => return Decoded::Invalid("client sent invalid trailer"),
                    }
                }
            }
        }
    }
}

/// A chunk-size line without its CRLF: hex digits, then optional `;` extensions.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 15 {
        return None;
    }
    let rest = &line[digits..];
    let ext_ok = match rest.iter().position(|&b| b != b' ' && b != b'\t') {
        None => true,
        Some(i) => {
            rest[i] == b';'
                && rest[i..]
                    .iter()
                    .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        }
    };
    if !ext_ok {
        return None;
    }
    let text = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(text, 16).ok()
}

/// What a body and its connection share: the read side comes home through it, and it orders
/// a `100 Continue` against the response head.
#[derive(Debug, Default)]
pub struct Exchange {
    state: AtomicU8,
    home: Mutex<Option<(Reader, Decoder)>>,
}

const IDLE: u8 = 0;
const CONTINUE_SENDING: u8 = 1;
const CONTINUE_SENT: u8 = 2;
const RESPONDING: u8 = 3;

impl Exchange {
    /// The response head is about to be written: no `100 Continue` may start after this. Waits
    /// out one being written at this instant on another thread (a few bytes, no await).
    pub fn start_response(&self) {
        loop {
            match self.state.swap(RESPONDING, Ordering::AcqRel) {
                CONTINUE_SENDING => {
                    self.state.store(CONTINUE_SENDING, Ordering::Release);
                    std::thread::yield_now();
                }
                _ => return,
            }
        }
    }

    /// The read side, if the body gave it back, with where its decoding stopped.
    pub fn take_home(&self) -> Option<(Reader, Decoder)> {
        self.home.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn send_home(&self, reader: Reader, decoder: Decoder) {
        *self.home.lock().unwrap_or_else(|p| p.into_inner()) = Some((reader, decoder));
    }
}

/// The body of a client's request.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Box<Streaming>>,
    /// The body of a request that came over HTTP/2.
    h2: Option<Box<H2Body>>,
    /// The body of an HTTP/1.1 request over TLS (read by hyper: `crate::tls`).
    hyper: Option<Box<hyper::body::Incoming>>,
}

/// An HTTP/2 request's DATA frames, then its trailers. The window is given back as each chunk
/// is taken (the peer's writes are what hold a client that sends faster than it reads).
#[derive(Debug)]
struct H2Body {
    recv: h2::RecvStream,
    /// Its `Content-Length`, less what has been read (h2 holds the frames to it).
    left: Option<u64>,
    data_done: bool,
}

#[derive(Debug)]
struct Streaming {
    reader: Option<Reader>,
    decoder: Decoder,
    exchange: Arc<Exchange>,
    expect_continue: bool,
    framing: Framing,
}

/// Why a client's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("client prematurely closed connection")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Http2(#[from] h2::Error),
    #[error("{0}")]
    Hyper(#[from] hyper::Error),
}

impl RequestBody {
    pub fn empty() -> Self {
        Self {
            inner: None,
            h2: None,
            hyper: None,
        }
    }

    /// The body of a request read by hyper's HTTP/1 server (TLS connections).
    pub(crate) fn hyper(body: hyper::body::Incoming) -> Self {
        if body.is_end_stream() {
            return Self::empty();
        }
        Self {
            inner: None,
            h2: None,
            hyper: Some(Box::new(body)),
        }
    }

    /// The body of an HTTP/2 request whose head had `headers`.
    pub fn h2(recv: h2::RecvStream, headers: &http::HeaderMap) -> Self {
        if recv.is_end_stream() {
            return Self::empty();
        }
        let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
        let left = match (lengths.next(), lengths.next()) {
            (Some(v), None) => std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.parse().ok()),
            _ => None,
        };
        Self {
            inner: None,
            h2: Some(Box::new(H2Body {
                recv,
                left,
                data_done: false,
            })),
            hyper: None,
        }
    }

    pub(crate) fn streaming(
        reader: Reader,
        framing: Framing,
        expect_continue: bool,
        exchange: Arc<Exchange>,
    ) -> Self {
        Self {
            inner: Some(Box::new(Streaming {
                reader: Some(reader),
                decoder: Decoder::new(framing),
                exchange,
                expect_continue,
                framing,
            })),
            h2: None,
            hyper: None,
        }
    }
}

impl Streaming {
    fn go_home(&mut self) {
        if let Some(reader) = self.reader.take() {
            self.exchange.send_home(reader, self.decoder);
        }
    }

    /// `100 Continue`, unless the response has started (then the client learns from it).
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(reader) = self.reader.as_ref() else {
            return Poll::Ready(());
        };
        if !self.expect_continue || !reader.buf.is_empty() {
            self.expect_continue = false;
            return Poll::Ready(());
        }
        let stream = &reader.stream;
        if stream.poll_write_ready(cx).is_pending() {
            return Poll::Pending;
        }
        self.expect_continue = false;
        let state = &self.exchange.state;
        if state
            .compare_exchange(IDLE, CONTINUE_SENDING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Poll::Ready(());
        }
        // 25 bytes into an empty send buffer: one write takes them all, or none.
        let _ = stream.try_write(CONTINUE);
        state.store(CONTINUE_SENT, Ordering::Release);
        Poll::Ready(())
    }
}

impl H2Body {
    /// A `RST_STREAM` from the client, even `NO_ERROR` (RFC 9113 §8.1: it stops sending once
    /// answered), fails the body: a peer must not take a cut-off upload as complete.
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = self.left.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.go_home();
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(body) = self.h2.as_mut() {
            return body.poll_frame(cx);
        }
        if let Some(body) = self.hyper.as_mut() {
            return Pin::new(&mut **body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::from)));
        }
        let Some(s) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        ready!(s.poll_continue(cx));
        loop {
            let Some(reader) = s.reader.as_mut() else {
                return Poll::Ready(None);
            };
            match s.decoder.decode(&mut reader.buf) {
                Decoded::Data(data) => {
                    if s.decoder.is_done() {
                        s.go_home();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::Trailers(map) => {
                    s.go_home();
                    return Poll::Ready(Some(Ok(Frame::trailers(map))));
                }
                Decoded::End => {
                    s.go_home();
                    return Poll::Ready(None);
                }
                Decoded::Invalid(why) => return Poll::Ready(Some(Err(BodyError::Invalid(why)))),
                Decoded::More => match ready!(reader.poll_fill(cx)) {
                    Ok(0) => return Poll::Ready(Some(Err(BodyError::Closed))),
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(body) = &self.h2 {
            return body.recv.is_end_stream();
        }
        if let Some(body) = &self.hyper {
            return body.is_end_stream();
        }
        self.inner
            .as_ref()
            .is_none_or(|s| s.reader.is_none() || s.decoder.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(body) = &self.h2 {
            return body
                .left
                .map_or_else(SizeHint::default, SizeHint::with_exact);
        }
        if let Some(body) = &self.hyper {
            return body.size_hint();
        }
        match self.inner.as_ref().map(|s| (s.framing, s.decoder)) {
            None => SizeHint::with_exact(0),
            Some((Framing::Length(n), Decoder::Length(left))) if n == left => {
                SizeHint::with_exact(n)
            }
            Some((_, Decoder::Length(left))) => SizeHint::with_exact(left),
            Some((_, Decoder::Done)) => SizeHint::with_exact(0),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `raw` fed in pieces of `step` bytes; the data, the trailers, or the error.
    fn decode_all(
        framing: Framing,
        raw: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, usize), &'static str> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf) {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((data, trailers, buf.len() + raw.len() - fed)),
                Decoded::Invalid(why) => return Err(why),
                Decoded::More => {
                    if fed == raw.len() {
                        return Err("incomplete");
                    }
                    let n = step.min(raw.len() - fed);
                    buf.extend_from_slice(&raw[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_arrive() {
        let raw = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, raw.len()] {
            let (data, trailers, rest) = decode_all(Framing::Chunked, raw, step).unwrap();
            assert_eq!(data, b"hello world", "step {step}");
            assert!(trailers.is_none());
            assert_eq!(rest, 4, "the next request's bytes stay (step {step})");
        }
    }

    #[test]
    fn trailers_are_parsed_as_fields() {
        let raw = b"3\r\nabc\r\n0\r\nX-Sum: 42\r\nX-Other: a b\r\n\r\n";
        for step in [1, 5, raw.len()] {
            let (data, trailers, rest) = decode_all(Framing::Chunked, raw, step).unwrap();
            assert_eq!(data, b"abc");
            let t = trailers.expect("trailers");
            assert_eq!(t["x-sum"], "42");
            assert_eq!(t["x-other"], "a b");
            assert_eq!(rest, 0);
        }
    }

    #[test]
    fn malformed_chunks_are_invalid() {
        let bad: &[&[u8]] = &[
            b"zz\r\nabc\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"3 junk\r\nabc\r\n0\r\n\r\n",
            b"0\r\nBad Trailer\r\n\r\n",
        ];
        for raw in bad {
            assert!(
                decode_all(Framing::Chunked, raw, raw.len()).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let long_line = format!("1;{}\r\n", "e".repeat(CHUNK_LINE_LIMIT + 10));
        assert!(decode_all(Framing::Chunked, long_line.as_bytes(), 100).is_err());
    }

    #[test]
    fn extensions_and_upper_case_hex_are_fine() {
        let (data, _, _) =
            decode_all(Framing::Chunked, b"A ; ext\r\n0123456789\r\n0\r\n\r\n", 4).unwrap();
        assert_eq!(data, b"0123456789");
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let (data, _, rest) = decode_all(Framing::Length(5), b"helloGET /", 3).unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(rest, 5);
    }
}
