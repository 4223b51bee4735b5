//! The metrics port of a real hyperboxd after real work: the tuning guide's shell pipelines
//! read the documented values, promtool accepts the exposition, the interval views and the
//! health and readiness probes answer.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::busybox::{can_run, daemon_for_image};
use common::{http_get as get, metric_sample as sample};

/// Runs a pipeline of the guide on `text` as its stdin.
fn pipeline(text: &str, pipe: &str) -> String {
    let mut child = Command::new("sh")
        .args(["-c", pipe])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("sh output");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn guide_pipelines_promtool_intervals_and_probes() {
    if !can_run() {
        return;
    }
    let (d, img) = daemon_for_image("");
    let m = d.metrics_addr.clone();
    // Liveness answers as soon as the API socket accepts; readiness once the daemon serves.
    assert_eq!(get(&m, "/health").0, 200);
    let ready_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&m, "/ready").0 != 200 && std::time::Instant::now() < ready_by {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(get(&m, "/ready").0, 200);
    d.hb_ok(&["pull", img]);
    // One cold start (layers unpacked by it), then three hot ones.
    for _ in 0..4 {
        d.hb_ok(&["run", "--rm", "--network", "none", img, "true"]);
    }
    let (status, text) = get(&m, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        sample(&text, "hyperbox_container_starts_total{tier=\"hot\"}"),
        3.0
    );
    assert_eq!(
        sample(&text, "hyperbox_container_starts_total{tier=\"cold\"}"),
        1.0
    );
    assert_eq!(sample(&text, "hyperbox_pulls_total{result=\"ok\"}"), 1.0);
    assert!(sample(&text, "hyperbox_memory_bytes") > 1e6);
    assert!(sample(&text, "hyperbox_dedup_operations_total") > 0.0);
    assert!(sample(&text, "hyperbox_compression_ratio") >= 1.0);

    // The guide's own extraction, through sh, grep and awk.
    let hit = pipeline(&text, "grep cache_hit_ratio | head -1 | awk '{print $2}'");
    assert_eq!(hit.parse::<f64>().expect("hit ratio"), 0.75, "{text}");
    let latency = pipeline(&text, "grep operation_latency | tail -1 | awk '{print $2}'");
    let mean = sample(&text, "hyperbox_operation_latency_sum")
        / sample(&text, "hyperbox_operation_latency_count");
    let got: f64 = latency.parse().expect("latency");
    assert!((got - mean).abs() < 1e-6 * mean.max(1.0), "{got} vs {mean}");
    let dedup = pipeline(
        &text,
        "grep dedup_operations_total | head -1 | awk '{print $2}'",
    );
    assert_eq!(
        dedup.parse::<f64>().expect("dedup"),
        sample(&text, "hyperbox_dedup_operations_total")
    );
    let pred = pipeline(
        &text,
        "grep prediction_accuracy | head -1 | awk '{print $2}'",
    );
    assert!(pred.parse::<f64>().is_ok(), "{pred}");

    // promtool (Debian's prometheus package): parses cleanly; its only lint is the guide's
    // mandated `_ms` name.
    if std::path::Path::new("/usr/bin/promtool").exists() {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool output");
        let complaints = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        for line in complaints.lines().filter(|l| !l.trim().is_empty()) {
            assert_eq!(
                line.trim(),
                "hyperbox_compression_time_ms metric names should not contain abbreviated units",
                "promtool: {complaints}"
            );
        }
    } else {
        eprintln!("promtool not installed: skipping its check (apt-get install prometheus)");
    }

    // Interval views: the same names over a window; a bad interval is a 400.
    for interval in ["5m", "1h", "24h"] {
        let (status, view) = get(&m, &format!("/metrics?interval={interval}"));
        assert_eq!(status, 200, "{interval}: {view}");
        assert_eq!(
            sample(&view, "hyperbox_cache_hit_ratio"),
            0.75,
            "{interval}"
        );
    }
    assert_eq!(get(&m, "/metrics?interval=soon").0, 400);

    // `hb stats --engine` shows the same figures for a person.
    let human = d.hb_ok(&["stats", "--engine"]);
    assert!(human.contains("cache hit ratio        75.0 %"), "{human}");
    assert!(
        human.contains("container starts       3 hot, 1 cold"),
        "{human}"
    );
    let human = d.hb_ok(&["stats", "--engine", "--interval", "1h"]);
    assert!(human.contains("75.0 %"), "{human}");
    assert!(d
        .hb_err(&["stats", "--engine", "--interval", "soon"])
        .contains("bad interval"));
}
