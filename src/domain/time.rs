//! Time as stored: microseconds since the Unix epoch, UTC, in a BIGINT.
//!
//! One integer column type reads the same in SQLite and PostgreSQL and keeps
//! ordering and arithmetic trivial; the API converts at its edge to
//! `google.protobuf.Timestamp`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub type Micros = i64;

pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub fn micros(duration: Duration) -> Micros {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Whole seconds from `now` until `at`, at least one: the RetryInfo of a
/// limit that frees up at `at`.
pub fn wait_until(at: Micros, now: Micros) -> Duration {
    Duration::from_secs(((at - now).max(0) as u64).div_ceil(1_000_000).max(1))
}

pub fn to_timestamp(at: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.div_euclid(1_000_000),
        nanos: (at.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// A request timestamp as stored micros; refuses out-of-range values.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Result<Micros, super::ValidationError> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(super::ValidationError::new("has nanos outside 0..1e9"));
    }
    // 0001-01-01 to 9999-12-31, the range google.protobuf.Timestamp allows.
    if !(-62_135_596_800..=253_402_300_799).contains(&ts.seconds) {
        return Err(super::ValidationError::new(
            "must be between years 1 and 9999",
        ));
    }
    Ok(ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_protobuf_timestamps() {
        let ts = to_timestamp(1_700_000_000_123_456);
        assert_eq!(ts.seconds, 1_700_000_000);
        assert_eq!(ts.nanos, 123_456_000);
        let before_epoch = to_timestamp(-1);
        assert_eq!(
            (before_epoch.seconds, before_epoch.nanos),
            (-1, 999_999_000)
        );
    }
}
