//! When the next usage report is due: `report_schedule` is a PBS calendar event, evaluated in
//! the server's local time like every other job schedule.

use chrono::{DateTime, TimeZone, Utc};

use crate::jobs::calendar;

/// The first report time strictly after `now` for `schedule`.
pub fn next_report_time(schedule: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    next_report_time_in(schedule, now, &chrono::Local)
}

fn next_report_time_in<Tz: TimeZone>(
    schedule: &str,
    now: DateTime<Utc>,
    tz: &Tz,
) -> Result<DateTime<Utc>, String> {
    let event =
        calendar::parse(schedule).map_err(|e| format!("report schedule '{schedule}': {e}"))?;
    let next = event
        .next_after_in(now.timestamp(), tz)
        .ok_or_else(|| format!("report schedule '{schedule}' never fires"))?;
    DateTime::from_timestamp(next, 0)
        .ok_or_else(|| format!("report schedule '{schedule}': time {next} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_times_are_the_next_calendar_events() {
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 10, 20, 30).unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2026, 3, 4, h, m, 0).unwrap();
        let next = |s: &str, t| next_report_time_in(s, t, &Utc).unwrap();
        assert_eq!(next("minutely", now), at(10, 21));
        assert_eq!(next("hourly", now), at(11, 0));
        assert_eq!(
            next("daily", now),
            Utc.with_ymd_and_hms(2026, 3, 5, 0, 0, 0).unwrap()
        );
        // Exactly on an event: the next one, never now.
        assert_eq!(next("hourly", at(11, 0)), at(12, 0));
        // Full calendar events work too (2026-03-04 is a Wednesday).
        assert_eq!(
            next("mon 02:00", now),
            Utc.with_ymd_and_hms(2026, 3, 9, 2, 0, 0).unwrap()
        );
        assert_eq!(next("*:0/15", now), at(10, 30));
        assert!(next_report_time_in("not a schedule", now, &Utc).is_err());
    }
}
