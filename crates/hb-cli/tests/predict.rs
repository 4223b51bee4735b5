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

/// Waits until no start waits to be learned, no prewarm runs and no eviction is in progress
/// (a `--rm` container's layers count from before `run` returns until they are released), so
/// a layer evicted by hand now is not still pinned by the last run.
fn wait_idle(d: &Daemon) {
    let began = Instant::now();
    loop {
        let v = predictions(d);
        if v["warming"].as_array().is_some_and(Vec::is_empty)
            && v["learning"] == 0
            && v["evicting"] == 0
        {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "prewarms or evictions never ended: {v:#}"
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

    // By hand: drop B, warm it again (once B's run let go of its layers).
    wait_idle(&d);
    d.hb_ok(&["prewarm", "--evict", &b]);
    assert!(!layer_dir(&d, &b_layer).exists());
    let out = d.hb_ok(&["prewarm", &b]);
    assert!(out.contains("1 of 2 layers unpacked"), "{out}");
    assert!(layer_dir(&d, &b_layer).is_dir());
    // Warms also leave container dirs ready for the starts they prepare (the `--rm` runs so
    // far leave at most one recycled set; the prewarms of B made the rest).
    let spare = predictions(&d)["spare_container_dirs"].as_u64();
    assert!(spare >= Some(8), "{spare:?}");
    let stocked: Vec<_> = std::fs::read_dir(d.data_dir().join("containers/.recycled"))
        .unwrap()
        .collect();
    assert!(stocked.len() >= 8, "{stocked:?}");
    let err = d.hb_err(&["prewarm", &format!("{}/test/missing", registry.addr)]);
    assert!(err.contains("Error response from daemon"), "{err}");

    // How often the guesses came true is saved at the ticks (the models relearn from the
    // history, this is not in it): B's starts settled the chain's claims about B.
    let calibration = d.data_dir().join("predict").join("calibration.json");
    let began = Instant::now();
    loop {
        let settled: u64 = std::fs::read(&calibration)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|r| {
                let bands = r["bands"].as_object()?.clone();
                Some(
                    bands
                        .values()
                        .filter_map(Value::as_array)
                        .flatten()
                        .filter_map(|band| band[1].as_u64())
                        .sum(),
                )
            })
            .unwrap_or(0);
        if settled > 0 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "no settled claim saved in {}:\n{}",
            calibration.display(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let served = predictions(&d)["stats"]["calibration"]["bands"].clone();
    assert_eq!(
        served["project_chain"].as_array().map(Vec::len),
        Some(10),
        "{served:#}"
    );

    // The history (8 starts) survives a crash and is replayed into the new engine.
    d.kill9();
    d.spawn();
    let v = predictions(&d);
    assert_eq!(v["history_events"], 8, "{v:#}");
    assert_eq!(v["technique"], "predictive", "{v:#}");
    assert!(
        !d.log().contains("calibration record unusable"),
        "{}",
        d.log()
    );

    // A calibration record that does not parse costs its counts, not the daemon or history.
    d.kill9();
    std::fs::write(&calibration, b"{\"bands\": {\"use_rate\": [[7, 2]").unwrap();
    d.spawn();
    let v = predictions(&d);
    assert_eq!(v["history_events"], 8, "{v:#}");
    assert!(
        d.log().contains("calibration record unusable"),
        "{}",
        d.log()
    );
}

/// Pushes an image of busybox plus one layer of its own holding `own_mb` MiB (zeros: cheap to
/// push and store, full size in the hot tier); returns its reference and the diff_id of that
/// own layer.
fn push_big_image(registry: &Registry, repo: &str, own_mb: usize) -> (String, String) {
    let own = layer_tar(&[(&format!("data/{repo}.bin"), vec![0u8; own_mb << 20])]);
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

/// Waits until the predictor has learned `starts` starts and carried out what they caused
/// (no start queued, no prewarm or eviction in progress), so the next start meets the disk
/// the policy decided on.
fn settle(d: &Daemon, starts: u64) {
    let began = Instant::now();
    loop {
        let v = predictions(d);
        if v["stats"]["starts"].as_u64() == Some(starts)
            && v["learning"] == 0
            && v["evicting"] == 0
            && v["warming"].as_array().is_some_and(Vec::is_empty)
        {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the predictor never settled after {starts} starts: {v:#}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn replaying_the_daemons_history_gives_the_hit_ratio_it_reported() {
    if !can_run() {
        return;
    }
    let registry = Registry::start();
    // Three images of busybox + 50 MiB: two fit the 128 MiB hot tier (their busybox layer
    // counted once), three do not.
    let images: Vec<String> = ["hp", "hq", "hr"]
        .iter()
        .map(|repo| push_big_image(&registry, repo, 50).0)
        .collect();
    let d = Daemon::start(&format!(
        "[daemon]\ninsecure_registries = [\"{}\"]\n\
         [cache]\nsize_mb = 128\n\
         [prewarming]\ntechnique = \"predictive\"\n",
        registry.addr
    ));

    // Nothing recorded yet: hb tune says so.
    let err = d.hb_err(&["tune"]);
    assert!(err.contains("start history is empty"), "{err}");

    for image in &images {
        d.hb_ok(&["pull", image]);
    }
    // Hits, misses and evictions, with the predictive model prewarming what follows what.
    let order = [0, 1, 0, 2, 1, 0, 0, 2, 2, 1, 0, 1, 2, 0, 1];
    for (n, &i) in order.iter().enumerate() {
        run_in_project(&d, &images[i]);
        settle(&d, n as u64 + 1);
    }

    let text = metrics_text(&d.metrics_addr);
    let (hot, cold) = (sample(&text, HOT), sample(&text, COLD));
    let daemon_ratio = sample(&text, "hyperbox_cache_hit_ratio");
    assert_eq!(hot + cold, order.len() as f64, "{text}");
    assert!(hot > 0.0 && cold > 0.0, "hot {hot} cold {cold}");
    assert_eq!(daemon_ratio, hot / (hot + cold));
    let v = predictions(&d);
    assert_eq!(v["policy_disagreements"], 0, "{v:#}");

    // The history file, replayed with the daemon's technique and budget.
    let history = d.data_dir().join("predict").join("history.jsonl");
    let history_arg = history.to_string_lossy().into_owned();
    let replayed: Value = serde_json::from_str(&d.hb_ok(&[
        "predict",
        "replay",
        "--trace",
        &history_arg,
        "--technique",
        "predictive",
        "--cache-mb",
        "128",
        "--json",
    ]))
    .expect("replay json");
    assert_eq!(replayed["starts"], order.len(), "{replayed}");
    assert!(
        replayed["evictions"].as_u64().unwrap_or(0) > 0,
        "{replayed}"
    );
    assert_eq!(
        replayed["hit_ratio"].as_f64(),
        Some(daemon_ratio),
        "replay {replayed}\nmetrics: hot {hot} cold {cold}\nhistory:\n{}",
        std::fs::read_to_string(&history).unwrap_or_default()
    );

    // hb tune replays the same history, fetched from the daemon: its current row is the same.
    let tuned: Value =
        serde_json::from_str(&d.hb_ok(&["tune", "--json", "--cores", "2"])).expect("tune json");
    let current = &tuned["rows"][0];
    assert_eq!(current["parameter"], "current", "{tuned:#}");
    assert_eq!(
        current["report"]["hit_ratio"].as_f64(),
        Some(daemon_ratio),
        "{tuned:#}"
    );
    let snippet = tuned["toml"].as_str().unwrap_or_default();
    let config = hb_config::Config::from_toml_str(snippet, "hb tune")
        .unwrap_or_else(|e| panic!("hb tune's proposal is not a valid config: {e}\n{snippet}"));
    assert_eq!(
        (
            config.prewarming.parallel_ops,
            config.prewarming.batch_delay_ms
        ),
        (1, 20),
        "the guide's 2-core row: {snippet}"
    );
    let table = d.hb_ok(&["tune", "--cores", "2"]);
    assert!(table.contains("PARAMETER"), "{table}");
    assert!(table.contains("WASTED PREWARM MB"), "{table}");
    assert!(table.contains("[cache]\nsize_mb = "), "{table}");

    // hb system df: hot and cold per image, the shared busybox layer counted once in the total.
    let df = d.df_json();
    let bb_bytes = busybox_layer().len() as u64;
    let per_image: Vec<(&str, u64)> = df["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["tier"].as_str().unwrap_or("?"),
                i["hot_bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(per_image.iter().any(|i| i.0 == "hot"), "{df:#}");
    assert!(per_image.iter().any(|i| i.0 != "hot"), "{df:#}");
    // Every image with a layer unpacked has busybox's (the own layers are all different):
    // the per-image figures count it in each, the total once.
    let with_busybox = per_image.iter().filter(|i| i.1 > 0).count() as u64;
    let sum: u64 = per_image.iter().map(|i| i.1).sum();
    let used = df["hot"]["used_bytes"].as_u64().expect("hot.used_bytes");
    assert_eq!(used, sum - (with_busybox - 1) * bb_bytes, "{df:#}");
    assert_eq!(df["hot"]["budget_bytes"], 128u64 << 20, "{df:#}");
    assert!(used <= 128 << 20, "{df:#}");
    let policy = df["hot"]["policy_used_bytes"].as_u64().unwrap_or(0);
    assert!(used.abs_diff(policy) <= 1, "disk {used} policy {policy}");
    assert!(
        df["cold"]["logical_bytes"].as_u64().unwrap_or(0) >= 50 << 20,
        "{df:#}"
    );
    let text = d.hb_ok(&["system", "df"]);
    assert!(text.contains("Hot tier"), "{text}");
    assert!(text.contains("TIER"), "{text}");
}

#[test]
fn a_big_image_run_once_does_not_push_the_busy_small_ones_out() {
    if !can_run() {
        return;
    }
    let registry = Registry::start();
    // Two images of busybox + 20 MiB used again and again, then one of busybox + 100 MiB run
    // once: all three do not fit the 128 MiB hot tier.
    let (small_a, a_layer) = push_big_image(&registry, "sa", 20);
    let (small_b, b_layer) = push_big_image(&registry, "sb", 20);
    let (big, big_layer) = push_big_image(&registry, "big", 100);
    let d = Daemon::start(&format!(
        "[daemon]\ninsecure_registries = [\"{}\"]\n\
         [cache]\nsize_mb = 128\n\
         [prewarming]\ntechnique = \"predictive\"\n",
        registry.addr
    ));
    for image in [&small_a, &small_b, &big] {
        d.hb_ok(&["pull", image]);
    }
    let mut starts = 0;
    for _ in 0..4 {
        for image in [&small_a, &small_b] {
            run_in_project(&d, image);
            starts += 1;
            settle(&d, starts);
        }
    }
    let before = metrics_text(&d.metrics_addr);

    // The big image is unpacked to run (a cold start), but not kept: once its container is
    // gone its own layer is too, and the small ones never left.
    run_in_project(&d, &big);
    starts += 1;
    settle(&d, starts);
    assert!(
        !layer_dir(&d, &big_layer).exists(),
        "the one-off stayed in the hot tier:\n{}",
        d.log()
    );
    assert!(layer_dir(&d, &a_layer).is_dir() && layer_dir(&d, &b_layer).is_dir());
    let v = predictions(&d);
    assert_eq!(v["stats"]["not_kept"], 1, "{v:#}");

    // So both small images start hot again.
    for image in [&small_a, &small_b] {
        run_in_project(&d, image);
        starts += 1;
        settle(&d, starts);
    }
    let after = metrics_text(&d.metrics_addr);
    assert_eq!(sample(&after, HOT) - sample(&before, HOT), 2.0, "{after}");
    assert_eq!(sample(&after, COLD) - sample(&before, COLD), 1.0, "{after}");
    let v = predictions(&d);
    assert_eq!(v["policy_disagreements"], 0, "{v:#}");
    let df = d.df_json();
    let used = df["hot"]["used_bytes"].as_u64().unwrap_or(u64::MAX);
    let policy = df["hot"]["policy_used_bytes"].as_u64().unwrap_or(0);
    assert!(used.abs_diff(policy) <= 1, "disk {used} policy {policy}");
}
