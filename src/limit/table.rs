//! A zone's table of keys: what nginx keeps in a shared-memory zone (a red-black tree of
//! nodes and an LRU queue, allocated from a slab pool of the zone's size), here kept in the
//! process (imbang's workers are threads) and split into shards, each behind its own lock,
//! so that workers looking up different keys rarely meet.
//!
//! **Size.** A zone holds as many keys as nginx's of the same size: each node is charged what
//! nginx's slab allocator gives it, a power of two of at least 8 bytes (a whole number of
//! 4 KiB pages beyond 2 KiB) for its tree node, its state and its key, and the zone has one
//! page of 4096 bytes for every 4120 of its size (nginx's pages and their descriptors). A
//! `limit_req` node is 80 bytes plus the key (128 with `$binary_remote_addr` of IPv4), so
//! `10m` keeps 81,440 IPv4 addresses; a `limit_conn` node is 36 bytes plus the key (64), about
//! 162,000. The budget is divided equally among the shards (one shard per 64 pages, at most
//! 16), so a zone fills per shard: a shard evicts its least recently used key when it is
//! full, as nginx's zone does when the whole zone is.

use std::sync::{Mutex, MutexGuard};

use crate::FastMap;

/// No node (the end of the LRU list).
const NIL: u32 = u32::MAX;
/// nginx's page and what describes it in the slab pool.
const PAGE: u64 = 4096;
const PAGE_COST: u64 = 4096 + 24;
const MAX_SHARDS: u64 = 16;

/// What nginx's slab allocator takes for `n` bytes.
pub fn slab_chunk(n: usize) -> usize {
    if n <= PAGE as usize / 2 {
        n.next_power_of_two().max(8)
    } else {
        n.div_ceil(PAGE as usize) * PAGE as usize
    }
}

pub struct Table<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    /// Bytes a node takes besides its key (nginx's tree node and state).
    node_bytes: usize,
    /// The zone's size as configured (a zone is kept across reloads when this is unchanged).
    pub size: u64,
}

pub struct Shard<V> {
    map: FastMap<Box<[u8]>, u32>,
    nodes: Vec<Node<V>>,
    free: Vec<u32>,
    /// Most recently used first.
    head: u32,
    tail: u32,
    used: usize,
    budget: usize,
    node_bytes: usize,
}

struct Node<V> {
    key: Box<[u8]>,
    prev: u32,
    next: u32,
    value: V,
}

impl<V> Table<V> {
    pub fn new(size: u64, node_bytes: usize) -> Self {
        let pages = (size / PAGE_COST).max(1);
        let mut shards = 1;
        while shards * 2 <= MAX_SHARDS && shards * 2 * 64 <= pages {
            shards *= 2;
        }
        let budget = (pages * PAGE / shards) as usize;
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: FastMap::default(),
                        nodes: Vec::new(),
                        free: Vec::new(),
                        head: NIL,
                        tail: NIL,
                        used: 0,
                        budget,
                        node_bytes,
                    })
                })
                .collect(),
            node_bytes,
            size,
        }
    }

    /// The shard `key` lives in, locked.
    pub fn shard(&self, key: &[u8]) -> (usize, MutexGuard<'_, Shard<V>>) {
        let i = match self.shards.len() {
            1 => 0,
            n => {
                use std::hash::BuildHasher;
                let h = foldhash::fast::FixedState::with_seed(0x1b873593).hash_one(key);
                (h >> 32) as usize & (n - 1)
            }
        };
        (i, self.lock(i))
    }

    pub fn lock(&self, i: usize) -> MutexGuard<'_, Shard<V>> {
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys the zone holds now (all shards).
    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes a node with `key_len` bytes of key is charged.
    pub fn cost(&self, key_len: usize) -> usize {
        slab_chunk(self.node_bytes + key_len)
    }
}

impl<V> Shard<V> {
    /// The node of `key`, moved to the front of the LRU list when `touch`.
    pub fn find(&mut self, key: &[u8], touch: bool) -> Option<u32> {
        let i = *self.map.get(key)?;
        if touch && self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        Some(i)
    }

    pub fn get(&mut self, i: u32) -> &mut V {
        &mut self.nodes[i as usize].value
    }

    /// The least recently used node.
    pub fn last(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// Whether a node for `key_len` bytes of key fits without evicting.
    pub fn fits(&self, key_len: usize) -> bool {
        self.used + slab_chunk(self.node_bytes + key_len) <= self.budget
    }

    /// Adds `key` at the front (the caller made room: see [`Shard::fits`]).
    pub fn insert(&mut self, key: &[u8], value: V) -> u32 {
        self.used += slab_chunk(self.node_bytes + key.len());
        let node = Node {
            key: key.into(),
            prev: NIL,
            next: NIL,
            value,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.map.insert(key.into(), i);
        self.push_front(i);
        i
    }

    pub fn remove(&mut self, i: u32) {
        self.unlink(i);
        let key = std::mem::take(&mut self.nodes[i as usize].key);
        self.used -= slab_chunk(self.node_bytes + key.len());
        self.map.remove(&key);
        self.free.push(i);
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.nodes[o as usize].prev = i,
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_10m_zone_keeps_as_many_ipv4_keys_as_nginx_s() {
        // limit_req: 80 bytes + 4 → 128-byte chunks; 2545 pages of 32.
        let t: Table<()> = Table::new(10 * 1024 * 1024, 80);
        assert_eq!(t.cost(4), 128);
        let total: usize = (0..t.shards.len()).map(|i| t.lock(i).budget).sum();
        assert_eq!(total / 128, 81_440);
        // limit_conn: 36 + 4 → 64.
        assert_eq!(slab_chunk(40), 64);
        assert_eq!(slab_chunk(3000), 4096);
    }

    #[test]
    fn a_full_shard_evicts_its_least_recently_used_key() {
        let t: Table<u32> = Table::new(32 * 1024, 80);
        let (_, mut s) = t.shard(b"a");
        let cap = s.budget / 128;
        for k in 0..cap as u32 {
            assert!(s.fits(4));
            s.insert(&k.to_be_bytes(), k);
        }
        assert!(!s.fits(4));
        // Touch key 0: key 1 is now the oldest.
        s.find(&0u32.to_be_bytes(), true).unwrap();
        let last = s.last().unwrap();
        assert_eq!(*s.get(last), 1);
        s.remove(last);
        assert!(s.fits(4));
        assert!(s.find(&1u32.to_be_bytes(), false).is_none());
    }
}
