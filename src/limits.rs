//! Keyed rate limits in memory (on `governor`'s GCRA): unauthenticated
//! calls per client address, chat messages per user and meeting.
//!
//! These bound what one key can cost this node; limits that must hold
//! across nodes and restarts (login throttling, verification mails, call
//! ringing) live in the database instead. Idle keys are dropped by
//! [`KeyedLimit::forget_idle`], which the sweep job calls, so the maps stay
//! as small as the set of recently active keys.

use std::{hash::Hash, net::IpAddr, num::NonZeroU32, time::Duration};

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

/// The in-memory limits of one node.
pub struct Limiters {
    /// Unauthenticated calls (sign-up, login, OAuth, verification) per
    /// client address: each may cost a password hash or a stored row.
    pub public: KeyedLimit<IpAddr>,
    /// Chat messages per (user, meeting), over ChatService and every room
    /// session of the user alike.
    pub chat: KeyedLimit<(String, String)>,
}

impl Limiters {
    pub fn new(public_per_second: u32, chat_per_second: u32) -> Self {
        Self {
            public: KeyedLimit::per_second(public_per_second, public_per_second.saturating_mul(3)),
            chat: KeyedLimit::per_second(chat_per_second, chat_per_second.saturating_mul(2)),
        }
    }

    pub fn forget_idle(&self) {
        self.public.forget_idle();
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
