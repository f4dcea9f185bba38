//! Header fields as they came on the wire: an HTTP/1 head's bytes and where each field lies in
//! them, in order, duplicates and the sender's spelling of each name kept. A request's fields go
//! to the peer, a peer's response fields to the client, copied from these bytes rather than
//! taken through a `HeaderMap` (which lowercases names and groups duplicates) and encoded
//! again: nginx's way, and fewer instructions per request (bench/PROFILE.md). Names are
//! matched without regard to case. Fields imbang adds itself (`add_header`) join the list with
//! their spelling from the config.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::scratch::{FieldAt, Fields};

/// Marks an offset into [`RawFields::own`] rather than into the head.
const OWN: u32 = 1 << 31;

/// The fields of one message, in the order they came or were added.
#[derive(Debug, Default)]
pub struct RawFields {
    head: Bytes,
    /// Bytes of fields added or rewritten after the head was read.
    own: Vec<u8>,
    at: Fields,
    /// Bit `n` (at most 63) is set when a name `n` bytes long may be among the fields: most
    /// lookups (`Date`, `Server`, `Connection`) find nothing, and this says so without a walk.
    lengths: u64,
}

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

impl RawFields {
    /// The fields at `at` within `head` (positions as [`FieldAt`]).
    pub fn new(head: Bytes, at: Fields) -> Self {
        let lengths = at.iter().fold(0, |m, f| m | length_bit(f[1] as usize));
        Self {
            head,
            own: Vec::new(),
            at,
            lengths,
        }
    }

    /// Whether a field named `name` may be there (no walk); false: it is not.
    #[inline]
    fn may_have(&self, name: &[u8]) -> bool {
        self.lengths & length_bit(name.len()) != 0
    }

    /// The fields of `head`, header lines (`Name: value` CRLF each) ended by an empty line;
    /// `None` if they are not that.
    pub fn parse(head: Bytes) -> Option<Self> {
        let mut lines = [httparse::EMPTY_HEADER; 128];
        let httparse::Status::Complete((_, found)) =
            httparse::parse_headers(&head, &mut lines).ok()?
        else {
            return None;
        };
        let base = head.as_ptr() as usize;
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let mut at = Fields::take();
        at.extend(found.iter().map(|h| {
            let (name, value) = (h.name.as_bytes(), h.value);
            [
                offset(name),
                name.len() as u32,
                offset(value),
                value.len() as u32,
            ]
        }));
        Some(Self::new(head, at))
    }

    #[inline]
    fn bytes(&self, offset: u32, len: u32) -> &[u8] {
        let (start, len) = ((offset & !OWN) as usize, len as usize);
        match offset & OWN {
            0 => &self.head[start..start + len],
            _ => &self.own[start..start + len],
        }
    }

    #[inline]
    fn field(&self, &[name_at, name_len, value_at, value_len]: &FieldAt) -> (&[u8], &[u8]) {
        (
            self.bytes(name_at, name_len),
            self.bytes(value_at, value_len),
        )
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Each field's name (as spelled) and value, in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.at.iter().map(|f| self.field(f))
    }

    /// The values of the fields named `name` (any case), in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let at = if self.may_have(name) {
            &self.at[..]
        } else {
            &[]
        };
        at.iter()
            .map(|f| self.field(f))
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of the fields named `name` (any case).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        if !self.may_have(name) {
            return None;
        }
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    #[inline]
    pub fn has(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Appends a field.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let name_at = self.own(name);
        let value_at = self.own(value);
        self.at
            .push([name_at, name.len() as u32, value_at, value.len() as u32]);
        self.lengths |= length_bit(name.len());
    }

    fn own(&mut self, bytes: &[u8]) -> u32 {
        let at = self.own.len() as u32 | OWN;
        self.own.extend_from_slice(bytes);
        at
    }

    /// Gives the first field named `name` the value `value` (the name keeps its spelling and
    /// place). False if there is no such field.
    pub fn set_first(&mut self, name: &[u8], value: &[u8]) -> bool {
        if !self.may_have(name) {
            return false;
        }
        let Some(i) = self
            .at
            .iter()
            .position(|f| self.field(f).0.eq_ignore_ascii_case(name))
        else {
            return false;
        };
        let value_at = self.own(value);
        self.at[i][2] = value_at;
        self.at[i][3] = value.len() as u32;
        true
    }

    /// Gives each field named `name` the value `rewrite` makes of its value, where it makes one
    /// (the field keeps its spelling and place).
    pub fn rewrite_each(&mut self, name: &[u8], mut rewrite: impl FnMut(&[u8]) -> Option<Vec<u8>>) {
        if !self.may_have(name) {
            return;
        }
        for i in 0..self.at.len() {
            let f = self.at[i];
            let (field, value) = self.field(&f);
            if !field.eq_ignore_ascii_case(name) {
                continue;
            }
            if let Some(new) = rewrite(value) {
                let value_at = self.own(&new);
                self.at[i][2] = value_at;
                self.at[i][3] = new.len() as u32;
            }
        }
    }

    /// Keeps only the fields `keep` says yes to (given name and value).
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        // `lengths` may keep bits of fields that go: it only ever says "may".
        let Self { head, own, at, .. } = self;
        let bytes = |offset: u32, len: u32| {
            let (start, len) = ((offset & !OWN) as usize, len as usize);
            match offset & OWN {
                0 => &head[start..start + len],
                _ => &own[start..start + len],
            }
        };
        at.retain(|&[n, nl, v, vl]| keep(bytes(n, nl), bytes(v, vl)));
    }

    /// Writes the fields as an HTTP/1 head's lines (`Name: value` CRLF each). True if one of
    /// them is a `Content-Length`.
    pub fn encode(&self, out: &mut Vec<u8>) -> bool {
        let mut length = false;
        for (name, value) in self.iter() {
            length |= name.len() == 14 && name.eq_ignore_ascii_case(b"content-length");
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        length
    }

    /// The bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        self.at.iter().map(|f| (f[1] + f[3]) as usize + 4).sum()
    }

    /// Appends the fields to `map` (names lowercased, as HTTP/2 and `$sent_http_*` want them); a
    /// field whose value cannot stand in a map is left out.
    pub fn append_to(&self, map: &mut HeaderMap) {
        for (name, value) in self.iter() {
            let name = crate::http1::field_name(name);
            let value = HeaderValue::from_maybe_shared(self.shared(value));
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
    }

    /// `value` (a slice of this list's bytes) as `Bytes`, sharing the head's when it lies there.
    fn shared(&self, value: &[u8]) -> Bytes {
        let head = self.head.as_ptr() as usize;
        let at = value.as_ptr() as usize;
        if at >= head && at + value.len() <= head + self.head.len() && !value.is_empty() {
            self.head.slice(at - head..at - head + value.len())
        } else {
            Bytes::copy_from_slice(value)
        }
    }

    /// The fields as a new map (see [`append_to`](Self::append_to)).
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.len());
        self.append_to(&mut map);
        map
    }
}

/// How nginx spells the names of the fields it writes itself (its header filter's and the
/// common ones a response of its own carries), for a field imbang adds from a `HeaderMap`,
/// whose names are lowercase. Any other name is written with each word capitalised
/// (`x-foo-bar` as `X-Foo-Bar`).
pub fn append_name(out: &mut Vec<u8>, name: &HeaderName) {
    let spelled: &[u8] = match name.as_str() {
        "server" => b"Server",
        "date" => b"Date",
        "content-type" => b"Content-Type",
        "content-length" => b"Content-Length",
        "last-modified" => b"Last-Modified",
        "location" => b"Location",
        "transfer-encoding" => b"Transfer-Encoding",
        "connection" => b"Connection",
        "keep-alive" => b"Keep-Alive",
        "etag" => b"ETag",
        "www-authenticate" => b"WWW-Authenticate",
        "upgrade" => b"Upgrade",
        "te" => b"TE",
        other => {
            let mut upper = true;
            for b in other.bytes() {
                out.push(if upper { b.to_ascii_uppercase() } else { b });
                upper = b == b'-';
            }
            return;
        }
    };
    out.extend_from_slice(spelled);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &'static [u8], names: &[(&str, &str)]) -> RawFields {
        let mut at = Fields::take();
        for (name, value) in names {
            let n = head.windows(name.len()).position(|w| w == name.as_bytes());
            let v = head
                .windows(value.len())
                .position(|w| w == value.as_bytes());
            at.push([
                n.unwrap() as u32,
                name.len() as u32,
                v.unwrap() as u32,
                value.len() as u32,
            ]);
        }
        RawFields::new(Bytes::from_static(head), at)
    }

    #[test]
    fn fields_keep_spelling_order_and_duplicates_and_match_any_case() {
        let mut f = fields(
            b"X-Port: 1\r\nset-cookie: a\r\nX-MiXeD: m\r\nSet-Cookie: b\r\n",
            &[
                ("X-Port", "1"),
                ("set-cookie", "a"),
                ("X-MiXeD", "m"),
                ("Set-Cookie", "b"),
            ],
        );
        assert_eq!(f.get(b"x-port"), Some(&b"1"[..]));
        let cookies: Vec<&[u8]> = f.get_all(b"SET-COOKIE").collect();
        assert_eq!(cookies, [&b"a"[..], b"b"]);
        f.push(b"X-Added", b"yes");
        assert!(f.set_first(b"x-mixed", b"new"));
        f.retain(|n, _| !n.eq_ignore_ascii_case(b"x-port"));
        let mut out = Vec::new();
        assert!(!f.encode(&mut out));
        assert_eq!(
            out,
            b"set-cookie: a\r\nX-MiXeD: new\r\nSet-Cookie: b\r\nX-Added: yes\r\n"
        );
        assert_eq!(f.encoded_len(), out.len());
        let map = f.to_map();
        assert_eq!(map.get_all("set-cookie").iter().count(), 2);
        assert_eq!(map["x-added"], "yes");
    }

    #[test]
    fn names_imbang_writes_are_nginx_s_spelling() {
        let spell = |name: &str| {
            let mut out = Vec::new();
            append_name(&mut out, &HeaderName::from_bytes(name.as_bytes()).unwrap());
            String::from_utf8(out).unwrap()
        };
        assert_eq!(spell("content-length"), "Content-Length");
        assert_eq!(spell("etag"), "ETag");
        assert_eq!(spell("x-frame-options"), "X-Frame-Options");
        assert_eq!(spell("retry-after"), "Retry-After");
    }
}
