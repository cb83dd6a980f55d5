//! The in-memory view of meetings as each user stands to them (DESIGN §8):
//! what every meeting-scoped call reads to decide access — the meeting row
//! with the caller's invite, attendance and removal — instead of a query.
//!
//! Entries are keyed by (meeting, user), filled from one query on a miss,
//! and dropped when the bus announces a change under the meeting's topic
//! (an edit, a status change, an invite, an answer, a join, a removal, a
//! deletion: every writer publishes one) or under a user's topic (their
//! verified address collects invites; deleting them deletes the meetings
//! they host, so those go too). The same two guards as
//! [`AccessView`](super::view::AccessView) keep it honest: a load that
//! raced an invalidation is not kept (epoch), entries expire after the TTL
//! (bounding what a change outside the bus can go unseen), and an
//! untrusted bus sends every read to the database (fail closed). Misses
//! (no such meeting) are never cached, so a new meeting is seen at once.
//!
//! Re-checks of open streams read the database ([`MeetingView::fresh`]):
//! they run because something changed, and must not trust a cache to say
//! what.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    realtime::bus::{Bus, Topic},
    store::{self, Db, meetings::MeetingWithRelation},
};

/// Entries the view may hold; past it, it starts over (a flood of one-off
/// lookups must not grow memory without bound).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
struct Maps {
    /// meeting → user → what they see, and when it was read.
    meetings: HashMap<String, HashMap<String, (Arc<MeetingWithRelation>, Instant)>>,
    /// user → the meetings they have entries in.
    by_user: HashMap<String, HashSet<String>>,
    /// host → the meetings they host that have entries.
    hosted: HashMap<String, HashSet<String>>,
    len: usize,
}

impl Maps {
    fn get(&self, meeting_id: &str, user_id: &str) -> Option<&(Arc<MeetingWithRelation>, Instant)> {
        self.meetings.get(meeting_id)?.get(user_id)
    }

    fn insert(&mut self, user_id: &str, found: Arc<MeetingWithRelation>) {
        if self.len >= MAX_ENTRIES {
            *self = Maps::default();
        }
        let meeting_id = found.meeting.id.clone();
        self.hosted
            .entry(found.meeting.host_id.clone())
            .or_default()
            .insert(meeting_id.clone());
        self.by_user
            .entry(user_id.to_owned())
            .or_default()
            .insert(meeting_id.clone());
        let users = self.meetings.entry(meeting_id).or_default();
        if users
            .insert(user_id.to_owned(), (found, Instant::now()))
            .is_none()
        {
            self.len += 1;
        }
    }

    fn drop_meeting(&mut self, meeting_id: &str) {
        let Some(users) = self.meetings.remove(meeting_id) else {
            return;
        };
        self.len -= users.len();
        let mut host = None;
        for (user_id, (found, _)) in users {
            host.get_or_insert(found.meeting.host_id.clone());
            if let Some(set) = self.by_user.get_mut(&user_id) {
                set.remove(meeting_id);
                if set.is_empty() {
                    self.by_user.remove(&user_id);
                }
            }
        }
        if let Some(host) = host
            && let Some(set) = self.hosted.get_mut(&host)
        {
            set.remove(meeting_id);
            if set.is_empty() {
                self.hosted.remove(&host);
            }
        }
    }

    fn drop_user(&mut self, user_id: &str) {
        // What they host goes whole (deleting them deletes it).
        for meeting_id in self.hosted.remove(user_id).unwrap_or_default() {
            self.drop_meeting(&meeting_id);
        }
        for meeting_id in self.by_user.remove(user_id).unwrap_or_default() {
            let Some(users) = self.meetings.get_mut(&meeting_id) else {
                continue;
            };
            let Some((found, _)) = users.remove(user_id) else {
                continue;
            };
            self.len -= 1;
            if users.is_empty() {
                // No entry of it left: nor an index of its host.
                self.meetings.remove(&meeting_id);
                let host = &found.meeting.host_id;
                if let Some(set) = self.hosted.get_mut(host) {
                    set.remove(&meeting_id);
                    if set.is_empty() {
                        self.hosted.remove(host);
                    }
                }
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

    /// Meeting `meeting_id` as `user_id` stands to it, from memory when it
    /// is there and fresh; `None` when there is no such meeting.
    pub async fn relation(
        &self,
        meeting_id: &str,
        user_id: &str,
    ) -> Result<Option<Arc<MeetingWithRelation>>, store::Error> {
        if self.bus.healthy() {
            let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
            if let Some((found, at)) = maps.get(meeting_id, user_id)
                && at.elapsed() < self.ttl
            {
                return Ok(Some(found.clone()));
            }
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(found) = self.fresh(meeting_id, user_id).await? else {
            return Ok(None);
        };
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        // Changed while we read: what we read may be stale.
        if self.epoch.load(Ordering::Acquire) == epoch {
            maps.insert(user_id, found.clone());
        }
        Ok(Some(found))
    }

    /// The same, from the database whatever memory holds.
    pub async fn fresh(
        &self,
        meeting_id: &str,
        user_id: &str,
    ) -> Result<Option<Arc<MeetingWithRelation>>, store::Error> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(
            store::meetings::with_relation(&self.db, meeting_id, user_id)
                .await?
                .map(Arc::new),
        )
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
            now: 1,
        };
        meetings::create(&db, &new, &[], &Draft::invite(&meeting, "T", "H"))
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
            assert_eq!((found.meeting.title.as_str(), found.invite()), ("T", None));
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
    async fn deleting_a_host_drops_the_meetings_they_host() {
        let (db, host, guest, meeting, _dir) = fixture().await;
        let bus = LocalBus::new();
        let view = MeetingView::new(db.clone(), bus.clone(), Duration::from_secs(60));
        view.relation(&meeting, &guest).await.unwrap().unwrap();
        crate::store::users::delete(&db, &host).await.unwrap();
        bus.publish(&Topic::User(host.clone()), BusEvent::AccessChanged);
        assert!(
            view.relation(&meeting, &guest).await.unwrap().is_none(),
            "the guest's entry went with the host"
        );
        assert_eq!(view.maps.read().unwrap().len, 0);
    }

    #[tokio::test]
    async fn misses_are_not_kept() {
        let (db, _host, guest, _meeting, _dir) = fixture().await;
        let view = MeetingView::new(db, LocalBus::new(), Duration::from_secs(60));
        for _ in 0..2 {
            assert!(view.relation("nope", &guest).await.unwrap().is_none());
        }
        assert_eq!(view.loads(), 2);
    }

    #[tokio::test]
    async fn a_load_that_raced_a_change_is_not_kept() {
        let (db, _host, guest, meeting, _dir) = fixture().await;
        let bus = LocalBus::new();
        let view = MeetingView::new(db, bus.clone(), Duration::from_secs(60));
        // The change lands between the read and the insert.
        let epoch = view.epoch.load(Ordering::Acquire);
        bus.publish(&Topic::Meeting(meeting.clone()), BusEvent::DataChanged);
        assert_ne!(view.epoch.load(Ordering::Acquire), epoch);
        view.relation(&meeting, &guest).await.unwrap();
        view.relation(&meeting, &guest).await.unwrap();
        assert_eq!(view.loads(), 1, "a load after the change is kept");
    }

    #[test]
    fn bounded_indexes_empty_out_with_their_entries() {
        let mut maps = Maps::default();
        let found = |meeting: &str, host: &str| {
            Arc::new(MeetingWithRelation {
                meeting: meetings::MeetingRecord {
                    id: meeting.into(),
                    host_id: host.into(),
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
                },
                invite_status: None,
                attended: false,
                removed: false,
            })
        };
        maps.insert("u1", found("m1", "h"));
        maps.insert("u2", found("m1", "h"));
        maps.insert("u1", found("m2", "h2"));
        assert_eq!(maps.len, 3);
        maps.drop_user("u1");
        assert_eq!(maps.len, 1);
        assert!(!maps.hosted.contains_key("h2"));
        maps.drop_meeting("m1");
        assert_eq!(maps.len, 0);
        assert!(maps.meetings.is_empty() && maps.by_user.is_empty() && maps.hosted.is_empty());
    }
}
