//! A file's bytes on their way to the client: read in chunks as the client takes them (never
//! the whole of a large file in memory), or handed to `sendfile` by the plain HTTP/1 writer.

use std::collections::VecDeque;
use std::fs::File;
use std::io;

use bytes::Bytes;

use super::{CHUNK, read_from};

/// One piece of a file body: bytes imbang made (a multipart range's part headers) or a span
/// of the file.
#[derive(Debug)]
pub enum Part {
    Bytes(Bytes),
    File { offset: u64, len: u64 },
}

/// A file response's body: its parts in order.
#[derive(Debug)]
pub struct FileBody {
    file: File,
    /// The file's read position (a read of the next span needs no seek).
    pos: u64,
    parts: VecDeque<Part>,
    left: u64,
    /// `sendfile on`: the plain HTTP/1 writer may send the file's spans with `sendfile(2)`.
    pub sendfile: bool,
}

impl FileBody {
    /// All of `file` (`size` bytes).
    pub fn whole(file: File, size: u64) -> Self {
        Self::of(
            file,
            vec![Part::File {
                offset: 0,
                len: size,
            }],
        )
    }

    pub fn of(file: File, parts: Vec<Part>) -> Self {
        let parts: VecDeque<Part> = parts
            .into_iter()
            .filter(|p| match p {
                Part::Bytes(b) => !b.is_empty(),
                Part::File { len, .. } => *len > 0,
            })
            .collect();
        let left = parts
            .iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len() as u64,
                Part::File { len, .. } => *len,
            })
            .sum();
        Self {
            file,
            pos: 0,
            parts,
            left,
            sendfile: false,
        }
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The bytes still to send.
    pub fn len(&self) -> u64 {
        self.left
    }

    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// A small body read whole now (`Ok(Ok)`), or this body to stream (`Err`).
    pub fn into_full(mut self) -> Result<io::Result<Bytes>, Self> {
        if self.left > CHUNK {
            return Err(self);
        }
        match self.parts.len() {
            0 => Ok(Ok(Bytes::new())),
            1 => Ok(self
                .next_chunk(usize::MAX)
                .unwrap_or_else(|| Ok(Bytes::new()))),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(self.left as usize);
                while let Some(chunk) = self.next_chunk(usize::MAX) {
                    match chunk {
                        Ok(c) => all.extend_from_slice(&c),
                        Err(e) => return Ok(Err(e)),
                    }
                }
                Ok(Ok(all.freeze()))
            }
        }
    }

    /// The next chunk, at most `max` bytes of a file span (and [`CHUNK`]); `None` at the end.
    /// A file that shrank since it was opened is an error (the client sees the close).
    pub fn next_chunk(&mut self, max: usize) -> Option<io::Result<Bytes>> {
        let part = self.parts.pop_front()?;
        let chunk = match part {
            Part::Bytes(b) => Ok(b),
            Part::File { offset, len } => {
                let n = len.min(CHUNK).min(max as u64);
                let read = read_from(&self.file, &mut self.pos, offset, n as usize);
                if read.is_ok() && n < len {
                    self.parts.push_front(Part::File {
                        offset: offset + n,
                        len: len - n,
                    });
                }
                read
            }
        };
        if let Ok(c) = &chunk {
            self.left -= c.len() as u64;
        } else {
            self.parts.clear();
            self.left = 0;
        }
        Some(chunk)
    }

    /// For the `sendfile` writer: the next part (bytes, or a span of [`FileBody::file`]),
    /// which [`FileBody::sent`] then advances.
    pub fn front(&self) -> Option<&Part> {
        self.parts.front()
    }

    /// `n` bytes of the front part went out.
    pub fn sent(&mut self, n: u64) {
        let Some(front) = self.parts.front_mut() else {
            return;
        };
        let done = match front {
            Part::Bytes(b) => {
                let _ = b.split_to((n as usize).min(b.len()));
                b.is_empty()
            }
            Part::File { offset, len } => {
                let n = n.min(*len);
                *offset += n;
                *len -= n;
                *len == 0
            }
        };
        self.left = self.left.saturating_sub(n);
        if done {
            self.parts.pop_front();
        }
    }
}
