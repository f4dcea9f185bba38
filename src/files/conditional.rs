//! nginx's not-modified filter for a file: `If-Unmodified-Since` and `If-Match` (412), then
//! `If-Modified-Since` (`if_modified_since exact|before|off`) and `If-None-Match` (304).

use http::{HeaderMap, StatusCode, header};

use crate::config::model::{FilesConf, IfModifiedSince};

/// What a file's answer can be compared by.
pub struct Validators<'a> {
    /// `Last-Modified`, seconds since the epoch.
    pub mtime: i64,
    /// `ETag`, when `etag on`.
    pub etag: Option<&'a str>,
}

/// A date field's value in seconds, as `ngx_parse_http_time` reads it; `None`: unreadable
/// (nginx's -1, which equals no file's time).
pub fn http_time(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    httpdate::parse_http_date(text.trim())
        .ok()
        .map(super::unix_secs)
}

/// 412 or 304 when the request's conditions say so; `None`: the whole answer.
pub fn check(headers: &HeaderMap, v: &Validators<'_>, conf: &FilesConf) -> Option<StatusCode> {
    if let Some(ius) = headers.get(header::IF_UNMODIFIED_SINCE) {
        // An unreadable date is before every file (nginx's -1): 412.
        if http_time(ius.as_bytes()).is_none_or(|t| t < v.mtime) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    }
    if let Some(im) = headers.get(header::IF_MATCH) {
        if !matches(im.as_bytes(), v.etag, false) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    }
    let ims = headers.get(header::IF_MODIFIED_SINCE);
    let inm = headers.get(header::IF_NONE_MATCH);
    if ims.is_none() && inm.is_none() {
        return None;
    }
    if let Some(ims) = ims {
        if modified(ims.as_bytes(), v.mtime, conf.if_modified_since) {
            return None;
        }
    }
    if let Some(inm) = inm {
        if !matches(inm.as_bytes(), v.etag, true) {
            return None;
        }
    }
    Some(StatusCode::NOT_MODIFIED)
}

/// Whether the file counts as modified since `ims`.
fn modified(ims: &[u8], mtime: i64, mode: IfModifiedSince) -> bool {
    let ims = match mode {
        IfModifiedSince::Off => return true,
        _ => http_time(ims),
    };
    match ims {
        Some(t) if t == mtime => false,
        Some(t) => mode == IfModifiedSince::Exact || t < mtime,
        None => true,
    }
}

/// Whether `list` (`*`, or entity tags separated by commas) names `etag`; `weak`: `W/` on
/// either side is ignored (`If-None-Match`'s weak comparison).
pub fn matches(list: &[u8], etag: Option<&str>, weak: bool) -> bool {
    if list == b"*" {
        return true;
    }
    let Some(etag) = etag else {
        return false;
    };
    let mut etag = etag.as_bytes();
    if weak && etag.len() > 2 && etag.starts_with(b"W/") {
        etag = &etag[2..];
    }
    list.split(|&b| b == b',').any(|item| {
        let mut item = item.trim_ascii();
        if weak && item.len() > 2 && item.starts_with(b"W/") {
            item = &item[2..];
        }
        item == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists_compare_as_nginx_does() {
        let e = Some("\"5f-10\"");
        assert!(matches(b"*", None, true));
        assert!(matches(b"\"5f-10\"", e, false));
        assert!(matches(b"\"a\", \"5f-10\"", e, false));
        assert!(matches(b"W/\"5f-10\"", e, true));
        assert!(!matches(b"W/\"5f-10\"", e, false));
        assert!(!matches(b"\"5f-1\"", e, true));
        assert!(!matches(b"\"5f-10\"", None, true));
    }

    #[test]
    fn if_modified_since_modes() {
        let t = http_time(b"Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert!(!modified(
            b"Sun, 06 Nov 1994 08:49:37 GMT",
            t,
            IfModifiedSince::Exact
        ));
        assert!(modified(
            b"Sun, 06 Nov 1994 08:49:38 GMT",
            t,
            IfModifiedSince::Exact
        ));
        assert!(!modified(
            b"Sun, 06 Nov 1994 08:49:38 GMT",
            t,
            IfModifiedSince::Before
        ));
        assert!(modified(
            b"Sun, 06 Nov 1994 08:49:36 GMT",
            t,
            IfModifiedSince::Before
        ));
        assert!(modified(
            b"Sun, 06 Nov 1994 08:49:37 GMT",
            t,
            IfModifiedSince::Off
        ));
        assert!(modified(b"garbage", t, IfModifiedSince::Before));
    }
}
