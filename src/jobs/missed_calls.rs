//! Turns calls left ringing past the ring timeout into MISSED calls and
//! tells their rooms. A periodic sweep rather than a timer per call, so a
//! restart (or a node that died mid-ring) loses nothing.

use std::time::Duration;

use crate::{
    domain::time::{micros, now_micros},
    proto::pb::server_event::Event,
    state::AppState,
    store::calls,
    wire::call as convert_call,
};

/// How often to sweep for a given ring timeout: a quarter of it, between
/// 50 ms and 1 s, so a call is marked missed within ~25% of its timeout.
pub fn sweep_interval(ring_timeout: Duration) -> Duration {
    (ring_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Runs until the task is aborted.
pub async fn run(state: AppState, ring_timeout: Duration) {
    let mut tick = tokio::time::interval(sweep_interval(ring_timeout));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_micros();
        match calls::mark_missed(&state.db, now - micros(ring_timeout), now).await {
            Ok(missed) => {
                for record in missed {
                    tracing::info!(call_id = %record.id, "call missed");
                    state.hub.broadcast(
                        &record.meeting_id,
                        Event::Call(Box::new(convert_call(&record))),
                    );
                }
            }
            Err(err) => tracing::warn!(error = %err, "missed-call sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_often_enough_but_not_too_often() {
        assert_eq!(
            sweep_interval(Duration::from_secs(45)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(400)),
            Duration::from_millis(100)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(10)),
            Duration::from_millis(50)
        );
    }
}
