//! nginx's charset filter (`charset`, `charset_types`, `source_charset`): the charset named in
//! the `Content-Type` of responses that name none. Recoding is refused when the configuration is
//! read (config/lower/charset.rs), so this only ever names a charset.

use http::header::{self, HeaderValue};

use crate::config::model::Charset;

/// nginx's charset filter for a response that names no charset: `; charset=name` appended to a
/// `Content-Type` of one of `charset_types` that has no parameters (nginx appends only then),
/// except on 301 and 302 (nginx leaves redirects alone). With a `source_charset` other than
/// `charset` nginx would need a `charset_map` to recode; without one (imbang has none) it logs
/// an error and leaves the response alone, as here.
pub fn apply<B>(response: &mut http::Response<B>, charset: &Charset) {
    if matches!(response.status().as_u16(), 301 | 302) {
        return;
    }
    let Some(ct) = response.headers().get(header::CONTENT_TYPE) else {
        return;
    };
    let Ok(ct) = ct.to_str() else { return };
    let mime = ct.trim_end_matches(' ');
    if mime.is_empty() || mime.contains(';') {
        return; // a charset or other parameters already
    }
    let any = charset.types.first().is_some_and(|t| t == "*");
    if !any && !charset.types.iter().any(|t| t.eq_ignore_ascii_case(mime)) {
        return;
    }
    if let Some(source) = &charset.source {
        if !source.eq_ignore_ascii_case(&charset.name) {
            return;
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{mime}; charset={}", charset.name)) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
}
