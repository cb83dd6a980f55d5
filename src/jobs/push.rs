//! Sends queued pushes (`push_outbox`) to phones through FCM and APNs
//! (DESIGN §12).
//!
//! Each sweep claims a batch with a lease (of N nodes one sends each push;
//! a node claims only the platforms it has credentials for), sends them
//! concurrently, and then: a sent push is deleted; a token the platform
//! calls dead takes its device (and whatever was queued for it) with it; a
//! refusal no retry can change (a payload, the server's configuration)
//! drops the push; anything else is retried after 1 s, 2 s, 4 s… (at most
//! a minute apart) until its deadline: a minute for a ring (its push also
//! goes when the call stops ringing), ten minutes for the rest. The
//! platforms are told the same lifetime (FCM `android.ttl`,
//! `apns-expiration`), so an offline phone does not ring hours later.

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
    /// What this node has credentials for: it claims only those pushes.
    platforms: Vec<Platform>,
    lease: Duration,
}

impl Pusher {
    pub fn new(db: Db, fcm: Option<Fcm>, apns: Option<Apns>, timeout: Duration) -> Self {
        let mut platforms = Vec::new();
        if fcm.is_some() {
            platforms.push(Platform::Fcm);
        }
        if apns.is_some() {
            platforms.push(Platform::Apns);
        }
        Self {
            db,
            fcm: fcm.map(Arc::new),
            apns: apns.map(Arc::new),
            platforms,
            lease: timeout * 3 + Duration::from_secs(30),
        }
    }

    /// Claims what is due, at most `room` pushes, and starts sending them
    /// into `sends`; returns how many.
    async fn claim(
        &self,
        room: usize,
        sends: &mut JoinSet<(DuePush, PushOutcome)>,
    ) -> Result<usize, crate::store::Error> {
        if room == 0 {
            return Ok(0);
        }
        let now = now_micros();
        let due = devices::claim_due(
            &self.db,
            now,
            now + micros(self.lease),
            room as u32,
            &self.platforms,
        )
        .await?;
        let count = due.len();
        // One token fetch for the batch, before the sends (they then wait
        // for nothing but their own request).
        if let Some(fcm) = &self.fcm
            && due.iter().any(|p| p.platform == Platform::Fcm.as_str())
        {
            let _ = fcm.access_token().await;
        }
        for push in due {
            let (fcm, apns) = (self.fcm.clone(), self.apns.clone());
            sends.spawn(async move {
                let message = push.push(now_micros());
                let outcome = match (Platform::from_db(&push.platform), fcm, apns) {
                    (Some(Platform::Fcm), Some(fcm), _) => fcm.send(&push.token, &message).await,
                    (Some(Platform::Apns), _, Some(apns)) => apns.send(&push.token, &message).await,
                    // Not claimed without credentials; keep the device.
                    _ => PushOutcome::Retry(format!(
                        "no credentials for {} on this node",
                        push.platform
                    )),
                };
                (push, outcome)
            });
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
            PushOutcome::Drop(why) => {
                tracing::warn!(push_id = %push.id, %why, "push refused; not retried");
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

    /// Runs until the task is aborted. Sends run alongside the sweeps: a
    /// push that hangs (up to its timeout) holds up only itself, not the
    /// rings claimed after it; at most [`BATCH`] are in flight.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sends = JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let room = (BATCH as usize).saturating_sub(sends.len());
                    if let Err(err) = self.claim(room, &mut sends).await {
                        tracing::warn!(error = %err, "push sweep failed");
                    }
                }
                Some(done) = sends.join_next() => {
                    let Ok((push, outcome)) = done else { continue };
                    if let Err(err) = self.record(&push, outcome).await {
                        tracing::warn!(error = %err, push_id = %push.id, "recording a push failed");
                    }
                }
            }
        }
    }
}
