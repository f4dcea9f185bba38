//! The answers to the ACME server's challenges while an order is validated: HTTP-01 (RFC 8555
//! §8.3: `GET /.well-known/acme-challenge/TOKEN` on port 80 returns the key authorization) and
//! TLS-ALPN-01 (RFC 8737: a handshake with ALPN `acme-tls/1` gets a self-signed certificate
//! for the name, carrying the key authorization's digest).
//!
//! Both are process-wide tables, filled only while an order waits for validation; the request
//! path looks at them after one atomic load when they are empty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

const PREFIX: &str = "/.well-known/acme-challenge/";

/// Challenges being answered (both kinds): zero on almost every request.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// HTTP-01: token → (identifier, key authorization).
static HTTP01: LazyLock<Mutex<HashMap<String, (String, String)>>> = LazyLock::new(Default::default);

/// TLS-ALPN-01: identifier → its challenge certificate.
static TLS_ALPN01: LazyLock<Mutex<HashMap<String, Arc<CertifiedKey>>>> =
    LazyLock::new(Default::default);

/// The body that answers a plain-HTTP request for `path` with `Host: host`, when it is an
/// HTTP-01 challenge being validated for that name. Runs before the server's rewrite phase
/// and locations, so a `return 301 https://...` does not hide the answer.
#[inline]
pub fn http01(path: &str, host: &str) -> Option<String> {
    if PENDING.load(Ordering::Relaxed) == 0 {
        return None;
    }
    pending_http01(path, host)
}

/// [`http01`] while some challenge is pending.
#[cold]
fn pending_http01(path: &str, host: &str) -> Option<String> {
    let token = path.strip_prefix(PREFIX)?;
    let table = HTTP01.lock().unwrap_or_else(|p| p.into_inner());
    let (name, answer) = table.get(token)?;
    name.eq_ignore_ascii_case(host).then(|| answer.clone())
}

/// The challenge certificate for a handshake offering ALPN `acme-tls/1` for `name` (SNI).
pub fn tls_alpn01(name: &str) -> Option<Arc<CertifiedKey>> {
    if PENDING.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let table = TLS_ALPN01.lock().unwrap_or_else(|p| p.into_inner());
    table.get(&name.to_ascii_lowercase()).cloned()
}

/// A challenge answered while this lives.
pub(super) struct Answer {
    kind: Kind,
}

enum Kind {
    Http(String),
    TlsAlpn(String),
}

impl Answer {
    /// Answers `GET /.well-known/acme-challenge/{token}` for `name` with `key_authorization`.
    pub(super) fn http(name: &str, token: &str, key_authorization: &str) -> Self {
        HTTP01.lock().unwrap_or_else(|p| p.into_inner()).insert(
            token.to_owned(),
            (name.to_owned(), key_authorization.to_owned()),
        );
        PENDING.fetch_add(1, Ordering::SeqCst);
        Self {
            kind: Kind::Http(token.to_owned()),
        }
    }

    /// Answers an `acme-tls/1` handshake for `name` with `cert`.
    pub(super) fn tls_alpn(name: &str, cert: Arc<CertifiedKey>) -> Self {
        let name = name.to_ascii_lowercase();
        TLS_ALPN01
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), cert);
        PENDING.fetch_add(1, Ordering::SeqCst);
        Self {
            kind: Kind::TlsAlpn(name),
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Http(token) => {
                HTTP01
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(token);
            }
            Kind::TlsAlpn(name) => {
                TLS_ALPN01
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
            }
        }
        PENDING.fetch_sub(1, Ordering::SeqCst);
    }
}
