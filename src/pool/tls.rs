//! TLS to peers (`proxy_pass https://`): a location's `proxy_ssl_*` compiled into a rustls
//! client configuration when the configuration is compiled (files read then, errors with the
//! directive's place), the handshake of a new connection, and nginx's words for how one failed.
//!
//! A location's settings compile to one [`UpstreamTls`]; identical settings anywhere (and
//! across reloads, while the files are unchanged) compile to the same one, so they share
//! rustls's session cache (`proxy_ssl_session_reuse`) and their pooled connections: the pool
//! keys a TLS connection by its peer address *and* [`UpstreamTls::key`] of the settings and
//! the name it was opened with, so a connection is only reused for what it was made for.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use super::stream::{Stream, Tls};
use crate::config::model::UpstreamSslSpec;

/// A location's TLS to its peers, compiled.
#[derive(Debug)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    /// The settings' identity: the same for the same settings and file contents.
    id: u64,
    /// `proxy_ssl_verify`: a name that is not a DNS name or an address cannot be checked.
    pub verify: bool,
}

/// The name a connection is opened for (`proxy_ssl_name`, or the `proxy_pass` host): sent as
/// SNI (`proxy_ssl_server_name`) and checked against the certificate (`proxy_ssl_verify`).
#[derive(Clone, Debug)]
pub struct SslName {
    pub name: ServerName<'static>,
    /// As written (for the error log).
    pub text: Box<str>,
}

impl SslName {
    /// nginx's reading of a name: a port (`$proxy_host`'s, `$http_host`'s) is left out. A name
    /// that is neither a DNS name nor an address (an upstream named `my_app`) is sent as no
    /// name (no SNI, as for an address), and no certificate matches it.
    pub fn new(text: &str) -> Self {
        let host = match text.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
            None => text.split_once(':').map_or(text, |(h, _)| h),
        };
        let name = ServerName::try_from(host.to_owned()).unwrap_or(ServerName::IpAddress(
            std::net::Ipv4Addr::UNSPECIFIED.into(),
        ));
        Self {
            name,
            text: host.into(),
        }
    }
}

/// Why a TLS connection could not be opened, in nginx's words.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Failed(String),
    #[error("upstream timed out (110: Connection timed out)")]
    Timeout,
}

impl UpstreamTls {
    /// What tells this configuration and `name` apart from others in the pool.
    pub fn key(&self, name: &SslName) -> u64 {
        let mut h = DefaultHasher::new();
        (self.id, &*name.text).hash(&mut h);
        // 0 is a plain connection's.
        h.finish() | 1
    }

    /// The handshake on a new connection to a peer, bounded by `timeout`
    /// (`proxy_connect_timeout`, as nginx bounds it).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        name: &SslName,
        timeout: Duration,
    ) -> Result<Stream, HandshakeError> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let handshake = connector.connect(name.name.clone(), tcp);
        let stream = match tokio::time::timeout(timeout, handshake).await {
            Err(_) => return Err(HandshakeError::Timeout),
            Ok(Err(e)) => return Err(HandshakeError::Failed(handshake_text(&e, name))),
            Ok(Ok(stream)) => stream,
        };
        let (tcp, conn) = stream.into_inner();
        Ok(Stream::Tls(Box::new(Tls::new(tcp, conn))))
    }
}

/// nginx's log text for a failed handshake (its `SSL_get_verify_result` codes for certificate
/// errors).
fn handshake_text(e: &std::io::Error, name: &SslName) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let verify =
        |code: u32, what: &str| format!("upstream SSL certificate verify error: ({code}:{what})");
    match tls {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer => verify(20, "unable to get local issuer certificate"),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("upstream SSL certificate does not match \"{}\"", name.text)
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                verify(10, "certificate has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                verify(9, "certificate is not yet valid")
            }
            CertificateError::Revoked => verify(23, "certificate revoked"),
            CertificateError::BadSignature => verify(7, "certificate signature failure"),
            other => verify(0, &format!("{other:?}")),
        },
        Some(rustls::Error::General(why)) if why == CHAIN_TOO_LONG => {
            verify(22, "certificate chain too long")
        }
        Some(other) => format!("SSL_do_handshake() failed (SSL: {other})"),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "peer closed connection in SSL handshake".to_owned()
        }
        None => format!(
            "SSL_do_handshake() failed ({})",
            crate::error_log::errno_text(e)
        ),
    }
}

const CHAIN_TOO_LONG: &str = "certificate chain too long";

/// Why a location's TLS settings could not be compiled, and where.
#[derive(Debug)]
pub struct CompileError {
    pub message: String,
    pub location: String,
}

/// Compiled settings by identity, kept while some snapshot uses them: a reload that keeps a
/// location's settings (and files) keeps its session cache and pooled connections.
static COMPILED: Mutex<Option<HashMap<u64, Weak<UpstreamTls>>>> = Mutex::new(None);

/// Compiles `spec` (reading its files now). `at`: the `proxy_pass`, where an error without a
/// directive of its own is reported.
pub fn compile(spec: &UpstreamSslSpec, at: &str) -> Result<Arc<UpstreamTls>, CompileError> {
    let files = Files::read(spec)?;
    let mut h = DefaultHasher::new();
    format!("{spec:?}").hash(&mut h);
    files.hash(&mut h);
    let id = h.finish();
    let mut compiled = COMPILED.lock().unwrap_or_else(PoisonError::into_inner);
    let compiled = compiled.get_or_insert_with(HashMap::new);
    compiled.retain(|_, tls| tls.strong_count() > 0);
    if let Some(tls) = compiled.get(&id).and_then(Weak::upgrade) {
        return Ok(tls);
    }
    let tls = Arc::new(UpstreamTls {
        config: Arc::new(client_config(spec, &files, at)?),
        id,
        verify: spec.verify,
    });
    compiled.insert(id, Arc::downgrade(&tls));
    Ok(tls)
}

/// The bytes of the files a spec names.
#[derive(Hash)]
struct Files {
    trusted: Option<Vec<u8>>,
    crl: Option<Vec<u8>>,
    certificate: Option<(Vec<u8>, Vec<u8>)>,
}

impl Files {
    fn read(spec: &UpstreamSslSpec) -> Result<Self, CompileError> {
        let read = |file: &Option<(PathBuf, String)>, what: &str| {
            file.as_ref()
                .map(|(path, at)| {
                    crate::tls::read_file(path).map_err(|why| CompileError {
                        message: format!("cannot load {what} \"{}\": {why}", path.display()),
                        location: at.clone(),
                    })
                })
                .transpose()
        };
        let certificate = match (&spec.certificate, &spec.certificate_key) {
            (Some(_), Some(_)) => Some((
                read(&spec.certificate, "certificate")?.unwrap_or_default(),
                read(&spec.certificate_key, "certificate key")?.unwrap_or_default(),
            )),
            (Some((path, at)), None) => {
                return Err(CompileError {
                    message: format!(
                        "no \"proxy_ssl_certificate_key\" is defined for certificate \"{}\"",
                        path.display()
                    ),
                    location: at.clone(),
                });
            }
            _ => None,
        };
        Ok(Self {
            // nginx reads the CA and CRL files only with `proxy_ssl_verify on`.
            trusted: match spec.verify {
                true => read(&spec.trusted_certificate, "certificates")?,
                false => None,
            },
            crl: match spec.verify {
                true => read(&spec.crl, "CRL")?,
                false => None,
            },
            certificate,
        })
    }
}

fn client_config(
    spec: &UpstreamSslSpec,
    files: &Files,
    at: &str,
) -> Result<ClientConfig, CompileError> {
    let provider = provider(spec.ciphers.as_deref());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (spec.tls13, &rustls::version::TLS13),
        (spec.tls12, &rustls::version::TLS12),
    ]
    .into_iter()
    .filter_map(|(on, v)| on.then_some(v))
    .collect();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| CompileError {
            message: format!("the proxy_ssl settings cannot be used together: {e}"),
            location: at.to_owned(),
        })?;
    let verifier: Arc<dyn ServerCertVerifier> = if spec.verify {
        verifier(spec, files, &provider, at)?
    } else {
        Arc::new(Unverified(provider.signature_verification_algorithms))
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&files.certificate, &spec.certificate, &spec.certificate_key) {
        (Some(_), Some((cert, cert_at)), Some((key, key_at))) => {
            let pair =
                crate::tls::load_pair(cert, key, &provider).map_err(|(message, on_key)| {
                    CompileError {
                        message: message.replace("ssl_certificate", "proxy_ssl_certificate"),
                        location: if on_key { key_at } else { cert_at }.clone(),
                    }
                })?;
            builder.with_client_cert_resolver(Arc::new(ClientCertificate(Arc::new(pair))))
        }
        _ => builder.with_no_client_auth(),
    };
    config.enable_sni = spec.server_name;
    config.resumption = match spec.session_reuse {
        true => Resumption::in_memory_sessions(256),
        false => Resumption::disabled(),
    };
    Ok(config)
}

/// `proxy_ssl_verify on`: the peer's chain must lead to a `proxy_ssl_trusted_certificate` CA
/// (nginx requires the file), not be revoked by `proxy_ssl_crl`, and be at most
/// `proxy_ssl_verify_depth` long; its certificate must be for the name.
fn verifier(
    spec: &UpstreamSslSpec,
    files: &Files,
    provider: &Arc<CryptoProvider>,
    at: &str,
) -> Result<Arc<dyn ServerCertVerifier>, CompileError> {
    let (Some(text), Some((path, trusted_at))) = (&files.trusted, &spec.trusted_certificate) else {
        return Err(CompileError {
            message: "no proxy_ssl_trusted_certificate for proxy_ssl_verify".to_owned(),
            location: spec.verify_at.clone().unwrap_or_else(|| at.to_owned()),
        });
    };
    let error = |why: String| CompileError {
        message: format!("cannot load certificates \"{}\": {why}", path.display()),
        location: trusted_at.clone(),
    };
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("bad PEM ({e})")))?;
    if certs.is_empty() {
        return Err(error("no \"CERTIFICATE\" found in the file".to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| error(format!("not a usable CA certificate ({e})")))?;
    }
    let mut crls = Vec::new();
    if let (Some(text), Some((path, crl_at))) = (&files.crl, &spec.crl) {
        crls = rustls_pki_types::CertificateRevocationListDer::pem_slice_iter(text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CompileError {
                message: format!("cannot load CRL \"{}\": bad PEM ({e})", path.display()),
                location: crl_at.clone(),
            })?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| CompileError {
            message: format!("cannot use the proxy_ssl_trusted_certificate CAs: {e}"),
            location: trusted_at.clone(),
        })?;
    Ok(Arc::new(Verified {
        inner,
        depth: spec.verify_depth,
    }))
}

/// aws-lc-rs's provider with TLS 1.2 narrowed to the suites `proxy_ssl_ciphers` names (TLS 1.3's
/// are always offered, as in nginx, whose cipher list does not name them).
fn provider(ciphers: Option<&[String]>) -> Arc<CryptoProvider> {
    let all = crate::tls::provider_all();
    let Some(names) = ciphers else {
        return all.clone();
    };
    let name = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    let tls13 = |s: &rustls::SupportedCipherSuite| s.version() == &rustls::version::TLS13;
    let mut p = CryptoProvider::clone(all);
    let mut suites: Vec<_> = names
        .iter()
        .filter_map(|n| all.cipher_suites.iter().find(|s| name(s) == *n).copied())
        .collect();
    suites.extend(
        all.cipher_suites
            .iter()
            .filter(|s| tls13(s) && !names.contains(&name(s))),
    );
    p.cipher_suites = suites;
    Arc::new(p)
}

/// A server certificate verifier that takes any certificate, for `proxy_ssl_verify off`
/// (nginx's default) and an `acme_issuer`'s `ssl_verify off` (`crate::acme`): the
/// handshake's signatures are still checked (the server holds the key of the certificate it
/// shows).
#[derive(Debug)]
pub(crate) struct Unverified(pub(crate) WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// webpki's verification with nginx's `proxy_ssl_verify_depth`.
#[derive(Debug)]
struct Verified {
    inner: Arc<WebPkiServerVerifier>,
    depth: u32,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // As `ssl_verify_depth` is read for clients (crate::tls::client_cert): certificates
        // above the peer's own, the CA's included.
        if intermediates.len() as u64 >= u64::from(self.depth.max(1)) {
            return Err(rustls::Error::General(CHAIN_TOO_LONG.to_owned()));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `proxy_ssl_certificate`: presented whenever the peer asks for one.
#[derive(Debug)]
struct ClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How one `proxy_pass https://` connects: its location's settings and the name to use.
#[derive(Debug)]
pub struct TlsTarget {
    pub tls: Arc<UpstreamTls>,
    pub name: TargetName,
}

/// The name a location's connections are opened for.
#[derive(Debug)]
pub enum TargetName {
    /// Known when the configuration is compiled, with its pool key.
    Fixed { name: SslName, key: u64 },
    /// `proxy_ssl_name` with variables, rendered per request.
    Template(crate::vars::Template),
}

impl TlsTarget {
    pub fn fixed(tls: Arc<UpstreamTls>, name: &str) -> Self {
        let name = SslName::new(name);
        let key = tls.key(&name);
        Self {
            tls,
            name: TargetName::Fixed { name, key },
        }
    }
}

/// A location's compiled TLS with its `proxy_ssl_name`, before a `proxy_pass` host is known.
#[derive(Debug)]
pub struct LocationTls {
    pub tls: Arc<UpstreamTls>,
    /// `proxy_ssl_name`; `None`: the `proxy_pass` host.
    pub name: Option<ConfiguredName>,
}

/// `proxy_ssl_name` as configured.
#[derive(Debug)]
pub enum ConfiguredName {
    Fixed(String),
    Template(crate::vars::Template),
}

/// What a new connection needs to be opened with TLS, and what pools it.
#[derive(Clone, Copy, Debug)]
pub struct Connector<'a> {
    pub tls: &'a UpstreamTls,
    pub name: &'a SslName,
    /// [`UpstreamTls::key`] of the two.
    pub key: u64,
}
