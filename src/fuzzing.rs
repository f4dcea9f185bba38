//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): each takes the fuzzer's bytes,
//! runs one parser of untrusted (or operator-written) input and checks what it promises beyond
//! "no panic". Not an API: the parsers are private to their modules, and this is the one door
//! the fuzz package goes through. Kept in the library (not under `cfg(fuzzing)`) so that the
//! regression tests under `tests/fuzz_regressions.rs` run the same checks on stable Rust.

use bytes::BytesMut;

use crate::config::error::{ConfigErrors, ErrorKind};
use crate::config::lower::LoadOptions;
use crate::http1::{Decoded, Decoder, Framing, HeadLimits};

/// The config lexer, parser and lowering, then the snapshot's compilation (regexes of
/// locations, server names and `map`s, variables, upstreams): text to a validated
/// configuration. Never a panic; every error but a file's `open()` has a `file:line:col`.
///
/// Inputs that would read or create files (`include`, `*_log`, `ssl_*`) stop after lowering:
/// what those directives do with the file system is not the parser's business, and a fuzzer
/// must not write files where its input says.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("include") {
        return;
    }
    let options = LoadOptions {
        // fuzz/run.sh runs the targets in a scratch directory: default log paths land there.
        prefix: std::env::current_dir().unwrap_or_default(),
        default_listen_port: 8000,
    };
    let config = match crate::config::parse_str("fuzz.conf", text, &options) {
        Ok(config) => config,
        Err(errors) => return placed(&errors),
    };
    if text.contains("_log") || text.contains("ssl") {
        return;
    }
    let registry = crate::upstream::PeerRegistry::new();
    if let Err(errors) = crate::snapshot::Snapshot::compile(config, &registry) {
        placed(&errors);
    }
}

fn placed(errors: &ConfigErrors) {
    assert!(!errors.is_empty(), "a failure without an error");
    for error in errors.iter() {
        let message = error.to_string();
        assert!(!message.is_empty());
        // A file's `open()` is placed nowhere, as nginx's (it opens files after the parse).
        if !matches!(error.kind, ErrorKind::Open { .. }) && !message.starts_with("open() ") {
            let at = error.location.as_deref();
            assert!(
                at.is_some_and(|at| at.starts_with("fuzz.conf:")),
                "an error without its place: {message}"
            );
        }
    }
}

/// The HTTP/1 request head parser with nginx's default limits, and the chunked decoder right
/// behind it when the head says so. A head that is taken leaves exactly its own bytes out of
/// the buffer; a refusal is a 4xx or 5xx; the head is never longer than the limits.
pub fn request(data: &[u8]) {
    let limits = HeadLimits::default();
    let mut buf = BytesMut::from(data);
    match crate::http1::parse::parse(&mut buf, &limits) {
        Ok(Some(head)) => {
            let taken = data.len() - buf.len();
            assert!(taken <= data.len());
            assert!(data[..taken].ends_with(b"\n"), "a head not ending in LF");
            // Leading empty lines are skipped and not counted.
            let skipped = data
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(0);
            assert!(taken - skipped <= limits.head, "a head over the limit");
            if head.framing == Framing::Chunked {
                let mut decoder = Decoder::new(head.framing);
                decode_all(&mut decoder, &mut buf);
            }
        }
        // Waiting for more only while what it holds fits the limits.
        Ok(None) => assert!(buf.len() <= limits.head, "{} bytes held", buf.len()),
        Err(reject) => {
            let code = reject.status.as_u16();
            assert!((400..600).contains(&code), "refused with {code}");
        }
    }
}

/// The chunked decoder: the first byte chooses how the rest is cut into reads; decoding in
/// those pieces gives the same data, trailers and verdict as decoding it whole, and the
/// decoder never asks for more while it holds more than its line limits.
pub fn chunked(data: &[u8]) {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = {
        let mut buf = BytesMut::from(body);
        decode_all(&mut Decoder::new(Framing::Chunked), &mut buf)
    };
    let step = usize::from(cut % 16) + 1;
    let mut pieces = Outcome::default();
    let mut decoder = Decoder::new(Framing::Chunked);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    'feed: loop {
        let next = (fed + step).min(body.len());
        buf.extend_from_slice(&body[fed..next]);
        fed = next;
        loop {
            match decoder.decode(&mut buf) {
                Decoded::Data(d) => pieces.data.extend_from_slice(&d),
                Decoded::Trailers(t) => pieces.trailers = t.len(),
                Decoded::End => {
                    pieces.end = true;
                    break 'feed;
                }
                Decoded::Invalid(why) => {
                    pieces.invalid = Some(why);
                    break 'feed;
                }
                Decoded::More => {
                    // 4 KiB chunk-size line, 8 KiB trailers (body.rs), and a step.
                    assert!(buf.len() <= 8 * 1024 + 16, "{} bytes held", buf.len());
                    if fed == body.len() {
                        break 'feed;
                    }
                    continue 'feed;
                }
            }
        }
    }
    // A short input may end where the whole one has not decided yet; otherwise they agree.
    if whole.end || whole.invalid.is_some() {
        if pieces.end || pieces.invalid.is_some() {
            assert_eq!(whole.end, pieces.end, "{whole:?} vs {pieces:?}");
            assert_eq!(whole.data, pieces.data);
            assert_eq!(whole.trailers, pieces.trailers);
        }
    } else {
        assert!(!pieces.end, "{whole:?} vs {pieces:?}");
        assert_eq!(whole.data, pieces.data);
    }
}

#[derive(Debug, Default)]
struct Outcome {
    data: Vec<u8>,
    trailers: usize,
    end: bool,
    invalid: Option<&'static str>,
}

fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> Outcome {
    let mut out = Outcome::default();
    loop {
        match decoder.decode(buf) {
            Decoded::Data(d) => out.data.extend_from_slice(&d),
            Decoded::Trailers(t) => out.trailers = t.len(),
            Decoded::End => {
                out.end = true;
                return out;
            }
            Decoded::Invalid(why) => {
                out.invalid = Some(why);
                return out;
            }
            Decoded::More => return out,
        }
    }
}

/// The upstream response head parser (the peer side's client, `pool::h1`), as a request with
/// and without a body to come, with and without an upgrade asked for, with every field kept
/// and with some hidden: the first byte chooses.
pub fn response(data: &[u8]) {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let hide_date = |name: &[u8], _: &crate::http1::Named<'_>| name.eq_ignore_ascii_case(b"date");
    let hide: crate::pool::h1::Hide<'_> = (flags & 8 != 0).then_some(&hide_date);
    let mut buf = BytesMut::from(head);
    let _ = crate::pool::h1::parse_response(
        &mut buf,
        flags & 1 != 0,
        flags & 2 != 0,
        flags & 4 != 0,
        hide,
    );
}

/// PCRE-style patterns (`location ~`, `server_name ~`, `if`, `rewrite`, `map`) on imbang's two
/// engines, and a match against a subject: the input is `pattern NUL subject`. Spans lie within
/// the subject, in order.
pub fn regex(data: &[u8]) {
    let (pattern, subject) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(pattern) = std::str::from_utf8(pattern) else {
        return;
    };
    // Both case modes: `~` and `~*`.
    for caseless in [false, true] {
        let Ok(re) = crate::route::Regex::new(pattern, caseless) else {
            continue;
        };
        let matched = re.is_match(subject);
        if let Some(spans) = re.captures(subject) {
            assert!(matched || re.backtracks(), "captures without a match");
            assert_eq!(spans.len(), re.captures_len());
            for (start, end) in spans.into_iter().flatten() {
                assert!(start <= end && end <= subject.len(), "{start}..{end}");
            }
        }
        let _ = re.capture_names();
    }
}

/// The PROXY protocol header parser (`listen ... proxy_protocol`): a header taken is never
/// longer than the input nor than the limits, parses the same from its own bytes alone, and
/// its TLVs can be looked up by any name; bytes still incomplete never exceed the limit; the
/// header written back for the addresses it carried parses to the same addresses.
pub fn proxy_protocol(data: &[u8]) {
    use crate::proxy_protocol::{self as pp, ParseError, TlvName};
    match pp::parse(data) {
        Ok((header, len)) => {
            assert!(len <= data.len() && len <= pp::MAX_HEADER, "{len}");
            assert_eq!(pp::parse(&data[..len]), Ok((header.clone(), len)));
            for name in [
                "alpn",
                "unique_id",
                "ssl",
                "ssl_cn",
                "ssl_verify",
                "ssl_0x21",
                "0xff",
            ] {
                let _ = header.tlv(TlvName::parse(name).expect("a known name"));
            }
            if let Some(addresses) = &header.addresses
                && let (Some(client), Ok(server)) = (
                    addresses.source_addr(),
                    addresses.destination.parse::<std::net::IpAddr>(),
                )
            {
                let server = std::net::SocketAddr::new(server, addresses.destination_port);
                for bytes in [
                    pp::encode_v1(Some((client, server))),
                    pp::encode_v2(Some((client, server)), &[]),
                ] {
                    let (again, n) = pp::parse(&bytes).expect("a header imbang wrote");
                    assert_eq!(n, bytes.len());
                    let again = again.addresses.expect("addresses");
                    assert_eq!(again.source_addr().map(|a| a.port()), Some(client.port()));
                }
            }
        }
        Err(ParseError::Incomplete) => assert!(data.len() < pp::MAX_HEADER, "{}", data.len()),
        Err(ParseError::Broken(why)) => assert!(!why.to_string().is_empty()),
    }
}

/// The ClientHello reader of `ssl_preread`: never a panic; a hello read in full reads the same
/// with more bytes behind it (what follows the hello is not its business), and an incomplete
/// one stays incomplete or is decided with more bytes, never turns into "not TLS".
pub fn ssl_preread(data: &[u8]) {
    use crate::tls::preread::{Preread, parse};
    let verdict = parse(data);
    let mut more = data.to_vec();
    more.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
    let after = parse(&more);
    match &verdict {
        Preread::Parsed(_) | Preread::NotTls => assert_eq!(verdict, after),
        Preread::Incomplete => assert_ne!(after, Preread::NotTls, "incomplete became not TLS"),
        Preread::Malformed => {}
    }
}
