//! Calls between instances sharing a map (SPEC §11, docs/adr/0002): one HTTP client per worker
//! thread with a connection pool to every peer, and the driver handoff an instance makes before
//! it tells a driver to move.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::geo::Peer;

thread_local! {
    static CLIENT: awc::Client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .connector(awc::Connector::new().timeout(Duration::from_secs(2)))
        .finish();
}

/// Runs `f` with this thread's client to the peers.
pub fn with_client<R>(f: impl FnOnce(&awc::Client) -> R) -> R {
    CLIENT.with(f)
}

/// A driver handed to the instance owning the region it drove into: what that instance needs
/// to take the driver on with its status intact (`POST /api/cluster/handoff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// The driver.
    pub driver_id: Uuid,
    /// Its vehicle type.
    pub vehicle_type: String,
    /// Whether it is online.
    pub online: bool,
    /// Latitude of its last position.
    pub lat: f64,
    /// Longitude of its last position.
    pub lng: f64,
    /// Heading, degrees.
    #[serde(default)]
    pub heading: Option<f32>,
    /// Speed, m/s.
    #[serde(default)]
    pub speed_mps: Option<f32>,
    /// When the app took the position, epoch ms.
    pub ts_ms: i64,
    /// When the engine received it, epoch ms.
    pub received_ms: i64,
}

/// Hands `handoff` to `owner`, authenticated with `token` (an operator's).
///
/// # Errors
///
/// Why the peer did not take it.
pub async fn hand_off(owner: &Peer, token: &str, handoff: &Handoff) -> Result<(), String> {
    let request = with_client(|c| {
        c.post(format!("{}/api/cluster/handoff", owner.url))
            .bearer_auth(token)
    });
    let response = request
        .send_json(handoff)
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{} answered {}", owner.id, response.status()))
    }
}

/// The socket URL of `peer`'s driver endpoint (`http` → `ws`, `https` → `wss`).
#[must_use]
pub fn driver_socket_url(peer: &Peer) -> String {
    let url = peer.url.trim_end_matches('/');
    match url.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}/ws/driver"),
        None => format!(
            "ws://{}/ws/driver",
            url.strip_prefix("http://").unwrap_or(url)
        ),
    }
}
