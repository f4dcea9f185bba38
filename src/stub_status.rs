//! nginx's `stub_status` (ngx_http_stub_status_module): the process's connection and request
//! figures ([`crate::stats`]) as plain text, in nginx's format to the byte, so the tools that
//! read nginx's (nginx-prometheus-exporter, Datadog's, collectd's, Munin's) read imbang's:
//!
//! ```text
//! Active connections: 2
//! server accepts handled requests
//!  17 17 34
//! Reading: 0 Writing: 1 Waiting: 1
//! ```
//!
//! (each line but the second ends in a space, as nginx's do).

use std::fmt::Write;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::proxy::ResponseBody;
use crate::stats::{self, Figures};

/// Answers a request to a `stub_status` location: GET and HEAD get the figures, any other
/// method 405 (nginx's `NGX_HTTP_NOT_ALLOWED`).
pub fn respond(method: &Method) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        return crate::proxy::error::error_page(StatusCode::METHOD_NOT_ALLOWED);
    }
    let mut response = Response::new(ResponseBody::full(Bytes::from(text(&stats::figures()))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The page, as ngx_http_stub_status_handler writes it.
pub fn text(f: &Figures) -> String {
    let mut out = String::with_capacity(128);
    let _ = write!(
        out,
        "Active connections: {} \nserver accepts handled requests\n {} {} {} \nReading: {} Writing: {} Waiting: {} \n",
        f.active, f.accepted, f.handled, f.requests, f.reading, f.writing, f.waiting
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_nginx_s_to_the_byte() {
        let f = Figures {
            accepted: 17,
            handled: 16,
            active: 2,
            requests: 34,
            reading: 0,
            writing: 1,
            waiting: 1,
            ..Figures::default()
        };
        assert_eq!(
            text(&f),
            "Active connections: 2 \nserver accepts handled requests\n 17 16 34 \nReading: 0 Writing: 1 Waiting: 1 \n"
        );
    }
}
