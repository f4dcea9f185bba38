//! The ClientHello read without terminating TLS, for stream's `ssl_preread on`
//! (nginx's `ngx_stream_ssl_preread_module`): from the first bytes of a connection, the name the
//! client asks for (`$ssl_preread_server_name`), the protocols it offers by ALPN
//! (`$ssl_preread_alpn_protocols`, comma-separated) and the highest TLS version it supports
//! (`$ssl_preread_protocol`), so that one port can route TLS by name to backends holding their
//! own certificates.
//!
//! [`parse`] looks at everything received so far (bounded by the caller's
//! `preread_buffer_size`) and says whether it needs more. A ClientHello may be split across TLS
//! records and across reads; the records are joined before the message is read, as nginx does.
//! Nothing is consumed: the caller forwards the same bytes to the peer.
//!
//! Where imbang differs from nginx: `$ssl_preread_protocol` is the highest version the
//! `supported_versions` extension lists (GREASE and unknown values ignored; the legacy version
//! when it lists none imbang knows), where nginx says `TLSv1.3` whenever the extension is there.

/// What the bytes received so far are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preread {
    /// The start of a ClientHello: read more (unless the preread buffer is full).
    Incomplete,
    /// Not a TLS handshake (nginx: "not a handshake", "unsupported SSL version"): the variables
    /// stay empty and the connection goes on.
    NotTls,
    /// A TLS handshake that is no well-formed ClientHello: the variables stay empty.
    Malformed,
    Parsed(ClientHello),
}

/// What the ClientHello says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `$ssl_preread_server_name`: the `server_name` extension's host name, as sent.
    pub server_name: Option<String>,
    /// The ALPN protocols offered, in the client's order.
    pub alpn: Vec<String>,
    /// `$ssl_preread_protocol`: `SSLv2`, `SSLv3`, `TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`, or
    /// empty for a version nginx has no name for.
    pub protocol: &'static str,
}

impl ClientHello {
    /// `$ssl_preread_alpn_protocols`: `h2,http/1.1`.
    pub fn alpn_protocols(&self) -> String {
        self.alpn.join(",")
    }
}

/// Handshake content type of a TLS record.
const HANDSHAKE: u8 = 0x16;
/// The ClientHello's handshake type.
const CLIENT_HELLO: u8 = 1;

/// Reads the ClientHello at the start of `buf` (every byte received so far).
pub fn parse(buf: &[u8]) -> Preread {
    // An SSLv2-compatible ClientHello (nginx recognises it by its first bytes).
    if buf.len() >= 5 && buf[0] & 0x80 != 0 && buf[2] == 1 && (buf[3] == 0 || buf[3] == 3) {
        return Preread::Parsed(ClientHello {
            protocol: protocol_name(u16::from_be_bytes([buf[3], buf[4]])),
            ..ClientHello::default()
        });
    }
    // The handshake messages, joined from the records so far.
    let mut message = Vec::new();
    let mut rest = buf;
    loop {
        if rest.is_empty() {
            break;
        }
        if rest[0] != HANDSHAKE {
            return if message.is_empty() {
                Preread::NotTls
            } else {
                Preread::Malformed
            };
        }
        if rest.len() >= 2 && rest[1] != 3 {
            return Preread::NotTls;
        }
        if rest.len() < 5 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Preread::Malformed;
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            // Only whole records are read, as nginx.
            break;
        };
        message.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if message.len() >= 4 {
            let need = 4
                + (usize::from(message[1]) << 16
                    | usize::from(message[2]) << 8
                    | usize::from(message[3]));
            if message.len() >= need {
                break;
            }
        }
    }
    if message.len() < 4 {
        return if message.first().is_some_and(|&t| t != CLIENT_HELLO) {
            Preread::Malformed
        } else {
            Preread::Incomplete
        };
    }
    if message[0] != CLIENT_HELLO {
        return Preread::Malformed;
    }
    let len =
        usize::from(message[1]) << 16 | usize::from(message[2]) << 8 | usize::from(message[3]);
    match message.get(4..4 + len) {
        Some(body) => client_hello(body).map_or(Preread::Malformed, Preread::Parsed),
        None => Preread::Incomplete,
    }
}

/// A cursor over the message, every read bounded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one- or two-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let legacy = r.u16()?;
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello {
        protocol: protocol_name(legacy),
        ..ClientHello::default()
    };
    if r.0.is_empty() {
        // No extensions (TLS 1.0-style hello).
        return Some(hello);
    }
    let mut extensions = Reader(r.vec16()?);
    let mut highest: Option<u16> = None;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = Reader(extensions.vec16()?);
        match kind {
            // server_name: the first host_name entry.
            0 if hello.server_name.is_none() => {
                let mut list = Reader(data.vec16()?);
                let name_type = list.u8()?;
                if name_type != 0 {
                    return None;
                }
                let name = list.vec16()?;
                hello.server_name = Some(String::from_utf8_lossy(name).into_owned());
            }
            // application_layer_protocol_negotiation.
            16 if hello.alpn.is_empty() => {
                let mut list = Reader(data.vec16()?);
                while !list.0.is_empty() {
                    let proto = list.vec8()?;
                    if proto.is_empty() {
                        return None;
                    }
                    hello.alpn.push(String::from_utf8_lossy(proto).into_owned());
                }
            }
            // supported_versions.
            43 => {
                let mut list = Reader(data.vec8()?);
                while let Some(v) = list.u16() {
                    if !protocol_name(v).is_empty() && highest.is_none_or(|h| v > h) {
                        highest = Some(v);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(v) = highest {
        hello.protocol = protocol_name(v);
    }
    Some(hello)
}

/// OpenSSL's `SSL_get_version()` names, as nginx's variable.
fn protocol_name(version: u16) -> &'static str {
    match version {
        0x0002 => "SSLv2",
        0x0300 => "SSLv3",
        0x0301 => "TLSv1",
        0x0302 => "TLSv1.1",
        0x0303 => "TLSv1.2",
        0x0304 => "TLSv1.3",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The first bytes a rustls client writes: its ClientHello record(s).
    fn rustls_hello(name: &str, alpn: &[&[u8]], tls13: bool) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13 {
            rustls::ALL_VERSIONS
        } else {
            &[&rustls::version::TLS12]
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_rustls_hello_gives_name_alpn_and_version() {
        let bytes = rustls_hello("app.example.com", &[b"h2", b"http/1.1"], true);
        let Preread::Parsed(hello) = parse(&bytes) else {
            panic!("{:?}", parse(&bytes))
        };
        assert_eq!(hello.server_name.as_deref(), Some("app.example.com"));
        assert_eq!(hello.alpn_protocols(), "h2,http/1.1");
        assert_eq!(hello.protocol, "TLSv1.3");
        let bytes = rustls_hello("db.internal", &[], false);
        let Preread::Parsed(hello) = parse(&bytes) else {
            panic!()
        };
        assert_eq!(hello.server_name.as_deref(), Some("db.internal"));
        assert_eq!(hello.alpn_protocols(), "");
        assert_eq!(hello.protocol, "TLSv1.2");
    }

    #[test]
    fn every_prefix_is_incomplete_and_trailing_bytes_do_not_matter() {
        let bytes = rustls_hello("a.example", &[b"h2"], true);
        for n in 0..bytes.len() {
            assert_eq!(parse(&bytes[..n]), Preread::Incomplete, "{n}");
        }
        let mut more = bytes.clone();
        more.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        assert!(matches!(parse(&more), Preread::Parsed(_)));
    }

    /// The same hello cut into records of 7 bytes each (as a client may fragment it).
    #[test]
    fn a_hello_split_over_records_is_joined() {
        let bytes = rustls_hello("split.example", &[b"x"], true);
        let message = &bytes[5..];
        let mut records = Vec::new();
        for chunk in message.chunks(7) {
            records.extend_from_slice(&[0x16, 3, 1, 0, chunk.len() as u8]);
            records.extend_from_slice(chunk);
        }
        let Preread::Parsed(hello) = parse(&records) else {
            panic!()
        };
        assert_eq!(hello.server_name.as_deref(), Some("split.example"));
        assert_eq!(hello.alpn, ["x"]);
        for n in 0..records.len() {
            assert_eq!(parse(&records[..n]), Preread::Incomplete, "{n}");
        }
    }

    #[test]
    fn not_tls_and_malformed() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Preread::NotTls);
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n"), Preread::NotTls);
        assert_eq!(parse(&[0x16, 2, 0, 0, 1, 1]), Preread::NotTls);
        // A handshake record holding a ServerHello.
        assert_eq!(parse(&[0x16, 3, 3, 0, 4, 2, 0, 0, 0]), Preread::Malformed);
        // A ClientHello whose body stops short inside its declared length.
        let mut bytes = rustls_hello("x.example", &[], true);
        let cut = bytes.len() - 1;
        bytes[4] -= 1; // the record now ends a byte before the message
        bytes.truncate(cut);
        bytes.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        assert_eq!(parse(&bytes), Preread::Malformed);
    }

    #[test]
    fn an_sslv2_hello_gives_its_version() {
        let v2 = [0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15];
        let Preread::Parsed(hello) = parse(&v2) else {
            panic!()
        };
        assert_eq!((hello.protocol, hello.server_name), ("TLSv1", None));
    }

    /// What `openssl s_client -connect ... -servername example.org -alpn h2` sent (OpenSSL
    /// 3.0), captured once: a hello with many extensions, GREASE-free, TLS 1.3 in
    /// supported_versions.
    #[test]
    fn an_openssl_hello() {
        let hex = include_str!("testdata/openssl_client_hello.hex");
        let bytes: Vec<u8> = (0..hex.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).unwrap())
            .collect();
        let Preread::Parsed(hello) = parse(&bytes) else {
            panic!("{:?}", parse(&bytes))
        };
        assert_eq!(hello.server_name.as_deref(), Some("example.org"));
        assert_eq!(hello.alpn_protocols(), "h2");
        assert_eq!(hello.protocol, "TLSv1.3");
    }
}
