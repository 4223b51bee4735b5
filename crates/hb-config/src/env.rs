//! `HYPERBOX_<SECTION>_<KEY>` environment overrides. Each variable is set in the config's TOML
//! tree, parsed as the kind of value the key already holds (bool, integer, string, list), and the
//! tree is read back into a [`Config`], so the structs stay the one source of keys and types.

use crate::error::{ConfigError, ValueOrigin};
use crate::rules::rule_for;
use crate::Config;

/// Prefix of every override variable.
const PREFIX: &str = "HYPERBOX_";

/// `HYPERBOX_*` variables that other programs read and that are not config keys: hb's
/// address, TLS and token settings are often exported in the shell that also starts the daemon.
pub(crate) const IGNORED_VARIABLES: &[&str] = &[
    "HYPERBOX_HOST",
    "HYPERBOX_CONFIG",
    "HYPERBOX_LOG",
    "HYPERBOX_TLS_VERIFY",
    "HYPERBOX_CERT_PATH",
    "HYPERBOX_TOKEN",
    "HYPERBOX_TOKEN_FILE",
];

/// A key that a variable set, for locating errors.
#[derive(Debug, Clone)]
pub(crate) struct EnvSetting {
    /// Dotted key.
    pub(crate) key: String,
    /// The variable that set it.
    pub(crate) variable: String,
}

/// Returns `config` with the `HYPERBOX_*` variables of `env` applied (all other variables are
/// ignored), and which keys they set. Variables are applied in name order; when a name repeats,
/// its last value wins. Ranges are not checked here.
pub(crate) fn apply(
    config: &Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<EnvSetting>), ConfigError> {
    let mut variables: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX) && !IGNORED_VARIABLES.contains(&name.as_str()))
        .collect();
    if variables.is_empty() {
        return Ok((config.clone(), Vec::new()));
    }
    variables.sort_by(|a, b| a.0.cmp(&b.0));

    let mut tree = toml::Table::try_from(config).map_err(|e| ConfigError::NotRepresentable {
        reason: e.to_string(),
    })?;
    let mut result = config.clone();
    let mut settings = Vec::with_capacity(variables.len());
    for (variable, raw) in variables {
        let refuse = |reason: String| ConfigError::Environment {
            variable: variable.clone(),
            value: raw.clone(),
            reason,
        };
        let (section, key) = split_name(&variable).ok_or_else(|| {
            refuse(format!(
                "names no config key (expected {PREFIX}<SECTION>_<KEY>)"
            ))
        })?;
        let known_sections = tree.keys().cloned().collect::<Vec<_>>().join(", ");
        let table = tree
            .get_mut(&section)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| {
                refuse(format!(
                    "there is no config section [{section}] (sections: {known_sections})"
                ))
            })?;
        let current = table.get(&key).ok_or_else(|| {
            let known_keys = table.keys().cloned().collect::<Vec<_>>().join(", ");
            refuse(format!(
                "there is no key `{key}` in [{section}] (keys: {known_keys})"
            ))
        })?;
        let value = parse_like(current, &raw).map_err(&refuse)?;
        let dotted = format!("{section}.{key}");
        table.insert(key, value.clone());
        result = toml::Value::Table(tree.clone())
            .try_into::<Config>()
            .map_err(|e| match rule_for(&dotted) {
                Some(rule) if rule.allowed.covers_kind(value.is_integer()) => {
                    ConfigError::Invalid {
                        origin: ValueOrigin::Env {
                            variable: variable.clone(),
                        },
                        key: dotted.clone(),
                        value: value.to_string(),
                        allowed: rule.allowed,
                    }
                }
                _ => refuse(e.message().to_string()),
            })?;
        settings.push(EnvSetting {
            key: dotted,
            variable,
        });
    }
    Ok((result, settings))
}

/// `HYPERBOX_CACHE_SIZE_MB` → (`cache`, `size_mb`): the first word is the section (sections have
/// no underscore), the rest the key.
fn split_name(variable: &str) -> Option<(String, String)> {
    let (section, key) = variable.strip_prefix(PREFIX)?.split_once('_')?;
    if section.is_empty() || key.is_empty() {
        return None;
    }
    Some((section.to_ascii_lowercase(), key.to_ascii_lowercase()))
}

/// Parses `raw` as the same kind of TOML value as `current`: booleans take true/false/1/0,
/// integers decimal digits, lists comma-separated strings, anything else the string as is.
fn parse_like(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match current {
        toml::Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err("expected a boolean (true, false, 1 or 0)".into()),
        },
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "expected an integer".into()),
        toml::Value::Array(_) => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_string()))
                .collect(),
        )),
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}
