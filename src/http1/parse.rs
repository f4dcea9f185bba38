//! A client's request head: parsed with `httparse`, then checked the way nginx checks it, so
//! that a message whose framing two parsers could read differently never reaches a peer.
//!
//! nginx's rules kept here (from `ngx_http_process_request_header`): `Transfer-Encoding` other
//! than `chunked` is 501; `Transfer-Encoding` beside `Content-Length`, on an HTTP/1.0 request,
//! or given twice is 400; a second `Content-Length` or `Host` is 400; a request line longer than
//! one `large_client_header_buffers` buffer is 414, a longer header line 400.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use crate::http1::RawFields;
use crate::scratch::FieldAt;

/// Most header fields one request may carry (hyper's limit; nginx has none, only a size limit).
pub const MAX_HEADERS: usize = 100;

/// `large_client_header_buffers number size`: the longest line is `size`, the whole head at
/// most `number × size`.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub line: usize,
    pub head: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            line: 8 * 1024,
            head: 4 * 8 * 1024,
        }
    }
}

/// How the request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed and checked request head.
#[derive(Debug)]
pub struct Head {
    pub parts: http::request::Parts,
    pub framing: Framing,
    /// The client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` header.
    pub upgrade: bool,
    /// The fields as they came (spelling, order, duplicates), sharing the head's bytes: what
    /// goes upstream.
    pub fields: RawFields,
}

/// A head that cannot be served: answered with `status`, then the connection closes.
#[derive(Debug, PartialEq, Eq)]
pub struct Reject {
    pub status: StatusCode,
    /// For the error log, in nginx's words.
    pub reason: &'static str,
    /// The request line, when it was whole and valid (for the access log's `$request`).
    pub line: Option<Box<RequestLine>>,
}

/// A request line: method, target, version.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestLine(pub Method, pub Uri, pub Version);

const fn reject(status: StatusCode, reason: &'static str) -> Reject {
    Reject {
        status,
        reason,
        line: None,
    }
}

/// The first line of `buf` as a request line, if it is one (only read for a head that was
/// refused or timed out, so a request that is served pays nothing for it).
pub fn request_line(buf: &[u8], limits: &HeadLimits) -> Option<Box<RequestLine>> {
    let end = buf.iter().take(limits.line).position(|&b| b == b'\n')?;
    let line = buf[..end].strip_suffix(b"\r")?;
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let version = match version {
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/1.0" => Version::HTTP_10,
        _ => return None,
    };
    let method = Method::from_bytes(method).ok()?;
    let uri = Uri::try_from(target).ok()?;
    Some(Box::new(RequestLine(method, uri, version)))
}

/// Parses the head at the start of `buf`. `Ok(None)`: not complete yet (read more). On success
/// the head's bytes are taken out of `buf`; what follows (body, pipelined requests) stays.
pub fn parse(buf: &mut BytesMut, limits: &HeadLimits) -> Result<Option<Head>, Reject> {
    // Empty lines before a request line are allowed (RFC 9112 §2.2), as nginx skips them.
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    if skip > 0 {
        let _ = buf.split_to(skip);
    }
    let whole = buf.len();
    parse_head(buf, limits).map_err(|mut rejected| {
        // Refused before the head was taken out of `buf`: its first line is still there.
        if rejected.line.is_none() && buf.len() == whole {
            rejected.line = request_line(buf, limits);
        }
        rejected
    })
}

fn parse_head(buf: &mut BytesMut, limits: &HeadLimits) -> Result<Option<Head>, Reject> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return partial(buf, limits).map(|()| None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "client sent too many header lines",
            ));
        }
        Err(httparse::Error::Version) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "client sent invalid HTTP version",
            ));
        }
        Err(httparse::Error::Token | httparse::Error::Status) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "client sent invalid request line",
            ));
        }
        Err(_) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "client sent invalid header line",
            ));
        }
    };
    // Where each piece lies in the head, so they can share its bytes once it is frozen.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    let mut fields = crate::scratch::Fields::take();
    fields.extend(req.headers.iter().map(|h| {
        let (name, value) = (h.name.as_bytes(), h.value);
        // Within the head, whose length `large_client_header_buffers` bounds far below 4 GiB.
        let at = |s: &[u8]| [offset(s) as u32, s.len() as u32];
        let ([n, nl], [v, vl]) = (at(name), at(value));
        [n, nl, v, vl]
    }));
    check_lines(&buf[..len], &fields, limits)?;
    let method = req.method.unwrap_or("GET");
    let target = req.path.unwrap_or("/");
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let target_at = (offset(target.as_bytes()), target.len());
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| reject(StatusCode::BAD_REQUEST, "client sent invalid method"))?;
    let head = buf.split_to(len).freeze();
    let uri = uri(&head, target_at)?;
    // From here on a refusal knows its request line.
    let lined = |rejected: Reject, method: &Method, uri: &Uri| Reject {
        line: Some(Box::new(RequestLine(method.clone(), uri.clone(), version))),
        ..rejected
    };
    let mut map = crate::scratch::header_map(fields.len());
    // Which fields the checks below read are there at all: most requests have none of them,
    // and a lookup that finds nothing costs as much as one that finds something.
    let (mut hosts, mut framed, mut connection, mut expect, mut upgrade) =
        (0u32, false, false, false, false);
    for &[name_at, name_len, value_at, value_len] in fields.iter() {
        let (name_at, name_len) = (name_at as usize, name_len as usize);
        let (value_at, value_len) = (value_at as usize, value_len as usize);
        let bad = || {
            let rejected = reject(StatusCode::BAD_REQUEST, "client sent invalid header line");
            lined(rejected, &method, &uri)
        };
        let name = field_name(&head[name_at..name_at + name_len]).map_err(|_| bad())?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
            .map_err(|_| bad())?;
        if name == header::HOST {
            hosts += 1;
        } else if name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
            framed = true;
        } else if name == header::CONNECTION {
            connection = true;
        } else if name == header::EXPECT {
            expect = true;
        } else if name == header::UPGRADE {
            upgrade = true;
        }
        map.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = map;
    let framing = match framed {
        true => framing(&parts.headers, version)
            .map_err(|rejected| lined(rejected, &parts.method, &parts.uri))?,
        false => Framing::None,
    };
    if hosts > 1 {
        let rejected = reject(StatusCode::BAD_REQUEST, "client sent duplicate host header");
        return Err(lined(rejected, &parts.method, &parts.uri));
    }
    let (close, keep_alive_token, upgrade_token) = match connection {
        true => connection_tokens(&parts.headers),
        false => (false, false, false),
    };
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
    let expect_continue = expect
        && version == Version::HTTP_11
        && parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let upgrade = upgrade_token && upgrade;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
        fields: RawFields::new(head, fields),
    }))
}

/// An incomplete head: fine while it fits the limits.
fn partial(buf: &[u8], limits: &HeadLimits) -> Result<(), Reject> {
    match buf.iter().position(|&b| b == b'\n') {
        None if buf.len() > limits.line => {
            Err(reject(StatusCode::URI_TOO_LONG, "client sent too long URI"))
        }
        None => Ok(()),
        Some(_) if buf.len() > limits.head => Err(too_large()),
        Some(_) => {
            let last_line = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if buf.len() - last_line > limits.line {
                Err(too_large())
            } else {
                Ok(())
            }
        }
    }
}

fn too_large() -> Reject {
    reject(StatusCode::BAD_REQUEST, "client sent too long header line")
}

/// nginx's line limits on a complete head: 414 for the request line, 400 for a header line.
/// A line's length is what lies before its LF (a CR included). The lines are found from where
/// httparse saw the fields, not by scanning the bytes again: the request line starts the head,
/// each header line starts with its name (httparse takes no folded lines in a request), and
/// the blank line that ends the head is its last one or two bytes.
fn check_lines(head: &[u8], fields: &[FieldAt], limits: &HeadLimits) -> Result<(), Reject> {
    if head.len() > limits.head {
        return Err(too_large());
    }
    let blank = head.len() - if head.ends_with(b"\r\n") { 2 } else { 1 };
    let mut starts = fields.iter().map(|f| f[0] as usize).chain([blank]);
    let mut start = starts.next().unwrap_or(blank);
    if start.saturating_sub(1) > limits.line {
        return Err(reject(StatusCode::URI_TOO_LONG, "client sent too long URI"));
    }
    for next in starts {
        if next - start - 1 > limits.line {
            return Err(too_large());
        }
        start = next;
    }
    Ok(())
}

fn uri(head: &Bytes, (at, len): (usize, usize)) -> Result<Uri, Reject> {
    let bad = || reject(StatusCode::BAD_REQUEST, "client sent invalid request line");
    let target = head.slice(at..at + len);
    match target.first() {
        // Origin form, the usual case: the path shares the head's bytes.
        Some(b'/') => http::uri::PathAndQuery::from_maybe_shared(target)
            .map(Uri::from)
            .map_err(|_| bad()),
        _ => Uri::from_maybe_shared(target).map_err(|_| bad()),
    }
}

/// The body's framing, by RFC 9112 §6 with nginx's strictness: anything two parsers could read
/// differently is refused.
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, Reject> {
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    let mut cl = headers.get_all(header::CONTENT_LENGTH).iter();
    let (te_first, te_second) = (te.next(), te.next());
    let (cl_first, cl_second) = (cl.next(), cl.next());
    if te_second.is_some() {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "client sent duplicate header line: \"Transfer-Encoding\"",
        ));
    }
    if cl_second.is_some() {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "client sent duplicate header line: \"Content-Length\"",
        ));
    }
    if let Some(te) = te_first {
        if version == Version::HTTP_10 {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "client sent HTTP/1.0 request with \"Transfer-Encoding\" header",
            ));
        }
        if !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(reject(
                StatusCode::NOT_IMPLEMENTED,
                "client sent unknown \"Transfer-Encoding\"",
            ));
        }
        if cl_first.is_some() {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "client sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time",
            ));
        }
        return Ok(Framing::Chunked);
    }
    match cl_first {
        None => Ok(Framing::None),
        Some(v) => {
            let bytes = v.as_bytes();
            let valid =
                !bytes.is_empty() && bytes.len() <= 19 && bytes.iter().all(u8::is_ascii_digit);
            let n = valid
                .then(|| std::str::from_utf8(bytes).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or(reject(
                    StatusCode::BAD_REQUEST,
                    "client sent invalid \"Content-Length\" header",
                ))?;
            Ok(if n == 0 {
                Framing::None
            } else {
                Framing::Length(n)
            })
        }
    }
}

/// A field name as read (HTTP/1, either side): the common names as clients and servers write
/// them (`Content-Length`, `content-length`) are matched byte for byte, by length first, to the
/// `http` crate's constants; any other spelling, and any other name, goes through
/// [`HeaderName::from_bytes`] (which lowercases into a buffer and matches again). The same
/// result either way; for the five to ten fields of a usual head the table is ~100
/// instructions less per field (`bench/callgrind.sh`), and the common non-standard names
/// (`X-Forwarded-For`, `Keep-Alive`) are not allocated.
pub fn field_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    match known_name(raw) {
        Some(name) => Ok(name),
        None => HeaderName::from_bytes(raw),
    }
}

/// Names the `http` crate has no constant for, as constants (`HeaderName::from_static` outside
/// a constant checks its text each time it runs).
pub(crate) const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(crate) const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Writes [`known_name`] (a match on the length, then on the bytes) and, for the tests, the
/// list of every spelling it knows.
macro_rules! known_names {
    ($($len:literal => { $($($form:literal)|+ => $name:expr,)+ })+) => {
        fn known_name(raw: &[u8]) -> Option<HeaderName> {
            match raw.len() {
                $($len => match raw {
                    $($($form)|+ => Some($name),)+
                    _ => None,
                },)+
                _ => None,
            }
        }

        #[cfg(test)]
        const KNOWN_SPELLINGS: &[(usize, &[u8])] = &[$($($(($len, $form),)+)+)+];
    };
}

known_names! {
    3 => {
        b"Age" | b"age" => header::AGE,
        b"Via" | b"via" => header::VIA,
    }
    4 => {
        b"Host" | b"host" => header::HOST,
        b"Date" | b"date" => header::DATE,
        b"ETag" | b"Etag" | b"etag" => header::ETAG,
        b"Vary" | b"vary" => header::VARY,
    }
    5 => {
        b"Allow" | b"allow" => header::ALLOW,
        b"Range" | b"range" => header::RANGE,
    }
    6 => {
        b"Accept" | b"accept" => header::ACCEPT,
        b"Cookie" | b"cookie" => header::COOKIE,
        b"Expect" | b"expect" => header::EXPECT,
        b"Origin" | b"origin" => header::ORIGIN,
        b"Server" | b"server" => header::SERVER,
        b"Pragma" | b"pragma" => header::PRAGMA,
    }
    7 => {
        b"Expires" | b"expires" => header::EXPIRES,
        b"Referer" | b"referer" => header::REFERER,
        b"Upgrade" | b"upgrade" => header::UPGRADE,
        b"Trailer" | b"trailer" => header::TRAILER,
    }
    8 => {
        b"Location" | b"location" => header::LOCATION,
        b"If-Match" | b"if-match" => header::IF_MATCH,
        b"If-Range" | b"if-range" => header::IF_RANGE,
    }
    9 => {
        b"X-Real-IP" | b"X-Real-Ip" | b"x-real-ip" => X_REAL_IP,
        b"Forwarded" | b"forwarded" => header::FORWARDED,
    }
    10 => {
        b"Connection" | b"connection" => header::CONNECTION,
        b"User-Agent" | b"user-agent" => header::USER_AGENT,
        b"Set-Cookie" | b"set-cookie" => header::SET_COOKIE,
        b"Keep-Alive" | b"keep-alive" => KEEP_ALIVE,
    }
    11 => {
        b"Retry-After" | b"retry-after" => header::RETRY_AFTER,
    }
    12 => {
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"X-Request-ID" | b"X-Request-Id" | b"x-request-id" => X_REQUEST_ID,
    }
    13 => {
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
        b"Authorization" | b"authorization" => header::AUTHORIZATION,
        b"Accept-Ranges" | b"accept-ranges" => header::ACCEPT_RANGES,
        b"If-None-Match" | b"if-none-match" => header::IF_NONE_MATCH,
        b"Content-Range" | b"content-range" => header::CONTENT_RANGE,
    }
    14 => {
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Accept-Charset" | b"accept-charset" => header::ACCEPT_CHARSET,
    }
    15 => {
        b"Accept-Encoding" | b"accept-encoding" => header::ACCEPT_ENCODING,
        b"Accept-Language" | b"accept-language" => header::ACCEPT_LANGUAGE,
        b"X-Forwarded-For" | b"x-forwarded-for" => X_FORWARDED_FOR,
    }
    16 => {
        b"Content-Encoding" | b"content-encoding" => header::CONTENT_ENCODING,
        b"Content-Language" | b"content-language" => header::CONTENT_LANGUAGE,
        b"Content-Location" | b"content-location" => header::CONTENT_LOCATION,
        b"Proxy-Connection" | b"proxy-connection" => PROXY_CONNECTION,
    }
    17 => {
        b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
        b"If-Modified-Since" | b"if-modified-since" => header::IF_MODIFIED_SINCE,
        b"X-Forwarded-Proto" | b"x-forwarded-proto" => X_FORWARDED_PROTO,
    }
    19 => {
        b"Content-Disposition" | b"content-disposition" => header::CONTENT_DISPOSITION,
    }
    25 => {
        b"Strict-Transport-Security" | b"strict-transport-security" => {
            header::STRICT_TRANSPORT_SECURITY
        },
    }
}

/// (`close`, `keep-alive`, `upgrade`) among the `Connection` header's tokens.
pub fn connection_tokens(headers: &HeaderMap) -> (bool, bool, bool) {
    let (mut close, mut keep_alive, mut upgrade) = (false, false, false);
    for value in headers.get_all(header::CONNECTION) {
        let (c, k, u) = value_tokens(value.as_bytes());
        (close, keep_alive, upgrade) = (close || c, keep_alive || k, upgrade || u);
    }
    (close, keep_alive, upgrade)
}

/// The tokens of a message's `Connection` values, split once per message: a field they name is
/// hop-by-hop on this connection. Holds the usual few without allocating.
pub struct Named<'a> {
    few: [&'a [u8]; 4],
    count: usize,
    more: Vec<&'a [u8]>,
}

impl<'a> Named<'a> {
    /// From the message's `Connection` values.
    pub fn new(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut named = Named {
            few: [&[]; 4],
            count: 0,
            more: Vec::new(),
        };
        for token in values.flat_map(|v| v.split(|&b| b == b',')) {
            let token = token.trim_ascii();
            if named.count < named.few.len() {
                named.few[named.count] = token;
                named.count += 1;
            } else {
                named.more.push(token);
            }
        }
        named
    }

    /// Whether `token` is among them (`close`, `keep-alive`, a field's name; any case).
    pub fn has(&self, token: &[u8]) -> bool {
        (self.few[..self.count].iter().chain(&self.more)).any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Whether the tokens name `name`.
    pub fn names(&self, name: &HeaderName) -> bool {
        self.count > 0 && self.has(name.as_str().as_bytes())
    }
}

/// (`close`, `keep-alive`, `upgrade`) among the tokens of one `Connection` value.
pub fn value_tokens(value: &[u8]) -> (bool, bool, bool) {
    let (mut close, mut keep_alive, mut upgrade) = (false, false, false);
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        close |= token.eq_ignore_ascii_case(b"close");
        keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        upgrade |= token.eq_ignore_ascii_case(b"upgrade");
    }
    (close, keep_alive, upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling the table knows is found by it, under the arm of its length, and gives
    /// what the general conversion gives; other spellings and other names (valid or not) give
    /// the general conversion's result.
    #[test]
    fn known_field_names_are_the_http_crate_s() {
        for &(len, raw) in KNOWN_SPELLINGS {
            assert_eq!(
                raw.len(),
                len,
                "{:?} listed under length {len}",
                String::from_utf8_lossy(raw)
            );
            let known = known_name(raw).unwrap_or_else(|| panic!("{raw:?} not found"));
            assert_eq!(known, HeaderName::from_bytes(raw).unwrap());
            assert_eq!(known.as_str().as_bytes(), raw.to_ascii_lowercase());
            let shouted = raw.to_ascii_uppercase();
            assert_eq!(field_name(&shouted).unwrap(), known);
        }
        for raw in [
            &b"X-Custom"[..],
            b"content-lengths",
            b"Hostx",
            b"Content Length",
            b"",
        ] {
            assert_eq!(
                field_name(raw).ok(),
                HeaderName::from_bytes(raw).ok(),
                "{raw:?}"
            );
        }
    }

    fn parse_all(raw: &[u8]) -> Result<Option<Head>, Reject> {
        let mut buf = BytesMut::from(raw);
        parse(&mut buf, &HeadLimits::default())
    }

    fn status(raw: &[u8]) -> u16 {
        parse_all(raw).expect_err("rejected").status.as_u16()
    }

    /// The line limits, found from the fields' positions, are those of every line as it
    /// stands in the bytes: 414 when the request line is longer than `line`, 400 when a header
    /// line is, exactly at the limit accepted; CRLF and bare LF alike.
    #[test]
    fn line_limits_hold_at_every_length_around_the_limit() {
        let limits = HeadLimits {
            line: 40,
            head: 4096,
        };
        // What each line's length (before its LF) says, read off the bytes.
        let expected = |raw: &[u8]| -> Option<u16> {
            let mut lines = raw.split(|&b| b == b'\n');
            if lines.next().is_some_and(|l| l.len() > limits.line) {
                return Some(414);
            }
            lines.any(|l| l.len() > limits.line).then_some(400)
        };
        // Heads accepted, refused 400, refused 414.
        let mut seen = [0; 3];
        for eol in ["\r\n", "\n"] {
            for target in 22..32 {
                for value in [1, 30, 31, 32, 33, 40] {
                    for position in 0..3 {
                        let path = format!("/{}", "a".repeat(target - 1));
                        let mut raw = format!("GET {path} HTTP/1.1{eol}");
                        let long = format!("X-Long: {}{eol}", "v".repeat(value));
                        for i in 0..3 {
                            if i == position {
                                raw.push_str(&long);
                            }
                            raw.push_str(&format!("H{i}: x{eol}"));
                        }
                        raw.push_str(eol);
                        let mut buf = BytesMut::from(raw.as_bytes());
                        let got = parse(&mut buf, &limits).err().map(|r| r.status.as_u16());
                        assert_eq!(got, expected(raw.as_bytes()), "{raw:?}");
                        seen[match got {
                            None => 0,
                            Some(400) => 1,
                            _ => 2,
                        }] += 1;
                    }
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 10), "each outcome: {seen:?}");
    }

    #[test]
    fn a_simple_head_leaves_the_body_in_the_buffer() {
        let mut buf = BytesMut::from(
            &b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET"[..],
        );
        let head = parse(&mut buf, &HeadLimits::default()).unwrap().unwrap();
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri.path(), "/a");
        assert_eq!(head.parts.uri.query(), Some("b=1"));
        assert_eq!(head.parts.headers["host"], "x");
        assert_eq!(head.framing, Framing::Length(3));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"abcGET");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(
            parse_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
        assert!(parse_all(b"GET / HT").unwrap().is_none());
        assert!(parse_all(b"\r\n").unwrap().is_none());
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let h = |raw: &[u8]| parse_all(raw).unwrap().unwrap();
        assert!(!h(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(h(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!h(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        let up = h(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(up.upgrade && up.keep_alive);
        assert!(
            h(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        assert!(
            !h(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
    }

    #[test]
    fn framing_that_could_be_read_two_ways_is_refused_as_nginx() {
        let cases: &[(&[u8], u16)] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
            (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ];
        for (raw, want) in cases {
            assert_eq!(status(raw), *want, "{}", String::from_utf8_lossy(raw));
        }
        let chunked =
            parse_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(chunked.framing, Framing::Chunked);
    }

    #[test]
    fn limits_give_nginx_statuses() {
        let limits = HeadLimits {
            line: 64,
            head: 256,
        };
        let check = |raw: String| {
            let mut buf = BytesMut::from(raw.as_bytes());
            parse(&mut buf, &limits).map(|h| h.is_some())
        };
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(80));
        assert_eq!(
            check(long_uri).unwrap_err().status,
            StatusCode::URI_TOO_LONG
        );
        // Still arriving: the request line alone is already too long.
        let arriving = format!("GET /{}", "u".repeat(80));
        assert_eq!(
            check(arriving).unwrap_err().status,
            StatusCode::URI_TOO_LONG
        );
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(80));
        assert_eq!(
            check(long_header).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let long_arriving = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(80));
        assert_eq!(
            check(long_arriving).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let many: String = (0..20).map(|i| format!("X-{i}: vvvvvvvv\r\n")).collect();
        let big = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(check(big).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n".into()), Ok(true));
        let too_many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{too_many}\r\n").as_bytes()),
            431
        );
    }

    #[test]
    fn absolute_form_and_asterisk_targets_parse() {
        let h = parse_all(b"GET http://a.example/x?y HTTP/1.1\r\nHost: b\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.uri.host(), Some("a.example"));
        assert_eq!(h.parts.uri.path(), "/x");
        let h = parse_all(b"OPTIONS * HTTP/1.1\r\nHost: b\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.uri, "*");
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let h = parse_all(b"\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.method, Method::GET);
    }
}
