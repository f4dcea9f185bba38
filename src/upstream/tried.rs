//! What one request's attempts leave for its next pick: the peers already tried (nginx's `tried`
//! bitmap) and how far a hash walk has gone.

/// A set of peer indexes (as [`Peer::index`](super::Peer::index) numbers them) that one request
/// has tried, plus whether the request has moved on to the group's backup peers.
///
/// Indexes below 64 live inline; only a group with more peers allocates, and only when a peer
/// past the 64th is tried. Create one per request and pass it to every
/// [`UpstreamGroup::pick`](super::UpstreamGroup::pick) of that request; it is only meaningful
/// for the group (of the snapshot) it was used with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tried {
    low: u64,
    high: Vec<u64>,
    on_backups: bool,
    walk: Walk,
}

/// How far the balancers that walk a sequence of candidates (`ip_hash`, `hash`, `random`) got
/// for one request, kept between its attempts as nginx keeps it in the request's peer data. Each
/// balancer reads only the fields it needs; a fresh request starts from all zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Walk {
    /// The walk has begun (`position` holds its state, not the zero default).
    pub started: bool,
    /// `ip_hash`: the running hash; `hash`: the sum of the hashes so far; consistent `hash`:
    /// the position on the ring.
    pub position: u32,
    /// `hash`: how many times the key was hashed (the prefix of the next rehash).
    pub rehash: u32,
    /// Candidates rejected so far; past [`MAX_WALK`](super::balancer::MAX_WALK) the request
    /// falls back to round robin for good.
    pub steps: u32,
}

impl Walk {
    const NEW: Self = Self {
        started: false,
        position: 0,
        rehash: 0,
        steps: 0,
    };
}

impl Tried {
    pub const fn new() -> Self {
        Self {
            low: 0,
            high: Vec::new(),
            on_backups: false,
            walk: Walk::NEW,
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        match index.checked_sub(64) {
            None => self.low & (1 << index) != 0,
            Some(rest) => self
                .high
                .get(rest / 64)
                .is_some_and(|word| word & (1 << (rest % 64)) != 0),
        }
    }

    /// Marks `index` as tried. `pick` does this for the peer it returns.
    pub fn insert(&mut self, index: usize) {
        match index.checked_sub(64) {
            None => self.low |= 1 << index,
            Some(rest) => {
                let word = rest / 64;
                if self.high.len() <= word {
                    self.high.resize(word + 1, 0);
                }
                self.high[word] |= 1 << (rest % 64);
            }
        }
    }

    /// How many peers were tried.
    pub fn count(&self) -> usize {
        let high: u32 = self.high.iter().map(|word| word.count_ones()).sum();
        (self.low.count_ones() + high) as usize
    }

    /// True once no primary peer was left for this request: nginx then switches the request to
    /// the backup list for good, and later picks of the request consider only backups.
    pub fn on_backups(&self) -> bool {
        self.on_backups
    }

    pub(crate) fn switch_to_backups(&mut self) {
        self.on_backups = true;
    }

    pub(crate) fn walk(&self) -> Walk {
        self.walk
    }

    pub(crate) fn set_walk(&mut self, walk: Walk) {
        self.walk = walk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_indexes_inline_and_beyond_64() {
        let indexes = [0, 1, 63, 64, 65, 127, 128, 200];
        let mut tried = Tried::new();
        for (n, &i) in indexes.iter().enumerate() {
            assert!(!tried.contains(i), "{i} before insert");
            tried.insert(i);
            assert!(tried.contains(i), "{i} after insert");
            assert_eq!(tried.count(), n + 1);
        }
        for i in 0..256 {
            assert_eq!(tried.contains(i), indexes.contains(&i), "index {i}");
        }
        tried.insert(200); // idempotent
        assert_eq!(tried.count(), indexes.len());
    }

    #[test]
    fn small_indexes_do_not_allocate() {
        let mut tried = Tried::new();
        for i in 0..64 {
            tried.insert(i);
        }
        assert_eq!(tried.high.capacity(), 0);
        assert!(!tried.contains(64));
        assert_eq!(tried.high.capacity(), 0);
    }
}
