//! Trace replay in simulated time: a trace drives an [`Engine`] exactly as the daemon does live
//! (ticks every `update_interval_secs`, `on_start` then `observe` per start). Prewarms take no
//! simulated time: an image predicted at t is warm at t (the live daemon needs seconds to
//! unpack, so follow-ups less than that apart would be partial hits live).

use serde::Serialize;

use crate::engine::{Engine, EngineConfig};
use crate::event::StartEvent;
use crate::{CalibrationRecord, Result, StartOutcome};

/// A replay is configured exactly as the engine is.
pub type ReplayConfig = EngineConfig;

/// What a replay measured (`hb predict replay --json` prints it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// Technique label (`none`, `keepalive:600`, `predictive`, ...).
    pub technique: String,
    /// Hot-tier budget in MiB.
    pub cache_mb: f64,
    /// Confidence threshold used (percent).
    pub confidence_threshold: f64,
    /// Starts replayed.
    pub starts: u64,
    /// Starts served from the hot tier.
    pub hits: u64,
    /// hits / starts.
    pub hit_ratio: f64,
    /// starts - hits.
    pub cold_starts: u64,
    /// Images loaded by prewarms.
    pub prewarmed: u64,
    /// Prewarmed images started within their horizon.
    pub prewarm_used: u64,
    /// prewarm_used / prewarmed (`null` without prewarms); prewarms still unused at the end
    /// of the trace count as not used.
    pub prediction_accuracy: Option<f64>,
    /// prewarm_used / (prewarm_used + cold_starts): of the starts that were not already warm
    /// by ordinary caching, the share prewarming served (`null` when there were none).
    pub recall: Option<f64>,
    /// MiB of prewarms never used within their horizon.
    pub wasted_prewarm_mb: f64,
    /// MiB loaded by prewarms.
    pub prewarmed_mb: f64,
    /// Hot-tier evictions.
    pub evictions: u64,
    /// Cold starts whose image ran without being kept warm: admission found it worth less
    /// than what keeping it would push out, or it is bigger than the budget.
    pub not_kept: u64,
    /// Heap bytes of the model at the end.
    pub model_heap_bytes: usize,
    /// How often each kind of guess came true, per 10-point confidence band (what caps the
    /// confidences acted on).
    pub calibration: CalibrationRecord,
}

/// Replays `trace` (sorted by `ts`) through a fresh [`Engine`].
pub fn replay(trace: &[StartEvent], config: &ReplayConfig) -> Result<ReplayReport> {
    let mut engine = Engine::new(config.clone())?;
    for event in trace {
        while let Some(due) = engine.next_tick() {
            if due > event.ts {
                break;
            }
            engine.tick(due);
        }
        let (outcome, _) = engine.on_start(event);
        debug_assert!(matches!(outcome, StartOutcome::Hit | StartOutcome::Miss));
        engine.observe(event.clone());
    }
    engine.finish();
    Ok(report(&engine))
}

/// The report of an engine's counters so far (also what the daemon's metrics derive from).
pub fn report(engine: &Engine) -> ReplayReport {
    let s = engine.cache().stats();
    let config = engine.config();
    let cold = s.starts - s.hits;
    let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
    ReplayReport {
        technique: config.technique.label(),
        cache_mb: config.cache_mb,
        confidence_threshold: config.confidence_threshold,
        starts: s.starts,
        hits: s.hits,
        hit_ratio: ratio(s.hits, s.starts).unwrap_or(0.0),
        cold_starts: cold,
        prewarmed: s.prewarmed,
        prewarm_used: s.prewarm_used,
        prediction_accuracy: ratio(s.prewarm_used, s.prewarmed),
        recall: ratio(s.prewarm_used, s.prewarm_used + cold),
        wasted_prewarm_mb: s.wasted_prewarm_mb,
        prewarmed_mb: s.prewarmed_mb,
        evictions: s.evictions,
        not_kept: s.not_kept,
        model_heap_bytes: engine.model_heap_bytes(),
        calibration: engine.calibration_record(),
    }
}
