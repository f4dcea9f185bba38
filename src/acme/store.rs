//! An issuer's `state_path`: the account (`account.json`), and each certificate's chain and
//! key (`<first name>-<hash>.crt`, `.key`, in PEM), written with mode 0600 in a directory of
//! mode 0700 (they are secrets), replaced atomically (a crash never leaves half a file).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::model::AcmeCert;

use super::Issued;

/// The file name of a certificate: its first identifier and a hash of all of them and the key
/// type (stable across restarts, different when the list changes).
pub(super) fn stem(spec: &AcmeCert) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(spec.identifiers.join(",").as_bytes());
    hasher.update(spec.key.to_string().as_bytes());
    let first: String = spec
        .identifiers
        .first()
        .map(String::as_str)
        .unwrap_or("cert")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    format!("{first}-{:08x}", hasher.finalize())
}

/// The certificate kept in `dir` under `stem`, when it is there, readable and not expired.
pub(super) fn load_certificate(dir: &Path, stem: &str) -> Option<Issued> {
    let chain = std::fs::read(dir.join(format!("{stem}.crt"))).ok()?;
    let key = std::fs::read(dir.join(format!("{stem}.key"))).ok()?;
    let issued = parse(&chain, &key).ok()?;
    (issued.not_after > SystemTime::now()).then_some(issued)
}

/// A PEM chain and key as the TLS resolver serves them, with the leaf's validity.
pub(super) fn parse(chain: &[u8], key: &[u8]) -> Result<Issued, String> {
    let certs = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate PEM ({e})"))?;
    let leaf = certs.first().ok_or("no certificate in the chain")?;
    let (_, x509) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| format!("bad certificate ({e})"))?;
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let (not_before, not_after) = (
        time(x509.validity().not_before),
        time(x509.validity().not_after),
    );
    let der = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("bad key PEM ({e})"))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("unsupported key ({e})"))?;
    Ok(Issued {
        key: Arc::new(CertifiedKey::new(certs, signing)),
        not_before,
        not_after,
    })
}

/// Writes `bytes` to `dir/name` with mode 0600 (through a temporary file renamed over it),
/// making `dir` (mode 0700) if needed.
pub(super) fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        format!(
            "{what} \"{}\" failed ({})",
            path.display(),
            crate::error_log::errno_text(&e)
        )
    };
    make_dir(dir).map_err(|e| fail("mkdir()", dir, e))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("open()", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| fail("write()", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| fail("rename()", &path, e))
}

/// Makes `dir` (and its parents) with mode 0700 if it is missing.
pub(super) fn make_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
