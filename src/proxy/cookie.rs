//! nginx's `proxy_cookie_domain`, `proxy_cookie_path` and `proxy_cookie_flags` (its
//! `ngx_http_proxy_rewrite_cookie`): the peer's `Set-Cookie` headers rewritten on their way to
//! the client, so an application behind a prefix or another host name sets cookies that the
//! browser sends back.
//!
//! A header is split as nginx splits it: `;`-separated attributes, spaces around names and
//! values dropped; the first is the cookie's `name=value` (a header without `=` there is left
//! alone). The first matching domain rule rewrites `Domain`, the first matching path rule
//! rewrites `Path`, the first rule whose cookie name matches sets or removes flags. A header no
//! rule changes is passed byte for byte; a changed one is written back as `a=b; c; d=e`.

use http::header::HeaderValue;

use crate::http1::RawFields;

use crate::config::model::{CookieFlag, CookieFlags, CookieMatch, CookieRewrite, CookieRule};

/// Rewrites every `Set-Cookie` of `headers` by `rules` (in place, order kept).
pub fn rewrite(fields: &mut RawFields, rules: &CookieRewrite) {
    fields.rewrite_each(b"set-cookie", |value| {
        let rewritten = rewrite_one(std::str::from_utf8(value).ok()?, rules)?;
        HeaderValue::from_str(&rewritten).ok()?;
        Some(rewritten.into_bytes())
    });
}

/// One attribute: name and, after `=`, a value.
struct Attr {
    name: String,
    value: Option<String>,
    /// Removed by a `no…` flag.
    gone: bool,
}

/// The header rewritten, or `None` when no rule changes it.
pub fn rewrite_one(header: &str, rules: &CookieRewrite) -> Option<String> {
    let mut attrs: Vec<Attr> = header
        .split(';')
        .map(|part| {
            let part = part.trim_start_matches(' ');
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n, Some(v.trim_start_matches(' ').trim_end_matches(' '))),
                None => (part, None),
            };
            Attr {
                name: name.trim_end_matches(' ').to_owned(),
                value: value.map(str::to_owned),
                gone: false,
            }
        })
        .collect();
    attrs[0].value.as_ref()?;
    let mut changed = false;
    for attr in &mut attrs[1..] {
        let Some(value) = &attr.value else { continue };
        let new = if attr.name.eq_ignore_ascii_case("domain") {
            first_match(value, &rules.domains, true)
        } else if attr.name.eq_ignore_ascii_case("path") {
            first_match(value, &rules.paths, false)
        } else {
            None
        };
        if let Some(new) = new {
            attr.value = Some(new);
            changed = true;
        }
    }
    if let Some(rule) = rules
        .flags
        .iter()
        .find(|r| name_matches(&r.cookie, &attrs[0].name))
    {
        // nginx writes the header anew whenever a rule with flags matched.
        changed |= apply_flags(&mut attrs, rule) | !rule.flags.is_empty();
    }
    if !changed {
        return None;
    }
    let mut out = String::with_capacity(header.len() + 16);
    for attr in attrs.iter().filter(|a| !a.gone) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&attr.name);
        if let Some(v) = &attr.value {
            out.push('=');
            out.push_str(v);
        }
    }
    Some(out)
}

/// The value the first matching rule makes of `value`.
fn first_match(value: &str, rules: &[CookieRule], domain: bool) -> Option<String> {
    rules.iter().find_map(|rule| match &rule.pattern {
        CookieMatch::Regex(re) => re
            .captures(value)
            .map(|caps| expand(&rule.replacement, &caps)),
        CookieMatch::Text(text) if domain => {
            // A leading dot stays; the rest must be the domain, in any case.
            let (dot, rest) = match value.strip_prefix('.') {
                Some(rest) => (".", rest),
                None => ("", value),
            };
            rest.eq_ignore_ascii_case(text)
                .then(|| format!("{dot}{}", rule.replacement))
        }
        CookieMatch::Text(text) => value
            .strip_prefix(text.as_str())
            .map(|rest| format!("{}{rest}", rule.replacement)),
    })
}

/// `$1`..`$9` of `replacement` replaced by the captures (`$0`: the whole match).
fn expand(replacement: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::with_capacity(replacement.len());
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().and_then(|d| d.to_digit(10))) {
            ('$', Some(n)) => {
                chars.next();
                out.push_str(caps.get(n as usize).map_or("", |m| m.as_str()));
            }
            _ => out.push(c),
        }
    }
    out
}

fn name_matches(pattern: &CookieMatch, name: &str) -> bool {
    match pattern {
        CookieMatch::Text(text) => text.eq_ignore_ascii_case(name),
        CookieMatch::Regex(re) => re.is_match(name),
    }
}

/// nginx's `ngx_http_proxy_edit_cookie_flags`: existing `Secure`/`HttpOnly`/`SameSite`
/// attributes are kept, removed or corrected in place; missing ones are added at the end in the
/// order Secure, HttpOnly, SameSite. True when anything changed.
fn apply_flags(attrs: &mut Vec<Attr>, rule: &CookieFlags) -> bool {
    use CookieFlag::*;
    let has = |f: CookieFlag| rule.flags.contains(&f);
    let (mut add_secure, mut add_httponly) = (has(Secure), has(HttpOnly));
    // The first SameSite flag given wins, in nginx's order of checking.
    let mut samesite = [SameSiteStrict, SameSiteLax, SameSiteNone]
        .into_iter()
        .find(|f| has(*f));
    let mut changed = false;
    for attr in attrs.iter_mut().skip(1) {
        if attr.name.eq_ignore_ascii_case("secure") {
            if add_secure {
                add_secure = false;
            } else if has(NoSecure) {
                attr.gone = true;
                changed = true;
            }
        } else if attr.name.eq_ignore_ascii_case("httponly") {
            if add_httponly {
                add_httponly = false;
            } else if has(NoHttpOnly) {
                attr.gone = true;
                changed = true;
            }
        } else if attr.name.eq_ignore_ascii_case("samesite") {
            if let Some(want) = samesite.take() {
                let want = samesite_value(want);
                if !attr
                    .value
                    .as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case(want))
                {
                    attr.name = "SameSite".to_owned();
                    attr.value = Some(want.to_owned());
                    changed = true;
                }
            } else if has(NoSameSite) {
                attr.gone = true;
                changed = true;
            }
        }
    }
    let mut push = |name: &str, value: Option<&str>| {
        attrs.push(Attr {
            name: name.to_owned(),
            value: value.map(str::to_owned),
            gone: false,
        });
        changed = true;
    };
    if add_secure {
        push("Secure", None);
    }
    if add_httponly {
        push("HttpOnly", None);
    }
    if let Some(want) = samesite {
        push("SameSite", Some(samesite_value(want)));
    }
    changed
}

fn samesite_value(flag: CookieFlag) -> &'static str {
    match flag {
        CookieFlag::SameSiteStrict => "Strict",
        CookieFlag::SameSiteLax => "Lax",
        _ => "None",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(domains: &[(&str, &str)], paths: &[(&str, &str)]) -> CookieRewrite {
        let rule = |(p, r): &(&str, &str)| CookieRule {
            pattern: match p.strip_prefix('~') {
                Some(re) => CookieMatch::Regex(regex::Regex::new(re).unwrap()),
                None => CookieMatch::Text((*p).to_owned()),
            },
            replacement: (*r).to_owned(),
        };
        CookieRewrite {
            domains: domains.iter().map(rule).collect(),
            paths: paths.iter().map(rule).collect(),
            flags: Vec::new(),
        }
    }

    #[test]
    fn domain_and_path_rewrite_as_nginx() {
        let r = rules(
            &[("localhost", "example.org")],
            &[("/two/", "/one/"), ("~^/app(/.*)?$", "/x$1")],
        );
        let cases = [
            // Whole domain, any case, leading dot kept.
            (
                "a=1; Domain=.LocalHost; Path=/two/x",
                Some("a=1; Domain=.example.org; Path=/one/x"),
            ),
            ("a=1;domain=localhost", Some("a=1; domain=example.org")),
            ("a=1; Domain=sub.localhost", None),
            // A regex replaces the whole value, with its captures.
            ("s=2; Path=/app/y", Some("s=2; Path=/x/y")),
            ("s=2; Path=/app", Some("s=2; Path=/x")),
            // No `=` in the first attribute: left alone.
            ("broken; Path=/two/", None),
            ("a=1; Max-Age=5", None),
        ];
        for (header, want) in cases {
            assert_eq!(rewrite_one(header, &r).as_deref(), want, "{header}");
        }
    }

    #[test]
    fn flags_set_fix_and_remove_as_nginx() {
        let flags = |cookie: &str, flags: &[CookieFlag]| CookieRewrite {
            flags: vec![CookieFlags {
                cookie: CookieMatch::Text(cookie.to_owned()),
                flags: flags.to_vec(),
            }],
            ..CookieRewrite::default()
        };
        use CookieFlag::*;
        let r = flags("sid", &[Secure, HttpOnly, SameSiteLax]);
        assert_eq!(
            rewrite_one("SID=1; Path=/", &r).as_deref(),
            Some("SID=1; Path=/; Secure; HttpOnly; SameSite=Lax")
        );
        assert_eq!(
            rewrite_one("sid=1; secure; SameSite=strict", &r).as_deref(),
            Some("sid=1; secure; SameSite=Lax; HttpOnly")
        );
        assert_eq!(rewrite_one("other=1", &r), None);
        let r = flags("sid", &[NoSecure, NoHttpOnly, NoSameSite]);
        assert_eq!(
            rewrite_one("sid=1; Secure; HttpOnly; SameSite=None; Path=/", &r).as_deref(),
            Some("sid=1; Path=/")
        );
        assert_eq!(
            rewrite_one("sid=1;Path=/", &r).as_deref(),
            Some("sid=1; Path=/")
        );
    }

    #[test]
    fn headers_keep_their_order_and_spelling() {
        let r = rules(&[], &[("/two/", "/one/")]);
        let head = bytes::Bytes::from_static(
            b"Set-Cookie: a=1; Path=/two/\r\nX-Other: 1\r\nset-cookie: b=2; Path=/\r\nSET-COOKIE: c=3; Path=/two/c\r\n\r\n",
        );
        let mut fields = RawFields::parse(head).unwrap();
        rewrite(&mut fields, &r);
        let got: Vec<(&[u8], &[u8])> = fields.iter().collect();
        assert_eq!(
            got,
            [
                (&b"Set-Cookie"[..], &b"a=1; Path=/one/"[..]),
                (b"X-Other", b"1"),
                (b"set-cookie", b"b=2; Path=/"),
                (b"SET-COOKIE", b"c=3; Path=/one/c"),
            ]
        );
    }
}
