//! The access log: one line per request in a `log_format`, written when the response has been
//! sent (or the client went away), as nginx logs at request finalisation.
//!
//! A file without `buffer=`/`gzip` gets each line in one `write()` as the request ends. A
//! buffered file keeps one buffer per worker thread (nginx's per-process buffer): a line takes
//! only that worker's own lock, and the file's lock is taken once per write, when the next line
//! does not fit, `flush=` after the oldest line arrived, on USR1 before reopening, and at exit
//! ([`flush_at_exit`]) or when a reload retired the file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use crate::config::model::{AccessLogSpec, LogBuffer, LogEscape};
use crate::proxy::{ConnInfo, RequestCtx};
use crate::vars::{Escape, Scope, Template, Var};

/// One open log file (or syslog target), shared by every format and location that writes to it.
pub struct LogFile {
    path: PathBuf,
    file: Sink,
    /// `None`: every line is written as its request ends.
    buffer: Option<Buffer>,
}

/// Where a log's lines go.
enum Sink {
    File(Mutex<File>),
    /// `syslog:server=...`: each line one datagram, with nginx's RFC 3164 header.
    Syslog(crate::syslog::Syslog),
}

/// The buffers of one file (`buffer=`, `flush=`, `gzip`).
struct Buffer {
    spec: LogBuffer,
    /// One per worker: a thread uses slot `worker_index() % len`, so workers never wait for
    /// each other to add a line.
    slots: Box<[Mutex<Slot>]>,
    /// Set at exit, once the buffers were written: later lines are written at once.
    closed: AtomicBool,
}

#[derive(Default)]
struct Slot {
    data: Vec<u8>,
    /// Writes of this slot so far: a `flush=` timer armed before the last write does nothing.
    writes: u64,
}

/// Every buffered file still alive, for [`flush_at_exit`].
static BUFFERED: Mutex<Vec<Weak<LogFile>>> = Mutex::new(Vec::new());

/// A small number per thread, stable for its life: the worker's buffer slot.
fn worker_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    INDEX.with(|i| *i)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogFile {
    fn open_file(path: &PathBuf) -> Result<File, String> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| crate::error_log::open_failed(path, &e))
    }

    /// Opens `path` for appending; with `buffer`, lines are collected per worker (`workers`
    /// slots).
    fn open(
        path: &PathBuf,
        buffer: Option<LogBuffer>,
        workers: usize,
        syslog: Option<&crate::config::model::SyslogSpec>,
    ) -> Result<Arc<Self>, String> {
        if let Some(spec) = syslog {
            return Ok(Arc::new(Self {
                path: path.clone(),
                file: Sink::Syslog(crate::syslog::Syslog::open(spec)?),
                buffer: None,
            }));
        }
        let file = Sink::File(Mutex::new(Self::open_file(path)?));
        let buffer = buffer.map(|spec| Buffer {
            spec,
            slots: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
            closed: AtomicBool::new(false),
        });
        let buffered = buffer.is_some();
        let log = Arc::new(Self {
            path: path.clone(),
            file,
            buffer,
        });
        if buffered {
            let mut all = lock(&BUFFERED);
            all.retain(|f| f.strong_count() > 0);
            all.push(Arc::downgrade(&log));
        }
        Ok(log)
    }

    /// Adds one line: written at once, or through this worker's buffer.
    fn write_line(self: &Arc<Self>, line: &[u8]) {
        let Some(buffer) = &self.buffer else {
            return self.write(line);
        };
        let index = worker_index() % buffer.slots.len();
        let mut slot = lock(&buffer.slots[index]);
        if buffer.closed.load(Ordering::Acquire) {
            drop(slot);
            return self.write(line);
        }
        if line.len() > buffer.spec.size - slot.data.len() {
            self.flush(&mut slot);
        }
        if line.len() > buffer.spec.size {
            // Longer than the whole buffer: on its own, as nginx.
            drop(slot);
            return self.write(line);
        }
        if slot.data.is_empty() {
            if slot.data.capacity() == 0 {
                slot.data.reserve_exact(buffer.spec.size);
            }
            if let Some(after) = buffer.spec.flush {
                self.flush_later(after, index, slot.writes);
            }
        }
        slot.data.extend_from_slice(line);
    }

    /// nginx's flush timer: the slot is written `after` from now unless it was written before.
    fn flush_later(self: &Arc<Self>, after: Duration, index: usize, writes: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // Not on a worker: the lines wait for the next write of the slot.
        };
        let file = Arc::downgrade(self);
        runtime.spawn(async move {
            tokio::time::sleep(after).await;
            let Some(file) = file.upgrade() else {
                return; // Retired: its drop wrote everything.
            };
            if let Some(buffer) = &file.buffer {
                let mut slot = lock(&buffer.slots[index]);
                if slot.writes == writes {
                    file.flush(&mut slot);
                }
            }
        });
    }

    /// Writes a slot's lines, if any.
    fn flush(&self, slot: &mut Slot) {
        if !slot.data.is_empty() {
            self.write(&slot.data);
            slot.data.clear();
            slot.writes += 1;
        }
    }

    /// Writes every worker's buffer.
    fn flush_all(&self) {
        if let Some(buffer) = &self.buffer {
            for slot in buffer.slots.iter() {
                self.flush(&mut lock(slot));
            }
        }
    }

    /// One `write()` of `bytes` (as one gzip member with `gzip`).
    fn write(&self, bytes: &[u8]) {
        let compressed;
        let mut bytes = bytes;
        if let Some(level) = self.buffer.as_ref().and_then(|b| b.spec.gzip) {
            compressed = gzip(bytes, level);
            bytes = &compressed;
        }
        let file = match &self.file {
            Sink::File(file) => file,
            Sink::Syslog(syslog) => {
                if let Err(e) = syslog.send(bytes, None) {
                    crate::log!(
                        Alert,
                        "send() to syslog failed ({})",
                        crate::error_log::errno_text(&e)
                    );
                }
                return;
            }
        };
        if let Err(e) = lock(file).write_all(bytes) {
            crate::log!(
                Alert,
                "write() to \"{}\" failed ({})",
                self.path.display(),
                crate::error_log::errno_text(&e)
            );
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes what the buffers hold, then opens the file again (after logrotate moved it).
    pub fn reopen(&self) -> Result<(), String> {
        self.flush_all();
        let Sink::File(file) = &self.file else {
            return Ok(());
        };
        let fresh = Self::open_file(&self.path)?;
        *lock(file) = fresh;
        Ok(())
    }
}

impl Drop for LogFile {
    /// A reload retired this file (its last request has ended): nothing buffered is lost.
    fn drop(&mut self) {
        self.flush_all();
    }
}

fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::new(level),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// Writes every access-log buffer and makes later lines go straight to their files: called as
/// the process stops (graceful or fast), so no line that was logged is lost.
pub fn flush_at_exit() {
    let files: Vec<Arc<LogFile>> = lock(&BUFFERED).iter().filter_map(Weak::upgrade).collect();
    for file in files {
        if let Some(buffer) = &file.buffer {
            // Before taking each slot's lock: a line added after that sees `closed`.
            buffer.closed.store(true, Ordering::Release);
            file.flush_all();
        }
    }
}

/// One `access_log` target compiled: its file, its format and its `if=`.
pub struct AccessLog {
    file: Arc<LogFile>,
    template: Template,
    escape: Escape,
    condition: Option<Template>,
}

/// What the formats of a location need captured beyond the request itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    pub response_headers: bool,
    pub upstream_headers: bool,
}

/// The access logs of one location.
#[derive(Default)]
pub struct AccessLogs {
    logs: Vec<AccessLog>,
    pub needs: Needs,
}

impl AccessLogs {
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }
}

/// Log files and formats already opened / compiled for one snapshot, so each is done (and each
/// failure reported) once, however many locations use it.
#[derive(Default)]
pub struct LogCache {
    /// `None`: opening failed (already reported).
    files: HashMap<PathBuf, Option<Arc<LogFile>>>,
    /// By format name; `None`: the format has an error (already reported).
    formats: HashMap<String, Option<Template>>,
    /// `if=` conditions by their place; `None`: an error (already reported).
    conditions: HashMap<String, Option<Template>>,
    /// Files written through a buffer, and how.
    buffers: HashMap<PathBuf, LogBuffer>,
    /// Worker threads: buffer slots per buffered file.
    workers: usize,
}

impl LogCache {
    pub fn new(buffers: HashMap<PathBuf, LogBuffer>, workers: usize) -> Self {
        Self {
            buffers,
            workers,
            ..Self::default()
        }
    }

    /// Every file opened (for USR1).
    pub fn into_files(self) -> Vec<Arc<LogFile>> {
        self.files.into_values().flatten().collect()
    }
}

/// A log that could not be set up: the message and, for a format error, the `log_format`'s place
/// (nginx reports a file it cannot open with no place).
pub type CompileError = (String, Option<String>);

/// Compiles `access_log` specs. Errors are returned the first time a file or format fails only.
pub fn compile(
    specs: &[AccessLogSpec],
    cache: &mut LogCache,
    scope: &Scope,
) -> (AccessLogs, Vec<CompileError>) {
    let mut out = AccessLogs::default();
    let mut errors = Vec::new();
    for spec in specs {
        let format = &spec.format;
        let template = cache
            .formats
            .entry(format.name.clone())
            .or_insert_with(|| match Template::compile_in(&format.text, scope) {
                Ok(t) => Some(t),
                Err(message) => {
                    errors.push((message, Some(format.location.clone())));
                    None
                }
            })
            .clone();
        let condition = match &spec.condition {
            None => Some(None),
            Some(c) => cache
                .conditions
                .entry(c.location.clone())
                .or_insert_with(|| match Template::compile_in(&c.text, scope) {
                    Ok(t) => Some(t),
                    Err(message) => {
                        errors.push((message, Some(c.location.clone())));
                        None
                    }
                })
                .clone()
                .map(Some),
        };
        let buffer = cache.buffers.get(&spec.path).copied();
        let workers = cache.workers;
        let file = cache
            .files
            .entry(spec.path.clone())
            .or_insert_with(|| {
                match LogFile::open(&spec.path, buffer, workers, spec.syslog.as_deref()) {
                    Ok(f) => Some(f),
                    Err(message) => {
                        errors.push((message, None));
                        None
                    }
                }
            })
            .clone();
        let (Some(template), Some(condition), Some(file)) = (template, condition, file) else {
            continue;
        };
        for t in std::iter::once(&template).chain(&condition) {
            out.needs.response_headers |= t.uses(|v| matches!(v, Var::SentHttp(_)));
            out.needs.upstream_headers |=
                t.uses(|v| matches!(v, Var::UpstreamHttp(_) | Var::UpstreamCookie(_)));
        }
        let escape = match format.escape {
            LogEscape::Default => Escape::Default,
            LogEscape::Json => Escape::Json,
            LogEscape::None => Escape::None,
        };
        out.logs.push(AccessLog {
            file,
            template,
            escape,
            condition,
        });
    }
    (out, errors)
}

/// One attempt on a peer, for `$upstream_*`.
#[derive(Clone, Debug)]
pub struct UpstreamTry {
    pub addr: SocketAddr,
    /// The peer's status, or the status its failure gave (502/504).
    pub status: u16,
    pub connect: Option<Duration>,
    pub header: Option<Duration>,
    pub started: Instant,
    /// The request's bytes written to the peer (head and body; 0 when it never connected).
    pub sent: u64,
    /// The bytes of the peer's response head (0 without one).
    pub head_len: u64,
    /// The first try after an internal redirect (`error_page`): nginx separates it with ` : `.
    pub redirected: bool,
    /// No peer was available: `$upstream_addr` names the group instead (nginx's "no live
    /// upstreams").
    pub group: Option<Box<str>>,
}

/// What forwarding records for the access log (nothing when the location does not log).
#[derive(Default)]
pub struct Record {
    pub enabled: bool,
    pub want_upstream_headers: bool,
    pub tries: Vec<UpstreamTry>,
    pub upstream_headers: Option<HeaderMap>,
    /// An internal redirect happened since the last try.
    pub redirected: bool,
}

impl Record {
    pub fn try_started(&mut self, addr: SocketAddr) {
        if self.enabled {
            self.tries.push(UpstreamTry {
                addr,
                status: 0,
                connect: None,
                header: None,
                started: Instant::now(),
                sent: 0,
                head_len: 0,
                redirected: std::mem::take(&mut self.redirected),
                group: None,
            });
        }
    }

    /// No peer of `group` could be picked: a try with the group's name and a 502, as nginx.
    pub fn no_live_peer(&mut self, group: &str) {
        if self.enabled {
            self.try_started(SocketAddr::from(([0, 0, 0, 0], 0)));
            if let Some(t) = self.last() {
                t.group = Some(group.into());
                t.status = 502;
            }
        }
    }

    /// The request went to the peer: `bytes` of head and body.
    pub fn sent(&mut self, bytes: u64) {
        if let Some(t) = self.last() {
            t.sent = bytes;
        }
    }

    /// The peer's response head was `len` bytes.
    pub fn head_received(&mut self, len: usize) {
        if let Some(t) = self.last() {
            t.head_len = len as u64;
        }
    }

    /// An internal redirect (`error_page`): later tries are another group of `$upstream_addr`.
    pub fn internal_redirect(&mut self) {
        if !self.tries.is_empty() {
            self.redirected = true;
        }
    }

    fn last(&mut self) -> Option<&mut UpstreamTry> {
        self.tries.last_mut()
    }

    pub fn connected(&mut self) {
        if let Some(t) = self.last() {
            t.connect = Some(t.started.elapsed());
        }
    }

    /// The attempt ended with a response head (`status`) or a failure mapped to one.
    pub fn answered(&mut self, status: u16, head: bool) {
        if let Some(t) = self.last() {
            t.status = status;
            if head {
                t.header = Some(t.started.elapsed());
            }
        }
    }
}

/// What is known once the response is sent.
pub struct Done {
    pub status: u16,
    pub body_bytes: u64,
    pub header_bytes: u64,
    pub start: Instant,
    pub end: Instant,
    pub response_headers: Option<HeaderMap>,
    pub upstream_headers: Option<HeaderMap>,
    pub tries: Vec<UpstreamTry>,
    /// The whole response went out (`$request_completion`).
    pub complete: bool,
    /// The trailer fields that went out with the body (the peer's, passed on as they came).
    pub trailers: Option<HeaderMap>,
    /// `$gzip_ratio`'s counts (bytes in, bytes out) of a compressed body that was finished.
    pub gzip: Option<(u64, u64)>,
}

impl Done {
    /// Appends the value of a response-time variable.
    pub fn append(&self, var: &Var, out: &mut String) {
        use std::fmt::Write;
        let secs = |d: Duration| format!("{}.{:03}", d.as_secs(), d.subsec_millis());
        // nginx's lists: `, ` between tries, ` : ` where an internal redirect came between.
        let sep = |out: &mut String, i: usize, t: &UpstreamTry| {
            if i > 0 {
                out.push_str(if t.redirected { " : " } else { ", " });
            }
        };
        let list = |out: &mut String, f: &dyn Fn(&UpstreamTry) -> String| {
            for (i, t) in self.tries.iter().enumerate() {
                sep(out, i, t);
                out.push_str(&f(t));
            }
        };
        // The body bytes read from a try's peer: the last try's body is what the client got.
        let last = self.tries.len().saturating_sub(1);
        let body = |i: usize, t: &UpstreamTry| {
            if i == last && t.header.is_some() {
                self.body_bytes
            } else {
                0
            }
        };
        let counts = |out: &mut String, f: &dyn Fn(usize, &UpstreamTry) -> u64| {
            for (i, t) in self.tries.iter().enumerate() {
                sep(out, i, t);
                let _ = write!(out, "{}", f(i, t));
            }
        };
        match var {
            Var::Status => {
                let _ = write!(out, "{}", self.status);
            }
            Var::BodyBytesSent => {
                let _ = write!(out, "{}", self.body_bytes);
            }
            Var::BytesSent => {
                let _ = write!(out, "{}", self.body_bytes + self.header_bytes);
            }
            Var::RequestTime => out.push_str(&secs(self.end.duration_since(self.start))),
            Var::UpstreamAddr => list(out, &|t| match &t.group {
                Some(group) => group.to_string(),
                None => t.addr.to_string(),
            }),
            Var::UpstreamStatus => list(out, &|t| t.status.to_string()),
            Var::UpstreamConnectTime => list(out, &|t| t.connect.map_or("-".into(), secs)),
            Var::UpstreamHeaderTime => list(out, &|t| t.header.map_or("-".into(), secs)),
            Var::UpstreamResponseLength => counts(out, &body),
            Var::UpstreamBytesReceived => counts(out, &|i, t| t.head_len + body(i, t)),
            Var::UpstreamBytesSent => counts(out, &|_, t| t.sent),
            Var::RequestCompletion if self.complete => out.push_str("OK"),
            Var::UpstreamCookie(name) => {
                let cookie = self.upstream_headers.as_ref().and_then(|h| {
                    h.get_all(http::header::SET_COOKIE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .filter_map(|v| v.split(';').next()?.split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                });
                if let Some((_, value)) = cookie {
                    out.push_str(value.trim());
                }
            }
            Var::UpstreamResponseTime => {
                for (i, t) in self.tries.iter().enumerate() {
                    sep(out, i, t);
                    let d = if i == last {
                        self.end.duration_since(t.started)
                    } else {
                        t.header.or(t.connect).unwrap_or_default()
                    };
                    out.push_str(&secs(d));
                }
            }
            Var::GzipRatio => {
                if let Some((zin, zout)) = self.gzip.filter(|&(_, zout)| zout > 0) {
                    // nginx's two decimals, rounded half up from the third.
                    let (mut int, mut frac) = (zin / zout, zin * 100 / zout % 100);
                    if zin * 1000 / zout % 10 > 4 {
                        frac += 1;
                        if frac > 99 {
                            int += 1;
                            frac = 0;
                        }
                    }
                    let _ = write!(out, "{int}.{frac:02}");
                }
            }
            Var::SentHttp(name) => append_header(self.response_headers.as_ref(), name, out),
            Var::UpstreamHttp(name) => append_header(self.upstream_headers.as_ref(), name, out),
            Var::SentTrailer(name) | Var::UpstreamTrailer(name) => {
                append_header(self.trailers.as_ref(), name, out)
            }
            _ => {}
        }
    }
}

fn append_header(headers: Option<&HeaderMap>, name: &str, out: &mut String) {
    if let Some(v) = headers.and_then(|h| h.get(name)) {
        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
}

/// A request waiting for its response to end, with what its log lines need.
pub struct Pending {
    pub logs: Arc<crate::snapshot::Route>,
    pub conn: Arc<ConnInfo>,
    pub parts: http::request::Parts,
    pub host: String,
    pub server_name: String,
    pub proxy_host: String,
    pub path: String,
    pub sets: Vec<(Arc<str>, String)>,
    pub state: crate::proxy::RequestState,
    /// `$args` after a `rewrite` (`$uri` is `path`).
    pub rewritten: Option<crate::rewrite::Rewritten>,
    pub done: Done,
}

impl Pending {
    /// Writes one line to each log, with `body_bytes` sent.
    pub fn finish(mut self, body_bytes: u64) {
        self.done.body_bytes = body_bytes;
        self.done.end = Instant::now();
        let captures = crate::proxy::Captures::of(&self.logs);
        let ctx = RequestCtx {
            captures: &captures,
            conn: &self.conn,
            parts: &self.parts,
            fields: None,
            host: &self.host,
            server_name: &self.server_name,
            proxy_host: &self.proxy_host,
            path: &self.path,
            done: Some(&self.done),
            sets: &self.sets,
            state: &self.state,
            root: &self.logs.conf.root,
            rewritten: self.rewritten.as_ref(),
            subrequest: false,
        };
        self.logs.access_log.write(&ctx);
    }
}

impl AccessLogs {
    /// Writes one line to each log, its variables read from `vars` (a request's, or a stream
    /// session's).
    pub fn write(&self, vars: &dyn crate::vars::Vars) {
        let mut line = String::with_capacity(256);
        for log in &self.logs {
            line.clear();
            if let Some(condition) = &log.condition {
                // nginx's `if=`: an empty value or "0" skips the line.
                condition.render_into(vars, &mut line);
                if line.is_empty() || line == "0" {
                    continue;
                }
                line.clear();
            }
            log.template.render_escaped(vars, log.escape, &mut line);
            line.push('\n');
            log.file.write_line(line.as_bytes());
        }
    }
}
