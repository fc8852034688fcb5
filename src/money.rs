//! Money is counted in integer micro-dollars; floats appear only at the JSON edge.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Micros(pub i64);

const PER_USD: i64 = 1_000_000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MoneyError {
    #[error("must be a finite, non-negative amount of USD")]
    Invalid,
    #[error("is too large")]
    TooLarge,
}

impl Micros {
    pub const ZERO: Micros = Micros(0);
    /// The most an account may own, balance and held together: $1 trillion. Far above any real
    /// balance and about a ninth of what an i64 holds, so that no sum of one account's money
    /// can overflow; credits that would pass it are refused.
    pub const MAX_BALANCE: Micros = Micros(1_000_000_000_000 * PER_USD);

    /// Parses a USD amount, rounding to the nearest micro-dollar.
    pub fn from_usd(usd: f64) -> Result<Self, MoneyError> {
        if !usd.is_finite() || usd < 0.0 {
            return Err(MoneyError::Invalid);
        }
        let micros = (usd * PER_USD as f64).round();
        if micros > 1e15 {
            return Err(MoneyError::TooLarge);
        }
        Ok(Micros(micros as i64))
    }

    pub fn to_usd(self) -> f64 {
        self.0 as f64 / PER_USD as f64
    }

    /// `n` times this amount. Prices (at most $1e9) times image counts cannot reach the i64
    /// bound; should one ever, it saturates, which only makes a hold too large to be granted.
    pub fn times(self, n: u32) -> Micros {
        Micros(self.0.saturating_mul(i64::from(n)))
    }

    pub fn checked_add(self, other: Micros) -> Option<Micros> {
        self.0.checked_add(other.0).map(Micros)
    }

    pub fn checked_sub(self, other: Micros) -> Option<Micros> {
        self.0.checked_sub(other.0).map(Micros)
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (whole, frac) = (abs / PER_USD as u64, abs % PER_USD as u64);
        // Cents when there is nothing finer, else every digit needed: $10.00, $0.032.
        if frac % 10_000 == 0 {
            write!(f, "{sign}${whole}.{:02}", frac / 10_000)
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{sign}${whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_round_trips_through_micros() {
        assert_eq!(Micros::from_usd(0.032).unwrap(), Micros(32_000));
        assert_eq!(Micros::from_usd(10.0).unwrap().to_usd(), 10.0);
        assert_eq!(Micros(32_000).times(10), Micros(320_000));
        assert_eq!(Micros(-1_500_000).to_string(), "-$1.50");
        assert_eq!(Micros(32_000).to_string(), "$0.032");
    }

    #[test]
    fn rejects_negative_and_non_finite() {
        assert_eq!(Micros::from_usd(-0.01), Err(MoneyError::Invalid));
        assert_eq!(Micros::from_usd(f64::NAN), Err(MoneyError::Invalid));
        assert_eq!(Micros::from_usd(1e12), Err(MoneyError::TooLarge));
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Micros(i64::MAX).checked_add(Micros(1)), None);
        assert_eq!(Micros(i64::MIN).checked_sub(Micros(1)), None);
        assert_eq!(Micros(2).checked_add(Micros(3)), Some(Micros(5)));
        assert_eq!(Micros(i64::MAX / 2).times(3), Micros(i64::MAX));
        const { assert!(Micros::MAX_BALANCE.0 < i64::MAX / 8) };
    }
}
