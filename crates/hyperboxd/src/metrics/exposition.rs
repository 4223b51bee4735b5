//! Prometheus text exposition (format 0.0.4) of one view of the metrics.
//!
//! Written by hand rather than with a client crate because of two things such
//! crates do not do: the interval views (same names, numbers of a window) and
//! the line order the tuning guide's shell pipelines rely on:
//!
//! * `grep NAME | head -1 | awk '{print $2}'` must print the value, so the
//!   metrics the guide reads that way come first, each as its sample line
//!   followed by its `# HELP` and no `# TYPE` (an untyped family; a `# TYPE`
//!   after the sample would be a parse error, a HELP is accepted).
//! * `grep operation_latency | tail -1 | awk '{print $2}'` must print the mean
//!   API latency, so the output ends with the `hyperbox_operation_latency`
//!   histogram and then the `hyperbox_operation_latency_mean` gauge.
//!
//! No other line may contain those names: HELP texts avoid them.

use std::time::Duration;

use super::tally::{
    Histogram, Tally, EVENT_BOUNDS_MICROS, IO_BUCKETS, IO_KINDS, MAX_OPERATIONS, OTHER_OPERATION,
};

/// The content type of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything one rendering shows.
pub(crate) struct View<'a> {
    /// Time the counts cover.
    pub covered: Duration,
    /// Counts of the view (all-time or one window), store activity included.
    pub tally: &'a Tally<u64>,
    /// Operation names by slot of [`Tally::operations`].
    pub operation_names: &'a [&'static str],
    /// Bytes referenced per byte stored.
    pub dedup_ratio: f64,
    /// Content bytes per stored byte.
    pub compression_ratio: f64,
    /// Last prediction accuracy reported.
    pub prediction_accuracy: f64,
    /// Last prediction recall reported.
    pub prediction_recall: f64,
    /// API connections open now.
    pub open_connections: u64,
    /// Resident memory now, when readable.
    pub memory_bytes: Option<u64>,
}

/// `num / den`, or `empty` when `den` is 0.
pub(crate) fn ratio(num: u64, den: u64, empty: f64) -> f64 {
    if den == 0 {
        empty
    } else {
        num as f64 / den as f64
    }
}

/// Renders `view` in the text format, in the order the module docs describe.
pub(crate) fn render(view: &View<'_>) -> String {
    let t = view.tally;
    let s = &t.store;
    let mut out = Exposition::default();

    // Read by the guide with `head -1`: sample first, then HELP, untyped.
    out.leading(
        "hyperbox_cache_hit_ratio",
        Value::Float(ratio(t.starts_hot, t.starts_hot + t.starts_cold, 0.0)),
        "Share of container starts served from the hot tier (rootfs already unpacked), 0 to 1; 0 without starts.",
    );
    out.leading(
        "hyperbox_prediction_accuracy",
        Value::Float(view.prediction_accuracy),
        "Share of prewarmed images that were then used, 0 to 1, as last reported by the predictor.",
    );
    out.leading(
        "hyperbox_prediction_recall",
        Value::Float(view.prediction_recall),
        "Share of started images that had been prewarmed, 0 to 1, as last reported by the predictor.",
    );
    out.leading(
        "hyperbox_dedup_operations_total",
        Value::Int(s.dedup_operations),
        "Chunk lookups made to deduplicate content: one per chunk written while deduplication is on.",
    );
    out.leading(
        "hyperbox_dedup_ratio",
        Value::Float(view.dedup_ratio),
        "Content bytes referenced per byte stored. All-time view: the whole store (logical bytes over unique chunk and inline bytes, refreshed every 10 s). Interval view: the chunks written in it (+Inf when every one was a duplicate).",
    );
    out.leading(
        "hyperbox_compression_ratio",
        Value::Float(view.compression_ratio),
        "Content bytes per stored byte. All-time view: every chunk in the store (refreshed every 10 s). Interval view: the compressions in it (1 without any).",
    );
    out.leading(
        "hyperbox_compression_time_ms",
        Value::Float(match s.compressions {
            0 => 0.0,
            n => s.compression_nanos as f64 / n as f64 / 1e6,
        }),
        "Mean time of one chunk compression in milliseconds; 0 without compressions.",
    );
    out.leading(
        "hyperbox_network_connections",
        Value::Int(view.open_connections),
        "API connections open now (the current value in every view).",
    );
    if let Some(bytes) = view.memory_bytes {
        out.leading(
            "hyperbox_memory_bytes",
            Value::Int(bytes),
            "Resident memory of hyperboxd in bytes, from /proc/self/statm (the current value in every view).",
        );
    }

    out.family(
        "hyperbox_window_seconds",
        "gauge",
        "Seconds this view covers: since the metrics started, or the requested interval cut to whole history buckets.",
    );
    out.sample(
        "hyperbox_window_seconds",
        &[],
        Value::Float(view.covered.as_secs_f64()),
    );

    out.family(
        "hyperbox_container_starts_total",
        "counter",
        "Container starts; tier=\"hot\" when the rootfs was already unpacked, \"cold\" when it had to be.",
    );
    out.sample(
        "hyperbox_container_starts_total",
        &[("tier", "hot")],
        Value::Int(t.starts_hot),
    );
    out.sample(
        "hyperbox_container_starts_total",
        &[("tier", "cold")],
        Value::Int(t.starts_cold),
    );
    out.family(
        "hyperbox_container_start_latency",
        "histogram",
        "Container start latency in milliseconds.",
    );
    out.histogram(
        "hyperbox_container_start_latency",
        &[],
        &EVENT_BOUNDS_MICROS,
        &t.start_latency,
    );

    out.family("hyperbox_pulls_total", "counter", "Image pulls by result.");
    out.sample(
        "hyperbox_pulls_total",
        &[("result", "ok")],
        Value::Int(t.pulls_ok),
    );
    out.sample(
        "hyperbox_pulls_total",
        &[("result", "failed")],
        Value::Int(t.pulls_failed),
    );
    out.family(
        "hyperbox_pull_latency",
        "histogram",
        "Image pull latency in milliseconds, failed pulls included.",
    );
    out.histogram(
        "hyperbox_pull_latency",
        &[],
        &EVENT_BOUNDS_MICROS,
        &t.pull_latency,
    );

    out.family(
        "hyperbox_prewarms_total",
        "counter",
        "Prewarm attempts by result.",
    );
    out.sample(
        "hyperbox_prewarms_total",
        &[("result", "ok")],
        Value::Int(t.prewarms_ok),
    );
    out.sample(
        "hyperbox_prewarms_total",
        &[("result", "failed")],
        Value::Int(t.prewarms_failed),
    );

    out.counter(
        "hyperbox_connections_opened_total",
        "API connections accepted.",
        t.connections_opened,
    );
    out.counter(
        "hyperbox_connections_refused_total",
        "API connections turned away.",
        t.connections_refused,
    );

    out.counter(
        "hyperbox_dedup_hits_total",
        "Chunk lookups that found the chunk already stored, so it was not written again.",
        s.dedup_hits,
    );
    out.counter(
        "hyperbox_dedup_hit_bytes_total",
        "Content bytes not written again thanks to deduplication hits.",
        s.dedup_hit_bytes,
    );
    out.counter(
        "hyperbox_chunks_written_total",
        "Chunks appended to pack files.",
        s.chunks_written,
    );
    out.counter(
        "hyperbox_chunks_written_bytes_total",
        "Content (uncompressed) bytes of the chunks appended to pack files.",
        s.chunk_bytes_written,
    );
    out.counter(
        "hyperbox_compressions_total",
        "Chunk compressions, including chunks then found to be duplicates.",
        s.compressions,
    );
    out.counter(
        "hyperbox_compression_input_bytes_total",
        "Bytes given to chunk compression.",
        s.compression_input_bytes,
    );
    out.counter(
        "hyperbox_compression_output_bytes_total",
        "Bytes chunk compression stored (raw bytes when compressing did not shrink them).",
        s.compression_output_bytes,
    );
    out.family(
        "hyperbox_compression_seconds_total",
        "counter",
        "Time spent compressing chunks, in seconds.",
    );
    out.sample(
        "hyperbox_compression_seconds_total",
        &[],
        Value::Float(s.compression_nanos as f64 / 1e9),
    );

    out.family(
        "hyperbox_io_latency",
        "histogram",
        "Content store I/O latency in milliseconds: op=\"chunk_read\" reads and decodes a chunk from a pack file, \"chunk_write\" appends one, \"pack_sync\" is the fdatasync before a commit.",
    );
    for (kind, histogram) in IO_KINDS.iter().zip(&s.io) {
        out.histogram::<IO_BUCKETS>(
            "hyperbox_io_latency",
            &[("op", kind)],
            &hb_store::LATENCY_BOUNDS_MICROS,
            histogram,
        );
    }

    out.family(
        "hyperbox_operations_total",
        "counter",
        "API requests by operation.",
    );
    for (slot, count) in t.operations.iter().enumerate() {
        let name = match view.operation_names.get(slot) {
            Some(name) => *name,
            // The overflow slot, or a slot no name was given yet.
            None if slot == MAX_OPERATIONS - 1 && *count > 0 => OTHER_OPERATION,
            None => continue,
        };
        out.sample(
            "hyperbox_operations_total",
            &[("op", name)],
            Value::Int(*count),
        );
    }

    // Last, for `tail -1`: the histogram, then its mean.
    out.family(
        "hyperbox_operation_latency",
        "histogram",
        "API request latency in milliseconds, all operations.",
    );
    out.histogram(
        "hyperbox_operation_latency",
        &[],
        &EVENT_BOUNDS_MICROS,
        &t.operation_latency,
    );
    out.family(
        "hyperbox_operation_latency_mean",
        "gauge",
        "Mean API request latency in milliseconds; 0 without requests.",
    );
    out.sample(
        "hyperbox_operation_latency_mean",
        &[],
        Value::Float(t.operation_latency.mean_ms()),
    );
    out.text
}

/// A sample value.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl Value {
    /// The value as the format spells it (`+Inf`, `-Inf`, `NaN` for the
    /// special floats; Rust's shortest round-trip decimal otherwise).
    fn text(self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Float(f) if f.is_nan() => "NaN".into(),
            Value::Float(f) if f == f64::INFINITY => "+Inf".into(),
            Value::Float(f) if f == f64::NEG_INFINITY => "-Inf".into(),
            Value::Float(f) => f.to_string(),
        }
    }
}

/// Escapes HELP text: backslash and line feed.
pub(crate) fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Escapes a label value: backslash, double quote and line feed.
pub(crate) fn escape_label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Milliseconds from microseconds, for `le` labels and sums.
fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The text being built.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// An untyped single-sample family whose sample precedes its HELP.
    fn leading(&mut self, name: &str, value: Value, help: &str) {
        self.sample(name, &[], value);
        self.help(name, help);
    }

    fn help(&mut self, name: &str, help: &str) {
        self.text.push_str("# HELP ");
        self.text.push_str(name);
        self.text.push(' ');
        self.text.push_str(&escape_help(help));
        self.text.push('\n');
    }

    /// HELP and TYPE lines opening a family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.help(name, help);
        self.text.push_str("# TYPE ");
        self.text.push_str(name);
        self.text.push(' ');
        self.text.push_str(kind);
        self.text.push('\n');
    }

    /// A whole unlabelled counter family.
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], Value::Int(value));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(key);
                self.text.push_str("=\"");
                self.text.push_str(&escape_label_value(val));
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&value.text());
        self.text.push('\n');
    }

    /// The `_bucket`, `_sum` and `_count` series of one histogram; `bounds`
    /// (microseconds) has one entry per bucket but the last.
    fn histogram<const N: usize>(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[u64],
        histogram: &Histogram<u64, N>,
    ) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound, count) in bounds.iter().zip(histogram.buckets) {
            cumulative = cumulative.saturating_add(count);
            let le = Value::Float(millis(*bound)).text();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket_name, &with_le, Value::Int(cumulative));
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket_name, &with_le, Value::Int(histogram.count()));
        self.sample(
            &format!("{name}_sum"),
            labels,
            Value::Float(millis(histogram.sum_micros)),
        );
        self.sample(
            &format!("{name}_count"),
            labels,
            Value::Int(histogram.count()),
        );
    }
}
