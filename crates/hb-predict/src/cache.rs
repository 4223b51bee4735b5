//! The hot-tier policy: a size-bounded (MiB) set of warm images. Eviction is LRU for entries no
//! prediction protects; prediction-aware with a model: images the statistical model calls done
//! go first, then unprotected ones by LRU, protected (predicted) ones only for a user's start.
//! It also keeps the prewarm accounting behind `prediction_accuracy` and `wasted_prewarm_mb`.

use std::collections::HashMap;

use serde::Serialize;

/// Whether a start was served from the hot tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartOutcome {
    /// Served from the hot tier.
    Hit,
    /// Cold start: the image had to be unpacked first.
    Miss,
}

#[derive(Debug, Clone)]
struct Entry {
    size_mb: f64,
    last_used: f64,
    /// Order of last use (ties of `last_used` broken by it).
    seq: u64,
    /// A prediction holds it warm until then.
    protected_until: f64,
    /// Prewarmed and not yet used: the deadline its use must come by.
    prewarm_deadline: Option<f64>,
}

/// Counters of the hot tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheStats {
    /// Starts seen.
    pub starts: u64,
    /// Starts served from the hot tier.
    pub hits: u64,
    /// Images loaded by a prewarm.
    pub prewarmed: u64,
    /// Prewarmed images started within their horizon.
    pub prewarm_used: u64,
    /// MiB of prewarms not used within their horizon (evicted, expired or still unused).
    pub wasted_prewarm_mb: f64,
    /// MiB loaded by prewarms.
    pub prewarmed_mb: f64,
    /// Evictions.
    pub evictions: u64,
}

/// The hot tier's contents and policy.
#[derive(Debug, Clone)]
pub struct HotCache {
    capacity_mb: f64,
    prewarm_share: f64,
    used_mb: f64,
    seq: u64,
    entries: HashMap<String, Entry>,
    stats: CacheStats,
}

impl HotCache {
    /// An empty hot tier of `capacity_mb` MiB; prewarms may fill all of it.
    pub fn new(capacity_mb: f64) -> Self {
        HotCache::with_prewarm_share(capacity_mb, 1.0)
    }

    /// An empty hot tier where predicted (protected) images, prewarms included, may hold at
    /// most `prewarm_share` (0..=1) of the budget before a prewarm is refused: the rest stays
    /// plain LRU, so a burst of confident predictions cannot flush what users just ran.
    pub fn with_prewarm_share(capacity_mb: f64, prewarm_share: f64) -> Self {
        HotCache {
            capacity_mb,
            prewarm_share: prewarm_share.clamp(0.0, 1.0),
            used_mb: 0.0,
            seq: 0,
            entries: HashMap::new(),
            stats: CacheStats::default(),
        }
    }

    /// MiB in use.
    pub fn used_mb(&self) -> f64 {
        self.used_mb
    }

    /// The budget in MiB.
    pub fn capacity_mb(&self) -> f64 {
        self.capacity_mb
    }

    /// True when the image is warm.
    pub fn contains(&self, image: &str) -> bool {
        self.entries.contains_key(image)
    }

    /// Warm images, least recently used first.
    pub fn images_lru(&self) -> Vec<String> {
        let mut v: Vec<(&String, &Entry)> = self.entries.iter().collect();
        v.sort_by(|a, b| {
            a.1.last_used
                .total_cmp(&b.1.last_used)
                .then(a.1.seq.cmp(&b.1.seq))
        });
        v.into_iter().map(|(k, _)| k.clone()).collect()
    }

    /// The counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// A start of `image` at `now`: a hit refreshes it, a miss makes it warm (evicting, any
    /// entry if need be, LRU among equals). `is_idle` tells which images the model calls done.
    /// Returns the outcome and the evicted images.
    pub fn start(
        &mut self,
        image: &str,
        size_mb: f64,
        now: f64,
        is_idle: &dyn Fn(&str) -> bool,
    ) -> (StartOutcome, Vec<String>) {
        self.stats.starts += 1;
        self.seq += 1;
        if let Some(entry) = self.entries.get_mut(image) {
            self.stats.hits += 1;
            if let Some(deadline) = entry.prewarm_deadline.take() {
                if now <= deadline {
                    self.stats.prewarm_used += 1;
                } else {
                    self.stats.wasted_prewarm_mb += entry.size_mb;
                }
            }
            entry.last_used = now;
            entry.seq = self.seq;
            return (StartOutcome::Hit, Vec::new());
        }
        let evicted = self.make_room(size_mb, now, true, is_idle);
        if self.used_mb + size_mb <= self.capacity_mb {
            self.insert(image, size_mb, now, None);
        }
        (StartOutcome::Miss, evicted)
    }

    /// Protects `image` until `until` (it is predicted). If it is not warm, loads it as a prewarm,
    /// evicting only unprotected entries; returns `(loaded, evicted)`; `loaded` is false when it
    /// was already warm or there was no room without evicting predicted images.
    pub fn prewarm(
        &mut self,
        image: &str,
        size_mb: f64,
        now: f64,
        until: f64,
        is_idle: &dyn Fn(&str) -> bool,
    ) -> (bool, Vec<String>) {
        if let Some(entry) = self.entries.get_mut(image) {
            entry.protected_until = entry.protected_until.max(until);
            if let Some(deadline) = entry.prewarm_deadline.as_mut() {
                // Re-predicted while unused: the prediction now runs to the later deadline.
                *deadline = deadline.max(until);
            }
            return (false, Vec::new());
        }
        if size_mb > self.capacity_mb
            || !self.room_without_protected(size_mb, now)
            || self.protected_mb(now) + size_mb > self.capacity_mb * self.prewarm_share
        {
            return (false, Vec::new());
        }
        let evicted = self.make_room(size_mb, now, false, is_idle);
        self.seq += 1;
        self.insert(image, size_mb, now, Some(until));
        if let Some(entry) = self.entries.get_mut(image) {
            entry.protected_until = until;
            // A prewarm is not a use: it goes behind everything used so far in LRU order, so
            // an unused prewarm is the first unprotected victim once its prediction lapses.
            entry.last_used = f64::NEG_INFINITY;
        }
        self.stats.prewarmed += 1;
        self.stats.prewarmed_mb += size_mb;
        (true, evicted)
    }

    /// Drops entries unused for more than `keep_alive_secs` (the fixed keep-alive baseline).
    pub fn expire_idle(&mut self, now: f64, keep_alive_secs: f64) -> Vec<String> {
        let victims: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.last_used.is_finite() && now - e.last_used > keep_alive_secs)
            .map(|(k, _)| k.clone())
            .collect();
        for v in &victims {
            self.remove(v, now);
        }
        victims
    }

    /// Drops `image` without a policy decision: the daemon removed its layers from disk itself
    /// (by hand, `rmi`, prune). Counted as an eviction. Returns whether it was warm.
    pub fn drop_image(&mut self, image: &str) -> bool {
        let was_warm = self.contains(image);
        self.remove(image, 0.0);
        was_warm
    }

    /// Closes the accounting at the end of a replay: unused prewarms count as wasted.
    pub fn finish(&mut self) {
        for entry in self.entries.values_mut() {
            if entry.prewarm_deadline.take().is_some() {
                self.stats.wasted_prewarm_mb += entry.size_mb;
            }
        }
    }

    fn insert(&mut self, image: &str, size_mb: f64, now: f64, deadline: Option<f64>) {
        self.entries.insert(
            image.to_string(),
            Entry {
                size_mb,
                last_used: now,
                seq: self.seq,
                protected_until: f64::NEG_INFINITY,
                prewarm_deadline: deadline,
            },
        );
        self.used_mb += size_mb;
    }

    fn remove(&mut self, image: &str, _now: f64) {
        if let Some(entry) = self.entries.remove(image) {
            self.used_mb -= entry.size_mb;
            self.stats.evictions += 1;
            if entry.prewarm_deadline.is_some() {
                self.stats.wasted_prewarm_mb += entry.size_mb;
            }
        }
        if self.entries.is_empty() {
            // Wipe accumulated float error.
            self.used_mb = 0.0;
        }
    }

    fn protected_mb(&self, now: f64) -> f64 {
        self.entries
            .values()
            .filter(|e| e.protected_until > now)
            .map(|e| e.size_mb)
            .sum()
    }

    fn room_without_protected(&self, size_mb: f64, now: f64) -> bool {
        let freeable: f64 = self
            .entries
            .values()
            .filter(|e| e.protected_until <= now)
            .map(|e| e.size_mb)
            .sum();
        self.capacity_mb - self.used_mb + freeable >= size_mb
    }

    /// Evicts until `size_mb` fits: idle-and-unprotected first, then unprotected by LRU, then
    /// (only when `may_evict_protected`) protected by LRU.
    fn make_room(
        &mut self,
        size_mb: f64,
        now: f64,
        may_evict_protected: bool,
        is_idle: &dyn Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut evicted = Vec::new();
        if self.used_mb + size_mb <= self.capacity_mb || size_mb > self.capacity_mb {
            return evicted;
        }
        let mut order: Vec<(u8, f64, u64, String)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| {
                let protected = e.protected_until > now;
                let class = if protected {
                    if !may_evict_protected {
                        return None;
                    }
                    2
                } else if is_idle(k) {
                    0
                } else {
                    1
                };
                Some((class, e.last_used, e.seq, k.clone()))
            })
            .collect();
        // The name breaks the last ties: HashMap order must not leak into decisions.
        order.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.total_cmp(&b.1))
                .then(a.2.cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        for (_, _, _, image) in order {
            if self.used_mb + size_mb <= self.capacity_mb {
                break;
            }
            self.remove(&image, now);
            evicted.push(image);
        }
        evicted
    }
}
