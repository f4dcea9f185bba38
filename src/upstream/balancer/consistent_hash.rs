//! nginx's `hash key consistent` (`ngx_http_upstream_get_chash_peer`): a ketama ring,
//! compatible with Cache::Memcached::Fast as nginx's is, so a key lands on the same `server`
//! line as it would in nginx.
//!
//! **The ring.** Each `server` line's address text, as written, is split at its last `:` when
//! only digits follow (`10.0.0.1:8080` → host `10.0.0.1`, port `8080`; `backend` and `[::1]`
//! have no port). Its points are CRC-32 values chained from one base: the CRC-32 state after
//! `host`, a NUL byte and `port`, continued with the previous point as four little-endian bytes
//! (zero for the first) and finalised. A peer has `160 × weight` points; peers of one name
//! that resolved to several addresses repeat the same points. The points are sorted and
//! duplicates dropped.
//!
//! **A request.** Its key's CRC-32 finds the first point at or after it (past the last point:
//! the first). The eligible peers of that point's `server` line share by smooth weighted round
//! robin; if none may take the attempt, the next point is tried, up to 20 more per request,
//! then round robin over all peers. A retry continues from the point the request last used, so
//! a key's second choice is stable too.
//!
//! Removing a `server` line removes only its points: only its keys move, each to the next
//! point's server.
//!
//! An empty key means round robin, as in nginx.
//!
//! **`bounded=factor`** (imbang's extension; "consistent hashing with bounded loads", Mirrokni,
//! Thorup and Zadimoghaddam, 2016): a peer with `factor × average` attempts in flight already —
//! the average over the peers not `down`, counting this request, per unit of weight, rounded
//! up — is skipped as if it were unavailable, so the walk goes on to the next point. A hot key
//! spills over to the next servers on the ring instead of burying one; while no peer is over its
//! bound every key goes exactly where nginx sends it. The round-robin fallback respects the
//! bound too, as long as some eligible peer is under it.

use super::round_robin::SmoothWeighted;
use super::{Balancer, MAX_WALK, Peer, PickContext};

/// Points per unit of weight.
const POINTS_PER_WEIGHT: u32 = 160;

/// A ketama ring over the peers' `server` lines, falling back to round robin.
#[derive(Debug)]
pub struct ConsistentHash {
    /// Sorted by hash, without duplicate hashes.
    points: Box<[Point]>,
    /// By peer position: the number of its `server` text (peers with equal text share one).
    server_of: Box<[u32]>,
    /// Round robin among the peers of one point, and the fallback.
    round_robin: SmoothWeighted,
    /// `bounded=`: the load factor in thousandths.
    bounded: Option<u32>,
}

/// The load bound of one pick: `ceil(factor × (in flight + 1) × weight / total weight)`.
#[derive(Clone, Copy, Debug)]
struct Bound {
    /// `factor (thousandths) × (attempts in flight + 1)`.
    scaled_load: u128,
    /// `1000 × the total weight` of the peers not `down`.
    scaled_weight: u128,
}

impl Bound {
    fn measure(peers: &[Peer], factor: u32) -> Self {
        let (in_flight, weight) =
            (peers.iter().filter(|peer| !peer.is_down())).fold((0u64, 0u64), |(n, w), peer| {
                (
                    n + u64::from(peer.state().in_flight()),
                    w + u64::from(peer.weight()),
                )
            });
        Self {
            scaled_load: u128::from(factor) * u128::from(in_flight + 1),
            scaled_weight: 1000 * u128::from(weight.max(1)),
        }
    }

    /// The most attempts a peer of `weight` may have in flight before this one.
    fn capacity(&self, weight: u32) -> u128 {
        (self.scaled_load * u128::from(weight)).div_ceil(self.scaled_weight)
    }

    fn admits(&self, peer: &Peer) -> bool {
        u128::from(peer.state().in_flight()) < self.capacity(peer.weight())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    hash: u32,
    /// The point's `server` text, numbered as in `server_of`.
    server: u32,
}

/// Splits a `server` address as nginx does for the ring: `(host, port)`.
fn host_and_port(server: &str) -> (&str, &str) {
    if server
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("unix:"))
    {
        return (&server[5..], "");
    }
    let digits = server.bytes().rev().take_while(u8::is_ascii_digit).count();
    let split = server.len() - digits;
    match server[..split].strip_suffix(':') {
        Some(host) => (host, &server[split..]),
        None => (server, ""),
    }
}

impl ConsistentHash {
    pub fn new(peers: &[Peer]) -> Self {
        let mut names: Vec<&str> = Vec::new();
        let server_of: Box<[u32]> = peers
            .iter()
            .map(
                |peer| match names.iter().position(|&n| n == peer.server()) {
                    Some(n) => n as u32,
                    None => {
                        names.push(peer.server());
                        (names.len() - 1) as u32
                    }
                },
            )
            .collect();
        let mut points = Vec::new();
        for (peer, &server) in peers.iter().zip(server_of.iter()) {
            let (host, port) = host_and_port(peer.server());
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(&[0]);
            base.update(port.as_bytes());
            let mut prev: u32 = 0;
            for _ in 0..peer.weight() * POINTS_PER_WEIGHT {
                let mut point = base.clone();
                point.update(&prev.to_le_bytes());
                prev = point.finalize();
                points.push(Point { hash: prev, server });
            }
        }
        // Stable: of two servers whose points collide, the one written first keeps the point
        // (nginx's qsort leaves that order unspecified; with 32-bit hashes it is rare).
        points.sort_by_key(|point| point.hash);
        points.dedup_by_key(|point| point.hash);
        Self {
            points: points.into_boxed_slice(),
            server_of,
            round_robin: SmoothWeighted::new(peers),
            bounded: None,
        }
    }

    /// `bounded=factor`, the factor in thousandths (`None`: plain nginx).
    pub fn bounded(mut self, factor: Option<u32>) -> Self {
        self.bounded = factor;
        self
    }

    /// The position of the first point at or after `hash` (`points.len()` past the last).
    fn first_at_or_after(&self, hash: u32) -> usize {
        self.points.partition_point(|point| point.hash < hash)
    }
}

impl Balancer for ConsistentHash {
    fn pick(&mut self, peers: &[Peer], ctx: &mut PickContext<'_>) -> Option<usize> {
        let mut walk = ctx.tried.walk();
        let key = ctx.key.filter(|key| !key.is_empty());
        let Some(key) = key.filter(|_| walk.steps <= MAX_WALK && !self.points.is_empty()) else {
            return self.round_robin.pick(peers, ctx);
        };
        if !walk.started {
            walk.started = true;
            walk.position = self.first_at_or_after(crc32fast::hash(key)) as u32;
        }
        let Self {
            points,
            server_of,
            round_robin,
            bounded,
        } = self;
        let bound = bounded.map(|factor| Bound::measure(peers, factor));
        let admits = |peer: &Peer| bound.is_none_or(|bound| bound.admits(peer));
        loop {
            let server = points[walk.position as usize % points.len()].server;
            let on_point = |i: usize, peer: &Peer| server_of[i] == server && admits(peer);
            if let Some(i) = round_robin.pick_among(peers, ctx, on_point) {
                ctx.tried.set_walk(walk);
                return Some(i);
            }
            walk.position = walk.position.wrapping_add(1);
            walk.steps += 1;
            if walk.steps > MAX_WALK {
                ctx.tried.set_walk(walk);
                let under_bound = |_: usize, peer: &Peer| admits(peer);
                return (round_robin.pick_among(peers, ctx, under_bound))
                    .or_else(|| round_robin.pick(peers, ctx));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::upstream::balancer::hash::tests::bitwise_crc32;
    use crate::upstream::balancer::tests::{key_order, letter, peers, peers_with};
    use crate::upstream::{PeerGuard, Tried};

    fn order(balancer: &mut ConsistentHash, peers: &[Peer], key: &str) -> String {
        key_order(balancer, peers, key)
    }

    /// The peer a new request with `key` gets.
    fn first(balancer: &mut ConsistentHash, peers: &[Peer], key: &str) -> char {
        let mut tried = Tried::new();
        let mut ctx = PickContext::new(&mut tried, Instant::now());
        ctx.key = Some(key.as_bytes());
        letter(balancer.pick(peers, &mut ctx).expect("a peer"))
    }

    /// nginx's ring written out independently of the code above: each point is the CRC-32
    /// (bit by bit) of the whole byte string `host NUL port prev_le`, not a cloned CRC state;
    /// the lookup is a linear scan. `servers` are `(address text, weight)`; returns the index
    /// into `servers` that `key` lands on.
    fn reference(servers: &[(&str, u32)], key: &str) -> usize {
        let mut ring: Vec<(u32, usize)> = Vec::new();
        for (s, &(text, weight)) in servers.iter().enumerate() {
            let (host, port) = match text.rfind(':') {
                Some(colon) if text[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
                    (&text[..colon], &text[colon + 1..])
                }
                _ => (text, ""),
            };
            let mut prev = 0u32;
            for _ in 0..weight * 160 {
                let mut bytes = format!("{host}\0{port}").into_bytes();
                bytes.extend_from_slice(&prev.to_le_bytes());
                prev = bitwise_crc32(&bytes);
                ring.push((prev, s));
            }
        }
        ring.sort_by_key(|&(hash, _)| hash);
        ring.dedup_by_key(|&mut (hash, _)| hash);
        let hash = bitwise_crc32(key.as_bytes());
        let at = ring.iter().find(|&&(point, _)| point >= hash);
        at.unwrap_or(&ring[0]).1
    }

    #[test]
    fn server_text_splits_as_nginx_splits_it() {
        let cases = [
            ("127.0.0.1:8080", ("127.0.0.1", "8080")),
            ("backend", ("backend", "")),
            ("backend:", ("backend", "")),
            ("app.example.com:80", ("app.example.com", "80")),
            ("[::1]:3000", ("[::1]", "3000")),
            ("[::1]", ("[::1]", "")),
            ("8080", ("8080", "")),
            ("unix:/tmp/s", ("/tmp/s", "")),
        ];
        for (text, want) in cases {
            assert_eq!(host_and_port(text), want, "{text}");
        }
    }

    #[test]
    fn ring_has_160_points_per_weight() {
        let balancer = ConsistentHash::new(&peers(&[1, 2, 1]));
        assert_eq!(balancer.points.len(), 4 * 160);
        assert!(balancer.points.windows(2).all(|w| w[0].hash < w[1].hash));
        // The first point of 127.0.0.1:1: crc32("127.0.0.1" NUL "1" 00 00 00 00).
        let first = bitwise_crc32(b"127.0.0.1\x001\x00\x00\x00\x00");
        assert!(
            balancer
                .points
                .iter()
                .any(|p| p.hash == first && p.server == 0)
        );
    }

    #[test]
    fn keys_land_where_a_reference_ring_puts_them() {
        let weight_sets: [&[u32]; 3] = [&[1, 1, 1], &[1, 2, 1], &[3, 1, 1, 1, 2]];
        for weights in weight_sets {
            let peers = peers(weights);
            let names: Vec<String> = peers.iter().map(|p| p.server().to_owned()).collect();
            let servers: Vec<(&str, u32)> = names
                .iter()
                .map(String::as_str)
                .zip(weights.iter().copied())
                .collect();
            let mut balancer = ConsistentHash::new(&peers);
            for n in 0..300 {
                let key = format!("/object/{n}");
                let want = letter(reference(&servers, &key));
                assert_eq!(
                    first(&mut balancer, &peers, &key),
                    want,
                    "{key} {weights:?}"
                );
            }
        }
    }

    #[test]
    fn literal_mappings() {
        // Worked out with a separate script implementing nginx's ring over zlib's crc32.
        let peers = peers(&[1, 1, 1]);
        let mut balancer = ConsistentHash::new(&peers);
        let cases = [("/a", 'b'), ("/c", 'c'), ("/e", 'b'), ("/g", 'c')];
        for (key, want) in cases {
            assert_eq!(first(&mut balancer, &peers, key), want, "{key}");
        }
        // server 10.0.0.1:8080; server 10.0.0.2:8080; server 10.0.0.3:8080 weight=2;
        let peers = peers_with(&[1, 1, 2], |i, spec| {
            spec.name = format!("10.0.0.{}:8080", i + 1);
        });
        let mut balancer = ConsistentHash::new(&peers);
        let cases = [
            ("/a", 'a'),
            ("/d", 'b'),
            ("/f", 'c'),
            ("/h", 'a'),
            ("/i", 'b'),
            ("/j", 'c'),
        ];
        for (key, want) in cases {
            assert_eq!(first(&mut balancer, &peers, key), want, "{key}");
        }
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let four = peers(&[1, 1, 1, 1]);
        // The same servers without 127.0.0.1:3 (c); positions shift, names do not.
        let three: Vec<Peer> = peers(&[1, 1, 1, 1])
            .into_iter()
            .filter(|p| p.server() != "127.0.0.1:3")
            .collect();
        let mut before = ConsistentHash::new(&four);
        let mut after = ConsistentHash::new(&three);
        let mut moved = 0;
        let keys = 2000;
        for n in 0..keys {
            let key = format!("/k/{n}");
            let was = four[position(&mut before, &four, &key)].server().to_owned();
            let now = three[position(&mut after, &three, &key)]
                .server()
                .to_owned();
            if was == "127.0.0.1:3" {
                moved += 1;
                assert_ne!(now, was);
            } else {
                assert_eq!(now, was, "{key} moved though its server stayed");
            }
        }
        // About a quarter of the keys were on the removed server.
        assert!(
            (keys / 8..keys / 2).contains(&moved),
            "{moved} of {keys} moved"
        );
    }

    fn position(balancer: &mut ConsistentHash, peers: &[Peer], key: &str) -> usize {
        let c = first(balancer, peers, key);
        (c as u8 - b'a') as usize
    }

    #[test]
    fn peers_of_one_server_line_share_its_points_by_round_robin() {
        // a and b are one `server` name resolved to two addresses; c another line.
        let peers = peers_with(&[1, 1, 1], |i, spec| {
            if i < 2 {
                spec.name = "app.internal:80".to_owned();
            }
        });
        let mut balancer = ConsistentHash::new(&peers);
        assert_eq!(
            balancer.points.len(),
            2 * 160,
            "a and b repeat the same points"
        );
        let key = (0..100)
            .map(|n| format!("/{n}"))
            .find(|key| first(&mut balancer, &peers, key) != 'c')
            .expect("a key on app.internal");
        // The lookup above took a; then b and a alternate.
        let got: String = (0..4).map(|_| first(&mut balancer, &peers, &key)).collect();
        assert_eq!(got, "baba");
    }

    #[test]
    fn an_unavailable_server_sends_its_keys_to_the_next_point() {
        let peers = peers(&[1, 1, 1]);
        let with_b_down = peers_with(&[1, 1, 1], |i, spec| spec.down = i == 1);
        let mut up = ConsistentHash::new(&peers);
        let mut down = ConsistentHash::new(&with_b_down);
        for n in 0..300 {
            let key = format!("/{n}");
            let (before, during) = (
                first(&mut up, &peers, &key),
                first(&mut down, &with_b_down, &key),
            );
            if before == 'b' {
                // The next point's server, as if b's points were gone.
                let servers = [("127.0.0.1:1", 1), ("127.0.0.1:3", 1)];
                let want = ['a', 'c'][reference(&servers, &key)];
                assert_eq!(during, want, "{key}");
            } else {
                assert_eq!(during, before, "{key}");
            }
        }
    }

    #[test]
    fn a_request_tries_every_peer_once() {
        let peers = peers(&[1, 1, 1, 1]);
        let mut balancer = ConsistentHash::new(&peers);
        for key in ["/a", "/b", "x"] {
            let mut got: Vec<char> = order(&mut balancer, &peers, key).chars().collect();
            got.sort_unstable();
            assert_eq!(got, ['a', 'b', 'c', 'd'], "{key}");
        }
    }

    #[test]
    fn no_key_is_round_robin() {
        let peers = peers(&[1, 1]);
        let mut balancer = ConsistentHash::new(&peers);
        let got = crate::upstream::balancer::round_robin::tests::sequence(&mut balancer, &peers, 4);
        assert_eq!(got, "a b a b");
        let empty: String = (0..2).map(|_| first(&mut balancer, &peers, "")).collect();
        assert_eq!(empty, "ab");
    }

    // === bounded= ===

    /// Picks `n` requests for `key`, each kept in flight; the in-flight count per peer after.
    fn hold(balancer: &mut ConsistentHash, peers: &[Peer], key: &str, n: usize) -> Vec<u32> {
        let guards: Vec<PeerGuard> = (0..n)
            .map(|_| {
                let i = (first(balancer, peers, key) as u8 - b'a') as usize;
                PeerGuard::new(&peers[i], false, Instant::now())
            })
            .collect();
        let counts = peers.iter().map(|p| p.state().in_flight()).collect();
        drop(guards);
        counts
    }

    #[test]
    fn bounded_sends_every_key_where_nginx_does_while_no_peer_is_over_its_bound() {
        let peers = peers(&[1, 2, 1, 1]);
        let mut plain = ConsistentHash::new(&peers);
        let mut bounded = ConsistentHash::new(&peers).bounded(Some(1250));
        for n in 0..300 {
            let key = format!("/object/{n}");
            let want = first(&mut plain, &peers, &key);
            assert_eq!(first(&mut bounded, &peers, &key), want, "{key}");
        }
    }

    #[test]
    fn a_hot_key_spills_over_and_no_peer_exceeds_factor_times_the_average() {
        let peers = peers(&[1, 1, 1, 1]);
        let owner = first(&mut ConsistentHash::new(&peers), &peers, "/hot");
        let counts = hold(&mut ConsistentHash::new(&peers), &peers, "/hot", 40);
        let mut want = vec![0; 4];
        want[(owner as u8 - b'a') as usize] = 40;
        assert_eq!(counts, want, "plain consistent hashing: all on one peer");

        for (factor, limit) in [(1250, 13), (1000, 10), (2000, 20)] {
            let mut balancer = ConsistentHash::new(&peers).bounded(Some(factor));
            let counts = hold(&mut balancer, &peers, "/hot", 40);
            // ceil(factor × 40 / 4); the owner is filled up to it first.
            assert!(counts.iter().all(|&c| c <= limit), "{factor}: {counts:?}");
            assert_eq!(
                counts[(owner as u8 - b'a') as usize],
                limit,
                "{factor}: {counts:?}"
            );
            assert_eq!(counts.iter().sum::<u32>(), 40);
        }
    }

    #[test]
    fn the_bound_follows_the_weights() {
        // a weighs 3 of 4: it may hold ceil(1.25 × 3/4 × 20) = 19 of 20, b ceil(1.25 × 20/4) = 7.
        let peers = peers(&[3, 1]);
        let mut balancer = ConsistentHash::new(&peers).bounded(Some(1250));
        let key = (0..100)
            .map(|n| format!("/{n}"))
            .find(|key| first(&mut ConsistentHash::new(&peers), &peers, key) == 'b')
            .expect("a key on b");
        let counts = hold(&mut balancer, &peers, &key, 20);
        assert_eq!(counts, [13, 7]);
    }

    #[test]
    fn down_peers_do_not_count_towards_the_average() {
        let peers = peers_with(&[1, 1, 1, 1], |i, spec| spec.down = i >= 2);
        let mut balancer = ConsistentHash::new(&peers).bounded(Some(1000));
        let counts = hold(&mut balancer, &peers, "/hot", 10);
        assert_eq!(counts, [5, 5, 0, 0]);
    }
}
