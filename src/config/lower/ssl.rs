//! nginx's `ngx_http_ssl_module` directives (and `http2`), http → server: read into an
//! [`SslFrame`] per level, inherited as nginx inherits them, and turned into the server's
//! [`SslSpec`]. Files are only named here; [`crate::tls`] reads them when the configuration is
//! compiled, so a bad certificate is reported with its directive's place.

use std::path::PathBuf;
use std::time::Duration;

use super::super::ast::{Arg, Directive};
use super::super::directives::Spec;
use super::super::model::{CertSpec, SslSpec, VerifyClient};
use super::super::values;
use super::{Lower, Seen};

/// The `ssl_*` values set at one level (`None`: not set here).
#[derive(Clone, Debug, Default)]
pub(super) struct SslFrame {
    /// `ssl_certificate` values with their places (inherited as a whole, as nginx's arrays).
    certificates: Option<Vec<(PathBuf, String)>>,
    keys: Option<Vec<(PathBuf, String)>>,
    enable: Option<bool>,
    reject_handshake: Option<bool>,
    http2: Option<bool>,
    protocols: Option<(bool, bool)>,
    ciphers: Option<Option<Vec<String>>>,
    curves: Option<Option<Vec<String>>>,
    prefer_server_ciphers: Option<bool>,
    session_cache: Option<usize>,
    session_timeout: Option<Duration>,
    session_tickets: Option<bool>,
    verify_client: Option<VerifyClient>,
    client_certificate: Option<(PathBuf, String)>,
    trusted_certificate: Option<(PathBuf, String)>,
    verify_depth: Option<u32>,
    crl: Option<(PathBuf, String)>,
    stapling: Option<(bool, String)>,
    stapling_file: Option<(PathBuf, String)>,
}

/// Whether `name` is read by [`Lower::ssl_directive`].
pub(super) fn is_ssl(name: &str) -> bool {
    name == "http2" || name == "ssl" || (name.starts_with("ssl_") && !IGNORED.contains(&name))
}

/// `ssl_*` directives that only warn (their table entry says why): nothing to read.
const IGNORED: &[&str] = &[
    "ssl_dhparam",
    "ssl_session_ticket_key",
    "ssl_buffer_size",
    "ssl_stapling_verify",
    "ssl_stapling_responder",
];

/// `ssl_certificate $acme_certificate; ssl_certificate_key $acme_certificate_key;`: the
/// certificate of the server's `acme_certificate`.
pub const ACME_CERT: &str = "$acme_certificate";
pub const ACME_KEY: &str = "$acme_certificate_key";

/// Sessions per megabyte of `ssl_session_cache shared:NAME:SIZE` (nginx: "about 4000").
const SESSIONS_PER_MB: usize = 4000;
/// OpenSSL's builtin cache size (`ssl_session_cache builtin` without a size).
const BUILTIN_SESSIONS: usize = 20480;

/// TLS 1.2 suites by OpenSSL's name, as rustls has them (ECDHE only: rustls has no DHE/RSA kx).
pub const SUITES: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    // TLS 1.3 names (OpenSSL takes them in `ciphersuites`, not here, but configs list them).
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ),
];

/// Key-exchange groups by OpenSSL's names (the first of a group is what `$ssl_curve` shows), as
/// rustls (aws-lc-rs) has them.
pub const GROUPS: &[(&str, &str)] = &[
    ("X25519MLKEM768", "X25519MLKEM768"),
    ("X25519", "X25519"),
    ("prime256v1", "secp256r1"),
    ("secp256r1", "secp256r1"),
    ("p-256", "secp256r1"),
    ("secp384r1", "secp384r1"),
    ("p-384", "secp384r1"),
];

impl SslFrame {
    /// This level's values where set, the parent's otherwise.
    pub(super) fn inherit(&self, parent: &SslFrame) -> SslFrame {
        macro_rules! inherit {
            ($($field:ident),* $(,)?) => {
                SslFrame { $($field: self.$field.clone().or_else(|| parent.$field.clone()),)* }
            };
        }
        inherit!(
            certificates,
            keys,
            enable,
            reject_handshake,
            http2,
            protocols,
            ciphers,
            curves,
            prefer_server_ciphers,
            session_cache,
            session_timeout,
            session_tickets,
            verify_client,
            client_certificate,
            trusted_certificate,
            verify_depth,
            crl,
            stapling,
            stapling_file,
        )
    }

    /// The settings in force, with nginx's defaults for what no level set.
    pub(super) fn spec(&self) -> SslSpec {
        let certs = self.certificates.clone().unwrap_or_default();
        let keys = self.keys.clone().unwrap_or_default();
        let certificates = certs
            .iter()
            .zip(&keys)
            .map(|((cert, cert_at), (key, key_at))| CertSpec {
                cert: cert.clone(),
                key: key.clone(),
                cert_at: cert_at.clone(),
                key_at: key_at.clone(),
            })
            .collect();
        let (tls12, tls13) = self.protocols.unwrap_or((true, true));
        SslSpec {
            certificates,
            unpaired: None,
            enable: self.enable.unwrap_or(false),
            reject_handshake: self.reject_handshake.unwrap_or(false),
            http2: self.http2.unwrap_or(false),
            tls12,
            tls13,
            ciphers: self.ciphers.clone().flatten(),
            curves: self.curves.clone().flatten(),
            prefer_server_ciphers: self.prefer_server_ciphers.unwrap_or(false),
            session_cache: self.session_cache.unwrap_or(0),
            session_timeout: self.session_timeout.unwrap_or(Duration::from_secs(300)),
            session_tickets: self.session_tickets.unwrap_or(true),
            verify_client: self.verify_client.unwrap_or_default(),
            client_certificate: self.client_certificate.clone(),
            trusted_certificate: self.trusted_certificate.clone(),
            verify_depth: self.verify_depth.unwrap_or(1),
            crl: self.crl.clone(),
            stapling_file: self.stapling_file.clone(),
            acme: None,
        }
    }

    /// Certificates without a key at the same position: nginx's
    /// `no "ssl_certificate_key" is defined for certificate "..."`.
    pub(super) fn unpaired(&self) -> Vec<(PathBuf, String)> {
        let certs = self.certificates.as_deref().unwrap_or_default();
        let keys = self.keys.as_deref().map_or(0, <[_]>::len);
        certs.iter().skip(keys).cloned().collect()
    }
}

impl Lower<'_> {
    /// Reads one `ssl_*` (or `http2`) directive of the http or server level into `f`.
    pub(super) fn ssl_directive(
        &mut self,
        d: &Directive,
        spec: &'static Spec,
        f: &mut SslFrame,
        seen: &mut Seen,
    ) {
        let arg = &d.args[0];
        let name = d.name.as_str();
        // Directives that may be given more than once at a level.
        if !matches!(name, "ssl_certificate" | "ssl_certificate_key") && !self.once(seen, spec, d) {
            return;
        }
        let flag = || values::flag(&arg.value).unwrap_or(false);
        match name {
            "ssl_certificate" => {
                let path = self.conf_path(arg);
                let at = self.at(d.span);
                f.certificates.get_or_insert_with(Vec::new).push((path, at));
            }
            "ssl_certificate_key" => {
                let path = self.conf_path(arg);
                let at = self.at(d.span);
                f.keys.get_or_insert_with(Vec::new).push((path, at));
            }
            "http2" => f.http2 = Some(flag()),
            "ssl" => {
                f.enable = Some(flag());
                self.warn(
                    "the \"ssl\" directive is deprecated, use the \"listen ... ssl\" directive instead".to_owned(),
                    d.span,
                );
            }
            "ssl_reject_handshake" => f.reject_handshake = Some(flag()),
            "ssl_prefer_server_ciphers" => f.prefer_server_ciphers = Some(flag()),
            "ssl_session_tickets" => f.session_tickets = Some(flag()),
            "ssl_stapling" => {
                f.stapling = Some((flag(), self.at(d.span)));
                if flag() {
                    self.warn(
                        "imbang does not query OCSP responders: \"ssl_stapling on\" staples only the response of \"ssl_stapling_file\"".to_owned(),
                        d.span,
                    );
                }
            }
            "ssl_protocols" => f.protocols = self.ssl_protocols(d),
            "ssl_ciphers" => f.ciphers = Some(self.ssl_ciphers(d, arg)),
            "ssl_ecdh_curve" => f.curves = Some(self.ssl_curves(d, arg)),
            "ssl_session_cache" => f.session_cache = self.ssl_session_cache(d),
            "ssl_session_timeout" => f.session_timeout = self.duration_arg(d, arg),
            "ssl_verify_client" => {
                f.verify_client = match arg.value.as_str() {
                    "off" => Some(VerifyClient::Off),
                    "on" => Some(VerifyClient::On),
                    "optional" => Some(VerifyClient::Optional),
                    "optional_no_ca" => Some(VerifyClient::OptionalNoCa),
                    _ => {
                        self.invalid_value(d, arg);
                        None
                    }
                }
            }
            "ssl_verify_depth" => match values::number(&arg.value) {
                Some(n) if n <= 100 => f.verify_depth = Some(n as u32),
                _ => self.invalid_value(d, arg),
            },
            "ssl_client_certificate" => {
                f.client_certificate = Some((self.conf_path(arg), self.at(d.span)))
            }
            "ssl_trusted_certificate" => {
                f.trusted_certificate = Some((self.conf_path(arg), self.at(d.span)))
            }
            "ssl_crl" => f.crl = Some((self.conf_path(arg), self.at(d.span))),
            "ssl_stapling_file" => f.stapling_file = Some((self.conf_path(arg), self.at(d.span))),
            _ => {}
        }
    }

    /// The server's [`SslSpec`], reporting certificates without keys and `ssl_stapling on`
    /// without a file (imbang queries no OCSP responder).
    pub(super) fn ssl_spec(&self, own: &SslFrame, http: &SslFrame) -> SslSpec {
        let frame = own.inherit(http);
        let mut spec = frame.spec();
        // Reported when a `listen ... ssl` needs the server (snapshot), as nginx does.
        spec.unpaired = frame.unpaired().into_iter().next();
        spec
    }

    /// A file named in a directive: relative paths are taken from the main file's directory
    /// (nginx's conf prefix).
    pub(super) fn conf_path(&self, arg: &Arg) -> PathBuf {
        let path = PathBuf::from(&arg.value);
        // The ACME module's variables stay as they are: crate::tls serves its certificate.
        if path.is_absolute() || matches!(arg.value.as_str(), ACME_CERT | ACME_KEY) {
            return path;
        }
        let main = self
            .src
            .files()
            .iter()
            .map(|f| f.path.as_path())
            .find(|p| p.is_absolute())
            .and_then(|p| p.parent());
        match main {
            Some(dir) => dir.join(path),
            None => path,
        }
    }

    pub(super) fn ssl_protocols(&mut self, d: &Directive) -> Option<(bool, bool)> {
        let (mut tls12, mut tls13) = (false, false);
        for arg in &d.args {
            match arg.value.as_str() {
                "TLSv1.2" => tls12 = true,
                "TLSv1.3" => tls13 = true,
                "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => self.warn(
                    format!(
                        "\"{}\" in \"{}\" is never offered: imbang speaks TLSv1.2 and TLSv1.3 only",
                        arg.value, d.name
                    ),
                    arg.span,
                ),
                _ => {
                    self.invalid_value(d, arg);
                    return None;
                }
            }
        }
        if !tls12 && !tls13 {
            self.invalid(
                format!(
                    "no protocol imbang speaks is left in \"{}\" (TLSv1.2 or TLSv1.3 is needed)",
                    d.name
                ),
                d.span,
            );
            return None;
        }
        Some((tls12, tls13))
    }

    /// OpenSSL's cipher list: named suites are mapped to rustls's; keywords and exclusions
    /// (`HIGH`, `!aNULL`, ...) leave rustls's defaults, which are all strong. `None`: defaults.
    pub(super) fn ssl_ciphers(&mut self, d: &Directive, arg: &Arg) -> Option<Vec<String>> {
        let mut named = Vec::new();
        let mut unmapped = Vec::new();
        for item in arg.value.split([':', ',', ' ']).filter(|s| !s.is_empty()) {
            let keyword = item.starts_with(['!', '-', '+', '@'])
                || item.contains('+')
                || item.chars().all(|c| c.is_ascii_alphanumeric());
            if keyword {
                continue;
            }
            match SUITES
                .iter()
                .find(|(openssl, _)| openssl.eq_ignore_ascii_case(item))
            {
                Some((_, rustls)) => named.push((*rustls).to_owned()),
                None => unmapped.push(item),
            }
        }
        if !unmapped.is_empty() {
            self.warn(
                format!(
                    "ciphers \"{}\" in \"{}\" are not offered: rustls has no such suites (it offers ECDHE with AES-GCM or ChaCha20-Poly1305 only)",
                    unmapped.join(":"),
                    d.name
                ),
                arg.span,
            );
        }
        if named.is_empty() {
            if !unmapped.is_empty() {
                self.warn(
                    format!(
                        "no cipher in \"{}\" maps to rustls's: its defaults are used",
                        d.name
                    ),
                    arg.span,
                );
            }
            return None;
        }
        Some(named)
    }

    fn ssl_curves(&mut self, d: &Directive, arg: &Arg) -> Option<Vec<String>> {
        if arg.value.eq_ignore_ascii_case("auto") {
            return None;
        }
        let mut groups = Vec::new();
        for item in arg.value.split(':').filter(|s| !s.is_empty()) {
            match GROUPS
                .iter()
                .find(|(openssl, _)| openssl.eq_ignore_ascii_case(item))
            {
                Some((_, rustls)) => groups.push((*rustls).to_owned()),
                None => self.warn(
                    format!(
                        "curve \"{item}\" in \"{}\" is not offered: rustls has X25519MLKEM768, X25519, prime256v1 and secp384r1",
                        d.name
                    ),
                    arg.span,
                ),
            }
        }
        if groups.is_empty() {
            return None;
        }
        groups.dedup();
        Some(groups)
    }

    /// `ssl_session_cache off | none | [builtin[:size]] [shared:name:size]`: the number of
    /// sessions the server keeps.
    fn ssl_session_cache(&mut self, d: &Directive) -> Option<usize> {
        let mut sessions = 0;
        for arg in &d.args {
            let v = arg.value.as_str();
            let n = match v {
                "off" | "none" => Some(0),
                "builtin" => Some(BUILTIN_SESSIONS),
                _ => {
                    if let Some(size) = v.strip_prefix("builtin:") {
                        values::number(size).map(|n| n as usize)
                    } else if let Some(rest) = v.strip_prefix("shared:") {
                        match rest.split_once(':') {
                            Some((name, size)) if !name.is_empty() => values::size(size)
                                .filter(|&n| n >= 8 * 4096)
                                .map(|n| (n as usize).div_ceil(1 << 20) * SESSIONS_PER_MB),
                            _ => None,
                        }
                    } else {
                        None
                    }
                }
            };
            match n {
                Some(n) => sessions = sessions.max(n),
                None => {
                    self.invalid(format!("invalid session cache \"{v}\""), arg.span);
                    return None;
                }
            }
        }
        Some(sessions)
    }
}
