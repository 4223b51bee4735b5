//! Pack files: the on-disk chunk record format, the [`PackAppender`] that
//! appends records to the active pack, and [`PackReaders`], the cache of open
//! pack handles and memory maps that reads go through.
//!
//! A pack is `packs/NNNNNNNN.pack`: an 8-byte magic, then records back to back.
//! A record is a 16-byte header, the chunk's base id, then the payload:
//!
//! ```text
//! 0  magic "HBCK"     4  flags (bit 0 = zstd)   5  base-id length
//! 6  reserved (0, 0)  8  stored length u32 LE  12  raw length u32 LE
//! ```
//!
//! The header lets `check` walk a pack record by record and lets every read
//! confirm it landed on the record its index entry names.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use memmap2::{Mmap, MmapOptions};

use crate::chunk_id::ChunkId;
use crate::error::{IoContext, StoreError};
use crate::locking::lock;
use crate::options::HashAlgorithm;

/// First bytes of every pack file.
pub(crate) const PACK_MAGIC: &[u8; 8] = b"HBPACK01";
/// Length of the pack file header; the first record starts here.
pub(crate) const PACK_HEADER_LEN: u64 = PACK_MAGIC.len() as u64;
/// First bytes of every chunk record.
pub(crate) const RECORD_MAGIC: &[u8; 4] = b"HBCK";
/// Length of a record header.
pub(crate) const RECORD_HEADER_LEN: usize = 16;
/// Record flag: the payload is a zstd frame (otherwise raw bytes).
pub(crate) const FLAG_ZSTD: u8 = 1;
/// Record flag: raw payload written by a writer that deferred compression
/// ([`crate::StoreOptions::defer_compression`]); [`crate::Store::compress_deferred`]
/// rewrites it. Never set together with [`FLAG_ZSTD`].
pub(crate) const FLAG_DEFERRED: u8 = 2;
/// A pack is closed and a new one started once it reaches this size. 256 MiB
/// keeps the file count low while bounding how much gc copies per compaction.
pub const PACK_ROLL_SIZE: u64 = 256 * 1024 * 1024;
/// Open pack handles kept by [`PackReaders`].
const READER_CACHE_SIZE: usize = 32;

/// File name of pack `number` inside the packs directory.
pub(crate) fn pack_file_name(number: u32) -> String {
    format!("{number:08}.pack")
}

/// Name of pack `number` relative to the store directory, for messages.
pub(crate) fn pack_label(number: u32) -> String {
    format!("packs/{number:08}.pack")
}

/// Pack number of a file name, if it is one of ours.
pub(crate) fn parse_pack_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".pack")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where a chunk record lives; the value of a chunk index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    /// Pack number.
    pub pack: u32,
    /// Offset of the record header in the pack.
    pub offset: u64,
    /// Payload length in the pack.
    pub stored_len: u32,
    /// Length of the chunk's content.
    pub raw_len: u32,
    /// Record flags ([`FLAG_ZSTD`]).
    pub flags: u8,
}

impl Location {
    /// Size of [`Location::encode`]'s output.
    pub(crate) const ENCODED_LEN: usize = 21;

    /// Fixed little-endian encoding stored in the chunk index.
    pub(crate) fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0..4].copy_from_slice(&self.pack.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.to_le_bytes());
        out[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        out[20] = self.flags;
        out
    }

    /// Inverse of [`Location::encode`].
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let u32_at = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[i..i + 4]);
            u32::from_le_bytes(b)
        };
        let mut off = [0u8; 8];
        off.copy_from_slice(&bytes[4..12]);
        Some(Location {
            pack: u32_at(0),
            offset: u64::from_le_bytes(off),
            stored_len: u32_at(12),
            raw_len: u32_at(16),
            flags: bytes[20],
        })
    }

    /// Whole record length (header + base id + payload) for a chunk of `alg`.
    pub(crate) fn record_len(&self, alg: HashAlgorithm) -> u64 {
        (RECORD_HEADER_LEN + 1 + alg.digest_len()) as u64 + u64::from(self.stored_len)
    }

    /// Offset just past the record.
    pub(crate) fn end(&self, alg: HashAlgorithm) -> u64 {
        self.offset + self.record_len(alg)
    }
}

/// Decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// Record flags.
    pub flags: u8,
    /// Length of the base id that follows the header.
    pub id_len: usize,
    /// Payload length.
    pub stored_len: u32,
    /// Content length.
    pub raw_len: u32,
}

impl RecordHeader {
    /// Parses the first [`RECORD_HEADER_LEN`] bytes of a record.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < RECORD_HEADER_LEN {
            return Err(format!("record header truncated to {} bytes", bytes.len()));
        }
        if &bytes[0..4] != RECORD_MAGIC {
            return Err("bad record magic".into());
        }
        let flags = bytes[4];
        if flags & !(FLAG_ZSTD | FLAG_DEFERRED) != 0 || flags == FLAG_ZSTD | FLAG_DEFERRED {
            return Err(format!("unknown record flags {flags:#x}"));
        }
        let u32_at = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[i..i + 4]);
            u32::from_le_bytes(b)
        };
        Ok(RecordHeader {
            flags,
            id_len: usize::from(bytes[5]),
            stored_len: u32_at(8),
            raw_len: u32_at(12),
        })
    }

    /// Whole record length.
    pub(crate) fn record_len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.id_len) as u64 + u64::from(self.stored_len)
    }
}

/// Builds a record for chunk `id` holding `raw`: zstd at `level` when
/// `compress` is set and it saves space, raw otherwise.
pub(crate) fn encode_record(
    id: &ChunkId,
    raw: &[u8],
    compressor: Option<&mut zstd::bulk::Compressor<'static>>,
) -> Result<Vec<u8>, StoreError> {
    let compressed = match compressor {
        Some(c) => {
            let z = c
                .compress(raw)
                .io_ctx(|| format!("compressing chunk {id}"))?;
            // Incompressible data (already-gzipped files, media) is stored raw so
            // reads skip a pointless decompression and never grow.
            (z.len() < raw.len()).then_some(z)
        }
        None => None,
    };
    Ok(match &compressed {
        Some(z) => build_record(id, FLAG_ZSTD, z, raw.len()),
        None => build_record(id, 0, raw, raw.len()),
    })
}

/// Builds a raw record marked [`FLAG_DEFERRED`]: compression comes later, off
/// the writer's path.
pub(crate) fn encode_deferred_record(id: &ChunkId, raw: &[u8]) -> Vec<u8> {
    build_record(id, FLAG_DEFERRED, raw, raw.len())
}

/// Header, base id and payload of one record.
fn build_record(id: &ChunkId, flags: u8, payload: &[u8], raw_len: usize) -> Vec<u8> {
    let base = id.base();
    let mut rec = Vec::with_capacity(RECORD_HEADER_LEN + base.len() + payload.len());
    rec.extend_from_slice(RECORD_MAGIC);
    rec.push(flags);
    rec.push(base.len() as u8);
    rec.extend_from_slice(&[0, 0]);
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&(raw_len as u32).to_le_bytes());
    rec.extend_from_slice(base);
    rec.extend_from_slice(payload);
    rec
}

/// Checks that `record` is the record `loc` names for `id`, and writes the
/// chunk's content into `out` (cleared first).
pub(crate) fn decode_record(
    id: &ChunkId,
    loc: &Location,
    record: &[u8],
    out: &mut Vec<u8>,
    decompressor: &mut zstd::bulk::Decompressor<'static>,
) -> Result<(), String> {
    let header = RecordHeader::parse(record)?;
    if header.flags != loc.flags
        || header.stored_len != loc.stored_len
        || header.raw_len != loc.raw_len
    {
        return Err(format!(
            "record header (flags {}, stored {}, raw {}) disagrees with index (flags {}, stored {}, raw {})",
            header.flags, header.stored_len, header.raw_len, loc.flags, loc.stored_len, loc.raw_len
        ));
    }
    let id_end = RECORD_HEADER_LEN + header.id_len;
    if record.len() as u64 != header.record_len() {
        return Err("record length disagrees with its header".into());
    }
    if &record[RECORD_HEADER_LEN..id_end] != id.base() {
        return Err("record holds a different chunk id".into());
    }
    let payload = &record[id_end..];
    out.clear();
    if header.flags & FLAG_ZSTD != 0 {
        out.reserve(header.raw_len as usize);
        let n = decompressor
            .decompress_to_buffer(payload, out)
            .map_err(|e| format!("zstd: {e}"))?;
        if n != header.raw_len as usize {
            return Err(format!(
                "decompressed to {n} bytes, expected {}",
                header.raw_len
            ));
        }
    } else {
        if payload.len() != header.raw_len as usize {
            return Err("raw record length mismatch".into());
        }
        out.extend_from_slice(payload);
    }
    Ok(())
}

/// The pack currently receiving records.
#[derive(Debug)]
struct ActivePack {
    number: u32,
    file: File,
    /// Bytes written so far (the next record's offset).
    len: u64,
    /// Offset up to which writeback has been started (see [`PackAppender::append`]).
    writeback_from: u64,
}

/// Writeback is started every this many appended bytes.
const WRITEBACK_STEP: u64 = 1 << 20;

/// Appends records to the active pack, rolling to a new pack at the roll size.
/// Shared by all writers behind a mutex; appends are positioned writes at the
/// tracked length, so a failed (partial) append is simply overwritten by the next.
#[derive(Debug)]
pub(crate) struct PackAppender {
    dir: PathBuf,
    roll_size: u64,
    active: Option<ActivePack>,
    next_number: u32,
}

impl PackAppender {
    /// Appender for `dir`, resuming pack `resume` (number, committed length) if
    /// given; new packs are numbered from `next_number`.
    pub(crate) fn new(
        dir: &Path,
        roll_size: u64,
        resume: Option<(u32, u64)>,
        next_number: u32,
    ) -> Result<Self, StoreError> {
        let active = match resume {
            Some((number, len)) => {
                let path = dir.join(pack_file_name(number));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .io_ctx(|| format!("opening {}", pack_label(number)))?;
                Some(ActivePack {
                    number,
                    file,
                    len,
                    writeback_from: len,
                })
            }
            None => None,
        };
        Ok(PackAppender {
            dir: dir.to_path_buf(),
            roll_size,
            active,
            next_number,
        })
    }

    /// Number of the active pack, if one is open.
    pub(crate) fn active_number(&self) -> Option<u32> {
        self.active.as_ref().map(|a| a.number)
    }

    /// Closes the active pack; the next append starts a new one.
    pub(crate) fn seal(&mut self) {
        self.active = None;
    }

    /// Appends one encoded record; returns where it landed.
    pub(crate) fn append(&mut self, record: &[u8]) -> Result<(u32, u64), StoreError> {
        let needs_roll = match &self.active {
            None => true,
            Some(a) => a.len > PACK_HEADER_LEN && a.len + record.len() as u64 > self.roll_size,
        };
        if needs_roll {
            self.roll()?;
        }
        let Some(active) = self.active.as_mut() else {
            return Err(StoreError::io(
                "appending to a pack",
                io::Error::other("no active pack after roll"),
            ));
        };
        let offset = active.len;
        if let Err(e) = active.file.write_all_at(record, offset) {
            // Drop whatever part landed; if even that fails the bytes sit past
            // the committed length and are overwritten or truncated later.
            let _ = active.file.set_len(offset);
            return Err(StoreError::io(
                format!("appending to {}", pack_label(active.number)),
                e,
            ));
        }
        active.len = offset + record.len() as u64;
        // Start writing the new bytes back now, without waiting: the batch commit's
        // fdatasync then finds little left to do instead of stalling the writer on all of it.
        if active.len - active.writeback_from >= WRITEBACK_STEP {
            Self::start_writeback(&active.file, active.writeback_from, active.len);
            active.writeback_from = active.len;
        }
        Ok((active.number, offset))
    }

    /// Asks the kernel to begin writing a range back (Linux `sync_file_range`, WRITE only: it
    /// waits for nothing and guarantees nothing; durability still comes from fdatasync).
    fn start_writeback(file: &File, from: u64, to: u64) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor and a plain range; the call only schedules I/O.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                from as libc::off64_t,
                (to - from) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }

    /// A descriptor of pack `number` to fsync without holding the appender
    /// lock (fsync through any descriptor flushes the file's dirty pages).
    pub(crate) fn sync_handle(&self, number: u32) -> Result<File, StoreError> {
        let ctx = || format!("opening {} to sync it", pack_label(number));
        match &self.active {
            Some(a) if a.number == number => a.file.try_clone().io_ctx(ctx),
            _ => OpenOptions::new()
                .write(true)
                .open(self.dir.join(pack_file_name(number)))
                .io_ctx(ctx),
        }
    }

    fn roll(&mut self) -> Result<(), StoreError> {
        let number = self.next_number;
        let label = pack_label(number);
        let path = self.dir.join(pack_file_name(number));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .io_ctx(|| format!("creating {label}"))?;
        file.write_all_at(PACK_MAGIC, 0)
            .io_ctx(|| format!("appending to {label}"))?;
        // The directory entry must be durable before any index entry names this pack.
        sync_dir(&self.dir)?;
        self.next_number = number.checked_add(1).ok_or_else(|| {
            StoreError::io("allocating a pack number", io::Error::other("exhausted"))
        })?;
        self.active = Some(ActivePack {
            number,
            file,
            len: PACK_HEADER_LEN,
            writeback_from: PACK_HEADER_LEN,
        });
        Ok(())
    }
}

/// fsyncs a directory so created/removed entries survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .io_ctx(|| format!("syncing directory {}", dir.display()))
}

/// An open pack file with its (lazily made, grown on demand) memory map.
#[derive(Debug)]
pub(crate) struct PackHandle {
    number: u32,
    file: File,
    map: Mutex<Option<Arc<Mmap>>>,
}

/// Bytes of one record: borrowed from a map or read into a buffer.
pub(crate) enum RecordBytes {
    /// A range of a memory map (kept alive by the `Arc`).
    Mapped(Arc<Mmap>, std::ops::Range<usize>),
    /// Bytes read with `pread`.
    Owned(Vec<u8>),
}

impl Deref for RecordBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            RecordBytes::Mapped(map, range) => &map[range.clone()],
            RecordBytes::Owned(v) => v,
        }
    }
}

/// Cache of open pack handles used by every read.
#[derive(Debug)]
pub(crate) struct PackReaders {
    dir: PathBuf,
    use_mmap: bool,
    cache: Mutex<HashMap<u32, Arc<PackHandle>>>,
}

impl PackReaders {
    /// Readers for the packs in `dir`.
    pub(crate) fn new(dir: &Path, use_mmap: bool) -> Self {
        PackReaders {
            dir: dir.to_path_buf(),
            use_mmap,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Open handle of pack `number` (opened and cached on first use).
    pub(crate) fn handle(&self, number: u32) -> Result<Arc<PackHandle>, StoreError> {
        let mut cache = lock(&self.cache);
        if let Some(h) = cache.get(&number) {
            return Ok(Arc::clone(h));
        }
        let file = File::open(self.dir.join(pack_file_name(number)))
            .io_ctx(|| format!("opening {}", pack_label(number)))?;
        if cache.len() >= READER_CACHE_SIZE {
            // Any victim will do: handles are cheap to reopen and readers
            // holding an Arc keep theirs alive.
            if let Some(&victim) = cache.keys().next() {
                cache.remove(&victim);
            }
        }
        let h = Arc::new(PackHandle {
            number,
            file,
            map: Mutex::new(None),
        });
        cache.insert(number, Arc::clone(&h));
        Ok(h)
    }

    /// Drops every cached handle (and so its map, once no record borrows it).
    pub(crate) fn forget_all(&self) {
        lock(&self.cache).clear();
    }

    /// Drops the cached handle of a pack about to be deleted.
    pub(crate) fn forget(&self, number: u32) {
        lock(&self.cache).remove(&number);
    }

    /// Reads `len` bytes at `offset` of a pack.
    pub(crate) fn read(
        &self,
        handle: &PackHandle,
        offset: u64,
        len: u64,
    ) -> Result<RecordBytes, StoreError> {
        let ctx = || format!("reading {} at offset {offset}", pack_label(handle.number));
        let end = offset
            .checked_add(len)
            .ok_or_else(|| StoreError::io(ctx(), io::Error::other("offset overflow")))?;
        if self.use_mmap {
            let map = {
                let mut slot = lock(&handle.map);
                let fresh = match slot.as_ref() {
                    Some(m) if m.len() as u64 >= end => None,
                    _ => {
                        // SAFETY: pack bytes below a committed length are never
                        // modified and packs are never truncated while the store
                        // is open (only at open, before any map exists), so the
                        // mapped memory cannot change or vanish under us.
                        let m = unsafe { MmapOptions::new().map(&handle.file) }.io_ctx(ctx)?;
                        Some(Arc::new(m))
                    }
                };
                if let Some(m) = fresh {
                    *slot = Some(m);
                }
                match slot.as_ref() {
                    Some(m) => Arc::clone(m),
                    None => return Err(StoreError::io(ctx(), io::Error::other("no map"))),
                }
            };
            if (map.len() as u64) < end {
                return Err(StoreError::io(
                    ctx(),
                    io::Error::new(io::ErrorKind::UnexpectedEof, "pack file is shorter"),
                ));
            }
            Ok(RecordBytes::Mapped(map, offset as usize..end as usize))
        } else {
            let mut buf = vec![0u8; len as usize];
            handle.file.read_exact_at(&mut buf, offset).io_ctx(ctx)?;
            Ok(RecordBytes::Owned(buf))
        }
    }
}

/// Lists the pack files in `dir` as (number, length on disk).
pub(crate) fn list_pack_files(dir: &Path) -> Result<Vec<(u32, u64)>, StoreError> {
    let ctx = || format!("listing {}", dir.display());
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).io_ctx(ctx)? {
        let entry = entry.io_ctx(ctx)?;
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(parse_pack_file_name) else {
            continue;
        };
        // A dangling symlink or vanished file counts as empty rather than
        // aborting the listing; recovery removes or reports it.
        let len = entry.path().metadata().map(|m| m.len()).unwrap_or(0);
        out.push((number, len));
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_id::{ChunkHasher, StandardHasher};

    #[test]
    fn location_round_trip() {
        let loc = Location {
            pack: 7,
            offset: 1 << 40,
            stored_len: 1234,
            raw_len: 65536,
            flags: FLAG_ZSTD,
        };
        assert_eq!(Location::decode(&loc.encode()), Some(loc));
        assert_eq!(Location::decode(&[0; 5]), None);
    }

    #[test]
    fn record_round_trip_compressed_and_raw() {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        let text = b"hello hello hello hello hello hello hello hello".repeat(100);
        let mut x = 0x1234_5678_9abc_def1u64;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        for (data, expect_flags) in [(&text[..], FLAG_ZSTD), (&noise[..], 0)] {
            let id = StandardHasher.chunk_id(HashAlgorithm::Blake3, data);
            let rec = encode_record(&id, data, Some(&mut c)).unwrap();
            let h = RecordHeader::parse(&rec).unwrap();
            assert_eq!(h.flags, expect_flags);
            assert_eq!(h.record_len(), rec.len() as u64);
            let loc = Location {
                pack: 1,
                offset: 8,
                stored_len: h.stored_len,
                raw_len: h.raw_len,
                flags: h.flags,
            };
            assert_eq!(loc.record_len(HashAlgorithm::Blake3), rec.len() as u64);
            let mut out = Vec::new();
            decode_record(&id, &loc, &rec, &mut out, &mut d).unwrap();
            assert_eq!(out, data);
            let mut bad = rec.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0xff;
            let other = StandardHasher.chunk_id(HashAlgorithm::Blake3, b"other");
            assert!(decode_record(&other, &loc, &rec, &mut out, &mut d).is_err());
        }
    }

    #[test]
    fn pack_names() {
        assert_eq!(pack_file_name(3), "00000003.pack");
        assert_eq!(parse_pack_file_name("00000003.pack"), Some(3));
        assert_eq!(parse_pack_file_name("3.pack"), None);
        assert_eq!(parse_pack_file_name("0000000x.pack"), None);
    }
}
