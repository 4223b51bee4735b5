//! Thin command-line wrapper over hb-predict's library functions (the real CLI, `hb predict
//! replay`, `hb predict gen-trace`, `hb tune`, calls the same ones):
//!
//! ```text
//! replay [replay] --trace F --cache-mb N --technique T [--confidence-threshold X]
//!        [--update-interval-secs S] [--json]
//! replay gen-trace --family dev|ci|team --seed S --days D        (JSON Lines on stdout)
//! replay bench [--seed S] [--days D]                             (Markdown tables)
//! replay tune --trace F [--cache-mb N] [--technique T] [--cores C]
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::process::ExitCode;

use hb_predict::{
    gen_trace, parse_trace, replay, tune, write_trace, EngineConfig, Family, GenParams,
    ReplayReport, Technique,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Flags = HashMap<String, String>;

fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut flags = Flags::new();
    let mut i = 0;
    while i < args.len() {
        let key = args[i]
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {:?}", args[i]))?;
        if key == "json" {
            flags.insert(key.into(), "true".into());
            i += 1;
            continue;
        }
        let value = args
            .get(i + 1)
            .ok_or_else(|| format!("--{key} needs a value"))?;
        flags.insert(key.into(), value.clone());
        i += 2;
    }
    Ok(flags)
}

fn number<T: std::str::FromStr>(flags: &Flags, key: &str, default: T) -> Result<T, String> {
    match flags.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("--{key}: {v:?} is not a number")),
    }
}

fn config(flags: &Flags) -> Result<EngineConfig, String> {
    let defaults = EngineConfig::default();
    Ok(EngineConfig {
        technique: match flags.get("technique") {
            Some(t) => t
                .parse()
                .map_err(|e: hb_predict::PredictError| e.to_string())?,
            None => defaults.technique,
        },
        cache_mb: number(flags, "cache-mb", defaults.cache_mb)?,
        confidence_threshold: number(flags, "confidence-threshold", defaults.confidence_threshold)?,
        update_interval_secs: number(flags, "update-interval-secs", defaults.update_interval_secs)?,
        prewarm_share: number(flags, "prewarm-share", defaults.prewarm_share)?,
        frequency_half_life_secs: 3600.0
            * number(
                flags,
                "half-life-h",
                defaults.frequency_half_life_secs / 3600.0,
            )?,
        ..defaults
    })
}

fn load(flags: &Flags) -> Result<Vec<hb_predict::StartEvent>, String> {
    let path = flags.get("trace").ok_or("--trace FILE is required")?;
    let file = File::open(path).map_err(|e| format!("opening {path}: {e}"))?;
    parse_trace(BufReader::new(file)).map_err(|e| format!("{path}: {e}"))
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
}

fn row(r: &ReplayReport) -> String {
    format!(
        "| {} | {:.0} | {} | {} | {:.1}% | {} | {} | {} | {:.0} | {} |",
        r.technique,
        r.cache_mb,
        r.starts,
        r.cold_starts,
        100.0 * r.hit_ratio,
        r.prewarmed,
        pct(r.prediction_accuracy),
        pct(r.recall),
        r.wasted_prewarm_mb,
        r.not_kept
    )
}

const HEADER: &str = "| technique | cache MB | starts | cold starts | hit ratio | prewarmed | accuracy | recall | wasted MB | not kept |\n|---|---|---|---|---|---|---|---|---|---|";

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.first().map(String::as_str) {
        Some(c @ ("replay" | "gen-trace" | "bench" | "tune")) => (c, &args[1..]),
        _ => ("replay", &args[..]),
    };
    let flags = parse_flags(rest)?;
    match command {
        "gen-trace" => {
            let family: Family = flags
                .get("family")
                .ok_or("--family is required")?
                .parse()
                .map_err(|e: hb_predict::PredictError| e.to_string())?;
            let params = GenParams {
                days: number(&flags, "days", GenParams::default().days)?,
                ..GenParams::default()
            };
            let trace = gen_trace(family, number(&flags, "seed", 1)?, &params);
            write_trace(std::io::stdout().lock(), &trace).map_err(|e| e.to_string())
        }
        "bench" => {
            let params = GenParams {
                days: number(&flags, "days", GenParams::default().days)?,
                ..GenParams::default()
            };
            let seed = number(&flags, "seed", 1)?;
            let base = config(&flags)?;
            for family in Family::ALL {
                let trace = gen_trace(family, seed, &params);
                println!(
                    "\n### {} ({} starts, {} days, seed {seed})\n",
                    family.as_str(),
                    trace.len(),
                    params.days
                );
                println!("{HEADER}");
                for cache_mb in [512.0, 1024.0, 2048.0, 4096.0] {
                    for technique in [
                        Technique::None,
                        Technique::KeepAlive(600.0),
                        Technique::Frequency,
                        Technique::Predictive,
                        Technique::Statistical,
                    ] {
                        let config = EngineConfig {
                            technique,
                            cache_mb,
                            ..base.clone()
                        };
                        let r = replay(&trace, &config).map_err(|e| e.to_string())?;
                        println!("{}", row(&r));
                    }
                }
            }
            Ok(())
        }
        "tune" => {
            let trace = load(&flags)?;
            let cores = number(&flags, "cores", 2)?;
            let result = tune(&trace, &config(&flags)?, cores).map_err(|e| e.to_string())?;
            if flags.contains_key("json") {
                let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
                println!("{text}");
                return Ok(());
            }
            println!(
                "| parameter | value | cold starts | hit ratio | accuracy |\n|---|---|---|---|---|"
            );
            for r in &result.rows {
                println!(
                    "| {} | {} | {} | {:.1}% | {} |",
                    r.parameter,
                    r.value,
                    r.report.cold_starts,
                    100.0 * r.report.hit_ratio,
                    pct(r.report.prediction_accuracy)
                );
            }
            let p = &result.proposed;
            println!(
                "\nproposed:\n[prediction]\nconfidence_threshold = {}\nupdate_interval_secs = {}\n[prewarming]\ntechnique = \"{}\"\nparallel_ops = {}\nbatch_delay_ms = {}\n[cache]\nsize_mb = {}",
                p.confidence_threshold,
                p.update_interval_secs,
                p.technique.label(),
                result.cpu.parallel_ops,
                result.cpu.batch_delay_ms,
                p.cache_mb
            );
            Ok(())
        }
        _ => {
            let trace = load(&flags)?;
            let report = replay(&trace, &config(&flags)?).map_err(|e| e.to_string())?;
            if flags.contains_key("json") {
                let text = serde_json::to_string(&report).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                println!("{HEADER}\n{}", row(&report));
            }
            Ok(())
        }
    }
}
