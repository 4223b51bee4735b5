//! The [`Engine`]: history + model + hot-tier policy, the one object the daemon drives live
//! (`on_start`, `observe`, `tick`) and the replay drives from a trace. It decides; the daemon's
//! workers carry out its [`Action`]s (unpack / evict on disk).

use std::collections::HashMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cache::{Footprint, HotCache, KeepValue, StartOutcome};
use crate::calibration::{Calibration, CalibrationRecord, PRIOR_CLAIMS};
use crate::event::{History, StartEvent};
use crate::model::{FrequencyModel, Guess, MarkovModel, Model, Prediction, StatisticalModel};
use crate::{PredictError, Result};

/// What drives the hot tier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Technique {
    /// LRU without prediction.
    None,
    /// No prediction; an image is dropped after this many idle seconds (and LRU when full).
    KeepAlive(f64),
    /// Decayed use counts.
    Frequency,
    /// Per-project Markov chain.
    Predictive,
    /// Inter-arrival and time-of-day histograms.
    Statistical,
}

impl Technique {
    /// Accepted spellings for [`FromStr`].
    pub const NAMES: &'static str = "none, predictive, frequency, statistical, keepalive[:SECS]";

    /// The name as printed in tables (`keepalive:600`).
    pub fn label(&self) -> String {
        match self {
            Technique::None => "none".into(),
            Technique::KeepAlive(s) => format!("keepalive:{s:.0}"),
            Technique::Frequency => "frequency".into(),
            Technique::Predictive => "predictive".into(),
            Technique::Statistical => "statistical".into(),
        }
    }

    fn model(&self, half_life_secs: f64) -> Option<Model> {
        match self {
            Technique::None | Technique::KeepAlive(_) => None,
            Technique::Frequency => Some(Model::Frequency(FrequencyModel::new(half_life_secs))),
            Technique::Predictive => Some(Model::Predictive(MarkovModel::new())),
            Technique::Statistical => Some(Model::Statistical(StatisticalModel::new())),
        }
    }
}

impl FromStr for Technique {
    type Err = PredictError;

    fn from_str(s: &str) -> Result<Self> {
        let unknown = || PredictError::UnknownName {
            kind: "technique",
            name: s.to_string(),
            expected: Technique::NAMES,
        };
        Ok(match s {
            "none" | "lru" => Technique::None,
            "keepalive" => Technique::KeepAlive(600.0),
            "frequency" => Technique::Frequency,
            "predictive" => Technique::Predictive,
            "statistical" => Technique::Statistical,
            other => {
                let secs = other.strip_prefix("keepalive:").ok_or_else(unknown)?;
                let secs: f64 = secs.parse().map_err(|_| unknown())?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(unknown());
                }
                Technique::KeepAlive(secs)
            }
        })
    }
}

/// The engine's knobs (the daemon fills them from `[prediction]`, `[prewarming]`, `[cache]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Model (or baseline) driving the hot tier.
    pub technique: Technique,
    /// `[cache] size_mb`.
    pub cache_mb: f64,
    /// `[prediction] confidence_threshold`: predictions below it (percent) are not acted on.
    pub confidence_threshold: f64,
    /// `[prediction] update_interval_secs`: period of [`Engine::tick`].
    pub update_interval_secs: f64,
    /// `[prediction] history_retention_days`.
    pub history_retention_days: u32,
    /// Hard cap on kept history events.
    pub history_max_events: usize,
    /// `[prewarming] enabled`: when false, predictions only protect warm images, never load.
    pub prewarm: bool,
    /// Half-life of the frequency model's counts, in seconds.
    pub frequency_half_life_secs: f64,
    /// Largest share (0..=1) of the hot tier predicted images may hold before prewarms stop.
    pub prewarm_share: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            technique: Technique::Predictive,
            cache_mb: 1024.0,
            confidence_threshold: 65.0,
            update_interval_secs: 300.0,
            history_retention_days: 30,
            history_max_events: History::DEFAULT_MAX_EVENTS,
            prewarm: true,
            frequency_half_life_secs: 6.0 * 3600.0,
            prewarm_share: 0.75,
        }
    }
}

impl EngineConfig {
    fn validate(&self) -> Result<()> {
        if !(self.cache_mb.is_finite() && self.cache_mb > 0.0) {
            return Err(PredictError::InvalidConfig {
                what: "cache_mb",
                reason: format!("{} is not a positive size", self.cache_mb),
            });
        }
        if !(0.0..=100.0).contains(&self.confidence_threshold) {
            return Err(PredictError::InvalidConfig {
                what: "confidence_threshold",
                reason: format!("{} is not within 0..=100", self.confidence_threshold),
            });
        }
        if !(self.update_interval_secs.is_finite() && self.update_interval_secs >= 1.0) {
            return Err(PredictError::InvalidConfig {
                what: "update_interval_secs",
                reason: format!("{} is below 1 second", self.update_interval_secs),
            });
        }
        if !(0.0..=1.0).contains(&self.prewarm_share) {
            return Err(PredictError::InvalidConfig {
                what: "prewarm_share",
                reason: format!("{} is not within 0..=1", self.prewarm_share),
            });
        }
        if !(self.frequency_half_life_secs.is_finite() && self.frequency_half_life_secs > 0.0) {
            return Err(PredictError::InvalidConfig {
                what: "frequency_half_life_secs",
                reason: format!("{} is not positive", self.frequency_half_life_secs),
            });
        }
        Ok(())
    }
}

/// Work the daemon's prewarm workers carry out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Pull if missing and unpack into the hot tier.
    Prewarm {
        /// Image to warm.
        image: String,
        /// Its hot-tier size in MiB.
        size_mb: f64,
        /// The prediction's confidence (percent).
        confidence: f64,
        /// The prediction's reason.
        reason: String,
        /// Seconds the prediction holds.
        horizon_secs: f64,
    },
    /// Drop from the hot tier (it stays in the cold store).
    Evict {
        /// Image to drop.
        image: String,
    },
}

/// History, model and hot-tier policy together.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    names: Vec<String>,
    ids: HashMap<String, u32>,
    projects: HashMap<String, u32>,
    /// Each interned image's latest known hot-tier footprint.
    footprints: Vec<Footprint>,
    model: Option<Model>,
    /// How often the model's guesses came true: caps the confidence the threshold is applied to.
    calibration: Calibration,
    /// Decayed use counts behind eviction order whatever the technique (with a model).
    usage: FrequencyModel,
    cache: HotCache,
    history: History,
    next_tick: Option<f64>,
}

impl Engine {
    /// A fresh engine with an empty history.
    pub fn new(config: EngineConfig) -> Result<Self> {
        config.validate()?;
        let history = History::new(config.history_retention_days, config.history_max_events);
        Ok(Engine {
            model: config.technique.model(config.frequency_half_life_secs),
            calibration: Calibration::default(),
            usage: FrequencyModel::new(config.frequency_half_life_secs),
            cache: HotCache::with_prewarm_share(config.cache_mb, config.prewarm_share),
            names: Vec::new(),
            ids: HashMap::new(),
            projects: HashMap::new(),
            footprints: Vec::new(),
            history,
            next_tick: None,
            config,
        })
    }

    /// An engine whose model has learned a restored history (the daemon's restart). The hot
    /// tier starts empty: the daemon tells it what is warm through [`Engine::mark_warm`].
    pub fn with_history(config: EngineConfig, history: &History) -> Result<Self> {
        let mut engine = Engine::new(config)?;
        for event in history.events() {
            engine.learn(event.clone());
        }
        Ok(engine)
    }

    /// How often the model's guesses came true so far (persist it: a restarted engine learns
    /// the models from the history, but not this).
    pub fn calibration_record(&self) -> CalibrationRecord {
        self.calibration.to_record()
    }

    /// Takes a persisted [`CalibrationRecord`]; a record that does not add up is refused and
    /// changes nothing.
    pub fn restore_calibration(&mut self, record: &CalibrationRecord) -> Result<()> {
        self.calibration.restore(record)
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The kept start history (persist it with serde).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The hot tier's policy state and counters.
    pub fn cache(&self) -> &HotCache {
        &self.cache
    }

    /// Heap bytes held by the model and its calibration's open claims (not the history).
    pub fn model_heap_bytes(&self) -> usize {
        self.model.as_ref().map_or(0, Model::heap_bytes) + self.calibration.heap_bytes()
    }

    /// Tells the policy an image is warm though no start or prediction of the engine made it
    /// so: found unpacked at daemon start, or warmed by hand (`hb prewarm`). Counts neither a
    /// start nor a prewarm; returns the evictions needed to keep the budget.
    pub fn mark_warm(&mut self, image: &str, footprint: &Footprint, now: f64) -> Vec<Action> {
        let Engine {
            cache,
            model,
            usage,
            ids,
            footprints,
            ..
        } = self;
        let value = |name: &str| keep_value(model.as_ref(), usage, ids, footprints, name, now);
        cache
            .load(image, footprint, now, &value)
            .into_iter()
            .map(|image| Action::Evict { image })
            .collect()
    }

    /// A prewarm this engine asked for could not be carried out (pull or unpack failed): the
    /// image leaves the policy's hot tier and counts neither as prewarmed nor as wasted, so
    /// `prediction_accuracy` reflects predictions, not failures, and the next start of it is
    /// a miss, as it is on disk. Returns whether it was an unused prewarm.
    pub fn prewarm_failed(&mut self, image: &str) -> bool {
        self.cache.prewarm_failed(image)
    }

    /// True when a warm image of the policy holds the layer with this digest (the daemon keeps
    /// exactly those layers unpacked).
    pub fn holds_layer(&self, digest: &str) -> bool {
        self.cache.holds_layer(digest)
    }

    /// Tells the policy an image left the hot tier outside its decisions (the daemon dropped
    /// its layers by hand or through `rmi`/prune), so a later prediction prewarms it again.
    /// Returns whether the policy had it warm.
    pub fn forget_warm(&mut self, image: &str) -> bool {
        self.cache.drop_image(image)
    }

    fn intern(&mut self, image: &str, footprint: Footprint) -> u32 {
        if let Some(&id) = self.ids.get(image) {
            if let Some(slot) = self.footprints.get_mut(id as usize) {
                *slot = footprint;
            }
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(image.to_string());
        self.ids.insert(image.to_string(), id);
        self.footprints.push(footprint);
        id
    }

    fn project_id(&mut self, project: Option<&str>) -> Option<u32> {
        let project = project?;
        let next = self.projects.len() as u32;
        Some(*self.projects.entry(project.to_string()).or_insert(next))
    }

    fn learn(&mut self, event: StartEvent) -> (u32, Option<u32>) {
        let id = self.intern(&event.image, Footprint::of_event(&event));
        let project = self.project_id(event.project.as_deref());
        if let Some(model) = self.model.as_mut() {
            model.observe(id, project, event.ts);
            self.usage.observe(id, event.ts);
        }
        self.history.push(event);
        (id, project)
    }

    /// A user's start reaches the hot tier: HIT or MISS. A miss makes the image warm, except
    /// that with a model it is kept only if keeping it pushes out nothing worth more per MiB
    /// (admission, see [`HotCache::start_admitting`]); otherwise it runs and is not kept.
    /// Returns the evictions it caused. Call [`Engine::observe`] with the same event next.
    pub fn on_start(&mut self, event: &StartEvent) -> (StartOutcome, Vec<Action>) {
        let mut actions = self.expire(event.ts);
        let Engine {
            cache,
            model,
            usage,
            ids,
            footprints,
            ..
        } = self;
        let now = event.ts;
        let value = |name: &str| keep_value(model.as_ref(), usage, ids, footprints, name, now);
        let footprint = Footprint::of_event(event);
        // With a model, a miss is kept only if it is worth more per MiB than what it would
        // push out: its use rate counting this start (a first use is one start's worth).
        // Without one, LRU keeps every miss.
        let worth = model.is_some().then(|| {
            let count = ids
                .get(&event.image)
                .map_or(0.0, |&id| usage.count(id, now))
                + 1.0;
            usage.rate_per_hour_of(count) / footprint.size_mb().max(1.0)
        });
        let (outcome, evicted) =
            cache.start_admitting(&event.image, &footprint, now, worth, &value);
        actions.extend(evicted.into_iter().map(|image| Action::Evict { image }));
        (outcome, actions)
    }

    /// Records a start in the history and the model, and returns the follow-up prewarms it
    /// predicts (the `predictive` model's "what comes next").
    pub fn observe(&mut self, event: StartEvent) -> Vec<Action> {
        let ts = event.ts;
        let (id, project) = self.learn(event);
        self.calibration.started(id, ts);
        let guesses = match self.model.as_ref() {
            Some(model) => model.follow_up(id, project, ts),
            None => Vec::new(),
        };
        self.act(guesses, ts)
    }

    /// When the next periodic [`Engine::tick`] is due (`None` before the first event).
    pub fn next_tick(&self) -> Option<f64> {
        self.next_tick
    }

    /// The periodic model refresh (every `update_interval_secs`): predictions at or above the
    /// threshold become prewarms (or protect images already warm); keep-alive expiry runs.
    pub fn tick(&mut self, now: f64) -> Vec<Action> {
        self.next_tick = Some(now + self.config.update_interval_secs);
        self.history.prune(now);
        self.calibration.expire(now);
        let mut actions = self.expire(now);
        let guesses = match self.model.as_ref() {
            Some(model) => model.predict(now, self.config.update_interval_secs),
            None => Vec::new(),
        };
        actions.extend(self.act(guesses, now));
        actions
    }

    /// Current predictions at or above `min_confidence`, most confident first (`hb predict`).
    pub fn predictions(&self, now: f64, min_confidence: f64) -> Vec<Prediction> {
        let Some(model) = self.model.as_ref() else {
            return Vec::new();
        };
        let mut guesses: Vec<Guess> = model
            .predict(now, self.config.update_interval_secs)
            .into_iter()
            .map(|g| self.calibrated(g))
            .collect();
        guesses.retain(|g| g.confidence >= min_confidence);
        guesses.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then(a.image.cmp(&b.image))
        });
        guesses
            .into_iter()
            .filter_map(|g| {
                Some(Prediction {
                    image: self.names.get(g.image as usize)?.clone(),
                    confidence: g.confidence,
                    reason: g.reason,
                    horizon_secs: g.horizon_secs,
                })
            })
            .collect()
    }

    /// Closes the prewarm accounting (end of a replay).
    pub fn finish(&mut self) {
        self.cache.finish();
    }

    fn expire(&mut self, now: f64) -> Vec<Action> {
        match self.config.technique {
            Technique::KeepAlive(secs) => self
                .cache
                .expire_idle(now, secs)
                .into_iter()
                .map(|image| Action::Evict { image })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `guess` with the confidence like guesses have borne out, never above the model's (see
    /// [`Calibration`]); the reason says so when the two differ.
    fn calibrated(&self, mut guess: Guess) -> Guess {
        let raw = guess.confidence;
        let (earned, settled) = self.calibration.calibrated(&guess);
        if settled > 0 && (earned - raw).abs() >= 1.0 {
            guess.reason = format!(
                "{}; the model says {raw:.0}%, but like guesses came true less often: {earned:.0}% over {settled} of them and the model's word counted as {PRIOR_CLAIMS:.0}",
                guess.reason
            );
        }
        guess.confidence = earned;
        guess
    }

    fn act(&mut self, guesses: Vec<Guess>, now: f64) -> Vec<Action> {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.config.update_interval_secs);
        }
        for guess in &guesses {
            self.calibration.claim(guess, now);
        }
        let mut guesses: Vec<Guess> = guesses
            .into_iter()
            .map(|g| self.calibrated(g))
            .filter(|g| g.confidence >= self.config.confidence_threshold)
            .collect();
        guesses.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then(a.image.cmp(&b.image))
        });
        let mut actions = Vec::new();
        let Engine {
            cache,
            model,
            ids,
            names,
            footprints,
            config,
            usage,
            ..
        } = self;
        let value = |name: &str| keep_value(model.as_ref(), usage, ids, footprints, name, now);
        for guess in guesses {
            let (Some(name), Some(footprint)) = (
                names.get(guess.image as usize),
                footprints.get(guess.image as usize),
            ) else {
                continue;
            };
            let until = now + guess.horizon_secs;
            // Worth per MiB: the usual use rate, or the prediction's when it says more (a
            // follow-up 90 % likely within two minutes outranks a daily image).
            let per_hour = usage
                .rate_per_hour(guess.image, now)
                .max(guess.confidence / 100.0 / (guess.horizon_secs / 3600.0).max(1e-6));
            let worth = per_hour / footprint.size_mb().max(1.0);
            if !config.prewarm {
                // Prewarming off: predictions still keep warm images from eviction.
                if cache.contains(name) {
                    cache.prewarm_footprint(name, footprint, (now, until), worth, &value);
                }
                continue;
            }
            let (loaded, evicted) =
                cache.prewarm_footprint(name, footprint, (now, until), worth, &value);
            actions.extend(evicted.into_iter().map(|image| Action::Evict { image }));
            if loaded {
                actions.push(Action::Prewarm {
                    image: name.clone(),
                    size_mb: footprint.size_mb(),
                    confidence: guess.confidence,
                    reason: guess.reason,
                    horizon_secs: guess.horizon_secs,
                });
            }
        }
        actions
    }
}

/// What keeping the warm image `name` is worth at `now`: without a model every image is worth
/// the same (LRU); with one, an image the model calls done is worth nothing, any other its
/// decayed use rate per MiB, so the hot tier keeps what is used most for the room it takes.
fn keep_value(
    model: Option<&Model>,
    usage: &FrequencyModel,
    ids: &HashMap<String, u32>,
    footprints: &[Footprint],
    name: &str,
    now: f64,
) -> KeepValue {
    let (Some(model), Some(&id)) = (model, ids.get(name)) else {
        return KeepValue::LRU;
    };
    if model.is_idle(id, now) {
        return KeepValue::Done;
    }
    // A layer-less footprint of 0 MiB must not divide by zero: count at least 1 MiB.
    let size_mb = footprints
        .get(id as usize)
        .map_or(1.0, |f| f.size_mb().max(1.0));
    KeepValue::PerMib(usage.rate_per_hour(id, now) / size_mb)
}
