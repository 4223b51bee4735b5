//! The config file's text: parsing it into a [`Config`] and turning the parser's byte positions
//! into `file:line` and dotted key paths (through `toml_edit`'s spanned document).

use std::ops::Range;

use toml_edit::{Document, TableLike};

use crate::error::{ConfigError, ValueOrigin};
use crate::rules::rule_for;
use crate::Config;

/// Parses `text` into a [`Config`] (without range validation). `file` names the text in errors.
pub(crate) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let error = match toml::from_str::<Config>(text) {
        Ok(config) => return Ok(config),
        Err(error) => error,
    };
    let span = error.span();
    let line = span.as_ref().map(|s| line_of(text, s.start));
    let mut message = error.message().trim().to_string();
    let parse_error = |key: Option<String>, message: String| ConfigError::Parse {
        file: file.to_string(),
        line,
        key,
        message,
    };

    let Ok(document) = Document::parse(text) else {
        // Not TOML: a syntax error or a repeated key.
        let is_duplicate = message.contains("duplicate");
        if is_duplicate && !message.contains("duplicate key") {
            message = format!("duplicate key: {message}");
        }
        let key = match span {
            Some(span) if is_duplicate => duplicate_key_path(text, span),
            _ => None,
        };
        return Err(parse_error(key, message));
    };

    // TOML, but not this config's shape: find the key the error points at.
    let Some(found) = span.and_then(|span| key_at(document.as_table(), span.start, "")) else {
        return Err(parse_error(None, message));
    };
    let value_is_integer = matches!(found.value, Some(toml_edit::Value::Integer(_)));
    if let (Some(rule), Some(value)) = (rule_for(&found.path), &found.value) {
        if rule.allowed.covers_kind(value_is_integer) {
            return Err(ConfigError::Invalid {
                origin: ValueOrigin::File {
                    path: file.to_string(),
                    line: Some(line_of(text, found.key_start)),
                },
                key: found.path,
                value: as_written(text, value),
                allowed: rule.allowed,
            });
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field") {
        message = format!("unknown key{rest}");
    }
    Err(parse_error(Some(found.path), message))
}

/// The 1-based line of dotted `key` in `text`, if the text is TOML and holds the key.
pub(crate) fn key_line(text: &str, key: &str) -> Option<usize> {
    let document = Document::parse(text).ok()?;
    let mut table: &dyn TableLike = document.as_table();
    let mut segments = key.split('.').peekable();
    while let Some(segment) = segments.next() {
        let (found_key, item) = table.get_key_value(segment)?;
        if segments.peek().is_none() {
            return Some(line_of(text, found_key.span()?.start));
        }
        table = item.as_table_like()?;
    }
    None
}

/// 1-based line of byte offset `byte` in `text`.
pub(crate) fn line_of(text: &str, byte: usize) -> usize {
    let before = text.as_bytes().get(..byte).unwrap_or(text.as_bytes());
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// The key an error position falls on.
struct KeyAtPosition {
    /// Dotted path from the document root.
    path: String,
    /// Byte offset where the key itself starts.
    key_start: usize,
    /// The key's value, when it is a plain value rather than a table.
    value: Option<toml_edit::Value>,
}

/// The deepest key whose name or value spans byte `position`.
fn key_at(table: &dyn TableLike, position: usize, prefix: &str) -> Option<KeyAtPosition> {
    let covers = |span: Option<Range<usize>>| {
        span.is_some_and(|s| s.contains(&position) || s.start == position)
    };
    for (name, item) in table.iter() {
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        if let Some(inner) = item.as_table_like() {
            if let Some(found) = key_at(inner, position, &path) {
                return Some(found);
            }
        }
        let key_span = table.get_key_value(name).and_then(|(key, _)| key.span());
        if covers(key_span.clone()) || covers(item.span()) {
            return Some(KeyAtPosition {
                path,
                key_start: key_span.map_or(position, |s| s.start),
                value: item.as_value().cloned(),
            });
        }
    }
    None
}

/// The dotted path of a repeated key (or table header) whose second occurrence is at `span`.
/// The text does not parse as it is, so the repeat is renamed to a placeholder of the same length
/// (keeping every offset) and the placeholder's path is looked up in the patched document.
fn duplicate_key_path(text: &str, span: Range<usize>) -> Option<String> {
    let written = text.get(span.clone())?.trim();
    let name = written.trim_matches(|c| c == '"' || c == '\'');
    if name.is_empty() {
        return None;
    }
    let length = span.end - span.start;
    for filler in ['_', '-', 'Z', 'Q', 'X', 'J'] {
        let placeholder: String = std::iter::repeat_n(filler, length).collect();
        let patched = format!(
            "{}{placeholder}{}",
            text.get(..span.start)?,
            text.get(span.end..)?
        );
        let Ok(document) = Document::parse(patched) else {
            continue;
        };
        if let Some(found) = key_at(document.as_table(), span.start, "") {
            let path = match found.path.strip_suffix(placeholder.as_str()) {
                Some(parent) => format!("{parent}{name}"),
                None => found.path,
            };
            return Some(path);
        }
    }
    Some(name.to_string())
}

/// A value as written in `text`, without surrounding whitespace or comments.
fn as_written(text: &str, value: &toml_edit::Value) -> String {
    value
        .span()
        .and_then(|span| text.get(span))
        .map_or_else(|| value.type_name().to_string(), |s| s.trim().to_string())
}
