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

/// The three policies of a login (and of ChangePassword's current
/// password, which uses `pair`), set by `UNIO_LOGIN_THROTTLE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicies {
    pub pair: Policy,
    pub address: Policy,
    pub account: Policy,
}

impl Default for LoginPolicies {
    fn default() -> Self {
        Self {
            pair: PAIR,
            address: ADDRESS,
            account: ACCOUNT,
        }
    }
}

impl LoginPolicies {
    /// How long a failure may matter under any of them.
    pub fn longest_window(&self) -> Duration {
        self.pair
            .window
            .max(self.address.window)
            .max(self.account.window)
    }
}

impl Policy {
    /// Reads `FREE,MAX_DELAY,WINDOW`, e.g. `5,15m,15m`: failures allowed
    /// without delay, the longest delay, and how long a failure counts.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [free, max_delay, window] = parts[..] else {
            return Err(format!(
                "{text:?} is not FREE,MAX_DELAY,WINDOW (e.g. 5,15m,15m)"
            ));
        };
        let free = free
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=1_000_000).contains(n))
            .ok_or_else(|| format!("{free:?} is not a number of failures from 0 to 1000000"))?;
        let duration = |text: &str| {
            humantime::parse_duration(text)
                .ok()
                .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(30 * 86_400))
                .ok_or_else(|| format!("{text:?} is not a duration from 1s to 30d (e.g. 15m)"))
        };
        Ok(Self {
            free,
            max_delay: duration(max_delay)?,
            window: duration(window)?,
        })
    }
}

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

    #[test]
    fn policies_parse_from_settings() {
        assert_eq!(Policy::parse("5,15m,15m"), Ok(PAIR));
        assert_eq!(Policy::parse(" 10 , 60s , 15m "), Ok(ACCOUNT));
        for bad in [
            "",
            "5",
            "5,15m",
            "x,15m,15m",
            "-1,15m,15m",
            "5,0s,15m",
            "5,15m,forever",
            "5,15m,15m,1",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad:?}");
        }
    }

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
