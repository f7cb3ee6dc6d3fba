//! Tests of the trip actor against a real core (cell actors, registries, trips).

use tokio::sync::mpsc;

use super::*;
use crate::actors::driver::{
    Answer, AnswerError, Attach, GetSnapshot, Location, LocationUpdate, Respond, SessionLink,
    SetStatus,
};
use crate::actors::protocol::Outbound;
use crate::actors::test_support::request_trip;
use crate::config::Settings;
use crate::dispatch::DriverStatus;
use crate::geo::LatLng;

fn point(lat: f64, lng: f64) -> LatLng {
    LatLng::new(lat, lng).unwrap()
}

/// A driver online at `at` whose frames land in the returned queue.
async fn driver(core: &Core, at: LatLng) -> (Uuid, Addr<DriverActor>, mpsc::Receiver<Outbound>) {
    let id = Uuid::now_v7();
    let addr = core.driver(id, None).unwrap();
    let (tx, rx) = mpsc::channel(64);
    addr.send(Attach(SessionLink { id: 1, tx })).await.unwrap();
    addr.send(Location(LocationUpdate {
        point: at,
        heading: None,
        speed_mps: None,
        ts_ms: None,
    }))
    .await
    .unwrap();
    addr.send(SetStatus(DriverStatus::Online)).await.unwrap();
    core.shards.settled().await;
    (id, addr, rx)
}

fn offers(rx: &mut mpsc::Receiver<Outbound>) -> usize {
    let mut n = 0;
    while let Ok(Outbound::Text(frame)) = rx.try_recv() {
        n += usize::from(frame.contains(r#""type":"offer""#));
    }
    n
}

#[actix::test]
async fn a_driver_who_gave_a_trip_up_is_never_offered_it_again() {
    let mut settings = Settings::default();
    settings.matching.offer_timeout_s = 0.1;
    let core = Core::start(settings).unwrap();
    let pickup = point(48.8566, 2.3522);
    let (driver_id, addr, mut rx) = driver(&core, point(48.8570, 2.3530)).await;
    let trip = request(&core, pickup).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(offers(&mut rx), 1);
    let answer = addr
        .send(Respond {
            trip_id: trip.trip_id,
            accept: true,
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap();
    assert!(matches!(answer, Ok(Answer::Assigned(_))));
    let actor = core.trip_actors.get(trip.trip_id).unwrap();
    let after = actor
        .send(DriverAct {
            driver_id,
            action: DriverAction::Cancel,
            via_socket: true,
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.status, TripStatus::Matching);
    // The driver is free, nearest and in reach, yet the search passes it over and, with
    // nobody else, ends.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(addr.send(GetSnapshot).await.unwrap().available);
    assert_eq!(offers(&mut rx), 0, "offered the trip it gave up");
    assert_eq!(
        core.trips.get(trip.trip_id).unwrap().status,
        TripStatus::NoDriverFound
    );
    core.shutdown();
}

#[actix::test]
async fn an_accept_without_an_open_offer_is_rejected_with_the_reason() {
    let core = Core::start(Settings::default()).unwrap();
    let trip = request_trip(&core, (10.0, 10.0), (10.01, 10.01)).await;
    let actor = core.trip_actors.get(trip.trip_id).unwrap();
    let stranger = core.driver(Uuid::now_v7(), None).unwrap();
    let answer = actor
        .send(Accepting {
            driver_id: Uuid::now_v7(),
            driver: stranger,
            position: None,
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap();
    assert_eq!(answer.unwrap_err(), OfferEnd::Expired);
    actor
        .send(RiderCancel {
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!actor.connected() || core.trip_actors.get(trip.trip_id).is_none());
    core.shutdown();
}

async fn request(core: &Core, origin: LatLng) -> Trip {
    request_trip(core, (origin.lat(), origin.lng()), (48.87, 2.30)).await
}

fn frames(rx: &mut mpsc::Receiver<Outbound>) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Ok(Outbound::Text(frame)) = rx.try_recv() {
        out.push(serde_json::from_str(&frame).unwrap());
    }
    out
}

#[actix::test]
async fn an_old_offer_timer_never_expires_a_later_offer_to_the_same_driver() {
    let mut settings = Settings::default();
    settings.matching.offer_timeout_s = 1.0;
    let core = Core::start(settings).unwrap();
    let pickup = point(48.8566, 2.3522);
    let (a, a_addr, mut a_rx) = driver(&core, point(48.8570, 2.3530)).await;
    let (_, b_addr, mut b_rx) = driver(&core, point(48.8575, 2.3535)).await;
    let trip = request(&core, pickup).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(offers(&mut a_rx), 1);
    assert_eq!(offers(&mut b_rx), 1);
    // A wins: B's offer is withdrawn (its first timer must die with it).
    let answer = a_addr
        .send(Respond {
            trip_id: trip.trip_id,
            accept: true,
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap();
    assert!(matches!(answer, Ok(Answer::Assigned(_))));
    tokio::time::sleep(Duration::from_millis(250)).await;
    // A gives the trip up; the search starts again and B is offered anew.
    let actor = core.trip_actors.get(trip.trip_id).unwrap();
    actor
        .send(DriverAct {
            driver_id: a,
            action: DriverAction::Cancel,
            via_socket: true,
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reoffered = frames(&mut b_rx)
        .into_iter()
        .filter(|f| f["type"] == "offer")
        .count();
    assert_eq!(reoffered, 1, "B is offered the trip again");
    // The first timer fires ~1 s after the first offer, before the second offer's deadline.
    tokio::time::sleep(Duration::from_millis(750)).await;
    let held = b_addr.send(GetSnapshot).await.unwrap();
    assert_eq!(
        held.offer.map(|o| o.trip_id),
        Some(trip.trip_id),
        "B's second offer runs its own full time"
    );
    core.shutdown();
}

#[actix::test]
async fn client_timestamps_cannot_inflate_the_distance_driven() {
    let core = Core::start(Settings::default()).unwrap();
    let pickup = point(48.8566, 2.3522);
    let (driver_id, addr, _rx) = driver(&core, point(48.8567, 2.3523)).await;
    let trip = request(&core, pickup).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    addr.send(Respond {
        trip_id: trip.trip_id,
        accept: true,
        request_id: None,
        traceparent: None,
    })
    .await
    .unwrap()
    .unwrap();
    let actor = core.trip_actors.get(trip.trip_id).unwrap();
    let started = actor
        .send(DriverAct {
            driver_id,
            action: DriverAction::Start(trip.pin.clone()),
            via_socket: true,
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.status, TripStatus::TripStarted);
    // Points 11 km apart, received a few ms apart, stamped by the client as if an hour passed.
    let now = now_ms();
    for i in 0..40_i64 {
        let (lat, ts_ms) = if i % 2 == 0 {
            (48.8567, 0)
        } else {
            (48.9567, now)
        };
        actor
            .send(DriverMoved {
                driver_id,
                position: Position {
                    point: point(lat, 2.3523),
                    heading: None,
                    speed_mps: None,
                    ts_ms,
                    received_ms: now + i,
                },
            })
            .await
            .unwrap();
    }
    let done = actor
        .send(DriverAct {
            driver_id,
            action: DriverAction::Complete,
            via_socket: true,
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap()
        .unwrap();
    let fare = done.fare.unwrap();
    assert!(
        fare.distance_m < 100,
        "forged points counted {} m",
        fare.distance_m
    );
    core.shutdown();
}

#[actix::test]
async fn a_rider_cancel_landing_right_after_the_winning_accept_leaves_the_driver_free() {
    let core = Core::start(Settings::default()).unwrap();
    let pickup = point(48.8566, 2.3522);
    let (_, addr, mut rx) = driver(&core, point(48.8570, 2.3530)).await;
    let trip = request(&core, pickup).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(offers(&mut rx), 1);
    // Move the trip to an actor on a thread of its own, which the test can hold still.
    let first = core.trip_actors.get(trip.trip_id).unwrap();
    first.send(Halt).await.unwrap();
    let arbiter = Arbiter::new();
    let (moved, vehicle) = (core.trips.get(trip.trip_id).unwrap(), first_vehicle(&core));
    let actor = {
        let core = core.clone();
        TripActor::start_in_arbiter(&arbiter.handle(), move |_| {
            TripActor::new(core, moved, vehicle)
        })
    };
    core.trip_actors.insert(trip.trip_id, actor.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(addr.send(GetSnapshot).await.unwrap().offer.is_some());

    // The trip's thread stalls; the accept reaches its mailbox, the rider's cancel right behind
    // it. Both are handled in one go, so the trip's answer to the accept and its release of the
    // driver reach the driver together (the driver's thread is held meanwhile).
    arbiter.spawn_fn(|| std::thread::sleep(Duration::from_millis(150)));
    let accept = addr.send(Respond {
        trip_id: trip.trip_id,
        accept: true,
        request_id: None,
        traceparent: None,
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    actor.do_send(RiderCancel {
        request_id: None,
        traceparent: None,
    });
    std::thread::sleep(Duration::from_millis(400));
    let answer = accept.await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        core.trips.get(trip.trip_id).unwrap().status,
        TripStatus::Cancelled
    );
    assert!(
        matches!(answer, Err(AnswerError::Gone(OfferEnd::RiderCancelled))),
        "{answer:?}"
    );
    let state = addr.send(GetSnapshot).await.unwrap();
    assert_eq!(state.current_trip, None, "stranded on a cancelled trip");
    assert!(state.available, "the driver can be offered again");
    arbiter.stop();
    core.shutdown();
}

fn first_vehicle(core: &Core) -> VehicleId {
    core.vehicles
        .intern(&core.default_vehicle)
        .expect("the default vehicle type")
}

#[actix::test]
async fn a_trip_actor_that_panics_is_rebuilt_and_its_trip_goes_on() {
    let core = Core::start(Settings::default()).unwrap();
    let pickup = point(48.8566, 2.3522);
    let (driver_id, addr, mut rx) = driver(&core, point(48.8570, 2.3530)).await;
    let trip = request(&core, pickup).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(offers(&mut rx), 1);
    let actor = core.trip_actors.get(trip.trip_id).unwrap();

    // A panic while matching: the actor lives on at the same address and offers again.
    actor.send(super::super::supervision::Crash).await.unwrap();
    assert!(actor.connected(), "the same address still answers");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = frames(&mut rx);
    assert!(
        sent.iter().any(|f| f["type"] == "offer"),
        "the rebuilt search offers the driver again: {sent:?}"
    );
    let answer = addr
        .send(Respond {
            trip_id: trip.trip_id,
            accept: true,
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap();
    assert!(matches!(answer, Ok(Answer::Assigned(_))), "{answer:?}");

    // A panic while assigned: the driver keeps its trip and can finish it.
    actor.send(super::super::supervision::Crash).await.unwrap();
    for action in [
        DriverAction::Arrive,
        DriverAction::Start(trip.pin.clone()),
        DriverAction::Complete,
    ] {
        actor
            .send(DriverAct {
                driver_id,
                action,
                via_socket: true,
                request_id: None,
                traceparent: None,
            })
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        core.trips.get(trip.trip_id).unwrap().status,
        TripStatus::TripCompleted
    );
    let state = addr.send(GetSnapshot).await.unwrap();
    assert_eq!(
        state.current_trip, None,
        "the driver is free after its trip"
    );
    assert!(state.available);
    core.shutdown();
}

#[actix::test]
async fn a_driver_that_frees_up_is_offered_by_one_waiting_trip_not_refused_by_all() {
    let core = Core::start(Settings::default()).unwrap();
    let pickup = point(48.8566, 2.3522);
    let mut trips = Vec::new();
    for _ in 0..8 {
        trips.push(request(&core, pickup).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // One driver comes online in reach of all eight.
    let (_, _addr, mut rx) = driver(&core, point(48.8570, 2.3530)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(offers(&mut rx), 1, "one offer reaches the driver");
    let mut sent = 0;
    let mut refused = 0;
    for trip in &trips {
        for record in core.trips.events(trip.trip_id).unwrap() {
            match record.event {
                TripEvent::OfferSent { .. } => sent += 1,
                TripEvent::OfferEnded {
                    outcome: crate::dispatch::OfferOutcome::Busy,
                    ..
                } => refused += 1,
                _ => {}
            }
        }
    }
    assert_eq!(sent, 1, "one trip made the offer");
    assert_eq!(
        refused, 0,
        "no trip spent an offer the driver had to refuse"
    );
    core.shutdown();
}
