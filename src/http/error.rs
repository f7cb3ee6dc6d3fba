//! The one error type of the HTTP edge, rendered as SPEC §2's envelope
//! `{"error": {"code", "message"}}`, and the one place each domain error is given its status and
//! code (`From` impls, so handlers say `?`). Internal causes are logged, never serialised.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::actors::market::QuoteError;
use crate::actors::payment::{SettleError, TopUpError};
use crate::actors::trip::ActError;
use crate::actors::{DriveError, DriverLookupError, RequestError};
use crate::dispatch::{InvalidVehicleType, PromoError, TripError};
use crate::http::tokens::TokenError;
use crate::persistence::StoreError;
use crate::persistence::users::CreateUserError;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Sentence telling the caller what to fix.
    pub message: String,
    /// Seconds to wait before retrying (sent as `Retry-After`).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 429 with `Retry-After`.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// 403 with a specific code.
    pub fn forbidden_as(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 413.
    #[must_use]
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// 503.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 503: the engine runs without a durable store (bare cores only).
    #[must_use]
    pub fn no_store() -> Self {
        Self::unavailable("database_unavailable", "no store is attached")
    }

    /// 500, logging the cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the engine failed to handle the request",
        )
    }

    /// The envelope body.
    #[must_use]
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(self.body())
    }
}

// Domain errors, each mapped to its status and code once; handlers use `?`.

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "the durable store failed a request");
        Self::unavailable("database_unavailable", format!("the store failed: {e}"))
    }
}

impl From<CreateUserError> for ApiError {
    fn from(e: CreateUserError) -> Self {
        match e {
            CreateUserError::EmailTaken => Self::conflict(
                "email_taken",
                "this e-mail is registered already; log in instead",
            ),
            CreateUserError::Store(s) => s.into(),
        }
    }
}

impl From<InvalidVehicleType> for ApiError {
    fn from(e: InvalidVehicleType) -> Self {
        Self::bad_request("invalid_field", e.to_string())
    }
}

impl From<SettleError> for ApiError {
    fn from(e: SettleError) -> Self {
        Self::unavailable("database_unavailable", format!("the store failed: {e}"))
    }
}

impl From<TopUpError> for ApiError {
    fn from(e: TopUpError) -> Self {
        match e {
            TopUpError::NoStore => Self::no_store(),
            TopUpError::CurrencyMismatch(m) => Self::unprocessable("currency_mismatch", m),
            TopUpError::Store(s) => s.into(),
            TopUpError::Settle(s) => s.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => {
                Self::unauthorized("token_expired", "the token has expired; get a new one")
            }
            _ => Self::unauthorized("invalid_token", "the token is not valid for this engine"),
        }
    }
}

impl From<PromoError> for ApiError {
    fn from(e: PromoError) -> Self {
        Self::unprocessable(e.code(), format!("promo_code: {e}"))
    }
}

impl From<QuoteError> for ApiError {
    fn from(e: QuoteError) -> Self {
        match e {
            QuoteError::UnknownVehicle { .. } => Self::bad_request("invalid_field", e.to_string()),
            QuoteError::Promo(p) => p.into(),
        }
    }
}

impl From<TripError> for ApiError {
    fn from(e: TripError) -> Self {
        let status = match e {
            TripError::InvalidTransition { .. } | TripError::Excluded => StatusCode::CONFLICT,
            TripError::NotYourTrip => StatusCode::FORBIDDEN,
            TripError::InvalidPin => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<ActError> for ApiError {
    fn from(e: ActError) -> Self {
        match e {
            ActError::PinLocked { retry_after_s } => Self::too_many(
                "too_many_pin_attempts",
                format!("too many wrong PINs; try again in {retry_after_s} s"),
                retry_after_s,
            ),
            ActError::Trip(t) => t.into(),
            ActError::Failed => Self::unavailable("trip_unavailable", e.to_string()),
        }
    }
}

impl From<DriveError> for ApiError {
    fn from(e: DriveError) -> Self {
        match e {
            DriveError::NotFound(_) => Self::not_found("trip_not_found", e.to_string()),
            DriveError::Ended(_) => Self::conflict("invalid_transition", e.to_string()),
            DriveError::Act(a) => a.into(),
        }
    }
}

impl From<DriverLookupError> for ApiError {
    fn from(e: DriverLookupError) -> Self {
        match e {
            DriverLookupError::Vehicle(v) => v.into(),
            DriverLookupError::TooMany(t) => {
                Self::unprocessable("too_many_vehicle_types", t.to_string())
            }
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Vehicle(v) => v.into(),
            RequestError::TooMany(t) => {
                Self::unprocessable("too_many_vehicle_types", t.to_string())
            }
            RequestError::Quote(q) => q.into(),
            RequestError::KeyReused => Self::unprocessable("idempotency_key_reused", e.to_string()),
            RequestError::InProgress => Self::conflict("request_in_progress", e.to_string()),
            RequestError::Backlog => Self::unavailable("database_backlog", e.to_string()),
            RequestError::NotDurable => Self::unavailable("database_unavailable", e.to_string()),
            RequestError::Store(s) => s.into(),
            RequestError::PickupTime(_) => Self::unprocessable("invalid_pickup_at", e.to_string()),
        }
    }
}
