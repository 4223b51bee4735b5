//! Prediction and prewarming against a real hyperboxd: after a few rounds of "A then B" in one
//! project, starting A makes B warm before anyone asks for it, B's start is then a hot-tier
//! hit, and the prewarm counters and prediction accuracy move on the metrics port. The start
//! history survives a kill -9. (Run with HYPERBOX_PREWARMING_ENABLED=false and it fails: B is
//! never warmed.)

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::busybox::{busybox_layer, can_run};
use common::{
    http_get, layer_tar, metric_sample as sample, noise, push, sha256, Daemon, Registry, TestImage,
};
use serde_json::Value;

fn metrics_text(addr: &str) -> String {
    http_get(addr, "/metrics").1
}

const HOT: &str = "hyperbox_container_starts_total{tier=\"hot\"}";
const COLD: &str = "hyperbox_container_starts_total{tier=\"cold\"}";
const PREWARMS_OK: &str = "hyperbox_prewarms_total{result=\"ok\"}";

/// Pushes an image of busybox plus one small layer of its own; returns its reference and the
/// diff_id of that own layer.
fn push_image(registry: &Registry, repo: &str, seed: u64) -> (String, String) {
    let own = layer_tar(&[(&format!("data/{repo}.bin"), noise(seed, 64 * 1024))]);
    let diff_id = sha256(&own);
    push(
        &registry.addr,
        &format!("test/{repo}:latest"),
        &TestImage {
            layers: vec![busybox_layer(), own],
            compression: "gzip",
            architecture: "amd64",
        },
    );
    (format!("{}/test/{repo}", registry.addr), diff_id)
}

/// Where the daemon unpacks a layer (the hot tier).
fn layer_dir(d: &Daemon, diff_id: &str) -> PathBuf {
    d.data_dir()
        .join("layers")
        .join(diff_id.trim_start_matches("sha256:"))
}

fn run_in_project(d: &Daemon, image: &str) {
    d.hb_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--label",
        "hyperbox.project=shop",
        image,
        "true",
    ]);
}

fn predictions(d: &Daemon) -> Value {
    serde_json::from_str(&d.hb_ok(&["predict", "--format", "json"])).expect("predict json")
}

/// Waits until no prewarm is in progress.
fn wait_idle(d: &Daemon) {
    let began = Instant::now();
    loop {
        let v = predictions(d);
        if v["warming"].as_array().is_some_and(Vec::is_empty) {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "prewarms never ended: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_then_b_makes_b_warm_before_it_is_asked_for() {
    if !can_run() {
        return;
    }
    let registry = Registry::start();
    let (a, _) = push_image(&registry, "pa", 1);
    let (b, b_layer) = push_image(&registry, "pb", 2);
    let b_name = format!("{b}:latest");
    let mut d = Daemon::start(&format!(
        "[daemon]\ninsecure_registries = [\"{}\"]\n\
         [prediction]\nupdate_interval_secs = 1\nconfidence_threshold = 40\n\
         [prewarming]\ntechnique = \"predictive\"\nbatch_size_layers = 1\nbatch_delay_ms = 5\n",
        registry.addr
    ));
    d.hb_ok(&["pull", &a]);
    d.hb_ok(&["pull", &b]);

    // Training: A then B, three times; B's own layer is dropped after each round, so only a
    // prewarm can make it warm again.
    for _ in 0..3 {
        run_in_project(&d, &a);
        run_in_project(&d, &b);
        // A prewarm of B that A's start queued may still be waiting for the user's run of B
        // to end; let it finish first, or it would unpack B again after the eviction.
        wait_idle(&d);
        let out = d.hb_ok(&["prewarm", "--evict", &b]);
        assert!(out.contains("1 layers removed"), "{out}");
        assert!(!layer_dir(&d, &b_layer).exists());
    }

    // Nothing warms B while B was the last start: the ticks (every second) re-predict A only.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !layer_dir(&d, &b_layer).exists(),
        "B was warmed before A started"
    );
    let before = metrics_text(&d.metrics_addr);

    // A starts: B becomes warm before it is asked for.
    run_in_project(&d, &a);
    let began = Instant::now();
    let entry = loop {
        let v = predictions(&d);
        let entry = v["predictions"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["image"] == b_name.as_str()))
            .cloned();
        if let Some(e) = entry.filter(|e| e["warm"] == true) {
            break e;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "B never became warm after A started:\n{v:#}\ndaemon log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(layer_dir(&d, &b_layer).is_dir());
    assert_eq!(entry["acted_on"], true, "{entry}");
    assert!(
        entry["confidence"].as_f64().unwrap_or(0.0) >= 40.0,
        "{entry}"
    );
    assert!(
        entry["reason"]
            .as_str()
            .is_some_and(|r| r.contains("follows")),
        "{entry}"
    );
    let table = d.hb_ok(&["predict"]);
    assert!(table.starts_with("IMAGE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&b_name) && l.trim_end().ends_with("yes")),
        "{table}"
    );

    // B's start is a hot-tier hit (as A's was): two hot starts, no cold one.
    run_in_project(&d, &b);
    let after = metrics_text(&d.metrics_addr);
    assert_eq!(sample(&after, HOT) - sample(&before, HOT), 2.0, "{after}");
    assert_eq!(sample(&after, COLD), sample(&before, COLD), "{after}");
    assert!(
        sample(&after, PREWARMS_OK) > sample(&before, PREWARMS_OK),
        "no prewarm counted:\n{after}"
    );
    // Accuracy comes from the engine after it learned B's start (asynchronously).
    let began = Instant::now();
    loop {
        let text = metrics_text(&d.metrics_addr);
        let accuracy = sample(&text, "hyperbox_prediction_accuracy");
        let recall = sample(&text, "hyperbox_prediction_recall");
        if accuracy > 0.5 && recall > 0.0 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "accuracy {accuracy}, recall {recall}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // By hand: drop B, warm it again.
    d.hb_ok(&["prewarm", "--evict", &b]);
    assert!(!layer_dir(&d, &b_layer).exists());
    let out = d.hb_ok(&["prewarm", &b]);
    assert!(out.contains("1 of 2 layers unpacked"), "{out}");
    assert!(layer_dir(&d, &b_layer).is_dir());
    let err = d.hb_err(&["prewarm", &format!("{}/test/missing", registry.addr)]);
    assert!(err.contains("Error response from daemon"), "{err}");

    // The history (8 starts) survives a crash and is replayed into the new engine.
    d.kill9();
    d.spawn();
    let v = predictions(&d);
    assert_eq!(v["history_events"], 8, "{v:#}");
    assert_eq!(v["technique"], "predictive", "{v:#}");
}
