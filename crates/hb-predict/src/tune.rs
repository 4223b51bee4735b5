//! `hb tune`: the tuning guide's playbook automated. From the current config, change one
//! parameter at a time (technique, confidence threshold, update interval, cache size), replay
//! the history for each, and propose the config that wins; the guide's CPU table gives the
//! starting `parallel_ops` / `batch_delay_ms` for the machine's core count.

use serde::Serialize;

use crate::engine::{EngineConfig, Technique};
use crate::event::StartEvent;
use crate::replay::{replay, ReplayReport};
use crate::Result;

/// One row of the guide's "Configuration per CPU count" table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CpuTableRow {
    /// Core count the row is for (the last row is 32 and up).
    pub cores: u32,
    /// `[prewarming] parallel_ops`.
    pub parallel_ops: u32,
    /// `[prewarming] batch_delay_ms`.
    pub batch_delay_ms: u64,
    /// The guide's expected throughput, prewarm operations per second.
    pub expected_ops_per_sec: u32,
}

/// The tuning guide's CPU table.
pub const CPU_TABLE: [CpuTableRow; 5] = [
    CpuTableRow {
        cores: 2,
        parallel_ops: 1,
        batch_delay_ms: 20,
        expected_ops_per_sec: 50,
    },
    CpuTableRow {
        cores: 4,
        parallel_ops: 2,
        batch_delay_ms: 15,
        expected_ops_per_sec: 100,
    },
    CpuTableRow {
        cores: 8,
        parallel_ops: 4,
        batch_delay_ms: 10,
        expected_ops_per_sec: 200,
    },
    CpuTableRow {
        cores: 16,
        parallel_ops: 8,
        batch_delay_ms: 5,
        expected_ops_per_sec: 400,
    },
    CpuTableRow {
        cores: 32,
        parallel_ops: 16,
        batch_delay_ms: 2,
        expected_ops_per_sec: 800,
    },
];

/// The CPU table row for `cores`: the largest row not above it (1 core uses the 2-core row).
pub fn cpu_table_row(cores: u32) -> CpuTableRow {
    CPU_TABLE
        .iter()
        .rev()
        .find(|r| r.cores <= cores)
        .copied()
        .unwrap_or(CPU_TABLE[0])
}

/// The config `hb tune` varies (the model-side part of `[prediction]`, `[prewarming]`, `[cache]`).
pub type TuneConfig = EngineConfig;

/// One replay of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuneRow {
    /// The parameter changed from the current config: `current`, `technique`,
    /// `confidence_threshold`, `update_interval_secs`, `cache_mb`, `baseline` (the fixed
    /// 10-minute keep-alive, shown for comparison, never proposed) or `proposed`.
    pub parameter: &'static str,
    /// Its value in this row.
    pub value: String,
    /// The replay's result.
    pub report: ReplayReport,
}

/// The sweep and its proposal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuneResult {
    /// Every replay, the current config first and the proposal last.
    pub rows: Vec<TuneRow>,
    /// The proposed config.
    pub proposed: TuneConfig,
    /// Prewarm worker settings from the guide's CPU table for this machine.
    pub cpu: CpuTableRow,
}

/// Cache sizes tried besides the current one (MiB; the config's allowed range is 128..=16000).
const CACHE_SIZES: [f64; 4] = [512.0, 1024.0, 2048.0, 4096.0];
const THRESHOLDS: [f64; 4] = [50.0, 65.0, 80.0, 90.0];
const INTERVALS: [f64; 3] = [60.0, 300.0, 600.0];

/// Runs the sweep over `trace` from `current`, for a machine with `cores` cores.
///
/// The proposal takes the technique, threshold and interval with the fewest cold starts at the
/// current cache size (ties keep the current value), and the smallest cache size whose cold
/// starts are within 5 % of the best size tried: memory is not free, the guide sizes the cache
/// from available RAM.
pub fn tune(trace: &[StartEvent], current: &TuneConfig, cores: u32) -> Result<TuneResult> {
    let mut rows = vec![TuneRow {
        parameter: "current",
        value: current.technique.label(),
        report: replay(trace, current)?,
    }];
    let base_cold = rows[0].report.cold_starts;
    let mut proposed = current.clone();

    let mut best = (base_cold, current.technique);
    for technique in [
        Technique::None,
        Technique::KeepAlive(600.0),
        Technique::Frequency,
        Technique::Predictive,
        Technique::Statistical,
    ] {
        if technique == current.technique {
            continue;
        }
        let config = TuneConfig {
            technique,
            ..current.clone()
        };
        let report = replay(trace, &config)?;
        // The fixed keep-alive is a baseline to compare with, not a technique the daemon's
        // config can name.
        let baseline = matches!(technique, Technique::KeepAlive(_));
        if !baseline && report.cold_starts < best.0 {
            best = (report.cold_starts, technique);
        }
        rows.push(TuneRow {
            parameter: if baseline { "baseline" } else { "technique" },
            value: technique.label(),
            report,
        });
    }
    proposed.technique = best.1;

    let mut best = (base_cold, current.confidence_threshold);
    for threshold in THRESHOLDS {
        if threshold == current.confidence_threshold {
            continue;
        }
        let config = TuneConfig {
            confidence_threshold: threshold,
            ..current.clone()
        };
        let report = replay(trace, &config)?;
        if report.cold_starts < best.0 {
            best = (report.cold_starts, threshold);
        }
        rows.push(TuneRow {
            parameter: "confidence_threshold",
            value: format!("{threshold}"),
            report,
        });
    }
    proposed.confidence_threshold = best.1;

    let mut best = (base_cold, current.update_interval_secs);
    for interval in INTERVALS {
        if interval == current.update_interval_secs {
            continue;
        }
        let config = TuneConfig {
            update_interval_secs: interval,
            ..current.clone()
        };
        let report = replay(trace, &config)?;
        if report.cold_starts < best.0 {
            best = (report.cold_starts, interval);
        }
        rows.push(TuneRow {
            parameter: "update_interval_secs",
            value: format!("{interval}"),
            report,
        });
    }
    proposed.update_interval_secs = best.1;

    let mut sizes: Vec<(f64, u64)> = vec![(current.cache_mb, base_cold)];
    for size in CACHE_SIZES {
        if size == current.cache_mb {
            continue;
        }
        let config = TuneConfig {
            cache_mb: size,
            ..current.clone()
        };
        let report = replay(trace, &config)?;
        sizes.push((size, report.cold_starts));
        rows.push(TuneRow {
            parameter: "cache_mb",
            value: format!("{size}"),
            report,
        });
    }
    let fewest = sizes.iter().map(|s| s.1).min().unwrap_or(base_cold);
    sizes.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some(&(size, _)) = sizes.iter().find(|s| s.1 as f64 <= fewest as f64 * 1.05) {
        proposed.cache_mb = size;
    }

    rows.push(TuneRow {
        parameter: "proposed",
        value: proposed.technique.label(),
        report: replay(trace, &proposed)?,
    });
    Ok(TuneResult {
        rows,
        proposed,
        cpu: cpu_table_row(cores),
    })
}
