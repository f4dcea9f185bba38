//! nginx's `ngx_http_limit_conn_module` state: how many requests (or, for the stream module,
//! connections) of each key are in progress. A key's node goes when its count falls to zero;
//! unlike `limit_req`'s there is no eviction: a full zone refuses new keys, as nginx's does.
//!
//! The API is a plain key and a limit in, a guard out, so that any protocol can use it:
//! [`ConnTable::acquire`]. HTTP renders the zone's key with the request's variables
//! ([`super::RouteLimits`]); the stream module can render its own.

use std::sync::Arc;

use super::table::Table;

/// nginx's `ngx_http_limit_conn_node_t` after the tree node's fields: 32 + 4 bytes and the key.
pub const NODE_BYTES: usize = 36;
/// nginx keeps at most 255 bytes of a `limit_conn` key.
pub const MAX_KEY: usize = 255;

/// A `limit_conn_zone`'s table (kept across reloads while its name and size stay).
pub type ConnTable = Table<u32>;

/// What [`ConnTable::acquire`] did.
pub enum Acquired {
    /// Counted: the guard uncounts on drop.
    Held(ConnGuard),
    /// The key already has `limit` in progress.
    Limited,
    /// A new key and the zone is full (nginx: "could not allocate node").
    NoRoom,
    /// An empty key (not limited, as in nginx) or one over 255 bytes (logged, not limited).
    Skipped,
}

/// One request (or connection) counted against its key until dropped.
pub struct ConnGuard {
    table: Arc<ConnTable>,
    shard: usize,
    node: u32,
}

impl std::fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnGuard")
            .field("node", &self.node)
            .finish()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut shard = self.table.lock(self.shard);
        let count = shard.get(self.node);
        *count -= 1;
        if *count == 0 {
            shard.remove(self.node);
        }
    }
}

/// Counts one more in progress for `key` unless it has `limit` already.
pub fn acquire(table: &Arc<ConnTable>, key: &[u8], limit: u32) -> Acquired {
    if key.is_empty() || key.len() > MAX_KEY {
        return Acquired::Skipped;
    }
    let (shard_index, mut shard) = table.shard(key);
    let node = match shard.find(key, false) {
        Some(i) => {
            let count = shard.get(i);
            if *count >= limit {
                return Acquired::Limited;
            }
            *count += 1;
            i
        }
        None if shard.fits(key.len()) => shard.insert(key, 1),
        None => return Acquired::NoRoom,
    };
    drop(shard);
    Acquired::Held(ConnGuard {
        table: table.clone(),
        shard: shard_index,
        node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_up_to_its_limit_and_frees_on_drop() {
        let t = Arc::new(ConnTable::new(1 << 20, NODE_BYTES));
        let a = acquire(&t, b"k", 2);
        let b = acquire(&t, b"k", 2);
        assert!(matches!(a, Acquired::Held(_)) && matches!(b, Acquired::Held(_)));
        assert!(matches!(acquire(&t, b"k", 2), Acquired::Limited));
        assert!(matches!(acquire(&t, b"other", 2), Acquired::Held(_)));
        drop(a);
        assert!(matches!(acquire(&t, b"k", 2), Acquired::Held(_)));
        drop(b);
        assert!(t.is_empty(), "every guard dropped: no key left");
        assert!(matches!(acquire(&t, b"", 1), Acquired::Skipped));
    }
}
