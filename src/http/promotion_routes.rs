//! `/api/ops/promotions` (operators, SPEC §4): create, list and disable promotion codes. Codes and
//! each rider's uses live in the store, so every instance sharing it sees the same codes and a
//! restart forgets no use.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::caller::Caller;
use super::error::ApiError;
use super::input::{FieldError, json_body};
use super::state::AppState;
use super::trip_routes::rfc3339_ms;
use crate::clock::{now_ms, rfc3339};
use crate::dispatch::{Discount, Promotion, Role};
use crate::persistence::{Store, StoredPromotion};

/// Most a flat promotion takes off, minor units.
const MAX_FLAT: i64 = 10_000_000;
/// Most uses per rider a code may allow.
const MAX_PER_RIDER: i64 = 1_000;

fn store(core: &AppState) -> Result<&Store, ApiError> {
    Ok(core.persistence().ok_or_else(ApiError::no_store)?.store())
}

/// A promotion as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Promotion)]
pub(crate) struct PromotionView {
    /// The code, upper case.
    code: String,
    /// `percent` or `flat`.
    #[schema(pattern = "^(percent|flat)$")]
    kind: &'static str,
    /// Percent off (1–100) or minor units off.
    value: i64,
    /// First valid moment, RFC 3339.
    valid_from: String,
    /// First moment no longer valid, RFC 3339.
    valid_to: String,
    /// Uses per rider.
    per_rider_limit: u32,
    /// Whether an operator disabled it.
    disabled: bool,
    /// When, RFC 3339.
    disabled_at: Option<String>,
    /// When it was created, RFC 3339.
    created_at: String,
    /// Uses by all riders.
    uses: i64,
}

fn view(p: &StoredPromotion) -> PromotionView {
    let (kind, value) = match p.promotion.discount {
        Discount::Percent(pct) => ("percent", i64::from(pct)),
        Discount::Flat(amount) => ("flat", amount),
    };
    PromotionView {
        code: p.promotion.code.clone(),
        kind,
        value,
        valid_from: rfc3339(p.promotion.valid_from_ms),
        valid_to: rfc3339(p.promotion.valid_until_ms),
        per_rider_limit: p.promotion.per_rider_limit,
        disabled: p.disabled_ms.is_some(),
        disabled_at: p.disabled_ms.map(rfc3339),
        created_at: rfc3339(p.created_ms),
        uses: p.uses,
    }
}

/// `GET /api/ops/promotions`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PromotionList {
    /// Newest first, disabled ones included.
    promotions: Vec<PromotionView>,
}

/// `POST /api/ops/promotions`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct PromotionBody {
    /// 1–32 letters, digits, `-` or `_` (case-insensitive).
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]{1,32}$")]
    code: Option<String>,
    /// `percent` or `flat`.
    #[schema(required = true, pattern = "^(percent|flat)$")]
    kind: Option<String>,
    /// Percent off (1–100), or minor units off (flat).
    #[schema(required = true, minimum = 1)]
    value: Option<i64>,
    /// First valid moment, RFC 3339.
    #[schema(required = true, format = DateTime)]
    valid_from: Option<String>,
    /// First moment no longer valid, RFC 3339.
    #[schema(required = true, format = DateTime)]
    valid_to: Option<String>,
    /// Uses per rider, 1–1000.
    #[schema(required = true, minimum = 1, maximum = 1000)]
    per_rider_limit: Option<i64>,
}

/// A code: 1–32 letters, digits, `-` or `_`, kept upper case.
fn code(raw: &str) -> Result<String, FieldError> {
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(raw.to_ascii_uppercase())
    } else {
        Err(FieldError::invalid(
            "code",
            "1 to 32 letters, digits, '-' or '_'",
        ))
    }
}

fn promotion(body: PromotionBody) -> Result<Promotion, FieldError> {
    let code = code(
        body.code
            .as_deref()
            .ok_or_else(|| FieldError::missing("code"))?,
    )?;
    let value = body.value.ok_or_else(|| FieldError::missing("value"))?;
    let discount = match body.kind.as_deref() {
        None => return Err(FieldError::missing("kind")),
        Some("percent") => Discount::Percent(
            u8::try_from(value)
                .ok()
                .filter(|v| (1..=100).contains(v))
                .ok_or_else(|| {
                    FieldError::out_of_range(
                        "value must be within [1, 100] for a percent promotion",
                    )
                })?,
        ),
        Some("flat") if (1..=MAX_FLAT).contains(&value) => Discount::Flat(value),
        Some("flat") => {
            return Err(FieldError::out_of_range(format!(
                "value must be within [1, {MAX_FLAT}] minor units for a flat promotion"
            )));
        }
        Some(_) => return Err(FieldError::invalid("kind", "\"percent\" or \"flat\"")),
    };
    let valid_from_ms = rfc3339_ms(
        body.valid_from
            .as_deref()
            .ok_or_else(|| FieldError::missing("valid_from"))?,
        "valid_from",
    )?;
    let valid_until_ms = rfc3339_ms(
        body.valid_to
            .as_deref()
            .ok_or_else(|| FieldError::missing("valid_to"))?,
        "valid_to",
    )?;
    if valid_until_ms <= valid_from_ms {
        return Err(FieldError::out_of_range(
            "valid_to must be after valid_from",
        ));
    }
    let limit = body
        .per_rider_limit
        .ok_or_else(|| FieldError::missing("per_rider_limit"))?;
    if !(1..=MAX_PER_RIDER).contains(&limit) {
        return Err(FieldError::out_of_range(format!(
            "per_rider_limit must be within [1, {MAX_PER_RIDER}]"
        )));
    }
    Ok(Promotion {
        code,
        discount,
        valid_from_ms,
        valid_until_ms,
        per_rider_limit: u32::try_from(limit).unwrap_or(1),
    })
}

/// `POST /api/ops/promotions` `{code, kind: "percent"|"flat", value, valid_from, valid_to,
/// per_rider_limit}` → 201 the promotion; an existing code is 409 `promotion_exists`.
pub async fn create(
    req: HttpRequest,
    caller: Caller,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let body: PromotionBody = json_body(&req, payload).await?;
    let promo = promotion(body)?;
    let store = store(&core)?;
    if !store.create_promotion(&promo, now_ms()).await? {
        return Err(ApiError::conflict(
            "promotion_exists",
            format!("a promotion {} exists already", promo.code),
        ));
    }
    let stored = store
        .promotion(&promo.code)
        .await?
        .ok_or_else(|| ApiError::internal("a promotion just stored is missing"))?;
    Ok(HttpResponse::Created().json(view(&stored)))
}

/// `GET /api/ops/promotions` → `{promotions: [...]}`, newest first, disabled ones included.
pub async fn list(caller: Caller, core: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let all = store(&core)?.promotions().await?;
    Ok(HttpResponse::Ok().json(PromotionList {
        promotions: all.iter().map(view).collect(),
    }))
}

/// `DELETE /api/ops/promotions/{code}` → 200 the promotion, disabled (riders' later uses are
/// refused with `promo_code_disabled`; trips priced with it keep their discount).
pub async fn disable(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let code = code(&path).map_err(ApiError::from)?;
    match store(&core)?.disable_promotion(&code, now_ms()).await? {
        Some(p) => Ok(HttpResponse::Ok().json(view(&p))),
        None => Err(ApiError::not_found(
            "promotion_not_found",
            format!("no promotion {code}"),
        )),
    }
}
