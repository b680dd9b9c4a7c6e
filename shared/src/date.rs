//! Calendar dates as days since 1970-01-01, the representation of Arrow's
//! `date32`, so a date column goes to Arrow without conversion.

use chrono::{Datelike, NaiveDate};

/// Days since 1970-01-01 (Arrow `date32`).
pub type Date = i32;

/// Days between 0001-01-01 (chrono's day 1 of the common era) and 1970-01-01.
const UNIX_EPOCH_FROM_CE: i32 = 719_163;

/// Parses an ISO date `YYYY-MM-DD`; `None` when it is not one.
pub fn parse_date(text: &str) -> Option<Date> {
    let text = text.trim();
    // chrono accepts non-padded fields ("2020-1-5"); ISO dates are always 10 characters.
    if text.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(|d| d.num_days_from_ce() - UNIX_EPOCH_FROM_CE)
}

/// Formats a date as `YYYY-MM-DD`.
pub fn format_date(date: Date) -> String {
    match NaiveDate::from_num_days_from_ce_opt(date + UNIX_EPOCH_FROM_CE) {
        Some(d) => d.format("%Y-%m-%d").to_string(),
        None => format!("day {date}"),
    }
}

/// Builds a date from its parts; `None` for an impossible date.
pub fn ymd(year: i32, month: u32, day: u32) -> Option<Date> {
    NaiveDate::from_ymd_opt(year, month, day).map(|d| d.num_days_from_ce() - UNIX_EPOCH_FROM_CE)
}

/// Day of the week, 0 = Monday .. 6 = Sunday.
pub fn weekday(date: Date) -> u32 {
    // 1970-01-01 was a Thursday (3).
    (date + 3).rem_euclid(7) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_arrow_epoch() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(format_date(19_782), "2024-02-29");
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2024-2-9"), None);
        assert_eq!(weekday(parse_date("2026-11-25").unwrap()), 2);
    }
}
