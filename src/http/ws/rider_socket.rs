//! `/ws/rider`: a rider follows its trips. The session authenticates the upgrade like the driver's
//! (header or `token` query parameter; close 1008 on refusal), registers with the rider hub, and
//! sends a `session` frame listing the rider's live trips. Then trip actors push `trip_update` for
//! every transition and `driver_location` while a driver is assigned. Riders send nothing but pings;
//! any text frame gets an error frame and the session goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, ProtocolError, Session};
use metrics::{counter, gauge};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{MAX_FRAME_BYTES, Opened, close, disconnect_reason, open};
use crate::actors::Core;
use crate::actors::protocol::Outbound;
use crate::actors::protocol::error_frame;
use crate::actors::protocol::{self, TripView, Viewer};
use crate::dispatch::Role;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::metrics::{WS_DISCONNECTS, WS_FRAMES_REJECTED, WS_SESSIONS_OPEN};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Live trips listed in the `session` frame.
const SESSION_TRIPS: usize = 20;

/// `GET /ws/rider`.
///
/// # Errors
///
/// 400 when the request is not a WebSocket upgrade.
pub async fn rider_socket(
    req: HttpRequest,
    body: web::Payload,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (response, opened) = open(&req, body, &core, Role::Rider)?;
    if let Some(Opened {
        caller,
        session,
        stream,
    }) = opened
    {
        actix_rt::spawn(run(core.core.clone(), caller.id(), session, stream));
    }
    Ok(response)
}

async fn run(
    core: Core,
    rider_id: Uuid,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let ws = &core.settings.ws;
    let (tx, mut rx) = mpsc::channel(ws.outbound_queue);
    let session_id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    core.riders.attach(rider_id, session_id, tx);
    let live: Vec<TripView> = core
        .trips
        .rider_trips(rider_id, None, SESSION_TRIPS)
        .iter()
        .filter(|t| t.status.is_live())
        .map(|t| TripView::of(t, Viewer::Rider))
        .collect();
    let hello = protocol::rider_session(rider_id, &live);
    if session.text(hello).await.is_err() {
        core.riders.detach(rider_id, session_id);
        return;
    }
    let open = gauge!(WS_SESSIONS_OPEN, "role" => "rider");
    open.increment(1.0);
    let ping_every = Duration::from_secs_f64(ws.ping_interval_s);
    let idle_limit = Duration::from_secs_f64(ws.idle_timeout_s);
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut shutdown = core.shutdown_signal();
    let mut last_heard = Instant::now();
    let end = loop {
        tokio::select! {
            inbound = stream.recv() => {
                let message = match inbound {
                    None => break None,
                    Some(Ok(message)) => message,
                    // The peer vanished or the connection failed: nothing to close.
                    Some(Err(ProtocolError::Io(_))) => break None,
                    Some(Err(ProtocolError::Overflow)) => {
                        counter!(WS_FRAMES_REJECTED, "code" => "frame_too_large").increment(1);
                        break Some((CloseCode::Size, format!("frames are limited to {MAX_FRAME_BYTES} bytes")));
                    }
                    Some(Err(e)) => break Some((CloseCode::Protocol, format!("protocol error: {e}"))),
                };
                last_heard = Instant::now();
                let reply = match message {
                    AggregatedMessage::Text(_) | AggregatedMessage::Binary(_) => {
                        counter!(WS_FRAMES_REJECTED, "code" => "unsupported_frame").increment(1);
                        Some(error_frame("unsupported_frame", "riders receive on this socket; act on trips over HTTP", None))
                    }
                    AggregatedMessage::Ping(bytes) => {
                        if session.pong(&bytes).await.is_err() {
                            break None;
                        }
                        None
                    }
                    AggregatedMessage::Pong(_) => None,
                    AggregatedMessage::Close(_) => break Some((CloseCode::Normal, String::new())),
                };
                if let Some(reply) = reply && session.text(reply).await.is_err() {
                    break None;
                }
            }
            outbound = rx.recv() => match outbound {
                Some(Outbound::Text(text)) => {
                    if session.text(text).await.is_err() {
                        break None;
                    }
                }
                Some(Outbound::Close(code, reason)) => break Some((CloseCode::from(code), reason)),
                None => break None,
            },
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > idle_limit {
                    break Some((CloseCode::Normal, "idle timeout".into()));
                }
                if session.ping(b"").await.is_err() {
                    break None;
                }
            }
            _ = shutdown.changed() => break Some((CloseCode::Away, "server shutting down".into())),
        }
    };
    core.riders.detach(rider_id, session_id);
    open.decrement(1.0);
    let reason = disconnect_reason(end.as_ref().map(|(code, text)| (*code, text.as_str())));
    counter!(WS_DISCONNECTS, "role" => "rider", "reason" => reason).increment(1);
    if let Some((code, reason)) = end {
        close(session, code, reason).await;
    }
}
