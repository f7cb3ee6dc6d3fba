//! The trip state machine: a command and the current state give events or a typed refusal; the
//! state is nothing but the fold of its events.
//!
//! ```text
//! REQUESTED → MATCHING → ACCEPTED → DRIVER_ARRIVING → TRIP_STARTED → TRIP_COMPLETED → PAYMENT_PROCESSED
//!                 │  ↑        │            │                                 └──────→ PAYMENT_FAILED ─┘
//!                 │  └────────┴────────────┘  driver cancels: back to MATCHING, driver excluded
//!                 ├→ NO_DRIVER_FOUND
//!   rider cancels in REQUESTED … DRIVER_ARRIVING → CANCELLED (a fee once the free window after
//!   assignment has passed)
//! REQUESTED → SCHEDULED → MATCHING …   a trip booked ahead waits until its dispatch time; the
//!   rider cancels it free until then
//! ```
//!
//! [`decide`] never mutates; [`Trip::apply`] never refuses. Actors call `decide`, persist the events,
//! then apply them; recovery replays the stored events through [`Trip::replay`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::money::Money;
use super::pricing::FareBreakdown;
use super::promo::Discount;
use super::surge::Surge;
use crate::geo::LatLng;

/// Where a trip is in its life.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TripStatus {
    /// Accepted by the engine, matching not begun.
    Requested,
    /// Booked ahead: matching begins at its dispatch time.
    Scheduled,
    /// Offering drivers.
    Matching,
    /// A driver won the trip and is on the way.
    Accepted,
    /// The driver is at (or within the geofence of) the pickup.
    DriverArriving,
    /// The rider is on board.
    TripStarted,
    /// Dropped off; awaiting payment.
    TripCompleted,
    /// Paid.
    PaymentProcessed,
    /// Cancelled by the rider.
    Cancelled,
    /// Every radius step passed without an accept.
    NoDriverFound,
    /// The charge failed; retried when the rider's wallet is topped up.
    PaymentFailed,
}

impl TripStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 11] = [
        Self::Requested,
        Self::Scheduled,
        Self::Matching,
        Self::Accepted,
        Self::DriverArriving,
        Self::TripStarted,
        Self::TripCompleted,
        Self::PaymentProcessed,
        Self::Cancelled,
        Self::NoDriverFound,
        Self::PaymentFailed,
    ];

    /// The wire name, e.g. `DRIVER_ARRIVING`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Scheduled => "SCHEDULED",
            Self::Matching => "MATCHING",
            Self::Accepted => "ACCEPTED",
            Self::DriverArriving => "DRIVER_ARRIVING",
            Self::TripStarted => "TRIP_STARTED",
            Self::TripCompleted => "TRIP_COMPLETED",
            Self::PaymentProcessed => "PAYMENT_PROCESSED",
            Self::Cancelled => "CANCELLED",
            Self::NoDriverFound => "NO_DRIVER_FOUND",
            Self::PaymentFailed => "PAYMENT_FAILED",
        }
    }

    /// Whether a driver and rider still have something to do (a trip actor runs the trip).
    #[must_use]
    pub const fn is_live(self) -> bool {
        matches!(
            self,
            Self::Requested
                | Self::Scheduled
                | Self::Matching
                | Self::Accepted
                | Self::DriverArriving
                | Self::TripStarted
        )
    }

    /// Whether a driver is assigned in this status.
    #[must_use]
    pub const fn has_driver(self) -> bool {
        matches!(
            self,
            Self::Accepted
                | Self::DriverArriving
                | Self::TripStarted
                | Self::TripCompleted
                | Self::PaymentProcessed
                | Self::PaymentFailed
        )
    }
}

/// How the driver's arrival was noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrivalSource {
    /// The driver said so.
    Driver,
    /// Its position entered the pickup geofence.
    Geofence,
}

/// The price quoted when the trip was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The estimated fare, with its breakdown.
    pub estimate: FareBreakdown,
    /// The surge quoted, which is the surge charged.
    pub surge: Surge,
    /// The promotion applied, if any.
    pub discount: Option<Discount>,
    /// The fee a late rider cancellation costs.
    pub cancel_fee: Money,
}

/// Something that happened to a trip. The `type` names double as event routing keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TripEvent {
    /// The rider asked for a trip.
    #[serde(rename = "trip.requested")]
    Requested {
        /// Who asked.
        rider_id: Uuid,
        /// Vehicle type wanted.
        vehicle_type: String,
        /// Pickup.
        origin: LatLng,
        /// Drop-off.
        destination: LatLng,
        /// The price quoted.
        quote: Quote,
        /// The code the driver must give to start the trip.
        pin: String,
        /// The promotion code used.
        promo_code: Option<String>,
    },
    /// The trip was booked ahead: it waits in SCHEDULED until `dispatch_at_ms`.
    #[serde(rename = "trip.scheduled")]
    Scheduled {
        /// When the rider wants to be picked up, epoch ms.
        pickup_at_ms: i64,
        /// When matching begins, epoch ms.
        dispatch_at_ms: i64,
    },
    /// Matching began (or began again after a driver cancelled).
    #[serde(rename = "trip.matching")]
    MatchingStarted {
        /// The first step's radius.
        radius_m: f64,
    },
    /// The search moved on to a wider radius.
    #[serde(rename = "trip.search_widened")]
    SearchWidened {
        /// Step index, from 0.
        step: usize,
        /// The new radius.
        radius_m: f64,
    },
    /// A driver won the trip.
    #[serde(rename = "trip.accepted")]
    DriverAssigned {
        /// The winner.
        driver_id: Uuid,
    },
    /// The driver reached the pickup.
    #[serde(rename = "trip.driver_arriving")]
    DriverArrived {
        /// Said by the driver or seen by the geofence.
        source: ArrivalSource,
    },
    /// The rider is on board.
    #[serde(rename = "trip.started")]
    Started {},
    /// The fare computed at drop-off exceeded `pricing.max_fare_ratio` × the estimate: it was
    /// capped there, and the trip is flagged for review. A note; `trip.completed` follows.
    #[serde(rename = "trip.fare_flagged")]
    FareFlagged {
        /// The fare as computed from the trail and the duration.
        computed: Money,
        /// The fare charged (the cap).
        charged: Money,
        /// The ratio in force.
        max_fare_ratio: f64,
    },
    /// The rider was dropped off.
    #[serde(rename = "trip.completed")]
    Completed {
        /// The final fare, from the distance driven and the duration.
        fare: FareBreakdown,
    },
    /// The assigned driver gave the trip up; it matches again without that driver.
    #[serde(rename = "trip.driver_cancelled")]
    DriverCancelled {
        /// The driver who gave it up.
        driver_id: Uuid,
    },
    /// The rider cancelled.
    #[serde(rename = "trip.cancelled")]
    RiderCancelled {
        /// Fee for a late cancellation, if any.
        fee: Option<Money>,
    },
    /// Nobody accepted in any radius step.
    #[serde(rename = "trip.no_driver_found")]
    NoDriverFound {},
    /// The fare was charged.
    /// An offer reached a driver. Changes nothing in the trip's state: the log answers who was
    /// offered the trip and when.
    #[serde(rename = "trip.offer_sent")]
    OfferSent {
        /// The driver offered.
        driver_id: Uuid,
        /// Its distance to the pickup, metres.
        distance_m: u64,
        /// When the offer runs out, epoch ms.
        expires_ms: i64,
    },
    /// A wrong start PIN was refused: the failures in a row so far, and the lock it caused, if
    /// any (so a restart keeps counting and keeps the lock).
    #[serde(rename = "trip.pin_rejected")]
    PinRejected {
        /// Wrong PINs in a row (0 once this one locked the trip).
        failures: u32,
        /// PINs are refused until then, epoch ms.
        locked_until_ms: Option<i64>,
    },
    /// An offer ended (or could not be made), and how. Changes nothing in the trip's state.
    #[serde(rename = "trip.offer_ended")]
    OfferEnded {
        /// The driver offered.
        driver_id: Uuid,
        /// How it ended.
        outcome: OfferOutcome,
    },
    #[serde(rename = "payment.captured")]
    PaymentProcessed {
        /// What was charged.
        amount: Money,
    },
    /// The charge failed.
    #[serde(rename = "payment.failed")]
    PaymentFailed {
        /// Why.
        reason: String,
    },
    /// A late cancellation's fee was charged. A note: the trip stays CANCELLED.
    #[serde(rename = "payment.fee_captured")]
    FeeCaptured {
        /// What was charged.
        amount: Money,
    },
    /// A late cancellation's fee could not be charged (retried after a top-up). A note.
    #[serde(rename = "payment.fee_failed")]
    FeeFailed {
        /// Why.
        reason: String,
    },
    /// An operator refunded (part of) the trip's charge. A note.
    #[serde(rename = "payment.refunded")]
    Refunded {
        /// What this refund gave back.
        amount: Money,
        /// Everything refunded on this trip so far, this refund included.
        total_refunded: Money,
        /// The refund's idempotency reference.
        reference: String,
        /// Why, as the operator put it.
        reason: String,
    },
}

impl TripEvent {
    /// Whether this event notes something (an offer, a refused PIN) without changing the trip's
    /// status.
    #[must_use]
    pub const fn is_note(&self) -> bool {
        matches!(
            self,
            Self::OfferSent { .. }
                | Self::OfferEnded { .. }
                | Self::PinRejected { .. }
                | Self::FareFlagged { .. }
                | Self::FeeCaptured { .. }
                | Self::FeeFailed { .. }
                | Self::Refunded { .. }
        )
    }

    /// The event's type name (`trip.accepted`, …), as stored and published.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Requested { .. } => "trip.requested",
            Self::Scheduled { .. } => "trip.scheduled",
            Self::FareFlagged { .. } => "trip.fare_flagged",
            Self::FeeCaptured { .. } => "payment.fee_captured",
            Self::FeeFailed { .. } => "payment.fee_failed",
            Self::Refunded { .. } => "payment.refunded",
            Self::MatchingStarted { .. } => "trip.matching",
            Self::SearchWidened { .. } => "trip.search_widened",
            Self::DriverAssigned { .. } => "trip.accepted",
            Self::DriverArrived { .. } => "trip.driver_arriving",
            Self::Started {} => "trip.started",
            Self::Completed { .. } => "trip.completed",
            Self::DriverCancelled { .. } => "trip.driver_cancelled",
            Self::RiderCancelled { .. } => "trip.cancelled",
            Self::NoDriverFound {} => "trip.no_driver_found",
            Self::OfferSent { .. } => "trip.offer_sent",
            Self::OfferEnded { .. } => "trip.offer_ended",
            Self::PinRejected { .. } => "trip.pin_rejected",
            Self::PaymentProcessed { .. } => "payment.captured",
            Self::PaymentFailed { .. } => "payment.failed",
        }
    }
}

/// How an offer ended (`trip.offer_ended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferOutcome {
    /// The driver won the trip.
    Accepted,
    /// The driver turned it down.
    Declined,
    /// Its time ran out (or the search ended).
    Expired,
    /// Another driver won.
    Taken,
    /// The rider cancelled.
    RiderCancelled,
    /// The driver held another offer or a trip, or was offline, when it arrived.
    Busy,
    /// The driver had no open session and no recent REST call.
    Unreachable,
}

/// An event as stored: its place in the trip's log and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// 1, 2, 3, … within the trip.
    pub seq: u64,
    /// Epoch ms.
    pub at_ms: i64,
    /// What happened.
    #[serde(flatten)]
    pub event: TripEvent,
}

/// What someone asks of a trip.
#[derive(Debug, Clone, PartialEq)]
pub enum TripCommand {
    /// Widen the search to step `step` of `radius_m`.
    WidenSearch {
        /// Step index, from 1.
        step: usize,
        /// Its radius.
        radius_m: f64,
    },
    /// End the search without a driver.
    GiveUp,
    /// A driver accepted an offer.
    Assign {
        /// Who.
        driver_id: Uuid,
    },
    /// The driver is at the pickup.
    Arrive {
        /// Who says so.
        driver_id: Uuid,
        /// How it was noticed.
        source: ArrivalSource,
    },
    /// Start with the rider's PIN.
    Start {
        /// Who.
        driver_id: Uuid,
        /// The PIN given.
        pin: String,
    },
    /// Drop-off, with the final fare.
    Complete {
        /// Who.
        driver_id: Uuid,
        /// Priced from the distance driven and the duration (capped, when `flag` is set).
        fare: FareBreakdown,
        /// Set when the fare was capped: logged as `trip.fare_flagged` before `trip.completed`.
        flag: Option<FareFlag>,
    },
    /// A SCHEDULED trip's dispatch time came: matching begins.
    Dispatch {
        /// Radius of the first matching step.
        radius_m: f64,
    },
    /// The assigned driver gives the trip up.
    DriverCancel {
        /// Who.
        driver_id: Uuid,
        /// Radius of the first matching step.
        radius_m: f64,
    },
    /// The rider cancels.
    RiderCancel {
        /// Milliseconds after assignment within which cancelling is free.
        free_cancel_ms: i64,
    },
    /// The payment went through.
    RecordPayment {
        /// What was charged.
        amount: Money,
    },
    /// The payment failed.
    RecordPaymentFailure {
        /// Why.
        reason: String,
    },
}

impl TripCommand {
    /// The action's name, for refusals.
    #[must_use]
    pub const fn action(&self) -> &'static str {
        match self {
            Self::WidenSearch { .. } => "widen the search",
            Self::GiveUp => "end the search",
            Self::Assign { .. } => "accept",
            Self::Arrive { .. } => "arrive",
            Self::Start { .. } => "start",
            Self::Complete { .. } => "complete",
            Self::Dispatch { .. } => "dispatch",
            Self::DriverCancel { .. } | Self::RiderCancel { .. } => "cancel",
            Self::RecordPayment { .. } | Self::RecordPaymentFailure { .. } => "record a payment",
        }
    }
}

/// Why a command was refused. The trip is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TripError {
    /// The command does not apply in this status.
    #[error("cannot {action} a trip that is {status}", status = .status.as_str())]
    InvalidTransition {
        /// Current status.
        status: TripStatus,
        /// What was asked.
        action: &'static str,
    },
    /// The driver is not this trip's driver.
    #[error("this trip is not assigned to this driver")]
    NotYourTrip,
    /// The driver cancelled this trip before and is excluded from it.
    #[error("this driver gave the trip up and cannot take it again")]
    Excluded,
    /// The PIN does not match.
    #[error("the PIN does not match the rider's trip PIN")]
    InvalidPin,
}

impl TripError {
    /// Stable error code for the API.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::NotYourTrip => "not_your_trip",
            Self::Excluded => "driver_excluded",
            Self::InvalidPin => "invalid_pin",
        }
    }
}

/// A fare capped at `pricing.max_fare_ratio` × the estimate (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FareFlag {
    /// The fare as computed.
    pub computed: Money,
    /// The ratio in force.
    pub max_fare_ratio: f64,
}

/// When a trip booked ahead is picked up and dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// Pickup time, epoch ms.
    pub pickup_at_ms: i64,
    /// When matching begins, epoch ms.
    pub dispatch_at_ms: i64,
}

/// Everything needed to open a trip.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTrip {
    /// The trip id.
    pub trip_id: Uuid,
    /// Who asked.
    pub rider_id: Uuid,
    /// Vehicle type wanted.
    pub vehicle_type: String,
    /// Pickup.
    pub origin: LatLng,
    /// Drop-off.
    pub destination: LatLng,
    /// The price quoted.
    pub quote: Quote,
    /// The start PIN.
    pub pin: String,
    /// The promotion code used.
    pub promo_code: Option<String>,
    /// Radius of the first matching step.
    pub first_radius_m: f64,
    /// Set for a trip booked ahead: it opens SCHEDULED instead of MATCHING.
    pub schedule: Option<Schedule>,
}

/// A trip: the fold of its events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trip {
    /// The trip.
    pub trip_id: Uuid,
    /// Its rider.
    pub rider_id: Uuid,
    /// Vehicle type wanted.
    pub vehicle_type: String,
    /// Pickup.
    pub origin: LatLng,
    /// Drop-off.
    pub destination: LatLng,
    /// Price quoted at request time.
    pub quote: Quote,
    /// The start PIN.
    pub pin: String,
    /// The promotion code used.
    pub promo_code: Option<String>,
    /// Current status.
    pub status: TripStatus,
    /// The assigned driver.
    pub driver_id: Option<Uuid>,
    /// Drivers who gave this trip up; never offered it again.
    pub excluded: Vec<Uuid>,
    /// Current matching step (index into the radius steps).
    pub step: usize,
    /// Current search radius.
    pub radius_m: f64,
    /// When the current driver was assigned, epoch ms.
    pub assigned_ms: Option<i64>,
    /// When the ride began, epoch ms.
    pub started_ms: Option<i64>,
    /// The final fare, once completed.
    pub fare: Option<FareBreakdown>,
    /// A late-cancellation fee.
    pub cancellation_fee: Option<Money>,
    /// Epoch ms of the first event.
    pub created_ms: i64,
    /// Epoch ms of the latest event.
    pub updated_ms: i64,
    /// When each status was (last) entered.
    pub status_times: BTreeMap<TripStatus, i64>,
    /// Wrong start PINs in a row since the last lock.
    pub pin_failures: u32,
    /// Start PINs are refused until then, epoch ms (0: not locked).
    pub pin_locked_until_ms: i64,
    /// Seq of the latest event.
    pub version: u64,
    /// Set for a trip booked ahead.
    pub schedule: Option<Schedule>,
    /// A late cancellation's fee was charged (`payment.fee_captured`).
    pub fee_captured: bool,
    /// Charging the fee failed at least once (`payment.fee_failed`).
    pub fee_failed: bool,
}

/// Why a list of events is not a trip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// No events at all.
    #[error("a trip needs at least its trip.requested event")]
    Empty,
    /// The first event is not `trip.requested`.
    #[error("the first event of a trip must be trip.requested")]
    NotRequested,
    /// Seqs are not 1, 2, 3, ….
    #[error("event seq {found} where {expected} was expected")]
    Gap {
        /// The seq expected.
        expected: u64,
        /// The seq found.
        found: u64,
    },
}

impl Trip {
    /// Opens a trip: its `trip.requested` and `trip.matching` events (`trip.scheduled` for a trip
    /// booked ahead), and the state they make.
    #[must_use]
    pub fn open(new: NewTrip, now_ms: i64) -> (Self, Vec<EventRecord>) {
        let records = vec![
            EventRecord {
                seq: 1,
                at_ms: now_ms,
                event: TripEvent::Requested {
                    rider_id: new.rider_id,
                    vehicle_type: new.vehicle_type,
                    origin: new.origin,
                    destination: new.destination,
                    quote: new.quote,
                    pin: new.pin,
                    promo_code: new.promo_code,
                },
            },
            EventRecord {
                seq: 2,
                at_ms: now_ms,
                event: match new.schedule {
                    Some(s) => TripEvent::Scheduled {
                        pickup_at_ms: s.pickup_at_ms,
                        dispatch_at_ms: s.dispatch_at_ms,
                    },
                    None => TripEvent::MatchingStarted {
                        radius_m: new.first_radius_m,
                    },
                },
            },
        ];
        let mut trip = Self::from_requested(new.trip_id, &records[0])
            .unwrap_or_else(|| unreachable!("the first record is trip.requested by construction"));
        trip.apply(&records[1]);
        (trip, records)
    }

    fn from_requested(trip_id: Uuid, record: &EventRecord) -> Option<Self> {
        let TripEvent::Requested {
            rider_id,
            vehicle_type,
            origin,
            destination,
            quote,
            pin,
            promo_code,
        } = &record.event
        else {
            return None;
        };
        Some(Self {
            trip_id,
            rider_id: *rider_id,
            vehicle_type: vehicle_type.clone(),
            origin: *origin,
            destination: *destination,
            quote: *quote,
            pin: pin.clone(),
            promo_code: promo_code.clone(),
            status: TripStatus::Requested,
            driver_id: None,
            excluded: Vec::new(),
            step: 0,
            radius_m: 0.0,
            assigned_ms: None,
            started_ms: None,
            fare: None,
            cancellation_fee: None,
            created_ms: record.at_ms,
            updated_ms: record.at_ms,
            status_times: BTreeMap::from([(TripStatus::Requested, record.at_ms)]),
            pin_failures: 0,
            pin_locked_until_ms: 0,
            version: record.seq,
            schedule: None,
            fee_captured: false,
            fee_failed: false,
        })
    }

    /// Rebuilds a trip from its events alone.
    ///
    /// # Errors
    ///
    /// [`ReplayError`] when the log does not start with `trip.requested` or has a gap.
    pub fn replay(trip_id: Uuid, records: &[EventRecord]) -> Result<Self, ReplayError> {
        let (first, rest) = records.split_first().ok_or(ReplayError::Empty)?;
        if first.seq != 1 {
            return Err(ReplayError::Gap {
                expected: 1,
                found: first.seq,
            });
        }
        let mut trip = Self::from_requested(trip_id, first).ok_or(ReplayError::NotRequested)?;
        for record in rest {
            if record.seq != trip.version + 1 {
                return Err(ReplayError::Gap {
                    expected: trip.version + 1,
                    found: record.seq,
                });
            }
            trip.apply(record);
        }
        Ok(trip)
    }

    /// Folds one event into the state. Never refuses: events are facts.
    pub fn apply(&mut self, record: &EventRecord) {
        let at = record.at_ms;
        if let TripEvent::PinRejected {
            failures,
            locked_until_ms,
        } = record.event
        {
            self.pin_failures = failures;
            if let Some(until) = locked_until_ms {
                self.pin_locked_until_ms = until;
            }
            self.version = record.seq;
            return;
        }
        match record.event {
            TripEvent::FeeCaptured { .. } => self.fee_captured = true,
            TripEvent::FeeFailed { .. } => self.fee_failed = true,
            _ => {}
        }
        if record.event.is_note() {
            // A note in the log, not a change of state.
            self.version = record.seq;
            return;
        }
        let status = match &record.event {
            TripEvent::Requested { .. } => TripStatus::Requested,
            TripEvent::Scheduled {
                pickup_at_ms,
                dispatch_at_ms,
            } => {
                self.schedule = Some(Schedule {
                    pickup_at_ms: *pickup_at_ms,
                    dispatch_at_ms: *dispatch_at_ms,
                });
                TripStatus::Scheduled
            }
            TripEvent::MatchingStarted { radius_m } => {
                self.step = 0;
                self.radius_m = *radius_m;
                TripStatus::Matching
            }
            TripEvent::SearchWidened { step, radius_m } => {
                self.step = *step;
                self.radius_m = *radius_m;
                TripStatus::Matching
            }
            TripEvent::DriverAssigned { driver_id } => {
                self.driver_id = Some(*driver_id);
                self.assigned_ms = Some(at);
                TripStatus::Accepted
            }
            TripEvent::DriverArrived { .. } => TripStatus::DriverArriving,
            TripEvent::Started {} => {
                self.started_ms = Some(at);
                TripStatus::TripStarted
            }
            TripEvent::Completed { fare } => {
                self.fare = Some(*fare);
                TripStatus::TripCompleted
            }
            TripEvent::DriverCancelled { driver_id } => {
                self.driver_id = None;
                self.assigned_ms = None;
                if !self.excluded.contains(driver_id) {
                    self.excluded.push(*driver_id);
                }
                // The search begins again from its first step; MatchingStarted follows.
                TripStatus::Matching
            }
            TripEvent::RiderCancelled { fee } => {
                self.cancellation_fee = *fee;
                TripStatus::Cancelled
            }
            TripEvent::NoDriverFound {} => TripStatus::NoDriverFound,
            TripEvent::PaymentProcessed { .. } => TripStatus::PaymentProcessed,
            TripEvent::PaymentFailed { .. } => TripStatus::PaymentFailed,
            TripEvent::OfferSent { .. }
            | TripEvent::OfferEnded { .. }
            | TripEvent::PinRejected { .. }
            | TripEvent::FareFlagged { .. }
            | TripEvent::FeeCaptured { .. }
            | TripEvent::FeeFailed { .. }
            | TripEvent::Refunded { .. } => self.status,
        };
        self.status = status;
        self.status_times.insert(status, at);
        self.updated_ms = at;
        self.version = record.seq;
    }

    /// Numbers `events` after this trip's latest event, stamped `now_ms`.
    #[must_use]
    pub fn records(&self, events: Vec<TripEvent>, now_ms: i64) -> Vec<EventRecord> {
        events
            .into_iter()
            .zip(self.version + 1..)
            .map(|(event, seq)| EventRecord {
                seq,
                at_ms: now_ms,
                event,
            })
            .collect()
    }

    fn require_driver(&self, driver_id: Uuid) -> Result<(), TripError> {
        if self.driver_id == Some(driver_id) {
            Ok(())
        } else {
            Err(TripError::NotYourTrip)
        }
    }
}

/// What `command` does to `trip` at `now_ms`: the events to append, or why not.
///
/// # Errors
///
/// [`TripError`] when the command does not apply; the trip is then unchanged.
pub fn decide(
    trip: &Trip,
    command: &TripCommand,
    now_ms: i64,
) -> Result<Vec<TripEvent>, TripError> {
    use TripStatus as S;
    let refuse = || TripError::InvalidTransition {
        status: trip.status,
        action: command.action(),
    };
    match command {
        TripCommand::WidenSearch { step, radius_m } => match trip.status {
            S::Matching if *step > trip.step => Ok(vec![TripEvent::SearchWidened {
                step: *step,
                radius_m: *radius_m,
            }]),
            _ => Err(refuse()),
        },
        TripCommand::GiveUp => match trip.status {
            S::Requested | S::Scheduled | S::Matching => Ok(vec![TripEvent::NoDriverFound {}]),
            _ => Err(refuse()),
        },
        TripCommand::Assign { driver_id } => {
            if trip.excluded.contains(driver_id) {
                return Err(TripError::Excluded);
            }
            match trip.status {
                S::Matching => Ok(vec![TripEvent::DriverAssigned {
                    driver_id: *driver_id,
                }]),
                _ => Err(refuse()),
            }
        }
        TripCommand::Arrive { driver_id, source } => {
            trip.require_driver(*driver_id)?;
            match trip.status {
                S::Accepted => Ok(vec![TripEvent::DriverArrived { source: *source }]),
                _ => Err(refuse()),
            }
        }
        TripCommand::Start { driver_id, pin } => {
            trip.require_driver(*driver_id)?;
            match trip.status {
                // Starting straight from ACCEPTED passes through DRIVER_ARRIVING: the driver is
                // evidently at the pickup, and the log keeps every state in order.
                S::Accepted | S::DriverArriving if *pin != trip.pin => Err(TripError::InvalidPin),
                S::Accepted => Ok(vec![
                    TripEvent::DriverArrived {
                        source: ArrivalSource::Driver,
                    },
                    TripEvent::Started {},
                ]),
                S::DriverArriving => Ok(vec![TripEvent::Started {}]),
                _ => Err(refuse()),
            }
        }
        TripCommand::Complete {
            driver_id,
            fare,
            flag,
        } => {
            trip.require_driver(*driver_id)?;
            match trip.status {
                S::TripStarted => Ok(flag
                    .map(|f| TripEvent::FareFlagged {
                        computed: f.computed,
                        charged: fare.total,
                        max_fare_ratio: f.max_fare_ratio,
                    })
                    .into_iter()
                    .chain([TripEvent::Completed { fare: *fare }])
                    .collect()),
                _ => Err(refuse()),
            }
        }
        TripCommand::Dispatch { radius_m } => match trip.status {
            S::Scheduled => Ok(vec![TripEvent::MatchingStarted {
                radius_m: *radius_m,
            }]),
            _ => Err(refuse()),
        },
        TripCommand::DriverCancel {
            driver_id,
            radius_m,
        } => {
            trip.require_driver(*driver_id)?;
            match trip.status {
                S::Accepted | S::DriverArriving => Ok(vec![
                    TripEvent::DriverCancelled {
                        driver_id: *driver_id,
                    },
                    TripEvent::MatchingStarted {
                        radius_m: *radius_m,
                    },
                ]),
                _ => Err(refuse()),
            }
        }
        TripCommand::RiderCancel { free_cancel_ms } => match trip.status {
            S::Requested | S::Scheduled | S::Matching => {
                Ok(vec![TripEvent::RiderCancelled { fee: None }])
            }
            S::Accepted | S::DriverArriving => {
                let late = trip
                    .assigned_ms
                    .is_some_and(|at| now_ms.saturating_sub(at) > *free_cancel_ms);
                let fee =
                    (late && trip.quote.cancel_fee.amount > 0).then_some(trip.quote.cancel_fee);
                Ok(vec![TripEvent::RiderCancelled { fee }])
            }
            _ => Err(refuse()),
        },
        TripCommand::RecordPayment { amount } => match trip.status {
            S::TripCompleted | S::PaymentFailed => {
                Ok(vec![TripEvent::PaymentProcessed { amount: *amount }])
            }
            _ => Err(refuse()),
        },
        TripCommand::RecordPaymentFailure { reason } => match trip.status {
            S::TripCompleted => Ok(vec![TripEvent::PaymentFailed {
                reason: reason.clone(),
            }]),
            _ => Err(refuse()),
        },
    }
}

/// A four-digit PIN from 16 random bits.
#[must_use]
pub fn pin_from(random: u16) -> String {
    format!("{:04}", random % 10_000)
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
