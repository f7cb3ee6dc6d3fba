//! Who is calling: the bearer token, verified once per request, and the role and ownership rules
//! of SPEC §3 as methods every handler uses, so no handler writes its own check.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use uuid::Uuid;

use super::error::ApiError;
use crate::dispatch::Role;
use crate::http::AppState;
use crate::http::tokens::Claims;

/// The verified caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    /// The caller's user id.
    #[must_use]
    pub const fn id(&self) -> Uuid {
        self.0.sub
    }

    /// The caller's role.
    #[must_use]
    pub const fn role(&self) -> Role {
        self.0.role
    }

    /// Requires one of `roles`.
    ///
    /// # Errors
    ///
    /// 403 naming the roles allowed.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "this route is for the {} role; the token's role is {}",
                allowed.join(" or "),
                self.0.role.as_str()
            )))
        }
    }

    /// Requires the caller to be the driver `driver_id` itself.
    ///
    /// # Errors
    ///
    /// 403 otherwise.
    pub fn require_driver(&self, driver_id: Uuid) -> Result<(), ApiError> {
        self.require(&[Role::Driver])?;
        if self.0.sub == driver_id {
            Ok(())
        } else {
            Err(ApiError::forbidden("a driver may act only as itself"))
        }
    }

    /// Requires the caller to be the driver `driver_id` or an operator.
    ///
    /// # Errors
    ///
    /// 403 otherwise.
    pub fn require_driver_or_operator(&self, driver_id: Uuid) -> Result<(), ApiError> {
        if self.0.role == Role::Operator {
            Ok(())
        } else {
            self.require_driver(driver_id)
        }
    }
}

impl Caller {
    /// Requires the caller to be the rider `rider_id` or an operator.
    ///
    /// # Errors
    ///
    /// 403 otherwise.
    pub fn require_rider_or_operator(&self, rider_id: Uuid) -> Result<(), ApiError> {
        match self.0.role {
            Role::Operator => Ok(()),
            Role::Rider if self.0.sub == rider_id => Ok(()),
            Role::Rider => Err(ApiError::forbidden(
                "a rider sees only its own trips and wallet",
            )),
            Role::Driver => self.require(&[Role::Rider, Role::Operator]),
        }
    }

    /// How the caller may see `trip`: as its rider, as its driver, or as an operator.
    ///
    /// # Errors
    ///
    /// 403 `not_your_trip` for anyone else.
    pub fn trip_viewer(
        &self,
        trip: &crate::dispatch::Trip,
    ) -> Result<crate::actors::protocol::Viewer, ApiError> {
        use crate::actors::protocol::Viewer;
        match self.0.role {
            Role::Operator => Ok(Viewer::Operator),
            Role::Rider if trip.rider_id == self.0.sub => Ok(Viewer::Rider),
            Role::Driver if trip.driver_id == Some(self.0.sub) => Ok(Viewer::Driver),
            _ => Err(ApiError::forbidden_as(
                "not_your_trip",
                "this trip belongs to another rider or driver",
            )),
        }
    }
}

/// Reads the bearer token from the `Authorization` header or, where allowed (browsers opening a
/// WebSocket cannot set headers), from the `token` query parameter.
#[must_use]
pub fn bearer_token(req: &HttpRequest, allow_query: bool) -> Option<String> {
    if let Some(value) = req.headers().get(AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    if allow_query {
        return serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
            .ok()?
            .into_iter()
            .find_map(|(k, v)| (k == "token").then_some(v));
    }
    None
}

/// Verifies the caller's token.
///
/// # Errors
///
/// 401 `unauthorized` (no token), `token_expired` or `invalid_token`.
pub fn authenticate(
    core: &AppState,
    req: &HttpRequest,
    allow_query: bool,
) -> Result<Caller, ApiError> {
    let token = bearer_token(req, allow_query).ok_or_else(|| {
        ApiError::unauthorized(
            "unauthorized",
            "send a bearer token in the Authorization header",
        )
    })?;
    Ok(core.keys.verify(&token).map(Caller)?)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.app_data::<web::Data<AppState>>() {
            Some(core) => authenticate(core, req, false),
            None => Err(ApiError::internal("engine core missing from app data")),
        })
    }
}

/// Parses an id from the path.
///
/// # Errors
///
/// 400 `invalid_id`.
pub fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad_request("invalid_id", format!("{what} must be a UUID, got {raw:?}"))
    })
}
