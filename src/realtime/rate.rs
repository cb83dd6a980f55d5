//! Token buckets for per-session rate limits: a client that sends too fast
//! gets an `error` event for the excess, and its stream stays open.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// `per_second` sustained, bursts up to twice that.
    pub fn new(per_second: u32) -> Self {
        let capacity = f64::from(per_second.max(1)) * 2.0;
        Self {
            capacity,
            per_second: f64::from(per_second.max(1)),
            tokens: capacity,
            refilled: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5);
        assert!((0..10).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_millis(200)));
        assert!(!bucket.try_take(start + Duration::from_millis(200)));
    }
}

/// Token buckets by key (a session another node's client Publishes to),
/// at most [`KeyedBuckets::MAX`] of them: when full, the map starts over
/// (a key then gets a fresh burst, never more than that).
#[derive(Debug, Default)]
pub struct KeyedBuckets {
    buckets: std::sync::Mutex<std::collections::HashMap<String, TokenBucket>>,
}

impl KeyedBuckets {
    const MAX: usize = 10_000;

    /// Takes a token from `key`'s bucket of `per_second`; false if empty.
    pub fn take(&self, key: &str, per_second: u32) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= Self::MAX && !buckets.contains_key(key) {
            buckets.clear();
        }
        buckets
            .entry(key.to_owned())
            .or_insert_with(|| TokenBucket::new(per_second))
            .try_take(std::time::Instant::now())
    }
}
