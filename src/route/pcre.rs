//! PCRE's patterns (what nginx compiles its regexes with, without UTF mode) on Rust's engines.
//!
//! A pattern is compiled with Rust's `regex` on bytes with Unicode off whenever it can be: linear
//! time, and PCRE's non-UTF meaning for `.`, `\d`, `\w`, `\s`, `\b` and caseless matching (see the
//! module docs of [`crate::route`]). What that engine cannot express and real configurations use —
//! look-around (`location ~ /\.(?!well-known)`), backreferences (`(\w)\1`), atomic groups — is
//! compiled with `fancy-regex` instead, a backtracking engine like PCRE. It matches text, so the
//! subject's bytes are read as Latin-1 characters, one character per byte (ASCII subjects, the
//! usual case, are matched in place; others are copied once), and spans are given back in bytes.
//! Its backtracking is bounded (fancy-regex's limit of a million steps); a match that runs out is
//! no match, where PCRE would fail the request with its own match limit.

use std::borrow::Cow;

/// A compiled pattern; see the module docs for which engine runs it.
#[derive(Clone, Debug)]
pub struct Regex(Engine);

#[derive(Clone, Debug)]
enum Engine {
    /// Rust's `regex` on bytes, Unicode off.
    Linear(regex::bytes::Regex),
    /// `fancy-regex`, for patterns that need backtracking.
    Backtracking(fancy_regex::Regex),
}

/// Group spans of a match, in bytes of the subject; index 0 is the whole match.
pub type Spans = Vec<Option<(usize, usize)>>;

impl Regex {
    /// Compiles `pattern`; the error is Rust `regex`'s, for the message nginx would print PCRE's
    /// in, when neither engine takes the pattern.
    pub fn new(pattern: &str, case_insensitive: bool) -> Result<Self, regex::Error> {
        match regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .case_insensitive(case_insensitive)
            .build()
        {
            Ok(re) => Ok(Self(Engine::Linear(re))),
            // fancy-regex reads `\g0`, `\g<1>` as calls of a group (PCRE's `\gN` is a
            // backreference, and `\g0` an error), and inlines each call: `(.\g0.\g0|)` takes
            // seconds and gigabytes to compile (found by fuzzing). Not taken, with the
            // linear engine's error.
            Err(error) if has_g_escape(pattern) => Err(error),
            Err(error) => fancy_regex::RegexBuilder::new(pattern)
                .case_insensitive(case_insensitive)
                .build()
                .map(|re| Self(Engine::Backtracking(re)))
                .map_err(|_| error),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Engine::Linear(re) => re.as_str(),
            Engine::Backtracking(re) => re.as_str(),
        }
    }

    /// Whether the backtracking engine runs this pattern.
    pub fn backtracks(&self) -> bool {
        matches!(self.0, Engine::Backtracking(_))
    }

    pub fn is_match(&self, subject: &[u8]) -> bool {
        match &self.0 {
            Engine::Linear(re) => re.is_match(subject),
            Engine::Backtracking(re) => re.is_match(latin1(subject).as_ref()).unwrap_or(false),
        }
    }

    /// The spans of every group of the first match, or `None` without a match.
    pub fn captures(&self, subject: &[u8]) -> Option<Spans> {
        match &self.0 {
            Engine::Linear(re) => re
                .captures(subject)
                .map(|c| c.iter().map(|m| m.map(|m| (m.start(), m.end()))).collect()),
            Engine::Backtracking(re) => {
                let text = latin1(subject);
                let caps = re.captures(text.as_ref()).ok()??;
                let at = |offset: usize| byte_offset(subject, &text, offset);
                Some(
                    caps.iter()
                        .map(|m| m.map(|m| (at(m.start()), at(m.end()))))
                        .collect(),
                )
            }
        }
    }

    /// Number of groups, the whole match included.
    pub fn captures_len(&self) -> usize {
        match &self.0 {
            Engine::Linear(re) => re.captures_len(),
            Engine::Backtracking(re) => re.captures_len(),
        }
    }

    /// Each group's name (`None` for unnamed ones and the whole match), in group order.
    pub fn capture_names(&self) -> Vec<Option<&str>> {
        match &self.0 {
            Engine::Linear(re) => re.capture_names().collect(),
            Engine::Backtracking(re) => re.capture_names().collect(),
        }
    }
}

/// Whether `pattern` has a `\g` escape (an escaped backslash is not one).
fn has_g_escape(pattern: &str) -> bool {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1] == b'g' {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// The subject's bytes as Latin-1 characters: borrowed when they are ASCII.
fn latin1(subject: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(subject) {
        Ok(text) if text.is_ascii() => Cow::Borrowed(text),
        _ => Cow::Owned(subject.iter().map(|&b| char::from(b)).collect()),
    }
}

/// The byte offset in `subject` of character offset `offset` in its Latin-1 text.
fn byte_offset(subject: &[u8], text: &str, offset: usize) -> usize {
    if text.len() == subject.len() {
        return offset;
    }
    text[..offset].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_patterns_run_linear_and_the_rest_backtrack() {
        assert!(!Regex::new(r"\.php$", false).unwrap().backtracks());
        assert!(
            Regex::new(r"/\.(?!well-known)", false)
                .unwrap()
                .backtracks()
        );
        assert!(Regex::new(r"^/(\w+)/\1$", false).unwrap().backtracks());
        // Neither engine: the linear engine's error is the one reported.
        let error = Regex::new("a(", false).unwrap_err();
        assert!(error.to_string().contains("unclosed group"), "{error}");
    }

    #[test]
    fn group_calls_are_refused_not_compiled_for_minutes() {
        // Found by fuzzing: gigabytes and seconds to compile in fancy-regex.
        for pattern in [
            r"(.\g0.\g0|)5",
            r"(^Y|.\g0e.\g0e|)5",
            r"(a)\g<1>",
            r"(a)\g1",
        ] {
            let error = Regex::new(pattern, false).unwrap_err();
            assert!(error.to_string().contains("escape"), "{pattern}: {error}");
        }
        // An escaped backslash before a `g` is no `\g`.
        assert!(Regex::new(r"a\\g0", false).is_ok());
        assert!(!has_g_escape(r"\\g") && has_g_escape(r"x\g0"));
    }

    #[test]
    fn look_around_and_backreferences_mean_what_pcre_means() {
        let hidden = Regex::new(r"/\.(?!well-known)", false).unwrap();
        assert!(hidden.is_match(b"/.git/config"));
        assert!(hidden.is_match(b"/a/.env"));
        assert!(!hidden.is_match(b"/.well-known/acme-challenge/x"));
        let twice = Regex::new(r"^/(\w+)/\1$", true).unwrap();
        assert!(twice.is_match(b"/abc/abc"));
        assert!(twice.is_match(b"/abc/ABC"), "caseless backreference");
        assert!(!twice.is_match(b"/abc/abd"));
        let behind = Regex::new(r"(?<!/api)/v1/", false).unwrap();
        assert!(behind.is_match(b"/web/v1/x"));
        assert!(!behind.is_match(b"/api/v1/x"));
    }

    #[test]
    fn spans_are_bytes_of_the_subject_whichever_engine() {
        let subject = b"/caf\xe9/\xffx/end";
        for pattern in [
            r"^/caf./(.)(x)/(?<tail>\w+)$",
            r"^/caf./(.)(x)/(?<tail>\w+)$(?!z)",
        ] {
            let re = Regex::new(pattern, false).unwrap();
            let spans = re.captures(subject).unwrap();
            assert_eq!(spans[1], Some((6, 7)), "{pattern}");
            assert_eq!(spans[2], Some((7, 8)), "{pattern}");
            assert_eq!(spans[3], Some((9, 12)), "{pattern}");
            assert_eq!(re.capture_names()[3], Some("tail"));
            assert_eq!(re.captures_len(), 4);
        }
    }
}
