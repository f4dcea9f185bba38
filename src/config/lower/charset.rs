//! `charset`, `charset_types`, `source_charset` (ngx_http_charset_filter_module): the charset
//! named in `Content-Type` of responses that have none. Recoding between charsets (with
//! `charset_map` and `override_charset on`) is refused: imbang does not recode.

use std::sync::Arc;

use super::super::ast::Directive;
use super::super::error::ErrorKind;
use super::super::model::{Charset, DEFAULT_CHARSET_TYPES};
use super::{Frame, Lower};

impl Frame {
    /// The `charset` in force, `None` with `charset off` (nginx's default).
    pub(super) fn charset(&self) -> Option<Arc<Charset>> {
        let name = self.charset.clone().flatten()?;
        let types = self.charset_types.clone().unwrap_or_else(|| {
            DEFAULT_CHARSET_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect()
        });
        Some(Arc::new(Charset {
            name,
            types,
            source: self.source_charset.clone().flatten().map(|(name, _)| name),
        }))
    }
}

impl Lower<'_> {
    pub(super) fn charset(&mut self, d: &Directive, f: &mut Frame) {
        let value = &d.args[0];
        if value.value.contains('$') {
            self.invalid(
                format!(
                    "variables in \"{}\" are not supported by imbang yet",
                    d.name
                ),
                value.span,
            );
            return;
        }
        let slot_set = match d.name.as_str() {
            "charset" => f.charset.is_some(),
            "source_charset" => f.source_charset.is_some(),
            _ => {
                // nginx: text/html is always among them; more lines add more; `*` is any.
                let types = f
                    .charset_types
                    .get_or_insert_with(|| vec!["text/html".to_owned()]);
                for arg in &d.args {
                    if types.first().is_some_and(|t| t == "*") {
                        break;
                    }
                    let t = arg.value.to_ascii_lowercase();
                    if t == "*" {
                        *types = vec![t];
                    } else if !types.contains(&t) {
                        types.push(t);
                    }
                }
                return;
            }
        };
        if slot_set {
            self.error(ErrorKind::Duplicate(d.name.clone()), d.span);
            return;
        }
        let on = value.value != "off";
        match d.name.as_str() {
            "charset" => f.charset = Some(on.then(|| value.value.clone())),
            _ => f.source_charset = Some(on.then(|| (value.value.clone(), d.span))),
        }
    }

    /// nginx refuses a `source_charset` other than the `charset` in force without a
    /// `charset_map` between them; imbang has none (it does not recode).
    pub(super) fn check_charset(&mut self, frame: &Frame) {
        let (Some(Some(dst)), Some(Some((src, span)))) = (&frame.charset, &frame.source_charset)
        else {
            return;
        };
        if src.eq_ignore_ascii_case(dst) {
            return;
        }
        let message = format!("no \"charset_map\" between the charsets \"{src}\" and \"{dst}\"");
        let location = self.at(*span);
        // Reported once, however many locations inherit the pair.
        let seen = self
            .errors
            .iter()
            .any(|e| e.location.as_deref() == Some(&location) && e.kind.to_string() == message);
        if !seen {
            self.invalid(message, *span);
        }
    }
}
