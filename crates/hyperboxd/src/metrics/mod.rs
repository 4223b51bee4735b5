//! Prometheus metrics of hyperboxd, served on `[monitoring] metrics_addr` by
//! [`router`]: `GET /metrics` (all-time view), `GET /metrics?interval=5m`
//! (the same names over the last 5 minutes), `GET /health` and `GET /ready`.
//!
//! [`Metrics`] collects what the daemon reports (container starts, pulls, API
//! requests and connections, prewarms, prediction quality) and reads the
//! content store's own counters ([`hb_store::Store::counters`]) and, at most
//! every [`STATS_TTL`], its totals ([`hb_store::Store::stats`], a scan of the
//! index, too slow for every scrape).
//!
//! Each event is counted twice under one short lock: in all-time totals and
//! in the current bucket of a bounded history (the `history` module docs give its memory
//! bound), from which interval views are summed. Store counters reach the
//! history whenever they are sampled: on every scrape and on every tick of
//! [`Metrics::spawn_sampler`]; without the sampler, store activity lands in the
//! bucket of the next scrape.
//!
//! Counters of an interval view count the events of that window only, so they
//! are not monotonic across scrapes: Prometheus should scrape the all-time
//! view; interval views are for people and scripts.

mod exposition;
mod history;
pub(crate) mod http;
mod tally;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hb_store::{CountersSnapshot, Store, StoreStats};

pub use http::router;

use exposition::{ratio, View};
use history::{Clock, History, MonotonicClock};
use tally::{Event, StoreTally, Tally, MAX_OPERATIONS};

/// How long [`hb_store::Store::stats`] results are reused before a scrape
/// computes them again.
pub const STATS_TTL: Duration = Duration::from_secs(10);

/// The daemon's metrics. Share it as `Arc<Metrics>`; every method takes
/// `&self` and is cheap enough for a request path (a short uncontended lock).
pub struct Metrics {
    store: Store,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    open_connections: AtomicI64,
    /// `f64` bits.
    prediction_accuracy: AtomicU64,
    /// `f64` bits.
    prediction_recall: AtomicU64,
    stats: Mutex<Option<CachedStats>>,
    /// Held while computing store stats, so concurrent scrapes compute them once.
    stats_refresh: tokio::sync::Mutex<()>,
}

/// Everything behind the lock.
struct State {
    history: History,
    /// Events since the metrics were created (their `store` part is unused:
    /// the all-time store figures are the store's own counters).
    totals: Tally<u64>,
    /// Operation names by slot; at most `MAX_OPERATIONS - 1`, the last slot
    /// is shared by any further names.
    operation_names: Vec<&'static str>,
    /// Store counters already added to the history.
    store_seen: StoreTally<u64>,
}

/// The last store totals and when they were computed (by the metrics clock).
#[derive(Clone)]
struct CachedStats {
    at: Duration,
    stats: Option<StoreStats>,
}

/// Why a view cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewError {
    /// The interval reaches further back than the history kept.
    TooLong {
        /// The interval asked for.
        asked: Duration,
        /// The longest interval answered.
        longest: Duration,
    },
    /// The interval is shorter than one history bucket.
    TooShort {
        /// The interval asked for.
        asked: Duration,
        /// The shortest interval answered (one bucket).
        shortest: Duration,
    },
}

impl std::fmt::Display for ViewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewError::TooLong { asked, longest } => write!(
                f,
                "interval {}s reaches further back than the {}s of history kept (monitoring.history_buffer_mb)",
                asked.as_secs(),
                longest.as_secs()
            ),
            ViewError::TooShort { asked, shortest } => write!(
                f,
                "interval {}s is shorter than one history bucket ({}s)",
                asked.as_secs(),
                shortest.as_secs()
            ),
        }
    }
}

impl std::error::Error for ViewError {}

/// Locks a mutex, ignoring poisoning: every update under our locks leaves the
/// counts consistent, so a panic elsewhere must not stop the metrics.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Microseconds of a duration, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Metrics {
    /// Metrics for a daemon using `store`, keeping at most
    /// `history_budget_bytes` of history for interval views (give it
    /// `monitoring.history_buffer_mb` MiB; the `history` module docs say how it maps to
    /// bucket length).
    pub fn new(store: Store, history_budget_bytes: usize) -> Metrics {
        Metrics::with_clock(store, history_budget_bytes, Arc::new(MonotonicClock::new()))
    }

    /// [`Metrics::new`] with a chosen clock (tests move time by hand).
    pub(crate) fn with_clock(
        store: Store,
        history_budget_bytes: usize,
        clock: Arc<dyn Clock>,
    ) -> Metrics {
        // Store activity before the metrics existed belongs to no bucket.
        let store_seen = StoreTally::from_counters(&store.counters());
        Metrics {
            store,
            clock,
            state: Mutex::new(State {
                history: History::new(history_budget_bytes),
                totals: Tally::empty(),
                operation_names: Vec::new(),
                store_seen,
            }),
            open_connections: AtomicI64::new(0),
            prediction_accuracy: AtomicU64::new(0f64.to_bits()),
            prediction_recall: AtomicU64::new(0f64.to_bits()),
            stats: Mutex::new(None),
            stats_refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// A container start that took `latency`; `hot_hit` when its rootfs was
    /// already unpacked (served from the hot tier).
    pub fn record_start(&self, latency: Duration, hot_hit: bool) {
        self.record(Event::Start {
            micros: micros(latency),
            hot: hot_hit,
        });
    }

    /// An image pull that took `latency`, successful or not.
    pub fn record_pull(&self, latency: Duration, ok: bool) {
        self.record(Event::Pull {
            micros: micros(latency),
            ok,
        });
    }

    /// An API request of operation `op` (a short route name such as
    /// `"containers.create"`) that took `latency`. The first 63 distinct names
    /// are counted apart, later ones together as `"other"`.
    pub fn record_operation(&self, op: &'static str, latency: Duration) {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let slot = state.operation_slot(op);
        state.record(
            now,
            Event::Operation {
                micros: micros(latency),
                slot,
            },
        );
    }

    /// An API connection was accepted.
    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        self.record(Event::ConnectionOpened);
    }

    /// An API connection ended.
    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// An API connection was turned away (never opened).
    pub fn connection_refused(&self) {
        self.record(Event::ConnectionRefused);
    }

    /// A prewarm attempt finished.
    pub fn record_prewarm(&self, ok: bool) {
        self.record(Event::Prewarm { ok });
    }

    /// The predictor's latest accuracy (share of prewarmed images then used)
    /// and recall (share of started images that were prewarmed), both 0..1.
    /// Shown as they are in every view until set again; 0 until first set.
    pub fn set_prediction(&self, accuracy: f64, recall: f64) {
        self.prediction_accuracy
            .store(accuracy.to_bits(), Ordering::Relaxed);
        self.prediction_recall
            .store(recall.to_bits(), Ordering::Relaxed);
    }

    /// Length of one history bucket: the resolution of interval views.
    pub fn bucket_len(&self) -> Duration {
        lock(&self.state).history.bucket_len()
    }

    /// The longest interval an interval view answers (at least 24 h).
    pub fn max_interval(&self) -> Duration {
        lock(&self.state).history.max_window()
    }

    /// Most bytes the history may occupy (within the budget given to
    /// [`Metrics::new`] unless that was below two buckets).
    pub fn history_capacity_bytes(&self) -> usize {
        lock(&self.state).history.capacity_bytes()
    }

    /// Adds the store activity since the last sample to the current history
    /// bucket. [`Metrics::spawn_sampler`] calls it every bucket; scrapes too.
    pub fn sample_store(&self) {
        let counters = self.store.counters();
        let now = self.clock.now();
        lock(&self.state).fold_store(now, &counters);
    }

    /// Starts a task calling [`Metrics::sample_store`] once per bucket, so store
    /// activity lands in the bucket it happened in. It ends when the last
    /// `Arc` of the metrics is dropped. Needs a Tokio runtime.
    pub fn spawn_sampler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let metrics = Arc::downgrade(self);
        let period = self.bucket_len();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                match metrics.upgrade() {
                    Some(m) => m.sample_store(),
                    None => return,
                }
            }
        })
    }

    /// Recomputes the store totals (compression and dedup ratios of the
    /// all-time view) if they are older than [`STATS_TTL`], on a blocking
    /// thread. A failure is logged and the previous totals kept until the next
    /// TTL, so a broken index is not rescanned on every scrape.
    pub async fn refresh_store_stats(&self) {
        let _refreshing = self.stats_refresh.lock().await;
        let now = self.clock.now();
        let fresh = lock(&self.stats)
            .as_ref()
            .is_some_and(|c| now.saturating_sub(c.at) < STATS_TTL);
        if fresh {
            return;
        }
        let store = self.store.clone();
        let computed = tokio::task::spawn_blocking(move || store.stats()).await;
        let stats = match computed {
            Ok(Ok(stats)) => Some(stats),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: cannot compute store totals");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: store totals task failed");
                None
            }
        };
        let mut cached = lock(&self.stats);
        let previous = cached.as_ref().and_then(|c| c.stats.clone());
        *cached = Some(CachedStats {
            at: now,
            stats: stats.or(previous),
        });
    }

    /// The text exposition: all-time with `interval` `None`, else the events of
    /// the last `interval` (rounded to history buckets). Uses the store totals
    /// cached by [`Metrics::refresh_store_stats`]; until there are any, the
    /// all-time ratios come from this process's counters.
    pub fn render(&self, interval: Option<Duration>) -> Result<String, ViewError> {
        let counters = self.store.counters();
        let now = self.clock.now();
        let (tally, covered, names) = {
            let mut state = lock(&self.state);
            if let Some(asked) = interval {
                let longest = state.history.max_window();
                let shortest = state.history.bucket_len();
                if asked > longest {
                    return Err(ViewError::TooLong { asked, longest });
                }
                if asked < shortest {
                    return Err(ViewError::TooShort { asked, shortest });
                }
            }
            state.fold_store(now, &counters);
            let (mut tally, covered) = match interval {
                None => (state.totals, now),
                Some(window) => state.history.window(now, window),
            };
            if interval.is_none() {
                tally.store = StoreTally::from_counters(&counters);
            }
            (tally, covered, state.operation_names.clone())
        };
        let s = &tally.store;
        let mut dedup_ratio = match (s.chunk_bytes_written, s.dedup_hit_bytes) {
            (0, 0) => 1.0,
            (0, _) => f64::INFINITY,
            (written, hits) => (written.saturating_add(hits)) as f64 / written as f64,
        };
        let mut compression_ratio =
            ratio(s.compression_input_bytes, s.compression_output_bytes, 1.0);
        if interval.is_none() {
            if let Some(stats) = lock(&self.stats).as_ref().and_then(|c| c.stats.as_ref()) {
                dedup_ratio = stats.dedup_ratio;
                compression_ratio = stats.compression_ratio;
            }
        }
        let view = View {
            covered,
            tally: &tally,
            operation_names: &names,
            dedup_ratio,
            compression_ratio,
            prediction_accuracy: f64::from_bits(self.prediction_accuracy.load(Ordering::Relaxed)),
            prediction_recall: f64::from_bits(self.prediction_recall.load(Ordering::Relaxed)),
            // A close without its open must not show as a huge count.
            open_connections: u64::try_from(self.open_connections.load(Ordering::Relaxed))
                .unwrap_or(0),
            memory_bytes: resident_bytes(),
        };
        Ok(exposition::render(&view))
    }

    /// Counts one event now.
    fn record(&self, event: Event) {
        let now = self.clock.now();
        lock(&self.state).record(now, event);
    }
}

impl State {
    fn record(&mut self, now: Duration, event: Event) {
        self.history.bucket_mut(now).apply(event);
        self.totals.apply(event);
    }

    /// The slot of operation `op`, naming a new one while slots remain.
    fn operation_slot(&mut self, op: &'static str) -> usize {
        if let Some(i) = self.operation_names.iter().position(|n| *n == op) {
            return i;
        }
        if self.operation_names.len() < MAX_OPERATIONS - 1 {
            self.operation_names.push(op);
            return self.operation_names.len() - 1;
        }
        MAX_OPERATIONS - 1
    }

    /// Adds the store activity since the last call to the bucket of `now`.
    fn fold_store(&mut self, now: Duration, counters: &CountersSnapshot) {
        let current = StoreTally::from_counters(counters);
        let delta = current.since(&self.store_seen);
        delta.add_into(&mut self.history.bucket_mut(now).store);
        self.store_seen = current;
    }
}

/// Resident set size of this process, from `/proc/self/statm` (its second
/// field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page_size = u64::try_from(page_size).ok().filter(|&p| p > 0)?;
    pages.checked_mul(page_size)
}

/// Whether the daemon is ready to serve, with the reason when it is not; what
/// `GET /ready` reports. Starts not ready ("hyperboxd is starting").
pub struct Readiness {
    ready: AtomicBool,
    reason: Mutex<String>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            ready: AtomicBool::new(false),
            reason: Mutex::new("hyperboxd is starting".into()),
        }
    }
}

impl Readiness {
    /// Not ready, because the daemon is starting.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Marks the daemon ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the daemon not ready, saying why (e.g. "shutting down").
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *lock(&self.reason) = reason.into();
        self.ready.store(false, Ordering::Release);
    }

    /// Whether the daemon is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(lock(&self.reason).clone())
        }
    }
}
