//! Tests of the trip actor against a real core (cell actors, registries, trips).

use tokio::sync::mpsc;

use super::*;
use crate::actors::driver::{
    Answer, Attach, GetSnapshot, Location, LocationUpdate, Respond, SessionLink, SetStatus,
};
use crate::actors::protocol::Outbound;
use crate::actors::{Requested, TripRequest};
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
    let Requested::Created(trip) = core
        .request_trip(
            Uuid::now_v7(),
            TripRequest {
                origin: pickup,
                destination: point(48.87, 2.30),
                vehicle_type: None,
                promo_code: None,
                idempotency_key: None,
                request_id: None,
            },
        )
        .await
        .unwrap()
    else {
        panic!("a new trip")
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(offers(&mut rx), 1);
    let answer = addr
        .send(Respond {
            trip_id: trip.trip_id,
            accept: true,
            request_id: None,
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
    let Requested::Created(trip) = core
        .request_trip(
            Uuid::now_v7(),
            TripRequest {
                origin: point(10.0, 10.0),
                destination: point(10.01, 10.01),
                vehicle_type: None,
                promo_code: None,
                idempotency_key: None,
                request_id: None,
            },
        )
        .await
        .unwrap()
    else {
        panic!("a new trip")
    };
    let actor = core.trip_actors.get(trip.trip_id).unwrap();
    let stranger = core.driver(Uuid::now_v7(), None).unwrap();
    let answer = actor
        .send(Accepting {
            driver_id: Uuid::now_v7(),
            driver: stranger,
            position: None,
            request_id: None,
        })
        .await
        .unwrap();
    assert_eq!(answer.unwrap_err(), OfferEnd::Expired);
    actor
        .send(RiderCancel { request_id: None })
        .await
        .unwrap()
        .unwrap();
    assert!(!actor.connected() || core.trip_actors.get(trip.trip_id).is_none());
    core.shutdown();
}
