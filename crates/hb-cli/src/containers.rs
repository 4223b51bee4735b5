//! `hb run` and the container verbs (`ps`, `logs`, `start`, `stop`, `kill`, `rm`, `wait`,
//! `inspect`, `exec`, `top`, `stats`, `container prune`), spoken over the daemon's Docker-style
//! API. Attach and exec streams use the hijacked connection; their output is Docker's
//! multiplexed framing unless a TTY was asked for.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{self, empty, read_ok, send, ApiFailure, Daemon};
use crate::{enc, get_json, post_json};

// `hb run` / `hb create` options (Docker's names and short flags). (Not a doc comment: see `Command` in main.rs.)
#[derive(Args, Debug, Clone)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable KEY=VALUE (or KEY to take it from here).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// File of KEY=VALUE lines.
    #[arg(long = "env-file")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// USER[:GROUP] (names or numbers).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Bind mount HOST:CONTAINER[:ro].
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// tmpfs mount PATH[:OPTIONS].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// none, host or bridge (default).
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Publish a port: [IP:][HOST:]CONTAINER[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Memory limit (bytes, or with k, m, g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPUs (fractional).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Most processes (-1 for no limit).
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Hostname.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Add a capability.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// All capabilities, no seccomp, all devices.
    #[arg(long)]
    pub privileged: bool,
    /// A host device for the container: HOST[:CONTAINER][:PERMS] (PERMS of r, w, m).
    #[arg(long = "device")]
    pub device: Vec<String>,
    /// Label KEY=VALUE.
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Image.
    pub image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `64m` → bytes.
pub fn parse_size(s: &str) -> anyhow::Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid size {s:?}: use bytes or a number with k, m or g"))?;
    if n < 0.0 {
        bail!("invalid size {s:?}: negative");
    }
    Ok((n * mult as f64) as i64)
}

fn read_env_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(expand_env)
        .collect())
}

/// `KEY` alone takes the value from hb's environment (Docker's rule).
fn expand_env(kv: &str) -> String {
    if kv.contains('=') {
        kv.to_string()
    } else {
        match std::env::var(kv) {
            Ok(v) => format!("{kv}={v}"),
            Err(_) => kv.to_string(),
        }
    }
}

/// Docker's create body from `hb run` options.
pub fn create_body(a: &RunArgs) -> anyhow::Result<Value> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(read_env_file(f)?);
    }
    env.extend(a.env.iter().map(|e| expand_env(e)));
    let mut tmpfs = Map::new();
    for t in &a.tmpfs {
        let (path, opts) = t.split_once(':').unwrap_or((t, ""));
        tmpfs.insert(path.to_string(), json!(opts));
    }
    let mut port_bindings = Map::new();
    let mut exposed = Map::new();
    for p in &a.publish {
        let (spec, proto) = p.rsplit_once('/').unwrap_or((p, "tcp"));
        let parts: Vec<&str> = spec.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [c] => ("", "", *c),
            [h, c] => ("", *h, *c),
            [i, h, c] => (*i, *h, *c),
            _ => bail!("invalid publish spec {p:?}: use [IP:][HOST:]CONTAINER[/tcp|udp]"),
        };
        if ctr.parse::<u16>().is_err() || (!host.is_empty() && host.parse::<u16>().is_err()) {
            bail!("invalid publish spec {p:?}: ports are numbers from 1 to 65535");
        }
        if proto != "tcp" && proto != "udp" {
            bail!("invalid publish spec {p:?}: protocol must be tcp or udp");
        }
        let key = format!("{ctr}/{proto}");
        exposed.insert(key.clone(), json!({}));
        let entry = port_bindings.entry(key).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({"HostIp": ip, "HostPort": host}));
        }
    }
    let mut labels = Map::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), json!(v));
    }
    let memory = a
        .memory
        .as_deref()
        .map(parse_size)
        .transpose()?
        .unwrap_or(0);
    let nano_cpus = a.cpus.map_or(0, |c| (c * 1e9) as i64);
    let mut config = json!({
        "Image": a.image,
        "Env": env,
        "Tty": a.tty,
        "OpenStdin": a.interactive,
        // As docker: only an attached stdin ends with its client.
        "StdinOnce": a.interactive && !a.detach,
        "AttachStdin": a.interactive && !a.detach,
        "AttachStdout": !a.detach,
        "AttachStderr": !a.detach,
        "Labels": labels,
        "ExposedPorts": exposed,
        "HostConfig": {
            "AutoRemove": a.rm,
            "Binds": a.volume,
            "Tmpfs": tmpfs,
            "ReadonlyRootfs": a.read_only,
            "NetworkMode": a.network.clone().unwrap_or_else(|| "default".into()),
            "PortBindings": port_bindings,
            "Memory": memory,
            "NanoCpus": nano_cpus,
            "PidsLimit": a.pids_limit,
            "CapAdd": a.cap_add,
            "CapDrop": a.cap_drop,
            "Privileged": a.privileged,
            "Devices": a.device.iter().map(|d| device_mapping(d)).collect::<anyhow::Result<Vec<_>>>()?,
        },
    });
    if !a.command.is_empty() {
        config["Cmd"] = json!(a.command);
    }
    if let Some(e) = &a.entrypoint {
        config["Entrypoint"] = if e.is_empty() { json!([]) } else { json!([e]) };
    }
    if let Some(w) = &a.workdir {
        config["WorkingDir"] = json!(w);
    }
    if let Some(u) = &a.user {
        config["User"] = json!(u);
    }
    if let Some(h) = &a.hostname {
        config["Hostname"] = json!(h);
    }
    if let Some(size) = console_size(a.tty) {
        config["HostConfig"]["ConsoleSize"] = size;
    }
    Ok(config)
}

/// Docker's `ConsoleSize` ([rows, columns]) for a `-t` process on our terminal: the process
/// has the right size from its first instruction, not only after the first resize.
fn console_size(tty: bool) -> Option<serde_json::Value> {
    let (rows, cols) = terminal_size().filter(|_| tty)?;
    Some(json!([rows, cols]))
}

fn failure_code(e: &anyhow::Error) -> Option<(i32, String)> {
    e.downcast_ref::<ApiFailure>()
        .map(|f| (f.exit_code, f.message.clone()))
}

/// `hb create`: prints the new container's id.
pub async fn create(daemon: &Daemon, a: RunArgs) -> anyhow::Result<ExitCode> {
    let id = create_container(daemon, &a).await?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

async fn create_container(daemon: &Daemon, a: &RunArgs) -> anyhow::Result<String> {
    let body = create_body(a)?;
    let mut path = "/containers/create".to_string();
    if let Some(n) = &a.name {
        path.push_str(&format!("?name={}", enc(n)));
    }
    let v = match post_json(daemon, &path, Some(body.clone())).await {
        Ok(v) => v,
        Err(e) => {
            let missing = e
                .downcast_ref::<ApiFailure>()
                .is_some_and(|f| f.status == hyper::StatusCode::NOT_FOUND);
            if !missing {
                return Err(e);
            }
            eprintln!("Unable to find image '{}' locally", a.image);
            let code = crate::pull(
                daemon,
                crate::PullArgs {
                    reference: a.image.clone(),
                    platform: None,
                    quiet: false,
                    progress_to_stderr: true,
                },
            )
            .await?;
            if code != ExitCode::SUCCESS {
                bail!("pulling {} failed", a.image);
            }
            post_json(daemon, &path, Some(body)).await?
        }
    };
    v["Id"]
        .as_str()
        .map(str::to_string)
        .context("the daemon's create answer has no Id")
}

/// The terminal in raw mode while a TTY session runs; restored on drop.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        // SAFETY: termios calls on fd 0 with structs we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes read in enter().
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 {
            Some((ws.ws_row, ws.ws_col))
        } else {
            None
        }
    }
}

/// Streams an attach/exec connection: output to stdout/stderr, stdin in when asked. Returns
/// when the output ends.
async fn stream_session(
    io: hyper::upgrade::Upgraded,
    tty: bool,
    stdin: bool,
) -> anyhow::Result<()> {
    let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
    if stdin {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = w.shutdown().await;
        });
    }
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    if tty {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = r.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            out.flush()?;
        }
        return Ok(());
    }
    let mut header = [0u8; 8];
    let mut data = Vec::new();
    loop {
        if r.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        data.resize(len, 0);
        r.read_exact(&mut data)
            .await
            .context("the output stream broke off")?;
        if header[0] == 2 {
            err.write_all(&data)?;
            err.flush()?;
        } else {
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Forwards SIGINT/SIGTERM to the container (Docker's --sig-proxy) while `run` is attached.
fn proxy_signals(daemon: Daemon, id: String) {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
    ] {
        let (daemon, id) = (daemon.clone(), id.clone());
        tokio::spawn(async move {
            let Ok(mut s) = signal(kind) else { return };
            while s.recv().await.is_some() {
                let path = format!("/containers/{id}/kill?signal={name}");
                let _ = post_json(&daemon, &path, None).await;
            }
        });
    }
}

/// Sends our terminal's size now and on every SIGWINCH.
fn resize_on_winch(daemon: Daemon, path_prefix: String) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let send_size = |daemon: Daemon, prefix: String| async move {
            match terminal_size() {
                Some((h, w)) => post_json(&daemon, &format!("{prefix}/resize?h={h}&w={w}"), None)
                    .await
                    .is_ok(),
                None => true,
            }
        };
        // Listening first: a change while the first size is being sent is not missed.
        let winch = signal(SignalKind::window_change());
        // An exec's start answers 101 before its process exists, so the first size can arrive
        // too early and be refused: retry for a while, backing off (as docker's CLI does).
        for attempt in 1..=20u64 {
            if send_size(daemon.clone(), path_prefix.clone()).await {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
        }
        let Ok(mut s) = winch else {
            return;
        };
        while s.recv().await.is_some() {
            send_size(daemon.clone(), path_prefix.clone()).await;
        }
    });
}

/// `hb run`.
pub async fn run(daemon: &Daemon, a: RunArgs) -> anyhow::Result<ExitCode> {
    let id = match create_container(daemon, &a).await {
        Ok(id) => id,
        // Docker's `run` ends with 125 when the engine refuses (bad options, no image).
        Err(e) => {
            eprintln!("hb: {e:#}");
            return Ok(ExitCode::from(125));
        }
    };
    if a.detach {
        if let Err(e) = post_json(daemon, &format!("/containers/{id}/start"), None).await {
            return start_failed(daemon, &id, a.rm, e).await;
        }
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut q = "stream=1&stdout=1&stderr=1".to_string();
    if a.interactive {
        q.push_str("&stdin=1");
    }
    let io = client::upgrade(daemon, &format!("/containers/{id}/attach?{q}"), None).await?;
    let _raw = if a.tty { RawTerminal::enter() } else { None };
    if let Err(e) = post_json(daemon, &format!("/containers/{id}/start"), None).await {
        drop(_raw);
        return start_failed(daemon, &id, a.rm, e).await;
    }
    if a.tty {
        resize_on_winch(daemon.clone(), format!("/containers/{id}"));
    } else {
        proxy_signals(daemon.clone(), id.clone());
    }
    // The wait goes out now, beside the stream, as Docker's CLI does: its answer is ready
    // when the stream ends instead of costing another request after it. With --rm it comes
    // only once the container is gone (Docker's CLI does the same).
    let wait_path = format!(
        "/containers/{id}/wait?condition={}",
        if a.rm { "removed" } else { "not-running" }
    );
    let waiter = {
        let daemon = daemon.clone();
        tokio::spawn(async move { post_json(&daemon, &wait_path, None).await })
    };
    stream_session(io, a.tty, a.interactive).await?;
    let v = waiter
        .await
        .map_err(|e| anyhow::anyhow!("waiting for the container: {e}"))??;
    drop(_raw);
    if let Some(m) = v["Error"]["Message"].as_str() {
        if !m.is_empty() {
            eprintln!("hb: {m}");
        }
    }
    let code = v["StatusCode"].as_i64().unwrap_or(125);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

async fn start_failed(
    daemon: &Daemon,
    id: &str,
    remove: bool,
    e: anyhow::Error,
) -> anyhow::Result<ExitCode> {
    if remove {
        let _ = send(
            daemon,
            Method::DELETE,
            &format!("/containers/{id}?force=1"),
            empty(),
            None,
        )
        .await;
    }
    match failure_code(&e) {
        Some((code, message)) => {
            eprintln!("hb: Error response from daemon: {message}");
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        None => Err(e),
    }
}

// `hb ps` options. (Not a doc comment: see `Command` in main.rs.)
#[derive(Args, Debug)]
pub struct PsArgs {
    /// All containers (default: running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Full ids and commands.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// `json` for one JSON object per container.
    #[arg(long)]
    pub format: Option<String>,
    /// Filter KEY=VALUE (status, name, id, label, ancestor).
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
}

/// `hb ps`.
pub async fn ps(daemon: &Daemon, a: PsArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/containers/json?all={}", u8::from(a.all));
    if !a.filter.is_empty() {
        let mut f: Map<String, Value> = Map::new();
        for kv in &a.filter {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("invalid filter {kv:?}: use KEY=VALUE"))?;
            let e = f.entry(k.to_string()).or_insert_with(|| json!([]));
            if let Some(list) = e.as_array_mut() {
                list.push(json!(v));
            }
        }
        path.push_str(&format!("&filters={}", enc(&Value::Object(f).to_string())));
    }
    let v = get_json(daemon, &path).await?;
    let list = v.as_array().cloned().unwrap_or_default();
    if a.format.as_deref() == Some("json") {
        for c in &list {
            println!("{c}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.quiet {
        for c in &list {
            let id = c["Id"].as_str().unwrap_or("");
            println!(
                "{}",
                if a.no_trunc {
                    id
                } else {
                    &id[..12.min(id.len())]
                }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "CREATED".into(),
        "STATUS".into(),
        "PORTS".into(),
        "NAMES".into(),
    ]];
    for c in &list {
        let id = c["Id"].as_str().unwrap_or("");
        let cmd = c["Command"].as_str().unwrap_or("");
        let cmd = if a.no_trunc || cmd.chars().count() <= 20 {
            format!("\"{cmd}\"")
        } else {
            format!("\"{}…\"", cmd.chars().take(19).collect::<String>())
        };
        let ports: Vec<String> = c["Ports"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        format!(
                            "{}:{}->{}/{}",
                            p["IP"].as_str().unwrap_or(""),
                            p["PublicPort"],
                            p["PrivatePort"],
                            p["Type"].as_str().unwrap_or("tcp")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.push(vec![
            if a.no_trunc {
                id.to_string()
            } else {
                id.chars().take(12).collect()
            },
            c["Image"].as_str().unwrap_or("").to_string(),
            cmd,
            crate::output::ago(c["Created"].as_i64().unwrap_or(0)),
            c["Status"].as_str().unwrap_or("").to_string(),
            ports.join(", "),
            c["Names"][0]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string(),
        ]);
    }
    crate::output::print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

// `hb logs` options. (Not a doc comment: see `Command` in main.rs.)
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep following new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    /// Prefix each line with its time.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Container.
    pub container: String,
}

/// `hb logs`.
pub async fn logs(daemon: &Daemon, a: LogsArgs) -> anyhow::Result<ExitCode> {
    let info = get_json(daemon, &format!("/containers/{}/json", enc(&a.container))).await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let mut path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}",
        enc(&a.container),
        u8::from(a.follow),
        u8::from(a.timestamps)
    );
    if let Some(t) = &a.tail {
        path.push_str(&format!("&tail={}", enc(t)));
    }
    let resp = send(daemon, Method::GET, &path, empty(), None).await?;
    if !resp.status().is_success() {
        read_ok(resp).await?;
        return Ok(ExitCode::FAILURE);
    }
    use http_body_util::BodyExt;
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the log stream broke off")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if tty {
            out.write_all(data)?;
            continue;
        }
        pending.extend_from_slice(data);
        while pending.len() >= 8 {
            let len = u32::from_be_bytes([pending[4], pending[5], pending[6], pending[7]]) as usize;
            if pending.len() < 8 + len {
                break;
            }
            let frame: Vec<u8> = pending.drain(..8 + len).collect();
            if frame[0] == 2 {
                err.write_all(&frame[8..])?;
            } else {
                out.write_all(&frame[8..])?;
            }
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `f` for each container, printing what `ok` returns; exits 1 if any failed.
async fn each<F, Fut>(names: &[String], mut f: F) -> anyhow::Result<ExitCode>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<String>>>,
{
    let mut failed = false;
    for n in names {
        match f(n.clone()).await {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
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

/// `hb start [-a] [-i] CONTAINER...`.
pub async fn start(
    daemon: &Daemon,
    attach: bool,
    interactive: bool,
    names: Vec<String>,
) -> anyhow::Result<ExitCode> {
    if attach || interactive {
        let [name] = names.as_slice() else {
            bail!("you cannot start and attach multiple containers at once");
        };
        let info = get_json(daemon, &format!("/containers/{}/json", enc(name))).await?;
        let id = info["Id"].as_str().unwrap_or(name).to_string();
        let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
        let stdin = interactive && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
        let q = if stdin { "&stdin=1" } else { "" };
        let io = client::upgrade(
            daemon,
            &format!("/containers/{id}/attach?stream=1&stdout=1&stderr=1{q}"),
            None,
        )
        .await?;
        let _raw = if tty { RawTerminal::enter() } else { None };
        if let Err(e) = post_json(daemon, &format!("/containers/{id}/start"), None).await {
            drop(_raw);
            return start_failed(daemon, &id, false, e).await;
        }
        stream_session(io, tty, stdin).await?;
        let v = post_json(daemon, &format!("/containers/{id}/wait"), None).await?;
        let code = v["StatusCode"].as_i64().unwrap_or(125);
        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
    }
    each(&names, |n| async move {
        post_json(daemon, &format!("/containers/{}/start", enc(&n)), None).await?;
        Ok(Some(n))
    })
    .await
}

/// `hb stop`.
pub async fn stop(
    daemon: &Daemon,
    time: Option<i64>,
    names: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let t = time.map(|t| format!("?t={t}")).unwrap_or_default();
    each(&names, |n| {
        let t = t.clone();
        async move {
            read_ok(
                send(
                    daemon,
                    Method::POST,
                    &format!("/containers/{}/stop{t}", enc(&n)),
                    empty(),
                    None,
                )
                .await?,
            )
            .await?;
            Ok(Some(n))
        }
    })
    .await
}

/// `hb kill`.
pub async fn kill(
    daemon: &Daemon,
    signal: Option<String>,
    names: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let s = signal
        .map(|s| format!("?signal={}", enc(&s)))
        .unwrap_or_default();
    each(&names, |n| {
        let s = s.clone();
        async move {
            post_json(daemon, &format!("/containers/{}/kill{s}", enc(&n)), None).await?;
            Ok(Some(n))
        }
    })
    .await
}

/// `hb rm`.
pub async fn rm(daemon: &Daemon, force: bool, names: Vec<String>) -> anyhow::Result<ExitCode> {
    each(&names, |n| async move {
        let path = format!("/containers/{}?force={}", enc(&n), u8::from(force));
        read_ok(send(daemon, Method::DELETE, &path, empty(), None).await?).await?;
        Ok(Some(n))
    })
    .await
}

/// `hb wait`.
pub async fn wait(daemon: &Daemon, names: Vec<String>) -> anyhow::Result<ExitCode> {
    each(&names, |n| async move {
        let v = post_json(daemon, &format!("/containers/{}/wait", enc(&n)), None).await?;
        Ok(Some(v["StatusCode"].to_string()))
    })
    .await
}

/// `hb inspect`: containers first, then images.
pub async fn inspect(daemon: &Daemon, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    let mut failed = false;
    for n in &names {
        match get_json(daemon, &format!("/containers/{}/json", enc(n))).await {
            Ok(v) => out.push(v),
            Err(_) => match get_json(daemon, &format!("/images/{}/json", enc(n))).await {
                Ok(v) => out.push(v),
                Err(_) => {
                    eprintln!("Error: No such object: {n}");
                    failed = true;
                }
            },
        }
    }
    println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// `hb exec` options. (Not a doc comment: see `Command` in main.rs.)
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run in the background.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Environment KEY=VALUE.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// USER[:GROUP].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Container.
    pub container: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// `hb exec`.
pub async fn exec(daemon: &Daemon, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let body = json!({
        "Cmd": a.command,
        "Env": a.env.iter().map(|e| expand_env(e)).collect::<Vec<_>>(),
        "WorkingDir": a.workdir.clone().unwrap_or_default(),
        "User": a.user.clone().unwrap_or_default(),
        "Tty": a.tty,
        "AttachStdin": a.interactive,
        "AttachStdout": true,
        "AttachStderr": true,
    });
    let v = post_json(
        daemon,
        &format!("/containers/{}/exec", enc(&a.container)),
        Some(body),
    )
    .await?;
    let exec_id = v["Id"]
        .as_str()
        .context("no exec id in the answer")?
        .to_string();
    let mut start = json!({"Detach": a.detach, "Tty": a.tty});
    if let Some(size) = console_size(a.tty) {
        start["ConsoleSize"] = size;
    }
    if a.detach {
        if let Err(e) = post_json(daemon, &format!("/exec/{exec_id}/start"), Some(start)).await {
            return exec_failed(e);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let io = match client::upgrade(daemon, &format!("/exec/{exec_id}/start"), Some(&start)).await {
        Ok(io) => io,
        Err(e) => return exec_failed(e),
    };
    let _raw = if a.tty { RawTerminal::enter() } else { None };
    if a.tty {
        resize_on_winch(daemon.clone(), format!("/exec/{exec_id}"));
    }
    stream_session(io, a.tty, a.interactive).await?;
    drop(_raw);
    // The exit code lands a moment after the stream ends.
    for _ in 0..200 {
        let v = get_json(daemon, &format!("/exec/{exec_id}/json")).await?;
        if let Some(code) = v["ExitCode"].as_i64().filter(|_| v["Running"] == false) {
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    bail!("exec {exec_id} did not report an exit code")
}

fn exec_failed(e: anyhow::Error) -> anyhow::Result<ExitCode> {
    match failure_code(&e) {
        Some((code, message)) => {
            eprintln!("hb: Error response from daemon: {message}");
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        None => Err(e),
    }
}

/// `hb top`.
pub async fn top(daemon: &Daemon, name: String) -> anyhow::Result<ExitCode> {
    let v = get_json(daemon, &format!("/containers/{}/top", enc(&name))).await?;
    let mut rows: Vec<Vec<String>> = vec![v["Titles"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()];
    for p in v["Processes"].as_array().cloned().unwrap_or_default() {
        rows.push(
            p.as_array()
                .map(|r| {
                    r.iter()
                        .map(|x| x.as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default(),
        );
    }
    crate::output::print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// `hb stats --no-stream [CONTAINER...]` (all running ones when none is named).
pub async fn stats(
    daemon: &Daemon,
    names: Vec<String>,
    format: Option<String>,
) -> anyhow::Result<ExitCode> {
    let names = if names.is_empty() {
        get_json(daemon, "/containers/json")
            .await?
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["Id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        names
    };
    let mut rows = vec![vec![
        "CONTAINER ID".to_string(),
        "NAME".into(),
        "CPU %".into(),
        "MEM USAGE / LIMIT".into(),
        "MEM %".into(),
        "PIDS".into(),
    ]];
    for n in &names {
        let v = get_json(daemon, &format!("/containers/{}/stats?stream=0", enc(n))).await?;
        if format.as_deref() == Some("json") {
            println!("{v}");
            continue;
        }
        let cpu = |k: &str| v[k]["cpu_usage"]["total_usage"].as_f64().unwrap_or(0.0);
        let sys = |k: &str| v[k]["system_cpu_usage"].as_f64().unwrap_or(0.0);
        let (dc, ds) = (
            cpu("cpu_stats") - cpu("precpu_stats"),
            sys("cpu_stats") - sys("precpu_stats"),
        );
        let ncpu = v["cpu_stats"]["online_cpus"].as_f64().unwrap_or(1.0);
        let pct = if ds > 0.0 && dc >= 0.0 {
            dc / ds * ncpu * 100.0
        } else {
            0.0
        };
        let usage = v["memory_stats"]["usage"].as_u64().unwrap_or(0);
        let limit = v["memory_stats"]["limit"].as_u64().unwrap_or(0);
        let mem_pct = if limit > 0 {
            usage as f64 / limit as f64 * 100.0
        } else {
            0.0
        };
        let id = v["id"].as_str().unwrap_or(n);
        rows.push(vec![
            id.chars().take(12).collect(),
            v["name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string(),
            format!("{pct:.2}%"),
            format!(
                "{} / {}",
                crate::output::human_iec(usage),
                crate::output::human_iec(limit)
            ),
            format!("{mem_pct:.2}%"),
            v["pids_stats"]["current"].to_string(),
        ]);
    }
    if format.as_deref() != Some("json") {
        crate::output::print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// `hb container prune`.
pub async fn prune(daemon: &Daemon) -> anyhow::Result<ExitCode> {
    let v = post_json(daemon, "/containers/prune", None).await?;
    println!("Deleted Containers:");
    for id in v["ContainersDeleted"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        println!("{}", id.as_str().unwrap_or(""));
    }
    println!(
        "\nTotal reclaimed space: {}",
        crate::output::human(v["SpaceReclaimed"].as_u64().unwrap_or(0))
    );
    Ok(ExitCode::SUCCESS)
}

/// `--device HOST[:CONTAINER][:PERMS]` as Docker's HostConfig.Devices entry (a second field of
/// only r, w, m is the permissions, as the docker CLI reads it).
fn device_mapping(spec: &str) -> anyhow::Result<serde_json::Value> {
    let is_perms = |p: &str| !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, ctr, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if is_perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] if is_perms(p) => (*h, *c, *p),
        _ => anyhow::bail!("invalid device specification: {spec:?} (HOST[:CONTAINER][:PERMS])"),
    };
    if !host.starts_with('/') || !ctr.starts_with('/') {
        anyhow::bail!("invalid device specification: {spec:?}: paths must be absolute");
    }
    Ok(serde_json::json!({"PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": perms}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn device_flags_read_like_docker() {
        let m = |s: &str| device_mapping(s).map_err(|e| e.to_string());
        assert_eq!(
            m("/dev/fuse").unwrap(),
            json!({"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"})
        );
        assert_eq!(m("/dev/fuse:r").unwrap()["CgroupPermissions"], "r");
        assert_eq!(m("/dev/fuse:/dev/f").unwrap()["PathInContainer"], "/dev/f");
        assert_eq!(m("/dev/fuse:/dev/f:rw").unwrap()["CgroupPermissions"], "rw");
        assert!(m("/dev/fuse:/dev/f:rx")
            .unwrap_err()
            .contains("invalid device"));
        assert!(m("fuse").unwrap_err().contains("absolute"));
    }

    #[test]
    fn run_flags_become_docker_json() {
        let t = T::try_parse_from([
            "hb",
            "--rm",
            "-e",
            "A=1",
            "-p",
            "127.0.0.1:8080:80",
            "-p",
            "53/udp",
            "-m",
            "64m",
            "--cpus",
            "0.5",
            "-v",
            "/tmp:/x:ro",
            "--network",
            "none",
            "img",
            "sh",
            "-c",
            "echo hi",
        ])
        .unwrap();
        let v = create_body(&t.run).unwrap();
        assert_eq!(v["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(v["HostConfig"]["Memory"], 64 << 20);
        assert_eq!(v["HostConfig"]["NanoCpus"], 500_000_000);
        assert_eq!(v["HostConfig"]["AutoRemove"], true);
        assert_eq!(
            v["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"],
            "8080"
        );
        assert_eq!(v["HostConfig"]["PortBindings"]["53/udp"][0]["HostPort"], "");
        assert_eq!(v["Env"], json!(["A=1"]));
        assert!(T::try_parse_from(["hb", "-p", "x:y", "img"])
            .is_ok_and(|t| create_body(&t.run).is_err()));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("lots").is_err());
    }
}
