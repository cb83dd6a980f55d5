//! The in-memory view of meetings as each user stands to them (DESIGN §8):
//! what every meeting-scoped call reads to decide access — the meeting row
//! with the caller's invite, attendance and removal — instead of a query.
//!
//! Entries are keyed by (meeting, user), filled from one query on a miss,
//! and dropped when the bus announces a change under the meeting's topic
//! (an edit, a status change, an invite, an answer, a first join, a
//! removal, a deletion — a host's deletion announces each meeting it took:
//! every writer publishes one) or under a user's topic (their verified
//! address collects invites). A meeting's row is held once, shared by its
//! users' entries. The same guards as
//! [`AccessView`](super::view::AccessView) keep it honest: a load that
//! raced an invalidation is not kept (epoch), entries expire after the TTL
//! (bounding what a change outside the bus can go unseen), and an
//! untrusted bus sends every read to the database and keeps nothing (fail
//! closed). Misses (no such meeting) are never cached, so a new meeting is
//! seen at once; nor are lookups made on someone else's behalf
//! ([`MeetingView::fresh`]), so no caller can fill memory with other
//! users' entries.
//!
//! Re-checks of open streams read the database too: they run because
//! something changed, and must not trust a cache to say what.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    domain::meeting::InviteStatus,
    realtime::bus::{Bus, Topic},
    store::{
        self, Db,
        meetings::{MeetingRecord, MeetingWithRelation},
    },
};

/// Entries the view may hold; past it, it starts over (a flood of lookups
/// must not grow memory without bound).
const MAX_ENTRIES: usize = 100_000;

/// A meeting as one user stands to it.
#[derive(Debug, Clone)]
pub struct Found {
    pub meeting: Arc<MeetingRecord>,
    pub invite: Option<InviteStatus>,
    pub attended: bool,
    /// The host removed this user from the meeting.
    pub removed: bool,
}

impl From<MeetingWithRelation> for Found {
    fn from(row: MeetingWithRelation) -> Self {
        Self {
            invite: row.invite(),
            attended: row.attended,
            removed: row.removed,
            meeting: Arc::new(row.meeting),
        }
    }
}

#[derive(Clone, Copy)]
struct Relation {
    invite: Option<InviteStatus>,
    attended: bool,
    removed: bool,
    at: Instant,
}

struct MeetingEntry {
    record: Arc<MeetingRecord>,
    users: HashMap<String, Relation>,
}

#[derive(Default)]
struct Maps {
    meetings: HashMap<String, MeetingEntry>,
    /// user → the meetings they have entries in.
    by_user: HashMap<String, HashSet<String>>,
    len: usize,
}

impl Maps {
    fn get(&self, meeting_id: &str, user_id: &str, ttl: Duration) -> Option<Found> {
        let entry = self.meetings.get(meeting_id)?;
        let relation = entry.users.get(user_id)?;
        (relation.at.elapsed() < ttl).then(|| Found {
            meeting: entry.record.clone(),
            invite: relation.invite,
            attended: relation.attended,
            removed: relation.removed,
        })
    }

    fn insert(&mut self, user_id: &str, found: &Found) {
        if self.len >= MAX_ENTRIES {
            *self = Maps::default();
        }
        let meeting_id = &found.meeting.id;
        self.by_user
            .entry(user_id.to_owned())
            .or_default()
            .insert(meeting_id.clone());
        let entry = self
            .meetings
            .entry(meeting_id.clone())
            .or_insert_with(|| MeetingEntry {
                record: found.meeting.clone(),
                users: HashMap::new(),
            });
        // The newest read of the row (no change came between: epoch).
        entry.record = found.meeting.clone();
        let relation = Relation {
            invite: found.invite,
            attended: found.attended,
            removed: found.removed,
            at: Instant::now(),
        };
        if entry.users.insert(user_id.to_owned(), relation).is_none() {
            self.len += 1;
        }
    }

    fn drop_meeting(&mut self, meeting_id: &str) {
        let Some(entry) = self.meetings.remove(meeting_id) else {
            return;
        };
        self.len -= entry.users.len();
        for user_id in entry.users.keys() {
            if let Some(set) = self.by_user.get_mut(user_id) {
                set.remove(meeting_id);
                if set.is_empty() {
                    self.by_user.remove(user_id);
                }
            }
        }
    }

    fn drop_user(&mut self, user_id: &str) {
        for meeting_id in self.by_user.remove(user_id).unwrap_or_default() {
            let Some(entry) = self.meetings.get_mut(&meeting_id) else {
                continue;
            };
            if entry.users.remove(user_id).is_some() {
                self.len -= 1;
            }
            if entry.users.is_empty() {
                self.meetings.remove(&meeting_id);
            }
        }
    }
}

pub struct MeetingView {
    db: Db,
    bus: Arc<dyn Bus>,
    ttl: Duration,
    maps: RwLock<Maps>,
    /// Bumped by every invalidation.
    epoch: AtomicU64,
    /// The bus generation the maps were kept under.
    generation: AtomicU64,
    /// Database reads, for tests.
    loads: AtomicU64,
}

impl std::fmt::Debug for MeetingView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeetingView").finish_non_exhaustive()
    }
}

impl MeetingView {
    /// A view that `bus` keeps current.
    pub fn new(db: Db, bus: Arc<dyn Bus>, ttl: Duration) -> Arc<Self> {
        let view = Arc::new(Self {
            db,
            bus: bus.clone(),
            ttl,
            maps: RwLock::new(Maps::default()),
            epoch: AtomicU64::new(0),
            generation: AtomicU64::new(bus.generation()),
            loads: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&view);
        bus.on_change(Arc::new(move |topic| {
            if let Some(view) = weak.upgrade() {
                view.invalidate(topic);
            }
        }));
        view
    }

    /// How many times the database was read.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Meeting `meeting_id` as the caller `user_id` stands to it, from
    /// memory when it is there and fresh; `None` when there is no such
    /// meeting.
    pub async fn relation(
        &self,
        meeting_id: &str,
        user_id: &str,
    ) -> Result<Option<Found>, store::Error> {
        let trusted = self.trusted();
        if trusted {
            let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
            if let Some(found) = maps.get(meeting_id, user_id, self.ttl) {
                return Ok(Some(found));
            }
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let found = self.fresh(meeting_id, user_id).await?;
        if let Some(found) = &found
            && trusted
        {
            self.keep(user_id, found, epoch);
        }
        Ok(found)
    }

    /// The same from the database, kept nowhere: for re-checks, and for
    /// what a caller asks about someone else (a callee, a recipient).
    pub async fn fresh(
        &self,
        meeting_id: &str,
        user_id: &str,
    ) -> Result<Option<Found>, store::Error> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(
            store::meetings::with_relation(&self.db, meeting_id, user_id)
                .await?
                .map(Found::from),
        )
    }

    /// Whether memory may answer (see [`super::view::trusted`]).
    fn trusted(&self) -> bool {
        super::view::trusted(
            self.bus.as_ref(),
            self.ttl,
            &self.generation,
            &self.epoch,
            &self.maps,
        )
    }

    /// Keeps what a load read, unless a change came since `epoch` (taken
    /// before the load): what it read may be stale.
    fn keep(&self, user_id: &str, found: &Found, epoch: u64) {
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) == epoch {
            maps.insert(user_id, found);
        }
    }

    fn invalidate(&self, topic: &Topic) {
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match topic {
            Topic::Meeting(meeting_id) => maps.drop_meeting(meeting_id),
            Topic::User(user_id) => maps.drop_user(user_id),
            // A session grants nothing per meeting; a room's events
            // change no meeting row.
            Topic::Session(_) | Topic::Room(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{AuthProvider, Role, meeting::JoinPolicy, new_id, notification::Draft},
        realtime::bus::{BusEvent, LocalBus},
        store::{
            accounts,
            meetings::{self, NewMeeting},
            sessions,
            users::NewUser,
        },
    };

    /// A database with a host, a guest and a meeting the guest is not
    /// invited to: (db, host, guest, meeting, dir).
    async fn fixture() -> (Db, String, String, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, Duration::from_secs(5)).await.unwrap();
        db.migrate().await.unwrap();
        let mut ids = Vec::new();
        for email in ["host@x.test", "guest@x.test"] {
            let id = new_id();
            let user = NewUser {
                id: &id,
                email,
                email_key: email,
                display_name: "U",
                password_hash: None,
                role: Role::User,
                provider: AuthProvider::Password,
                now: 1,
            };
            let session = sessions::NewSession {
                id: &new_id(),
                refresh_hash: &new_id(),
                refresh_expires_at: i64::MAX,
                now: 1,
            };
            accounts::create_with_session(&db, &user, None, &session)
                .await
                .unwrap()
                .unwrap();
            ids.push(id);
        }
        let meeting = new_id();
        let new = NewMeeting {
            id: &meeting,
            host_id: &ids[0],
            title: "T",
            description: "",
            start_at: 10,
            duration_minutes: 30,
            join_policy: JoinPolicy::InvitedOnly,
            time_zone: "UTC",
            now: 1,
        };
        meetings::create(&db, &new, None, &[], &Draft::invite(&meeting, "T", "H"))
            .await
            .unwrap();
        let guest = ids.pop().unwrap();
        let host = ids.pop().unwrap();
        (db, host, guest, meeting, dir)
    }

    #[tokio::test]
    async fn reads_come_from_memory_until_the_meeting_changes() {
        let (db, host, guest, meeting, _dir) = fixture().await;
        let bus = LocalBus::new();
        let view = MeetingView::new(db.clone(), bus.clone(), Duration::from_secs(60));
        for _ in 0..3 {
            let found = view.relation(&meeting, &guest).await.unwrap().unwrap();
            assert_eq!((found.meeting.title.as_str(), found.invite), ("T", None));
        }
        view.relation(&meeting, &host).await.unwrap().unwrap();
        assert_eq!(view.loads(), 2, "one query per user, then memory");

        let changes = meetings::MeetingChanges {
            title: Some("Renamed"),
            ..Default::default()
        };
        meetings::update(&db, &meeting, &changes, 2).await.unwrap();
        bus.publish(&Topic::Meeting(meeting.clone()), BusEvent::DataChanged);
        let found = view.relation(&meeting, &guest).await.unwrap().unwrap();
        assert_eq!(found.meeting.title, "Renamed");
        assert_eq!(view.loads(), 3);
    }

    #[tokio::test]
    async fn a_deleted_meeting_is_gone_at_once() {
        let (db, host, guest, meeting, _dir) = fixture().await;
        let bus = LocalBus::new();
        let view = MeetingView::new(db.clone(), bus.clone(), Duration::from_secs(60));
        view.relation(&meeting, &guest).await.unwrap().unwrap();
        let (_, hosted) = crate::store::users::delete(&db, &host)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            hosted,
            vec![meeting.clone()],
            "the host's meetings went with them"
        );
        bus.publish(&Topic::Meeting(meeting.clone()), BusEvent::AccessChanged);
        assert!(view.relation(&meeting, &guest).await.unwrap().is_none());
        assert_eq!(view.maps.read().unwrap().len, 0);
    }

    #[tokio::test]
    async fn misses_and_lookups_for_others_are_not_kept() {
        let (db, _host, guest, meeting, _dir) = fixture().await;
        let view = MeetingView::new(db, LocalBus::new(), Duration::from_secs(60));
        for _ in 0..2 {
            assert!(view.relation("nope", &guest).await.unwrap().is_none());
            view.fresh(&meeting, &guest).await.unwrap().unwrap();
        }
        assert_eq!(view.loads(), 4);
        assert_eq!(view.maps.read().unwrap().len, 0);
    }

    #[tokio::test]
    async fn a_load_that_raced_a_change_is_not_kept() {
        let (db, _host, guest, meeting, _dir) = fixture().await;
        let bus = LocalBus::new();
        let view = MeetingView::new(db, bus.clone(), Duration::from_secs(60));
        // Read, then a change lands before the read is kept.
        let epoch = view.epoch.load(Ordering::Acquire);
        let found = view.fresh(&meeting, &guest).await.unwrap().unwrap();
        bus.publish(&Topic::Meeting(meeting.clone()), BusEvent::DataChanged);
        view.keep(&guest, &found, epoch);
        assert_eq!(
            view.maps.read().unwrap().len,
            0,
            "the stale read was dropped"
        );
        // Without a change in between, it is kept.
        let epoch = view.epoch.load(Ordering::Acquire);
        view.keep(&guest, &found, epoch);
        assert_eq!(view.maps.read().unwrap().len, 1);
    }

    #[tokio::test]
    async fn a_zero_ttl_keeps_nothing() {
        let (db, _host, guest, meeting, _dir) = fixture().await;
        let view = MeetingView::new(db, LocalBus::new(), Duration::ZERO);
        view.relation(&meeting, &guest).await.unwrap().unwrap();
        view.relation(&meeting, &guest).await.unwrap().unwrap();
        assert_eq!((view.loads(), view.maps.read().unwrap().len), (2, 0));
    }

    #[test]
    fn indexes_empty_out_with_their_entries() {
        let mut maps = Maps::default();
        let found = |meeting: &str| Found {
            meeting: Arc::new(meetings::MeetingRecord {
                id: meeting.into(),
                host_id: "h".into(),
                title: "T".into(),
                description: String::new(),
                start_at: 0,
                duration_minutes: 30,
                status: "scheduled".into(),
                join_policy: "invited_only".into(),
                actual_start_at: None,
                actual_end_at: None,
                revision: 1,
                created_at: 0,
                updated_at: 0,
                waiting_room: false,
                locked: false,
                co_host_ids: String::new(),
                series_id: None,
                occurrence_at: None,
                recurrence: String::new(),
                time_zone: "UTC".into(),
            }),
            invite: None,
            attended: false,
            removed: false,
        };
        maps.insert("u1", &found("m1"));
        maps.insert("u2", &found("m1"));
        maps.insert("u1", &found("m2"));
        maps.insert("u1", &found("m2"));
        assert_eq!(maps.len, 3);
        maps.drop_user("u1");
        assert_eq!(maps.len, 1);
        assert!(!maps.meetings.contains_key("m2"));
        maps.drop_meeting("m1");
        assert_eq!(maps.len, 0);
        assert!(maps.meetings.is_empty() && maps.by_user.is_empty());
    }
}
