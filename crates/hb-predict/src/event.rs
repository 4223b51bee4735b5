//! Start events (the trace format of `hb predict replay`), trace parsing/writing, and the bounded
//! start [`History`] the daemon persists (retention by age plus a hard cap on events).

use std::collections::VecDeque;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::{PredictError, Result};

/// One layer of a started image, as the daemon records it in its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerUse {
    /// The layer's digest (`sha256:…` of the uncompressed tar, its diff_id).
    pub digest: String,
    /// Its size in the hot tier, in MiB.
    pub size_mb: f64,
}

/// One container start: one line of a trace.
///
/// `{"ts": 1764000000.5, "image": "postgres:16", "size_mb": 150.0, "project": "shop"}`
///
/// The daemon's history also lists the image's `layers`, so a replay counts a layer two
/// images share once in the hot-tier budget, as the daemon does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartEvent {
    /// Unix time of the start, in seconds.
    pub ts: f64,
    /// Image reference as the user wrote it.
    pub image: String,
    /// The image's size in the hot tier, in MiB.
    pub size_mb: f64,
    /// Compose project, working directory or `--label` project, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The image's layers (optional): when given, they are its hot-tier footprint and
    /// `size_mb` is their sum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerUse>,
}

impl StartEvent {
    /// Why this event cannot be replayed, if it cannot: a non-finite `ts`, a negative or
    /// non-finite size, an empty image or layer digest.
    pub fn invalid_reason(&self) -> Option<String> {
        if !self.ts.is_finite() {
            return Some("ts is not a finite number".into());
        }
        if !(self.size_mb.is_finite() && self.size_mb >= 0.0) {
            return Some(format!(
                "size_mb {} is not a non-negative number",
                self.size_mb
            ));
        }
        if self.image.is_empty() {
            return Some("image is empty".into());
        }
        for layer in &self.layers {
            if layer.digest.is_empty() {
                return Some("a layer's digest is empty".into());
            }
            if !(layer.size_mb.is_finite() && layer.size_mb >= 0.0) {
                return Some(format!(
                    "layer {} size_mb {} is not a non-negative number",
                    layer.digest, layer.size_mb
                ));
            }
        }
        None
    }
}

/// Parses a JSON Lines trace; blank lines are skipped. Errors name the 1-based line; a `ts`
/// smaller than the previous line's is an error (traces are sorted by `ts`).
pub fn parse_trace<R: BufRead>(reader: R) -> Result<Vec<StartEvent>> {
    let mut events: Vec<StartEvent> = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_no = index + 1;
        let line = line.map_err(|source| PredictError::TraceIo {
            what: format!("reading line {line_no}"),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let event: StartEvent =
            serde_json::from_str(&line).map_err(|e| PredictError::TraceLine {
                line: line_no,
                reason: e.to_string(),
            })?;
        if let Some(reason) = event.invalid_reason() {
            return Err(PredictError::TraceLine {
                line: line_no,
                reason,
            });
        }
        if let Some(previous) = events.last() {
            if event.ts < previous.ts {
                return Err(PredictError::TraceUnsorted {
                    line: line_no,
                    ts: event.ts,
                    previous: previous.ts,
                });
            }
        }
        events.push(event);
    }
    Ok(events)
}

/// [`parse_trace`] over a string.
pub fn parse_trace_str(text: &str) -> Result<Vec<StartEvent>> {
    parse_trace(text.as_bytes())
}

/// Writes events as a JSON Lines trace.
pub fn write_trace<W: Write>(mut writer: W, events: &[StartEvent]) -> Result<()> {
    for event in events {
        // Serializing this plain struct cannot fail; a failure would be the writer's.
        let line = serde_json::to_string(event).map_err(|e| PredictError::TraceIo {
            what: "serializing an event".into(),
            source: std::io::Error::other(e),
        })?;
        writeln!(writer, "{line}").map_err(|source| PredictError::TraceIo {
            what: "writing the trace".into(),
            source,
        })?;
    }
    Ok(())
}

/// The bounded start history: events older than `retention_secs` before the newest one are
/// dropped, and never more than `max_events` are kept (oldest go first). Serde gives the
/// daemon its snapshot/restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    retention_secs: f64,
    max_events: usize,
    events: VecDeque<StartEvent>,
}

impl History {
    /// Default hard cap on kept events.
    pub const DEFAULT_MAX_EVENTS: usize = 100_000;

    /// An empty history keeping `retention_days` days and at most `max_events` events.
    pub fn new(retention_days: u32, max_events: usize) -> Self {
        History {
            retention_secs: f64::from(retention_days) * 86_400.0,
            max_events: max_events.max(1),
            events: VecDeque::new(),
        }
    }

    /// Records a start and drops what the bounds no longer allow.
    pub fn push(&mut self, event: StartEvent) {
        let now = event.ts;
        self.events.push_back(event);
        self.prune(now);
    }

    /// Drops events older than the retention before `now` and beyond the cap.
    pub fn prune(&mut self, now: f64) {
        let oldest_kept = now - self.retention_secs;
        while self.events.front().is_some_and(|e| e.ts < oldest_kept) {
            self.events.pop_front();
        }
        while self.events.len() > self.max_events {
            self.events.pop_front();
        }
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> impl ExactSizeIterator<Item = &StartEvent> {
        self.events.iter()
    }

    /// Number of kept events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no event is kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The kept events as a trace (for replay / `hb tune`).
    pub fn to_trace(&self) -> Vec<StartEvent> {
        self.events.iter().cloned().collect()
    }
}
