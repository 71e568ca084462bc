//! The one text form of a timestamp: fixed-width UTC RFC 3339 with microseconds and `Z`
//! (`2026-11-28T03:04:22.123456Z`). Every value has the same width, so text order is time order,
//! which lets a store compare and index timestamps as plain text.
//!
//! Every timestamp abathur accepts lies in one range, [`MIN`] to [`MAX`]
//! (`0000-01-01T00:00:00Z` to `9999-12-31T23:59:59Z`), and [`check`] is the one gate that
//! enforces it: deadlines, run-after times and list filters all pass through it, whichever way
//! they come in. The range is that of SQLite's date functions, less the last second of 9999:
//! `julianday('9999-12-31T23:59:59.9999Z')` rounds to the year 10000 and returns NULL, so a
//! computation in SQL over a value in that second would silently have no result.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, Utc};

use crate::error::ValidationError;

const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";
const WIDTH: usize = "2026-11-28T03:04:22.123456Z".len();

/// The earliest timestamp accepted: `0000-01-01T00:00:00Z`.
pub const MIN: DateTime<Utc> = match NaiveDate::from_ymd_opt(0, 1, 1) {
    Some(date) => match date.and_hms_opt(0, 0, 0) {
        Some(naive) => naive.and_utc(),
        None => panic!("midnight exists"),
    },
    None => panic!("0000-01-01 is a date"),
};

/// The latest timestamp accepted: `9999-12-31T23:59:59Z`, a whole second.
pub const MAX: DateTime<Utc> = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(date) => match date.and_hms_opt(23, 59, 59) {
        Some(naive) => naive.and_utc(),
        None => panic!("23:59:59 exists"),
    },
    None => panic!("9999-12-31 is a date"),
};

/// The accepted range as people read it, for messages and help texts.
pub const RANGE_TEXT: &str = "0000-01-01T00:00:00Z to 9999-12-31T23:59:59Z";

fn in_range(ts: &DateTime<Utc>) -> bool {
    (MIN..=MAX).contains(ts)
}

/// Drops sub-microsecond digits. Stores keep microseconds (as PostgreSQL's `timestamptz` does).
pub fn truncate_to_micros(ts: DateTime<Utc>) -> DateTime<Utc> {
    ts.trunc_subsecs(6)
}

/// Checks that a timestamp lies in the accepted range, [`MIN`] to [`MAX`] inclusive.
///
/// # Errors
/// Returns a [`ValidationError`] naming `field` and the range when it does not.
pub fn check(field: &'static str, ts: &DateTime<Utc>) -> Result<(), ValidationError> {
    if in_range(ts) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{} is outside the supported range {RANGE_TEXT}",
                ts.to_rfc3339()
            ),
        ))
    }
}

/// Formats a timestamp in the fixed-width form. Sub-microsecond digits are dropped.
///
/// Callers validate with [`check`] first; a year outside 0000–9999 would not be fixed-width.
pub fn format(ts: &DateTime<Utc>) -> String {
    ts.format(FORMAT).to_string()
}

/// Parses the fixed-width form, and nothing else.
///
/// # Errors
/// Returns a message saying what is wrong when `text` is not exactly of the fixed-width form.
pub fn parse(text: &str) -> Result<DateTime<Utc>, String> {
    if text.len() != WIDTH {
        return Err(format!(
            "expected a {WIDTH}-character UTC timestamp like 2026-11-28T03:04:22.123456Z, got {text:?}"
        ));
    }
    NaiveDateTime::parse_from_str(text, FORMAT)
        .map(|naive| naive.and_utc())
        .map_err(|e| {
            format!("{text:?} is not a UTC timestamp like 2026-11-28T03:04:22.123456Z: {e}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formatting_is_fixed_width_and_round_trips_at_microsecond_precision() {
        let whole_second = Utc.with_ymd_and_hms(2026, 11, 28, 3, 4, 22).unwrap();
        assert_eq!(format(&whole_second), "2026-11-28T03:04:22.000000Z");
        let precise = whole_second + chrono::Duration::nanoseconds(123_456_789);
        let text = format(&precise);
        assert_eq!(text, "2026-11-28T03:04:22.123456Z");
        assert_eq!(parse(&text).unwrap(), truncate_to_micros(precise));
    }

    #[test]
    fn text_order_is_time_order_across_fraction_lengths() {
        let a = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
            + chrono::Duration::milliseconds(500);
        let b = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
            + chrono::Duration::microseconds(500_001);
        assert!(format(&a) < format(&b));
    }

    #[test]
    fn parsing_rejects_other_forms() {
        for bad in [
            "2026-11-28 03:04:22",
            "2026-11-28T03:04:22Z",
            "2026-11-28T03:04:22.123Z",
            "2026-11-28T03:04:22.123456+00:00",
            "garbage",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn years_beyond_four_digits_are_rejected() {
        let far = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
        assert!(check("deadline", &far).is_err());
        let before = Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap();
        assert!(check("deadline", &before).is_err());
    }

    /// Issue 10, item 1: `9999-12-31T23:59:59.9999Z` was accepted and made SQLite's
    /// `julianday()` return NULL.
    #[test]
    fn the_last_second_of_9999_is_refused_past_its_first_instant() {
        assert!(check("deadline", &MIN).is_ok());
        assert!(check("deadline", &MAX).is_ok());
        let fraction = MAX + chrono::Duration::microseconds(999_900);
        let err = check("deadline", &fraction).unwrap_err();
        assert_eq!(err.field, "deadline");
        assert!(err.message.contains(RANGE_TEXT), "{}", err.message);
        assert!(check("deadline", &(MAX + chrono::Duration::microseconds(1))).is_err());
        assert!(check("deadline", &(MIN - chrono::Duration::microseconds(1))).is_err());
        assert_eq!(format(&MIN), "0000-01-01T00:00:00.000000Z");
        assert_eq!(format(&MAX), "9999-12-31T23:59:59.000000Z");
    }
}
