//! Fares: `fare = max(min_fare, (base + per_km × km + per_min × min) × surge) − discount`, in
//! integer minor units.
//!
//! Rounding rule, applied in this order and nowhere else:
//! 1. the distance part (`per_km × metres / 1000`) and the time part (`per_min × seconds / 60`) are
//!    each rounded half up to a whole minor unit;
//! 2. the surged subtotal (`(base + distance + time) × surge`, surge in tenths) is rounded half up;
//! 3. the minimum fare applies to the surged subtotal;
//! 4. a percent discount is rounded half up; a flat one is capped at the fare. A fare is never
//!    negative.
//!
//! So every line of a [`FareBreakdown`] is a whole number of minor units and the lines add up to the
//! total exactly.

use serde::{Deserialize, Serialize};

use super::money::{Currency, Money, div_round_half_up};
use super::promo::Discount;
use super::surge::Surge;
use crate::geo::LatLng;

/// Prices of one vehicle type in one city, minor units of the city's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tariff {
    /// Flag fall.
    pub base: i64,
    /// Per kilometre driven.
    pub per_km: i64,
    /// Per minute of trip.
    pub per_min: i64,
    /// Least a completed trip costs (before discounts).
    pub min_fare: i64,
    /// Charged to a rider who cancels after the free window once a driver is assigned.
    pub cancel_fee: i64,
}

impl Tariff {
    /// Checks that no price is negative.
    ///
    /// # Errors
    ///
    /// The name of the first negative field.
    pub fn validate(&self) -> Result<(), &'static str> {
        for (name, value) in [
            ("base", self.base),
            ("per_km", self.per_km),
            ("per_min", self.per_min),
            ("min_fare", self.min_fare),
            ("cancel_fee", self.cancel_fee),
        ] {
            if value < 0 {
                return Err(name);
            }
        }
        Ok(())
    }
}

/// How a fare was made, line by line; the lines add up to `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FareBreakdown {
    /// Flag fall.
    pub base: Money,
    /// Distance part.
    pub distance: Money,
    /// Time part.
    pub time: Money,
    /// `base + distance + time`.
    pub subtotal: Money,
    /// What surge added to the subtotal.
    pub surge: Money,
    /// What the minimum fare added.
    pub minimum_fare_adjustment: Money,
    /// What the promotion took off (zero or positive).
    pub discount: Money,
    /// What the fare cap took off (`pricing.max_fare_ratio`, SPEC §7), when it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fare_cap: Option<Money>,
    /// What the rider pays.
    pub total: Money,
    /// Metres priced.
    pub distance_m: u64,
    /// Seconds priced.
    pub duration_s: u64,
    /// The multiplier applied.
    pub surge_multiplier: Surge,
}

/// Prices `distance_m` and `duration_s` with `tariff`, `surge` and an optional discount.
///
/// # Example
///
/// ```
/// use hexdispatch::dispatch::{Currency, Surge, Tariff, price};
///
/// let tariff = Tariff { base: 250, per_km: 120, per_min: 30, min_fare: 700, cancel_fee: 500 };
/// // 5.2 km, 14 min, no surge: 250 + 624 + 420 = 1294 cents.
/// let fare = price(&tariff, Currency::USD, 5_200, 840, Surge::NONE, None);
/// assert_eq!(fare.total.amount, 1294);
/// ```
#[must_use]
pub fn price(
    tariff: &Tariff,
    currency: Currency,
    distance_m: u64,
    duration_s: u64,
    surge: Surge,
    discount: Option<Discount>,
) -> FareBreakdown {
    let distance = div_round_half_up(i128::from(tariff.per_km) * i128::from(distance_m), 1_000);
    let time = div_round_half_up(i128::from(tariff.per_min) * i128::from(duration_s), 60);
    let subtotal = tariff.base.saturating_add(distance).saturating_add(time);
    let surged = div_round_half_up(i128::from(subtotal) * i128::from(surge.tenths()), 10);
    let floored = surged.max(tariff.min_fare);
    let off = discount_off(floored, discount);
    let money = |amount| Money::new(amount, currency);
    FareBreakdown {
        base: money(tariff.base),
        distance: money(distance),
        time: money(time),
        subtotal: money(subtotal),
        surge: money(surged - subtotal),
        minimum_fare_adjustment: money(floored - surged),
        discount: money(off),
        fare_cap: None,
        total: money(floored - off),
        distance_m,
        duration_s,
        surge_multiplier: surge,
    }
}

/// What `discount` takes off `amount` (the fare before discounts), by the rounding of [`price`].
fn discount_off(amount: i64, discount: Option<Discount>) -> i64 {
    match discount {
        None => 0,
        Some(Discount::Percent(pct)) => {
            div_round_half_up(i128::from(amount) * i128::from(pct.min(100)), 100)
        }
        Some(Discount::Flat(off)) => off.max(0),
    }
    .min(amount)
    .max(0)
}

/// Caps `fare` at `max_ratio` × `estimate`, both compared before the promotion (so a discount
/// neither triggers nor hides the cap), rounded half up to minor units; the promotion is then
/// applied to the capped amount as [`price`] applies it. Returns the fare to charge and, when the
/// cap applied, the fare as computed. The breakdown gains a negative `fare_cap` line, so its
/// lines still add up to the total.
///
/// # Example
///
/// ```
/// use hexdispatch::dispatch::{Currency, Surge, Tariff, cap_fare, price};
///
/// let tariff = Tariff { base: 250, per_km: 120, per_min: 30, min_fare: 500, cancel_fee: 300 };
/// let estimate = price(&tariff, Currency::USD, 10_000, 1_200, Surge::NONE, None); // 2 050
/// let long = price(&tariff, Currency::USD, 40_000, 3_600, Surge::NONE, None); // 6 850
/// let (capped, computed) = cap_fare(long, &estimate, 2.0, None);
/// assert_eq!(capped.total.amount, 4_100);
/// assert_eq!(capped.fare_cap.map(|m| m.amount), Some(4_100 - 6_850));
/// assert_eq!(computed, Some(long.total));
/// ```
#[must_use]
pub fn cap_fare(
    fare: FareBreakdown,
    estimate: &FareBreakdown,
    max_ratio: f64,
    discount: Option<Discount>,
) -> (FareBreakdown, Option<Money>) {
    // The ratio in basis points keeps the arithmetic in integers.
    let bps = (max_ratio * 10_000.0).round();
    if !bps.is_finite() || bps <= 0.0 || fare.total.currency != estimate.total.currency {
        return (fare, None);
    }
    let before = |b: &FareBreakdown| b.total.amount.saturating_add(b.discount.amount);
    let (computed_before, estimate_before) = (before(&fare), before(estimate));
    #[allow(clippy::cast_possible_truncation)]
    let cap = div_round_half_up(i128::from(estimate_before) * bps as i128, 10_000);
    if computed_before <= cap {
        return (fare, None);
    }
    let currency = fare.total.currency;
    let off = discount_off(cap, discount);
    let mut capped = fare;
    capped.fare_cap = Some(Money::new(cap - computed_before, currency));
    capped.discount = Money::new(off, currency);
    capped.total = Money::new(cap - off, currency);
    (capped, Some(fare.total))
}

/// How trips are estimated before they happen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimateModel {
    /// Road distance over great-circle distance.
    pub detour_factor: f64,
    /// Average speed, km/h.
    pub average_speed_kmh: f64,
}

impl EstimateModel {
    /// Estimated road distance (metres) and duration (seconds) from `origin` to `destination`.
    #[must_use]
    pub fn estimate(&self, origin: LatLng, destination: LatLng) -> (u64, u64) {
        let metres = (origin.distance_m(destination) * self.detour_factor).round();
        let seconds = (metres / (self.average_speed_kmh / 3.6)).round();
        (to_u64(metres), to_u64(seconds))
    }

    /// Seconds to cover `metres` at the average speed.
    #[must_use]
    pub fn travel_time_s(&self, metres: f64) -> u64 {
        to_u64((metres * self.detour_factor / (self.average_speed_kmh / 3.6)).round())
    }
}

/// Non-negative, finite, rounded `f64` to `u64` (distances and durations).
#[must_use]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn to_u64(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // `as` saturates at u64::MAX.
        x as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cap_compares_fares_before_the_promotion() {
        let tariff = Tariff {
            base: 250,
            per_km: 120,
            per_min: 30,
            min_fare: 800,
            cancel_fee: 300,
        };
        // A flat promotion worth more than the estimate: the estimate's total is 0, yet a
        // slightly longer ride is no reason to cap (or to charge nothing).
        let flat = Some(Discount::Flat(1_000));
        let estimate = price(&tariff, Currency::USD, 1_000, 60, Surge::NONE, flat);
        assert_eq!(estimate.total.amount, 0);
        let ride = price(&tariff, Currency::USD, 2_000, 120, Surge::NONE, flat);
        let (charged, flagged) = cap_fare(ride, &estimate, 2.0, flat);
        assert_eq!((charged, flagged), (ride, None));
        // Far longer: capped at twice the undiscounted estimate, then discounted.
        let far = price(&tariff, Currency::USD, 20_000, 1_800, Surge::NONE, flat);
        let (charged, flagged) = cap_fare(far, &estimate, 2.0, flat);
        assert_eq!(flagged, Some(far.total));
        assert_eq!(charged.total.amount, 1_600 - 1_000);
        let lines = charged.subtotal.amount
            + charged.surge.amount
            + charged.minimum_fare_adjustment.amount
            + charged.fare_cap.map_or(0, |m| m.amount)
            - charged.discount.amount;
        assert_eq!(lines, charged.total.amount, "the lines add up");
        // A percent promotion is applied to the capped amount.
        let pct = Some(Discount::Percent(10));
        let estimate = price(&tariff, Currency::USD, 1_000, 60, Surge::NONE, pct);
        let far = price(&tariff, Currency::USD, 20_000, 1_800, Surge::NONE, pct);
        let (charged, _) = cap_fare(far, &estimate, 2.0, pct);
        assert_eq!(charged.total.amount, 1_600 - 160);
    }

    use super::*;

    const ECONOMY: Tariff = Tariff {
        base: 250,
        per_km: 120,
        per_min: 30,
        min_fare: 700,
        cancel_fee: 500,
    };

    fn usd(amount: i64) -> Money {
        Money::new(amount, Currency::USD)
    }

    #[test]
    fn worked_examples() {
        struct Case {
            what: &'static str,
            metres: u64,
            seconds: u64,
            surge: u16,
            discount: Option<Discount>,
            total: i64,
        }
        let cases = [
            // 250 + 120×5.2 = 624 + 30×14 = 420 → 1294.
            Case {
                what: "plain trip",
                metres: 5_200,
                seconds: 840,
                surge: 10,
                discount: None,
                total: 1_294,
            },
            // 1294 × 1.5 = 1941.
            Case {
                what: "surge 1.5",
                metres: 5_200,
                seconds: 840,
                surge: 15,
                discount: None,
                total: 1_941,
            },
            // Distance 120 × 1.0125 = 121.5 → 122 (half up); time 30 × 61/60 = 30.5 → 31;
            // 250 + 122 + 31 = 403 → minimum 700.
            Case {
                what: "halves round up, then the minimum fare",
                metres: 1_012,
                seconds: 61,
                surge: 10,
                discount: None,
                total: 700,
            },
            // 250 + 121.44 → 121 + 30 × 0.5 = 15 → 386; × 1.3 = 501.8 → 502 → minimum 700.
            Case {
                what: "surge below the minimum",
                metres: 1_012,
                seconds: 30,
                surge: 13,
                discount: None,
                total: 700,
            },
            // 10 km, 20 min: 250 + 1200 + 600 = 2050; × 1.7 = 3485; 15 % off = 522.75 → 523 → 2962.
            Case {
                what: "percent discount after surge",
                metres: 10_000,
                seconds: 1_200,
                surge: 17,
                discount: Some(Discount::Percent(15)),
                total: 2_962,
            },
            // 2050 − 500 flat.
            Case {
                what: "flat discount",
                metres: 10_000,
                seconds: 1_200,
                surge: 10,
                discount: Some(Discount::Flat(500)),
                total: 1_550,
            },
            // A flat discount larger than the fare leaves zero, never a negative fare.
            Case {
                what: "flat discount capped at the fare",
                metres: 0,
                seconds: 0,
                surge: 10,
                discount: Some(Discount::Flat(5_000)),
                total: 0,
            },
            // Distance 0.36 → 0, time 0.5 → 1: 251 × 3.0 = 753, above the minimum.
            Case {
                what: "a few metres at the surge cap",
                metres: 3,
                seconds: 1,
                surge: 30,
                discount: None,
                total: 753,
            },
        ];
        for c in cases {
            let surge = Surge::from_tenths(c.surge);
            let fare = price(
                &ECONOMY,
                Currency::USD,
                c.metres,
                c.seconds,
                surge,
                c.discount,
            );
            assert_eq!(fare.total, usd(c.total), "{}: {fare:?}", c.what);
            let sum =
                fare.subtotal.amount + fare.surge.amount + fare.minimum_fare_adjustment.amount
                    - fare.discount.amount;
            assert_eq!(sum, fare.total.amount, "{}: lines add up", c.what);
            assert_eq!(
                fare.base.amount + fare.distance.amount + fare.time.amount,
                fare.subtotal.amount,
                "{}: subtotal",
                c.what
            );
        }
    }

    #[test]
    fn the_breakdown_names_each_part() {
        let fare = price(
            &ECONOMY,
            Currency::USD,
            5_200,
            840,
            Surge::from_tenths(15),
            None,
        );
        assert_eq!(fare.base, usd(250));
        assert_eq!(fare.distance, usd(624));
        assert_eq!(fare.time, usd(420));
        assert_eq!(fare.subtotal, usd(1_294));
        assert_eq!(fare.surge, usd(647));
        assert_eq!(fare.minimum_fare_adjustment, usd(0));
        assert_eq!(fare.total, usd(1_941));
    }

    #[test]
    fn estimates_apply_the_detour_factor_and_average_speed() {
        let model = EstimateModel {
            detour_factor: 1.3,
            average_speed_kmh: 36.0,
        };
        let a = LatLng::new(0.0, 0.0).unwrap();
        let b = crate::geo::destination(a, 90.0, 10_000.0);
        let (m, s) = model.estimate(a, b);
        assert_eq!(m, 13_000);
        assert_eq!(s, 1_300, "36 km/h is 10 m/s");
    }
}
