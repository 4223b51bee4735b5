//! Chunk identity: [`ChunkId`] (algorithm tag + digest + optional collision
//! counter) and the [`ChunkHasher`] seam that computes it.

use std::fmt;

use sha2::Digest as _;

use crate::options::HashAlgorithm;

/// Longest id: tag (1) + 32-byte digest + 4-byte collision counter.
const MAX_ID_LEN: usize = 1 + 32 + 4;

/// Name of a stored chunk, also its key in the chunk index.
///
/// Layout: `[tag][digest]` (the *base*, also written into the pack record),
/// optionally followed by a big-endian `u32` counter ≥ 1 when a different
/// chunk already owns the base id (only possible with non-cryptographic
/// hashes; see [`HashAlgorithm::Xxhash`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChunkId {
    bytes: [u8; MAX_ID_LEN],
    len: u8,
}

impl ChunkId {
    /// Builds the base id of a digest.
    pub(crate) fn from_digest(alg: HashAlgorithm, digest: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_ID_LEN];
        bytes[0] = alg.tag();
        let n = digest.len().min(alg.digest_len());
        bytes[1..1 + n].copy_from_slice(&digest[..n]);
        ChunkId {
            bytes,
            len: (1 + alg.digest_len()) as u8,
        }
    }

    /// Parses an index key; `None` when the bytes are not a valid id.
    pub(crate) fn from_key(key: &[u8]) -> Option<Self> {
        let alg = HashAlgorithm::from_tag(*key.first()?)?;
        let base = 1 + alg.digest_len();
        if key.len() != base && key.len() != base + 4 {
            return None;
        }
        let mut bytes = [0u8; MAX_ID_LEN];
        bytes[..key.len()].copy_from_slice(key);
        let id = ChunkId {
            bytes,
            len: key.len() as u8,
        };
        // A zero counter is never written; reject it so each id has one spelling.
        if key.len() == base + 4 && id.counter() == 0 {
            return None;
        }
        Some(id)
    }

    /// The full key bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Hash algorithm named by the tag byte.
    pub(crate) fn algorithm(&self) -> HashAlgorithm {
        // Every constructor checks the tag, so the fallback is unreachable.
        HashAlgorithm::from_tag(self.bytes[0]).unwrap_or(HashAlgorithm::Sha256)
    }

    /// Tag + digest, without the collision counter.
    pub(crate) fn base(&self) -> &[u8] {
        &self.bytes[..1 + self.algorithm().digest_len()]
    }

    /// Collision counter (0 for a base id).
    pub(crate) fn counter(&self) -> u32 {
        let base = 1 + self.algorithm().digest_len();
        if self.len as usize == base + 4 {
            let mut c = [0u8; 4];
            c.copy_from_slice(&self.bytes[base..base + 4]);
            u32::from_be_bytes(c)
        } else {
            0
        }
    }

    /// Same base with collision counter `counter` (0 = the base id itself).
    pub(crate) fn with_counter(&self, counter: u32) -> Self {
        let base = 1 + self.algorithm().digest_len();
        let mut out = *self;
        if counter == 0 {
            out.bytes[base..].fill(0);
            out.len = base as u8;
        } else {
            out.bytes[base..base + 4].copy_from_slice(&counter.to_be_bytes());
            out.len = (base + 4) as u8;
        }
        out
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.algorithm().name(),
            hex::encode(&self.base()[1..])
        )?;
        match self.counter() {
            0 => Ok(()),
            c => write!(f, "#{c}"),
        }
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Computes chunk ids. A seam so tests can force collisions; production uses
/// [`StandardHasher`].
pub(crate) trait ChunkHasher: Send + Sync {
    /// Base id of `data` under `alg`.
    fn chunk_id(&self, alg: HashAlgorithm, data: &[u8]) -> ChunkId;
}

/// The real hash functions.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StandardHasher;

impl ChunkHasher for StandardHasher {
    fn chunk_id(&self, alg: HashAlgorithm, data: &[u8]) -> ChunkId {
        match alg {
            HashAlgorithm::Sha256 => ChunkId::from_digest(alg, &sha2::Sha256::digest(data)),
            HashAlgorithm::Blake3 => ChunkId::from_digest(alg, blake3::hash(data).as_bytes()),
            HashAlgorithm::Xxhash => {
                ChunkId::from_digest(alg, &xxhash_rust::xxh3::xxh3_128(data).to_be_bytes())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_counter() {
        for alg in [
            HashAlgorithm::Sha256,
            HashAlgorithm::Blake3,
            HashAlgorithm::Xxhash,
        ] {
            let id = StandardHasher.chunk_id(alg, b"hello");
            assert_eq!(id.counter(), 0);
            assert_eq!(id.as_bytes().len(), 1 + alg.digest_len());
            assert_eq!(ChunkId::from_key(id.as_bytes()), Some(id));
            let c = id.with_counter(7);
            assert_eq!(c.counter(), 7);
            assert_eq!(c.base(), id.base());
            assert_ne!(c, id);
            assert_eq!(ChunkId::from_key(c.as_bytes()), Some(c));
            assert_eq!(c.with_counter(0), id);
            assert!(c.to_string().ends_with("#7"));
        }
        assert_eq!(ChunkId::from_key(&[9; 33]), None);
        assert_eq!(ChunkId::from_key(&[1; 5]), None);
        let mut zero_counter = vec![1u8; 33];
        zero_counter.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(ChunkId::from_key(&zero_counter), None);
    }

    #[test]
    fn known_digests() {
        let id = StandardHasher.chunk_id(HashAlgorithm::Sha256, b"abc");
        assert_eq!(
            hex::encode(&id.base()[1..]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let id = StandardHasher.chunk_id(HashAlgorithm::Xxhash, b"");
        assert_eq!(id.as_bytes().len(), 17);
    }
}
