//! Meeting rules in one place: field limits, the status machine, and who may
//! see, edit, invite and join.

use super::{ValidationError, time::Micros};

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
pub const MAX_DURATION_MINUTES: i32 = 1_440;
pub const MAX_INVITES_PER_CALL: usize = 200;
pub const MAX_CO_HOSTS: usize = 50;
/// A new meeting may start a little in the past (clock skew, slow forms).
pub const START_TOLERANCE_MICROS: Micros = 5 * 60 * 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let title = raw.trim();
        if title.is_empty() {
            return Err(ValidationError::new("is required"));
        }
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(ValidationError::new(format!(
                "must be at most {MAX_TITLE_CHARS} characters"
            )));
        }
        if title.chars().any(char::is_control) {
            return Err(ValidationError::new("must not contain control characters"));
        }
        if title.chars().any(super::is_bidi_control) {
            return Err(ValidationError::new(
                "must not contain bidirectional override characters",
            ));
        }
        Ok(Self(title.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text; newlines and tabs allowed, other control characters not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let text = raw.trim();
        if text.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ValidationError::new(format!(
                "must be at most {MAX_DESCRIPTION_CHARS} characters"
            )));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(ValidationError::new(
                "must not contain control characters other than newlines and tabs",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn parse_duration_minutes(raw: i32) -> Result<i32, ValidationError> {
    if (1..=MAX_DURATION_MINUTES).contains(&raw) {
        Ok(raw)
    } else {
        Err(ValidationError::new(format!(
            "must be between 1 and {MAX_DURATION_MINUTES} minutes"
        )))
    }
}

/// The latest start a meeting may have: its end (up to a day later) stays
/// within year 9999.
pub const LAST_START: Micros = (253_402_300_799 - 86_400) * 1_000_000;

/// A start time for a new or rescheduled meeting.
pub fn parse_start_time(
    ts: Option<&prost_types::Timestamp>,
    now: Micros,
) -> Result<Micros, ValidationError> {
    let ts = ts.ok_or_else(|| ValidationError::new("is required"))?;
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(ValidationError::new("has invalid nanos"));
    }
    // Year 10000 and beyond cannot be written in iCalendar or most clients.
    // The end (start + up to a day) must stay within year 9999 too.
    if ts.seconds < 0 || ts.seconds > LAST_START / 1_000_000 {
        return Err(ValidationError::new("must be between 1970 and 9999"));
    }
    let at = ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000;
    if at < now - START_TOLERANCE_MICROS {
        return Err(ValidationError::new(
            "must not be more than 5 minutes in the past",
        ));
    }
    Ok(at)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeetingStatus {
    Scheduled,
    Ongoing,
    Completed,
    Cancelled,
}

/// A status change the machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} meeting cannot be {action}")]
pub struct IllegalTransition {
    pub from: &'static str,
    pub action: &'static str,
}

impl MeetingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Ongoing => "ongoing",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "scheduled" => Some(Self::Scheduled),
            "ongoing" => Some(Self::Ongoing),
            "completed" => Some(Self::Completed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// Completed and cancelled meetings are history: read-only.
    pub fn is_over(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }

    pub fn start(self) -> Result<Self, IllegalTransition> {
        self.transition(Self::Scheduled, Self::Ongoing, "started")
    }

    pub fn end(self) -> Result<Self, IllegalTransition> {
        self.transition(Self::Ongoing, Self::Completed, "ended")
    }

    pub fn cancel(self) -> Result<Self, IllegalTransition> {
        self.transition(Self::Scheduled, Self::Cancelled, "cancelled")
    }

    fn transition(
        self,
        from: Self,
        to: Self,
        action: &'static str,
    ) -> Result<Self, IllegalTransition> {
        if self == from {
            Ok(to)
        } else {
            Err(IllegalTransition {
                from: self.as_str(),
                action,
            })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPolicy {
    InvitedOnly,
    AnyoneWithLink,
}

impl JoinPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvitedOnly => "invited_only",
            Self::AnyoneWithLink => "anyone_with_link",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "invited_only" => Some(Self::InvitedOnly),
            "anyone_with_link" => Some(Self::AnyoneWithLink),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteStatus {
    Pending,
    Accepted,
    Declined,
}

impl InviteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(Self::Pending),
            "accepted" => Some(Self::Accepted),
            "declined" => Some(Self::Declined),
            _ => None,
        }
    }
}

/// How one user stands to one meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation {
    pub is_host: bool,
    /// The host named the user a co-host (DESIGN §10).
    pub is_co_host: bool,
    pub is_admin: bool,
    /// The user's invite to this meeting, if any.
    pub invite: Option<InviteStatus>,
    /// Whether the user ever joined the meeting.
    pub attended: bool,
    /// The host removed the user: nothing an invitation, attendance or an
    /// open link gave them holds any more.
    pub removed: bool,
}

/// What a relation allows on a meeting in a given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub relation: Relation,
    pub policy: JoinPolicy,
    pub status: MeetingStatus,
}

impl Access {
    /// Host, admins, anyone invited (a decliner may change their mind),
    /// past participants, and with an open link anyone.
    pub fn can_view(&self) -> bool {
        let r = self.relation;
        r.is_host
            || r.is_admin
            || (!r.removed
                && (r.invite.is_some() || r.attended || self.policy == JoinPolicy::AnyoneWithLink))
    }

    /// Removed by the host, and not someone removal cannot touch.
    pub fn is_removed(&self) -> bool {
        let r = self.relation;
        r.removed && !r.is_host && !r.is_admin
    }

    /// Members in the DESIGN sense: host, invitees who did not decline,
    /// and anyone who joined (plus admins and co-hosts).
    pub fn is_member(&self) -> bool {
        let r = self.relation;
        r.is_host
            || r.is_admin
            || (!r.removed
                && (r.attended
                    || r.is_co_host
                    || matches!(
                        r.invite,
                        Some(InviteStatus::Pending | InviteStatus::Accepted)
                    )))
    }

    /// Only the host invites and sees every invite.
    pub fn can_manage(&self) -> bool {
        self.relation.is_host
    }

    /// The host or an admin edits the schedule, cancels and names
    /// co-hosts (DESIGN §10).
    pub fn can_schedule(&self) -> bool {
        self.relation.is_host || self.relation.is_admin
    }

    /// A co-host who was not removed since being named.
    pub fn is_co_host(&self) -> bool {
        self.relation.is_co_host && !self.relation.removed && !self.relation.is_host
    }

    /// The host and co-hosts run the meeting: start and end it, admit
    /// and deny, remove participants, lower hands, lock and unlock, and
    /// switch the waiting room.
    pub fn can_run(&self) -> bool {
        self.relation.is_host || self.is_co_host()
    }

    /// The host, co-hosts and admins read the attendance report.
    pub fn can_report(&self) -> bool {
        self.can_run() || self.relation.is_admin
    }

    /// The host and co-hosts pass a lock and skip the waiting room.
    pub fn skips_lobby(&self) -> bool {
        self.can_run()
    }

    pub fn can_delete(&self) -> bool {
        self.relation.is_host || self.relation.is_admin
    }

    /// Joining the live room: members, or anyone while the link is open,
    /// and only while the meeting is not over.
    pub fn can_join(&self) -> bool {
        !self.status.is_over()
            && !self.is_removed()
            && (self.is_member() || self.policy == JoinPolicy::AnyoneWithLink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBODY: Relation = Relation {
        is_host: false,
        is_co_host: false,
        is_admin: false,
        invite: None,
        attended: false,
        removed: false,
    };

    #[test]
    fn the_removed_lose_everything_but_hosts_and_admins_cannot_be_removed() {
        let removed = Relation {
            invite: Some(InviteStatus::Accepted),
            attended: true,
            removed: true,
            ..NOBODY
        };
        let a = access(removed, JoinPolicy::AnyoneWithLink, MeetingStatus::Ongoing);
        assert!(a.is_removed() && !a.can_view() && !a.is_member() && !a.can_join());
        let host = Relation {
            is_host: true,
            removed: true,
            ..NOBODY
        };
        let h = access(host, JoinPolicy::InvitedOnly, MeetingStatus::Ongoing);
        assert!(!h.is_removed() && h.is_member() && h.can_join());
    }

    fn access(relation: Relation, policy: JoinPolicy, status: MeetingStatus) -> Access {
        Access {
            relation,
            policy,
            status,
        }
    }

    #[test]
    fn the_status_machine_allows_only_its_edges() {
        use MeetingStatus::*;
        assert_eq!(Scheduled.start(), Ok(Ongoing));
        assert_eq!(Ongoing.end(), Ok(Completed));
        assert_eq!(Scheduled.cancel(), Ok(Cancelled));
        for status in [Ongoing, Completed, Cancelled] {
            assert!(status.start().is_err(), "{status:?} start");
            assert!(status.cancel().is_err(), "{status:?} cancel");
        }
        for status in [Scheduled, Completed, Cancelled] {
            assert!(status.end().is_err(), "{status:?} end");
        }
        assert_eq!(
            Completed.start().unwrap_err().to_string(),
            "a completed meeting cannot be started"
        );
    }

    #[test]
    fn database_spellings_round_trip() {
        use MeetingStatus::*;
        for s in [Scheduled, Ongoing, Completed, Cancelled] {
            assert_eq!(MeetingStatus::from_db(s.as_str()), Some(s));
        }
        for p in [JoinPolicy::InvitedOnly, JoinPolicy::AnyoneWithLink] {
            assert_eq!(JoinPolicy::from_db(p.as_str()), Some(p));
        }
        for i in [
            InviteStatus::Pending,
            InviteStatus::Accepted,
            InviteStatus::Declined,
        ] {
            assert_eq!(InviteStatus::from_db(i.as_str()), Some(i));
        }
    }

    #[test]
    fn strangers_see_nothing_unless_the_link_is_open() {
        let closed = access(NOBODY, JoinPolicy::InvitedOnly, MeetingStatus::Scheduled);
        assert!(!closed.can_view() && !closed.can_join() && !closed.can_manage());
        let open = access(NOBODY, JoinPolicy::AnyoneWithLink, MeetingStatus::Scheduled);
        assert!(open.can_view() && open.can_join() && !open.can_manage() && !open.is_member());
    }

    #[test]
    fn decliners_may_look_but_not_join() {
        let declined = Relation {
            invite: Some(InviteStatus::Declined),
            ..NOBODY
        };
        let a = access(declined, JoinPolicy::InvitedOnly, MeetingStatus::Ongoing);
        assert!(a.can_view() && !a.is_member() && !a.can_join());
        let pending = Relation {
            invite: Some(InviteStatus::Pending),
            ..NOBODY
        };
        assert!(access(pending, JoinPolicy::InvitedOnly, MeetingStatus::Ongoing).can_join());
    }

    #[test]
    fn only_hosts_manage_and_admins_may_also_delete() {
        let host = Relation {
            is_host: true,
            ..NOBODY
        };
        let admin = Relation {
            is_admin: true,
            ..NOBODY
        };
        let a = access(host, JoinPolicy::InvitedOnly, MeetingStatus::Scheduled);
        assert!(a.can_manage() && a.can_delete());
        let a = access(admin, JoinPolicy::InvitedOnly, MeetingStatus::Scheduled);
        assert!(!a.can_manage() && a.can_delete() && a.can_view());
    }

    #[test]
    fn co_hosts_run_the_meeting_but_do_not_own_it() {
        let co_host = Relation {
            is_co_host: true,
            ..NOBODY
        };
        let a = access(co_host, JoinPolicy::InvitedOnly, MeetingStatus::Ongoing);
        assert!(a.can_run() && a.skips_lobby() && a.is_member() && a.can_join());
        assert!(!a.can_manage() && !a.can_schedule() && !a.can_delete());
        let removed = Relation {
            removed: true,
            ..co_host
        };
        let a = access(removed, JoinPolicy::InvitedOnly, MeetingStatus::Ongoing);
        assert!(!a.can_run() && !a.is_co_host() && !a.can_join());
        let admin = Relation {
            is_admin: true,
            ..NOBODY
        };
        let a = access(admin, JoinPolicy::InvitedOnly, MeetingStatus::Ongoing);
        assert!(a.can_schedule() && !a.can_run() && !a.skips_lobby());
        let attendee = Relation {
            invite: Some(InviteStatus::Accepted),
            ..NOBODY
        };
        let a = access(attendee, JoinPolicy::InvitedOnly, MeetingStatus::Ongoing);
        assert!(!a.can_run() && !a.can_schedule() && !a.skips_lobby());
    }

    #[test]
    fn nobody_joins_a_meeting_that_is_over() {
        let host = Relation {
            is_host: true,
            ..NOBODY
        };
        for status in [MeetingStatus::Completed, MeetingStatus::Cancelled] {
            assert!(!access(host, JoinPolicy::AnyoneWithLink, status).can_join());
        }
    }

    #[test]
    fn fields_are_bounded() {
        assert!(Title::parse(" ").is_err());
        assert!(Title::parse(&"t".repeat(200)).is_ok());
        assert!(Title::parse(&"t".repeat(201)).is_err());
        assert!(Description::parse("").is_ok());
        assert!(Description::parse("line\nline\tok").is_ok());
        assert!(Description::parse("nul\u{0}").is_err());
        assert!(Description::parse(&"d".repeat(5001)).is_err());
        assert!(parse_duration_minutes(0).is_err());
        assert!(parse_duration_minutes(1440).is_ok());
        assert!(parse_duration_minutes(1441).is_err());
    }

    #[test]
    fn start_times_may_be_slightly_in_the_past() {
        let now = 1_800_000_000_000_000;
        let ts = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
        assert!(parse_start_time(None, now).is_err());
        assert!(parse_start_time(Some(&ts(1_800_000_000 - 240)), now).is_ok());
        assert!(parse_start_time(Some(&ts(1_800_000_000 - 360)), now).is_err());
        assert!(parse_start_time(Some(&ts(i64::MAX)), now).is_err());
        assert!(
            parse_start_time(
                Some(&prost_types::Timestamp {
                    seconds: 1_800_000_100,
                    nanos: -1
                }),
                now
            )
            .is_err()
        );
    }
}
