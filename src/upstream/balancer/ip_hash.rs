//! nginx's `ip_hash` (`ngx_http_upstream_get_ip_hash_peer`).
//!
//! The client address is hashed byte by byte: IPv4 clients by their first three octets (one
//! /24 network goes to one peer), IPv6 clients by all sixteen bytes, and clients without an IP
//! address by three zero bytes. Starting from 89, each byte makes `hash = (hash * 113 + byte) %
//! 6271`; the hash modulo the total weight, laid over the peers in config order (`down` ones
//! included, so marking a peer down moves only its own clients), names the peer.
//!
//! When that peer may not take the attempt (tried, down, failed, at `max_conns`), the same
//! bytes are hashed again on top of the last hash, and so on: up to 20 more times per request,
//! then the request falls back to round robin. A request's retry continues from the hash of
//! the peer it last got, so a client's second choice is stable too.

use std::net::IpAddr;

use super::round_robin::SmoothWeighted;
use super::{Balancer, MAX_WALK, Peer, PickContext, WeightRanges};

/// nginx's starting value for every request.
const SEED: u32 = 89;

/// Client address hashing, falling back to round robin.
#[derive(Debug)]
pub struct IpHash {
    ranges: WeightRanges,
    fallback: SmoothWeighted,
}

impl IpHash {
    pub fn new(peers: &[Peer]) -> Self {
        Self {
            ranges: WeightRanges::new(peers),
            fallback: SmoothWeighted::new(peers),
        }
    }
}

/// The bytes nginx hashes for a client, and how many of them count.
fn client_bytes(ip: Option<IpAddr>) -> ([u8; 16], usize) {
    let mut bytes = [0; 16];
    match ip {
        Some(IpAddr::V4(v4)) => {
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, 3)
        }
        Some(IpAddr::V6(v6)) => (v6.octets(), 16),
        None => (bytes, 3),
    }
}

/// One round of nginx's ip_hash over `bytes`, continuing from `hash`.
fn rehash(mut hash: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        hash = (hash * 113 + u32::from(byte)) % 6271;
    }
    hash
}

impl Balancer for IpHash {
    fn pick(&mut self, peers: &[Peer], ctx: &mut PickContext<'_>) -> Option<usize> {
        let mut walk = ctx.tried.walk();
        if walk.steps > MAX_WALK || peers.len() < 2 {
            return self.fallback.pick(peers, ctx);
        }
        if !walk.started {
            walk.started = true;
            walk.position = SEED;
        }
        let (bytes, len) = client_bytes(ctx.client_ip);
        let mut hash = walk.position;
        loop {
            hash = rehash(hash, &bytes[..len]);
            let i = self.ranges.find(u64::from(hash));
            if ctx.is_eligible_now(&peers[i]) {
                // nginx keeps the hash only when it found a peer.
                walk.position = hash;
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
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use tokio::time::Instant;

    use super::*;
    use crate::upstream::Tried;
    use crate::upstream::balancer::tests::{letter, peers, peers_with};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The peers one request from `client` tries in turn until none is left.
    fn order(balancer: &mut IpHash, peers: &[Peer], client: Option<IpAddr>) -> String {
        let mut tried = Tried::new();
        let mut order = String::new();
        loop {
            let mut ctx = PickContext::new(&mut tried, Instant::now());
            ctx.client_ip = client;
            let Some(i) = balancer.pick(peers, &mut ctx) else {
                return order;
            };
            order.push(letter(i));
            tried.insert(i);
        }
    }

    #[test]
    fn hashes_match_nginx_arithmetic() {
        // Worked by hand: 89*113+10 = 10067 % 6271 = 3796; 3796*113+0 = 428948 % 6271 = 2520;
        // 2520*113+0 = 284760 % 6271 = 2565.
        assert_eq!(rehash(SEED, &[10, 0, 0]), 2565);
        // 89*113+192 = 10249 % 6271 = 3978; 3978*113+168 = 449682 % 6271 = 4441;
        // 4441*113+1 = 501834 % 6271 = 154.
        assert_eq!(rehash(SEED, &[192, 168, 1]), 154);
        assert_eq!(client_bytes(Some(ip("192.168.1.77"))).1, 3);
        assert_eq!(client_bytes(Some(ip("::1"))).1, 16);
        assert_eq!(client_bytes(None), ([0; 16], 3));
    }

    #[test]
    fn a_client_network_sticks_to_one_peer() {
        // 2565 % 3 = 0 -> a; 154 % 3 = 1 -> b.
        let peers = peers(&[1, 1, 1]);
        let mut balancer = IpHash::new(&peers);
        for host in 0..=255 {
            let client = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, host)));
            assert_eq!(
                order(&mut balancer, &peers, client).chars().next(),
                Some('a')
            );
        }
        let client = Some(ip("192.168.1.9"));
        assert_eq!(
            order(&mut balancer, &peers, client).chars().next(),
            Some('b')
        );
    }

    #[test]
    fn weights_widen_a_peers_share_of_the_hash_space() {
        // Total weight 5: a owns 0..1, b 1..5. 2565 % 5 = 0 -> a; 154 % 5 = 4 -> b.
        let peers = peers(&[1, 4]);
        let mut balancer = IpHash::new(&peers);
        assert_eq!(order(&mut balancer, &peers, Some(ip("10.0.0.1"))), "ab");
        assert_eq!(order(&mut balancer, &peers, Some(ip("192.168.1.1"))), "ba");
    }

    #[test]
    fn a_retry_rehashes_from_the_last_hash() {
        // 10.0.0.x: 2565 -> a (2565 % 3 = 0). Rehash: 2565*113+10 = 289855 % 6271 = 1389;
        // 1389*113 = 156957 % 6271 = 182; 182*113 = 20566 % 6271 = 1753; 1753 % 3 = 1 -> b.
        // Then only c is left; the walk finds it within 20 steps (or round robin would).
        let peers = peers(&[1, 1, 1]);
        let mut balancer = IpHash::new(&peers);
        assert_eq!(order(&mut balancer, &peers, Some(ip("10.0.0.1"))), "abc");
    }

    #[test]
    fn a_down_peer_keeps_its_place_so_other_clients_do_not_move() {
        // b down: 10.0.0.x (hash 2565 -> a) stays on a. 192.168.1.x (154 -> b) moves on:
        // rehashed 5654 % 3 = 2 -> c; its retry rehashes 1196 -> c (tried), 723 -> a.
        let peers = peers_with(&[1, 1, 1], |i, spec| spec.down = i == 1);
        let mut balancer = IpHash::new(&peers);
        assert_eq!(order(&mut balancer, &peers, Some(ip("10.0.0.1"))), "ac");
        assert_eq!(order(&mut balancer, &peers, Some(ip("192.168.1.1"))), "ca");
    }

    #[test]
    fn ipv6_clients_hash_all_sixteen_bytes() {
        let peers = peers(&[1, 1, 1, 1, 1, 1, 1, 1]);
        let mut balancer = IpHash::new(&peers);
        let first = |balancer: &mut IpHash, ip: Ipv6Addr| {
            order(balancer, &peers, Some(IpAddr::V6(ip))).chars().next()
        };
        let want = |ip: Ipv6Addr| {
            let hash = rehash(SEED, &ip.octets());
            Some(letter(hash as usize % 8))
        };
        let spread: std::collections::HashSet<_> = (0..64u16)
            .map(|n| {
                let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n);
                assert_eq!(first(&mut balancer, ip), want(ip), "{ip}");
                first(&mut balancer, ip)
            })
            .collect();
        assert!(spread.len() > 1, "the last bytes count for IPv6");
    }

    #[test]
    fn after_twenty_rejected_candidates_round_robin_takes_over() {
        // Every peer down: the first candidate and 20 more are rejected, then round robin
        // finds nothing either.
        let peers = peers_with(&[1, 1], |_, spec| spec.down = true);
        let mut balancer = IpHash::new(&peers);
        let mut tried = Tried::new();
        let mut ctx = PickContext::new(&mut tried, Instant::now());
        ctx.client_ip = Some(ip("10.0.0.1"));
        assert_eq!(balancer.pick(&peers, &mut ctx), None);
        assert_eq!(tried.walk().steps, MAX_WALK + 1);
    }

    #[test]
    fn one_peer_is_round_robin() {
        let peers = peers(&[1]);
        let mut balancer = IpHash::new(&peers);
        assert_eq!(order(&mut balancer, &peers, Some(ip("10.0.0.1"))), "a");
    }
}
