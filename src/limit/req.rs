//! nginx's `ngx_http_limit_req_lookup` and `ngx_http_limit_req_account`: a leaky bucket per key,
//! kept in milli-requests. Each request adds 1000 to the key's excess, which drains at the
//! zone's rate; a request whose excess would pass `burst` is rejected, one whose excess passes
//! `delay` waits until it has drained back to `delay`.

use std::sync::Arc;

use super::table::Table;

/// nginx's `ngx_http_limit_req_node_t` after the tree node's fields: 32 + 48 bytes and the key.
pub const NODE_BYTES: usize = 80;

/// One key's bucket.
#[derive(Clone, Copy, Debug)]
pub struct ReqNode {
    /// Milli-requests not yet drained, as of `last`.
    excess: i64,
    /// Milliseconds (on [`super::now_ms`]'s clock) of the last update.
    last: u64,
    /// Requests between their lookup and their accounting (not expired meanwhile).
    count: u32,
}

/// What a lookup found, nginx's return codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Within the burst, and accounted (the request's last limit).
    Ok,
    /// Within the burst; accounted once every limit agreed.
    Again,
    /// Beyond the burst.
    Busy,
    /// The zone has no room for a new key, even after evicting one.
    NoRoom,
}

/// A `limit_req_zone` as one configuration sees it: its table (kept across reloads) and the
/// rate this configuration gives it.
pub struct ReqZone {
    pub name: Box<str>,
    /// Milli-requests per second.
    pub rate: i64,
    pub key: crate::vars::Template,
    pub table: Arc<Table<ReqNode>>,
}

/// nginx's drift rule: a clock seen going back more than a minute counts as 1 ms, less as 0.
fn elapsed(now: u64, last: u64) -> i64 {
    let ms = now as i64 - last as i64;
    if ms < -60000 { 1 } else { ms.max(0) }
}

impl ReqZone {
    /// nginx's `ngx_http_limit_req_lookup`: the excess `key` would have with this request, and
    /// whether that passes `burst` (both in milli-requests). `account`: this is the request's
    /// last limit, so the bucket takes the request now.
    pub fn lookup(&self, key: &[u8], burst: u64, account: bool, now: u64) -> (Found, u64) {
        let (_, mut shard) = self.table.shard(key);
        if let Some(i) = shard.find(key, true) {
            let node = shard.get(i);
            let ms = elapsed(now, node.last);
            let excess = (node.excess - self.rate.saturating_mul(ms) / 1000 + 1000).max(0);
            if excess as u64 > burst {
                return (Found::Busy, excess as u64);
            }
            if account {
                node.excess = excess;
                if ms != 0 {
                    node.last = now;
                }
                return (Found::Ok, excess as u64);
            }
            node.count += 1;
            return (Found::Again, excess as u64);
        }
        self.expire(&mut shard, 1, now);
        if !shard.fits(key.len()) {
            self.expire(&mut shard, 0, now);
            if !shard.fits(key.len()) {
                crate::log!(
                    Alert,
                    "could not allocate node in limit_req zone \"{}\"",
                    self.name
                );
                return (Found::NoRoom, 0);
            }
        }
        let node = match account {
            true => ReqNode {
                excess: 0,
                last: now,
                count: 0,
            },
            // nginx's `last = 0`: the accounting step finds it long drained.
            false => ReqNode {
                excess: 0,
                last: 0,
                count: 1,
            },
        };
        shard.insert(key, node);
        (
            match account {
                true => Found::Ok,
                false => Found::Again,
            },
            0,
        )
    }

    /// nginx's step of `ngx_http_limit_req_account` for an earlier limit whose lookup said
    /// [`Found::Again`]: the bucket takes the request; the excess it then has.
    pub fn account(&self, key: &[u8], now: u64) -> Option<u64> {
        let (_, mut shard) = self.table.shard(key);
        let i = shard.find(key, false)?;
        let node = shard.get(i);
        let ms = elapsed(now, node.last);
        let excess = (node.excess - self.rate.saturating_mul(ms) / 1000 + 1000).max(0);
        if ms != 0 {
            node.last = now;
        }
        node.excess = excess;
        node.count = node.count.saturating_sub(1);
        Some(excess as u64)
    }

    /// nginx's `ngx_http_limit_req_unlock`: an earlier limit's lookup is undone (a later one
    /// rejected the request).
    pub fn unlock(&self, key: &[u8]) {
        let (_, mut shard) = self.table.shard(key);
        if let Some(i) = shard.find(key, false) {
            let node = shard.get(i);
            node.count = node.count.saturating_sub(1);
        }
    }

    /// nginx's `ngx_http_limit_req_expire`: from the least recently used end, `n == 1` removes
    /// up to two keys idle for a minute and drained; `n == 0` first removes the oldest one
    /// whatever its state. A key between lookup and accounting stops the walk.
    fn expire(&self, shard: &mut super::table::Shard<ReqNode>, mut n: u32, now: u64) {
        while n < 3 {
            let Some(i) = shard.last() else {
                return;
            };
            let node = *shard.get(i);
            if node.count != 0 {
                return;
            }
            if n != 0 {
                let ms = (now as i64 - node.last as i64).abs();
                if ms < 60000 {
                    return;
                }
                if node.excess - self.rate.saturating_mul(ms) / 1000 > 0 {
                    return;
                }
            }
            n += 1;
            shard.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(rate: i64) -> ReqZone {
        ReqZone {
            name: "t".into(),
            rate,
            key: crate::vars::Template::compile("$remote_addr").unwrap(),
            // 64k: one shard, so that every key meets every other in the LRU list.
            table: Arc::new(Table::new(64 * 1024, NODE_BYTES)),
        }
    }

    #[test]
    fn a_burst_admits_burst_plus_one_at_once_then_one_per_period() {
        // rate=1r/s burst=3: four at once, the fifth busy; one more after a second.
        let z = zone(1000);
        let verdicts: Vec<Found> = (0..5)
            .map(|_| z.lookup(b"k", 3000, true, 10_000).0)
            .collect();
        assert_eq!(
            verdicts,
            [Found::Ok, Found::Ok, Found::Ok, Found::Ok, Found::Busy]
        );
        assert_eq!(z.lookup(b"k", 3000, true, 10_999).0, Found::Busy);
        assert_eq!(z.lookup(b"k", 3000, true, 11_000), (Found::Ok, 3000));
    }

    #[test]
    fn the_excess_drains_at_the_rate_in_milli_requests() {
        // 10r/s: 100 ms drains one request.
        let z = zone(10_000);
        assert_eq!(z.lookup(b"k", 5000, true, 1000), (Found::Ok, 0));
        assert_eq!(z.lookup(b"k", 5000, true, 1000), (Found::Ok, 1000));
        assert_eq!(z.lookup(b"k", 5000, true, 1050), (Found::Ok, 1500));
        // 950 ms drain 9.5 requests: the bucket is empty again.
        assert_eq!(z.lookup(b"k", 5000, true, 2000), (Found::Ok, 0));
    }

    #[test]
    fn idle_drained_keys_expire_when_a_new_key_comes() {
        let z = zone(1000);
        z.lookup(b"old", 0, true, 0);
        assert_eq!(z.table.len(), 1);
        z.lookup(b"new", 0, true, 60_000);
        assert_eq!(z.table.len(), 1, "the minute-old, drained key went");
    }
}
