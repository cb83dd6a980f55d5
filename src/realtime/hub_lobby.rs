//! The waiting room (DESIGN §10), as the hub runs it.
//!
//! A waiter is a slot of the room marked `waiting`: it has a stream (it
//! was told `waiting`, and hears again when `host_present` changes), it
//! pings and may leave, and it hears nothing of the room. Hosts and
//! co-hosts get the whole waiting list (`lobby`) whenever it changes.
//!
//! Admission is two steps because the attendance row is the API's to
//! write: [`RoomHub::admit`] fires the waiter's admission (on whichever
//! node serves it, through the room's log in a cluster); the API, which
//! waits on it, records the attendance and then calls
//! [`RoomHub::let_in`], which makes the waiter a participant and sends it
//! `joined`. A denial closes the waiter's stream with `LOBBY_DENIED`.
//!
//! In a cluster the lobby is part of the room's roster in Redis (`w:`
//! entries), so a node that joins the room late sees who waits; records
//! say who started and stopped waiting, and carry admissions and denials
//! to the waiter's node.

use std::sync::Arc;

use prost::Message;
use tokio::sync::oneshot;

use super::{
    Arrival, Audience, CloseReason, HubError, Joiner, Outbox, RoomHub, RoomState, SessionStream,
    Slot,
    cluster::{self, Record},
    duration, lock, random_token,
    room_log::RosterOp,
};
use crate::{
    domain::time::{now_micros, to_timestamp},
    proto::pb::{self, server_event::Event},
};

/// Waiters a lobby holds at most: each change sends the whole list to
/// every host and co-host, so it must stay a list a person reads.
pub const MAX_LOBBY: usize = 100;
/// Devices one user may wait on at once.
pub const MAX_WAITS_PER_USER: usize = 3;

/// Why an admission or denial was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LobbyError {
    /// Nobody with that id waits in this meeting's lobby.
    NotWaiting,
    /// In a cluster: Redis cannot be asked now.
    Unavailable,
}

/// A waiter's stream and the admission it waits for.
pub struct Waiter {
    pub stream: SessionStream,
    /// Fires when a host or co-host admits it; dropped when it is gone.
    pub admission: oneshot::Receiver<()>,
    /// Whether a host or co-host was in the room when it arrived.
    pub host_present: bool,
    /// Hosts and co-hosts (users) in the room when it arrived.
    pub runners_present: Vec<String>,
}

impl RoomHub {
    /// Puts a joiner (whose participant id is `participant_id`, with no
    /// attendance row yet) in the lobby of `meeting`.
    pub fn wait(
        self: &Arc<Self>,
        meeting: &pb::Meeting,
        joiner: Joiner,
        participant_id: String,
    ) -> Result<Waiter, HubError> {
        let (session_id, rx, control, admission, host_present, runners_present) =
            self.enter_room(meeting, &joiner.user_id, |state| {
                let lobby = state.lobby();
                if lobby.len() >= MAX_LOBBY {
                    return Err(HubError::LobbyFull(
                        "the waiting room is full; try again later",
                    ));
                }
                if lobby.iter().filter(|p| p.user_id == joiner.user_id).count()
                    >= MAX_WAITS_PER_USER
                {
                    return Err(HubError::LobbyFull(
                        "you are already waiting in this meeting on other devices",
                    ));
                }
                let Arrival {
                    session_id,
                    tx,
                    rx,
                    control,
                    info,
                } = self.arrival(state, meeting, &joiner, &participant_id);
                let host_present = state.host_present();
                let runners_present = state
                    .participants()
                    .into_iter()
                    .filter(super::super::settings::runs)
                    .map(|p| p.user_id)
                    .collect();
                let waiting = pb::Waiting {
                    session_id: session_id.clone(),
                    participant_id: participant_id.clone(),
                    ping_interval: Some(duration(self.config.ping_interval)),
                    ping_timeout: Some(duration(self.config.ping_timeout)),
                    meeting: Some(meeting.clone()),
                    host_present,
                };
                let _ = tx.try_send(Arc::new(pb::ServerEvent {
                    sequence: 0,
                    event: Some(Event::Waiting(Box::new(waiting.clone()))),
                }));
                let (admit, admission) = oneshot::channel();
                let outbox = Outbox {
                    tx,
                    control: control.clone(),
                };
                // No resume token: a waiter that loses its stream waits again.
                let mut slot = Slot::new(info.clone(), String::new(), outbox, 0, self.limits());
                slot.waiting = Some(Box::new(waiting));
                slot.admission = Some(admit);
                state.slots.insert(participant_id.clone(), Box::new(slot));
                match &self.link {
                    None => state.tell_runners(),
                    Some(link) => {
                        let record = Record {
                            waiting: Some(info.clone()),
                            ..Default::default()
                        };
                        let op = RosterOp::Wait {
                            participant_id: participant_id.clone(),
                            participant: info.encode_to_vec(),
                            node: link.node().to_owned(),
                        };
                        link.append(&meeting.id, record, op);
                    }
                }
                Ok((
                    session_id,
                    rx,
                    control,
                    admission,
                    host_present,
                    runners_present,
                ))
            })?;
        // Publish reaches a waiter too (pings, leave).
        Ok(Waiter {
            stream: self.opened(
                &meeting.id,
                session_id,
                participant_id,
                joiner.user_id,
                rx,
                control,
            ),
            admission,
            host_present,
            runners_present,
        })
    }

    /// Host or co-host: lets `participant_id` in, wherever it waits.
    pub async fn admit(&self, meeting_id: &str, participant_id: &str) -> Result<(), LobbyError> {
        self.decide(meeting_id, participant_id, true).await
    }

    /// Host or co-host: turns `participant_id` away, wherever it waits.
    pub async fn deny(&self, meeting_id: &str, participant_id: &str) -> Result<(), LobbyError> {
        self.decide(meeting_id, participant_id, false).await
    }

    async fn decide(
        &self,
        meeting_id: &str,
        participant_id: &str,
        admit: bool,
    ) -> Result<(), LobbyError> {
        let Some(link) = &self.link else {
            let room = self.room(meeting_id).ok_or(LobbyError::NotWaiting)?;
            let mut state = lock(&room);
            let slot = state
                .slots
                .get_mut(participant_id)
                .filter(|slot| slot.waiting.is_some())
                .ok_or(LobbyError::NotWaiting)?;
            if admit {
                // A second admission while the first is under way is
                // the same admission.
                if let Some(admission) = slot.admission.take() {
                    let _ = admission.send(());
                }
                return Ok(());
            }
            drop(state);
            self.leave_lobby(meeting_id, participant_id, CloseReason::Denied);
            return Ok(());
        };
        let waiting = self
            .is_waiting(meeting_id, participant_id)
            .await
            .map_err(|()| LobbyError::Unavailable)?;
        if !waiting {
            return Err(LobbyError::NotWaiting);
        }
        let record = if admit {
            Record {
                admit: participant_id.to_owned(),
                ..Default::default()
            }
        } else {
            Record {
                deny: participant_id.to_owned(),
                ..Default::default()
            }
        };
        if link.append(meeting_id, record, RosterOp::None) {
            Ok(())
        } else {
            Err(LobbyError::Unavailable)
        }
    }

    /// Whether `participant_id` waits in the lobby of `meeting_id`, on any
    /// node; `Err` when Redis cannot say now.
    pub async fn is_waiting(&self, meeting_id: &str, participant_id: &str) -> Result<bool, ()> {
        Ok(self.waiter(meeting_id, participant_id).await?.is_some())
    }

    /// The user of `participant_id` if it waits in the lobby (found this
    /// way on another node: a waiter has no attendance row); `Err` when
    /// Redis cannot say now.
    pub async fn waiter_user(
        &self,
        meeting_id: &str,
        participant_id: &str,
    ) -> Result<Option<String>, ()> {
        Ok(self
            .waiter(meeting_id, participant_id)
            .await?
            .map(|p| p.user_id))
    }

    /// `participant_id` as it waits in the lobby of `meeting_id`, on any
    /// node: from this node's room when it is caught up, else (in a
    /// cluster) from the roster in Redis.
    async fn waiter(
        &self,
        meeting_id: &str,
        participant_id: &str,
    ) -> Result<Option<pb::Participant>, ()> {
        let known = self.room(meeting_id).and_then(|room| {
            let state = lock(&room);
            let synced = state.link.as_ref().is_none_or(|l| l.synced);
            synced.then(|| state.waiter(participant_id))
        });
        match (known, &self.link) {
            (Some(waiter), _) => Ok(waiter),
            (None, None) => Ok(None),
            (None, Some(link)) => Ok(link
                .snapshot(meeting_id)
                .await
                .map_err(|_| ())?
                .roster
                .get(participant_id)
                .filter(|member| member.waiting)
                .and_then(|member| pb::Participant::decode(member.participant.as_slice()).ok())),
        }
    }

    /// The API recorded the admitted waiter's attendance: it becomes a
    /// participant and gets `joined`. False if it is gone meanwhile (the
    /// caller closes the attendance again).
    pub fn let_in(self: &Arc<Self>, meeting_id: &str, participant_id: &str) -> bool {
        let Some(room) = self.room(meeting_id) else {
            return false;
        };
        let mut state = lock(&room);
        let last = state.last_seq();
        let Some(slot) = state
            .slots
            .get_mut(participant_id)
            .filter(|slot| slot.waiting.is_some() && slot.outbox.is_some())
        else {
            return false;
        };
        let Some(waiting) = slot.waiting.take() else {
            return false;
        };
        slot.joined_seq = last;
        slot.resume_token = random_token();
        slot.info.join_time = Some(to_timestamp(now_micros()));
        let info = slot.info.clone();
        let token = cluster::token_hash(&slot.resume_token);
        let overflowed = self.emit(
            meeting_id,
            &mut state,
            Audience::AllExcept(participant_id.to_owned()),
            Event::ParticipantJoined(Box::new(pb::ParticipantJoined {
                participant: Some(info.clone()),
            })),
            || RosterOp::Join {
                participant_id: participant_id.to_owned(),
                participant: info.encode_to_vec(),
                node: self
                    .link
                    .as_ref()
                    .map(|l| l.node().to_owned())
                    .unwrap_or_default(),
                token,
                seen: last,
            },
        );
        if self.link.is_none() {
            // One node: the lobby shrank now (in a cluster, when the join
            // comes back from the log).
            state.tell_runners();
        }
        // The meeting as it was when it began waiting, with the settings
        // the room has now.
        let mut meeting = waiting.meeting.unwrap_or_default();
        meeting.waiting_room = state.settings.waiting_room;
        meeting.locked = state.settings.locked;
        meeting.co_host_ids = state.settings.co_host_ids.clone();
        let last = state.last_seq();
        let slot = &state.slots[participant_id];
        let joined = self.joined(&state, &meeting, slot, &waiting.session_id, false, last);
        if let Some(outbox) = &slot.outbox {
            outbox.control.mark_sent(last);
            let _ = outbox.tx.try_send(Arc::new(joined));
        }
        self.send_lobby_to(&state, participant_id);
        self.handle_overflow(meeting_id, overflowed);
        true
    }

    /// Sends the waiting list to `participant_id` alone, if it runs the
    /// room and someone waits (after its `joined`).
    pub(super) fn send_lobby_to(&self, state: &RoomState, participant_id: &str) {
        let lobby = state.lobby();
        let Some(slot) = state.slots.get(participant_id) else {
            return;
        };
        if lobby.is_empty() || !super::super::settings::runs(&slot.info) {
            return;
        }
        if let Some(outbox) = &slot.outbox {
            let event = pb::ServerEvent {
                sequence: 0,
                event: Some(Event::Lobby(pb::Lobby {
                    participants: lobby,
                })),
            };
            let _ = outbox.tx.try_send(Arc::new(event));
        }
    }

    /// A waiter leaves the lobby without being let in (it left, lost its
    /// stream, was denied or removed, or the room closed): its stream ends
    /// for `close`, and hosts see the list without it.
    pub(super) fn leave_lobby(&self, meeting_id: &str, participant_id: &str, close: CloseReason) {
        let Some(room) = self.room(meeting_id) else {
            return;
        };
        let (session_id, empty) = {
            let mut state = lock(&room);
            if state
                .slots
                .get(participant_id)
                .is_none_or(|slot| slot.waiting.is_none())
            {
                return;
            }
            let Some(mut slot) = state.slots.remove(participant_id) else {
                return;
            };
            slot.close(close);
            match &self.link {
                None => state.tell_runners(),
                Some(link) => {
                    let record = Record {
                        unwaiting: participant_id.to_owned(),
                        ..Default::default()
                    };
                    let op = RosterOp::Leave {
                        participant_id: participant_id.to_owned(),
                        node: link.node().to_owned(),
                    };
                    link.append(meeting_id, record, op);
                }
            }
            (slot.session_id, state.slots.is_empty())
        };
        self.forget_sessions(meeting_id, std::slice::from_ref(&session_id));
        if empty {
            self.drop_if_empty(meeting_id);
        }
    }

    /// Applies a record's lobby parts on this node (in a cluster): who
    /// waits, and the admissions and denials of this node's waiters.
    pub(super) fn apply_lobby(&self, state: &mut RoomState, record: &Record) -> LobbyFollowups {
        let mut followups = LobbyFollowups::default();
        // Another node took a waiter of this one out (it took this node for
        // dead): say again who waits here.
        if !record.unwaiting.is_empty()
            && record.origin != self.link.as_ref().map_or("", |l| l.node())
            && state
                .slots
                .get(&record.unwaiting)
                .is_some_and(|slot| slot.waiting.is_some())
        {
            followups.repair = true;
        }
        let Some(link) = state.link.as_mut() else {
            return followups;
        };
        let mut changed = false;
        if let Some(waiter) = &record.waiting {
            link.lobby
                .insert(waiter.participant_id.clone(), waiter.clone());
            changed = true;
        }
        if !record.unwaiting.is_empty() {
            changed |= link.lobby.remove(&record.unwaiting).is_some();
        }
        if changed {
            state.tell_runners();
        }
        if !record.admit.is_empty()
            && let Some(slot) = state.slots.get_mut(&record.admit)
            && slot.waiting.is_some()
            && let Some(admission) = slot.admission.take()
        {
            let _ = admission.send(());
        }
        if !record.deny.is_empty()
            && state
                .slots
                .get(&record.deny)
                .is_some_and(|slot| slot.waiting.is_some())
        {
            followups.denied.push(record.deny.clone());
        }
        followups
    }
}

/// What applying a record's lobby parts leaves to do once the room's lock
/// is released.
#[derive(Debug, Default)]
pub(super) struct LobbyFollowups {
    /// Waiters here to turn away.
    pub denied: Vec<String>,
    /// This node's waiters must be announced again.
    pub repair: bool,
}
