//! The market: tariffs by city and vehicle type, estimates, surge per H3 cell and promotion
//! uses. Pure rules live in [`crate::dispatch`]; this holds the mutable parts (recent demand,
//! promotion uses) and asks the cell actors for supply.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use h3o::{CellIndex, Resolution};

use super::shards::ShardMap;
use crate::config::{ConfigError, Settings};
use crate::dispatch::{
    Currency, DemandWindow, Discount, EstimateModel, FareBreakdown, PromoError, Promotions, Surge,
    Tariff, price,
};
use crate::geo::LatLng;

/// Why a trip cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// No tariff for this vehicle type where the trip starts.
    #[error("vehicle_type {requested:?} is not offered here; known types: {known}")]
    UnknownVehicle {
        /// What was asked for.
        requested: String,
        /// What exists.
        known: String,
    },
    /// The promotion code cannot be used.
    #[error(transparent)]
    Promo(#[from] PromoError),
}

struct City {
    centre: LatLng,
    radius_m: f64,
    currency: Currency,
    tariffs: BTreeMap<String, Tariff>,
}

/// A surge quote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurgeQuote {
    /// The multiplier.
    pub surge: Surge,
    /// The surge cell.
    pub cell: CellIndex,
    /// Recent requests in the cell.
    pub demand: u32,
    /// Available drivers in the cell.
    pub supply: u32,
}

/// Prices, surge and promotions.
pub struct Market {
    currency: Currency,
    tariffs: BTreeMap<String, Tariff>,
    cities: Vec<City>,
    /// Estimates of distance and duration.
    pub model: EstimateModel,
    surge_res: Resolution,
    cap: Surge,
    ttl_ms: i64,
    demand: Mutex<DemandWindow>,
    promotions: Mutex<Promotions>,
}

impl Market {
    /// The market described by `settings`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a bad currency or surge resolution.
    pub fn new(settings: &Settings) -> Result<Self, ConfigError> {
        let p = &settings.pricing;
        let bad = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
        let currency =
            Currency::parse(&p.currency).map_err(|e| bad("pricing.currency", e.to_string()))?;
        let cities = p
            .cities
            .iter()
            .map(|c| {
                Ok(City {
                    centre: LatLng::new(c.lat, c.lng)
                        .map_err(|e| bad("pricing.cities", e.to_string()))?,
                    radius_m: c.radius_km * 1_000.0,
                    currency: Currency::parse(&c.currency)
                        .map_err(|e| bad("pricing.cities.currency", e.to_string()))?,
                    tariffs: c.tariffs.clone(),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Self {
            currency,
            tariffs: p.tariffs.clone(),
            cities,
            model: EstimateModel {
                detour_factor: p.detour_factor,
                average_speed_kmh: p.average_speed_kmh,
            },
            surge_res: Resolution::try_from(p.surge_resolution)
                .map_err(|e| bad("pricing.surge_resolution", e.to_string()))?,
            cap: Surge::floor(p.max_surge),
            ttl_ms: i64::try_from(settings.location.ttl().as_millis()).unwrap_or(i64::MAX),
            demand: Mutex::new(DemandWindow::new(
                i64::try_from(std::time::Duration::from_secs_f64(p.surge_window_s).as_millis())
                    .unwrap_or(i64::MAX),
            )),
            promotions: Mutex::new(Promotions::new(
                p.promotions
                    .iter()
                    .map(crate::config::PromotionSettings::promotion),
            )),
        })
    }

    /// The tariff and currency for `vehicle_type` at `origin`: the first configured city whose
    /// circle holds it and prices that type, else the default tariffs.
    ///
    /// # Errors
    ///
    /// [`QuoteError::UnknownVehicle`] when nobody prices that type.
    pub fn tariff(
        &self,
        origin: LatLng,
        vehicle_type: &str,
    ) -> Result<(Tariff, Currency), QuoteError> {
        let city = self
            .cities
            .iter()
            .filter(|c| c.centre.distance_m(origin) <= c.radius_m)
            .find_map(|c| c.tariffs.get(vehicle_type).map(|t| (*t, c.currency)));
        city.or_else(|| self.tariffs.get(vehicle_type).map(|t| (*t, self.currency)))
            .ok_or_else(|| QuoteError::UnknownVehicle {
                requested: vehicle_type.to_owned(),
                known: self.tariffs.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// The surge cell of a point.
    #[must_use]
    pub fn surge_cell(&self, point: LatLng) -> CellIndex {
        point.to_h3().to_cell(self.surge_res)
    }

    /// The surge resolution.
    #[must_use]
    pub const fn surge_resolution(&self) -> Resolution {
        self.surge_res
    }

    /// Counts a trip request from `point` as demand.
    pub fn record_demand(&self, point: LatLng, now_ms: i64) {
        let cell = self.surge_cell(point);
        self.demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(cell, now_ms);
    }

    /// Recent requests per surge cell.
    #[must_use]
    pub fn demand_snapshot(&self, now_ms: i64) -> Vec<(CellIndex, u32)> {
        self.demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot(now_ms)
    }

    /// The multiplier at `point` now: recent demand in its cell over the available drivers in it.
    pub fn surge(&self, shards: &ShardMap, point: LatLng, now_ms: i64) -> SurgeQuote {
        let cell = self.surge_cell(point);
        let demand = self
            .demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count(cell, now_ms);
        // Without demand there is no surge, whatever the supply: skip counting.
        let supply = if demand == 0 {
            0
        } else {
            shards.count_available(cell, now_ms.saturating_sub(self.ttl_ms))
        };
        SurgeQuote {
            surge: Surge::from_market(demand, supply, self.cap),
            cell,
            demand,
            supply,
        }
    }

    /// The multiplier for known demand and supply.
    #[must_use]
    pub fn surge_for(&self, demand: u32, supply: u32) -> Surge {
        Surge::from_market(demand, supply, self.cap)
    }

    /// Whether `rider` may use `code` now.
    ///
    /// # Errors
    ///
    /// [`PromoError`] saying why not.
    pub fn check_promo(
        &self,
        code: &str,
        rider: uuid::Uuid,
        now_ms: i64,
    ) -> Result<Discount, PromoError> {
        self.promotions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(code, rider, now_ms)
    }

    /// Takes one use of `code` for `rider`.
    ///
    /// # Errors
    ///
    /// [`PromoError`] saying why not; nothing is taken then.
    pub fn redeem_promo(
        &self,
        code: &str,
        rider: uuid::Uuid,
        now_ms: i64,
    ) -> Result<Discount, PromoError> {
        self.promotions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .redeem(code, rider, now_ms)
    }

    /// Gives a use of `code` back to `rider` (the trip did not happen).
    pub fn release_promo(&self, code: &str, rider: uuid::Uuid) {
        self.promotions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(code, rider);
    }

    /// Estimated fare from `origin` to `destination`.
    ///
    /// # Errors
    ///
    /// [`QuoteError::UnknownVehicle`].
    pub fn estimate(
        &self,
        origin: LatLng,
        destination: LatLng,
        vehicle_type: &str,
        surge: Surge,
        discount: Option<Discount>,
    ) -> Result<FareBreakdown, QuoteError> {
        let (tariff, currency) = self.tariff(origin, vehicle_type)?;
        Ok(self.estimate_with(&tariff, currency, origin, destination, surge, discount))
    }

    /// Estimated fare from `origin` to `destination` under a tariff already looked up.
    #[must_use]
    pub fn estimate_with(
        &self,
        tariff: &Tariff,
        currency: Currency,
        origin: LatLng,
        destination: LatLng,
        surge: Surge,
        discount: Option<Discount>,
    ) -> FareBreakdown {
        let (metres, seconds) = self.model.estimate(origin, destination);
        price(tariff, currency, metres, seconds, surge, discount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CitySettings;

    #[test]
    fn a_city_prices_pickups_inside_it_and_the_defaults_price_the_rest() {
        let mut settings = Settings::default();
        let paris_economy = Tariff {
            base: 300,
            per_km: 110,
            per_min: 35,
            min_fare: 800,
            cancel_fee: 500,
        };
        settings.pricing.cities = vec![CitySettings {
            name: "paris".into(),
            lat: 48.8566,
            lng: 2.3522,
            radius_km: 40.0,
            currency: "eur".into(),
            tariffs: BTreeMap::from([("economy".to_owned(), paris_economy)]),
        }];
        let market = Market::new(&settings).unwrap();
        let paris = LatLng::new(48.86, 2.34).unwrap();
        let lyon = LatLng::new(45.76, 4.84).unwrap();
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(
            market.tariff(paris, "economy").unwrap(),
            (paris_economy, eur)
        );
        assert_eq!(
            market.tariff(lyon, "economy").unwrap().1,
            Currency::USD,
            "outside the city: the default tariffs"
        );
        assert_eq!(
            market.tariff(paris, "xl").unwrap().0.base,
            500,
            "a type the city does not price falls back to the defaults"
        );
        assert!(matches!(
            market.tariff(paris, "rickshaw"),
            Err(QuoteError::UnknownVehicle { .. })
        ));
        let fare = market
            .estimate(paris, paris, "economy", Surge::NONE, None)
            .unwrap();
        assert_eq!(
            fare.total,
            crate::dispatch::Money::new(800, eur),
            "minimum fare, in euros"
        );
    }
}
