//! Pure dispatch domain: driver states and positions, roles, vehicle types, money, the trip
//! lifecycle (state machine), the matching policy, pricing, surge and promotions. No actors, no
//! I/O, no configuration: actors call these, never the reverse.

pub mod batch;
mod driver_state;
pub mod ledger;
mod lifecycle;
mod matching;
mod money;
mod pricing;
mod promo;
mod role;
mod surge;
mod trail;
mod vehicle;

pub use driver_state::{DriverStatus, Position};
pub use lifecycle::{
    ArrivalSource, EventRecord, FareFlag, NewTrip, OfferOutcome, Quote, ReplayError, Schedule,
    Trip, TripCommand, TripError, TripEvent, TripStatus, decide, pin_from,
};
pub use matching::{MatchingMode, MatchingPolicy, Search};
pub use money::{Currency, InvalidCurrency, Money, div_round_half_up};
pub use pricing::{EstimateModel, FareBreakdown, Tariff, cap_fare, price, to_u64};
pub use promo::{Discount, PromoError, Promotion, Promotions};
pub use role::Role;
pub use surge::{DemandWindow, Surge};
pub use trail::{MAX_PLAUSIBLE_SPEED_MPS, Trail, plausible_distance_m};
pub use vehicle::{
    InvalidVehicleType, MAX_VEHICLE_TYPES, TooManyVehicleTypes, VehicleType, VehicleTypes,
};
