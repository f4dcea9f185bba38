//! Automatic certificates (nginx's `ngx_http_acme_module`): for each server's
//! `acme_certificate`, a task obtains a certificate from the issuer's ACME server (RFC 8555) with
//! the HTTP-01 or TLS-ALPN-01 challenge, keeps it in the issuer's `state_path`, serves it through
//! `ssl_certificate $acme_certificate`, and renews it in the window the CA suggests (ACME
//! Renewal Information, RFC 9773) or, when the CA offers none, at two thirds of its lifetime.
//!
//! The certificates live in a process-wide [`Registry`] of [`Managed`] entries, one per issuer,
//! identifiers and key type, outside the configuration snapshot: a reload keeps them (and their
//! tasks), and a new certificate is swapped into the entry the TLS resolver reads
//! ([`Managed::current`]), so it is served from the next handshake on, with no reload and no
//! connection closed.
//!
//! Until an entry has a certificate (the first issuance after a start with an empty
//! `state_path`), a handshake for the server is refused, as nginx does when `$acme_certificate`
//! has no value: a self-signed placeholder would only trade the client's "handshake failure"
//! for a certificate warning that users learn to click through.

mod account;
mod challenge;
mod issue;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::config::model::AcmeCert;
use crate::log;

pub use challenge::{ACME_TLS_ALPN, http01, tls_alpn01};

/// A certificate in force: what the TLS resolver serves, and when it was issued and expires.
#[derive(Debug)]
pub struct Issued {
    pub key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Issued {
    /// When to renew: two thirds into the certificate's lifetime (Let's Encrypt's advice for
    /// clients without ARI; 60 days into a 90-day certificate).
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }
}

/// One certificate imbang obtains: an `acme_certificate` (servers asking for the same
/// identifiers from the same issuer share it).
#[derive(Debug)]
pub struct Managed {
    /// The `acme_certificate` of the configuration in force (a reload may change the issuer's
    /// settings, such as its challenge, while the certificate stays the same).
    spec: ArcSwap<AcmeCert>,
    /// The certificate served now, if any.
    current: ArcSwapOption<Issued>,
    /// The last failure since the last success, and how many in a row.
    failure: Mutex<Option<(String, u32)>>,
    /// When the certificate in force is to be renewed (by the CA's window or two thirds).
    scheduled: Mutex<Option<SystemTime>>,
    /// Its files in `state_path`: `<stem>.crt` and `<stem>.key`.
    stem: String,
    /// Whether its task runs.
    started: AtomicBool,
}

impl Managed {
    /// The certificate to serve now (`None` before the first issuance).
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|i| i.key.clone())
    }

    /// The certificate with its validity (`None` before the first issuance).
    pub fn issued(&self) -> Option<Arc<Issued>> {
        self.current.load_full()
    }

    /// The certificate's name in the API: `issuer/stem`.
    fn name(&self) -> String {
        format!("{}/{}", self.spec.load().issuer.name, self.stem)
    }

    /// What nginx's module ends its log lines with: `acme issuer: "NAME", order: "STEM"`.
    fn context(&self) -> String {
        format!(
            "acme issuer: \"{}\", order: \"{}\"",
            self.spec.load().issuer.name,
            self.stem
        )
    }
}

/// Every certificate known to this process, by [`key`].
type Registry = HashMap<String, Arc<Managed>>;

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

/// What makes two `acme_certificate`s the same certificate: the issuer (its name, server and
/// state), the identifiers and the key type.
fn key(spec: &AcmeCert) -> String {
    format!(
        "{}\n{}\n{:?}\n{}\n{}",
        spec.issuer.name,
        spec.issuer.uri,
        spec.issuer.state_path,
        spec.identifiers.join(","),
        spec.key
    )
}

/// The entry of `spec`, made on first use (then a certificate kept in `state_path` is loaded,
/// so a restart serves it at once). Called when a configuration is compiled.
pub fn certificate(spec: &Arc<AcmeCert>) -> Arc<Managed> {
    let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let managed = registry
        .entry(key(spec))
        .or_insert_with(|| {
            let stem = store::stem(spec);
            let current = spec
                .issuer
                .state_path
                .as_deref()
                .and_then(|dir| store::load_certificate(dir, &stem))
                .map(Arc::new);
            Arc::new(Managed {
                spec: ArcSwap::new(spec.clone()),
                current: ArcSwapOption::new(current),
                failure: Mutex::new(None),
                scheduled: Mutex::new(None),
                stem,
                started: AtomicBool::new(false),
            })
        })
        .clone();
    if **managed.spec.load() != **spec {
        managed.spec.store(spec.clone());
    }
    managed
}

/// Starts the task of every certificate `config` asks for that has none yet (after the start
/// and each reload; must run inside the tokio runtime). A certificate no configuration asks for
/// any more keeps its task: it is renewed until the process ends, harmlessly.
pub fn reconcile(config: &Config) {
    let Some(http) = &config.http else { return };
    for server in &http.servers {
        let Some(spec) = &server.ssl.acme else {
            continue;
        };
        let managed = certificate(spec);
        if !managed.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(run(managed));
        }
    }
}

/// An error with its causes, `: `-separated (hyper's "client error (Connect)" alone does not
/// say that the connection was refused).
fn why(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The first wait after a failure; doubled after each one, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// One certificate's life: obtain it when there is none (or it is due), sleep until its
/// renewal ([`schedule`]), renew; a failure is logged and retried after a growing pause, while
/// the certificate in force (if any) is still served.
async fn run(managed: Arc<Managed>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(issued) = managed.issued() {
            let (at, ask_again) = schedule(&managed, &issued).await;
            *managed.scheduled.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            if !wait.is_zero() {
                log!(
                    Info,
                    "certificate is valid, renewal scheduled at {} (in {}s), {}",
                    httpdate::fmt_http_date(at),
                    wait.as_secs(),
                    managed.context()
                );
                sleep_long(ask_again.map_or(wait, |again| wait.min(again))).await;
                continue;
            }
        }
        match issue::issue(&managed).await {
            Ok(issued) => {
                log!(
                    Notice,
                    "certificate issued for {}, valid until {}, {}",
                    managed.spec.load().identifiers.join(" "),
                    httpdate::fmt_http_date(issued.not_after),
                    managed.context()
                );
                managed.current.store(Some(Arc::new(issued)));
                *managed.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                *managed.scheduled.lock().unwrap_or_else(|p| p.into_inner()) = None;
                backoff = FIRST_BACKOFF;
            }
            Err(why) => {
                {
                    let mut failure = managed.failure.lock().unwrap_or_else(|p| p.into_inner());
                    let count = failure.as_ref().map_or(0, |f| f.1) + 1;
                    *failure = Some((why.clone(), count));
                }
                log!(
                    Error,
                    "{why} while updating certificate, {}, next attempt in {}s",
                    managed.context(),
                    backoff.as_secs()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// When to renew `issued`, and when to ask the CA again: a random moment of the window the CA
/// suggests when it offers ACME Renewal Information (RFC 9773; asked again after its
/// `Retry-After`, at least a minute), else two thirds into the certificate's lifetime.
async fn schedule(managed: &Managed, issued: &Issued) -> (SystemTime, Option<Duration>) {
    match issue::renewal_window(managed, issued).await {
        Ok((start, end, retry_after)) => {
            let span = end.duration_since(start).unwrap_or_default();
            let at = start + span.mul_f64(fastrand::f64());
            let again = retry_after.max(Duration::from_secs(60));
            log!(
                Info,
                "CA suggested renewal window: {} - {}, {}",
                httpdate::fmt_http_date(start),
                httpdate::fmt_http_date(end),
                managed.context()
            );
            (at, Some(again))
        }
        Err(_) => (issued.renew_at(), None),
    }
}

/// Sleeps `wait`, in steps of at most a day (a suspended machine's clock jumps; the loop
/// looks at the wall clock again after each step).
async fn sleep_long(wait: Duration) {
    tokio::time::sleep(wait.min(Duration::from_secs(86_400))).await;
}

/// The API's `acme` section: every certificate the configuration in force asks for, by
/// `issuer/stem`, with its names, its validity and the last failure.
pub fn api(config: &Config) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let Some(http) = &config.http else {
        return out.into();
    };
    let registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let now = SystemTime::now();
    let time = |t: SystemTime| serde_json::Value::from(httpdate::fmt_http_date(t));
    for spec in http.servers.iter().filter_map(|s| s.ssl.acme.as_ref()) {
        let Some(managed) = registry.get(&key(spec)) else {
            continue;
        };
        let issued = managed.issued();
        let failure = managed
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let state = match &issued {
            None => "pending",
            Some(i) if i.not_after <= now => "expired",
            Some(_) => "valid",
        };
        let secs = |t: SystemTime| match t.duration_since(now) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        out.insert(
            managed.name(),
            serde_json::json!({
                "issuer": spec.issuer.name,
                "identifiers": spec.identifiers,
                "key": spec.key.to_string(),
                "state": state,
                "not_before": issued.as_ref().map(|i| time(i.not_before)),
                "not_after": issued.as_ref().map(|i| time(i.not_after)),
                "expires_in": issued.as_ref().map(|i| secs(i.not_after)),
                "renew_in": issued.as_ref().map(|i| {
                    let scheduled = *managed.scheduled.lock().unwrap_or_else(|p| p.into_inner());
                    secs(scheduled.unwrap_or_else(|| i.renew_at()))
                }),
                "last_error": failure.as_ref().map(|f| f.0.clone()),
                "failures": failure.as_ref().map_or(0, |f| f.1),
            }),
        );
    }
    out.into()
}

/// Every issuer's `state_path` the configuration's certificates use, made now (mode 0700) if
/// missing, followed by the files in them: what the process hands to the `user` it becomes
/// when it starts as root, so the account and certificates can be read and renewed as that
/// user. A directory that cannot be made is left out (its issuance logs why).
pub fn state_paths(config: &Config) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Some(http) = &config.http else {
        return out;
    };
    for spec in http.servers.iter().filter_map(|s| s.ssl.acme.as_ref()) {
        let Some(dir) = &spec.issuer.state_path else {
            continue;
        };
        if out.contains(dir) {
            continue;
        }
        if store::make_dir(dir).is_err() {
            continue;
        }
        out.push(dir.clone());
        if let Ok(entries) = std::fs::read_dir(dir) {
            out.extend(entries.flatten().map(|e| e.path()));
        }
    }
    out
}
