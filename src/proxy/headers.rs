//! Header rewriting between the two sides: hop-by-hop headers never cross, `Host` is
//! `$proxy_host` unless `proxy_set_header Host` says otherwise, and the peer's `Server` and
//! `Date` are replaced by imbang's (nginx's `proxy_hide_header` defaults).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::ResponseBody;
use crate::http1::{KEEP_ALIVE, Named, PROXY_CONNECTION, RawFields};
use crate::snapshot::Route;
use crate::vars::Vars;

/// RFC 9110's hop-by-hop headers, plus the old `Proxy-Connection`. Compared as names (for the
/// `http` crate's standard names an enum compare) rather than as text, which would first look
/// each name's text up.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
}

/// [`is_hop_by_hop`] for a name as it came (any case).
#[inline]
fn is_hop_by_hop_raw(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// Whether `headers` has a field named `name`, by a walk over its names: for the few fields of
/// a usual message that costs less than the hash lookup `contains_key` makes, most of all when
/// the field is absent, as `Connection`, `TE` and the framing fields of a GET usually are.
pub(crate) fn has(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys().any(|n| n == name)
}

/// The `Connection` tokens of a message, found by a walk over its few fields rather than a
/// lookup (most messages have no `Connection`).
fn connection(headers: &HeaderMap) -> Named<'_> {
    let values = headers
        .iter()
        .filter(|(name, _)| *name == header::CONNECTION);
    Named::new(values.map(|(_, v)| v.as_bytes()))
}

/// Removes every header `drop` picks, looking each name up once and allocating nothing for
/// the usual few.
fn remove_where(headers: &mut HeaderMap, drop: impl Fn(&HeaderName, &Named<'_>) -> bool) {
    const FEW: usize = 16;
    let mut few: [Option<HeaderName>; FEW] = std::array::from_fn(|_| None);
    let mut count = 0;
    let mut more = Vec::new();
    let connection = connection(headers);
    for name in headers.keys() {
        if drop(name, &connection) {
            if count < FEW {
                few[count] = Some(name.clone());
                count += 1;
            } else {
                more.push(name.clone());
            }
        }
    }
    for name in few[..count].iter_mut().filter_map(Option::take).chain(more) {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, |name, connection| {
        is_hop_by_hop(name) || connection.names(name)
    });
}

/// RFC 9113 §8.2.2's connection-specific fields, which an HTTP/2 message must not carry.
fn is_connection_specific(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
}

/// Removes what an HTTP/2 response must not carry: the connection-specific fields and every
/// field `Connection` names. One walk over the names when there is none (the usual case).
pub fn strip_for_http2(headers: &mut HeaderMap) {
    if headers.keys().any(is_connection_specific) {
        remove_where(headers, |name, connection| {
            is_connection_specific(name) || connection.names(name)
        });
    }
}

/// Headers that the caller sends upstream itself, so `proxy_set_header` must not send them too.
#[derive(Clone, Copy, Debug, Default)]
pub struct Replaced {
    /// `Upgrade` and `Connection: upgrade` (a protocol switch is passed on).
    pub upgrade: bool,
    /// `Trailer` (a chunked body's declared trailer fields).
    pub trailer: bool,
    /// `TE: trailers`.
    pub te: bool,
}

impl Replaced {
    fn covers(&self, name: &HeaderName) -> bool {
        (self.upgrade && (name == header::UPGRADE || name == header::CONNECTION))
            || (self.trailer && name == header::TRAILER)
            || (self.te && name == header::TE)
    }
}

/// Gives `field` each header to send upstream, without building a header map: the client's
/// (unless `proxy_pass_request_headers off`), less hop-by-hop ones, those its `Connection`
/// names, `Host` and the ones `proxy_set_header` sets; then `Host: $proxy_host` (unless
/// `proxy_set_header Host` is set); then each `proxy_set_header` whose value is not empty (the
/// last one for a name wins). The framing fields (`Content-Length`, `Transfer-Encoding`) are
/// the encoder's; `replaced` names the ones the caller writes. An HTTP/1 client's fields
/// (`raw`) go as they came: their spelling, order and duplicates; an HTTP/2 client's from the
/// map (lowercase, as it sent them). Names imbang sends itself are spelled as nginx spells
/// them: `Host`, and `proxy_set_header`'s as the config writes them.
pub fn for_upstream(
    client: &HeaderMap,
    raw: Option<&RawFields>,
    route: &Route,
    proxy_host: &str,
    vars: &dyn Vars,
    replaced: Replaced,
    mut field: impl FnMut(&[u8], &[u8]),
) {
    if route.conf.proxy.pass_request_headers {
        match raw {
            Some(raw) => {
                let connection = Named::new(raw.get_all(b"connection"));
                for (name, value) in raw.iter() {
                    let skip = is_hop_by_hop_raw(name)
                        || name.eq_ignore_ascii_case(b"host")
                        || name.eq_ignore_ascii_case(b"content-length")
                        || (route.set_headers.iter())
                            .any(|(.., spelled)| spelled.as_bytes().eq_ignore_ascii_case(name))
                        || connection.has(name);
                    if !skip {
                        field(name, value);
                    }
                }
            }
            None => {
                let connection = connection(client);
                for (name, value) in client {
                    let skip = is_hop_by_hop(name)
                        || name == header::HOST
                        || name == header::CONTENT_LENGTH
                        || route.set_headers.iter().any(|(set, ..)| set == name)
                        || connection.names(name);
                    if !skip {
                        field(name.as_str().as_bytes(), value.as_bytes());
                    }
                }
            }
        }
    }
    if !route.sets_host {
        field(b"Host", proxy_host.as_bytes());
    }
    let mut value = String::new();
    for (i, (name, template, spelled)) in route.set_headers.iter().enumerate() {
        let later = route.set_headers[i + 1..].iter().any(|(n, ..)| n == name);
        if later
            || replaced.covers(name)
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        value.clear();
        template.render_into(vars, &mut value);
        // An empty value sends nothing (nginx's way to drop a header); a value that could
        // not stand in a field (a line break from a variable) is not sent either.
        if !value.is_empty()
            && value
                .bytes()
                .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        {
            field(spelled.as_bytes(), value.as_bytes());
        }
    }
}

/// Whether a field of the peer's response stays away from the client: hop-by-hop (`connection`
/// being the response's `Connection` tokens) or hidden (`proxy_hide_header` and its defaults).
/// `name` as the peer spelled it.
pub fn hidden_from_client(name: &[u8], connection: &Named<'_>, route: &Route) -> bool {
    let hidden = || (route.hidden.iter()).any(|h| h.as_bytes().eq_ignore_ascii_case(name));
    is_hop_by_hop_raw(name)
        || (route.hidden_lengths & 1 << name.len().min(63) != 0 && hidden())
        || connection.has(name)
}

/// Turns the peer's response fields into the ones the client gets (in place): hop-by-hop and
/// hidden ones removed, `Location`/`Refresh` rewritten by `proxy_redirect`.
pub fn to_client(fields: &mut RawFields, route: &Route) {
    // The `Connection` tokens are read before anything is removed (they name what goes).
    let connection: Vec<Vec<u8>> = fields.get_all(b"connection").map(<[u8]>::to_vec).collect();
    let connection = Named::new(connection.iter().map(Vec::as_slice));
    fields.retain(|name, _| !hidden_from_client(name, &connection, route));
    redirects(fields, route);
}

/// `proxy_redirect` on `Location` and `Refresh`, and `proxy_cookie_*` on `Set-Cookie` (each
/// field keeps its spelling and place).
pub fn redirects(fields: &mut RawFields, route: &Route) {
    if let Some(cookies) = &route.conf.proxy.cookies {
        super::cookie::rewrite(fields, cookies);
    }
    if !route.redirects.is_empty() {
        for name in [&b"location"[..], b"refresh"] {
            let rewritten = fields
                .get(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| redirect(v, &route.redirects, name == b"refresh"))
                .filter(|v| HeaderValue::from_str(v).is_ok());
            if let Some(v) = rewritten {
                fields.set_first(name, v.as_bytes());
            }
        }
    }
}

/// `proxy_redirect`: the first rule whose `from` starts the URL replaces that prefix. In a
/// `Refresh` header the URL follows `url=`.
fn redirect(value: &str, rules: &[(String, String)], refresh: bool) -> Option<String> {
    let (head, url) = if refresh {
        let i = value.to_ascii_lowercase().find("url=")? + 4;
        value.split_at(i)
    } else {
        ("", value)
    };
    rules.iter().find_map(|(from, to)| {
        url.strip_prefix(from.as_str())
            .map(|rest| format!("{head}{to}{rest}"))
    })
}

/// nginx's `add_header`: on 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308 responses, or on
/// every response with `always`. An empty value adds nothing. The name as the config spells
/// it, after the peer's fields.
pub fn add_headers(response: &mut http::Response<ResponseBody>, route: &Route, vars: &dyn Vars) {
    if route.add_headers.is_empty() {
        return;
    }
    let ok = matches!(
        response.status().as_u16(),
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    );
    for (_, template, always, spelled) in &route.add_headers {
        if !(ok || *always) {
            continue;
        }
        let value = template.render(vars);
        if value.is_empty() || HeaderValue::from_str(&value).is_err() {
            continue;
        }
        response
            .body_mut()
            .fields_mut()
            .push(spelled.as_bytes(), value.as_bytes());
    }
}

/// `Server: imbang/<version>` (or `imbang` with `server_tokens off`), unless the peer's own
/// `Server` was let through by `proxy_pass_header Server`.
pub fn set_server(response: &mut http::Response<ResponseBody>, route: &Route) {
    if response.body().fields().is_some_and(|f| f.has(b"server")) {
        return;
    }
    response
        .headers_mut()
        .entry(header::SERVER)
        .or_insert_with(|| route.server_header.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        for name in [
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            h.insert(name, HeaderValue::from_static("x"));
        }
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn http2_answers_lose_connection_specific_fields_only() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-named"),
            ("x-named", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("x-kept", "1"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_for_http2(&mut h);
        let mut names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["trailer", "x-kept"]);
        // Nothing to strip: the map is left as it was.
        let before = h.clone();
        strip_for_http2(&mut h);
        assert_eq!(h, before);
    }
}
