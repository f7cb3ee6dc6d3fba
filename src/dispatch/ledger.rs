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

/// The postings of a refund of `this` minor units of a trip charged `charged` with `commission`
/// to the platform, after `refunded_before` was refunded (reversing `reversed_before` of the
/// commission): the rider is credited, the driver and the platform debited in proportion. The
/// commission reversed is that of everything refunded so far less what was reversed before, so
/// any split of a full refund reverses the commission exactly.
#[must_use]
pub fn refund(
    rider: Uuid,
    driver: Uuid,
    charged: Money,
    commission: i64,
    refunded_before: i64,
    reversed_before: i64,
    this: i64,
) -> Vec<Posting> {
    let reversed_after = if charged.amount > 0 {
        div_round_half_up(
            i128::from(commission) * i128::from(refunded_before + this),
            i128::from(charged.amount),
        )
    } else {
        0
    };
    let platform = (reversed_after - reversed_before).clamp(0, this.max(0));
    vec![
        Posting {
            account: rider_account(rider),
            amount: this,
        },
        Posting {
            account: driver_account(driver),
            amount: -(this - platform),
        },
        Posting {
            account: PLATFORM.to_owned(),
            amount: -platform,
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

    #[test]
    fn a_refund_reverses_driver_share_and_commission_in_proportion() {
        let (r, d) = (Uuid::now_v7(), Uuid::now_v7());
        let fare = Money::new(2_345, Currency::USD);
        // A quarter back: 586 of 2345, of which 20 % commission (117 of the 469).
        let quarter = refund(r, d, fare, 469, 0, 0, 586);
        let amounts: Vec<i64> = quarter.iter().map(|p| p.amount).collect();
        assert_eq!(amounts, [586, -469, -117]);
    }

    proptest! {
        #[test]
        fn refunds_in_any_parts_reverse_exactly_the_charge(
            fare in 1i64..1_000_000,
            bps in 0u32..=10_000,
            cuts in proptest::collection::vec(1i64..1_000_000, 1..6),
        ) {
            let charged = Money::new(fare, Currency::USD);
            let charge = trip_charge(Uuid::nil(), Uuid::max(), charged, bps);
            let cut = charge[2].amount;
            let (mut refunded, mut reversed) = (0i64, 0i64);
            let mut totals = [charge[0].amount, charge[1].amount, charge[2].amount];
            let mut parts: Vec<i64> = cuts.iter().map(|c| c % fare + 1).collect();
            parts.push(fare); // whatever is left
            for part in parts {
                let this = part.min(fare - refunded);
                if this == 0 {
                    break;
                }
                let postings = refund(Uuid::nil(), Uuid::max(), charged, cut, refunded, reversed, this);
                prop_assert_eq!(postings.iter().map(|p| p.amount).sum::<i64>(), 0);
                refunded += this;
                reversed += -postings[2].amount;
                for (t, p) in totals.iter_mut().zip(&postings) {
                    *t += p.amount;
                }
                prop_assert!(totals[1] >= 0 && totals[2] >= 0, "driver and platform never below zero");
            }
            prop_assert_eq!(totals, [0, 0, 0]);
        }
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
