//! Directives that imbang implements for one value only, the one that is its fixed behaviour
//! (usually nginx's default): that value acts, any other is refused as "not supported yet", so a
//! configuration that relies on the other value never runs with a different meaning.

use super::super::ast::Directive;

/// The values imbang honours, and what it does instead of the others.
const ONLY: &[(&str, &str, &str)] = &[
    (
        "merge_slashes",
        "on",
        "slashes in a URI are always merged for location matching",
    ),
    (
        "recursive_error_pages",
        "off",
        "the target of an error_page never applies error_page again",
    ),
    (
        "override_charset",
        "off",
        "imbang does not recode between charsets",
    ),
];

/// The error for `d` when it asks for a value imbang does not implement.
pub(super) fn unsupported_value(d: &Directive) -> Option<String> {
    let (_, value, instead) = ONLY.iter().find(|(name, _, _)| *name == d.name)?;
    if d.args.len() == 1 && d.args[0].value == *value {
        return None;
    }
    let given: Vec<&str> = d.args.iter().map(|a| a.value.as_str()).collect();
    Some(format!(
        "\"{} {}\" is not supported by imbang yet (only \"{} {value}\": {instead})",
        d.name,
        given.join(" "),
        d.name
    ))
}

/// Directive names [`unsupported_value`] limits, with the one value that acts (for the docs).
pub fn only_value(name: &str) -> Option<(&'static str, &'static str)> {
    ONLY.iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, value, instead)| (*value, *instead))
}
