//! `proxy_cookie_domain`, `proxy_cookie_path`, `proxy_cookie_flags` (ngx_http_proxy_module):
//! rules for rewriting the peer's `Set-Cookie` headers, applied by `proxy::cookie`.
//!
//! As nginx: `off` or rules per level, a level with none inheriting its parent's; `off` beside
//! rules at one level is "is duplicate"; `~` starts a regex (always without regard to case for
//! domains and cookie names, `~*` for paths); a leading `.` of a domain and its replacement is
//! dropped. Unlike nginx, values with variables other than a regex's `$1`..`$9` are refused (not
//! supported yet), and so are unknown flags (nginx ignores them when the request comes).

use std::sync::Arc;

use super::super::ast::{Arg, Directive};
use super::super::error::ErrorKind;
use super::super::model::{CookieFlag, CookieFlags, CookieMatch, CookieRewrite, CookieRule};
use super::{Frame, Lower};

impl Frame {
    /// The rules in force, `None` when there are none (the common case costs nothing).
    pub(super) fn cookies(&self) -> Option<Arc<CookieRewrite>> {
        let rewrite = CookieRewrite {
            domains: self.cookie_domains.clone().unwrap_or_default(),
            paths: self.cookie_paths.clone().unwrap_or_default(),
            flags: self.cookie_flags.clone().unwrap_or_default(),
        };
        let none =
            rewrite.domains.is_empty() && rewrite.paths.is_empty() && rewrite.flags.is_empty();
        (!none).then(|| Arc::new(rewrite))
    }
}

impl Lower<'_> {
    pub(super) fn proxy_cookie(&mut self, d: &Directive, f: &mut Frame) {
        let args = &d.args;
        let off = args.len() == 1 && args[0].value == "off";
        if args.len() == 1 && !off && d.name != "proxy_cookie_flags" {
            self.invalid(
                format!("invalid parameter \"{}\"", args[0].value),
                args[0].span,
            );
            return;
        }
        // `Some(empty)` is this level's `off`.
        let level_is = |rules: Option<usize>| rules.map(|n| n == 0);
        let existing = match d.name.as_str() {
            "proxy_cookie_domain" => level_is(f.cookie_domains.as_ref().map(Vec::len)),
            "proxy_cookie_path" => level_is(f.cookie_paths.as_ref().map(Vec::len)),
            _ => level_is(f.cookie_flags.as_ref().map(Vec::len)),
        };
        // nginx: `off` twice, `off` after rules, or rules after `off` at one level.
        if matches!((off, existing), (true, Some(_)) | (false, Some(true))) {
            self.error(ErrorKind::Duplicate(d.name.clone()), d.span);
            return;
        }
        match d.name.as_str() {
            "proxy_cookie_domain" => {
                f.cookie_domains.get_or_insert_with(Vec::new);
                if off {
                    return;
                }
                let Some(rule) = self.cookie_rule(d, true) else {
                    return;
                };
                f.cookie_domains.get_or_insert_with(Vec::new).push(rule);
            }
            "proxy_cookie_path" => {
                f.cookie_paths.get_or_insert_with(Vec::new);
                if off {
                    return;
                }
                let Some(rule) = self.cookie_rule(d, false) else {
                    return;
                };
                f.cookie_paths.get_or_insert_with(Vec::new).push(rule);
            }
            _ => {
                f.cookie_flags.get_or_insert_with(Vec::new);
                if off {
                    return;
                }
                let Some(cookie) = self.cookie_match(&args[0], true, false) else {
                    return;
                };
                let mut flags = Vec::new();
                for arg in &args[1..] {
                    if self.has_variables(arg, false) {
                        return;
                    }
                    match CookieFlag::parse(&arg.value) {
                        Some(flag) => flags.push(flag),
                        None => {
                            self.invalid(
                                format!(
                                    "invalid flag \"{}\" in \"{}\" directive",
                                    arg.value, d.name
                                ),
                                arg.span,
                            );
                            return;
                        }
                    }
                }
                f.cookie_flags
                    .get_or_insert_with(Vec::new)
                    .push(CookieFlags { cookie, flags });
            }
        }
    }

    /// `pattern replacement` of a domain or path rule.
    fn cookie_rule(&mut self, d: &Directive, domain: bool) -> Option<CookieRule> {
        let (pattern, replacement) = (&d.args[0], &d.args[1]);
        let pattern = self.cookie_match(pattern, domain, domain)?;
        let regex = matches!(pattern, CookieMatch::Regex(_));
        if self.has_variables(replacement, regex) {
            return None;
        }
        let mut replacement = replacement.value.clone();
        if domain && !regex && replacement.starts_with('.') {
            replacement.remove(0);
        }
        Some(CookieRule {
            pattern,
            replacement,
        })
    }

    /// A text or `~` regex pattern. `caseless`: `~` means without regard to case (domains and
    /// cookie names); otherwise `~*` does. `domain`: a leading `.` of text is dropped.
    fn cookie_match(&mut self, arg: &Arg, caseless: bool, domain: bool) -> Option<CookieMatch> {
        let Some(re) = arg.value.strip_prefix('~') else {
            if self.has_variables(arg, false) {
                return None;
            }
            let text = match arg.value.strip_prefix('.') {
                Some(rest) if domain => rest,
                _ => arg.value.as_str(),
            };
            return Some(CookieMatch::Text(text.to_owned()));
        };
        let (re, caseless) = match re.strip_prefix('*') {
            Some(rest) if !caseless => (rest, true),
            _ => (re, caseless),
        };
        let pattern = if caseless {
            format!("(?i){re}")
        } else {
            re.to_owned()
        };
        self.regex(&pattern, re, arg.span, regex::Regex::new)
            .map(CookieMatch::Regex)
    }

    /// True (and an error) when `arg` uses variables: imbang's cookie rules take text and (with
    /// `captures`) a regex's `$1`..`$9` only.
    fn has_variables(&mut self, arg: &Arg, captures: bool) -> bool {
        let bytes = arg.value.as_bytes();
        let variable = bytes.iter().enumerate().any(|(i, &b)| {
            b == b'$'
                && bytes
                    .get(i + 1)
                    .is_some_and(|&n| !(captures && n.is_ascii_digit()))
        });
        if variable {
            self.invalid(
                format!(
                    "variables in \"{}\" are not supported by imbang yet",
                    arg.value
                ),
                arg.span,
            );
        }
        variable
    }
}
