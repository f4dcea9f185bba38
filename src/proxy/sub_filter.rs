//! nginx's sub filter (`sub_filter`, `sub_filter_once`, `sub_filter_types`,
//! `sub_filter_last_modified`): strings replaced in response bodies as they stream through.
//!
//! As in nginx, a match is the leftmost one, compared without regard to ASCII case; where
//! several strings match at one place, the first in the configuration wins; replacements do
//! not overlap and are not searched again. A match split between two chunks of the body is
//! found: the bytes that may begin one are held back until the next chunk says (at most the
//! longest string less one byte). The response loses its `Content-Length` (HTTP/1.1 clients get
//! it chunked, HTTP/1.0 ones until the connection closes), and its `Last-Modified` and `ETag`
//! unless `sub_filter_last_modified on` (then a strong `ETag` is made weak, as nginx does).
//!
//! nginx applies the filter whatever the response's `Content-Encoding`: a compressed body goes
//! through it unchanged in meaning only by luck. So does imbang; configurations ask the peer for
//! an uncompressed body with `proxy_set_header Accept-Encoding "";` (docs/sub_filter.md).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header;
use http_body::Frame;

use crate::config::model::SubFilter;
use crate::proxy::ResponseBody;
use crate::vars::{Template, Vars};

/// A location's `sub_filter` lines compiled (variables found once per configuration).
#[derive(Debug)]
pub struct Rules {
    /// (search string, replacement) in configuration order. A search string without variables
    /// is kept in lower case.
    pairs: Vec<(Search, Template)>,
    /// The matcher when no search string has variables (the usual case), built once.
    fixed: Option<Arc<Matcher>>,
    once: bool,
    /// `sub_filter_types`, lower case; empty: any type (`*`).
    types: Vec<String>,
    last_modified: bool,
}

#[derive(Debug)]
enum Search {
    Fixed(Box<[u8]>),
    Vars(Template),
}

/// The search strings of one request, with what finds their first bytes fast.
#[derive(Debug)]
struct Matcher {
    /// Lower-case search strings, configuration order, none empty.
    strings: Vec<Box<[u8]>>,
    /// Whether a byte (either case) may begin a search string.
    first: Box<[bool; 256]>,
}

impl Matcher {
    fn new(strings: Vec<Box<[u8]>>) -> Self {
        let mut first = Box::new([false; 256]);
        for s in &strings {
            first[usize::from(s[0].to_ascii_lowercase())] = true;
            first[usize::from(s[0].to_ascii_uppercase())] = true;
        }
        Self { strings, first }
    }
}

impl Rules {
    /// Compiles `conf` with the configuration's variables; the error is nginx's wording.
    pub fn compile(conf: &SubFilter, scope: &crate::vars::Scope) -> Result<Self, String> {
        let mut pairs = Vec::with_capacity(conf.pairs.len());
        for (search, replace) in &conf.pairs {
            let search_t = Template::compile_in(search, scope)?;
            let search = if search_t.is_constant() {
                Search::Fixed(search.to_ascii_lowercase().into_bytes().into())
            } else {
                Search::Vars(search_t)
            };
            pairs.push((search, Template::compile_in(replace, scope)?));
        }
        let fixed = pairs
            .iter()
            .map(|(s, _)| match s {
                Search::Fixed(s) => Some(s.clone()),
                Search::Vars(_) => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|strings| Arc::new(Matcher::new(strings)));
        let types = if conf.types.iter().any(|t| t == "*") {
            Vec::new()
        } else {
            conf.types.clone()
        };
        Ok(Self {
            pairs,
            fixed,
            once: conf.once,
            types,
            last_modified: conf.last_modified,
        })
    }

    fn wants(&self, mime: &[u8]) -> bool {
        self.types.is_empty()
            || self
                .types
                .iter()
                .any(|t| t.as_bytes().eq_ignore_ascii_case(mime))
    }
}

/// nginx's header filter of the module: when the response is of one of `sub_filter_types` and
/// not known to be empty, its body goes through [`Filter`] and the fields that described the
/// old body go (or, with `sub_filter_last_modified on`, the `ETag` becomes weak).
pub fn apply(response: &mut http::Response<ResponseBody>, rules: &Rules, vars: &dyn Vars) {
    // nginx goes by the length the head declares (a peer's answer to HEAD declares the GET's),
    // by the body's own for a response imbang made.
    let declared = match response.headers().get(header::CONTENT_LENGTH) {
        Some(len) => Some(len.as_bytes()),
        None => response
            .body()
            .fields()
            .and_then(|f| f.get(b"content-length")),
    };
    let empty = match declared {
        Some(len) => len.trim_ascii() == b"0",
        None => http_body::Body::size_hint(response.body()).exact() == Some(0),
    };
    if empty {
        return;
    }
    let mime = match response.headers().get(header::CONTENT_TYPE) {
        Some(ct) => Some(ct.as_bytes()),
        None => response
            .body()
            .fields()
            .and_then(|f| f.get(b"content-type")),
    };
    let Some(mime) = mime else {
        return; // nginx: no type, no filter
    };
    let mime = mime
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if mime.is_empty() || !rules.wants(mime) {
        return;
    }
    let matcher = match &rules.fixed {
        Some(m) => Arc::clone(m),
        None => {
            // nginx: a search string whose variables come out empty is left out.
            let strings: Vec<Box<[u8]>> = rules
                .pairs
                .iter()
                .filter_map(|(s, _)| match s {
                    Search::Fixed(s) => Some(s.clone()),
                    Search::Vars(t) => {
                        let s = t.render(vars).to_ascii_lowercase();
                        (!s.is_empty()).then(|| s.into_bytes().into())
                    }
                })
                .collect();
            if strings.is_empty() {
                return;
            }
            Arc::new(Matcher::new(strings))
        }
    };
    // The replacements, rendered once per request (nginx renders each at its first match).
    let replacements = rules
        .pairs
        .iter()
        .filter(|(s, _)| match s {
            Search::Fixed(_) => true,
            Search::Vars(t) => !t.render(vars).is_empty(),
        })
        .map(|(_, r)| Bytes::from(r.render(vars)))
        .collect();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    let etag = headers.remove(header::ETAG);
    if rules.last_modified {
        if let Some(etag) = etag.filter(|e| etag_kept(e.as_bytes())) {
            let weak = weak_etag(etag.as_bytes()).and_then(|w| w.try_into().ok());
            headers.insert(header::ETAG, weak.unwrap_or(etag));
        }
    } else {
        headers.remove(header::LAST_MODIFIED);
    }
    let body = response.body_mut();
    if body.fields().is_some() {
        // The peer's fields keep their places; a strong `ETag` becomes weak where it stands.
        let last_modified = rules.last_modified;
        let fields = body.fields_mut();
        fields.retain(|name, value| {
            if name.eq_ignore_ascii_case(b"etag") {
                return last_modified && etag_kept(value);
            }
            !(name.eq_ignore_ascii_case(b"content-length")
                || (name.eq_ignore_ascii_case(b"last-modified") && !last_modified))
        });
        if last_modified {
            fields.rewrite_each(b"etag", weak_etag);
        }
    }
    let filter = Filter::new(matcher, replacements, rules.once);
    body.set_filter(Box::new(filter));
}

/// nginx's `ngx_http_weak_etag` keeps an `ETag` that is weak or quoted (and drops any other).
pub(crate) fn etag_kept(value: &[u8]) -> bool {
    (value.len() > 2 && value.starts_with(b"W/")) || value.starts_with(b"\"")
}

/// nginx's `ngx_http_weak_etag`: `"x"` becomes `W/"x"` (`None`: the value stays as it is).
pub(crate) fn weak_etag(value: &[u8]) -> Option<Vec<u8>> {
    if !value.starts_with(b"\"") {
        return None;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(value);
    Some(weak)
}

/// The replacing of one response body, fed its chunks as they come.
pub struct Filter {
    matcher: Arc<Matcher>,
    /// The replacement of each search string (same order).
    replacements: Vec<Bytes>,
    /// `sub_filter_once on`: each string is replaced at its first match only.
    once: bool,
    /// Under `once`, the strings replaced already; when all are, the rest passes unlooked at.
    applied: Vec<bool>,
    left: usize,
    /// Bytes at the end of the last chunk that may begin a match.
    held: Vec<u8>,
    /// Frames ready for the client.
    out: VecDeque<Frame<Bytes>>,
    /// The body ended (or its trailers came): nothing more will be fed.
    ended: bool,
}

/// How a search string compares with the text at a place.
enum Cmp {
    Full,
    /// The text ends while it still agrees.
    Partial,
    No,
}

fn compare(search: &[u8], text: &[u8]) -> Cmp {
    let n = search.len().min(text.len());
    let agrees = search[..n]
        .iter()
        .zip(&text[..n])
        .all(|(s, t)| *s == t.to_ascii_lowercase());
    match (agrees, n == search.len()) {
        (false, _) => Cmp::No,
        (true, true) => Cmp::Full,
        (true, false) => Cmp::Partial,
    }
}

impl Filter {
    fn new(matcher: Arc<Matcher>, replacements: Vec<Bytes>, once: bool) -> Self {
        let n = matcher.strings.len();
        Self {
            matcher,
            replacements,
            once,
            applied: vec![false; n],
            left: n,
            held: Vec::new(),
            out: VecDeque::new(),
            ended: false,
        }
    }

    /// The next frame for the client, if one is ready.
    pub fn pop(&mut self) -> Option<Frame<Bytes>> {
        self.out.pop_front()
    }

    /// Whether the body is over and all of it was handed out.
    pub fn done(&self) -> bool {
        self.ended && self.out.is_empty()
    }

    /// One more chunk of the body.
    pub fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let text = if self.held.is_empty() {
            data
        } else {
            let mut joined = BytesMut::with_capacity(self.held.len() + data.len());
            joined.extend_from_slice(&self.held);
            joined.extend_from_slice(&data);
            self.held.clear();
            joined.freeze()
        };
        self.scan(text, false);
    }

    /// The body's trailers (or `None` at its end): what was held back goes out unreplaced, as
    /// no match can complete any more.
    pub fn end(&mut self, trailers: Option<Frame<Bytes>>) {
        if self.ended {
            return;
        }
        if !self.held.is_empty() {
            let rest = Bytes::from(std::mem::take(&mut self.held));
            self.scan(rest, true);
        }
        self.out.extend(trailers);
        self.ended = true;
    }

    /// Replaces in `text`, queueing what is decided; keeps back (unless `last`) the tail where
    /// a search string may yet match.
    fn scan(&mut self, text: Bytes, last: bool) {
        let mut built: Option<BytesMut> = None;
        let mut copied = 0; // text before this went into `built` (or is the first output)
        let mut at = 0;
        let mut end = text.len();
        while at < text.len() && (!self.once || self.left > 0) {
            let first = &self.matcher.first;
            match text[at..].iter().position(|&b| first[usize::from(b)]) {
                Some(skip) => at += skip,
                None => break,
            }
            let mut found = None;
            let mut wait = false;
            for (i, search) in self.matcher.strings.iter().enumerate() {
                if self.once && self.applied[i] {
                    continue;
                }
                match compare(search, &text[at..]) {
                    Cmp::Full => {
                        found = Some(i);
                        break;
                    }
                    // nginx waits for the bytes that decide it, even when a later string
                    // would match here: the first one in the configuration wins.
                    Cmp::Partial if !last => {
                        wait = true;
                        break;
                    }
                    Cmp::Partial | Cmp::No => {}
                }
            }
            if wait {
                end = at;
                break;
            }
            let Some(i) = found else {
                at += 1;
                continue;
            };
            let out = built.get_or_insert_with(|| BytesMut::with_capacity(text.len() + 64));
            out.extend_from_slice(&text[copied..at]);
            out.extend_from_slice(&self.replacements[i]);
            at += self.matcher.strings[i].len();
            copied = at;
            if self.once {
                self.applied[i] = true;
                self.left -= 1;
            }
        }
        self.held.extend_from_slice(&text[end..]);
        let decided = match built {
            None => text.slice(..end),
            Some(mut out) => {
                out.extend_from_slice(&text[copied..end]);
                out.freeze()
            }
        };
        if !decided.is_empty() {
            self.out.push_back(Frame::data(decided));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(pairs: &[(&str, &str)], once: bool) -> Filter {
        let strings = pairs
            .iter()
            .map(|(s, _)| s.to_ascii_lowercase().into_bytes().into())
            .collect();
        let replacements = pairs
            .iter()
            .map(|(_, r)| Bytes::from(r.to_string()))
            .collect();
        Filter::new(Arc::new(Matcher::new(strings)), replacements, once)
    }

    /// The body fed in the given pieces, read back whole.
    fn run(f: &mut Filter, pieces: &[&str]) -> String {
        for p in pieces {
            f.push(Bytes::from(p.to_string()));
        }
        f.end(None);
        let mut out = Vec::new();
        while let Some(frame) = f.pop() {
            out.extend_from_slice(frame.data_ref().unwrap());
        }
        assert!(f.done());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn replaces_every_match_without_regard_to_case_when_not_once() {
        let mut f = filter(&[("hello", "bye"), ("href=\"/", "href=\"/app/")], false);
        let got = run(&mut f, &["<a href=\"/x\">Hello WORLD</a> hello HELLO"]);
        assert_eq!(got, "<a href=\"/app/x\">bye WORLD</a> bye bye");
    }

    #[test]
    fn once_replaces_each_string_at_its_first_match() {
        let mut f = filter(&[("hello", "bye"), ("world", "earth")], true);
        let got = run(&mut f, &["Hello WORLD hello world"]);
        assert_eq!(got, "bye earth hello world");
    }

    #[test]
    fn matches_split_between_chunks_are_found_wherever_they_split() {
        let body = "xx<a href=\"/p\">hrefs href=\"/q\" href=\"/";
        let want = "xx<a href=\"/app/p\">hrefs href=\"/app/q\" href=\"/app/";
        for cut in 0..=body.len() {
            for cut2 in cut..=body.len() {
                let mut f = filter(&[("href=\"/", "href=\"/app/")], false);
                let got = run(&mut f, &[&body[..cut], &body[cut..cut2], &body[cut2..]]);
                assert_eq!(got, want, "cut at {cut}, {cut2}");
            }
        }
    }

    #[test]
    fn byte_by_byte_the_result_is_the_same() {
        let body = "aaab abab ab aab";
        let pieces: Vec<String> = body.chars().map(String::from).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let mut f = filter(&[("aab", "X"), ("ab", "Y")], false);
        assert_eq!(run(&mut f, &pieces), "aX YY Y X");
    }

    #[test]
    fn the_first_string_in_the_configuration_wins_at_one_place() {
        let mut f = filter(&[("ab", "1"), ("abc", "2")], false);
        assert_eq!(run(&mut f, &["abc"]), "1c");
        let mut f = filter(&[("abc", "2"), ("ab", "1")], false);
        assert_eq!(run(&mut f, &["ab", "c ab"]), "2 1");
    }

    #[test]
    fn a_partial_match_at_the_end_goes_out_unchanged() {
        let mut f = filter(&[("hello", "bye")], false);
        assert_eq!(run(&mut f, &["say hel"]), "say hel");
    }

    #[test]
    fn replacements_are_not_searched_again() {
        let mut f = filter(&[("a", "aa")], false);
        assert_eq!(run(&mut f, &["aXa"]), "aaXaa");
    }

    #[test]
    fn weak_etags_as_nginx_makes_them() {
        assert_eq!(weak_etag(b"\"x\"").as_deref(), Some(&b"W/\"x\""[..]));
        assert_eq!(weak_etag(b"W/\"x\""), None);
        assert!(etag_kept(b"W/\"x\"") && etag_kept(b"\"x\""));
        assert!(!etag_kept(b"x") && !etag_kept(b"W/"));
    }
}
