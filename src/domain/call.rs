//! Call rules: the status machine and how a duration is counted.

use super::time::Micros;

/// Calls one user may start within a minute: each rings someone's phone.
pub const MAX_CALLS_PER_MINUTE: i64 = 10;
/// Calls that may ring one callee at once, from different callers.
pub const MAX_RINGING_PER_CALLEE: i64 = 3;

/// Why a new call may not ring now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingLimit {
    /// The caller started too many calls lately; it may again at this time.
    CallerTooFast(Micros),
    /// The callee already has this many calls ringing.
    CalleeBusy,
}

/// Decides whether a call may start, from the caller's calls of the last
/// minute (count and oldest start) and the callee's ringing calls.
pub fn ring_limit(
    recent_by_caller: i64,
    oldest_recent: Option<Micros>,
    ringing_for_callee: i64,
) -> Option<RingLimit> {
    if recent_by_caller >= MAX_CALLS_PER_MINUTE {
        return Some(RingLimit::CallerTooFast(
            oldest_recent.unwrap_or_default() + 60_000_000,
        ));
    }
    (ringing_for_callee >= MAX_RINGING_PER_CALLEE).then_some(RingLimit::CalleeBusy)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    Ringing,
    Active,
    Ended,
    Declined,
    Missed,
}

/// A call change the machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} call cannot be {action}")]
pub struct IllegalCallTransition {
    pub from: &'static str,
    pub action: &'static str,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Active => "active",
            Self::Ended => "ended",
            Self::Declined => "declined",
            Self::Missed => "missed",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "ringing" => Some(Self::Ringing),
            "active" => Some(Self::Active),
            "ended" => Some(Self::Ended),
            "declined" => Some(Self::Declined),
            "missed" => Some(Self::Missed),
            _ => None,
        }
    }

    /// A new call rings when it has a callee, and is live at once otherwise.
    pub fn initial(has_callee: bool) -> Self {
        if has_callee {
            Self::Ringing
        } else {
            Self::Active
        }
    }

    /// The callee's answer to a ringing call.
    pub fn answer(self, accept: bool) -> Result<Self, IllegalCallTransition> {
        match self {
            Self::Ringing if accept => Ok(Self::Active),
            Self::Ringing => Ok(Self::Declined),
            other => Err(IllegalCallTransition {
                from: other.as_str(),
                action: "answered",
            }),
        }
    }

    /// Hanging up: a ringing call is withdrawn, an active one ends.
    pub fn end(self) -> Result<Self, IllegalCallTransition> {
        match self {
            Self::Ringing | Self::Active => Ok(Self::Ended),
            other => Err(IllegalCallTransition {
                from: other.as_str(),
                action: "ended",
            }),
        }
    }
}

/// Whole seconds the call was live: from answer (or start, for calls that
/// never rang) to end; zero for calls never answered.
pub fn duration_seconds(
    started: Micros,
    answered: Option<Micros>,
    ended: Micros,
    rang: bool,
) -> i64 {
    let from = match (answered, rang) {
        (Some(at), _) => at,
        (None, false) => started,
        (None, true) => return 0,
    };
    (ended - from).max(0) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ringing_is_bounded_per_caller_and_per_callee() {
        assert_eq!(ring_limit(0, None, 0), None);
        assert_eq!(
            ring_limit(MAX_CALLS_PER_MINUTE, Some(5), 0),
            Some(RingLimit::CallerTooFast(60_000_005))
        );
        assert_eq!(
            ring_limit(1, Some(5), MAX_RINGING_PER_CALLEE),
            Some(RingLimit::CalleeBusy)
        );
        assert_eq!(ring_limit(1, Some(5), MAX_RINGING_PER_CALLEE - 1), None);
    }

    #[test]
    fn calls_ring_then_go_live_or_get_declined() {
        assert_eq!(CallStatus::initial(true), CallStatus::Ringing);
        assert_eq!(CallStatus::initial(false), CallStatus::Active);
        assert_eq!(CallStatus::Ringing.answer(true), Ok(CallStatus::Active));
        assert_eq!(CallStatus::Ringing.answer(false), Ok(CallStatus::Declined));
        for s in [
            CallStatus::Active,
            CallStatus::Ended,
            CallStatus::Declined,
            CallStatus::Missed,
        ] {
            assert!(s.answer(true).is_err());
        }
        assert_eq!(CallStatus::Active.end(), Ok(CallStatus::Ended));
        assert_eq!(CallStatus::Ringing.end(), Ok(CallStatus::Ended));
        assert!(CallStatus::Ended.end().is_err());
        assert!(CallStatus::Missed.end().is_err());
    }

    #[test]
    fn durations_count_from_the_answer() {
        let s = 1_000_000_000;
        assert_eq!(
            duration_seconds(s, Some(s + 5_000_000), s + 65_900_000, true),
            60
        );
        assert_eq!(duration_seconds(s, None, s + 30_000_000, false), 30);
        assert_eq!(duration_seconds(s, None, s + 30_000_000, true), 0);
    }

    #[test]
    fn database_spellings_round_trip() {
        for s in [
            CallStatus::Ringing,
            CallStatus::Active,
            CallStatus::Ended,
            CallStatus::Declined,
            CallStatus::Missed,
        ] {
            assert_eq!(CallStatus::from_db(s.as_str()), Some(s));
        }
    }
}
