//! `/ws/driver`: one session per driver socket, on actix-ws.
//!
//! The session authenticates the upgrade (token in the `Authorization` header or the `token` query
//! parameter; a bad one gets close 1008), attaches to the driver's actor (a reconnect finds the
//! same actor) and sends a `session` frame. Then it loops over three things: inbound frames,
//! parsed and forwarded to the actor (`location` with `try_send`, fire and forget); outbound
//! frames the actor queued for this socket; and a heartbeat that pings every `ws.ping_interval_s`
//! and drops a socket silent for `ws.idle_timeout_s`. Bad frames get an error frame and the
//! session goes on; frames over 16 KiB close it with 1009. On close it detaches from the actor,
//! which keeps the driver (and, later, its trip) alive without it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, ProtocolError, Session};
use metrics::{counter, gauge};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::inbound::{DriverCommand, parse_driver_frame};
use super::{MAX_FRAME_BYTES, Opened, close, disconnect_reason, open};
use crate::actors::Core;
use crate::actors::driver::{
    Answer, AnswerError, Attach, Detach, DriverActor, GetSnapshot, Location, Respond, SessionLink,
    SetStatus,
};
use crate::actors::protocol;
use crate::actors::protocol::{DriverSnapshot, Outbound};
use crate::actors::protocol::{TripView, Viewer};
use crate::actors::protocol::{error_frame, session_frame, with_ref};
use crate::actors::trip::DriverAction;
use crate::dispatch::Role;
use crate::http::AppState;
use crate::http::driver_routes::own_actor;
use crate::http::error::ApiError;
use crate::http::trip_routes::answer_error;
use crate::metrics::{
    LOCATION_UPDATES, LOCATION_UPDATES_DROPPED, WS_DISCONNECTS, WS_FRAMES_REJECTED,
    WS_SESSIONS_OPEN,
};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// `GET /ws/driver`: upgrades, then authenticates inside the socket so a refusal is a close frame.
///
/// # Errors
///
/// 400 when the request is not a WebSocket upgrade.
pub async fn driver_socket(
    req: HttpRequest,
    body: web::Payload,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (response, opened) = open(&req, body, &core, Role::Driver)?;
    if let Some(Opened {
        caller,
        session,
        stream,
    }) = opened
    {
        match own_actor(&core, &caller) {
            Ok(actor) => {
                actix_rt::spawn(run(core.core.clone(), caller.id(), actor, session, stream));
            }
            Err(refused) => {
                actix_rt::spawn(close(session, CloseCode::Policy, refused.message));
            }
        }
    }
    Ok(response)
}

/// Why the loop ended, and what to tell the client.
enum End {
    Close(CloseCode, String),
    Gone,
}

async fn run(
    core: Core,
    driver_id: Uuid,
    mut actor: Addr<DriverActor>,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let ws = &core.settings.ws;
    let (tx, mut rx) = mpsc::channel(ws.outbound_queue);
    let link = SessionLink {
        id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
        tx,
    };
    let Ok(snapshot) = actor.send(Attach(link.clone())).await else {
        close(session, CloseCode::Error, "driver unavailable".into()).await;
        return;
    };
    if session
        .text(session_frame(
            &snapshot,
            active_trip(&core, &snapshot).as_ref(),
            None,
        ))
        .await
        .is_err()
    {
        actor.do_send(Detach {
            session_id: link.id,
        });
        return;
    }
    let open = gauge!(WS_SESSIONS_OPEN, "role" => "driver");
    open.increment(1.0);
    let accepted = counter!(LOCATION_UPDATES, "source" => "ws");
    let dropped = counter!(LOCATION_UPDATES_DROPPED, "reason" => "driver_mailbox_full");
    let limited = counter!(LOCATION_UPDATES_DROPPED, "reason" => "rate_limited");
    // Frames above the driver's rate are dropped: the next one carries a newer position anyway.
    let mut budget =
        crate::http::limits::FrameBudget::new(core.settings.limits.locations_per_driver_per_s);
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
                    None => break End::Gone,
                    Some(Ok(message)) => message,
                    // The peer vanished or the connection failed: nothing to close.
                    Some(Err(ProtocolError::Io(_))) => break End::Gone,
                    Some(Err(ProtocolError::Overflow)) => {
                        counter!(WS_FRAMES_REJECTED, "code" => "frame_too_large").increment(1);
                        break End::Close(CloseCode::Size, format!("frames are limited to {MAX_FRAME_BYTES} bytes"));
                    }
                    Some(Err(e)) => break End::Close(CloseCode::Protocol, format!("protocol error: {e}")),
                };
                last_heard = Instant::now();
                match message {
                    AggregatedMessage::Text(text) => {
                        let parsed = parse_driver_frame(&text);
                        let reference = parsed.reference.as_deref();
                        let reply = match parsed.command {
                            Err(e) => Some(reject(e.code, &e.message, reference)),
                            Ok(DriverCommand::Location(_)) if !budget.take() => {
                                limited.increment(1);
                                None
                            }
                            Ok(DriverCommand::Location(update)) => {
                                match actor.try_send(Location(update)) {
                                    Ok(()) => accepted.increment(1),
                                    Err(actix::prelude::SendError::Full(_)) => dropped.increment(1),
                                    Err(actix::prelude::SendError::Closed(msg)) => {
                                        // The actor stopped under us (engine stopping): find or start it again.
                                        match reattach(&core, driver_id, &link).await {
                                            Some(fresh) => { actor = fresh; let _ = actor.try_send(msg); }
                                            None => break End::Close(CloseCode::Away, "driver unavailable".into()),
                                        }
                                    }
                                }
                                None
                            }
                            Ok(DriverCommand::Status(status)) => match actor.send(SetStatus(status)).await {
                                Ok(snapshot) => Some(session_frame(&snapshot, active_trip(&core, &snapshot).as_ref(), reference)),
                                Err(_) => break End::Close(CloseCode::Away, "driver unavailable".into()),
                            },
                            Ok(DriverCommand::Accept(trip)) => Some(answer(&core, driver_id, &actor, trip, true, reference).await),
                            Ok(DriverCommand::Decline(trip)) => Some(answer(&core, driver_id, &actor, trip, false, reference).await),
                            Ok(DriverCommand::Arrived(trip)) => Some(act(&core, &actor, driver_id, trip, DriverAction::Arrive, reference).await),
                            Ok(DriverCommand::Start(trip, pin)) => Some(act(&core, &actor, driver_id, trip, DriverAction::Start(pin), reference).await),
                            Ok(DriverCommand::Complete(trip)) => Some(act(&core, &actor, driver_id, trip, DriverAction::Complete, reference).await),
                            Ok(DriverCommand::Cancel(trip)) => Some(act(&core, &actor, driver_id, trip, DriverAction::Cancel, reference).await),
                        };
                        if let Some(reply) = reply
                            && session.text(reply).await.is_err()
                        {
                            break End::Gone;
                        }
                    }
                    AggregatedMessage::Binary(_) => {
                        if session.text(reject("unsupported_frame", "send JSON in text frames", None)).await.is_err() {
                            break End::Gone;
                        }
                    }
                    AggregatedMessage::Ping(bytes) => {
                        if session.pong(&bytes).await.is_err() {
                            break End::Gone;
                        }
                    }
                    AggregatedMessage::Pong(_) => {}
                    AggregatedMessage::Close(_) => break End::Close(CloseCode::Normal, String::new()),
                }
            }
            outbound = rx.recv() => match outbound {
                Some(Outbound::Text(text)) => {
                    if session.text(text).await.is_err() {
                        break End::Gone;
                    }
                }
                Some(Outbound::Close(code, reason)) => break End::Close(CloseCode::from(code), reason),
                None => break End::Gone,
            },
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > idle_limit {
                    break End::Close(CloseCode::Normal, "idle timeout".into());
                }
                if session.ping(b"").await.is_err() {
                    break End::Gone;
                }
            }
            _ = shutdown.changed() => break End::Close(CloseCode::Away, "server shutting down".into()),
        }
    };

    actor.do_send(Detach {
        session_id: link.id,
    });
    open.decrement(1.0);
    let reason = match &end {
        End::Gone => disconnect_reason(None),
        End::Close(code, text) => disconnect_reason(Some((*code, text.as_str()))),
    };
    counter!(WS_DISCONNECTS, "role" => "driver", "reason" => reason).increment(1);
    if let End::Close(code, reason) = end {
        close(session, code, reason).await;
    }
}

/// The driver's active trip, for its `session` frame.
fn active_trip(core: &Core, snapshot: &DriverSnapshot) -> Option<TripView> {
    let trip = core.trips.get(snapshot.current_trip?)?;
    Some(TripView::of(&trip, Viewer::Driver))
}

/// `accept` / `decline`: `trip_assigned` or `accept_rejected` (accept), `offer_cancelled` with
/// reason `declined` (decline), or an error frame.
async fn answer(
    core: &Core,
    driver_id: Uuid,
    actor: &Addr<DriverActor>,
    trip_id: Uuid,
    accept: bool,
    reference: Option<&RawValue>,
) -> String {
    match actor
        .send(Respond {
            trip_id,
            accept,
            request_id: None,
            traceparent: crate::telemetry::current_traceparent(),
        })
        .await
    {
        Ok(Ok(Answer::Assigned(trip))) => with_ref(protocol::trip_assigned(&trip), reference),
        Ok(Ok(Answer::AssignedThere(trip))) => with_ref(
            serde_json::json!({"type": "trip_assigned", "trip": trip}),
            reference,
        ),
        Ok(Ok(Answer::Declined)) => with_ref(
            protocol::offer_cancelled(trip_id, protocol::OfferEnd::Declined),
            reference,
        ),
        Ok(Err(AnswerError::Gone(reason))) if accept => {
            with_ref(protocol::accept_rejected(trip_id, reason), reference)
        }
        Ok(Err(AnswerError::Assigned)) if accept => match core.trips.get(trip_id) {
            Some(trip) => with_ref(protocol::trip_assigned(&trip), reference),
            None => reject("trip_not_found", "the trip is gone", reference),
        },
        Ok(Err(e)) => {
            let error = answer_error(core, e, trip_id, driver_id, accept);
            reject(error.code, &error.message, reference)
        }
        Err(_) => reject(
            "driver_unavailable",
            "the driver is restarting; retry",
            reference,
        ),
    }
}

/// `arrived` / `start` / `complete` / `cancel`: a `trip_update` with the new status (for a
/// cancel, `released: true`), or an error frame.
async fn act(
    core: &Core,
    actor: &Addr<DriverActor>,
    driver_id: Uuid,
    trip_id: Uuid,
    action: DriverAction,
    reference: Option<&RawValue>,
) -> String {
    let cancel = action == DriverAction::Cancel;
    // Positions sent before this frame went through the driver actor; wait until it has passed
    // them on, so the trip sees the whole trail before, say, the completion that prices it.
    let _ = actor.send(GetSnapshot).await;
    match core
        .drive(driver_id, trip_id, action, true, None)
        .await
        .map_err(ApiError::from)
    {
        Ok(_) if cancel => with_ref(protocol::driver_released(trip_id), reference),
        Ok(trip) => with_ref(protocol::driver_trip_update(&trip, trip.status), reference),
        Err(e) => reject(e.code, &e.message, reference),
    }
}

fn reject(code: &'static str, message: &str, reference: Option<&RawValue>) -> String {
    counter!(WS_FRAMES_REJECTED, "code" => code).increment(1);
    error_frame(code, message, reference)
}

async fn reattach(core: &Core, driver_id: Uuid, link: &SessionLink) -> Option<Addr<DriverActor>> {
    let actor = core.driver(driver_id, None).ok()?;
    actor.send(Attach(link.clone())).await.ok()?;
    Some(actor)
}
