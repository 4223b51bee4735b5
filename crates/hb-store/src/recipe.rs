//! Blob recipes: the ordered [`Segment`]s that reassemble a blob, and their
//! compact binary encoding (LEB128 varints, no framing beyond what decoding needs).

use crate::chunk_id::ChunkId;

/// One piece of a blob, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Metadata bytes (e.g. tar headers) kept in the recipe itself.
    Inline(Vec<u8>),
    /// A stored chunk and its content length.
    Chunk {
        /// Index key of the chunk.
        id: ChunkId,
        /// Content length (checked against the chunk on read).
        raw_len: u32,
    },
}

/// Recipe encoding version (first byte).
const RECIPE_VERSION: u8 = 1;
const TAG_INLINE: u8 = 0;
const TAG_CHUNK: u8 = 1;

/// Encodes segments: `version, count, then per segment tag + body`.
pub(crate) fn encode(segments: &[Segment]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + segments.len() * 40);
    out.push(RECIPE_VERSION);
    put_varint(&mut out, segments.len() as u64);
    for seg in segments {
        match seg {
            Segment::Inline(bytes) => {
                out.push(TAG_INLINE);
                put_varint(&mut out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
            Segment::Chunk { id, raw_len } => {
                out.push(TAG_CHUNK);
                let key = id.as_bytes();
                out.push(key.len() as u8);
                out.extend_from_slice(key);
                put_varint(&mut out, u64::from(*raw_len));
            }
        }
    }
    out
}

/// Decodes what [`encode`] produced; errors describe the first problem found.
pub(crate) fn decode(mut input: &[u8]) -> Result<Vec<Segment>, String> {
    let version = take(&mut input, 1)?[0];
    if version != RECIPE_VERSION {
        return Err(format!("unknown recipe version {version}"));
    }
    let count = get_varint(&mut input)?;
    // Each segment takes at least 2 bytes, so a larger count is corrupt; this
    // also keeps a corrupt count from reserving absurd memory.
    if count > input.len() as u64 / 2 + 1 {
        return Err(format!("segment count {count} exceeds recipe size"));
    }
    let mut segments = Vec::with_capacity(count as usize);
    for _ in 0..count {
        match take(&mut input, 1)?[0] {
            TAG_INLINE => {
                let len = get_varint(&mut input)?;
                let len = usize::try_from(len).map_err(|_| "inline length overflow")?;
                segments.push(Segment::Inline(take(&mut input, len)?.to_vec()));
            }
            TAG_CHUNK => {
                let key_len = usize::from(take(&mut input, 1)?[0]);
                let key = take(&mut input, key_len)?;
                let id = ChunkId::from_key(key).ok_or("invalid chunk id in recipe")?;
                let raw_len = get_varint(&mut input)?;
                let raw_len = u32::try_from(raw_len).map_err(|_| "chunk length overflow")?;
                segments.push(Segment::Chunk { id, raw_len });
            }
            tag => return Err(format!("unknown segment tag {tag}")),
        }
    }
    if !input.is_empty() {
        return Err(format!("{} trailing bytes after recipe", input.len()));
    }
    Ok(segments)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if input.len() < n {
        return Err("recipe truncated".into());
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint.
pub(crate) fn get_varint(input: &mut &[u8]) -> Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = take(input, 1)?[0];
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_id::{ChunkHasher, StandardHasher};
    use crate::options::HashAlgorithm;

    #[test]
    fn round_trip() {
        let id = StandardHasher.chunk_id(HashAlgorithm::Xxhash, b"x");
        let segs = vec![
            Segment::Inline(b"header".to_vec()),
            Segment::Chunk { id, raw_len: 65536 },
            Segment::Chunk {
                id: id.with_counter(3),
                raw_len: 1,
            },
            Segment::Inline(vec![0; 300]),
        ];
        let enc = encode(&segs);
        assert_eq!(decode(&enc).unwrap(), segs);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        // Every truncation must be rejected, never panic.
        for n in 0..enc.len() {
            assert!(decode(&enc[..n]).is_err(), "prefix {n}");
        }
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
    }

    #[test]
    fn varints() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut s = &b[..];
            assert_eq!(get_varint(&mut s).unwrap(), v);
            assert!(s.is_empty());
        }
    }
}
