//! [`Tally`]: every count the metrics keep for one stretch of time, and the
//! fixed-bucket [`Histogram`] inside it.
//!
//! The same type serves for the all-time totals (`Tally<u64>`) and for the
//! history buckets (`Tally<u32>`): a history bucket covers seconds, so 32-bit
//! event counts cannot overflow in practice and halve its size (see
//! [`super::history`]). Byte and time sums stay 64-bit everywhere.

use hb_store::{CountersSnapshot, LatencySnapshot};

/// An event counter: `u32` in history buckets, `u64` in totals. Adds saturate
/// instead of wrapping, so a counter never goes backwards.
pub(crate) trait Count: Copy + Default + Send + 'static {
    /// Adds `n`, saturating.
    fn add(&mut self, n: u64);
    /// The value, widened.
    fn get(self) -> u64;
}

impl Count for u32 {
    fn add(&mut self, n: u64) {
        *self = u32::try_from(u64::from(*self).saturating_add(n)).unwrap_or(u32::MAX);
    }
    fn get(self) -> u64 {
        u64::from(self)
    }
}

impl Count for u64 {
    fn add(&mut self, n: u64) {
        *self = self.saturating_add(n);
    }
    fn get(self) -> u64 {
        self
    }
}

/// Buckets of the container start, pull and API operation latency histograms.
pub(crate) const EVENT_BUCKETS: usize = 18;

/// Upper bounds (inclusive, microseconds) of those buckets, rendered in
/// milliseconds: 0.5 ms for a cheap API call up to 5 minutes for a big pull.
pub(crate) const EVENT_BOUNDS_MICROS: [u64; EVENT_BUCKETS - 1] = [
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

/// Buckets of the store I/O histograms: the store's own bucket layout.
pub(crate) const IO_BUCKETS: usize = hb_store::LATENCY_BUCKETS;

/// Kinds of store I/O, in the order of [`StoreTally::io`], with the label
/// value each is rendered under.
pub(crate) const IO_KINDS: [&str; 3] = ["chunk_read", "chunk_write", "pack_sync"];

/// Distinct API operation names kept apart; later names share the last slot,
/// rendered as [`OTHER_OPERATION`]. Routes are a fixed set well below this.
pub(crate) const MAX_OPERATIONS: usize = 64;

/// Label of the shared slot for operation names beyond [`MAX_OPERATIONS`].
pub(crate) const OTHER_OPERATION: &str = "other";

/// Latency histogram with `N` buckets (the bounds live with the caller).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Histogram<C, const N: usize> {
    /// Events per bucket, not cumulative; the last bucket is "slower than
    /// every bound".
    pub buckets: [C; N],
    /// Sum of all event durations in microseconds.
    pub sum_micros: u64,
}

impl<C: Count, const N: usize> Histogram<C, N> {
    /// No events.
    pub fn empty() -> Self {
        Histogram {
            buckets: [C::default(); N],
            sum_micros: 0,
        }
    }

    /// Counts one event of `micros`; `bounds` has `N - 1` ascending entries.
    pub fn observe(&mut self, bounds: &[u64], micros: u64) {
        let bucket = bounds.partition_point(|&b| b < micros).min(N - 1);
        self.buckets[bucket].add(1);
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Number of events.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|c| c.get()).sum()
    }

    /// Adds every count of `self` to `into`.
    pub fn add_into<D: Count>(&self, into: &mut Histogram<D, N>) {
        for (to, from) in into.buckets.iter_mut().zip(self.buckets) {
            to.add(from.get());
        }
        into.sum_micros = into.sum_micros.saturating_add(self.sum_micros);
    }

    /// Mean event duration in milliseconds; 0 without events.
    pub fn mean_ms(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum_micros as f64 / n as f64 / 1000.0,
        }
    }
}

impl Histogram<u64, IO_BUCKETS> {
    /// The store's histogram as a tally histogram.
    fn from_store(s: &LatencySnapshot) -> Self {
        Histogram {
            buckets: s.buckets,
            sum_micros: s.sum_micros,
        }
    }

    /// Events of `self` that `older` had not seen yet.
    fn since(&self, older: &Self) -> Self {
        Histogram {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(older.buckets[i])),
            sum_micros: self.sum_micros.saturating_sub(older.sum_micros),
        }
    }
}

/// What the content store did (from [`hb_store::Store::counters`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StoreTally<C> {
    /// Chunk lookups made to deduplicate.
    pub dedup_operations: C,
    /// Lookups that found the chunk stored.
    pub dedup_hits: C,
    /// Content bytes those hits did not store again.
    pub dedup_hit_bytes: u64,
    /// Chunks appended to packs.
    pub chunks_written: C,
    /// Content bytes of those chunks.
    pub chunk_bytes_written: u64,
    /// Chunk compressions.
    pub compressions: C,
    /// Bytes given to the compressor.
    pub compression_input_bytes: u64,
    /// Bytes the compressions stored.
    pub compression_output_bytes: u64,
    /// Time spent compressing, in nanoseconds.
    pub compression_nanos: u64,
    /// I/O latencies, one histogram per [`IO_KINDS`] entry.
    pub io: [Histogram<C, IO_BUCKETS>; 3],
}

impl<C: Count> StoreTally<C> {
    /// Nothing happened.
    pub fn empty() -> Self {
        StoreTally {
            dedup_operations: C::default(),
            dedup_hits: C::default(),
            dedup_hit_bytes: 0,
            chunks_written: C::default(),
            chunk_bytes_written: 0,
            compressions: C::default(),
            compression_input_bytes: 0,
            compression_output_bytes: 0,
            compression_nanos: 0,
            io: [Histogram::empty(); 3],
        }
    }

    /// Adds every count of `self` to `into`.
    pub fn add_into<D: Count>(&self, into: &mut StoreTally<D>) {
        into.dedup_operations.add(self.dedup_operations.get());
        into.dedup_hits.add(self.dedup_hits.get());
        into.dedup_hit_bytes = into.dedup_hit_bytes.saturating_add(self.dedup_hit_bytes);
        into.chunks_written.add(self.chunks_written.get());
        into.chunk_bytes_written = into
            .chunk_bytes_written
            .saturating_add(self.chunk_bytes_written);
        into.compressions.add(self.compressions.get());
        into.compression_input_bytes = into
            .compression_input_bytes
            .saturating_add(self.compression_input_bytes);
        into.compression_output_bytes = into
            .compression_output_bytes
            .saturating_add(self.compression_output_bytes);
        into.compression_nanos = into
            .compression_nanos
            .saturating_add(self.compression_nanos);
        for (to, from) in into.io.iter_mut().zip(&self.io) {
            from.add_into(to);
        }
    }
}

impl StoreTally<u64> {
    /// The store's counters as a tally.
    pub fn from_counters(c: &CountersSnapshot) -> Self {
        StoreTally {
            dedup_operations: c.dedup_operations,
            dedup_hits: c.dedup_hits,
            dedup_hit_bytes: c.dedup_hit_bytes,
            chunks_written: c.chunks_written,
            chunk_bytes_written: c.chunk_bytes_written,
            compressions: c.compressions,
            compression_input_bytes: c.compression_input_bytes,
            compression_output_bytes: c.compression_output_bytes,
            compression_nanos: c.compression_nanos,
            io: [
                Histogram::from_store(&c.chunk_reads),
                Histogram::from_store(&c.chunk_writes),
                Histogram::from_store(&c.pack_syncs),
            ],
        }
    }

    /// What happened between `older` and `self` (both cumulative). Saturating,
    /// so a snapshot torn by a concurrent update never yields a huge count.
    pub fn since(&self, older: &Self) -> Self {
        StoreTally {
            dedup_operations: self.dedup_operations.saturating_sub(older.dedup_operations),
            dedup_hits: self.dedup_hits.saturating_sub(older.dedup_hits),
            dedup_hit_bytes: self.dedup_hit_bytes.saturating_sub(older.dedup_hit_bytes),
            chunks_written: self.chunks_written.saturating_sub(older.chunks_written),
            chunk_bytes_written: self
                .chunk_bytes_written
                .saturating_sub(older.chunk_bytes_written),
            compressions: self.compressions.saturating_sub(older.compressions),
            compression_input_bytes: self
                .compression_input_bytes
                .saturating_sub(older.compression_input_bytes),
            compression_output_bytes: self
                .compression_output_bytes
                .saturating_sub(older.compression_output_bytes),
            compression_nanos: self
                .compression_nanos
                .saturating_sub(older.compression_nanos),
            io: std::array::from_fn(|i| self.io[i].since(&older.io[i])),
        }
    }
}

/// One event reported by the daemon.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    /// A container start; `hot` when its rootfs was already unpacked.
    Start { micros: u64, hot: bool },
    /// An image pull.
    Pull { micros: u64, ok: bool },
    /// An API request; `slot` indexes [`Tally::operations`].
    Operation { micros: u64, slot: usize },
    /// An API connection accepted.
    ConnectionOpened,
    /// An API connection turned away.
    ConnectionRefused,
    /// A prewarm attempt.
    Prewarm { ok: bool },
}

/// Every count for one stretch of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tally<C> {
    /// Container starts served from the hot tier.
    pub starts_hot: C,
    /// Container starts that had to unpack their rootfs.
    pub starts_cold: C,
    /// Container start latencies.
    pub start_latency: Histogram<C, EVENT_BUCKETS>,
    /// Pulls that succeeded.
    pub pulls_ok: C,
    /// Pulls that failed.
    pub pulls_failed: C,
    /// Pull latencies (failed pulls included: they kept a client waiting too).
    pub pull_latency: Histogram<C, EVENT_BUCKETS>,
    /// API request latencies, all operations together.
    pub operation_latency: Histogram<C, EVENT_BUCKETS>,
    /// API requests per operation name slot.
    pub operations: [C; MAX_OPERATIONS],
    /// API connections accepted.
    pub connections_opened: C,
    /// API connections refused.
    pub connections_refused: C,
    /// Prewarms that succeeded.
    pub prewarms_ok: C,
    /// Prewarms that failed.
    pub prewarms_failed: C,
    /// Store activity.
    pub store: StoreTally<C>,
}

impl<C: Count> Tally<C> {
    /// Nothing happened.
    pub fn empty() -> Self {
        Tally {
            starts_hot: C::default(),
            starts_cold: C::default(),
            start_latency: Histogram::empty(),
            pulls_ok: C::default(),
            pulls_failed: C::default(),
            pull_latency: Histogram::empty(),
            operation_latency: Histogram::empty(),
            operations: [C::default(); MAX_OPERATIONS],
            connections_opened: C::default(),
            connections_refused: C::default(),
            prewarms_ok: C::default(),
            prewarms_failed: C::default(),
            store: StoreTally::empty(),
        }
    }

    /// Counts one event.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Start { micros, hot } => {
                if hot {
                    self.starts_hot.add(1);
                } else {
                    self.starts_cold.add(1);
                }
                self.start_latency.observe(&EVENT_BOUNDS_MICROS, micros);
            }
            Event::Pull { micros, ok } => {
                if ok {
                    self.pulls_ok.add(1);
                } else {
                    self.pulls_failed.add(1);
                }
                self.pull_latency.observe(&EVENT_BOUNDS_MICROS, micros);
            }
            Event::Operation { micros, slot } => {
                self.operation_latency.observe(&EVENT_BOUNDS_MICROS, micros);
                if let Some(count) = self.operations.get_mut(slot) {
                    count.add(1);
                }
            }
            Event::ConnectionOpened => self.connections_opened.add(1),
            Event::ConnectionRefused => self.connections_refused.add(1),
            Event::Prewarm { ok: true } => self.prewarms_ok.add(1),
            Event::Prewarm { ok: false } => self.prewarms_failed.add(1),
        }
    }

    /// Adds every count of `self` to `into`.
    pub fn add_into<D: Count>(&self, into: &mut Tally<D>) {
        into.starts_hot.add(self.starts_hot.get());
        into.starts_cold.add(self.starts_cold.get());
        self.start_latency.add_into(&mut into.start_latency);
        into.pulls_ok.add(self.pulls_ok.get());
        into.pulls_failed.add(self.pulls_failed.get());
        self.pull_latency.add_into(&mut into.pull_latency);
        self.operation_latency.add_into(&mut into.operation_latency);
        for (to, from) in into.operations.iter_mut().zip(self.operations) {
            to.add(from.get());
        }
        into.connections_opened.add(self.connections_opened.get());
        into.connections_refused.add(self.connections_refused.get());
        into.prewarms_ok.add(self.prewarms_ok.get());
        into.prewarms_failed.add(self.prewarms_failed.get());
        self.store.add_into(&mut into.store);
    }
}
