//! nginx's gzip filter (`gzip`, `gzip_types`, `gzip_comp_level`, `gzip_min_length`) with the
//! core module's test of the request (`gzip_vary`, `gzip_proxied`, `gzip_disable`,
//! `gzip_http_version`): response bodies compressed as they stream through, never held whole.
//!
//! Which responses, as nginx's header filter decides: `gzip on`, status 200, 403 or 404, no
//! `Content-Encoding` already, a known `Content-Length` not under `gzip_min_length`, a type in
//! `gzip_types` (an answer to HEAD as well: its fields say what the GET's would). Those get
//! `Vary: Accept-Encoding` with `gzip_vary on` whether compressed or not; they are compressed
//! when the client takes gzip (nginx's reading of the first `Accept-Encoding`, `q=0` refusing),
//! and for a request with `Via` (it came through a proxy) only as `gzip_proxied` allows by the
//! response's `Expires`, `Cache-Control`, `Last-Modified`, `ETag` and the request's
//! `Authorization`. A compressed response loses its
//! `Content-Length` and `Accept-Ranges`; its `ETag` becomes weak (nginx 1.22's
//! `ngx_http_weak_etag`).
//!
//! The body: nginx's stream (a 10-byte gzip header, raw deflate, CRC-32 and length) made by
//! flate2 on zlib-rs. What a chunk of the body compresses to goes out when the body pauses (the
//! source has nothing ready: a sync flush, as nginx flushes a non-buffered peer's chunks), when
//! [`FRAME`] bytes are ready, and at the end; a fast source is compressed in large pieces, a slow
//! one reaches the client chunk by chunk.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body::Frame;

use crate::config::model::{Gzip, gzip_proxied as proxied};
use crate::proxy::ResponseBody;
use crate::proxy::sub_filter::{etag_kept, weak_etag};

/// Compressed bytes handed on as soon as this many are ready.
const FRAME: usize = 32 * 1024;

/// nginx's gzip header: deflate, no flags, no time, no extra flags, Unix.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// A response field by name: from the `HeaderMap` or the spelled fields beside it.
fn field<'a>(response: &'a Response<ResponseBody>, name: &header::HeaderName) -> Option<&'a [u8]> {
    match response.headers().get(name) {
        Some(v) => Some(v.as_bytes()),
        None => response
            .body()
            .fields()
            .and_then(|f| f.get(name.as_str().as_bytes())),
    }
}

/// nginx's header filter of the module (with `ngx_http_gzip_ok`): decides, sets the fields and
/// sends the body through a [`Filter`].
pub fn apply(response: &mut Response<ResponseBody>, conf: &Gzip, request: &http::request::Parts) {
    if !matches!(
        response.status(),
        StatusCode::OK | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    ) {
        return;
    }
    if field(response, &header::CONTENT_ENCODING).is_some_and(|v| !v.is_empty()) {
        return;
    }
    let length = match field(response, &header::CONTENT_LENGTH) {
        Some(len) => std::str::from_utf8(len)
            .ok()
            .and_then(|l| l.trim().parse::<u64>().ok()),
        None => http_body::Body::size_hint(response.body()).exact(),
    };
    if length.is_some_and(|n| n < conf.min_length) {
        return;
    }
    if !conf.types.is_empty() {
        let Some(ct) = field(response, &header::CONTENT_TYPE) else {
            return;
        };
        let mime = ct
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if !conf
            .types
            .iter()
            .any(|t| t.as_bytes().eq_ignore_ascii_case(mime))
        {
            return;
        }
    }
    if conf.vary {
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if !gzip_ok(conf, request, response) {
        return;
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    if let Some(etag) = headers.remove(header::ETAG) {
        if etag_kept(etag.as_bytes()) {
            let weak = weak_etag(etag.as_bytes()).and_then(|w| w.try_into().ok());
            headers.insert(header::ETAG, weak.unwrap_or(etag));
        }
    }
    let body = response.body_mut();
    if body.fields().is_some() {
        let fields = body.fields_mut();
        fields.retain(|name, value| {
            !(name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"accept-ranges")
                || name.eq_ignore_ascii_case(b"content-encoding")
                || (name.eq_ignore_ascii_case(b"etag") && !etag_kept(value)))
        });
        fields.rewrite_each(b"etag", weak_etag);
    }
    // HEAD: nginx decides before it knows there is no body (its header filter sets that
    // later), so the fields say gzip; there is nothing to compress.
    let filter = if request.method == Method::HEAD {
        Filter::finished()
    } else {
        Filter::new(conf.comp_level, length)
    };
    body.set_gzip(Box::new(filter));
}

/// nginx's `ngx_http_gzip_ok`: whether this client gets gzip (the response's fields count for a
/// request that came through a proxy).
pub fn gzip_ok(
    conf: &Gzip,
    request: &http::request::Parts,
    response: &Response<ResponseBody>,
) -> bool {
    let Some(ae) = request.headers.get(header::ACCEPT_ENCODING) else {
        return false;
    };
    if !accepts_gzip(ae.as_bytes()) {
        return false;
    }
    let ua = request
        .headers
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes());
    if conf.disable_msie6 && ua.is_some_and(msie6) {
        return false;
    }
    if request.version < http::Version::HTTP_11 && !conf.http_1_0 {
        return false;
    }
    if request.headers.contains_key(header::VIA) && !proxied_ok(conf.proxied, request, response) {
        return false;
    }
    if let Some(ua) = ua.filter(|_| !conf.disable.is_empty()) {
        let ua = String::from_utf8_lossy(ua);
        if conf.disable.iter().any(|re| re.is_match(&ua)) {
            return false;
        }
    }
    true
}

/// `gzip_proxied` for a request with `Via`, as nginx: `any`; `auth` with `Authorization`; then
/// an `Expires` decides alone (`expired`: in the past), then a `Cache-Control` (`no-cache`,
/// `no-store`, `private`), then `no_last_modified` and `no_etag`.
fn proxied_ok(p: u16, request: &http::request::Parts, response: &Response<ResponseBody>) -> bool {
    if p & proxied::OFF != 0 {
        return false;
    }
    if p & proxied::ANY != 0 {
        return true;
    }
    if p & proxied::AUTH != 0 && request.headers.contains_key(header::AUTHORIZATION) {
        return true;
    }
    if let Some(expires) = field(response, &header::EXPIRES) {
        if p & proxied::EXPIRED == 0 {
            return false;
        }
        let time = |v: &[u8]| httpdate::parse_http_date(std::str::from_utf8(v).ok()?).ok();
        let Some(expires) = time(expires) else {
            return false;
        };
        let date = match field(response, &header::DATE) {
            Some(d) => match time(d) {
                Some(d) => d,
                None => return false,
            },
            None => std::time::SystemTime::now(),
        };
        return expires < date;
    }
    let cache_control = cache_control(response);
    if !cache_control.is_empty() {
        let has = |token: &str| cache_control.iter().any(|v| has_token(v, token));
        return (p & proxied::NO_CACHE != 0 && has("no-cache"))
            || (p & proxied::NO_STORE != 0 && has("no-store"))
            || (p & proxied::PRIVATE != 0 && has("private"));
    }
    if p & proxied::NO_LAST_MODIFIED != 0 && field(response, &header::LAST_MODIFIED).is_some() {
        return false;
    }
    if p & proxied::NO_ETAG != 0 && field(response, &header::ETAG).is_some() {
        return false;
    }
    true
}

/// Every `Cache-Control` line of the response.
fn cache_control(response: &Response<ResponseBody>) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = response
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Some(fields) = response.body().fields() {
        lines.extend(fields.get_all(b"cache-control"));
    }
    lines
}

/// nginx's `ngx_http_parse_multi_header_lines` for a bare token: an element of the
/// comma-separated list that is `token` (any case) and nothing after it but spaces.
fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|element| {
        let element = element.trim_ascii_start();
        element.len() >= token.len()
            && element[..token.len()].eq_ignore_ascii_case(token.as_bytes())
            && element[token.len()..].iter().all(|&b| b == b' ')
    })
}

/// nginx's reading of `Accept-Encoding` (`ngx_http_gzip_ok`, `ngx_http_gzip_accept_encoding`,
/// `ngx_http_gzip_quantity`): `gzip` as a whole word, then nothing, a comma, or `;q=` with a
/// weight above zero. Anything nginx does not understand refuses.
pub fn accepts_gzip(ae: &[u8]) -> bool {
    if ae.len() < 4 {
        return false;
    }
    if ae.starts_with(b"gzip,") {
        return true;
    }
    // The first "gzip" (any case) at the start or after a comma or space.
    let mut from = 0;
    let at = loop {
        let Some(i) = ae[from..]
            .windows(4)
            .position(|w| w.eq_ignore_ascii_case(b"gzip"))
        else {
            return false;
        };
        let at = from + i;
        if at == 0 || matches!(ae[at - 1], b',' | b' ') {
            break at;
        }
        from = at + 4;
    };
    let mut rest = ae[at + 4..].iter();
    loop {
        match rest.next() {
            None | Some(b',') => return true,
            Some(b';') => break,
            Some(b' ') => {}
            Some(_) => return false,
        }
    }
    loop {
        match rest.next() {
            None => return true,
            Some(b'q' | b'Q') => break,
            Some(b' ') => {}
            Some(_) => return false,
        }
    }
    let rest = rest.as_slice();
    if rest.len() < 2 || rest[0] != b'=' {
        return false;
    }
    quantity(&rest[1..]) > 0
}

/// nginx's `ngx_http_gzip_quantity`: `0`, `1`, `0.xyz`, `1.000` in thousandths... as nginx
/// counts them (hundredths plus the digits' sum: only zero matters here); 0 when malformed.
fn quantity(q: &[u8]) -> u32 {
    let mut it = q.iter();
    let value = match it.next() {
        Some(&c @ (b'0' | b'1')) => u32::from(c - b'0') * 100,
        _ => return 0,
    };
    match it.next() {
        None | Some(b',' | b' ') => return value,
        Some(b'.') => {}
        Some(_) => return 0,
    }
    let (mut value, mut digits) = (value, 0);
    for &c in it {
        match c {
            b',' | b' ' => break,
            b'0'..=b'9' => {
                value += u32::from(c - b'0');
                digits += 1;
            }
            _ => return 0,
        }
    }
    if value > 100 || digits > 3 { 0 } else { value }
}

/// nginx's `msie6` test of `User-Agent` (`ngx_http_process_user_agent`): MSIE 4 and 5, and 6
/// without "SV1", unless it is Opera.
fn msie6(ua: &[u8]) -> bool {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let Some(at) = find(ua, b"MSIE ") else {
        return false;
    };
    if at + 7 >= ua.len() || ua[at + 6] != b'.' {
        return false;
    }
    let old = match ua[at + 5] {
        b'4' | b'5' => true,
        b'6' => find(&ua[(at + 8).min(ua.len())..], b"SV1").is_none(),
        _ => false,
    };
    old && find(ua, b"Opera").is_none()
}

/// The compressing of one response body, fed its chunks as they come.
pub struct Filter {
    /// `None`: an answer to HEAD, nothing to compress.
    z: Option<Compress>,
    crc: crc32fast::Hasher,
    /// Compressed bytes not handed on yet (the gzip header first).
    out: Vec<u8>,
    /// Bytes fed since the last flush: a pause flushes them.
    unflushed: bool,
    /// Frames ready for the client.
    ready: Option<Frame<Bytes>>,
    trailers: Option<Frame<Bytes>>,
    /// The body ended: the stream is finished, nothing more will be fed.
    ended: bool,
}

impl Filter {
    /// A filter at `level`; a known `length` makes the window smaller as nginx does (what a
    /// small body needs, less memory to set up).
    pub fn new(level: u32, length: Option<u64>) -> Self {
        let mut bits: u8 = 15;
        if let Some(len) = length.filter(|&n| n > 0) {
            while bits > 9 && len < (1u64 << (bits - 1)) - 262 {
                bits -= 1;
            }
        }
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&HEADER);
        Self {
            z: Some(Compress::new_with_window_bits(
                Compression::new(level),
                false,
                bits,
            )),
            crc: crc32fast::Hasher::new(),
            out,
            unflushed: false,
            ready: None,
            trailers: None,
            ended: false,
        }
    }

    /// The filter of a body that is not sent (HEAD): done from the start.
    pub fn finished() -> Self {
        Self {
            z: None,
            crc: crc32fast::Hasher::new(),
            out: Vec::new(),
            unflushed: false,
            ready: None,
            trailers: None,
            ended: true,
        }
    }

    /// The next frame for the client, if one is ready.
    pub fn pop(&mut self) -> Option<Frame<Bytes>> {
        self.ready.take().or_else(|| {
            if self.ended {
                self.trailers.take()
            } else {
                None
            }
        })
    }

    /// Whether the body is over and all of it was handed out.
    pub fn done(&self) -> bool {
        self.ended && self.ready.is_none() && self.trailers.is_none()
    }

    /// `$gzip_ratio`'s counts: bytes in, bytes out (so far).
    pub fn counts(&self) -> (u64, u64) {
        match &self.z {
            Some(z) => (z.total_in(), z.total_out() + 18),
            None => (0, 0),
        }
    }

    /// One more chunk of the body; compressed bytes go out once [`FRAME`] are ready.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() || self.ended {
            return;
        }
        self.crc.update(data);
        self.deflate(data, FlushCompress::None);
        self.unflushed = true;
        if self.out.len() >= FRAME {
            self.hand_on();
        }
    }

    /// The source has nothing ready: what it gave since the last flush goes out (a sync flush).
    /// False when there was nothing to flush.
    pub fn flush(&mut self) -> bool {
        if !self.unflushed || self.ended {
            return false;
        }
        self.unflushed = false;
        self.deflate(&[], FlushCompress::Sync);
        self.hand_on();
        true
    }

    /// The body's end (with its trailers): the stream is finished.
    pub fn end(&mut self, trailers: Option<Frame<Bytes>>) {
        if self.ended {
            return;
        }
        self.deflate(&[], FlushCompress::Finish);
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        self.out.extend_from_slice(&crc.to_le_bytes());
        // ISIZE: the length modulo 2^32.
        let (zin, _) = self.counts();
        self.out.extend_from_slice(&(zin as u32).to_le_bytes());
        self.hand_on();
        self.trailers = trailers;
        self.ended = true;
    }

    fn hand_on(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let data = Bytes::from(std::mem::take(&mut self.out));
        self.ready = Some(match self.ready.take() {
            None => Frame::data(data),
            Some(before) => {
                // A frame not taken yet (only when pushed twice without a pop): join them.
                let mut joined = before.into_data().unwrap_or_default().to_vec();
                joined.extend_from_slice(&data);
                Frame::data(Bytes::from(joined))
            }
        });
    }

    /// Runs deflate over `input` with `flush` until it took all of it and wants no more room.
    fn deflate(&mut self, mut input: &[u8], flush: FlushCompress) {
        let Some(z) = &mut self.z else {
            return;
        };
        loop {
            let want = 64.max(input.len() / 4);
            if self.out.capacity() - self.out.len() < want {
                self.out.reserve(want.max(4096));
            }
            let before_in = z.total_in();
            let status = z.compress_vec(input, &mut self.out, flush);
            let taken = (z.total_in() - before_in) as usize;
            input = &input[taken..];
            let full = self.out.len() == self.out.capacity();
            match status {
                Ok(Status::StreamEnd) => return,
                Ok(Status::Ok | Status::BufError) if input.is_empty() && !full => {
                    if !matches!(flush, FlushCompress::Finish) {
                        return;
                    }
                }
                Ok(_) => {}
                // zlib only fails on a misuse of its stream, which this code does not make.
                Err(_) => return,
            }
            if full {
                self.out.reserve(self.out.capacity().max(4096));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("a valid gzip stream");
        out
    }

    fn drain(f: &mut Filter, out: &mut Vec<u8>) {
        while let Some(frame) = f.pop() {
            out.extend_from_slice(frame.data_ref().unwrap());
        }
    }

    #[test]
    fn a_body_fed_in_pieces_with_pauses_comes_back_whole() {
        let body: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"v\":\"x{}\"}},", i % 97).into_bytes())
            .take(300_000)
            .collect();
        for (piece, pause_every) in [(1, 7), (1000, 3), (16384, 1), (300_000, 1)] {
            let mut f = Filter::new(1, None);
            let mut out = Vec::new();
            for (i, chunk) in body.chunks(piece).enumerate() {
                f.push(chunk);
                if i % pause_every == 0 {
                    f.flush();
                }
                drain(&mut f, &mut out);
            }
            f.end(None);
            drain(&mut f, &mut out);
            assert!(f.done());
            assert_eq!(gunzip(&out), body, "pieces of {piece}");
            assert_eq!(&out[..10], &HEADER);
            let (zin, zout) = f.counts();
            assert_eq!((zin, zout), (body.len() as u64, out.len() as u64));
        }
    }

    #[test]
    fn an_empty_body_is_a_valid_stream_and_a_flush_hands_on_what_came() {
        let mut f = Filter::new(1, Some(1));
        f.end(None);
        let mut out = Vec::new();
        drain(&mut f, &mut out);
        assert!(gunzip(&out).is_empty());
        let mut f = Filter::new(9, None);
        f.push(b"hello");
        assert!(f.pop().is_none(), "held until a pause or more bytes");
        assert!(f.flush());
        assert!(!f.flush(), "nothing new to flush");
        let first = f.pop().expect("the flushed bytes");
        let mut d = flate2::Decompress::new(false);
        let mut plain = Vec::with_capacity(64);
        d.decompress_vec(
            &first.data_ref().unwrap()[10..],
            &mut plain,
            flate2::FlushDecompress::Sync,
        )
        .unwrap();
        assert_eq!(
            plain, b"hello",
            "a sync flush makes the bytes so far decodable"
        );
    }

    #[test]
    fn accept_encoding_is_read_as_nginx_reads_it() {
        let yes = [
            "gzip",
            "gzip, deflate, br",
            "deflate, gzip",
            "br;q=1.0, gzip;q=0.8, *;q=0.1",
            "GZIP",
            "deflate,gzip ;q=1",
            "gzip;q=0.001",
            "gzip; q=1",
            "x-gzip, gzip",
        ];
        let no = [
            "",
            "gzi",
            "deflate, br",
            "gzip;q=0",
            "gzip;q=0.000",
            "gzip;q=0.",
            "deflate, gzip;q=0",
            "x-gzip",
            "gzipx",
            "gzip;level=1",
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.0001",
            "identity",
        ];
        for ae in yes {
            assert!(accepts_gzip(ae.as_bytes()), "{ae}");
        }
        for ae in no {
            assert!(!accepts_gzip(ae.as_bytes()), "{ae}");
        }
    }

    #[test]
    fn msie6_is_found_as_nginx_finds_it() {
        assert!(msie6(b"Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)"));
        assert!(msie6(b"Mozilla/4.0 (compatible; MSIE 5.5; Windows 98)"));
        assert!(!msie6(
            b"Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)"
        ));
        assert!(!msie6(
            b"Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0)"
        ));
        assert!(!msie6(
            b"Mozilla/4.0 (compatible; MSIE 6.0; Windows) Opera 7"
        ));
        assert!(!msie6(b"curl/8.0"));
    }

    #[test]
    fn cache_control_tokens_as_nginx_finds_them() {
        assert!(has_token(b"no-cache", "no-cache"));
        assert!(has_token(b"max-age=0, No-Cache ", "no-cache"));
        assert!(!has_token(b"no-cache=\"Set-Cookie\"", "no-cache"));
        assert!(!has_token(b"no-cachex", "no-cache"));
        assert!(!has_token(b"public", "private"));
    }
}
