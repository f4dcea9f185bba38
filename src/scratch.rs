//! Byte buffers for encoding message heads, reused on each worker thread instead of allocated
//! per message. A buffer goes back to its thread's free list when dropped (on whatever thread
//! that is); the list keeps a few small ones, so an idle worker holds little. Also the list of
//! where a parsed head's fields lie ([`Fields`]), client connections' read buffers
//! ([`read_buffer`]) and parsed heads' header maps ([`header_map`]), reused the same way.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::BytesMut;
use http::HeaderMap;
use std::ops::{Deref, DerefMut};

/// Buffers kept per thread, and the largest kept: a head larger than this is rare and its
/// buffer is freed.
const KEEP: usize = 32;
const KEEP_CAPACITY: usize = 16 * 1024;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FIELDS: RefCell<Vec<Vec<FieldAt>>> = const { RefCell::new(Vec::new()) };
    static READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// The last item on this thread's `list`, or a new one (also while the thread is exiting).
fn take<T: Default>(list: &'static LocalKey<RefCell<Vec<T>>>) -> T {
    list.try_with(|free| free.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Puts `item` on this thread's `list` unless the list holds `most` already (then it is
/// dropped).
fn keep<T>(list: &'static LocalKey<RefCell<Vec<T>>>, item: T, most: usize) {
    let _ = list.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < most {
            free.push(item);
        }
    });
}

/// Header maps kept per thread, and the most fields a kept one has room for. A proxied request
/// holds two (the client's head, the peer's) while it is in flight, so a worker with many in
/// flight needs many: with 50 (the benchmark's keep-alive load), 16 kept missed often enough
/// that glibc's slow paths cost ~700–1,100 instructions per request (callgrind, together with
/// [`KEEP_READ`]); a kept map of a usual head is about 1 KiB.
const KEEP_MAPS: usize = 64;
const KEEP_MAP_CAPACITY: usize = 64;

/// An empty header map with room for `fields`: one an earlier message on this thread finished
/// with, or a new one. A parsed head's map costs two allocations (its index and its entries);
/// reused, none.
pub fn header_map(fields: usize) -> HeaderMap {
    let mut map = take(&MAPS);
    map.reserve(fields);
    map
}

/// Hands back a message's header map once nothing reads it any more (its head was written, or
/// its request is done); kept emptied, unless it grew large.
pub fn return_header_map(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > KEEP_MAP_CAPACITY {
        return;
    }
    map.clear();
    keep(&MAPS, map, KEEP_MAPS);
}

/// Read buffers kept per thread: one per request in flight at once, at most (see
/// [`KEEP_MAPS`]); a buffer larger than [`KEEP_CAPACITY`] (grown for a long head) is freed,
/// the usual one is `client_header_buffer_size` (1 KiB).
const KEEP_READ: usize = 64;

/// An empty buffer for a request's first bytes, of at least `capacity` bytes: one that an
/// earlier request on this thread finished with, or a new one. An idle connection holds no
/// buffer (nginx frees its header buffer too); this saves allocating one per request.
pub fn read_buffer(capacity: usize) -> BytesMut {
    let mut buf = take(&READ);
    buf.reserve(capacity);
    buf
}

/// Hands back a connection's read buffer once its request is done. Kept only when nothing
/// else shares its memory (the head's fields were let go) and it is empty and small.
pub fn return_read_buffer(mut buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() > KEEP_CAPACITY || !buf.try_reclaim(1) {
        return;
    }
    keep(&READ, buf, KEEP_READ);
}

/// Where one header field lies in a head's bytes: the name's offset and length, the value's.
pub type FieldAt = [u32; 4];

/// Field lists kept per thread: a parsed head's list lives as long as its fields are passed
/// on (a request's until its head went upstream, a response's until its head was written), so
/// two per request in flight (see [`KEEP_MAPS`]).
const KEEP_FIELDS: usize = 128;

/// An empty list of field positions, one an earlier head on this thread finished with when
/// there is one. A parser notes where httparse found each field, takes the head out of its
/// read buffer, then reads the fields from those positions (and passes them on as they came,
/// [`crate::http1::RawFields`]); the list is what a fixed array of the most fields a head may
/// have would be, without writing that array (4 KiB) for every message.
#[derive(Debug, Default)]
pub struct Fields(Vec<FieldAt>);

impl Fields {
    pub fn take() -> Self {
        Self(take(&FIELDS))
    }
}

impl Drop for Fields {
    fn drop(&mut self) {
        let mut v = std::mem::take(&mut self.0);
        if v.capacity() == 0 || v.capacity() > 4 * KEEP_MAP_CAPACITY {
            return;
        }
        v.clear();
        keep(&FIELDS, v, KEEP_FIELDS);
    }
}

impl Deref for Fields {
    type Target = Vec<FieldAt>;

    fn deref(&self) -> &Vec<FieldAt> {
        &self.0
    }
}

impl DerefMut for Fields {
    fn deref_mut(&mut self) -> &mut Vec<FieldAt> {
        &mut self.0
    }
}

/// An empty buffer of at least `capacity` bytes, from the free list when it has one.
pub struct Scratch(Vec<u8>);

impl Scratch {
    pub fn new(capacity: usize) -> Self {
        let mut buf = take(&FREE);
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
        keep(&FREE, buf, KEEP);
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
    fn a_field_list_is_handed_out_again_empty() {
        let mut a = Fields::take();
        a.push([1, 2, 3, 4]);
        let at = a.as_ptr();
        drop(a);
        let b = Fields::take();
        assert_eq!(b.as_ptr(), at, "the same allocation");
        assert!(b.is_empty());
        // In use: a second list is a new one.
        let c = Fields::take();
        assert!(c.capacity() == 0);
    }

    #[test]
    fn a_header_map_comes_back_empty_and_a_large_one_is_not_kept() {
        use http::HeaderValue;
        let mut map = header_map(8);
        map.insert("x-a", HeaderValue::from_static("1"));
        let room = map.capacity();
        return_header_map(map);
        let again = header_map(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room, "the same map");
        let mut big = header_map(KEEP_MAP_CAPACITY + 1);
        big.insert("x-b", HeaderValue::from_static("2"));
        let big_room = big.capacity();
        return_header_map(big);
        assert!(header_map(1).capacity() < big_room, "a large map is freed");
    }

    #[test]
    fn a_read_buffer_is_reused_once_its_head_is_let_go() {
        let mut buf = read_buffer(1024);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let at = buf.as_ptr();
        let head = buf.split_to(buf.len()).freeze();
        // The head still shares the memory: not kept.
        return_read_buffer(std::mem::take(&mut buf));
        assert_ne!(read_buffer(1).as_ptr(), at);
        let mut buf = read_buffer(1024);
        let again = buf.as_ptr();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head2 = buf.split_to(buf.len()).freeze();
        drop(head2);
        return_read_buffer(buf);
        let reused = read_buffer(1024);
        assert_eq!(
            reused.as_ptr(),
            again,
            "the same allocation, from its start"
        );
        assert!(reused.is_empty() && reused.capacity() >= 1024);
        drop(head);
    }

    #[test]
    fn a_large_buffer_is_not_kept() {
        let a = Scratch::new(KEEP_CAPACITY + 1);
        drop(a);
        let b = Scratch::new(1);
        assert!(b.capacity() <= KEEP_CAPACITY);
    }
}
