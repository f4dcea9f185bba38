//! Every failure of a proxied request, and the one place that decides the status a client sees.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::ResponseBody;
use crate::pool::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request itself is malformed (bad Host, bad URI).
    #[error("client sent invalid request: {0}")]
    BadRequest(&'static str),
    /// nginx's 495 / 496 / 421 for a connection's client certificate (answered `400` / `421`).
    #[error("client SSL certificate: {0:?}")]
    ClientCertificate(crate::tls::Refusal),
    /// The request line is longer than nginx's `large_client_header_buffers` (8k).
    #[error("client sent too long URI")]
    UriTooLong,
    /// A header line is longer than nginx's `large_client_header_buffers` (8k).
    #[error("client sent too large request header")]
    HeaderTooLarge,
    /// The client paused its body longer than `client_body_timeout`.
    #[error("client timed out while sending the request body")]
    ClientTimeout,
    /// The request body is larger than `client_max_body_size`.
    #[error("client intended to send too large body")]
    BodyTooLarge,
    /// The temporary file of a buffered request body (`client_body_temp_path`) could not be
    /// created or written.
    #[error("{0} while writing a client request body to a temporary file")]
    BodyFile(std::io::Error),
    /// No `location` matched and the server has no `return`.
    #[error("no location matches")]
    NoRoute,
    /// A `proxy_pass` with variables rendered a URL that is not `http://authority[/uri]`.
    #[error("{0}")]
    ProxyUrl(String),
    /// A `proxy_pass` with variables named a host that is neither an address nor a group,
    /// and no `resolver` is in force.
    #[error("no resolver defined to resolve {0}")]
    NoResolver(String),
    /// The `resolver` could not resolve the host of a `proxy_pass` with variables (nginx's
    /// words: `app.internal could not be resolved (3: Host not found)`).
    #[error("{0} could not be resolved {1}")]
    Unresolved(String, crate::resolve::DnsError),
    /// Every peer of the upstream is down or was tried.
    #[error("no live upstreams")]
    NoLivePeer,
    /// The last attempt could not connect.
    #[error("{source} while connecting to upstream")]
    Connect {
        peer: SocketAddr,
        #[source]
        source: ConnectError,
    },
    /// The last attempt connected, and its TLS handshake failed (`proxy_pass https://`).
    #[error("{source} while SSL handshaking to upstream")]
    Handshake {
        peer: SocketAddr,
        #[source]
        source: Box<crate::pool::tls::HandshakeError>,
    },
    /// The peer closed or broke the connection before a complete response head.
    #[error("{source} while reading response header from upstream")]
    Upstream {
        peer: SocketAddr,
        source: crate::pool::Broken,
    },
    /// The peer answered something imbang cannot pass on.
    #[error("upstream sent invalid header: {0}")]
    InvalidHeader(&'static str),
    /// The peer sent no response head within `proxy_read_timeout`.
    #[error(
        "upstream timed out (110: Connection timed out) while reading response header from upstream"
    )]
    Timeout { peer: SocketAddr },
}

impl ProxyError {
    /// The status the client sees. The only place that decides it.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ClientCertificate(crate::tls::Refusal::Misdirected) => {
                StatusCode::MISDIRECTED_REQUEST
            }
            Self::ClientCertificate(_) => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeaderTooLarge => StatusCode::BAD_REQUEST,
            Self::Connect {
                source: ConnectError::Timeout,
                ..
            }
            | Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Handshake { source, .. }
                if matches!(**source, crate::pool::tls::HandshakeError::Timeout) =>
            {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::ProxyUrl(_) | Self::BodyFile(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NoResolver(_)
            | Self::Unresolved(..)
            | Self::NoLivePeer
            | Self::Connect { .. }
            | Self::Handshake { .. }
            | Self::Upstream { .. }
            | Self::InvalidHeader(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether the client connection must close after the answer: the request's framing is in
    /// doubt or its body was not read.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::BadRequest(_)
                | Self::UriTooLong
                | Self::HeaderTooLarge
                | Self::BodyTooLarge
                | Self::BodyFile(_)
                | Self::ClientCertificate(_)
        )
    }
}

/// nginx's page for a client certificate refused (`ngx_http_error_495_page`, `_496_`): a `400`
/// with the reason under the heading.
pub fn client_certificate_page(why: crate::tls::Refusal) -> Response<ResponseBody> {
    let detail = match why {
        crate::tls::Refusal::NoCertificate => "No required SSL certificate was sent",
        crate::tls::Refusal::BadCertificate => "The SSL certificate error",
        crate::tls::Refusal::Misdirected => return error_page(StatusCode::MISDIRECTED_REQUEST),
    };
    let html = format!(
        "<html>\r\n<head><title>400 {detail}</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>{detail}</center>\r\n<hr><center>imbang</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut response = Response::new(ResponseBody::full(Bytes::from(html)));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(header::SERVER, HeaderValue::from_static("imbang"));
    response
}

/// nginx's small HTML error page for `status`.
pub fn error_page(status: StatusCode) -> Response<ResponseBody> {
    // nginx's reason phrases where they differ from today's RFC names.
    let reason = match status.as_u16() {
        408 => "Request Time-out",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        _ => status.canonical_reason().unwrap_or("Unknown"),
    };
    let title = format!("{} {reason}", status.as_u16());
    let html = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>imbang</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut response = Response::new(ResponseBody::full(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(header::SERVER, HeaderValue::from_static("imbang"));
    response
}
