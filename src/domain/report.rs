//! A meeting's attendance report (DESIGN §12): who came, when, for how
//! long, and how many were there at once, from the attendance rows (one per
//! join of one device).
//!
//! A user on two devices at once is there once: their time is the union of
//! their stays, not the sum. Peak counts participants (devices), as the
//! room does.

use std::collections::BTreeMap;

use super::time::Micros;

/// One attendance row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stay {
    pub user_id: String,
    pub joined_at: Micros,
    /// `None` while still in the room.
    pub left_at: Option<Micros>,
}

/// One user's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    pub user_id: String,
    pub first_join: Micros,
    /// `None` while any of their devices is still in the room.
    pub last_leave: Option<Micros>,
    /// Time in the meeting on any device, in microseconds.
    pub total: Micros,
    pub joins: u32,
}

/// Totals per user (by first join) and the peak number of participants;
/// stays still open count until `now` (and none past it).
pub fn summarize(stays: &[Stay], now: Micros) -> (Vec<Attendee>, u32) {
    let mut by_user: BTreeMap<&str, Vec<(Micros, Option<Micros>)>> = BTreeMap::new();
    for stay in stays {
        by_user
            .entry(&stay.user_id)
            .or_default()
            .push((stay.joined_at, stay.left_at));
    }
    let mut attendees: Vec<Attendee> = by_user
        .into_iter()
        .map(|(user_id, mut spans)| {
            spans.sort_unstable_by_key(|(from, _)| *from);
            let first_join = spans[0].0;
            let last_leave = spans
                .iter()
                .map(|(_, to)| *to)
                .try_fold(Micros::MIN, |latest, to| to.map(|t| latest.max(t)));
            // The union of the spans.
            let (mut total, mut open): (Micros, Option<(Micros, Micros)>) = (0, None);
            for (from, to) in &spans {
                let to = to.unwrap_or(now).min(now).max(*from);
                open = match open {
                    Some((start, end)) if *from <= end => Some((start, end.max(to))),
                    Some((start, end)) => {
                        total += end - start;
                        Some((*from, to))
                    }
                    None => Some((*from, to)),
                };
            }
            if let Some((start, end)) = open {
                total += end - start;
            }
            Attendee {
                user_id: user_id.to_owned(),
                first_join,
                last_leave,
                total,
                joins: spans.len() as u32,
            }
        })
        .collect();
    attendees.sort_by(|a, b| (a.first_join, &a.user_id).cmp(&(b.first_join, &b.user_id)));

    // Leaves before joins at the same instant: a handover is not a peak.
    let mut edges: Vec<(Micros, i32)> = stays
        .iter()
        .flat_map(|s| {
            [
                (s.joined_at, 1),
                (s.left_at.unwrap_or(now).min(now).max(s.joined_at), -1),
            ]
        })
        .collect();
    edges.sort_unstable();
    let (mut here, mut peak) = (0i32, 0i32);
    for (_, step) in edges {
        here += step;
        peak = peak.max(here);
    }
    // Someone who came was there, however briefly.
    let floor = i32::from(!stays.is_empty());
    (attendees, peak.max(floor) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stay(user: &str, from: Micros, to: Option<Micros>) -> Stay {
        Stay {
            user_id: user.into(),
            joined_at: from,
            left_at: to,
        }
    }

    #[test]
    fn two_devices_at_once_count_once_and_gaps_do_not_count() {
        let stays = [
            stay("a", 0, Some(100)),
            stay("a", 50, Some(150)),  // second device, overlapping
            stay("a", 200, Some(250)), // came back
            stay("b", 10, None),       // still here
        ];
        let (attendees, peak) = summarize(&stays, 300);
        assert_eq!(
            attendees,
            [
                Attendee {
                    user_id: "a".into(),
                    first_join: 0,
                    last_leave: Some(250),
                    total: 200,
                    joins: 3
                },
                Attendee {
                    user_id: "b".into(),
                    first_join: 10,
                    last_leave: None,
                    total: 290,
                    joins: 1
                },
            ]
        );
        assert_eq!(peak, 3);
    }

    #[test]
    fn a_handover_at_one_instant_is_not_a_peak() {
        let stays = [stay("a", 0, Some(100)), stay("b", 100, Some(200))];
        assert_eq!(summarize(&stays, 300).1, 1);
        assert_eq!(summarize(&[], 300), (Vec::new(), 0));
    }

    #[test]
    fn nothing_counts_past_the_end() {
        // A meeting over at 100; a stay reopened by a late resume.
        let (attendees, _) = summarize(&[stay("a", 50, None), stay("b", 150, Some(200))], 100);
        assert_eq!(attendees[0].total, 50);
        assert_eq!(attendees[1].total, 0);
    }

    #[test]
    fn a_leave_recorded_before_its_join_counts_nothing() {
        // Clock skew between nodes must not make time negative.
        let (attendees, peak) = summarize(&[stay("a", 100, Some(90))], 300);
        assert_eq!((attendees[0].total, peak), (0, 1));
    }
}
