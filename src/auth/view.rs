//! The in-memory view of access (DESIGN §8): what per-call authentication
//! reads instead of the database.
//!
//! Sessions (with the access tokens seen for each), users and user rows,
//! indexed so that a change drops only what it concerns, filled from
//! one query on a miss and dropped entry by entry when the bus announces an
//! access change (a hook that runs before the change is delivered). So the
//! hot path of an authenticated call does no query, and a revocation made
//! on this node (or announced by another) is seen by the next call.
//!
//! Two guards keep it honest:
//! - a load that raced an invalidation is not cached (an epoch counter
//!   taken before the query must still hold after it);
//! - entries expire after a TTL, which bounds how long a change made
//!   outside the bus (an operator's `unio create-admin` against the same
//!   database) can go unseen.
//!
//! When the bus cannot vouch for delivering every change (`Bus::healthy`
//! false: Redis down in a cluster), every call reads the database: it fails
//! closed, never open.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    domain::Role,
    realtime::bus::{Bus, Topic},
    store::{self, Db, sessions::AccessState, users::UserRecord},
};

/// Entries one map may hold; past it the map starts over (a flood of
/// one-off tokens must not grow memory without bound).
const MAX_ENTRIES: usize = 100_000;

/// Access tokens remembered per session (a refresh every 15 minutes makes
/// a few a day; more are read from the database).
const MAX_TOKENS_PER_SESSION: usize = 64;

struct SessionEntry {
    user_id: Arc<str>,
    revoked: bool,
    at: Instant,
    /// Its access tokens seen so far: jti → revoked. Dropped with it.
    tokens: HashMap<String, bool>,
}

#[derive(Clone, Copy)]
struct UserEntry {
    role: Role,
    is_active: bool,
    at: Instant,
}

#[derive(Default)]
struct Maps {
    sessions: HashMap<String, SessionEntry>,
    users: HashMap<String, UserEntry>,
    /// The cached sessions of each user, so a user's change drops them
    /// without a scan.
    user_sessions: HashMap<Arc<str>, Vec<String>>,
    /// Whole user rows, for reads of a profile (GetMe, GetUser).
    profiles: HashMap<String, (Arc<UserRecord>, Instant)>,
}

impl Maps {
    fn drop_session(&mut self, session_id: &str) {
        if let Some(session) = self.sessions.remove(session_id)
            && let Some(list) = self.user_sessions.get_mut(&session.user_id)
        {
            list.retain(|id| id != session_id);
            if list.is_empty() {
                self.user_sessions.remove(&session.user_id);
            }
        }
    }

    fn drop_user(&mut self, user_id: &str) {
        self.users.remove(user_id);
        self.profiles.remove(user_id);
        for session_id in self.user_sessions.remove(user_id).unwrap_or_default() {
            self.sessions.remove(&session_id);
        }
    }
}

/// Whether a view kept current by `bus` may answer from memory (and be
/// filled): not while the bus cannot vouch for its deliveries, nor with a
/// zero TTL. Maps kept under an older bus generation (events may have been
/// missed) start over, and the epoch moves so that no load that began
/// before is kept. Shared by this view and the meeting view.
pub(crate) fn trusted<M: Default>(
    bus: &dyn Bus,
    ttl: Duration,
    generation: &AtomicU64,
    epoch: &AtomicU64,
    maps: &RwLock<M>,
) -> bool {
    if !bus.healthy() || ttl.is_zero() {
        return false;
    }
    let now = bus.generation();
    if generation.load(Ordering::Acquire) != now {
        let mut maps = maps.write().unwrap_or_else(|p| p.into_inner());
        epoch.fetch_add(1, Ordering::AcqRel);
        *maps = M::default();
        generation.store(now, Ordering::Release);
    }
    true
}

pub struct AccessView {
    db: Db,
    bus: Arc<dyn Bus>,
    ttl: Duration,
    maps: RwLock<Maps>,
    /// Bumped by every invalidation.
    epoch: AtomicU64,
    /// The bus generation the maps were kept under.
    generation: AtomicU64,
    /// Database reads, for tests and metrics.
    loads: AtomicU64,
}

impl std::fmt::Debug for AccessView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessView").finish_non_exhaustive()
    }
}

impl AccessView {
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

    /// Whether memory may answer (and be filled): not while the bus
    /// cannot vouch for its deliveries, nor with a zero TTL.
    fn trusted(&self) -> bool {
        trusted(
            self.bus.as_ref(),
            self.ttl,
            &self.generation,
            &self.epoch,
            &self.maps,
        )
    }

    /// How many times the database was read.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The state behind an access token, from memory when it is there and
    /// fresh; `None` when the user or the session no longer exists.
    pub async fn access_state(
        &self,
        user_id: &str,
        session_id: &str,
        jti: &str,
    ) -> Result<Option<AccessState>, store::Error> {
        let trusted = self.trusted();
        if trusted && let Some(state) = self.cached(user_id, session_id, jti) {
            return Ok(Some(state));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        self.loads.fetch_add(1, Ordering::Relaxed);
        let state = store::sessions::access_state(&self.db, user_id, session_id, jti).await?;
        if let Some(state) = &state
            && trusted
        {
            self.remember(user_id, session_id, jti, state, epoch);
        }
        Ok(state)
    }

    /// The row of user `user_id`, from memory when fresh. Every change of
    /// a user row is announced on the user's topic, which drops it.
    pub async fn user(&self, user_id: &str) -> Result<Option<Arc<UserRecord>>, store::Error> {
        let trusted = self.trusted();
        if trusted {
            let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
            if let Some((user, at)) = maps.profiles.get(user_id)
                && at.elapsed() < self.ttl
            {
                return Ok(Some(user.clone()));
            }
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        self.loads.fetch_add(1, Ordering::Relaxed);
        let Some(user) = store::users::find_by_id(&self.db, user_id).await? else {
            return Ok(None);
        };
        let user = Arc::new(user);
        if !trusted {
            return Ok(Some(user));
        }
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) == epoch {
            if maps.profiles.len() >= MAX_ENTRIES {
                maps.profiles.clear();
            }
            maps.profiles
                .insert(user_id.to_owned(), (user.clone(), Instant::now()));
        }
        Ok(Some(user))
    }

    fn cached(&self, user_id: &str, session_id: &str, jti: &str) -> Option<AccessState> {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        let fresh = |at: Instant| at.elapsed() < self.ttl;
        let session = maps.sessions.get(session_id)?;
        let token_revoked = *session.tokens.get(jti)?;
        let user = maps.users.get(user_id)?;
        if &*session.user_id != user_id || !fresh(session.at) || !fresh(user.at) {
            return None;
        }
        Some(AccessState {
            role: user.role,
            is_active: user.is_active,
            session_revoked: session.revoked,
            token_revoked,
        })
    }

    fn remember(
        &self,
        user_id: &str,
        session_id: &str,
        jti: &str,
        state: &AccessState,
        epoch: u64,
    ) {
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        // Changed while we read: what we read may be stale.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if maps.sessions.len() >= MAX_ENTRIES || maps.users.len() >= MAX_ENTRIES {
            let profiles = std::mem::take(&mut maps.profiles);
            *maps = Maps {
                profiles,
                ..Maps::default()
            };
        }
        let at = Instant::now();
        let user: Arc<str> = user_id.into();
        match maps.sessions.get_mut(session_id) {
            Some(session) if session.at.elapsed() < self.ttl => {
                if session.tokens.len() < MAX_TOKENS_PER_SESSION {
                    session.tokens.insert(jti.to_owned(), state.token_revoked);
                }
                session.revoked = state.session_revoked;
            }
            _ => {
                maps.drop_session(session_id);
                maps.sessions.insert(
                    session_id.to_owned(),
                    SessionEntry {
                        user_id: user.clone(),
                        revoked: state.session_revoked,
                        at,
                        tokens: HashMap::from([(jti.to_owned(), state.token_revoked)]),
                    },
                );
                maps.user_sessions
                    .entry(user)
                    .or_default()
                    .push(session_id.to_owned());
            }
        }
        maps.users.insert(
            user_id.to_owned(),
            UserEntry {
                role: state.role,
                is_active: state.is_active,
                at,
            },
        );
    }

    /// Drops what `topic` concerns: a session with its tokens; a user
    /// with their sessions and tokens.
    fn invalidate(&self, topic: &Topic) {
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match topic {
            Topic::Session(session_id) => maps.drop_session(session_id),
            Topic::User(user_id) => maps.drop_user(user_id),
            // Meetings and rooms grant nothing the view holds.
            Topic::Meeting(_) | Topic::Room(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{AuthProvider, new_id},
        realtime::bus::{BusEvent, ChangeHook, LocalBus, Signal, Subscription},
        store::{accounts, sessions, users::NewUser},
    };

    /// A bus that cannot vouch for its deliveries (Redis down).
    #[derive(Debug)]
    struct Unhealthy(Arc<LocalBus>);

    impl Bus for Unhealthy {
        fn publish(&self, topic: &Topic, event: BusEvent) {
            self.0.publish(topic, event)
        }
        fn on_change(&self, hook: ChangeHook) {
            self.0.on_change(hook)
        }
        fn healthy(&self) -> bool {
            false
        }
        fn subscribe(&self, topics: Vec<Topic>, capacity: usize) -> Subscription {
            self.0.subscribe(topics, capacity)
        }
        fn watch(&self, topics: Vec<Topic>) -> Signal {
            self.0.watch(topics)
        }
    }

    /// A database with one user signed in: (db, user, session, dir).
    async fn signed_in() -> (Db, String, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, Duration::from_secs(5)).await.unwrap();
        db.migrate().await.unwrap();
        let (user, session) = (new_id(), new_id());
        let new_user = NewUser {
            id: &user,
            email: "a@x.test",
            email_key: "a@x.test",
            display_name: "A",
            password_hash: None,
            role: Role::User,
            provider: AuthProvider::Password,
            now: 1,
        };
        let new_session = sessions::NewSession {
            id: &session,
            refresh_hash: "r",
            refresh_expires_at: i64::MAX,
            now: 1,
        };
        accounts::create_with_session(&db, &new_user, None, &new_session)
            .await
            .unwrap()
            .unwrap();
        (db, user, session, dir)
    }

    #[tokio::test]
    async fn calls_read_memory_until_the_bus_says_otherwise() {
        let (db, user, session, _dir) = signed_in().await;
        let bus = LocalBus::new();
        let view = AccessView::new(db.clone(), bus.clone(), Duration::from_secs(60));
        for _ in 0..5 {
            let state = view
                .access_state(&user, &session, "j1")
                .await
                .unwrap()
                .unwrap();
            assert!(!state.session_revoked);
        }
        assert_eq!(view.loads(), 1, "one query, then memory");

        sessions::revoke(&db, &session, "j1", i64::MAX, "logout", 2)
            .await
            .unwrap();
        bus.publish(&Topic::Session(session.clone()), BusEvent::AccessChanged);
        let state = view
            .access_state(&user, &session, "j1")
            .await
            .unwrap()
            .unwrap();
        assert!(state.session_revoked && state.token_revoked);
        assert_eq!(view.loads(), 2);
    }

    #[tokio::test]
    async fn a_user_change_drops_their_sessions_too() {
        let (db, user, session, _dir) = signed_in().await;
        let bus = LocalBus::new();
        let view = AccessView::new(db.clone(), bus.clone(), Duration::from_secs(60));
        view.access_state(&user, &session, "j1").await.unwrap();
        crate::store::users::update(
            &db,
            &user,
            &crate::store::users::UserChanges {
                is_active: Some(false),
                ..Default::default()
            },
            2,
        )
        .await
        .unwrap();
        bus.publish(&Topic::User(user.clone()), BusEvent::AccessChanged);
        let state = view
            .access_state(&user, &session, "j1")
            .await
            .unwrap()
            .unwrap();
        assert!(!state.is_active);
    }

    #[tokio::test]
    async fn an_untrusted_bus_sends_every_call_to_the_database() {
        let (db, user, session, _dir) = signed_in().await;
        let bus = Arc::new(Unhealthy(LocalBus::new()));
        let view = AccessView::new(db.clone(), bus, Duration::from_secs(60));
        for _ in 0..3 {
            view.access_state(&user, &session, "j1").await.unwrap();
        }
        assert_eq!(view.loads(), 3, "fails closed: no call trusts memory");
        // A change made without any word on the bus is seen at once.
        sessions::revoke(&db, &session, "j2", i64::MAX, "logout", 2)
            .await
            .unwrap();
        let state = view
            .access_state(&user, &session, "j1")
            .await
            .unwrap()
            .unwrap();
        assert!(state.session_revoked);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let (db, user, session, _dir) = signed_in().await;
        let view = AccessView::new(db.clone(), LocalBus::new(), Duration::ZERO);
        view.access_state(&user, &session, "j1").await.unwrap();
        view.access_state(&user, &session, "j1").await.unwrap();
        assert_eq!(view.loads(), 2);
    }
}
