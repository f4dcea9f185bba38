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
mod fields;
pub(crate) mod h2;
pub(crate) mod parse;
mod write;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

pub use body::{BodyError, RequestBody};
pub use fields::{RawFields, append_name};
pub use parse::HeadLimits;
// The upstream client (`pool::h1`) decodes response bodies and reads `Connection` the same way.
pub(crate) use body::{Decoded, Decoder, drained};
pub(crate) use parse::Framing;
pub use parse::RequestLine;
pub(crate) use parse::{KEEP_ALIVE, PROXY_CONNECTION};
pub use parse::{Named, field_name};
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

/// What the connections a listener accepted under one configuration share: made once per
/// listener and snapshot rather than per connection.
pub struct Listener {
    pub shared: Arc<Shared>,
    pub settings: Settings,
    pub stop: Arc<Stop>,
    /// `listen ... ssl`: connections start with a TLS handshake ([`crate::tls::accept`]).
    pub tls: bool,
    /// `listen ... proxy_protocol`: connections begin with a PROXY protocol header, read
    /// before anything else (before the TLS handshake on a TLS address).
    pub proxy_protocol: bool,
}

/// A listener's stop switch: thrown when the process stops or a reload removes the address.
/// Its accept loops and every connection it accepted share one, and wait on it for free.
#[derive(Debug, Default)]
pub struct Stop {
    stopping: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Asks the accept loops and connections to finish.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Returns once [`Stop::stop`] was called (at once if it was already).
    pub async fn stopped(&self) {
        // Created before the check, so a stop between the two still wakes it.
        let notified = self.notify.notified();
        if self.is_stopping() {
            return;
        }
        notified.await;
    }
}

/// The client's side of a connection switched to another protocol (after a 101).
pub struct OnUpgrade(oneshot::Receiver<Upgraded>);

impl OnUpgrade {
    /// A wait for an upgraded connection, and where to send it.
    pub(crate) fn channel() -> (oneshot::Sender<Upgraded>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self(rx))
    }
}

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
pub struct Upgraded {
    prefix: Bytes,
    stream: UpgradedIo,
}

/// What an upgraded connection reads and writes: a socket, or a stream over one (TLS).
enum UpgradedIo {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

/// A byte stream an [`Upgraded`] may carry besides a plain socket.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("prefix", &self.prefix.len())
            .finish_non_exhaustive()
    }
}

impl Upgraded {
    /// A connection switched to another protocol, whose first bytes (read with the head that
    /// switched it) are `prefix`: a client's, or a peer's after its `101`.
    pub fn new(prefix: Bytes, stream: TcpStream) -> Self {
        Self {
            prefix,
            stream: UpgradedIo::Tcp(stream),
        }
    }

    /// The same over a stream that is not a plain socket (a TLS connection).
    pub fn other(prefix: Bytes, io: impl Io) -> Self {
        Self {
            prefix,
            stream: UpgradedIo::Other(Box::new(io)),
        }
    }
}

/// `Pin::new(&mut stream).$method(args)` on whichever stream an [`Upgraded`] has.
macro_rules! on_io {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match &mut $self.stream {
            UpgradedIo::Tcp(s) => Pin::new(s).$method($($arg),*),
            UpgradedIo::Other(s) => Pin::new(s).$method($($arg),*),
        }
    };
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
        on_io!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_io!(self, poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, poll_shutdown(cx))
    }
}

/// Serves one client connection until it closes, times out, or a stop ends it; `guard` is
/// dropped then.
///
/// The future of an idle connection is only [`Conn`], the socket and the wait for readability:
/// everything a request needs (head parsing, the handler, the response writer) lives in one
/// allocation made per request, so 10,000 idle connections cost little more than their sockets.
pub fn serve(
    stream: TcpStream,
    listener: Arc<Listener>,
    info: Arc<ConnInfo>,
    guard: impl Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let mut conn = Conn {
        fresh: true,
        keepalive_timeout: listener.settings.keepalive_timeout,
        nagle: write::Nagle::Unwritten,
        info,
    };
    let mut stream = stream;
    let mut buf = BytesMut::new();
    // An `async` block rather than an `async fn`: what it captures is kept once (an `async fn`
    // keeps its arguments and their moved-to locals apart), and this future is what every
    // idle connection costs.
    async move {
        let _guard = &guard;
        let mut watch = Watch {
            listener: &listener,
            stopped: Some(std::pin::pin!(listener.stop.notify.notified())),
            timer: std::pin::pin!(tokio::time::sleep(listener.settings.header_timeout)),
        };
        let h2 = loop {
            if buf.is_empty() {
                // Idle: hold no buffer while waiting.
                crate::scratch::return_read_buffer(std::mem::take(&mut buf));
                let waiting = crate::stats::Waiting::start();
                if !wait_for_request(&stream, &mut buf, &conn, &mut watch).await {
                    return;
                }
                drop(waiting);
            }
            let exchange = pin_box!(conn.exchange(&listener, stream, buf));
            match bounded(exchange, &mut watch).await {
                Next::KeepAlive(s, b) => (stream, buf) = (s, b),
                Next::Close => return,
                Next::Upgrade(stream, prefix, upgraded) => {
                    // A tunnel writes whatever arrives, when it arrives.
                    let _ = stream.set_nodelay(true);
                    let _ = upgraded.send(Upgraded::new(prefix.freeze(), stream));
                    return;
                }
                Next::Http2(stream, prefix) => {
                    let _ = stream.set_nodelay(true);
                    break Upgraded::new(prefix.freeze(), stream);
                }
            }
        };
        let Listener {
            shared,
            stop,
            settings,
            ..
        } = &*listener;
        let timeouts = h2::Timeouts {
            handshake: settings.header_timeout,
            idle: conn.keepalive_timeout,
            send: settings.send_timeout,
        };
        pin_box!(h2::serve(
            h2,
            shared.clone(),
            conn.info,
            stop.clone(),
            timeouts
        ))
        .await;
    }
}

/// One client connection between requests (its socket and read buffer travel separately: a
/// request may lend them to its body).
struct Conn {
    /// No request head read yet.
    fresh: bool,
    /// `keepalive_timeout` of the location that answered the last request.
    keepalive_timeout: Duration,
    nagle: write::Nagle,
    info: Arc<ConnInfo>,
}

enum Next {
    /// The socket and the bytes already read of the next request.
    KeepAlive(TcpStream, BytesMut),
    Close,
    /// A 101 went out: the connection goes on as the other protocol, to whoever waits for it.
    Upgrade(TcpStream, BytesMut, oneshot::Sender<Upgraded>),
    /// The connection opened with HTTP/2's preface: it goes on as HTTP/2.
    Http2(TcpStream, BytesMut),
}

/// The client's socket during one exchange: shared only while a request body reads from it
/// (whoever polls the body may be another task).
enum Socket {
    Own(TcpStream),
    Lent(Lent),
}

impl Socket {
    fn get(&self) -> &TcpStream {
        match self {
            Self::Own(stream) => stream,
            Self::Lent(Lent(Some(stream))) => stream,
            Self::Lent(Lent(None)) => unreachable!("only `reclaim` empties it, and consumes it"),
        }
    }

    /// The socket back from a body that ended; `None` if the body still holds it.
    fn reclaim(self) -> Option<TcpStream> {
        match self {
            Self::Own(stream) => Some(stream),
            Self::Lent(mut lent) => {
                let stream = lent.0.take()?;
                match Arc::try_unwrap(stream) {
                    Ok(stream) => Some(stream),
                    Err(stream) => {
                        lent.0 = Some(stream);
                        None
                    }
                }
            }
        }
    }
}

/// The connection's share of a socket lent to a request body. Dropped while the body still
/// has the socket, it shuts the socket down for writing, so the client sees the end of a
/// response that is delimited by the close (as a dropped split write half did).
struct Lent(Option<Arc<TcpStream>>);

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(stream) = self.0.take() {
            if Arc::strong_count(&stream) > 1 {
                let _ = socket2::SockRef::from(&*stream).shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

/// What a connection waits on besides its socket, made once for its whole life so that a
/// request registers nothing: the stop switch, registered with the connection's task once and
/// read as a flag after that, and one idle timer, re-armed only when it fires before the
/// connection's idle deadline (a busy connection moves the deadline without touching the
/// timer: one re-arm per `keepalive_timeout`, not one timer per request).
struct Watch<'a, 'p> {
    listener: &'a Listener,
    /// Until first polled; `None` after that (a stop wakes this task then, and sets the flag).
    stopped: Option<Pin<&'p mut tokio::sync::futures::Notified<'a>>>,
    timer: Pin<&'p mut tokio::time::Sleep>,
}

impl Watch<'_, '_> {
    /// Whether a stop began; the first call registers the task to be woken by one.
    fn stopping(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(stopped) = self.stopped.take() {
            if stopped.poll(cx).is_ready() {
                return true;
            }
        }
        self.listener.stop.is_stopping()
    }

    /// Waits for an idle deadline set by [`Watch::idle_until`].
    fn poll_idle(&mut self, until: Instant, cx: &mut Context<'_>) -> Poll<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= until {
                return Poll::Ready(());
            }
            // Fired for an earlier deadline: arm it for this one (and poll, to register).
            self.timer.as_mut().reset(until);
        }
        Poll::Pending
    }

    /// Starts an idle wait ending at `until`: the timer is moved only when it would fire
    /// after that.
    fn idle_until(&mut self, until: Instant) {
        if self.timer.deadline() > until {
            self.timer.as_mut().reset(until);
        }
    }
}

/// Runs one exchange, cut short `worker_shutdown_timeout` after a stop began.
async fn bounded(
    mut exchange: Pin<Box<impl Future<Output = Next>>>,
    watch: &mut Watch<'_, '_>,
) -> Next {
    // Set once a stop was seen: the timer ending the exchange (never, without a timeout).
    let mut cut: Option<Option<Pin<Box<tokio::time::Sleep>>>> = None;
    poll_fn(|cx| {
        if let Poll::Ready(next) = exchange.as_mut().poll(cx) {
            return Poll::Ready(next);
        }
        if cut.is_none() && watch.stopping(cx) {
            let limit = watch
                .listener
                .shared
                .live
                .snapshot()
                .config
                .main
                .shutdown_timeout;
            cut = Some(limit.map(|limit| Box::pin(tokio::time::sleep(limit))));
        }
        match &mut cut {
            Some(Some(timer)) => timer.as_mut().poll(cx).map(|()| Next::Close),
            _ => Poll::Pending,
        }
    })
    .await
}

impl Conn {
    /// Reads one request head, has it answered, and writes the response.
    async fn exchange(
        &mut self,
        listener: &Listener,
        stream: TcpStream,
        mut buf: BytesMut,
    ) -> Next {
        let settings = listener.settings;
        let info = self.info.clone();
        // Read off the clock only if the head did not come whole with the first bytes.
        let mut deadline = None;
        // A request from its first bytes on (stub_status's `requests`, `Reading`, `Writing`).
        let mut counted = crate::stats::Request::reading();
        let head = loop {
            // HTTP/2 with prior knowledge (h2c): the connection opens with the preface.
            if self.fresh {
                let n = buf.len().min(h2::PREFACE.len());
                if buf[..n] == h2::PREFACE[..n] {
                    if n == h2::PREFACE.len() {
                        counted.not_a_request();
                        return Next::Http2(stream, buf);
                    }
                    let fill = poll_fn(|cx| body::poll_fill(&stream, &mut buf, cx));
                    let deadline =
                        *deadline.get_or_insert_with(|| Instant::now() + settings.header_timeout);
                    match tokio::time::timeout_at(deadline, fill).await {
                        Ok(Ok(n)) if n > 0 => continue,
                        _ => return Next::Close,
                    }
                }
            }
            match parse::parse(&mut buf, &settings.limits) {
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
                    let response =
                        proxy::reject(&listener.shared, &info, rejected.status, rejected.line);
                    let shape = Shape {
                        head_request: false,
                        http10: false,
                        keep_alive: false,
                    };
                    let (framing, _) = write::framing(&response, shape);
                    let _ = write::response(
                        &stream,
                        response,
                        framing,
                        false,
                        shape,
                        settings.send_timeout,
                        &mut self.nagle,
                    )
                    .await;
                    linger(&stream, buf).await;
                    return Next::Close;
                }
            }
            let fill = poll_fn(|cx| body::poll_fill(&stream, &mut buf, cx));
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + settings.header_timeout);
            match tokio::time::timeout_at(deadline, fill).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Next::Close,
                Err(_) => {
                    log!(
                        Info,
                        "*{} client timed out (110: Connection timed out) while reading client request headers, client: {}",
                        info.id,
                        info.remote.ip()
                    );
                    // nginx closes without an answer and logs the request 408.
                    let line = parse::request_line(&buf, &settings.limits);
                    proxy::log_unanswered(
                        &listener.shared,
                        &info,
                        StatusCode::REQUEST_TIMEOUT,
                        line,
                    );
                    return Next::Close;
                }
            }
        };
        self.fresh = false;
        counted.head_read();
        let parse::Head {
            parts,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
            fields,
        } = head;
        let shape = Shape {
            head_request: parts.method == Method::HEAD,
            http10: parts.version == Version::HTTP_10,
            keep_alive,
        };
        // `home`: the read buffer, while the connection has its read side (not lent to a body).
        let (socket, mut home, body, exchange) = if framing == Framing::None {
            (Socket::Own(stream), Some(buf), RequestBody::empty(), None)
        } else {
            let stream = Arc::new(stream);
            let exchange = Arc::new(Exchange::default());
            let reader = Reader {
                stream: stream.clone(),
                buf,
            };
            let body = RequestBody::streaming(reader, framing, expect_continue, exchange.clone());
            (Socket::Lent(Lent(Some(stream))), None, body, Some(exchange))
        };
        let (upgraded, on_upgrade) = match upgrade {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(OnUpgrade(rx)))
            }
            false => (None, None),
        };
        // In a block: the handler's state (kilobytes) is let go before the response is written.
        let (response, timeouts) = {
            let mut handling = std::pin::pin!(proxy::handle(
                &listener.shared,
                &info,
                parts,
                Some(fields),
                body,
                on_upgrade
            ));
            match home {
                // While the answer is prepared, notice a client that goes away (nginx's
                // `proxy_ignore_client_abort off`): the request is abandoned.
                Some(_) => {
                    let mut gone = std::pin::pin!(client_gone(socket.get()));
                    let answered = poll_fn(|cx| match handling.as_mut().poll(cx) {
                        Poll::Ready(answered) => Poll::Ready(Some(answered)),
                        Poll::Pending => gone.as_mut().poll(cx).map(|()| None),
                    });
                    match answered.await {
                        Some(answered) => answered,
                        None => {
                            log!(
                                Info,
                                "*{} client prematurely closed connection, client: {}",
                                info.id,
                                info.remote.ip()
                            );
                            return Next::Close;
                        }
                    }
                }
                None => handling.await,
            }
        };
        // The read side comes back from a body that ended (or was dropped unread).
        let mut body_done = true;
        if let Some(exchange) = &exchange {
            exchange.start_response();
            match exchange.take_home() {
                Some((reader, mut decoder)) => {
                    let Reader { stream, mut buf } = reader;
                    drop(stream);
                    // A body nobody read to the end: skip what of it is already here.
                    while !decoder.is_done() {
                        match decoder.decode(&mut buf) {
                            Decoded::Data(_) | Decoded::Trailers(_) => {}
                            _ => break,
                        }
                    }
                    body_done = decoder.is_done();
                    home = Some(buf);
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
                && home.is_some()
                && !listener.stop.is_stopping(),
            ..shape
        };
        let (framing, keep_alive) = write::framing(&response, shape);
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(buf), Some(upgraded)) = (home, upgraded) else {
                return Next::Close;
            };
            let written = write::response(
                socket.get(),
                response,
                write::BodyFraming::None,
                true,
                shape,
                settings.send_timeout,
                &mut self.nagle,
            )
            .await;
            return match (written, socket.reclaim()) {
                (Ok(()), Some(stream)) => Next::Upgrade(stream, buf, upgraded),
                _ => Next::Close,
            };
        }
        let written = write::response(
            socket.get(),
            response,
            framing,
            keep_alive,
            shape,
            send_timeout,
            &mut self.nagle,
        )
        .await;
        match (written, home) {
            (Ok(()), Some(buf)) if keep_alive => match socket.reclaim() {
                Some(stream) => Next::KeepAlive(stream, buf),
                None => Next::Close,
            },
            (Ok(()), home) => {
                if let (Some(buf), false) = (home, body_done) {
                    linger(socket.get(), buf).await;
                }
                Next::Close
            }
            (Err(e), _) => {
                if let write::WriteError::Io(e) = e {
                    log!(Info, "*{} {e}, client: {}", info.id, info.remote.ip());
                }
                Next::Close
            }
        }
    }
}

/// Waits until a request starts arriving and reads its first bytes into `buf`. False: close
/// (idle too long, closed by the client, or stopping). Kept small (one poll function rather
/// than a `select!` of futures): it is all an idle connection holds.
// Not an `async fn`: that keeps its arguments twice (24 bytes on every idle connection).
#[allow(clippy::manual_async_fn)]
fn wait_for_request<'a>(
    stream: &'a TcpStream,
    buf: &'a mut BytesMut,
    conn: &'a Conn,
    watch: &'a mut Watch<'_, '_>,
) -> impl Future<Output = bool> + 'a {
    // Read here, not in the future: what it holds, every idle connection holds.
    let fresh = conn.fresh;
    let idle = match fresh {
        true => watch.listener.settings.header_timeout,
        false => conn.keepalive_timeout,
    };
    let mut until = Instant::now() + idle;
    watch.idle_until(until);
    async move {
        let mut stopping = false;
        loop {
            let woken = poll_fn(|cx| {
                if !stopping && watch.stopping(cx) {
                    return Poll::Ready(Woken::Stop);
                }
                if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                    return Poll::Ready(Woken::Readable(ready.is_ok()));
                }
                watch.poll_idle(until, cx).map(|()| Woken::Idle)
            })
            .await;
            match woken {
                Woken::Readable(true) => match first_bytes(stream, &watch.listener.settings) {
                    Ok(Some(bytes)) => {
                        *buf = bytes;
                        return true;
                    }
                    Ok(None) => return false,
                    // The readiness was stale: wait again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return false,
                },
                Woken::Readable(false) | Woken::Idle => return false,
                Woken::Stop => {
                    if !fresh {
                        return false;
                    }
                    // Accepted just before the stop: its first request may be on its way
                    // (nginx closes only keep-alive connections between requests).
                    stopping = true;
                    until = until.min(Instant::now() + FIRST_REQUEST_GRACE);
                    watch.idle_until(until);
                }
            }
        }
    }
}

/// What ended an idle wait.
enum Woken {
    /// The socket is readable (`false`: it failed).
    Readable(bool),
    Idle,
    Stop,
}

/// Reads what is there into a buffer allocated only now. `None`: closed by the client.
fn first_bytes(stream: &TcpStream, settings: &Settings) -> io::Result<Option<BytesMut>> {
    let mut buf = crate::scratch::read_buffer(settings.first_read);
    let capacity = buf.capacity();
    match stream.try_read_buf(&mut buf) {
        Ok(0) => {
            crate::scratch::return_read_buffer(buf);
            Ok(None)
        }
        Err(e) => {
            crate::scratch::return_read_buffer(buf);
            Err(e)
        }
        Ok(n) => {
            if n < capacity {
                body::drained(stream);
            }
            Ok(Some(buf))
        }
    }
}

/// Returns when the client closed its side (bytes it sends meanwhile stay unread).
async fn client_gone(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        // A pipelined request: it waits its turn.
        Ok(_) => std::future::pending().await,
    }
}

/// Reads and drops what the client still sends, for a while, after our side is closed for
/// writing: closing with unread bytes would reset the connection and could destroy the
/// response before the client read it (nginx's lingering close).
async fn linger(stream: &TcpStream, mut buf: BytesMut) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + LINGERING_TIME;
    loop {
        buf.clear();
        let fill = poll_fn(|cx| body::poll_fill(stream, &mut buf, cx));
        let read = tokio::time::timeout(LINGERING_TIMEOUT, fill);
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
    /// tokio puts a task's future in a 128-byte aligned cell with 112 bytes of its own, so up
    /// to 408 bytes the task takes 512 bytes; one byte more and it takes 640.
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
            accepted: tokio::time::Instant::now(),
            tls: None,
            proxy_protocol: None,
        });
        let settings = Settings {
            limits: HeadLimits::default(),
            first_read: 1024,
            header_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
        };
        let listener = Arc::new(Listener {
            shared,
            settings,
            stop: Arc::default(),
            tls: false,
            proxy_protocol: false,
        });
        // The server's guard (a connection count) is one pointer, as this one.
        let serving = serve(stream, listener, info, Arc::new(()));
        let size = std::mem::size_of_val(&serving);
        assert!(size <= 408, "the connection future grew to {size} bytes");
    }
}
