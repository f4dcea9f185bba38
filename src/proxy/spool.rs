//! `proxy_request_buffering on` (nginx's default): the whole request body is read before the
//! first peer is tried — in memory up to `client_body_buffer_size`, in a temporary file in
//! `client_body_temp_path` beyond — so that a failed attempt can send it again, whole, to the
//! next peer (`proxy_next_upstream`), and a chunked body goes upstream with its length.
//!
//! The file has no name (`O_TMPFILE` where the file system has it, else created and unlinked
//! at once): nothing is left behind when the request ends or the process dies, and another
//! user of the directory cannot open it. Every attempt reads it from the start, at positions of
//! its own ([`Spooled::body`]).

use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;

use super::ProxyError;
use crate::http1::RequestBody;
use crate::pool::UpstreamBody;
use crate::pool::body::FileBody;

/// A request body read whole: in memory, or in an unnamed file.
#[derive(Debug)]
pub enum Spooled {
    Memory(Bytes),
    File { file: Arc<std::fs::File>, len: u64 },
}

/// Why reading the body failed, for the error log's line and the client's status.
#[derive(Debug)]
pub enum SpoolError {
    /// More than `client_max_body_size` arrived (413).
    TooLarge,
    /// The client paused longer than `client_body_timeout` (408).
    Timeout,
    /// Broken framing, or the connection closed mid-body (400).
    Broken,
    /// The temporary file could not be created or written (500).
    File(std::io::Error),
}

impl From<SpoolError> for ProxyError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::TooLarge => ProxyError::BodyTooLarge,
            SpoolError::Timeout => ProxyError::ClientTimeout,
            SpoolError::Broken => ProxyError::BadRequest("invalid request body"),
            SpoolError::File(e) => ProxyError::BodyFile(e),
        }
    }
}

/// Reads `body` to its end: bytes in memory while they fit in `memory`, all of them in a
/// file in `dir` once they do not. `limit` is `client_max_body_size` (0: none), checked as the
/// bytes arrive (a chunked body has no length to check first); `timeout` is the longest pause
/// between two reads.
pub async fn read(
    mut body: RequestBody,
    memory: u64,
    limit: u64,
    timeout: Duration,
    dir: &Path,
) -> Result<Spooled, SpoolError> {
    let mut kept = BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut len = 0u64;
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(SpoolError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(SpoolError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers are not passed on by a buffered body (nginx does not pass them either).
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len() as u64;
        if limit > 0 && len > limit {
            return Err(SpoolError::TooLarge);
        }
        match file.as_mut() {
            None if len <= memory => kept.extend_from_slice(&data),
            None => {
                let mut f = tokio::fs::File::from_std(create(dir).map_err(SpoolError::File)?);
                f.write_all(&kept).await.map_err(SpoolError::File)?;
                f.write_all(&data).await.map_err(SpoolError::File)?;
                kept = BytesMut::new();
                file = Some(f);
            }
            Some(f) => f.write_all(&data).await.map_err(SpoolError::File)?,
        }
    }
    match file {
        None => Ok(Spooled::Memory(kept.freeze())),
        Some(mut f) => {
            f.flush().await.map_err(SpoolError::File)?;
            let file = f.into_std().await;
            Ok(Spooled::File {
                file: Arc::new(file),
                len,
            })
        }
    }
}

/// An unnamed file in `dir`, readable and writable only through the descriptor returned.
fn create(dir: &Path) -> std::io::Result<std::fs::File> {
    tempfile::tempfile_in(dir)
}

impl Spooled {
    /// The bytes kept in memory (`$request_body` has a value only then, as in nginx).
    pub fn in_memory(&self) -> Option<&Bytes> {
        match self {
            Self::Memory(bytes) => Some(bytes),
            Self::File { .. } => None,
        }
    }

    /// Its length in bytes (sent as the `Content-Length`).
    pub fn size(&self) -> u64 {
        match self {
            Self::Memory(bytes) => bytes.len() as u64,
            Self::File { len, .. } => *len,
        }
    }

    /// The body for one attempt, from its first byte.
    pub fn body(&self) -> UpstreamBody {
        match self {
            Self::Memory(bytes) if bytes.is_empty() => UpstreamBody::Empty,
            Self::Memory(bytes) => UpstreamBody::Full(Some(bytes.clone())),
            Self::File { file, len } => UpstreamBody::File(FileBody::new(file.clone(), *len)),
        }
    }
}

/// Every `client_body_temp_path` the configuration sets, made now (mode 0700, with its
/// parents) if missing, as nginx's master makes its paths at start: what the process hands to
/// the `user` it becomes when it starts as root. A directory that cannot be made is left out
/// (a body that needs it is answered 500, with the reason in the error log).
pub fn temp_paths(config: &crate::config::model::Config) -> Vec<std::path::PathBuf> {
    use crate::config::model::{Location, LocationConf};
    fn visit(conf: &LocationConf, locations: &[Location], out: &mut Vec<std::path::PathBuf>) {
        let dir = &*conf.client_body_temp_path;
        if *dir != std::env::temp_dir() && !out.iter().any(|d| d == dir) {
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
            if made.is_ok() {
                out.push(dir.clone());
            }
        }
        for l in locations {
            visit(&l.conf, &l.locations, out);
        }
    }
    let mut out = Vec::new();
    for server in config.http.iter().flat_map(|h| &h.servers) {
        visit(&server.conf, &server.locations, &mut out);
    }
    out
}
