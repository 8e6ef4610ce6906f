//! Timestamps for files lifeboat writes on FAT. `fatfs` without its `chrono`
//! feature stamps everything with DOS date 0 (month 0, day 0), which is invalid:
//! the UEFI FAT driver then refuses `SetInfo` on such files with "Invalid
//! Parameter", so systemd-boot could not rename an entry to count a boot attempt.
//! This provider gives the current UTC time instead.

use fatfs::{Date, DateTime, Time, TimeProvider};

#[derive(Debug)]
pub struct UtcClock;

pub static CLOCK: UtcClock = UtcClock;

/// Seconds since the Unix epoch to UTC (year, month, day, hour, minute, second).
pub fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m as u32, d as u32, (rem / 3600) as u32, ((rem % 3600) / 60) as u32, (rem % 60) as u32)
}

fn now() -> (u16, u16, u16, u16, u16, u16) {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (y, m, d, hh, mm, ss) = civil(secs);
    if !(1980..=2107).contains(&y) {
        return (1980, 1, 1, 0, 0, 0);
    }
    (y as u16, m as u16, d as u16, hh as u16, mm as u16, ss as u16)
}

/// The current time as a DOS (date, time) pair, for entries lifeboat writes
/// itself ([`crate::fatwrite`], [`crate::fatcheck`]).
pub(crate) fn dos_now() -> (u16, u16) {
    let (y, m, d, hh, mm, ss) = now();
    ((y - 1980) << 9 | m << 5 | d, hh << 11 | mm << 5 | (ss / 2))
}

impl TimeProvider for UtcClock {
    fn get_current_date(&self) -> Date {
        let (year, month, day, ..) = now();
        Date { year, month, day }
    }

    fn get_current_date_time(&self) -> DateTime {
        let (year, month, day, hour, min, sec) = now();
        DateTime { date: Date { year, month, day }, time: Time { hour, min, sec, millis: 0 } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_dates() {
        let d = CLOCK.get_current_date_time();
        assert!(d.date.year >= 2024 && (1..=12).contains(&d.date.month) && (1..=31).contains(&d.date.day));
    }
}
