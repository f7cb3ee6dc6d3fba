//! Surge: a multiplier per H3 cell (at `pricing.surge_resolution`) from recent demand over
//! available supply, in steps of 0.1, never below 1.0 and capped.
//!
//! `multiplier = clamp(demand / max(supply, 1), 1.0, cap)`, rounded down to a tenth, where demand
//! is the trips requested from the cell within the window and supply the available drivers in it
//! now. So a lone request in an empty cell pays no surge, three requests chasing one driver pay
//! 3.0 (or the cap).

use std::collections::{HashMap, VecDeque};

use h3o::CellIndex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A surge multiplier in tenths (10 = 1.0×).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Surge(u16);

impl Surge {
    /// No surge: 1.0×.
    pub const NONE: Self = Self(10);

    /// A multiplier of `tenths / 10`, at least 1.0.
    #[must_use]
    pub fn from_tenths(tenths: u16) -> Self {
        Self(tenths.max(10))
    }

    /// The largest multiplier not above `value` (in steps of 0.1), at least 1.0.
    #[must_use]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub fn floor(value: f64) -> Self {
        if !value.is_finite() || value <= 1.0 {
            return Self::NONE;
        }
        // A tiny epsilon so that 1.3 (stored as 1.2999…) is 13 tenths.
        let tenths = (value * 10.0 + 1e-9).floor().min(f64::from(u16::MAX));
        Self::from_tenths(tenths as u16)
    }

    /// Tenths: 15 for 1.5×.
    #[must_use]
    pub const fn tenths(self) -> u16 {
        self.0
    }

    /// As a number, for display: 1.5.
    #[must_use]
    pub fn multiplier(self) -> f64 {
        f64::from(self.0) / 10.0
    }

    /// The multiplier for `demand` recent requests and `supply` available drivers, capped at `cap`.
    #[must_use]
    pub fn from_market(demand: u32, supply: u32, cap: Self) -> Self {
        let tenths = u64::from(demand) * 10 / u64::from(supply.max(1));
        Self::from_tenths(u16::try_from(tenths).unwrap_or(u16::MAX)).min(cap)
    }
}

impl utoipa::PartialSchema for Surge {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .minimum(Some(1.0))
            .description(Some("Surge multiplier, in steps of 0.1."))
            .into()
    }
}

impl utoipa::ToSchema for Surge {}

impl Serialize for Surge {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.multiplier())
    }
}

impl<'de> Deserialize<'de> for Surge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::floor(f64::deserialize(d)?))
    }
}

/// Recent trip requests per surge cell, within a sliding window.
#[derive(Debug, Default)]
pub struct DemandWindow {
    window_ms: i64,
    cells: HashMap<CellIndex, VecDeque<i64>>,
}

impl DemandWindow {
    /// Counts requests younger than `window_ms`.
    #[must_use]
    pub fn new(window_ms: i64) -> Self {
        Self {
            window_ms,
            cells: HashMap::new(),
        }
    }

    /// Records a request from `cell` at `now_ms`.
    pub fn record(&mut self, cell: CellIndex, now_ms: i64) {
        let times = self.cells.entry(cell).or_default();
        Self::prune(times, now_ms - self.window_ms);
        times.push_back(now_ms);
    }

    /// Requests from `cell` within the window ending at `now_ms`.
    #[must_use]
    pub fn count(&self, cell: CellIndex, now_ms: i64) -> u32 {
        let since = now_ms - self.window_ms;
        self.cells.get(&cell).map_or(0, |times| {
            u32::try_from(times.iter().filter(|&&t| t > since).count()).unwrap_or(u32::MAX)
        })
    }

    /// Every cell with requests in the window ending at `now_ms`, and their counts; forgets older ones.
    pub fn snapshot(&mut self, now_ms: i64) -> Vec<(CellIndex, u32)> {
        let since = now_ms - self.window_ms;
        self.cells.retain(|_, times| {
            Self::prune(times, since);
            !times.is_empty()
        });
        self.cells
            .iter()
            .map(|(cell, times)| (*cell, u32::try_from(times.len()).unwrap_or(u32::MAX)))
            .collect()
    }

    fn prune(times: &mut VecDeque<i64>, since: i64) {
        while times.front().is_some_and(|&t| t <= since) {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_is_demand_over_supply_in_tenths_floored_and_capped() {
        let cap = Surge::from_tenths(30);
        let cases = [
            (0, 0, 10, "no demand"),
            (1, 0, 10, "a lone request in an empty cell"),
            (3, 0, 30, "three requests, no driver"),
            (5, 10, 10, "more supply than demand"),
            (13, 10, 13, "1.3"),
            (14, 3, 30, "4.66 is capped at 3.0"),
            (10, 7, 14, "1.428… rounds down to 1.4"),
            (u32::MAX, 1, 30, "huge demand"),
        ];
        for (demand, supply, tenths, what) in cases {
            assert_eq!(
                Surge::from_market(demand, supply, cap).tenths(),
                tenths,
                "{what}"
            );
        }
    }

    #[test]
    fn surge_serialises_as_a_number() {
        assert_eq!(
            serde_json::to_string(&Surge::from_tenths(13)).unwrap(),
            "1.3"
        );
        assert_eq!(Surge::floor(1.3).tenths(), 13);
        assert_eq!(Surge::floor(0.4), Surge::NONE);
        assert_eq!(Surge::floor(f64::NAN), Surge::NONE);
    }

    #[test]
    fn demand_counts_only_the_window() {
        let cell = h3o::LatLng::new(48.85, 2.35)
            .unwrap()
            .to_cell(h3o::Resolution::Seven);
        let mut window = DemandWindow::new(1_000);
        window.record(cell, 0);
        window.record(cell, 500);
        window.record(cell, 900);
        assert_eq!(window.count(cell, 950), 3);
        assert_eq!(window.count(cell, 1_200), 2, "the first request aged out");
        assert_eq!(window.snapshot(1_600), vec![(cell, 1)]);
        assert_eq!(window.snapshot(5_000), vec![]);
    }
}
