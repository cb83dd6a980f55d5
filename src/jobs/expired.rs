//! Forgets what has expired, so that nothing an anonymous caller can create
//! accumulates: login throttle keys past their window, started OAuth
//! sign-ins past their ten minutes, verification links past their day, and
//! the idle keys of the in-memory rate limits.

use std::time::Duration;

use crate::{
    domain::time::now_micros,
    limits::Limiters,
    store::{Db, identities, ledger, throttle as throttle_store, verifications},
};

const SWEEP: Duration = Duration::from_secs(60);
/// Every ledger counts over a day at most.
const LEDGER_WINDOW: i64 = 86_400_000_000;
/// A place the owner signed in from stays known this long (90 days).
const KNOWN_FOR: i64 = 90 * 86_400_000_000;

/// One sweep; returns how many rows went.
/// `throttle_window`: how long a failed sign-in counts (the longest window
/// of the login policies).
pub async fn sweep_once(
    db: &Db,
    limits: &Limiters,
    throttle_window: std::time::Duration,
) -> Result<u64, crate::store::Error> {
    let now = now_micros();
    limits.forget_idle();
    Ok(throttle_store::sweep(db, now, throttle_window).await?
        + identities::sweep_states(db, now).await?
        + verifications::sweep(db, now).await?
        + ledger::sweep(db, now, LEDGER_WINDOW).await?
        + throttle_store::sweep_known(db, now - KNOWN_FOR).await?)
}

/// Runs until the task is aborted.
pub async fn run(db: Db, limits: std::sync::Arc<Limiters>, throttle_window: std::time::Duration) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = sweep_once(&db, &limits, throttle_window).await {
            tracing::warn!(error = %err, "sweep of expired rows failed");
        }
    }
}
