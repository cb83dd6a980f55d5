//! The hub's rooms when several nodes share them (DESIGN §9).
//!
//! On one node a room numbers its own events. In a cluster the room's log
//! in Redis does ([`Link`]): the hub *emits* into the log, and *applies*
//! what comes back on the room's channel, its own events included, in the
//! log's order. A node applies records only once it knows where it stands:
//! its first join waits for the room's snapshot (number and roster, read
//! after subscribing), and a gap in the numbers, or a subscription made
//! again, holds deliveries back while the missed records are read from the
//! log. What came meanwhile waits in `pending`.

use std::{sync::Arc, time::Duration};

use prost::Message;

use super::{
    Audience, Event, Link, Record, Replay, Room, RoomHub, RoomSink, RoomState, RosterOp, lock,
    room_log,
};
use crate::proto::pb;

/// What catching up read from the log.
enum Fetched {
    /// The records after where the room stands.
    Records(Vec<(u64, Vec<u8>)>),
    /// Where the log stands, and who is in the room.
    Snapshot(room_log::Snapshot),
}

impl RoomHub {
    /// A new room of this node (in a cluster, subscribed to its channel
    /// and catching up with its log).
    pub(super) fn new_room(&self, meeting_id: &str) -> Arc<Room> {
        let mut state = RoomState::new(self.config.replay_capacity);
        let Some(link) = &self.link else {
            return Arc::new(std::sync::Mutex::new(state));
        };
        let mut shared = link.room(meeting_id);
        shared.syncing = true;
        state.link = Some(shared);
        let room = Arc::new(std::sync::Mutex::new(state));
        self.spawn_sync(meeting_id, &room);
        room
    }

    /// Sends `event` to `to`: at once on one node; in a cluster into the
    /// room's log (with `op` on its roster), to be delivered when it comes
    /// back. Callers hold the room's lock, so a room's events leave in
    /// the order they happened.
    pub(super) fn emit(
        &self,
        meeting_id: &str,
        state: &mut RoomState,
        to: Audience,
        event: Event,
        op: impl FnOnce() -> RosterOp,
    ) -> Vec<super::Overflowed> {
        match &self.link {
            None => state.publish(to, event),
            Some(link) => {
                link.append(meeting_id, &Record::event(&to, event), op());
                Vec::new()
            }
        }
    }

    fn spawn_sync(&self, meeting_id: &str, room: &Arc<Room>) {
        let (hub, room, meeting_id) = (
            self.this.clone(),
            Arc::downgrade(room),
            meeting_id.to_owned(),
        );
        tokio::spawn(async move { catch_up(hub, room, meeting_id).await });
    }

    /// Holds `room`'s deliveries back and reads what it missed, unless
    /// that is already under way.
    fn resync(&self, meeting_id: &str, room: &Arc<Room>, state: &mut RoomState) {
        let Some(link) = state.link.as_mut() else {
            return;
        };
        link.set_ready(false);
        if !link.syncing {
            link.syncing = true;
            self.spawn_sync(meeting_id, room);
        }
    }

    /// Applies record `seq` (the next one) to the room; returns the local
    /// participants a removal takes out (after the lock is released).
    fn apply(
        &self,
        meeting_id: &str,
        state: &mut RoomState,
        seq: u64,
        bytes: &[u8],
    ) -> Vec<String> {
        let Ok(record) = Record::decode(bytes) else {
            tracing::warn!(meeting_id, seq, "room log: unreadable record skipped");
            state.skip(seq);
            return Vec::new();
        };
        let mut removed = Vec::new();
        if !record.removed_user.is_empty() {
            removed = state
                .slots
                .iter()
                .filter(|(_, slot)| slot.user_id == record.removed_user)
                .map(|(id, _)| id.clone())
                .collect();
            state.removed_users.insert(record.removed_user.clone());
        }
        let to = record.audience();
        match record.event.and_then(|e| e.event) {
            Some(event) => {
                if let Some(link) = state.link.as_mut() {
                    link.note(&event);
                }
                let overflowed = state.deliver(seq, to, event);
                self.handle_overflow(meeting_id, overflowed);
            }
            None => state.skip(seq),
        }
        removed
    }

    fn kick_local(&self, meeting_id: &str, participants: Vec<String>) {
        for participant_id in participants {
            self.remove(
                meeting_id,
                &participant_id,
                super::CloseReason::Kicked,
                pb::ParticipantLeftReason::Kicked,
            );
        }
    }

    /// Applies what catching up read, then what waited meanwhile; true
    /// when the room is caught up (or gone), false when more must be read.
    fn caught_up(&self, meeting_id: &str, room: &Arc<Room>, fetched: Fetched) -> bool {
        let mut removed = Vec::new();
        let done = {
            let mut state = lock(room);
            if state.closed.is_some() || state.link.is_none() {
                return true;
            }
            match fetched {
                Fetched::Snapshot(snapshot) => {
                    let link = state.link.as_mut().expect("checked above");
                    let known = link.known;
                    link.adopt(&snapshot);
                    link.known = true;
                    if known {
                        // It missed more than the log keeps.
                        tracing::warn!(meeting_id, "room log: fell behind; participants resume");
                        let detached = state.fell_behind();
                        self.handle_overflow(meeting_id, detached);
                    }
                    state.skip(snapshot.seq);
                }
                Fetched::Records(records) => {
                    for (seq, bytes) in records {
                        if seq == state.last_seq() + 1 {
                            removed.extend(self.apply(meeting_id, &mut state, seq, &bytes));
                        }
                    }
                }
            }
            loop {
                let last = state.last_seq();
                let link = state.link.as_mut().expect("checked above");
                let Some(entry) = link.pending.first_entry() else {
                    break;
                };
                if *entry.key() <= last {
                    entry.remove();
                } else if *entry.key() == last + 1 {
                    let bytes = entry.remove();
                    removed.extend(self.apply(meeting_id, &mut state, last + 1, &bytes));
                } else {
                    break;
                }
            }
            let link = state.link.as_mut().expect("checked above");
            let done = link.pending.is_empty();
            if done {
                link.syncing = false;
                link.set_ready(true);
            }
            done
        };
        self.kick_local(meeting_id, removed);
        done
    }
}

/// Reads what `room` missed until it is caught up, or gone.
async fn catch_up(hub: std::sync::Weak<RoomHub>, room: std::sync::Weak<Room>, meeting_id: String) {
    let mut attempt = 0u32;
    loop {
        let (Some(hub), Some(room)) = (hub.upgrade(), room.upgrade()) else {
            return;
        };
        let Some(link) = hub.link.clone() else { return };
        let (known, last) = {
            let state = lock(&room);
            match (&state.closed, &state.link) {
                (None, Some(shared)) => (shared.known, state.last_seq()),
                _ => return,
            }
        };
        match fetch(&link, &meeting_id, known, last).await {
            Ok(fetched) => {
                attempt = 0;
                if hub.caught_up(&meeting_id, &room, fetched) {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(%meeting_id, error = %err, "room log: cannot catch up yet");
                drop((hub, room));
                let wait = Duration::from_millis(50 << attempt.min(4)).min(Duration::from_secs(1));
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One read of what a room at `last` missed: the records after it, or a
/// snapshot (a room new here, or one that missed more than the log keeps).
async fn fetch(link: &Link, room: &str, known: bool, last: u64) -> redis::RedisResult<Fetched> {
    // Subscribed first: nothing published after the read is missed.
    if !link.bus().room_live(room).await {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "the room's channel is not subscribed yet",
        )));
    }
    if known {
        if let Replay::Events(records) = link.since(room, last).await? {
            if !records.is_empty() || link.snapshot(room).await?.seq >= last {
                return Ok(Fetched::Records(records));
            }
        }
    }
    let snapshot = link.snapshot(room).await?;
    if known && snapshot.seq < last {
        // Redis lost the room (restarted empty): numbers go on from here.
        link.advance(room, last).await?;
        return Ok(Fetched::Records(Vec::new()));
    }
    Ok(Fetched::Snapshot(snapshot))
}

impl RoomSink for RoomHub {
    fn published(&self, meeting_id: &str, payload: &[u8]) {
        let Some((seq, bytes)) = room_log::parse_published(payload) else {
            return;
        };
        let Some(room) = self.room(meeting_id) else {
            return;
        };
        let removed = {
            let mut state = lock(&room);
            let last = state.last_seq();
            if state.closed.is_some() || seq <= last {
                return;
            }
            let Some(link) = state.link.as_mut() else {
                return;
            };
            if link.synced && seq == last + 1 {
                self.apply(meeting_id, &mut state, seq, bytes)
            } else {
                if link.pending.len() < super::cluster::PENDING_MAX {
                    link.pending.insert(seq, bytes.to_vec());
                }
                // A gap: what is missing is read from the log.
                if link.synced {
                    self.resync(meeting_id, &room, &mut state);
                }
                return;
            }
        };
        self.kick_local(meeting_id, removed);
    }

    fn resubscribed(&self) {
        let rooms: Vec<(String, Arc<Room>)> = lock(&self.rooms)
            .iter()
            .map(|(id, room)| (id.clone(), room.clone()))
            .collect();
        for (meeting_id, room) in rooms {
            let mut state = lock(&room);
            if state.closed.is_none() {
                self.resync(&meeting_id, &room, &mut state);
            }
        }
    }
}
