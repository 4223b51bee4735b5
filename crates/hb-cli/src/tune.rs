//! `hb tune`: the tuning guide's playbook, automated. It takes the daemon's own start history
//! (`GET /hyperbox/predict/history`, what `<data_dir>/predict/history.jsonl` holds) or a trace
//! file, and the daemon's current `[prediction]` / `[prewarming]` / `[cache]` settings
//! (`GET /hyperbox/predict`), replays the history through hb-predict's `tune` sweep (one
//! parameter at a time from the current config: technique, confidence threshold, update
//! interval, cache size), prints the table and proposes the winner as a TOML snippet, with
//! `parallel_ops` and `batch_delay_ms` from the guide's CPU table for this machine's cores.
//!
//! The sweep runs here, not in the daemon: it is a few dozen replays of up to 100,000 events,
//! pure computation that would otherwise compete with containers for the daemon's cores, and
//! `--trace` must work with no daemon at all.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use hb_predict::{parse_trace, parse_trace_str, tune, EngineConfig, StartEvent, Technique};
use hb_predict::{TuneConfig, TuneResult};
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{empty, read_ok, send, Daemon};
use crate::{get_json, output};

// `hb tune [--trace FILE] [--json]`. (Not a doc comment: see `Command` in main.rs.)
#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Tune on this trace (JSON Lines, the `hb predict replay` format) instead of the
    /// daemon's recorded history. The current config still comes from the daemon when it
    /// answers, else from the defaults.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Core count for the guide's CPU table (default: this machine's).
    #[arg(long)]
    cores: Option<u32>,
    /// Print one JSON object: the rows, the proposal, the CPU row and the TOML snippet.
    #[arg(long)]
    json: bool,
}

/// The daemon's current settings `hb tune` starts from, from `GET /hyperbox/predict`'s answer.
fn current_settings(v: &Value) -> anyhow::Result<TuneConfig> {
    let defaults = EngineConfig::default();
    let technique: Technique = v["technique"]
        .as_str()
        .context("the daemon's /hyperbox/predict answer has no technique")?
        .parse()
        .context("the daemon's technique")?;
    let number = |key: &str| {
        v[key]
            .as_f64()
            .with_context(|| format!("the daemon's /hyperbox/predict answer has no {key}"))
    };
    Ok(EngineConfig {
        technique,
        cache_mb: number("cache_mb")?,
        confidence_threshold: number("confidence_threshold")?,
        // Older daemons did not say; theirs was the config's.
        update_interval_secs: v["update_interval_secs"]
            .as_f64()
            .unwrap_or(defaults.update_interval_secs),
        history_retention_days: v["history_retention_days"]
            .as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .unwrap_or(defaults.history_retention_days),
        // With prediction off the daemon reports prewarming off too, whatever
        // `[prewarming] enabled` says; the sweep's models then prewarm as by default.
        prewarm: v["prewarming"].as_bool().unwrap_or(true)
            || !v["enabled"].as_bool().unwrap_or(true),
        ..defaults
    })
}

/// Runs `hb tune`.
pub async fn tune_command(daemon: &Daemon, a: TuneArgs) -> anyhow::Result<ExitCode> {
    let (trace, source, current) = match &a.trace {
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let trace =
                parse_trace(BufReader::new(file)).with_context(|| format!("{}", path.display()))?;
            let current = match get_json(daemon, "/hyperbox/predict?limit=0").await {
                Ok(v) => current_settings(&v)?,
                Err(e) => {
                    eprintln!(
                        "note: the daemon did not answer ({e:#}); starting from the default config"
                    );
                    TuneConfig::default()
                }
            };
            if trace.is_empty() {
                bail!(
                    "{} holds no start events: nothing to tune on",
                    path.display()
                );
            }
            (trace, format!("trace {}", path.display()), current)
        }
        None => {
            let view = get_json(daemon, "/hyperbox/predict?limit=0")
                .await
                .context("reading the daemon's prediction settings")?;
            let current = current_settings(&view)?;
            let trace = daemon_history(daemon).await?;
            if trace.is_empty() {
                bail!(
                    "the daemon's start history is empty: nothing to tune on yet. Every \
                     container start is recorded (<data_dir>/predict/history.jsonl); run the \
                     usual workload for a while, or tune on a trace with `hb tune --trace FILE`"
                );
            }
            (trace, "the daemon's start history".to_string(), current)
        }
    };
    let cores = a.cores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok())
            .unwrap_or(1)
    });
    let result = tune(&trace, &current, cores).context("replaying the history")?;
    let snippet = proposal_toml(&result, cores);
    if a.json {
        let out = json!({
            "source": source,
            "events": trace.len(),
            "cores": cores,
            "current": &current,
            "rows": &result.rows,
            "proposed": &result.proposed,
            "cpu": &result.cpu,
            "toml": snippet,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Replayed {} starts ({source}) from the current config, one parameter at a time:",
        trace.len()
    );
    println!();
    print_rows(&result);
    println!();
    println!("Proposed config:");
    println!();
    print!("{snippet}");
    Ok(ExitCode::SUCCESS)
}

/// `GET /hyperbox/predict/history`, parsed.
async fn daemon_history(daemon: &Daemon) -> anyhow::Result<Vec<StartEvent>> {
    let body = read_ok(
        send(
            daemon,
            Method::GET,
            "/hyperbox/predict/history",
            empty(),
            None,
        )
        .await?,
    )
    .await
    .context("reading the daemon's start history")?;
    let text = std::str::from_utf8(&body).context("the daemon's start history is not UTF-8")?;
    parse_trace_str(text).context("the daemon's start history")
}

fn print_rows(result: &TuneResult) {
    let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v));
    let mut rows = vec![vec![
        "PARAMETER".to_string(),
        "VALUE".into(),
        "STARTS".into(),
        "HITS".into(),
        "HIT RATIO".into(),
        "COLD STARTS".into(),
        "ACCURACY".into(),
        "WASTED PREWARM MB".into(),
    ]];
    for row in &result.rows {
        let r = &row.report;
        rows.push(vec![
            row.parameter.to_string(),
            row.value.clone(),
            r.starts.to_string(),
            r.hits.to_string(),
            format!("{:.1}%", 100.0 * r.hit_ratio),
            r.cold_starts.to_string(),
            pct(r.prediction_accuracy),
            format!("{:.0}", r.wasted_prewarm_mb),
        ]);
    }
    output::print_table(&rows);
}

/// The proposal as the config file's TOML: `[prediction]`, `[prewarming]` and `[cache]` keys,
/// with the guide's CPU-table row for `cores` as the prewarm workers' starting point.
fn proposal_toml(result: &TuneResult, cores: u32) -> String {
    let p: &TuneConfig = &result.proposed;
    let cpu = &result.cpu;
    let technique = match p.technique {
        Technique::Predictive => Some("predictive"),
        Technique::Frequency => Some("frequency"),
        Technique::Statistical => Some("statistical"),
        // `tune` never proposes the keep-alive baseline; the daemon has no such technique.
        Technique::None | Technique::KeepAlive(_) => None,
    };
    let mut out = String::new();
    out.push_str("[prediction]\n");
    // `none` (LRU without prediction) is `[prediction] enabled = false`.
    out.push_str(&format!("enabled = {}\n", technique.is_some()));
    out.push_str(&format!(
        "confidence_threshold = {:.0}\n",
        p.confidence_threshold
    ));
    out.push_str(&format!(
        "update_interval_secs = {:.0}\n",
        p.update_interval_secs
    ));
    out.push_str("\n[prewarming]\n");
    out.push_str(&format!("enabled = {}\n", p.prewarm));
    if let Some(t) = technique {
        out.push_str(&format!("technique = \"{t}\"\n"));
    }
    out.push_str(&format!(
        "parallel_ops = {}        # the guide's CPU table, {cores} cores ({}+ row)\n",
        cpu.parallel_ops, cpu.cores
    ));
    out.push_str(&format!("batch_delay_ms = {}\n", cpu.batch_delay_ms));
    out.push_str("\n[cache]\n");
    out.push_str(&format!("size_mb = {:.0}\n", p.cache_mb));
    out
}
