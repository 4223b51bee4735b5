//! Store configuration: [`StoreOptions`] and the chunk-id [`HashAlgorithm`].

use std::time::Duration;

use crate::error::StoreError;

/// Hash used to name chunks (the dedup key). Blob identity is always sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// SHA-256 (32-byte ids). Cryptographic, hardware-accelerated on most CPUs.
    Sha256,
    /// BLAKE3 (32-byte ids). Cryptographic and fastest on SIMD hardware.
    Blake3,
    /// XXH3-128 (16-byte ids). Not collision resistant: every hit is confirmed
    /// byte-for-byte against the stored chunk before it is reused.
    Xxhash,
}

impl HashAlgorithm {
    /// Tag byte that starts every chunk id of this algorithm (stable on disk).
    pub(crate) fn tag(self) -> u8 {
        match self {
            HashAlgorithm::Sha256 => 1,
            HashAlgorithm::Blake3 => 2,
            HashAlgorithm::Xxhash => 3,
        }
    }

    /// Inverse of [`HashAlgorithm::tag`].
    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(HashAlgorithm::Sha256),
            2 => Some(HashAlgorithm::Blake3),
            3 => Some(HashAlgorithm::Xxhash),
            _ => None,
        }
    }

    /// Length in bytes of this algorithm's digest.
    pub(crate) fn digest_len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 | HashAlgorithm::Blake3 => 32,
            HashAlgorithm::Xxhash => 16,
        }
    }

    /// Whether a digest match alone is trusted as content equality.
    pub(crate) fn collision_resistant(self) -> bool {
        !matches!(self, HashAlgorithm::Xxhash)
    }

    /// Lowercase name used in chunk-id strings (`blake3:ab12...`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Blake3 => "blake3",
            HashAlgorithm::Xxhash => "xxh3-128",
        }
    }
}

/// How a [`crate::Store`] chunks, hashes, compresses and commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Chunk-id hash (the dedup key).
    pub hash: HashAlgorithm,
    /// When false every chunk is written to a pack even if an identical one is
    /// stored (the index keeps one entry; the extra copies are reclaimed by gc).
    pub dedup: bool,
    /// When false chunks are stored raw.
    pub compression: bool,
    /// With `compression` on: writers store new chunks raw, marked for later,
    /// and [`crate::Store::compress_deferred`] compresses them afterwards, so
    /// compression is off a write's critical path (a pull is acknowledged
    /// without it). Off by default: the store compresses as it writes.
    pub defer_compression: bool,
    /// HyperBox's compression level, 1..=9 (the tuning guide's scale); see
    /// [`StoreOptions::zstd_level`] for the zstd level each one selects.
    pub compression_level: i32,
    /// Read packs through memory maps instead of `pread`.
    pub use_mmap: bool,
    /// Group pack fsyncs and index commits of a streaming blob into batches.
    pub batch_writes: bool,
    /// Chunks per batch, 1..=1000.
    pub batch_size: usize,
    /// Longest a written chunk waits for its batch to close (its packs' sync
    /// starts then; it is indexed at the next boundary); checked whenever the
    /// writer makes progress (the final batch is always committed by `finish`).
    pub batch_timeout: Duration,
    /// Hashing + compressing worker threads, 1..=64.
    pub parallel_ops: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            hash: HashAlgorithm::Sha256,
            dedup: true,
            compression: true,
            defer_compression: false,
            compression_level: 6,
            use_mmap: true,
            batch_writes: true,
            batch_size: 100,
            batch_timeout: Duration::from_millis(100),
            parallel_ops: 4,
        }
    }
}

/// zstd level for each of the guide's levels 1..=9. The guide's default, 6, is anchored on
/// zstd's own default (3), its measured speed/size sweet spot: zstd 6 costs about 3x the CPU of
/// zstd 3 for a few percent, which made level 6 the largest cost of a pull (BENCHMARKS.md).
/// Below it the scale reaches zstd's fast negative levels; above it, its stronger ones.
const ZSTD_LEVELS: [i32; 9] = [-5, -3, -1, 1, 2, 3, 5, 8, 12];

impl StoreOptions {
    /// Whether writers store chunks raw for [`crate::Store::compress_deferred`].
    pub fn defers_compression(&self) -> bool {
        self.compression && self.defer_compression
    }

    /// The zstd level `compression_level` selects.
    pub fn zstd_level(&self) -> i32 {
        let i = self.compression_level.clamp(1, 9) as usize - 1;
        ZSTD_LEVELS[i]
    }

    /// Rejects out-of-range values with [`StoreError::InvalidOptions`].
    pub fn validate(&self) -> Result<(), StoreError> {
        if !(1..=9).contains(&self.compression_level) {
            return Err(StoreError::InvalidOptions {
                field: "compression_level",
                detail: format!("{} is outside 1..=9", self.compression_level),
            });
        }
        if !(1..=1000).contains(&self.batch_size) {
            return Err(StoreError::InvalidOptions {
                field: "batch_size",
                detail: format!("{} is outside 1..=1000", self.batch_size),
            });
        }
        if !(1..=64).contains(&self.parallel_ops) {
            return Err(StoreError::InvalidOptions {
                field: "parallel_ops",
                detail: format!("{} is outside 1..=64", self.parallel_ops),
            });
        }
        Ok(())
    }
}
