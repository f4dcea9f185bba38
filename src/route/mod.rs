//! Where does this request go? Pure, immutable tables built once per config snapshot.
//!
//! Nothing here knows about tokio, hyper or the runtime types: the tables are generic over the
//! payload `T` a match hands back (a server's settings, a location's settings, an index).
//!
//! | question | use | nginx counterpart |
//! |---|---|---|
//! | is this `Host` valid, and what does `server_name` matching see? | [`normalize_host`] | `ngx_http_validate_host` |
//! | which `server {}` of this listen address? | [`VirtualHosts::find`] | `ngx_http_find_virtual_server` |
//! | which path do locations see (`$uri`)? | [`normalize_path`] | `ngx_http_parse_complex_uri` |
//! | which `location {}`? | [`LocationTree::find`] | `ngx_http_core_find_location` |
//! | which `@name` location (`error_page`, `try_files`)? | [`LocationTree::named`] | `ngx_http_named_location` |
//!
//! Per request, in this order:
//!
//! 1. `normalize_host(host header or authority)`; `None` → answer 400.
//! 2. `virtual_hosts.find(&host)` gives the server (never fails: there is always a default).
//! 3. `normalize_path(path without "?query")`; `Err` → answer 400.
//! 4. `server.locations.find(&path)`; `None` means no location matched, so the server level's
//!    own settings apply (as in nginx).
//!
//! Tables are built with `build`, which fails with a [`RouteError`] worded as nginx words the
//! same problem. Both `find`s are allocation-free.
//!
//! ## Regular expressions
//!
//! nginx uses PCRE without UTF mode; imbang uses Rust's `regex` crate with Unicode disabled
//! and matches bytes, which gives the same meaning to `.`, `\d`, `\w`, `\s`, `\b` (ASCII) and to
//! case-insensitive matching (ASCII only), in time linear in the input. A pattern that engine
//! cannot express — look-around (`(?=`, `(?!`, `(?<=`, `(?<!`), backreferences (`\1`), atomic
//! groups — runs on `fancy-regex`, a backtracking engine as PCRE is ([`Regex`], `pcre.rs`).
//! Rejected at build time with a [`RouteError`]: `\Q…\E`, `\Z`, `\G`, recursion, conditionals,
//! and a `{` that is not a counted repetition (PCRE takes it literally). Accepted with a
//! different meaning: `$` matches only at the very end (PCRE also matches before a final `\n`),
//! `\<` / `\>` are word boundaries (PCRE: literal `<` / `>`), and possessive quantifiers (`a++`)
//! backtrack.

mod host;
mod location;
mod pcre;
mod uri;

pub use host::{NameCaptures, NameConflict, VirtualHost, VirtualHosts, normalize_host};
pub use location::{LocationEntry, LocationTree};
pub use pcre::Regex;
pub use uri::{UriError, normalize_path};

use std::fmt;

/// A route table that cannot be built. `Display` is nginx's wording, followed by
/// ` in file:line:col` when the place is known (as nginx prints it):
/// `duplicate location "/x" in site.conf:7:5`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{kind}{}", InLocation(.location.as_deref()))]
pub struct RouteError {
    pub kind: RouteErrorKind,
    /// `path:line:col` of the offending `location`; `None` for server-name problems, whose
    /// entries carry no place (`entry` then names the entry by index).
    pub location: Option<String>,
    /// The virtual host entry a server-name problem is about, for its caller to place.
    pub entry: Option<usize>,
}

impl RouteError {
    fn new(kind: RouteErrorKind, location: Option<&str>) -> Self {
        Self {
            kind,
            location: location.map(str::to_owned),
            entry: None,
        }
    }

    /// A problem of the server names of virtual host entry `entry`.
    fn of_entry(kind: RouteErrorKind, entry: usize) -> Self {
        Self {
            entry: Some(entry),
            ..Self::new(kind, None)
        }
    }
}

/// What is wrong, in nginx's words.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RouteErrorKind {
    /// Two `location`s with the same modifier class and path at one level (`=` twice, or
    /// two of plain / `^~`); the location is the second one's.
    #[error("duplicate location \"{0}\"")]
    DuplicateLocation(String),
    /// A regex that does not compile. nginx prints PCRE's reason; this is Rust `regex`'s.
    #[error("pcre2_compile() failed: {} in \"{pattern}\"", regex_reason(.error))]
    Regex {
        pattern: String,
        error: regex::Error,
    },
    #[error("location \"{name}\" cannot be inside the exact location \"{parent}\"")]
    InsideExact { name: String, parent: String },
    #[error("location \"{name}\" cannot be inside the named location \"{parent}\"")]
    InsideNamed { name: String, parent: String },
    #[error("named location \"{0}\" can be on the server level only")]
    NamedNotAtServerLevel(String),
    /// A nested non-regex location whose path does not start with its parent's pattern.
    #[error("location \"{name}\" is outside location \"{parent}\"")]
    Outside { name: String, parent: String },
    /// A second entry with `default_server` (nginx adds ` for addr:port`; this table does
    /// not know its address). `entry` is the index of the second one.
    #[error("a duplicate default server")]
    DuplicateDefaultServer { entry: usize },
    /// `www.*.example.com`, `a..b`, `**.x`: not an exact name nor a supported wildcard.
    #[error("invalid server name or wildcard \"{name}\"")]
    InvalidServerName { name: String, entry: usize },
    #[error("empty regex in server name \"~\"")]
    EmptyServerNameRegex { entry: usize },
    /// Not reachable from nginx configs: every listen address has a server.
    #[error("no server for this listen address")]
    NoServers,
}

/// The one-line reason inside a `regex::Error` (its `Display` spans several lines).
fn regex_reason(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .unwrap_or(text)
            .to_owned(),
        other => other.to_string(),
    }
}

struct InLocation<'a>(Option<&'a str>);

impl fmt::Display for InLocation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, " in {at}"),
            None => Ok(()),
        }
    }
}

/// Compiles a location or server-name regex with PCRE's non-UTF meaning (see the module docs).
pub(crate) fn compile_regex(
    pattern: &str,
    case_insensitive: bool,
) -> Result<Regex, RouteErrorKind> {
    Regex::new(pattern, case_insensitive).map_err(|error| RouteErrorKind::Regex {
        pattern: pattern.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_nginx() {
        let cases = [
            (
                RouteError::new(
                    RouteErrorKind::DuplicateLocation("/x".into()),
                    Some("site.conf:7:5"),
                ),
                r#"duplicate location "/x" in site.conf:7:5"#,
            ),
            (
                RouteError::new(compile_regex("a(", false).unwrap_err(), Some("a.conf:1:2")),
                r#"pcre2_compile() failed: unclosed group in "a(" in a.conf:1:2"#,
            ),
            (
                RouteError::new(RouteErrorKind::DuplicateDefaultServer { entry: 1 }, None),
                "a duplicate default server",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }

    #[test]
    fn regexes_have_pcre_non_utf_meaning() {
        // (pattern, case-insensitive, subject, matches)
        let cases: [(&str, bool, &[u8], bool); 8] = [
            (r"\.PHP$", true, b"/x.php", true),
            (r"\.PHP$", false, b"/x.php", false),
            (r"^/caf\w", false, "/café".as_bytes(), false), // `\w` is ASCII, as in PCRE
            (r"^/caf.", false, b"/caf\xff", true),          // `.` matches any byte but \n
            ("é", true, "É".as_bytes(), false),             // caseless is ASCII only
            (r"\/api\/", false, b"/api/v1", true),          // escaped `/` is fine
            (r"\.php$", false, b"/x.php\n", false),         // PCRE would match here
            (r"^/a\d+$", false, b"/a12", true),
        ];
        for (pattern, ci, subject, want) in cases {
            let re = compile_regex(pattern, ci).unwrap();
            assert_eq!(re.is_match(subject), want, "{pattern} on {subject:?}");
        }
    }
}
