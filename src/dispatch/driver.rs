//! Driver states as the engine sees them.

use serde::{Deserialize, Serialize};

/// Whether a driver wants work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverStatus {
    /// Not taking trips; not in the index.
    #[default]
    Offline,
    /// Taking trips; in the index once it has a fresh position.
    Online,
}

impl DriverStatus {
    /// Parses `online` / `offline`.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "online" => Some(Self::Online),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }

    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}
