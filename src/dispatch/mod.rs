//! Pure dispatch domain: driver states, vehicle types, money, the trip state machine, the matching
//! policy, pricing, surge and promotions. No actors, no I/O: actors call these, never the reverse.

mod driver;
pub mod ledger;
mod matching;
mod money;
mod pricing;
mod promo;
mod surge;
mod trip;
mod vehicle;

pub use driver::DriverStatus;
pub use matching::{MatchingMode, MatchingPolicy, Search};
pub use money::{Currency, InvalidCurrency, Money, div_round_half_up};
pub use pricing::{EstimateModel, FareBreakdown, Tariff, price, to_u64};
pub use promo::{Discount, PromoError, Promotion, Promotions};
pub use surge::{DemandWindow, Surge};
pub use trip::{
    ArrivalSource, EventRecord, NewTrip, Quote, ReplayError, Trip, TripCommand, TripError,
    TripEvent, TripStatus, decide, pin_from,
};
pub use vehicle::{
    InvalidVehicleType, MAX_VEHICLE_TYPES, TooManyVehicleTypes, VehicleType, VehicleTypes,
};
