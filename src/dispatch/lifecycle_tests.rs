//! The state machine against its own replay, and its invariants under random command sequences.

use proptest::prelude::*;

use super::*;
use crate::dispatch::{Currency, Surge, Tariff, price};

const PIN: &str = "4821";

fn quote() -> Quote {
    let tariff = Tariff {
        base: 250,
        per_km: 120,
        per_min: 30,
        min_fare: 700,
        cancel_fee: 500,
    };
    Quote {
        estimate: price(&tariff, Currency::USD, 5_000, 600, Surge::NONE, None),
        surge: Surge::NONE,
        discount: None,
        cancel_fee: Money::new(500, Currency::USD),
    }
}

fn open(now: i64) -> (Trip, Vec<EventRecord>) {
    Trip::open(
        NewTrip {
            trip_id: Uuid::now_v7(),
            rider_id: Uuid::now_v7(),
            vehicle_type: "economy".into(),
            origin: LatLng::new(48.85, 2.35).unwrap(),
            destination: LatLng::new(48.87, 2.30).unwrap(),
            quote: quote(),
            pin: PIN.into(),
            promo_code: None,
            first_radius_m: 2_000.0,
            schedule: None,
        },
        now,
    )
}

/// Applies `command`; on success appends to `log` and returns the events' types.
fn run(
    trip: &mut Trip,
    log: &mut Vec<EventRecord>,
    command: &TripCommand,
    now: i64,
) -> Result<Vec<&'static str>, TripError> {
    let events = decide(trip, command, now)?;
    let records = trip.records(events, now);
    let kinds = records.iter().map(|r| r.event.kind()).collect();
    for record in &records {
        trip.apply(record);
    }
    log.extend(records);
    Ok(kinds)
}

#[test]
fn the_happy_path_runs_to_payment() {
    let (mut trip, mut log) = open(0);
    assert_eq!(trip.status, TripStatus::Matching);
    let driver = Uuid::now_v7();
    let steps = [
        TripCommand::Assign { driver_id: driver },
        TripCommand::Arrive {
            driver_id: driver,
            source: ArrivalSource::Geofence,
        },
        TripCommand::Start {
            driver_id: driver,
            pin: PIN.into(),
        },
        TripCommand::Complete {
            driver_id: driver,
            fare: quote().estimate,
            flag: None,
        },
        TripCommand::RecordPayment {
            amount: quote().estimate.total,
        },
    ];
    for (i, step) in steps.iter().enumerate() {
        run(&mut trip, &mut log, step, 1_000 * (i as i64 + 1)).unwrap();
    }
    assert_eq!(trip.status, TripStatus::PaymentProcessed);
    let kinds: Vec<_> = log.iter().map(|r| r.event.kind()).collect();
    assert_eq!(
        kinds,
        [
            "trip.requested",
            "trip.matching",
            "trip.accepted",
            "trip.driver_arriving",
            "trip.started",
            "trip.completed",
            "payment.captured"
        ]
    );
    assert_eq!(Trip::replay(trip.trip_id, &log).unwrap(), trip);
    assert_eq!(trip.status_times[&TripStatus::TripStarted], 3_000);
}

#[test]
fn a_wrong_pin_changes_nothing_and_start_from_accepted_passes_through_arriving() {
    let (mut trip, mut log) = open(0);
    let driver = Uuid::now_v7();
    run(
        &mut trip,
        &mut log,
        &TripCommand::Assign { driver_id: driver },
        1,
    )
    .unwrap();
    let before = trip.clone();
    let wrong = TripCommand::Start {
        driver_id: driver,
        pin: "0000".into(),
    };
    assert_eq!(
        run(&mut trip, &mut log, &wrong, 2),
        Err(TripError::InvalidPin)
    );
    assert_eq!(trip, before);
    let right = TripCommand::Start {
        driver_id: driver,
        pin: PIN.into(),
    };
    assert_eq!(
        run(&mut trip, &mut log, &right, 3).unwrap(),
        ["trip.driver_arriving", "trip.started"]
    );
}

#[test]
fn cancellation_rules() {
    let driver = Uuid::now_v7();
    let free = TripCommand::RiderCancel {
        free_cancel_ms: 120_000,
    };
    // In MATCHING: free.
    let (mut trip, mut log) = open(0);
    run(&mut trip, &mut log, &free, 500_000).unwrap();
    assert_eq!(trip.status, TripStatus::Cancelled);
    assert_eq!(trip.cancellation_fee, None);
    assert!(
        run(&mut trip, &mut log, &free, 500_001).is_err(),
        "cancelled once"
    );

    // Assigned, within the window: free; after it: the fee.
    for (at, fee) in [(100_000, None), (121_001, Some(500))] {
        let (mut trip, mut log) = open(0);
        run(
            &mut trip,
            &mut log,
            &TripCommand::Assign { driver_id: driver },
            1_000,
        )
        .unwrap();
        run(&mut trip, &mut log, &free, at).unwrap();
        assert_eq!(
            trip.cancellation_fee.map(|m| m.amount),
            fee,
            "cancel at {at}"
        );
    }

    // Started: the rider may not cancel, the driver neither.
    let (mut trip, mut log) = open(0);
    run(
        &mut trip,
        &mut log,
        &TripCommand::Assign { driver_id: driver },
        1,
    )
    .unwrap();
    let start = TripCommand::Start {
        driver_id: driver,
        pin: PIN.into(),
    };
    run(&mut trip, &mut log, &start, 2).unwrap();
    assert!(matches!(
        run(&mut trip, &mut log, &free, 3),
        Err(TripError::InvalidTransition {
            status: TripStatus::TripStarted,
            ..
        })
    ));
    let driver_cancel = TripCommand::DriverCancel {
        driver_id: driver,
        radius_m: 2_000.0,
    };
    assert!(run(&mut trip, &mut log, &driver_cancel, 4).is_err());
}

#[test]
fn a_driver_cancel_rematches_without_that_driver() {
    let (mut trip, mut log) = open(0);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    run(
        &mut trip,
        &mut log,
        &TripCommand::Assign { driver_id: a },
        1,
    )
    .unwrap();
    let cancel = TripCommand::DriverCancel {
        driver_id: a,
        radius_m: 2_000.0,
    };
    assert_eq!(
        run(&mut trip, &mut log, &cancel, 2).unwrap(),
        ["trip.driver_cancelled", "trip.matching"]
    );
    assert_eq!(trip.status, TripStatus::Matching);
    assert_eq!(trip.driver_id, None);
    assert_eq!(
        run(
            &mut trip,
            &mut log,
            &TripCommand::Assign { driver_id: a },
            3
        ),
        Err(TripError::Excluded)
    );
    run(
        &mut trip,
        &mut log,
        &TripCommand::Assign { driver_id: b },
        4,
    )
    .unwrap();
    assert_eq!(trip.driver_id, Some(b));
    assert_eq!(
        run(
            &mut trip,
            &mut log,
            &TripCommand::Arrive {
                driver_id: a,
                source: ArrivalSource::Driver
            },
            5
        ),
        Err(TripError::NotYourTrip)
    );
}

#[test]
fn replay_refuses_logs_that_are_not_a_trip() {
    let (trip, log) = open(0);
    assert_eq!(Trip::replay(trip.trip_id, &[]), Err(ReplayError::Empty));
    assert_eq!(
        Trip::replay(trip.trip_id, &log[1..]),
        Err(ReplayError::Gap {
            expected: 1,
            found: 2
        })
    );
    let mut gap = log.clone();
    gap[1].seq = 5;
    assert!(Trip::replay(trip.trip_id, &gap).is_err());
}

#[test]
fn events_round_trip_through_json_as_type_and_data() {
    let (_, log) = open(7);
    let json = serde_json::to_value(&log[1]).unwrap();
    assert_eq!(json["type"], "trip.matching");
    assert_eq!(json["data"]["radius_m"], 2_000.0);
    assert_eq!(json["seq"], 2);
    for record in &log {
        let text = serde_json::to_string(record).unwrap();
        let back: EventRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, record);
    }
}

fn command() -> impl Strategy<Value = (u8, u8, bool, i64)> {
    // (command kind, driver index, right pin?, time step)
    (0u8..11, 0u8..3, any::<bool>(), 0i64..200_000)
}

fn build(kind: u8, driver: Uuid, right_pin: bool) -> TripCommand {
    match kind {
        0 => TripCommand::WidenSearch {
            step: 1,
            radius_m: 5_000.0,
        },
        1 => TripCommand::GiveUp,
        2 | 3 => TripCommand::Assign { driver_id: driver },
        4 => TripCommand::Arrive {
            driver_id: driver,
            source: ArrivalSource::Driver,
        },
        5 => TripCommand::Start {
            driver_id: driver,
            pin: if right_pin { PIN.into() } else { "9999".into() },
        },
        6 => TripCommand::Complete {
            driver_id: driver,
            fare: quote().estimate,
            flag: None,
        },
        7 => TripCommand::DriverCancel {
            driver_id: driver,
            radius_m: 2_000.0,
        },
        8 => TripCommand::RiderCancel {
            free_cancel_ms: 120_000,
        },
        9 => TripCommand::RecordPayment {
            amount: quote().estimate.total,
        },
        _ => TripCommand::RecordPaymentFailure {
            reason: "insufficient funds".into(),
        },
    }
}

proptest! {
    #[test]
    fn random_commands_never_break_an_invariant_and_replay_reproduces_the_state(
        commands in proptest::collection::vec(command(), 0..60)
    ) {
        let drivers = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        let (mut trip, mut log) = open(0);
        let mut now = 0;
        for (kind, who, right_pin, dt) in commands {
            now += dt;
            let before = trip.clone();
            let cmd = build(kind, drivers[usize::from(who)], right_pin);
            match run(&mut trip, &mut log, &cmd, now) {
                Err(_) => prop_assert_eq!(&trip, &before, "a refusal changes nothing"),
                Ok(_) => {
                    prop_assert!(
                        !matches!(before.status, TripStatus::Cancelled | TripStatus::NoDriverFound | TripStatus::PaymentProcessed),
                        "{:?} is final but accepted {:?}", before.status, cmd
                    );
                    if let TripCommand::Start { pin, .. } = &cmd {
                        prop_assert_eq!(pin.as_str(), PIN, "only the right PIN starts a trip");
                    }
                    if let TripCommand::Assign { driver_id } = &cmd {
                        prop_assert!(before.driver_id.is_none(), "an assigned trip took a second driver");
                        prop_assert_eq!(trip.driver_id, Some(*driver_id));
                    }
                }
            }
            // A cancelled trip keeps the driver it had, if any, for the record.
            if trip.status != TripStatus::Cancelled {
                prop_assert_eq!(trip.status.has_driver(), trip.driver_id.is_some(), "driver iff assigned, in {:?}", trip.status);
            }
            if let Some(d) = trip.driver_id {
                prop_assert!(!trip.excluded.contains(&d), "an excluded driver is assigned");
            }
            prop_assert!(trip.status_times.contains_key(&trip.status));
            prop_assert!(trip.cancellation_fee.is_none() || trip.status == TripStatus::Cancelled);
            prop_assert!(trip.fare.is_none() || trip.status_times.contains_key(&TripStatus::TripCompleted));
            prop_assert_eq!(trip.version, log.len() as u64);
            prop_assert_eq!(&Trip::replay(trip.trip_id, &log).unwrap(), &trip);
        }
    }
}
