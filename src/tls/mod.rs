//! TLS on rustls (with ring's cryptography): the certificates and settings of each `server`
//! compiled with the snapshot ([`ServerTls`]), and the connection layer that terminates TLS on
//! a `listen ... ssl` address ([`accept`]) before HTTP/1 or HTTP/2 takes the decrypted stream.
//!
//! Everything a handshake needs is built when the configuration is compiled: certificate files
//! are read then (so a missing or mismatched one fails `-t` and a reload keeps the old
//! configuration), and each server gets one `rustls::ServerConfig`, chosen per connection by the
//! name the client asks for (SNI) with nginx's `server_name` rules.

pub mod accept;
mod h1;

use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerSessionMemoryCache,
};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::model::SslSpec;

pub use accept::TlsInfo;

/// Appends the value of an `$ssl_*` variable (nothing on a plain connection).
pub fn append_var(tls: Option<&TlsInfo>, var: crate::vars::SslVar, out: &mut String) {
    use crate::vars::SslVar;
    let Some(tls) = tls else {
        return;
    };
    out.push_str(match var {
        SslVar::Protocol => tls.protocol,
        SslVar::Cipher => tls.cipher,
        SslVar::ServerName => tls.server_name.as_deref().unwrap_or_default(),
        SslVar::SessionReused => match tls.session_reused {
            true => "r",
            false => ".",
        },
        SslVar::AlpnProtocol => tls.alpn,
        SslVar::Curve => tls.curve,
    });
}

/// ring's provider with everything it offers: TLS 1.3 and TLS 1.2 ECDHE suites with AES-GCM and
/// ChaCha20-Poly1305, X25519 / P-256 / P-384.
///
/// rustls 0.23.48 deprecated ring's provider for lacking post-quantum key exchange
/// (X25519MLKEM768, which aws-lc-rs has); ring is kept because it builds with a C compiler alone
/// (aws-lc-rs needs more of a toolchain: see docs/tls.md).
#[allow(deprecated)]
fn ring() -> &'static Arc<CryptoProvider> {
    static RING: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    RING.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A server's TLS, compiled: `None` refuses every handshake (`ssl_reject_handshake on`).
#[derive(Debug)]
pub struct ServerTls {
    pub config: Option<Arc<ServerConfig>>,
}

/// Why a server's TLS could not be compiled: nginx's words, and where.
#[derive(Debug)]
pub struct TlsError {
    pub message: String,
    pub location: String,
}

/// Compiles `spec` for a server whose `listen ... ssl` is at `listen_at`; `http2`: HTTP/2 is
/// offered by ALPN (`http2 on`, or `listen ... http2`).
pub fn compile(spec: &SslSpec, http2: bool, listen_at: &str) -> Result<ServerTls, TlsError> {
    if spec.reject_handshake {
        return Ok(ServerTls { config: None });
    }
    if let Some((cert, at)) = &spec.unpaired {
        return Err(TlsError {
            message: format!(
                "no \"ssl_certificate_key\" is defined for certificate \"{}\"",
                cert.display()
            ),
            location: at.clone(),
        });
    }
    if spec.certificates.is_empty() {
        return Err(TlsError {
            message: "no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive"
                .to_owned(),
            location: listen_at.to_owned(),
        });
    }
    let provider = provider(spec);
    let ocsp = match &spec.stapling_file {
        Some((path, at)) => Some(std::fs::read(path).map_err(|e| TlsError {
            message: format!(
                "cannot load OCSP response \"{}\": {}",
                path.display(),
                crate::error_log::errno_text(&e)
            ),
            location: at.clone(),
        })?),
        None => None,
    };
    let mut keys = Vec::new();
    for c in &spec.certificates {
        let mut key =
            load_pair(&c.cert, &c.key, &provider).map_err(|(message, on_key)| TlsError {
                message,
                location: if on_key {
                    c.key_at.clone()
                } else {
                    c.cert_at.clone()
                },
            })?;
        key.ocsp.clone_from(&ocsp);
        keys.push(Arc::new(key));
    }
    let versions: Vec<&'static SupportedProtocolVersion> = [
        (spec.tls13, &rustls::version::TLS13),
        (spec.tls12, &rustls::version::TLS12),
    ]
    .into_iter()
    .filter_map(|(on, v)| on.then_some(v))
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError {
            message: format!("the TLS settings cannot be used together: {e}"),
            location: listen_at.to_owned(),
        })?;
    let mut config = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Certificates(keys)));
    config.alpn_protocols = match http2 {
        true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        false => vec![b"http/1.1".to_vec()],
    };
    config.ignore_client_order = spec.prefer_server_ciphers;
    config.session_storage = match spec.session_cache {
        0 => Arc::new(NoServerSessionStorage {}),
        n => ServerSessionMemoryCache::new(n),
    };
    if spec.session_tickets {
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError {
            message: format!("cannot make session ticket keys: {e}"),
            location: listen_at.to_owned(),
        })?;
        config.ticketer = Arc::new(Lifetime {
            inner: ticketer,
            secs: spec.session_timeout.as_secs().clamp(1, u32::MAX as u64) as u32,
        });
    } else if spec.session_cache == 0 {
        // Neither tickets nor a cache: no TLS 1.3 ticket is worth sending.
        config.send_tls13_tickets = 0;
    }
    Ok(ServerTls {
        config: Some(Arc::new(config)),
    })
}

/// ring's provider narrowed to `ssl_ciphers` and `ssl_ecdh_curve`. TLS 1.3's suites are always
/// offered (`ssl_ciphers` does not name them in nginx either).
fn provider(spec: &SslSpec) -> Arc<CryptoProvider> {
    let ring = ring();
    if spec.ciphers.is_none() && spec.curves.is_none() {
        return ring.clone();
    }
    let mut p = CryptoProvider::clone(ring);
    if let Some(names) = &spec.ciphers {
        let named = |s: &rustls::SupportedCipherSuite| {
            let name = format!("{:?}", s.suite());
            names.contains(&name)
        };
        let tls13 = |s: &rustls::SupportedCipherSuite| s.version() == &rustls::version::TLS13;
        let mut suites: Vec<_> = names
            .iter()
            .filter_map(|n| {
                ring.cipher_suites
                    .iter()
                    .find(|s| format!("{:?}", s.suite()) == *n)
                    .copied()
            })
            .collect();
        // Every TLS 1.3 suite the list does not name comes after those it names.
        suites.extend(ring.cipher_suites.iter().filter(|s| tls13(s) && !named(s)));
        p.cipher_suites = suites;
    }
    if let Some(names) = &spec.curves {
        p.kx_groups = names
            .iter()
            .filter_map(|n| {
                ring.kx_groups
                    .iter()
                    .find(|g| format!("{:?}", g.name()) == *n)
                    .copied()
            })
            .collect();
    }
    Arc::new(p)
}

/// Reads a certificate chain and its key. The error says which file (`true`: the key's).
fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, (String, bool)> {
    let cert_error = |why: String| {
        (
            format!("cannot load certificate \"{}\": {why}", cert.display()),
            false,
        )
    };
    let key_error = |why: String| {
        (
            format!("cannot load certificate key \"{}\": {why}", key.display()),
            true,
        )
    };
    let text = std::fs::read(cert).map_err(|e| {
        cert_error(format!(
            "open() failed ({})",
            crate::error_log::errno_text(&e)
        ))
    })?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("bad PEM ({e})")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no \"CERTIFICATE\" found in the file".to_owned(),
        ));
    }
    let text = std::fs::read(key).map_err(|e| {
        key_error(format!(
            "open() failed ({})",
            crate::error_log::errno_text(&e)
        ))
    })?;
    let der = PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            key_error("no \"PRIVATE KEY\" found in the file".to_owned())
        }
        e => key_error(format!("bad PEM ({e})")),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| key_error(format!("unsupported key ({e})")))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(key_error(format!(
            "the key does not match the certificate \"{}\"",
            cert.display()
        ))),
        Err(e) => Err(cert_error(format!("not a valid X.509 certificate ({e})"))),
    }
}

/// A server's certificates (`ssl_certificate`, several allowed): the first, in the
/// configuration's order, whose key can sign with a scheme the client offers (an ECDSA
/// certificate for a client that verifies ECDSA, else RSA).
#[derive(Debug)]
struct Certificates(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        self.0
            .iter()
            .find(|k| k.key.choose_scheme(offered).is_some())
            .or_else(|| self.0.first())
            .cloned()
    }
}

/// Session tickets that live `ssl_session_timeout`.
#[derive(Debug)]
struct Lifetime {
    inner: Arc<dyn rustls::server::ProducesTickets>,
    secs: u32,
}

impl rustls::server::ProducesTickets for Lifetime {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }
    fn lifetime(&self) -> u32 {
        self.secs
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.inner.decrypt(cipher)
    }
}
