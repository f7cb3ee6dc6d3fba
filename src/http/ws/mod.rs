//! WebSocket sessions on actix-ws. A session is not the driver (or rider): it parses and validates
//! frames and forwards them to the actors, which outlive the socket, and writes what they push.

pub mod driver_socket;
pub mod inbound;
pub mod rider_socket;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessageStream, CloseCode, CloseReason, Session};
use metrics::counter;

use crate::dispatch::Role;
use crate::http::AppState;
use crate::http::caller::{Caller, authenticate};
use crate::http::error::ApiError;
use crate::metrics::WS_FRAMES_REJECTED;

/// Largest accepted frame (and aggregated continuation), bytes.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;

/// An accepted socket of an authenticated caller.
pub struct Opened {
    /// Who.
    pub caller: Caller,
    /// The socket's sending half.
    pub session: Session,
    /// Inbound frames, limited to [`MAX_FRAME_BYTES`].
    pub stream: AggregatedMessageStream,
}

/// Upgrades the request, then authenticates it for `role` (token in the `Authorization` header or
/// the `token` query parameter). A refusal is answered inside the socket with close 1008, so
/// browsers see the reason; the answer is then `None`.
///
/// # Errors
///
/// 400 when the request is not a WebSocket upgrade.
pub fn open(
    req: &HttpRequest,
    body: web::Payload,
    core: &AppState,
    role: Role,
) -> Result<(HttpResponse, Option<Opened>), ApiError> {
    let (response, session, stream) = actix_ws::handle(req, body).map_err(|e| {
        ApiError::bad_request(
            "websocket_upgrade_required",
            format!("this route speaks WebSocket only: {e}"),
        )
    })?;
    let caller = authenticate(core, req, true).and_then(|caller| {
        caller.require(&[role])?;
        Ok(caller)
    });
    match caller {
        Err(refused) => {
            counter!(WS_FRAMES_REJECTED, "code" => refused.code).increment(1);
            actix_rt::spawn(close(session, CloseCode::Policy, refused.message));
            Ok((response, None))
        }
        Ok(caller) => {
            let stream = stream
                .max_frame_size(MAX_FRAME_BYTES)
                .aggregate_continuations()
                .max_continuation_size(MAX_FRAME_BYTES);
            Ok((
                response,
                Some(Opened {
                    caller,
                    session,
                    stream,
                }),
            ))
        }
    }
}

/// How a session ended, for `hexdispatch_ws_disconnects_total{reason}`.
#[must_use]
pub fn disconnect_reason(end: Option<(CloseCode, &str)>) -> &'static str {
    match end {
        None => "gone",
        Some((CloseCode::Normal, "idle timeout")) => "idle",
        Some((CloseCode::Normal, _)) => "closed",
        Some((CloseCode::Away, _)) => "shutdown",
        Some((CloseCode::Size, _)) => "frame_too_large",
        Some((CloseCode::Protocol, _)) => "protocol_error",
        Some((CloseCode::Other(4000), _)) => "replaced",
        Some(_) => "other",
    }
}

/// Closes a socket with `code` and `reason`.
pub async fn close(session: Session, code: CloseCode, reason: String) {
    let _ = session
        .close(Some(CloseReason {
            code,
            description: Some(reason),
        }))
        .await;
}
