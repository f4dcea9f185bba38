//! `autoindex on`: a directory's listing as nginx's autoindex module writes it, in HTML (the
//! `<pre>` table, names cut at 50 characters) or JSON. Hidden names (starting with `.`) are
//! left out; directories come first, then names in byte order.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt as _;

use chrono::TimeZone as _;
use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::config::model::{AutoIndex, LocationConf};
use crate::log;
use crate::proxy::error::error_page;
use crate::proxy::{RequestCtx, ResponseBody};

struct Entry {
    name: String,
    dir: bool,
    file: bool,
    mtime: i64,
    size: u64,
}

/// The listing of `dir` (whose URI is `uri`).
pub fn respond(
    ctx: &RequestCtx<'_>,
    _conf: &LocationConf,
    ai: AutoIndex,
    uri: &str,
    dir: &str,
) -> Response<ResponseBody> {
    if ctx.parts.method != Method::GET && ctx.parts.method != Method::HEAD {
        return error_page(StatusCode::METHOD_NOT_ALLOWED);
    }
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            log!(
                Error,
                "*{} opendir() \"{dir}\" failed ({}){}",
                ctx.conn.id,
                super::errno_text(&e),
                ctx.log_context(None)
            );
            return error_page(super::open_status(&e));
        }
    };
    let mut entries = Vec::new();
    for item in read.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // A link is listed as what it points to; a broken one as itself (nginx's order).
        let meta = match std::fs::metadata(item.path()).or_else(|_| item.metadata()) {
            Ok(m) => m,
            Err(_) => continue,
        };
        entries.push(Entry {
            name,
            dir: meta.is_dir(),
            file: meta.is_file(),
            mtime: meta.mtime(),
            size: meta.len(),
        });
    }
    entries.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    let (body, content_type) = if ai.json {
        (json(&entries), "application/json")
    } else {
        (html(&entries, uri, ai), "text/html")
    };
    let mut response = Response::new(ResponseBody::full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn html(entries: &[Entry], uri: &str, ai: AutoIndex) -> String {
    const WIDTH: usize = 50;
    let uri = escape_html(uri);
    let mut out = format!(
        "<html>\r\n<head><title>Index of {uri}</title></head>\r\n<body>\r\n<h1>Index of {uri}</h1><hr><pre><a href=\"../\">../</a>\r\n"
    );
    for e in entries {
        out.push_str("<a href=\"");
        out.push_str(&escape_component(&e.name));
        if e.dir {
            out.push('/');
        }
        out.push_str("\">");
        let chars: Vec<char> = e.name.chars().collect();
        let mut len = chars.len();
        if len > WIDTH {
            let cut: String = chars[..WIDTH - 3].iter().collect();
            out.push_str(&escape_html(&cut));
            out.push_str("..&gt;</a>");
        } else {
            out.push_str(&escape_html(&e.name));
            if e.dir && WIDTH > len {
                out.push('/');
                len += 1;
            }
            out.push_str("</a>");
            out.extend(std::iter::repeat_n(' ', WIDTH.saturating_sub(len)));
        }
        out.push(' ');
        let when = if ai.localtime {
            chrono::Local
                .timestamp_opt(e.mtime, 0)
                .single()
                .map(|t| t.format("%d-%b-%Y %H:%M").to_string())
        } else {
            chrono::Utc
                .timestamp_opt(e.mtime, 0)
                .single()
                .map(|t| t.format("%d-%b-%Y %H:%M").to_string())
        };
        out.push_str(&when.unwrap_or_default());
        out.push(' ');
        match (ai.exact_size, e.dir) {
            (true, true) => out.push_str("                  -"),
            (true, false) => {
                let _ = write!(out, "{:>19}", e.size);
            }
            (false, true) => out.push_str("      -"),
            (false, false) => out.push_str(&human_size(e.size)),
        }
        out.push_str("\r\n");
    }
    out.push_str("</pre><hr></body>\r\n</html>\r\n");
    out
}

/// `autoindex_exact_size off`: sizes rounded to K, M or G as nginx rounds them.
fn human_size(length: u64) -> String {
    const K: u64 = 1024;
    let (size, scale) = if length > K * K * K - 1 {
        (
            length / (K * K * K) + u64::from(length % (K * K * K) > K * K * K / 2 - 1),
            "G",
        )
    } else if length > K * K - 1 {
        (
            length / (K * K) + u64::from(length % (K * K) > K * K / 2 - 1),
            "M",
        )
    } else if length > 9999 {
        (length / K + u64::from(length % K > 511), "K")
    } else {
        return format!(" {length:>6}");
    };
    format!("{size:>6}{scale}")
}

fn json(entries: &[Entry]) -> String {
    let mut out = String::from("[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let name = serde_json::to_string(&e.name).unwrap_or_default();
        let kind = if e.dir {
            "directory"
        } else if e.file {
            "file"
        } else {
            "other"
        };
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.mtime.max(0) as u64);
        let _ = write!(
            out,
            "\r\n{{ \"name\":{name}, \"type\":\"{kind}\", \"mtime\":\"{}\"",
            httpdate::fmt_http_date(at)
        );
        if e.file {
            let _ = write!(out, ", \"size\":{}", e.size);
        }
        out.push_str(" }");
    }
    out.push_str("\r\n]");
    out
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A name as one URI path segment (nginx's `NGX_ESCAPE_URI_COMPONENT`, near enough: all but
/// letters, digits and `-._~` escaped).
fn escape_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_as_nginx() {
        assert_eq!(human_size(9999), "   9999");
        assert_eq!(human_size(10000), "    10K");
        assert_eq!(human_size(1024 * 1024), "     1M");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024 / 2), "     2G");
    }
}
