//! Garbage collection: mark the chunks recipes reference, sweep the rest from
//! the index, and compact packs that are mostly dead by copying their live
//! records to the active pack.
//!
//! Crash safety: copies are appended and fsynced, then one transaction
//! repoints the index, drops the swept entries and forgets the old packs;
//! only after that commit are old pack files deleted. A crash before the
//! commit leaves the copies past a committed length (truncated at open); a
//! crash after it leaves old files the index no longer lists (removed at open).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use redb::ReadableTable;

use crate::chunk_id::ChunkId;
use crate::error::{IndexContext, StoreError};
use crate::index::{advance_pack_ends, BlobRecord, BLOBS, CHUNKS, PACKS};
use crate::pack::{pack_label, Location, RecordHeader, PACK_HEADER_LEN, RECORD_HEADER_LEN};
use crate::recipe::Segment;
use crate::store::{Store, StoreInner};

/// A pack is compacted when its live records fill less than this share of it.
pub const COMPACT_BELOW_LIVE_SHARE: f64 = 0.5;

/// What [`Store::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    /// Index entries of chunks no blob references, removed.
    pub chunks_removed: u64,
    /// Live chunks copied out of compacted packs.
    pub chunks_moved: u64,
    /// Packs rewritten because their live share was low.
    pub packs_compacted: u64,
    /// Packs deleted because nothing in them was live.
    pub packs_deleted: u64,
    /// Pack bytes on disk before.
    pub pack_bytes_before: u64,
    /// Pack bytes on disk after.
    pub pack_bytes_after: u64,
    /// `pack_bytes_before - pack_bytes_after`.
    pub bytes_reclaimed: u64,
}

/// Live chunks of each pack.
pub(crate) type LiveByPack = HashMap<u32, Vec<(ChunkId, Location)>>;

impl Store {
    /// Drops chunks no blob references, rewrites packs whose live share is
    /// below [`COMPACT_BELOW_LIVE_SHARE`] and deletes dead packs. Waits for
    /// open [`crate::BlobWriter`]s to finish (do not call it from a thread
    /// that holds one) and blocks new ones while it runs.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let inner = &self.inner;
        let _pass = inner.gate.enter_maintenance();
        let (_, before) = inner.pack_bytes_on_disk()?;
        let referenced = referenced_chunks(inner)?;

        let mut dead = Vec::new();
        let mut live: LiveByPack = HashMap::new();
        let mut live_bytes: HashMap<u32, u64> = HashMap::new();
        let committed: BTreeMap<u32, u64> = {
            let txn = inner.begin_read()?;
            let chunks = txn
                .open_table(CHUNKS)
                .index_ctx(|| "opening chunks".into())?;
            for entry in chunks.iter().index_ctx(|| "scanning chunks".into())? {
                let (k, v) = entry.index_ctx(|| "scanning chunks".into())?;
                let (id, loc) = decode_entry(k.value(), v.value())?;
                if referenced.contains(&id) {
                    *live_bytes.entry(loc.pack).or_default() += loc.record_len(id.algorithm());
                    live.entry(loc.pack).or_default().push((id, loc));
                } else {
                    dead.push(id);
                }
            }
            let packs = txn.open_table(PACKS).index_ctx(|| "opening packs".into())?;
            let mut m = BTreeMap::new();
            for entry in packs.iter().index_ctx(|| "scanning packs".into())? {
                let (k, v) = entry.index_ctx(|| "scanning packs".into())?;
                m.insert(k.value(), v.value());
            }
            m
        };

        let mut compact = Vec::new();
        let mut drop_packs = Vec::new();
        for (&pack, &len) in &committed {
            let live = live_bytes.get(&pack).copied().unwrap_or(0);
            let capacity = len.saturating_sub(PACK_HEADER_LEN);
            if live == 0 {
                drop_packs.push(pack);
            } else if (live as f64) < capacity as f64 * COMPACT_BELOW_LIVE_SHARE {
                compact.push(pack);
            }
        }
        let moved = relocate(inner, &dead, &compact, &drop_packs, &live)?;
        let (_, after) = inner.pack_bytes_on_disk()?;
        let report = GcReport {
            chunks_removed: dead.len() as u64,
            chunks_moved: moved,
            packs_compacted: compact.len() as u64,
            packs_deleted: drop_packs.len() as u64,
            pack_bytes_before: before,
            pack_bytes_after: after,
            bytes_reclaimed: before.saturating_sub(after),
        };
        tracing::info!(?report, "gc finished");
        Ok(report)
    }
}

/// Decodes one chunk index entry.
pub(crate) fn decode_entry(key: &[u8], value: &[u8]) -> Result<(ChunkId, Location), StoreError> {
    let id = ChunkId::from_key(key).ok_or_else(|| StoreError::CorruptIndex {
        key: format!("chunks/{}", hex::encode(key)),
        detail: "malformed chunk id".into(),
    })?;
    let loc = Location::decode(value).ok_or_else(|| StoreError::CorruptIndex {
        key: format!("chunks/{id}"),
        detail: "location has the wrong length".into(),
    })?;
    Ok((id, loc))
}

/// Every chunk id some recipe references. A recipe that cannot be decoded
/// aborts the mark: sweeping without knowing its chunks could destroy a blob.
pub(crate) fn referenced_chunks(inner: &StoreInner) -> Result<HashSet<ChunkId>, StoreError> {
    let txn = inner.begin_read()?;
    let blobs = txn.open_table(BLOBS).index_ctx(|| "opening blobs".into())?;
    let mut set = HashSet::new();
    for entry in blobs.iter().index_ctx(|| "scanning blobs".into())? {
        let (k, v) = entry.index_ctx(|| "scanning blobs".into())?;
        let digest = k.value();
        for seg in BlobRecord::decode(digest, v.value())?.segments(digest)? {
            if let Segment::Chunk { id, .. } = seg {
                set.insert(id);
            }
        }
    }
    Ok(set)
}

/// Removes index entries `remove`, copies the live chunks of `compact` into
/// the active pack, forgets `compact` and `drop_packs` in the index and then
/// deletes their files. Caller holds the maintenance gate. Returns the number
/// of chunks moved.
pub(crate) fn relocate(
    inner: &StoreInner,
    remove: &[ChunkId],
    compact: &[u32],
    drop_packs: &[u32],
    live: &LiveByPack,
) -> Result<u64, StoreError> {
    if remove.is_empty() && compact.is_empty() && drop_packs.is_empty() {
        return Ok(0);
    }
    let retired: BTreeSet<u32> = compact.iter().chain(drop_packs).copied().collect();
    {
        let mut app = inner.appender();
        if app.active_number().is_some_and(|a| retired.contains(&a)) {
            app.seal();
        }
    }
    let mut moves = Vec::new();
    let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
    for pack in compact {
        for (id, loc) in live.get(pack).map(Vec::as_slice).unwrap_or(&[]) {
            let record = inner.read_record(id, loc)?;
            check_record_header(id, loc, &record)?;
            let (new_pack, offset) = inner.appender().append(&record)?;
            let end = offset + record.len() as u64;
            let e = ends.entry(new_pack).or_insert(end);
            *e = (*e).max(end);
            moves.push((
                *id,
                Location {
                    pack: new_pack,
                    offset,
                    ..*loc
                },
            ));
        }
    }
    for &pack in ends.keys() {
        let file = inner.appender().sync_handle(pack)?;
        file.sync_data()
            .map_err(|e| StoreError::io(format!("syncing {}", pack_label(pack)), e))?;
    }
    let ctx = || "committing gc".to_string();
    let txn = inner.db.begin_write().index_ctx(ctx)?;
    {
        let mut chunks = txn.open_table(CHUNKS).index_ctx(ctx)?;
        for id in remove {
            chunks.remove(id.as_bytes()).index_ctx(ctx)?;
        }
        for (id, loc) in &moves {
            chunks
                .insert(id.as_bytes(), &loc.encode()[..])
                .index_ctx(ctx)?;
        }
        let mut packs = txn.open_table(PACKS).index_ctx(ctx)?;
        for pack in &retired {
            packs.remove(*pack).index_ctx(ctx)?;
        }
        advance_pack_ends(&mut packs, &ends, ctx)?;
    }
    txn.commit().index_ctx(ctx)?;
    let retired: Vec<u32> = retired.into_iter().collect();
    inner.delete_pack_files(&retired)?;
    Ok(moves.len() as u64)
}

/// Cheap sanity check before copying a record verbatim: right header, right id.
pub(crate) fn check_record_header(
    id: &ChunkId,
    loc: &Location,
    record: &[u8],
) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::CorruptChunk {
        chunk: id.to_string(),
        pack: pack_label(loc.pack),
        detail: format!("{detail}; run check with repair"),
    };
    let h = RecordHeader::parse(record).map_err(corrupt)?;
    if h.stored_len != loc.stored_len || h.raw_len != loc.raw_len || h.flags != loc.flags {
        return Err(corrupt("record header disagrees with index".into()));
    }
    if record.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + h.id_len) != Some(id.base()) {
        return Err(corrupt("record holds a different chunk id".into()));
    }
    Ok(())
}
