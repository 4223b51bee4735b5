//! `hyperboxd` as a library: opens the store and image catalog under `[daemon] data_dir`,
//! binds the unix socket and serves the API (`api`) until SIGINT/SIGTERM. The binary
//! (`main.rs`) only parses arguments and config.

pub mod api;
mod container_api;
pub mod containers;
pub mod socket;

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
    /// Registry pulls.
    pub puller: Puller,
    /// Containers (records, lifecycle through the monitor).
    pub containers: Arc<containers::Containers>,
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
            },
        )
        .await
        .context("starting the container runtime")?;
        Ok(Daemon {
            config,
            catalog: opened.catalog,
            puller: opened.puller,
            containers,
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

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let socket_path = config.daemon.socket.clone();
    // Refuse before touching the store, so a second daemon says why it cannot start.
    socket::refuse_if_served(&socket_path)?;
    let daemon = Daemon::open(config).await?;
    clean_tmp(&daemon.tmp_dir())?;
    let listener = socket::bind_unix(&socket_path)?;
    tracing::info!(socket = %socket_path.display(), data_dir = %daemon.config.daemon.data_dir.display(), "hyperboxd ready");
    let app = api::router(Arc::new(daemon));
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch SIGTERM: {e}");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")?;
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
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
