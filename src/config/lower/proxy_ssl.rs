//! nginx's `proxy_ssl_*` directives (ngx_http_proxy_module), http → server → location: read
//! into a [`ProxySslFrame`] per level, each directive inherited on its own as nginx merges
//! them, and turned into the location's [`UpstreamSslSpec`]. Files are only named here;
//! [`crate::pool::tls::compile`] reads them when the configuration is compiled, for the
//! locations that `proxy_pass https://`.
//!
//! One default differs from nginx's: `proxy_ssl_server_name` is on (SNI is sent; most TLS
//! servers need it to pick a certificate), and `-t` says so for each `proxy_pass https://`
//! that leaves it unset, as it warns that `proxy_ssl_verify off` (nginx's default, kept)
//! does not verify the peer's certificate.

use std::path::PathBuf;

use super::super::ast::Directive;
use super::super::model::UpstreamSslSpec;
use super::super::values;
use super::Lower;

/// The `proxy_ssl_*` values set at one level (`None`: not set here).
#[derive(Clone, Debug, Default)]
pub(super) struct ProxySslFrame {
    server_name: Option<bool>,
    name: Option<String>,
    verify: Option<(bool, String)>,
    verify_depth: Option<u32>,
    trusted_certificate: Option<(PathBuf, String)>,
    crl: Option<(PathBuf, String)>,
    certificate: Option<(PathBuf, String)>,
    certificate_key: Option<(PathBuf, String)>,
    protocols: Option<(bool, bool)>,
    ciphers: Option<Option<Vec<String>>>,
    session_reuse: Option<bool>,
}

/// Whether `name` is read by [`Lower::proxy_ssl`].
pub(super) fn is_proxy_ssl(name: &str) -> bool {
    matches!(
        name,
        "proxy_ssl_server_name"
            | "proxy_ssl_name"
            | "proxy_ssl_verify"
            | "proxy_ssl_verify_depth"
            | "proxy_ssl_trusted_certificate"
            | "proxy_ssl_crl"
            | "proxy_ssl_certificate"
            | "proxy_ssl_certificate_key"
            | "proxy_ssl_protocols"
            | "proxy_ssl_ciphers"
            | "proxy_ssl_session_reuse"
    )
}

impl ProxySslFrame {
    /// This level's values where set, the parent's otherwise.
    pub(super) fn inherit(&self, parent: &ProxySslFrame) -> ProxySslFrame {
        macro_rules! inherit {
            ($($field:ident),* $(,)?) => {
                ProxySslFrame { $($field: self.$field.clone().or_else(|| parent.$field.clone()),)* }
            };
        }
        inherit!(
            server_name,
            name,
            verify,
            verify_depth,
            trusted_certificate,
            crl,
            certificate,
            certificate_key,
            protocols,
            ciphers,
            session_reuse,
        )
    }

    /// The settings in force, with the defaults for what no level set.
    pub(super) fn spec(&self) -> UpstreamSslSpec {
        let d = UpstreamSslSpec::default();
        let (tls12, tls13) = self.protocols.unwrap_or((d.tls12, d.tls13));
        UpstreamSslSpec {
            server_name: self.server_name.unwrap_or(d.server_name),
            server_name_set: self.server_name.is_some(),
            name: self.name.clone(),
            verify: self.verify.as_ref().is_some_and(|(on, _)| *on),
            verify_at: self.verify.as_ref().map(|(_, at)| at.clone()),
            verify_depth: self.verify_depth.unwrap_or(d.verify_depth),
            trusted_certificate: self.trusted_certificate.clone(),
            crl: self.crl.clone(),
            certificate: self.certificate.clone(),
            certificate_key: self.certificate_key.clone(),
            tls12,
            tls13,
            ciphers: self.ciphers.clone().flatten(),
            session_reuse: self.session_reuse.unwrap_or(d.session_reuse),
        }
    }
}

impl Lower<'_> {
    /// Reads one `proxy_ssl_*` directive (already checked to be once per level) into `f`.
    pub(super) fn proxy_ssl(&mut self, d: &Directive, f: &mut ProxySslFrame) {
        let arg = &d.args[0];
        let flag = || values::flag(&arg.value).unwrap_or(false);
        let file = |this: &Self| Some((this.conf_path(arg), this.at(d.span)));
        match d.name.as_str() {
            "proxy_ssl_server_name" => f.server_name = Some(flag()),
            "proxy_ssl_name" => f.name = Some(arg.value.clone()),
            "proxy_ssl_verify" => f.verify = Some((flag(), self.at(d.span))),
            "proxy_ssl_session_reuse" => f.session_reuse = Some(flag()),
            "proxy_ssl_verify_depth" => match values::number(&arg.value) {
                Some(n) if n <= 100 => f.verify_depth = Some(n as u32),
                _ => self.invalid_value(d, arg),
            },
            "proxy_ssl_trusted_certificate" => f.trusted_certificate = file(self),
            "proxy_ssl_crl" => f.crl = file(self),
            "proxy_ssl_certificate" => f.certificate = file(self),
            "proxy_ssl_certificate_key" => f.certificate_key = file(self),
            "proxy_ssl_protocols" => f.protocols = self.ssl_protocols(d),
            "proxy_ssl_ciphers" => f.ciphers = Some(self.ssl_ciphers(d, arg)),
            _ => {}
        }
    }

    /// `-t`'s warnings for a `proxy_pass https://` (at `span`) under `spec`: certificates not
    /// verified (nginx's default), SNI sent (imbang's default, not nginx's).
    pub(super) fn proxy_ssl_warnings(&mut self, spec: &UpstreamSslSpec, span: super::Span) {
        if !spec.verify {
            self.warn(
                "the upstream's certificate is not verified (\"proxy_ssl_verify\" is off, as nginx's default; set \"proxy_ssl_verify on\" and \"proxy_ssl_trusted_certificate\")".to_owned(),
                span,
            );
        }
        if !spec.server_name_set {
            self.warn(
                "the upstream's name is sent in SNI: imbang's \"proxy_ssl_server_name\" is on unless set (nginx's default is off)".to_owned(),
                span,
            );
        }
    }
}
