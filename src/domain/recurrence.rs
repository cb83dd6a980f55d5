//! Recurring meetings (DESIGN §11): an RFC 5545 RRULE expanded in an IANA
//! time zone, so a series at 09:00 Berlin stays at 09:00 Berlin across
//! daylight-saving changes.
//!
//! Expansion is the `rrule` crate's (the RFC's rules are many and subtle);
//! zones are `chrono-tz`'s copy of the IANA database. What is ours: the
//! limits (COUNT or UNTIL, at most [`MAX_OCCURRENCES`] within
//! [`MAX_SPAN_DAYS`] days; a start the rule does not produce moves to its
//! first occurrence after it, if the rule expands the same from there), and
//! the zone facts the calendar export needs (local times and the offset
//! changes of a VTIMEZONE).

use chrono::{Offset, TimeZone as _};
use chrono_tz::{OffsetComponents, OffsetName};
use rrule::{Frequency, RRule, RRuleSet, Unvalidated};

use super::{ValidationError, meeting, time::Micros};

/// Occurrences one series may have.
pub const MAX_OCCURRENCES: usize = 200;
/// Every occurrence starts within this many days of the first.
pub const MAX_SPAN_DAYS: i64 = 731;
/// The most combinations of BY values one period may produce.
const MAX_BY_COMBINATIONS: usize = 1_000;
/// A rule longer than this is not a meeting's.
const MAX_RULE_LEN: usize = 500;
const MICROS: i64 = 1_000_000;
/// 2060-01-01T00:00:00Z. chrono-tz tabulates each zone's offset changes
/// into the 2060s and keeps the last offset after that; a zoned series
/// ends before then, so what the server expands, and the VTIMEZONE it
/// exports, agree with any calendar's own copy of the zone.
const ZONE_RULES_UNTIL: Micros = 2_840_140_800 * MICROS;

/// An IANA time zone (`Europe/Berlin`), UTC by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    pub const UTC: Self = Self(chrono_tz::Tz::UTC);

    /// An IANA zone name; empty means UTC.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(Self::UTC);
        }
        raw.parse::<chrono_tz::Tz>().map(Self).map_err(|_| {
            ValidationError::new("must be an IANA time zone name such as Europe/Berlin or UTC")
        })
    }

    /// A zone name as stored (UTC if it is no longer known).
    pub fn from_db(name: &str) -> Self {
        Self::parse(name).unwrap_or(Self::UTC)
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    pub fn is_utc(self) -> bool {
        matches!(self.0, chrono_tz::Tz::UTC | chrono_tz::Tz::Etc__UTC)
    }

    /// `YYYYMMDDTHHMMSS`, the wall-clock time at `at` in this zone.
    pub fn local(self, at: Micros) -> String {
        match self.0.timestamp_micros(at).single() {
            Some(t) => t.format("%Y%m%dT%H%M%S").to_string(),
            None => String::from("19700101T000000"),
        }
    }

    /// `at` moved by `by` on the wall clock of this zone (so 09:00 stays
    /// 09:00 across a daylight-saving change); a local time that does not
    /// exist or exists twice takes the earlier offset.
    pub fn shift_local(self, at: Micros, by: Micros) -> Micros {
        let Some(t) = self.0.timestamp_micros(at).single() else {
            return at.saturating_add(by);
        };
        let local = t.naive_local() + chrono::TimeDelta::microseconds(by);
        match self.0.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                t.timestamp_micros()
            }
            // In a gap (spring forward): the instant an hour-long gap skips to.
            chrono::LocalResult::None => self
                .0
                .from_local_datetime(&(local + chrono::TimeDelta::hours(1)))
                .earliest()
                .map_or(at.saturating_add(by), |t| t.timestamp_micros()),
        }
    }

    /// How far `to` is from `from` on this zone's wall clock.
    pub fn local_delta(self, from: Micros, to: Micros) -> Micros {
        match (
            self.0.timestamp_micros(from).single(),
            self.0.timestamp_micros(to).single(),
        ) {
            (Some(a), Some(b)) => (b.naive_local() - a.naive_local())
                .num_microseconds()
                .unwrap_or(to - from),
            _ => to - from,
        }
    }

    /// Whether a zoned meeting may start at `at`: UTC always, another zone
    /// before the end of its known rules (2060).
    pub fn covers(self, at: Micros) -> bool {
        self.is_utc() || at < ZONE_RULES_UNTIL
    }

    /// The zone's rules at `at`.
    pub fn offset_at(self, at: Micros) -> ZoneOffset {
        let Some(t) = self.0.timestamp_micros(at).single() else {
            return ZoneOffset {
                seconds: 0,
                name: String::from("UTC"),
                daylight: false,
            };
        };
        let offset = t.offset();
        ZoneOffset {
            seconds: offset.fix().local_minus_utc(),
            name: offset.abbreviation().unwrap_or_default().to_owned(),
            daylight: !offset.dst_offset().is_zero(),
        }
    }

    /// Every change of offset between `from` and `to` (at most
    /// [`MAX_SPAN_DAYS`] + 2 days are looked at, and nothing from 2060 on),
    /// found by stepping a day at a time (zones change at most a few times a
    /// year) and then narrowing to the second.
    pub fn transitions(self, from: Micros, to: Micros) -> Vec<Transition> {
        const DAY: i64 = 86_400 * MICROS;
        let to = to
            .min(from.saturating_add((MAX_SPAN_DAYS + 2) * DAY))
            .min(ZONE_RULES_UNTIL);
        let mut out = Vec::new();
        let mut at = from;
        let mut before = self.offset_at(at);
        while at < to {
            let next = (at + DAY).min(to);
            let after = self.offset_at(next);
            if after != before {
                // The first second with the new offset.
                let (mut lo, mut hi) = (at / MICROS, next / MICROS);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset_at(mid * MICROS) == before {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                out.push(Transition {
                    at: hi * MICROS,
                    from: before.seconds,
                    to: after.clone(),
                });
                before = after;
            }
            at = next;
        }
        out
    }
}

/// A zone's offset from UTC at some instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneOffset {
    pub seconds: i32,
    /// The abbreviation (`CEST`), or empty.
    pub name: String,
    pub daylight: bool,
}

/// The instant a zone's offset changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at: Micros,
    /// Offset before, in seconds.
    pub from: i32,
    pub to: ZoneOffset,
}

/// A new series: the rule as stored and the start of every occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// The rule in the `rrule` crate's canonical spelling.
    pub rule: String,
    pub occurrences: Vec<Micros>,
}

/// Checks a rule for a new series starting at `start` (whole seconds are
/// kept) in `zone`, and expands it.
pub fn plan(raw: &str, zone: TimeZone, start: Micros) -> Result<Series, ValidationError> {
    let text = raw.trim();
    let text = text
        .strip_prefix("RRULE:")
        .or_else(|| text.strip_prefix("rrule:"))
        .unwrap_or(text);
    if text.len() > MAX_RULE_LEN {
        return Err(ValidationError::new(format!(
            "must be at most {MAX_RULE_LEN} characters"
        )));
    }
    if text.contains(['\r', '\n']) {
        return Err(ValidationError::new(
            "must be one RRULE value, without DTSTART or other lines",
        ));
    }
    let rule: RRule<Unvalidated> = text.parse().map_err(|e: rrule::RRuleError| {
        ValidationError::new(format!("is not a valid RRULE: {e}"))
    })?;
    if rule.get_count().is_none() && rule.get_until().is_none() {
        return Err(ValidationError::new(
            "needs COUNT or UNTIL: a series must end",
        ));
    }
    if !matches!(
        rule.get_freq(),
        Frequency::Daily | Frequency::Weekly | Frequency::Monthly | Frequency::Yearly
    ) {
        return Err(ValidationError::new(
            "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY",
        ));
    }
    // The expansion builds every combination of the BY lists of a period
    // before it yields one: keep the product small.
    if rule.get_by_second().len() > 1 || rule.get_by_minute().len() > 4 {
        return Err(ValidationError::new(
            "BYSECOND may name one second and BYMINUTE at most four minutes",
        ));
    }
    let product = [
        rule.get_by_month().len(),
        rule.get_by_week_no().len(),
        rule.get_by_year_day().len(),
        rule.get_by_month_day().len(),
        rule.get_by_weekday().len(),
        rule.get_by_hour().len(),
        rule.get_by_minute().len(),
        rule.get_by_second().len(),
        rule.get_by_set_pos().len(),
    ]
    .iter()
    .map(|n| (*n).max(1))
    .try_fold(1usize, |acc, n| acc.checked_mul(n))
    .unwrap_or(usize::MAX);
    if product > MAX_BY_COMBINATIONS {
        return Err(ValidationError::new(format!(
            "its BY lists combine into more than {MAX_BY_COMBINATIONS} times a period"
        )));
    }
    if let Some(until) = rule.get_until()
        && until.timestamp_micros() > start.saturating_add(MAX_SPAN_DAYS * 86_400 * MICROS)
    {
        return Err(ValidationError::new(format!(
            "UNTIL must be within {MAX_SPAN_DAYS} days of start_time"
        )));
    }
    let canonical = rule.to_string();
    let occurrences = expand(rule.clone(), zone, start)?;
    // A start the rule does not produce (a Monday for BYDAY=TU): the series
    // starts at the first date it does produce, and must expand the same
    // from there (it is stored and exported with that DTSTART).
    if occurrences.first() != Some(&(start - start.rem_euclid(MICROS)))
        && expand(rule, zone, occurrences[0])? != occurrences
    {
        return Err(ValidationError::new(
            "start_time must be an occurrence of the rule: from its first occurrence the rule gives other dates",
        ));
    }
    Ok(Series {
        rule: canonical,
        occurrences,
    })
}

/// The starts of a stored series (as [`plan`] made it).
pub fn occurrences(rule: &str, zone: TimeZone, start: Micros) -> Vec<Micros> {
    rule.parse::<RRule<Unvalidated>>()
        .ok()
        .and_then(|rule| expand(rule, zone, start).ok())
        .unwrap_or_else(|| vec![start])
}

fn expand(
    rule: RRule<Unvalidated>,
    zone: TimeZone,
    start: Micros,
) -> Result<Vec<Micros>, ValidationError> {
    let start = start - start.rem_euclid(MICROS);
    let tz = rrule::Tz::Tz(zone.0);
    let dt_start = tz
        .timestamp_micros(start)
        .single()
        .ok_or_else(|| ValidationError::new("start_time cannot be placed in time_zone"))?;
    let count = rule.get_count();
    let bounded = rule.get_until().is_some();
    let rule = rule
        .validate(dt_start)
        .map_err(|e| ValidationError::new(format!("is not a valid RRULE: {e}")))?;
    // Expansion stops at the end of the window, whatever the rule says.
    let window_end = tz
        .timestamp_micros(start.saturating_add(MAX_SPAN_DAYS * 86_400 * MICROS))
        .single()
        .ok_or_else(|| ValidationError::new("occurrences must end by the year 9999"))?;
    let found = RRuleSet::new(dt_start)
        .rrule(rule)
        .before(window_end)
        .all(MAX_OCCURRENCES as u16 + 1);
    let starts: Vec<Micros> = found.dates.iter().map(|d| d.timestamp_micros()).collect();
    let Some(&first) = starts.first() else {
        return Err(ValidationError::new("produces no occurrence"));
    };
    if starts.len() > MAX_OCCURRENCES {
        return Err(ValidationError::new(format!(
            "produces more than {MAX_OCCURRENCES} occurrences"
        )));
    }
    // COUNT occurrences were asked for and the window holds fewer.
    if !bounded && count.is_some_and(|n| (starts.len() as u64) < u64::from(n)) {
        return Err(ValidationError::new(format!(
            "occurrences must fall within {MAX_SPAN_DAYS} days of the first"
        )));
    }
    let last = *starts.last().unwrap_or(&first);
    if last - first > MAX_SPAN_DAYS * 86_400 * MICROS {
        return Err(ValidationError::new(format!(
            "occurrences must fall within {MAX_SPAN_DAYS} days of the first"
        )));
    }
    if last > meeting::LAST_START {
        return Err(ValidationError::new(
            "occurrences must end by the year 9999",
        ));
    }
    if !zone.is_utc() && last >= ZONE_RULES_UNTIL {
        return Err(ValidationError::new(
            "occurrences in a time zone other than UTC must fall before 2060, \
             the end of the zone rules this server knows",
        ));
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-10-19T07:00:00Z, a Monday: 09:00 in Berlin (CEST).
    const MONDAY_0900_BERLIN: Micros = 1_792_393_200 * MICROS;

    fn berlin() -> TimeZone {
        TimeZone::parse("Europe/Berlin").unwrap()
    }

    #[test]
    fn a_weekly_series_keeps_its_local_time_across_daylight_saving() {
        let series = plan("FREQ=WEEKLY;BYDAY=MO;COUNT=3", berlin(), MONDAY_0900_BERLIN).unwrap();
        let local: Vec<String> = series
            .occurrences
            .iter()
            .map(|&at| berlin().local(at))
            .collect();
        assert_eq!(
            local,
            ["20261019T090000", "20261026T090000", "20261102T090000"]
        );
        // Summer time ends on 25 October: an hour later in UTC.
        assert_eq!(
            series.occurrences[1] - series.occurrences[0],
            (7 * 24 + 1) * 3_600 * MICROS
        );
        assert_eq!(series.rule, "FREQ=WEEKLY;COUNT=3;BYDAY=MO");
        assert_eq!(
            occurrences(&series.rule, berlin(), MONDAY_0900_BERLIN),
            series.occurrences
        );
    }

    #[test]
    fn refuses_rules_a_series_cannot_have() {
        let refused = |rule: &str| plan(rule, berlin(), MONDAY_0900_BERLIN).unwrap_err().0;
        assert!(refused("FREQ=WEEKLY").contains("COUNT or UNTIL"));
        assert!(refused("FREQ=DAILY;COUNT=201").contains("more than 200"));
        assert!(refused("FREQ=YEARLY;COUNT=4").contains("within 731 days"));
        assert!(refused("FREQ=DAILY;UNTIL=20300101T000000Z").contains("UNTIL must be within"));
        assert!(refused("FREQ=DAILY;COUNT=3;BYSECOND=1,2").contains("BYSECOND"));
        assert!(
            refused("FREQ=MONTHLY;COUNT=3;BYMONTHDAY=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20;BYHOUR=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20;BYMINUTE=0,15,30,45")
                .contains("combine")
        );
        // A rule that matches almost never stops at the window, quickly.
        assert!(
            refused("FREQ=YEARLY;COUNT=2;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO")
                .contains("no occurrence")
        );
        assert!(refused("FREQ=HOURLY;COUNT=3").contains("FREQ must be"));
        // A Monday start of a Tuesday rule starts on the Tuesday.
        let tuesdays = plan("FREQ=WEEKLY;BYDAY=TU;COUNT=3", berlin(), MONDAY_0900_BERLIN).unwrap();
        assert_eq!(berlin().local(tuesdays.occurrences[0]), "20261020T090000");
        assert_eq!(tuesdays.occurrences.len(), 3);
        assert!(refused("FREQ=SOMETIMES;COUNT=3").contains("not a valid RRULE"));
        assert!(refused("FREQ=DAILY;COUNT=3\nDTSTART:20260101T000000Z").contains("one RRULE"));
        assert!(refused(&"FREQ=DAILY;COUNT=3;".repeat(40)).contains("at most"));
        assert!(plan("RRULE:FREQ=DAILY;COUNT=2", berlin(), MONDAY_0900_BERLIN).is_ok());
        // 2061-01-04.
        let late = 2_872_022_400 * MICROS;
        assert!(
            plan("FREQ=DAILY;COUNT=2", berlin(), late)
                .unwrap_err()
                .0
                .contains("before 2060")
        );
        assert!(plan("FREQ=DAILY;COUNT=2", TimeZone::UTC, late).is_ok());
    }

    #[test]
    fn shifts_on_the_wall_clock() {
        let week = 7 * 86_400 * MICROS;
        // A week after Monday 19 Oct 09:00 CEST is Monday 26 Oct 09:00 CET.
        let next = berlin().shift_local(MONDAY_0900_BERLIN, week);
        assert_eq!(berlin().local(next), "20261026T090000");
        assert_eq!(next - MONDAY_0900_BERLIN, week + 3_600 * MICROS);
        assert_eq!(berlin().local_delta(MONDAY_0900_BERLIN, next), week);
        assert!(berlin().covers(MONDAY_0900_BERLIN));
        assert!(!berlin().covers(ZONE_RULES_UNTIL));
        assert!(TimeZone::UTC.covers(ZONE_RULES_UNTIL));
    }

    #[test]
    fn parses_zones() {
        assert_eq!(TimeZone::parse("").unwrap(), TimeZone::UTC);
        assert_eq!(berlin().name(), "Europe/Berlin");
        assert!(TimeZone::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn finds_offset_changes() {
        let year = 365 * 86_400 * MICROS;
        let found = berlin().transitions(MONDAY_0900_BERLIN, MONDAY_0900_BERLIN + year);
        assert_eq!(found.len(), 2);
        // 2026-10-25T01:00:00Z: CEST to CET.
        assert_eq!(found[0].at, 1_792_890_000 * MICROS);
        assert_eq!((found[0].from, found[0].to.seconds), (7_200, 3_600));
        assert_eq!(found[0].to.name, "CET");
        assert!(!found[0].to.daylight && found[1].to.daylight);
        assert!(TimeZone::UTC.transitions(0, year).is_empty());
    }
}
