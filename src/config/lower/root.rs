//! `root`: imbang serves no files, but nginx's `$document_root`, `$realpath_root` and
//! `$request_filename` are made from it, so its value is kept as nginx keeps it.

use super::{Directive, Lower};

impl Lower<'_> {
    /// `root path`: one trailing `/` dropped, a relative path put under the prefix (unless it
    /// starts with a variable), as `ngx_http_core_root` does. Variables in it stay text.
    pub(super) fn root(&mut self, d: &Directive) -> Option<String> {
        let arg = &d.args[0];
        let text = arg.value.as_str();
        for var in ["document_root", "realpath_root"] {
            if text.contains(&format!("${var}")) || text.contains(&format!("${{{var}}}")) {
                self.invalid(
                    format!("the ${var} variable cannot be used in the \"root\" directive"),
                    arg.span,
                );
                return None;
            }
        }
        let text = text.strip_suffix('/').unwrap_or(text);
        if text.starts_with('$') {
            return Some(text.to_owned());
        }
        Some(self.path(text).to_string_lossy().into_owned())
    }
}
