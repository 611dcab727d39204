//! Configuration errors. Every problem names the key, where its value came from and what is
//! allowed, and loading reports all of them at once rather than stopping at the first.

use std::fmt;

/// Where a setting's value came from, so an error tells the operator what to edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML file, by path.
    File(String),
    /// An environment variable, by name.
    Env(String),
    /// Not a single key: the file as a whole could not be read or parsed.
    Whole,
    /// Not given: computed from what is named (other settings, the machine), not a constant
    /// default.
    Derived(&'static str),
}

/// One bad key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key, e.g. `limits.max_width`.
    pub key: String,
    /// Where the bad value was found.
    pub origin: Origin,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File(path) => write!(f, "{} (in {path}): {}", self.key, self.message),
            Origin::Env(var) => write!(f, "{} (from {var}): {}", self.key, self.message),
            Origin::Whole | Origin::Derived(_) => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem found while loading settings; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "invalid setting {e}")?;
        }
        Ok(())
    }
}
