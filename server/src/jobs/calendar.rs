//! PBS calendar events (the `schedule` of prune, verify and GC jobs): parsing and the next
//! matching point in time.
//!
//! Format: `[WEEKDAY] [[YEARS-]MONTHS-DAYS] [HOURS:MINUTES[:SECONDS]]`, evaluated in local
//! time. Each field takes `*`, values, `a..b` ranges, `start/step` repetitions (`*/step` from
//! the field's minimum) and comma lists of these; weekdays take names and `mon..fri` ranges.
//! A missing weekday or date means every day; a missing time means 00:00:00; a missing
//! seconds field means second 0. Named events: `minutely`, `hourly`, `daily`, `weekly`,
//! `monthly`, `yearly`/`annually`, `quarterly`, `semiannually`/`semi-annually`.
//! Not supported, like PBS: time zones, sub-second resolution, Unix timestamps, `~` days and
//! repetitions of ranges (`1..10/2`).

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike};

/// A schedule that does not parse; the message says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid calendar event '{event}': {reason}")]
pub struct CalendarError {
    pub event: String,
    pub reason: String,
}

/// One comma-separated item of a field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Value(u32),
    Range(u32, u32),
    /// `start/step`: start, start + step, ... up to the field's maximum.
    Repeat(u32, u32),
}

/// A field: `None` items = every value (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    items: Option<Vec<Item>>,
}

impl Field {
    fn all() -> Self {
        Field { items: None }
    }

    fn only(v: u32) -> Self {
        Field {
            items: Some(vec![Item::Value(v)]),
        }
    }

    fn matches(&self, v: u32) -> bool {
        let Some(items) = &self.items else {
            return true;
        };
        items.iter().any(|item| match *item {
            Item::Value(x) => x == v,
            Item::Range(a, b) => a <= v && v <= b,
            Item::Repeat(start, step) => v >= start && (v - start) % step == 0,
        })
    }

    /// Smallest matching value in `from..=max`.
    fn next_from(&self, from: u32, max: u32) -> Option<u32> {
        (from..=max).find(|v| self.matches(*v))
    }
}

/// A parsed calendar event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarEvent {
    /// Bit 0 = Monday ... bit 6 = Sunday.
    weekdays: u8,
    years: Field,
    months: Field,
    days: Field,
    hours: Field,
    minutes: Field,
    seconds: Field,
}

const WEEKDAYS: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

const ALL_WEEKDAYS: u8 = 0x7f;

fn named(text: &str) -> Option<&'static str> {
    Some(match text {
        "minutely" => "*-*-* *:*:00",
        "hourly" => "*-*-* *:00:00",
        "daily" => "*-*-* 00:00:00",
        "weekly" => "mon *-*-* 00:00:00",
        "monthly" => "*-*-01 00:00:00",
        "yearly" | "annually" => "*-01-01 00:00:00",
        "quarterly" => "*-01,04,07,10-01 00:00:00",
        "semiannually" | "semi-annually" => "*-01,07-01 00:00:00",
        _ => return None,
    })
}

fn weekday_index(name: &str) -> Option<u32> {
    WEEKDAYS
        .iter()
        .position(|(short, long)| *short == name || *long == name)
        .map(|i| i as u32)
}

impl std::str::FromStr for CalendarEvent {
    type Err = CalendarError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// Parse a calendar event.
pub fn parse(text: &str) -> Result<CalendarEvent, CalendarError> {
    let err = |reason: String| CalendarError {
        event: text.to_string(),
        reason,
    };
    let lower = text.trim().to_ascii_lowercase();
    if lower.is_empty() {
        return Err(err("empty schedule".into()));
    }
    let expanded = named(&lower).unwrap_or(&lower);
    let mut event = CalendarEvent {
        weekdays: ALL_WEEKDAYS,
        years: Field::all(),
        months: Field::all(),
        days: Field::all(),
        hours: Field::only(0),
        minutes: Field::only(0),
        seconds: Field::only(0),
    };
    // 0 = weekday allowed next, 1 = date, 2 = time, 3 = nothing more.
    let mut stage = 0;
    for token in expanded.split_whitespace() {
        if token.contains(':') {
            if stage > 2 {
                return Err(err(format!("unexpected '{token}' after the time")));
            }
            parse_time(token, &mut event).map_err(err)?;
            stage = 3;
        } else if token.contains('-') {
            if stage > 1 {
                return Err(err(format!("date '{token}' must come before the time")));
            }
            parse_date(token, &mut event).map_err(err)?;
            stage = 2;
        } else {
            if stage > 0 {
                return Err(err(format!("weekday '{token}' must come first")));
            }
            event.weekdays = parse_weekdays(token).map_err(err)?;
            stage = 1;
        }
    }
    Ok(event)
}

fn parse_weekdays(token: &str) -> Result<u8, String> {
    let mut mask = 0u8;
    for part in token.split(',') {
        let (a, b) = match part.split_once("..") {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let from = weekday_index(a).ok_or_else(|| format!("'{a}' is not a weekday"))?;
        let to = weekday_index(b).ok_or_else(|| format!("'{b}' is not a weekday"))?;
        if from > to {
            return Err(format!("weekday range '{part}' runs backwards"));
        }
        for d in from..=to {
            mask |= 1 << d;
        }
    }
    Ok(mask)
}

fn parse_date(token: &str, event: &mut CalendarEvent) -> Result<(), String> {
    let parts: Vec<&str> = token.split('-').collect();
    match parts.as_slice() {
        [y, m, d] => {
            event.years = parse_field(y, 1970, 9999, "year")?;
            event.months = parse_field(m, 1, 12, "month")?;
            event.days = parse_field(d, 1, 31, "day")?;
        }
        [m, d] => {
            event.months = parse_field(m, 1, 12, "month")?;
            event.days = parse_field(d, 1, 31, "day")?;
        }
        _ => return Err(format!("'{token}' is not a date like [YEAR-]MONTH-DAY")),
    }
    Ok(())
}

fn parse_time(token: &str, event: &mut CalendarEvent) -> Result<(), String> {
    let parts: Vec<&str> = token.split(':').collect();
    match parts.as_slice() {
        [h, m] => {
            event.hours = parse_field(h, 0, 23, "hour")?;
            event.minutes = parse_field(m, 0, 59, "minute")?;
            event.seconds = Field::only(0);
        }
        [h, m, s] => {
            event.hours = parse_field(h, 0, 23, "hour")?;
            event.minutes = parse_field(m, 0, 59, "minute")?;
            event.seconds = parse_field(s, 0, 59, "second")?;
        }
        _ => return Err(format!("'{token}' is not a time like HOUR:MINUTE[:SECOND]")),
    }
    Ok(())
}

fn parse_number(text: &str, min: u32, max: u32, what: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 4 {
        return Err(format!("'{text}' is not a valid {what}"));
    }
    let v: u32 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a valid {what}"))?;
    if v < min || v > max {
        return Err(format!("{what} {v} is outside {min}..{max}"));
    }
    Ok(v)
}

fn parse_field(text: &str, min: u32, max: u32, what: &str) -> Result<Field, String> {
    if text == "*" {
        return Ok(Field::all());
    }
    let mut items = Vec::new();
    for part in text.split(',') {
        if let Some((start, step)) = part.split_once('/') {
            if start.contains("..") {
                return Err(format!(
                    "repetition of a range '{part}' is not supported in the {what} field"
                ));
            }
            let start = match start {
                "*" => min,
                s => parse_number(s, min, max, what)?,
            };
            let step = parse_number(step, 1, max.max(1), &format!("{what} step"))?;
            items.push(Item::Repeat(start, step));
        } else if let Some((a, b)) = part.split_once("..") {
            let a = parse_number(a, min, max, what)?;
            let b = parse_number(b, min, max, what)?;
            if a > b {
                return Err(format!("{what} range '{part}' runs backwards"));
            }
            items.push(Item::Range(a, b));
        } else if part == "*" {
            return Ok(Field::all());
        } else {
            items.push(Item::Value(parse_number(part, min, max, what)?));
        }
    }
    Ok(Field { items: Some(items) })
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map(|d| d.day())
        .unwrap_or(28)
}

fn at(date: NaiveDate, h: u32, m: u32, s: u32) -> Option<NaiveDateTime> {
    date.and_hms_opt(h, m, s)
}

impl CalendarEvent {
    fn day_matches(&self, date: NaiveDate) -> bool {
        self.months.matches(date.month())
            && self.days.matches(date.day())
            && self.weekdays & (1 << date.weekday().num_days_from_monday()) != 0
    }

    /// The first matching local date-time at or after `from` (wall-clock, no zone).
    fn next_naive(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut cur = from;
        // Each round moves to a later day, hour, minute or second, or returns.
        for _ in 0..200_000 {
            let year = u32::try_from(cur.year()).ok()?;
            if year > 9999 {
                return None;
            }
            if !self.years.matches(year) {
                let next = self.years.next_from(year + 1, 9999)?;
                cur = at(NaiveDate::from_ymd_opt(next as i32, 1, 1)?, 0, 0, 0)?;
                continue;
            }
            let date = cur.date();
            if !self.day_matches(date) {
                cur = self.next_day(date)?;
                continue;
            }
            let Some(h) = self.hours.next_from(cur.hour(), 23) else {
                cur = at(date.succ_opt()?, 0, 0, 0)?;
                continue;
            };
            if h != cur.hour() {
                cur = at(date, h, 0, 0)?;
            }
            let Some(m) = self.minutes.next_from(cur.minute(), 59) else {
                cur = at(date, h, 0, 0)? + Duration::hours(1);
                continue;
            };
            if m != cur.minute() {
                cur = at(date, h, m, 0)?;
            }
            let Some(s) = self.seconds.next_from(cur.second(), 59) else {
                cur = at(date, h, m, 0)? + Duration::minutes(1);
                continue;
            };
            return at(date, h, m, s);
        }
        None
    }

    /// Midnight of the next candidate day after `date`, skipping whole months that cannot
    /// match.
    fn next_day(&self, date: NaiveDate) -> Option<NaiveDateTime> {
        if !self.months.matches(date.month()) {
            let (y, m) = match self.months.next_from(date.month() + 1, 12) {
                Some(m) => (date.year(), m),
                None => (date.year() + 1, self.months.next_from(1, 12)?),
            };
            return at(NaiveDate::from_ymd_opt(y, m, 1)?, 0, 0, 0);
        }
        let dim = days_in_month(date.year(), date.month());
        if self.days.next_from(date.day() + 1, dim).is_none() {
            let first = NaiveDate::from_ymd_opt(date.year(), date.month(), dim)?.succ_opt()?;
            return at(first, 0, 0, 0);
        }
        at(date.succ_opt()?, 0, 0, 0)
    }

    /// The first event strictly after `after` (Unix seconds), evaluated in `tz`.
    ///
    /// Daylight-saving changes: wall-clock times skipped by a spring-forward change do not
    /// fire (`02:30` on that day fires the next day; `*:0/15` goes on at the first time after
    /// the gap). Times repeated by a fall-back change fire once, at their first instance,
    /// unless the event repeats within the day ([`Self::runs_on_elapsed_time`]): `hourly` or
    /// `*:0/15` then fire in both instances of the repeated hour, so they keep their interval
    /// in real time. PBS evaluates events the same way, on the local wall clock: proxmox-time's
    /// `CalendarEvent::compute_next_event` walks year, month, day, hour, minute and second over
    /// a libc `tm` normalised by `mktime` (proxmox/proxmox-rs, `proxmox-time/src/
    /// calendar_event.rs` and `tm_editor.rs`), where `hourly` (`*:00:00`) matches 02:00 in
    /// both offsets. Fixed times firing once follows cron's documented rule for jobs at a
    /// particular time (Vixie cron, cron(8): jobs in a repeated period are not re-run).
    pub fn next_after_in<Tz: TimeZone>(&self, after: i64, tz: &Tz) -> Option<i64> {
        let start = tz.timestamp_opt(after.checked_add(1)?, 0).single()?;
        let first = self.first_instance_from(start.naive_local(), after, tz)?;
        if !self.runs_on_elapsed_time() {
            return Some(first);
        }
        match self.replayed_by_fall_back(after, first, tz) {
            Some(replayed) if replayed < first => Some(replayed),
            _ => Some(first),
        }
    }

    /// Whether the event repeats within a day (its hour or minute field is `*` or a
    /// repetition), so it follows elapsed time across a fall-back change.
    pub fn runs_on_elapsed_time(&self) -> bool {
        let repeats = |f: &Field| match &f.items {
            None => true,
            Some(items) => items.iter().any(|i| matches!(i, Item::Repeat(..))),
        };
        repeats(&self.hours) || repeats(&self.minutes)
    }

    /// The first instance after `after` of a matching wall-clock time at or after `from`.
    /// In a DST gap a time has no instance; a repeated time has two, of which only the
    /// first counts unless the event runs on elapsed time.
    fn first_instance_from<Tz: TimeZone>(
        &self,
        mut from: NaiveDateTime,
        after: i64,
        tz: &Tz,
    ) -> Option<i64> {
        let both = self.runs_on_elapsed_time();
        for _ in 0..10_000 {
            let naive = self.next_naive(from)?;
            let local = tz.from_local_datetime(&naive);
            let latest = if both { local.clone().latest() } else { None };
            let found = [local.earliest(), latest]
                .into_iter()
                .flatten()
                .map(|t| t.timestamp())
                .find(|t| *t > after);
            if found.is_some() {
                return found;
            }
            from = naive + Duration::seconds(1);
        }
        None
    }

    /// When the clock goes back between `after` and `first`, the wall-clock times after the
    /// change come again: the first event among them (`None` without such a change).
    fn replayed_by_fall_back<Tz: TimeZone>(&self, after: i64, first: i64, tz: &Tz) -> Option<i64> {
        let offset = |t: i64| {
            tz.timestamp_opt(t, 0)
                .single()
                .map(|d| d.offset().fix().local_minus_utc())
        };
        let (mut before, mut changed) = (after.checked_add(1)?, first);
        let later = offset(changed)?;
        if later >= offset(before)? {
            return None;
        }
        // The first instant with the later (smaller) offset.
        while changed - before > 1 {
            let mid = before + (changed - before) / 2;
            if offset(mid)? == later {
                changed = mid;
            } else {
                before = mid;
            }
        }
        let wall = tz.timestamp_opt(changed, 0).single()?.naive_local();
        self.first_instance_from(wall, after, tz)
    }

    /// The first event strictly after `after` (Unix seconds) in the server's local time.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        self.next_after_in(after, &chrono::Local)
    }
}

#[cfg(test)]
#[path = "calendar_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "calendar_dst_tests.rs"]
mod dst_tests;
