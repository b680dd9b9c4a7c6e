//! Calendar dates as days since 1970-01-01, the representation of Arrow's
//! `date32`, so a date column goes to Arrow without conversion.

use chrono::{Datelike, NaiveDate};

/// Days since 1970-01-01 (Arrow `date32`).
pub type Date = i32;

/// Days between 0001-01-01 (chrono's day 1 of the common era) and 1970-01-01.
const UNIX_EPOCH_FROM_CE: i32 = 719_163;

/// Parses an ISO date `YYYY-MM-DD`; `None` when it is not one.
///
/// By hand rather than with chrono's format parser, which was 15% of the CPU of a batch
/// reading CSV files: a date is ten bytes, and the day count is a closed formula.
pub fn parse_date(text: &str) -> Option<Date> {
    let b = text.trim().as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    from_digits(&b[..4], &b[5..7], &b[8..])
}

/// A date as data files write it: ISO `YYYY-MM-DD`, the compact `YYYYMMDD` of A-share
/// vendors, or either followed by a time of day (`2024-01-02 00:00:00`, `...T15:00`), whose
/// day is the bar's.
pub fn parse_data_date(text: &str) -> Option<Date> {
    let text = text.trim();
    let day = text.split([' ', 'T']).next().unwrap_or(text);
    let b = day.as_bytes();
    if b.len() == 8 {
        return from_digits(&b[..4], &b[4..6], &b[6..]);
    }
    parse_date(day)
}

/// The date of year, month and day given as ASCII digits; `None` unless all are digits and
/// the day exists.
fn from_digits(year: &[u8], month: &[u8], day: &[u8]) -> Option<Date> {
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (number(year)?, number(month)?, number(day)?);
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year as i32, month, day))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a valid proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i32, month: u32, day: u32) -> Date {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i32 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

    #[test]
    fn parse_agrees_with_chrono_on_every_day_and_refuses_what_it_refuses() {
        // Every day of 1600-2400, formatted by chrono and parsed back.
        let first = ymd(1600, 1, 1).unwrap();
        for d in first..first + 800 * 366 {
            assert_eq!(parse_date(&format_date(d)), Some(d), "{}", format_date(d));
        }
        for bad in [
            "2023-02-29",
            "1900-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-04-31",
            "2024-01-00",
            "0000-01-01",
            "2024/01/01",
            "2024-01-1a",
            "+024-01-01",
            "2024-1-01 ",
            "20240101",
            "",
            "2024-01-011",
        ] {
            let chrono = NaiveDate::parse_from_str(bad.trim(), "%Y-%m-%d").ok();
            assert_eq!(parse_date(bad), None, "{bad:?} (chrono: {chrono:?})");
        }
        assert_eq!(parse_date(" 2000-02-29 "), ymd(2000, 2, 29));
    }
}
