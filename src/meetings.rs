//! The meetings service: what a change to a meeting sets in motion, in one
//! place, shaped like `auth::Accounts`. A status change commits with its
//! notifications, then delivers them live and tells the room; a deletion
//! takes the meeting's file bytes and live room with it. `MeetingApi` and
//! `CallApi` (a host's call starts the meeting) both go through here, and
//! webhooks will hang off the same methods.

use std::sync::Arc;

use crate::{
    blob::BlobStore,
    domain::{meeting::MeetingStatus, notification::Draft, time::now_micros},
    error::AppError,
    proto::pb,
    realtime::{
        RoomHub,
        bus::{Bus, BusEvent, Topic},
        inbox::Inbox,
    },
    store::{Db, files, meetings, meetings::MeetingRecord},
    wire,
};

#[derive(Clone)]
pub struct Meetings {
    db: Db,
    hub: Arc<RoomHub>,
    inbox: Arc<Inbox>,
    blobs: BlobStore,
    bus: Arc<dyn Bus>,
}

impl Meetings {
    pub fn new(
        db: Db,
        hub: Arc<RoomHub>,
        inbox: Arc<Inbox>,
        blobs: BlobStore,
        bus: Arc<dyn Bus>,
    ) -> Self {
        Self {
            db,
            hub,
            inbox,
            bus,
            blobs,
        }
    }

    /// Moves `record` from `from` to `to` if it is still `from`: the
    /// members are notified (a cancellation also by email) in the same
    /// transaction, then live, and the room hears the new status (a meeting
    /// that is over closes its room). `None` when someone changed it first.
    pub async fn change_status(
        &self,
        record: &MeetingRecord,
        from: MeetingStatus,
        to: MeetingStatus,
    ) -> Result<Option<MeetingRecord>, AppError> {
        let mut moved = self.change_statuses(&[record], from, to).await?;
        Ok(moved.pop())
    }

    /// [`Meetings::change_status`] for several meetings at once (an
    /// occurrence of a series and the later ones): one transaction, and
    /// each member hears of it once, named after the first meeting.
    /// Returns those that moved.
    pub async fn change_statuses(
        &self,
        records: &[&MeetingRecord],
        from: MeetingStatus,
        to: MeetingStatus,
    ) -> Result<Vec<MeetingRecord>, AppError> {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let mut draft = match to {
            MeetingStatus::Ongoing => Some(Draft::started(&first.id, &first.title)),
            MeetingStatus::Cancelled => Some(Draft::cancelled(&first.id, &first.title).mailed()),
            _ => None,
        };
        if records.len() > 1
            && to == MeetingStatus::Cancelled
            && let Some(draft) = &mut draft
        {
            draft.body = format!(
                "\"{}\" and the {} later meetings of its series have been cancelled.",
                first.title,
                records.len() - 1
            );
        }
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let (moved, notices) =
            meetings::transition_all(&self.db, &ids, from, to, draft.as_ref(), now_micros())
                .await?;
        let status = wire::meeting_status(to);
        for record in &moved {
            // Caches drop it and streams held under it re-check before
            // anyone hears of the change.
            self.bus
                .publish(&Topic::Meeting(record.id.clone()), BusEvent::AccessChanged);
        }
        if !notices.is_empty() {
            self.inbox.publish(notices.iter().map(wire::notification));
        }
        for record in &moved {
            if to.is_over() {
                self.hub.close_room(&record.id, status);
            } else {
                let event = pb::server_event::Event::MeetingStatus(pb::MeetingStatusChanged {
                    status: status as i32,
                });
                self.hub.broadcast(&record.id, event);
            }
        }
        Ok(moved)
    }

    /// Deletes the meeting with everything of it: rows cascade, the live
    /// room closes, the bytes of its files go. False if it did not exist.
    pub async fn delete(&self, meeting_id: &str) -> Result<bool, AppError> {
        let blob_keys = files::blob_keys_of_meeting(&self.db, meeting_id).await?;
        if !meetings::delete(&self.db, meeting_id).await? {
            return Ok(false);
        }
        self.gone(meeting_id);
        for key in blob_keys {
            let _ = self.blobs.delete(&key).await;
            let _ = self.blobs.delete_temp(&key).await;
        }
        Ok(true)
    }

    /// Meeting `meeting_id` was deleted (on its own, or with its host):
    /// its live room closes, and streams held under it re-check and end.
    pub fn gone(&self, meeting_id: &str) {
        self.hub
            .close_room(meeting_id, pb::MeetingStatus::Cancelled);
        self.bus.publish(
            &Topic::Meeting(meeting_id.to_owned()),
            BusEvent::AccessChanged,
        );
    }
}
