//! The access log: one line per request in a `log_format`, written when the response has been
//! sent (or the client went away), as nginx logs at request finalisation.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use crate::config::model::{AccessLogSpec, LogEscape};
use crate::proxy::{ConnInfo, RequestCtx};
use crate::vars::{Escape, Scope, Template, Var};

/// One open log file, shared by every format that writes to it.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    fn open(path: &PathBuf) -> Result<Self, String> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| crate::error_log::open_failed(path, &e))?;
        Ok(Self {
            path: path.clone(),
            file: Mutex::new(file),
        })
    }

    fn write_line(&self, line: &str) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            crate::log!(
                Alert,
                "write() to \"{}\" failed ({})",
                self.path.display(),
                crate::error_log::errno_text(&e)
            );
        }
    }

    /// Opens the file again (after logrotate moved it).
    pub fn reopen(&self) -> Result<(), String> {
        let fresh = Self::open(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) =
            fresh.file.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(())
    }
}

/// One `access_log` target compiled: its file and its format.
pub struct AccessLog {
    file: Arc<LogFile>,
    template: Template,
    escape: Escape,
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
}

impl LogCache {
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
        let file = cache
            .files
            .entry(spec.path.clone())
            .or_insert_with(|| match LogFile::open(&spec.path) {
                Ok(f) => Some(Arc::new(f)),
                Err(message) => {
                    errors.push((message, None));
                    None
                }
            })
            .clone();
        let (Some(template), Some(file)) = (template, file) else {
            continue;
        };
        out.needs.response_headers |= template.uses(|v| matches!(v, Var::SentHttp(_)));
        out.needs.upstream_headers |= template.uses(|v| matches!(v, Var::UpstreamHttp(_)));
        let escape = match format.escape {
            LogEscape::Default => Escape::Default,
            LogEscape::Json => Escape::Json,
            LogEscape::None => Escape::None,
        };
        out.logs.push(AccessLog {
            file,
            template,
            escape,
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
}

/// What forwarding records for the access log (nothing when the location does not log).
#[derive(Default)]
pub struct Record {
    pub enabled: bool,
    pub want_upstream_headers: bool,
    pub tries: Vec<UpstreamTry>,
    pub upstream_headers: Option<HeaderMap>,
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
            });
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
}

impl Done {
    /// Appends the value of a response-time variable.
    pub fn append(&self, var: &Var, out: &mut String) {
        use std::fmt::Write;
        let secs = |d: Duration| format!("{}.{:03}", d.as_secs(), d.subsec_millis());
        let list = |out: &mut String, f: &dyn Fn(&UpstreamTry) -> String| {
            for (i, t) in self.tries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&f(t));
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
            Var::UpstreamAddr => list(out, &|t| t.addr.to_string()),
            Var::UpstreamStatus => list(out, &|t| t.status.to_string()),
            Var::UpstreamConnectTime => list(out, &|t| t.connect.map_or("-".into(), secs)),
            Var::UpstreamHeaderTime => list(out, &|t| t.header.map_or("-".into(), secs)),
            Var::UpstreamResponseTime => {
                let last = self.tries.len().saturating_sub(1);
                for (i, t) in self.tries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let d = if i == last {
                        self.end.duration_since(t.started)
                    } else {
                        t.header.or(t.connect).unwrap_or_default()
                    };
                    out.push_str(&secs(d));
                }
            }
            Var::SentHttp(name) => append_header(self.response_headers.as_ref(), name, out),
            Var::UpstreamHttp(name) => append_header(self.upstream_headers.as_ref(), name, out),
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
    pub done: Done,
}

impl Pending {
    /// Writes one line to each log, with `body_bytes` sent.
    pub fn finish(mut self, body_bytes: u64) {
        self.done.body_bytes = body_bytes;
        self.done.end = Instant::now();
        let ctx = RequestCtx {
            conn: &self.conn,
            parts: &self.parts,
            host: &self.host,
            server_name: &self.server_name,
            proxy_host: &self.proxy_host,
            path: &self.path,
            done: Some(&self.done),
            sets: &self.sets,
        };
        let mut line = String::with_capacity(256);
        for log in &self.logs.access_log.logs {
            line.clear();
            log.template.render_escaped(&ctx, log.escape, &mut line);
            line.push('\n');
            log.file.write_line(&line);
        }
    }
}
