//! The crate's one error type, [`ConfigError`], and what it reports: where a value came from
//! ([`ValueOrigin`]) and what a key allows ([`Allowed`]).

use std::fmt;
use std::path::PathBuf;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read config file {}: {error}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        error: std::io::Error,
    },
    /// The file is not TOML, repeats a key, has a key the config does not know, or a value of the
    /// wrong type.
    #[error("{}{message}", parse_prefix(.file, *.line, .key))]
    Parse {
        /// The file, as named by the caller.
        file: String,
        /// 1-based line of the problem, when the parser gave a position.
        line: Option<usize>,
        /// Dotted key path (`cache.size_mb`), when the problem is at a key.
        key: Option<String>,
        /// The parser's words.
        message: String,
    },
    /// A value outside its range, or not one of the values a key allows.
    #[error("{}{key} = {value} is {} (allowed {allowed})", origin.prefix(), allowed.verdict())]
    Invalid {
        /// Where the value came from.
        origin: ValueOrigin,
        /// Dotted key, `cache.size_mb`.
        key: String,
        /// The value as TOML (`99999`, `"md5"`).
        value: String,
        /// What the key allows.
        allowed: Allowed,
    },
    /// Keys that are valid one by one but not together: a TLS certificate without its key,
    /// client certificates without TLS, a non-loopback `listen_addr` without TLS and client
    /// authentication. `key` is the key the problem is reported at; `reason` names the keys to
    /// set.
    #[error("{}{key} = {value}: {reason}", origin.prefix())]
    Combination {
        /// Where `key`'s value came from.
        origin: ValueOrigin,
        /// Dotted key, `daemon.listen_addr`.
        key: String,
        /// Its value as TOML.
        value: String,
        /// What is missing, naming the keys to set.
        reason: String,
    },
    /// A `HYPERBOX_*` variable that names no config key, or whose value is not of the key's type.
    #[error("{variable}={value}: {reason}")]
    Environment {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// What is wrong, with the expected type or the known keys.
        reason: String,
    },
    /// The configuration holds something TOML cannot express (a path that is not UTF-8); only
    /// possible for values set in code.
    #[error("the configuration cannot be written as TOML: {reason}")]
    NotRepresentable {
        /// The serializer's words.
        reason: String,
    },
}

/// `file:line: key: ` with the parts that are known.
fn parse_prefix(file: &str, line: Option<usize>, key: &Option<String>) -> String {
    let mut prefix = match line {
        Some(line) => format!("{file}:{line}: "),
        None => format!("{file}: "),
    };
    if let Some(key) = key {
        prefix.push_str(key);
        prefix.push_str(": ");
    }
    prefix
}

/// Where a configured value came from, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueOrigin {
    /// The config file; `line` is 1-based, when the key was found in the text.
    File {
        /// The file, as named by the caller.
        path: String,
        /// 1-based line of the key.
        line: Option<usize>,
    },
    /// A `HYPERBOX_*` environment variable.
    Env {
        /// The variable's name.
        variable: String,
    },
    /// Neither: a built-in default or a value the program set.
    Builtin,
}

impl ValueOrigin {
    /// The origin as a message prefix: `file:line: `, `VARIABLE: `, or nothing.
    fn prefix(&self) -> String {
        match self {
            ValueOrigin::File {
                path,
                line: Some(line),
            } => format!("{path}:{line}: "),
            ValueOrigin::File { path, line: None } => format!("{path}: "),
            ValueOrigin::Env { variable } => format!("{variable}: "),
            ValueOrigin::Builtin => String::new(),
        }
    }
}

/// What a key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// An integer in `min..=max`.
    Range {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A string that parses as a socket address (`ip:port`).
    SocketAddr,
    /// A network interface name (1 to 15 of `[A-Za-z0-9_.-]`).
    InterfaceName,
    /// An IPv4 network in CIDR form with a prefix of 8 to 24 bits (`10.89.0.0/16`).
    Ipv4Net,
    /// A cgroup path component (`[A-Za-z0-9_.-]+`, not `.` or `..`).
    CgroupName,
}

impl Allowed {
    /// How a value that breaks this rule is described.
    fn verdict(&self) -> &'static str {
        match self {
            Allowed::Range { .. } => "out of range",
            _ => "not allowed",
        }
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Range { min, max } => write!(f, "{min}..={max}"),
            Allowed::OneOf(names) => write!(f, "one of {}", names.join(", ")),
            Allowed::SocketAddr => f.write_str("an ip:port socket address such as 127.0.0.1:9999"),
            Allowed::InterfaceName => {
                f.write_str("an interface name of 1 to 15 letters, digits, '_', '.' or '-'")
            }
            Allowed::Ipv4Net => {
                f.write_str("an IPv4 network with a /8 to /24 prefix such as 10.89.0.0/16")
            }
            Allowed::CgroupName => f.write_str("a name of letters, digits, '_', '.' or '-'"),
        }
    }
}
