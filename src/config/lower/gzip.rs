//! `gzip`, `gzip_types`, `gzip_comp_level`, `gzip_min_length` (ngx_http_gzip_filter_module)
//! and `gzip_vary`, `gzip_proxied`, `gzip_disable`, `gzip_http_version` (ngx_http_core_module):
//! read into a [`GzipFrame`] per level, each inherited on its own as nginx merges them, and
//! turned into the location's [`Gzip`] (the filter is src/proxy/gzip.rs). `gzip_buffers` is in
//! the directive table as accepted without effect.

use std::sync::Arc;

use super::super::ast::Directive;
use super::super::directives::Spec;
use super::super::model::{Gzip, gzip_proxied};
use super::super::values;
use super::{Lower, Seen};

/// The gzip values set at one level (`None`: not set here).
#[derive(Clone, Debug, Default)]
pub(super) struct GzipFrame {
    enable: Option<bool>,
    /// `Some(empty)`: `*`.
    types: Option<Vec<String>>,
    comp_level: Option<u32>,
    min_length: Option<u64>,
    vary: Option<bool>,
    proxied: Option<u16>,
    disable: Option<(Vec<regex::Regex>, bool)>,
    http_1_0: Option<bool>,
}

/// Whether `name` is read by [`Lower::gzip`].
pub(super) fn is_gzip(name: &str) -> bool {
    matches!(
        name,
        "gzip"
            | "gzip_types"
            | "gzip_comp_level"
            | "gzip_min_length"
            | "gzip_vary"
            | "gzip_proxied"
            | "gzip_disable"
            | "gzip_http_version"
    )
}

impl GzipFrame {
    /// This level's values where set, the parent's otherwise.
    pub(super) fn inherit(&self, parent: &GzipFrame) -> GzipFrame {
        macro_rules! inherit {
            ($($field:ident),* $(,)?) => {
                GzipFrame { $($field: self.$field.clone().or_else(|| parent.$field.clone()),)* }
            };
        }
        inherit!(
            enable, types, comp_level, min_length, vary, proxied, disable, http_1_0
        )
    }

    /// The settings in force, with nginx's defaults for what no level set.
    pub(super) fn conf(&self) -> Arc<Gzip> {
        let d = Gzip::default();
        let (disable, disable_msie6) = self.disable.clone().unwrap_or_default();
        Arc::new(Gzip {
            enable: self.enable.unwrap_or(d.enable),
            types: self.types.clone().unwrap_or(d.types),
            comp_level: self.comp_level.unwrap_or(d.comp_level),
            min_length: self.min_length.unwrap_or(d.min_length),
            vary: self.vary.unwrap_or(d.vary),
            proxied: self.proxied.unwrap_or(d.proxied),
            disable,
            disable_msie6,
            http_1_0: self.http_1_0.unwrap_or(d.http_1_0),
        })
    }
}

impl Lower<'_> {
    /// One gzip directive of a level, with nginx's checks and messages.
    pub(super) fn gzip(
        &mut self,
        d: &Directive,
        spec: &'static Spec,
        f: &mut GzipFrame,
        seen: &mut Seen,
    ) {
        let args = &d.args;
        match d.name.as_str() {
            "gzip_types" => {
                // nginx: text/html is always among them; more lines add more; `*` is any.
                let types = f.types.get_or_insert_with(|| vec!["text/html".to_owned()]);
                for arg in args {
                    if types.is_empty() {
                        break;
                    }
                    let t = arg.value.to_ascii_lowercase();
                    if t == "*" {
                        types.clear();
                    } else if types.contains(&t) {
                        self.warn(format!("duplicate MIME type \"{t}\""), arg.span);
                    } else {
                        types.push(t);
                    }
                }
            }
            "gzip_proxied" => {
                // nginx's bitmask: lines add up; a value twice is a warning.
                let bits = f.proxied.get_or_insert(0);
                for arg in args {
                    let found = gzip_proxied::NAMES
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(&arg.value));
                    match found {
                        Some((_, bit)) if *bits & bit != 0 => {
                            self.warn(format!("duplicate value \"{}\"", arg.value), arg.span);
                        }
                        Some((_, bit)) => *bits |= bit,
                        None => {
                            self.invalid(format!("invalid value \"{}\"", arg.value), arg.span);
                            return;
                        }
                    }
                }
            }
            "gzip_disable" => {
                let (res, msie6) = f.disable.get_or_insert_with(Default::default);
                for arg in args {
                    if arg.value == "msie6" {
                        *msie6 = true;
                        continue;
                    }
                    let pattern = format!("(?i){}", arg.value);
                    if let Some(re) = self.regex(&pattern, &arg.value, arg.span, regex::Regex::new)
                    {
                        res.push(re);
                    }
                }
            }
            _ if !self.once(seen, spec, d) => {}
            "gzip" => f.enable = values::flag(&args[0].value),
            "gzip_vary" => f.vary = values::flag(&args[0].value),
            "gzip_comp_level" => match values::number(&args[0].value) {
                None => self.invalid("invalid number".to_owned(), args[0].span),
                Some(n @ 1..=9) => f.comp_level = Some(n as u32),
                Some(_) => self.invalid("value must be between 1 and 9".to_owned(), args[0].span),
            },
            "gzip_min_length" => match values::size(&args[0].value) {
                Some(n) => f.min_length = Some(n),
                None => self.invalid("invalid value".to_owned(), args[0].span),
            },
            "gzip_http_version" => match args[0].value.as_str() {
                "1.0" => f.http_1_0 = Some(true),
                "1.1" => f.http_1_0 = Some(false),
                _ => self.invalid(format!("invalid value \"{}\"", args[0].value), args[0].span),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::model::{Gzip, gzip_proxied};
    use crate::config::{LoadOptions, parse_str};

    fn load(text: &str) -> Result<crate::config::Config, crate::config::ConfigErrors> {
        let opts = LoadOptions {
            prefix: "/prefix/".into(),
            default_listen_port: 8000,
        };
        parse_str("/etc/imbang/t.conf", text, &opts)
    }

    fn location_gzip(text: &str) -> std::sync::Arc<Gzip> {
        let config = load(text).expect("config loads");
        let server = &config.http.as_ref().unwrap().servers[0];
        server.locations[0].conf.gzip.clone()
    }

    fn error(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_nginx_s() {
        let g = location_gzip("http { server { listen 80; location / { } } }\n");
        assert!(!g.enable && !g.vary && !g.http_1_0 && !g.disable_msie6);
        assert_eq!(g.types, ["text/html"]);
        assert_eq!((g.comp_level, g.min_length), (1, 20));
        assert_eq!(g.proxied, gzip_proxied::OFF);
    }

    #[test]
    fn each_directive_is_inherited_on_its_own() {
        let g = location_gzip(
            "http { gzip on; gzip_types application/json TEXT/CSS; gzip_comp_level 5;\n\
             gzip_proxied expired no-cache; gzip_proxied auth; gzip_disable msie6 \"curl/7\";\n\
             server { listen 80; gzip_min_length 1k; gzip_vary on;\n\
             location / { gzip_http_version 1.0; } } }\n",
        );
        assert!(g.enable && g.vary && g.http_1_0 && g.disable_msie6);
        assert_eq!(g.types, ["text/html", "application/json", "text/css"]);
        assert_eq!((g.comp_level, g.min_length), (5, 1024));
        assert_eq!(
            g.proxied,
            gzip_proxied::EXPIRED | gzip_proxied::NO_CACHE | gzip_proxied::AUTH
        );
        assert_eq!(g.disable.len(), 1);
        assert!(g.disable[0].is_match("CURL/7.88"), "caseless as nginx");
        let g = location_gzip(
            "http { gzip on; server { listen 80; location / { gzip off; gzip_types *; } } }\n",
        );
        assert!(!g.enable);
        assert!(g.types.is_empty(), "`*`: any type");
    }

    #[test]
    fn bad_values_are_refused_with_nginx_s_words() {
        let at = |s: &str| format!("http {{ server {{ listen 80; location / {{ {s} }} }} }}\n");
        let cases = [
            ("gzip_comp_level 10;", "value must be between 1 and 9"),
            ("gzip_comp_level x;", "invalid number"),
            ("gzip_proxied any sometimes;", "invalid value \"sometimes\""),
            ("gzip_http_version 2.0;", "invalid value \"2.0\""),
            ("gzip_min_length 1x;", "invalid value"),
            ("gzip_disable \"(\";", "invalid regular expression"),
            ("gzip on; gzip off;", "\"gzip\" directive is duplicate"),
            ("gzip maybe;", "gzip"),
        ];
        for (text, want) in cases {
            let err = error(&at(text));
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("/etc/imbang/t.conf:1:"), "{text}: {err}");
        }
    }
}
