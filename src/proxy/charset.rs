//! nginx's charset filter (`charset`, `charset_types`, `source_charset`): the charset named in
//! the `Content-Type` of responses that name none. Recoding is refused when the configuration is
//! read (config/lower/charset.rs), so this only ever names a charset.

use http::header::{self, HeaderValue};

use crate::config::model::Charset;
use crate::proxy::ResponseBody;

/// nginx's charset filter for a response that names no charset: `; charset=name` appended to a
/// `Content-Type` of one of `charset_types` that has no parameters (nginx appends only then),
/// except on 301 and 302 (nginx leaves redirects alone). With a `source_charset` other than
/// `charset` nginx would need a `charset_map` to recode; without one (imbang has none) it logs
/// an error and leaves the response alone, as here.
pub fn apply(response: &mut http::Response<ResponseBody>, charset: &Charset) {
    if matches!(response.status().as_u16(), 301 | 302) {
        return;
    }
    // imbang's own Content-Type is in the map; a peer's is among its fields as it spelled it.
    let (ct, in_fields) = match response.headers().get(header::CONTENT_TYPE) {
        Some(ct) => (ct.as_bytes(), false),
        None => match response
            .body()
            .fields()
            .and_then(|f| f.get(b"content-type"))
        {
            Some(ct) => (ct, true),
            None => return,
        },
    };
    let Ok(ct) = std::str::from_utf8(ct) else {
        return;
    };
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
    let value = format!("{mime}; charset={}", charset.name);
    if in_fields {
        response
            .body_mut()
            .fields_mut()
            .set_first(b"content-type", value.as_bytes());
    } else if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
}
