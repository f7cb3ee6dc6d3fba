//! Vehicle types: validated names, interned to small ids for the index.

use std::sync::RwLock;

use dashmap::DashMap;

use crate::geo::VehicleId;

/// Most distinct vehicle types one engine tracks; a guard against unbounded growth.
pub const MAX_VEHICLE_TYPES: usize = 1_024;

/// A vehicle type name: 1–32 characters of `[a-z0-9_-]` (upper case folded to lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VehicleType(String);

/// A vehicle type name that is empty, too long or has other characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vehicle_type must be 1–32 characters of a-z, 0-9, '_' or '-', got {0:?}")]
pub struct InvalidVehicleType(pub String);

impl VehicleType {
    /// Validates and normalises a vehicle type name.
    ///
    /// # Errors
    ///
    /// [`InvalidVehicleType`] for an empty, overlong or non-identifier name.
    pub fn parse(raw: &str) -> Result<Self, InvalidVehicleType> {
        let ok = (1..=32).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(InvalidVehicleType(raw.chars().take(40).collect()))
        }
    }

    /// The normalised name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for VehicleType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Interns vehicle type names to [`VehicleId`]s; ids are stable for the life of the engine.
#[derive(Default)]
pub struct VehicleTypes {
    ids: DashMap<VehicleType, VehicleId>,
    names: RwLock<Vec<VehicleType>>,
}

/// The interner is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many distinct vehicle types (at most {MAX_VEHICLE_TYPES})")]
pub struct TooManyVehicleTypes;

impl VehicleTypes {
    /// The id of `vehicle`, assigning one on first sight.
    ///
    /// # Errors
    ///
    /// [`TooManyVehicleTypes`] when [`MAX_VEHICLE_TYPES`] names are already known.
    pub fn intern(&self, vehicle: &VehicleType) -> Result<VehicleId, TooManyVehicleTypes> {
        if let Some(id) = self.ids.get(vehicle) {
            return Ok(*id);
        }
        let mut names = self
            .names
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = self.ids.get(vehicle) {
            return Ok(*id);
        }
        if names.len() >= MAX_VEHICLE_TYPES {
            return Err(TooManyVehicleTypes);
        }
        let id = VehicleId::try_from(names.len()).map_err(|_| TooManyVehicleTypes)?;
        names.push(vehicle.clone());
        self.ids.insert(vehicle.clone(), id);
        Ok(id)
    }

    /// The id of `vehicle` if any driver ever had it; a query for an unseen type matches nobody.
    #[must_use]
    pub fn lookup(&self, vehicle: &VehicleType) -> Option<VehicleId> {
        self.ids.get(vehicle).map(|id| *id)
    }

    /// The name behind an id.
    #[must_use]
    pub fn name(&self, id: VehicleId) -> Option<VehicleType> {
        let names = self
            .names
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        names.get(usize::from(id)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_and_folded() {
        assert_eq!(VehicleType::parse("XL").unwrap().as_str(), "xl");
        assert!(VehicleType::parse("comfort_plus-2").is_ok());
        for bad in ["", "has space", "ünicode", &"x".repeat(33), "semi;colon"] {
            assert!(VehicleType::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn interning_is_stable() {
        let types = VehicleTypes::default();
        let economy = VehicleType::parse("economy").unwrap();
        let xl = VehicleType::parse("xl").unwrap();
        let a = types.intern(&economy).unwrap();
        let b = types.intern(&xl).unwrap();
        assert_ne!(a, b);
        assert_eq!(types.intern(&economy).unwrap(), a);
        assert_eq!(types.lookup(&xl), Some(b));
        assert_eq!(types.name(b), Some(xl));
        assert_eq!(types.lookup(&VehicleType::parse("van").unwrap()), None);
    }
}
