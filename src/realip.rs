//! nginx's realip module at request time (`ngx_http_realip_handler`): when the connection comes
//! from a trusted address (`set_real_ip_from`), the client address is taken from a field of the
//! request (`real_ip_header`). It then stands for the client everywhere nginx uses
//! `c->sockaddr`: `$remote_addr`, `$remote_port`, `$binary_remote_addr`, `allow`/`deny`,
//! `ip_hash`, `$proxy_add_x_forwarded_for`, the error log's `client:`; `$realip_remote_addr`
//! keeps the connection's.
//!
//! As nginx, it runs twice: with the server level's settings once the server is known (nginx's
//! post-read phase), and, if that changed nothing, with the location's before the access check
//! (the preaccess phase). The caller keeps what the first found ([`crate::proxy::RequestState`]).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::config::model::{RealIp, RealIpHeader};

/// The client address `spec` finds for a connection from `peer` with `headers`, or `None`
/// when the module leaves it as it is (untrusted peer, no field, no address in it). `proxy`:
/// the connection's PROXY protocol header, for `real_ip_header proxy_protocol`.
pub fn find(
    spec: &RealIp,
    peer: SocketAddr,
    headers: &HeaderMap,
    proxy: Option<&crate::proxy_protocol::Header>,
) -> Option<SocketAddr> {
    if !spec.trusts(peer.ip()) {
        return None;
    }
    match &spec.header {
        RealIpHeader::XRealIp => from_field(spec, peer, headers.get("x-real-ip")?.as_bytes()),
        RealIpHeader::Other(name) => from_field(spec, peer, headers.get(name.as_str())?.as_bytes()),
        // nginx: the header's source address with its port; a v1 address that is no IP
        // address (the protocol allows any hex text) changes nothing.
        RealIpHeader::ProxyProtocol => proxy?.addresses.as_ref()?.source_addr(),
        RealIpHeader::XForwardedFor => {
            let fields: Vec<&[u8]> = headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            forwarded(spec, peer, &fields)
        }
    }
}

/// One field's value (`X-Real-IP`, any named field): a list like `X-Forwarded-For`'s, of which
/// nginx takes the last address (and, recursive, walks back past trusted ones).
fn from_field(spec: &RealIp, peer: SocketAddr, value: &[u8]) -> Option<SocketAddr> {
    match walk(spec, peer, value) {
        Walk::Found(addr) | Walk::Stopped(addr) => Some(addr),
        Walk::Nothing => None,
    }
}

/// nginx's `ngx_http_get_forwarded_addr` over every `X-Forwarded-For` field, the last first:
/// without `real_ip_recursive` only the last field's last address counts.
fn forwarded(spec: &RealIp, peer: SocketAddr, fields: &[&[u8]]) -> Option<SocketAddr> {
    let mut addr = peer;
    let mut found = None;
    for value in fields.iter().rev() {
        match walk(spec, addr, value) {
            Walk::Found(a) => {
                found = Some(a);
                addr = a;
                if !spec.recursive {
                    break;
                }
            }
            Walk::Stopped(a) => return Some(a),
            Walk::Nothing => return found,
        }
    }
    found
}

enum Walk {
    /// Every address of the value was taken (the last one taken is the client so far).
    Found(SocketAddr),
    /// An address stopped the walk (untrusted, or not an address) after this one was taken.
    Stopped(SocketAddr),
    /// The first address looked at was not usable (or `from` was not trusted).
    Nothing,
}

/// nginx's `ngx_http_get_forwarded_addr_internal`: from the end of `value`, take the last
/// address while the address before it is trusted (once, unless recursive).
fn walk(spec: &RealIp, mut from: SocketAddr, value: &[u8]) -> Walk {
    let mut rest = value;
    let mut taken = None;
    loop {
        if !spec.trusts(from.ip()) {
            return taken.map_or(Walk::Nothing, Walk::Stopped);
        }
        let end = rest
            .iter()
            .rposition(|&b| b != b' ' && b != b',')
            .map_or(0, |i| i + 1);
        let trimmed = &rest[..end];
        let start = trimmed
            .iter()
            .rposition(|&b| b == b' ' || b == b',')
            .map_or(0, |i| i + 1);
        let Some(addr) = parse_addr(&trimmed[start..]) else {
            return taken.map_or(Walk::Nothing, Walk::Stopped);
        };
        taken = Some(addr);
        from = addr;
        if !spec.recursive || start == 0 {
            return Walk::Found(addr);
        }
        rest = &trimmed[..start - 1];
    }
}

/// nginx's `ngx_parse_addr_port`: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`; without
/// a port the address has port 0 (`$remote_port` is then empty, as nginx's).
fn parse_addr(text: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(text).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    Some(SocketAddr::new(
        inner.parse::<std::net::Ipv6Addr>().ok()?.into(),
        0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(from: &[&str], header: RealIpHeader, recursive: bool) -> RealIp {
        RealIp {
            from: from
                .iter()
                .map(|s| {
                    let (a, p) = s.split_once('/').unwrap();
                    (a.parse().unwrap(), p.parse().unwrap())
                })
                .collect(),
            header,
            recursive,
        }
    }

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 5555)
    }

    #[test]
    fn an_untrusted_peer_keeps_its_address() {
        let s = spec(&["10.0.0.0/8"], RealIpHeader::XRealIp, false);
        let h = headers(&[("x-real-ip", "1.2.3.4")]);
        assert_eq!(find(&s, peer("192.168.0.1"), &h, None), None);
        assert_eq!(
            find(&s, peer("10.1.1.1"), &h, None),
            Some("1.2.3.4:0".parse().unwrap())
        );
    }

    #[test]
    fn x_forwarded_for_takes_the_last_address_or_walks_back_past_trusted_ones() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2,10.0.0.2 ")]);
        let once = spec(&["10.0.0.0/8"], RealIpHeader::XForwardedFor, false);
        assert_eq!(
            find(&once, peer("10.0.0.1"), &h, None)
                .unwrap()
                .ip()
                .to_string(),
            "10.0.0.2"
        );
        let rec = spec(&["10.0.0.0/8"], RealIpHeader::XForwardedFor, true);
        assert_eq!(
            find(&rec, peer("10.0.0.1"), &h, None)
                .unwrap()
                .ip()
                .to_string(),
            "2.2.2.2"
        );
        let all = spec(&["0.0.0.0/0"], RealIpHeader::XForwardedFor, true);
        assert_eq!(
            find(&all, peer("10.0.0.1"), &h, None)
                .unwrap()
                .ip()
                .to_string(),
            "1.1.1.1"
        );
    }

    #[test]
    fn several_x_forwarded_for_fields_are_one_list_when_recursive() {
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "10.0.0.3"),
        ]);
        let rec = spec(&["10.0.0.0/8"], RealIpHeader::XForwardedFor, true);
        assert_eq!(
            find(&rec, peer("10.0.0.1"), &h, None)
                .unwrap()
                .ip()
                .to_string(),
            "1.1.1.1"
        );
        let once = spec(&["10.0.0.0/8"], RealIpHeader::XForwardedFor, false);
        assert_eq!(
            find(&once, peer("10.0.0.1"), &h, None)
                .unwrap()
                .ip()
                .to_string(),
            "10.0.0.3"
        );
    }

    #[test]
    fn addresses_with_ports_and_ipv6_parse_as_nginx_s() {
        assert_eq!(
            parse_addr(b"1.2.3.4:80"),
            Some("1.2.3.4:80".parse().unwrap())
        );
        assert_eq!(parse_addr(b"::1"), Some("[::1]:0".parse().unwrap()));
        assert_eq!(parse_addr(b"[::1]"), Some("[::1]:0".parse().unwrap()));
        assert_eq!(parse_addr(b"[::1]:8"), Some("[::1]:8".parse().unwrap()));
        assert_eq!(parse_addr(b"unknown"), None);
        let s = spec(
            &["127.0.0.0/8"],
            RealIpHeader::Other("cf-connecting-ip".into()),
            false,
        );
        let h = headers(&[("CF-Connecting-IP", "garbage")]);
        assert_eq!(find(&s, peer("127.0.0.1"), &h, None), None);
    }
}
