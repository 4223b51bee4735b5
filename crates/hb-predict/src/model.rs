//! The three prediction models over interned image ids: `frequency` (decayed use counts),
//! `predictive` (per-project Markov chain of what follows what, with a global fallback) and
//! `statistical` (per-image inter-arrival histogram plus hour-of-day histograms split weekday /
//! weekend, after the hybrid histogram policy of "Serverless in the Wild", ATC'20).
//! Confidences are probabilities (in percent) that the image is started within the horizon.

use std::collections::HashMap;

use serde::Serialize;

/// A prediction as the engine reports it: `hb predict` lists these.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Image expected to start.
    pub image: String,
    /// Estimated probability, in percent, that it starts within `horizon_secs`.
    pub confidence: f64,
    /// Why the model thinks so.
    pub reason: String,
    /// How long from now the prediction holds, in seconds.
    pub horizon_secs: f64,
}

/// A model's guess about one interned image.
#[derive(Debug, Clone)]
pub(crate) struct Guess {
    pub image: u32,
    pub confidence: f64,
    pub horizon_secs: f64,
    pub reason: String,
    /// The evidence behind it (the engine calibrates each kind on its own).
    pub basis: Basis,
}

/// The kind of evidence a guess rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Basis {
    /// A decayed use rate (`frequency`).
    UseRate,
    /// A project's own chain (`predictive`).
    ProjectChain,
    /// The chain over all starts (`predictive`'s fallback).
    GlobalChain,
    /// The inter-arrival histogram (`statistical`).
    InterArrival,
    /// The hour-of-day histogram (`statistical`).
    HourOfDay,
}

impl Basis {
    /// Number of kinds.
    pub const COUNT: usize = 5;
    /// Every kind, in index order.
    pub const ALL: [Basis; Basis::COUNT] = [
        Basis::UseRate,
        Basis::ProjectChain,
        Basis::GlobalChain,
        Basis::InterArrival,
        Basis::HourOfDay,
    ];

    /// The name a persisted calibration record uses.
    pub fn name(self) -> &'static str {
        match self {
            Basis::UseRate => "use_rate",
            Basis::ProjectChain => "project_chain",
            Basis::GlobalChain => "global_chain",
            Basis::InterArrival => "inter_arrival",
            Basis::HourOfDay => "hour_of_day",
        }
    }
}

/// One of the three models; each learns from starts and predicts.
#[derive(Debug, Clone)]
pub enum Model {
    /// Decayed use counts.
    Frequency(FrequencyModel),
    /// Per-project Markov chain.
    Predictive(MarkovModel),
    /// Inter-arrival and time-of-day histograms.
    Statistical(StatisticalModel),
}

impl Model {
    pub(crate) fn observe(&mut self, image: u32, project: Option<u32>, ts: f64) {
        match self {
            Model::Frequency(m) => m.observe(image, ts),
            Model::Predictive(m) => m.observe(image, project, ts),
            Model::Statistical(m) => m.observe(image, ts),
        }
    }

    /// Predictions right after a start (what follows it).
    pub(crate) fn follow_up(&self, image: u32, project: Option<u32>, ts: f64) -> Vec<Guess> {
        match self {
            Model::Predictive(m) => m.follow_up(image, project, ts),
            _ => Vec::new(),
        }
    }

    /// Periodic predictions at `now` for the next `interval` seconds.
    pub(crate) fn predict(&self, now: f64, interval: f64) -> Vec<Guess> {
        match self {
            Model::Frequency(m) => m.predict(now, interval),
            Model::Predictive(m) => m.predict(now),
            Model::Statistical(m) => m.predict(now, interval),
        }
    }

    /// Images the model considers done at `now` (evicted first).
    pub(crate) fn is_idle(&self, image: u32, now: f64) -> bool {
        match self {
            Model::Statistical(m) => m.is_idle(image, now),
            _ => false,
        }
    }

    /// Bytes the model's structures hold on the heap (capacities, not lengths).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Model::Frequency(m) => m.counts.capacity() * std::mem::size_of::<(f64, f64)>(),
            Model::Predictive(m) => m.heap_bytes(),
            Model::Statistical(m) => m.heap_bytes(),
        }
    }
}

fn grow<T: Clone>(v: &mut Vec<T>, index: u32, fill: T) {
    let needed = index as usize + 1;
    if v.len() < needed {
        v.resize(needed, fill);
    }
}

/// `frequency`: per-image use count decaying with a half-life; the rate it implies gives the
/// probability of a start within the horizon (Poisson).
#[derive(Debug, Clone)]
pub struct FrequencyModel {
    half_life_secs: f64,
    /// Per image: (decayed count, time it was last decayed to).
    counts: Vec<(f64, f64)>,
}

impl FrequencyModel {
    /// Counts halve every `half_life_secs`.
    pub fn new(half_life_secs: f64) -> Self {
        FrequencyModel {
            half_life_secs,
            counts: Vec::new(),
        }
    }

    fn decayed(&self, (count, at): (f64, f64), now: f64) -> f64 {
        count * (-(now - at).max(0.0) * std::f64::consts::LN_2 / self.half_life_secs).exp()
    }

    pub(crate) fn observe(&mut self, image: u32, ts: f64) {
        grow(&mut self.counts, image, (0.0, ts));
        let slot = self.counts[image as usize];
        self.counts[image as usize] = (self.decayed(slot, ts) + 1.0, ts);
    }

    /// Decayed count of an image at `now`.
    pub fn count(&self, image: u32, now: f64) -> f64 {
        self.counts
            .get(image as usize)
            .map_or(0.0, |&slot| self.decayed(slot, now))
    }

    /// The start rate the decayed count implies at `now`, per hour.
    pub fn rate_per_hour(&self, image: u32, now: f64) -> f64 {
        self.rate_per_hour_of(self.count(image, now))
    }

    /// The start rate per hour a decayed count of `count` implies.
    pub fn rate_per_hour_of(&self, count: f64) -> f64 {
        count * std::f64::consts::LN_2 / self.half_life_secs * 3600.0
    }

    fn predict(&self, now: f64, interval: f64) -> Vec<Guess> {
        // The horizon is an hour at least: a count rate says little about the next minutes.
        let horizon = (2.0 * interval).max(3600.0);
        let mut guesses = Vec::new();
        for (image, &slot) in self.counts.iter().enumerate() {
            let count = self.decayed(slot, now);
            if count <= 0.0 {
                continue;
            }
            // A decayed count with half-life H estimates the rate count*ln2/H.
            let rate = count * std::f64::consts::LN_2 / self.half_life_secs;
            let p = 1.0 - (-rate * horizon).exp();
            guesses.push(Guess {
                image: image as u32,
                confidence: 100.0 * p,
                horizon_secs: horizon,
                basis: Basis::UseRate,
                reason: format!(
                    "used {count:.1} times (decayed, half-life {:.0} h): rate {:.2}/h",
                    self.half_life_secs / 3600.0,
                    rate * 3600.0
                ),
            });
        }
        guesses
    }
}

/// Start gap beyond which a project's next start begins a new session (no transition learned).
const SESSION_GAP_SECS: f64 = 1800.0;
/// Most successors kept per state (the weakest is replaced).
const MAX_SUCCESSORS: usize = 12;
/// How many steps ahead a follow-up looks (confidences multiply).
const FOLLOW_DEPTH: usize = 3;

#[derive(Debug, Clone, Default)]
struct Successors {
    total: f32,
    /// (next image, count, mean gap seconds)
    next: Vec<(u32, f32, f32)>,
}

impl Successors {
    fn add(&mut self, image: u32, gap: f64) {
        self.total += 1.0;
        if let Some(slot) = self.next.iter_mut().find(|s| s.0 == image) {
            slot.1 += 1.0;
            slot.2 += (gap as f32 - slot.2) / slot.1;
            return;
        }
        if self.next.len() >= MAX_SUCCESSORS {
            // Replace the weakest; its count leaves the total so probabilities stay honest.
            if let Some(weakest) = self
                .next
                .iter()
                .enumerate()
                .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
                .map(|(i, _)| i)
            {
                self.total -= self.next[weakest].1;
                self.next.swap_remove(weakest);
            }
        }
        self.next.push((image, 1.0, gap as f32));
    }

    /// Probability of each successor, shrunk toward zero for few observations
    /// (count / (total + 1)): one sighting of A then B gives 50 %, three give 75 %.
    fn probabilities(&self) -> impl Iterator<Item = (u32, f64, f64, f32)> + '_ {
        self.next.iter().map(move |&(image, count, gap)| {
            (
                image,
                f64::from(count) / (f64::from(self.total) + 1.0),
                f64::from(gap),
                count,
            )
        })
    }
}

/// `predictive`: first-order Markov chains of starts, one per project (within a session) and a
/// global one over all starts as the fallback when a project has not seen the state yet.
#[derive(Debug, Clone, Default)]
pub struct MarkovModel {
    /// (project or u32::MAX for none, previous image) -> successors.
    per_project: HashMap<(u32, u32), Successors>,
    global: HashMap<u32, Successors>,
    /// Last start per project: (image, ts).
    last_in_project: HashMap<u32, (u32, f64)>,
    last_global: Option<(u32, f64)>,
}

const NO_PROJECT: u32 = u32::MAX;

impl MarkovModel {
    /// An empty chain.
    pub fn new() -> Self {
        MarkovModel::default()
    }

    fn observe(&mut self, image: u32, project: Option<u32>, ts: f64) {
        let project = project.unwrap_or(NO_PROJECT);
        if let Some((prev, at)) = self.last_in_project.get(&project).copied() {
            if ts - at <= SESSION_GAP_SECS {
                self.per_project
                    .entry((project, prev))
                    .or_default()
                    .add(image, ts - at);
            }
        }
        self.last_in_project.insert(project, (image, ts));
        if let Some((prev, at)) = self.last_global {
            if ts - at <= SESSION_GAP_SECS {
                self.global.entry(prev).or_default().add(image, ts - at);
            }
        }
        self.last_global = Some((image, ts));
    }

    fn successors(&self, image: u32, project: u32) -> Option<(&Successors, Basis)> {
        if let Some(s) = self.per_project.get(&(project, image)) {
            if s.total >= 2.0 {
                return Some((s, Basis::ProjectChain));
            }
        }
        self.global.get(&image).map(|s| (s, Basis::GlobalChain))
    }

    fn follow_up(&self, image: u32, project: Option<u32>, _ts: f64) -> Vec<Guess> {
        let project = project.unwrap_or(NO_PROJECT);
        let mut best: HashMap<u32, Guess> = HashMap::new();
        // Walk up to FOLLOW_DEPTH steps: a compose-up of A B C D prewarms B, C and D after A.
        let mut frontier: Vec<(u32, f64, f64)> = vec![(image, 1.0, 0.0)];
        for depth in 1..=FOLLOW_DEPTH {
            let mut next_frontier = Vec::new();
            for &(state, p_state, gap_so_far) in &frontier {
                let Some((succ, basis)) = self.successors(state, project) else {
                    continue;
                };
                for (next, p, gap, count) in succ.probabilities() {
                    let p_total = p_state * p;
                    if p_total < 0.2 || next == image {
                        continue;
                    }
                    let gap_total = gap_so_far + gap;
                    // Hold the prediction for three times the usual gap, at least two minutes.
                    let horizon = (3.0 * gap_total).clamp(120.0, SESSION_GAP_SECS);
                    let scope = if basis == Basis::ProjectChain {
                        "project"
                    } else {
                        "global"
                    };
                    let guess = Guess {
                        image: next,
                        confidence: 100.0 * p_total,
                        horizon_secs: horizon,
                        basis,
                        reason: format!(
                            "follows {depth} step(s) after the last start ({scope} chain, seen {count:.0} times, usual gap {gap:.0} s)"
                        ),
                    };
                    let keep = best
                        .get(&next)
                        .is_none_or(|g| g.confidence < guess.confidence);
                    if keep {
                        best.insert(next, guess);
                    }
                    next_frontier.push((next, p_total, gap_total));
                }
            }
            frontier = next_frontier;
        }
        let mut guesses: Vec<Guess> = best.into_values().collect();
        guesses.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then(a.image.cmp(&b.image))
        });
        guesses
    }

    fn predict(&self, now: f64) -> Vec<Guess> {
        // Re-assert the follow-ups of projects still in a session so the cache keeps them.
        let mut guesses = Vec::new();
        let mut projects: Vec<(&u32, &(u32, f64))> = self.last_in_project.iter().collect();
        projects.sort_by_key(|(p, _)| **p);
        for (&project, &(image, at)) in projects {
            if now - at > SESSION_GAP_SECS {
                continue;
            }
            let p = if project == NO_PROJECT {
                None
            } else {
                Some(project)
            };
            for mut g in self.follow_up(image, p, at) {
                g.horizon_secs = (at + g.horizon_secs - now).max(0.0);
                if g.horizon_secs > 0.0 {
                    guesses.push(g);
                }
            }
        }
        guesses
    }

    fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<((u32, u32), Successors)>() + 8;
        let succ_bytes =
            |s: &Successors| s.next.capacity() * std::mem::size_of::<(u32, f32, f32)>();
        self.per_project.capacity() * entry
            + self.per_project.values().map(succ_bytes).sum::<usize>()
            + self.global.capacity() * (std::mem::size_of::<(u32, Successors)>() + 8)
            + self.global.values().map(succ_bytes).sum::<usize>()
            + self.last_in_project.capacity() * (std::mem::size_of::<(u32, (u32, f64))>() + 8)
    }
}

/// Inter-arrival bins: one minute each over four hours, as in the ATC'20 policy.
const IT_BINS: usize = 240;
const IT_BIN_SECS: f64 = 60.0;
/// Samples needed before the histogram is trusted.
const MIN_SAMPLES: u32 = 4;

#[derive(Debug, Clone)]
struct ImageStats {
    first_day: i64,
    last: f64,
    samples: u32,
    out_of_range: u32,
    inter_arrival: Box<[u16; IT_BINS]>,
    /// Per hour of day, split weekday (0..24) / weekend (24..48): distinct days with a start.
    day_hours: [u16; 48],
    /// Day index on which each `day_hours` bin was last counted.
    day_hours_last: [i32; 48],
}

fn day_of(ts: f64) -> i64 {
    (ts / 86_400.0).floor() as i64
}

fn is_weekend(day: i64) -> bool {
    // 1970-01-01 was a Thursday: (day + 3) % 7 is 0 on Mondays.
    (day + 3).rem_euclid(7) >= 5
}

fn hour_bin(ts: f64) -> usize {
    let day = day_of(ts);
    let hour = ((ts - day as f64 * 86_400.0) / 3600.0).floor() as usize % 24;
    hour + if is_weekend(day) { 24 } else { 0 }
}

/// `statistical`: per image, an inter-arrival histogram (1-minute bins over 4 h) predicts WHEN the
/// next start comes after the last one (pre-warm window from the low percentile, keep-alive
/// until the 99th), and hour-of-day histograms (weekday / weekend; UTC) predict the starts the
/// inter-arrival range misses (the next morning, the nightly job).
#[derive(Debug, Clone, Default)]
pub struct StatisticalModel {
    images: Vec<Option<ImageStats>>,
}

impl StatisticalModel {
    /// An empty model.
    pub fn new() -> Self {
        StatisticalModel::default()
    }

    fn observe(&mut self, image: u32, ts: f64) {
        grow(&mut self.images, image, None);
        let day = day_of(ts);
        let stats = self.images[image as usize].get_or_insert_with(|| ImageStats {
            first_day: day,
            last: f64::NAN,
            samples: 0,
            out_of_range: 0,
            inter_arrival: Box::new([0; IT_BINS]),
            day_hours: [0; 48],
            day_hours_last: [i32::MIN; 48],
        });
        if stats.last.is_finite() {
            let gap = ts - stats.last;
            let bin = (gap / IT_BIN_SECS).floor();
            if bin < IT_BINS as f64 {
                let b = bin.max(0.0) as usize;
                stats.inter_arrival[b] = stats.inter_arrival[b].saturating_add(1);
            } else {
                stats.out_of_range += 1;
            }
            stats.samples += 1;
        }
        stats.last = ts;
        let hb = hour_bin(ts);
        if stats.day_hours_last[hb] != day as i32 {
            stats.day_hours_last[hb] = day as i32;
            stats.day_hours[hb] = stats.day_hours[hb].saturating_add(1);
        }
    }

    /// Number of days of the same kind (weekday / weekend) as `day` from `first_day` up to and
    /// including `day` itself.
    fn days_of_kind(first_day: i64, day: i64) -> u32 {
        let weekend = is_weekend(day);
        (first_day..=day)
            .filter(|&d| is_weekend(d) == weekend)
            .count() as u32
    }

    /// Probability that the next start falls in (elapsed, elapsed + horizon] given none so far.
    fn inter_arrival_probability(stats: &ImageStats, elapsed: f64, horizon: f64) -> Option<f64> {
        if stats.samples < MIN_SAMPLES {
            return None;
        }
        let total = f64::from(stats.samples);
        let from = (elapsed / IT_BIN_SECS).floor().max(0.0) as usize;
        if from >= IT_BINS {
            return None;
        }
        let to = (((elapsed + horizon) / IT_BIN_SECS).ceil() as usize).min(IT_BINS);
        let beyond: f64 = stats.inter_arrival[from..]
            .iter()
            .map(|&c| f64::from(c))
            .sum::<f64>()
            + f64::from(stats.out_of_range);
        if beyond <= 0.0 {
            return Some(0.0);
        }
        let within: f64 = stats.inter_arrival[from..to]
            .iter()
            .map(|&c| f64::from(c))
            .sum();
        Some((within / beyond).min(1.0) * (total / (total + 1.0)))
    }

    /// Probability of a start in the hour of `ts` from days of the same kind.
    fn hour_probability(stats: &ImageStats, ts: f64) -> Option<f64> {
        let day = day_of(ts);
        let days = Self::days_of_kind(stats.first_day, day);
        if days < 2 {
            return None;
        }
        let bin = hour_bin(ts);
        // The current day may not have happened yet: compare with completed days.
        let seen_today = stats.day_hours_last[bin] == day as i32;
        let count = f64::from(stats.day_hours[bin]) - if seen_today { 1.0 } else { 0.0 };
        Some((count / f64::from(days - 1) * (f64::from(days - 1) / f64::from(days))).min(1.0))
    }

    fn predict(&self, now: f64, interval: f64) -> Vec<Guess> {
        let horizon = interval.max(60.0) * 2.0;
        let mut guesses = Vec::new();
        for (image, stats) in self.images.iter().enumerate() {
            let Some(stats) = stats else { continue };
            let elapsed = now - stats.last;
            let by_gap = Self::inter_arrival_probability(stats, elapsed, horizon);
            // Look at the hour the horizon mostly covers.
            let by_hour = Self::hour_probability(stats, now + horizon / 2.0);
            let by_hour_reason =
                |h: f64| format!("used in this hour on {:.0}% of past days", 100.0 * h);
            let (p, basis, reason) = match (by_gap, by_hour) {
                (Some(g), Some(h)) if h > g => (h, Basis::HourOfDay, by_hour_reason(h)),
                (Some(g), _) => (g, Basis::InterArrival, format!("inter-arrival histogram ({} gaps): {:.0}% chance of the next start within {:.0} min, {:.0} min after the last", stats.samples, 100.0 * g, horizon / 60.0, elapsed / 60.0)),
                (None, Some(h)) => (h, Basis::HourOfDay, by_hour_reason(h)),
                (None, None) => continue,
            };
            guesses.push(Guess {
                image: image as u32,
                confidence: 100.0 * p,
                horizon_secs: horizon,
                reason,
                basis,
            });
        }
        guesses
    }

    /// Done: past the keep-alive window (99th percentile of the inter-arrival histogram, or the
    /// four hours it spans when most gaps are longer).
    fn is_idle(&self, image: u32, now: f64) -> bool {
        let Some(Some(stats)) = self.images.get(image as usize) else {
            return false;
        };
        if stats.samples < MIN_SAMPLES {
            return false;
        }
        let elapsed = now - stats.last;
        let target = 0.99 * f64::from(stats.samples);
        let mut cumulative = 0.0;
        for (bin, &c) in stats.inter_arrival.iter().enumerate() {
            cumulative += f64::from(c);
            if cumulative >= target {
                return elapsed > (bin as f64 + 1.0) * IT_BIN_SECS;
            }
        }
        elapsed > IT_BINS as f64 * IT_BIN_SECS
    }

    fn heap_bytes(&self) -> usize {
        self.images.capacity() * std::mem::size_of::<Option<ImageStats>>()
            + self.images.iter().flatten().count() * std::mem::size_of::<[u16; IT_BINS]>()
    }
}
