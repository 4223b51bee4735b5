//! Streaming content-defined chunking: [`ContentChunker`] cuts a content
//! segment with FastCDC (v2020) exactly as if the whole segment were in memory.

use fastcdc::v2020::{cut, select_masks, Normalization};

/// Smallest chunk (except a segment's tail). 16 KiB keeps per-chunk overhead
/// (index entry ≈ 60 B, record header, one hash + zstd frame) under 1 % while
/// still letting small files sit in one chunk of their own.
pub const MIN_CHUNK: usize = 16 * 1024;
/// Target average chunk. 64 KiB is the usual sweet spot for container layers:
/// fine enough that an edited file shares most chunks with its old version,
/// coarse enough that a 1 GiB layer is ~16k index entries and zstd has
/// enough context to compress well.
pub const AVG_CHUNK: usize = 64 * 1024;
/// Largest chunk. 256 KiB (4× average) bounds memory per in-flight chunk and
/// how much a reader must decompress for one random access.
pub const MAX_CHUNK: usize = 256 * 1024;

/// Cuts one content segment at a time into chunks.
///
/// Bytes are buffered until [`MAX_CHUNK`] are available, because a FastCDC cut
/// point depends only on the next `MAX_CHUNK` bytes; cutting then gives the
/// same boundaries as cutting the whole segment at once. [`Self::finish_segment`]
/// flushes the tail, so each segment's chunking restarts at its first byte.
#[derive(Debug)]
pub(crate) struct ContentChunker {
    buf: Vec<u8>,
    mask_s: u64,
    mask_l: u64,
}

impl Default for ContentChunker {
    fn default() -> Self {
        let (mask_s, mask_l) = select_masks(AVG_CHUNK, Normalization::Level1);
        ContentChunker {
            buf: Vec::with_capacity(2 * MAX_CHUNK),
            mask_s,
            mask_l,
        }
    }
}

impl ContentChunker {
    /// Whether no content is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends content; calls `emit` for every chunk that is now final.
    pub(crate) fn push<E>(
        &mut self,
        data: &[u8],
        mut emit: impl FnMut(Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while self.buf.len() - start >= MAX_CHUNK {
            let end = start + self.cut_len(&self.buf[start..]);
            emit(self.buf[start..end].to_vec())?;
            start = end;
        }
        // One shift per push rather than one per chunk.
        self.buf.drain(..start);
        Ok(())
    }

    /// Ends the segment: emits the buffered tail as final chunk(s).
    pub(crate) fn finish_segment<E>(
        &mut self,
        mut emit: impl FnMut(Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut start = 0;
        while start < self.buf.len() {
            let end = start + self.cut_len(&self.buf[start..]);
            emit(self.buf[start..end].to_vec())?;
            start = end;
        }
        self.buf.clear();
        Ok(())
    }

    /// Length of the next chunk at the start of `window`.
    fn cut_len(&self, window: &[u8]) -> usize {
        let (_, len) = cut(
            window,
            MIN_CHUNK,
            AVG_CHUNK,
            MAX_CHUNK,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        // `cut` never returns 0 for a non-empty window; guard so a loop always advances.
        len.max(1).min(window.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcdc::v2020::FastCDC;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn stream_chunks(data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut c = ContentChunker::default();
        let mut out = Vec::new();
        for p in data.chunks(piece.max(1)) {
            c.push::<()>(p, |ch| {
                out.push(ch);
                Ok(())
            })
            .unwrap();
        }
        c.finish_segment::<()>(|ch| {
            out.push(ch);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn streaming_matches_whole_buffer_cdc() {
        let data = pseudo_random(3 * 1024 * 1024 + 12345, 42);
        let expected: Vec<(usize, usize)> = FastCDC::new(&data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
            .map(|c| (c.offset, c.length))
            .collect();
        for piece in [1000, 65536, 300_000, data.len()] {
            let got = stream_chunks(&data, piece);
            let mut off = 0;
            let got: Vec<(usize, usize)> = got
                .iter()
                .map(|c| {
                    let r = (off, c.len());
                    off += c.len();
                    r
                })
                .collect();
            assert_eq!(got, expected, "piece size {piece}");
        }
        assert!(expected.len() > 10);
        assert!(expected.iter().all(|&(_, l)| l <= MAX_CHUNK));
    }

    #[test]
    fn small_content_is_one_chunk_and_zeroes_cut_at_max() {
        let small = pseudo_random(MIN_CHUNK - 1, 7);
        assert_eq!(stream_chunks(&small, 100), vec![small.clone()]);
        let zeroes = vec![0u8; 3 * MAX_CHUNK];
        let chunks = stream_chunks(&zeroes, 4096);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.len() == MAX_CHUNK));
        assert!(stream_chunks(&[], 1).is_empty());
    }
}
