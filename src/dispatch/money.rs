//! Money: an integer count of minor units and an ISO 4217 currency code. No floating point.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A three-letter upper-case ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

/// A currency code that is not three ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a currency is three letters (ISO 4217, e.g. \"USD\"), got {0:?}")]
pub struct InvalidCurrency(pub String);

impl Currency {
    /// US dollars.
    pub const USD: Self = Self(*b"USD");

    /// Parses a three-letter code; lower case is folded to upper case.
    ///
    /// # Errors
    ///
    /// [`InvalidCurrency`] unless the code is exactly three ASCII letters.
    pub fn parse(raw: &str) -> Result<Self, InvalidCurrency> {
        match raw.as_bytes() {
            [a, b, c] if raw.bytes().all(|x| x.is_ascii_alphabetic()) => Ok(Self([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
                c.to_ascii_uppercase(),
            ])),
            _ => Err(InvalidCurrency(raw.chars().take(8).collect())),
        }
    }

    /// The code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: `{"amount": 1250, "currency": "USD"}` is 12.50 USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Minor units (cents for USD).
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: Currency,
}

impl Money {
    /// `amount` minor units of `currency`.
    #[must_use]
    pub const fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// Zero of `currency`.
    #[must_use]
    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }
}

impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Z]{3}$"))
            .description(Some("ISO 4217 currency code."))
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// `numerator / denominator` rounded half up (away from zero for the non-negative values money
/// takes here), saturating at the bounds of `i64`. `denominator` must be positive.
#[must_use]
pub fn div_round_half_up(numerator: i128, denominator: i128) -> i64 {
    debug_assert!(denominator > 0);
    let q = if numerator >= 0 {
        (2 * numerator + denominator) / (2 * denominator)
    } else {
        -((2 * -numerator + denominator) / (2 * denominator))
    };
    i64::try_from(q).unwrap_or(if q > 0 { i64::MAX } else { i64::MIN })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_three_letters_folded_to_upper_case() {
        assert_eq!(Currency::parse("eur").unwrap().as_str(), "EUR");
        for bad in ["", "US", "USDX", "U$D", "€€€"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn money_serialises_as_amount_and_currency() {
        let m = Money::new(1250, Currency::USD);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"amount":1250,"currency":"USD"}"#
        );
        let back: Money = serde_json::from_str(r#"{"amount":-5,"currency":"gbp"}"#).unwrap();
        assert_eq!(back, Money::new(-5, Currency::parse("GBP").unwrap()));
    }

    #[test]
    fn halves_round_up() {
        assert_eq!(div_round_half_up(5, 10), 1);
        assert_eq!(div_round_half_up(4, 10), 0);
        assert_eq!(div_round_half_up(15, 10), 2);
        assert_eq!(div_round_half_up(149, 100), 1);
        assert_eq!(div_round_half_up(150, 100), 2);
        assert_eq!(div_round_half_up(-15, 10), -2);
        assert_eq!(div_round_half_up(0, 7), 0);
    }
}
