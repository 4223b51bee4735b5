//! The redb tables this crate owns and the encoding of their values.
//!
//! Tables (all prefixed `hb_store.` so other crates can share the database):
//! - `chunks`: chunk id → [`Location`] (21 bytes)
//! - `blobs`: `sha256:<hex>` → [`BlobRecord`] (header + zstd recipe)
//! - `packs`: pack number → committed length (bytes below it are durable
//!   and may be referenced; bytes above were never acknowledged)
//! - `meta`: format version

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};

use crate::chunk_id::ChunkId;
use crate::error::{IndexContext, StoreError};
use crate::pack::Location;
use crate::recipe::{self, Segment};

/// Chunk id → location.
pub(crate) const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("hb_store.chunks");
/// Blob digest → blob record.
pub(crate) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("hb_store.blobs");
/// Pack number → committed length.
pub(crate) const PACKS: TableDefinition<u32, u64> = TableDefinition::new("hb_store.packs");
/// Raises each pack's committed length in [`PACKS`] to its end in `ends` where
/// that is further (a concurrent commit may already have gone further).
pub(crate) fn advance_pack_ends(
    packs: &mut redb::Table<'_, u32, u64>,
    ends: &BTreeMap<u32, u64>,
    ctx: impl Fn() -> String,
) -> Result<(), StoreError> {
    for (&pack, &end) in ends {
        let old = packs.get(pack).index_ctx(&ctx)?.map_or(0, |v| v.value());
        if end > old {
            packs.insert(pack, end).index_ctx(&ctx)?;
        }
    }
    Ok(())
}

/// Store-level settings.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("hb_store.meta");
/// Key of the format version in [`META`].
pub(crate) const META_FORMAT: &str = "format";
/// On-disk format this build reads and writes.
pub(crate) const FORMAT_VERSION: u64 = 1;

/// zstd level for recipes: they are small and written once, read often; 3 is
/// zstd's default speed/ratio balance.
const RECIPE_ZSTD_LEVEL: i32 = 3;
const BLOB_RECORD_VERSION: u8 = 1;
const BLOB_FLAG_ZSTD: u8 = 1;
const BLOB_HEADER_LEN: usize = 1 + 1 + 8 + 8 + 8 + 4;

/// Decoded value of the `blobs` table (recipe still compressed).
#[derive(Debug, Clone)]
pub(crate) struct BlobRecord {
    /// Blob length in bytes.
    pub size: u64,
    /// Number of chunk segments.
    pub chunks: u64,
    /// Bytes held inline in the recipe.
    pub inline_bytes: u64,
    /// Length of the whole encoded record (what the recipe costs on disk).
    pub stored_len: u64,
    flags: u8,
    recipe_len: u32,
    body: Vec<u8>,
}

impl BlobRecord {
    /// Encodes a recipe into a table value.
    pub(crate) fn encode(size: u64, segments: &[Segment]) -> Result<Vec<u8>, StoreError> {
        let mut chunks = 0u64;
        let mut inline_bytes = 0u64;
        for s in segments {
            match s {
                Segment::Inline(b) => inline_bytes += b.len() as u64,
                Segment::Chunk { .. } => chunks += 1,
            }
        }
        let raw = recipe::encode(segments);
        let compressed = zstd::bulk::compress(&raw, RECIPE_ZSTD_LEVEL)
            .map_err(|e| StoreError::io("compressing a blob recipe", e))?;
        let (flags, body) = if compressed.len() < raw.len() {
            (BLOB_FLAG_ZSTD, compressed)
        } else {
            (0, raw.clone())
        };
        let recipe_len = u32::try_from(raw.len()).map_err(|_| StoreError::CorruptIndex {
            key: "recipe".into(),
            detail: format!("recipe of {} bytes exceeds 4 GiB", raw.len()),
        })?;
        let mut out = Vec::with_capacity(BLOB_HEADER_LEN + body.len());
        out.push(BLOB_RECORD_VERSION);
        out.push(flags);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&chunks.to_le_bytes());
        out.extend_from_slice(&inline_bytes.to_le_bytes());
        out.extend_from_slice(&recipe_len.to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes the header of a table value (the recipe stays compressed).
    pub(crate) fn decode(digest: &str, value: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |detail: &str| StoreError::CorruptRecipe {
            digest: digest.to_string(),
            detail: detail.to_string(),
        };
        if value.len() < BLOB_HEADER_LEN {
            return Err(corrupt("record shorter than its header"));
        }
        if value[0] != BLOB_RECORD_VERSION {
            return Err(corrupt("unknown record version"));
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&value[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let mut rl = [0u8; 4];
        rl.copy_from_slice(&value[26..30]);
        Ok(BlobRecord {
            flags: value[1],
            size: u64_at(2),
            chunks: u64_at(10),
            inline_bytes: u64_at(18),
            recipe_len: u32::from_le_bytes(rl),
            stored_len: value.len() as u64,
            body: value[BLOB_HEADER_LEN..].to_vec(),
        })
    }

    /// Decompresses and decodes the recipe.
    pub(crate) fn segments(&self, digest: &str) -> Result<Vec<Segment>, StoreError> {
        let corrupt = |detail: String| StoreError::CorruptRecipe {
            digest: digest.to_string(),
            detail,
        };
        let raw;
        let bytes = if self.flags & BLOB_FLAG_ZSTD != 0 {
            raw = zstd::bulk::decompress(&self.body, self.recipe_len as usize)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            &raw[..]
        } else {
            &self.body[..]
        };
        if bytes.len() != self.recipe_len as usize {
            return Err(corrupt("recipe length disagrees with header".into()));
        }
        let segs = recipe::decode(bytes).map_err(corrupt)?;
        let total: u64 = segs
            .iter()
            .map(|s| match s {
                Segment::Inline(b) => b.len() as u64,
                Segment::Chunk { raw_len, .. } => u64::from(*raw_len),
            })
            .sum();
        if total != self.size {
            return Err(corrupt(format!(
                "segments add up to {total} bytes, header says {}",
                self.size
            )));
        }
        Ok(segs)
    }
}

/// Looks up a chunk's location in an open chunks table.
pub(crate) fn get_location(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    id: &ChunkId,
) -> Result<Option<Location>, StoreError> {
    let Some(v) = table
        .get(id.as_bytes())
        .map_err(|e| StoreError::index(format!("reading chunk {id}"), e))?
    else {
        return Ok(None);
    };
    Location::decode(v.value())
        .map(Some)
        .ok_or_else(|| StoreError::CorruptIndex {
            key: format!("chunks/{id}"),
            detail: "location has the wrong length".into(),
        })
}

/// Checks that `digest` is `sha256:` followed by 64 lowercase hex digits.
pub(crate) fn validate_digest(digest: &str) -> Result<(), StoreError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidDigest {
            digest: digest.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_record_round_trip() {
        let segs = vec![
            Segment::Inline(vec![b'a'; 1000]),
            Segment::Inline(b"xyz".to_vec()),
        ];
        let v = BlobRecord::encode(1003, &segs).unwrap();
        let rec = BlobRecord::decode("d", &v).unwrap();
        assert_eq!((rec.size, rec.chunks, rec.inline_bytes), (1003, 0, 1003));
        assert!(rec.stored_len < 200, "recipe should be compressed");
        assert_eq!(rec.segments("d").unwrap(), segs);
        let wrong_size = BlobRecord::encode(5, &segs).unwrap();
        assert!(BlobRecord::decode("d", &wrong_size)
            .unwrap()
            .segments("d")
            .is_err());
        assert!(BlobRecord::decode("d", &v[..10]).is_err());
    }

    #[test]
    fn digests() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(validate_digest(&good).is_ok());
        assert!(validate_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(validate_digest("sha256:abc").is_err());
        assert!(validate_digest(&format!("sha512:{}", "a".repeat(64))).is_err());
    }
}
