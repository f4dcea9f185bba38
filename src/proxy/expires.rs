//! nginx's `expires` (its `ngx_http_set_expires`): on 200, 201, 204, 206, 301, 302, 303, 304, 307
//! and 308 responses, `Expires` set and `Cache-Control` replaced (one field) by what the
//! configured time says.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};

use crate::config::model::Expires;
use crate::proxy::ResponseBody;

pub fn apply(response: &mut http::Response<ResponseBody>, expires: Expires, now: SystemTime) {
    if !matches!(
        response.status().as_u16(),
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    ) {
        return;
    }
    let (at, cache_control) = match expires {
        Expires::Epoch => (
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:01 GMT"),
            HeaderValue::from_static("no-cache"),
        ),
        Expires::Max => (
            HeaderValue::from_static("Thu, 31 Dec 2037 23:55:55 GMT"),
            HeaderValue::from_static("max-age=315360000"),
        ),
        Expires::Access(secs) => {
            let at = if secs >= 0 {
                now + Duration::from_secs(secs as u64)
            } else {
                now.checked_sub(Duration::from_secs(secs.unsigned_abs()))
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            let cc = if secs < 0 {
                HeaderValue::from_static("no-cache")
            } else {
                HeaderValue::from_str(&format!("max-age={secs}"))
                    .unwrap_or(HeaderValue::from_static("no-cache"))
            };
            let date = httpdate::fmt_http_date(at);
            let Ok(at) = HeaderValue::from_str(&date) else {
                return;
            };
            (at, cc)
        }
    };
    // A peer's own fields of these names give way to imbang's, as nginx replaces them.
    if let Some(fields) = response.body().fields()
        && (fields.has(b"expires") || fields.has(b"cache-control"))
    {
        response.body_mut().fields_mut().retain(|name, _| {
            !name.eq_ignore_ascii_case(b"expires") && !name.eq_ignore_ascii_case(b"cache-control")
        });
    }
    let headers = response.headers_mut();
    headers.insert(header::EXPIRES, at);
    headers.insert(header::CACHE_CONTROL, cache_control);
}
