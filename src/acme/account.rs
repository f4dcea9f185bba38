//! The account with an issuer's ACME server: made once (its key generated, or read from
//! `account_key FILE`), kept in `state_path/account.json` and reused after a restart, shared by
//! all the issuer's certificates. The HTTP client that talks to the server honours the issuer's
//! `ssl_verify` and `ssl_trusted_certificate`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use instant_acme::{Account, AccountBuilder, AccountCredentials, ExternalAccountKey, NewAccount};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Mutex;

use crate::config::model::AcmeIssuer;
use crate::log;
use crate::pool::tls::Unverified;

use super::store;

const ACCOUNT_FILE: &str = "account.json";

/// Accounts by issuer (its name, server and state): one async lock, held while an account is
/// made, so two certificates of one issuer do not register two accounts.
static ACCOUNTS: LazyLock<Mutex<HashMap<String, Account>>> = LazyLock::new(Default::default);

/// The issuer's account: from memory, else from `state_path`, else registered now.
pub(super) async fn account(issuer: &AcmeIssuer) -> Result<Account, String> {
    let key = format!("{}\n{}\n{:?}", issuer.name, issuer.uri, issuer.state_path);
    let mut accounts = ACCOUNTS.lock().await;
    if let Some(account) = accounts.get(&key) {
        return Ok(account.clone());
    }
    let saved = issuer
        .state_path
        .as_deref()
        .and_then(|dir| std::fs::read(dir.join(ACCOUNT_FILE)).ok())
        .and_then(|json| serde_json::from_slice::<AccountCredentials>(&json).ok());
    let account = match saved {
        Some(credentials) => builder(issuer)?
            .from_credentials(credentials)
            .await
            .map_err(|e| format!("account request failed ({})", super::why(&e)))?,
        None => register(issuer).await?,
    };
    accounts.insert(key, account.clone());
    Ok(account)
}

/// Registers a new account and keeps its credentials in `state_path`.
async fn register(issuer: &AcmeIssuer) -> Result<Account, String> {
    let contacts: Vec<&str> = issuer.contacts.iter().map(String::as_str).collect();
    let (account, credentials) = match &issuer.account_key {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                format!(
                    "cannot load account key \"{}\": open() failed ({})",
                    path.display(),
                    crate::error_log::errno_text(&e)
                )
            })?;
            let der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| format!("cannot load account key \"{}\": {e}", path.display()))?;
            let PrivateKeyDer::Pkcs8(pkcs8) = der else {
                return Err(format!(
                    "cannot load account key \"{}\": an ecdsa:256 key in PKCS#8 (\"BEGIN PRIVATE KEY\") is needed",
                    path.display()
                ));
            };
            let key = instant_acme::Key::from_pkcs8_der(pkcs8.clone_key())
                .map_err(|e| format!("cannot load account key \"{}\": {e}", path.display()))?;
            // instant-acme registers a key with the terms of service agreed and no contact;
            // the contacts are set just after.
            let (account, credentials) = builder(issuer)?
                .create_from_key((key, PrivateKeyDer::Pkcs8(pkcs8)), issuer.uri.clone())
                .await
                .map_err(|e| format!("account request failed ({})", super::why(&e)))?;
            if !contacts.is_empty() {
                account
                    .update_contacts(&contacts)
                    .await
                    .map_err(|e| format!("account update failed ({})", super::why(&e)))?;
            }
            (account, credentials)
        }
        None => {
            let eab = issuer
                .external_account
                .as_ref()
                .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
            builder(issuer)?
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: issuer.accept_tos,
                        only_return_existing: false,
                    },
                    issuer.uri.clone(),
                    eab.as_ref(),
                )
                .await
                .map_err(|e| format!("account request failed ({})", super::why(&e)))?
        }
    };
    log!(
        Notice,
        "account \"{}\" created, acme issuer: \"{}\"",
        account.id(),
        issuer.name
    );
    if let Some(dir) = &issuer.state_path {
        let json = serde_json::to_vec(&credentials).map_err(|e| e.to_string())?;
        if let Err(why) = store::write_private(dir, ACCOUNT_FILE, &json) {
            // The account works; only the next start registers another.
            log!(
                Warn,
                "writing account to state directory failed ({why}), acme issuer: \"{}\"",
                issuer.name
            );
        }
    }
    Ok(account)
}

/// A client for the issuer's server: the system's CA certificates (the default), the
/// `ssl_trusted_certificate` file's, or none checked (`ssl_verify off`).
fn builder(issuer: &AcmeIssuer) -> Result<AccountBuilder, String> {
    if issuer.verify && issuer.trusted_certificate.is_none() {
        return Account::builder().map_err(|e| format!("cannot make an HTTPS client: {e}"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match &issuer.trusted_certificate {
        Some(path) if issuer.verify => {
            let pem = std::fs::read(path).map_err(|e| {
                format!(
                    "cannot load certificates \"{}\": open() failed ({})",
                    path.display(),
                    crate::error_log::errno_text(&e)
                )
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("bad PEM in \"{}\" ({e})", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate in \"{}\" ({e})", path.display()))?;
            }
            versions.with_root_certificates(roots).with_no_client_auth()
        }
        _ => versions
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    Ok(Account::builder_with_http(Box::new(client)))
}
