//! Budget periods: calendar months and days in UTC, from unix seconds by calendar arithmetic.

use std::fmt;

pub(crate) const SECONDS_PER_DAY: u64 = 86_400;

/// Whether a period is a month or a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodKind {
    Monthly,
    Daily,
}

impl PeriodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Monthly => "monthly",
            PeriodKind::Daily => "daily",
        }
    }
}

impl fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A calendar month or a day, in UTC; `month` is 1 to 12 and `day` 1 to 31.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Month { year: i32, month: u32 },
    Day { year: i32, month: u32, day: u32 },
}

impl Period {
    /// The month containing an instant (Unix seconds).
    pub fn month_of(unix_secs: u64) -> Self {
        let (year, month, _) = civil_from_days(unix_secs / SECONDS_PER_DAY);
        Period::Month { year, month }
    }

    /// The day containing an instant (Unix seconds).
    pub fn day_of(unix_secs: u64) -> Self {
        let (year, month, day) = civil_from_days(unix_secs / SECONDS_PER_DAY);
        Period::Day { year, month, day }
    }

    pub fn kind(&self) -> PeriodKind {
        match self {
            Period::Month { .. } => PeriodKind::Monthly,
            Period::Day { .. } => PeriodKind::Daily,
        }
    }

    /// The first second of the period (Unix seconds; 0 for a period before 1970).
    pub fn starts_at(&self) -> u64 {
        let days = match *self {
            Period::Month { year, month } => days_from_civil(year, month, 1),
            Period::Day { year, month, day } => days_from_civil(year, month, day),
        };
        u64::try_from(days).unwrap_or(0).saturating_mul(SECONDS_PER_DAY)
    }

    /// The first second after the period, when its budget starts again from zero.
    pub fn ends_at(&self) -> u64 {
        match *self {
            Period::Month { year, month } if month >= 12 => {
                Period::Month { year: year.saturating_add(1), month: 1 }.starts_at()
            }
            Period::Month { year, month } => Period::Month { year, month: month + 1 }.starts_at(),
            Period::Day { .. } => self.starts_at().saturating_add(SECONDS_PER_DAY),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Month { year, month } => write!(f, "{year:04}-{month:02}"),
            Period::Day { year, month, day } => write!(f, "{year:04}-{month:02}-{day:02}"),
        }
    }
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`, <https://howardhinnant.github.io/date_algorithms.html>).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    // The year is counted from March, so that the leap day is the last day of a year.
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400); // [0, 399]
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date (year, month 1–12, day 1–31) of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`). Years beyond `i32::MAX` are clamped to it; no clock gets there.
fn civil_from_days(days: u64) -> (i32, u32, u32) {
    // Shifted to start on 0000-03-01, so that the leap day is the last day of a year.
    let z = i128::from(days) + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let shifted_month = (5 * day_of_year + 2) / 153; // [0, 11], March is 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1; // [1, 31]
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 }; // [1, 12]
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    let small = |value: i128| u32::try_from(value).unwrap_or(1);
    (i32::try_from(year).unwrap_or(i32::MAX), small(month), small(day))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Periods.

    #[test]
    fn the_epoch_is_the_first_of_january_1970() {
        assert_eq!(Period::day_of(0), Period::Day { year: 1970, month: 1, day: 1 });
        assert_eq!(Period::month_of(0), Period::Month { year: 1970, month: 1 });
        assert_eq!(Period::day_of(0).starts_at(), 0);
        assert_eq!(Period::month_of(0).starts_at(), 0);
        assert_eq!(Period::day_of(86_399), Period::Day { year: 1970, month: 1, day: 1 });
        assert_eq!(Period::day_of(86_400), Period::Day { year: 1970, month: 1, day: 2 });
    }

    #[test]
    fn a_leap_day_converts_both_ways() {
        let leap_day = Period::Day { year: 2024, month: 2, day: 29 };
        assert_eq!(Period::day_of(1_709_164_800), leap_day);
        assert_eq!(leap_day.starts_at(), 1_709_164_800);
        assert_eq!(leap_day.ends_at(), 1_709_251_200);
        assert_eq!(Period::day_of(1_709_251_200), Period::Day { year: 2024, month: 3, day: 1 });
        let february = Period::Month { year: 2024, month: 2 };
        assert_eq!(Period::month_of(1_709_164_800), february);
        assert_eq!(february.starts_at(), 1_706_745_600);
        assert_eq!(february.ends_at(), 1_709_251_200);
    }

    #[test]
    fn the_last_second_of_a_month_belongs_to_it() {
        let last_second = 1_798_761_599; // 2026-12-31T23:59:59Z
        assert_eq!(Period::day_of(last_second), Period::Day { year: 2026, month: 12, day: 31 });
        assert_eq!(Period::month_of(last_second), Period::Month { year: 2026, month: 12 });
        assert_eq!(Period::month_of(last_second + 1), Period::Month { year: 2027, month: 1 });
        assert_eq!(Period::day_of(last_second + 1), Period::Day { year: 2027, month: 1, day: 1 });
        let december = Period::Month { year: 2026, month: 12 };
        assert_eq!(december.starts_at(), 1_796_083_200);
        assert_eq!(december.ends_at(), last_second + 1);
    }

    #[test]
    fn february_has_29_days_in_leap_years_only() {
        let days = |year| {
            let february = Period::Month { year, month: 2 };
            (february.ends_at() - february.starts_at()) / SECONDS_PER_DAY
        };
        assert_eq!(days(2024), 29);
        assert_eq!(days(2026), 28);
        assert_eq!(days(2000), 29);
        assert_eq!(days(2100), 28);
    }

    /// The day after a date, counted the plain way, to check the conversion against.
    fn next_day(period: Period) -> Period {
        let Period::Day { year, month, day } = period else { unreachable!() };
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days_in_month = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        match (month, day) {
            (12, 31) => Period::Day { year: year + 1, month: 1, day: 1 },
            (_, day) if day == days_in_month => Period::Day { year, month: month + 1, day: 1 },
            _ => Period::Day { year, month, day: day + 1 },
        }
    }

    #[test]
    fn every_day_for_three_centuries_follows_the_one_before_and_converts_both_ways() {
        let mut previous = Period::day_of(0);
        for days in 1..(300 * 366) {
            let start = days * SECONDS_PER_DAY;
            let day = Period::day_of(start);
            assert_eq!(day, next_day(previous));
            assert_eq!(day.starts_at(), start, "{day}");
            assert_eq!(Period::day_of(start - 1), previous, "{day}");
            let Period::Day { year, month, .. } = day else { unreachable!() };
            let month = Period::Month { year, month };
            assert_eq!(Period::month_of(start), month, "{day}");
            assert!(month.starts_at() <= start && start < month.ends_at(), "{day}");
            previous = day;
        }
        assert_eq!(previous.to_string(), "2270-08-15");
    }
}
