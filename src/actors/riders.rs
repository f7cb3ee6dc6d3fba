//! Rider sessions by rider id: trip actors push `trip_update` and `driver_location` frames to every
//! socket a rider has open. A slow socket loses frames (counted) rather than slowing a trip down.

use dashmap::DashMap;
use metrics::counter;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::protocol::Outbound;
use crate::metrics::WS_FRAMES_DROPPED;

/// Open rider sockets.
#[derive(Default)]
pub struct RiderHub {
    sessions: DashMap<Uuid, Vec<(u64, mpsc::Sender<Outbound>)>>,
}

impl RiderHub {
    /// Registers a socket of `rider`.
    pub fn attach(&self, rider: Uuid, session_id: u64, tx: mpsc::Sender<Outbound>) {
        self.sessions
            .entry(rider)
            .or_default()
            .push((session_id, tx));
    }

    /// Forgets a socket.
    pub fn detach(&self, rider: Uuid, session_id: u64) {
        let emptied = self.sessions.get_mut(&rider).is_some_and(|mut list| {
            list.retain(|(id, _)| *id != session_id);
            list.is_empty()
        });
        if emptied {
            self.sessions.remove_if(&rider, |_, list| list.is_empty());
        }
    }

    /// Sends a frame to every socket of `rider`.
    pub fn send(&self, rider: Uuid, frame: &str) {
        if let Some(list) = self.sessions.get(&rider) {
            for (_, tx) in list.iter() {
                if tx.try_send(Outbound::Text(frame.to_owned())).is_err() {
                    counter!(WS_FRAMES_DROPPED, "role" => "rider").increment(1);
                }
            }
        }
    }

    /// Riders with at least one socket.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no rider is connected.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}
