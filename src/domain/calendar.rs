//! RFC 5545 iCalendar export of one meeting, or of one recurring series
//! (a VEVENT with RRULE and EXDATE, and a VEVENT with RECURRENCE-ID for
//! each changed occurrence).
//!
//! Written by hand: VEVENTs need escaping (§3.3.11), line folding at 75
//! octets (§3.1), UTC or zoned date-times (§3.3.5) and, for a zone, a
//! VTIMEZONE with the zone's offset changes over the events' span
//! (§3.6.5, from `recurrence::TimeZone`), which is less code than a
//! dependency. Tests parse the output with an independent parser.

use std::fmt::Write as _;

use super::{
    meeting::{InviteStatus, MeetingStatus},
    recurrence::TimeZone,
    time::Micros,
};

/// What goes into the VEVENT.
#[derive(Debug)]
pub struct CalendarEvent<'a> {
    pub uid: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub start: Micros,
    pub duration_minutes: i32,
    pub status: MeetingStatus,
    pub url: &'a str,
    pub sequence: i32,
    pub created: Micros,
    pub last_modified: Micros,
    pub stamp: Micros,
    pub organizer: Attendee<'a>,
    pub attendees: Vec<(Attendee<'a>, InviteStatus)>,
    /// A series' master event: its RRULE value.
    pub rule: Option<&'a str>,
    /// A series' master event: starts (as the rule made them) of
    /// occurrences that were cancelled or deleted.
    pub exdates: Vec<Micros>,
    /// A changed occurrence: its start as the rule made it.
    pub recurrence_id: Option<Micros>,
    /// A series' master event: the start of its last occurrence (the
    /// VTIMEZONE covers the whole series).
    pub last_start: Option<Micros>,
}

#[derive(Debug, Clone, Copy)]
pub struct Attendee<'a> {
    pub name: Option<&'a str>,
    pub email: &'a str,
}

fn end_of(event: &CalendarEvent<'_>) -> Micros {
    event.start + i64::from(event.duration_minutes) * 60 * 1_000_000
}

/// The VCALENDAR document of `events` (times in `zone`), CRLF line endings.
pub fn to_ics(events: &[CalendarEvent<'_>], zone: TimeZone) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        "PRODID:-//UNIO//Meetings//EN".to_owned(),
        "CALSCALE:GREGORIAN".to_owned(),
        "METHOD:PUBLISH".to_owned(),
    ];
    if !zone.is_utc() {
        let day = 86_400 * 1_000_000;
        let points = events.iter().flat_map(|e| {
            [e.start, end_of(e)]
                .into_iter()
                .chain(e.exdates.iter().copied())
                .chain(e.recurrence_id)
                .chain(
                    e.last_start
                        .map(|at| at + i64::from(e.duration_minutes) * 60 * 1_000_000),
                )
        });
        let from = points.clone().min().unwrap_or(0) - day;
        let to = points.max().unwrap_or(0) + day;
        timezone_lines(&mut lines, zone, from, to);
    }
    for event in events {
        event_lines(&mut lines, event, zone);
    }
    lines.push("END:VCALENDAR".to_owned());
    let mut out = String::new();
    for line in lines {
        fold_into(&mut out, &line);
    }
    out
}

/// `NAME:…Z` in UTC, or `NAME;TZID=…:local` in a zone.
fn date_time(name: &str, at: Micros, zone: TimeZone) -> String {
    if zone.is_utc() {
        format!("{name}:{}", utc(at))
    } else {
        format!("{name};TZID={}:{}", zone.name(), zone.local(at))
    }
}

/// A VTIMEZONE for `zone` from `from` to `to`: the offset in force at
/// `from`, then each change, as STANDARD and DAYLIGHT observances with
/// their local start times (§3.6.5).
fn timezone_lines(lines: &mut Vec<String>, zone: TimeZone, from: Micros, to: Micros) {
    let observance = |lines: &mut Vec<String>,
                      at: Micros,
                      before: i32,
                      after: &super::recurrence::ZoneOffset| {
        let kind = if after.daylight {
            "DAYLIGHT"
        } else {
            "STANDARD"
        };
        // The local time of the change, in the offset before it.
        lines.push(format!("BEGIN:{kind}"));
        lines.push(format!(
            "DTSTART:{}",
            utc(at + i64::from(before) * 1_000_000).trim_end_matches('Z')
        ));
        lines.push(format!("TZOFFSETFROM:{}", offset(before)));
        lines.push(format!("TZOFFSETTO:{}", offset(after.seconds)));
        if !after.name.is_empty() {
            lines.push(format!("TZNAME:{}", escape_text(&after.name)));
        }
        lines.push(format!("END:{kind}"));
    };
    lines.push("BEGIN:VTIMEZONE".to_owned());
    lines.push(format!("TZID:{}", zone.name()));
    let first = zone.offset_at(from);
    observance(
        lines,
        from - from.rem_euclid(1_000_000),
        first.seconds,
        &first,
    );
    for change in zone.transitions(from, to) {
        observance(lines, change.at, change.from, &change.to);
    }
    lines.push("END:VTIMEZONE".to_owned());
}

/// `±HHMM` (or `±HHMMSS`) of a UTC offset in seconds.
fn offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    let (h, m, rest) = (s / 3600, s % 3600 / 60, s % 60);
    if rest == 0 {
        format!("{sign}{h:02}{m:02}")
    } else {
        format!("{sign}{h:02}{m:02}{rest:02}")
    }
}

fn event_lines(lines: &mut Vec<String>, event: &CalendarEvent<'_>, zone: TimeZone) {
    let status = match event.status {
        MeetingStatus::Cancelled => "CANCELLED",
        _ => "CONFIRMED",
    };
    lines.extend([
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{}", escape_text(event.uid)),
        format!("DTSTAMP:{}", utc(event.stamp)),
    ]);
    if let Some(at) = event.recurrence_id {
        lines.push(date_time("RECURRENCE-ID", at, zone));
    }
    lines.push(date_time("DTSTART", event.start, zone));
    lines.push(date_time("DTEND", end_of(event), zone));
    if let Some(rule) = event.rule {
        // The rule was parsed and respelled by the rrule crate: one line of
        // ASCII parameters, nothing to escape.
        lines.push(format!("RRULE:{rule}"));
    }
    for at in &event.exdates {
        lines.push(date_time("EXDATE", *at, zone));
    }
    lines.push(format!("SUMMARY:{}", escape_text(event.title)));
    if !event.description.is_empty() {
        lines.push(format!("DESCRIPTION:{}", escape_text(event.description)));
    }
    lines.push(format!("URL:{}", event.url));
    lines.push(format!("STATUS:{status}"));
    lines.push(format!("SEQUENCE:{}", event.sequence.max(0)));
    lines.push(format!("CREATED:{}", utc(event.created)));
    lines.push(format!("LAST-MODIFIED:{}", utc(event.last_modified)));
    lines.push(format!(
        "ORGANIZER{}:mailto:{}",
        common_name(event.organizer.name),
        event.organizer.email
    ));
    for (attendee, status) in &event.attendees {
        let partstat = match status {
            InviteStatus::Pending => "NEEDS-ACTION",
            InviteStatus::Accepted => "ACCEPTED",
            InviteStatus::Declined => "DECLINED",
        };
        lines.push(format!(
            "ATTENDEE{};ROLE=REQ-PARTICIPANT;PARTSTAT={partstat};RSVP=TRUE:mailto:{}",
            common_name(attendee.name),
            attendee.email
        ));
    }
    lines.push("END:VEVENT".to_owned());
}

/// `;CN="…"` with characters a quoted parameter cannot hold removed.
fn common_name(name: Option<&str>) -> String {
    match name {
        Some(name) if !name.is_empty() => {
            let clean: String = name
                .chars()
                .filter(|c| *c != '"' && !c.is_control())
                .collect();
            format!(";CN=\"{clean}\"")
        }
        _ => String::new(),
    }
}

/// TEXT escaping (§3.3.11): backslash, semicolon, comma and newlines.
fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => out.push_str("\\n"),
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends `line` + CRLF, folded so no physical line exceeds 75 octets and
/// no UTF-8 sequence is split (§3.1).
fn fold_into(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        // Continuation lines start with a space, which counts.
        if width + len > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += len;
    }
    out.push_str("\r\n");
}

/// `YYYYMMDDTHHMMSSZ` (§3.3.5, form 2).
fn utc(at: Micros) -> String {
    let seconds = at.div_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let rem = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = String::with_capacity(16);
    let _ = write!(
        s,
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    s
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(title: &'a str, description: &'a str) -> CalendarEvent<'a> {
        CalendarEvent {
            uid: "0192f0c1-7b3a-7c4e-9d2f-1a2b3c4d5e6f",
            title,
            description,
            start: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
            duration_minutes: 90,
            status: MeetingStatus::Scheduled,
            url: "http://localhost:50051/m/x",
            sequence: 2,
            created: 0,
            last_modified: 0,
            stamp: 0,
            organizer: Attendee {
                name: Some("Ada \"Countess\""),
                email: "ada@example.com",
            },
            attendees: vec![(
                Attendee {
                    name: None,
                    email: "bob@example.com",
                },
                InviteStatus::Accepted,
            )],
            rule: None,
            exdates: Vec::new(),
            recurrence_id: None,
            last_start: None,
        }
    }

    #[test]
    fn formats_utc_date_times() {
        assert_eq!(utc(0), "19700101T000000Z");
        assert_eq!(utc(1_767_225_600_000_000), "20260101T000000Z");
        assert_eq!(utc(951_782_400_000_000), "20000229T000000Z");
        assert_eq!(utc(253_402_300_799_000_000), "99991231T235959Z");
    }

    #[test]
    fn writes_the_event() {
        let ics = to_ics(&[event("Plan", "")], TimeZone::UTC);
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"));
        assert!(ics.contains("DTSTART:20260101T000000Z\r\n"));
        assert!(ics.contains("DTEND:20260101T013000Z\r\n"));
        assert!(ics.contains("SEQUENCE:2\r\n"));
        assert!(ics.contains("STATUS:CONFIRMED\r\n"));
        assert!(ics.contains("ORGANIZER;CN=\"Ada Countess\":mailto:ada@example.com\r\n"));
        assert!(ics.contains("PARTSTAT=ACCEPTED"));
        assert!(!ics.contains("DESCRIPTION"));
        assert!(ics.ends_with("END:VCALENDAR\r\n"));
    }

    #[test]
    fn a_zoned_series_has_a_timezone_covering_every_occurrence() {
        let berlin = TimeZone::parse("Europe/Berlin").unwrap();
        let mut master = event("Weekly", "");
        master.start = 1_792_393_200_000_000; // Monday 2026-10-19 09:00 CEST
        master.rule = Some("FREQ=WEEKLY;COUNT=30;BYDAY=MO");
        master.last_start = Some(master.start + 29 * 7 * 86_400 * 1_000_000);
        let ics = to_ics(&[master], berlin);
        assert!(ics.contains("DTSTART;TZID=Europe/Berlin:20261019T090000\r\n"));
        assert!(ics.contains("RRULE:FREQ=WEEKLY;COUNT=30;BYDAY=MO\r\n"));
        // Summer time ends in October 2026 and begins in March 2027, both
        // within the series.
        assert!(ics.contains("BEGIN:STANDARD\r\nDTSTART:20261025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nTZNAME:CET"));
        assert!(ics.contains(
            "BEGIN:DAYLIGHT\r\nDTSTART:20270328T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200"
        ));
    }

    #[test]
    fn escapes_text() {
        assert_eq!(escape_text("a,b;c\\d\r\ne\nf"), "a\\,b\\;c\\\\d\\ne\\nf");
    }

    #[test]
    fn folds_long_lines_without_splitting_characters() {
        let title = "é".repeat(100);
        let ics = to_ics(&[event(&title, "")], TimeZone::UTC);
        for line in ics.split("\r\n") {
            assert!(line.len() <= 75, "{} octets: {line}", line.len());
        }
        let unfolded = ics.replace("\r\n ", "");
        assert!(unfolded.contains(&format!("SUMMARY:{title}\r\n")));
    }
}
