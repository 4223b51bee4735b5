//! [`Store`]: opening (with crash recovery), the shared state every operation
//! uses, and the simple blob operations (lookup, read, delete, list).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::chunk_id::{ChunkHasher, ChunkId, StandardHasher};
use crate::counters::StoreCounters;
use crate::error::{IndexContext, IoContext, StoreError};
use crate::index::{
    get_location, validate_digest, BlobRecord, BLOBS, CHUNKS, FORMAT_VERSION, META, META_FORMAT,
    PACKS,
};
use crate::locking::{lock, MaintenanceGate};
use crate::options::StoreOptions;
use crate::pack::{
    decode_record, list_pack_files, pack_file_name, pack_label, sync_dir, Location, PackAppender,
    PackReaders, RecordBytes, PACK_ROLL_SIZE,
};
use crate::reader::BlobReader;
use crate::syncer::PackSyncer;
use crate::workers::ChunkWorkers;
use crate::writer::BlobWriter;

/// Summary of one stored blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobInfo {
    /// `sha256:<hex>` of the whole blob.
    pub digest: String,
    /// Blob length in bytes.
    pub size: u64,
    /// Number of chunk segments in the recipe (repeats counted).
    pub chunks: u64,
    /// Chunk records this write appended to packs (0 when looked up later).
    pub new_chunks: u64,
    /// Pack bytes this write appended (0 when looked up later).
    pub new_stored_bytes: u64,
}

/// Knobs not in [`StoreOptions`]: the seams tests use.
pub(crate) struct OpenConfig {
    pub hasher: Arc<dyn ChunkHasher>,
    pub pack_roll_size: u64,
}

impl Default for OpenConfig {
    fn default() -> Self {
        OpenConfig {
            hasher: Arc::new(StandardHasher),
            pack_roll_size: PACK_ROLL_SIZE,
        }
    }
}

/// State shared by every clone of a [`Store`] and by its writers and readers.
pub(crate) struct StoreInner {
    pub dir: PathBuf,
    pub packs_dir: PathBuf,
    pub opts: StoreOptions,
    pub db: Arc<Database>,
    pub hasher: Arc<dyn ChunkHasher>,
    pub appender: Mutex<PackAppender>,
    pub readers: PackReaders,
    pub gate: Arc<MaintenanceGate>,
    /// Readers hold it shared from index lookup to pack-handle open; gc holds
    /// it exclusively while deleting pack files, so a location looked up is
    /// always backed by an open file.
    pub pack_files: RwLock<()>,
    /// Held by [`Store::compress_deferred`]: one background compression at a time.
    pub deferred_compression: Mutex<()>,
    /// Activity counters behind [`Store::counters`]; the workers hold a clone.
    pub counters: Arc<StoreCounters>,
    /// fdatasyncs writers' batches off their threads.
    pub syncer: PackSyncer,
    // Declared last: dropped after everything above (its Drop joins threads).
    pub workers: ChunkWorkers,
}

/// HyperBox's content store. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: `dir/meta.redb` and
    /// `dir/packs/`. Runs crash recovery: pack bytes past their committed
    /// length are truncated and pack files the index does not know are removed.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Self::open_with(dir, opts, OpenConfig::default())
    }

    pub(crate) fn open_with(
        dir: &Path,
        opts: StoreOptions,
        config: OpenConfig,
    ) -> Result<Store, StoreError> {
        opts.validate()?;
        let packs_dir = dir.join("packs");
        fs::create_dir_all(&packs_dir).io_ctx(|| format!("creating {}", packs_dir.display()))?;
        let db_path = dir.join("meta.redb");
        let db =
            Database::create(&db_path).index_ctx(|| format!("opening {}", db_path.display()))?;
        init_tables(&db)?;
        let committed = recover_packs(&db, &packs_dir)?;
        let next_number = committed.keys().next_back().map_or(1, |n| n + 1);
        let resume = committed
            .iter()
            .next_back()
            .filter(|(_, &len)| len < config.pack_roll_size)
            .map(|(&n, &len)| (n, len))
            .filter(|(n, _)| packs_dir.join(pack_file_name(*n)).exists());
        let appender = PackAppender::new(&packs_dir, config.pack_roll_size, resume, next_number)?;
        let db = Arc::new(db);
        let counters = Arc::new(StoreCounters::default());
        let workers = ChunkWorkers::start(
            &opts,
            Arc::clone(&db),
            Arc::clone(&config.hasher),
            Arc::clone(&counters),
        )?;
        let readers = PackReaders::new(&packs_dir, opts.use_mmap);
        let syncer = PackSyncer::start(Arc::clone(&counters))?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                dir: dir.to_path_buf(),
                packs_dir,
                opts,
                db,
                hasher: config.hasher,
                appender: Mutex::new(appender),
                readers,
                gate: Arc::new(MaintenanceGate::default()),
                deferred_compression: Mutex::new(()),
                pack_files: RwLock::new(()),
                counters,
                syncer,
                workers,
            }),
        })
    }

    /// The redb database holding the index. Other crates may keep their own
    /// tables in it (names starting `hb_store.` are reserved) so their
    /// records commit atomically alongside ours. Do not hold a write
    /// transaction while calling into the store from the same thread.
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// Lets go of the cached pack handles and their memory maps (readers holding a record
    /// keep theirs). Touched pages of a map count in the process's RSS for as long as it
    /// lives, so a daemon calls this when idle; the next read opens and maps again.
    pub fn release_read_maps(&self) {
        self.inner.readers.forget_all();
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Starts writing one blob. Blocks while a gc or check is running.
    pub fn writer(&self) -> BlobWriter {
        BlobWriter::new(self.clone())
    }

    /// Stores a small blob in one call (e.g. a JSON config). If `expected_digest`
    /// is given and already stored, nothing is written.
    pub fn put_bytes(
        &self,
        data: &[u8],
        expected_digest: Option<&str>,
    ) -> Result<BlobInfo, StoreError> {
        if let Some(d) = expected_digest {
            validate_digest(d)?;
            if let Some(info) = self.blob_info(d)? {
                return Ok(info);
            }
        }
        let mut w = self.writer();
        w.write_content(data)?;
        w.finish(expected_digest)
    }

    /// Whether a blob is stored.
    pub fn has_blob(&self, digest: &str) -> Result<bool, StoreError> {
        validate_digest(digest)?;
        let txn = self.inner.begin_read()?;
        let table = txn.open_table(BLOBS).index_ctx(|| "opening blobs".into())?;
        let found = table
            .get(digest)
            .index_ctx(|| format!("reading blob {digest}"))?
            .is_some();
        Ok(found)
    }

    /// Size and chunk count of a stored blob.
    pub fn blob_info(&self, digest: &str) -> Result<Option<BlobInfo>, StoreError> {
        validate_digest(digest)?;
        Ok(self.inner.blob_record(digest)?.map(|r| BlobInfo {
            digest: digest.to_string(),
            size: r.size,
            chunks: r.chunks,
            new_chunks: 0,
            new_stored_bytes: 0,
        }))
    }

    /// Opens a blob for streaming; yields exactly the bytes that were written.
    pub fn open_blob(&self, digest: &str) -> Result<BlobReader, StoreError> {
        validate_digest(digest)?;
        let record = self
            .inner
            .blob_record(digest)?
            .ok_or_else(|| StoreError::BlobNotFound {
                digest: digest.to_string(),
            })?;
        let segments = record.segments(digest)?;
        BlobReader::new(Arc::clone(&self.inner), digest, record.size, segments)
    }

    /// Reads a whole blob into memory (meant for small blobs).
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let mut reader = self.open_blob(digest)?;
        let mut out = Vec::with_capacity(usize::try_from(reader.size()).unwrap_or(0));
        reader
            .read_to_end(&mut out)
            .map_err(|e| unwrap_io(e, digest))?;
        Ok(out)
    }

    /// Removes a blob's recipe; returns whether it existed. Its chunks are
    /// reclaimed by the next [`Store::gc`].
    pub fn delete_blob(&self, digest: &str) -> Result<bool, StoreError> {
        validate_digest(digest)?;
        let ctx = || format!("deleting blob {digest}");
        let txn = self.inner.db.begin_write().index_ctx(ctx)?;
        let existed = {
            let mut table = txn.open_table(BLOBS).index_ctx(ctx)?;
            let removed = table.remove(digest).index_ctx(ctx)?;
            removed.is_some()
        };
        txn.commit().index_ctx(ctx)?;
        Ok(existed)
    }

    /// All stored blobs, ordered by digest.
    pub fn list_blobs(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let txn = self.inner.begin_read()?;
        let table = txn.open_table(BLOBS).index_ctx(|| "opening blobs".into())?;
        let mut out = Vec::new();
        for entry in table.iter().index_ctx(|| "listing blobs".into())? {
            let (k, v) = entry.index_ctx(|| "listing blobs".into())?;
            let digest = k.value();
            let r = BlobRecord::decode(digest, v.value())?;
            out.push(BlobInfo {
                digest: digest.to_string(),
                size: r.size,
                chunks: r.chunks,
                new_chunks: 0,
                new_stored_bytes: 0,
            });
        }
        Ok(out)
    }
}

/// Turns an `io::Error` from [`BlobReader`] back into the `StoreError` inside it.
pub(crate) fn unwrap_io(e: std::io::Error, digest: &str) -> StoreError {
    let context = format!("reading blob {digest}");
    if !e.get_ref().is_some_and(|inner| inner.is::<StoreError>()) {
        return StoreError::io(context, e);
    }
    match e.into_inner().map(|inner| inner.downcast::<StoreError>()) {
        Some(Ok(se)) => *se,
        _ => StoreError::io(context, std::io::Error::other("read failed")),
    }
}

impl StoreInner {
    /// Begins a read transaction with error context.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db
            .begin_read()
            .index_ctx(|| "starting a read transaction".into())
    }

    /// The decoded record of a blob, if stored.
    pub(crate) fn blob_record(&self, digest: &str) -> Result<Option<BlobRecord>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(BLOBS).index_ctx(|| "opening blobs".into())?;
        let Some(v) = table
            .get(digest)
            .index_ctx(|| format!("reading blob {digest}"))?
        else {
            return Ok(None);
        };
        BlobRecord::decode(digest, v.value()).map(Some)
    }

    /// Committed location of a chunk (fresh snapshot).
    pub(crate) fn locate(&self, id: &ChunkId) -> Result<Option<Location>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn
            .open_table(CHUNKS)
            .index_ctx(|| "opening chunks".into())?;
        get_location(&table, id)
    }

    /// Reads the raw record bytes at `loc`.
    pub(crate) fn read_record(
        &self,
        id: &ChunkId,
        loc: &Location,
    ) -> Result<RecordBytes, StoreError> {
        let handle = self.readers.handle(loc.pack)?;
        self.readers
            .read(&handle, loc.offset, loc.record_len(id.algorithm()))
    }

    /// Reads and decodes the chunk at `loc` into `out`.
    pub(crate) fn load_at(
        &self,
        id: &ChunkId,
        loc: &Location,
        out: &mut Vec<u8>,
        dec: &mut zstd::bulk::Decompressor<'static>,
    ) -> Result<(), StoreError> {
        // Decoding is inside the timing: with mmap the pages are only read when
        // touched, which is during decoding.
        let decoded = self.counters.chunk_reads.time(|| {
            let record = self.read_record(id, loc)?;
            Ok(decode_record(id, loc, &record, out, dec))
        })?;
        decoded.map_err(|detail| StoreError::CorruptChunk {
            chunk: id.to_string(),
            pack: pack_label(loc.pack),
            detail,
        })
    }

    /// Looks a chunk up and reads it into `out`, safe against a concurrent gc
    /// moving it (see [`StoreInner::pack_files`]). Returns where it was.
    pub(crate) fn load_chunk(
        &self,
        id: &ChunkId,
        out: &mut Vec<u8>,
        dec: &mut zstd::bulk::Decompressor<'static>,
    ) -> Result<Location, StoreError> {
        let (loc, record, started) = {
            let _files = self
                .pack_files
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let loc = self.locate(id)?.ok_or_else(|| StoreError::ChunkMissing {
                chunk: id.to_string(),
            })?;
            // The index lookup is not pack I/O: timing starts after it.
            let started = Instant::now();
            let record = self.read_record(id, &loc)?;
            (loc, record, started)
        };
        // Decoding is inside the timing: with mmap the pages are only read when
        // touched, which is during decoding.
        let decoded = decode_record(id, &loc, &record, out, dec);
        self.counters.chunk_reads.record(started.elapsed());
        decoded.map_err(|detail| StoreError::CorruptChunk {
            chunk: id.to_string(),
            pack: pack_label(loc.pack),
            detail,
        })?;
        Ok(loc)
    }

    /// Removes pack files (after the index stopped referencing them).
    pub(crate) fn delete_pack_files(&self, packs: &[u32]) -> Result<(), StoreError> {
        if packs.is_empty() {
            return Ok(());
        }
        {
            let _files = self
                .pack_files
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for &p in packs {
                self.readers.forget(p);
                match fs::remove_file(self.packs_dir.join(pack_file_name(p))) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(format!("deleting {}", pack_label(p)), e)),
                }
            }
        }
        sync_dir(&self.packs_dir)
    }

    /// Sum of pack file sizes on disk.
    pub(crate) fn pack_bytes_on_disk(&self) -> Result<(u64, u64), StoreError> {
        let files = list_pack_files(&self.packs_dir)?;
        Ok((files.len() as u64, files.iter().map(|f| f.1).sum()))
    }

    /// fdatasyncs `packs` (timed in `pack_syncs`): their bytes reach the disk
    /// before any index entry that names them is committed.
    pub(crate) fn sync_packs(
        &self,
        packs: impl IntoIterator<Item = u32>,
    ) -> Result<(), StoreError> {
        for pack in packs {
            let file = self.appender().sync_handle(pack)?;
            self.counters
                .pack_syncs
                .time(|| file.sync_data())
                .map_err(|e| StoreError::io(format!("syncing {}", pack_label(pack)), e))?;
        }
        Ok(())
    }

    /// Locks the shared pack appender.
    pub(crate) fn appender(&self) -> std::sync::MutexGuard<'_, PackAppender> {
        lock(&self.appender)
    }
}

/// Creates this crate's tables and checks the format version.
fn init_tables(db: &Database) -> Result<(), StoreError> {
    let ctx = || "initialising tables".to_string();
    let txn = db.begin_write().index_ctx(ctx)?;
    {
        txn.open_table(CHUNKS).index_ctx(ctx)?;
        txn.open_table(BLOBS).index_ctx(ctx)?;
        txn.open_table(PACKS).index_ctx(ctx)?;
        let mut meta = txn.open_table(META).index_ctx(ctx)?;
        let found = meta.get(META_FORMAT).index_ctx(ctx)?.map(|v| v.value());
        match found {
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION).index_ctx(ctx)?;
            }
            Some(v) if v == FORMAT_VERSION => {}
            Some(v) => {
                return Err(StoreError::UnsupportedFormat {
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                    supported: FORMAT_VERSION as u32,
                })
            }
        }
    }
    txn.commit().index_ctx(ctx)
}

/// Crash recovery: cut every pack back to its committed length and remove
/// pack files no committed transaction knows. Returns the committed lengths.
fn recover_packs(db: &Database, packs_dir: &Path) -> Result<BTreeMap<u32, u64>, StoreError> {
    let committed: BTreeMap<u32, u64> = {
        let txn = db.begin_read().index_ctx(|| "starting recovery".into())?;
        let table = txn.open_table(PACKS).index_ctx(|| "opening packs".into())?;
        let mut m = BTreeMap::new();
        for entry in table.iter().index_ctx(|| "listing packs".into())? {
            let (k, v) = entry.index_ctx(|| "listing packs".into())?;
            m.insert(k.value(), v.value());
        }
        m
    };
    let mut dir_changed = false;
    for (number, len) in list_pack_files(packs_dir)? {
        let label = pack_label(number);
        let path = packs_dir.join(pack_file_name(number));
        match committed.get(&number) {
            None => {
                tracing::warn!(pack = %label, bytes = len, "removing pack file not in the index (never committed)");
                fs::remove_file(&path).io_ctx(|| format!("removing {label}"))?;
                dir_changed = true;
            }
            Some(&c) if len > c => {
                tracing::warn!(pack = %label, committed = c, on_disk = len, "truncating unacknowledged bytes");
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .io_ctx(|| format!("opening {label}"))?;
                f.set_len(c).io_ctx(|| format!("truncating {label}"))?;
                f.sync_all().io_ctx(|| format!("syncing {label}"))?;
            }
            Some(&c) if len < c => {
                tracing::error!(pack = %label, committed = c, on_disk = len, "pack file is shorter than its committed length; run check");
            }
            Some(_) => {}
        }
    }
    for &number in committed.keys() {
        if !packs_dir.join(pack_file_name(number)).exists() {
            tracing::error!(pack = %pack_label(number), "committed pack file is missing; run check");
        }
    }
    if dir_changed {
        sync_dir(packs_dir)?;
    }
    Ok(committed)
}
