//! Protobuf conversion in one place: store records, tokens and domain
//! values to the messages of `proto/unio/v1`. Everything that speaks the
//! wire (the API, the room hub, jobs that publish notifications) converts
//! here, so no module below `api` needs to import `api`.

use crate::{
    auth::accounts::Tokens,
    domain::{
        AuthProvider, Role,
        call::CallStatus,
        meeting::{InviteStatus, JoinPolicy, MeetingStatus},
        notification::NotificationKind,
        time::to_timestamp,
    },
    proto::pb,
    store::{
        calls::CallRecord, chat::MessageRecord, files::FileRecord, invites::InviteRecord,
        meetings::MeetingRecord, notifications::NotificationRecord,
        participants::ParticipantRecord, users::UserRecord,
    },
};

/// How much of a user the reader may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserView {
    /// The user themself, or an admin.
    Full,
    /// Anyone else: no email address.
    Public,
}

pub fn user(record: &UserRecord, view: UserView) -> pb::User {
    pb::User {
        id: record.id.clone(),
        email: match view {
            UserView::Full => record.email.clone(),
            UserView::Public => String::new(),
        },
        display_name: record.display_name.clone(),
        role: role(record.role()) as i32,
        auth_provider: provider(record.auth_provider()) as i32,
        has_avatar: record.avatar_key.is_some(),
        is_active: record.is_active,
        create_time: Some(to_timestamp(record.created_at)),
        update_time: Some(to_timestamp(record.updated_at)),
        email_verified: view == UserView::Full && record.email_verified,
    }
}

pub fn role(role: Role) -> pb::Role {
    match role {
        Role::User => pb::Role::User,
        Role::Admin => pb::Role::Admin,
    }
}

fn provider(provider: AuthProvider) -> pb::AuthProvider {
    match provider {
        AuthProvider::Password => pb::AuthProvider::Password,
        AuthProvider::Google => pb::AuthProvider::Google,
        AuthProvider::Microsoft => pb::AuthProvider::Microsoft,
    }
}

pub fn token_pair(tokens: Tokens) -> pb::TokenPair {
    pb::TokenPair {
        access_token: tokens.access.token,
        refresh_token: tokens.refresh,
        token_type: "Bearer".to_owned(),
        access_token_expire_time: Some(to_timestamp(tokens.access.expires_at)),
        refresh_token_expire_time: Some(to_timestamp(tokens.refresh_expires_at)),
    }
}

pub fn auth_response(record: &UserRecord, tokens: Tokens) -> pb::AuthResponse {
    pb::AuthResponse {
        user: Some(user(record, UserView::Full)),
        tokens: Some(token_pair(tokens)),
    }
}

pub fn meeting(record: &MeetingRecord, public_url: &str) -> pb::Meeting {
    pb::Meeting {
        id: record.id.clone(),
        title: record.title.clone(),
        description: record.description.clone(),
        host_id: record.host_id.clone(),
        start_time: Some(to_timestamp(record.start_at)),
        duration_minutes: record.duration_minutes,
        status: meeting_status(record.status()) as i32,
        join_policy: match record.join_policy() {
            JoinPolicy::InvitedOnly => pb::JoinPolicy::InvitedOnly,
            JoinPolicy::AnyoneWithLink => pb::JoinPolicy::AnyoneWithLink,
        } as i32,
        join_url: format!("{public_url}/m/{}", record.id),
        actual_start_time: record.actual_start_at.map(to_timestamp),
        actual_end_time: record.actual_end_at.map(to_timestamp),
        create_time: Some(to_timestamp(record.created_at)),
        update_time: Some(to_timestamp(record.updated_at)),
        revision: record.revision,
        waiting_room: record.waiting_room,
        locked: record.locked,
        co_host_ids: record.co_hosts().map(str::to_owned).collect(),
        series_id: record.series_id.clone().unwrap_or_default(),
        recurrence: record.recurrence.clone(),
        time_zone: record.time_zone.clone(),
    }
}

pub fn meeting_status(status: MeetingStatus) -> pb::MeetingStatus {
    match status {
        MeetingStatus::Scheduled => pb::MeetingStatus::Scheduled,
        MeetingStatus::Ongoing => pb::MeetingStatus::Ongoing,
        MeetingStatus::Completed => pb::MeetingStatus::Completed,
        MeetingStatus::Cancelled => pb::MeetingStatus::Cancelled,
    }
}

pub fn invite(record: &InviteRecord) -> pb::Invite {
    pb::Invite {
        id: record.id.clone(),
        meeting_id: record.meeting_id.clone(),
        email: record.email.clone(),
        user_id: record.user_id.clone().unwrap_or_default(),
        status: match record.status() {
            InviteStatus::Pending => pb::InviteStatus::Pending,
            InviteStatus::Accepted => pb::InviteStatus::Accepted,
            InviteStatus::Declined => pb::InviteStatus::Declined,
        } as i32,
        create_time: Some(to_timestamp(record.created_at)),
        respond_time: record.responded_at.map(to_timestamp),
    }
}

pub fn participant(record: &ParticipantRecord) -> pb::MeetingParticipant {
    pb::MeetingParticipant {
        user_id: record.user_id.clone(),
        display_name: record.display_name.clone(),
        join_time: Some(to_timestamp(record.joined_at)),
        leave_time: record.left_at.map(to_timestamp),
        online: record.left_at.is_none(),
    }
}

pub fn call(record: &CallRecord) -> pb::CallSession {
    pb::CallSession {
        id: record.id.clone(),
        meeting_id: record.meeting_id.clone(),
        caller_id: record.caller_id.clone(),
        callee_id: record.callee_id.clone().unwrap_or_default(),
        status: match record.status() {
            CallStatus::Ringing => pb::CallStatus::Ringing,
            CallStatus::Active => pb::CallStatus::Active,
            CallStatus::Ended => pb::CallStatus::Ended,
            CallStatus::Declined => pb::CallStatus::Declined,
            CallStatus::Missed => pb::CallStatus::Missed,
        } as i32,
        start_time: Some(to_timestamp(record.started_at)),
        answer_time: record.answered_at.map(to_timestamp),
        end_time: record.ended_at.map(to_timestamp),
        duration_seconds: record.duration_seconds,
    }
}

pub fn notification(record: &NotificationRecord) -> pb::Notification {
    pb::Notification {
        id: record.id.clone(),
        user_id: record.user_id.clone(),
        r#type: notification_type(record.kind()) as i32,
        title: record.title.clone(),
        body: record.body.clone(),
        meeting_id: record.meeting_id.clone().unwrap_or_default(),
        read: record.read_at.is_some(),
        create_time: Some(to_timestamp(record.created_at)),
    }
}

pub fn notification_type(kind: NotificationKind) -> pb::NotificationType {
    match kind {
        NotificationKind::MeetingInvite => pb::NotificationType::MeetingInvite,
        NotificationKind::MeetingReminder => pb::NotificationType::MeetingReminder,
        NotificationKind::MeetingStarted => pb::NotificationType::MeetingStarted,
        NotificationKind::MeetingCancelled => pb::NotificationType::MeetingCancelled,
        NotificationKind::InviteResponse => pb::NotificationType::InviteResponse,
        NotificationKind::IncomingCall => pb::NotificationType::IncomingCall,
        NotificationKind::LobbyWaiting => pb::NotificationType::LobbyWaiting,
        NotificationKind::General => pb::NotificationType::General,
    }
}

pub fn shared_file(file: &FileRecord) -> pb::SharedFile {
    pb::SharedFile {
        id: file.id.clone(),
        meeting_id: file.meeting_id.clone(),
        uploader_id: file.uploader_id.clone(),
        filename: file.filename.clone(),
        content_type: file.content_type.clone(),
        size_bytes: file.size_bytes,
        sha256: file.sha256.clone(),
        create_time: Some(to_timestamp(file.created_at)),
    }
}

pub fn chat_message(record: &MessageRecord) -> pb::ChatMessage {
    pb::ChatMessage {
        id: record.id.clone(),
        meeting_id: record.meeting_id.clone(),
        sender_id: record.sender_id.clone().unwrap_or_default(),
        sender_display_name: record.sender_display_name.clone(),
        text: record.text.clone(),
        sequence: record.sequence,
        client_message_id: record.client_message_id.clone().unwrap_or_default(),
        create_time: Some(to_timestamp(record.created_at)),
        attachment: None,
    }
}
