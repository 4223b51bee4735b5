//! `hb`, the HyperBox CLI: parses docker-like verbs, sends them to hyperboxd's API and prints
//! the answers (tables for people, `--format json` for programs, progress bars on a terminal).
//! It knows nothing but the API.

mod client;
mod containers;
mod engine_stats;
mod outfile;
mod output;
mod predict;
mod tls;
mod tune;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use client::{empty, json_body, read_ok, send, Daemon};

/// HyperBox: containers in milliseconds.
#[derive(Parser, Debug)]
#[command(
    name = "hb",
    version,
    about = "HyperBox CLI",
    disable_help_subcommand = true
)]
struct Cli {
    /// Daemon address: unix:///path, tcp://host:port, or https://host:port (TLS, as --tls).
    #[arg(short = 'H', long = "host", env = "HYPERBOX_HOST", default_value = client::DEFAULT_HOST, global = true)]
    host: String,
    #[command(flatten)]
    security: SecurityFlags,
    #[command(subcommand)]
    command: Command,
}

/// How to reach a TCP daemon guarded by TLS, client certificates or a token (docker's flags).
/// Files not named by a flag are taken from the cert dir, `$HYPERBOX_CERT_PATH` or
/// `~/.hyperbox` (ca.pem, cert.pem, key.pem), when TLS is asked for and they exist there.
#[derive(Args, Debug)]
#[command(next_help_heading = "TCP security")]
struct SecurityFlags {
    /// Use TLS; verify the daemon against --tlscacert, else the system's root certificates.
    #[arg(long, global = true)]
    tls: bool,
    /// Use TLS and verify the daemon against a CA file (--tlscacert or the cert dir's ca.pem;
    /// the cert dir is $HYPERBOX_CERT_PATH, else ~/.hyperbox); HYPERBOX_TLS_VERIFY=1 does the
    /// same for tcp:// addresses.
    #[arg(long, global = true)]
    tlsverify: bool,
    /// Trust daemon certificates signed by this CA (PEM) [default: cert dir's ca.pem].
    #[arg(long, value_name = "FILE", global = true)]
    tlscacert: Option<PathBuf>,
    /// Client certificate (PEM) [default: cert dir's cert.pem].
    #[arg(long, value_name = "FILE", global = true)]
    tlscert: Option<PathBuf>,
    /// The client certificate's private key (PEM) [default: cert dir's key.pem].
    #[arg(long, value_name = "FILE", global = true)]
    tlskey: Option<PathBuf>,
    /// Send the token in FILE as `Authorization: Bearer` (the daemon's api_token_file);
    /// HYPERBOX_TOKEN holds the token itself.
    #[arg(long, value_name = "FILE", env = "HYPERBOX_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
}

impl SecurityFlags {
    /// The flags with what the environment adds (HYPERBOX_TLS_VERIFY, HYPERBOX_CERT_PATH,
    /// HYPERBOX_TOKEN).
    fn options(&self) -> tls::SecurityOptions {
        tls::SecurityOptions {
            tls: self.tls,
            tls_verify: self.tlsverify,
            tls_verify_env: tls::env_flag("HYPERBOX_TLS_VERIFY"),
            ca_cert: self.tlscacert.clone(),
            client_cert: self.tlscert.clone(),
            client_key: self.tlskey.clone(),
            cert_dir: tls::default_cert_dir(),
            token_file: self.token_file.clone(),
            token: std::env::var("HYPERBOX_TOKEN").ok(),
        }
    }
}

/// `defer`: only the subcommand that runs has its arguments built (clap building all of them
/// was most of the CLI's start-up CPU, paid on every `hb run`). The deferred part runs last,
/// so an `Args` struct's doc comment would replace the help text written here: those structs
/// carry plain comments (a test checks every subcommand).
#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Command {
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// List images.
    Images(ImagesArgs),
    /// Remove images.
    Rmi(RmiArgs),
    /// Give an image another name.
    Tag {
        /// Existing image (name or id).
        source: String,
        /// New name.
        target: String,
    },
    /// Load images from a tarball (OCI layout or docker-archive).
    Load(LoadArgs),
    /// Save images to a tarball (OCI layout + docker-archive).
    Save(SaveArgs),
    /// Image commands.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Store-wide commands.
    #[command(subcommand)]
    System(SystemCommand),
    /// Save credentials for a registry.
    Login(LoginArgs),
    /// Forget credentials for a registry.
    Logout {
        /// Registry host (default docker.io).
        server: Option<String>,
    },
    /// Show client and daemon versions.
    Version,
    /// Create and run a container.
    Run(Box<containers::RunArgs>),
    /// Create a container without starting it.
    Create(Box<containers::RunArgs>),
    /// List containers.
    Ps(containers::PsArgs),
    /// Print a container's output.
    Logs(containers::LogsArgs),
    /// Start containers.
    Start {
        /// Attach to its output.
        #[arg(short = 'a', long)]
        attach: bool,
        /// Attach stdin too.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers (stop signal, then SIGKILL after the timeout).
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time")]
        time: Option<i64>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        /// Signal (name or number; default KILL).
        #[arg(short = 's', long)]
        signal: Option<String>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running ones first.
        #[arg(short = 'f', long)]
        force: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait for containers to stop; print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Low-level information on containers or images.
    Inspect {
        /// Containers or images.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// A container's processes.
    Top {
        /// Container.
        container: String,
    },
    /// Containers' resource use.
    Stats {
        /// Print one reading and exit (the only mode offered).
        #[arg(long = "no-stream")]
        no_stream: bool,
        /// `json` for the daemon's documents.
        #[arg(long)]
        format: Option<String>,
        /// The engine's own figures instead (the metrics port's values, for a person).
        #[arg(long)]
        engine: bool,
        /// With --engine: over the last INTERVAL only (5m, 1h, 24h).
        #[arg(long, requires = "engine")]
        interval: Option<String>,
        /// Containers (default: all running).
        containers: Vec<String>,
    },
    /// Container commands.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// The next predicted images (confidence, reason, warm); `replay` and `gen-trace` work on
    /// traces offline.
    Predict(predict::PredictArgs),
    /// Pull if missing and unpack into the hot tier now (or `--evict` from it).
    Prewarm(predict::PrewarmArgs),
    /// Replay the daemon's start history (or `--trace FILE`) across techniques, thresholds,
    /// update intervals and cache sizes, and propose the config that wins.
    Tune(tune::TuneArgs),
}

#[derive(Subcommand, Debug)]
enum ContainerCommand {
    /// Remove all stopped containers.
    Prune {
        /// Do not ask (nothing is asked anyway).
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// List containers.
    Ls(containers::PsArgs),
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Show details of images as JSON.
    Inspect {
        /// Names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Pull an image.
    Pull(PullArgs),
    /// Remove images.
    Rm(RmiArgs),
    /// Remove data no image needs.
    Prune,
}

#[derive(Subcommand, Debug)]
enum SystemCommand {
    /// Disk usage: logical and stored bytes, dedup and compression ratios, per image.
    Df {
        /// `json` for machine-readable output.
        #[arg(long)]
        format: Option<String>,
    },
    /// Reclaim chunks and blobs no image references.
    Prune {
        /// Do not ask (kept for docker compatibility; hb never asks).
        #[arg(short, long)]
        force: bool,
    },
    /// Compress now what pulls stored raw (the daemon does it in the background on its own;
    /// this waits until it is done, e.g. before measuring disk use).
    Compress,
    /// Verify every chunk and blob of the store.
    Check {
        /// Remove what is broken so the store is consistent again.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct PullArgs {
    /// Image reference (alpine, 127.0.0.1:5000/hb/deb, host/o/r@sha256:…).
    pub(crate) reference: String,
    /// os/arch[/variant] to pull from a multi-platform image.
    #[arg(long)]
    pub(crate) platform: Option<String>,
    /// Print only the image id.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Progress to stderr (set when `run` pulls).
    #[arg(skip)]
    pub(crate) progress_to_stderr: bool,
}

#[derive(Args, Debug)]
struct ImagesArgs {
    /// `json` for machine-readable output.
    #[arg(long)]
    format: Option<String>,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// Full ids.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Args, Debug)]
struct RmiArgs {
    /// Names or ids.
    #[arg(required = true)]
    names: Vec<String>,
    /// Remove the image even when it has several names.
    #[arg(short, long)]
    force: bool,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Tarball to read (default: standard input).
    #[arg(short, long)]
    input: Option<std::path::PathBuf>,
    /// Print only what was loaded.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct SaveArgs {
    /// Images to save.
    #[arg(required = true)]
    names: Vec<String>,
    /// File to write (default: standard output, which must not be a terminal).
    #[arg(short, long)]
    output: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct LoginArgs {
    /// Registry host (default docker.io).
    server: Option<String>,
    /// User name.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hb: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Not a plain drop: that waits for blocking tasks, and a read of our stdin (`run -i`,
    // `exec -i`) never ends by itself once the container is gone. Output was written when
    // the futures writing it completed.
    rt.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Percent-encodes a query value or path segment.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(crate) async fn get_json(daemon: &Daemon, path: &str) -> anyhow::Result<Value> {
    let body = read_ok(send(daemon, Method::GET, path, empty(), None).await?).await?;
    serde_json::from_slice(&body).context("the daemon's answer is not JSON")
}

pub(crate) async fn post_json(
    daemon: &Daemon,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let (b, ct) = match &body {
        Some(v) => (json_body(v), Some("application/json")),
        None => (empty(), None),
    };
    let body = read_ok(send(daemon, Method::POST, path, b, ct).await?).await?;
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).context("the daemon's answer is not JSON")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let daemon = Daemon::new(&cli.host, &cli.security.options())?;
    match cli.command {
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => pull(&daemon, a).await,
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => {
            let v = get_json(&daemon, "/images/json").await?;
            output::images(&v, a.format.as_deref(), a.quiet, a.no_trunc)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => {
            let mut failed = false;
            for n in &a.names {
                let path = format!("/images/{}?force={}", n, a.force);
                match send(&daemon, Method::DELETE, &path, empty(), None).await {
                    Ok(resp) => match read_ok(resp).await {
                        Ok(b) => {
                            let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                            for item in v.as_array().into_iter().flatten() {
                                if let Some(u) = item.get("Untagged").and_then(Value::as_str) {
                                    println!("Untagged: {u}");
                                }
                                if let Some(d) = item.get("Deleted").and_then(Value::as_str) {
                                    println!("Deleted: {d}");
                                }
                            }
                        }
                        Err(e) => {
                            eprintln!("Error response from daemon: {e}");
                            failed = true;
                        }
                    },
                    Err(e) => return Err(e),
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Tag { source, target } => {
            let (repo, tag) = split_tag(&target);
            let mut path = format!("/images/{source}/tag?repo={}", enc(repo));
            if let Some(t) = tag {
                path.push_str(&format!("&tag={}", enc(t)));
            }
            post_json(&daemon, &path, None).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Image(ImageCommand::Inspect { names }) => {
            let mut out = Vec::new();
            for n in &names {
                out.push(get_json(&daemon, &format!("/images/{n}/json")).await?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Image(ImageCommand::Prune) => {
            let v = post_json(&daemon, "/images/prune", None).await?;
            println!(
                "Total reclaimed space: {}",
                output::human(v["SpaceReclaimed"].as_u64().unwrap_or(0))
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Load(a) => load(&daemon, a).await,
        Command::Save(a) => save(&daemon, a).await,
        Command::System(SystemCommand::Df { format }) => {
            let v = get_json(&daemon, "/hyperbox/system/df").await?;
            output::system_df(&v, format.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::System(SystemCommand::Prune { .. }) => {
            let v = post_json(&daemon, "/hyperbox/system/prune", None).await?;
            println!(
                "Deleted blobs: {}\nDeleted chunks: {}\nTotal reclaimed space: {}",
                v["blobs_deleted"],
                v["gc"]["chunks_removed"],
                output::human(v["space_reclaimed"].as_u64().unwrap_or(0))
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::System(SystemCommand::Compress) => {
            let v = post_json(&daemon, "/hyperbox/system/compress", None).await?;
            println!(
                "Compressed chunks: {}\nContent bytes: {} stored as {}\nPacks rewritten: {}",
                v["chunks_compressed"],
                output::human(v["raw_bytes"].as_u64().unwrap_or(0)),
                output::human(v["stored_bytes"].as_u64().unwrap_or(0)),
                v["packs_retired"],
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::System(SystemCommand::Check { repair }) => {
            let v = post_json(
                &daemon,
                &format!("/hyperbox/system/check?repair={repair}"),
                None,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            let problems = v["store"]["problems"]
                .as_array()
                .map(|p| p.len())
                .unwrap_or(0);
            Ok(if problems == 0 || repair {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Login(a) => login(&daemon, a).await,
        Command::Logout { server } => {
            let server = server.unwrap_or_else(|| "docker.io".into());
            post_json(
                &daemon,
                &format!("/hyperbox/logout?server={}", enc(&server)),
                None,
            )
            .await?;
            println!("Removing login credentials for {server}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(a) => containers::run(&daemon, *a).await,
        Command::Create(a) => containers::create(&daemon, *a).await,
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => {
            containers::ps(&daemon, a).await
        }
        Command::Logs(a) => containers::logs(&daemon, a).await,
        Command::Start {
            attach,
            interactive,
            containers: c,
        } => containers::start(&daemon, attach, interactive, c).await,
        Command::Stop {
            time,
            containers: c,
        } => containers::stop(&daemon, time, c).await,
        Command::Kill {
            signal,
            containers: c,
        } => containers::kill(&daemon, signal, c).await,
        Command::Rm {
            force,
            containers: c,
        } => containers::rm(&daemon, force, c).await,
        Command::Wait { containers: c } => containers::wait(&daemon, c).await,
        Command::Inspect { names } => containers::inspect(&daemon, names).await,
        Command::Exec(a) => containers::exec(&daemon, a).await,
        Command::Top { container } => containers::top(&daemon, container).await,
        Command::Stats {
            engine: true,
            interval,
            ..
        } => engine_stats::show(&daemon, interval.as_deref()).await,
        Command::Stats {
            no_stream: _,
            format,
            containers: c,
            ..
        } => containers::stats(&daemon, c, format).await,
        Command::Container(ContainerCommand::Prune { .. }) => containers::prune(&daemon).await,
        Command::Predict(a) => predict::predict(&daemon, a).await,
        Command::Prewarm(a) => predict::prewarm(&daemon, a).await,
        Command::Tune(a) => tune::tune_command(&daemon, a).await,
        Command::Version => {
            println!("Client:\n Version:    {}", env!("CARGO_PKG_VERSION"));
            let v = get_json(&daemon, "/version").await?;
            println!(
                "\nServer: HyperBox\n Version:    {}\n API version: {} (minimum {})\n OS/Arch:    {}/{}\n Kernel:     {}",
                v["Version"].as_str().unwrap_or("?"),
                v["ApiVersion"].as_str().unwrap_or("?"),
                v["MinAPIVersion"].as_str().unwrap_or("?"),
                v["Os"].as_str().unwrap_or("?"),
                v["Arch"].as_str().unwrap_or("?"),
                v["KernelVersion"].as_str().unwrap_or("?"),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Splits `repo[:tag]` where the repo may hold a registry port.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (s, None),
    }
}

pub(crate) async fn pull(daemon: &Daemon, a: PullArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/images/create?fromImage={}", enc(&a.reference));
    if let Some(p) = &a.platform {
        path.push_str(&format!("&platform={}", enc(p)));
    }
    let resp = send(daemon, Method::POST, &path, empty(), None).await?;
    let tty = std::io::stderr().is_terminal() && !a.quiet;
    let mut view = output::PullView::new(tty, a.quiet);
    if a.progress_to_stderr {
        view = view.on_stderr();
    }
    let mut error = None;
    let mut id = None;
    client::for_each_json_line(resp, |v| {
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            error = Some(e.to_string());
        }
        if let Some(i) = v.get("hyperbox_image_id").and_then(Value::as_str) {
            id = Some(i.to_string());
        }
        view.event(&v);
        Ok(())
    })
    .await?;
    view.finish();
    if let Some(e) = error {
        eprintln!("Error response from daemon: {e}");
        return Ok(ExitCode::FAILURE);
    }
    if a.quiet {
        if let Some(i) = id {
            println!("{i}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn load(daemon: &Daemon, a: LoadArgs) -> anyhow::Result<ExitCode> {
    let body = match &a.input {
        Some(p) => {
            let f = tokio::fs::File::open(p)
                .await
                .with_context(|| format!("opening {}", p.display()))?;
            client::reader_body(f)
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is a terminal; use -i FILE or pipe a tarball in");
            }
            client::reader_body(tokio::io::stdin())
        }
    };
    let resp = send(
        daemon,
        Method::POST,
        "/images/load",
        body,
        Some("application/x-tar"),
    )
    .await?;
    client::for_each_json_line(resp, |v| {
        if let Some(s) = v.get("stream").and_then(Value::as_str) {
            print!("{s}");
        }
        Ok(())
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn save(daemon: &Daemon, a: SaveArgs) -> anyhow::Result<ExitCode> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!("cowardly refusing to write a tarball to a terminal; use -o FILE or redirect");
    }
    let q: Vec<String> = a
        .names
        .iter()
        .map(|n| format!("names={}", enc(n)))
        .collect();
    let resp = send(
        daemon,
        Method::GET,
        &format!("/images/get?{}", q.join("&")),
        empty(),
        None,
    )
    .await?;
    if !resp.status().is_success() {
        read_ok(resp).await?;
        bail!("save failed");
    }
    let (mut out, target): (
        Box<dyn tokio::io::AsyncWrite + Unpin>,
        Option<outfile::OutputFile>,
    ) = match &a.output {
        Some(p) => {
            let (f, target) = outfile::OutputFile::create(p)?;
            (Box::new(tokio::fs::File::from_std(f)), Some(target))
        }
        None => (Box::new(tokio::io::stdout()), None),
    };
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                drop(out);
                if let Some(t) = target {
                    t.abandon();
                }
                bail!("the daemon's archive stream broke off: {e}");
            }
        };
        if let Some(d) = frame.data_ref() {
            out.write_all(d).await.context("writing the archive")?;
        }
    }
    out.flush().await.context("writing the archive")?;
    drop(out);
    if let Some(t) = target {
        t.commit()?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn login(daemon: &Daemon, a: LoginArgs) -> anyhow::Result<ExitCode> {
    let server = a.server.unwrap_or_else(|| "docker.io".into());
    let username = match a.username {
        Some(u) => u,
        None => bail!("a user name is required (-u USER)"),
    };
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        match a.password {
            Some(p) => p,
            None => bail!("a password is required (-p PASSWORD or --password-stdin)"),
        }
    };
    let v = post_json(
        daemon,
        "/auth",
        Some(json!({"username": username, "password": password, "serveraddress": server})),
    )
    .await?;
    println!("{}", v["Status"].as_str().unwrap_or("Login Succeeded"));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn deferred_arguments_keep_each_subcommands_help_text() {
        let mut top = super::Cli::command();
        let declared: Vec<(String, String)> = top
            .get_subcommands()
            .map(|s| {
                let about = s.get_about().map(ToString::to_string).unwrap_or_default();
                (s.get_name().to_string(), about)
            })
            .collect();
        top.build();
        for (name, about) in declared {
            let built = top.find_subcommand(&name).expect("subcommand");
            let after = built
                .get_about()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert_eq!(after, about, "`hb {name} --help` lost its text");
            assert!(!about.is_empty(), "`hb {name}` has no help text");
        }
        // The deferred arguments are there once built.
        let run = top.find_subcommand("run").expect("run");
        assert!(run.get_arguments().any(|a| a.get_long() == Some("rm")));
    }
}
