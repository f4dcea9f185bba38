//! One issuance (RFC 8555 §7.4): a new order for the certificate's identifiers, each pending
//! authorization answered with the issuer's challenge, then a new key and its certificate
//! request, and the chain the server signs, kept in `state_path`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::model::{AcmeChallenge, AcmeKeyAlg};
use crate::log;

use super::challenge::Answer;
use super::{Issued, Managed, account, store};

/// How long the server may take to validate the challenges, and to sign.
const VALIDATION: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// Obtains a new certificate for `managed` and keeps it in `state_path`.
pub(super) async fn issue(managed: &Managed) -> Result<Issued, String> {
    let spec = managed.spec.load_full();
    let issuer = &spec.issuer;
    let account = account::account(issuer).await?;
    let identifiers: Vec<Identifier> = spec
        .identifiers
        .iter()
        .map(|id| match id.parse() {
            Ok(ip) => Identifier::Ip(ip),
            Err(_) => Identifier::Dns(id.clone()),
        })
        .collect();
    let mut new_order = NewOrder::new(&identifiers);
    if let Some((profile, required)) = &issuer.profile {
        if account.profiles().any(|p| p.name == profile) {
            new_order = new_order.profile(profile);
        } else if *required {
            return Err(format!(
                "profile \"{profile}\" is not offered by the ACME server"
            ));
        } else {
            log!(
                Warn,
                "profile \"{profile}\" is not offered by the ACME server, the default is used, acme issuer: \"{}\"",
                issuer.name
            );
        }
    }
    let mut order = account
        .new_order(&new_order)
        .await
        .map_err(|e| format!("new order failed ({})", super::why(&e)))?;
    let kind = match issuer.challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    // The answers stay up until the order is ready (or this fails): dropped at the end.
    let mut answers = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz =
            authz.map_err(|e| format!("authorization request failed ({})", super::why(&e)))?;
        let name = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(format!(
                    "authorization for \"{name}\" is {status:?}, not pending"
                ));
            }
        }
        let mut challenge = authz
            .challenge(kind.clone())
            .ok_or_else(|| format!("no {kind:?} challenge offered for \"{name}\""))?;
        let key_authorization = challenge.key_authorization();
        answers.push(match issuer.challenge {
            AcmeChallenge::Http01 => {
                Answer::http(&name, &challenge.token, key_authorization.as_str())
            }
            AcmeChallenge::TlsAlpn01 => {
                Answer::tls_alpn(&name, alpn_certificate(&name, key_authorization.digest())?)
            }
        });
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge for \"{name}\" failed ({})", super::why(&e)))?;
    }
    let status = order
        .poll_ready(&VALIDATION)
        .await
        .map_err(|e| format!("order validation failed ({})", super::why(&e)))?;
    drop(answers);
    if status != OrderStatus::Ready {
        let why = order
            .refresh()
            .await
            .ok()
            .and_then(|s| s.error.as_ref().map(|p| p.to_string()))
            .unwrap_or_default();
        return Err(format!("order is {status:?}, not ready {why}"));
    }
    let key = generate_key(spec.key)?;
    let mut params = rcgen::CertificateParams::new(spec.identifiers.clone())
        .map_err(|e| format!("cannot make the certificate request ({e})"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if issuer.common_name_in_csr {
        if let Some(first) = spec.identifiers.first() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, first.as_str());
        }
    }
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("cannot make the certificate request ({e})"))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| format!("finalize failed ({})", super::why(&e)))?;
    let chain = order
        .poll_certificate(&VALIDATION)
        .await
        .map_err(|e| format!("certificate download failed ({})", super::why(&e)))?;
    let key_pem = key.serialize_pem();
    let issued = store::parse(chain.as_bytes(), key_pem.as_bytes())?;
    if let Some(dir) = &issuer.state_path {
        let saved = store::write_private(dir, &format!("{}.key", managed.stem), key_pem.as_bytes())
            .and_then(|()| {
                store::write_private(dir, &format!("{}.crt", managed.stem), chain.as_bytes())
            });
        if let Err(why) = saved {
            // Served all the same; the next start orders again.
            log!(
                Warn,
                "writing certificate to state directory failed ({why}), {}",
                managed.context()
            );
        }
    }
    Ok(issued)
}

/// The CA's suggested renewal window for `issued` (ACME Renewal Information, RFC 9773), and
/// how long until it may be asked again; an error when the CA offers no ARI or cannot be asked.
pub(super) async fn renewal_window(
    managed: &Managed,
    issued: &Issued,
) -> Result<(SystemTime, SystemTime, Duration), String> {
    let spec = managed.spec.load_full();
    let account = account::account(&spec.issuer).await?;
    let leaf = issued.key.cert.first().ok_or("no certificate")?;
    let id = instant_acme::CertificateIdentifier::try_from(leaf)?;
    let (info, retry_after) = account
        .renewal_info(&id)
        .await
        .map_err(|e| super::why(&e))?;
    let time = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let window = info.suggested_window;
    Ok((
        time(window.start.unix_timestamp()),
        time(window.end.unix_timestamp()),
        retry_after,
    ))
}

/// A new private key of the `key=` type, made with aws-lc-rs.
fn generate_key(alg: AcmeKeyAlg) -> Result<rcgen::KeyPair, String> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature;
    let fail = |e: &dyn std::fmt::Display| format!("cannot generate the {alg} key ({e})");
    let pkcs8: Vec<u8> = match alg {
        AcmeKeyAlg::Ecdsa(bits) => {
            let curve = match bits {
                384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
                _ => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            };
            signature::EcdsaKeyPair::generate(curve)
                .map_err(|e| fail(&e))?
                .to_pkcs8v1()
                .map_err(|e| fail(&e))?
                .as_ref()
                .to_vec()
        }
        AcmeKeyAlg::Rsa(bits) => {
            let size = match bits {
                3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                _ => aws_lc_rs::rsa::KeySize::Rsa2048,
            };
            let pair = signature::RsaKeyPair::generate(size).map_err(|e| fail(&e))?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(|e| fail(&e))?;
            der.as_ref().to_vec()
        }
    };
    rcgen::KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8)).map_err(|e| fail(&e))
}

/// RFC 8737's certificate: self-signed for `name`, with the critical `acmeIdentifier`
/// extension holding the SHA-256 digest of the key authorization.
fn alpn_certificate(name: &str, digest: impl AsRef<[u8]>) -> Result<Arc<CertifiedKey>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot make the tls-alpn-01 certificate ({e})");
    let key = generate_key(AcmeKeyAlg::Ecdsa(256))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| fail(&e))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let cert = params.self_signed(&key).map_err(|e| fail(&e))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .map_err(|e| fail(&e))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}
