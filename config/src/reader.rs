//! Layered reading of individual keys: environment (`ROSS__SECTION__KEY`) over the TOML file over
//! the built-in default. Each typed getter validates its value and records an error naming the
//! key instead of failing, so one pass reports every bad key. Keys nobody asked for are reported
//! as unknown, which catches typos in both the file and the environment.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use toml::{Table, Value};

use crate::error::{ConfigError, ConfigErrors, Origin};

/// Prefix of every environment variable that overrides a key.
pub const ENV_PREFIX: &str = "ROSS__";

/// The environment variable that overrides a dotted key: `limits.max_width` is
/// `ROSS__LIMITS__MAX_WIDTH`, `data_dir` is `ROSS__DATA_DIR`.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// A value before typing: an environment string or a TOML value from the file.
enum Raw<'a> {
    Env(&'a str),
    File(&'a Value),
}

pub(crate) struct Reader<'a> {
    file: Option<(&'a str, &'a Table)>,
    /// Environment overrides keyed by variable name.
    env: BTreeMap<String, String>,
    used: BTreeSet<String>,
    errors: Vec<ConfigError>,
    /// Where each key given (not defaulted) came from.
    origins: BTreeMap<String, Origin>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(file: Option<(&'a str, &'a Table)>, env: BTreeMap<String, String>) -> Self {
        Reader {
            file,
            env,
            used: BTreeSet::new(),
            errors: Vec::new(),
            origins: BTreeMap::new(),
        }
    }

    /// Where each key read so far came from, when it was not its default.
    pub(crate) fn take_origins(&mut self) -> BTreeMap<String, Origin> {
        std::mem::take(&mut self.origins)
    }

    /// Notes that `key`, if not given, was computed from `from`.
    pub(crate) fn derived(&mut self, key: &str, from: &'static str) {
        self.origins
            .entry(key.to_owned())
            .or_insert(Origin::Derived(from));
    }

    fn lookup(&mut self, key: &str) -> Option<(Raw<'_>, Origin)> {
        self.used.insert(key.to_owned());
        let var = env_name(key);
        if let Some(v) = self.env.get(&var) {
            self.origins
                .insert(key.to_owned(), Origin::Env(var.clone()));
            return Some((Raw::Env(v), Origin::Env(var)));
        }
        let (path, table) = self.file?;
        let mut parts = key.split('.').peekable();
        let mut table = table;
        while let Some(part) = parts.next() {
            let value = table.get(part)?;
            if parts.peek().is_none() {
                self.origins
                    .insert(key.to_owned(), Origin::File(path.to_owned()));
                return Some((Raw::File(value), Origin::File(path.to_owned())));
            }
            table = value.as_table()?;
        }
        None
    }

    fn fail(&mut self, key: &str, origin: Origin, message: String) {
        self.errors.push(ConfigError {
            key: key.to_owned(),
            origin,
            message,
        });
    }

    /// A string key.
    pub(crate) fn string(&mut self, key: &str, default: &str) -> String {
        self.optional_string(key)
            .unwrap_or_else(|| default.to_owned())
    }

    /// A string key without a default.
    pub(crate) fn optional_string(&mut self, key: &str) -> Option<String> {
        let (raw, origin) = self.lookup(key)?;
        let value = match raw {
            Raw::Env(s) => Ok(s.to_owned()),
            Raw::File(Value::String(s)) => Ok(s.clone()),
            Raw::File(other) => Err(format!("expected a string, got {other}")),
        };
        value.map_err(|m| self.fail(key, origin, m)).ok()
    }

    /// A string parsed with `FromStr` (addresses, enums).
    pub(crate) fn parsed<T: FromStr>(&mut self, key: &str, default: T, allowed: &str) -> T
    where
        T::Err: Display,
    {
        let Some(text) = self.optional_string(key) else {
            return default;
        };
        match text.parse() {
            Ok(v) => v,
            Err(e) => {
                let origin = self.origin_of(key);
                self.fail(
                    key,
                    origin,
                    format!("{e}: expected {allowed}, got {text:?}"),
                );
                default
            }
        }
    }

    pub(crate) fn bool(&mut self, key: &str, default: bool) -> bool {
        let Some((raw, origin)) = self.lookup(key) else {
            return default;
        };
        let value = match raw {
            Raw::Env(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("expected true or false, got {s:?}")),
            },
            Raw::File(Value::Boolean(b)) => Ok(*b),
            Raw::File(other) => Err(format!("expected true or false, got {other}")),
        };
        value
            .map_err(|m| self.fail(key, origin, m))
            .unwrap_or(default)
    }

    /// An integer key within `range` (inclusive).
    pub(crate) fn int<T>(&mut self, key: &str, default: T, range: RangeInclusive<i64>) -> T
    where
        T: TryFrom<i64> + Copy,
    {
        let Some((raw, origin)) = self.lookup(key) else {
            return default;
        };
        let number = match raw {
            Raw::Env(s) => s
                .trim()
                .replace('_', "")
                .parse::<i64>()
                .map_err(|_| s.to_owned()),
            Raw::File(Value::Integer(i)) => Ok(*i),
            Raw::File(other) => Err(other.to_string()),
        };
        let (lo, hi) = (*range.start(), *range.end());
        match number {
            Ok(n) if range.contains(&n) => T::try_from(n).unwrap_or(default),
            Ok(n) => {
                self.fail(
                    key,
                    origin,
                    format!("expected an integer from {lo} to {hi}, got {n}"),
                );
                default
            }
            Err(text) => {
                let m = format!("expected an integer from {lo} to {hi}, got {text:?}");
                self.fail(key, origin, m);
                default
            }
        }
    }

    /// A list of strings; in the environment, comma-separated.
    pub(crate) fn list(&mut self, key: &str, default: &[&str]) -> Vec<String> {
        let Some((raw, origin)) = self.lookup(key) else {
            return default.iter().map(|s| (*s).to_owned()).collect();
        };
        let value = match raw {
            Raw::Env(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()),
            Raw::File(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!("expected a list of strings, found {other}")),
                })
                .collect(),
            Raw::File(other) => Err(format!("expected a list of strings, got {other}")),
        };
        value
            .map_err(|m| self.fail(key, origin, m))
            .unwrap_or_else(|()| default.iter().map(|s| (*s).to_owned()).collect())
    }

    /// The names of the tables under `section` (`[cdn.edge]`, `ROSS__CDN__EDGE__KIND`: `edge`),
    /// from the file and the environment, sorted. Names from the environment are lower-cased.
    pub(crate) fn table_names(&self, section: &str) -> Vec<String> {
        let mut names = BTreeSet::new();
        if let Some(Value::Table(tables)) = self.file.and_then(|(_, t)| t.get(section)) {
            for (name, value) in tables {
                if value.is_table() {
                    names.insert(name.clone());
                }
            }
        }
        let prefix = format!("{ENV_PREFIX}{}__", section.to_ascii_uppercase());
        for var in self.env.keys() {
            if let Some((name, _)) = var.strip_prefix(&prefix).and_then(|r| r.split_once("__")) {
                names.insert(name.to_ascii_lowercase());
            }
        }
        names.into_iter().collect()
    }

    /// Records a validation error for a key already read (cross-field checks).
    pub(crate) fn invalid(&mut self, key: &str, message: String) {
        let origin = self.origin_of(key);
        self.fail(key, origin, message);
    }

    fn origin_of(&self, key: &str) -> Origin {
        let var = env_name(key);
        if self.env.contains_key(&var) {
            Origin::Env(var)
        } else if let Some((path, _)) = self.file {
            Origin::File(path.to_owned())
        } else {
            Origin::Whole
        }
    }

    /// Reports keys that were set but never read, then every error collected.
    pub(crate) fn finish(mut self) -> Result<(), ConfigErrors> {
        if let Some((path, table)) = self.file {
            let mut keys = Vec::new();
            leaf_keys(table, "", &mut keys);
            for key in keys {
                if !self.used.contains(&key) {
                    let origin = Origin::File(path.to_owned());
                    self.fail(&key, origin, "unknown key (see ross.example.toml)".into());
                }
            }
        }
        let known: BTreeSet<String> = self.used.iter().map(|k| env_name(k)).collect();
        let unknown: Vec<String> = self
            .env
            .keys()
            .filter(|var| !known.contains(*var))
            .cloned()
            .collect();
        for var in unknown {
            let key = var[ENV_PREFIX.len()..]
                .replace("__", ".")
                .to_ascii_lowercase();
            let origin = Origin::Env(var);
            self.fail(&key, origin, "unknown key (see ross.example.toml)".into());
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

fn leaf_keys(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(inner) => leaf_keys(inner, &key, out),
            _ => out.push(key),
        }
    }
}
