//! The config tree's sections: one struct per `[section]` of the TOML file, with its built-in
//! defaults, and the enumerated values (`HashAlgorithm`, `PrewarmTechnique`). The allowed range of
//! each key lives in `rules.rs`; the field docs repeat it for readers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[daemon]`: where the daemon keeps its data, where it listens, how it logs and pulls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Directory holding the content store, the image catalog and credentials.
    pub data_dir: PathBuf,
    /// Unix socket of the API.
    pub socket: PathBuf,
    /// TCP address of the API; must parse as a socket address (`127.0.0.1:9999`). An address
    /// off loopback needs `tls_cert` and `tls_key`, and `tls_client_ca` or `api_token_file`.
    pub listen_addr: String,
    /// PEM certificate chain the API serves TLS with on TCP (the server's certificate first);
    /// empty: plain HTTP. Set together with `tls_key`.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1); empty: plain HTTP.
    pub tls_key: PathBuf,
    /// PEM CA certificate(s): when set, TCP clients must present a certificate signed by one of
    /// them (what `docker --tlsverify` sends). Needs `tls_cert` and `tls_key`. Empty: no client
    /// certificates asked for.
    pub tls_client_ca: PathBuf,
    /// File holding a bearer token: when set, every request on TCP must carry
    /// `Authorization: Bearer <token>`. Must not be readable by other users. Empty: no token.
    pub api_token_file: PathBuf,
    /// Registries (`host[:port]`) that may be reached over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Log level: one of [`DaemonConfig::LOG_LEVELS`].
    pub log_level: String,
    /// Layers downloaded at once per pull (1..=32).
    pub max_concurrent_downloads: u32,
    /// cgroup under which containers get theirs (`<hierarchy>/<cgroup_parent>/<id>`).
    pub cgroup_parent: String,
}

impl DaemonConfig {
    /// The values `log_level` may take.
    pub const LOG_LEVELS: &'static [&'static str] = &["error", "warn", "info", "debug", "trace"];

    /// `tls_cert`, or `None` when it is not set (empty).
    pub fn tls_cert(&self) -> Option<&Path> {
        set(&self.tls_cert)
    }

    /// `tls_key`, or `None` when it is not set (empty).
    pub fn tls_key(&self) -> Option<&Path> {
        set(&self.tls_key)
    }

    /// `tls_client_ca`, or `None` when it is not set (empty).
    pub fn tls_client_ca(&self) -> Option<&Path> {
        set(&self.tls_client_ca)
    }

    /// `api_token_file`, or `None` when it is not set (empty).
    pub fn api_token_file(&self) -> Option<&Path> {
        set(&self.api_token_file)
    }
}

/// An optional path key: empty means "not set" (so every key shows in `--print-config` and
/// takes a `HYPERBOX_*` override).
fn set(path: &Path) -> Option<&Path> {
    (!path.as_os_str().is_empty()).then_some(path)
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            data_dir: PathBuf::from("/var/lib/hyperbox"),
            socket: PathBuf::from("/run/hyperbox/hyperbox.sock"),
            listen_addr: "127.0.0.1:9999".into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
            api_token_file: PathBuf::new(),
            insecure_registries: Vec::new(),
            log_level: "info".into(),
            max_concurrent_downloads: 3,
            cgroup_parent: "hyperbox".into(),
        }
    }
}

/// `[cache]`: the hot-tier budget and how the content store writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Hot-tier budget in MiB (128..=16000).
    pub size_mb: u64,
    /// zstd-compress stored chunks.
    pub compression: bool,
    /// zstd level (1..=9).
    pub compression_level: i32,
    /// Read pack files through mmap.
    pub use_mmap: bool,
    /// Group fsyncs and index commits.
    pub batch_writes: bool,
    /// Chunks per group commit (1..=1000).
    pub batch_size: u32,
    /// Longest a chunk waits for its group commit, in milliseconds (0..=60000).
    pub batch_timeout_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            size_mb: 1024,
            compression: true,
            compression_level: 6,
            use_mmap: true,
            batch_writes: true,
            batch_size: 100,
            batch_timeout_ms: 100,
        }
    }
}

/// The hash that names chunks; written lowercase in TOML (`"sha256"`, `"blake3"`, `"xxhash"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// SHA-256.
    #[default]
    Sha256,
    /// BLAKE3.
    Blake3,
    /// xxh3-128, confirmed byte for byte on a match.
    Xxhash,
}

impl HashAlgorithm {
    /// Every value's TOML spelling, in declaration order.
    pub const NAMES: &'static [&'static str] = &["sha256", "blake3", "xxhash"];

    /// This value's TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Blake3 => "blake3",
            HashAlgorithm::Xxhash => "xxhash",
        }
    }
}

/// `[deduplication]`: chunk hashing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeduplicationConfig {
    /// Store each chunk once.
    pub enabled: bool,
    /// Hashing and compressing threads (1..=64).
    pub parallel_ops: u32,
    /// Chunk-id hash.
    pub hash_algorithm: HashAlgorithm,
}

impl Default for DeduplicationConfig {
    fn default() -> Self {
        DeduplicationConfig {
            enabled: true,
            parallel_ops: 4,
            hash_algorithm: HashAlgorithm::Sha256,
        }
    }
}

/// `[prediction]`: the model of which images start next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionConfig {
    /// Learn and predict.
    pub enabled: bool,
    /// Seconds between model refreshes (1..=86400).
    pub update_interval_secs: u64,
    /// Only predictions at or above this confidence, in percent, are acted on (0..=100).
    pub confidence_threshold: u32,
    /// Days of start history kept (1..=3650).
    pub history_retention_days: u32,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        PredictionConfig {
            enabled: true,
            update_interval_secs: 300,
            confidence_threshold: 65,
            history_retention_days: 30,
        }
    }
}

/// The model that drives prewarming; written lowercase in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrewarmTechnique {
    /// What follows what.
    #[default]
    Predictive,
    /// Use counts with decay.
    Frequency,
    /// Inter-arrival and time-of-day histograms.
    Statistical,
}

impl PrewarmTechnique {
    /// Every value's TOML spelling, in declaration order.
    pub const NAMES: &'static [&'static str] = &["predictive", "frequency", "statistical"];

    /// This value's TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PrewarmTechnique::Predictive => "predictive",
            PrewarmTechnique::Frequency => "frequency",
            PrewarmTechnique::Statistical => "statistical",
        }
    }
}

/// `[prewarming]`: getting predicted images ready in advance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrewarmingConfig {
    /// Prewarm predicted images.
    pub enabled: bool,
    /// Which model drives it.
    pub technique: PrewarmTechnique,
    /// Prewarm workers (1..=64).
    pub parallel_ops: u32,
    /// Layers per batch (1..=1000).
    pub batch_size_layers: u32,
    /// Pause between batches, in milliseconds (0..=60000).
    pub batch_delay_ms: u64,
}

impl Default for PrewarmingConfig {
    fn default() -> Self {
        PrewarmingConfig {
            enabled: true,
            technique: PrewarmTechnique::Predictive,
            parallel_ops: 4,
            batch_size_layers: 10,
            batch_delay_ms: 10,
        }
    }
}

/// `[networking]`: connection limits of the API and of registry clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkingConfig {
    /// Concurrent API connections (1..=1000000).
    pub max_connections: u32,
    /// Connect and read timeout in seconds, also for registries (1..=3600).
    pub connection_timeout_secs: u64,
    /// TCP keepalive in seconds (1..=7200).
    pub tcp_keepalive_secs: u64,
    /// Bridge of `--network bridge` containers.
    pub bridge_name: String,
    /// Addresses of bridge containers (the gateway takes the first).
    pub bridge_subnet: String,
}

impl Default for NetworkingConfig {
    fn default() -> Self {
        NetworkingConfig {
            max_connections: 1000,
            connection_timeout_secs: 30,
            tcp_keepalive_secs: 60,
            bridge_name: "hb0".into(),
            bridge_subnet: "10.89.0.0/16".into(),
        }
    }
}

/// `[monitoring]`: the metrics endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Serve metrics.
    pub enabled: bool,
    /// Metrics address; must parse as a socket address (`127.0.0.1:8888`).
    pub metrics_addr: String,
    /// Rolling metrics history budget in MiB (1..=1024).
    pub history_buffer_mb: u32,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enabled: true,
            metrics_addr: "127.0.0.1:8888".into(),
            history_buffer_mb: 10,
        }
    }
}
