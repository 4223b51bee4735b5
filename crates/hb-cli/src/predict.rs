//! `hb predict` (the daemon's next predicted images), `hb prewarm` (warm or drop images by
//! hand), and the offline `hb predict replay` / `hb predict gen-trace`, which call hb-predict's
//! replay and generators locally: the same engine code the daemon runs, in simulated time, so
//! they need no daemon.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use hb_predict::{gen_trace, parse_trace, replay, write_trace, EngineConfig, Family, GenParams};
use serde_json::Value;

use crate::client::Daemon;
use crate::{enc, get_json, output, post_json};

// `hb predict`: the daemon's predictions, or an offline subcommand. (Not a doc comment: see `Command` in main.rs.)
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PredictArgs {
    #[command(subcommand)]
    command: Option<PredictCommand>,
    /// `json` for the daemon's document.
    #[arg(long)]
    format: Option<String>,
    /// Only predictions at or above this confidence, in percent.
    #[arg(long, default_value_t = 0.0)]
    min_confidence: f64,
    /// At most this many predictions.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Subcommand, Debug)]
enum PredictCommand {
    /// Replay a trace through the daemon's engine in simulated time (no daemon needed).
    Replay(ReplayArgs),
    /// Write a synthetic trace (JSON Lines) of a workload family.
    GenTrace(GenTraceArgs),
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// JSON Lines sorted by ts: {"ts": 1764000000.5, "image": "postgres:16", "size_mb": 150.0,
    /// "project": "shop"} (project optional).
    #[arg(long)]
    trace: PathBuf,
    /// Hot-tier budget in MiB.
    #[arg(long = "cache-mb")]
    cache_mb: f64,
    /// predictive, frequency, statistical, none (LRU without prediction) or keepalive[:SECS].
    #[arg(long)]
    technique: String,
    /// Predictions below this confidence (percent) are not acted on (default 65).
    #[arg(long = "confidence-threshold")]
    confidence_threshold: Option<f64>,
    /// Seconds between model refreshes (default 300).
    #[arg(long = "update-interval-secs")]
    update_interval_secs: Option<f64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct GenTraceArgs {
    /// dev (compose sessions), ci (pipelines) or team (diurnal use, bursts, drifting popularity).
    #[arg(long)]
    family: String,
    /// Seed of the generator (same seed, same trace).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days of trace (default 28).
    #[arg(long)]
    days: Option<u32>,
    /// File to write (default: standard output).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

// `hb prewarm IMAGE...`: pull if missing and unpack into the hot tier, now. (Not a doc comment: see `Command` in main.rs.)
#[derive(Args, Debug)]
pub struct PrewarmArgs {
    /// Drop the images' unpacked layers from the hot tier instead (they stay in the store;
    /// layers another warm image or a container uses stay too).
    #[arg(long)]
    evict: bool,
    /// Images.
    #[arg(required = true)]
    images: Vec<String>,
}

/// Runs `hb predict ...`.
pub async fn predict(daemon: &Daemon, a: PredictArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        Some(PredictCommand::Replay(r)) => return replay_trace(r),
        Some(PredictCommand::GenTrace(g)) => return generate(g),
        None => {}
    }
    let v = get_json(
        daemon,
        &format!(
            "/hyperbox/predict?min_confidence={}&limit={}",
            a.min_confidence, a.limit
        ),
    )
    .await?;
    if a.format.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !v["enabled"].as_bool().unwrap_or(false) {
        eprintln!("prediction is off ([prediction] enabled = false)");
    }
    let mut rows = vec![vec![
        "IMAGE".to_string(),
        "CONFIDENCE".into(),
        "REASON".into(),
        "WARM".into(),
    ]];
    for p in v["predictions"].as_array().into_iter().flatten() {
        rows.push(vec![
            p["image"].as_str().unwrap_or("?").to_string(),
            format!("{:.0}%", p["confidence"].as_f64().unwrap_or(0.0)),
            p["reason"].as_str().unwrap_or("").to_string(),
            if p["warm"].as_bool().unwrap_or(false) {
                "yes".into()
            } else if v["warming"]
                .as_array()
                .is_some_and(|w| w.iter().any(|x| x == &p["image"]))
            {
                "warming".into()
            } else {
                "no".into()
            },
        ]);
    }
    output::print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// Runs `hb prewarm [--evict] IMAGE...`.
pub async fn prewarm(daemon: &Daemon, a: PrewarmArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for image in &a.images {
        let op = if a.evict { "evict" } else { "prewarm" };
        match post_json(
            daemon,
            &format!("/hyperbox/{op}?image={}", enc(image)),
            None,
        )
        .await
        {
            Ok(v) if a.evict => println!(
                "{image}: evicted ({} layers removed)",
                v["layers_removed"].as_u64().unwrap_or(0)
            ),
            Ok(v) => println!("{image}: {}", describe_warm(&v)),
            Err(e) => {
                eprintln!("Error response from daemon: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn describe_warm(v: &Value) -> String {
    let unpacked = v["layers_unpacked"].as_u64().unwrap_or(0);
    let mut s = if unpacked == 0 {
        "already warm".to_string()
    } else {
        format!(
            "warm ({unpacked} of {} layers unpacked",
            v["layers"].as_u64().unwrap_or(0)
        ) + if v["pulled"].as_bool().unwrap_or(false) {
            ", pulled first)"
        } else {
            ")"
        }
    };
    s.push_str(&format!(" in {} ms", v["millis"].as_u64().unwrap_or(0)));
    let stocked = v["dirs_stocked"].as_u64().unwrap_or(0);
    if stocked > 0 {
        s.push_str(&format!(", {stocked} spare container dirs made"));
    }
    s
}

fn replay_trace(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let defaults = EngineConfig::default();
    let config = EngineConfig {
        technique: a.technique.parse()?,
        cache_mb: a.cache_mb,
        confidence_threshold: a
            .confidence_threshold
            .unwrap_or(defaults.confidence_threshold),
        update_interval_secs: a
            .update_interval_secs
            .unwrap_or(defaults.update_interval_secs),
        ..defaults
    };
    let file =
        std::fs::File::open(&a.trace).with_context(|| format!("opening {}", a.trace.display()))?;
    let trace =
        parse_trace(BufReader::new(file)).with_context(|| format!("{}", a.trace.display()))?;
    let r = replay(&trace, &config)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v));
    output::print_table(&[
        vec![
            "TECHNIQUE".into(),
            "CACHE MB".into(),
            "STARTS".into(),
            "COLD STARTS".into(),
            "HIT RATIO".into(),
            "PREWARMED".into(),
            "ACCURACY".into(),
            "RECALL".into(),
            "WASTED MB".into(),
        ],
        vec![
            r.technique.clone(),
            format!("{:.0}", r.cache_mb),
            r.starts.to_string(),
            r.cold_starts.to_string(),
            format!("{:.1}%", 100.0 * r.hit_ratio),
            r.prewarmed.to_string(),
            pct(r.prediction_accuracy),
            pct(r.recall),
            format!("{:.0}", r.wasted_prewarm_mb),
        ],
    ]);
    Ok(ExitCode::SUCCESS)
}

fn generate(a: GenTraceArgs) -> anyhow::Result<ExitCode> {
    let family: Family = a.family.parse()?;
    let defaults = GenParams::default();
    let params = GenParams {
        days: a.days.unwrap_or(defaults.days),
        ..defaults
    };
    let trace = gen_trace(family, a.seed, &params);
    match &a.output {
        Some(path) => {
            let (f, target) = crate::outfile::OutputFile::create(path)?;
            let mut w = std::io::BufWriter::new(f);
            let written = write_trace(&mut w, &trace)
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    w.flush()
                        .with_context(|| format!("writing {}", path.display()))
                });
            drop(w);
            match written {
                Ok(()) => target.commit()?,
                Err(e) => {
                    target.abandon();
                    return Err(e);
                }
            }
        }
        None => write_trace(std::io::stdout().lock(), &trace)?,
    }
    Ok(ExitCode::SUCCESS)
}
