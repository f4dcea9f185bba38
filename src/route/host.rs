//! `server_name` matching: which `server {}` of one listen address serves a host.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use super::Regex;

use super::{RouteError, RouteErrorKind, compile_regex};
use crate::FastMap;
use crate::config::model::ServerName;

/// What `server_name` matching sees for a `Host` header, an absolute-URI authority or
/// `:authority`: the port removed (`[v6]` brackets kept), one trailing dot removed, ASCII
/// lower-cased.
///
/// `None` when nginx's `ngx_http_validate_host` rejects it (the caller answers 400): bytes
/// outside the host grammar (`a/b`, `a b`, `a@b`, non-ASCII), two dots in a row (`a..b`),
/// an unterminated or misplaced `[`, anything but a port after `]`, a port that is not
/// digits or is above 65535, or nothing left (`.`, `:80`).
///
/// `""` gives `Some("")`: pass it when the request has no host at all, so that
/// `server_name ""` matches (nginx). A *present but empty* `Host` header is a 400 in nginx;
/// the caller must reject that case itself, this function cannot tell the two apart.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    if raw.is_empty() {
        return Some(Cow::Borrowed(""));
    }
    let bytes = raw.as_bytes();
    let mut host_len = bytes.len();
    let mut last_dot: Option<usize> = None;
    let mut port: u32 = 0;
    let (mut state, first) = match bytes[0] {
        b'[' => (HostState::IpLiteral, 1),
        _ => (HostState::Name, 0),
    };

    for (i, &c) in bytes.iter().enumerate().skip(first) {
        match state {
            HostState::Name | HostState::IpLiteral => {
                let literal = state == HostState::IpLiteral;
                match c {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {}
                    // sub-delims
                    b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {
                    }
                    b'.' => {
                        if i > 0 && last_dot == Some(i - 1) {
                            return None;
                        }
                        last_dot = Some(i);
                    }
                    b'%' if !literal => {} // pct-encoded, kept as is
                    b':' if literal => {}
                    b':' => {
                        host_len = i;
                        state = HostState::Port;
                    }
                    b']' if literal => {
                        host_len = i + 1;
                        state = HostState::AfterLiteral;
                    }
                    _ => return None,
                }
            }
            HostState::AfterLiteral => {
                if c != b':' {
                    return None;
                }
                state = HostState::Port;
            }
            HostState::Port => {
                if !c.is_ascii_digit() {
                    return None;
                }
                port = port * 10 + u32::from(c - b'0');
                if port > 65535 {
                    return None;
                }
            }
        }
    }

    if state == HostState::IpLiteral {
        return None;
    }
    if host_len > 0 && last_dot == Some(host_len - 1) {
        host_len -= 1;
    }
    if host_len == 0 {
        return None;
    }
    let host = &raw[..host_len];
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HostState {
    Name,
    IpLiteral,
    AfterLiteral,
    Port,
}

/// One `server {}` listening on the address a [`VirtualHosts`] is built for.
#[derive(Clone, Debug)]
pub struct VirtualHost<T> {
    /// Its `server_name` entries in file order (`Exact("")` when it has none, as in nginx).
    pub names: Vec<ServerName>,
    /// `listen ... default_server` on this address.
    pub default_server: bool,
    pub value: T,
}

/// A name ignored because an earlier entry (or the same one) already claimed it; nginx warns
/// `conflicting server name "x" on 0.0.0.0:80, ignored` and keeps the first.
///
/// `Display` leaves the address out (this table does not know it); [`NameConflict::message`]
/// puts it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameConflict {
    /// The name as written: `example.com`, `*.example.com`, `.example.com`, `www.*`.
    pub name: String,
    /// Index (in the entries given to [`VirtualHosts::build`]) of the server whose name was
    /// ignored, so the caller can point at that server.
    pub entry: usize,
}

impl NameConflict {
    /// nginx's exact text, for `addr` such as `0.0.0.0:80`.
    pub fn message(&self, addr: &str) -> String {
        format!(
            "conflicting server name \"{}\" on {addr}, ignored",
            self.name
        )
    }
}

impl fmt::Display for NameConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conflicting server name \"{}\", ignored", self.name)
    }
}

/// The servers of one listen address, indexed for `server_name` lookup.
///
/// Lookup order is nginx's: exact name (a hash map), then the longest matching leading
/// wildcard (`*.example.com`, `.example.com`), then the longest matching trailing wildcard
/// (`www.*`), then the first matching regex in config order, then the default server.
/// Wildcards are hash maps too, probed once per label of the host.
#[derive(Debug)]
pub struct VirtualHosts<T> {
    values: Vec<T>,
    /// Exact names, plus the bare `example.com` of every `.example.com`.
    exact: FastMap<Box<str>, usize>,
    /// `*.example.com` and `.example.com`, keyed by `.example.com`.
    leading: FastMap<Box<str>, usize>,
    /// `www.*`, keyed by `www.`.
    trailing: FastMap<Box<str>, usize>,
    regexes: Vec<RegexName>,
    default: usize,
    /// With one server on the address, whether its names are searched at all: only when they
    /// can give captures (nginx's `cscf->captures`, see [`Self::build`]).
    search_single: bool,
    conflicts: Vec<NameConflict>,
}

/// A `server_name ~regex` of one server.
#[derive(Debug)]
struct RegexName {
    regex: Regex,
    entry: usize,
    /// Whether it has groups (then it is run for them, not only tested).
    groups: bool,
    /// Its named groups: (group index, variable name).
    names: Box<[(usize, Arc<str>)]>,
}

/// What the `server_name` regex that chose a server captured, when it has groups: `$1`..`$9`
/// until a location or `rewrite`/`if` regex matches, and its named groups as variables
/// (nginx's `ngx_http_regex_exec` on the host).
#[derive(Debug)]
pub struct NameCaptures<'a> {
    /// Group spans in the host; index 0 is the whole match.
    pub spans: super::pcre::Spans,
    /// The named groups: (group index, variable name).
    pub names: &'a [(usize, Arc<str>)],
}

impl<T> VirtualHosts<T> {
    /// Indexes `entries` (config order, all listening on one address).
    ///
    /// Fails on a second `default_server`, a name that is neither exact nor a supported
    /// wildcard, an empty or invalid regex, or no entries at all. Names claimed twice are not
    /// errors: the first wins and [`Self::warnings`] lists the others.
    ///
    /// A regex name is case-insensitive only if it contains an upper-case ASCII letter
    /// (nginx's rule; hosts are lower case anyway).
    pub fn build(entries: Vec<VirtualHost<T>>) -> Result<Self, RouteError> {
        if entries.is_empty() {
            return Err(RouteError::new(RouteErrorKind::NoServers, None));
        }
        let mut default = None;
        let mut regexes = Vec::new();
        // nginx searches the names of a lone server only if its last regex name has groups
        // (`cscf->captures` is overwritten by each regex name of the server).
        let mut search_single = false;
        for (entry, server) in entries.iter().enumerate() {
            if server.default_server {
                if default.is_some() {
                    let kind = RouteErrorKind::DuplicateDefaultServer { entry };
                    return Err(RouteError::of_entry(kind, entry));
                }
                default = Some(entry);
            }
            for name in &server.names {
                if let ServerName::Regex(pattern) = name {
                    if pattern.is_empty() {
                        let kind = RouteErrorKind::EmptyServerNameRegex { entry };
                        return Err(RouteError::of_entry(kind, entry));
                    }
                    let case_insensitive = pattern.bytes().any(|b| b.is_ascii_uppercase());
                    let regex = compile_regex(pattern, case_insensitive)
                        .map_err(|kind| RouteError::of_entry(kind, entry))?;
                    let groups = regex.captures_len() > 1;
                    search_single = groups;
                    let names = regex
                        .capture_names()
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, name)| Some((i, Arc::from(name?))))
                        .collect();
                    regexes.push(RegexName {
                        regex,
                        entry,
                        groups,
                        names,
                    });
                }
            }
        }

        let mut names = NameIndex::default();
        for (entry, server) in entries.iter().enumerate() {
            for name in &server.names {
                names.add(name, entry)?;
            }
        }

        let entries_len = entries.len();
        Ok(Self {
            values: entries.into_iter().map(|server| server.value).collect(),
            exact: names.exact,
            leading: names.leading,
            trailing: names.trailing,
            regexes,
            default: default.unwrap_or(0),
            search_single: search_single && entries_len == 1,
            conflicts: names.conflicts,
        })
    }

    /// The server for `host`, which must be what [`normalize_host`] returned. Never fails:
    /// an unknown host gets the default server. `""` (no host) matches only an exact `""`
    /// name, as in nginx (regexes are not tried).
    pub fn find(&self, host: &str) -> &T {
        self.find_captures(host).0
    }

    /// [`Self::find`], with what the regex name that chose the server captured, when it has
    /// groups (nothing is allocated otherwise).
    pub fn find_captures(&self, host: &str) -> (&T, Option<NameCaptures<'_>>) {
        let (entry, captures) = self.find_index(host);
        (&self.values[entry], captures)
    }

    /// The `default_server` entry, or the first one.
    pub fn default_server(&self) -> &T {
        &self.values[self.default]
    }

    /// Names ignored because an earlier one claimed them, in config order.
    pub fn warnings(&self) -> &[NameConflict] {
        &self.conflicts
    }

    fn find_index(&self, host: &str) -> (usize, Option<NameCaptures<'_>>) {
        // One server on the address: every name leads to it.
        if self.values.len() == 1 && !self.search_single {
            return (0, None);
        }
        if let Some(&entry) = self.exact.get(host) {
            return (entry, None);
        }
        if !self.leading.is_empty() {
            // Longest suffix first: `.a.example.com` before `.example.com`.
            for (i, _) in host.match_indices('.') {
                if let Some(&entry) = self.leading.get(&host[i..]) {
                    return (entry, None);
                }
            }
        }
        if !self.trailing.is_empty() {
            // Longest prefix first: `www.example.` before `www.`.
            for (i, _) in host.rmatch_indices('.') {
                if let Some(&entry) = self.trailing.get(&host[..=i]) {
                    return (entry, None);
                }
            }
        }
        if !host.is_empty() {
            for name in &self.regexes {
                if !name.groups {
                    if name.regex.is_match(host.as_bytes()) {
                        return (name.entry, None);
                    }
                } else if let Some(spans) = name.regex.captures(host.as_bytes()) {
                    let captures = NameCaptures {
                        spans,
                        names: &name.names,
                    };
                    return (name.entry, Some(captures));
                }
            }
        }
        (self.default, None)
    }
}

/// The hashed names, with nginx's conflict rules (`ngx_hash_add_key`): a name already present
/// is ignored with a warning; `.example.com` also claims the exact name `example.com`, and
/// `*.example.com` and `.example.com` claim the same wildcard slot.
#[derive(Default)]
struct NameIndex {
    exact: FastMap<Box<str>, usize>,
    leading: FastMap<Box<str>, usize>,
    trailing: FastMap<Box<str>, usize>,
    conflicts: Vec<NameConflict>,
}

impl NameIndex {
    fn add(&mut self, name: &ServerName, entry: usize) -> Result<(), RouteError> {
        let written = written(name);
        let invalid = || {
            let kind = RouteErrorKind::InvalidServerName {
                name: written.clone(),
                entry,
            };
            RouteError::of_entry(kind, entry)
        };
        let claimed = match name {
            ServerName::Regex(_) => return Ok(()),
            ServerName::Exact(exact) => {
                if exact.contains(['*', '\0']) || exact.contains("..") {
                    return Err(invalid());
                }
                claim(&mut self.exact, exact, entry)
            }
            ServerName::LeadingWildcard { suffix, also_bare } => {
                let bare = suffix.strip_prefix('.').ok_or_else(invalid)?;
                if bare.is_empty() || bare.contains(['*', '\0']) || suffix.contains("..") {
                    return Err(invalid());
                }
                // nginx claims the bare name first and keeps that claim even when the
                // wildcard slot turns out to be taken.
                (!also_bare || claim(&mut self.exact, bare, entry))
                    && claim(&mut self.leading, suffix, entry)
            }
            ServerName::TrailingWildcard(prefix) => {
                let head = prefix.strip_suffix('.').ok_or_else(invalid)?;
                if head.is_empty() || head.contains(['*', '\0']) || prefix.contains("..") {
                    return Err(invalid());
                }
                claim(&mut self.trailing, prefix, entry)
            }
        };
        if !claimed {
            self.conflicts.push(NameConflict {
                name: written,
                entry,
            });
        }
        Ok(())
    }
}

/// Inserts `key` (lower-cased) unless present; false if it was.
fn claim(map: &mut FastMap<Box<str>, usize>, key: &str, entry: usize) -> bool {
    let key = key.to_ascii_lowercase().into_boxed_str();
    if map.contains_key(&key) {
        return false;
    }
    map.insert(key, entry);
    true
}

/// The name as it appears in the config, for messages.
fn written(name: &ServerName) -> String {
    match name {
        ServerName::Exact(exact) => exact.clone(),
        ServerName::LeadingWildcard {
            suffix,
            also_bare: true,
        } => suffix.clone(),
        ServerName::LeadingWildcard {
            suffix,
            also_bare: false,
        } => format!("*{suffix}"),
        ServerName::TrailingWildcard(prefix) => format!("{prefix}*"),
        ServerName::Regex(pattern) => format!("~{pattern}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_host_follows_ngx_http_validate_host() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("example.com", Some("example.com")),
            ("Example.COM", Some("example.com")),
            ("example.com:8080", Some("example.com")),
            ("example.com.", Some("example.com")),
            ("example.com.:80", Some("example.com")),
            ("example.com:", Some("example.com")), // empty port is accepted
            ("example.com:65535", Some("example.com")),
            ("example.com:65536", None),
            ("example.com:8o", None),
            ("example.com:80:80", None),
            (".example.com", Some(".example.com")), // a leading dot is accepted
            ("a..b", None),
            ("..", None),
            (".", None),
            ("example.com..", None),
            (":80", None),
            ("a/b", None),
            ("a b", None),
            ("user@host", None),
            ("a\\b", None),
            ("caf\u{e9}.fr", None),
            ("a%41b", Some("a%41b")), // pct-encoded bytes are kept, not decoded
            ("a_b~c!$&'()*+,;=", Some("a_b~c!$&'()*+,;=")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("[::1]", Some("[::1]")),
            ("[::1]:8080", Some("[::1]")),
            ("[2001:DB8::1]", Some("[2001:db8::1]")),
            ("[::1", None),
            ("[::1]x", None),
            ("[::1].", None),
            ("[a%b]", None), // no `%` inside an IP literal
            ("[1..2]", None),
            ("a[b]", None),
            ("xn--bcher-kva.example", Some("xn--bcher-kva.example")),
        ];
        for &(raw, want) in cases {
            assert_eq!(normalize_host(raw).as_deref(), want, "host {raw:?}");
        }
    }

    fn exact(name: &str) -> ServerName {
        ServerName::Exact(name.into())
    }
    fn star(suffix: &str) -> ServerName {
        ServerName::LeadingWildcard {
            suffix: suffix.into(),
            also_bare: false,
        }
    }
    fn dot(suffix: &str) -> ServerName {
        ServerName::LeadingWildcard {
            suffix: suffix.into(),
            also_bare: true,
        }
    }
    fn tail(prefix: &str) -> ServerName {
        ServerName::TrailingWildcard(prefix.into())
    }
    fn re(pattern: &str) -> ServerName {
        ServerName::Regex(pattern.into())
    }
    fn server(value: &'static str, names: Vec<ServerName>) -> VirtualHost<&'static str> {
        VirtualHost {
            names,
            default_server: false,
            value,
        }
    }
    fn default(value: &'static str, names: Vec<ServerName>) -> VirtualHost<&'static str> {
        VirtualHost {
            default_server: true,
            ..server(value, names)
        }
    }

    #[test]
    fn server_name_precedence_follows_nginx() {
        let hosts = VirtualHosts::build(vec![
            server("first", vec![exact("first.test")]),
            server("exact", vec![exact("www.example.com"), exact("")]),
            server("star", vec![star(".example.com")]),
            server("deep-star", vec![star(".a.example.com")]),
            server("dot", vec![dot(".example.org")]),
            server("com", vec![star(".com")]),
            server("www", vec![tail("www.")]),
            server("www-ex", vec![tail("www.example.")]),
            server("re-1", vec![re(r"^api\d+\.example\.net$")]),
            server("re-2", vec![re(r"^api"), re(r"\.net$")]),
            default("default", vec![exact("default.test")]),
        ])
        .unwrap();

        let cases = [
            ("www.example.com", "exact"),     // exact beats `*.example.com`
            ("", "exact"),                    // no Host: `server_name ""`
            ("x.example.com", "star"),        // leading wildcard
            ("x.y.example.com", "star"),      // any depth
            ("b.a.example.com", "deep-star"), // longest leading wildcard
            ("a.example.com", "star"),        // `*.a.example.com` needs a label before
            ("example.com", "com"),           // `*.example.com` does not match the bare name
            ("example.org", "dot"),           // `.example.org` does
            ("x.example.org", "dot"),         // and its subdomains
            ("www.foo.de", "www"),            // trailing wildcard
            ("www.example.io", "www-ex"),     // longest trailing wildcard
            ("www.test.com", "com"),          // leading before trailing
            ("www", "default"),               // `www.*` needs a dot
            ("api12.example.net", "re-1"),    // first matching regex
            ("api.example.net", "re-2"),      // `\d+` fails, next server's regex
            ("x.example.net", "re-2"),        // second regex of the same server
            ("unknown.test", "default"),      // default_server, not the first entry
            ("default.test", "default"),
            ("first.test", "first"),
            ("WWW.EXAMPLE.COM", "default"), // find() expects normalize_host's output
        ];
        for (host, want) in cases {
            assert_eq!(*hosts.find(host), want, "host {host:?}");
        }
        assert!(hosts.warnings().is_empty());
        assert_eq!(*hosts.default_server(), "default");
    }

    #[test]
    fn default_is_the_first_entry_without_default_server() {
        let hosts = VirtualHosts::build(vec![
            server("a", vec![exact("a.test")]),
            server("b", vec![exact("")]),
        ])
        .unwrap();
        let cases = [("a.test", "a"), ("", "b"), ("other.test", "a")];
        for (host, want) in cases {
            assert_eq!(*hosts.find(host), want, "host {host:?}");
        }
    }

    #[test]
    fn empty_host_does_not_try_regexes_or_wildcards() {
        let hosts = VirtualHosts::build(vec![
            server("first", vec![exact("first.test")]),
            server("any", vec![re("^.*$"), tail("www.")]),
        ])
        .unwrap();
        assert_eq!(*hosts.find(""), "first");
        assert_eq!(*hosts.find("x"), "any");
    }

    #[test]
    fn regex_names_are_caseless_only_with_an_upper_case_letter() {
        let hosts = VirtualHosts::build(vec![
            server("none", vec![exact("none.test")]),
            server("lower", vec![re(r"^lower\.test$")]),
            server("upper", vec![re(r"^UPPER\.test$")]),
        ])
        .unwrap();
        let cases = [
            ("lower.test", "lower"),
            ("upper.test", "upper"),
            ("LOWER.test", "none"),
        ];
        for (host, want) in cases {
            assert_eq!(*hosts.find(host), want, "host {host:?}");
        }
    }

    /// The server, each group (`None`: not captured) and the named groups.
    type Captured = (
        &'static str,
        Option<Vec<Option<String>>>,
        Vec<(usize, String)>,
    );

    /// What `find_captures` gives for `host`.
    fn captured(hosts: &VirtualHosts<&'static str>, host: &str) -> Captured {
        let (value, captures) = hosts.find_captures(host);
        let Some(captures) = captures else {
            return (value, None, Vec::new());
        };
        let groups = captures
            .spans
            .iter()
            .map(|s| s.map(|(a, b)| host[a..b].to_owned()))
            .collect();
        let names = captures
            .names
            .iter()
            .map(|(i, n)| (*i, n.to_string()))
            .collect();
        (value, Some(groups), names)
    }

    #[test]
    fn a_regex_name_with_groups_gives_its_captures() {
        let hosts = VirtualHosts::build(vec![
            server("exact", vec![exact("www.example.com")]),
            server("named", vec![re(r"^www\.(?<domain>.+)$")]),
            server("plain", vec![re(r"^api\.")]),
            server("numbered", vec![re(r"^(\d+)\.(x)?test$")]),
        ])
        .unwrap();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(captured(&hosts, "www.example.com"), ("exact", None, vec![]));
        assert_eq!(
            captured(&hosts, "www.foo.org"),
            (
                "named",
                Some(vec![s("www.foo.org"), s("foo.org")]),
                vec![(1, "domain".to_owned())]
            )
        );
        assert_eq!(captured(&hosts, "api.test"), ("plain", None, vec![]));
        assert_eq!(
            captured(&hosts, "12.test"),
            ("numbered", Some(vec![s("12.test"), s("12"), None]), vec![])
        );
        assert_eq!(captured(&hosts, "other"), ("exact", None, vec![]));
        assert_eq!(captured(&hosts, ""), ("exact", None, vec![]));
    }

    #[test]
    fn a_lone_server_is_searched_only_when_its_last_regex_has_groups() {
        let searched = VirtualHosts::build(vec![server(
            "lone",
            vec![exact("a.test"), re(r"^x"), re(r"^(?<sub>[a-z]+)\.lone$")],
        )])
        .unwrap();
        assert!(captured(&searched, "abc.lone").1.is_some());
        assert_eq!(captured(&searched, "a.test"), ("lone", None, vec![]));
        assert_eq!(captured(&searched, "9.lone"), ("lone", None, vec![]));
        let not_searched = VirtualHosts::build(vec![server(
            "lone",
            vec![re(r"^(?<sub>[a-z]+)\.lone$"), re(r"^x")],
        )])
        .unwrap();
        assert_eq!(captured(&not_searched, "abc.lone"), ("lone", None, vec![]));
    }

    #[test]
    fn conflicting_names_keep_the_first_and_warn() {
        let hosts = VirtualHosts::build(vec![
            server("a", vec![exact("x.test"), star(".w.test"), exact("")]),
            server("b", vec![exact("x.test"), dot(".w.test"), exact("")]),
            server("c", vec![exact("y.test"), tail("www.")]),
            server("d", vec![dot(".y.test"), tail("www.")]),
            server("e", vec![dot(".z.test")]),
            server("f", vec![exact("z.test"), star(".z.test")]),
            server("g", vec![re("^x"), re("^x")]), // regexes never conflict
        ])
        .unwrap();
        let cases = [
            ("x.test", "a"),
            ("", "a"),
            ("q.w.test", "a"),
            ("w.test", "b"), // `.w.test` lost its wildcard slot but kept the bare name
            ("y.test", "c"),
            ("q.y.test", "a"), // `.y.test` was ignored entirely; falls to default
            ("www.q", "c"),
            ("z.test", "e"),
            ("q.z.test", "e"),
            ("xq", "g"),
        ];
        for (host, want) in cases {
            assert_eq!(*hosts.find(host), want, "host {host:?}");
        }
        let warnings: Vec<String> = hosts.warnings().iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [
                r#"conflicting server name "x.test", ignored"#,
                r#"conflicting server name ".w.test", ignored"#,
                r#"conflicting server name "", ignored"#,
                r#"conflicting server name ".y.test", ignored"#,
                r#"conflicting server name "www.*", ignored"#,
                r#"conflicting server name "z.test", ignored"#,
                r#"conflicting server name "*.z.test", ignored"#,
            ]
        );
        let entries: Vec<usize> = hosts.warnings().iter().map(|w| w.entry).collect();
        assert_eq!(entries, [1, 1, 1, 3, 3, 5, 5]);
        assert_eq!(
            hosts.warnings()[0].message("0.0.0.0:80"),
            r#"conflicting server name "x.test" on 0.0.0.0:80, ignored"#
        );
    }

    #[test]
    fn build_errors_read_like_nginx() {
        let cases: Vec<(Vec<VirtualHost<&str>>, &str)> = vec![
            (
                vec![
                    default("a", vec![]),
                    server("b", vec![]),
                    default("c", vec![]),
                ],
                "a duplicate default server",
            ),
            (
                vec![server("a", vec![re("^(x")])],
                r#"pcre2_compile() failed: unclosed group in "^(x""#,
            ),
            (
                vec![server("a", vec![re("")])],
                r#"empty regex in server name "~""#,
            ),
            (
                vec![server("a", vec![exact("www.*.com")])],
                r#"invalid server name or wildcard "www.*.com""#,
            ),
            (
                vec![server("a", vec![exact("a..b")])],
                r#"invalid server name or wildcard "a..b""#,
            ),
            (
                vec![server("a", vec![star("..x")])],
                r#"invalid server name or wildcard "*..x""#,
            ),
            (
                vec![server("a", vec![tail("a*.")])],
                r#"invalid server name or wildcard "a*.*""#,
            ),
            (vec![], "no server for this listen address"),
        ];
        for (entries, want) in cases {
            let error = VirtualHosts::build(entries).unwrap_err();
            assert_eq!(error.to_string(), want);
        }
        let error = VirtualHosts::build(vec![
            default("a", vec![]),
            server("b", vec![]),
            default("c", vec![]),
        ])
        .unwrap_err();
        assert_eq!(
            error.kind,
            RouteErrorKind::DuplicateDefaultServer { entry: 2 }
        );
    }
}
