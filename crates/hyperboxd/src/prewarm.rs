//! Prediction and prewarming in the daemon (issue 5). A [`Prewarmer`] owns the hb-predict
//! [`Engine`] (the very code `hb predict replay` runs), feeds it every successful container
//! start, persists the start history, and carries out the engine's decisions on disk:
//!
//! - `Action::Prewarm`: a worker (at most `[prewarming] parallel_ops` at once) pulls the image
//!   when it is missing and unpacks its layers into the hot tier, `batch_size_layers` at a time
//!   with `batch_delay_ms` between batches; before the pull and before every batch it waits
//!   until no user create, start or pull is in flight ([`UserActivity`]), so prewarming never
//!   competes with a user's own request.
//! - `Action::Evict`: the image's unpacked layers go, except those the policy still counts
//!   warm through another image (a layer two images share is held, and budgeted, once) or a
//!   container pins (`LayerStore::remove` refuses pinned layers). So the disk holds what the
//!   policy holds, and a replay of the history reproduces the daemon's hits and misses.
//! - A failed prewarm is taken back from the policy (`Engine::prewarm_failed`): it counts
//!   neither as prewarmed nor as warm.
//! - A container's removal ([`LayerRelease`]): once its pins are gone, the layers of its image
//!   the policy does not hold go too (an image admission did not keep, one bigger than the
//!   budget, one evicted while the container pinned it). Queued behind the start notices, so
//!   the policy has learned the container's own start by then.
//!
//! A periodic tick (`[prediction] update_interval_secs`) refreshes the predictions. With
//! `[prediction] enabled = false` the engine runs as plain LRU (no model, no persisted history),
//! which still bounds the hot tier by `[cache] size_mb`; with `[prewarming] enabled = false`
//! predictions only keep warm images from eviction.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use hb_config::{Config, PrewarmTechnique};
use hb_image::{ImageCatalog, ImageRecord, ImageRef, Puller};
use hb_predict::{
    Action, CalibrationRecord, Engine, EngineConfig, Footprint, History, LayerUse, ReplayReport,
    StartEvent, Technique,
};
use hb_rootfs::{DirRecycler, LayerStore, RootfsError};
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use crate::metrics::Metrics;

/// How often a waiting prewarm looks again whether users' requests are done.
const YIELD_POLL: Duration = Duration::from_millis(20);
/// Notices queued for the engine; beyond this, start notices are dropped (the start itself
/// never waits for the predictor).
const NOTICE_QUEUE: usize = 4096;

/// Users' own requests in flight (container create and start, image pull). Prewarm work waits
/// while any runs.
#[derive(Debug, Default)]
pub struct UserActivity {
    in_flight: AtomicUsize,
}

/// One user request, counted in [`UserActivity`] until dropped.
#[derive(Debug)]
pub struct UserRequest {
    activity: Arc<UserActivity>,
}

impl UserActivity {
    /// Counts a user request until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> UserRequest {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        UserRequest {
            activity: self.clone(),
        }
    }

    /// User requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Returns once no user request is in flight.
    async fn wait_idle(&self) {
        while self.in_flight() > 0 {
            tokio::time::sleep(YIELD_POLL).await;
        }
    }
}

impl Drop for UserRequest {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The prewarmer's knobs, from `[prediction]`, `[prewarming]` and `[cache]`.
#[derive(Debug, Clone)]
pub struct PrewarmSettings {
    /// The engine's configuration (technique, cache budget, threshold, interval, retention).
    pub engine: EngineConfig,
    /// `[prediction] enabled`: learn from starts, persist the history, predict.
    pub learn: bool,
    /// `[prewarming] parallel_ops`: prewarm workers at once.
    pub parallel_ops: usize,
    /// `[prewarming] batch_size_layers`.
    pub batch_size_layers: usize,
    /// `[prewarming] batch_delay_ms`.
    pub batch_delay: Duration,
    /// `[prediction] update_interval_secs`: period of the engine's tick.
    pub update_interval: Duration,
    /// Where the start history is persisted (`<data_dir>/predict/history.jsonl`).
    pub history_path: PathBuf,
    /// Where the calibration record is persisted (`<data_dir>/predict/calibration.json`),
    /// rewritten at a tick when it changed.
    pub calibration_path: PathBuf,
}

impl PrewarmSettings {
    /// Settings for a daemon configuration.
    pub fn from_config(config: &Config) -> PrewarmSettings {
        let learn = config.prediction.enabled;
        let technique = if !learn {
            Technique::None
        } else {
            match config.prewarming.technique {
                PrewarmTechnique::Predictive => Technique::Predictive,
                PrewarmTechnique::Frequency => Technique::Frequency,
                PrewarmTechnique::Statistical => Technique::Statistical,
            }
        };
        PrewarmSettings {
            engine: EngineConfig {
                technique,
                cache_mb: config.cache.size_mb as f64,
                confidence_threshold: f64::from(config.prediction.confidence_threshold),
                update_interval_secs: config.prediction.update_interval_secs as f64,
                history_retention_days: config.prediction.history_retention_days,
                history_max_events: History::DEFAULT_MAX_EVENTS,
                prewarm: learn && config.prewarming.enabled,
                ..EngineConfig::default()
            },
            learn,
            parallel_ops: (config.prewarming.parallel_ops as usize).max(1),
            batch_size_layers: (config.prewarming.batch_size_layers as usize).max(1),
            batch_delay: Duration::from_millis(config.prewarming.batch_delay_ms),
            update_interval: Duration::from_secs(config.prediction.update_interval_secs.max(1)),
            history_path: config.daemon.data_dir.join("predict").join("history.jsonl"),
            calibration_path: config
                .daemon
                .data_dir
                .join("predict")
                .join("calibration.json"),
        }
    }
}

/// A successful container start, as the engine learns it.
#[derive(Debug, Clone)]
pub struct StartNotice {
    /// The image reference as the user gave it.
    pub image: String,
    /// The image id the container was made from.
    pub image_id: String,
    /// Compose project (`com.docker.compose.project`) or `hyperbox.project` label.
    pub project: Option<String>,
    /// Whether the rootfs was already unpacked (a hot-tier hit).
    pub hot: bool,
}

impl StartNotice {
    /// The project of a container from its labels: compose's first, then HyperBox's own.
    pub fn project_of(config: &serde_json::Value) -> Option<String> {
        ["com.docker.compose.project", "hyperbox.project"]
            .iter()
            .find_map(|key| config["Labels"][*key].as_str())
            .filter(|p| !p.is_empty())
            .map(str::to_string)
    }
}

/// What warming one image did (`POST /hyperbox/prewarm` answers it).
#[derive(Debug, Clone, Serialize)]
pub struct WarmReport {
    /// The image as asked for.
    pub image: String,
    /// Its id.
    pub image_id: String,
    /// Whether it had to be pulled first.
    pub pulled: bool,
    /// Layers the image has.
    pub layers: usize,
    /// Layers unpacked now (the others were in the hot tier already).
    pub layers_unpacked: usize,
    /// Spare container dirs made for the starts to come (see [`SPARE_CONTAINER_DIRS`]).
    pub dirs_stocked: usize,
    /// Time taken, in milliseconds.
    pub millis: u64,
}

/// Spare sets of container dirs a warm leaves ready (a compose project's worth), so the
/// predicted creates take them by a rename instead of making four dirs each.
pub const SPARE_CONTAINER_DIRS: usize = 8;

/// One prediction as `GET /hyperbox/predict` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PredictionView {
    /// The image expected to start.
    pub image: String,
    /// Probability in percent that it starts within `horizon_secs`.
    pub confidence: f64,
    /// Why the model thinks so.
    pub reason: String,
    /// Seconds from now the prediction holds.
    pub horizon_secs: f64,
    /// At or above `[prediction] confidence_threshold` (acted on).
    pub acted_on: bool,
    /// All its layers are unpacked in the hot tier now.
    pub warm: bool,
}

/// The answer of `GET /hyperbox/predict`.
#[derive(Debug, Clone, Serialize)]
pub struct PredictView {
    /// `[prediction] enabled`.
    pub enabled: bool,
    /// Whether predictions are acted on by prewarming.
    pub prewarming: bool,
    /// The engine's technique (`none` when prediction is off).
    pub technique: String,
    /// `[prediction] confidence_threshold`.
    pub confidence_threshold: f64,
    /// `[prediction] update_interval_secs`.
    pub update_interval_secs: f64,
    /// `[prediction] history_retention_days`.
    pub history_retention_days: u32,
    /// `[prewarming] parallel_ops`.
    pub parallel_ops: usize,
    /// `[prewarming] batch_size_layers`.
    pub batch_size_layers: usize,
    /// `[prewarming] batch_delay_ms`.
    pub batch_delay_ms: u64,
    /// `[cache] size_mb`.
    pub cache_mb: f64,
    /// MiB the policy counts warm (each layer once).
    pub hot_mb: f64,
    /// Start events kept in the history.
    pub history_events: usize,
    /// Images being prewarmed right now.
    pub warming: Vec<String>,
    /// Evictions whose layers are being removed right now.
    pub evicting: usize,
    /// Starts reported to the predictor and not yet learned.
    pub learning: usize,
    /// Starts where the disk (hot or not at create) and the policy (hit or miss) disagreed
    /// since the daemon started: a prewarm still unpacking when its image was asked for, a
    /// restart of a container whose image the policy had let go. A replay of the history
    /// reproduces the policy's outcomes, so these are where it differs from the metrics.
    pub policy_disagreements: u64,
    /// Predictions, most confident first.
    pub predictions: Vec<PredictionView>,
    /// Sets of container dirs ready for the next creates (recycled or made by warms).
    pub spare_container_dirs: usize,
    /// The engine's counters since the daemon started (the replay report's shape), with the
    /// calibration record a prediction's `confidence` is capped by.
    pub stats: ReplayReport,
}

/// The engine and what goes with it, behind one lock.
struct EngineState {
    engine: Engine,
    log: Option<HistoryLog>,
    /// The calibration record as last read or written (`None` when not persisted this run).
    saved_calibration: Option<CalibrationRecord>,
}

impl EngineState {
    /// Persists the calibration record if it changed since it was last saved.
    fn save_calibration(&mut self, path: &Path) {
        let Some(saved) = self.saved_calibration.as_mut() else {
            return;
        };
        let record = self.engine.calibration_record();
        if record == *saved {
            return;
        }
        match write_calibration(path, &record) {
            Ok(()) => *saved = record,
            // Losing it costs the models' word being taken at face value after a restart.
            Err(e) => tracing::warn!("predictor: calibration record not saved: {e:#}"),
        }
    }
}

/// The daemon's predictor and prewarm workers.
pub struct Prewarmer {
    settings: PrewarmSettings,
    state: Mutex<EngineState>,
    catalog: ImageCatalog,
    puller: Arc<Puller>,
    layers: LayerStore,
    /// The containers' dir recycler, which warms stock with spare dirs.
    dirs: Arc<DirRecycler>,
    metrics: Arc<Metrics>,
    activity: Arc<UserActivity>,
    workers: Arc<Semaphore>,
    /// Images a worker is warming now (a second prediction of one of them is not queued).
    warming: Mutex<HashSet<String>>,
    /// Evictions queued or removing layers now.
    evicting: Arc<AtomicUsize>,
    /// Start notices queued or being learned (until their actions are dispatched).
    learning: AtomicUsize,
    /// Starts whose disk outcome and policy outcome differed.
    disagreements: AtomicU64,
    /// Engine names of images the user removed (`rmi`) and has not started since: predictions
    /// never pull those back.
    removed: Mutex<HashSet<String>>,
    notices: mpsc::Sender<Notice>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks leaves them consistent: a panic elsewhere must not stop
    // prediction.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const MIB: f64 = 1024.0 * 1024.0;

/// An image's layers as the history records them: diff_id and uncompressed size in MiB, each
/// layer once.
fn layer_uses(record: &ImageRecord) -> Vec<LayerUse> {
    let mut seen = HashSet::new();
    record
        .layers
        .iter()
        .filter(|l| seen.insert(l.diff_id.as_str()))
        .map(|l| LayerUse {
            digest: l.diff_id.clone(),
            size_mb: l.size as f64 / MIB,
        })
        .collect()
}

/// An image's hot-tier footprint: its layers (what the budget counts, shared layers once).
fn footprint(record: &ImageRecord) -> Footprint {
    Footprint::of_layers(
        record
            .layers
            .iter()
            .map(|l| (l.diff_id.as_str(), l.size as f64 / MIB)),
    )
}

impl Prewarmer {
    /// Opens the history, builds the engine from it, tells it which known images are still
    /// unpacked, and starts the start-notice and tick loops.
    pub async fn open(
        settings: PrewarmSettings,
        catalog: ImageCatalog,
        puller: Arc<Puller>,
        layers: LayerStore,
        dirs: Arc<DirRecycler>,
        metrics: Arc<Metrics>,
        activity: Arc<UserActivity>,
    ) -> anyhow::Result<Arc<Prewarmer>> {
        let (state, opening_evictions) = {
            let (settings, catalog, layers) = (settings.clone(), catalog.clone(), layers.clone());
            tokio::task::spawn_blocking(move || open_state(&settings, &catalog, &layers))
                .await
                .context("opening the predictor")??
        };
        let (notices, rx) = mpsc::channel(NOTICE_QUEUE);
        let me = Arc::new(Prewarmer {
            workers: Arc::new(Semaphore::new(settings.parallel_ops)),
            settings,
            state: Mutex::new(state),
            catalog,
            puller,
            layers,
            dirs,
            metrics,
            activity,
            warming: Mutex::new(HashSet::new()),
            evicting: Arc::new(AtomicUsize::new(0)),
            learning: AtomicUsize::new(0),
            disagreements: AtomicU64::new(0),
            removed: Mutex::new(HashSet::new()),
            notices,
        });
        me.publish_quality(&lock(&me.state));
        // More found unpacked than the budget allows (it was lowered): down to it.
        me.dispatch(opening_evictions);
        tokio::spawn(me.clone().notice_loop(rx));
        tokio::spawn(me.clone().tick_loop());
        Ok(me)
    }

    /// The users' request counter the prewarm workers yield to.
    pub fn activity(&self) -> &Arc<UserActivity> {
        &self.activity
    }

    /// A successful container start: queued for the engine (never blocks the start).
    pub fn record_start(&self, notice: StartNotice) {
        self.learning.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.notices.try_send(Notice::Start(notice)) {
            self.learning.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!("predictor busy, a start is not learned: {e}");
        }
    }

    async fn notice_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Notice>) {
        while let Some(notice) = rx.recv().await {
            let notice = match notice {
                Notice::Start(notice) => notice,
                Notice::Released(release) => {
                    release.drop_unheld();
                    continue;
                }
            };
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.learn_start(notice)).await {
                Ok(actions) => self.dispatch(actions),
                Err(e) => tracing::warn!("predictor: learning a start failed: {e}"),
            }
            // After the dispatch: a client that sees 0 here sees the prewarms and evictions
            // this start caused as `warming` / `evicting`.
            self.learning.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn tick_loop(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.settings.update_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick of an interval fires at once; the engine was just built.
        interval.tick().await;
        loop {
            interval.tick().await;
            let me = self.clone();
            let ticked = tokio::task::spawn_blocking(move || {
                let mut state = lock(&me.state);
                let actions = state.engine.tick(unix_now());
                state.save_calibration(&me.settings.calibration_path);
                me.publish_quality(&state);
                actions
            })
            .await;
            match ticked {
                Ok(actions) => self.dispatch(actions),
                Err(e) => tracing::warn!("predictor: tick failed: {e}"),
            }
        }
    }

    /// The engine's name for an image: its familiar reference when the text names it by
    /// reference (so `alpine` and `alpine:latest` are one image), else its id.
    fn engine_name(&self, text: &str, record: &ImageRecord) -> String {
        match ImageRef::parse(text) {
            Ok(r)
                if self
                    .catalog
                    .resolve(&r.canonical())
                    .ok()
                    .flatten()
                    .is_some_and(|found| found.id == record.id) =>
            {
                r.to_string()
            }
            _ => record.id.clone(),
        }
    }

    /// Feeds one start to the engine (blocking: catalog reads, the history append).
    fn learn_start(&self, notice: StartNotice) -> Vec<Action> {
        let record = match self.catalog.lookup(&notice.image_id) {
            Ok(Some(r)) => r,
            Ok(None) => return Vec::new(), // removed meanwhile: nothing to learn about it
            Err(e) => {
                tracing::warn!(image = %notice.image, "predictor: reading the image: {e}");
                return Vec::new();
            }
        };
        let layers = layer_uses(&record);
        let event = StartEvent {
            ts: unix_now(),
            image: self.engine_name(&notice.image, &record),
            size_mb: layers.iter().map(|l| l.size_mb).sum(),
            project: notice.project,
            layers,
        };
        lock(&self.removed).remove(&event.image);
        let mut state = lock(&self.state);
        let EngineState { engine, log, .. } = &mut *state;
        let (outcome, mut actions) = engine.on_start(&event);
        if (outcome == hb_predict::StartOutcome::Hit) != notice.hot {
            // The policy's view and the disk differ (a prewarm still unpacking, layers a
            // container pinned); the metrics count what the disk says.
            self.disagreements.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(image = %event.image, policy = ?outcome, hot = notice.hot, "hot-tier views differ");
        }
        actions.extend(engine.observe(event.clone()));
        if let Some(log) = log.as_mut() {
            if let Err(e) = log.append(&event, engine.history()) {
                tracing::warn!("predictor: writing the start history: {e:#}");
            }
        }
        self.publish_quality(&state);
        actions
    }

    /// Accuracy and recall from the engine's counters to the metrics.
    fn publish_quality(&self, state: &EngineState) {
        let r = hb_predict::report(&state.engine);
        self.metrics.set_prediction(
            r.prediction_accuracy.unwrap_or(0.0),
            r.recall.unwrap_or(0.0),
        );
    }

    fn dispatch(self: &Arc<Self>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Prewarm {
                    image,
                    confidence,
                    reason,
                    ..
                } => {
                    if lock(&self.removed).contains(&image) {
                        tracing::debug!(image = %image, "predicted, but the user removed it: not pulled again");
                        continue;
                    }
                    if !lock(&self.warming).insert(image.clone()) {
                        continue;
                    }
                    let me = self.clone();
                    tokio::spawn(async move {
                        let result = match me.workers.clone().acquire_owned().await {
                            Ok(_permit) => me.warm(&image, true).await,
                            Err(e) => Err(anyhow::anyhow!("prewarm workers closed: {e}")),
                        };
                        if result.is_err() {
                            // Taken back before `warming` lets a new prediction of it through.
                            let mut state = lock(&me.state);
                            state.engine.prewarm_failed(&image);
                            me.publish_quality(&state);
                        }
                        lock(&me.warming).remove(&image);
                        me.metrics.record_prewarm(result.is_ok());
                        match result {
                            Ok(r) => {
                                tracing::info!(image = %image, confidence, reason = %reason, pulled = r.pulled, layers = r.layers_unpacked, spare_dirs = r.dirs_stocked, ms = r.millis, "prewarmed")
                            }
                            Err(e) => tracing::warn!(image = %image, "prewarm failed: {e:#}"),
                        }
                    });
                }
                Action::Evict { image } => {
                    let pending = EvictionInFlight::new(&self.evicting);
                    self.spawn_drop(image, pending, "evicted from the hot tier");
                }
            }
        }
    }

    /// Removes, in a task, the layers of `image` the policy does not hold
    /// ([`Prewarmer::drop_layers`]) once no user request is in flight; `pending` counts it in
    /// `evicting` until done.
    fn spawn_drop(self: &Arc<Self>, image: String, pending: EvictionInFlight, done: &'static str) {
        let me = self.clone();
        tokio::spawn(async move {
            let _pending = pending;
            // A user's create may be about to use these layers: let it pin them.
            me.activity.wait_idle().await;
            let (me2, name) = (me.clone(), image.clone());
            match tokio::task::spawn_blocking(move || me2.drop_layers(&name)).await {
                Ok(Ok(0)) => tracing::debug!(image = %image, "no layer to remove"),
                Ok(Ok(n)) => tracing::info!(image = %image, layers = n, "{done}"),
                Ok(Err(e)) => tracing::warn!(image = %image, "removing layers: {e:#}"),
                Err(e) => tracing::warn!(image = %image, "removing layers: {e}"),
            }
        });
    }

    /// A container made from the image `image_id` is being removed. Its layers were unpacked
    /// for it whatever the policy decided, and pinned while it existed, so an eviction could
    /// not remove them: an image admission did not keep (worth less than what keeping it would
    /// push out), one bigger than the whole budget, one the policy let go while the container
    /// ran. Once the container's pins are gone ([`LayerRelease::pins_released`]), the layers
    /// the policy does not hold leave the hot tier, so the disk holds what the policy holds.
    /// Counted in `evicting` from this call on: call it before the removal is answered, so a
    /// client that saw the removal and then no eviction in progress sees those layers gone.
    pub fn layers_leaving(self: &Arc<Self>, image_id: &str) -> LayerRelease {
        LayerRelease {
            prewarmer: self.clone(),
            image_id: image_id.to_string(),
            pending: EvictionInFlight::new(&self.evicting),
        }
    }

    /// Pulls `image` if it is missing and unpacks its layers into the hot tier, in batches of
    /// `batch_size_layers` with `batch_delay_ms` between them. With `yield_to_users`, waits
    /// before the pull and every batch until no user request is in flight.
    pub async fn warm(&self, image: &str, yield_to_users: bool) -> anyhow::Result<WarmReport> {
        let began = Instant::now();
        let found = {
            let (catalog, text) = (self.catalog.clone(), image.to_string());
            tokio::task::spawn_blocking(move || catalog.lookup(&text)).await??
        };
        let (record, pulled) = match found {
            Some(r) => (r, false),
            None => {
                let reference = ImageRef::parse(image)?;
                if yield_to_users {
                    self.activity.wait_idle().await;
                }
                let record = self
                    .puller
                    .pull(&reference, None, &|_| {})
                    .await
                    .with_context(|| format!("pulling {reference}"))?;
                (record, true)
            }
        };
        let mut missing: Vec<String> = Vec::new();
        for l in &record.layers {
            if !self.layers.is_unpacked(&l.diff_id) && !missing.contains(&l.diff_id) {
                missing.push(l.diff_id.clone());
            }
        }
        for (i, batch) in missing.chunks(self.settings.batch_size_layers).enumerate() {
            if i > 0 && !self.settings.batch_delay.is_zero() {
                tokio::time::sleep(self.settings.batch_delay).await;
            }
            if yield_to_users {
                self.activity.wait_idle().await;
            }
            let (layers, batch) = (self.layers.clone(), batch.to_vec());
            // One layer at a time per worker: `parallel_ops` workers are the parallelism.
            tokio::task::spawn_blocking(move || layers.ensure_image(&batch, 1))
                .await?
                .with_context(|| format!("unpacking {image}"))?;
        }
        // What the spawner can take ready-made: a container's dirs. Its other per-start state,
        // `--network none` namespaces, the monitor keeps pooled on its own. When the spares
        // are there already, nothing waits for the users.
        let mut dirs_stocked = 0;
        if self.dirs.available() < SPARE_CONTAINER_DIRS {
            if yield_to_users {
                self.activity.wait_idle().await;
            }
            let dirs = self.dirs.clone();
            dirs_stocked = tokio::task::spawn_blocking(move || dirs.stock(SPARE_CONTAINER_DIRS))
                .await?
                .unwrap_or_else(|e| {
                    // Without spares a create makes its dirs itself, as it always could.
                    tracing::warn!("predictor: spare container dirs not made: {e}");
                    0
                });
        }
        Ok(WarmReport {
            image: image.to_string(),
            image_id: record.id.clone(),
            pulled,
            layers: record.layers.len(),
            layers_unpacked: missing.len(),
            dirs_stocked,
            millis: began.elapsed().as_millis() as u64,
        })
    }

    /// Warms an image by hand (`hb prewarm`): no yielding, no worker limit, counted in the
    /// prewarm metrics. The policy counts it warm (within the budget) from then on.
    pub async fn warm_now(self: &Arc<Self>, image: &str) -> anyhow::Result<WarmReport> {
        let result = self.warm(image, false).await;
        self.metrics.record_prewarm(result.is_ok());
        let report = result?;
        let me = self.clone();
        let image_id = report.image_id.clone();
        let text = image.to_string();
        let actions = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Action>> {
            let Some(record) = me.catalog.lookup(&image_id)? else {
                return Ok(Vec::new()); // removed meanwhile
            };
            let name = me.engine_name(&text, &record);
            let mut state = lock(&me.state);
            Ok(state
                .engine
                .mark_warm(&name, &footprint(&record), unix_now()))
        })
        .await
        .context("telling the predictor")??;
        self.dispatch(actions);
        Ok(report)
    }

    /// The hot tier's budget (`[cache] size_mb`) and what the policy counts in it, in MiB.
    pub fn hot_tier_mb(&self) -> (f64, f64) {
        let state = lock(&self.state);
        let cache = state.engine.cache();
        (cache.capacity_mb(), cache.used_mb())
    }

    /// The start history the engine keeps (what `history.jsonl` holds), oldest first.
    pub fn history(&self) -> Vec<StartEvent> {
        lock(&self.state).engine.history().to_trace()
    }

    /// Drops an image from the hot tier by hand (`hb prewarm --evict`): the policy forgets it
    /// and its layers go (see [`Prewarmer::drop_layers`]). Returns the layers removed; `None`
    /// when no such image exists.
    pub fn evict_now(&self, image: &str) -> anyhow::Result<Option<usize>> {
        let Some(record) = self.catalog.lookup(image)? else {
            return Ok(None);
        };
        let name = self.engine_name(image, &record);
        lock(&self.state).engine.forget_warm(&name);
        self.drop_layers(image).map(Some)
    }

    /// The user removed an image (`rmi`): `names` are the canonical names it lost, `id` its id
    /// when the image itself was deleted. The policy forgets them as warm, and predictions will
    /// not pull them back until the user starts them again.
    pub fn image_removed(&self, names: &[String], id: Option<&str>) {
        let engine_names: Vec<String> = names
            .iter()
            .map(|n| hb_image::reference::familiar_name(n))
            .chain(id.map(str::to_string))
            .collect();
        let mut state = lock(&self.state);
        for name in &engine_names {
            state.engine.forget_warm(name);
        }
        drop(state);
        lock(&self.removed).extend(engine_names);
    }

    /// The user pulled an image (canonical name): predictions may warm it again.
    pub fn image_pulled(&self, canonical: &str) {
        lock(&self.removed).remove(&hb_image::reference::familiar_name(canonical));
    }

    /// Removes an image's unpacked layers, except those a warm image of the policy holds (a
    /// layer shared with an image that stays warm stays too; asked at removal time, so a start
    /// or prewarm that needed a layer again since the eviction keeps it) or a container pins.
    /// Returns how many were removed.
    pub fn drop_layers(&self, image: &str) -> anyhow::Result<usize> {
        let Some(record) = self.catalog.lookup(image)? else {
            return Ok(0);
        };
        let mut removed = 0;
        let mut seen = HashSet::new();
        for l in &record.layers {
            if !seen.insert(l.diff_id.as_str()) || !self.layers.is_unpacked(&l.diff_id) {
                continue;
            }
            if lock(&self.state).engine.holds_layer(&l.diff_id) {
                continue;
            }
            match self.layers.remove(&l.diff_id) {
                Ok(()) => removed += 1,
                Err(RootfsError::Busy { .. }) => {} // a container uses it: it stays
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    /// Current predictions at or above `min_confidence` (at most `limit`), whether each is
    /// warm, and the engine's counters (blocking: reads the catalog and the disk).
    pub fn predictions(&self, min_confidence: f64, limit: usize) -> PredictView {
        let (mut predictions, view) = {
            let state = lock(&self.state);
            let engine = &state.engine;
            let config = engine.config();
            let predictions = engine.predictions(unix_now(), min_confidence);
            let view = PredictView {
                enabled: self.settings.learn,
                prewarming: config.prewarm,
                technique: config.technique.label(),
                confidence_threshold: config.confidence_threshold,
                update_interval_secs: config.update_interval_secs,
                history_retention_days: config.history_retention_days,
                parallel_ops: self.settings.parallel_ops,
                batch_size_layers: self.settings.batch_size_layers,
                batch_delay_ms: self.settings.batch_delay.as_millis() as u64,
                cache_mb: config.cache_mb,
                hot_mb: engine.cache().used_mb(),
                history_events: engine.history().len(),
                warming: Vec::new(),
                evicting: self.evicting.load(Ordering::SeqCst),
                learning: self.learning.load(Ordering::SeqCst),
                policy_disagreements: self.disagreements.load(Ordering::Relaxed),
                predictions: Vec::new(),
                spare_container_dirs: self.dirs.available(),
                stats: hb_predict::report(engine),
            };
            (predictions, view)
        };
        predictions.truncate(limit);
        let threshold = view.confidence_threshold;
        let mut warming: Vec<String> = lock(&self.warming).iter().cloned().collect();
        warming.sort();
        let predictions = predictions
            .into_iter()
            .map(|p| PredictionView {
                warm: self.is_warm(&p.image),
                acted_on: p.confidence >= threshold,
                image: p.image,
                confidence: p.confidence,
                reason: p.reason,
                horizon_secs: p.horizon_secs,
            })
            .collect();
        PredictView {
            warming,
            predictions,
            ..view
        }
    }

    /// True when the image is in the catalog and all its layers are unpacked.
    fn is_warm(&self, image: &str) -> bool {
        matches!(self.catalog.lookup(image), Ok(Some(r)) if r.layers.iter().all(|l| self.layers.is_unpacked(&l.diff_id)))
    }
}

/// The layers of a container being removed, from [`Prewarmer::layers_leaving`]; counted as an
/// eviction in progress until its removal is done or it is dropped (the removal failed: its
/// layers stay pinned, nothing to remove).
pub struct LayerRelease {
    prewarmer: Arc<Prewarmer>,
    image_id: String,
    pending: EvictionInFlight,
}

impl LayerRelease {
    /// The container's pins are released: the layers of its image that the policy does not
    /// hold and no other container pins are removed (in a task, after the users' requests in
    /// flight, as any eviction). Queued behind the start notices: the policy must have learned
    /// the container's own start first, or it would not yet hold an image it is about to keep.
    pub fn pins_released(self) {
        let notices = self.prewarmer.notices.clone();
        if let Err(e) = notices.try_send(Notice::Released(self)) {
            // The queue is full of starts (or closed at shutdown): the release cannot wait
            // behind them; an image whose start is not learned yet may lose layers the policy
            // will keep, which its next start unpacks again.
            if let Notice::Released(release) = e.into_inner() {
                release.drop_unheld();
            }
        }
    }

    fn drop_unheld(self) {
        let LayerRelease {
            prewarmer,
            image_id,
            pending,
        } = self;
        prewarmer.spawn_drop(
            image_id,
            pending,
            "removed with its container (not kept warm)",
        );
    }
}

/// What the notice loop handles, in the order it happened.
enum Notice {
    /// A successful start, to learn.
    Start(StartNotice),
    /// A container's pins are released: its image's unkept layers go.
    Released(LayerRelease),
}

/// Counts one eviction in [`Prewarmer`]'s `evicting` until dropped.
struct EvictionInFlight(Arc<AtomicUsize>);

impl EvictionInFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        EvictionInFlight(counter.clone())
    }
}

impl Drop for EvictionInFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Builds the engine at daemon start: the persisted history replayed into it, and the images it
/// knows that are still fully unpacked told warm (oldest use first, so its LRU order is the
/// history's). Also returns the evictions that keep those within the budget.
fn open_state(
    settings: &PrewarmSettings,
    catalog: &ImageCatalog,
    layers: &LayerStore,
) -> anyhow::Result<(EngineState, Vec<Action>)> {
    let config = &settings.engine;
    let now = unix_now();
    let empty = || History::new(config.history_retention_days, config.history_max_events);
    let (history, log) = if settings.learn {
        match HistoryLog::open(
            &settings.history_path,
            config.history_retention_days,
            config.history_max_events,
            now,
        ) {
            Ok((log, history, skipped)) => {
                if skipped > 0 {
                    tracing::warn!(path = %settings.history_path.display(), skipped, "start history: unreadable lines skipped (a torn write at a crash)");
                }
                (history, Some(log))
            }
            Err(e) => {
                // Prediction degrades to learning from scratch; the daemon still serves.
                tracing::error!(path = %settings.history_path.display(), "start history unusable, not persisted this run: {e:#}");
                (empty(), None)
            }
        }
    } else {
        (empty(), None)
    };
    let mut engine =
        Engine::with_history(config.clone(), &history).context("building the predictor")?;
    // The models relearn from the history; how often their guesses came true is kept apart.
    let saved_calibration = log.is_some().then(|| {
        if let Err(e) = read_calibration(&settings.calibration_path, &mut engine) {
            tracing::warn!("predictor: calibration record unusable, the models' word is taken until it is relearned: {e:#}");
        }
        engine.calibration_record()
    });
    let mut last_use: HashMap<&str, f64> = HashMap::new();
    for e in history.events() {
        last_use.insert(e.image.as_str(), e.ts);
    }
    let mut known: Vec<(&str, f64)> = last_use.into_iter().collect();
    known.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
    let mut marked_warm = 0;
    let mut evictions = Vec::new();
    for (image, _) in known {
        if let Ok(Some(record)) = catalog.lookup(image) {
            if record.layers.iter().all(|l| layers.is_unpacked(&l.diff_id)) {
                evictions.extend(engine.mark_warm(image, &footprint(&record), now));
                marked_warm += 1;
            }
        }
    }
    tracing::info!(
        technique = %config.technique.label(),
        history_events = history.len(),
        warm_images = marked_warm,
        "predictor ready"
    );
    Ok((
        EngineState {
            engine,
            log,
            saved_calibration,
        },
        evictions,
    ))
}

/// The persisted start history: JSON Lines of [`StartEvent`]s, one line appended per start
/// (no fsync: a start lost in a crash costs the model one observation, an fsync per start
/// costs every start), rewritten compacted at open and whenever the file holds far more lines
/// than the history keeps.
pub struct HistoryLog {
    path: PathBuf,
    file: std::fs::File,
    lines: usize,
    /// Extra lines allowed beyond the kept history before compacting.
    slack: usize,
}

impl HistoryLog {
    /// Reads the log at `path` into a [`History`] bounded by `retention_days` (before `now`)
    /// and `max_events`, skipping lines that do not parse (a torn last line after a crash),
    /// and rewrites the file with just the kept events. Returns the log, the history and the
    /// number of lines skipped.
    pub fn open(
        path: &Path,
        retention_days: u32,
        max_events: usize,
        now: f64,
    ) -> anyhow::Result<(HistoryLog, History, usize)> {
        let dir = path
            .parent()
            .context("the history path has no parent directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut history = History::new(retention_days, max_events);
        let mut skipped = 0;
        match std::fs::read(path) {
            Ok(bytes) => {
                for line in bytes.split(|b| *b == b'\n') {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<StartEvent>(line) {
                        Ok(e) if e.invalid_reason().is_none() => history.push(e),
                        _ => skipped += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        history.prune(now);
        let file = write_compacted(path, &history)?;
        let log = HistoryLog {
            path: path.to_path_buf(),
            file,
            lines: history.len(),
            slack: (max_events / 2).max(1024),
        };
        Ok((log, history, skipped))
    }

    /// Appends one start; compacts from `history` (which already holds it) when the file has
    /// grown `slack` lines beyond it.
    pub fn append(&mut self, event: &StartEvent, history: &History) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(event).context("encoding a start event")?;
        line.push('\n');
        // One write of a whole line to an O_APPEND file: a crash leaves at most this line torn.
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("appending to {}", self.path.display()))?;
        self.lines += 1;
        if self.lines > history.len() + self.slack {
            self.file = write_compacted(&self.path, history)?;
            self.lines = history.len();
        }
        Ok(())
    }
}

/// Writes the history to a temp file, fsyncs and renames it over `path` (so a crash leaves the
/// old log or the new one, never a mix); returns the new file opened for appending.
fn write_compacted(path: &Path, history: &History) -> anyhow::Result<std::fs::File> {
    replace_file(path, |w| {
        for e in history.events() {
            serde_json::to_writer(&mut *w, e).context("encoding a start event")?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {} for appending", path.display()))
}

/// Writes the calibration record (`<data_dir>/predict/calibration.json`) whole.
fn write_calibration(path: &Path, record: &CalibrationRecord) -> anyhow::Result<()> {
    replace_file(path, |w| {
        serde_json::to_writer(&mut *w, record).context("encoding the calibration record")
    })
}

/// Reads the calibration record into `engine`; a missing file leaves it as it is.
fn read_calibration(path: &Path, engine: &mut Engine) -> anyhow::Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let record: CalibrationRecord =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    engine
        .restore_calibration(&record)
        .with_context(|| format!("restoring {}", path.display()))
}

/// Fills a temp file beside `path` through `fill`, fsyncs it and renames it over `path`, so a
/// crash leaves the old file or the new one, never a mix.
fn replace_file(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(f);
        fill(&mut w).with_context(|| format!("writing {}", tmp.display()))?;
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        // The rename is durable once the directory is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: f64, image: &str) -> StartEvent {
        StartEvent {
            ts,
            image: image.into(),
            size_mb: 1.5,
            project: Some("p".into()),
            layers: Vec::new(),
        }
    }

    #[test]
    fn history_survives_a_torn_last_line_and_is_compacted() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("predict").join("history.jsonl");
        let now = 1_764_000_000.0;
        {
            let (mut log, mut history, skipped) = HistoryLog::open(&path, 30, 1000, now)?;
            assert_eq!((history.len(), skipped), (0, 0));
            for i in 0..5 {
                let e = event(now + f64::from(i), if i % 2 == 0 { "a:1" } else { "b:1" });
                history.push(e.clone());
                log.append(&e, &history)?;
            }
        }
        // kill -9 in the middle of an append: half a line, no newline.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
        f.write_all(br#"{"ts": 1764000009.0, "image": "c:1", "si"#)?;
        drop(f);
        let (mut log, mut history, skipped) = HistoryLog::open(&path, 30, 1000, now + 10.0)?;
        assert_eq!((history.len(), skipped), (5, 1));
        // The torn fragment is gone from the file, so the next append starts a clean line.
        let e = event(now + 11.0, "c:1");
        history.push(e.clone());
        log.append(&e, &history)?;
        drop(log);
        let (_, history, skipped) = HistoryLog::open(&path, 30, 1000, now + 12.0)?;
        assert_eq!((history.len(), skipped), (6, 0));
        assert_eq!(
            history.events().last().map(|e| e.image.as_str()),
            Some("c:1")
        );
        Ok(())
    }

    #[test]
    fn history_is_bounded_by_retention_and_cap() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("history.jsonl");
        let day = 86_400.0;
        let now = 1_764_000_000.0;
        {
            // Written with a long retention: 40 old events, then 3000 recent ones.
            let (mut log, mut history, _) = HistoryLog::open(&path, 3650, 100_000, now)?;
            for i in 0..40 {
                let e = event(now - 10.0 * day + f64::from(i), "old:1");
                history.push(e.clone());
                log.append(&e, &history)?;
            }
            for i in 0..3000 {
                let e = event(now - 100.0 + f64::from(i) * 0.01, "new:1");
                history.push(e.clone());
                log.append(&e, &history)?;
            }
        }
        // Reopened with 1 day of retention and a cap of 1000: only the newest 1000 stay, on
        // disk too.
        let (log, history, _) = HistoryLog::open(&path, 1, 1000, now)?;
        assert_eq!(history.len(), 1000);
        assert!(history.events().all(|e| e.image == "new:1"));
        assert_eq!(log.lines, 1000);
        let on_disk = std::fs::read_to_string(&path)?.lines().count();
        assert_eq!(on_disk, 1000);
        Ok(())
    }

    #[test]
    fn appends_compact_beyond_the_slack() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("history.jsonl");
        let now = 1_764_000_000.0;
        let (mut log, mut history, _) = HistoryLog::open(&path, 30, 100, now)?;
        for i in 0..5000 {
            let e = event(now + f64::from(i), "a:1");
            history.push(e.clone());
            log.append(&e, &history)?;
        }
        let on_disk = std::fs::read_to_string(&path)?.lines().count();
        assert!(on_disk <= 100 + log.slack + 1, "{on_disk} lines");
        Ok(())
    }

    #[test]
    fn project_from_labels() {
        let compose = serde_json::json!({"Labels": {"com.docker.compose.project": "shop", "hyperbox.project": "x"}});
        assert_eq!(StartNotice::project_of(&compose).as_deref(), Some("shop"));
        let ours = serde_json::json!({"Labels": {"hyperbox.project": "x"}});
        assert_eq!(StartNotice::project_of(&ours).as_deref(), Some("x"));
        assert_eq!(StartNotice::project_of(&serde_json::json!({})), None);
    }
}
