//! UTC `YYYY-MM-DDTHH:MM:SSZ` ⇄ epoch seconds (snapshot paths, server/docs/formats.md#names).

use crate::error::{ClientError, Result};

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Formats epoch seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn epoch_to_rfc3339(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (or a plain epoch number).
pub fn parse_time(s: &str) -> Result<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let bad = || ClientError::Input(format!("invalid time '{s}', expected YYYY-MM-DDTHH:MM:SSZ"));
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().map_err(|_| bad());
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// Splits `type/id/time` (time textual or epoch).
pub fn parse_snapshot(s: &str) -> Result<(String, String, i64)> {
    let parts: Vec<&str> = s.splitn(3, '/').collect();
    match parts.as_slice() {
        [t, id, time] => Ok((t.to_string(), id.to_string(), parse_time(time)?)),
        _ => Err(ClientError::Input(format!(
            "invalid snapshot '{s}', expected type/id/time"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        assert_eq!(epoch_to_rfc3339(1593179765), "2020-06-26T13:56:05Z");
        assert_eq!(parse_time("2020-06-26T13:56:05Z").unwrap(), 1593179765);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        for t in [1, 951782400, 1709164800, 4102444799] {
            assert_eq!(parse_time(&epoch_to_rfc3339(t)).unwrap(), t);
        }
        assert_eq!(
            parse_snapshot("vm/100/2020-06-26T13:56:05Z").unwrap(),
            ("vm".into(), "100".into(), 1593179765)
        );
        assert!(parse_time("2020-13-01T00:00:00Z").is_err());
    }
}
