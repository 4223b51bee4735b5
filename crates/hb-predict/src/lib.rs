//! hb-predict: HyperBox's start history, the three prediction models (frequency, predictive,
//! statistical), the hot-tier cache policy, trace replay in simulated time, trace generators and
//! the `hb tune` sweep. Pure logic: no I/O besides parsing a trace from a reader, no tokio.
//!
//! The daemon drives an [`Engine`] live (`on_start`, `observe`, `tick`); [`replay`] drives the very
//! same `Engine` from a trace, so replayed numbers are the numbers the daemon's policy gives.
#![warn(missing_docs)]

mod cache;
mod calibration;
mod engine;
mod event;
mod gen;
mod model;
mod replay;
mod tune;

pub use cache::{CacheStats, Footprint, HotCache, KeepValue, StartOutcome};
pub use calibration::CalibrationRecord;
pub use engine::{Action, Engine, EngineConfig, Technique};
pub use event::{parse_trace, parse_trace_str, write_trace, History, LayerUse, StartEvent};
pub use gen::{gen_trace, Family, GenParams};
pub use model::{FrequencyModel, MarkovModel, Model, Prediction, StatisticalModel};
pub use replay::{replay, report, ReplayConfig, ReplayReport};
pub use tune::{cpu_table_row, tune, CpuTableRow, TuneConfig, TuneResult, TuneRow, CPU_TABLE};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// A trace line is not a valid start event.
    #[error("trace line {line}: {reason}")]
    TraceLine {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// A trace is not sorted by `ts`.
    #[error("trace line {line}: ts {ts} is before the previous line's ts {previous}")]
    TraceUnsorted {
        /// 1-based line number.
        line: usize,
        /// This line's timestamp.
        ts: f64,
        /// The previous line's timestamp.
        previous: f64,
    },
    /// Reading or writing a trace failed.
    #[error("trace I/O ({what}): {source}")]
    TraceIo {
        /// What was being read or written.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An unknown technique or family name.
    #[error("unknown {kind} {name:?} (expected one of: {expected})")]
    UnknownName {
        /// "technique" or "family".
        kind: &'static str,
        /// The name given.
        name: String,
        /// The accepted spellings.
        expected: &'static str,
    },
    /// A persisted calibration record that does not add up.
    #[error("invalid calibration record: {reason}")]
    InvalidRecord {
        /// What was wrong.
        reason: String,
    },
    /// A configuration value out of range.
    #[error("invalid {what}: {reason}")]
    InvalidConfig {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, PredictError>;
