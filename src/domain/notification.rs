//! Notification kinds and the texts the server writes for its own events.

use super::time::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    MeetingInvite,
    MeetingReminder,
    MeetingStarted,
    MeetingCancelled,
    InviteResponse,
    IncomingCall,
    General,
    LobbyWaiting,
}

impl NotificationKind {
    pub const ALL: [Self; 8] = [
        Self::MeetingInvite,
        Self::MeetingReminder,
        Self::MeetingStarted,
        Self::MeetingCancelled,
        Self::InviteResponse,
        Self::IncomingCall,
        Self::General,
        Self::LobbyWaiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MeetingInvite => "meeting_invite",
            Self::MeetingReminder => "meeting_reminder",
            Self::MeetingStarted => "meeting_started",
            Self::MeetingCancelled => "meeting_cancelled",
            Self::InviteResponse => "invite_response",
            Self::IncomingCall => "incoming_call",
            Self::General => "general",
            Self::LobbyWaiting => "lobby_waiting",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == value)
    }
}

/// A notification to write, before it has a recipient and an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    pub meeting_id: Option<String>,
    /// Also send it by email (over SMTP, or to the log without it).
    pub mail: bool,
    /// Also push it to the recipient's phones (DESIGN §12): incoming calls,
    /// meeting starts and reminders.
    pub push: bool,
    /// The call an incoming-call push is about.
    pub call_id: Option<String>,
}

impl Draft {
    /// The call a push is about.
    pub fn for_call(mut self, call_id: &str) -> Self {
        self.call_id = Some(call_id.to_owned());
        self
    }

    /// Invitations, cancellations and reminders also go out by email; other
    /// kinds stay in the inbox.
    pub fn mailed(mut self) -> Self {
        self.mail = matches!(
            self.kind,
            NotificationKind::MeetingInvite
                | NotificationKind::MeetingCancelled
                | NotificationKind::MeetingReminder
        );
        self
    }

    pub fn invite(meeting_id: &str, meeting_title: &str, host_name: &str) -> Self {
        Self {
            kind: NotificationKind::MeetingInvite,
            title: format!("Invitation: {meeting_title}"),
            body: format!("{host_name} invited you to \"{meeting_title}\"."),
            meeting_id: Some(meeting_id.to_owned()),
            mail: false,
            push: false,
            call_id: None,
        }
    }

    pub fn started(meeting_id: &str, meeting_title: &str) -> Self {
        Self {
            kind: NotificationKind::MeetingStarted,
            title: format!("Started: {meeting_title}"),
            body: format!("\"{meeting_title}\" has started. Join now."),
            meeting_id: Some(meeting_id.to_owned()),
            mail: false,
            push: true,
            call_id: None,
        }
    }

    pub fn cancelled(meeting_id: &str, meeting_title: &str) -> Self {
        Self {
            kind: NotificationKind::MeetingCancelled,
            title: format!("Cancelled: {meeting_title}"),
            body: format!("\"{meeting_title}\" has been cancelled."),
            meeting_id: Some(meeting_id.to_owned()),
            mail: false,
            push: false,
            call_id: None,
        }
    }

    pub fn invite_response(
        meeting_id: &str,
        meeting_title: &str,
        who: &str,
        accepted: bool,
    ) -> Self {
        let answer = if accepted { "accepted" } else { "declined" };
        Self {
            kind: NotificationKind::InviteResponse,
            title: format!("{who} {answer}: {meeting_title}"),
            body: format!("{who} {answer} your invitation to \"{meeting_title}\"."),
            meeting_id: Some(meeting_id.to_owned()),
            mail: false,
            push: false,
            call_id: None,
        }
    }

    pub fn incoming_call(meeting_id: &str, meeting_title: &str, caller_name: &str) -> Self {
        Self {
            kind: NotificationKind::IncomingCall,
            title: format!("{caller_name} is calling"),
            body: format!("{caller_name} is calling you in \"{meeting_title}\"."),
            meeting_id: Some(meeting_id.to_owned()),
            mail: false,
            push: true,
            call_id: None,
        }
    }

    pub fn lobby_waiting(meeting_id: &str, meeting_title: &str, waiter_name: &str) -> Self {
        Self {
            kind: NotificationKind::LobbyWaiting,
            title: format!("{waiter_name} is waiting to join"),
            body: format!(
                "{waiter_name} is waiting in the lobby of \"{meeting_title}\"; join the meeting to let them in."
            ),
            meeting_id: Some(meeting_id.to_owned()),
            mail: false,
            push: false,
            call_id: None,
        }
    }

    pub fn reminder(meeting_id: &str, meeting_title: &str, minutes_left: i64) -> Self {
        Self {
            kind: NotificationKind::MeetingReminder,
            title: format!("Soon: {meeting_title}"),
            body: format!("\"{meeting_title}\" starts in {minutes_left} minute(s)."),
            meeting_id: Some(meeting_id.to_owned()),
            mail: false,
            push: true,
            call_id: None,
        }
    }
}

/// The key that tells `recipient` once per ten minutes that `waiter`
/// waits in a meeting's lobby: a waiter who rejoins again and again does
/// not flood the host's inbox.
pub fn lobby_key(meeting_id: &str, waiter: &str, recipient: &str, now: Micros) -> String {
    let window = now / (10 * 60 * 1_000_000);
    format!("lobby:{meeting_id}:{waiter}:{recipient}:{window}")
}

/// The key that makes a reminder happen once per meeting, user and start
/// time: a rescheduled meeting gets a new reminder, a repeated sweep none.
pub fn reminder_key(meeting_id: &str, user_id: &str, start_at: Micros) -> String {
    format!("reminder:{meeting_id}:{user_id}:{start_at}")
}

/// The key that makes an email reminder to an address without an account
/// happen once per meeting, whatever the start time: rescheduling must not
/// be a way to mail strangers again and again.
pub fn email_reminder_key(meeting_id: &str, address: &str) -> String {
    format!("reminder:{meeting_id}:email:{}", address.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in NotificationKind::ALL {
            assert_eq!(NotificationKind::from_db(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn reminder_keys_change_with_the_start_time() {
        assert_ne!(reminder_key("m", "u", 1), reminder_key("m", "u", 2));
        assert_eq!(reminder_key("m", "u", 1), reminder_key("m", "u", 1));
    }
}
