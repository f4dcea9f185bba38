//! The PROXY protocol (HAProxy's, versions 1 and 2): how a TCP balancer in front of imbang tells
//! it the client's address (`listen ... proxy_protocol`), and how imbang tells a peer behind it
//! (stream's `proxy_protocol on`). nginx's `ngx_proxy_protocol.c`.
//!
//! Reading is strict: a connection on a `proxy_protocol` listener must begin with a complete,
//! well-formed header, or it is closed (the caller logs [`ReadError`] at [`ReadError::level`],
//! nginx's levels). A header may come in any number of reads.
//!
//! - [`parse`]: the pure parser over the bytes received so far (incomplete / broken / parsed
//!   with its length). Bounded: [`MAX_V1`] bytes for a text header, [`MAX_HEADER`] for binary.
//! - [`read_header_tcp`]: reads a header off a `TcpStream` by peeking, so that not one byte past
//!   the header is taken from the socket: TLS, HTTP/1 and HTTP/2 then read the stream as if the
//!   header had never been there.
//! - [`read_header`]: the same over any `AsyncRead`, handing back the bytes read past the header.
//! - [`encode_v1`] / [`encode_v2`]: the header imbang sends to a peer for a (client, server) pair.
//!
//! What nginx does and imbang follows: `PROXY UNKNOWN ...` (v1), a v2 `LOCAL` command, and v2
//! address families other than IPv4/IPv6 (`AF_UNSPEC`, `AF_UNIX`) or transports other than
//! `STREAM` are accepted and skipped: the connection's own addresses stand and the
//! `$proxy_protocol_*` variables are empty. v1 addresses are kept as the text that came (any
//! of `0-9a-fA-F.:`), as nginx's `$proxy_protocol_addr`. Where imbang is stricter than nginx:
//! a v2 header whose TLV list is broken is refused at once (nginx refuses only when a
//! `$proxy_protocol_tlv_*` variable is read), and a v1 header is looked for in its first
//! [`MAX_V1`] bytes over any number of reads (nginx parses its first read only).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// The longest v1 header, CRLF included (the protocol's and nginx's limit).
pub const MAX_V1: usize = 107;
/// The longest header imbang reads (v2 with its TLVs), as nginx's `NGX_PROXY_PROTOCOL_MAX_HEADER`.
pub const MAX_HEADER: usize = 4096;

/// The v2 signature: the first 12 bytes of every binary header.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY protocol header as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// The client and server addresses the header carries; `None` when it carries none imbang
    /// uses (v1 `UNKNOWN`, v2 `LOCAL`, `AF_UNSPEC`, `AF_UNIX`, a non-`STREAM` transport).
    pub addresses: Option<Addresses>,
    /// The v2 TLVs as they came (type, 2-byte length, value; already checked to be well
    /// formed); empty for v1. Read with [`Header::tlv`].
    pub tlvs: Box<[u8]>,
}

/// The addresses of a header that carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// `$proxy_protocol_addr`: the client's address as text (v1: as sent; v2: formatted).
    pub source: Box<str>,
    /// `$proxy_protocol_port`.
    pub source_port: u16,
    /// `$proxy_protocol_server_addr`.
    pub destination: Box<str>,
    /// `$proxy_protocol_server_port`.
    pub destination_port: u16,
}

impl Addresses {
    /// The client's address as a socket address (nginx's `ngx_parse_addr` on the text, with the
    /// port), or `None` when the text is no IP address (a v1 header may carry any hex text).
    pub fn source_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.source.parse().ok()?;
        Some(SocketAddr::new(ip, self.source_port))
    }
}

/// Why bytes are not (yet) a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The bytes so far begin a header that is not complete: read more.
    Incomplete,
    /// Not a header, or a broken one: close the connection.
    Broken(Broken),
}

/// What is wrong with a header; `Display` gives nginx's words where nginx has some.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Not a PROXY protocol header (v1 text or v2 signature); the bytes up to the first line
    /// end (at most [`MAX_V1`]), other than printable ASCII as `\xNN`, for the log (nginx's
    /// `broken header: "..."`).
    Header(String),
    /// A v2 header of another version.
    Version(u8),
    /// A v2 header longer than [`MAX_HEADER`].
    TooLarge(usize),
    /// A v2 address block shorter than its family needs.
    ShortAddresses,
    /// A v2 TLV running past the end of the header.
    Tlv,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(text) => write!(f, "broken header: \"{text}\""),
            Self::Version(v) => write!(f, "unknown PROXY protocol version: {v}"),
            Self::TooLarge(n) => write!(f, "header is too large ({n} bytes)"),
            Self::ShortAddresses => {
                f.write_str("broken PROXY protocol v2 header: addresses too short")
            }
            Self::Tlv => f.write_str("broken PROXY protocol TLV"),
        }
    }
}

/// Parses the header at the start of `buf` (the bytes received so far). `Ok` gives the header
/// and its length in bytes: what follows belongs to the protocol behind it.
pub fn parse(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    let sig = buf.len().min(V2_SIGNATURE.len());
    if sig > 0 && buf[..sig] == V2_SIGNATURE[..sig] {
        return parse_v2(buf);
    }
    let prefix = buf.len().min(6);
    if buf[..prefix] != b"PROXY "[..prefix] {
        return Err(broken_text(buf));
    }
    let Some(lf) = buf.iter().take(MAX_V1).position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_V1 {
            Err(broken_text(buf))
        } else {
            Err(ParseError::Incomplete)
        };
    };
    let line = &buf[..=lf];
    match parse_v1(line) {
        Some(addresses) => Ok((
            Header {
                version: 1,
                addresses,
                tlvs: Box::default(),
            },
            line.len(),
        )),
        None => Err(broken_text(buf)),
    }
}

/// nginx's `broken header: "..."` shows the bytes up to the first line end.
fn broken_text(buf: &[u8]) -> ParseError {
    let end = buf
        .iter()
        .take(MAX_V1)
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len().min(MAX_V1));
    // Printable ASCII as it came, other bytes as `\xNN` (a TLS hello sent to a PROXY
    // port would otherwise write binary into the log).
    let mut text = String::with_capacity(end);
    for &b in &buf[..end] {
        if (0x20..0x7f).contains(&b) {
            text.push(char::from(b));
        } else {
            text.push_str(&format!("\\x{b:02x}"));
        }
    }
    ParseError::Broken(Broken::Header(text))
}

/// One v1 line, `\n` included: `None` when broken, `Some(None)` for `UNKNOWN`.
fn parse_v1(line: &[u8]) -> Option<Option<Addresses>> {
    let rest = line.strip_prefix(b"PROXY ")?;
    if rest.starts_with(b"UNKNOWN") {
        // nginx skips to the CRLF, whatever comes between.
        return line.ends_with(b"\r\n").then_some(None);
    }
    let rest = rest
        .strip_prefix(b"TCP4 ")
        .or_else(|| rest.strip_prefix(b"TCP6 "))?;
    let rest = rest.strip_suffix(b"\r\n")?;
    let mut fields = rest.split(|&b| b == b' ');
    let source = address_text(fields.next()?)?;
    let destination = address_text(fields.next()?)?;
    let source_port = port(fields.next()?)?;
    let destination_port = port(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    Some(Some(Addresses {
        source,
        source_port,
        destination,
        destination_port,
    }))
}

/// nginx's `ngx_proxy_protocol_read_addr`: hex digits, `.` and `:` (possibly empty).
fn address_text(field: &[u8]) -> Option<Box<str>> {
    field
        .iter()
        .all(|&b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
        .then(|| String::from_utf8_lossy(field).into())
}

/// nginx's `ngx_atoi` bounded by 65535: one or more digits.
fn port(field: &[u8]) -> Option<u16> {
    if field.is_empty() || field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u32 = field.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok()
}

fn parse_v2(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    if buf.len() < 16 {
        return Err(ParseError::Incomplete);
    }
    let version = buf[12] >> 4;
    if version != 2 {
        return Err(ParseError::Broken(Broken::Version(version)));
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_HEADER {
        return Err(ParseError::Broken(Broken::TooLarge(len)));
    }
    if buf.len() < len {
        return Err(ParseError::Incomplete);
    }
    let body = &buf[16..len];
    let command = buf[12] & 0x0f;
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let skipped = Header {
        version: 2,
        addresses: None,
        tlvs: Box::default(),
    };
    // As nginx: only the PROXY command over STREAM carries addresses; LOCAL (0), other
    // commands and transports are skipped whole.
    if command != 1 || transport != 1 {
        return Ok((skipped, len));
    }
    let (source, destination, ports, rest) = match family {
        1 => {
            let a = body
                .get(..12)
                .ok_or(ParseError::Broken(Broken::ShortAddresses))?;
            let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string();
            (ip(&a[0..4]), ip(&a[4..8]), &a[8..12], &body[12..])
        }
        2 => {
            let a = body
                .get(..36)
                .ok_or(ParseError::Broken(Broken::ShortAddresses))?;
            let ip = |b: &[u8]| {
                let octets: [u8; 16] = b.try_into().unwrap_or_default();
                Ipv6Addr::from(octets).to_string()
            };
            (ip(&a[0..16]), ip(&a[16..32]), &a[32..36], &body[36..])
        }
        // AF_UNSPEC, AF_UNIX (nginx: "unsupported address family", skipped).
        _ => return Ok((skipped, len)),
    };
    check_tlvs(rest).map_err(ParseError::Broken)?;
    Ok((
        Header {
            version: 2,
            addresses: Some(Addresses {
                source: source.into(),
                source_port: u16::from_be_bytes([ports[0], ports[1]]),
                destination: destination.into(),
                destination_port: u16::from_be_bytes([ports[2], ports[3]]),
            }),
            tlvs: rest.into(),
        },
        len,
    ))
}

fn check_tlvs(mut tlvs: &[u8]) -> Result<(), Broken> {
    while !tlvs.is_empty() {
        let [_, hi, lo, rest @ ..] = tlvs else {
            return Err(Broken::Tlv);
        };
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        tlvs = rest.get(n..).ok_or(Broken::Tlv)?;
    }
    Ok(())
}

/// The value of TLV `kind` in a TLV list (the first one of that type).
fn lookup(mut tlvs: &[u8], kind: u8) -> Option<&[u8]> {
    while let [t, hi, lo, rest @ ..] = tlvs {
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        let value = rest.get(..n)?;
        if *t == kind {
            return Some(value);
        }
        tlvs = &rest[n..];
    }
    None
}

/// The TLV types nginx names (`$proxy_protocol_tlv_alpn` ...); others are `0xNN`.
const NAMES: &[(&str, u8)] = &[
    ("alpn", 0x01),
    ("authority", 0x02),
    ("unique_id", 0x05),
    ("ssl", 0x20),
    ("netns", 0x30),
];
/// The sub-TLVs of the `ssl` TLV (`$proxy_protocol_tlv_ssl_cn` ...).
const SSL_NAMES: &[(&str, u8)] = &[
    ("version", 0x21),
    ("cn", 0x22),
    ("cipher", 0x23),
    ("sig_alg", 0x24),
    ("key_alg", 0x25),
];

/// What a `$proxy_protocol_tlv_NAME` variable reads, decided once from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlvName {
    /// A TLV of the header (`alpn`, `authority`, `unique_id`, `ssl`, `netns`, `0xNN`).
    Top(u8),
    /// A sub-TLV of the `ssl` TLV (`ssl_version`, `ssl_cn`, ..., `ssl_0xNN`).
    Ssl(u8),
    /// `ssl_verify`: the `ssl` TLV's verify field, in decimal.
    SslVerify,
}

impl TlvName {
    /// nginx's names (`ngx_proxy_protocol_get_tlv`); `None` for a name nginx does not know.
    pub fn parse(name: &str) -> Option<Self> {
        let (ssl, name) = match name.strip_prefix("ssl_") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if ssl && name == "verify" {
            return Some(Self::SslVerify);
        }
        let kind = if let Some(hex) = name.strip_prefix("0x") {
            u8::from_str_radix(hex, 16).ok()?
        } else {
            let table = if ssl { SSL_NAMES } else { NAMES };
            table.iter().find(|(n, _)| *n == name)?.1
        };
        Some(if ssl {
            Self::Ssl(kind)
        } else {
            Self::Top(kind)
        })
    }
}

impl Header {
    /// The value of a TLV by nginx's name (`$proxy_protocol_tlv_*`): `None` when the header has
    /// none of that type. `SslVerify`'s value is written out in decimal, as nginx's.
    pub fn tlv(&self, name: TlvName) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        match name {
            TlvName::Top(kind) => lookup(&self.tlvs, kind).map(Cow::Borrowed),
            TlvName::Ssl(kind) => {
                let ssl = lookup(&self.tlvs, 0x20)?;
                lookup(ssl.get(5..)?, kind).map(Cow::Borrowed)
            }
            TlvName::SslVerify => {
                let ssl = lookup(&self.tlvs, 0x20)?;
                let v = ssl.get(1..5)?;
                let verify = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                Some(Cow::Owned(verify.to_string().into_bytes()))
            }
        }
    }
}

/// Why no header was read from a connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Broken(Broken),
    /// The client closed the connection before the header was complete.
    #[error("client closed connection")]
    Closed,
    #[error("client timed out (110: Connection timed out)")]
    TimedOut,
    #[error("recv() failed ({})", crate::error_log::errno_text(.0))]
    Io(#[from] io::Error),
}

impl ReadError {
    /// nginx's level for the log line: `error` for a broken header, `info` for the client's
    /// doing (closed, timed out, reset).
    pub fn level(&self) -> crate::config::model::LogLevel {
        use crate::config::model::LogLevel;
        match self {
            Self::Broken(_) => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }
}

/// Reads a header off `stream` within `timeout`, taking from the socket exactly the header's
/// bytes (it peeks, as nginx's stream module does, and reads only what it parsed): whatever
/// follows is left for the protocol behind it. The one copy of the header lives on the heap for
/// the call only.
pub async fn read_header_tcp(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Header, ReadError> {
    match tokio::time::timeout(timeout, peek_header(stream)).await {
        Ok(read) => read,
        Err(_) => Err(ReadError::TimedOut),
    }
}

async fn peek_header(stream: &mut TcpStream) -> Result<Header, ReadError> {
    let mut buf = vec![0u8; MAX_HEADER];
    // `taken`: bytes already read from the socket (all part of the header, which is longer).
    let mut taken = 0;
    loop {
        let n = stream.peek(&mut buf[taken..]).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        match parse(&buf[..taken + n]) {
            Ok((header, len)) => {
                stream.read_exact(&mut buf[taken..len]).await?;
                return Ok(header);
            }
            Err(ParseError::Incomplete) => {
                // Everything peeked is header: take it, so the next peek waits for more.
                stream.read_exact(&mut buf[taken..taken + n]).await?;
                taken += n;
            }
            Err(ParseError::Broken(why)) => return Err(ReadError::Broken(why)),
        }
    }
}

/// Reads a header off any stream within `timeout`, into `buf` (cleared first). On success `buf`
/// holds what was read past the header: the start of the protocol behind it.
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
    timeout: Duration,
    buf: &mut bytes::BytesMut,
) -> Result<Header, ReadError> {
    buf.clear();
    let read = async {
        loop {
            match parse(buf) {
                Ok((header, len)) => {
                    let _ = buf.split_to(len);
                    return Ok(header);
                }
                Err(ParseError::Incomplete) => {}
                Err(ParseError::Broken(why)) => return Err(ReadError::Broken(why)),
            }
            buf.reserve(512);
            if stream.read_buf(buf).await? == 0 {
                return Err(ReadError::Closed);
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(read) => read,
        Err(_) => Err(ReadError::TimedOut),
    }
}

/// Both addresses of one family: IPv4 stays IPv4 when both are; otherwise both as IPv6 (an IPv4
/// one mapped), so a header never mixes families.
fn same_family(client: SocketAddr, server: SocketAddr) -> (IpAddr, IpAddr) {
    match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => (c.into(), s.into()),
        (c, s) => (v6(c).into(), v6(s).into()),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A v1 header for a connection from `client` to `server` (`PROXY TCP4 1.2.3.4 10.0.0.1 5678
/// 80\r\n`); with `None` (a unix-socket client) `PROXY UNKNOWN\r\n`, as nginx writes.
pub fn encode_v1(addresses: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let Some((client, server)) = addresses else {
        return b"PROXY UNKNOWN\r\n".to_vec();
    };
    let (c, s) = same_family(client, server);
    let family = if c.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {c} {s} {} {}\r\n",
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// A v2 header for a connection from `client` to `server`, command PROXY over STREAM, with
/// `tlvs` (type, value) appended; with `None` addresses (a unix-socket client) family
/// `AF_UNSPEC` and no address block. Values longer than 65535 bytes, or a header longer than
/// [`MAX_HEADER`] in all, are the caller's mistake: such TLVs are left out.
pub fn encode_v2(addresses: Option<(SocketAddr, SocketAddr)>, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match addresses.map(|(c, s)| (same_family(c, s), c.port(), s.port())) {
        Some(((IpAddr::V4(c), IpAddr::V4(s)), cp, sp)) => {
            out.extend_from_slice(&[0x11, 0, 0]);
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&cp.to_be_bytes());
            out.extend_from_slice(&sp.to_be_bytes());
        }
        Some(((c, s), cp, sp)) => {
            out.extend_from_slice(&[0x21, 0, 0]);
            out.extend_from_slice(&v6(c).octets());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&cp.to_be_bytes());
            out.extend_from_slice(&sp.to_be_bytes());
        }
        None => out.extend_from_slice(&[0x00, 0, 0]),
    }
    for (kind, value) in tlvs {
        let Ok(n) = u16::try_from(value.len()) else {
            continue;
        };
        if out.len() + 3 + value.len() > MAX_HEADER {
            continue;
        }
        out.push(*kind);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(value);
    }
    let len = (out.len() - 16) as u16;
    out[14..16].copy_from_slice(&len.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(h: &Header) -> (&str, u16, &str, u16) {
        let a = h.addresses.as_ref().unwrap();
        (&a.source, a.source_port, &a.destination, a.destination_port)
    }

    #[test]
    fn v1_tcp4_and_tcp6_with_what_follows_left_alone() {
        let buf = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        let (h, len) = parse(buf).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(addrs(&h), ("192.0.2.1", 56324, "198.51.100.2", 443));
        assert_eq!(&buf[len..], b"GET / HTTP/1.1\r\n");
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n").unwrap();
        assert_eq!(addrs(&h), ("2001:db8::1", 1, "::1", 65535));
        assert_eq!(
            h.addresses.unwrap().source_addr(),
            Some("[2001:db8::1]:1".parse().unwrap())
        );
    }

    #[test]
    fn v1_unknown_carries_no_addresses() {
        let (h, len) = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX").unwrap();
        assert_eq!((h.addresses, len), (None, 35));
        assert!(parse(b"PROXY UNKNOWN\r\n").unwrap().0.addresses.is_none());
    }

    #[test]
    fn v1_broken_headers_are_refused_with_nginx_s_words() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8  80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80 9\r\n",
            b"PROXY TCP4 host 5.6.7.8 1 80\r\n",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 80\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Broken(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let Err(ParseError::Broken(why)) = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") else {
            panic!()
        };
        assert_eq!(why.to_string(), "broken header: \"GET / HTTP/1.1\"");
        // No line end within 107 bytes.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(parse(&long), Err(ParseError::Broken(_))));
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec();
        let v2 = encode_v2(
            Some((
                "192.0.2.1:5".parse().unwrap(),
                "10.0.0.1:80".parse().unwrap(),
            )),
            &[(0x01, b"h2"), (0x05, b"id")],
        );
        for header in [v1, v2] {
            for n in 0..header.len() {
                assert_eq!(parse(&header[..n]), Err(ParseError::Incomplete), "{n}");
            }
            assert_eq!(parse(&header).unwrap().1, header.len());
        }
    }

    #[test]
    fn v2_round_trips_through_the_writer() {
        let c: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        let s: SocketAddr = "[::1]:8443".parse().unwrap();
        let ssl = [&[0x01u8, 0, 0, 0, 7][..], &[0x22, 0, 2], b"cn"].concat();
        let bytes = encode_v2(
            Some((c, s)),
            &[
                (0x01, b"h2"),
                (0x02, b"example.com"),
                (0x20, &ssl),
                (0xe0, b"x"),
            ],
        );
        let (h, len) = parse(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(addrs(&h), ("2001:db8::7", 40000, "::1", 8443));
        let tlv = |n: &str| h.tlv(TlvName::parse(n).unwrap()).map(|v| v.into_owned());
        assert_eq!(tlv("alpn").as_deref(), Some(&b"h2"[..]));
        assert_eq!(tlv("authority").as_deref(), Some(&b"example.com"[..]));
        assert_eq!(tlv("0xe0").as_deref(), Some(&b"x"[..]));
        assert_eq!(tlv("0xE0").as_deref(), Some(&b"x"[..]));
        assert_eq!(tlv("ssl_cn").as_deref(), Some(&b"cn"[..]));
        assert_eq!(tlv("ssl_verify").as_deref(), Some(&b"7"[..]));
        assert_eq!(tlv("unique_id"), None);
        assert_eq!(TlvName::parse("nonsense"), None);
        assert_eq!(TlvName::parse("0x100"), None);
    }

    #[test]
    fn v2_local_unspec_unix_and_dgram_are_skipped_whole() {
        let mut local = encode_v2(None, &[]);
        local[12] = 0x20; // LOCAL
        assert_eq!(
            parse(&local).unwrap(),
            (
                Header {
                    version: 2,
                    addresses: None,
                    tlvs: Box::default()
                },
                16
            )
        );
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
        unix.extend_from_slice(&[b'/'; 216]);
        assert_eq!(parse(&unix).unwrap().1, 232);
        assert!(parse(&unix).unwrap().0.addresses.is_none());
        let mut dgram = encode_v2(
            Some(("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap())),
            &[],
        );
        dgram[13] = 0x12;
        assert!(parse(&dgram).unwrap().0.addresses.is_none());
    }

    #[test]
    fn v2_broken_headers() {
        let good = encode_v2(
            Some(("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap())),
            &[(1, b"h2")],
        );
        let mut v3 = good.clone();
        v3[12] = 0x31;
        assert_eq!(parse(&v3), Err(ParseError::Broken(Broken::Version(3))));
        let mut short = good.clone();
        short[15] = 4; // 4 bytes of addresses for AF_INET
        assert_eq!(
            parse(&short),
            Err(ParseError::Broken(Broken::ShortAddresses))
        );
        let mut tlv = good.clone();
        tlv[15] += 1;
        tlv.push(0);
        assert_eq!(parse(&tlv), Err(ParseError::Broken(Broken::Tlv)));
        let mut big = good.clone();
        big[14] = 0x20;
        assert!(matches!(
            parse(&big),
            Err(ParseError::Broken(Broken::TooLarge(_)))
        ));
    }

    #[test]
    fn the_writer_writes_nginx_s_v1_and_never_mixes_families() {
        let c: SocketAddr = "192.0.2.1:5678".parse().unwrap();
        let s: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(
            encode_v1(Some((c, s))),
            b"PROXY TCP4 192.0.2.1 10.0.0.1 5678 80\r\n"
        );
        let s6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(
            encode_v1(Some((c, s6))),
            b"PROXY TCP6 ::ffff:192.0.2.1 ::1 5678 80\r\n"
        );
        assert_eq!(encode_v1(None), b"PROXY UNKNOWN\r\n");
        let (h, _) = parse(&encode_v1(Some((c, s)))).unwrap();
        assert_eq!(h.addresses.unwrap().source_addr(), Some(c));
    }

    #[tokio::test]
    async fn a_header_split_over_writes_is_read_and_nothing_past_it_is_taken() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let header = encode_v2(Some(("192.0.2.9:7".parse().unwrap(), addr)), &[(5, b"abc")]);
            for chunk in header.chunks(5) {
                s.write_all(chunk).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            s.write_all(b"hello").await.unwrap();
            s
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let h = read_header_tcp(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(h.addresses.unwrap().source.as_ref(), "192.0.2.9");
        let mut rest = [0u8; 5];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        drop(client.await.unwrap());
    }

    #[tokio::test]
    async fn the_generic_reader_hands_back_what_follows() {
        let bytes = [&b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n"[..], b"rest"].concat();
        let mut reader = &bytes[..];
        let mut buf = bytes::BytesMut::new();
        let h = read_header(&mut reader, Duration::from_secs(1), &mut buf)
            .await
            .unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(&buf[..], b"rest");
        let mut eof = &b"PROXY TCP4"[..];
        assert!(matches!(
            read_header(&mut eof, Duration::from_secs(1), &mut buf).await,
            Err(ReadError::Closed)
        ));
    }
}
