//! Driver profiles the engine knows: created on first use (a driver holding a valid token needs no
//! registration), updated when a driver actor stops, read when no actor is alive.

use dashmap::DashMap;
use uuid::Uuid;

use crate::dispatch::{DriverStatus, Position, VehicleType};

/// What the engine knows of a driver between sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverProfile {
    /// The driver.
    pub driver_id: Uuid,
    /// Vehicle type.
    pub vehicle_type: VehicleType,
    /// When the engine first saw the driver, epoch ms.
    pub created_ms: i64,
    /// Status when its actor last stopped.
    pub status: DriverStatus,
    /// Last position.
    pub last_position: Option<Position>,
}

/// In-memory profile store.
#[derive(Default)]
pub struct DriverDirectory {
    profiles: DashMap<Uuid, DriverProfile>,
}

impl DriverDirectory {
    /// The driver's profile, created with `vehicle_type` if the driver is new.
    pub fn get_or_create(&self, driver_id: Uuid, vehicle_type: VehicleType) -> DriverProfile {
        self.profiles
            .entry(driver_id)
            .or_insert_with(|| DriverProfile {
                driver_id,
                vehicle_type,
                created_ms: crate::clock::now_ms(),
                status: DriverStatus::Offline,
                last_position: None,
            })
            .clone()
    }

    /// The driver's profile if known.
    #[must_use]
    pub fn get(&self, driver_id: Uuid) -> Option<DriverProfile> {
        self.profiles.get(&driver_id).map(|p| p.clone())
    }

    /// Stores the profile.
    pub fn save(&self, profile: DriverProfile) {
        self.profiles.insert(profile.driver_id, profile);
    }

    /// Number of known drivers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether no driver is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}
