//! `sub_filter`, `sub_filter_types`, `sub_filter_once`, `sub_filter_last_modified`
//! (ngx_http_sub_filter_module): strings replaced in response bodies (src/proxy/sub_filter.rs).
//! The flags are read with the other single-valued settings in lower.rs.

use std::sync::Arc;

use super::super::ast::Directive;
use super::super::model::SubFilter;
use super::{Frame, Lower};

/// nginx's limit on the search strings of one level.
const MAX_PAIRS: usize = 255;

impl Frame {
    /// The `sub_filter` in force, `None` when no level has a `sub_filter` line.
    pub(super) fn sub_filter(&self) -> Option<Arc<SubFilter>> {
        let pairs = self.sub_filters.clone()?;
        Some(Arc::new(SubFilter {
            pairs,
            once: self.sub_filter_once.unwrap_or(true),
            types: self
                .sub_filter_types
                .clone()
                .unwrap_or_else(|| vec!["text/html".to_owned()]),
            last_modified: self.sub_filter_last_modified.unwrap_or(false),
        }))
    }
}

impl Lower<'_> {
    pub(super) fn sub_filter(&mut self, d: &Directive, f: &mut Frame) {
        if d.name == "sub_filter_types" {
            // nginx: text/html is always among them; more lines add more; `*` is any.
            let types = f
                .sub_filter_types
                .get_or_insert_with(|| vec!["text/html".to_owned()]);
            for arg in &d.args {
                if types.first().is_some_and(|t| t == "*") {
                    break;
                }
                let t = arg.value.to_ascii_lowercase();
                if t == "*" {
                    *types = vec![t];
                } else if types.contains(&t) {
                    self.warn(format!("duplicate MIME type \"{t}\""), arg.span);
                } else {
                    types.push(t);
                }
            }
            return;
        }
        let (search, replace) = (&d.args[0], &d.args[1]);
        if search.value.is_empty() {
            self.invalid("empty search pattern".to_owned(), search.span);
            return;
        }
        let pairs = f.sub_filters.get_or_insert_with(Vec::new);
        if pairs.len() == MAX_PAIRS {
            self.invalid("number of search patterns exceeds 255".to_owned(), d.span);
            return;
        }
        pairs.push((search.value.clone(), replace.value.clone()));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{errors, ok};

    fn location_conf(text: &str) -> Option<std::sync::Arc<crate::config::model::SubFilter>> {
        let config = ok(text);
        let server = &config.http.as_ref().unwrap().servers[0];
        server.locations[0].conf.sub_filter.clone()
    }

    #[test]
    fn lines_are_inherited_as_a_whole_and_companions_each_on_their_own() {
        let sub = location_conf(
            "http { sub_filter a b; sub_filter_once off; sub_filter_types text/css TEXT/CSS;\n\
             server { listen 80; location / { sub_filter C d; sub_filter_last_modified on; } } }\n",
        )
        .expect("a sub_filter");
        assert_eq!(sub.pairs, vec![("C".to_owned(), "d".to_owned())]);
        assert!(!sub.once);
        assert!(sub.last_modified);
        assert_eq!(sub.types, vec!["text/html", "text/css"]);
        let sub = location_conf("http { sub_filter a b; server { listen 80; location / { } } }\n")
            .expect("inherited");
        assert_eq!(sub.pairs, vec![("a".to_owned(), "b".to_owned())]);
        assert!(sub.once);
        assert!(!sub.last_modified);
        assert_eq!(sub.types, vec!["text/html"]);
        assert!(location_conf("http { server { listen 80; location / { } } }\n").is_none());
    }

    #[test]
    fn an_empty_search_string_is_refused_as_nginx_does() {
        let err =
            errors("http { server { listen 80; location / { sub_filter '' b; } } }\n").join("\n");
        assert!(err.contains("empty search pattern"), "{err}");
    }
}
