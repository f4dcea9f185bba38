//! Header rewriting between the two sides: hop-by-hop headers never cross, `Host` is
//! `$proxy_host` unless `proxy_set_header Host` says otherwise, and the peer's `Server` and
//! `Date` are replaced by imbang's (nginx's `proxy_hide_header` defaults).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::snapshot::Route;
use crate::vars::Vars;

/// RFC 9110's hop-by-hop headers, plus the old `Proxy-Connection`.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

/// Turns the client's headers into the ones sent upstream (in place).
pub fn to_upstream(headers: &mut HeaderMap, route: &Route, proxy_host: &str, vars: &dyn Vars) {
    // Templates read the client's headers ($http_*), so evaluate them before changing anything.
    let set: Vec<(HeaderName, String)> = route
        .set_headers
        .iter()
        .map(|(name, template)| (name.clone(), template.render(vars)))
        .collect();
    strip_hop_by_hop(headers);
    if !route.sets_host {
        if let Ok(v) = HeaderValue::from_str(proxy_host) {
            headers.insert(header::HOST, v);
        }
    }
    for (name, value) in set {
        if value.is_empty() {
            headers.remove(&name);
        } else if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// Turns the peer's response headers into the ones the client gets (in place).
pub fn to_client(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::DATE); // hyper's server writes its own
    headers.insert(header::SERVER, HeaderValue::from_static("imbang"));
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
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }
}
