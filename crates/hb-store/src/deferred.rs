//! Deferred compression: [`Store::compress_deferred`] rewrites the packs that
//! hold chunks a writer stored raw ([`crate::StoreOptions::defer_compression`]),
//! compressing those chunks, so a pull is acknowledged without paying for zstd
//! (about 40% of a cold pull's CPU, BENCHMARKS.md).
//!
//! The copy runs beside writers (it holds a writer pass only to keep gc out);
//! the switch is brief and exclusive: once no other writer is open, one
//! transaction repoints the moved chunks and forgets the old packs, then their
//! files go. Crash safety is gc's: copies are fsynced before the commit, a
//! crash before it leaves them past a committed length or as dead bytes, a
//! crash after it leaves old files the index no longer lists (removed at open).

use std::collections::{BTreeMap, BTreeSet};

use redb::ReadableTable;

use crate::chunk_id::ChunkId;
use crate::error::{IndexContext, StoreError};
use crate::gc::{check_record_header, decode_entry};
use crate::index::{advance_pack_ends, CHUNKS, PACKS};
use crate::locking::lock;
use crate::pack::{decode_record, pack_label, Location, RecordHeader, FLAG_DEFERRED};
use crate::store::Store;

/// What one [`Store::compress_deferred`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeferredReport {
    /// Chunks that waited for compression and were rewritten (compressed, or
    /// raw when zstd would not shrink them or compression is now off).
    pub chunks_compressed: u64,
    /// Other live chunks of the same packs, copied as they were.
    pub chunks_copied: u64,
    /// Content bytes of the rewritten deferred chunks.
    pub raw_bytes: u64,
    /// Their stored bytes after rewriting.
    pub stored_bytes: u64,
    /// Packs whose every live chunk moved, deleted.
    pub packs_retired: u64,
    /// Whether gc claimed the store meanwhile: nothing was switched over and
    /// the call should be repeated later.
    pub yielded_to_gc: bool,
}

impl Store {
    /// Compresses every chunk stored raw by a writer that deferred compression,
    /// moving all live chunks of the packs holding them into the active pack and
    /// deleting those packs. Runs beside writers; waits for open writers to
    /// finish before the short switch-over. Does nothing when nothing waits.
    pub fn compress_deferred(&self) -> Result<DeferredReport, StoreError> {
        let inner = &self.inner;
        let _one_at_a_time = lock(&inner.deferred_compression);
        let mut report = DeferredReport::default();
        // Keeps gc (which deletes chunks and packs) out while we copy.
        let pass = inner.gate.enter_writer();
        let by_pack = pending_packs(self)?;
        if by_pack.is_empty() {
            return Ok(report);
        }
        {
            // Our copies must not land in a pack we are about to delete.
            let mut app = inner.appender();
            if app
                .active_number()
                .is_some_and(|a| by_pack.contains_key(&a))
            {
                app.seal();
            }
        }
        let level = inner.opts.zstd_level();
        let mut compressor = zstd::bulk::Compressor::new(level)
            .map_err(|e| StoreError::io("creating a zstd compressor", e))?;
        let mut decompressor = zstd::bulk::Decompressor::new()
            .map_err(|e| StoreError::io("creating a zstd decompressor", e))?;
        let mut raw = Vec::new();
        let mut moves: Vec<(ChunkId, Location, Location)> = Vec::new();
        let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
        for chunks in by_pack.values() {
            for (id, loc) in chunks {
                if inner.gate.maintenance_wanted() {
                    // gc is waiting for our pass: step aside now rather than after the
                    // whole copy (what we appended is unreferenced and gc reclaims it).
                    report.yielded_to_gc = true;
                    return Ok(report);
                }
                let record = inner.read_record(id, loc)?;
                let corrupt = |detail: String| StoreError::CorruptChunk {
                    chunk: id.to_string(),
                    pack: pack_label(loc.pack),
                    detail,
                };
                let rewritten;
                let bytes: &[u8] = if loc.flags & FLAG_DEFERRED != 0 {
                    decode_record(id, loc, &record, &mut raw, &mut decompressor)
                        .map_err(corrupt)?;
                    // With compression turned off since the write, the chunk is simply
                    // rewritten raw (no longer waiting).
                    let zstd = inner.opts.compression.then_some(&mut compressor);
                    rewritten = inner.counters.encode_record(id, &raw, zstd)?;
                    &rewritten
                } else {
                    check_record_header(id, loc, &record)?;
                    &record
                };
                let header = RecordHeader::parse(bytes).map_err(corrupt)?;
                let (pack, offset) = inner.appender().append(bytes)?;
                let end = offset + bytes.len() as u64;
                let e = ends.entry(pack).or_insert(end);
                *e = (*e).max(end);
                if loc.flags & FLAG_DEFERRED != 0 {
                    report.chunks_compressed += 1;
                    report.raw_bytes += u64::from(loc.raw_len);
                    report.stored_bytes += u64::from(header.stored_len);
                } else {
                    report.chunks_copied += 1;
                }
                let new = Location {
                    pack,
                    offset,
                    stored_len: header.stored_len,
                    raw_len: header.raw_len,
                    flags: header.flags,
                };
                moves.push((*id, *loc, new));
            }
        }
        // Durability order: the copies reach the disk before the index names them.
        inner.sync_packs(ends.keys().copied())?;
        // Exclusive from here: no writer can hold uncommitted records in a pack
        // we retire, nor read one we delete.
        let Some(_maintenance) = inner.gate.upgrade(&pass) else {
            report.yielded_to_gc = true;
            return Ok(report);
        };
        let retired = switch_over(self, &by_pack, &moves, &ends)?;
        report.packs_retired = retired.len() as u64;
        inner.delete_pack_files(&retired)?;
        tracing::info!(?report, "deferred compression finished");
        Ok(report)
    }
}

/// Every indexed chunk of each pack that holds at least one deferred chunk.
/// Two scans of one snapshot, so memory follows the pending packs, not the
/// whole index (a pack holds at most a few ten thousand chunks).
fn pending_packs(store: &Store) -> Result<BTreeMap<u32, Vec<(ChunkId, Location)>>, StoreError> {
    let txn = store.inner.begin_read()?;
    let chunks = txn
        .open_table(CHUNKS)
        .index_ctx(|| "opening chunks".into())?;
    let mut out: BTreeMap<u32, Vec<(ChunkId, Location)>> = BTreeMap::new();
    for entry in chunks.iter().index_ctx(|| "scanning chunks".into())? {
        let (k, v) = entry.index_ctx(|| "scanning chunks".into())?;
        let (_, loc) = decode_entry(k.value(), v.value())?;
        if loc.flags & FLAG_DEFERRED != 0 {
            out.entry(loc.pack).or_default();
        }
    }
    if out.is_empty() {
        return Ok(out);
    }
    for entry in chunks.iter().index_ctx(|| "scanning chunks".into())? {
        let (k, v) = entry.index_ctx(|| "scanning chunks".into())?;
        let (id, loc) = decode_entry(k.value(), v.value())?;
        if let Some(list) = out.get_mut(&loc.pack) {
            list.push((id, loc));
        }
    }
    for list in out.values_mut() {
        // Pack order reads the old pack front to back.
        list.sort_by_key(|(_, loc)| loc.offset);
    }
    Ok(out)
}

/// One transaction: repoints each moved chunk still where we copied it from,
/// records the copies' pack lengths and forgets the packs nothing indexed is
/// left in. Returns those packs, whose files the caller deletes.
fn switch_over(
    store: &Store,
    by_pack: &BTreeMap<u32, Vec<(ChunkId, Location)>>,
    moves: &[(ChunkId, Location, Location)],
    ends: &BTreeMap<u32, u64>,
) -> Result<Vec<u32>, StoreError> {
    let ctx = || "committing deferred compression".to_string();
    let txn = store.inner.db.begin_write().index_ctx(ctx)?;
    let mut retired = Vec::new();
    {
        let mut chunks = txn.open_table(CHUNKS).index_ctx(ctx)?;
        for (id, old, new) in moves {
            let current = match chunks.get(id.as_bytes()).index_ctx(ctx)? {
                Some(v) => Location::decode(v.value()),
                None => None,
            };
            if current == Some(*old) {
                chunks
                    .insert(id.as_bytes(), &new.encode()[..])
                    .index_ctx(ctx)?;
            }
        }
        // A writer may have committed chunks into a pending pack after our
        // scan (it was the active pack then): such a pack stays for next time.
        let mut still_used = BTreeSet::new();
        for entry in chunks.iter().index_ctx(ctx)? {
            let (k, v) = entry.index_ctx(ctx)?;
            let (_, loc) = decode_entry(k.value(), v.value())?;
            if by_pack.contains_key(&loc.pack) {
                still_used.insert(loc.pack);
            }
        }
        let mut packs = txn.open_table(PACKS).index_ctx(ctx)?;
        advance_pack_ends(&mut packs, ends, ctx)?;
        for &pack in by_pack.keys() {
            if !still_used.contains(&pack) {
                packs.remove(pack).index_ctx(ctx)?;
                retired.push(pack);
            }
        }
    }
    txn.commit().index_ctx(ctx)?;
    Ok(retired)
}
