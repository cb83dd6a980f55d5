//! Login throttling: how long a key (an email at an address, an address, an
//! email from anywhere) must wait after its failures.
//!
//! Delays grow (1 s, 2 s, 4 s, … up to a cap) once a key has used its free
//! attempts, and no key is ever locked for good: the owner of an account
//! signs in from their own address, which a guesser elsewhere does not slow
//! down, and even the per-email key, which everyone shares, waits at most
//! `ACCOUNT.max_delay`. Failures older than `window` are forgotten.

use std::time::Duration;

use super::time::{Micros, micros};

/// How one kind of key is throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures allowed without any delay.
    pub free: i64,
    pub max_delay: Duration,
    /// Failures older than this no longer count.
    pub window: Duration,
}

/// One email from one client address: the guesser's own key.
pub const PAIR: Policy = Policy {
    free: 5,
    max_delay: Duration::from_secs(15 * 60),
    window: Duration::from_secs(15 * 60),
};

/// One client address, whatever emails it tries (one password against many
/// accounts).
pub const ADDRESS: Policy = Policy {
    free: 20,
    max_delay: Duration::from_secs(15 * 60),
    window: Duration::from_secs(15 * 60),
};

/// One email from every address (a guesser with many addresses): gentle,
/// since the owner shares it.
pub const ACCOUNT: Policy = Policy {
    free: 10,
    max_delay: Duration::from_secs(60),
    window: Duration::from_secs(15 * 60),
};

/// The state of one key as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyState {
    pub failures: i64,
    pub last_failed_at: Micros,
    pub blocked_until: Micros,
}

impl Policy {
    /// The wait after `failures` failures.
    pub fn delay(&self, failures: i64) -> Duration {
        let over = failures - self.free;
        if over < 0 {
            return Duration::ZERO;
        }
        let seconds = 1u64 << over.min(20);
        Duration::from_secs(seconds).min(self.max_delay)
    }

    /// Counts one more attempt as failed (it is, until the password
    /// checks out) if the key may try at `now`; `Err` with the time it may.
    pub fn claim(&self, state: KeyState, now: Micros) -> Result<KeyState, Micros> {
        if state.blocked_until > now {
            return Err(state.blocked_until);
        }
        let recent = state.last_failed_at >= now - micros(self.window);
        let failures = if recent { state.failures + 1 } else { 1 };
        Ok(KeyState {
            failures,
            last_failed_at: now,
            blocked_until: now + micros(self.delay(failures)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Micros = 1_000_000;

    #[test]
    fn delays_grow_after_the_free_attempts_up_to_a_cap() {
        assert_eq!(PAIR.delay(4), Duration::ZERO);
        assert_eq!(PAIR.delay(5), Duration::from_secs(1));
        assert_eq!(PAIR.delay(6), Duration::from_secs(2));
        assert_eq!(PAIR.delay(9), Duration::from_secs(16));
        assert_eq!(PAIR.delay(500), PAIR.max_delay);
        assert_eq!(ACCOUNT.delay(100), Duration::from_secs(60));
    }

    #[test]
    fn a_blocked_key_waits_and_old_failures_are_forgotten() {
        let mut state = KeyState::default();
        let now = 1_000 * SECOND;
        for _ in 0..5 {
            state = PAIR.claim(state, now).unwrap();
        }
        assert_eq!(state.blocked_until, now + SECOND);
        assert_eq!(PAIR.claim(state, now), Err(now + SECOND));
        let later = PAIR.claim(state, now + SECOND).unwrap();
        assert_eq!(later.failures, 6);
        let much_later = now + micros(PAIR.window) + 2 * SECOND;
        assert_eq!(PAIR.claim(later, much_later).unwrap().failures, 1);
    }
}
