//! Consistency check and repair: every pack's record chain, every chunk
//! (decompressed and rehashed to its id) and every blob (sha256 of the
//! reassembled stream). Repair deletes what is broken so the index only names
//! readable, correct data, and reports the blobs lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;

use redb::ReadableTable;
use sha2::{Digest as _, Sha256};

use crate::chunk_id::ChunkId;
use crate::error::{IndexContext, StoreError};
use crate::gc::{decode_entry, relocate, LiveByPack};
use crate::index::{BlobRecord, BLOBS, CHUNKS, PACKS};
use crate::pack::{
    pack_file_name, pack_label, Location, RecordHeader, PACK_HEADER_LEN, PACK_MAGIC,
    RECORD_HEADER_LEN,
};
use crate::recipe::Segment;
use crate::store::{Store, StoreInner};

/// One inconsistency found by [`Store::check`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CheckProblem {
    /// A pack the index lists has no file.
    PackMissing {
        /// `packs/NNNNNNNN.pack`
        pack: String,
    },
    /// A pack file is shorter than its committed length.
    PackTruncated {
        /// `packs/NNNNNNNN.pack`
        pack: String,
        /// Length the index says is durable.
        committed: u64,
        /// Length on disk.
        on_disk: u64,
    },
    /// Walking a pack's records hit an invalid header.
    PackChainBroken {
        /// `packs/NNNNNNNN.pack`
        pack: String,
        /// Offset of the bad record.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// An index entry cannot be decoded.
    IndexEntryCorrupt {
        /// Table/key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A chunk cannot be read, does not decode, or does not hash to its id.
    ChunkCorrupt {
        /// Chunk id.
        chunk: String,
        /// Pack holding it.
        pack: String,
        /// What is wrong.
        detail: String,
    },
    /// A blob cannot be reassembled into its digest.
    BlobBroken {
        /// Blob digest.
        digest: String,
        /// Why (corrupt recipe, missing/corrupt chunk, digest mismatch).
        detail: String,
    },
}

/// Result of [`Store::check`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    /// Packs whose record chain was walked.
    pub packs_checked: u64,
    /// Chunks decompressed and rehashed.
    pub chunks_checked: u64,
    /// Blobs reassembled and hashed.
    pub blobs_checked: u64,
    /// Content bytes hashed while verifying blobs and chunks.
    pub bytes_verified: u64,
    /// Everything found wrong (before repair).
    pub problems: Vec<CheckProblem>,
    /// Whether repair ran.
    pub repaired: bool,
    /// Blobs deleted by repair because they could not be reassembled.
    pub lost_blobs: Vec<String>,
    /// Chunk index entries deleted by repair.
    pub removed_chunks: u64,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Per-run state of the chunk verifier.
struct Verifier<'a> {
    inner: &'a StoreInner,
    entries: HashMap<ChunkId, Location>,
    status: HashMap<ChunkId, Result<(), String>>,
    buf: Vec<u8>,
    dec: zstd::bulk::Decompressor<'static>,
    report: CheckReport,
}

impl Verifier<'_> {
    /// Loads a chunk into `buf` and, the first time, rehashes it.
    fn load(&mut self, id: &ChunkId) -> Result<(), String> {
        if let Some(Err(e)) = self.status.get(id) {
            return Err(e.clone());
        }
        let Some(loc) = self.entries.get(id).copied() else {
            return Err(format!("chunk {id} is missing from the index"));
        };
        let first = !self.status.contains_key(id);
        let mut r = self
            .inner
            .load_at(id, &loc, &mut self.buf, &mut self.dec)
            .map_err(|e| e.to_string());
        if first {
            if r.is_ok() {
                self.report.chunks_checked += 1;
                self.report.bytes_verified += self.buf.len() as u64;
                let actual = self.inner.hasher.chunk_id(id.algorithm(), &self.buf);
                if actual.base() != id.base() {
                    r = Err(format!("content hashes to {actual}"));
                }
            }
            if let Err(detail) = &r {
                self.report.problems.push(CheckProblem::ChunkCorrupt {
                    chunk: id.to_string(),
                    pack: pack_label(loc.pack),
                    detail: detail.clone(),
                });
            }
            self.status.insert(*id, r.clone());
        }
        r
    }

    /// Reassembles one blob; `Err` says why it is broken.
    fn verify_blob(&mut self, digest: &str, value: &[u8]) -> Result<(), String> {
        let record = BlobRecord::decode(digest, value).map_err(|e| e.to_string())?;
        let segments = record.segments(digest).map_err(|e| e.to_string())?;
        let mut sha = Sha256::new();
        let mut size = 0u64;
        for seg in &segments {
            match seg {
                Segment::Inline(b) => {
                    sha.update(b);
                    size += b.len() as u64;
                }
                Segment::Chunk { id, raw_len } => {
                    self.load(id)?;
                    if self.buf.len() != *raw_len as usize {
                        return Err(format!(
                            "chunk {id} has {} bytes, recipe expects {raw_len}",
                            self.buf.len()
                        ));
                    }
                    sha.update(&self.buf);
                    size += self.buf.len() as u64;
                }
            }
        }
        self.report.bytes_verified += size;
        let actual = format!("sha256:{}", hex::encode(sha.finalize()));
        if actual != digest {
            return Err(format!("content hashes to {actual}"));
        }
        Ok(())
    }
}

impl Store {
    /// Verifies every pack, chunk and blob. With `repair`, deletes broken
    /// blobs and chunk entries (and rewrites damaged packs' good records) so
    /// the store is consistent again; `lost_blobs` lists what was deleted.
    /// Like gc, it waits for open writers and blocks new ones.
    pub fn check(&self, repair: bool) -> Result<CheckReport, StoreError> {
        let inner = &*self.inner;
        let _pass = inner.gate.enter_maintenance();
        let mut v = Verifier {
            inner,
            entries: HashMap::new(),
            status: HashMap::new(),
            buf: Vec::new(),
            dec: zstd::bulk::Decompressor::new()
                .map_err(|e| StoreError::io("creating a zstd decompressor", e))?,
            report: CheckReport::default(),
        };
        let mut bad_keys: Vec<Vec<u8>> = Vec::new();
        let mut lost: Vec<String> = Vec::new();
        // Packs that must be rewritten (damaged) or forgotten (gone).
        let mut damaged: Vec<u32> = Vec::new();
        let mut missing: Vec<u32> = Vec::new();
        {
            let txn = inner.begin_read()?;
            let packs = txn.open_table(PACKS).index_ctx(|| "opening packs".into())?;
            let mut committed = BTreeMap::new();
            for entry in packs.iter().index_ctx(|| "scanning packs".into())? {
                let (k, val) = entry.index_ctx(|| "scanning packs".into())?;
                committed.insert(k.value(), val.value());
            }
            for (&pack, &len) in &committed {
                match scan_pack(inner, pack, len) {
                    PackScan::Ok => {}
                    PackScan::Missing => {
                        v.report.problems.push(CheckProblem::PackMissing {
                            pack: pack_label(pack),
                        });
                        missing.push(pack);
                    }
                    PackScan::Damaged(problems) => {
                        v.report.problems.extend(problems);
                        damaged.push(pack);
                    }
                }
                v.report.packs_checked += 1;
            }

            let chunks = txn
                .open_table(CHUNKS)
                .index_ctx(|| "opening chunks".into())?;
            for entry in chunks.iter().index_ctx(|| "scanning chunks".into())? {
                let (k, val) = entry.index_ctx(|| "scanning chunks".into())?;
                match decode_entry(k.value(), val.value()) {
                    Ok((id, loc)) => {
                        v.entries.insert(id, loc);
                    }
                    Err(e) => {
                        v.report.problems.push(CheckProblem::IndexEntryCorrupt {
                            key: format!("chunks/{}", hex::encode(k.value())),
                            detail: e.to_string(),
                        });
                        bad_keys.push(k.value().to_vec());
                    }
                }
            }

            let blobs = txn.open_table(BLOBS).index_ctx(|| "opening blobs".into())?;
            for entry in blobs.iter().index_ctx(|| "scanning blobs".into())? {
                let (k, val) = entry.index_ctx(|| "scanning blobs".into())?;
                let digest = k.value();
                v.report.blobs_checked += 1;
                if let Err(detail) = v.verify_blob(digest, val.value()) {
                    v.report.problems.push(CheckProblem::BlobBroken {
                        digest: digest.to_string(),
                        detail,
                    });
                    lost.push(digest.to_string());
                }
            }
        }
        // Chunks no blob reached still get verified.
        let unvisited: Vec<ChunkId> = v
            .entries
            .keys()
            .filter(|id| !v.status.contains_key(*id))
            .copied()
            .collect();
        for id in unvisited {
            let _ = v.load(&id);
        }

        let mut report = std::mem::take(&mut v.report);
        if repair && !report.is_clean() {
            let bad: Vec<ChunkId> = v
                .status
                .iter()
                .filter(|(_, s)| s.is_err())
                .map(|(id, _)| *id)
                .collect();
            let ctx = || "committing repair".to_string();
            let txn = inner.db.begin_write().index_ctx(ctx)?;
            {
                let mut blobs = txn.open_table(BLOBS).index_ctx(ctx)?;
                for d in &lost {
                    blobs.remove(d.as_str()).index_ctx(ctx)?;
                }
                let mut chunks = txn.open_table(CHUNKS).index_ctx(ctx)?;
                for id in &bad {
                    chunks.remove(id.as_bytes()).index_ctx(ctx)?;
                }
                for k in &bad_keys {
                    chunks.remove(k.as_slice()).index_ctx(ctx)?;
                }
            }
            txn.commit().index_ctx(ctx)?;
            // Good records of damaged packs move to a fresh pack so the
            // chain is whole again; missing packs are forgotten.
            let bad_set: HashSet<ChunkId> = bad.iter().copied().collect();
            let mut live: LiveByPack = HashMap::new();
            for (id, loc) in &v.entries {
                if damaged.contains(&loc.pack) && !bad_set.contains(id) {
                    live.entry(loc.pack).or_default().push((*id, *loc));
                }
            }
            relocate(inner, &[], &damaged, &missing, &live)?;
            report.repaired = true;
            report.removed_chunks = (bad.len() + bad_keys.len()) as u64;
            report.lost_blobs = lost;
            tracing::warn!(lost = ?report.lost_blobs, removed_chunks = report.removed_chunks, "check repaired the store");
        }
        Ok(report)
    }
}

enum PackScan {
    Ok,
    Missing,
    Damaged(Vec<CheckProblem>),
}

/// Walks a pack's records up to its committed length.
fn scan_pack(inner: &StoreInner, pack: u32, committed: u64) -> PackScan {
    let label = pack_label(pack);
    let Ok(file) = File::open(inner.packs_dir.join(pack_file_name(pack))) else {
        return PackScan::Missing;
    };
    let on_disk = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut problems = Vec::new();
    if on_disk < committed {
        problems.push(CheckProblem::PackTruncated {
            pack: label.clone(),
            committed,
            on_disk,
        });
    }
    let limit = committed.min(on_disk);
    let broken = |offset: u64, detail: String| CheckProblem::PackChainBroken {
        pack: label.clone(),
        offset,
        detail,
    };
    let mut magic = [0u8; PACK_MAGIC.len()];
    if file.read_exact_at(&mut magic, 0).is_err() || &magic != PACK_MAGIC {
        problems.push(broken(0, "bad pack magic".into()));
        return PackScan::Damaged(problems);
    }
    let mut offset = PACK_HEADER_LEN;
    let mut header = [0u8; RECORD_HEADER_LEN];
    while offset < limit {
        if let Err(e) = file.read_exact_at(&mut header, offset) {
            problems.push(broken(offset, format!("reading record header: {e}")));
            break;
        }
        match RecordHeader::parse(&header) {
            Ok(h) if offset + h.record_len() <= limit => offset += h.record_len(),
            Ok(h) => {
                problems.push(broken(
                    offset,
                    format!(
                        "record of {} bytes runs past the committed end",
                        h.record_len()
                    ),
                ));
                break;
            }
            Err(e) => {
                problems.push(broken(offset, e));
                break;
            }
        }
    }
    if problems.is_empty() {
        PackScan::Ok
    } else {
        PackScan::Damaged(problems)
    }
}
