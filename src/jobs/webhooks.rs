//! Delivers queued webhook events (DESIGN §12) from the outbox the causes
//! wrote (`store::webhooks`).
//!
//! Each sweep claims a batch of due deliveries with a lease (a single
//! conditional UPDATE, so of N nodes exactly one attempts a delivery at a
//! time), sends them with at most [`PER_ENDPOINT`] in flight per endpoint
//! on this node, and writes each outcome to the delivery log. A failure is
//! retried after `UNIO_WEBHOOK_RETRY_MIN`, then 4 times longer each time
//! (at most 10 hours apart) until 24 hours after the event was queued; a
//! delivery that never got a 2xx is then FAILED, and RedeliverWebhook
//! starts it over. A node that dies mid-attempt leaves the lease to run
//! out, and another node retries: delivery is at least once.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    domain::time::{Micros, micros, now_micros},
    outbound::webhook::{Outcome, WebhookSender},
    store::{
        Db,
        webhooks::{self, Attempt, DueDelivery},
    },
};

const BATCH: u32 = 64;
/// Attempts in flight to one endpoint from this node.
pub const PER_ENDPOINT: usize = 4;
/// Finished deliveries stay in the log this long.
const KEEP_LOG: Duration = Duration::from_secs(30 * 86_400);
const POLL: Duration = Duration::from_millis(250);
const LONGEST_WAIT: Micros = 10 * 3_600 * 1_000_000;

/// The delay before the retry after `attempts` failed attempts.
pub fn backoff(first: Duration, attempts: i32) -> Micros {
    let factor = 4i64.saturating_pow(attempts.saturating_sub(1).clamp(0, 20) as u32);
    micros(first).saturating_mul(factor).min(LONGEST_WAIT)
}

pub struct Deliverer {
    db: Db,
    sender: WebhookSender,
    retry_min: Duration,
    /// Longer than a batch can take: every attempt of it, one endpoint's
    /// at a time in [`PER_ENDPOINT`] lanes, each up to `timeout`.
    lease: Duration,
}

impl Deliverer {
    pub fn new(db: Db, sender: WebhookSender, retry_min: Duration, timeout: Duration) -> Self {
        Self {
            db,
            sender,
            retry_min,
            lease: timeout * (BATCH / PER_ENDPOINT as u32 + 2),
        }
    }

    /// One sweep; returns how many attempts it made.
    pub async fn sweep_once(&self) -> Result<usize, crate::store::Error> {
        let now = now_micros();
        let due = webhooks::claim_due(&self.db, now, now + micros(self.lease), BATCH).await?;
        let count = due.len();
        let mut lanes: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut attempts = JoinSet::new();
        for delivery in due {
            let lane = lanes
                .entry(delivery.webhook_id.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(PER_ENDPOINT)))
                .clone();
            let sender = self.sender.clone();
            attempts.spawn(async move {
                let _permit = lane.acquire_owned().await;
                let outcome = sender
                    .send(
                        &delivery.url,
                        &delivery.secret,
                        &delivery.event_id,
                        &delivery.body,
                    )
                    .await;
                (delivery, outcome)
            });
        }
        while let Some(done) = attempts.join_next().await {
            let Ok((delivery, outcome)) = done else {
                continue;
            };
            self.record(&delivery, outcome).await?;
        }
        Ok(count)
    }

    async fn record(
        &self,
        delivery: &DueDelivery,
        outcome: Outcome,
    ) -> Result<(), crate::store::Error> {
        let now = now_micros();
        let attempt = match outcome {
            Outcome::Delivered(status) => Attempt::Delivered { status },
            Outcome::Failed(status, error) => {
                let retry_at = now + backoff(self.retry_min, delivery.attempts + 1);
                tracing::warn!(
                    delivery_id = %delivery.id,
                    webhook_id = %delivery.webhook_id,
                    attempts = delivery.attempts + 1,
                    %error,
                    "webhook delivery failed"
                );
                Attempt::Failed {
                    status,
                    error,
                    retry_at: (retry_at <= delivery.deadline_at).then_some(retry_at),
                }
            }
        };
        webhooks::record_attempt(&self.db, &delivery.id, &attempt, now).await
    }

    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweeps: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(err) = self.sweep_once().await {
                tracing::warn!(error = %err, "webhook sweep failed");
            }
            sweeps += 1;
            // About once an hour, forget what the log no longer needs.
            if sweeps % 14_400 == 1
                && let Err(err) = webhooks::purge(&self.db, now_micros() - micros(KEEP_LOG)).await
            {
                tracing::warn!(error = %err, "webhook log purge failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_up_to_ten_hours() {
        let first = Duration::from_secs(5);
        let seconds: Vec<i64> = (1..=10).map(|n| backoff(first, n) / 1_000_000).collect();
        assert_eq!(
            seconds,
            [5, 20, 80, 320, 1_280, 5_120, 20_480, 36_000, 36_000, 36_000]
        );
    }
}
