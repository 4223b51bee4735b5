//! `hb-config`: HyperBox's one typed configuration tree. The TOML file, the `HYPERBOX_*`
//! environment and the built-in defaults all go through [`Config`]; [`Config::validate`] checks
//! every range in one table, and every error names the key, the value, what is allowed and where
//! the value came from (`file:line` or the environment variable).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS's words.
        reason: String,
    },
    /// Not TOML, a duplicate key, an unknown key or a value of the wrong type.
    #[error("{origin}:{line}: {message}")]
    Syntax {
        /// File name.
        origin: String,
        /// 1-based line.
        line: usize,
        /// The parser's words (names the key).
        message: String,
    },
    /// A value outside what is allowed.
    #[error("{location}: {key} = {value} is out of range (allowed {allowed})")]
    OutOfRange {
        /// `file:line`, the environment variable, or `built-in default`.
        location: String,
        /// Dotted key, `cache.size_mb`.
        key: String,
        /// The value given.
        value: String,
        /// What is allowed: `128..=16000`, `one of sha256, blake3, xxhash`.
        allowed: String,
    },
    /// A `HYPERBOX_*` variable that names no key, or whose value does not parse.
    #[error("{variable}={value}: {reason}")]
    Environment {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[daemon]`: where the daemon keeps its data and listens.
    pub daemon: DaemonConfig,
    /// `[cache]`: hot-tier size and how the store writes.
    pub cache: CacheConfig,
    /// `[deduplication]`: chunk hashing.
    pub deduplication: DeduplicationConfig,
    /// `[prediction]`: the model of what runs next.
    pub prediction: PredictionConfig,
    /// `[prewarming]`: getting it ready in advance.
    pub prewarming: PrewarmingConfig,
    /// `[networking]`: API connection limits.
    pub networking: NetworkingConfig,
    /// `[monitoring]`: metrics.
    pub monitoring: MonitoringConfig,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Store, catalog and credentials live here.
    pub data_dir: PathBuf,
    /// The API's unix socket (mode 0660).
    pub socket: PathBuf,
    /// TCP address of the API.
    pub listen_addr: String,
    /// Registries (host[:port]) reached over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// error, warn, info, debug or trace.
    pub log_level: String,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: u32,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            data_dir: PathBuf::from("/var/lib/hyperbox"),
            socket: PathBuf::from("/run/hyperbox/hyperbox.sock"),
            listen_addr: "127.0.0.1:9999".into(),
            insecure_registries: Vec::new(),
            log_level: "info".into(),
            max_concurrent_downloads: 3,
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Hot-tier budget in MiB.
    pub size_mb: u64,
    /// zstd-compress stored chunks.
    pub compression: bool,
    /// zstd level.
    pub compression_level: i32,
    /// Read pack files through mmap.
    pub use_mmap: bool,
    /// Group fsyncs and index commits.
    pub batch_writes: bool,
    /// Chunks per group commit.
    pub batch_size: u32,
    /// Longest a chunk waits for its group commit.
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

/// The chunk-id hash.
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

/// `[deduplication]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeduplicationConfig {
    /// Store each chunk once.
    pub enabled: bool,
    /// Hashing and compressing threads.
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

/// `[prediction]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionConfig {
    /// Learn and predict.
    pub enabled: bool,
    /// How often models are refreshed.
    pub update_interval_secs: u64,
    /// Only predictions at or above this confidence (percent) are acted on.
    pub confidence_threshold: u32,
    /// How long start history is kept.
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

/// The prewarming technique.
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

/// `[prewarming]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrewarmingConfig {
    /// Prewarm predicted images.
    pub enabled: bool,
    /// Which model drives it.
    pub technique: PrewarmTechnique,
    /// Prewarm workers.
    pub parallel_ops: u32,
    /// Layers per batch.
    pub batch_size_layers: u32,
    /// Pause between batches.
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

/// `[networking]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkingConfig {
    /// Concurrent API connections.
    pub max_connections: u32,
    /// Connect/read timeout (also for registries).
    pub connection_timeout_secs: u64,
    /// TCP keepalive.
    pub tcp_keepalive_secs: u64,
}

impl Default for NetworkingConfig {
    fn default() -> Self {
        NetworkingConfig {
            max_connections: 1000,
            connection_timeout_secs: 30,
            tcp_keepalive_secs: 60,
        }
    }
}

/// `[monitoring]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Serve metrics.
    pub enabled: bool,
    /// Metrics address.
    pub metrics_addr: String,
    /// Rolling metrics history budget, MiB.
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

/// What a key may hold.
enum Allowed {
    Range(i128, i128),
    OneOf(&'static [&'static str]),
    SocketAddr,
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Range(a, b) => write!(f, "{a}..={b}"),
            Allowed::OneOf(v) => write!(f, "one of {}", v.join(", ")),
            Allowed::SocketAddr => write!(f, "an address like 127.0.0.1:9999"),
        }
    }
}

/// Where values came from, for error messages.
#[derive(Default)]
struct Origins {
    /// File name and its text, when loaded from a file.
    file: Option<(String, String)>,
    /// dotted key → environment variable that set it.
    env: Vec<(String, String)>,
}

impl Origins {
    fn locate(&self, key: &str) -> String {
        if let Some((_, var)) = self.env.iter().rev().find(|(k, _)| k == key) {
            return var.clone();
        }
        if let Some((name, text)) = &self.file {
            if let Some(line) = key_line(text, key) {
                return format!("{name}:{line}");
            }
        }
        "built-in default".into()
    }
}

/// The 1-based line of a dotted key in TOML text.
fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let (section, key) = dotted.split_once('.')?;
    let table = doc.as_table().get(section)?.as_table_like()?;
    let (k, _) = table.get_key_value(key)?;
    let span = k.span()?;
    Some(line_of(text, span.start))
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()[..byte.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Config {
    /// Default path of the config file.
    pub const DEFAULT_PATH: &'static str = "/etc/hyperbox/hyperbox.toml";

    /// Parses TOML text; `origin` names the file in errors. Validates.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = parse(text, origin)?;
        let origins = Origins {
            file: Some((origin.to_string(), text.to_string())),
            env: Vec::new(),
        };
        config.validate_with(&origins)?;
        Ok(config)
    }

    /// Loads `path` (which must exist), or `DEFAULT_PATH` when it exists, or the defaults; then
    /// applies `HYPERBOX_*` variables from `env`, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let default = Path::new(Self::DEFAULT_PATH);
        let chosen = match path {
            Some(p) => Some(p),
            None if default.exists() => Some(default),
            None => None,
        };
        let mut origins = Origins::default();
        let mut config = match chosen {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Unreadable {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                let name = p.display().to_string();
                let c = parse(&text, &name)?;
                origins.file = Some((name, text));
                c
            }
            None => Config::default(),
        };
        origins.env = config.apply_env_inner(env)?;
        config.validate_with(&origins)?;
        Ok(config)
    }

    /// Applies `HYPERBOX_<SECTION>_<KEY>` variables (others are ignored) and re-validates.
    pub fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let set = self.apply_env_inner(env)?;
        self.validate_with(&Origins {
            file: None,
            env: set,
        })
    }

    /// Checks every range and enumerated value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&Origins::default())
    }

    /// The effective config as TOML that [`Config::from_toml_str`] reads back.
    pub fn to_toml(&self) -> String {
        // Serialising plain structs of scalars, strings and arrays cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    fn validate_with(&self, origins: &Origins) -> Result<(), ConfigError> {
        const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
        let int = |v: u64| i128::from(v);
        let checks: Vec<(&str, String, Allowed, bool)> = {
            let c = self;
            let range = |key: &'static str, v: i128, a: i128, b: i128| {
                (key, v.to_string(), Allowed::Range(a, b), (a..=b).contains(&v))
            };
            vec![
                range("daemon.max_concurrent_downloads", int(c.daemon.max_concurrent_downloads.into()), 1, 32),
                (
                    "daemon.log_level",
                    format!("{:?}", c.daemon.log_level),
                    Allowed::OneOf(LEVELS),
                    LEVELS.contains(&c.daemon.log_level.as_str()),
                ),
                (
                    "daemon.listen_addr",
                    format!("{:?}", c.daemon.listen_addr),
                    Allowed::SocketAddr,
                    c.daemon.listen_addr.parse::<SocketAddr>().is_ok(),
                ),
                range("cache.size_mb", int(c.cache.size_mb), 128, 16000),
                range("cache.compression_level", c.cache.compression_level.into(), 1, 9),
                range("cache.batch_size", int(c.cache.batch_size.into()), 1, 1000),
                range("cache.batch_timeout_ms", int(c.cache.batch_timeout_ms), 0, 60000),
                range("deduplication.parallel_ops", int(c.deduplication.parallel_ops.into()), 1, 64),
                range("prediction.update_interval_secs", int(c.prediction.update_interval_secs), 1, 86400),
                range("prediction.confidence_threshold", int(c.prediction.confidence_threshold.into()), 0, 100),
                range("prediction.history_retention_days", int(c.prediction.history_retention_days.into()), 1, 3650),
                range("prewarming.parallel_ops", int(c.prewarming.parallel_ops.into()), 1, 64),
                range("prewarming.batch_size_layers", int(c.prewarming.batch_size_layers.into()), 1, 1000),
                range("prewarming.batch_delay_ms", int(c.prewarming.batch_delay_ms), 0, 60000),
                range("networking.max_connections", int(c.networking.max_connections.into()), 1, 1_000_000),
                range("networking.connection_timeout_secs", int(c.networking.connection_timeout_secs), 1, 3600),
                range("networking.tcp_keepalive_secs", int(c.networking.tcp_keepalive_secs), 1, 7200),
                (
                    "monitoring.metrics_addr",
                    format!("{:?}", c.monitoring.metrics_addr),
                    Allowed::SocketAddr,
                    c.monitoring.metrics_addr.parse::<SocketAddr>().is_ok(),
                ),
                range("monitoring.history_buffer_mb", int(c.monitoring.history_buffer_mb.into()), 1, 1024),
            ]
        };
        match checks.into_iter().find(|(_, _, _, ok)| !ok) {
            None => Ok(()),
            Some((key, value, allowed, _)) => Err(ConfigError::OutOfRange {
                location: origins.locate(key),
                key: key.to_string(),
                value,
                allowed: allowed.to_string(),
            }),
        }
    }

    /// Sets each `HYPERBOX_*` variable through the TOML tree (one source of truth for types);
    /// returns (dotted key, variable) for error locations.
    fn apply_env_inner(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        // Variables other programs read, not config keys.
        const NOT_KEYS: &[&str] = &["HYPERBOX_HOST", "HYPERBOX_CONFIG", "HYPERBOX_LOG"];
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("HYPERBOX_") && !NOT_KEYS.contains(&k.as_str()))
            .collect();
        vars.sort();
        if vars.is_empty() {
            return Ok(Vec::new());
        }
        let mut tree = toml::Table::try_from(&*self).map_err(|e| ConfigError::Environment {
            variable: "HYPERBOX_*".into(),
            value: String::new(),
            reason: e.to_string(),
        })?;
        let mut set = Vec::new();
        for (var, raw) in vars {
            let bad = |reason: String| ConfigError::Environment {
                variable: var.clone(),
                value: raw.clone(),
                reason,
            };
            let rest = &var["HYPERBOX_".len()..];
            let (section, key) = rest
                .split_once('_')
                .map(|(s, k)| (s.to_ascii_lowercase(), k.to_ascii_lowercase()))
                .ok_or_else(|| bad("expected HYPERBOX_<SECTION>_<KEY>".into()))?;
            let table = tree
                .get_mut(&section)
                .and_then(|t| t.as_table_mut())
                .ok_or_else(|| bad(format!("no config section [{section}]")))?;
            let current = table
                .get(&key)
                .ok_or_else(|| bad(format!("no key {key:?} in [{section}]")))?;
            let value = env_value(current, &raw).map_err(bad)?;
            table.insert(key.clone(), value);
            set.push((format!("{section}.{key}"), var.clone()));
            *self = Config::deserialize(toml::Value::Table(tree.clone()))
                .map_err(|e| bad(e.message().to_string()))?;
        }
        Ok(set)
    }
}

/// Parses an environment string as the same kind of value the key holds now.
fn env_value(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match current {
        toml::Value::Boolean(_) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err("expected a boolean (true/false/1/0)".into()),
        },
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "expected an integer".into()),
        toml::Value::Array(_) => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        )),
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}

fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        let mut message = e.message().trim().to_string();
        if message.contains("duplicate") && !message.contains("duplicate key") {
            message = format!("duplicate key: {message}");
        }
        ConfigError::Syntax {
            origin: origin.to_string(),
            line,
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_match_the_guide() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.cache.size_mb, 1024);
        assert_eq!(c.deduplication.parallel_ops, 4);
        assert_eq!(c.cache.compression_level, 6);
        assert_eq!(c.cache.batch_size, 100);
        assert_eq!(c.deduplication.hash_algorithm, HashAlgorithm::Sha256);
    }

    #[test]
    fn guide_scenarios_parse() {
        let high = "[cache]\nsize_mb = 4096\ncompression = true\ncompression_level = 6\nuse_mmap = true\nbatch_size = 500\nbatch_timeout_ms = 50\n[prewarming]\nparallel_ops = 16\ntechnique = \"statistical\"\n[deduplication]\nparallel_ops = 8\nhash_algorithm = \"blake3\"\n[networking]\nmax_connections = 10000\ntcp_keepalive_secs = 30\n";
        let c = Config::from_toml_str(high, "high.toml").unwrap();
        assert_eq!(c.prewarming.technique, PrewarmTechnique::Statistical);
        assert_eq!(c.deduplication.hash_algorithm, HashAlgorithm::Blake3);
        let small = "[cache]\nsize_mb = 128\ncompression = true\ncompression_level = 9\nuse_mmap = true\n[prediction]\nenabled = false\n[prewarming]\nenabled = false\n[deduplication]\nparallel_ops = 1\n";
        assert!(!Config::from_toml_str(small, "s.toml").unwrap().prediction.enabled);
        let latency = "[cache]\nsize_mb = 4096\ncompression = false\nuse_mmap = true\n[prediction]\nenabled = true\nconfidence_threshold = 80\nupdate_interval_secs = 60\n[prewarming]\nparallel_ops = 8\ntechnique = \"predictive\"\n[networking]\ntcp_keepalive_secs = 10\n";
        Config::from_toml_str(latency, "l.toml").unwrap();
        let cpu = "[prewarming]\nparallel_ops = 8\nbatch_delay_ms = 5\n";
        assert_eq!(Config::from_toml_str(cpu, "c.toml").unwrap().prewarming.batch_delay_ms, 5);
    }

    #[test]
    fn out_of_range_names_file_line_key_value_and_range() {
        let err = Config::from_toml_str("[cache]\ncompression = true\nsize_mb = 99999\n", "/etc/h.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/etc/h.toml:3: cache.size_mb = 99999 is out of range (allowed 128..=16000)"
        );
        let err = Config::from_toml_str("\n[deduplication]\nparallel_ops = 0\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.toml:3: deduplication.parallel_ops = 0"), "{err}");
        assert!(err.contains("1..=64"), "{err}");
        let err = Config::from_toml_str("[daemon]\nlog_level = \"loud\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.toml:2") && err.contains("one of error"), "{err}");
        let err = Config::from_toml_str("[monitoring]\nmetrics_addr = \"nowhere\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("monitoring.metrics_addr"), "{err}");
    }

    #[test]
    fn unknown_duplicate_wrong_type_and_syntax_errors_have_lines() {
        let err = Config::from_toml_str("[cache]\nsize_mb = 1024\nbogus = 1\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.toml:3:") && err.contains("bogus"), "{err}");
        let err = Config::from_toml_str("[cache]\nsize_mb = 1024\nsize_mb = 2048\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.toml:3:") && err.contains("duplicate key"), "{err}");
        let err = Config::from_toml_str("[cache]\nsize_mb = \"big\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.toml:2:"), "{err}");
        let err = Config::from_toml_str("[deduplication]\nhash_algorithm = \"md5\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("md5") && err.contains("f.toml:2"), "{err}");
        let err = Config::from_toml_str("[cache\n", "f.toml").unwrap_err().to_string();
        assert!(err.starts_with("f.toml:1:"), "{err}");
        let err = Config::from_toml_str("[nosuch]\nx = 1\n", "f.toml").unwrap_err().to_string();
        assert!(err.contains("nosuch"), "{err}");
    }

    #[test]
    fn environment_overrides() {
        let mut c = Config::default();
        c.apply_env(env(&[
            ("HYPERBOX_CACHE_SIZE_MB", "2048"),
            ("HYPERBOX_DEDUPLICATION_HASH_ALGORITHM", "xxhash"),
            ("HYPERBOX_CACHE_USE_MMAP", "0"),
            ("HYPERBOX_DAEMON_INSECURE_REGISTRIES", "a:5000, b"),
            ("HYPERBOX_HOST", "unix:///x"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(c.cache.size_mb, 2048);
        assert_eq!(c.deduplication.hash_algorithm, HashAlgorithm::Xxhash);
        assert!(!c.cache.use_mmap);
        assert_eq!(c.daemon.insecure_registries, vec!["a:5000", "b"]);

        let err = Config::default()
            .apply_env(env(&[("HYPERBOX_CACHE_SIZE_MB", "5")]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("HYPERBOX_CACHE_SIZE_MB: cache.size_mb = 5"), "{err}");
        let err = Config::default()
            .apply_env(env(&[("HYPERBOX_CACHE_SIZE_MB", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HYPERBOX_CACHE_SIZE_MB=lots") && err.contains("integer"), "{err}");
        let err = Config::default()
            .apply_env(env(&[("HYPERBOX_CACHE_NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HYPERBOX_CACHE_NOPE") && err.contains("nope"), "{err}");
        let err = Config::default()
            .apply_env(env(&[("HYPERBOX_DEDUPLICATION_HASH_ALGORITHM", "md5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HYPERBOX_DEDUPLICATION_HASH_ALGORITHM") && err.contains("md5"), "{err}");
    }

    #[test]
    fn load_file_then_env_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.toml");
        std::fs::write(&p, "[cache]\nsize_mb = 512\n").unwrap();
        let c = Config::load(Some(&p), env(&[("HYPERBOX_CACHE_COMPRESSION_LEVEL", "9")])).unwrap();
        assert_eq!((c.cache.size_mb, c.cache.compression_level), (512, 9));
        let missing = dir.path().join("missing.toml");
        let err = Config::load(Some(&missing), env(&[])).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
        std::fs::write(&p, "[cache]\nsize_mb = 100\n").unwrap();
        let err = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(err.contains("h.toml:2"), "{err}");
    }

    #[test]
    fn to_toml_round_trips() {
        let mut c = Config::default();
        c.cache.size_mb = 3000;
        c.daemon.insecure_registries = vec!["r:5000".into()];
        c.prewarming.technique = PrewarmTechnique::Frequency;
        let text = c.to_toml();
        assert_eq!(Config::from_toml_str(&text, "round").unwrap(), c);
    }
}
