//! Client certificates (`ssl_verify_client`), with nginx's semantics: the handshake asks for a
//! certificate and never fails for a missing or bad one; the chain is checked once the
//! handshake is done, and a request on a server that requires one is answered `400` with
//! nginx's page ("No required SSL certificate was sent", "The SSL certificate error").
//! `$ssl_client_verify` says what the check found.

use std::fmt::Write as _;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::config::model::VerifyClient;

/// What the check of a client's certificate found (`$ssl_client_verify`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verified {
    /// No certificate was sent (`NONE`).
    None,
    Success,
    /// `FAILED:reason`; `true` when only the issuer is unknown (what `optional_no_ca` allows).
    Failed(String, bool),
}

/// A server's `ssl_verify_client` settings, compiled.
#[derive(Debug)]
pub struct ClientAuth {
    pub mode: VerifyClient,
    /// The chain check (`ssl_client_certificate` + `ssl_trusted_certificate` + `ssl_crl`);
    /// `None` with `optional_no_ca` and no CA.
    check: Option<Arc<dyn ClientCertVerifier>>,
    depth: u32,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientAuth {
    pub fn new(
        mode: VerifyClient,
        check: Option<Arc<dyn ClientCertVerifier>>,
        depth: u32,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            mode,
            check,
            depth,
            algorithms,
        }
    }

    /// The CA names the handshake's certificate request lists.
    pub fn hints(&self) -> Vec<DistinguishedName> {
        self.check
            .as_ref()
            .map(|c| c.root_hint_subjects().to_vec())
            .unwrap_or_default()
    }

    /// Checks the certificates a client presented in its handshake.
    pub fn verify(&self, presented: Option<&[CertificateDer<'static>]>) -> Verified {
        let Some((end_entity, intermediates)) = presented.and_then(|p| p.split_first()) else {
            return Verified::None;
        };
        // nginx's `ssl_verify_depth`: certificates above the client's own, the CA's included.
        if intermediates.len() as u64 >= u64::from(self.depth.max(1)) {
            return Verified::Failed("certificate chain too long".to_owned(), false);
        }
        let Some(check) = &self.check else {
            return Verified::Failed("unable to get local issuer certificate".to_owned(), true);
        };
        match check.verify_client_cert(end_entity, intermediates, UnixTime::now()) {
            Ok(_) => Verified::Success,
            Err(rustls::Error::InvalidCertificate(e)) => {
                let issuer = matches!(e, CertificateError::UnknownIssuer);
                let why = match e {
                    CertificateError::UnknownIssuer => "unable to get local issuer certificate",
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        "certificate has expired"
                    }
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                        "certificate is not yet valid"
                    }
                    CertificateError::Revoked => "certificate revoked",
                    CertificateError::BadSignature => "certificate signature failure",
                    CertificateError::InvalidPurpose
                    | CertificateError::InvalidPurposeContext { .. } => {
                        "unsupported certificate purpose"
                    }
                    _ => "certificate verify error",
                };
                Verified::Failed(why.to_owned(), issuer)
            }
            Err(e) => Verified::Failed(e.to_string(), false),
        }
    }
}

/// What the handshake asks of a client: a certificate, signed by a key the client holds, never
/// refused there (nginx answers the request with `400` instead).
#[derive(Debug)]
pub struct Ask {
    pub auth: Arc<ClientAuth>,
    pub hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for Ask {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.auth.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.auth.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.auth.algorithms.supported_schemes()
    }
}

/// A client certificate as the `$ssl_client_*` variables show it.
#[derive(Clone, Debug, Default)]
pub struct ClientCert {
    /// `$ssl_client_s_dn`, `$ssl_client_i_dn` (RFC 2253).
    pub subject: String,
    pub issuer: String,
    /// `$ssl_client_serial`: upper-case hex.
    pub serial: String,
    /// `$ssl_client_fingerprint`: SHA-1 of the DER, lower-case hex.
    pub fingerprint: String,
    /// `$ssl_client_raw_cert`: PEM.
    pub pem: String,
}

impl ClientCert {
    pub fn of(der: &CertificateDer<'_>) -> Self {
        let mut cert = Self {
            fingerprint: hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
                    .as_ref(),
                false,
            ),
            pem: pem(der),
            ..Self::default()
        };
        if let Ok((_, x509)) = x509_parser::parse_x509_certificate(der) {
            cert.subject = rfc2253(x509.subject());
            cert.issuer = rfc2253(x509.issuer());
            cert.serial = hex(x509.raw_serial(), true);
        }
        cert
    }
}

/// A name as RFC 2253 (and OpenSSL's `XN_FLAG_RFC2253`) writes it: most specific first.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    for rdn in name.iter_rdn().collect::<Vec<_>>().into_iter().rev() {
        for (i, attr) in rdn.iter().enumerate() {
            if !out.is_empty() {
                out.push(if i == 0 { ',' } else { '+' });
            }
            match x509_parser::objects::oid2abbrev(attr.attr_type(), registry) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            let value = attr.as_str().unwrap_or_default();
            for (j, c) in value.chars().enumerate() {
                let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
                    || (j == 0 && matches!(c, '#' | ' '))
                    || (j + 1 == value.chars().count() && c == ' ');
                if special {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    out
}

fn hex(bytes: &[u8], upper: bool) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = match upper {
            true => write!(s, "{b:02X}"),
            false => write!(s, "{b:02x}"),
        };
    }
    s
}

/// DER as a PEM `CERTIFICATE` (64 columns, `\n` line ends, as OpenSSL writes it).
fn pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_is_base64_in_64_columns() {
        assert_eq!(
            pem(b"Man"),
            "-----BEGIN CERTIFICATE-----\nTWFu\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(
            pem(b"Ma"),
            "-----BEGIN CERTIFICATE-----\nTWE=\n-----END CERTIFICATE-----\n"
        );
        let long = pem(&[0u8; 60]);
        assert_eq!(long.lines().nth(1).unwrap().len(), 64);
    }

    #[test]
    fn hex_cases() {
        assert_eq!(hex(&[0x0a, 0xff], true), "0AFF");
        assert_eq!(hex(&[0x0a, 0xff], false), "0aff");
    }
}
