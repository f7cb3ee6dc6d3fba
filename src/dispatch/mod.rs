//! Pure dispatch domain: driver states and vehicle types. No actors, no I/O.

mod driver;
mod vehicle;

pub use driver::DriverStatus;
pub use vehicle::{
    InvalidVehicleType, MAX_VEHICLE_TYPES, TooManyVehicleTypes, VehicleType, VehicleTypes,
};
