//! The one text form of a timestamp: fixed-width UTC RFC 3339 with microseconds and `Z`
//! (`2026-11-28T03:04:22.123456Z`). Every value has the same width, so text order is time order,
//! which lets a store compare and index timestamps as plain text.

use chrono::{DateTime, Datelike, NaiveDateTime, SubsecRound, Utc};

use crate::error::ValidationError;

const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";
const WIDTH: usize = "2026-11-28T03:04:22.123456Z".len();

/// The earliest and latest instants that have a four-digit year, and so a fixed-width form.
fn representable(ts: &DateTime<Utc>) -> bool {
    (0..=9999).contains(&ts.year())
}

/// Drops sub-microsecond digits. Stores keep microseconds (as PostgreSQL's `timestamptz` does).
pub fn truncate_to_micros(ts: DateTime<Utc>) -> DateTime<Utc> {
    ts.trunc_subsecs(6)
}

/// Checks that a timestamp can be stored: its year must have four digits.
///
/// # Errors
/// Returns a [`ValidationError`] naming `field` when the year is outside 0000–9999.
pub fn check(field: &'static str, ts: &DateTime<Utc>) -> Result<(), ValidationError> {
    if representable(ts) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("year {} is outside 0000-9999", ts.year()),
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
    }
}
