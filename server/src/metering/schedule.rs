//! When the next usage report is due. Only `minutely`, `hourly` and `daily` (UTC) for now; the
//! server's PBS calendar-event parser replaces this function once it is merged.

use chrono::{DateTime, Duration, DurationRound, Utc};

/// The first report time strictly after `now` for `schedule`.
pub fn next_report_time(schedule: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let step = match schedule.trim() {
        "minutely" => Duration::minutes(1),
        "hourly" => Duration::hours(1),
        "daily" => Duration::days(1),
        other => {
            return Err(format!(
                "report schedule '{other}' is not supported yet (use minutely, hourly or daily)"
            ))
        }
    };
    let start = now
        .duration_trunc(step)
        .map_err(|e| format!("report schedule '{schedule}': {e}"))?;
    Ok(start + step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn next_times_are_the_next_boundaries() {
        let now = Utc.with_ymd_and_hms(2026, 3, 4, 10, 20, 30).unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2026, 3, 4, h, m, 0).unwrap();
        assert_eq!(next_report_time("minutely", now).unwrap(), at(10, 21));
        assert_eq!(next_report_time("hourly", now).unwrap(), at(11, 0));
        assert_eq!(
            next_report_time("daily", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 5, 0, 0, 0).unwrap()
        );
        // Exactly on a boundary: the next one, never now.
        assert_eq!(next_report_time("hourly", at(11, 0)).unwrap(), at(12, 0));
        assert!(next_report_time("mon 02:00", now).is_err());
    }
}
