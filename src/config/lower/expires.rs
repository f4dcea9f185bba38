//! `expires` (ngx_http_headers_module): `off`, `epoch`, `max`, or a time from the response
//! (`1h`, `30d`, `-1`: negative is in the past). `modified time` (from `Last-Modified`), `@time`
//! (a time of day) and values with variables are refused as not supported yet.

use super::super::ast::Directive;
use super::super::error::ErrorKind;
use super::super::model::Expires;
use super::super::values;
use super::{Frame, Lower};

impl Lower<'_> {
    pub(super) fn expires(&mut self, d: &Directive, f: &mut Frame) {
        if f.expires.is_some() {
            self.error(ErrorKind::Duplicate(d.name.clone()), d.span);
            return;
        }
        let arg = &d.args[0];
        let not_yet = |what: &str| format!("\"expires\" {what} is not supported by imbang yet");
        if d.args.len() == 2 {
            if arg.value != "modified" {
                self.invalid("\"expires\" directive invalid value".to_owned(), arg.span);
            } else {
                self.invalid(not_yet("modified"), arg.span);
            }
            return;
        }
        let value = arg.value.as_str();
        let expires = match value {
            "off" => None,
            "epoch" => Some(Expires::Epoch),
            "max" => Some(Expires::Max),
            v if v.contains('$') => {
                self.invalid(not_yet("with variables"), arg.span);
                return;
            }
            v if v.starts_with('@') => {
                self.invalid(not_yet("at a time of day (@)"), arg.span);
                return;
            }
            v => {
                let (negative, time) = match v.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, v),
                };
                match values::duration(time) {
                    Some(t) => {
                        let secs = t.as_secs() as i64;
                        Some(Expires::Access(if negative { -secs } else { secs }))
                    }
                    None => {
                        self.invalid("\"expires\" directive invalid value".to_owned(), arg.span);
                        return;
                    }
                }
            }
        };
        f.expires = Some(expires);
    }
}
