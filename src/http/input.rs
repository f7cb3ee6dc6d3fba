//! Parsing client input into valid domain values, with errors that name the field.
//!
//! JSON bodies are read with a 64 KiB cap (413 beyond) and deserialised with the failing field's
//! path in the error; query strings are parsed key by key. The location rules live here once and
//! serve both the REST route and the WebSocket frame.

use actix_web::HttpRequest;
use actix_web::web::Payload;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::actors::driver::LocationUpdate;
use crate::dispatch::VehicleType;
use crate::geo::{GeoError, LatLng};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest accepted search radius, metres.
pub const MAX_RADIUS_M: f64 = 50_000.0;

/// Most drivers a nearby query may ask for.
pub const MAX_LIMIT: usize = 100;

/// A field error: the code and the sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `missing_field`, `invalid_field`, `out_of_range`, `invalid_json`.
    pub code: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

impl FieldError {
    /// A missing required field.
    #[must_use]
    pub fn missing(field: &str) -> Self {
        Self {
            code: "missing_field",
            message: format!("{field} is required"),
        }
    }

    /// A field of the wrong type or an unknown value.
    pub fn invalid(field: &str, expected: impl std::fmt::Display) -> Self {
        Self {
            code: "invalid_field",
            message: format!("{field} must be {expected}"),
        }
    }

    /// A value outside its range.
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self {
            code: "out_of_range",
            message: message.into(),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::bad_request(e.code, e.message)
    }
}

impl From<GeoError> for FieldError {
    fn from(e: GeoError) -> Self {
        match e {
            GeoError::NotFinite { field } => Self::invalid(field, "a finite number"),
            other => Self::out_of_range(other.to_string()),
        }
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`] and deserialises it.
///
/// # Errors
///
/// 413 for a larger body; 400 `invalid_json`, `missing_field` or `invalid_field` naming the field.
pub async fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: Payload,
) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(256).min(MAX_BODY_BYTES));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("invalid_body", format!("could not read the body: {e}"))
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    parse_json(&body).map_err(ApiError::from)
}

/// Deserialises JSON, naming the failing field.
///
/// # Errors
///
/// [`FieldError`] with `invalid_json`, `missing_field` or `invalid_field`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(FieldError {
                code: "invalid_json",
                message: "the body is empty; send a JSON object".into(),
            });
        }
        // Serde would read an array as a struct's fields in order; only objects are accepted.
        Some(b'[') => {
            return Err(FieldError::invalid(
                "the body",
                "a JSON object, not an array",
            ));
        }
        Some(_) => {}
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(field_error)
}

/// Turns a deserialisation error into a [`FieldError`] naming the field.
#[must_use]
pub fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.to_string();
    match inner.classify() {
        serde_json::error::Category::Data if message.starts_with("missing field") => FieldError {
            code: "missing_field",
            message: strip_position(&message),
        },
        serde_json::error::Category::Data => FieldError {
            code: "invalid_field",
            message: if path == "." {
                strip_position(&message)
            } else {
                format!("{path}: {}", strip_position(&message))
            },
        },
        _ => FieldError {
            code: "invalid_json",
            message: format!("not valid JSON: {message}"),
        },
    }
}

fn strip_position(message: &str) -> String {
    message
        .find(" at line ")
        .map_or(message, |i| &message[..i])
        .to_string()
}

/// Validates a position report's fields.
///
/// # Errors
///
/// [`FieldError`] naming the first bad field.
pub fn location(
    lat: Option<f64>,
    lng: Option<f64>,
    heading: Option<f64>,
    speed_mps: Option<f64>,
    ts_ms: Option<i64>,
) -> Result<LocationUpdate, FieldError> {
    let lat = lat.ok_or_else(|| FieldError::missing("lat"))?;
    let lng = lng.ok_or_else(|| FieldError::missing("lng"))?;
    let point = LatLng::new(lat, lng)?;
    if let Some(h) = heading
        && !(h.is_finite() && (0.0..=360.0).contains(&h))
    {
        return Err(FieldError::out_of_range(format!(
            "heading must be within [0, 360] degrees, got {h}"
        )));
    }
    if let Some(s) = speed_mps
        && !(s.is_finite() && (0.0..=150.0).contains(&s))
    {
        return Err(FieldError::out_of_range(format!(
            "speed_mps must be within [0, 150], got {s}"
        )));
    }
    if let Some(ts) = ts_ms {
        let latest = crate::clock::now_ms().saturating_add(10 * 60 * 1_000);
        if !(0..=latest).contains(&ts) {
            return Err(FieldError::out_of_range(format!(
                "ts_ms must be epoch milliseconds no later than ten minutes from now, got {ts}"
            )));
        }
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(LocationUpdate {
        point,
        heading: heading.map(|h| h as f32),
        speed_mps: speed_mps.map(|s| s as f32),
        ts_ms,
    })
}

/// A query string, parsed once, read key by key with errors naming the key.
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `req`'s query string.
    ///
    /// # Errors
    ///
    /// 400 `invalid_query` when it is not valid URL encoding.
    pub fn parse(req: &HttpRequest) -> Result<Self, ApiError> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
            .map(Self)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("the query string is malformed: {e}"),
                )
            })
    }

    fn raw(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `from`/`to` window (RFC 3339 or epoch ms each): `to` defaults to now, `from` to
    /// `default_span_ms` before `to`.
    ///
    /// # Errors
    ///
    /// `invalid_field` for an unreadable time, `out_of_range` when `from` is after `to`.
    pub fn time_window(&self, default_span_ms: i64) -> Result<(i64, i64), FieldError> {
        let time = |key: &str, default: i64| match self.raw(key) {
            None | Some("") => Ok(default),
            Some(raw) => crate::clock::parse_time_ms(raw)
                .ok_or_else(|| FieldError::invalid(key, "an RFC 3339 time or epoch milliseconds")),
        };
        let to_ms = time("to", crate::clock::now_ms())?;
        let from_ms = time("from", to_ms.saturating_sub(default_span_ms))?;
        if from_ms > to_ms {
            return Err(FieldError::out_of_range("from must not be after to"));
        }
        Ok((from_ms, to_ms))
    }

    /// An optional text parameter, as sent.
    #[must_use]
    pub fn string(&self, key: &str) -> Option<&str> {
        self.raw(key)
    }

    /// The required `lat` and `lng` parameters as a point.
    ///
    /// # Errors
    ///
    /// `missing_field`, `invalid_field` or `out_of_range` naming the parameter.
    pub fn point(&self) -> Result<LatLng, FieldError> {
        let lat = self.f64("lat")?.ok_or_else(|| FieldError::missing("lat"))?;
        let lng = self.f64("lng")?.ok_or_else(|| FieldError::missing("lng"))?;
        Ok(LatLng::new(lat, lng)?)
    }

    /// An optional floating-point parameter.
    ///
    /// # Errors
    ///
    /// `invalid_field` if present but not a finite number.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, FieldError> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(FieldError::invalid(
                    key,
                    format_args!("a finite number, got {raw:?}"),
                )),
            },
        }
    }

    /// An optional non-negative integer parameter.
    ///
    /// # Errors
    ///
    /// `invalid_field` if present but not an integer.
    pub fn usize(&self, key: &str) -> Result<Option<usize>, FieldError> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .map(|v| Some(usize::try_from(v).unwrap_or(0)))
                .map_err(|_| FieldError::invalid(key, format_args!("an integer, got {raw:?}"))),
        }
    }

    /// An optional vehicle type.
    ///
    /// # Errors
    ///
    /// `invalid_field` if present but malformed.
    pub fn vehicle_type(&self, key: &str) -> Result<Option<VehicleType>, FieldError> {
        match self.raw(key) {
            None | Some("") => Ok(None),
            Some(raw) => VehicleType::parse(raw).map(Some).map_err(|e| FieldError {
                code: "invalid_field",
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        lat: f64,
        status: String,
    }

    #[test]
    fn json_errors_name_the_field() {
        let cases: [(&str, &str, &str); 5] = [
            ("{\"status\":\"online\"}", "missing_field", "lat"),
            (
                "{\"lat\":\"x\",\"status\":\"online\"}",
                "invalid_field",
                "lat",
            ),
            ("{\"lat\":1", "invalid_json", "JSON"),
            ("", "invalid_json", "JSON object"),
            ("[1,2]", "invalid_field", "object"),
        ];
        for (body, code, mentions) in cases {
            let err = parse_json::<Body>(body.as_bytes()).expect_err(body);
            assert_eq!(err.code, code, "{body}: {err:?}");
            assert!(err.message.contains(mentions), "{body}: {err:?}");
        }
    }

    #[test]
    fn location_rules() {
        assert!(location(Some(1.0), Some(2.0), Some(359.0), Some(10.0), Some(1)).is_ok());
        let cases = [
            (
                location(None, Some(0.0), None, None, None),
                "missing_field",
                "lat",
            ),
            (
                location(Some(0.0), None, None, None, None),
                "missing_field",
                "lng",
            ),
            (
                location(Some(91.0), Some(0.0), None, None, None),
                "out_of_range",
                "lat",
            ),
            (
                location(Some(0.0), Some(-181.0), None, None, None),
                "out_of_range",
                "lng",
            ),
            (
                location(Some(f64::NAN), Some(0.0), None, None, None),
                "invalid_field",
                "lat",
            ),
            (
                location(Some(0.0), Some(0.0), Some(400.0), None, None),
                "out_of_range",
                "heading",
            ),
            (
                location(Some(0.0), Some(0.0), None, Some(-1.0), None),
                "out_of_range",
                "speed_mps",
            ),
            (
                location(Some(0.0), Some(0.0), None, None, Some(-5)),
                "out_of_range",
                "ts_ms",
            ),
        ];
        for (result, code, field) in cases {
            let err = result.expect_err(field);
            assert_eq!(err.code, code, "{err:?}");
            assert!(err.message.contains(field), "{err:?}");
        }
    }
}
