//! Double-entry rules: every money movement is a set of postings that sums to zero.
//!
//! Accounts are named `rider:{id}`, `driver:{id}`, `platform` and `external:topup` (money coming
//! in from outside). A rider's wallet balance is the sum of its account's postings.

use uuid::Uuid;

use super::money::{Money, div_round_half_up};

/// The platform's account.
pub const PLATFORM: &str = "platform";
/// Where top-ups come from.
pub const EXTERNAL_TOPUP: &str = "external:topup";

/// A rider's account name.
#[must_use]
pub fn rider_account(rider: Uuid) -> String {
    format!("rider:{rider}")
}

/// A driver's account name.
#[must_use]
pub fn driver_account(driver: Uuid) -> String {
    format!("driver:{driver}")
}

/// One line of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// Account name.
    pub account: String,
    /// Minor units: negative debits, positive credits.
    pub amount: i64,
}

/// The platform's cut of `fare`: `commission_bps` basis points, rounded half up.
#[must_use]
pub fn commission(fare: Money, commission_bps: u32) -> i64 {
    div_round_half_up(i128::from(fare.amount) * i128::from(commission_bps), 10_000)
        .clamp(0, fare.amount.max(0))
}

/// The postings of a trip's charge: the rider pays the fare, the driver earns it less the
/// commission, the platform keeps the commission.
#[must_use]
pub fn trip_charge(rider: Uuid, driver: Uuid, fare: Money, commission_bps: u32) -> Vec<Posting> {
    let cut = commission(fare, commission_bps);
    vec![
        Posting {
            account: rider_account(rider),
            amount: -fare.amount,
        },
        Posting {
            account: driver_account(driver),
            amount: fare.amount - cut,
        },
        Posting {
            account: PLATFORM.to_owned(),
            amount: cut,
        },
    ]
}

/// The postings of a top-up of `amount` into `account`.
#[must_use]
pub fn top_up(account: &str, amount: Money) -> Vec<Posting> {
    vec![
        Posting {
            account: account.to_owned(),
            amount: amount.amount,
        },
        Posting {
            account: EXTERNAL_TOPUP.to_owned(),
            amount: -amount.amount,
        },
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::dispatch::Currency;

    #[test]
    fn a_charge_splits_the_fare_between_driver_and_platform() {
        let (r, d) = (Uuid::now_v7(), Uuid::now_v7());
        let postings = trip_charge(r, d, Money::new(2_345, Currency::USD), 2_000);
        // 20 % of 2345 = 469.
        let amounts: Vec<i64> = postings.iter().map(|p| p.amount).collect();
        assert_eq!(amounts, [-2_345, 1_876, 469]);
        assert_eq!(postings[0].account, format!("rider:{r}"));
    }

    proptest! {
        #[test]
        fn every_transaction_sums_to_zero(fare in 0i64..10_000_000, bps in 0u32..=10_000) {
            let postings = trip_charge(Uuid::nil(), Uuid::max(), Money::new(fare, Currency::USD), bps);
            prop_assert_eq!(postings.iter().map(|p| p.amount).sum::<i64>(), 0);
            prop_assert!(postings.iter().skip(1).all(|p| p.amount >= 0));
            let topup = top_up("rider:x", Money::new(fare, Currency::USD));
            prop_assert_eq!(topup.iter().map(|p| p.amount).sum::<i64>(), 0);
        }
    }
}
