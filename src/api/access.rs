//! Loading a meeting together with what one user may do with it: the one
//! place the API turns rows into a `domain::meeting::Access`, and the
//! guards that re-make that decision for open streams (DESIGN §8).

use std::sync::Arc;

use crate::{
    auth::meeting_view::{Found, MeetingView},
    domain::meeting::{Access, Relation},
    error::AppError,
    realtime::{
        bus::Topic,
        live::{Check, Guard},
    },
    store::meetings::MeetingRecord,
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

/// The meeting `meeting_id` (already parsed) as `user_id` sees it, from
/// the in-memory view.
pub async fn load(
    view: &MeetingView,
    meeting_id: &str,
    user_id: &str,
    is_admin: bool,
) -> Result<Loaded, AppError> {
    let found = view
        .relation(meeting_id, user_id)
        .await?
        .ok_or_else(|| meeting_not_found(meeting_id))?;
    Ok(loaded(&found, user_id, is_admin))
}

/// The same from the database, kept nowhere: for stream re-checks (they
/// run because something changed) and for users other than the caller (a
/// callee, a recipient: a caller must not fill memory with entries for
/// whomever they name).
pub async fn load_fresh(
    view: &MeetingView,
    meeting_id: &str,
    user_id: &str,
    is_admin: bool,
) -> Result<Loaded, AppError> {
    let found = view
        .fresh(meeting_id, user_id)
        .await?
        .ok_or_else(|| meeting_not_found(meeting_id))?;
    Ok(loaded(&found, user_id, is_admin))
}

fn loaded(found: &Found, user_id: &str, is_admin: bool) -> Loaded {
    let access = Access {
        relation: Relation {
            is_host: found.meeting.host_id == user_id,
            is_co_host: found.meeting.is_co_host(user_id),
            is_admin,
            invite: found.invite,
            attended: found.attended,
            removed: found.removed,
        },
        policy: found.meeting.join_policy(),
        status: found.meeting.status(),
    };
    Loaded {
        record: MeetingRecord::clone(&found.meeting),
        access,
    }
}

/// The meeting as `caller` sees it, refused with PERMISSION_DENIED unless
/// the caller is a member (host, invitee who did not decline, participant,
/// admin): what chat, files, calls and attendance ask of their readers.
pub async fn member(
    view: &MeetingView,
    meeting_id: &str,
    caller: &crate::auth::Caller,
) -> Result<Loaded, AppError> {
    membership(load(view, meeting_id, &caller.user_id, caller.is_admin()).await?)
}

fn membership(loaded: Loaded) -> Result<Loaded, AppError> {
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

/// What a place in a room needs: membership, or an open link (a link
/// holder may be waiting in the lobby, not yet a member).
pub fn in_room(loaded: Loaded) -> Result<Loaded, AppError> {
    if loaded.access.policy == crate::domain::meeting::JoinPolicy::AnyoneWithLink
        && !loaded.access.is_removed()
    {
        return Ok(loaded);
    }
    membership(loaded)
}

/// What a long-lived stream holds, and must go on holding (DESIGN §8).
#[derive(Clone, Copy)]
pub enum Holds<'a> {
    /// A session in good standing (notification watches).
    Session,
    /// Membership of a meeting; with `live`, the error to end with once
    /// the meeting is over (rooms, uploads).
    Member {
        meeting_id: &'a str,
        live: Option<fn() -> AppError>,
    },
    /// A place in a meeting's room. Not under the meeting's topic: the hub
    /// itself closes rooms when a meeting ends and kicks removed users, in
    /// its own words.
    Room { meeting_id: &'a str },
}

/// A guard for a stream `caller` opened: it watches the caller's session
/// and user (and the meeting), and on each change re-checks what a new
/// call would check, ending the stream with that call's status.
pub fn guard(
    state: &crate::state::AppState,
    caller: &crate::auth::Caller,
    holds: Holds<'_>,
) -> Guard {
    let (topics, check) = check(state, caller, holds);
    Guard::new(state.bus.as_ref(), topics, check)
}

/// The topics a stream `caller` opened holds access under, and its
/// re-check: what a new call would check.
pub fn check(
    state: &crate::state::AppState,
    caller: &crate::auth::Caller,
    holds: Holds<'_>,
) -> (Vec<Topic>, Check) {
    let mut topics = vec![
        Topic::Session(caller.session_id.clone()),
        Topic::User(caller.user_id.clone()),
    ];
    let (meeting_id, live) = match holds {
        Holds::Session => (None, None),
        Holds::Member { meeting_id, live } => {
            topics.push(Topic::Meeting(meeting_id.to_owned()));
            (Some(meeting_id.to_owned()), live)
        }
        Holds::Room { meeting_id } => {
            // In a cluster the meeting may end on another node, whose hub
            // cannot close this node's room: the room's streams then
            // watch the meeting too, and a check that finds it over has
            // this node's hub close the room in its own words.
            if state.config.redis_url.is_some() {
                topics.push(Topic::Meeting(meeting_id.to_owned()));
            }
            (Some(meeting_id.to_owned()), None)
        }
    };
    let closes_room = matches!(holds, Holds::Room { .. }).then(|| state.hub.clone());
    let accounts = state.accounts.clone();
    let view = state.meeting_view.clone();
    let caller = caller.clone();
    let check: Check = Arc::new(move || {
        let (accounts, view, caller, meeting_id, closes_room) = (
            accounts.clone(),
            view.clone(),
            caller.clone(),
            meeting_id.clone(),
            closes_room.clone(),
        );
        Box::pin(async move {
            let caller = accounts.recheck(&caller).await?;
            if let Some(meeting_id) = meeting_id {
                let loaded =
                    load_fresh(&view, &meeting_id, &caller.user_id, caller.is_admin()).await?;
                let loaded = if closes_room.is_some() {
                    // A room holds who may join it: also a link holder
                    // waiting in the lobby, not yet a member. A removal
                    // ends a room stream as the hub's kick does (KICKED),
                    // whichever of the two reaches it first.
                    if loaded.access.is_removed() {
                        return Err(AppError::denied(
                            "KICKED",
                            "the host removed you from this meeting",
                        )
                        .into());
                    }
                    in_room(loaded)?
                } else {
                    membership(loaded)?
                };
                let status = loaded.access.status;
                if let Some(ended) = live
                    && status.is_over()
                {
                    return Err(ended().into());
                }
                if let Some(hub) = closes_room
                    && status.is_over()
                {
                    hub.close_room(&meeting_id, crate::wire::meeting_status(status));
                }
            }
            Ok(())
        })
    });
    (topics, check)
}
