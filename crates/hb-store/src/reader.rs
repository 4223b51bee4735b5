//! [`BlobReader`]: replays a blob's recipe as a `std::io::Read` stream.

use std::io::{self, Read};
use std::sync::Arc;

use crate::error::StoreError;
use crate::pack::pack_label;
use crate::recipe::Segment;
use crate::store::StoreInner;

/// Streams a stored blob: inline segments from the recipe, chunks from packs
/// (read via mmap or pread, decompressed with their known length).
///
/// Each chunk is rehashed against its id before any of its bytes are handed
/// out, so a damaged pack yields an error, never wrong bytes (turn it off with
/// [`BlobReader::with_chunk_verification`] when the caller hashes the whole
/// stream anyway). Errors surface as `io::Error`s wrapping a [`StoreError`].
pub struct BlobReader {
    inner: Arc<StoreInner>,
    digest: String,
    size: u64,
    segments: std::vec::IntoIter<Segment>,
    current: Vec<u8>,
    pos: usize,
    decompressor: zstd::bulk::Decompressor<'static>,
    verify: bool,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl BlobReader {
    pub(crate) fn new(
        inner: Arc<StoreInner>,
        digest: &str,
        size: u64,
        segments: Vec<Segment>,
    ) -> Result<Self, StoreError> {
        Ok(BlobReader {
            inner,
            digest: digest.to_string(),
            size,
            segments: segments.into_iter(),
            current: Vec::new(),
            pos: 0,
            decompressor: zstd::bulk::Decompressor::new()
                .map_err(|e| StoreError::io("creating a zstd decompressor", e))?,
            verify: true,
        })
    }

    /// Turns per-chunk rehashing on (the default) or off.
    pub fn with_chunk_verification(mut self, on: bool) -> Self {
        self.verify = on;
        self
    }

    /// Total length of the blob.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blob's digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Loads the next segment into `current`; false at the end of the blob.
    fn advance(&mut self) -> Result<bool, StoreError> {
        let Some(seg) = self.segments.next() else {
            return Ok(false);
        };
        self.pos = 0;
        match seg {
            Segment::Inline(bytes) => self.current = bytes,
            Segment::Chunk { id, raw_len } => {
                let loc = self
                    .inner
                    .load_chunk(&id, &mut self.current, &mut self.decompressor)?;
                if self.current.len() != raw_len as usize {
                    return Err(StoreError::CorruptChunk {
                        chunk: id.to_string(),
                        pack: pack_label(loc.pack),
                        detail: format!(
                            "blob {} expects {raw_len} bytes, chunk has {}",
                            self.digest,
                            self.current.len()
                        ),
                    });
                }
                if self.verify {
                    let actual = self.inner.hasher.chunk_id(id.algorithm(), &self.current);
                    if actual.base() != id.base() {
                        return Err(StoreError::CorruptChunk {
                            chunk: id.to_string(),
                            pack: pack_label(loc.pack),
                            detail: format!("content hashes to {actual}"),
                        });
                    }
                }
            }
        }
        Ok(true)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos >= self.current.len() {
            if !self.advance().map_err(io::Error::other)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
