//! `hyperboxd` as a library: opens the store and image catalog under `[daemon] data_dir`,
//! binds the unix socket and serves the API (`api`) until SIGINT/SIGTERM. The binary
//! (`main.rs`) only parses arguments and config.

pub mod api;
mod container_api;
pub mod containers;
pub mod deferred_compression;
pub mod events;
pub mod idle_trim;
pub mod log_tail;
pub mod metrics;
pub mod prewarm;
pub mod serve;
pub mod socket;
pub mod tls;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hb_config::{Config, HashAlgorithm};
use hb_image::credentials::CredentialFile;
use hb_image::{ImageCatalog, Puller, PullerConfig};
use hb_store::{Store, StoreOptions};

/// What every API handler shares.
pub struct Daemon {
    /// The effective configuration.
    pub config: Config,
    /// The image catalog (and through it the content store).
    pub catalog: ImageCatalog,
    /// Registry pulls (shared with the prewarm workers).
    pub puller: Arc<Puller>,
    /// Containers (records, lifecycle through the monitor).
    pub containers: Arc<containers::Containers>,
    /// Lifecycle events for `/events`.
    pub events: Arc<events::EventLog>,
    /// Prometheus metrics (`[monitoring]`).
    pub metrics: Arc<metrics::Metrics>,
    /// Prediction and prewarming (`[prediction]`, `[prewarming]`, `[cache] size_mb`).
    pub prewarmer: Arc<prewarm::Prewarmer>,
}

/// Store options from the `[cache]` and `[deduplication]` sections.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        hash: match config.deduplication.hash_algorithm {
            HashAlgorithm::Sha256 => hb_store::HashAlgorithm::Sha256,
            HashAlgorithm::Blake3 => hb_store::HashAlgorithm::Blake3,
            HashAlgorithm::Xxhash => hb_store::HashAlgorithm::Xxhash,
        },
        dedup: config.deduplication.enabled,
        compression: config.cache.compression,
        // zstd runs after the pull, on deferred_compression's thread: off the critical path.
        defer_compression: true,
        compression_level: config.cache.compression_level,
        use_mmap: config.cache.use_mmap,
        batch_writes: config.cache.batch_writes,
        batch_size: config.cache.batch_size as usize,
        batch_timeout: Duration::from_millis(config.cache.batch_timeout_ms),
        parallel_ops: config.deduplication.parallel_ops as usize,
    }
}

/// Where the monitor's socket and runtime files go: beside the API socket (on /run by default,
/// so a reboot clears them).
pub fn run_dir(config: &Config) -> std::path::PathBuf {
    config.daemon.socket.parent().map_or_else(
        || std::path::PathBuf::from("/run/hyperbox"),
        Path::to_path_buf,
    )
}

/// The arguments after `hyperboxd --monitor` for this config.
pub fn monitor_args(config: &Config) -> Vec<String> {
    let run = run_dir(config);
    vec![
        "--monitor-socket".into(),
        run.join("monitor.sock").to_string_lossy().into_owned(),
        "--cgroup-parent".into(),
        config.daemon.cgroup_parent.clone(),
        "--bridge".into(),
        config.networking.bridge_name.clone(),
        "--subnet".into(),
        config.networking.bridge_subnet.clone(),
        "--net-run-dir".into(),
        run.join("net").to_string_lossy().into_owned(),
        "--net-state-dir".into(),
        config
            .daemon
            .data_dir
            .join("net")
            .to_string_lossy()
            .into_owned(),
        "--log-level".into(),
        config.daemon.log_level.clone(),
    ]
}

/// The store, catalog and puller, opened before the async parts.
struct Opened {
    catalog: ImageCatalog,
    puller: Puller,
}

impl Daemon {
    /// Opens (and recovers) the store under `data_dir`, the containers and the monitor.
    pub async fn open(config: Config) -> anyhow::Result<Daemon> {
        let c = config.clone();
        let opened = tokio::task::spawn_blocking(move || Daemon::open_store(&c))
            .await
            .context("opening the daemon's state")??;
        let run = run_dir(&config);
        std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = container_resolv_conf(&resolv);
        let events = Arc::new(events::EventLog::new());
        let metrics = Arc::new(metrics::Metrics::new(
            opened.catalog.store().clone(),
            config.monitoring.history_buffer_mb as usize * 1024 * 1024,
        ));
        let activity = Arc::new(prewarm::UserActivity::default());
        let containers = containers::Containers::open(
            opened.catalog.clone(),
            containers::ContainersConfig {
                root: config.daemon.data_dir.join("containers"),
                layers_root: config.daemon.data_dir.join("layers"),
                monitor_socket: run.join("monitor.sock"),
                monitor_args: monitor_args(&config),
                monitor_log: config.daemon.data_dir.join("monitor.log"),
                parallel: config.prewarming.parallel_ops as usize,
                resolv_conf: resolv,
                cgroup_parent: config.daemon.cgroup_parent.clone(),
                events: events.clone(),
                metrics: metrics.clone(),
                activity: activity.clone(),
            },
        )
        .await
        .context("starting the container runtime")?;
        let puller = Arc::new(opened.puller);
        let prewarmer = prewarm::Prewarmer::open(
            prewarm::PrewarmSettings::from_config(&config),
            opened.catalog.clone(),
            puller.clone(),
            containers.layers().clone(),
            containers.dir_recycler().clone(),
            metrics.clone(),
            activity,
        )
        .await?;
        containers.set_prewarmer(prewarmer.clone());
        Ok(Daemon {
            config,
            catalog: opened.catalog,
            puller,
            containers,
            events,
            metrics,
            prewarmer,
        })
    }

    fn open_store(config: &Config) -> anyhow::Result<Opened> {
        let config = config.clone();
        let data = config.daemon.data_dir.clone();
        std::fs::create_dir_all(&data)
            .with_context(|| format!("creating data_dir {}", data.display()))?;
        let store = Store::open(&data.join("store"), store_options(&config))
            .with_context(|| format!("opening the store in {}", data.display()))?;
        let catalog = ImageCatalog::open(store).context("opening the image catalog")?;
        let credentials = Arc::new(
            CredentialFile::open(&data.join("auth.json")).context("reading saved credentials")?,
        );
        let puller = Puller::new(
            catalog.clone(),
            credentials,
            PullerConfig {
                insecure_registries: config.daemon.insecure_registries.clone(),
                timeout: Duration::from_secs(config.networking.connection_timeout_secs),
                max_concurrent_downloads: config.daemon.max_concurrent_downloads as usize,
                ..PullerConfig::default()
            },
        );
        Ok(Opened { catalog, puller })
    }

    /// Where temporary files (uploads for `load`) go: inside data_dir, so a rename or a
    /// cleanup never crosses filesystems.
    pub fn tmp_dir(&self) -> std::path::PathBuf {
        self.config.daemon.data_dir.join("tmp")
    }
}

/// How long open connections may take to finish once SIGTERM arrived.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the daemon until SIGINT or SIGTERM. `config_path` is where SIGHUP re-reads the
/// config from (the default path when `None`).
pub async fn serve(config: Config, config_path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let socket_path = config.daemon.socket.clone();
    // Refuse before touching the store, so a second daemon says why it cannot start (a
    // socket-activated daemon owns the socket and may find it connectable).
    if std::env::var_os("LISTEN_FDS").is_none() {
        socket::refuse_if_served(&socket_path)?;
    }
    // Certificates, keys and the token too: a broken file should stop us before the store opens.
    let security = tls::TcpSecurity::from_config(&config.daemon)?;
    let daemon = Arc::new(Daemon::open(config).await?);
    clean_tmp(&daemon.tmp_dir())?;
    // Metrics before the API: a client that can connect to the socket finds /health
    // answering (the socket accepts connections from its bind on, before anything serves).
    let readiness = Arc::new(metrics::Readiness::new());
    let metrics_server = serve_metrics(&daemon, readiness.clone()).await?;
    let listeners = serve::Listeners::open(&daemon.config, &security)?;
    let activated = listeners.activated;
    let limits = serve::ConnectionLimits::new(&daemon.config);
    let addrs: Vec<String> = listeners.list.iter().map(|l| l.describe()).collect();
    let security = tls::LiveSecurity::new(security, listeners.remote_tcp);
    tracing::info!(listen = ?addrs, tcp = %security.describe(), socket_activated = activated, data_dir = %daemon.config.daemon.data_dir.display(), "hyperboxd ready");
    deferred_compression::spawn(daemon.catalog.store().clone())
        .context("starting the background compression thread")?;
    let trimmer = idle_trim::spawn(
        daemon.catalog.store().clone(),
        daemon.prewarmer.activity().clone(),
    );
    let app = api::router(daemon.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve::serve(
        listeners,
        app,
        security.clone(),
        limits.clone(),
        daemon.metrics.clone(),
        stop_rx,
        DRAIN,
    ));
    // Handlers first: a SIGHUP that systemd sends right after READY must reload, not kill.
    let signals = Signals::install();
    readiness.set_ready();
    serve::notify_systemd(&[sd_notify::NotifyState::Ready]);
    let live = LiveSettings {
        limits: &limits,
        security: &security,
    };
    watch_signals(signals, &daemon.config, config_path, live).await;
    readiness.set_not_ready("hyperboxd is shutting down");
    serve::notify_systemd(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    let _ = server.await;
    serve::remove_socket_file(activated, &socket_path);
    if let Some(m) = metrics_server {
        m.abort();
    }
    trimmer.abort();
    Ok(())
}

/// Serves `/metrics`, `/health` and `/ready` on `[monitoring] metrics_addr` (when enabled) and
/// starts the store sampler behind the interval views.
async fn serve_metrics(
    daemon: &Arc<Daemon>,
    readiness: Arc<metrics::Readiness>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    daemon.metrics.spawn_sampler();
    let m = &daemon.config.monitoring;
    if !m.enabled {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(&m.metrics_addr)
        .await
        .with_context(|| format!("binding [monitoring] metrics_addr {}", m.metrics_addr))?;
    tracing::info!(addr = %m.metrics_addr, "metrics served");
    let app = metrics::router(daemon.metrics.clone(), readiness);
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server: {e}");
        }
    })))
}

impl serve::ConnectionObserver for metrics::Metrics {
    fn opened(&self) {
        self.connection_opened();
    }
    fn closed(&self) {
        self.connection_closed();
    }
}

/// The daemon's SIGINT, SIGTERM and SIGHUP streams, installed before READY is announced.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// `None` when the handlers cannot be installed (the daemon then stops on Ctrl-C only).
    fn install() -> Option<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(int), Ok(term), Ok(hup)) => Some(Signals { int, term, hup }),
            (int, term, hup) => {
                let why = [int.err(), term.err(), hup.err()]
                    .into_iter()
                    .flatten()
                    .next();
                tracing::error!(error = ?why, "cannot watch SIGINT/SIGTERM/SIGHUP; stopping on Ctrl-C only");
                None
            }
        }
    }
}

/// What SIGHUP changes in the running daemon.
#[derive(Clone, Copy)]
struct LiveSettings<'a> {
    limits: &'a serve::ConnectionLimits,
    security: &'a tls::LiveSecurity,
}

/// Waits for SIGINT or SIGTERM; on SIGHUP re-reads the config and applies what can change
/// while running.
async fn watch_signals(
    signals: Option<Signals>,
    running: &Config,
    config_path: Option<std::path::PathBuf>,
    live: LiveSettings<'_>,
) {
    let Some(mut s) = signals else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    let mut current = running.clone();
    loop {
        tokio::select! {
            _ = s.int.recv() => return,
            _ = s.term.recv() => return,
            _ = s.hup.recv() => {
                serve::notify_systemd(&[sd_notify::NotifyState::Reloading]);
                current = reload(&current, config_path.as_deref(), live);
                serve::notify_systemd(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
}

/// Keys SIGHUP applies without a restart.
const RELOADABLE: &[&str] = &[
    "networking.max_connections",
    "networking.connection_timeout_secs",
    "networking.tcp_keepalive_secs",
];

/// Keys of the TCP protection: SIGHUP reads their files again even when the keys did not
/// change (a rotated certificate keeps its path).
const SECURITY_KEYS: &[&str] = &[
    "daemon.tls_cert",
    "daemon.tls_key",
    "daemon.tls_client_ca",
    "daemon.api_token_file",
];

/// Re-reads the config; applies the reloadable keys and the TCP protection's files, and logs
/// every other changed key as needing a restart. A config that no longer loads changes
/// nothing; protection files that no longer load leave the running protection.
fn reload(current: &Config, path: Option<&Path>, live: LiveSettings<'_>) -> Config {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let new = match Config::load(path, env) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: config not reloaded, keeping the running one: {e}");
            return current.clone();
        }
    };
    let changed = changed_keys(&current.to_toml(), &new.to_toml());
    let security_loaded = match live.security.reload(&new.daemon) {
        Ok(()) => {
            tracing::info!(tcp = %live.security.describe(), "SIGHUP: TLS and token files read again");
            true
        }
        Err(e) => {
            tracing::error!(
                "SIGHUP: TLS and token files not reloaded, keeping the running ones: {e:#}"
            );
            false
        }
    };
    let (security, rest): (Vec<String>, Vec<String>) = changed
        .into_iter()
        .partition(|k| SECURITY_KEYS.contains(&k.as_str()));
    let (mut applied, restart): (Vec<String>, Vec<String>) = rest
        .into_iter()
        .partition(|k| RELOADABLE.contains(&k.as_str()));
    if security_loaded {
        applied.extend(security);
    }
    live.limits.apply(&new);
    // Only what was applied is in effect.
    let mut kept = current.clone();
    kept.networking.max_connections = new.networking.max_connections;
    kept.networking.connection_timeout_secs = new.networking.connection_timeout_secs;
    kept.networking.tcp_keepalive_secs = new.networking.tcp_keepalive_secs;
    if security_loaded {
        kept.daemon.tls_cert = new.daemon.tls_cert.clone();
        kept.daemon.tls_key = new.daemon.tls_key.clone();
        kept.daemon.tls_client_ca = new.daemon.tls_client_ca.clone();
        kept.daemon.api_token_file = new.daemon.api_token_file.clone();
    }
    if !restart.is_empty() {
        tracing::warn!(keys = ?restart, "SIGHUP: these settings need a restart of hyperboxd; still running with the old values");
    }
    tracing::info!(applied = ?applied, "SIGHUP: config reloaded");
    kept
}

/// `section.key` names whose lines differ between two `Config::to_toml` renderings.
fn changed_keys(old: &str, new: &str) -> Vec<String> {
    fn keyed(text: &str) -> std::collections::BTreeMap<String, String> {
        let mut section = String::new();
        let mut out = std::collections::BTreeMap::new();
        for line in text.lines() {
            let t = line.trim();
            if let Some(s) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = s.to_string();
            } else if let Some((k, v)) = t.split_once('=') {
                out.insert(format!("{section}.{}", k.trim()), v.trim().to_string());
            }
        }
        out
    }
    let (a, b) = (keyed(old), keyed(new));
    let mut keys: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    keys
}

/// Uploads left by a crash are useless: start with an empty tmp dir.
fn clean_tmp(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cleaning {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(())
}

/// resolv.conf for containers: the host's, without loopback nameservers (a resolver on the
/// host's 127.0.0.x is not reachable from a container's own network namespace); Google's and
/// Cloudflare's public resolvers when none remain, as Docker does.
pub fn container_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let t = line.trim();
        if let Some(ns) = t.strip_prefix("nameserver") {
            let ns = ns.trim();
            if ns.starts_with("127.") || ns == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 1.1.1.1\n");
    }
    out
}
