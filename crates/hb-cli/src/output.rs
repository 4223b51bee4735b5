//! What `hb` prints: image tables, `system df`, and pull progress (one bar per layer on a
//! terminal, plain lines otherwise). JSON output is the daemon's own fields, documented in the
//! README.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// Bytes as Docker prints them (decimal units: 1.2MB, 345kB).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.3}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1}kB", b / 1e3)
    } else {
        format!("{bytes}B")
    }
}

/// "5 minutes ago" for a unix time.
pub fn ago(unix: i64) -> String {
    if unix <= 0 {
        return "N/A".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - unix).max(0);
    match s {
        0..=59 => "Less than a minute ago".into(),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

fn short(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.trim_start_matches("sha256:").chars().take(12).collect()
    }
}

/// `64MiB`-style sizes (Docker's stats use binary units).
pub fn human_iec(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2}GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.2}MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.2}KiB", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

/// Prints rows as columns padded to their widest cell, three spaces apart (Docker's look).
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c].saturating_sub(cell.chars().count()) + 3;
                line.push_str(&" ".repeat(pad));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `hb images`: a table, ids only, or JSON (one object per image).
pub fn images(v: &Value, format: Option<&str>, quiet: bool, no_trunc: bool) -> anyhow::Result<()> {
    let list = v.as_array().cloned().unwrap_or_default();
    if format == Some("json") {
        let out: Vec<Value> = list
            .iter()
            .map(|i| {
                json!({
                    "id": i["Id"], "repo_tags": i["RepoTags"], "repo_digests": i["RepoDigests"],
                    "created": i["Created"], "size": i["Size"], "shared_size": i["SharedSize"],
                    "stored_size": i["StoredSize"], "unique_stored_size": i["UniqueStoredSize"],
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    } else if let Some(f) = format {
        anyhow::bail!("unknown --format {f:?}: only \"json\" is offered");
    }
    if quiet {
        for i in &list {
            println!("{}", short(i["Id"].as_str().unwrap_or(""), no_trunc));
        }
        return Ok(());
    }
    println!(
        "{:<40} {:<12} {:<14} {:<22} {:>10} {:>12}",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE"
    );
    for i in &list {
        let id = short(i["Id"].as_str().unwrap_or(""), no_trunc);
        let size = human(i["Size"].as_u64().unwrap_or(0));
        let shared = human(i["SharedSize"].as_u64().unwrap_or(0));
        let created = ago(i["Created"].as_i64().unwrap_or(0));
        let tags: Vec<String> = i["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        if tags.is_empty() {
            println!(
                "{:<40} {:<12} {:<14} {:<22} {:>10} {:>12}",
                "<none>", "<none>", id, created, size, shared
            );
        }
        for t in tags {
            let (repo, tag) = match t.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                _ => (t.clone(), "<none>".to_string()),
            };
            println!("{repo:<40} {tag:<12} {id:<14} {created:<22} {size:>10} {shared:>12}");
        }
    }
    Ok(())
}

/// `hb system df`: totals, ratios and one row per image; or the daemon's JSON.
pub fn system_df(v: &Value, format: Option<&str>) -> anyhow::Result<()> {
    if format == Some("json") {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    } else if let Some(f) = format {
        anyhow::bail!("unknown --format {f:?}: only \"json\" is offered");
    }
    let s = &v["store"];
    let n = |x: &Value| x.as_u64().unwrap_or(0);
    println!(
        "Logical bytes (all images' layers):  {}",
        human(n(&s["logical_bytes"]))
    );
    println!(
        "Unique bytes after dedup:            {}",
        human(n(&s["unique_raw_bytes"]))
    );
    println!(
        "Stored bytes (compressed chunks):    {}",
        human(n(&s["stored_bytes"]))
    );
    println!(
        "Pack files on disk:                  {}",
        human(n(&s["pack_bytes"]))
    );
    if n(&s["deferred_bytes"]) > 0 {
        println!(
            "Waiting for background compression:  {}",
            human(n(&s["deferred_bytes"]))
        );
    }
    println!(
        "Dedup ratio: {:.2}x   Compression ratio: {:.2}x   Chunks: {}",
        s["dedup_ratio"].as_f64().unwrap_or(0.0),
        s["compression_ratio"].as_f64().unwrap_or(0.0),
        n(&s["chunks"]),
    );
    let hot = &v["hot"];
    let cold = &v["cold"];
    println!(
        "Hot tier (unpacked layers):          {} of the {} cache budget ([cache] size_mb), {} layers, {} on disk",
        human(n(&hot["used_bytes"])),
        human(n(&hot["budget_bytes"])),
        n(&hot["layers"]),
        human(n(&hot["disk_bytes"])),
    );
    println!(
        "Cold tier (only in the chunk store): {} in {} layers",
        human(n(&cold["logical_bytes"])),
        n(&cold["layers"]),
    );
    println!();
    println!(
        "{:<48} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
        "IMAGE", "LOGICAL", "STORED", "SHARED", "UNIQUE", "TIER", "HOT"
    );
    for i in v["images"].as_array().into_iter().flatten() {
        let name = i["names"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| short(i["id"].as_str().unwrap_or(""), false));
        println!(
            "{:<48} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
            name,
            human(n(&i["logical_bytes"])),
            human(n(&i["stored_bytes"])),
            human(n(&i["shared_bytes"])),
            human(n(&i["unique_bytes"])),
            i["tier"].as_str().unwrap_or("?"),
            human(n(&i["hot_bytes"])),
        );
    }
    Ok(())
}

/// Renders a pull's progress lines.
pub struct PullView {
    tty: bool,
    quiet: bool,
    /// Plain lines go to stderr (a pull made by `run`, whose stdout is the container's).
    to_stderr: bool,
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
}

impl PullView {
    /// Bars on a terminal, lines otherwise, nothing when quiet.
    pub fn new(tty: bool, quiet: bool) -> PullView {
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        PullView {
            tty,
            quiet,
            to_stderr: false,
            multi,
            bars: HashMap::new(),
        }
    }

    /// Sends plain progress lines to stderr.
    pub fn on_stderr(mut self) -> PullView {
        self.to_stderr = true;
        self
    }

    fn bar(&mut self, id: &str) -> ProgressBar {
        if let Some(b) = self.bars.get(id) {
            return b.clone();
        }
        let b = self.multi.add(ProgressBar::new(0));
        b.set_style(
            ProgressStyle::with_template("{prefix}: {msg:<16} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_prefix(id.to_string());
        b.enable_steady_tick(Duration::from_millis(120));
        self.bars.insert(id.to_string(), b.clone());
        b
    }

    /// One progress object from the daemon.
    pub fn event(&mut self, v: &Value) {
        if self.quiet {
            return;
        }
        let status = v.get("status").and_then(Value::as_str).unwrap_or("");
        let id = v.get("id").and_then(Value::as_str).unwrap_or("");
        let is_layer = !id.is_empty() && !id.starts_with("sha256:") && id.len() == 12;
        if !self.tty {
            // Plain lines: skip per-chunk download updates.
            if status == "Downloading" || v.get("error").is_some() {
                return;
            }
            let line = if is_layer {
                format!("{id}: {status}")
            } else if !status.is_empty() {
                status.to_string()
            } else {
                return;
            };
            if self.to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            return;
        }
        if !is_layer {
            if !status.is_empty() {
                let _ = self.multi.println(status);
            }
            return;
        }
        let bar = self.bar(id);
        match status {
            "Downloading" => {
                let d = &v["progressDetail"];
                bar.set_length(d["total"].as_u64().unwrap_or(0));
                bar.set_position(d["current"].as_u64().unwrap_or(0));
                bar.set_message("Downloading");
            }
            "Pull complete" | "Already exists" => {
                if let Some(len) = bar.length() {
                    bar.set_position(len);
                }
                bar.finish_with_message(status.to_string());
            }
            other => bar.set_message(other.to_string()),
        }
    }

    /// Stops the bars.
    pub fn finish(&mut self) {
        for b in self.bars.values() {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}
