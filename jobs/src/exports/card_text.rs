//! How a report card words its numbers and times for a parent: marks as decimals with the exact
//! fraction only where the decimal is not exact, percentiles to 2 decimals, the submission time
//! in the school's time zone.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::scoring::Marks;

/// Decimals of the marks and percentiles a card shows.
pub const CARD_DECIMALS: u32 = 2;

/// `32.75`, or `10.33 (31/3)` when two decimals are not the exact marks.
///
/// ```
/// use quizworker_jobs::exports::card_text::marks;
/// assert_eq!(marks("131/4".parse().unwrap()), "32.75");
/// assert_eq!(marks("-1/3".parse().unwrap()), "-0.33 (-1/3)");
/// assert_eq!(marks("40".parse().unwrap()), "40");
/// ```
pub fn marks(marks: Marks) -> String {
    if marks.denom() == 1 {
        return marks.to_string();
    }
    let decimal = marks.display(CARD_DECIMALS).to_string();
    if decimal.parse::<Marks>().is_ok_and(|d| d == marks) {
        decimal
    } else {
        format!("{decimal} ({marks})")
    }
}

/// A stored percentile (`"66.6666667"`, exact to 7 decimals) to 2 decimals, rounded half away
/// from zero; `None` for a text that is not a decimal number.
///
/// ```
/// use quizworker_jobs::exports::card_text::percentile;
/// assert_eq!(percentile("100.0000000").as_deref(), Some("100.00"));
/// assert_eq!(percentile("66.6666667").as_deref(), Some("66.67"));
/// ```
pub fn percentile(stored: &str) -> Option<String> {
    let value: Marks = stored.parse().ok()?;
    Some(value.display(CARD_DECIMALS).to_string())
}

/// `22 November 2026, 14:36 IST`: the time in `zone`, with the zone's abbreviation (or its UTC
/// offset where it has none).
pub fn local_time(time: DateTime<Utc>, zone: Tz) -> String {
    time.with_timezone(&zone)
        .format("%-d %B %Y, %H:%M %Z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_fractions_show_only_where_the_decimal_is_not_exact() {
        for (stored, shown) in [
            ("131/4", "32.75"),
            ("353/6", "58.83 (353/6)"),
            ("-4", "-4"),
            ("-1/3", "-0.33 (-1/3)"),
            ("1/2", "0.50"),
            ("0", "0"),
        ] {
            assert_eq!(marks(stored.parse().unwrap()), shown, "{stored}");
        }
        assert_eq!(percentile("12.3450000").as_deref(), Some("12.35"));
        assert_eq!(percentile("0").as_deref(), Some("0.00"));
        assert_eq!(percentile("n/a"), None);
    }

    #[test]
    fn times_read_in_the_schools_zone() {
        let time: DateTime<Utc> = "2026-11-22T09:06:42Z".parse().unwrap();
        assert_eq!(
            local_time(time, chrono_tz::Asia::Kolkata),
            "22 November 2026, 14:36 IST"
        );
        assert_eq!(
            local_time(time, chrono_tz::UTC),
            "22 November 2026, 09:06 UTC"
        );
    }
}
