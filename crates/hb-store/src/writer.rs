//! [`BlobWriter`]: streams one blob into the store.
//!
//! The caller's thread hashes the whole stream (sha256, the blob's identity),
//! cuts content into chunks and hands them to the store's worker pool, which
//! computes chunk ids and compresses (unless compression is deferred). Back on
//! the caller's thread each chunk is deduplicated (own chunks first, then the
//! committed index; with a non-cryptographic id the bytes are compared) or
//! appended to the active pack. Appended chunks are committed in batches: at a
//! batch boundary the store's sync thread fsyncs the batch's packs while the
//! writer goes on, and the batch is indexed in one redb transaction at the next
//! boundary, after its sync succeeded. `finish` syncs and commits what is left
//! and the recipe together.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use redb::ReadableTable;
use sha2::{Digest as _, Sha256};

use crate::chunk_id::ChunkId;
use crate::chunker::{ContentChunker, MAX_CHUNK};
use crate::error::{IndexContext, StoreError};
use crate::index::{
    advance_pack_ends, get_location, validate_digest, BlobRecord, BLOBS, CHUNKS, PACKS,
};
use crate::locking::WriterPass;
use crate::pack::{pack_label, Location};
use crate::recipe::Segment;
use crate::store::{BlobInfo, Store, StoreInner};
use crate::syncer::PendingSync;
use crate::workers::{ChunkJob, ChunkOutcome, HashedChunk};

/// Streaming writer for one blob; see the module docs for the data path.
///
/// Dropping it without [`BlobWriter::finish`] discards the blob: pack bytes it
/// appended are truncated at the next open or reclaimed by gc.
pub struct BlobWriter {
    sha: Sha256,
    written: u64,
    chunker: ContentChunker,
    pipeline: Pipeline,
    failed: Option<String>,
    // Keeps gc from sweeping chunks this writer references but has not yet
    // committed a recipe for.
    _pass: WriterPass,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("bytes_written", &self.written)
            .field("chunks", &self.pipeline.slots.len())
            .finish_non_exhaustive()
    }
}

/// Where a segment of the blob stands.
enum Slot {
    Inline(Vec<u8>),
    /// Sent to a worker, result not yet placed.
    Waiting,
    /// Reuses an already committed chunk.
    Indexed {
        id: ChunkId,
        raw_len: u32,
    },
    /// A chunk this writer appended (index into `Pipeline::own`).
    Own {
        index: usize,
        raw_len: u32,
    },
}

/// A closed batch whose packs the sync thread is flushing.
struct SyncingBatch {
    batch: Vec<usize>,
    ends: BTreeMap<u32, u64>,
    pending: PendingSync,
}

/// A chunk record this writer appended to a pack.
struct OwnChunk {
    /// Id chosen when appending (collision counter included).
    tentative: ChunkId,
    loc: Location,
    /// Id it was committed under (differs from `tentative` only if a
    /// concurrent writer took that id for different content).
    final_id: Option<ChunkId>,
}

/// Everything of a writer except the stream hash and chunker, split out so the
/// chunker's emit closure can borrow it alongside the chunker.
struct Pipeline {
    inner: Arc<StoreInner>,
    slots: Vec<Slot>,
    in_flight: usize,
    max_in_flight: usize,
    reply_tx: Sender<ChunkOutcome>,
    reply_rx: Receiver<ChunkOutcome>,
    own: Vec<OwnChunk>,
    own_by_id: HashMap<ChunkId, usize>,
    /// `own` indices appended but not yet committed.
    batch: Vec<usize>,
    /// The previous batch, its packs being synced; indexed at the next
    /// boundary or by `finish`.
    syncing: Option<SyncingBatch>,
    batch_started: Option<Instant>,
    new_chunks: u64,
    new_stored_bytes: u64,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    scratch: (Vec<u8>, Vec<u8>),
}

impl BlobWriter {
    pub(crate) fn new(store: Store) -> Self {
        let pass = store.inner.gate.enter_writer();
        let (reply_tx, reply_rx) = mpsc::channel();
        let max_in_flight = store.inner.opts.parallel_ops * 2 + 2;
        BlobWriter {
            sha: Sha256::new(),
            written: 0,
            chunker: ContentChunker::default(),
            pipeline: Pipeline {
                inner: store.inner,
                slots: Vec::new(),
                in_flight: 0,
                max_in_flight,
                reply_tx,
                reply_rx,
                own: Vec::new(),
                own_by_id: HashMap::new(),
                batch: Vec::new(),
                syncing: None,
                batch_started: None,
                new_chunks: 0,
                new_stored_bytes: 0,
                compressor: None,
                decompressor: None,
                scratch: (Vec::new(), Vec::new()),
            },
            failed: None,
            _pass: pass,
        }
    }

    /// Bytes that are metadata (e.g. tar headers): kept inline in the recipe,
    /// compressed with the recipe; not chunked. Ends the current content
    /// segment first, since its tail precedes these bytes in the stream.
    pub fn write_inline(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.usable()?;
        let r = self.end_segment().map(|()| {
            self.sha.update(data);
            self.written += data.len() as u64;
            self.pipeline.push_inline(data);
        });
        self.record(r)
    }

    /// Bytes of content (e.g. one file's data); consecutive calls extend the
    /// current content segment.
    pub fn write_content(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.usable()?;
        self.sha.update(data);
        self.written += data.len() as u64;
        let r = self.push_content(data);
        self.record(r)
    }

    /// Ends the current content segment: chunking restarts, so identical files
    /// yield identical chunks wherever they sit in a stream.
    pub fn end_content(&mut self) -> Result<(), StoreError> {
        self.usable()?;
        let r = self.end_segment();
        self.record(r)
    }

    /// Finishes the blob. Verifies the sha256 of every byte written against
    /// `expected` (`sha256:<hex>`) if given — on mismatch the blob is discarded
    /// and [`StoreError::DigestMismatch`] returned. Otherwise fsyncs the packs
    /// and commits the remaining chunks and the recipe in one redb
    /// transaction. If the blob is already stored its info is returned.
    pub fn finish(mut self, expected: Option<&str>) -> Result<BlobInfo, StoreError> {
        self.usable()?;
        if let Some(e) = expected {
            validate_digest(e)?;
        }
        self.end_segment()?;
        self.pipeline.drain()?;
        let digest = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.sha).finalize())
        );
        if let Some(e) = expected {
            if e != digest {
                return Err(StoreError::DigestMismatch {
                    expected: e.to_string(),
                    actual: digest,
                });
            }
        }
        self.pipeline.commit((&digest, self.written))
    }

    /// Bytes written so far (inline and content).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn push_content(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.pipeline.maybe_commit()?;
        // Feed in slices so a huge write is not copied whole into the chunker.
        for piece in data.chunks(4 * MAX_CHUNK) {
            let pipeline = &mut self.pipeline;
            self.chunker.push(piece, |chunk| pipeline.submit(chunk))?;
        }
        Ok(())
    }

    fn end_segment(&mut self) -> Result<(), StoreError> {
        if !self.chunker.is_empty() {
            let pipeline = &mut self.pipeline;
            self.chunker
                .finish_segment(|chunk| pipeline.submit(chunk))?;
        }
        self.pipeline.maybe_commit()
    }

    fn usable(&self) -> Result<(), StoreError> {
        match &self.failed {
            None => Ok(()),
            Some(first) => Err(StoreError::WriterFailed {
                first_error: first.clone(),
            }),
        }
    }

    /// Remembers the first failure: the stream is incomplete from then on.
    fn record(&mut self, r: Result<(), StoreError>) -> Result<(), StoreError> {
        if let Err(e) = &r {
            self.failed.get_or_insert_with(|| e.to_string());
        }
        r
    }
}

/// `write` is [`BlobWriter::write_content`] without segment boundaries, so any
/// blob can be streamed with `io::copy`.
impl io::Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_content(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Pipeline {
    fn push_inline(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Some(Slot::Inline(last)) = self.slots.last_mut() {
            last.extend_from_slice(data);
        } else {
            self.slots.push(Slot::Inline(data.to_vec()));
        }
    }

    /// Sends a chunk to the workers, placing finished results as they come.
    fn submit(&mut self, data: Vec<u8>) -> Result<(), StoreError> {
        while self.in_flight >= self.max_in_flight {
            self.receive_one()?;
        }
        let seq = self.slots.len();
        self.slots.push(Slot::Waiting);
        self.inner.workers.submit(ChunkJob {
            seq,
            data,
            reply: self.reply_tx.clone(),
        })?;
        self.in_flight += 1;
        while let Ok(outcome) = self.reply_rx.try_recv() {
            self.in_flight -= 1;
            self.place(outcome)?;
        }
        Ok(())
    }

    fn receive_one(&mut self) -> Result<(), StoreError> {
        // We hold a sender ourselves, so recv only fails if that invariant broke.
        let outcome = self
            .reply_rx
            .recv()
            .map_err(|_| StoreError::WorkersUnavailable {
                detail: "result channel closed".into(),
            })?;
        self.in_flight -= 1;
        self.place(outcome)
    }

    fn drain(&mut self) -> Result<(), StoreError> {
        while self.in_flight > 0 {
            self.receive_one()?;
        }
        Ok(())
    }

    /// Dedups or appends one hashed chunk and fills its slot.
    fn place(&mut self, outcome: ChunkOutcome) -> Result<(), StoreError> {
        let HashedChunk { id, raw, record } = outcome.result?;
        let raw_len = raw.len() as u32;
        let verify = !id.algorithm().collision_resistant();
        let mut tentative = id;
        if self.inner.opts.dedup {
            self.inner.counters.dedup_lookup();
            let mut counter = 0u32;
            loop {
                let cand = id.with_counter(counter);
                let mut taken = false;
                if let Some(&index) = self.own_by_id.get(&cand) {
                    taken = true;
                    let loc = self.own[index].loc;
                    if !verify || self.content_equals(&cand, &loc, &raw)? {
                        self.inner.counters.dedup_hit(raw_len);
                        self.slots[outcome.seq] = Slot::Own { index, raw_len };
                        return Ok(());
                    }
                }
                if let Some(loc) = self.inner.locate(&cand)? {
                    taken = true;
                    if !verify || self.content_equals(&cand, &loc, &raw)? {
                        self.inner.counters.dedup_hit(raw_len);
                        self.slots[outcome.seq] = Slot::Indexed { id: cand, raw_len };
                        return Ok(());
                    }
                }
                if !taken {
                    tentative = cand;
                    break;
                }
                counter = next_counter(&id, counter)?;
            }
        }
        let record = match record {
            Some(r) => r,
            None => self.encode(&id, &raw)?,
        };
        let (pack, offset) = {
            // Timed after taking the lock: waiting for other writers is not I/O.
            let mut appender = self.inner.appender();
            self.inner
                .counters
                .chunk_writes
                .time(|| appender.append(&record))?
        };
        self.inner.counters.chunk_written(raw_len);
        let header = crate::pack::RecordHeader::parse(&record).map_err(|detail| {
            StoreError::CorruptChunk {
                chunk: id.to_string(),
                pack: pack_label(pack),
                detail,
            }
        })?;
        let index = self.own.len();
        self.own.push(OwnChunk {
            tentative,
            loc: Location {
                pack,
                offset,
                stored_len: header.stored_len,
                raw_len: header.raw_len,
                flags: header.flags,
            },
            final_id: None,
        });
        self.own_by_id.entry(tentative).or_insert(index);
        self.batch.push(index);
        self.batch_started.get_or_insert_with(Instant::now);
        self.new_chunks += 1;
        self.new_stored_bytes += record.len() as u64;
        self.slots[outcome.seq] = Slot::Own { index, raw_len };
        self.maybe_commit()
    }

    /// Encodes a record on this thread (the worker skipped it on a dedup hint
    /// that did not pan out).
    fn encode(&mut self, id: &ChunkId, raw: &[u8]) -> Result<Vec<u8>, StoreError> {
        let opts = &self.inner.opts;
        if opts.defers_compression() {
            return Ok(crate::pack::encode_deferred_record(id, raw));
        }
        if !opts.compression {
            return self.inner.counters.encode_record(id, raw, None);
        }
        if self.compressor.is_none() {
            self.compressor = Some(
                zstd::bulk::Compressor::new(opts.zstd_level())
                    .map_err(|e| StoreError::io("creating a zstd compressor", e))?,
            );
        }
        self.inner
            .counters
            .encode_record(id, raw, self.compressor.as_mut())
    }

    fn decompressor(&mut self) -> Result<zstd::bulk::Decompressor<'static>, StoreError> {
        match self.decompressor.take() {
            Some(d) => Ok(d),
            None => zstd::bulk::Decompressor::new()
                .map_err(|e| StoreError::io("creating a zstd decompressor", e)),
        }
    }

    /// Whether the chunk stored at `loc` holds exactly `raw`.
    fn content_equals(
        &mut self,
        id: &ChunkId,
        loc: &Location,
        raw: &[u8],
    ) -> Result<bool, StoreError> {
        if loc.raw_len as usize != raw.len() {
            return Ok(false);
        }
        let mut dec = self.decompressor()?;
        let r = self.inner.load_at(id, loc, &mut self.scratch.0, &mut dec);
        self.decompressor = Some(dec);
        r?;
        Ok(self.scratch.0 == raw)
    }

    /// Whether two stored chunks hold the same bytes.
    fn stored_equal(
        &mut self,
        a: (&ChunkId, &Location),
        b: (&ChunkId, &Location),
    ) -> Result<bool, StoreError> {
        if a.1.raw_len != b.1.raw_len {
            return Ok(false);
        }
        let mut dec = self.decompressor()?;
        let r = self
            .inner
            .load_at(a.0, a.1, &mut self.scratch.0, &mut dec)
            .and_then(|()| self.inner.load_at(b.0, b.1, &mut self.scratch.1, &mut dec));
        self.decompressor = Some(dec);
        r?;
        Ok(self.scratch.0 == self.scratch.1)
    }

    /// Closes the batch when batching is off, full, or old enough.
    fn maybe_commit(&mut self) -> Result<(), StoreError> {
        let Some(started) = self.batch_started else {
            return Ok(());
        };
        let opts = &self.inner.opts;
        if !opts.batch_writes
            || self.batch.len() >= opts.batch_size
            || started.elapsed() >= opts.batch_timeout
        {
            self.commit_batch()?;
        }
        Ok(())
    }

    /// Mid-blob batch boundary: indexes the previous batch (its sync has had a
    /// whole batch's time to finish) and starts syncing this one on the store's
    /// sync thread, so the writer goes on chunking meanwhile.
    fn commit_batch(&mut self) -> Result<(), StoreError> {
        if let Some(prev) = self.syncing.take() {
            prev.pending.wait()?;
            self.index(prev.batch, prev.ends, None)?;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_started = None;
        let ends = self.batch_ends(&batch);
        let mut files = Vec::with_capacity(ends.len());
        for &pack in ends.keys() {
            files.push((pack, self.inner.appender().sync_handle(pack)?));
        }
        let pending = self.inner.syncer.submit(files)?;
        self.syncing = Some(SyncingBatch {
            batch,
            ends,
            pending,
        });
        Ok(())
    }

    /// Pack → end offset of the records of `batch`.
    fn batch_ends(&self, batch: &[usize]) -> BTreeMap<u32, u64> {
        let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
        for &i in batch {
            let own = &self.own[i];
            let end = own.loc.end(own.tentative.algorithm());
            let e = ends.entry(own.loc.pack).or_insert(end);
            *e = (*e).max(end);
        }
        ends
    }

    /// The blob's final commit: the batch still syncing and the last one,
    /// with the recipe, in one durable transaction once their packs are synced.
    fn commit(&mut self, blob: (&str, u64)) -> Result<BlobInfo, StoreError> {
        let mut batch = Vec::new();
        if let Some(prev) = self.syncing.take() {
            prev.pending.wait()?;
            batch = prev.batch;
        }
        batch.append(&mut self.batch);
        self.batch_started = None;
        let ends = self.batch_ends(&batch);
        // Durability order: pack bytes reach the disk before any committed
        // index entry can point at them.
        self.inner.sync_packs(ends.keys().copied())?;
        self.index(batch, ends, Some(blob))
    }

    /// In one transaction indexes `batch` (whose packs are synced up to
    /// `ends`), advances the packs' committed lengths and (with `blob`)
    /// inserts the recipe. Returns the blob's info when `blob` is given.
    fn index(
        &mut self,
        batch: Vec<usize>,
        ends: BTreeMap<u32, u64>,
        blob: Option<(&str, u64)>,
    ) -> Result<BlobInfo, StoreError> {
        let what = match blob {
            Some((digest, _)) => format!("committing blob {digest}"),
            None => format!("committing a batch of {} chunks", batch.len()),
        };
        let ctx = || what.clone();
        let mut txn = self.inner.db.begin_write().index_ctx(ctx)?;
        if blob.is_none() {
            // A batch in the middle of a blob is not acknowledged to anyone, so its redb commit
            // need not reach the disk now (skipping redb's two fsyncs); the blob's final,
            // durable commit persists it. Its pack bytes were synced first, so whatever the
            // index holds after a crash points at bytes on disk; a lost batch only rolls the
            // packs' committed lengths back, and recovery truncates the unreferenced tail.
            txn.set_durability(redb::Durability::None)
                .map_err(|e| StoreError::io(what.clone(), std::io::Error::other(e.to_string())))?;
        }
        if let Some((digest, _)) = blob {
            let existing = {
                let blobs = txn.open_table(BLOBS).index_ctx(ctx)?;
                let v = blobs.get(digest).index_ctx(ctx)?;
                match v {
                    Some(v) => Some(BlobRecord::decode(digest, v.value())?),
                    None => None,
                }
            };
            if let Some(r) = existing {
                // Already stored: our appended bytes stay unreferenced garbage.
                txn.abort().index_ctx(ctx)?;
                return Ok(BlobInfo {
                    digest: digest.to_string(),
                    size: r.size,
                    chunks: r.chunks,
                    new_chunks: 0,
                    new_stored_bytes: 0,
                });
            }
        }
        {
            let mut chunks = txn.open_table(CHUNKS).index_ctx(ctx)?;
            for &i in &batch {
                let (tentative, loc) = (self.own[i].tentative, self.own[i].loc);
                let mut cand = tentative;
                loop {
                    match get_location(&chunks, &cand)? {
                        None => {
                            chunks
                                .insert(cand.as_bytes(), &loc.encode()[..])
                                .index_ctx(ctx)?;
                            break;
                        }
                        Some(existing) if existing == loc => break,
                        // Another writer (or an earlier copy with dedup off)
                        // indexed this id first: reuse it if it is the same
                        // content, our copy becomes garbage for gc.
                        Some(existing) => {
                            if cand.algorithm().collision_resistant()
                                || self.stored_equal((&cand, &existing), (&tentative, &loc))?
                            {
                                break;
                            }
                            cand = cand.with_counter(next_counter(&cand, cand.counter())?);
                        }
                    }
                }
                self.own[i].final_id = Some(cand);
            }
            let mut packs = txn.open_table(PACKS).index_ctx(ctx)?;
            advance_pack_ends(&mut packs, &ends, ctx)?;
        }
        let mut info = BlobInfo {
            digest: String::new(),
            size: 0,
            chunks: 0,
            new_chunks: self.new_chunks,
            new_stored_bytes: self.new_stored_bytes,
        };
        if let Some((digest, size)) = blob {
            let segments = self.segments()?;
            info.chunks = segments
                .iter()
                .filter(|s| matches!(s, Segment::Chunk { .. }))
                .count() as u64;
            let value = BlobRecord::encode(size, &segments)?;
            let mut blobs = txn.open_table(BLOBS).index_ctx(ctx)?;
            blobs.insert(digest, &value[..]).index_ctx(ctx)?;
            info.digest = digest.to_string();
            info.size = size;
        }
        txn.commit().index_ctx(ctx)?;
        Ok(info)
    }

    /// The recipe, once every own chunk has its final id.
    fn segments(&mut self) -> Result<Vec<Segment>, StoreError> {
        let slots = std::mem::take(&mut self.slots);
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            out.push(match slot {
                Slot::Inline(b) => Segment::Inline(b),
                Slot::Indexed { id, raw_len } => Segment::Chunk { id, raw_len },
                Slot::Own { index, raw_len } => {
                    let id =
                        self.own[index]
                            .final_id
                            .ok_or_else(|| StoreError::WorkersUnavailable {
                                detail: "chunk committed without an id".into(),
                            })?;
                    Segment::Chunk { id, raw_len }
                }
                Slot::Waiting => {
                    return Err(StoreError::WorkersUnavailable {
                        detail: "a chunk result never arrived".into(),
                    })
                }
            });
        }
        Ok(out)
    }
}

/// Next collision counter for `id`, failing (rather than wrapping) at u32::MAX.
fn next_counter(id: &ChunkId, counter: u32) -> Result<u32, StoreError> {
    counter
        .checked_add(1)
        .ok_or_else(|| StoreError::CorruptIndex {
            key: format!("chunks/{id}"),
            detail: "collision counter exhausted".into(),
        })
}
