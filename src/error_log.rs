//! The error log in nginx's line format:
//! `2026/11/24 22:00:00 [error] 1234#0: *5 connect() failed (111: Connection refused) while ...`.
//!
//! One process-wide log, swapped as a whole when a reload changes `error_log` (and re-opened on
//! USR1). Use the macros: `log_error!(Error, "...")`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use crate::config::model::{ErrorLogSpec, LogLevel, LogTarget};

/// Where log lines go: every sink whose level admits the line gets it.
#[derive(Debug)]
pub struct ErrorLog {
    sinks: Vec<Sink>,
}

#[derive(Debug)]
struct Sink {
    level: LogLevel,
    out: Out,
}

#[derive(Debug)]
enum Out {
    Stderr,
    File {
        path: PathBuf,
        file: Mutex<File>,
    },
    /// Each line one datagram, its level as the severity (nginx's `ngx_syslog_writer`).
    Syslog(crate::syslog::Syslog),
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl ErrorLog {
    /// Logs to standard error at `level` and above.
    pub fn stderr(level: LogLevel) -> Self {
        Self {
            sinks: vec![Sink {
                level,
                out: Out::Stderr,
            }],
        }
    }

    /// Opens (creating if needed) every file target. Fails with the path in the message.
    pub fn open(specs: &[ErrorLogSpec]) -> Result<Self, String> {
        let mut sinks = Vec::with_capacity(specs.len());
        for spec in specs {
            let out = match &spec.target {
                LogTarget::Stderr => Out::Stderr,
                LogTarget::File(path) => Out::File {
                    file: Mutex::new(open_append(path).map_err(|e| open_failed(path, &e))?),
                    path: path.clone(),
                },
                LogTarget::Syslog(spec) => Out::Syslog(crate::syslog::Syslog::open(spec)?),
            };
            sinks.push(Sink {
                level: spec.level,
                out,
            });
        }
        Ok(Self { sinks })
    }

    /// Opens the same files again (after logrotate moved them away). A file that cannot be
    /// opened (the directory is root's and the process no longer is) keeps its old descriptor;
    /// the others are reopened all the same.
    pub fn reopen(&self) -> Result<(), String> {
        let mut failed = Vec::new();
        for sink in &self.sinks {
            if let Out::File { path, file } = &sink.out {
                match open_append(path) {
                    Ok(fresh) => *file.lock().unwrap_or_else(|p| p.into_inner()) = fresh,
                    Err(e) => failed.push(open_failed(path, &e)),
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("\n"))
        }
    }

    /// The files this log writes to.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.sinks.iter().filter_map(|s| match &s.out {
            Out::File { path, .. } => Some(path.as_path()),
            Out::Stderr | Out::Syslog(_) => None,
        })
    }

    fn enabled(&self, level: LogLevel) -> bool {
        self.sinks.iter().any(|s| level <= s.level)
    }

    fn write(&self, level: LogLevel, args: fmt::Arguments<'_>) {
        let line = format!(
            "{} [{}] {}#0: {}\n",
            chrono::Local::now().format("%Y/%m/%d %H:%M:%S"),
            level.as_str(),
            std::process::id(),
            args
        );
        for sink in self.sinks.iter().filter(|s| level <= s.level) {
            // A log that cannot be written has nowhere to report to; the line is dropped.
            let _ = match &sink.out {
                Out::Stderr => io::stderr().write_all(line.as_bytes()),
                Out::File { file, .. } => file
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write_all(line.as_bytes()),
                // The severity is the line's level (emerg 0 … debug 7).
                Out::Syslog(syslog) => syslog.send(line.as_bytes(), Some(level as u8)),
            };
        }
    }
}

/// nginx's wording for a file that cannot be opened: `open() "/x" failed (13: Permission denied)`.
pub fn open_failed(path: &Path, e: &io::Error) -> String {
    format!("open() \"{}\" failed ({})", path.display(), errno_text(e))
}

/// `111: Connection refused`, as nginx prints OS errors.
pub fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = e.to_string();
            // std formats as "Connection refused (os error 111)".
            let text = text.split(" (os error").next().unwrap_or(&text);
            format!("{code}: {text}")
        }
        None => e.to_string(),
    }
}

fn current() -> &'static ArcSwap<ErrorLog> {
    static CURRENT: OnceLock<ArcSwap<ErrorLog>> = OnceLock::new();
    CURRENT.get_or_init(|| ArcSwap::from_pointee(ErrorLog::stderr(LogLevel::Notice)))
}

/// Makes `log` the process's error log.
pub fn install(log: ErrorLog) {
    current().store(Arc::new(log));
}

/// Re-opens the current log files (USR1).
pub fn reopen() -> Result<(), String> {
    current().load().reopen()
}

/// Writes one line if any sink admits `level`. Prefer the `log_*!` macros.
pub fn log(level: LogLevel, args: fmt::Arguments<'_>) {
    let log = current().load();
    if log.enabled(level) {
        log.write(level, args);
    }
}

/// `log!(Error, "connect() failed ({})", e)` — the level is a [`LogLevel`] variant name.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {
        $crate::error_log::log($crate::config::model::LogLevel::$level, format_args!($($arg)*))
    };
}
