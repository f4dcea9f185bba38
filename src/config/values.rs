//! Typed directive arguments: durations, sizes, flags, numbers, addresses.
//! Each parser returns `None` on bad input; the caller words the error for its directive.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// nginx's time syntax: `500ms`, `10s`, `5m`, `1h30m`, `2d`, `1w`, `1M` (30 days), `1y` (365 days);
/// a bare number is seconds.
pub fn duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: u64 = text[start..i].parse().ok()?;
        let unit_ms: u64 = if text[i..].starts_with("ms") {
            i += 2;
            1
        } else if i == bytes.len() {
            1000
        } else {
            let unit = bytes[i];
            i += 1;
            match unit {
                b's' => 1000,
                b'm' => 60_000,
                b'h' => 3_600_000,
                b'd' => 86_400_000,
                b'w' => 7 * 86_400_000,
                b'M' => 30 * 86_400_000,
                b'y' => 365 * 86_400_000,
                _ => return None,
            }
        };
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

/// nginx's size syntax: `512`, `8k`, `1m`, `1g` (either case), in bytes.
pub fn size(text: &str) -> Option<u64> {
    let (digits, mult) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1024),
        b'm' | b'M' => (&text[..text.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&text[..text.len() - 1], 1024 * 1024 * 1024),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// `on` / `off`.
pub fn flag(text: &str) -> Option<bool> {
    match text {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// A non-negative decimal number.
pub fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Why an address did not parse, in the words nginx uses.
#[derive(Debug, PartialEq, Eq)]
pub enum AddrError {
    InvalidPort,
    HostNotFound,
    Unix,
}

/// A `host[:port]` / `[v6][:port]` / `*:port` / `port` address, resolved to every address the
/// host has (as nginx does at start-up). `port_only_means_port` is true for `listen 80`.
pub fn socket_addrs(
    text: &str,
    default_port: u16,
    port_only_means_port: bool,
) -> Result<Vec<SocketAddr>, AddrError> {
    if text.starts_with("unix:") {
        return Err(AddrError::Unix);
    }
    if port_only_means_port && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let port = parse_port(text)?;
        return Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))]);
    }
    let (host, port) = split_host_port(text, default_port)?;
    if host == "*" {
        return Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.is_empty() {
        return Err(AddrError::HostNotFound);
    }
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|_| AddrError::HostNotFound)?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(AddrError::HostNotFound);
    }
    Ok(addrs)
}

fn split_host_port(text: &str, default_port: u16) -> Result<(&str, u16), AddrError> {
    if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']').ok_or(AddrError::HostNotFound)?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if after.is_empty() => default_port,
            None => return Err(AddrError::InvalidPort),
        };
        return Ok((host, port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Ok((host, parse_port(port)?)),
        None => Ok((text, default_port)),
    }
}

fn parse_port(text: &str) -> Result<u16, AddrError> {
    match number(text) {
        Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
        // Port 0 asks the kernel for a free port: imbang allows it (tests and `demo` use it).
        Some(0) => Ok(0),
        _ => Err(AddrError::InvalidPort),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_nginx_units() {
        let cases = [
            ("10", Some(10_000)),
            ("10s", Some(10_000)),
            ("500ms", Some(500)),
            ("1h30m", Some(5_400_000)),
            ("2d", Some(172_800_000)),
            ("1w", Some(604_800_000)),
            ("1M", Some(2_592_000_000)),
            ("", None),
            ("s", None),
            ("10x", None),
            ("-1", None),
        ];
        for (text, want) in cases {
            assert_eq!(duration(text).map(|d| d.as_millis() as u64), want, "{text}");
        }
    }

    #[test]
    fn sizes_follow_nginx_units() {
        assert_eq!(size("512"), Some(512));
        assert_eq!(size("8k"), Some(8192));
        assert_eq!(size("1M"), Some(1 << 20));
        assert_eq!(size("2g"), Some(2 << 30));
        assert_eq!(size("k"), None);
        assert_eq!(size("1.5m"), None);
    }

    #[test]
    fn addresses_in_every_listen_form() {
        let v4 = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(socket_addrs("80", 80, true), Ok(vec![v4("0.0.0.0:80")]));
        assert_eq!(
            socket_addrs("*:8080", 80, true),
            Ok(vec![v4("0.0.0.0:8080")])
        );
        assert_eq!(
            socket_addrs("127.0.0.1", 80, true),
            Ok(vec![v4("127.0.0.1:80")])
        );
        assert_eq!(
            socket_addrs("[::1]:8080", 80, true),
            Ok(vec![v4("[::1]:8080")])
        );
        assert_eq!(socket_addrs("[::]", 80, true), Ok(vec![v4("[::]:80")]));
        assert_eq!(
            socket_addrs("127.0.0.1:x", 80, true),
            Err(AddrError::InvalidPort)
        );
        assert_eq!(
            socket_addrs("127.0.0.1:70000", 80, true),
            Err(AddrError::InvalidPort)
        );
        assert_eq!(socket_addrs("unix:/tmp/s", 80, true), Err(AddrError::Unix));
        assert!(
            socket_addrs("localhost:3000", 80, false)
                .unwrap()
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 3000)
        );
    }
}
