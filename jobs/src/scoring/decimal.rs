//! Exact decimal numbers for integer and numeric answers: parsing without floats, rounding or
//! truncating to N decimals, and comparing against a key.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// Fixed scale of parsed numbers: 20 decimal places. Keys are limited to [`KEY_DECIMALS`]
/// places and rounding to [`MAX_ROUNDING_DECIMALS`], so digits past the 20th can only ever
/// decide a comparison by being non-zero, which [`Number::sticky`] records.
const SCALE: u32 = 20;
const ONE: u128 = 10_u128.pow(SCALE);

/// At most this many decimals in a key value, tolerance or range bound.
pub(crate) const KEY_DECIMALS: u32 = 15;
/// Keys lie strictly between -10^15 and 10^15.
pub(crate) const KEY_INTEGER_DIGITS: usize = 15;
/// At most this many decimals in a [`Rounding`].
pub(crate) const MAX_ROUNDING_DECIMALS: u8 = 15;

/// A number as a candidate typed it. Any length is accepted and compared exactly: the first 20
/// decimals are kept, later non-zero digits set `sticky`, and an integer part of more than 18
/// digits makes the number `huge` (beyond every key, which is below 10^15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Number {
    negative: bool,
    /// |value| in units of 10^-20, truncated.
    magnitude: u128,
    /// Non-zero digits were dropped after the 20th decimal: |value| is a little above
    /// `magnitude`.
    sticky: bool,
    huge: bool,
    /// No non-zero digit after the decimal point.
    integral: bool,
}

/// How a candidate's numeric answer is cut to N decimals before it is compared with the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rounding {
    pub mode: RoundingMode,
    /// 0 to 15.
    pub decimals: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// Half away from zero: 2.345 -> 2.35, -2.345 -> -2.35 (the school rule).
    Round,
    /// Toward zero: 2.349 -> 2.34, -2.349 -> -2.34.
    Truncate,
}

impl Number {
    /// Parses `[+-]digits[.digits]` or `[+-].digits`, with spaces around it allowed. No
    /// exponents, no thousands separators: a candidate's keypad produces neither.
    pub(crate) fn parse(text: &str) -> Option<Number> {
        let text = text.trim_ascii();
        let (negative, digits) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let is_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !is_digits(int) || !is_digits(frac) {
            return None;
        }
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let integral = frac.is_empty();
        if int.len() > 18 {
            return Some(Number {
                negative,
                magnitude: 0,
                sticky: false,
                huge: true,
                integral,
            });
        }
        // Digits go into u64s (18 integer digits, 19 decimals fit) and meet in u128 once.
        let decimal = |t: &str| t.bytes().fold(0_u64, |v, b| v * 10 + u64::from(b - b'0'));
        let kept = frac.len().min(SCALE as usize);
        let fraction = if kept < 20 {
            u128::from(decimal(&frac[..kept]))
        } else {
            u128::from(decimal(&frac[..10])) * 10_u128.pow(10) + u128::from(decimal(&frac[10..20]))
        };
        Some(Number {
            negative,
            magnitude: u128::from(decimal(int)) * ONE + fraction * 10_u128.pow(SCALE - kept as u32),
            // `frac` has no trailing zeros, so anything past the kept digits is non-zero.
            sticky: frac.len() > kept,
            huge: false,
            integral,
        })
    }

    pub(crate) fn is_integral(self) -> bool {
        self.integral
    }

    /// Rounds or truncates to `rounding.decimals` places.
    pub(crate) fn rounded(self, rounding: Rounding) -> Number {
        if self.huge {
            return self;
        }
        let decimals = u32::from(rounding.decimals.min(MAX_ROUNDING_DECIMALS));
        let unit = 10_u128.pow(SCALE - decimals);
        let rest = self.magnitude % unit;
        let mut magnitude = self.magnitude - rest;
        // Half away from zero looks only at whether the dropped part reaches half a unit; the
        // digits past the 20th cannot matter, because half a unit ends in a zero there.
        if rounding.mode == RoundingMode::Round && rest >= unit / 2 {
            magnitude += unit;
        }
        Number {
            magnitude,
            sticky: false,
            integral: magnitude.is_multiple_of(ONE),
            ..self
        }
    }

    fn signum(self) -> i8 {
        if self.magnitude == 0 && !self.sticky && !self.huge {
            0
        } else if self.negative {
            -1
        } else {
            1
        }
    }

    /// Compares with an exact key value (from [`parse_key`]).
    pub(crate) fn cmp_key(self, key: KeyValue) -> Ordering {
        let key_sign = key.0.signum() as i8;
        let sign = self.signum();
        if sign != key_sign || sign == 0 {
            return sign.cmp(&key_sign);
        }
        let by_magnitude = if self.huge {
            Ordering::Greater
        } else {
            self.magnitude
                .cmp(&key.0.unsigned_abs())
                .then(if self.sticky {
                    Ordering::Greater
                } else {
                    Ordering::Equal
                })
        };
        if sign < 0 {
            by_magnitude.reverse()
        } else {
            by_magnitude
        }
    }
}

/// An exact key value in units of 10^-20.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KeyValue(i128);

impl KeyValue {
    pub(crate) fn checked_add(self, other: KeyValue) -> Option<KeyValue> {
        self.0.checked_add(other.0).map(KeyValue)
    }

    pub(crate) fn checked_sub(self, other: KeyValue) -> Option<KeyValue> {
        self.0.checked_sub(other.0).map(KeyValue)
    }

    pub(crate) fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub(crate) fn is_integral(self) -> bool {
        self.0 % (ONE as i128) == 0
    }
}

/// Why a key's number is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyError {
    NotANumber,
    TooPrecise,
    TooLarge,
}

impl KeyError {
    pub(crate) fn describe(self, text: &str) -> String {
        match self {
            KeyError::NotANumber => format!("`{text}` is not a decimal number"),
            KeyError::TooPrecise => {
                format!("`{text}` has more than {KEY_DECIMALS} decimals")
            }
            KeyError::TooLarge => {
                format!("`{text}` has more than {KEY_INTEGER_DIGITS} digits before the point")
            }
        }
    }
}

/// Parses a number written in a key (a value, tolerance, bound or integer answer).
pub(crate) fn parse_key(text: &str) -> Result<KeyValue, KeyError> {
    let n = Number::parse(text).ok_or(KeyError::NotANumber)?;
    if n.huge || n.magnitude >= 10_u128.pow(KEY_INTEGER_DIGITS as u32) * ONE {
        return Err(KeyError::TooLarge);
    }
    if n.sticky || n.magnitude % 10_u128.pow(SCALE - KEY_DECIMALS) != 0 {
        return Err(KeyError::TooPrecise);
    }
    let magnitude = n.magnitude as i128;
    Ok(KeyValue(if n.negative { -magnitude } else { magnitude }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::parse(s).unwrap()
    }

    fn k(s: &str) -> KeyValue {
        parse_key(s).unwrap()
    }

    #[test]
    fn trailing_zeros_do_not_change_the_value() {
        for s in ["11", "11.0", "11.00", "011", "+11.000"] {
            assert_eq!(n(s).cmp_key(k("11")), Ordering::Equal, "{s}");
            assert!(n(s).is_integral());
        }
        assert_eq!(n("-0").cmp_key(k("0")), Ordering::Equal);
        assert_eq!(n(".5").cmp_key(k("0.5")), Ordering::Equal);
        assert_eq!(n("5.").cmp_key(k("5")), Ordering::Equal);
    }

    #[test]
    fn refuses_what_a_keypad_cannot_type() {
        for bad in [
            "", ".", "-", "1e3", "1,5", "1 2", "abc", "--1", "0x10", "1.2.3",
        ] {
            assert!(Number::parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn compares_long_answers_exactly() {
        // 1.6 followed by 25 zeros and a 1 is above 1.6, though its first 20 decimals are not.
        let long = "1.60000000000000000000000001";
        assert_eq!(n(long).cmp_key(k("1.6")), Ordering::Greater);
        assert_eq!(
            n("-1.60000000000000000000000001").cmp_key(k("-1.6")),
            Ordering::Less
        );
        assert_eq!(
            n("1.59999999999999999999999999").cmp_key(k("1.6")),
            Ordering::Less
        );
        let huge = "123456789012345678901234567890";
        assert_eq!(n(huge).cmp_key(k("999999999999999")), Ordering::Greater);
        assert_eq!(n(&format!("-{huge}")).cmp_key(k("-5")), Ordering::Less);
        assert_eq!(
            n("-0.000000000000000000000001").cmp_key(k("0")),
            Ordering::Less
        );
    }

    #[test]
    fn rounds_half_away_from_zero_and_truncates_toward_zero() {
        let round = |s, d| {
            n(s).rounded(Rounding {
                mode: RoundingMode::Round,
                decimals: d,
            })
        };
        let trunc = |s, d| {
            n(s).rounded(Rounding {
                mode: RoundingMode::Truncate,
                decimals: d,
            })
        };
        assert_eq!(round("2.345", 2).cmp_key(k("2.35")), Ordering::Equal);
        assert_eq!(round("-2.345", 2).cmp_key(k("-2.35")), Ordering::Equal);
        assert_eq!(round("2.3449999", 2).cmp_key(k("2.34")), Ordering::Equal);
        assert_eq!(round("0.995", 2).cmp_key(k("1")), Ordering::Equal);
        assert_eq!(round("7.5", 0).cmp_key(k("8")), Ordering::Equal);
        assert_eq!(trunc("2.349", 2).cmp_key(k("2.34")), Ordering::Equal);
        assert_eq!(trunc("-2.349", 2).cmp_key(k("-2.34")), Ordering::Equal);
        assert_eq!(
            trunc("1.60000000000000000000000001", 2).cmp_key(k("1.6")),
            Ordering::Equal
        );
        assert!(round("3.96", 1).is_integral());
    }

    #[test]
    fn keys_are_bounded_and_exact() {
        assert_eq!(parse_key("1.5"), Ok(k("1.50")));
        assert_eq!(parse_key("x"), Err(KeyError::NotANumber));
        assert_eq!(parse_key("0.0000000000000001"), Err(KeyError::TooPrecise));
        assert_eq!(parse_key("1000000000000000"), Err(KeyError::TooLarge));
        assert!(k("-3").is_negative());
        assert!(k("4.000").is_integral());
        assert!(!k("4.5").is_integral());
    }
}
