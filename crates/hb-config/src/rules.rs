//! Validation: the one table of what every constrained key allows ([`RULES`]), checked against a
//! [`Config`], with each failure located at its file line or environment variable.

use std::net::SocketAddr;

use crate::error::{Allowed, ConfigError, ValueOrigin};
use crate::sections::{DaemonConfig, HashAlgorithm, PrewarmTechnique};
use crate::Config;

/// A key's current value, in the form its rule checks.
pub(crate) enum Checked<'a> {
    /// Any integer field, widened.
    Int(i128),
    /// A string or enumerated field.
    Text(&'a str),
}

impl Checked<'_> {
    /// The value as TOML would show it.
    fn to_toml(&self) -> String {
        match self {
            Checked::Int(v) => v.to_string(),
            Checked::Text(s) => toml::Value::String((*s).to_string()).to_string(),
        }
    }
}

/// One constrained key: its dotted name, what it allows, and how to read it from a [`Config`].
pub(crate) struct Rule {
    /// Dotted key, `section.key`.
    pub(crate) key: &'static str,
    /// What the key allows.
    pub(crate) allowed: Allowed,
    /// Reads the key's value.
    read: for<'a> fn(&'a Config) -> Checked<'a>,
}

const fn range(min: i64, max: i64) -> Allowed {
    Allowed::Range { min, max }
}

fn int(v: impl Into<i128>) -> Checked<'static> {
    Checked::Int(v.into())
}

/// Every constrained key. Booleans, paths and the registry list take any value of their type.
pub(crate) const RULES: &[Rule] = &[
    Rule {
        key: "daemon.listen_addr",
        allowed: Allowed::SocketAddr,
        read: |c| Checked::Text(&c.daemon.listen_addr),
    },
    Rule {
        key: "daemon.cgroup_parent",
        allowed: Allowed::CgroupName,
        read: |c| Checked::Text(&c.daemon.cgroup_parent),
    },
    Rule {
        key: "networking.bridge_name",
        allowed: Allowed::InterfaceName,
        read: |c| Checked::Text(&c.networking.bridge_name),
    },
    Rule {
        key: "networking.bridge_subnet",
        allowed: Allowed::Ipv4Net,
        read: |c| Checked::Text(&c.networking.bridge_subnet),
    },
    Rule {
        key: "daemon.log_level",
        allowed: Allowed::OneOf(DaemonConfig::LOG_LEVELS),
        read: |c| Checked::Text(&c.daemon.log_level),
    },
    Rule {
        key: "daemon.max_concurrent_downloads",
        allowed: range(1, 32),
        read: |c| int(c.daemon.max_concurrent_downloads),
    },
    Rule {
        key: "cache.size_mb",
        allowed: range(128, 16000),
        read: |c| int(c.cache.size_mb),
    },
    Rule {
        key: "cache.compression_level",
        allowed: range(1, 9),
        read: |c| int(c.cache.compression_level),
    },
    Rule {
        key: "cache.batch_size",
        allowed: range(1, 1000),
        read: |c| int(c.cache.batch_size),
    },
    Rule {
        key: "cache.batch_timeout_ms",
        allowed: range(0, 60000),
        read: |c| int(c.cache.batch_timeout_ms),
    },
    Rule {
        key: "deduplication.parallel_ops",
        allowed: range(1, 64),
        read: |c| int(c.deduplication.parallel_ops),
    },
    Rule {
        key: "deduplication.hash_algorithm",
        allowed: Allowed::OneOf(HashAlgorithm::NAMES),
        read: |c| Checked::Text(c.deduplication.hash_algorithm.as_str()),
    },
    Rule {
        key: "prediction.update_interval_secs",
        allowed: range(1, 86400),
        read: |c| int(c.prediction.update_interval_secs),
    },
    Rule {
        key: "prediction.confidence_threshold",
        allowed: range(0, 100),
        read: |c| int(c.prediction.confidence_threshold),
    },
    Rule {
        key: "prediction.history_retention_days",
        allowed: range(1, 3650),
        read: |c| int(c.prediction.history_retention_days),
    },
    Rule {
        key: "prewarming.technique",
        allowed: Allowed::OneOf(PrewarmTechnique::NAMES),
        read: |c| Checked::Text(c.prewarming.technique.as_str()),
    },
    Rule {
        key: "prewarming.parallel_ops",
        allowed: range(1, 64),
        read: |c| int(c.prewarming.parallel_ops),
    },
    Rule {
        key: "prewarming.batch_size_layers",
        allowed: range(1, 1000),
        read: |c| int(c.prewarming.batch_size_layers),
    },
    Rule {
        key: "prewarming.batch_delay_ms",
        allowed: range(0, 60000),
        read: |c| int(c.prewarming.batch_delay_ms),
    },
    Rule {
        key: "networking.max_connections",
        allowed: range(1, 1_000_000),
        read: |c| int(c.networking.max_connections),
    },
    Rule {
        key: "networking.connection_timeout_secs",
        allowed: range(1, 3600),
        read: |c| int(c.networking.connection_timeout_secs),
    },
    Rule {
        key: "networking.tcp_keepalive_secs",
        allowed: range(1, 7200),
        read: |c| int(c.networking.tcp_keepalive_secs),
    },
    Rule {
        key: "monitoring.metrics_addr",
        allowed: Allowed::SocketAddr,
        read: |c| Checked::Text(&c.monitoring.metrics_addr),
    },
    Rule {
        key: "monitoring.history_buffer_mb",
        allowed: range(1, 1024),
        read: |c| int(c.monitoring.history_buffer_mb),
    },
];

/// The rule for a dotted key, if the key is constrained.
pub(crate) fn rule_for(key: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.key == key)
}

impl Rule {
    /// Reads this rule's key from `config`.
    pub(crate) fn read<'a>(&self, config: &'a Config) -> Checked<'a> {
        (self.read)(config)
    }
}

impl Allowed {
    /// Whether `value` satisfies this rule.
    pub(crate) fn permits(&self, value: &Checked<'_>) -> bool {
        match (self, value) {
            (Allowed::Range { min, max }, Checked::Int(v)) => {
                (i128::from(*min)..=i128::from(*max)).contains(v)
            }
            (Allowed::OneOf(names), Checked::Text(s)) => names.contains(s),
            (Allowed::SocketAddr, Checked::Text(s)) => s.parse::<SocketAddr>().is_ok(),
            (Allowed::InterfaceName, Checked::Text(s)) => {
                (1..=15).contains(&s.len()) && s.chars().all(name_char)
            }
            (Allowed::Ipv4Net, Checked::Text(s)) => s.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<std::net::Ipv4Addr>().is_ok()
                    && len.parse::<u8>().is_ok_and(|l| (8..=24).contains(&l))
            }),
            (Allowed::CgroupName, Checked::Text(s)) => {
                !s.is_empty() && *s != "." && *s != ".." && s.chars().all(name_char)
            }
            _ => false,
        }
    }

    /// Whether a value of this TOML kind that fails to deserialize breaks this rule (rather than
    /// being of the wrong type): an integer too large or negative for a ranged key, anything at
    /// all for an enumerated key.
    pub(crate) fn covers_kind(&self, value_is_integer: bool) -> bool {
        match self {
            Allowed::Range { .. } => value_is_integer,
            Allowed::OneOf(_) => true,
            Allowed::SocketAddr
            | Allowed::InterfaceName
            | Allowed::Ipv4Net
            | Allowed::CgroupName => false,
        }
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Checks every rule, then the keys that depend on each other ([`check_combinations`]); the
/// first failure is reported, located by `origin_of(key)`.
pub(crate) fn check(
    config: &Config,
    origin_of: impl Fn(&str) -> ValueOrigin,
) -> Result<(), ConfigError> {
    for rule in RULES {
        let value = rule.read(config);
        if !rule.allowed.permits(&value) {
            return Err(ConfigError::Invalid {
                origin: origin_of(rule.key),
                key: rule.key.to_string(),
                value: value.to_toml(),
                allowed: rule.allowed,
            });
        }
    }
    check_combinations(config, origin_of)
}

/// The API's TCP security: `tls_cert` and `tls_key` come together; `tls_client_ca` needs them;
/// a `listen_addr` off loopback needs TLS and a client check (certificates or a token),
/// because whoever reaches the API can run containers as root. Whether the files exist and
/// parse is the daemon's check at start.
fn check_combinations(
    config: &Config,
    origin_of: impl Fn(&str) -> ValueOrigin,
) -> Result<(), ConfigError> {
    let d = &config.daemon;
    let refuse = |key: &str, value: String, reason: String| ConfigError::Combination {
        origin: origin_of(key),
        key: key.to_string(),
        value,
        reason,
    };
    let path_value = |p: &std::path::Path| Checked::Text(&p.to_string_lossy()).to_toml();
    match (d.tls_cert(), d.tls_key()) {
        (Some(cert), None) => {
            return Err(refuse(
                "daemon.tls_cert",
                path_value(cert),
                "daemon.tls_key is not set: TLS needs the certificate's private key too \
                 (set both, or neither)"
                    .into(),
            ))
        }
        (None, Some(key)) => {
            return Err(refuse(
                "daemon.tls_key",
                path_value(key),
                "daemon.tls_cert is not set: TLS needs the certificate too (set both, or \
                 neither)"
                    .into(),
            ))
        }
        _ => {}
    }
    let tls = d.tls_cert().is_some();
    if let (Some(ca), false) = (d.tls_client_ca(), tls) {
        return Err(refuse(
            "daemon.tls_client_ca",
            path_value(ca),
            "client certificates are checked in the TLS handshake, and TLS is off: set \
             daemon.tls_cert and daemon.tls_key too"
                .into(),
        ));
    }
    // An address that does not parse was reported by its rule above.
    let Ok(addr) = d.listen_addr.parse::<SocketAddr>() else {
        return Ok(());
    };
    let client_check = d.tls_client_ca().is_some() || d.api_token_file().is_some();
    if addr.ip().is_loopback() || (tls && client_check) {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !tls {
        missing.push("daemon.tls_cert and daemon.tls_key (the server's PEM certificate and key)");
    }
    if !client_check {
        missing.push(
            "daemon.tls_client_ca (a PEM CA that signs the clients' certificates) or \
             daemon.api_token_file (a file holding a bearer token)",
        );
    }
    Err(refuse(
        "daemon.listen_addr",
        Checked::Text(&d.listen_addr).to_toml(),
        format!(
            "not a loopback address, and whoever reaches the API can run containers as root: \
             off loopback hyperboxd serves only TLS with client authentication; set {}",
            missing.join(", and ")
        ),
    ))
}
