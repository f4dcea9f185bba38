//! The request path as `location` matching sees it (nginx's `$uri`).

use std::borrow::Cow;

/// A request path nginx answers with 400 (`client sent invalid request`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("the path does not start with \"/\"")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the path")]
    BadEscape,
    /// A NUL byte, raw or as `%00`.
    #[error("NUL byte in the path")]
    Nul,
    /// A `..` segment above `/`.
    #[error("\"..\" above the root in the path")]
    AboveRoot,
    /// Percent-decoding produced bytes that are not UTF-8 (`/%FF`). nginx routes such bytes;
    /// imbang's `$uri` is a `str`, so it refuses them.
    #[error("the decoded path is not UTF-8")]
    NotUtf8,
}

/// `$uri` for routing, from the path of a request target with the `?query` already removed,
/// as nginx's `ngx_http_parse_complex_uri` makes it with `merge_slashes on`:
///
/// - `%XX` is decoded, and the decoded byte takes part in the steps below (`%2F` is a `/`,
///   `%2E%2E` is `..`), except a decoded `%`, `#` or `?`, which is plain data;
/// - runs of `/` become one;
/// - `.` segments are removed and `..` segments remove the segment before them
///   (`/a/b/../c` → `/a/c`, `/a/..` → `/`); a segment like `..a` or `a.` is plain data;
/// - a raw `?` or `#` ends the path (nginx: arguments, fragment).
///
/// `""` (an absolute URI with no path) gives `/`. A path none of these steps changes (the
/// usual one) is returned as it is; otherwise one allocation, the size of the input.
pub fn normalize_path(raw_path: &str) -> Result<Cow<'_, str>, UriError> {
    let input = raw_path.as_bytes();
    if input.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if input[0] != b'/' {
        return Err(UriError::NotAbsolute);
    }
    let plain = !input
        .iter()
        .any(|&b| matches!(b, b'%' | b'?' | b'#' | b'\0'))
        && !input
            .windows(2)
            .any(|w| w[0] == b'/' && (w[1] == b'/' || w[1] == b'.'));
    if plain {
        return Ok(Cow::Borrowed(raw_path));
    }
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    // Where the last byte written sits in a segment: just after a `/`, after `/.`, after
    // `/..`, or anywhere else.
    let mut state = Segment::Other;
    let mut i = 0;
    while i < input.len() {
        let mut c = input[i];
        i += 1;
        match c {
            b'?' | b'#' => break,
            b'\0' => return Err(UriError::Nul),
            b'%' => {
                let hi = input
                    .get(i)
                    .copied()
                    .and_then(hex)
                    .ok_or(UriError::BadEscape)?;
                let lo = input
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .ok_or(UriError::BadEscape)?;
                i += 2;
                c = hi << 4 | lo;
                if c == b'\0' {
                    return Err(UriError::Nul);
                }
                // A decoded `%`, `?` or `#` falls through as plain data: only raw ones
                // end the path above, and nothing decodes twice.
            }
            _ => {}
        }
        state = match (state, c) {
            (Segment::Slash, b'/') => Segment::Slash,
            (Segment::Dot, b'/') => {
                out.pop(); // the `.` of `/./`
                Segment::Slash
            }
            (Segment::DotDot, b'/') => {
                pop_segment(&mut out)?;
                Segment::Slash
            }
            (Segment::Slash, b'.') => {
                out.push(c);
                Segment::Dot
            }
            (Segment::Dot, b'.') => {
                out.push(c);
                Segment::DotDot
            }
            (_, b'/') => {
                out.push(c);
                Segment::Slash
            }
            _ => {
                out.push(c);
                Segment::Other
            }
        };
    }
    match state {
        Segment::Dot => {
            out.pop(); // a final `/.` becomes `/`
        }
        Segment::DotDot => pop_segment(&mut out)?,
        Segment::Slash | Segment::Other => {}
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| UriError::NotUtf8)
}

#[derive(Clone, Copy)]
enum Segment {
    Slash,
    Dot,
    DotDot,
    Other,
}

/// `out` ends with `/..`: drop it and the segment before it, keeping that segment's `/`.
fn pop_segment(out: &mut Vec<u8>) -> Result<(), UriError> {
    // `out` is `…/seg/..`; the `/` of `/..` is at len-3, so `seg` ends at len-4.
    let before = out.len().checked_sub(3).ok_or(UriError::AboveRoot)?;
    let start = out[..before]
        .iter()
        .rposition(|&b| b == b'/')
        .ok_or(UriError::AboveRoot)?;
    out.truncate(start + 1);
    Ok(())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_path_follows_ngx_http_parse_complex_uri() {
        let cases: &[(&str, Result<&str, UriError>)] = &[
            ("", Ok("/")),
            ("/", Ok("/")),
            ("/a/b.html", Ok("/a/b.html")),
            // merge_slashes
            ("//", Ok("/")),
            ("//a///b//", Ok("/a/b/")),
            // dot segments
            ("/.", Ok("/")),
            ("/./a", Ok("/a")),
            ("/a/./b/.", Ok("/a/b/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/../c", Ok("/a/c")),
            ("/a/..", Ok("/")),
            ("/a//b/../../c", Ok("/c")),
            ("/a/.b/..c/c../.../", Ok("/a/.b/..c/c../.../")),
            ("/a.", Ok("/a.")),
            ("/..", Err(UriError::AboveRoot)),
            ("/../a", Err(UriError::AboveRoot)),
            ("/a/../..", Err(UriError::AboveRoot)),
            ("/./..", Err(UriError::AboveRoot)),
            // percent-decoding
            ("/%41%62c", Ok("/Abc")),
            ("/a%20b", Ok("/a b")),
            ("/a%2Fb", Ok("/a/b")),
            ("/a%2f%2fb", Ok("/a/b")), // decoded slashes merge too
            ("/a/%2E%2E/b", Ok("/b")), // and decoded dots are dot segments
            ("/a/%2e/b", Ok("/a/b")),
            ("/%2e%2e", Err(UriError::AboveRoot)),
            ("/a%252Fb", Ok("/a%2Fb")), // decoded once only
            ("/a%23b", Ok("/a#b")),
            ("/a%3Fb", Ok("/a?b")),
            ("/%3F/..", Ok("/")), // `?` is plain data, then `/..` removes it
            ("/a%2", Err(UriError::BadEscape)),
            ("/a%", Err(UriError::BadEscape)),
            ("/a%zz", Err(UriError::BadEscape)),
            ("/a%00b", Err(UriError::Nul)),
            ("/a\0b", Err(UriError::Nul)),
            ("/caf%C3%A9", Ok("/caf\u{e9}")),
            ("/caf\u{e9}", Ok("/caf\u{e9}")),
            ("/%FF", Err(UriError::NotUtf8)),
            ("/a+b", Ok("/a+b")), // `+` is not a space in a path
            // the caller strips the query; what remains ends the path as in nginx
            ("/a?b", Ok("/a")),
            ("/a/..?b", Ok("/")),
            ("/a#frag", Ok("/a")),
            ("/a/.#x", Ok("/a/")),
            // not origin-form
            ("a/b", Err(UriError::NotAbsolute)),
            ("*", Err(UriError::NotAbsolute)),
        ];
        for &(raw, want) in cases {
            let got = normalize_path(raw);
            assert_eq!(got.as_deref().map_err(|e| *e), want, "path {raw:?}");
        }
    }
}
