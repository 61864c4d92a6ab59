//! The clock fatfs stamps new files with. Its own clock needs chrono (and a timezone
//! database); without one it writes 1980-01-01. FAT times are local by convention, but an
//! installer has no meaningful local zone, so UTC it is, like most firmware clocks.

use std::time::{SystemTime, UNIX_EPOCH};

use fatfs::{Date, DateTime, Time, TimeProvider};

#[derive(Debug)]
pub(crate) struct UtcClock;

pub(crate) static UTC_CLOCK: UtcClock = UtcClock;

impl TimeProvider for UtcClock {
    fn get_current_date(&self) -> Date {
        self.get_current_date_time().date
    }

    fn get_current_date_time(&self) -> DateTime {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        date_time(secs)
    }
}

/// The FAT date and time of `secs` since the Unix epoch, clamped to FAT's 1980..=2107.
fn date_time(secs: u64) -> DateTime {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let (year, month, day) = match year {
        ..1980 => (1980, 1, 1),
        2108.. => (2107, 12, 31),
        _ => (year as u16, month, day),
    };
    DateTime {
        date: Date { year, month, day },
        time: Time {
            hour: (of_day / 3600) as u16,
            min: (of_day / 60 % 60) as u16,
            sec: (of_day % 60) as u16,
            millis: 0,
        },
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u16, u16) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u16;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u16;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_known_instants() {
        let t = date_time(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        let leap = date_time(951_782_400); // 2000-02-29 00:00:00 UTC
        assert_eq!(
            (leap.date.year, leap.date.month, leap.date.day),
            (2000, 2, 29)
        );
        assert_eq!(date_time(0).date.year, 1980, "clamped to FAT's epoch");
    }
}
