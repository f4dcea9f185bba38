//! nginx's range filter for a file: `Range: bytes=...` (one range: 206 with `Content-Range`;
//! several: `multipart/byteranges`), 416 with `Content-Range: bytes */length` when none is
//! satisfiable, `If-Range`, `max_ranges`.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use super::body::{FileBody, Part};
use super::conditional::{Validators, http_time};

/// What the request's `Range` asks of a file of some length.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    /// No (usable) `Range`, or one nginx answers with the whole file.
    Whole,
    Unsatisfiable,
    /// Byte ranges `[start, end)`, in the request's order.
    Ranges(Vec<(u64, u64)>),
}

/// The ranges to send of a file of `size` bytes, at most `max` of them.
pub fn wanted(headers: &HeaderMap, v: &Validators<'_>, size: u64, max: u32) -> Wanted {
    let Some(range) = headers.get(header::RANGE).map(|r| r.as_bytes()) else {
        return Wanted::Whole;
    };
    if range.len() < 7 || !range[..6].eq_ignore_ascii_case(b"bytes=") {
        return Wanted::Whole;
    }
    if let Some(if_range) = headers.get(header::IF_RANGE).map(|r| r.as_bytes()) {
        let same = if if_range.len() >= 2 && if_range.ends_with(b"\"") {
            v.etag.is_some_and(|e| e.as_bytes() == if_range)
        } else {
            http_time(if_range) == Some(v.mtime)
        };
        if !same {
            return Wanted::Whole;
        }
    }
    parse(&range[6..], size, max)
}

/// `ngx_http_range_parse`: ranges past the end are cut to it, a suffix range (`-n`) counts
/// from the end; more ranges than `max`, or more bytes than the file has, are answered with
/// the whole file; no satisfiable range (or a syntax error) is 416.
pub fn parse(spec: &[u8], size: u64, max: u32) -> Wanted {
    let mut ranges = Vec::new();
    let mut total: u64 = 0;
    let mut left = max;
    let mut p = 0;
    let at = |p: usize| spec.get(p).copied().unwrap_or(0);
    let number = |p: &mut usize| -> Option<u64> {
        let mut n: u64 = 0;
        if !at(*p).is_ascii_digit() {
            return None;
        }
        while at(*p).is_ascii_digit() {
            n = n.checked_mul(10)?.checked_add(u64::from(at(*p) - b'0'))?;
            if n > i64::MAX as u64 {
                return None;
            }
            *p += 1;
        }
        Some(n)
    };
    let spaces = |p: &mut usize| {
        while at(*p) == b' ' {
            *p += 1;
        }
    };
    loop {
        spaces(&mut p);
        let (start, end);
        if at(p) != b'-' {
            let Some(s) = number(&mut p) else {
                return Wanted::Unsatisfiable;
            };
            spaces(&mut p);
            if at(p) != b'-' {
                return Wanted::Unsatisfiable;
            }
            p += 1;
            spaces(&mut p);
            if at(p) == b',' || at(p) == 0 {
                start = s;
                end = size;
            } else {
                let Some(e) = number(&mut p) else {
                    return Wanted::Unsatisfiable;
                };
                spaces(&mut p);
                if at(p) != b',' && at(p) != 0 {
                    return Wanted::Unsatisfiable;
                }
                start = s;
                end = if e >= size { size } else { e + 1 };
            }
        } else {
            p += 1;
            let Some(e) = number(&mut p) else {
                return Wanted::Unsatisfiable;
            };
            spaces(&mut p);
            if at(p) != b',' && at(p) != 0 {
                return Wanted::Unsatisfiable;
            }
            start = size.saturating_sub(e);
            end = size;
        }
        if start < end {
            ranges.push((start, end));
            total += end - start;
            if left == 0 {
                return Wanted::Whole;
            }
            left -= 1;
        } else if start == 0 {
            return Wanted::Whole;
        }
        if at(p) != b',' {
            break;
        }
        p += 1;
    }
    if ranges.is_empty() {
        return Wanted::Unsatisfiable;
    }
    if total > size {
        return Wanted::Whole;
    }
    Wanted::Ranges(ranges)
}

/// The boundary of the next multipart answer (nginx numbers them too).
static BOUNDARY: AtomicU64 = AtomicU64::new(1);

/// The 206's fields and body for `ranges` of `file`.
pub fn body(
    headers: &mut HeaderMap,
    file: File,
    size: u64,
    ranges: &[(u64, u64)],
    content_type: &str,
) -> FileBody {
    if let [(start, end)] = ranges {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            headers.insert(header::CONTENT_RANGE, v);
        }
        return FileBody::of(
            file,
            vec![Part::File {
                offset: *start,
                len: end - start,
            }],
        );
    }
    let boundary = format!("{:020}", BOUNDARY.fetch_add(1, Ordering::Relaxed));
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}")) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for (start, end) in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{}/{size}\r\n\r\n",
            end - 1
        );
        parts.push(Part::Bytes(Bytes::from(head)));
        parts.push(Part::File {
            offset: *start,
            len: end - start,
        });
    }
    parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    FileBody::of(file, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_nginx_parses_them() {
        let r = |s: &str| parse(s.as_bytes(), 100, u32::MAX);
        assert_eq!(r("0-9"), Wanted::Ranges(vec![(0, 10)]));
        assert_eq!(r("90-"), Wanted::Ranges(vec![(90, 100)]));
        assert_eq!(r("-10"), Wanted::Ranges(vec![(90, 100)]));
        assert_eq!(r("-200"), Wanted::Ranges(vec![(0, 100)]));
        assert_eq!(r("95-200"), Wanted::Ranges(vec![(95, 100)]));
        assert_eq!(r("100-"), Wanted::Unsatisfiable);
        assert_eq!(r("100-200"), Wanted::Unsatisfiable);
        assert_eq!(r("0-0,-1"), Wanted::Ranges(vec![(0, 1), (99, 100)]));
        assert_eq!(r(" 0 - 1 , 5-6"), Wanted::Ranges(vec![(0, 2), (5, 7)]));
        assert_eq!(r("5-3"), Wanted::Unsatisfiable);
        assert_eq!(r("abc"), Wanted::Unsatisfiable);
        assert_eq!(r("0-1x"), Wanted::Unsatisfiable);
        assert_eq!(r("0-99,0-99"), Wanted::Whole); // more bytes than the file
        assert_eq!(parse(b"0-1,2-3", 100, 1), Wanted::Whole);
        assert_eq!(parse(b"0-1", 100, 1), Wanted::Ranges(vec![(0, 2)]));
        assert_eq!(parse(b"0-", 0, 10), Wanted::Whole);
        assert_eq!(r("99999999999999999999-"), Wanted::Unsatisfiable);
    }
}
