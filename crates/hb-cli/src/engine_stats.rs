//! `hb stats --engine`: the figures of the daemon's metrics port, for a person. The daemon
//! serves the same exposition on its API socket (`/hyperbox/metrics`), so this works wherever
//! `hb` reaches the daemon, metrics port enabled or not.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;

use crate::client::{empty, read_ok, send, Daemon};

/// Samples by their full name (`name{labels}`); comments skipped.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Prints the engine's figures, over `interval` when given.
pub async fn show(daemon: &Daemon, interval: Option<&str>) -> anyhow::Result<ExitCode> {
    let path = match interval {
        Some(i) => format!("/hyperbox/metrics?interval={}", crate::enc(i)),
        None => "/hyperbox/metrics".to_string(),
    };
    let body = read_ok(send(daemon, Method::GET, &path, empty(), None).await?).await?;
    let text = String::from_utf8(body.to_vec()).context("the metrics are not UTF-8")?;
    let s = samples(&text);
    let v = |k: &str| s.get(k).copied().unwrap_or(0.0);
    let mean = |base: &str| {
        let count = v(&format!("{base}_count"));
        if count > 0.0 {
            format!("{:.1} ms (n={count})", v(&format!("{base}_sum")) / count)
        } else {
            "-".to_string()
        }
    };
    let window = v("hyperbox_window_seconds");
    let rows: Vec<(&str, String)> = vec![
        ("window", format!("{window:.0} s")),
        (
            "cache hit ratio",
            format!("{:.1} %", v("hyperbox_cache_hit_ratio") * 100.0),
        ),
        (
            "container starts",
            format!(
                "{} hot, {} cold",
                v("hyperbox_container_starts_total{tier=\"hot\"}"),
                v("hyperbox_container_starts_total{tier=\"cold\"}")
            ),
        ),
        ("start latency", mean("hyperbox_container_start_latency")),
        ("API operation latency", mean("hyperbox_operation_latency")),
        (
            "pulls",
            format!(
                "{} ok, {} failed, {}",
                v("hyperbox_pulls_total{result=\"ok\"}"),
                v("hyperbox_pulls_total{result=\"failed\"}"),
                mean("hyperbox_pull_latency")
            ),
        ),
        (
            "compression ratio",
            format!("{:.2}x", v("hyperbox_compression_ratio")),
        ),
        (
            "compression time",
            format!("{:.3} ms per chunk", v("hyperbox_compression_time_ms")),
        ),
        (
            "dedup",
            format!(
                "{} lookups, {} hits, ratio {:.2}x",
                v("hyperbox_dedup_operations_total"),
                v("hyperbox_dedup_hits_total"),
                v("hyperbox_dedup_ratio")
            ),
        ),
        (
            "prediction",
            format!(
                "accuracy {:.1} %, recall {:.1} %",
                v("hyperbox_prediction_accuracy") * 100.0,
                v("hyperbox_prediction_recall") * 100.0
            ),
        ),
        (
            "prewarms",
            format!(
                "{} ok, {} failed",
                v("hyperbox_prewarms_total{result=\"ok\"}"),
                v("hyperbox_prewarms_total{result=\"failed\"}")
            ),
        ),
        (
            "API connections",
            format!(
                "{} open, {} since start",
                v("hyperbox_network_connections"),
                v("hyperbox_connections_opened_total")
            ),
        ),
        (
            "daemon memory",
            format!("{:.1} MiB", v("hyperbox_memory_bytes") / 1048576.0),
        ),
    ];
    for (k, val) in rows {
        println!("{k:<22} {val}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_keep_labels_and_skip_comments() {
        let s = samples("a 1\n# HELP a x\nb{tier=\"hot\"} 2.5\nbad line x\n");
        assert_eq!(s["a"], 1.0);
        assert_eq!(s["b{tier=\"hot\"}"], 2.5);
        assert_eq!(s.len(), 2);
    }
}
