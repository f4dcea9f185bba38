//! Writing a response to the client: the head encoded once into one buffer, sent together with
//! the first body bytes when they are already there (one `writev`), then the body as it comes,
//! chunked when its length is unknown. A write that stays blocked `send_timeout` fails.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::proxy::ResponseBody;

/// How the response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (a body of unknown length to an HTTP/1.0 client, or with
    /// `chunked_transfer_encoding off`).
    Close,
}

/// What the request said that shapes the response.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub head_request: bool,
    pub http10: bool,
    /// The connection may stay open after this response (before looking at the response).
    pub keep_alive: bool,
}

/// Chooses the body's framing and whether the connection stays open.
pub fn framing(response: &Response<ResponseBody>, shape: Shape) -> (BodyFraming, bool) {
    let status = response.status();
    // One walk over the fields rather than a lookup of each (most responses have neither).
    let mut keep_alive = shape.keep_alive;
    let mut declared = None;
    let mut lengths = 0;
    let mut field = |name: &[u8], value: &[u8]| {
        if name.eq_ignore_ascii_case(b"connection") {
            keep_alive &= !super::parse::value_tokens(value).0;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if lengths == 1 {
                declared = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
            }
        }
    };
    // The fields imbang set. A peer's own fields (the body's) need no look: its `Connection`
    // never reaches the client (hop-by-hop), and its `Content-Length` is the body's exact size
    // (`size_hint`, below), the length the head was parsed with.
    for (name, value) in response.headers() {
        field(name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || shape.head_request
    {
        BodyFraming::None
    } else if let Some(n) = declared {
        BodyFraming::Length(n)
    } else if let Some(n) = response.body().size_hint().exact() {
        BodyFraming::Length(n)
    } else if !shape.http10 && response.body().may_chunk() {
        BodyFraming::Chunked
    } else {
        keep_alive = false;
        BodyFraming::Close
    };
    (framing, keep_alive)
}

/// Encodes the status line and the fields, in nginx's order: `Server`, `Date`, the other
/// fields imbang set (a response of its own: `Content-Type`, `Location`), the fields as spelled
/// (the peer's as it sent them, then `add_header`'s), the framing field and `Connection`. The
/// names imbang writes are spelled as nginx spells them.
pub fn encode_head(
    out: &mut Vec<u8>,
    response: &Response<ResponseBody>,
    framing: BodyFraming,
    keep_alive: bool,
    shape: Shape,
) {
    let status = response.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    let headers = response.headers();
    let spelled = response.body().fields();
    let mut has_connection = false;
    let mut has_length = false;
    // A chunked body's length is not said (a field imbang set said it; a peer's Content-Length
    // beside its Transfer-Encoding was dropped as its head was read).
    let skip = |name: &HeaderName| {
        name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && framing == BodyFraming::Chunked)
    };
    // A walk over the few fields imbang set, not lookups (which hash the name).
    let mut has_date = false;
    for (name, value) in headers {
        if name == header::SERVER {
            out.extend_from_slice(b"Server: ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        has_date |= name == header::DATE;
    }
    // A peer's `Date` only comes through with `proxy_pass_header Date`.
    if !has_date && !spelled.is_some_and(|f| f.has(b"date")) {
        out.extend_from_slice(b"Date: ");
        append_date(out);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        has_length |= name == header::CONTENT_LENGTH;
        if skip(name) || name == header::SERVER {
            continue;
        }
        has_connection |= name == header::CONNECTION;
        super::append_name(out, name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(fields) = spelled {
        has_length |= fields.encode(out);
    }
    match framing {
        BodyFraming::Length(n) if !has_length => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        // HEAD: the length the GET would have, when imbang made the body itself.
        BodyFraming::None if shape.head_request && !has_length => {
            if let Some(n) = response.body().size_hint().exact().filter(|&n| n > 0) {
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(itoa(n, &mut [0; 20]));
                out.extend_from_slice(b"\r\n");
            }
        }
        _ => {}
    }
    if status != StatusCode::SWITCHING_PROTOCOLS && !has_connection {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if shape.http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into the end of `buf`.
pub(crate) fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

thread_local! {
    /// `Date`, formatted once a second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

thread_local! {
    /// `Date` as a field value (HTTP/2 answers), made once a second per thread: a clone is a
    /// reference count.
    static DATE_VALUE: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((0, HeaderValue::from_static(""))) };
}

/// `Date` as a field value, for an HTTP/2 answer.
pub fn date_value() -> HeaderValue {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE_VALUE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let mut text = Vec::with_capacity(29);
            append_date(&mut text);
            if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(text)) {
                *cached = (secs, value);
            }
        }
        cached.1.clone()
    })
}

fn append_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            } else {
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

/// `send(2)` flags of a write whose last partial segment waits for the `shutdown` that follows.
#[cfg(any(target_os = "linux", target_os = "android"))]
const HOLD: i32 = nix::libc::MSG_MORE | nix::libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const HOLD: i32 = 0;

/// Writes all of `bufs`; a write blocked for `send_timeout` fails with `TimedOut`. With `hold`,
/// the kernel keeps a last partial segment (`MSG_MORE`) for the caller's `shutdown`.
async fn write_all(
    stream: &TcpStream,
    mut bufs: &mut [IoSlice<'_>],
    send_timeout: Duration,
    hold: bool,
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let written = match hold {
            false => stream.try_write_vectored(bufs),
            true => stream.try_io(Interest::WRITABLE, || {
                SockRef::from(stream).send_vectored_with_flags(bufs, HOLD)
            }),
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if send_timeout.is_zero() {
                    stream.writable().await?;
                } else {
                    tokio::time::timeout(send_timeout, stream.writable())
                        .await
                        .map_err(|_| {
                            io::Error::new(
                                io::ErrorKind::TimedOut,
                                "client timed out (110: Connection timed out) while sending response to client",
                            )
                        })??;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Nagle's algorithm on a client socket, turned off (`TCP_NODELAY`) before the connection's
/// second write, as nginx turns it off only for keep-alive and streamed responses: a connection
/// answered in one write (a new connection per request) never pays for the `setsockopt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nagle {
    Unwritten,
    WrittenOnce,
    Off,
}

/// [`write_all`], turning Nagle off first if this is not the connection's first write. `last`:
/// these are the last bytes the connection sends (it closes after this response); they are held
/// and the write side shut at once, so the end of the response and the FIN leave in one segment
/// (HAProxy's order: shutdown, then close). A client reading to the end then answers both with
/// one ACK, folded into its own FIN: 9 segments per exchange instead of 11 (measured with
/// `bench/run.sh`'s scenario (b), /proc/net/snmp), and no FIN sent at `close` time.
async fn send(
    stream: &TcpStream,
    bufs: &mut [IoSlice<'_>],
    send_timeout: Duration,
    nagle: &mut Nagle,
    last: bool,
) -> io::Result<()> {
    if !bufs.iter().all(|b| b.is_empty()) {
        match *nagle {
            Nagle::Unwritten => *nagle = Nagle::WrittenOnce,
            Nagle::WrittenOnce => {
                let _ = stream.set_nodelay(true);
                *nagle = Nagle::Off;
            }
            Nagle::Off => {}
        }
        write_all(stream, bufs, send_timeout, last).await?;
    }
    if last {
        let _ = SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    }
    Ok(())
}

/// Why a response could not be written to the end: the connection must close.
#[derive(Debug)]
pub enum WriteError {
    Io(io::Error),
    /// The body failed (the peer broke off, or timed out); the client sees the close.
    Body,
    /// The body gave more or fewer bytes than its `Content-Length` said.
    Length,
}

/// Writes the head and the body. On any error the caller closes the connection, so a client
/// never takes a cut body for a complete one. Without `keep_alive` the write side is shut after
/// the last byte (see [`send`]).
pub async fn response(
    stream: &TcpStream,
    mut response: Response<ResponseBody>,
    framing: BodyFraming,
    keep_alive: bool,
    shape: Shape,
    send_timeout: Duration,
    nagle: &mut Nagle,
) -> Result<(), WriteError> {
    let fields = response.headers().len() + response.body().fields().map_or(0, |f| f.len());
    let mut head = crate::scratch::Scratch::new(256 + fields * 48);
    encode_head(&mut head, &response, framing, keep_alive, shape);
    crate::scratch::return_header_map(std::mem::take(response.headers_mut()));
    response.body_mut().drop_fields();
    let body = response.body_mut();
    body.head_written(head.len());
    let close = !keep_alive;
    if framing == BodyFraming::None {
        return send(
            stream,
            &mut [IoSlice::new(&head)],
            send_timeout,
            nagle,
            close,
        )
        .await
        .map_err(WriteError::Io);
    }
    if let (BodyFraming::Length(n), Some(file)) = (framing, body.file_mut()) {
        if file.sendfile && file.len() == n {
            return send_file(stream, &head, body, send_timeout, nagle, close).await;
        }
    }
    let mut left = match framing {
        BodyFraming::Length(n) => Some(n),
        _ => None,
    };
    let chunked = framing == BodyFraming::Chunked;
    // The first frame goes out with the head when it is already there.
    let mut next =
        match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(frame) => Some(frame),
            Poll::Pending => {
                send(
                    stream,
                    &mut [IoSlice::new(&head)],
                    send_timeout,
                    nagle,
                    false,
                )
                .await
                .map_err(WriteError::Io)?;
                head.clear();
                None
            }
        };
    let mut trailers = None;
    // Chunk sizes and line ends written (`$bytes_sent` counts them as nginx does).
    let mut framing = 0;
    // Set when the last byte of a sized body went out with the FIN.
    let mut shut = false;
    loop {
        let frame = match next.take() {
            Some(frame) => frame,
            None => std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await,
        };
        match frame {
            None => break,
            Some(Err(_)) => return Err(WriteError::Body),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if let Some(left) = left.as_mut() {
                        if data.len() as u64 > *left {
                            return Err(WriteError::Length);
                        }
                        *left -= data.len() as u64;
                    }
                    // A sized body's last bytes end the response: on a closing connection the
                    // FIN goes with them (the body's own end is still read, below).
                    let last = close && left == Some(0) && !shut;
                    if chunked && !data.is_empty() {
                        // `{len:x}\r\n` before the data, `\r\n` after it.
                        framing +=
                            (usize::BITS - data.len().leading_zeros()).div_ceil(4) as usize + 4;
                    }
                    write_data(stream, &head, data, chunked, send_timeout, nagle, last).await?;
                    shut |= last;
                    head.clear();
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
        }
    }
    if left.is_some_and(|n| n > 0) {
        // The body ended short of its length: flush what there is, then close.
        let _ = send(
            stream,
            &mut [IoSlice::new(&head)],
            send_timeout,
            nagle,
            false,
        )
        .await;
        return Err(WriteError::Length);
    }
    let mut end = head;
    let unsent_head = end.len();
    if chunked {
        end.extend_from_slice(b"0\r\n");
        if let Some(trailers) = trailers {
            for (name, value) in &trailers {
                end.extend_from_slice(name.as_str().as_bytes());
                end.extend_from_slice(b": ");
                end.extend_from_slice(value.as_bytes());
                end.extend_from_slice(b"\r\n");
            }
        }
        end.extend_from_slice(b"\r\n");
        body.framing_written(framing + end.len() - unsent_head);
    }
    send(
        stream,
        &mut [IoSlice::new(&end)],
        send_timeout,
        nagle,
        close && !shut,
    )
    .await
    .map_err(WriteError::Io)
}

/// `sendfile on`: the head (held with `MSG_MORE`, so it leaves with the file's first bytes),
/// then the file's spans with `sendfile(2)`: the kernel copies from the page cache to the
/// socket, the bytes never pass through imbang. A multipart range answer's part headers are
/// written between the spans.
async fn send_file(
    stream: &TcpStream,
    head: &[u8],
    body: &mut ResponseBody,
    send_timeout: Duration,
    nagle: &mut Nagle,
    close: bool,
) -> Result<(), WriteError> {
    match *nagle {
        Nagle::Unwritten => *nagle = Nagle::WrittenOnce,
        Nagle::WrittenOnce => {
            let _ = stream.set_nodelay(true);
            *nagle = Nagle::Off;
        }
        Nagle::Off => {}
    }
    let mut pending: Vec<u8> = head.to_vec();
    while let Some(file) = body.file_mut() {
        let span = match file.front() {
            None => break,
            Some(crate::files::body::Part::Bytes(b)) => Err(b.clone()),
            Some(&crate::files::body::Part::File { offset, len }) => Ok((offset, len)),
        };
        let n = match span {
            Err(bytes) => {
                pending.extend_from_slice(&bytes);
                bytes.len() as u64
            }
            Ok((offset, len)) => {
                if !pending.is_empty() {
                    write_all(stream, &mut [IoSlice::new(&pending)], send_timeout, true)
                        .await
                        .map_err(WriteError::Io)?;
                    pending.clear();
                }
                sendfile_all(stream, file.file(), offset, len, send_timeout).await?
            }
        };
        file.sent(n);
        body.count_sent(n);
    }
    if !pending.is_empty() {
        write_all(stream, &mut [IoSlice::new(&pending)], send_timeout, false)
            .await
            .map_err(WriteError::Io)?;
    }
    if close {
        let _ = SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    }
    Ok(())
}

/// Sends `len` bytes of `file` from `offset` with `sendfile(2)`; a write blocked for
/// `send_timeout` fails, a file that shrank ends the response short (the caller closes).
async fn sendfile_all(
    stream: &TcpStream,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    send_timeout: Duration,
) -> Result<u64, WriteError> {
    let mut off = offset as nix::libc::off_t;
    let mut left = len;
    while left > 0 {
        // At most 2 GiB minus a page per call (Linux's own limit), in 1 MiB steps so that one
        // fast client does not hold its thread for long.
        let count = left.min(1 << 20) as usize;
        let sent = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile(stream, file, Some(&mut off), count)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => return Err(WriteError::Length),
            Ok(n) => left -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ready = stream.writable();
                if send_timeout.is_zero() {
                    ready.await.map_err(WriteError::Io)?;
                } else {
                    tokio::time::timeout(send_timeout, ready)
                        .await
                        .map_err(|_| {
                            WriteError::Io(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "client timed out (110: Connection timed out) while sending response to client",
                            ))
                        })?
                        .map_err(WriteError::Io)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WriteError::Io(e)),
        }
    }
    Ok(len)
}

async fn write_data(
    stream: &TcpStream,
    head: &[u8],
    data: Bytes,
    chunked: bool,
    send_timeout: Duration,
    nagle: &mut Nagle,
    last: bool,
) -> Result<(), WriteError> {
    let result = if chunked && !data.is_empty() {
        let mut size = [0u8; 18];
        let n = chunk_header(data.len(), &mut size);
        send(
            stream,
            &mut [
                IoSlice::new(head),
                IoSlice::new(&size[..n]),
                IoSlice::new(&data),
                IoSlice::new(b"\r\n"),
            ],
            send_timeout,
            nagle,
            last,
        )
        .await
    } else {
        send(
            stream,
            &mut [IoSlice::new(head), IoSlice::new(&data)],
            send_timeout,
            nagle,
            last,
        )
        .await
    };
    result.map_err(WriteError::Io)
}

/// `{len:x}\r\n` into `out`; returns its length.
/// `<hex size>\r\n` into `out`; its length.
pub(crate) fn chunk_header(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let d = digits.len() - i;
    out[..d].copy_from_slice(&digits[i..]);
    out[d..d + 2].copy_from_slice(b"\r\n");
    d + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(response: Response<ResponseBody>, shape: Shape) -> String {
        let (framing, keep_alive) = framing(&response, shape);
        let mut out = Vec::new();
        encode_head(&mut out, &response, framing, keep_alive, shape);
        String::from_utf8(out).unwrap()
    }

    const GET11: Shape = Shape {
        head_request: false,
        http10: false,
        keep_alive: true,
    };

    #[test]
    fn known_lengths_get_content_length_and_unknown_ones_chunked() {
        let text = head_of(Response::new(ResponseBody::full("hello")), GET11);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 5\r\n"), "{text}");
        assert!(text.contains("\r\nDate: "), "{text}");
        assert!(!text.contains("Connection"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        let http10 = Shape {
            http10: true,
            ..GET11
        };
        let text = head_of(Response::new(ResponseBody::full("hello")), http10);
        assert!(text.contains("Connection: keep-alive\r\n"), "{text}");
    }

    #[test]
    fn no_body_statuses_and_head_get_no_framing() {
        let mut r = Response::new(ResponseBody::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        let (f, _) = framing(&r, GET11);
        assert_eq!(f, BodyFraming::None);
        let head = Shape {
            head_request: true,
            ..GET11
        };
        let text = head_of(Response::new(ResponseBody::full("hello")), head);
        assert!(text.contains("Content-Length: 5\r\n"), "{text}");
    }

    #[test]
    fn connection_close_in_the_response_ends_keep_alive() {
        let mut r = Response::new(ResponseBody::full("x"));
        r.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        let (_, keep_alive) = framing(&r, GET11);
        assert!(!keep_alive);
    }

    #[test]
    fn chunk_headers_are_hex() {
        let mut out = [0u8; 18];
        let n = chunk_header(0x1a2b, &mut out);
        assert_eq!(&out[..n], b"1a2b\r\n");
        let n = chunk_header(1, &mut out);
        assert_eq!(&out[..n], b"1\r\n");
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(1234567, &mut [0; 20]), b"1234567");
    }
}
