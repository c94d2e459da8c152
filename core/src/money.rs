//! Money: integer micro-dollars (`design.md` §6).
//!
//! Every price, budget, lease and usage cost in Iron is a [`Money`] — a `u64` count of
//! micro-dollars (1 USD = 1,000,000). Floating point never touches money; conversions from
//! user-facing decimal strings are exact or rejected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Micro-dollars per US dollar.
pub const MICROS_PER_USD: u64 = 1_000_000;

/// An amount of money in micro-dollars.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(pub u64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_micros(micros: u64) -> Self {
        Money(micros)
    }

    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Whole dollars, saturating at `u64::MAX` micro-dollars.
    pub const fn from_usd(usd: u64) -> Self {
        Money(usd.saturating_mul(MICROS_PER_USD))
    }

    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// Cost of `tokens` at `price_per_million` micro-dollars per million tokens, rounded up
    /// (a request is never cheaper than its exact price).
    pub fn for_tokens(tokens: u64, price_per_million: u64) -> Money {
        let micros = (u128::from(tokens) * u128::from(price_per_million)).div_ceil(1_000_000);
        Money(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

/// Why a decimal dollar string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyParseError {
    #[error("amount is empty")]
    Empty,
    #[error("amount must be a non-negative decimal number of dollars, e.g. 12.50")]
    Invalid,
    #[error("amount has more than 6 decimal places (the smallest unit is one micro-dollar)")]
    TooPrecise,
    #[error("amount is too large")]
    TooLarge,
}

impl FromStr for Money {
    type Err = MoneyParseError;

    /// Parses `"12"`, `"12.5"`, `"0.000001"`, optionally prefixed with `$`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s.strip_prefix('$').unwrap_or(s);
        if s.is_empty() {
            return Err(MoneyParseError::Empty);
        }
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
            return Err(MoneyParseError::Invalid);
        }
        if frac.len() > 6 {
            return Err(MoneyParseError::TooPrecise);
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| MoneyParseError::TooLarge)?
        };
        let mut frac_micros: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_micros += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
        }
        whole
            .checked_mul(MICROS_PER_USD)
            .and_then(|w| w.checked_add(frac_micros))
            .map(Money)
            .ok_or(MoneyParseError::TooLarge)
    }
}

impl fmt::Display for Money {
    /// `$12.500000` style with trailing zeros trimmed to at least two decimals: `$12.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_USD;
        let frac = self.0 % MICROS_PER_USD;
        let mut frac_s = format!("{frac:06}");
        while frac_s.len() > 2 && frac_s.ends_with('0') {
            frac_s.pop();
        }
        write!(f, "${whole}.{frac_s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_dollars_exactly() {
        assert_eq!("12".parse::<Money>(), Ok(Money(12_000_000)));
        assert_eq!("$0.05".parse::<Money>(), Ok(Money(50_000)));
        assert_eq!("0.000001".parse::<Money>(), Ok(Money(1)));
        assert_eq!(".5".parse::<Money>(), Ok(Money(500_000)));
        assert_eq!("-1".parse::<Money>(), Err(MoneyParseError::Invalid));
        assert_eq!("1e3".parse::<Money>(), Err(MoneyParseError::Invalid));
        assert_eq!(
            "0.0000001".parse::<Money>(),
            Err(MoneyParseError::TooPrecise)
        );
        assert_eq!(
            "99999999999999999999".parse::<Money>(),
            Err(MoneyParseError::TooLarge)
        );
        assert_eq!("".parse::<Money>(), Err(MoneyParseError::Empty));
    }

    #[test]
    fn displays_dollars() {
        assert_eq!(Money(12_500_000).to_string(), "$12.50");
        assert_eq!(Money(1).to_string(), "$0.000001");
        assert_eq!(Money(0).to_string(), "$0.00");
    }

    #[test]
    fn token_cost_rounds_up() {
        // gpt-4o-mini output: $0.60 per 1M tokens = 600_000 µ$/M.
        assert_eq!(Money::for_tokens(1, 600_000), Money(1));
        assert_eq!(Money::for_tokens(1_000_000, 600_000), Money(600_000));
        assert_eq!(Money::for_tokens(3, 150_000), Money(1));
        assert_eq!(Money::for_tokens(u64::MAX, u64::MAX), Money(u64::MAX));
    }
}
