//! The TOML config file: classification thresholds (the seed's defaults
//! when absent), e.g.
//!
//! ```toml
//! [thresholds]
//! cpu_intensive_pct = 80.0
//! steady_variance = 100.0
//! migration_rate = 5.0
//! cache_miss_ratio = 0.3
//! io_bound_pct = 20.0
//! ```
//!
//! Reads one file and produces a [`Config`]. Missing keys keep their
//! defaults; unknown keys and tables are rejected, and every error names the
//! file, the line and the key.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::analyze::classify::{ThresholdError, Thresholds};

/// Everything the config file can set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Classification thresholds.
    pub thresholds: Thresholds,
}

/// Where in the file a problem is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// Dotted key ("thresholds.io_bound_pct").
    pub key: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, ", line {l}")?;
        }
        if let Some(c) = self.column {
            write!(f, ", column {c}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ", key `{k}`")?;
        }
        Ok(())
    }
}

/// Why the config file could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}; check the path", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The file is not valid TOML, or has unknown or mistyped keys.
    #[error(
        "config file {}{at}: {message}; the file takes a [thresholds] table with numbers \
         for cpu_intensive_pct, steady_variance, migration_rate, cache_miss_ratio, io_bound_pct",
        path.display()
    )]
    Parse {
        path: PathBuf,
        at: Location,
        message: String,
    },
    /// A value is out of range.
    #[error("config file {}{at}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        at: Location,
        source: ThresholdError,
    },
}

impl Config {
    /// Parses and checks config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            at: e
                .span()
                .map_or_else(Location::default, |s| locate(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        config
            .thresholds
            .validate()
            .map_err(|source| ConfigError::Invalid {
                path: path.to_path_buf(),
                at: find_key(text, "thresholds", source.key),
                source,
            })?;
        Ok(config)
    }
}

/// Line, column and the key being defined at byte `offset`.
fn locate(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_no = before.matches('\n').count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    Location {
        line: Some(line_no),
        column: Some(before[line_start..].chars().count() + 1),
        key: key_of_line(line, section_before(text, line_start)),
    }
}

/// The table header in force at byte `pos` ("thresholds"), if any.
fn section_before(text: &str, pos: usize) -> Option<&str> {
    text[..pos].lines().rev().find_map(header)
}

/// "[thresholds]" -> "thresholds" (also "[[x]]").
fn header(line: &str) -> Option<&str> {
    let l = line.trim();
    let inner = l.strip_prefix('[')?.trim_start_matches('[');
    let end = inner.find(']')?;
    Some(inner[..end].trim())
}

/// The dotted key a line defines, or the table a header line opens.
fn key_of_line(line: &str, section: Option<&str>) -> Option<String> {
    if let Some(h) = header(line) {
        return Some(h.to_string());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

/// Where `[section] key = ...` is defined (no line when written in another
/// form, e.g. an inline table).
fn find_key(text: &str, section: &str, key: &str) -> Location {
    let mut current: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(h) = header(line) {
            current = Some(h);
            continue;
        }
        let defines = line
            .split_once('=')
            .is_some_and(|(k, _)| k.trim().trim_matches('"') == key);
        if current == Some(section) && defines {
            return Location {
                line: Some(i + 1),
                column: None,
                key: Some(format!("{section}.{key}")),
            };
        }
    }
    Location {
        key: Some(format!("{section}.{key}")),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tests/fixtures/config/<name>, parsed (cli::load_config opens files).
    fn load(name: &str) -> Result<Config, ConfigError> {
        let text = match name {
            "defaults.toml" => include_str!("../../../tests/fixtures/config/defaults.toml"),
            "partial.toml" => include_str!("../../../tests/fixtures/config/partial.toml"),
            "unknown_key.toml" => include_str!("../../../tests/fixtures/config/unknown_key.toml"),
            "unknown_table.toml" => {
                include_str!("../../../tests/fixtures/config/unknown_table.toml")
            }
            "bad_type.toml" => include_str!("../../../tests/fixtures/config/bad_type.toml"),
            "bad_syntax.toml" => include_str!("../../../tests/fixtures/config/bad_syntax.toml"),
            "out_of_range.toml" => include_str!("../../../tests/fixtures/config/out_of_range.toml"),
            _ => panic!("no config fixture {name:?}"),
        };
        Config::parse(text, Path::new(name))
    }

    fn load_err(name: &str) -> String {
        let e = load(name).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(name), "names the file: {msg}");
        msg
    }

    #[test]
    fn defaults_file_equals_built_in_defaults() {
        let c = load("defaults.toml").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.thresholds.cpu_intensive_pct, 80.0);
        assert_eq!(c.thresholds.cache_miss_ratio, 0.3);
    }

    #[test]
    fn missing_keys_keep_defaults_and_integers_are_accepted() {
        let c = load("partial.toml").unwrap();
        assert_eq!(c.thresholds.cpu_intensive_pct, 90.0);
        assert_eq!(c.thresholds.migration_rate, 2.5);
        assert_eq!(c.thresholds.io_bound_pct, 20.0);
        assert_eq!(
            Config::parse("", Path::new("empty.toml")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_key_is_rejected_with_line_and_key() {
        let msg = load_err("unknown_key.toml");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("key `thresholds.migration_rat`"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
        assert!(
            msg.contains("migration_rate"),
            "lists the valid keys: {msg}"
        );
    }

    #[test]
    fn unknown_table_is_rejected() {
        let msg = load_err("unknown_table.toml");
        assert!(msg.contains("line 1"), "{msg}");
        assert!(msg.contains("key `threshold`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let msg = load_err("bad_type.toml");
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("key `thresholds.io_bound_pct`"), "{msg}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let msg = load_err("bad_syntax.toml");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn out_of_range_value_names_line_and_key() {
        let e = load("out_of_range.toml").unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { .. }));
        let msg = e.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("thresholds.cache_miss_ratio"), "{msg}");
        assert!(msg.contains("between 0 and 1"), "{msg}");
    }

    #[test]
    fn locate_counts_lines_and_columns() {
        let text = "[a]\nx = 1\n  y = 2\n";
        let loc = locate(text, text.find('y').unwrap());
        assert_eq!(loc.line, Some(3));
        assert_eq!(loc.column, Some(3));
        assert_eq!(loc.key.as_deref(), Some("a.y"));
    }
}
