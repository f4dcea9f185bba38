//! TLS on rustls (with aws-lc-rs's cryptography): the certificates and settings of each `server`
//! compiled with the snapshot ([`ServerTls`]), and the connection layer that terminates TLS on
//! a `listen ... ssl` address ([`accept`]) before HTTP/1 or HTTP/2 takes the decrypted stream.
//!
//! Everything a handshake needs is built when the configuration is compiled: certificate files
//! are read then (so a missing or mismatched one fails `-t` and a reload keeps the old
//! configuration), and each server gets one `rustls::ServerConfig`, chosen per connection by the
//! name the client asks for (SNI) with nginx's `server_name` rules.

pub mod accept;
pub mod client_cert;
mod h1;
pub mod preread;

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

use crate::config::lower::ssl::{ACME_CERT, ACME_KEY};
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
        SslVar::ClientVerify => {
            match &tls.verified {
                client_cert::Verified::None => out.push_str("NONE"),
                client_cert::Verified::Success => out.push_str("SUCCESS"),
                client_cert::Verified::Failed(why, _) => {
                    out.push_str("FAILED:");
                    out.push_str(why);
                }
            }
            return;
        }
        client => {
            if let Some(cert) = &tls.client {
                append_client(cert, client, out);
            }
            return;
        }
    });
}

fn append_client(cert: &client_cert::ClientCert, var: crate::vars::SslVar, out: &mut String) {
    use crate::vars::SslVar;
    match var {
        SslVar::ClientSDn => out.push_str(&cert.subject),
        SslVar::ClientIDn => out.push_str(&cert.issuer),
        SslVar::ClientSerial => out.push_str(&cert.serial),
        SslVar::ClientFingerprint => out.push_str(&cert.fingerprint),
        SslVar::ClientRawCert => out.push_str(&cert.pem),
        // Deprecated in nginx: every line but the first starts with a tab.
        SslVar::ClientCert => out.push_str(cert.pem.trim_end().replace('\n', "\n\t").as_str()),
        SslVar::ClientEscapedCert => {
            for b in cert.pem.bytes() {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    out.push(b as char);
                } else {
                    let _ = std::fmt::Write::write_fmt(out, format_args!("%{b:02X}"));
                }
            }
        }
        _ => {}
    }
}

/// Whether a request on `server` (chosen by its Host) must be refused for its connection's
/// client certificate: nginx's 421 for a Host whose server verifies clients but is not the one
/// the handshake was for, its 496 (no certificate with `on`) and 495 (a bad one).
pub fn refuse(tls: Option<&TlsInfo>, server: Option<&Arc<ServerTls>>) -> Option<Refusal> {
    use crate::config::model::VerifyClient;
    let (tls, server) = (tls?, server?);
    let auth = server.client.as_ref()?;
    if tls.server.as_ref().is_none_or(|s| s.id != server.id) {
        return Some(Refusal::Misdirected);
    }
    match (&tls.verified, auth.mode) {
        (client_cert::Verified::None, VerifyClient::On) => Some(Refusal::NoCertificate),
        (client_cert::Verified::Failed(_, true), VerifyClient::OptionalNoCa) => None,
        (client_cert::Verified::Failed(..), _) => Some(Refusal::BadCertificate),
        _ => None,
    }
}

/// Why a request is refused for its client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 496: `ssl_verify_client on` and no certificate.
    NoCertificate,
    /// 495: the certificate did not verify.
    BadCertificate,
    /// 421: the Host's server verifies clients, the handshake was another server's.
    Misdirected,
}

/// aws-lc-rs's provider, as rustls's defaults have it: TLS 1.3 and TLS 1.2 ECDHE suites with
/// AES-GCM and ChaCha20-Poly1305; X25519MLKEM768 (post-quantum), X25519, P-256, P-384.
///
/// Chosen over ring (measured on this machine: ECDSA P-256 signing 29 µs against 33, an X25519
/// exchange about 31 µs against 45, the server's share of a handshake; and rustls 0.23.48
/// deprecated ring's provider for having no post-quantum group). aws-lc-sys builds with the C
/// compiler alone here (no cmake, no clang).
pub(crate) fn provider_all() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// A server's TLS, compiled: `None` refuses every handshake (`ssl_reject_handshake on`).
#[derive(Debug)]
pub struct ServerTls {
    pub config: Option<Arc<ServerConfig>>,
    /// `ssl_verify_client` other than `off`.
    pub client: Option<Arc<client_cert::ClientAuth>>,
    /// Which `server {}` this is (its `path:line:col`): the same across reloads of an unchanged
    /// file, so a connection made before a reload still matches its server after it.
    pub id: String,
}

/// Why a server's TLS could not be compiled: nginx's words, and where.
#[derive(Debug)]
pub struct TlsError {
    pub message: String,
    pub location: String,
}

/// Compiles `spec` for a server whose `listen ... ssl` is at `listen_at`; `http2`: HTTP/2 is
/// offered by ALPN (`http2 on`, or `listen ... http2`).
pub fn compile(
    spec: &SslSpec,
    http2: bool,
    listen_at: &str,
    id: &str,
) -> Result<ServerTls, TlsError> {
    if spec.reject_handshake {
        return Ok(ServerTls {
            config: None,
            client: None,
            id: id.to_owned(),
        });
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
        Some((path, at)) => Some(read_file(path).map_err(|why| TlsError {
            message: format!("cannot load OCSP response \"{}\": {why}", path.display()),
            location: at.clone(),
        })?),
        None => None,
    };
    let mut keys = Vec::new();
    for c in &spec.certificates {
        if c.cert.as_os_str() == ACME_CERT || c.key.as_os_str() == ACME_KEY {
            // Without `acme_certificate` (a server inheriting the http level's lines, with no
            // TLS address: lowering refuses it on one), the variable has no value: nothing.
            keys.extend(acme_source(spec, c)?.map(Source::Acme));
            continue;
        }
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
        keys.push(Source::File(Arc::new(key)));
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
    let client = client_auth(spec, &provider, listen_at)?;
    let builder = match &client {
        Some(auth) => builder.with_client_cert_verifier(Arc::new(client_cert::Ask {
            auth: auth.clone(),
            hints: auth.hints(),
        })),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Certificates(keys)));
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
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError {
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
        client,
        id: id.to_owned(),
    })
}

/// `ssl_verify_client` with its CA files (`ssl_client_certificate`, `ssl_trusted_certificate`)
/// and `ssl_crl`, read now.
fn client_auth(
    spec: &SslSpec,
    provider: &Arc<CryptoProvider>,
    listen_at: &str,
) -> Result<Option<Arc<client_cert::ClientAuth>>, TlsError> {
    use crate::config::model::VerifyClient;
    if spec.verify_client == VerifyClient::Off {
        return Ok(None);
    }
    if spec.client_certificate.is_none() && spec.verify_client != VerifyClient::OptionalNoCa {
        return Err(TlsError {
            message: "no ssl_client_certificate for ssl_verify_client".to_owned(),
            location: listen_at.to_owned(),
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    for (path, at) in [&spec.client_certificate, &spec.trusted_certificate]
        .into_iter()
        .flatten()
    {
        let error = |why: String| TlsError {
            message: format!("cannot load certificates \"{}\": {why}", path.display()),
            location: at.clone(),
        };
        let text = read_file(path).map_err(error)?;
        let certs = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(format!("bad PEM ({e})")))?;
        if certs.is_empty() {
            return Err(error("no \"CERTIFICATE\" found in the file".to_owned()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| error(format!("not a usable CA certificate ({e})")))?;
        }
    }
    let mut crls = Vec::new();
    if let Some((path, at)) = &spec.crl {
        let error = |why: String| TlsError {
            message: format!("cannot load CRL \"{}\": {why}", path.display()),
            location: at.clone(),
        };
        let text = read_file(path).map_err(error)?;
        crls = rustls_pki_types::CertificateRevocationListDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(format!("bad PEM ({e})")))?;
    }
    let check = match roots.is_empty() {
        true => None,
        false => Some(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .with_crls(crls)
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError {
                message: format!("cannot use the client CA certificates: {e}"),
                location: listen_at.to_owned(),
            })?,
        ),
    };
    Ok(Some(Arc::new(client_cert::ClientAuth::new(
        spec.verify_client,
        check,
        spec.verify_depth,
        provider.signature_verification_algorithms,
    ))))
}

/// ring's provider narrowed to `ssl_ciphers` and `ssl_ecdh_curve`. TLS 1.3's suites are always
/// offered (`ssl_ciphers` does not name them in nginx either).
fn provider(spec: &SslSpec) -> Arc<CryptoProvider> {
    let ring = provider_all();
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
pub(crate) fn load_pair(
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
    let text = read_file(cert).map_err(cert_error)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("bad PEM ({e})")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no \"CERTIFICATE\" found in the file".to_owned(),
        ));
    }
    let text = read_file(key).map_err(key_error)?;
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

/// `ssl_certificate $acme_certificate; ssl_certificate_key $acme_certificate_key;`: the
/// server's `acme_certificate`, whose entry [`crate::acme`] fills and renews.
fn acme_source(
    spec: &SslSpec,
    c: &crate::config::model::CertSpec,
) -> Result<Option<Arc<crate::acme::Managed>>, TlsError> {
    if c.cert.as_os_str() != ACME_CERT || c.key.as_os_str() != ACME_KEY {
        return Err(TlsError {
            message: format!(
                "\"{ACME_CERT}\" and \"{ACME_KEY}\" are used together: imbang serves an ACME certificate with its own key only"
            ),
            location: c.cert_at.clone(),
        });
    }
    Ok(spec.acme.as_ref().map(crate::acme::certificate))
}

/// Where one `ssl_certificate` comes from.
#[derive(Debug)]
enum Source {
    /// Files, read when the configuration was compiled.
    File(Arc<CertifiedKey>),
    /// `$acme_certificate`: whatever certificate is in force now (none before the first).
    Acme(Arc<crate::acme::Managed>),
}

impl Source {
    fn key(&self) -> Option<Arc<CertifiedKey>> {
        match self {
            Self::File(key) => Some(key.clone()),
            Self::Acme(managed) => managed.current(),
        }
    }
}

/// A server's certificates (`ssl_certificate`, several allowed): the first, in the
/// configuration's order, whose key can sign with a scheme the client offers (an ECDSA
/// certificate for a client that verifies ECDSA, else RSA). `None` (an ACME certificate not
/// issued yet) refuses the handshake.
#[derive(Debug)]
struct Certificates(Vec<Source>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        let mut first = None;
        for source in &self.0 {
            let Some(key) = source.key() else { continue };
            if key.key.choose_scheme(offered).is_some() {
                return Some(key);
            }
            first.get_or_insert(key);
        }
        first
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

/// A file's bytes, or nginx's words for why it could not be read (`open() failed (2: No such
/// file or directory)`).
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("open() failed ({})", crate::error_log::errno_text(&e)))
}

/// A handshake offering ALPN `acme-tls/1` (RFC 8737): the ACME server validating a
/// TLS-ALPN-01 challenge. With a challenge pending for its name, the handshake completes with
/// the challenge certificate and the connection closes (nothing else is spoken under that
/// protocol); without one it is refused.
pub(crate) async fn acme_tls_alpn(
    start: tokio_rustls::StartHandshake<tokio::net::TcpStream>,
    challenge: Option<Arc<CertifiedKey>>,
    deadline: tokio::time::Instant,
) {
    let Some(cert) = challenge else {
        return;
    };
    let mut config = ServerConfig::builder_with_provider(provider_all().clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("rustls's defaults")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Challenge(cert)));
    config.alpn_protocols = vec![crate::acme::ACME_TLS_ALPN.to_vec()];
    if let Ok(Ok(mut tls)) =
        tokio::time::timeout_at(deadline, start.into_stream(Arc::new(config))).await
    {
        let _ =
            tokio::time::timeout_at(deadline, tokio::io::AsyncWriteExt::shutdown(&mut tls)).await;
    }
}

/// The one certificate of a TLS-ALPN-01 answer.
#[derive(Debug)]
struct Challenge(Arc<CertifiedKey>);

impl ResolvesServerCert for Challenge {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
