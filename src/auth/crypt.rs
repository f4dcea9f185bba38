//! Password checks for `auth_basic_user_file`, the schemes nginx's `ngx_crypt` knows: its own
//! `$apr1$` (Apache's MD5), `{PLAIN}`, `{SHA}` and `{SSHA}`, and everything else through
//! crypt(3) as glibc/libxcrypt has it (`$1$`, `$5$`, `$6$`, `$2a$`/`$2b$`/`$2y$` bcrypt,
//! traditional DES), here by the `pwhash` crate. A hash no scheme reads (yescrypt's `$y$`,
//! which nginx accepts only where libxcrypt does) is an error: nginx answers 500 then too.

use base64::Engine as _;
use md5::Digest as _;

/// Whether `password` matches `hash`; `None` when the hash is of no scheme imbang has.
pub fn verify(password: &[u8], hash: &str) -> Option<bool> {
    if let Some(plain) = hash.strip_prefix("{PLAIN}") {
        return Some(constant_eq(plain.as_bytes(), password));
    }
    if let Some(b64) = hash.strip_prefix("{SHA}") {
        let got = sha1(&[password]);
        let want = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        return Some(constant_eq(&got, &want));
    }
    if let Some(b64) = hash.strip_prefix("{SSHA}") {
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        if raw.len() < 20 {
            return None;
        }
        let (want, salt) = raw.split_at(20);
        return Some(constant_eq(&sha1(&[password, salt]), want));
    }
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        let salt = rest.split('$').next().unwrap_or("");
        let salt = &salt[..salt.len().min(8)];
        return Some(constant_eq(
            md5_crypt(password, salt.as_bytes(), b"$apr1$").as_bytes(),
            hash.as_bytes(),
        ));
    }
    let made = pwhash::unix::crypt(password, hash).ok()?;
    Some(constant_eq(made.as_bytes(), hash.as_bytes()))
}

/// Equality without an early exit (no timing hint of where a guess went wrong).
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha1(parts: &[&[u8]]) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish().as_ref().to_vec()
}

/// Poul-Henning Kamp's MD5-based crypt with `magic` (`$1$` or Apache's `$apr1$`).
fn md5_crypt(password: &[u8], salt: &[u8], magic: &[u8]) -> String {
    let mut ctx = md5::Md5::new();
    ctx.update(password);
    ctx.update(magic);
    ctx.update(salt);
    let mut alt = md5::Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();
    let mut left = password.len();
    while left > 0 {
        ctx.update(&alt[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = md5::Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    const CHARS: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(magic.len() + salt.len() + 23);
    out.push_str(&String::from_utf8_lossy(magic));
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(CHARS[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(
            (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]),
            4,
        );
    }
    put(u32::from(fin[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::verify;

    // Made with `openssl passwd` (-apr1, -1, -6) and `htpasswd -s`.
    #[test]
    fn the_schemes_of_nginx_s_ngx_crypt() {
        for hash in [
            "$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0",
            "$1$abc$iCQ2D3nhptRYi27fDYv2s1",
            "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.",
            "{PLAIN}secret",
            "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        ] {
            assert_eq!(verify(b"secret", hash), Some(true), "{hash}");
            assert_eq!(verify(b"Secret", hash), Some(false), "{hash}");
        }
        assert_eq!(verify(b"secret", "$y$j9T$abc$def"), None);
    }
}
