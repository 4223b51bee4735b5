//! `hb-config`: HyperBox's one typed configuration tree. The TOML file, the `HYPERBOX_*`
//! environment and the built-in defaults all go through [`Config`]; [`Config::validate`] checks
//! every range from one table, and every error names the key, the value, what is allowed and
//! where the value came from (`file:line` or the environment variable).
//!
//! This file owns [`Config`] and its entry points; the sections are in `sections.rs`, the ranges
//! in `rules.rs`, file parsing and positions in `file.rs`, the environment in `env.rs`.

#![warn(missing_docs)]

use std::path::Path;

use serde::{Deserialize, Serialize};

mod env;
mod error;
mod file;
mod rules;
mod sections;
#[cfg(test)]
mod tests;

pub use error::{Allowed, ConfigError, ValueOrigin};
pub use sections::{
    CacheConfig, DaemonConfig, DeduplicationConfig, HashAlgorithm, MonitoringConfig,
    NetworkingConfig, PredictionConfig, PrewarmTechnique, PrewarmingConfig,
};

/// The whole configuration, one field per `[section]` of the TOML file.
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
    /// `[networking]`: connection limits.
    pub networking: NetworkingConfig,
    /// `[monitoring]`: metrics.
    pub monitoring: MonitoringConfig,
}

impl Config {
    /// Default path of the config file.
    pub const DEFAULT_PATH: &'static str = "/etc/hyperbox/hyperbox.toml";

    /// Parses TOML text; `origin` names the file in errors. Keys left out take their defaults.
    /// Validates.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = file::parse(text, origin)?;
        rules::check(&config, |key| file_origin(text, origin, key))?;
        Ok(config)
    }

    /// Loads the config: if `path` is `Some`, that file must exist; if `None`,
    /// [`Config::DEFAULT_PATH`] is read when it exists, else the built-in defaults are used.
    /// Then applies the `HYPERBOX_*` overrides from `env` (pairs like `std::env::vars()`), then
    /// validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::load_with_default(path, Path::new(Self::DEFAULT_PATH), env)
    }

    /// [`Config::load`] with the default file's path as a parameter.
    fn load_with_default(
        path: Option<&Path>,
        default_path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let unreadable = |path: &Path, error| ConfigError::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        let file = match path {
            Some(path) => Some((
                path,
                std::fs::read_to_string(path).map_err(|e| unreadable(path, e))?,
            )),
            None => match std::fs::read_to_string(default_path) {
                Ok(text) => Some((default_path, text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(unreadable(default_path, e)),
            },
        };
        let file = file.map(|(path, text)| (path.display().to_string(), text));
        let from_file = match &file {
            Some((name, text)) => file::parse(text, name)?,
            None => Config::default(),
        };
        let (config, settings) = env::apply(&from_file, env)?;
        rules::check(&config, |key| {
            if let Some(setting) = settings.iter().rev().find(|s| s.key == key) {
                return ValueOrigin::Env {
                    variable: setting.variable.clone(),
                };
            }
            match &file {
                Some((name, text)) => file_origin(text, name, key),
                None => ValueOrigin::Builtin,
            }
        })?;
        Ok(config)
    }

    /// Applies the `HYPERBOX_<SECTION>_<KEY>` variables of `env` (all others, and
    /// `HYPERBOX_HOST`, `HYPERBOX_CONFIG`, `HYPERBOX_LOG` and hb's `HYPERBOX_TLS_VERIFY`,
    /// `HYPERBOX_CERT_PATH`, `HYPERBOX_TOKEN`, `HYPERBOX_TOKEN_FILE`, are ignored) and
    /// re-validates.
    /// On error `self` is left unchanged.
    pub fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let (config, settings) = env::apply(self, env)?;
        rules::check(&config, |key| {
            match settings.iter().rev().find(|s| s.key == key) {
                Some(setting) => ValueOrigin::Env {
                    variable: setting.variable.clone(),
                },
                None => ValueOrigin::Builtin,
            }
        })?;
        *self = config;
        Ok(())
    }

    /// Checks every range and enumerated value; the error names the key, the value and what is
    /// allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        rules::check(self, |_| ValueOrigin::Builtin)
    }

    /// The effective config as TOML text that [`Config::from_toml_str`] accepts back.
    ///
    /// Anything loaded from a file or the environment can be written. A config set in code that
    /// TOML cannot express (a path that is not UTF-8) comes out as a comment saying why plus a
    /// key that makes reading it back fail, never as different settings.
    pub fn to_toml(&self) -> String {
        match toml::to_string(self) {
            Ok(text) => text,
            Err(e) => format!(
                "# {}\nnot_representable = true\n",
                ConfigError::NotRepresentable {
                    reason: e.to_string()
                }
            ),
        }
    }
}

/// Where `key`'s value came from when it was read from the file `name` holding `text`.
fn file_origin(text: &str, name: &str, key: &str) -> ValueOrigin {
    match file::key_line(text, key) {
        Some(line) => ValueOrigin::File {
            path: name.to_string(),
            line: Some(line),
        },
        // Not in the file: the built-in default.
        None => ValueOrigin::Builtin,
    }
}
