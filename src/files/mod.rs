//! Files from disk for a location with no handler of its own (no `proxy_pass`, `return`,
//! `api`...), as nginx's content phase serves them: `try_files`, then the index module for a
//! `$uri` ending in `/` (`index`, `autoindex`), then the static module (`root`/`alias`,
//! `types`, `Last-Modified`, `etag`), with the not-modified and range filters applied to the
//! answer ([`conditional`], [`range`]).
//!
//! The file name is made from `$uri` as [`crate::route::normalize_path`] left it: decoded, dot
//! segments resolved, never above `/` (a request that tries is refused with 400 before it gets
//! here), and free of NUL. So `root + $uri` stays under the root whatever the encoding of the
//! request (`%2e%2e`, `%2f`, double encoding); only a symbolic link inside the root can lead
//! out of it, which `disable_symlinks` controls.

pub mod autoindex;
pub mod body;
pub mod conditional;
pub mod range;

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::FastMap;
use crate::config::model::{DisableSymlinks, FilesConf, GzipStatic, LocationConf};
use crate::log;
use crate::proxy::error::error_page;
use crate::proxy::{RequestCtx, ResponseBody};
use crate::snapshot::Route;
use crate::vars::{Scope, Template};

pub use body::FileBody;

/// A file up to this size is read whole as it is opened (one read); a larger one is sent in
/// chunks of this size as the client takes them (or with `sendfile`).
pub const CHUNK: u64 = 64 * 1024;

/// A location's file settings with their variables found once.
pub struct Files {
    root: Template,
    alias: Option<Template>,
    index: Vec<Template>,
    try_files: Vec<Template>,
    /// `types` as ready field values (a clone is a reference count), and `default_type`.
    types: FastMap<String, HeaderValue>,
    default_type: HeaderValue,
}

impl Files {
    pub fn compile(conf: &LocationConf, scope: &Scope) -> Result<Self, String> {
        let files = &conf.files;
        let compile = |t: &String| Template::compile_in(t, scope);
        let value = |t: &str| {
            HeaderValue::from_maybe_shared(Bytes::copy_from_slice(t.as_bytes()))
                .map_err(|_| format!("invalid MIME type \"{t}\""))
        };
        Ok(Self {
            root: compile(&conf.root)?,
            alias: files.alias.as_ref().map(compile).transpose()?,
            index: files.index.iter().map(compile).collect::<Result<_, _>>()?,
            try_files: files
                .try_files
                .iter()
                .map(compile)
                .collect::<Result<_, _>>()?,
            types: files
                .types
                .iter()
                .map(|(ext, t)| Ok((ext.clone(), value(t)?)))
                .collect::<Result<_, String>>()?,
            default_type: value(&conf.default_type)?,
        })
    }
}

/// What the content phase decided.
pub enum Served {
    Response(Response<ResponseBody>),
    /// An internal redirect: to a URI (with its own `?args`, or keeping the request's), or to
    /// a named location (`@name`).
    Redirect(String),
}

impl From<Response<ResponseBody>> for Served {
    fn from(r: Response<ResponseBody>) -> Self {
        Served::Response(r)
    }
}

fn status(code: StatusCode) -> Served {
    Served::Response(error_page(code))
}

/// Answers `ctx`'s request from the files of `route`.
pub fn serve(ctx: &RequestCtx<'_>, route: &Route, files: &Files) -> Served {
    let method = &ctx.parts.method;
    if !(method == Method::GET || method == Method::HEAD || method == Method::POST) {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let conf = &route.conf.files;
    let mut found = None;
    if let Some((last, tries)) = files.try_files.split_last() {
        match try_files(ctx, route, files, tries) {
            Some(hit) => found = Some(hit),
            None => {
                let target = last.render(ctx);
                if let Some(code) = target.strip_prefix('=') {
                    let code = code.parse().unwrap_or(500);
                    return status(StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND));
                }
                return Served::Redirect(target);
            }
        }
    }
    let (uri, path) = match &found {
        Some((uri, path)) => (uri.as_str(), path.clone()),
        None => (ctx.path, map_path(ctx, route, files, ctx.path)),
    };
    if uri.ends_with('/') {
        return index(ctx, route, files, uri, &path);
    }
    file(ctx, conf, files, uri, &path)
}

/// The file name for `uri`: the root and `uri`, or the alias and what follows the location's
/// prefix (in a regex location, the alias alone: its captures say which file).
fn map_path(ctx: &RequestCtx<'_>, route: &Route, files: &Files, uri: &str) -> String {
    match &files.alias {
        Some(alias) => {
            let mut path = alias.render(ctx);
            if route.regex.is_none() {
                let skip = route.prefix.as_ref().map_or(0, |p| p.len());
                path.push_str(uri.get(skip..).unwrap_or(""));
            }
            path
        }
        None => {
            let mut path = files.root.render(ctx);
            path.push_str(uri);
            path
        }
    }
}

/// `try_files`' file checks: the first that exists as it says (a file, or a directory when
/// it ends in `/`) gives the URI and file name served.
fn try_files(
    ctx: &RequestCtx<'_>,
    route: &Route,
    files: &Files,
    tries: &[Template],
) -> Option<(String, String)> {
    let conf = &route.conf.files;
    let root = symlinks_root(ctx, conf, files);
    for t in tries {
        let name = t.render(ctx);
        let dir = name.ends_with('/');
        // With a prefix `alias`, a name under the location's prefix maps as `$uri` does.
        let path = map_path(ctx, route, files, &name);
        let test = path.trim_end_matches('/');
        let test = if test.is_empty() { "/" } else { test };
        match stat(test, conf, &root) {
            Ok(meta) if meta.is_dir() == dir => return Some((name, path)),
            _ => continue,
        }
    }
    None
}

/// The root as rendered for this request, where `disable_symlinks ... from=$document_root`
/// needs it (empty otherwise).
fn symlinks_root(ctx: &RequestCtx<'_>, conf: &FilesConf, files: &Files) -> String {
    match (&conf.disable_symlinks, &files.alias) {
        (
            DisableSymlinks::On {
                from_root: true, ..
            },
            Some(alias),
        ) => alias.render(ctx),
        (
            DisableSymlinks::On {
                from_root: true, ..
            },
            None,
        ) => files.root.render(ctx),
        _ => String::new(),
    }
}

/// The index module: the first `index` file that exists is an internal redirect to it; none:
/// a directory listing (`autoindex`), 403 for a directory, 404 when there is none.
fn index(ctx: &RequestCtx<'_>, route: &Route, files: &Files, uri: &str, dir: &str) -> Served {
    let conf = &route.conf.files;
    let root = symlinks_root(ctx, conf, files);
    for t in &files.index {
        let name = t.render(ctx);
        if name.starts_with('/') {
            return Served::Redirect(name);
        }
        let path = format!("{dir}{name}");
        match stat(&path, conf, &root) {
            Ok(_) => return Served::Redirect(format!("{uri}{name}")),
            Err(e) if matches!(e.raw_os_error(), Some(2 | 20 | 36)) => continue,
            Err(e) => {
                log_open_error(ctx, &path, &e);
                return status(open_status(&e));
            }
        }
    }
    match stat(dir, conf, &root) {
        Ok(meta) if meta.is_dir() => match conf.autoindex {
            Some(ai) => autoindex::respond(ctx, &route.conf, ai, uri, dir).into(),
            None => {
                log!(
                    Error,
                    "*{} directory index of \"{dir}\" is forbidden{}",
                    ctx.conn.id,
                    ctx.log_context(None)
                );
                status(StatusCode::FORBIDDEN)
            }
        },
        Ok(_) => status(StatusCode::NOT_FOUND),
        Err(e) => {
            if conf.log_not_found || open_status(&e) != StatusCode::NOT_FOUND {
                log!(
                    Error,
                    "*{} \"{dir}\" is not found ({}){}",
                    ctx.conn.id,
                    errno_text(&e),
                    ctx.log_context(None)
                );
            }
            status(open_status(&e))
        }
    }
}

/// The static module: the file at `path`, a 301 to `uri/` for a directory.
fn file(ctx: &RequestCtx<'_>, conf: &FilesConf, files: &Files, uri: &str, path: &str) -> Served {
    let root = match &conf.disable_symlinks {
        DisableSymlinks::On {
            from_root: true, ..
        } => ctx.root,
        _ => "",
    };
    // `gzip_static`: FILE.gz in place of FILE, for a client that takes gzip.
    let gz = match conf.gzip_static {
        GzipStatic::Off => None,
        GzipStatic::On if !accepts_gzip(ctx) => None,
        _ => open(&format!("{path}.gz"), conf, root)
            .ok()
            .filter(|(_, m)| m.is_file()),
    };
    let gzipped = gz.is_some();
    let (file, meta) = match gz.map_or_else(|| open(path, conf, root), Ok) {
        Ok(found) => found,
        Err(e) => {
            if conf.log_not_found || open_status(&e) != StatusCode::NOT_FOUND {
                log_open_error(ctx, path, &e);
            }
            return status(open_status(&e));
        }
    };
    if meta.is_dir() {
        let mut location = escape_uri(uri);
        location.push('/');
        if let Some(args) = ctx.args().filter(|a| !a.is_empty()) {
            location.push('?');
            location.push_str(args);
        }
        let mut response = error_page(StatusCode::MOVED_PERMANENTLY);
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        return response.into();
    }
    if !meta.is_file() {
        log!(
            Crit,
            "*{} \"{path}\" is not a regular file{}",
            ctx.conn.id,
            ctx.log_context(None)
        );
        return status(StatusCode::NOT_FOUND);
    }
    if ctx.parts.method == Method::POST {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    respond(ctx, conf, files, uri, file, &meta, gzipped).into()
}

/// A 200 for `file` (or 206, 304, 412, 416 as the request's conditions and ranges say).
fn respond(
    ctx: &RequestCtx<'_>,
    conf: &FilesConf,
    files: &Files,
    uri: &str,
    file: File,
    meta: &Metadata,
    gzipped: bool,
) -> Response<ResponseBody> {
    let size = meta.len();
    let mtime = meta.mtime();
    let (last_modified, etag) = validators(mtime, size, conf.etag);
    let content_type = content_type(uri, files);
    let validators = conditional::Validators {
        mtime,
        etag: etag.as_ref().and_then(|e| e.to_str().ok()),
    };
    if let Some(code) = conditional::check(&ctx.parts.headers, &validators, conf) {
        if code != StatusCode::NOT_MODIFIED {
            return error_page(code);
        }
        let mut r = Response::new(ResponseBody::empty());
        *r.status_mut() = code;
        r.headers_mut().insert(header::LAST_MODIFIED, last_modified);
        if let Some(etag) = etag {
            r.headers_mut().insert(header::ETAG, etag);
        }
        return r;
    }
    let head = ctx.parts.method == Method::HEAD;
    let mut response = Response::new(ResponseBody::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type.clone());
    headers.insert(header::LAST_MODIFIED, last_modified);
    if let Some(etag) = etag.clone() {
        headers.insert(header::ETAG, etag);
    }
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    let ranges = match conf.max_ranges {
        Some(0) => None,
        max => Some(range::wanted(
            &ctx.parts.headers,
            &validators,
            size,
            max.unwrap_or(u32::MAX),
        )),
    };
    let whole = match ranges {
        None => true,
        Some(range::Wanted::Whole) => {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            true
        }
        _ => false,
    };
    if whole && (head || size <= CHUNK) {
        // The usual small file: one read, no parts to keep.
        if head {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            return response;
        }
        match read_from(&file, &mut 0, 0, size as usize) {
            Ok(bytes) => *response.body_mut() = ResponseBody::full(bytes),
            Err(e) => {
                log!(
                    Crit,
                    "*{} read() failed ({}){}",
                    ctx.conn.id,
                    errno_text(&e),
                    ctx.log_context(None)
                );
                return error_page(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
        return response;
    }
    let body = match ranges {
        None | Some(range::Wanted::Whole) => FileBody::whole(file, size),
        Some(range::Wanted::Unsatisfiable) => {
            let mut r = error_page(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        Some(range::Wanted::Ranges(ranges)) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let content_type = content_type.to_str().unwrap_or("application/octet-stream");
            range::body(response.headers_mut(), file, size, &ranges, content_type)
        }
    };
    if head {
        let len = body.len();
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return response;
    }
    match body.into_full() {
        Ok(Ok(bytes)) => *response.body_mut() = ResponseBody::full(bytes),
        Ok(Err(e)) => {
            log!(
                Crit,
                "*{} read() failed ({}){}",
                ctx.conn.id,
                errno_text(&e),
                ctx.log_context(None)
            );
            return error_page(StatusCode::INTERNAL_SERVER_ERROR);
        }
        Err(mut body) => {
            body.sendfile = conf.sendfile;
            *response.body_mut() = ResponseBody::file(body);
        }
    }
    response
}

/// `Last-Modified` and `ETag` (with `etag on`) of a file, made once per thread for the last
/// file's time and size: the next request for the same file pays for neither.
fn validators(mtime: i64, size: u64, etag: bool) -> (HeaderValue, Option<HeaderValue>) {
    type Last = Option<(i64, u64, HeaderValue, HeaderValue)>;
    thread_local! {
        static LAST: std::cell::RefCell<Last> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let (date, tag) = match &*last {
            Some((m, s, date, tag)) if *m == mtime && *s == size => (date.clone(), tag.clone()),
            _ => {
                let at = UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
                let date = Bytes::from(httpdate::fmt_http_date(at));
                let tag = Bytes::from(format!("\"{:x}-{:x}\"", mtime.max(0), size));
                let (Ok(date), Ok(tag)) = (
                    HeaderValue::from_maybe_shared(date),
                    HeaderValue::from_maybe_shared(tag),
                ) else {
                    return (HeaderValue::from_static(""), None);
                };
                *last = Some((mtime, size, date.clone(), tag.clone()));
                (date, tag)
            }
        };
        (date, etag.then_some(tag))
    })
}

/// The type `types` gives the extension of `uri`'s last segment (lowercase), else
/// `default_type`.
fn content_type<'f>(uri: &str, files: &'f Files) -> &'f HeaderValue {
    let last = uri.rsplit('/').next().unwrap_or("");
    let Some((_, ext)) = last.rsplit_once('.') else {
        return &files.default_type;
    };
    let found = if ext.bytes().any(|b| b.is_ascii_uppercase()) {
        files.types.get(&ext.to_ascii_lowercase())
    } else {
        files.types.get(ext)
    };
    found.unwrap_or(&files.default_type)
}

/// Whether the request says it takes gzip (`Accept-Encoding: gzip` without `q=0`), over
/// HTTP/1.1 or later (nginx's `gzip_http_version 1.1`).
fn accepts_gzip(ctx: &RequestCtx<'_>) -> bool {
    if ctx.parts.version < http::Version::HTTP_11 {
        return false;
    }
    ctx.parts
        .headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            coding.eq_ignore_ascii_case("gzip") && !q_zero
        })
}

/// Opens `path` for reading under `disable_symlinks`; its metadata from the open file.
fn open(path: &str, conf: &FilesConf, root: &str) -> io::Result<(File, Metadata)> {
    let mut options = File::options();
    options.read(true);
    if let DisableSymlinks::On { owner, .. } = conf.disable_symlinks {
        check_links(path, root, owner)?;
        if !owner {
            options.custom_flags(nix::libc::O_NOFOLLOW);
        }
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// The metadata of `path` (following links unless `disable_symlinks` forbids them).
fn stat(path: &str, conf: &FilesConf, root: &str) -> io::Result<Metadata> {
    if let DisableSymlinks::On { owner, from_root } = conf.disable_symlinks {
        check_links(path, if from_root { root } else { "" }, owner)?;
    }
    std::fs::metadata(path)
}

/// `disable_symlinks on`: no component of `path` after `from` may be a symbolic link
/// (`if_not_owner`: unless the link and what it points to have one owner). nginx opens each
/// component with `O_NOFOLLOW`; imbang looks at each with `lstat`, and opens the file itself
/// with `O_NOFOLLOW` (a link swapped in for a directory between the look and the open is not
/// caught).
fn check_links(path: &str, from: &str, owner: bool) -> io::Result<()> {
    let from = from.trim_end_matches('/');
    let start = if !from.is_empty() && path.starts_with(from) {
        from.len()
    } else {
        0
    };
    let mut at = start;
    let bytes = path.as_bytes();
    while at < bytes.len() {
        let end = bytes[at + 1..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |p| at + 1 + p);
        let prefix = &path[..end];
        at = end;
        if prefix.is_empty() || prefix.ends_with('/') {
            continue;
        }
        let meta = match std::fs::symlink_metadata(prefix) {
            Ok(m) => m,
            // A missing component: the open that follows says so.
            Err(_) => return Ok(()),
        };
        if meta.file_type().is_symlink() {
            let allowed =
                owner && std::fs::metadata(prefix).is_ok_and(|target| target.uid() == meta.uid());
            if !allowed {
                return Err(io::Error::from_raw_os_error(nix::libc::ELOOP));
            }
        }
    }
    Ok(())
}

/// nginx's status for a failed open: 404 for a missing file, 403 for one it may not read
/// (or a link `disable_symlinks` refuses), 500 otherwise.
fn open_status(e: &io::Error) -> StatusCode {
    use nix::libc::{EACCES, ELOOP, EMLINK, ENAMETOOLONG, ENOENT, ENOTDIR};
    match e.raw_os_error() {
        Some(ENOENT | ENOTDIR | ENAMETOOLONG) => StatusCode::NOT_FOUND,
        Some(EACCES | EMLINK | ELOOP) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `2: No such file or directory`, as nginx writes an error number.
fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{n}: {}", nix::errno::Errno::from_raw(n).desc()),
        None => e.to_string(),
    }
}

fn log_open_error(ctx: &RequestCtx<'_>, path: &str, e: &io::Error) {
    log!(
        Error,
        "*{} open() \"{path}\" failed ({}){}",
        ctx.conn.id,
        errno_text(e),
        ctx.log_context(None)
    );
}

/// `uri` with the bytes nginx's `NGX_ESCAPE_URI` escapes (space, `#`, `%`, `?`, controls,
/// non-ASCII) as `%XX`, for a `Location`.
pub fn escape_uri(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    for &b in uri.as_bytes() {
        if b <= b' ' || b >= 0x7f || matches!(b, b'#' | b'%' | b'?' | b'"') {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The seconds of `t` since the epoch.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Reads `len` bytes at `offset` of `file`, whose read position is `*pos` (moved only when it
/// is elsewhere). Read into a fresh buffer's spare capacity by `read_to_end`, which std does
/// without zeroing it first (a zeroed buffer cost as many instructions as the file has bytes).
pub(crate) fn read_from(file: &File, pos: &mut u64, offset: u64, len: usize) -> io::Result<Bytes> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut reader = file;
    if *pos != offset {
        reader.seek(SeekFrom::Start(offset))?;
        *pos = offset;
    }
    let mut buf = Vec::with_capacity(len);
    let read = reader.take(len as u64).read_to_end(&mut buf);
    *pos += buf.len() as u64;
    read?;
    if buf.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}
