//! Calls between instances sharing a map (SPEC §11, docs/adr/0002): one HTTP client per worker
//! thread with a connection pool to every peer; the driver handoff an instance makes before it
//! tells a driver to move; and an offer crossing a region boundary — the trip's instance offers
//! a driver held by another, which answers for its driver (delivered or not, declined, accepted)
//! and withdraws when the trip says so.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::protocol::{OfferEnd, OfferTerms};
use crate::geo::Peer;

/// The mark on a query one instance asks another to answer from its own drivers alone.
pub const LOCAL_ONLY_HEADER: &str = "Hexdispatch-Local-Only";

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A trip of the calling instance offers itself to a driver this instance holds
/// (`POST /api/cluster/offers`); answered with [`RemoteOfferReply`].
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoteOffer {
    /// The driver offered.
    pub driver_id: Uuid,
    /// What is offered.
    pub terms: OfferTerms,
    /// When the trip withdraws the offer, epoch ms.
    pub expires_ms: i64,
    /// The instance running the trip.
    pub from: String,
}

/// Whether a remote offer reached the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RemoteOfferReply {
    /// The driver holds it now.
    Delivered,
    /// The driver holds another offer or a trip, or is offline.
    Busy,
    /// The driver cannot be reached now.
    Unreachable,
}

/// The trip ended a remote offer (`POST /api/cluster/withdrawals`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoteWithdraw {
    /// The driver holding the offer.
    pub driver_id: Uuid,
    /// The trip.
    pub trip_id: Uuid,
    /// Why.
    pub reason: OfferEnd,
}

/// A driver declined a remote offer (`POST /api/cluster/declines`, to the trip's instance).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoteDecline {
    /// The trip.
    pub trip_id: Uuid,
    /// The driver.
    pub driver_id: Uuid,
}

/// A driver accepted a remote offer (`POST /api/cluster/accepts`, to the trip's instance): it
/// comes with the driver's state, because a driver on a trip lives on the trip's instance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoteAccept {
    /// The trip.
    pub trip_id: Uuid,
    /// What was offered (the trip's instance checks it against the trip).
    pub terms: OfferTerms,
    /// When the offer expires, epoch ms.
    pub expires_ms: i64,
    /// The driver and where it is.
    pub driver: Handoff,
}

/// How a remote accept ended.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RemoteAcceptAnswer {
    /// The driver won: the trip as its driver sees it.
    Won {
        /// The trip, as the `trip` of a `trip_assigned` frame.
        #[schema(value_type = crate::actors::protocol::TripView)]
        trip: serde_json::Value,
    },
    /// The offer had ended.
    Lost {
        /// How.
        reason: OfferEnd,
    },
}

/// A driver of the calling instance became free near this instance's regions
/// (`POST /api/cluster/free`): this instance's waiting trips in reach may offer it.
/// `{"offered": bool}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoteFree {
    /// The driver.
    pub driver_id: Uuid,
    /// Where it is.
    pub lat: f64,
    /// Where it is.
    pub lng: f64,
    /// Its vehicle type.
    pub vehicle_type: String,
    /// The instance holding it.
    pub from: String,
}

/// POSTs `body` to `path` on `peer` and reads its JSON answer (`None` for a 204).
///
/// # Errors
///
/// Why the peer did not answer with a success.
pub async fn call<T: Serialize, R: DeserializeOwned>(
    peer: &Peer,
    path: &str,
    token: &str,
    body: &T,
) -> Result<Option<R>, String> {
    let request = with_client(|c| c.post(format!("{}{path}", peer.url)).bearer_auth(token));
    let mut response = request.send_json(body).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{} answered {}", peer.id, response.status()));
    }
    if response.status() == awc::http::StatusCode::NO_CONTENT {
        return Ok(None);
    }
    response
        .json::<R>()
        .limit(1 << 20)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The nearest available drivers `peer` itself holds around a point, `(driver, metres)`.
///
/// # Errors
///
/// Why the peer did not answer.
pub async fn nearby_there(
    peer: &Peer,
    token: &str,
    query: &str,
) -> Result<Vec<(Uuid, f64)>, String> {
    let request = with_client(|c| {
        c.get(format!("{}/api/locations/nearby?{query}", peer.url))
            .bearer_auth(token)
            .insert_header((LOCAL_ONLY_HEADER, "1"))
    });
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{} answered {}", peer.id, response.status()));
    }
    let body: serde_json::Value = response
        .json()
        .limit(1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body["drivers"]
        .as_array()
        .map(|drivers| {
            drivers
                .iter()
                .filter_map(|d| {
                    let id = d["driver_id"].as_str()?.parse().ok()?;
                    Some((id, d["distance_m"].as_f64()?))
                })
                .collect()
        })
        .unwrap_or_default())
}
