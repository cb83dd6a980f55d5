//! Keyed rate limits in memory (on `governor`'s GCRA): unauthenticated
//! calls per client address, chat messages per user and meeting.
//!
//! These bound what one key can cost this node; limits that must hold
//! across nodes and restarts (login throttling, verification mails, call
//! ringing) live in the database instead. Idle keys are dropped by
//! [`KeyedLimit::forget_idle`], which the sweep job calls, so the maps stay
//! as small as the set of recently active keys.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

/// A rate per key: `per_period` events per `period`, in bursts of `burst`.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `rate` events per second sustained, bursts of `burst`.
    pub fn per_second(rate: u32, burst: u32) -> Self {
        let quota = Quota::per_second(nonzero(rate)).allow_burst(nonzero(burst));
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// Takes one event for `key`, or says how long until one is allowed.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// `rate` events per minute sustained, bursts of `burst`.
    pub fn per_minute(rate: u32, burst: u32) -> Self {
        let quota = Quota::per_minute(nonzero(rate)).allow_burst(nonzero(burst));
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// Drops the keys whose state is back to full capacity.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// At most `max` operations at once per user (uploads in progress,
/// downloads streaming): each holds a file handle, a buffer and a stream.
#[derive(Clone)]
pub struct Slots {
    /// Operations in progress per user; a user with none has no entry, so
    /// the map holds only users who are busy now. A std mutex: held for a
    /// map lookup, never across an await.
    busy: Arc<Mutex<HashMap<String, usize>>>,
    max: usize,
}

/// One operation in progress; its slot frees when this drops.
pub struct Slot {
    busy: Arc<Mutex<HashMap<String, usize>>>,
    user_id: String,
}

impl Slots {
    pub fn new(max: usize) -> Self {
        Self {
            busy: Arc::default(),
            max: max.max(1),
        }
    }

    /// A slot for `user_id`, or `None` when all of theirs are taken.
    pub fn take(&self, user_id: &str) -> Option<Slot> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let count = busy.entry(user_id.to_owned()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            busy: self.busy.clone(),
            user_id: user_id.to_owned(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = busy.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                busy.remove(&self.user_id);
            }
        }
    }
}

/// The in-memory limits of one node.
pub struct Limiters {
    /// Unauthenticated calls (sign-up, login, OAuth, verification) per
    /// client address: each may cost a password hash or a stored row.
    pub public: KeyedLimit<IpAddr>,
    /// Sign-ups per client address: each mails a stranger's address.
    pub signups: KeyedLimit<IpAddr>,
    /// Chat messages per (user, meeting), over ChatService and every room
    /// session of the user alike.
    pub chat: KeyedLimit<(String, String)>,
    /// Uploads in progress per user (a streaming upload, or one chunk).
    pub uploads: Slots,
    /// Downloads streaming per user.
    pub downloads: Slots,
    /// Avatar decodes running at once (one per core).
    pub image_decodes: Arc<tokio::sync::Semaphore>,
}

impl Limiters {
    pub fn new(limits: &crate::config::Limits) -> Self {
        let public = limits.public_calls_per_second;
        let chat = limits.chat_messages_per_second;
        Self {
            public: KeyedLimit::per_second(public, public.saturating_mul(3)),
            signups: KeyedLimit::per_minute(limits.signups_per_minute, limits.signups_per_minute),
            chat: KeyedLimit::per_second(chat, chat.saturating_mul(2)),
            uploads: Slots::new(limits.max_uploads_per_user),
            downloads: Slots::new(limits.max_downloads_per_user),
            image_decodes: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }
    }

    pub fn forget_idle(&self) {
        self.public.forget_idle();
        self.signups.forget_idle();
        self.chat.forget_idle();
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_free_on_drop_and_forget_idle_users() {
        let slots = Slots::new(2);
        let a = slots.take("u").unwrap();
        let _b = slots.take("u").unwrap();
        assert!(slots.take("u").is_none());
        assert!(slots.take("v").is_some(), "per user");
        drop(a);
        let _c = slots.take("u").unwrap();
        drop(_c);
        drop(_b);
        assert!(slots.busy.lock().unwrap().is_empty());
    }

    #[test]
    fn each_key_has_its_own_burst_and_idle_keys_go() {
        let limit = KeyedLimit::per_second(10, 3);
        for _ in 0..3 {
            assert!(limit.check(&"a").is_ok());
        }
        let wait = limit.check(&"a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert!(limit.check(&"b").is_ok(), "keys are independent");
        assert_eq!(limit.len(), 2);
        std::thread::sleep(Duration::from_millis(250));
        limit.forget_idle();
        assert!(limit.len() <= 1, "b refilled and is forgotten");
    }
}
