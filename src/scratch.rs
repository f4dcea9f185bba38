//! Byte buffers for encoding message heads, reused on each worker thread instead of allocated
//! per message. A buffer goes back to its thread's free list when dropped (on whatever thread
//! that is); the list keeps a few small ones, so an idle worker holds little.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers kept per thread, and the largest kept: a head larger than this is rare and its
/// buffer is freed.
const KEEP: usize = 32;
const KEEP_CAPACITY: usize = 16 * 1024;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer of at least `capacity` bytes, from the free list when it has one.
pub struct Scratch(Vec<u8>);

impl Scratch {
    pub fn new(capacity: usize) -> Self {
        let reused = FREE.try_with(|free| free.borrow_mut().pop()).ok().flatten();
        let mut buf = reused.unwrap_or_default();
        buf.reserve(capacity);
        Self(buf)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() == 0 || buf.capacity() > KEEP_CAPACITY {
            return;
        }
        buf.clear();
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < KEEP {
                free.push(buf);
            }
        });
    }
}

impl Deref for Scratch {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_handed_out_again_empty() {
        let mut a = Scratch::new(100);
        a.extend_from_slice(b"head");
        let at = a.as_ptr();
        drop(a);
        let b = Scratch::new(10);
        assert_eq!(b.as_ptr(), at, "the same allocation");
        assert!(b.is_empty());
    }

    #[test]
    fn a_large_buffer_is_not_kept() {
        let a = Scratch::new(KEEP_CAPACITY + 1);
        drop(a);
        let b = Scratch::new(1);
        assert!(b.capacity() <= KEEP_CAPACITY);
    }
}
