//! Tests of the metrics: the guide's grep contract, promtool's verdict,
//! interval views, the history's memory bound and the HTTP routes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hb_store::{Store, StoreOptions};

use super::exposition::{escape_help, escape_label_value};
use super::history::{Clock, History, HISTORY_SPAN, MIN_BUCKET_SECS};
use super::http::{parse_interval, parse_query};
use super::{Metrics, Readiness, ViewError};

const MIB: usize = 1024 * 1024;

/// A clock tests move by hand.
#[derive(Default)]
struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    fn set(&self, at: Duration) {
        self.nanos
            .store(u64::try_from(at.as_nanos()).unwrap(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// A directory removed when dropped (declare it before the store using it, so
/// the store is dropped first).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hb-metrics-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_store(dir: &TempDir) -> Store {
    Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap()
}

/// Deterministic bytes that repeat nowhere, several chunks long.
fn blob_bytes(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x >> 32) as u8 % 8
        })
        .collect()
}

fn write_blob(store: &Store, data: &[u8]) {
    let mut w = store.writer();
    w.write_content(data).unwrap();
    w.finish(None).unwrap();
}

/// `grep NEEDLE | head -1 | awk '{print $2}'`.
fn grep_head_field(text: &str, needle: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains(needle))?;
    line.split_whitespace().nth(1).map(str::to_string)
}

/// `grep NEEDLE | tail -1 | awk '{print $2}'`.
fn grep_tail_field(text: &str, needle: &str) -> Option<String> {
    let line = text.lines().rev().find(|l| l.contains(needle))?;
    line.split_whitespace().nth(1).map(str::to_string)
}

/// The value of the unlabelled sample `name`.
fn sample_value(text: &str, name: &str) -> Option<String> {
    let prefix = format!("{name} ");
    let line = text.lines().find(|l| l.starts_with(&prefix))?;
    line.split_whitespace().nth(1).map(str::to_string)
}

/// The same pipeline through the real tools, as the guide runs it.
fn shell_pipeline(text: &str, pipeline: &str) -> Option<String> {
    let dir = TempDir::new("sh");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("cat '{}' | {pipeline}", file.display()))
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Metrics with known events: 3 hot starts and 1 cold, accuracy 0.8, recall
/// 0.5, API requests of 10, 20 and 30 ms, a blob written twice.
fn sample_metrics(dir: &TempDir) -> (Metrics, Arc<ManualClock>, u64) {
    let store = open_store(dir);
    let clock = Arc::new(ManualClock::default());
    clock.set(Duration::from_secs(1000));
    let metrics = Metrics::with_clock(store.clone(), 10 * MIB, clock.clone());
    for hot in [true, true, false, true] {
        metrics.record_start(Duration::from_millis(40), hot);
    }
    metrics.set_prediction(0.8, 0.5);
    metrics.record_operation("containers.create", Duration::from_millis(10));
    metrics.record_operation("containers.start", Duration::from_millis(20));
    metrics.record_operation("containers.create", Duration::from_millis(30));
    metrics.record_pull(Duration::from_secs(3), true);
    metrics.record_pull(Duration::from_millis(200), false);
    metrics.record_prewarm(true);
    metrics.connection_opened();
    metrics.connection_opened();
    metrics.connection_closed();
    metrics.connection_refused();
    let data = blob_bytes(7);
    write_blob(&store, &data);
    write_blob(&store, &data);
    let dedup_ops = store.counters().dedup_operations;
    assert!(dedup_ops >= 4, "the blob must span several chunks");
    (metrics, clock, dedup_ops)
}

fn assert_guide_values(text: &str, dedup_ops: u64) {
    let expected = [
        ("cache_hit_ratio", "0.75"),
        ("prediction_accuracy", "0.8"),
        ("dedup_operations_total", &dedup_ops.to_string()),
    ];
    for (needle, value) in expected {
        assert_eq!(
            grep_head_field(text, needle).as_deref(),
            Some(value),
            "grep {needle} | head -1 in:\n{text}"
        );
        let shell = format!("grep {needle} | head -1 | awk '{{print $2}}'");
        assert_eq!(
            shell_pipeline(text, &shell).as_deref(),
            Some(value),
            "{shell}"
        );
    }
    assert_eq!(
        grep_tail_field(text, "operation_latency").as_deref(),
        Some("20"),
        "grep operation_latency | tail -1 in:\n{text}"
    );
    let shell = "grep operation_latency | tail -1 | awk '{print $2}'";
    assert_eq!(shell_pipeline(text, shell).as_deref(), Some("20"));
}

#[test]
fn guide_pipelines_read_the_documented_values() {
    let dir = TempDir::new("guide");
    let (metrics, _clock, dedup_ops) = sample_metrics(&dir);
    let all_time = metrics.render(None).unwrap();
    assert_guide_values(&all_time, dedup_ops);
    // Every event happened within the last 5 minutes: same answers.
    let recent = metrics.render(Some(Duration::from_secs(300))).unwrap();
    assert_guide_values(&recent, dedup_ops);
    assert!(all_time.contains("hyperbox_network_connections 1\n"));
    assert!(all_time.contains("hyperbox_pulls_total{result=\"failed\"} 1\n"));
    assert!(all_time.contains("hyperbox_operations_total{op=\"containers.create\"} 2\n"));
    assert!(all_time.contains("hyperbox_connections_refused_total 1\n"));
    assert!(all_time.contains("hyperbox_container_start_latency_bucket{le=\"50\"} 4\n"));
    assert!(all_time.contains("hyperbox_operation_latency_sum 60\n"));
    assert!(all_time.contains("hyperbox_memory_bytes "));
}

/// promtool's complaints about a rendering, one per line.
fn promtool_problems(text: &str) -> Option<Vec<String>> {
    let promtool = Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        return None;
    }
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        all.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn promtool_only_flags_the_guide_mandated_ms_name() {
    let dir = TempDir::new("promtool");
    let (metrics, _clock, _) = sample_metrics(&dir);
    // Label values that need escaping, and more names than slots.
    metrics.record_operation("odd \"op\" \\ name", Duration::from_millis(1));
    for i in 0..80 {
        let name: &'static str = Box::leak(format!("op{i}").into_boxed_str());
        metrics.record_operation(name, Duration::from_millis(1));
    }
    for interval in [None, Some(Duration::from_secs(300))] {
        let text = metrics.render(interval).unwrap();
        assert!(text.contains("hyperbox_operations_total{op=\"odd \\\"op\\\" \\\\ name\"} 1\n"));
        assert!(text.contains("hyperbox_operations_total{op=\"other\"} 20\n"));
        let Some(problems) = promtool_problems(&text) else {
            println!("/usr/bin/promtool absent: exposition not checked with promtool");
            return;
        };
        assert_eq!(
            problems,
            vec!["hyperbox_compression_time_ms metric names should not contain abbreviated units"],
            "promtool on ({interval:?}):\n{text}"
        );
    }
}

#[test]
fn interval_view_excludes_older_events() {
    let dir = TempDir::new("window");
    let store = open_store(&dir);
    let clock = Arc::new(ManualClock::default());
    let metrics = Metrics::with_clock(store.clone(), 10 * MIB, clock.clone());
    let five_minutes = Duration::from_secs(300);

    // At t = 5 s: a cold start, a slow request and a blob (sampled right away).
    clock.set(Duration::from_secs(5));
    metrics.record_start(Duration::from_millis(900), false);
    metrics.record_operation("images.pull", Duration::from_millis(100));
    write_blob(&store, &blob_bytes(1));
    metrics.sample_store();
    let first_ops = store.counters().dedup_operations;

    // At t = 10 min: a hot start, a fast request, the blob again.
    clock.set(Duration::from_secs(600));
    metrics.record_start(Duration::from_millis(30), true);
    metrics.record_operation("containers.list", Duration::from_millis(10));
    write_blob(&store, &blob_bytes(1));

    let recent = metrics.render(Some(five_minutes)).unwrap();
    assert_eq!(
        grep_head_field(&recent, "cache_hit_ratio").as_deref(),
        Some("1")
    );
    assert_eq!(
        grep_tail_field(&recent, "operation_latency").as_deref(),
        Some("10")
    );
    assert_eq!(
        grep_head_field(&recent, "dedup_operations_total"),
        Some(first_ops.to_string()),
        "only the second write's lookups are in the window"
    );
    assert!(recent.contains("hyperbox_container_starts_total{tier=\"cold\"} 0\n"));
    assert!(recent.contains("hyperbox_operations_total{op=\"images.pull\"} 0\n"));
    // The second write was all duplicates.
    assert_eq!(
        grep_head_field(&recent, "hyperbox_dedup_ratio").as_deref(),
        Some("+Inf")
    );
    let covered: f64 = sample_value(&recent, "hyperbox_window_seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!(covered <= 300.0 && covered > 290.0, "covered {covered}");

    let all_time = metrics.render(None).unwrap();
    assert_eq!(
        grep_head_field(&all_time, "cache_hit_ratio").as_deref(),
        Some("0.5")
    );
    assert_eq!(
        grep_tail_field(&all_time, "operation_latency").as_deref(),
        Some("55")
    );
    assert_eq!(
        grep_head_field(&all_time, "dedup_operations_total"),
        Some((2 * first_ops).to_string())
    );

    // An event just inside the window's edge counts, one just outside does not.
    let dir2 = TempDir::new("edge");
    let clock2 = Arc::new(ManualClock::default());
    let edge = Metrics::with_clock(open_store(&dir2), 10 * MIB, clock2.clone());
    clock2.set(Duration::from_secs(999));
    edge.record_prewarm(true);
    clock2.set(Duration::from_secs(1001));
    edge.record_prewarm(false);
    clock2.set(Duration::from_secs(1300));
    let text = edge.render(Some(five_minutes)).unwrap();
    assert!(
        text.contains("hyperbox_prewarms_total{result=\"ok\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("hyperbox_prewarms_total{result=\"failed\"} 1\n"),
        "{text}"
    );
    clock2.set(Duration::from_secs(1302));
    let text = edge.render(Some(five_minutes)).unwrap();
    assert!(
        text.contains("hyperbox_prewarms_total{result=\"failed\"} 0\n"),
        "{text}"
    );
}

#[test]
fn intervals_outside_the_history_are_refused() {
    let dir = TempDir::new("limits");
    let metrics = Metrics::with_clock(open_store(&dir), 10 * MIB, Arc::new(ManualClock::default()));
    assert!(metrics.render(Some(Duration::from_secs(24 * 3600))).is_ok());
    assert!(matches!(
        metrics.render(Some(Duration::from_secs(25 * 3600))),
        Err(ViewError::TooLong { .. })
    ));
    assert!(matches!(
        metrics.render(Some(Duration::from_secs(1))),
        Err(ViewError::TooShort { .. })
    ));
}

#[test]
fn history_stays_within_its_budget_and_covers_a_day() {
    let slot = History::slot_bytes();
    println!("one history bucket: {slot} bytes");
    // The module docs promise about 810 bytes; keep them honest.
    assert!((700..=1024).contains(&slot), "slot is {slot} bytes");
    for budget in [MIB, 10 * MIB, 64 * MIB, 1024 * MIB] {
        let mut history = History::new(budget);
        assert!(history.capacity_bytes() <= budget, "budget {budget}");
        assert!(history.max_window() >= HISTORY_SPAN, "budget {budget}");
        assert_eq!(history.bucket_len().as_secs() % MIN_BUCKET_SECS, 0);
        // Two days of buckets: the ring wraps instead of growing.
        let reserved = history.allocated_bytes();
        let step = history.bucket_len();
        let mut now = Duration::ZERO;
        while now < 2 * HISTORY_SPAN {
            history.bucket_mut(now).prewarms_ok = 1;
            now += step;
        }
        assert_eq!(history.allocated_bytes(), reserved, "budget {budget}");
        assert!(history.allocated_bytes() <= budget, "budget {budget}");
        // A full day's window sums one event per bucket, no stale ones.
        // Asked mid-bucket, so the newest bucket counts as partly elapsed.
        let (sum, covered) = history.window(now - step / 2, HISTORY_SPAN);
        let buckets = covered.as_secs().div_ceil(step.as_secs());
        assert!(covered <= HISTORY_SPAN && covered > HISTORY_SPAN - step);
        assert_eq!(sum.prewarms_ok, buckets, "budget {budget}");
    }
    // The default budget keeps the finest buckets.
    assert_eq!(History::new(10 * MIB).bucket_len(), Duration::from_secs(10));
    // A budget below two buckets still works, with two.
    let tiny = History::new(1);
    assert_eq!(tiny.capacity_bytes(), 2 * slot);
    assert!(tiny.max_window() >= HISTORY_SPAN);
}

#[test]
fn intervals_parse() {
    let secs = |s: &str| parse_interval(s).map(|d| d.as_secs());
    assert_eq!(secs("5m"), Ok(300));
    assert_eq!(secs("30m"), Ok(1800));
    assert_eq!(secs("1h"), Ok(3600));
    assert_eq!(secs("2h"), Ok(7200));
    assert_eq!(secs("24h"), Ok(86400));
    assert_eq!(secs("90s"), Ok(90));
    assert_eq!(secs("1d"), Ok(86400));
    for bad in [
        "",
        "m",
        "5",
        "5M",
        "-5m",
        "0m",
        "5 m",
        "1.5h",
        "5mm",
        "99999999999999999999h",
    ] {
        let err = parse_interval(bad).unwrap_err();
        assert!(
            err.contains("expected a positive whole number"),
            "{bad}: {err}"
        );
    }
    assert_eq!(parse_query(None), Ok(None));
    assert_eq!(parse_query(Some("")), Ok(None));
    assert_eq!(
        parse_query(Some("interval=1h")),
        Ok(Some(Duration::from_secs(3600)))
    );
    assert!(parse_query(Some("interval=1h&interval=2h")).is_err());
    assert!(parse_query(Some("intervl=1h"))
        .unwrap_err()
        .contains("intervl"));
}

#[test]
fn escaping_follows_the_text_format() {
    assert_eq!(escape_help("a\\b\nc\"d"), "a\\\\b\\nc\"d");
    assert_eq!(escape_label_value("a\\b\nc\"d"), "a\\\\b\\nc\\\"d");
}

/// Status line and body of `GET path` on a plain HTTP/1.1 connection.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

#[tokio::test]
async fn routes_answer() {
    let dir = TempDir::new("router");
    let metrics = Arc::new(Metrics::new(open_store(&dir), 10 * MIB));
    metrics.record_operation("system.ping", Duration::from_millis(2));
    let readiness = Arc::new(Readiness::new());
    let app = super::router(metrics.clone(), readiness.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (status, _, body) = get(addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    let (status, _, body) = get(addr, "/ready").await;
    assert_eq!(status, 503);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "not ready");
    assert_eq!(v["reason"], "hyperboxd is starting");
    readiness.set_ready();
    let (status, _, body) = get(addr, "/ready").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    readiness.set_not_ready("shutting down");
    let (status, _, body) = get(addr, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("shutting down"), "{body}");

    let (status, head, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert_eq!(
        grep_tail_field(&body, "operation_latency").as_deref(),
        Some("2")
    );
    // The all-time view has the store totals by now (an empty store: 1 and 1).
    assert_eq!(
        grep_head_field(&body, "hyperbox_dedup_ratio").as_deref(),
        Some("1")
    );

    for path in [
        "/metrics?interval=5m",
        "/metrics?interval=30m",
        "/metrics?interval=24h",
    ] {
        let (status, _, body) = get(addr, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            grep_tail_field(&body, "operation_latency").as_deref(),
            Some("2")
        );
    }
    for (path, says) in [
        ("/metrics?interval=5x", "bad interval \"5x\""),
        ("/metrics?interval=", "bad interval"),
        ("/metrics?interval=48h", "history kept"),
        ("/metrics?interval=1s", "shorter than one history bucket"),
        ("/metrics?window=5m", "unknown query parameter"),
    ] {
        let (status, _, body) = get(addr, path).await;
        assert_eq!(status, 400, "{path}");
        assert!(body.contains(says), "{path}: {body}");
    }
    server.abort();
}

#[test]
fn metrics_and_readiness_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Metrics>();
    shareable::<Readiness>();
}
