//! Delivers queued webhook events (DESIGN §12) from the outbox the causes
//! wrote (`store::webhooks`).
//!
//! Each sweep claims due deliveries with a lease (a single conditional
//! UPDATE, so of N nodes exactly one attempts a delivery at a time, and
//! only the lease holder records the outcome), and starts them without
//! waiting for the ones before: at most [`PER_ENDPOINT`] in flight to one
//! endpoint and [`MAX_IN_FLIGHT`] in all on this node, so an endpoint that
//! hangs until the timeout slows only itself. A failure is retried after
//! `UNIO_WEBHOOK_RETRY_MIN`, then 4 times longer each time (at most 10
//! hours apart) until 24 hours after the event was queued; a delivery that
//! never got a 2xx is then FAILED, and RedeliverWebhook starts it over. A
//! node that dies mid-attempt leaves the lease to run out, and another node
//! retries: delivery is at least once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    domain::time::{Micros, micros, now_micros},
    outbound::webhook::{Outcome, WebhookSender},
    store::{
        Db,
        webhooks::{self, Attempt, DueDelivery},
    },
};

/// Attempts in flight to one endpoint from this node.
pub const PER_ENDPOINT: usize = 4;
/// Attempts in flight from this node.
pub const MAX_IN_FLIGHT: usize = 64;
/// Finished deliveries stay in the log this long.
const KEEP_LOG: Duration = Duration::from_secs(30 * 86_400);
const POLL: Duration = Duration::from_millis(250);
const PURGE_EVERY: Duration = Duration::from_secs(3_600);
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
    /// Longer than an attempt can take, with room to spare.
    lease: Duration,
    /// Attempts in flight per endpoint on this node.
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl Deliverer {
    pub fn new(db: Db, sender: WebhookSender, retry_min: Duration, timeout: Duration) -> Self {
        Self {
            db,
            sender,
            retry_min,
            lease: timeout * 3 + Duration::from_secs(30),
            in_flight: Arc::default(),
        }
    }

    /// One sweep: claims what this node has room for and starts it;
    /// returns how many attempts it started.
    pub async fn sweep_once(&self) -> Result<usize, crate::store::Error> {
        let (busy, total) = {
            let in_flight = self.in_flight.lock().expect("in-flight map");
            let busy: Vec<String> = in_flight
                .iter()
                .filter(|(_, n)| **n >= PER_ENDPOINT)
                .map(|(id, _)| id.clone())
                .collect();
            (busy, in_flight.values().sum::<usize>())
        };
        if total >= MAX_IN_FLIGHT {
            return Ok(0);
        }
        let now = now_micros();
        let due = webhooks::claim_due(
            &self.db,
            now,
            now + micros(self.lease),
            (MAX_IN_FLIGHT - total) as u32,
            PER_ENDPOINT as u32,
            &busy,
        )
        .await?;
        let started = due.len();
        for delivery in due {
            *self
                .in_flight
                .lock()
                .expect("in-flight map")
                .entry(delivery.webhook_id.clone())
                .or_default() += 1;
            let attempt = Attempting {
                db: self.db.clone(),
                sender: self.sender.clone(),
                retry_min: self.retry_min,
                in_flight: self.in_flight.clone(),
                webhook_id: delivery.webhook_id.clone(),
            };
            tokio::spawn(attempt.run(delivery));
        }
        Ok(started)
    }

    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purged = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            if let Err(err) = self.sweep_once().await {
                tracing::warn!(error = %err, "webhook sweep failed");
            }
            if purged.elapsed() >= PURGE_EVERY {
                purged = tokio::time::Instant::now();
                if let Err(err) = webhooks::purge(&self.db, now_micros() - micros(KEEP_LOG)).await {
                    tracing::warn!(error = %err, "webhook log purge failed");
                }
            }
        }
    }
}

/// One attempt under way; gives its endpoint's slot back when done,
/// however it ends.
struct Attempting {
    db: Db,
    sender: WebhookSender,
    retry_min: Duration,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    webhook_id: String,
}

impl Drop for Attempting {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().expect("in-flight map");
        if let Some(n) = in_flight.get_mut(&self.webhook_id) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.webhook_id);
            }
        }
    }
}

impl Attempting {
    async fn run(self, delivery: DueDelivery) {
        let outcome = self
            .sender
            .send(
                &delivery.url,
                &delivery.secret,
                &delivery.event_id,
                &delivery.body,
            )
            .await;
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
        // The outcome is worth a few tries: without it, the lease runs out
        // and the event goes again.
        for wait in [0, 200, 1_000, 5_000] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match webhooks::record_attempt(
                &self.db,
                &delivery.id,
                delivery.lease_until,
                &attempt,
                now,
            )
            .await
            {
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(error = %err, delivery_id = %delivery.id, "recording a webhook attempt failed")
                }
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
