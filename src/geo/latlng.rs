//! Validated WGS84 coordinates and the distance helpers built on them.

use serde::{Deserialize, Serialize};

/// Mean Earth radius in metres, the one h3o uses, so that every distance in the engine agrees with
/// [`h3o::LatLng::distance_m`].
pub const EARTH_RADIUS_M: f64 = 6_371_007.180_918_475;

/// Why a coordinate or a radius was refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum GeoError {
    /// A coordinate was NaN or infinite.
    #[error("{field} must be a finite number")]
    NotFinite {
        /// `lat` or `lng`.
        field: &'static str,
    },
    /// Latitude outside [-90, 90].
    #[error("lat must be within [-90, 90], got {0}")]
    LatOutOfRange(f64),
    /// Longitude outside [-180, 180].
    #[error("lng must be within [-180, 180], got {0}")]
    LngOutOfRange(f64),
}

impl GeoError {
    /// The name of the offending field, for error envelopes.
    #[must_use]
    pub const fn field(&self) -> &'static str {
        match self {
            Self::NotFinite { field } => field,
            Self::LatOutOfRange(_) => "lat",
            Self::LngOutOfRange(_) => "lng",
        }
    }
}

/// A point on the WGS84 ellipsoid, in degrees; holding one means it is valid.
///
/// # Example
///
/// ```
/// use hexdispatch::geo::LatLng;
///
/// let paris = LatLng::new(48.8566, 2.3522)?;
/// assert!(LatLng::new(91.0, 0.0).is_err());
/// assert!(LatLng::new(f64::NAN, 0.0).is_err());
/// # Ok::<(), hexdispatch::geo::GeoError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "RawLatLng")]
pub struct LatLng {
    /// Latitude, degrees.
    #[schema(minimum = -90.0, maximum = 90.0)]
    lat: f64,
    /// Longitude, degrees.
    #[schema(minimum = -180.0, maximum = 180.0)]
    lng: f64,
}

/// The unchecked shape a [`LatLng`] is read from.
#[derive(Deserialize)]
struct RawLatLng {
    lat: f64,
    lng: f64,
}

impl TryFrom<RawLatLng> for LatLng {
    type Error = GeoError;

    fn try_from(raw: RawLatLng) -> Result<Self, GeoError> {
        Self::new(raw.lat, raw.lng)
    }
}

impl LatLng {
    /// Validates a latitude/longitude pair given in degrees.
    ///
    /// # Errors
    ///
    /// [`GeoError`] naming the field when a value is not finite or out of range.
    pub fn new(lat: f64, lng: f64) -> Result<Self, GeoError> {
        if !lat.is_finite() {
            return Err(GeoError::NotFinite { field: "lat" });
        }
        if !lng.is_finite() {
            return Err(GeoError::NotFinite { field: "lng" });
        }
        if !(-90.0..=90.0).contains(&lat) {
            return Err(GeoError::LatOutOfRange(lat));
        }
        if !(-180.0..=180.0).contains(&lng) {
            return Err(GeoError::LngOutOfRange(lng));
        }
        Ok(Self { lat, lng })
    }

    /// Latitude in degrees.
    #[must_use]
    pub const fn lat(self) -> f64 {
        self.lat
    }

    /// Longitude in degrees.
    #[must_use]
    pub const fn lng(self) -> f64 {
        self.lng
    }

    /// The same point as h3o sees it.
    #[must_use]
    pub fn to_h3(self) -> h3o::LatLng {
        // Every validated LatLng is a valid h3o LatLng: both only need finite values.
        h3o::LatLng::new(self.lat, self.lng).unwrap_or_else(|_| unreachable!("validated in new"))
    }

    /// Great-circle distance in metres (haversine, by h3o).
    #[must_use]
    pub fn distance_m(self, other: Self) -> f64 {
        self.to_h3().distance_m(other.to_h3())
    }
}

impl From<h3o::LatLng> for LatLng {
    fn from(ll: h3o::LatLng) -> Self {
        Self {
            lat: ll.lat(),
            lng: ll.lng(),
        }
    }
}

/// Great-circle (haversine) distance in metres between two points.
#[must_use]
pub fn haversine_m(a: LatLng, b: LatLng) -> f64 {
    a.distance_m(b)
}

/// A point as a unit vector on the sphere.
///
/// The straight-line (chord) distance between two unit vectors grows strictly with their
/// great-circle distance, so ranking by squared chord is ranking by true distance, at the cost of
/// three multiplications instead of four trigonometric calls. Chords also obey the Euclidean
/// triangle inequality, which is what makes the index's lower bounds safe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitVec {
    x: f64,
    y: f64,
    z: f64,
}

impl UnitVec {
    /// Squared chord length between two points on the unit sphere.
    #[must_use]
    #[inline]
    pub fn chord2(self, other: Self) -> f64 {
        let dx = self.x - other.x;
        let dy = self.y - other.y;
        let dz = self.z - other.z;
        dx * dx + dy * dy + dz * dz
    }

    /// Chord length between two points on the unit sphere.
    #[must_use]
    #[inline]
    pub fn chord(self, other: Self) -> f64 {
        self.chord2(other).sqrt()
    }
}

impl From<LatLng> for UnitVec {
    fn from(p: LatLng) -> Self {
        let (sin_lat, cos_lat) = p.lat.to_radians().sin_cos();
        let (sin_lng, cos_lng) = p.lng.to_radians().sin_cos();
        Self {
            x: cos_lat * cos_lng,
            y: cos_lat * sin_lng,
            z: sin_lat,
        }
    }
}

impl From<h3o::LatLng> for UnitVec {
    fn from(p: h3o::LatLng) -> Self {
        Self::from(LatLng::from(p))
    }
}

/// Converts a great-circle distance in metres to a unit-sphere chord length.
#[must_use]
pub fn metres_to_chord(distance_m: f64) -> f64 {
    let angle = (distance_m / EARTH_RADIUS_M).clamp(0.0, std::f64::consts::PI);
    2.0 * (angle / 2.0).sin()
}

/// Converts a unit-sphere chord length to a great-circle distance in metres.
#[must_use]
pub fn chord_to_metres(chord: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (chord / 2.0).clamp(0.0, 1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_validated_and_named() {
        let cases = [
            (f64::NAN, 0.0, "lat", "NaN latitude"),
            (0.0, f64::INFINITY, "lng", "infinite longitude"),
            (90.0001, 0.0, "lat", "latitude above 90"),
            (-90.0001, 0.0, "lat", "latitude below -90"),
            (0.0, 180.0001, "lng", "longitude above 180"),
            (0.0, -180.0001, "lng", "longitude below -180"),
        ];
        for (lat, lng, field, why) in cases {
            let err = LatLng::new(lat, lng).expect_err(why);
            assert_eq!(err.field(), field, "{why}");
        }
        for (lat, lng) in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)] {
            assert!(
                LatLng::new(lat, lng).is_ok(),
                "({lat}, {lng}) is on the edge and valid"
            );
        }
    }

    #[test]
    fn chord_conversions_round_trip_and_agree_with_haversine() {
        let a = LatLng::new(52.52, 13.405).unwrap();
        let b = LatLng::new(52.53, 13.42).unwrap();
        let via_chord = chord_to_metres(UnitVec::from(a).chord(UnitVec::from(b)));
        assert!((via_chord - haversine_m(a, b)).abs() < 1e-6, "{via_chord}");
        for d in [0.0, 1.0, 100.0, 2_000.0, 50_000.0, 5_000_000.0] {
            assert!(
                (chord_to_metres(metres_to_chord(d)) - d).abs() < 1e-6,
                "{d} m"
            );
        }
    }
}
