//! The exact mark type: a ratio of integers in lowest terms, written as `"118"` or `"-1/3"`.

use std::cmp::Ordering;
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub};
use std::str::FromStr;

use num_rational::Ratio;
use num_traits::{CheckedAdd, CheckedMul, CheckedSub, Signed, Zero};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of marks, exact. GATE's -1/3 and -2/3 must add up to the same total a teacher gets
/// by hand, which no binary float can promise, so marks are ratios of `i64`s kept in lowest
/// terms.
///
/// Arithmetic through the operators panics on overflow, like integer arithmetic in debug builds
/// (but in every build: a wrong mark is worse than a failed job). The scorer itself never
/// overflows: [`PreparedTest`](super::PreparedTest) checks the bounds of a test once, up front.
/// Use the `checked_*` methods on values from outside.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Marks(Ratio<i64>);

/// Why a string is not a mark.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarksError {
    #[error(
        "`{0}` is not a mark: write an integer (\"4\", \"-1\"), a fraction (\"-1/3\") or a \
         decimal (\"-0.25\")"
    )]
    Syntax(String),
    #[error("`{0}` has a zero denominator")]
    ZeroDenominator(String),
    #[error("`{0}` is too large to be a mark")]
    OutOfRange(String),
}

impl Marks {
    pub const ZERO: Marks = Marks(Ratio::new_raw(0, 1));

    /// `numer / denom` in lowest terms, or `None` if `denom` is zero or the result does not fit.
    pub fn new(numer: i64, denom: i64) -> Option<Marks> {
        if denom == 0 {
            return None;
        }
        // Reduce in i128 first so that `i64::MIN / -1` and friends cannot overflow.
        let (n, d) = reduce(i128::from(numer), i128::from(denom));
        Some(Marks(Ratio::new_raw(
            i64::try_from(n).ok()?,
            i64::try_from(d).ok()?,
        )))
    }

    pub const fn integer(n: i64) -> Marks {
        Marks(Ratio::new_raw(n, 1))
    }

    /// The numerator in lowest terms; it carries the sign.
    pub fn numer(self) -> i64 {
        *self.0.numer()
    }

    /// The denominator in lowest terms, always positive.
    pub fn denom(self) -> i64 {
        *self.0.denom()
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn is_negative(self) -> bool {
        self.0.is_negative()
    }

    pub fn is_positive(self) -> bool {
        self.0.is_positive()
    }

    pub fn abs(self) -> Marks {
        Marks(self.0.abs())
    }

    pub fn checked_add(self, other: Marks) -> Option<Marks> {
        self.0.checked_add(&other.0).map(Marks)
    }

    pub fn checked_sub(self, other: Marks) -> Option<Marks> {
        self.0.checked_sub(&other.0).map(Marks)
    }

    pub fn checked_mul(self, other: Marks) -> Option<Marks> {
        self.0.checked_mul(&other.0).map(Marks)
    }

    /// A decimal for display, rounded half away from zero to `places` decimals (at most 18):
    /// `Marks::new(353, 6).unwrap().display(2)` shows `58.83`. Never store or add these.
    pub fn display(self, places: u32) -> RoundedDecimal {
        RoundedDecimal {
            numer: i128::from(self.numer()),
            denom: i128::from(self.denom()),
            places: places.min(18),
        }
    }

    /// Exact value scaled to a common denominator `denom` (`None` if `denom` is not a multiple
    /// of this mark's denominator or the result overflows). The scorer adds marks as integers
    /// over one denominator per test, which is far faster than adding ratios.
    pub(crate) fn scaled_to(self, denom: i64) -> Option<i64> {
        if denom % self.denom() != 0 {
            return None;
        }
        self.numer().checked_mul(denom / self.denom())
    }

    /// `numer / denom` for a positive `denom` and a numerator within the bounds the prepared
    /// test guarantees: reduced in `i64`, which is several times faster than [`Marks::new`].
    pub(crate) fn from_scaled(numer: i64, denom: i64) -> Marks {
        debug_assert!(denom > 0 && numer != i64::MIN);
        let g = num_integer::gcd(numer, denom);
        Marks(Ratio::new_raw(numer / g, denom / g))
    }

    pub(crate) fn ratio(self) -> Ratio<i64> {
        self.0
    }
}

fn reduce(n: i128, d: i128) -> (i128, i128) {
    let g = num_integer::gcd(n, d);
    let (n, d) = (n / g, d / g);
    if d < 0 { (-n, -d) } else { (n, d) }
}

impl Default for Marks {
    fn default() -> Self {
        Marks::ZERO
    }
}

impl From<i64> for Marks {
    fn from(n: i64) -> Self {
        Marks::integer(n)
    }
}

impl Add for Marks {
    type Output = Marks;

    fn add(self, other: Marks) -> Marks {
        self.checked_add(other).expect("marks overflowed i64")
    }
}

impl AddAssign for Marks {
    fn add_assign(&mut self, other: Marks) {
        *self = *self + other;
    }
}

impl Sub for Marks {
    type Output = Marks;

    fn sub(self, other: Marks) -> Marks {
        self.checked_sub(other).expect("marks overflowed i64")
    }
}

impl Neg for Marks {
    type Output = Marks;

    fn neg(self) -> Marks {
        let numer = self.numer().checked_neg().expect("marks overflowed i64");
        Marks(Ratio::new_raw(numer, self.denom()))
    }
}

impl Sum for Marks {
    fn sum<I: Iterator<Item = Marks>>(iter: I) -> Marks {
        iter.fold(Marks::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Marks> for Marks {
    fn sum<I: Iterator<Item = &'a Marks>>(iter: I) -> Marks {
        iter.copied().sum()
    }
}

/// Lowest terms: `4`, `-2`, `-1/3`, `353/6`.
impl Marks {
    /// The mark's text, written without `fmt`: a result holds hundreds of marks, and writing
    /// them was a third of the cost of serializing it.
    fn text(self) -> ShortText {
        let mut text = ShortText::default();
        text.push(itoa::Buffer::new().format(self.numer()));
        if self.denom() != 1 {
            text.push("/");
            text.push(itoa::Buffer::new().format(self.denom()));
        }
        text
    }
}

impl fmt::Display for Marks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// Text on the stack, long enough for any mark (two `i64`s and a slash) or rounded decimal (a
/// sign, a `u128`, a point and 18 decimals).
struct ShortText {
    bytes: [u8; 64],
    len: usize,
}

impl Default for ShortText {
    fn default() -> Self {
        ShortText {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl ShortText {
    fn push(&mut self, text: &str) {
        let end = self.len + text.len();
        self.bytes[self.len..end].copy_from_slice(text.as_bytes());
        self.len = end;
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are pushed.
        std::str::from_utf8(&self.bytes[..self.len]).expect("pushed as text")
    }
}

impl fmt::Debug for Marks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Marks({self})")
    }
}

/// Accepts `4`, `+4`, `-2`, `-1/3`, `10/4` (reduced to `5/2`) and exact decimals `-0.25`,
/// `1.5`. Spaces around the value are allowed, none inside.
impl FromStr for Marks {
    type Err = MarksError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let syntax = || MarksError::Syntax(s.to_owned());
        let range = || MarksError::OutOfRange(s.to_owned());
        if let Some((n, d)) = text.split_once('/') {
            let n = parse_signed(n).ok_or_else(syntax)?.map_err(|_| range())?;
            if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            let d: i128 = d.parse().map_err(|_| range())?;
            if d == 0 {
                return Err(MarksError::ZeroDenominator(s.to_owned()));
            }
            return ratio_from_i128(n, d).ok_or_else(range);
        }
        let (sign, digits) = split_sign(text);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !all_digits(int) || !all_digits(frac) || digits.ends_with('.') {
            return Err(syntax());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 18 {
            return Err(range());
        }
        let int: i128 = int.parse().map_err(|_| range())?;
        let scale = 10_i128.pow(frac.len() as u32);
        let frac: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| range())?
        };
        let n = int
            .checked_mul(scale)
            .and_then(|v| v.checked_add(frac))
            .ok_or_else(range)?;
        ratio_from_i128(sign * n, scale).ok_or_else(range)
    }
}

fn split_sign(text: &str) -> (i128, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    }
}

/// `None` if `text` is not a signed integer; `Some(Err)` if it is one too large for i128.
fn parse_signed(text: &str) -> Option<Result<i128, std::num::ParseIntError>> {
    let (sign, digits) = split_sign(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse::<i128>().map(|v| sign * v))
}

fn ratio_from_i128(n: i128, d: i128) -> Option<Marks> {
    let (n, d) = reduce(n, d);
    Some(Marks(Ratio::new_raw(
        i64::try_from(n).ok()?,
        i64::try_from(d).ok()?,
    )))
}

/// Serialized as the lowest-terms string, so that no JSON reader turns it into a float.
impl Serialize for Marks {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.text().as_str())
    }
}

/// Read from a string (`"-1/3"`, `"-0.25"`, `"4"`) or a JSON integer (`4`); a JSON number with
/// a fraction is refused, because a float such as `0.1` may not be what its author meant.
impl<'de> Deserialize<'de> for Marks {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MarksVisitor;

        impl Visitor<'_> for MarksVisitor {
            type Value = Marks;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mark as a string (\"4\", \"-1/3\", \"-0.25\") or an integer")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Marks, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Marks, E> {
                Ok(Marks::integer(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Marks, E> {
                i64::try_from(v)
                    .map(Marks::integer)
                    .map_err(|_| E::custom(format!("{v} is too large to be a mark")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Marks, E> {
                Err(E::custom(format!(
                    "{v} is a JSON float: write fractional marks as strings, e.g. \"-1/3\" or \
                     \"-0.25\""
                )))
            }
        }

        deserializer.deserialize_any(MarksVisitor)
    }
}

/// A fixed-point rendering of an exact ratio, rounded half away from zero; see
/// [`Marks::display`]. Serializes as its string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundedDecimal {
    numer: i128,
    denom: i128,
    places: u32,
}

impl RoundedDecimal {
    /// `numer / denom` (denom positive) to `places` decimals. Callers keep `|numer| * 10^places`
    /// within i128; every caller in this crate has numerators well below 2^64 and at most 18
    /// places.
    pub(crate) fn new(numer: i128, denom: i128, places: u32) -> RoundedDecimal {
        debug_assert!(denom > 0);
        RoundedDecimal {
            numer,
            denom,
            places,
        }
    }
}

impl RoundedDecimal {
    fn text(&self) -> ShortText {
        let scale = 10_u128.pow(self.places);
        let magnitude = self.numer.unsigned_abs() * scale;
        let denom = self.denom as u128;
        // Half away from zero: floor((2m + d) / 2d), in 64 bits when it fits (it always does
        // for marks; 128-bit division is several times slower).
        let (twice, twice_denom) = (2 * magnitude + denom, 2 * denom);
        let rounded = match (u64::try_from(twice), u64::try_from(twice_denom)) {
            (Ok(n), Ok(d)) => u128::from(n / d),
            _ => twice / twice_denom,
        };
        let mut text = ShortText::default();
        // A value that rounds to zero shows no sign: "-0.00" would read as a negative mark.
        if self.numer < 0 && rounded != 0 {
            text.push("-");
        }
        text.push(itoa::Buffer::new().format(rounded / scale));
        if self.places > 0 {
            let mut digits = itoa::Buffer::new();
            let frac = digits.format(rounded % scale);
            text.push(".");
            for _ in frac.len()..self.places as usize {
                text.push("0");
            }
            text.push(frac);
        }
        text
    }
}

impl fmt::Display for RoundedDecimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl Serialize for RoundedDecimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.text().as_str())
    }
}

impl PartialOrd<i64> for Marks {
    fn partial_cmp(&self, other: &i64) -> Option<Ordering> {
        Some(self.cmp(&Marks::integer(*other)))
    }
}

impl PartialEq<i64> for Marks {
    fn eq(&self, other: &i64) -> bool {
        *self == Marks::integer(*other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Marks {
        s.parse().unwrap()
    }

    #[test]
    fn parses_integers_fractions_and_decimals_exactly() {
        assert_eq!(m("4"), 4);
        assert_eq!(m("+4"), 4);
        assert_eq!(m("-2"), -2);
        assert_eq!(m("-1/3"), Marks::new(-1, 3).unwrap());
        assert_eq!(m("10/4").to_string(), "5/2");
        assert_eq!(m("-0.25").to_string(), "-1/4");
        assert_eq!(m("0.50").to_string(), "1/2");
        assert_eq!(m(" 3 ").to_string(), "3");
        assert_eq!(m("-0").to_string(), "0");
    }

    #[test]
    fn refuses_what_is_not_a_mark() {
        for bad in [
            "", "x", "1/", "/3", "1/-3", "1.", ".5", "1e3", "1 /3", "--1", "1/3/4",
        ] {
            assert!(bad.parse::<Marks>().is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            "1/0".parse::<Marks>(),
            Err(MarksError::ZeroDenominator(_))
        ));
        assert!(matches!(
            "99999999999999999999".parse::<Marks>(),
            Err(MarksError::OutOfRange(_))
        ));
    }

    #[test]
    fn thirds_add_up_exactly() {
        let third = m("-1/3");
        let total: Marks = std::iter::repeat_n(third, 3).sum();
        assert_eq!(total, -1);
        assert_eq!((m("1/2") + m("1/3")).to_string(), "5/6");
        assert_eq!((m("1/2") - m("5/6")).to_string(), "-1/3");
        assert_eq!((-m("2/3")).to_string(), "-2/3");
    }

    #[test]
    fn the_longest_marks_are_written_whole() {
        assert_eq!(Marks::integer(i64::MIN).to_string(), "-9223372036854775808");
        let long = Marks::new(-(i64::MAX - 1), i64::MAX).unwrap();
        assert_eq!(long.to_string(), "-9223372036854775806/9223372036854775807");
        assert_eq!(
            serde_json::to_string(&long).unwrap(),
            r#""-9223372036854775806/9223372036854775807""#
        );
    }

    /// The rounding written digit by digit agrees with the same rule written with `fmt`, in the
    /// 64-bit and the 128-bit paths.
    #[test]
    fn rounded_decimals_match_the_formatted_rule() {
        fn by_fmt(numer: i128, denom: i128, places: u32) -> String {
            let scale = 10_u128.pow(places);
            let rounded = (2 * numer.unsigned_abs() * scale + denom as u128) / (2 * denom as u128);
            let sign = if numer < 0 && rounded != 0 { "-" } else { "" };
            if places == 0 {
                format!("{sign}{rounded}")
            } else {
                let (int, frac) = (rounded / scale, rounded % scale);
                format!("{sign}{int}.{frac:0width$}", width = places as usize)
            }
        }
        let numerators = [
            0,
            1,
            -1,
            5,
            -5,
            353,
            -1000,
            i128::from(i64::MAX),
            -i128::from(i64::MAX),
        ];
        for numer in numerators {
            for denom in [1, 3, 6, 8, 1000, i128::from(i64::MAX)] {
                for places in [0, 1, 2, 7, 18] {
                    let ours = RoundedDecimal::new(numer, denom, places);
                    assert_eq!(
                        ours.to_string(),
                        by_fmt(numer, denom, places),
                        "{numer}/{denom} to {places}"
                    );
                    assert_eq!(
                        serde_json::to_value(ours).unwrap(),
                        by_fmt(numer, denom, places)
                    );
                }
            }
        }
    }

    #[test]
    fn displays_rounded_half_away_from_zero() {
        assert_eq!(m("353/6").display(2).to_string(), "58.83");
        assert_eq!(m("-1/3").display(2).to_string(), "-0.33");
        assert_eq!(m("-2/3").display(2).to_string(), "-0.67");
        assert_eq!(m("1/8").display(2).to_string(), "0.13");
        assert_eq!(m("-1/8").display(2).to_string(), "-0.13");
        assert_eq!(m("-1/1000").display(2).to_string(), "0.00");
        assert_eq!(m("7").display(0).to_string(), "7");
        assert_eq!(m("5/2").display(0).to_string(), "3");
    }

    #[test]
    fn serializes_as_a_string_and_reads_strings_or_integers() {
        assert_eq!(serde_json::to_string(&m("-2/3")).unwrap(), r#""-2/3""#);
        assert_eq!(serde_json::from_str::<Marks>("4").unwrap(), 4);
        assert_eq!(
            serde_json::from_str::<Marks>(r#""-1/3""#).unwrap(),
            m("-1/3")
        );
        let err = serde_json::from_str::<Marks>("0.33")
            .unwrap_err()
            .to_string();
        assert!(err.contains("JSON float"), "{err}");
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        let big = Marks::integer(i64::MAX);
        assert_eq!(big.checked_add(Marks::integer(1)), None);
        assert!(Marks::new(1, 0).is_none());
        assert_eq!(Marks::new(2, -4).unwrap().to_string(), "-1/2");
    }
}
