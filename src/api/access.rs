//! Loading a meeting together with what one user may do with it: the one
//! place the API turns rows into a `domain::meeting::Access`.

use crate::{
    domain::meeting::{Access, Relation},
    error::AppError,
    store::{Db, meetings, meetings::MeetingRecord},
};

/// A meeting as one user may act on it.
pub struct Loaded {
    pub record: MeetingRecord,
    pub access: Access,
}

pub fn meeting_not_found(id: &str) -> AppError {
    AppError::not_found("MEETING_NOT_FOUND", format!("no meeting with id {id}"))
}

/// PERMISSION_DENIED with reason REMOVED_BY_HOST.
pub fn removed_by_host() -> AppError {
    AppError::denied("REMOVED_BY_HOST", "the host removed you from this meeting")
}

/// The meeting `meeting_id` (already parsed) as `user_id` sees it.
pub async fn load(
    db: &Db,
    meeting_id: &str,
    user_id: &str,
    is_admin: bool,
) -> Result<Loaded, AppError> {
    let found = meetings::with_relation(db, meeting_id, user_id)
        .await?
        .ok_or_else(|| meeting_not_found(meeting_id))?;
    let access = Access {
        relation: Relation {
            is_host: found.meeting.host_id == user_id,
            is_admin,
            invite: found.invite(),
            attended: found.attended,
            removed: found.removed,
        },
        policy: found.meeting.join_policy(),
        status: found.meeting.status(),
    };
    Ok(Loaded {
        record: found.meeting,
        access,
    })
}

/// The meeting as `caller` sees it, refused with PERMISSION_DENIED unless
/// the caller is a member (host, invitee who did not decline, participant,
/// admin): what chat, files, calls and attendance ask of their readers.
pub async fn member(
    db: &Db,
    meeting_id: &str,
    caller: &crate::auth::Caller,
) -> Result<Loaded, AppError> {
    let loaded = load(db, meeting_id, &caller.user_id, caller.is_admin()).await?;
    if loaded.access.is_removed() {
        return Err(removed_by_host());
    }
    if !loaded.access.is_member() {
        return Err(AppError::permission_denied(
            "you are not a member of this meeting",
        ));
    }
    Ok(loaded)
}
