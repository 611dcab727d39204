//! Which sizes may be rendered. Seeded from `whitelist.*` settings.

use std::collections::BTreeSet;

use ross_config::{Size, WhitelistSettings};

/// The size whitelist.
#[derive(Debug, Clone)]
pub struct Whitelist {
    enabled: bool,
    sizes: BTreeSet<Size>,
}

impl Whitelist {
    /// The whitelist as configured.
    pub fn from_settings(settings: &WhitelistSettings) -> Whitelist {
        Whitelist {
            enabled: settings.enabled,
            sizes: settings.sizes.iter().copied().collect(),
        }
    }

    /// Whether `size` may be rendered.
    pub fn allows(&self, size: Size) -> bool {
        !self.enabled || self.sizes.contains(&size)
    }
}
