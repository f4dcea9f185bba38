//! One HTTP request: route it, then answer it (`return`) or forward it to a peer.
//!
//! [`handle`] never fails: every [`ProxyError`] becomes a response at one boundary, with the
//! status chosen by [`ProxyError::status`].

pub mod body;
pub mod error;
pub mod forward;
pub mod headers;
pub mod retry;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

pub use body::ResponseBody;
pub use error::ProxyError;

use crate::pool::Pool;
use crate::reload::Live;
use crate::route::{normalize_host, normalize_path};
use crate::snapshot::{Answer, RouteAction, ServerRoute};
use crate::vars::{Var, Vars, append_display};

/// What every request of the process shares.
pub struct Shared {
    pub live: Arc<Live>,
    pub pool: Arc<Pool>,
}

/// Facts about one client connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// nginx's connection number (`*5` in the error log, `$connection`).
    pub id: u64,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The configured listen address of the listener that accepted it.
    pub key: SocketAddr,
}

/// One request as the variables and the error log see it.
pub struct RequestCtx<'a> {
    pub conn: &'a ConnInfo,
    pub parts: &'a http::request::Parts,
    pub host: &'a str,
    pub server_name: &'a str,
    pub proxy_host: &'a str,
}

impl RequestCtx<'_> {
    /// `, client: 127.0.0.1, server: example.com, request: "GET / HTTP/1.1", host: "example.com"`
    /// for an error-log line, as nginx appends it.
    pub fn log_context(&self, upstream: Option<&str>) -> String {
        let mut s = format!(
            ", client: {}, server: {}, request: \"{} {} {:?}\"",
            self.conn.remote.ip(),
            self.server_name,
            self.parts.method,
            self.parts.uri,
            self.parts.version
        );
        if let Some(u) = upstream {
            s.push_str(&format!(", upstream: \"{u}\""));
        }
        if let Some(h) = self
            .parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            s.push_str(&format!(", host: \"{h}\""));
        }
        s
    }
}

impl Vars for RequestCtx<'_> {
    fn append(&self, var: &Var, out: &mut String) {
        let uri = &self.parts.uri;
        match var {
            Var::Host => out.push_str(if self.host.is_empty() {
                self.server_name
            } else {
                self.host
            }),
            Var::HttpHost => {
                if let Some(h) = self
                    .parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                {
                    out.push_str(h);
                }
            }
            Var::RemoteAddr | Var::BinaryRemoteAddr => append_display(out, self.conn.remote.ip()),
            Var::RemotePort => append_display(out, self.conn.remote.port()),
            Var::ServerAddr => append_display(out, self.conn.local.ip()),
            Var::ServerPort => append_display(out, self.conn.local.port()),
            Var::ServerName => out.push_str(self.server_name),
            Var::Scheme => out.push_str("http"),
            Var::Request => append_display(
                out,
                format_args!("{} {} {:?}", self.parts.method, uri, self.parts.version),
            ),
            Var::RequestMethod => out.push_str(self.parts.method.as_str()),
            Var::RequestUri => out.push_str(uri.path_and_query().map_or("/", |p| p.as_str())),
            Var::Uri => out.push_str(uri.path()),
            Var::Args => out.push_str(uri.query().unwrap_or("")),
            Var::ProxyHost => out.push_str(self.proxy_host),
            Var::ProxyAddXForwardedFor => {
                let prior: Vec<&str> = self
                    .parts
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                for p in prior {
                    out.push_str(p);
                    out.push_str(", ");
                }
                append_display(out, self.conn.remote.ip());
            }
            Var::Header(name) => {
                let values = self.parts.headers.get_all(name.as_str());
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if name == "cookie" { "; " } else { ", " });
                    }
                    out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
            }
            Var::Pid => append_display(out, std::process::id()),
            Var::Connection => append_display(out, self.conn.id),
        }
    }

    fn append_bytes(&self, var: &Var, out: &mut Vec<u8>) {
        match (var, self.conn.remote.ip()) {
            (Var::BinaryRemoteAddr, IpAddr::V4(ip)) => out.extend_from_slice(&ip.octets()),
            (Var::BinaryRemoteAddr, IpAddr::V6(ip)) => out.extend_from_slice(&ip.octets()),
            _ => {
                let mut text = String::new();
                self.append(var, &mut text);
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
}

/// Answers one request. Never fails: errors become nginx-style error pages.
pub async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let snap = shared.live.snapshot();
    let (parts, body) = req.into_parts();
    // RFC 9112 §3.2.2: an absolute-form target's authority wins over the Host header.
    let raw_host = match parts.uri.authority() {
        Some(a) => Some(a.as_str()),
        None => parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    };
    if raw_host.is_none() && parts.version == http::Version::HTTP_11 {
        return error_response(&ProxyError::BadRequest(
            "HTTP/1.1 request without \"Host\" header",
        ));
    }
    let Some(host) = normalize_host(raw_host.unwrap_or("")) else {
        return error_response(&ProxyError::BadRequest("invalid host in request"));
    };
    let Some(vhosts) = snap.vhosts(conn.key, conn.local) else {
        return error_response(&ProxyError::NoRoute);
    };
    let server: &ServerRoute = vhosts.find(&host);
    let mut ctx = RequestCtx {
        conn,
        parts: &parts,
        host: &host,
        server_name: &server.name,
        proxy_host: "",
    };
    if let Some(answer) = &server.ret {
        return answer_response(answer, &ctx, &server.fallback.conf.default_type);
    }
    let Ok(path) = normalize_path(parts.uri.path()) else {
        return error_response(&ProxyError::BadRequest("invalid URI"));
    };
    let route = server.locations.find(&path).unwrap_or(&server.fallback);
    match &route.action {
        RouteAction::NotFound => error_response(&ProxyError::NoRoute),
        RouteAction::Return(answer) => answer_response(answer, &ctx, &route.conf.default_type),
        RouteAction::Proxy(proxy) => {
            ctx.proxy_host = &proxy.proxy_host;
            match forward::forward(shared, &ctx, route, proxy, &path, body).await {
                Ok(response) => response,
                Err(e) => error_response(&e),
            }
        }
    }
}

fn error_response(e: &ProxyError) -> Response<ResponseBody> {
    error::error_page(e.status())
}

/// `return code [text|URL]`, as nginx answers it.
fn answer_response(answer: &Answer, vars: &dyn Vars, default_type: &str) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = answer.text.as_ref().map(|t| t.render(vars));
    let redirect = matches!(answer.status, 301 | 302 | 303 | 307 | 308);
    let mut response = match (&text, redirect) {
        (Some(url), true) => {
            let mut r = error::error_page(status);
            if let Ok(v) = HeaderValue::from_str(url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        (Some(text), false) => {
            let mut r = Response::new(ResponseBody::full(Bytes::from(text.clone())));
            if let Ok(v) = HeaderValue::from_str(default_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        (None, _) if answer.status >= 300 => error::error_page(status),
        (None, _) => Response::new(ResponseBody::empty()),
    };
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("imbang"));
    response
}
