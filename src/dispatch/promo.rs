//! Promotions: codes worth a percent or a flat amount off, valid within a window, usable a limited
//! number of times per rider.
//!
//! A use is taken when a trip is requested with the code and given back if that trip ends without
//! a ride (cancelled, or no driver found), so a rider never loses a use to a trip that did not happen.
//!
//! [`Promotions`] is the in-memory book an engine without a store uses; with a store, codes and
//! uses live in the database (`persistence::promotions`) and these rules are applied there.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a promotion takes off a fare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Discount {
    /// Percent of the fare, 1–100.
    Percent(u8),
    /// Minor units off, capped at the fare.
    Flat(i64),
}

/// One promotion code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The code, upper case.
    pub code: String,
    /// What it is worth.
    pub discount: Discount,
    /// First valid moment, epoch ms.
    pub valid_from_ms: i64,
    /// First moment it is no longer valid, epoch ms.
    pub valid_until_ms: i64,
    /// Uses per rider.
    pub per_rider_limit: u32,
}

/// Why a code cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PromoError {
    /// No such code.
    #[error("there is no promotion with this code")]
    Unknown,
    /// The window has not opened.
    #[error("this promotion is not valid yet")]
    NotYetValid,
    /// The window has closed.
    #[error("this promotion has expired")]
    Expired,
    /// The rider used it as often as allowed.
    #[error("this promotion has been used as many times as allowed")]
    UsedUp,
    /// An operator disabled it.
    #[error("this promotion has been withdrawn")]
    Disabled,
}

impl PromoError {
    /// Stable error code for the API.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Unknown => "promo_code_unknown",
            Self::NotYetValid => "promo_code_not_yet_valid",
            Self::Expired => "promo_code_expired",
            Self::UsedUp => "promo_code_used_up",
            Self::Disabled => "promo_code_disabled",
        }
    }
}

/// The promotions and how often each rider used each.
#[derive(Debug, Default)]
pub struct Promotions {
    codes: HashMap<String, Promotion>,
    uses: HashMap<(String, Uuid), u32>,
}

impl Promotions {
    /// A book of `promotions`.
    #[must_use]
    pub fn new(promotions: impl IntoIterator<Item = Promotion>) -> Self {
        Self {
            codes: promotions
                .into_iter()
                .map(|p| (p.code.to_ascii_uppercase(), p))
                .collect(),
            uses: HashMap::new(),
        }
    }

    /// Whether `rider` may use `code` at `now_ms`, and what it is worth.
    ///
    /// # Errors
    ///
    /// [`PromoError`] saying why not.
    pub fn check(&self, code: &str, rider: Uuid, now_ms: i64) -> Result<Discount, PromoError> {
        let code = code.to_ascii_uppercase();
        let promo = self.codes.get(&code).ok_or(PromoError::Unknown)?;
        if now_ms < promo.valid_from_ms {
            return Err(PromoError::NotYetValid);
        }
        if now_ms >= promo.valid_until_ms {
            return Err(PromoError::Expired);
        }
        if self.uses.get(&(code, rider)).copied().unwrap_or(0) >= promo.per_rider_limit {
            return Err(PromoError::UsedUp);
        }
        Ok(promo.discount)
    }

    /// Takes one use of `code` for `rider`.
    ///
    /// # Errors
    ///
    /// As [`Promotions::check`]; nothing is taken then.
    pub fn redeem(&mut self, code: &str, rider: Uuid, now_ms: i64) -> Result<Discount, PromoError> {
        let discount = self.check(code, rider, now_ms)?;
        *self
            .uses
            .entry((code.to_ascii_uppercase(), rider))
            .or_default() += 1;
        Ok(discount)
    }

    /// Gives back one use of `code` taken by `rider`.
    pub fn release(&mut self, code: &str, rider: Uuid) {
        if let Some(n) = self.uses.get_mut(&(code.to_ascii_uppercase(), rider)) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> Promotions {
        Promotions::new([
            Promotion {
                code: "welcome10".into(),
                discount: Discount::Percent(10),
                valid_from_ms: 1_000,
                valid_until_ms: 2_000,
                per_rider_limit: 1,
            },
            Promotion {
                code: "FIVE".into(),
                discount: Discount::Flat(500),
                valid_from_ms: 0,
                valid_until_ms: i64::MAX,
                per_rider_limit: 2,
            },
        ])
    }

    #[test]
    fn codes_are_checked_for_window_and_case_insensitive() {
        let book = book();
        let rider = Uuid::now_v7();
        assert_eq!(
            book.check("WELCOME10", rider, 999),
            Err(PromoError::NotYetValid)
        );
        assert_eq!(
            book.check("Welcome10", rider, 1_000),
            Ok(Discount::Percent(10))
        );
        assert_eq!(
            book.check("welcome10", rider, 2_000),
            Err(PromoError::Expired)
        );
        assert_eq!(book.check("NOPE", rider, 1_500), Err(PromoError::Unknown));
    }

    #[test]
    fn each_rider_has_its_own_limit_and_released_uses_come_back() {
        let mut book = book();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(book.redeem("five", a, 10).is_ok());
        assert!(book.redeem("five", a, 10).is_ok());
        assert_eq!(book.redeem("five", a, 10), Err(PromoError::UsedUp));
        assert!(
            book.redeem("five", b, 10).is_ok(),
            "another rider is unaffected"
        );
        book.release("FIVE", a);
        assert!(
            book.redeem("five", a, 10).is_ok(),
            "a released use can be taken again"
        );
    }
}
