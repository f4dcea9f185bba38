//! nginx's `hash key` without `consistent` (`ngx_http_upstream_get_hash_peer`).
//!
//! Compatible with Cache::Memcached, as nginx's is: the request's key is hashed with CRC32, and
//! bits 16..31 of the result (`(crc32 >> 16) & 0x7fff`) are added to a running sum that starts
//! at 0. The sum modulo the total weight, laid over the peers in config order (`down` ones
//! included), names the peer. When that peer may not take the attempt, the key is hashed again
//! with the number of hashes so far written in decimal in front (`"1" + key`, `"2" + key`…) and
//! added to the sum: up to 20 more times per request, then round robin. A retry of the request
//! continues the same sequence.
//!
//! An empty key (every variable in it empty) means round robin, as in nginx.

use super::round_robin::SmoothWeighted;
use super::{Balancer, MAX_WALK, Peer, PickContext, WeightRanges};

/// Key hashing modulo the total weight, falling back to round robin.
#[derive(Debug)]
pub struct Hash {
    ranges: WeightRanges,
    fallback: SmoothWeighted,
}

impl Hash {
    pub fn new(peers: &[Peer]) -> Self {
        Self {
            ranges: WeightRanges::new(peers),
            fallback: SmoothWeighted::new(peers),
        }
    }
}

/// What hashing `key` for the `rehash`-th time adds to the running sum.
pub(crate) fn step(rehash: u32, key: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    if rehash > 0 {
        let mut digits = [0; 10];
        crc.update(decimal(rehash, &mut digits));
    }
    crc.update(key);
    (crc.finalize() >> 16) & 0x7fff
}

/// `n` in decimal, written into the end of `buf` without allocating.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

impl Balancer for Hash {
    fn pick(&mut self, peers: &[Peer], ctx: &mut PickContext<'_>) -> Option<usize> {
        let mut walk = ctx.tried.walk();
        let key = ctx.key.filter(|key| !key.is_empty());
        let Some(key) = key.filter(|_| walk.steps <= MAX_WALK && peers.len() >= 2) else {
            return self.fallback.pick(peers, ctx);
        };
        walk.started = true;
        loop {
            walk.position = walk.position.wrapping_add(step(walk.rehash, key));
            walk.rehash += 1;
            let i = self.ranges.find(u64::from(walk.position));
            if ctx.is_eligible_now(&peers[i]) {
                ctx.tried.set_walk(walk);
                return Some(i);
            }
            walk.steps += 1;
            if walk.steps > MAX_WALK {
                ctx.tried.set_walk(walk);
                return self.fallback.pick(peers, ctx);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {

    use super::*;
    use crate::upstream::balancer::tests::{key_order, letter, peers, peers_with};

    fn order(balancer: &mut Hash, peers: &[Peer], key: &str) -> String {
        key_order(balancer, peers, key)
    }

    /// nginx's sequence of peer positions for `key`, written out independently: the running
    /// sum of `(crc32(prefix + key) >> 16) & 0x7fff` modulo the total weight, walked over the
    /// weights. Uses the std formatting and a bitwise CRC-32 rather than the code above.
    fn reference(weights: &[u32], key: &str, n: usize) -> Vec<usize> {
        let total: u32 = weights.iter().sum();
        let mut sum: u32 = 0;
        (0..n)
            .map(|rehash| {
                let text = if rehash == 0 {
                    key.to_owned()
                } else {
                    format!("{rehash}{key}")
                };
                sum = sum.wrapping_add((bitwise_crc32(text.as_bytes()) >> 16) & 0x7fff);
                let mut w = sum % total;
                let mut p = 0;
                while w >= weights[p] {
                    w -= weights[p];
                    p += 1;
                }
                p
            })
            .collect()
    }

    /// CRC-32 (IEEE 802.3, reflected, as zlib and nginx's `ngx_crc32_long`), bit by bit.
    pub(crate) fn bitwise_crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc32_is_the_standard_one() {
        // The check value of CRC-32/ISO-HDLC.
        assert_eq!(bitwise_crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn decimal_prefixes() {
        let mut buf = [0; 10];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(7, &mut buf), b"7");
        assert_eq!(decimal(20, &mut buf), b"20");
        assert_eq!(decimal(u32::MAX, &mut buf), b"4294967295");
    }

    #[test]
    fn first_choices_match_a_reference_implementation() {
        let weight_sets: [&[u32]; 3] = [&[1, 1, 1], &[5, 1, 2], &[1, 1, 1, 1, 1, 1, 1]];
        for weights in weight_sets {
            let peers = peers(weights);
            let mut balancer = Hash::new(&peers);
            for n in 0..200 {
                let key = format!("/item/{n}");
                let want = letter(reference(weights, &key, 1)[0]);
                let got = order(&mut balancer, &peers, &key).chars().next().unwrap();
                assert_eq!(got, want, "{key} over {weights:?}");
            }
        }
    }

    #[test]
    fn literal_mappings() {
        // crc32("/a") = 0x69707B5C -> 0x6970 = 26992 -> 26992 % 3 = 1 -> b.
        // crc32("/b") = 0xF0792AE6 -> 0x7079 = 28793 -> 28793 % 3 = 2 -> c.
        assert_eq!(crc32fast::hash(b"/a"), 0x6970_7B5C);
        assert_eq!(crc32fast::hash(b"/b"), 0xF079_2AE6);
        let peers = peers(&[1, 1, 1]);
        let mut balancer = Hash::new(&peers);
        assert_eq!(order(&mut balancer, &peers, "/a").chars().next(), Some('b'));
        assert_eq!(order(&mut balancer, &peers, "/b").chars().next(), Some('c'));
    }

    #[test]
    fn retries_follow_the_rehash_sequence_then_round_robin() {
        let weights = [1, 1, 1, 1, 1];
        let peers = peers(&weights);
        let mut balancer = Hash::new(&peers);
        for key in ["/x", "/y", "user-42", "k"] {
            // The reference positions, skipping tried peers; each skip is a rejected
            // candidate, and the 21st rejection hands the rest of the request to round robin.
            let mut want = String::new();
            let mut rejected = 0;
            for p in reference(&weights, key, 200) {
                if !want.contains(letter(p)) {
                    want.push(letter(p));
                } else {
                    rejected += 1;
                }
                if want.len() == weights.len() || rejected > MAX_WALK {
                    break;
                }
            }
            let got = order(&mut balancer, &peers, key);
            assert!(got.starts_with(&want), "{key}: {got} after {want}");
            assert_eq!(got.len(), weights.len(), "{key}: every peer once ({got})");
        }
    }

    #[test]
    fn a_down_peer_moves_only_its_own_keys() {
        let peers = peers(&[1, 1, 1]);
        let with_c_down = peers_with(&[1, 1, 1], |i, spec| spec.down = i == 2);
        let mut all = Hash::new(&peers);
        let mut without_c = Hash::new(&with_c_down);
        for n in 0..100 {
            let key = format!("k{n}");
            let before = order(&mut all, &peers, &key).chars().next().unwrap();
            let after = order(&mut without_c, &with_c_down, &key)
                .chars()
                .next()
                .unwrap();
            if before != 'c' {
                assert_eq!(after, before, "{key}");
            } else {
                assert_ne!(after, 'c', "{key}");
            }
        }
    }

    #[test]
    fn no_key_or_an_empty_key_is_round_robin() {
        let peers = peers(&[1, 1]);
        let mut balancer = Hash::new(&peers);
        assert_eq!(
            crate::upstream::balancer::round_robin::tests::sequence(&mut balancer, &peers, 4),
            "a b a b"
        );
        let got: String = (0..4)
            .map(|_| order(&mut balancer, &peers, "").chars().next().unwrap())
            .collect();
        assert_eq!(got, "abab");
    }
}
