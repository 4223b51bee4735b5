//! The bounded history behind `/metrics?interval=…`: a ring of fixed-length
//! time buckets, each a [`Tally<u32>`] of what happened in it.
//!
//! # Memory bound
//! One bucket is a [`Slot`]: `size_of::<Slot>()` bytes, 808 on x86-64
//! (18-bucket histograms for starts, pulls and operations, 16-bucket ones for
//! three kinds of store I/O, 64 per-operation counters and a dozen scalars;
//! event counts are `u32`). The ring holds
//! `min(budget / size_of::<Slot>(), 8640)` slots, allocated once and never
//! grown past that, and the bucket length (a multiple of 10 s) is chosen so
//! those slots span at least 24 hours: 10 s buckets (8640 slots, 6.7 MiB) from
//! a budget of 6.7 MiB up, so at the default 10 MiB; longer buckets below (70 s
//! at the 1 MiB minimum of `monitoring.history_buffer_mb`). A budget below two
//! slots still gets two. The test `history_stays_within_its_budget_and_covers_a_day`
//! checks these bounds.

use std::time::{Duration, Instant};

use super::tally::Tally;

/// How far back the history must reach.
pub(crate) const HISTORY_SPAN: Duration = Duration::from_secs(24 * 60 * 60);

/// Shortest bucket; bucket lengths are whole multiples of it.
pub(crate) const MIN_BUCKET_SECS: u64 = 10;

/// Fewest slots kept whatever the budget (one full bucket plus the current one).
const MIN_SLOTS: usize = 2;

/// Monotonic time since an arbitrary origin; injectable so tests can move it.
pub(crate) trait Clock: Send + Sync {
    /// Time elapsed since the clock's origin.
    fn now(&self) -> Duration;
}

/// The real clock: time since the metrics were created.
pub(crate) struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// One bucket of the ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    /// Which bucket (time since the origin / bucket length) the tally is for;
    /// a slot whose index is not the one looked for is stale and ignored.
    index: u64,
    tally: Tally<u32>,
}

/// The ring of buckets.
pub(crate) struct History {
    bucket_secs: u64,
    capacity: usize,
    /// Grows lazily up to `capacity` (memory is only touched as time passes),
    /// then the ring wraps: bucket `i` lives at `slots[i % capacity]`.
    slots: Vec<Slot>,
}

impl History {
    /// A history within `budget_bytes` covering at least [`HISTORY_SPAN`]
    /// (see the module docs).
    pub fn new(budget_bytes: usize) -> Self {
        let span_secs = HISTORY_SPAN.as_secs();
        let most_useful = usize::try_from(span_secs / MIN_BUCKET_SECS).unwrap_or(usize::MAX);
        let capacity = (budget_bytes / std::mem::size_of::<Slot>())
            .clamp(MIN_SLOTS, most_useful.max(MIN_SLOTS));
        let per_slot = span_secs.div_ceil(capacity as u64);
        let bucket_secs = per_slot.div_ceil(MIN_BUCKET_SECS).max(1) * MIN_BUCKET_SECS;
        History {
            bucket_secs,
            capacity,
            slots: Vec::with_capacity(capacity),
        }
    }

    /// Length of one bucket.
    pub fn bucket_len(&self) -> Duration {
        Duration::from_secs(self.bucket_secs)
    }

    /// The longest window [`History::window`] answers: every slot.
    pub fn max_window(&self) -> Duration {
        Duration::from_secs(self.bucket_secs.saturating_mul(self.capacity as u64))
    }

    /// Bytes the ring may occupy at most (it never reallocates).
    pub fn capacity_bytes(&self) -> usize {
        self.capacity * std::mem::size_of::<Slot>()
    }

    /// Size of one bucket in the ring.
    #[cfg(test)]
    pub fn slot_bytes() -> usize {
        std::mem::size_of::<Slot>()
    }

    /// Bytes the ring has allocated so far.
    #[cfg(test)]
    pub fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// The bucket `now` falls in, emptied first if it still holds an older one.
    pub fn bucket_mut(&mut self, now: Duration) -> &mut Tally<u32> {
        let index = now.as_secs() / self.bucket_secs;
        let pos = (index % self.capacity as u64) as usize;
        while self.slots.len() <= pos {
            self.slots.push(Slot {
                index: u64::MAX,
                tally: Tally::empty(),
            });
        }
        let slot = &mut self.slots[pos];
        if slot.index != index {
            *slot = Slot {
                index,
                tally: Tally::empty(),
            };
        }
        &mut slot.tally
    }

    /// Sum of the buckets making up the last `window` before `now`, and the
    /// time they actually cover. Only buckets that start inside the window
    /// count, so events older than `window` are never included; the newest
    /// bucket is only partly elapsed, so the cover is between `window` minus
    /// one bucket and `window` (for a window of at least one bucket). The cover
    /// is also cut to [`History::max_window`] and never reaches before the origin.
    pub fn window(&self, now: Duration, window: Duration) -> (Tally<u64>, Duration) {
        let bucket_nanos = u128::from(self.bucket_secs) * 1_000_000_000;
        let current = now.as_secs() / self.bucket_secs;
        let window_start = now.saturating_sub(window).as_nanos();
        let first_in_window =
            u64::try_from(window_start.div_ceil(bucket_nanos)).unwrap_or(u64::MAX);
        let first_kept = (current + 1).saturating_sub(self.capacity as u64);
        let first = first_in_window.max(first_kept).min(current);
        let mut sum = Tally::<u64>::empty();
        for index in first..=current {
            let pos = (index % self.capacity as u64) as usize;
            if let Some(slot) = self.slots.get(pos).filter(|s| s.index == index) {
                slot.tally.add_into(&mut sum);
            }
        }
        let first_start = Duration::from_secs(first * self.bucket_secs);
        (sum, now.saturating_sub(first_start))
    }
}
