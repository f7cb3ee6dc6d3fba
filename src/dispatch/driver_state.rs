//! A driver as the engine sees it: whether it wants work, and where it last said it was.

use serde::{Deserialize, Serialize};

use crate::geo::LatLng;

/// Whether a driver wants work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A driver's last reported position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Where.
    pub point: LatLng,
    /// Degrees clockwise from north, if sent.
    pub heading: Option<f32>,
    /// Metres per second, if sent.
    pub speed_mps: Option<f32>,
    /// When the app says it was taken (epoch ms); the server time when the app sent none.
    pub ts_ms: i64,
    /// When the server received it (epoch ms); freshness is judged by this.
    pub received_ms: i64,
}
