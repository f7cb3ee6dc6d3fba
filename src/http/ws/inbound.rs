//! Client → server frames of the driver socket: one JSON object per text frame, tagged by `type`,
//! with an optional `ref` the reply echoes. The common frame (`location`) parses in one pass
//! without allocating; a frame that fails the typed parse is parsed again loosely only to recover
//! its `ref` for the error. Server → client frames are rendered in `actors::protocol`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::actors::driver::LocationUpdate;
use crate::dispatch::DriverStatus;
use crate::http::input::{FieldError, field_error, location};

/// What a driver asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverCommand {
    /// Go online or offline.
    Status(DriverStatus),
    /// New position.
    Location(LocationUpdate),
    /// Accept an offer.
    Accept(Uuid),
    /// Decline an offer.
    Decline(Uuid),
    /// Arrived at the pickup.
    Arrived(Uuid),
    /// Start the trip with the rider's PIN.
    Start(Uuid, String),
    /// Trip completed.
    Complete(Uuid),
    /// Cancel the trip.
    Cancel(Uuid),
}

/// A parsed frame: its `ref` (if any) and the command or what is wrong with it.
pub struct Parsed {
    /// The client's `ref`, echoed in the reply.
    pub reference: Option<Box<RawValue>>,
    /// The command.
    pub command: Result<DriverCommand, FieldError>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "ref", default)]
    reference: Option<Box<RawValue>>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lng: Option<f64>,
    #[serde(default)]
    heading: Option<f64>,
    #[serde(default)]
    speed_mps: Option<f64>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    trip_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pin: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RefOnly {
    #[serde(rename = "ref", default)]
    reference: Option<Box<RawValue>>,
}

const TYPES: &str = "status, location, accept, decline, arrived, start, complete or cancel";

/// Parses one text frame from a driver.
#[must_use]
pub fn parse_driver_frame(text: &str) -> Parsed {
    if text.trim_start().starts_with('[') {
        return Parsed {
            reference: None,
            command: Err(FieldError::invalid(
                "a frame",
                "one JSON object, not an array",
            )),
        };
    }
    match serde_json::from_str::<Frame<'_>>(text) {
        Ok(frame) => {
            let command = command(&frame);
            Parsed {
                reference: frame.reference,
                command,
            }
        }
        Err(_) => {
            let reference = serde_json::from_str::<RefOnly>(text)
                .ok()
                .and_then(|r| r.reference);
            let de = &mut serde_json::Deserializer::from_str(text);
            let command = Err(match serde_path_to_error::deserialize::<_, Frame<'_>>(de) {
                Err(e) => field_error(e),
                Ok(_) => FieldError::invalid("the frame", "one JSON object"),
            });
            Parsed { reference, command }
        }
    }
}

fn command(frame: &Frame<'_>) -> Result<DriverCommand, FieldError> {
    let kind = frame
        .kind
        .as_deref()
        .ok_or_else(|| FieldError::missing("type"))?;
    let trip = || -> Result<Uuid, FieldError> {
        let raw = frame
            .trip_id
            .as_deref()
            .ok_or_else(|| FieldError::missing("trip_id"))?;
        Uuid::parse_str(raw).map_err(|_| FieldError::invalid("trip_id", "a UUID"))
    };
    Ok(match kind {
        "location" => DriverCommand::Location(location(
            frame.lat,
            frame.lng,
            frame.heading,
            frame.speed_mps,
            frame.ts_ms,
        )?),
        "status" => {
            let raw = frame
                .status
                .as_deref()
                .ok_or_else(|| FieldError::missing("status"))?;
            DriverCommand::Status(DriverStatus::parse(raw).ok_or_else(|| {
                FieldError::invalid(
                    "status",
                    format_args!("\"online\" or \"offline\", got {raw:?}"),
                )
            })?)
        }
        "accept" => DriverCommand::Accept(trip()?),
        "decline" => DriverCommand::Decline(trip()?),
        "arrived" => DriverCommand::Arrived(trip()?),
        "complete" => DriverCommand::Complete(trip()?),
        "cancel" => DriverCommand::Cancel(trip()?),
        "start" => {
            let trip_id = trip()?;
            let pin = frame
                .pin
                .as_deref()
                .ok_or_else(|| FieldError::missing("pin"))?;
            if pin.len() != 4 || !pin.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FieldError::invalid("pin", "a string of 4 digits"));
            }
            DriverCommand::Start(trip_id, pin.to_string())
        }
        other => {
            return Err(FieldError {
                code: "unknown_type",
                message: format!(
                    "type must be one of {TYPES}, got {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn location_frames_parse_and_keep_their_ref() {
        let p = parse_driver_frame(
            r#"{"type":"location","lat":1.5,"lng":2.5,"heading":90,"ref":{"n":7}}"#,
        );
        assert_eq!(
            p.reference.map(|r| r.get().to_string()),
            Some(r#"{"n":7}"#.to_string())
        );
        match p.command {
            Ok(DriverCommand::Location(u)) => assert_eq!(
                (u.point.lat(), u.point.lng(), u.heading),
                (1.5, 2.5, Some(90.0))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_frames_name_what_is_wrong_and_keep_the_ref() {
        let cases = [
            (
                r#"{"type":"location","lat":91,"lng":0,"ref":1}"#,
                "out_of_range",
                "lat",
                true,
            ),
            (
                r#"{"type":"location","lat":"north","lng":0,"ref":1}"#,
                "invalid_field",
                "lat",
                true,
            ),
            (
                r#"{"type":"location","lng":0}"#,
                "missing_field",
                "lat",
                false,
            ),
            (
                r#"{"type":"teleport","ref":"x"}"#,
                "unknown_type",
                "teleport",
                true,
            ),
            (r#"{"lat":1}"#, "missing_field", "type", false),
            (
                r#"{"type":"status","status":"busy","ref":2}"#,
                "invalid_field",
                "status",
                true,
            ),
            (
                r#"{"type":"accept","trip_id":"nope"}"#,
                "invalid_field",
                "trip_id",
                false,
            ),
            (
                r#"{"type":"start","trip_id":"0191f1a0-0000-7000-8000-000000000000","pin":"12a4"}"#,
                "invalid_field",
                "pin",
                false,
            ),
            ("not json", "invalid_json", "JSON", false),
            ("[1,2,3]", "invalid_field", "object", false),
        ];
        for (text, code, mentions, has_ref) in cases {
            let p = parse_driver_frame(text);
            let err = p.command.expect_err(text);
            assert_eq!(err.code, code, "{text}: {err:?}");
            assert!(err.message.contains(mentions), "{text}: {err:?}");
            assert_eq!(p.reference.is_some(), has_ref, "{text}");
        }
    }

    /// Error codes a frame can get; anything else is a bug.
    const CODES: [&str; 5] = [
        "invalid_json",
        "invalid_field",
        "missing_field",
        "out_of_range",
        "unknown_type",
    ];

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn frame() -> impl Strategy<Value = String> {
        let kinds = prop_oneof![
            Just("location"),
            Just("status"),
            Just("accept"),
            Just("decline"),
            Just("arrived"),
            Just("start"),
            Just("complete"),
            Just("cancel"),
            Just("nope"),
        ];
        let fields = prop_oneof![
            Just("lat"),
            Just("lng"),
            Just("heading"),
            Just("speed_mps"),
            Just("ts_ms"),
            Just("status"),
            Just("trip_id"),
            Just("pin"),
            Just("ref"),
            Just("type"),
        ];
        (
            kinds,
            proptest::collection::vec((fields, json_value()), 0..6),
        )
            .prop_map(|(kind, fields)| {
                let mut object = serde_json::Map::new();
                object.insert("type".into(), serde_json::Value::from(kind));
                for (k, v) in fields {
                    object.insert(k.into(), v);
                }
                serde_json::Value::Object(object).to_string()
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_text_parses_or_is_refused_with_a_known_code(text in ".{0,300}") {
            if let Err(e) = parse_driver_frame(&text).command {
                prop_assert!(CODES.contains(&e.code), "{:?} for {:?}", e.code, text);
            }
        }

        #[test]
        fn frames_with_random_fields_parse_or_are_refused_with_a_known_code(text in frame()) {
            let parsed = parse_driver_frame(&text);
            match parsed.command {
                Err(e) => prop_assert!(CODES.contains(&e.code), "{:?} for {}", e.code, text),
                Ok(DriverCommand::Location(u)) => {
                    prop_assert!((-90.0..=90.0).contains(&u.point.lat()));
                    prop_assert!((-180.0..=180.0).contains(&u.point.lng()));
                }
                Ok(_) => {}
            }
        }
    }
}
