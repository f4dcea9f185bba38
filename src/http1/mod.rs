//! imbang's HTTP/1.1 server side: one task per client connection reading request heads,
//! handing each request to [`proxy::handle`], and writing the response.
//!
//! Purpose-built rather than hyper's server (bench/RESULTS.md has the measurements): an idle
//! keep-alive connection holds no buffer at all, only its socket and a small task, because the
//! loop waits for readability before it allocates one (hyper keeps an 8 KiB read buffer and its
//! dispatcher per connection, ~17 KiB measured); the response head goes out with the first body
//! bytes in one `writev`; and request framing is checked as strictly as nginx checks it
//! ([`parse`]), so a request two parsers could read differently is refused, not guessed at.
//!
//! The request body is read from the socket by whoever polls it (the task sending it to a
//! peer): the read side moves into the [`RequestBody`] and comes back when the body ends.

mod body;
mod h2;
mod parse;
mod write;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

pub use body::{BodyError, RequestBody};
pub use parse::HeadLimits;
// The upstream client (`pool::h1`) decodes response bodies and reads `Connection` the same way.
pub(crate) use body::{Decoded, Decoder, drained};
pub(crate) use parse::{Framing, connection_tokens};
pub(crate) use write::{chunk_header, itoa};

use body::{Exchange, Reader};

use write::Shape;

use crate::log;
use crate::proxy::{self, ConnInfo, Shared};

/// How long a stop waits for the first request of a connection accepted just before it.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(5);
/// nginx's `lingering_time` and `lingering_timeout`: how long an unread request body is
/// drained before a close, so the client reads the response instead of a reset.
const LINGERING_TIME: Duration = Duration::from_secs(30);
const LINGERING_TIMEOUT: Duration = Duration::from_secs(5);

/// The client-side settings of a connection (the http level's, read when it was accepted).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub limits: HeadLimits,
    /// `client_header_buffer_size`: the buffer a request head is first read into (1k, as
    /// nginx); a longer head grows it up to the limits.
    pub first_read: usize,
    /// `client_header_timeout`: from the first byte of a head (or the accept) to its end.
    pub header_timeout: Duration,
    /// `keepalive_timeout`: how long an idle connection is kept; zero disables keep-alive.
    pub keepalive_timeout: Duration,
    /// `send_timeout`: the longest one write to the client may stay blocked.
    pub send_timeout: Duration,
}

/// What asks a connection to finish: its listener stopped, because the process is stopping or
/// a reload removed the address.
pub struct Signals {
    pub stop: watch::Receiver<bool>,
}

impl Signals {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn stopped(&mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }
}

/// The client's side of a connection switched to another protocol (after a 101).
pub struct OnUpgrade(oneshot::Receiver<Upgraded>);

impl Future for OnUpgrade {
    type Output = io::Result<Upgraded>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client connection was not upgraded",
            )
        })
    }
}

/// An upgraded client connection: bytes it sent after its request head come first.
#[derive(Debug)]
pub struct Upgraded {
    prefix: Bytes,
    stream: TcpStream,
}

impl Upgraded {
    /// A connection switched to another protocol, whose first bytes (read with the head that
    /// switched it) are `prefix`: a client's, or a peer's after its `101`.
    pub fn new(prefix: Bytes, stream: TcpStream) -> Self {
        Self { prefix, stream }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves one client connection until it closes, times out, or a stop ends it.
///
/// The future of an idle connection is only [`Conn`] and the wait for readability: everything
/// a request needs (head parsing, the handler, the response writer) lives in one allocation
/// made per request, so 10,000 idle connections cost little more than their sockets.
pub async fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    settings: Settings,
    signals: Signals,
) {
    let (half, writer) = stream.into_split();
    let mut conn = Conn {
        home: Some(Reader {
            half,
            buf: BytesMut::new(),
        }),
        writer,
        served: 0,
        keepalive_timeout: settings.keepalive_timeout,
        nagle: write::Nagle::Unwritten,
        shared,
        info,
        settings,
        signals,
    };
    loop {
        let Some(reader) = conn.home.as_mut() else {
            return;
        };
        if reader.buf.is_empty() {
            // Idle: hold no buffer while waiting.
            reader.buf = BytesMut::new();
            let first = conn.served == 0;
            let idle = if first {
                conn.settings.header_timeout
            } else {
                conn.keepalive_timeout
            };
            if !wait_for_request(
                reader,
                idle,
                first,
                conn.settings.first_read,
                &mut conn.signals,
            )
            .await
            {
                return;
            }
        }
        match Box::pin(conn.exchange_bounded()).await {
            Next::KeepAlive => {}
            Next::Close => return,
            Next::Upgrade(reader, upgraded) => {
                if let Ok(stream) = reader.half.reunite(conn.writer) {
                    // A tunnel writes whatever arrives, when it arrives.
                    let _ = stream.set_nodelay(true);
                    let _ = upgraded.send(Upgraded {
                        prefix: reader.buf.freeze(),
                        stream,
                    });
                }
                return;
            }
            Next::Http2(reader) => {
                if let Ok(stream) = reader.half.reunite(conn.writer) {
                    let _ = stream.set_nodelay(true);
                    let io = Upgraded {
                        prefix: reader.buf.freeze(),
                        stream,
                    };
                    Box::pin(h2::serve(io, conn.shared, conn.info, conn.signals)).await;
                }
                return;
            }
        }
    }
}

/// One client connection between requests.
struct Conn {
    /// The read side, when it is not lent to a request body.
    home: Option<Reader>,
    writer: OwnedWriteHalf,
    served: u64,
    /// `keepalive_timeout` of the location that answered the last request.
    keepalive_timeout: Duration,
    nagle: write::Nagle,
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    settings: Settings,
    signals: Signals,
}

enum Next {
    KeepAlive,
    Close,
    /// A 101 went out: the connection goes on as the other protocol, to whoever waits for it.
    Upgrade(Reader, oneshot::Sender<Upgraded>),
    /// The connection opened with HTTP/2's preface: it goes on as HTTP/2.
    Http2(Reader),
}

impl Conn {
    /// [`Conn::exchange`], cut short `worker_shutdown_timeout` after a stop began.
    async fn exchange_bounded(&mut self) -> Next {
        let mut stop = Signals {
            stop: self.signals.stop.clone(),
        };
        let live = self.shared.live.clone();
        let bounded = async move {
            stop.stopped().await;
            match live.snapshot().config.main.shutdown_timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            next = self.exchange() => next,
            () = bounded => Next::Close,
        }
    }

    /// Reads one request head, has it answered, and writes the response.
    async fn exchange(&mut self) -> Next {
        let Some(mut reader) = self.home.take() else {
            return Next::Close;
        };
        let settings = self.settings;
        let info = self.info.clone();
        let deadline = Instant::now() + settings.header_timeout;
        let head = loop {
            // HTTP/2 with prior knowledge (h2c): the connection opens with the preface.
            if self.served == 0 {
                let n = reader.buf.len().min(h2::PREFACE.len());
                if reader.buf[..n] == h2::PREFACE[..n] {
                    if n == h2::PREFACE.len() {
                        return Next::Http2(reader);
                    }
                    match tokio::time::timeout_at(deadline, poll_fn(|cx| reader.poll_fill(cx)))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => continue,
                        _ => return Next::Close,
                    }
                }
            }
            match parse::parse(&mut reader.buf, &settings.limits) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(rejected) => {
                    log!(
                        Info,
                        "*{} {} while reading client request headers, client: {}",
                        info.id,
                        rejected.reason,
                        info.remote.ip()
                    );
                    let response = proxy::reject(&self.shared, &info, rejected.status);
                    let shape = Shape {
                        head_request: false,
                        http10: false,
                        keep_alive: false,
                    };
                    let (framing, _) = write::framing(&response, shape);
                    let _ = write::response(
                        self.writer.as_ref(),
                        response,
                        framing,
                        false,
                        shape,
                        settings.send_timeout,
                        &mut self.nagle,
                    )
                    .await;
                    linger(reader, &self.writer).await;
                    return Next::Close;
                }
            }
            match tokio::time::timeout_at(deadline, poll_fn(|cx| reader.poll_fill(cx))).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Next::Close,
                Err(_) => {
                    log!(
                        Info,
                        "*{} client timed out (110: Connection timed out) while reading client request headers, client: {}",
                        info.id,
                        info.remote.ip()
                    );
                    return Next::Close;
                }
            }
        };
        self.served += 1;
        let parse::Head {
            parts,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
        } = head;
        let shape = Shape {
            head_request: parts.method == Method::HEAD,
            http10: parts.version == Version::HTTP_10,
            keep_alive,
        };
        let (body, exchange) = if framing == Framing::None {
            self.home = Some(reader);
            (RequestBody::empty(), None)
        } else {
            let exchange = Arc::new(Exchange::default());
            let body = RequestBody::streaming(reader, framing, expect_continue, exchange.clone());
            (body, Some(exchange))
        };
        let (upgraded, on_upgrade) = match upgrade {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(OnUpgrade(rx)))
            }
            false => (None, None),
        };
        let request = Request::from_parts(parts, body);
        let handling = proxy::handle(&self.shared, &info, request, on_upgrade);
        let (response, timeouts) = match self.home.as_ref() {
            // While the answer is prepared, notice a client that goes away (nginx's
            // `proxy_ignore_client_abort off`): the request is abandoned.
            Some(reader) => tokio::select! {
                answered = handling => answered,
                () = client_gone(reader) => {
                    log!(Info, "*{} client prematurely closed connection, client: {}", info.id, info.remote.ip());
                    return Next::Close;
                }
            },
            None => handling.await,
        };
        // The read side comes back from a body that ended (or was dropped unread).
        let mut body_done = true;
        if let Some(exchange) = &exchange {
            exchange.start_response();
            match exchange.take_home() {
                Some((mut reader, mut decoder)) => {
                    // A body nobody read to the end: skip what of it is already here.
                    while !decoder.is_done() {
                        match decoder.decode(&mut reader.buf) {
                            Decoded::Data(_) | Decoded::Trailers(_) => {}
                            _ => break,
                        }
                    }
                    body_done = decoder.is_done();
                    self.home = Some(reader);
                }
                None => body_done = false,
            }
        }
        let status = response.status();
        if status.as_u16() == 444 {
            // nginx's `return 444`: close without an answer.
            return Next::Close;
        }
        // The answering location's timeouts apply from here (nginx's rule).
        let send_timeout = timeouts.send.unwrap_or(settings.send_timeout);
        if let Some(keepalive) = timeouts.keepalive {
            self.keepalive_timeout = keepalive;
        }
        let shape = Shape {
            keep_alive: shape.keep_alive
                && !self.keepalive_timeout.is_zero()
                && body_done
                && self.home.is_some()
                && !self.signals.stopping(),
            ..shape
        };
        let (framing, keep_alive) = write::framing(&response, shape);
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return self.switch_protocols(response, upgraded, shape).await;
        }
        let written = write::response(
            self.writer.as_ref(),
            response,
            framing,
            keep_alive,
            shape,
            send_timeout,
            &mut self.nagle,
        )
        .await;
        match written {
            Ok(()) if keep_alive => Next::KeepAlive,
            Ok(()) => {
                if let Some(reader) = self.home.take() {
                    if !body_done {
                        linger(reader, &self.writer).await;
                    }
                }
                Next::Close
            }
            Err(e) => {
                if let write::WriteError::Io(e) = e {
                    log!(Info, "*{} {e}, client: {}", info.id, info.remote.ip());
                }
                Next::Close
            }
        }
    }

    /// Writes the 101 head; the connection then goes to whoever waits for the upgrade.
    async fn switch_protocols(
        &mut self,
        response: http::Response<proxy::ResponseBody>,
        upgraded: Option<oneshot::Sender<Upgraded>>,
        shape: Shape,
    ) -> Next {
        let (Some(reader), Some(upgraded)) = (self.home.take(), upgraded) else {
            return Next::Close;
        };
        let written = write::response(
            self.writer.as_ref(),
            response,
            write::BodyFraming::None,
            true,
            shape,
            self.settings.send_timeout,
            &mut self.nagle,
        )
        .await;
        match written {
            Ok(()) => Next::Upgrade(reader, upgraded),
            Err(_) => Next::Close,
        }
    }
}

/// Waits until a request starts arriving and reads its first bytes. False: close (idle too
/// long, closed by the client, or stopping). Kept small: it is all an idle connection holds.
async fn wait_for_request(
    reader: &mut Reader,
    idle: Duration,
    first: bool,
    first_read: usize,
    signals: &mut Signals,
) -> bool {
    if signals.stopping() && !first {
        return false;
    }
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let mut stopping = false;
    loop {
        tokio::select! {
            read = first_bytes(reader, first_read) => return read,
            () = &mut timer => return false,
            () = signals.stopped(), if !stopping => {
                if !first {
                    return false;
                }
                // Accepted just before the stop: its first request may be on its way (nginx
                // closes only keep-alive connections between requests).
                stopping = true;
                let grace = Instant::now() + FIRST_REQUEST_GRACE;
                if grace < timer.deadline() {
                    timer.as_mut().reset(grace);
                }
            }
        }
    }
}

/// Reads once bytes are there, into a buffer allocated only then. False: closed.
async fn first_bytes(reader: &mut Reader, capacity: usize) -> bool {
    let stream = reader.half.as_ref();
    loop {
        if poll_fn(|cx| stream.poll_read_ready(cx)).await.is_err() {
            return false;
        }
        let mut buf = BytesMut::with_capacity(capacity);
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                if n < capacity {
                    body::drained(stream);
                }
                reader.buf = buf;
                return true;
            }
            // The readiness was stale: wait again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
}

/// Returns when the client closed its side (bytes it sends meanwhile stay unread).
async fn client_gone(reader: &Reader) {
    let mut byte = [0u8; 1];
    match reader.half.as_ref().peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        // A pipelined request: it waits its turn.
        Ok(_) => std::future::pending().await,
    }
}

/// Reads and drops what the client still sends, for a while, after our side is closed for
/// writing: closing with unread bytes would reset the connection and could destroy the
/// response before the client read it (nginx's lingering close).
async fn linger(mut reader: Reader, writer: &tokio::net::tcp::OwnedWriteHalf) {
    let _ = socket2::SockRef::from(writer.as_ref()).shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + LINGERING_TIME;
    loop {
        reader.buf.clear();
        let read = tokio::time::timeout(LINGERING_TIMEOUT, poll_fn(|cx| reader.poll_fill(cx)));
        match tokio::time::timeout_at(until, read).await {
            Ok(Ok(Ok(n))) if n > 0 => {}
            _ => return,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, LoadOptions};
    use crate::snapshot::Snapshot;
    use crate::upstream::PeerRegistry;

    /// What an idle keep-alive connection costs is mostly this future: a request's state must
    /// stay out of it (boxed per request), or every idle connection pays for the largest one.
    #[tokio::test]
    async fn an_idle_connection_s_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let text = "events {} http { access_log off; server { listen 127.0.0.1:0; return 200; } }";
        let opts = LoadOptions {
            prefix: std::env::temp_dir(),
            default_listen_port: 8000,
        };
        let config = config::parse_str("/t.conf", text, &opts).unwrap();
        let snapshot = Snapshot::compile(config, &PeerRegistry::new()).unwrap();
        let shared = Arc::new(Shared {
            live: Arc::new(crate::reload::Live::new(snapshot)),
            pool: Arc::new(crate::pool::Pool::new()),
        });
        let addr = stream.local_addr().unwrap();
        let info = Arc::new(ConnInfo {
            id: 1,
            requests: Default::default(),
            remote: addr,
            local: addr,
            key: addr,
        });
        let settings = Settings {
            limits: HeadLimits::default(),
            first_read: 1024,
            header_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
        };
        let (_stop, stopped) = watch::channel(false);
        let serving = serve(stream, shared, info, settings, Signals { stop: stopped });
        let size = std::mem::size_of_val(&serving);
        assert!(size <= 1024, "the connection future grew to {size} bytes");
    }
}
