//! nginx's ACME module (`ngx_http_acme_module`): `acme_issuer NAME { ... }` and
//! `acme_shared_zone` at the http level, `acme_certificate` in a server. Issuers are read before
//! the servers (a server may name one defined further down, as nginx resolves them after the
//! whole http block); a server's `acme_certificate` becomes its [`SslSpec::acme`], which
//! `ssl_certificate $acme_certificate` serves ([`crate::tls`], [`crate::acme`]).
//!
//! [`SslSpec::acme`]: super::super::model::SslSpec

use std::net::IpAddr;
use std::sync::Arc;

use super::super::ast::Directive;
use super::super::directives::Contexts;
use super::super::error::{ConfigError, ErrorKind};
use super::super::model::{
    AcmeCert, AcmeChallenge, AcmeIssuer, AcmeKeyAlg, ListenSpec, ServerName, SslSpec,
};
use super::super::values;
use super::ssl::ACME_CERT;
use super::{Lower, Seen};

impl Lower<'_> {
    /// `acme_issuer NAME { uri ...; ... }`.
    pub(super) fn acme_issuer(&mut self, d: &Directive) {
        let name = d.args[0].value.clone();
        if self.acme_issuers.contains_key(&name) {
            return self.error(ErrorKind::Duplicate(d.name.clone()), d.span);
        }
        let mut issuer = AcmeIssuer {
            name: name.clone(),
            uri: String::new(),
            contacts: Vec::new(),
            state_path: Some(self.path(&format!("acme_{name}"))),
            accept_tos: false,
            account_key: None,
            challenge: AcmeChallenge::Http01,
            common_name_in_csr: false,
            trusted_certificate: None,
            verify: true,
            preferred_chain: None,
            profile: None,
            external_account: None,
            location: self.at(d.span),
        };
        let mut seen = Seen::default();
        let mut key_file_at = None;
        for c in d.block.as_deref().unwrap_or_default() {
            let Some(spec) = self.check(c, Contexts::ACME_ISSUER) else {
                continue;
            };
            // `contact` may be given more than once (an array in nginx).
            if c.name != "contact" && !self.once(&mut seen, spec, c) {
                continue;
            }
            let arg = &c.args.first();
            let value = arg.map_or("", |a| a.value.as_str());
            match c.name.as_str() {
                "uri" => match value.split_once("://") {
                    Some(("https" | "http", rest)) if !rest.is_empty() => {
                        issuer.uri = value.to_owned()
                    }
                    _ => self.invalid(format!("invalid URL \"{value}\""), c.args[0].span),
                },
                "contact" => {
                    let has_scheme = value.split_once(':').is_some_and(|(scheme, _)| {
                        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                            && scheme
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                    });
                    if value.is_empty() {
                        self.invalid_value(c, &c.args[0]);
                    } else if has_scheme {
                        issuer.contacts.push(value.to_owned());
                    } else {
                        issuer.contacts.push(format!("mailto:{value}"));
                    }
                }
                "state_path" => {
                    issuer.state_path = match value {
                        "off" => None,
                        path => Some(self.path(path)),
                    }
                }
                "accept_terms_of_service" => issuer.accept_tos = true,
                "account_key" => match value {
                    "ecdsa:256" | "ecdsa" => issuer.account_key = None,
                    "ecdsa:384" | "ecdsa:521" | "rsa" | "rsa:2048" | "rsa:3072" | "rsa:4096" => self
                        .invalid(
                            format!(
                                "\"account_key {value}\" is not supported by imbang yet (its ACME client signs with ecdsa:256 keys only)"
                            ),
                            c.args[0].span,
                        ),
                    v if v.starts_with("ecdsa:") || v.starts_with("rsa:") => {
                        self.invalid_value(c, &c.args[0])
                    }
                    path => {
                        issuer.account_key = Some(self.path(path));
                        key_file_at = Some(c.span);
                    }
                },
                "challenge" => match value {
                    "http" | "http-01" => issuer.challenge = AcmeChallenge::Http01,
                    "tls-alpn" | "tls-alpn-01" => issuer.challenge = AcmeChallenge::TlsAlpn01,
                    _ => self.invalid(format!("unsupported challenge: {value}"), c.args[0].span),
                },
                "common_name_in_csr" => {
                    issuer.common_name_in_csr = values::flag(value).unwrap_or(false)
                }
                "ssl_trusted_certificate" => issuer.trusted_certificate = Some(self.path(value)),
                "ssl_verify" => issuer.verify = values::flag(value).unwrap_or(true),
                "preferred_chain" => issuer.preferred_chain = Some(value.to_owned()),
                "profile" => match c.args.get(1).map(|a| a.value.as_str()) {
                    None => issuer.profile = Some((value.to_owned(), false)),
                    Some("require") => issuer.profile = Some((value.to_owned(), true)),
                    Some(_) => self.invalid_value(c, &c.args[1]),
                },
                "external_account_key" => {
                    let kid = value.to_owned();
                    let key_arg = &c.args[1];
                    let encoded = match key_arg.value.strip_prefix("data:") {
                        Some(data) => Ok(data.trim().to_owned()),
                        None => std::fs::read_to_string(self.path(&key_arg.value)).map_err(|e| {
                            format!(
                                "open() \"{}\" failed ({})",
                                key_arg.value,
                                crate::error_log::errno_text(&e)
                            )
                        }),
                    };
                    match encoded.map(|e| base64url(e.trim())) {
                        Ok(Some(key)) if !kid.is_empty() && !key.is_empty() => {
                            issuer.external_account = Some((kid, key))
                        }
                        Ok(_) => self.invalid(
                            "invalid base64url encoded value".to_owned(),
                            key_arg.span,
                        ),
                        Err(why) => self.invalid(why, key_arg.span),
                    }
                }
                _ => {}
            }
        }
        if let (Some(at), Some(_)) = (key_file_at, &issuer.external_account) {
            // instant-acme registers an account of a given key without a binding.
            self.invalid(
                "\"account_key\" with a file and \"external_account_key\" together are not supported by imbang yet".to_owned(),
                at,
            );
        }
        if issuer.uri.is_empty() {
            self.invalid("acme_issuer: \"uri\" is missing".to_owned(), d.span);
            return;
        }
        self.acme_issuers.insert(name, Arc::new(issuer));
    }

    /// `acme_shared_zone zone=NAME:SIZE`: checked, then nothing to do (see the table).
    pub(super) fn acme_shared_zone(&mut self, d: &Directive) {
        let arg = &d.args[0];
        let Some(zone) = arg.value.strip_prefix("zone=") else {
            return self.invalid(
                format!("\"{}\" must have \"zone\" parameter", d.name),
                arg.span,
            );
        };
        match zone.rsplit_once(':') {
            Some((name, size)) if !name.is_empty() && values::size(size).is_some() => {}
            _ => self.invalid(format!("invalid zone size \"{zone}\""), arg.span),
        }
    }

    /// `acme_certificate ISSUER [identifier ...] [key=alg:size]` of a server whose names are
    /// `names` (its identifiers when none is given, as nginx takes them).
    pub(super) fn acme_certificate(
        &mut self,
        d: &Directive,
        names: &[ServerName],
    ) -> Option<Arc<AcmeCert>> {
        let issuer_name = &d.args[0].value;
        let mut key = AcmeKeyAlg::Ecdsa(256);
        let mut identifiers = Vec::new();
        let mut ok = true;
        for arg in &d.args[1..] {
            if let Some(alg) = arg.value.strip_prefix("key=") {
                match key_alg(alg) {
                    Some(k) => key = k,
                    None => {
                        self.invalid("invalid \"key\" value".to_owned(), arg.span);
                        ok = false;
                    }
                }
                continue;
            }
            match identifier(&arg.value) {
                Ok(ids) => identifiers.extend(ids),
                Err(why) => {
                    self.invalid(
                        format!("acme_certificate: invalid server name: {why}"),
                        arg.span,
                    );
                    ok = false;
                }
            }
        }
        if d.args[1..].iter().all(|a| a.value.starts_with("key=")) {
            for name in names {
                let text = match name {
                    ServerName::Exact(n) => n.clone(),
                    ServerName::LeadingWildcard { suffix, also_bare } => match also_bare {
                        true => suffix.clone(),
                        false => format!("*{suffix}"),
                    },
                    ServerName::TrailingWildcard(prefix) => format!("{prefix}*"),
                    ServerName::Regex(re) => format!("~{re}"),
                };
                match name {
                    ServerName::Regex(_) => self.warn(
                        format!(
                            "\"acme_certificate\": unsupported regular expression in server_name: {text}"
                        ),
                        d.span,
                    ),
                    ServerName::Exact(n) if n.is_empty() => {}
                    _ => match identifier(&text) {
                        Ok(ids) => identifiers.extend(ids),
                        Err(why) => {
                            self.invalid(
                                format!("\"acme_certificate\": invalid server name: {why}"),
                                d.span,
                            );
                            ok = false;
                        }
                    },
                }
            }
            if ok && identifiers.is_empty() {
                self.invalid(
                    "\"acme_certificate\": no identifiers found in \"server_name\"".to_owned(),
                    d.span,
                );
                return None;
            }
        }
        let Some(issuer) = self.acme_issuers.get(issuer_name).cloned() else {
            self.invalid(
                format!("issuer \"{issuer_name}\" is missing"),
                d.args[0].span,
            );
            return None;
        };
        if !ok {
            return None;
        }
        let mut unique = Vec::with_capacity(identifiers.len());
        for id in identifiers {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        Some(Arc::new(AcmeCert {
            issuer,
            identifiers: unique,
            key,
            location: self.at(d.span),
        }))
    }
}

impl Lower<'_> {
    /// `ssl_certificate $acme_certificate` in a server with a TLS address and no
    /// `acme_certificate`: refused now (nginx would fail each handshake, the variable having no
    /// value there).
    pub(super) fn check_acme_variables(&mut self, ssl: &SslSpec, listens: &[ListenSpec]) {
        if ssl.acme.is_some() || !listens.iter().any(|l| l.ssl) {
            return;
        }
        if let Some(c) = ssl
            .certificates
            .iter()
            .find(|c| c.cert.as_os_str() == ACME_CERT)
        {
            self.errors.push(ConfigError::new(
                ErrorKind::Invalid(format!(
                    "\"{ACME_CERT}\" has no value: no \"acme_certificate\" is defined for the server"
                )),
                Some(c.cert_at.clone()),
            ));
        }
    }
}

/// `ecdsa:256` (`ecdsa`), `ecdsa:384`, `ecdsa:521`, `rsa:2048` (`rsa`), `rsa:3072`, `rsa:4096`.
fn key_alg(text: &str) -> Option<AcmeKeyAlg> {
    let (alg, bits) = text.split_once(':').unwrap_or((text, ""));
    match (alg, bits) {
        ("ecdsa", "" | "256") => Some(AcmeKeyAlg::Ecdsa(256)),
        ("ecdsa", "384") => Some(AcmeKeyAlg::Ecdsa(384)),
        ("ecdsa", "521") => Some(AcmeKeyAlg::Ecdsa(521)),
        ("rsa", "" | "2048") => Some(AcmeKeyAlg::Rsa(2048)),
        ("rsa", "3072") => Some(AcmeKeyAlg::Rsa(3072)),
        ("rsa", "4096") => Some(AcmeKeyAlg::Rsa(4096)),
        _ => None,
    }
}

/// The identifiers one name stands for: an IP address, a DNS name (lowercase), or both
/// `www.NAME` and `NAME` for nginx's `.NAME`. The error is nginx's words for a bad name; a
/// wildcard (`*.NAME`) is refused as well: it can only be validated with the dns-01 challenge,
/// which imbang does not have.
fn identifier(name: &str) -> Result<Vec<String>, String> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![ip.to_string()]);
    }
    #[derive(PartialEq)]
    enum State {
        Start,
        Label,
        Dot,
        Wildcard,
    }
    let mut state = State::Start;
    for (i, b) in name.bytes().enumerate() {
        state = match b {
            0..=0x20 | 0x7f.. => return Err(format!("invalid character {b:x} at position {i}")),
            b'*' if state == State::Start => State::Wildcard,
            b'.' if state != State::Dot => State::Dot,
            _ if state == State::Wildcard => {
                return Err(format!(
                    "unexpected character '{}' at position {i}",
                    b as char
                ));
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' | b'%' => State::Label,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'+' | b',' | b';' | b'=' => State::Label,
            _ => {
                return Err(format!(
                    "unexpected character '{}' at position {i}",
                    b as char
                ));
            }
        };
    }
    if state != State::Label {
        return Err("does not end with a label".to_owned());
    }
    let name = name.to_ascii_lowercase();
    if name.starts_with('*') {
        return Err(format!(
            "\"{name}\": a wildcard name needs the dns-01 challenge, which imbang does not have"
        ));
    }
    Ok(match name.strip_prefix('.') {
        Some(bare) => vec![format!("www.{bare}"), bare.to_owned()],
        None => vec![name],
    })
}

/// base64url (RFC 4648 §5), padding optional: `None` on a character outside the alphabet.
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.trim_end_matches('=').bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_nginx() {
        assert_eq!(identifier("Example.COM").unwrap(), ["example.com"]);
        assert_eq!(
            identifier(".example.test").unwrap(),
            ["www.example.test", "example.test"]
        );
        assert_eq!(identifier("127.0.0.1").unwrap(), ["127.0.0.1"]);
        assert_eq!(
            identifier("www.example.*").unwrap_err(),
            "unexpected character '*' at position 12"
        );
        assert_eq!(
            identifier("www.example..test").unwrap_err(),
            "unexpected character '.' at position 12"
        );
        assert_eq!(
            identifier("example.test.").unwrap_err(),
            "does not end with a label"
        );
        assert!(identifier("*.example.test").unwrap_err().contains("dns-01"));
    }

    #[test]
    fn base64url_decodes() {
        assert_eq!(base64url("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64url("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64url("a+b").is_none());
    }
}
