//! Live activity counters of a [`Store`]: deduplication lookups, chunks written,
//! compression work and the latency of pack I/O.
//!
//! They count since [`Store::open`] and are never persisted: they describe what
//! this process did, for metrics, not what the store holds (that is
//! [`Store::stats`]). Every update is a handful of `Relaxed` atomic adds, so the
//! chunk path pays next to nothing; clocks are read only around real I/O and
//! compression calls. A [`CountersSnapshot`] reads the atomics one by one, so a
//! snapshot taken during a write may be off by the chunk in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::chunk_id::ChunkId;
use crate::error::StoreError;
use crate::pack::{encode_record, RecordHeader};
use crate::store::Store;

/// Number of buckets of a [`LatencySnapshot`]: one per bound in
/// [`LATENCY_BOUNDS_MICROS`] plus one for slower events.
pub const LATENCY_BUCKETS: usize = 16;

/// Upper bounds (inclusive, microseconds) of the latency buckets. A mapped
/// chunk read takes microseconds, an fdatasync of a pack tens of milliseconds,
/// hence the wide range.
pub const LATENCY_BOUNDS_MICROS: [u64; LATENCY_BUCKETS - 1] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000,
];

/// Latencies of one kind of I/O since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Events per bucket (not cumulative): `buckets[i]` counts events that took
    /// at most `LATENCY_BOUNDS_MICROS[i]` and more than the bound before it; the
    /// last bucket counts events slower than every bound.
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of all event durations, in microseconds.
    pub sum_micros: u64,
    /// The slowest event, in microseconds (0 before any event).
    pub max_micros: u64,
}

impl LatencySnapshot {
    /// Number of events (the sum of the buckets, so it always agrees with them).
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// A point-in-time copy of a store's activity counters; see [`Store::counters`].
/// Every field counts since the store was opened by this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Chunk lookups made to deduplicate (one per chunk written while dedup is
    /// on, whatever the outcome).
    pub dedup_operations: u64,
    /// Lookups that found the chunk already stored (by this blob or before), so
    /// nothing was appended.
    pub dedup_hits: u64,
    /// Content bytes of the chunks found by those hits.
    pub dedup_hit_bytes: u64,
    /// Chunk records appended to packs.
    pub chunks_written: u64,
    /// Content (uncompressed) bytes of the chunks appended to packs.
    pub chunk_bytes_written: u64,
    /// Chunks run through zstd (including ones later found to be duplicates
    /// and ones stored raw because compression did not shrink them).
    pub compressions: u64,
    /// Bytes given to those compressions.
    pub compression_input_bytes: u64,
    /// Bytes those compressions stored: the zstd frame, or the raw bytes when
    /// the frame was not smaller.
    pub compression_output_bytes: u64,
    /// Time spent in those compressions, in nanoseconds.
    pub compression_nanos: u64,
    /// Chunk reads from packs (read or page in, then decode), for blob reads,
    /// byte comparisons of cheap-hash ids and `check`.
    pub chunk_reads: LatencySnapshot,
    /// Chunk record appends to the active pack by blob writers.
    pub chunk_writes: LatencySnapshot,
    /// Pack fdatasyncs before a batch or blob commit.
    pub pack_syncs: LatencySnapshot,
}

/// Lock-free latency histogram behind a [`LatencySnapshot`].
#[derive(Debug, Default)]
pub(crate) struct LatencyCounter {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl LatencyCounter {
    /// Counts one event that took `elapsed`.
    pub(crate) fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// Times `f` and counts it, whatever it returns (a failed read still took
    /// that long).
    pub(crate) fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.record(started.elapsed());
        out
    }

    fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            max_micros: self.max_micros.load(Ordering::Relaxed),
        }
    }
}

/// The live counters, shared by the store, its writers and its chunk workers.
#[derive(Debug, Default)]
pub(crate) struct StoreCounters {
    dedup_operations: AtomicU64,
    dedup_hits: AtomicU64,
    dedup_hit_bytes: AtomicU64,
    chunks_written: AtomicU64,
    chunk_bytes_written: AtomicU64,
    compressions: AtomicU64,
    compression_input_bytes: AtomicU64,
    compression_output_bytes: AtomicU64,
    compression_nanos: AtomicU64,
    /// See [`CountersSnapshot::chunk_reads`].
    pub chunk_reads: LatencyCounter,
    /// See [`CountersSnapshot::chunk_writes`].
    pub chunk_writes: LatencyCounter,
    /// See [`CountersSnapshot::pack_syncs`].
    pub pack_syncs: LatencyCounter,
}

impl StoreCounters {
    /// Counts one chunk lookup made to deduplicate.
    pub(crate) fn dedup_lookup(&self) {
        self.dedup_operations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a lookup that found a chunk of `raw_len` content bytes.
    pub(crate) fn dedup_hit(&self, raw_len: u32) {
        self.dedup_hits.fetch_add(1, Ordering::Relaxed);
        self.dedup_hit_bytes
            .fetch_add(u64::from(raw_len), Ordering::Relaxed);
    }

    /// Counts a chunk of `raw_len` content bytes appended to a pack.
    pub(crate) fn chunk_written(&self, raw_len: u32) {
        self.chunks_written.fetch_add(1, Ordering::Relaxed);
        self.chunk_bytes_written
            .fetch_add(u64::from(raw_len), Ordering::Relaxed);
    }

    /// [`encode_record`], timing and counting the compression when there is one.
    /// The whole encode is timed: besides zstd it only copies the payload once.
    pub(crate) fn encode_record(
        &self,
        id: &ChunkId,
        raw: &[u8],
        compressor: Option<&mut zstd::bulk::Compressor<'static>>,
    ) -> Result<Vec<u8>, StoreError> {
        let Some(compressor) = compressor else {
            return encode_record(id, raw, None);
        };
        let started = Instant::now();
        let record = encode_record(id, raw, Some(compressor))?;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // The record was just built, so its header parses; should it not, the
        // output is not counted rather than guessed.
        let stored = RecordHeader::parse(&record).map_or(0, |h| u64::from(h.stored_len));
        self.compressions.fetch_add(1, Ordering::Relaxed);
        self.compression_input_bytes
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        self.compression_output_bytes
            .fetch_add(stored, Ordering::Relaxed);
        self.compression_nanos.fetch_add(nanos, Ordering::Relaxed);
        Ok(record)
    }

    /// A copy of every counter.
    pub(crate) fn snapshot(&self) -> CountersSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            dedup_operations: load(&self.dedup_operations),
            dedup_hits: load(&self.dedup_hits),
            dedup_hit_bytes: load(&self.dedup_hit_bytes),
            chunks_written: load(&self.chunks_written),
            chunk_bytes_written: load(&self.chunk_bytes_written),
            compressions: load(&self.compressions),
            compression_input_bytes: load(&self.compression_input_bytes),
            compression_output_bytes: load(&self.compression_output_bytes),
            compression_nanos: load(&self.compression_nanos),
            chunk_reads: self.chunk_reads.snapshot(),
            chunk_writes: self.chunk_writes.snapshot(),
            pack_syncs: self.pack_syncs.snapshot(),
        }
    }
}

impl Store {
    /// This process's activity counters for the store (shared by every clone):
    /// dedup lookups and hits, chunks written, compression work and pack I/O
    /// latencies since [`Store::open`]. Cheap: a few dozen atomic loads, no I/O.
    pub fn counters(&self) -> CountersSnapshot {
        self.inner.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::StoreOptions;

    /// Incompressible-looking but deterministic bytes, so no two chunks repeat.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn latency_buckets_are_inclusive_upper_bounds() {
        let c = LatencyCounter::default();
        c.record(Duration::from_micros(10));
        c.record(Duration::from_micros(11));
        c.record(Duration::from_secs(5));
        let s = c.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[LATENCY_BUCKETS - 1], 1);
        assert_eq!(s.count(), 3);
        assert_eq!(s.sum_micros, 5_000_021);
        assert_eq!(s.max_micros, 5_000_000);
    }

    #[test]
    fn second_write_of_a_blob_is_all_dedup_hits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.counters(), CountersSnapshot::default());
        // Text-like data that zstd shrinks, spanning several chunks.
        let mut data = Vec::new();
        for seed in 0..40u64 {
            let n = noise(8 * 1024, seed);
            data.extend(n.iter().map(|b| b'a' + b % 4));
        }
        let write = |data: &[u8]| {
            let mut w = store.writer();
            w.write_content(data).unwrap();
            w.finish(None).unwrap()
        };

        let first = write(&data);
        let after_first = store.counters();
        let chunks = first.chunks;
        assert!(chunks > 1, "test data must span several chunks");
        assert_eq!(after_first.dedup_operations, chunks);
        assert_eq!(after_first.dedup_hits, 0);
        assert_eq!(after_first.chunks_written, chunks);
        assert_eq!(after_first.chunk_bytes_written, data.len() as u64);
        assert_eq!(after_first.compressions, chunks);
        assert_eq!(after_first.compression_input_bytes, data.len() as u64);
        assert!(after_first.compression_output_bytes < after_first.compression_input_bytes);
        assert!(after_first.compression_nanos > 0);
        assert_eq!(after_first.chunk_writes.count(), chunks);
        assert!(after_first.pack_syncs.count() >= 1);
        assert_eq!(after_first.chunk_reads.count(), 0);

        let second = write(&data);
        assert_eq!(second.digest, first.digest);
        let after_second = store.counters();
        assert_eq!(after_second.dedup_operations, 2 * chunks);
        assert_eq!(after_second.dedup_hits, chunks);
        assert_eq!(after_second.dedup_hit_bytes, data.len() as u64);
        assert_eq!(after_second.chunks_written, chunks, "nothing new appended");
        assert_eq!(after_second.chunk_writes.count(), chunks);
        // Workers see the committed chunks and skip compressing them.
        assert_eq!(after_second.compressions, chunks);

        assert_eq!(store.read_blob(&first.digest).unwrap(), data);
        assert_eq!(store.counters().chunk_reads.count(), chunks);
    }
}
