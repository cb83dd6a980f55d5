//! A room's settings (DESIGN §10): who hosts and co-hosts it, so what role
//! each participant has, and whether it holds joins in a waiting room.
//!
//! The room keeps the latest it heard, from a join's meeting or from an
//! UpdateMeeting (`meeting_updated`); a meeting read before a change that
//! arrives after it (an older `update_time`) is not taken.

use crate::proto::pb;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub host_id: String,
    pub co_host_ids: Vec<String>,
    pub waiting_room: bool,
    pub locked: bool,
    /// The meeting's update_time (seconds, nanos) these come from.
    updated: (i64, i32),
}

impl Settings {
    /// Takes `meeting`'s settings unless what is kept is newer; true when
    /// the roles may have changed.
    pub fn adopt(&mut self, meeting: &pb::Meeting) -> bool {
        let updated = meeting
            .update_time
            .as_ref()
            .map_or((0, 0), |t| (t.seconds, t.nanos));
        if updated < self.updated {
            return false;
        }
        let roles_change =
            self.host_id != meeting.host_id || self.co_host_ids != meeting.co_host_ids;
        self.host_id = meeting.host_id.clone();
        self.co_host_ids = meeting.co_host_ids.clone();
        self.waiting_room = meeting.waiting_room;
        self.locked = meeting.locked;
        self.updated = updated;
        roles_change
    }

    pub fn role(&self, user_id: &str) -> pb::ParticipantRole {
        if user_id == self.host_id {
            pb::ParticipantRole::Host
        } else if self.co_host_ids.iter().any(|id| id == user_id) {
            pb::ParticipantRole::CoHost
        } else {
            pb::ParticipantRole::Attendee
        }
    }
}

/// Whether a participant runs the room (host or co-host).
pub fn runs(participant: &pb::Participant) -> bool {
    matches!(
        participant.role(),
        pb::ParticipantRole::Host | pb::ParticipantRole::CoHost
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting(seconds: i64, co_hosts: &[&str]) -> pb::Meeting {
        pb::Meeting {
            host_id: "h".into(),
            co_host_ids: co_hosts.iter().map(|s| s.to_string()).collect(),
            update_time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn roles_follow_the_newest_settings() {
        let mut s = Settings::default();
        assert!(s.adopt(&meeting(10, &["c"])));
        assert_eq!(s.role("h"), pb::ParticipantRole::Host);
        assert_eq!(s.role("c"), pb::ParticipantRole::CoHost);
        assert_eq!(s.role("x"), pb::ParticipantRole::Attendee);
        assert!(!s.adopt(&meeting(5, &[])), "an older read is not taken");
        assert_eq!(s.role("c"), pb::ParticipantRole::CoHost);
        assert!(!s.adopt(&meeting(10, &["c"])), "same roles");
        assert!(s.adopt(&meeting(11, &[])));
        assert_eq!(s.role("c"), pb::ParticipantRole::Attendee);
    }
}
