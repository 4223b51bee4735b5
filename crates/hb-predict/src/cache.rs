//! The hot-tier policy: a size-bounded (MiB) set of warm images. Eviction is LRU for entries no
//! prediction protects; prediction-aware with a model: images the statistical model calls done
//! go first, then unprotected ones by the model's [`KeepValue`] (expected starts per MiB, so a
//! big image used once goes before small ones used daily; LRU among equals), protected
//! (predicted) ones only for a user's start. With a model there is also admission: a miss is
//! kept only if the room it needs comes from images worth less per MiB than itself; otherwise
//! it runs (its layers are unpacked for its container) but is not kept, so a big image used
//! once does not push out the small busy ones.
//! It also keeps the prewarm accounting behind `prediction_accuracy` and `wasted_prewarm_mb`.
//!
//! The budget is counted per layer, as the disk holds them: an image is a [`Footprint`] of
//! layers, a layer two warm images share counts once, and evicting an image frees only the
//! layers no other warm image holds. A start is a hit when every layer of its image is held,
//! even if only other images brought them in (the daemon's disk says the same). A trace event
//! without layers is one layer of its own (`size_mb`), so a plain trace replays image by image.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::event::StartEvent;

/// Whether a start was served from the hot tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartOutcome {
    /// Served from the hot tier.
    Hit,
    /// Cold start: the image had to be unpacked first.
    Miss,
}

/// What keeping a warm image is worth to the policy; the lowest goes first when room is needed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepValue {
    /// The model calls the image done (past its keep-alive window): it goes before any other
    /// unprotected image.
    Done,
    /// Expected starts per hour per MiB the image holds: lower goes first; equal values fall
    /// back to LRU order.
    PerMib(f64),
}

impl KeepValue {
    /// Every image worth the same: plain LRU (the policy without a model).
    pub const LRU: KeepValue = KeepValue::PerMib(0.0);
}

/// What one image occupies in the hot tier: its layers (key, MiB), each once.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    layers: Vec<(String, f64)>,
}

impl Footprint {
    /// An image known only by its total size: one layer of its own, shared with nobody.
    pub fn whole(image: &str, size_mb: f64) -> Footprint {
        // No digest starts with NUL, so this key never meets a real layer's.
        Footprint {
            layers: vec![(format!("\0{image}"), size_mb)],
        }
    }

    /// An image made of these layers (digest, MiB); a digest listed twice counts once.
    pub fn of_layers<'a>(layers: impl IntoIterator<Item = (&'a str, f64)>) -> Footprint {
        let mut seen = HashSet::new();
        Footprint {
            layers: layers
                .into_iter()
                .filter(|(digest, _)| seen.insert(*digest))
                .map(|(digest, size)| (digest.to_string(), size))
                .collect(),
        }
    }

    /// The footprint a start event describes: its `layers` when it lists them, else
    /// [`Footprint::whole`] of its `size_mb`.
    pub fn of_event(event: &StartEvent) -> Footprint {
        if event.layers.is_empty() {
            Footprint::whole(&event.image, event.size_mb)
        } else {
            Footprint::of_layers(event.layers.iter().map(|l| (l.digest.as_str(), l.size_mb)))
        }
    }

    /// MiB of all its layers.
    pub fn size_mb(&self) -> f64 {
        self.layers.iter().map(|l| l.1).sum()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// MiB of all its layers (what an unused prewarm of it wasted).
    size_mb: f64,
    /// Keys of its layers in [`HotCache::layers`].
    layers: Vec<String>,
    last_used: f64,
    /// Order of last use (ties of `last_used` broken by it).
    seq: u64,
    /// A prediction holds it warm until then, or until the image starts.
    protected_until: f64,
    /// Prewarmed and not yet used: the deadline its use must come by.
    prewarm_deadline: Option<f64>,
}

/// A layer held by one or more warm images.
#[derive(Debug, Clone)]
struct HeldLayer {
    size_mb: f64,
    holders: u32,
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
    /// Cold starts whose image ran without being kept warm (admission refused it, or it is
    /// bigger than the whole budget).
    pub not_kept: u64,
}

/// The hot tier's contents and policy.
#[derive(Debug, Clone)]
pub struct HotCache {
    capacity_mb: f64,
    prewarm_share: f64,
    used_mb: f64,
    seq: u64,
    entries: HashMap<String, Entry>,
    layers: HashMap<String, HeldLayer>,
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
            layers: HashMap::new(),
            stats: CacheStats::default(),
        }
    }

    /// MiB in use: every held layer once.
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

    /// True when a warm image holds the layer with this digest.
    pub fn holds_layer(&self, digest: &str) -> bool {
        self.layers.contains_key(digest)
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

    /// [`HotCache::start_footprint`] of an image known by its size only.
    pub fn start(
        &mut self,
        image: &str,
        size_mb: f64,
        now: f64,
        value: &dyn Fn(&str) -> KeepValue,
    ) -> (StartOutcome, Vec<String>) {
        self.start_footprint(image, &Footprint::whole(image, size_mb), now, value)
    }

    /// A start of `image` at `now`: a hit when all its layers are held (the image is warm, or
    /// other warm images hold every layer of it), which refreshes it; a miss makes it warm
    /// (evicting, any entry if need be, LRU among equals). `value` ranks the other images
    /// for eviction. Returns the outcome and the evicted images.
    pub fn start_footprint(
        &mut self,
        image: &str,
        footprint: &Footprint,
        now: f64,
        value: &dyn Fn(&str) -> KeepValue,
    ) -> (StartOutcome, Vec<String>) {
        self.start_admitting(image, footprint, now, None, value)
    }

    /// [`HotCache::start_footprint`] with admission: on a miss, `worth` (the image's own
    /// expected starts per hour per MiB, `None` to always keep it) decides whether it is kept.
    /// It is kept when it fits the free room or the room it needs comes from unprotected images
    /// worth less per MiB ([`KeepValue::Done`] ones always); otherwise it runs without being
    /// kept: nothing is evicted, it is not warm afterwards, and it counts in
    /// [`CacheStats::not_kept`]. Its layers are on disk while its container runs whatever the
    /// policy says (the daemon removes what the policy does not hold when the container goes),
    /// so a big image used once costs one cold start, not the busy small images it would have
    /// pushed out.
    pub fn start_admitting(
        &mut self,
        image: &str,
        footprint: &Footprint,
        now: f64,
        worth: Option<f64>,
        value: &dyn Fn(&str) -> KeepValue,
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
            // The prediction came true: from now on the image is worth its use like any other
            // (the next tick protects it again if it is predicted again). Held protected, a
            // used prewarm kept busier images out and, counted in the prewarm share, refused
            // the next prewarms.
            entry.protected_until = entry.protected_until.min(now);
            return (StartOutcome::Hit, Vec::new());
        }
        if self.missing_mb(footprint) == 0.0 && !footprint.layers.is_empty() {
            // Other warm images hold every layer: served hot, and now warm itself.
            self.stats.hits += 1;
            self.insert(image, footprint, now, None);
            return (StartOutcome::Hit, Vec::new());
        }
        if footprint.size_mb() > self.capacity_mb {
            self.stats.not_kept += 1;
            return (StartOutcome::Miss, Vec::new());
        }
        self.insert(image, footprint, now, None);
        let victims = worth.map_or(Victims::Any, Victims::WorthLess);
        let Some(evicted) = self.make_room(image, now, victims, value) else {
            // Keeping it would push out images worth more: it runs, and is not kept.
            self.detach(image);
            self.stats.not_kept += 1;
            return (StartOutcome::Miss, Vec::new());
        };
        if self.used_mb > self.capacity_mb {
            self.detach(image);
            self.stats.not_kept += 1;
        }
        (StartOutcome::Miss, evicted)
    }

    /// [`HotCache::prewarm_footprint`] of an image known by its size only.
    pub fn prewarm(
        &mut self,
        image: &str,
        size_mb: f64,
        (now, until): (f64, f64),
        worth: f64,
        value: &dyn Fn(&str) -> KeepValue,
    ) -> (bool, Vec<String>) {
        self.prewarm_footprint(
            image,
            &Footprint::whole(image, size_mb),
            (now, until),
            worth,
            value,
        )
    }

    /// Protects `image` until `until` (it is predicted). If it is not warm, loads it as a prewarm,
    /// evicting only unprotected entries worth less than `worth` (its expected starts per hour
    /// per MiB; [`KeepValue::Done`] ones always): a prediction never pushes out what is worth
    /// more to keep. Returns `(loaded, evicted)`; `loaded` is false when it was already warm or
    /// there was no room under those rules (then nothing is evicted).
    pub fn prewarm_footprint(
        &mut self,
        image: &str,
        footprint: &Footprint,
        (now, until): (f64, f64),
        worth: f64,
        value: &dyn Fn(&str) -> KeepValue,
    ) -> (bool, Vec<String>) {
        if let Some(entry) = self.entries.get_mut(image) {
            entry.protected_until = entry.protected_until.max(until);
            if let Some(deadline) = entry.prewarm_deadline.as_mut() {
                // Re-predicted while unused: the prediction now runs to the later deadline.
                *deadline = deadline.max(until);
            }
            return (false, Vec::new());
        }
        // What predicted images would hold with this one: it must fit the budget without
        // evicting any of them, and their share of it.
        let protected_with_it = self.protected_mb_with(footprint, now);
        if footprint.size_mb() > self.capacity_mb
            || protected_with_it > self.capacity_mb
            || protected_with_it > self.capacity_mb * self.prewarm_share
        {
            return (false, Vec::new());
        }
        self.seq += 1;
        self.insert(image, footprint, now, Some(until));
        let Some(evicted) = self.make_room(image, now, Victims::WorthLess(worth), value) else {
            // No room without evicting more valuable images: as if never tried.
            self.detach(image);
            return (false, Vec::new());
        };
        if let Some(entry) = self.entries.get_mut(image) {
            entry.protected_until = until;
            // A prewarm is not a use: it goes behind everything used so far in LRU order, so
            // an unused prewarm is the first unprotected victim once its prediction lapses.
            entry.last_used = f64::NEG_INFINITY;
        }
        self.stats.prewarmed += 1;
        self.stats.prewarmed_mb += footprint.size_mb();
        (true, evicted)
    }

    /// Makes `image` warm without counting a start or a prewarm (the daemon found it unpacked,
    /// or a user warmed it by hand); evicts unprotected entries to keep the budget. Returns the
    /// evicted images.
    pub fn load(
        &mut self,
        image: &str,
        footprint: &Footprint,
        now: f64,
        value: &dyn Fn(&str) -> KeepValue,
    ) -> Vec<String> {
        self.seq += 1;
        if let Some(entry) = self.entries.get_mut(image) {
            entry.last_used = now;
            entry.seq = self.seq;
            return Vec::new();
        }
        self.insert(image, footprint, now, None);
        self.make_room(image, now, Victims::Unprotected, value)
            .unwrap_or_default()
    }

    /// A prewarm the engine decided could not be carried out (the pull or the unpack failed):
    /// the image leaves the hot tier as if it had never been loaded, so it counts neither as
    /// prewarmed nor as wasted, and a start of it is a miss, as it is on disk. Returns whether
    /// it was an unused prewarm.
    pub fn prewarm_failed(&mut self, image: &str) -> bool {
        let unused_prewarm = self
            .entries
            .get(image)
            .is_some_and(|e| e.prewarm_deadline.is_some());
        if !unused_prewarm {
            return false;
        }
        if let Some(entry) = self.detach(image) {
            self.stats.prewarmed = self.stats.prewarmed.saturating_sub(1);
            self.stats.prewarmed_mb = (self.stats.prewarmed_mb - entry.size_mb).max(0.0);
        }
        true
    }

    /// Drops entries unused for more than `keep_alive_secs` (the fixed keep-alive baseline).
    pub fn expire_idle(&mut self, now: f64, keep_alive_secs: f64) -> Vec<String> {
        let mut victims: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.last_used.is_finite() && now - e.last_used > keep_alive_secs)
            .map(|(k, _)| k.clone())
            .collect();
        victims.sort();
        for v in &victims {
            self.remove(v);
        }
        victims
    }

    /// Drops `image` without a policy decision: the daemon removed its layers from disk itself
    /// (by hand, `rmi`, prune). Counted as an eviction. Returns whether it was warm.
    pub fn drop_image(&mut self, image: &str) -> bool {
        let was_warm = self.contains(image);
        self.remove(image);
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

    /// MiB of the footprint's layers no warm image holds.
    fn missing_mb(&self, footprint: &Footprint) -> f64 {
        footprint
            .layers
            .iter()
            .filter(|(key, _)| !self.layers.contains_key(key))
            .map(|l| l.1)
            .sum()
    }

    fn insert(&mut self, image: &str, footprint: &Footprint, now: f64, deadline: Option<f64>) {
        for (key, size_mb) in &footprint.layers {
            let held = self.layers.entry(key.clone()).or_insert_with(|| HeldLayer {
                size_mb: *size_mb,
                holders: 0,
            });
            if held.holders == 0 {
                self.used_mb += held.size_mb;
            }
            held.holders += 1;
        }
        self.entries.insert(
            image.to_string(),
            Entry {
                size_mb: footprint.size_mb(),
                layers: footprint.layers.iter().map(|l| l.0.clone()).collect(),
                last_used: now,
                seq: self.seq,
                protected_until: f64::NEG_INFINITY,
                prewarm_deadline: deadline,
            },
        );
    }

    /// Takes the entry out and releases its layers (no counters move).
    fn detach(&mut self, image: &str) -> Option<Entry> {
        let entry = self.entries.remove(image)?;
        for key in &entry.layers {
            if let Some(held) = self.layers.get_mut(key) {
                held.holders = held.holders.saturating_sub(1);
                if held.holders == 0 {
                    self.used_mb -= held.size_mb;
                    self.layers.remove(key);
                }
            }
        }
        if self.entries.is_empty() {
            // Wipe accumulated float error.
            self.used_mb = 0.0;
        }
        Some(entry)
    }

    /// An eviction: the entry goes, counted (and as waste when it was an unused prewarm).
    fn remove(&mut self, image: &str) {
        if let Some(entry) = self.detach(image) {
            self.stats.evictions += 1;
            if entry.prewarm_deadline.is_some() {
                self.stats.wasted_prewarm_mb += entry.size_mb;
            }
        }
    }

    /// MiB the layers of protected entries and of `footprint` hold together (each layer once).
    fn protected_mb_with(&self, footprint: &Footprint, now: f64) -> f64 {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut total = 0.0;
        for (key, size_mb) in &footprint.layers {
            if seen.insert(key.as_str()) {
                total += size_mb;
            }
        }
        for entry in self.entries.values().filter(|e| e.protected_until > now) {
            for key in &entry.layers {
                if seen.insert(key.as_str()) {
                    total += self.layers.get(key).map_or(0.0, |l| l.size_mb);
                }
            }
        }
        total
    }

    /// Evicts entries other than `newcomer` (already inserted) until the budget holds, among
    /// those `victims` allows: done-and-unprotected first, then unprotected by [`KeepValue`]
    /// (LRU among equals), then protected by LRU. Returns the evicted images, or `None` (and
    /// evicts nothing) when those allowed cannot make room.
    fn make_room(
        &mut self,
        newcomer: &str,
        now: f64,
        victims: Victims,
        value: &dyn Fn(&str) -> KeepValue,
    ) -> Option<Vec<String>> {
        let mut evicted = Vec::new();
        if self.used_mb <= self.capacity_mb {
            return Some(evicted);
        }
        let mut order: Vec<(u8, f64, f64, u64, String)> = self
            .entries
            .iter()
            .filter(|(k, _)| k.as_str() != newcomer)
            .filter_map(|(k, e)| {
                let (class, worth) = if e.protected_until > now {
                    (2, 0.0)
                } else {
                    match value(k) {
                        KeepValue::Done => (0, 0.0),
                        KeepValue::PerMib(v) => (1, v),
                    }
                };
                let allowed = match victims {
                    Victims::Any => true,
                    Victims::Unprotected => class < 2,
                    Victims::WorthLess(limit) => class == 0 || (class == 1 && worth < limit),
                };
                allowed.then(|| (class, worth, e.last_used, e.seq, k.clone()))
            })
            .collect();
        // The name breaks the last ties: HashMap order must not leak into decisions.
        order.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.total_cmp(&b.1))
                .then(a.2.total_cmp(&b.2))
                .then(a.3.cmp(&b.3))
                .then(a.4.cmp(&b.4))
        });
        if matches!(victims, Victims::WorthLess(_))
            && !self.frees_enough(order.iter().map(|o| &o.4))
        {
            return None;
        }
        for (_, _, _, _, image) in order {
            if self.used_mb <= self.capacity_mb {
                break;
            }
            self.remove(&image);
            evicted.push(image);
        }
        Some(evicted)
    }

    /// Whether evicting `victims` in this order would bring the budget back (a layer is freed
    /// when its last holder goes), without evicting anything.
    fn frees_enough<'a>(&self, victims: impl Iterator<Item = &'a String>) -> bool {
        let mut holders: HashMap<&str, u32> = HashMap::new();
        let mut used = self.used_mb;
        for image in victims {
            if used <= self.capacity_mb {
                break;
            }
            let Some(entry) = self.entries.get(image) else {
                continue;
            };
            for key in &entry.layers {
                let Some(held) = self.layers.get(key) else {
                    continue;
                };
                let left = holders.entry(key.as_str()).or_insert(held.holders);
                *left = left.saturating_sub(1);
                if *left == 0 {
                    used -= held.size_mb;
                }
            }
        }
        used <= self.capacity_mb
    }
}

/// Which warm images [`HotCache::make_room`] may evict.
#[derive(Debug, Clone, Copy)]
enum Victims {
    /// Any (a user's start must run).
    Any,
    /// Only unprotected ones (an image warmed by hand or found warm).
    Unprotected,
    /// Only unprotected ones worth less per MiB than this (a prewarm).
    WorthLess(f64),
}
