//! Sends queued pushes (`push_outbox`) to phones through FCM and APNs
//! (DESIGN §12).
//!
//! Each sweep claims a batch with a lease (of N nodes one sends each push),
//! sends them concurrently, and then: a sent push is deleted; a token the
//! platform calls dead takes its device (and whatever was queued for it)
//! with it; anything else is retried after 1 s, 2 s, 4 s… (at most a
//! minute apart) until ten minutes after it was queued, when a ring or a
//! reminder no longer helps and the push is dropped.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;

use crate::{
    domain::{
        push::Platform,
        time::{micros, now_micros},
    },
    outbound::{PushOutcome, apns::Apns, fcm::Fcm},
    store::{
        Db,
        devices::{self, DuePush},
    },
};

const BATCH: u32 = 64;
const POLL: Duration = Duration::from_millis(250);

/// The retry delay after `attempts` failed attempts.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.clamp(0, 6) as u32).min(60))
}

pub struct Pusher {
    db: Db,
    fcm: Option<Arc<Fcm>>,
    apns: Option<Arc<Apns>>,
    lease: Duration,
}

impl Pusher {
    pub fn new(db: Db, fcm: Option<Fcm>, apns: Option<Apns>, timeout: Duration) -> Self {
        Self {
            db,
            fcm: fcm.map(Arc::new),
            apns: apns.map(Arc::new),
            lease: timeout * 3 + Duration::from_secs(30),
        }
    }

    /// One sweep; returns how many pushes were attempted.
    pub async fn sweep_once(&self) -> Result<usize, crate::store::Error> {
        let now = now_micros();
        let due = devices::claim_due(&self.db, now, now + micros(self.lease), BATCH).await?;
        let count = due.len();
        let mut sends = JoinSet::new();
        for push in due {
            let (fcm, apns) = (self.fcm.clone(), self.apns.clone());
            sends.spawn(async move {
                let message = push.push();
                let outcome = match (Platform::from_db(&push.platform), fcm, apns) {
                    (Some(Platform::Fcm), Some(fcm), _) => fcm.send(&push.token, &message).await,
                    (Some(Platform::Apns), _, Some(apns)) => apns.send(&push.token, &message).await,
                    _ => PushOutcome::Dead(format!(
                        "no credentials for {} on this server",
                        push.platform
                    )),
                };
                (push, outcome)
            });
        }
        while let Some(done) = sends.join_next().await {
            let Ok((push, outcome)) = done else {
                continue;
            };
            if let Err(err) = self.record(&push, outcome).await {
                tracing::warn!(error = %err, push_id = %push.id, "recording a push failed");
            }
        }
        Ok(count)
    }

    async fn record(
        &self,
        push: &DuePush,
        outcome: PushOutcome,
    ) -> Result<(), crate::store::Error> {
        match outcome {
            PushOutcome::Sent => {
                tracing::debug!(push_id = %push.id, kind = %push.kind, "push sent");
                devices::finish(&self.db, &push.id).await
            }
            PushOutcome::Dead(why) => {
                tracing::info!(device_id = %push.device_id, %why, "device token dead; device removed");
                devices::remove(&self.db, &push.device_id).await
            }
            PushOutcome::Retry(why) => {
                let at = now_micros() + micros(backoff(push.attempts));
                if at > push.deadline_at {
                    tracing::warn!(push_id = %push.id, %why, "push given up");
                    devices::finish(&self.db, &push.id).await
                } else {
                    tracing::warn!(push_id = %push.id, %why, "push failed; will retry");
                    devices::retry(&self.db, &push.id, push.lease_until, at).await
                }
            }
        }
    }

    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = self.sweep_once().await {
                tracing::warn!(error = %err, "push sweep failed");
            }
        }
    }
}
