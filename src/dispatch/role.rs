//! Who a user is to the engine: a rider, a driver or an operator. Tokens carry it, the store keeps
//! it with the account, and authorization rules read it.

use serde::{Deserialize, Serialize};

/// Who the bearer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Requests and follows trips.
    Rider,
    /// Streams positions and serves trips.
    Driver,
    /// Watches everything, changes no trip.
    Operator,
}

impl Role {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rider => "rider",
            Self::Driver => "driver",
            Self::Operator => "operator",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "rider" => Ok(Self::Rider),
            "driver" => Ok(Self::Driver),
            "operator" => Ok(Self::Operator),
            other => Err(format!("unknown role {other:?}: rider, driver or operator")),
        }
    }
}
