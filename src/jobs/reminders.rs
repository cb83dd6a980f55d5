//! Reminders before meetings start. Each sweep finds scheduled meetings
//! starting within the lead time and writes one reminder per member, keyed
//! by (meeting, user, start time) in a UNIQUE column: repeated sweeps,
//! restarts and several nodes racing all produce exactly one reminder, and
//! a rescheduled meeting gets a new one. Invitees without an account get the
//! reminder by email only (when SMTP is configured), deduplicated the same way.

use std::time::Duration;

use crate::{
    domain::{
        notification::{Draft, email_reminder_key, reminder_key},
        time::{micros, now_micros},
    },
    state::AppState,
    store::{mail, notifications},
    wire::notification as convert_notification,
};

/// How often to sweep: a tenth of the lead, between 100 ms and 30 s.
pub fn sweep_interval(lead: Duration) -> Duration {
    (lead / 10).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// One sweep; returns how many reminders this call wrote.
pub async fn sweep_once(state: &AppState, lead: Duration) -> Result<usize, crate::store::Error> {
    let now = now_micros();
    let candidates = notifications::reminder_candidates(&state.db, now, micros(lead)).await?;
    let mut sent = Vec::new();
    for (meeting_id, title, start_at, user_id) in candidates {
        let minutes = ((start_at - now) / 60_000_000).max(0) + 1;
        let draft = Draft::reminder(&meeting_id, &title, minutes).mailed();
        let key = reminder_key(&meeting_id, &user_id, start_at);
        if let Some(record) =
            notifications::send_once(&state.db, &user_id, &draft, &key, start_at, now).await?
        {
            sent.push(record);
        }
    }
    let mut count = sent.len();
    state.inbox.publish(sent.iter().map(convert_notification));
    // Invitees without a (verified) account hear by email.
    for (meeting_id, title, start_at, email) in
        notifications::email_reminder_candidates(&state.db, now, micros(lead)).await?
    {
        let minutes = ((start_at - now) / 60_000_000).max(0) + 1;
        let draft = Draft::reminder(&meeting_id, &title, minutes);
        let key = email_reminder_key(&meeting_id, &email);
        if mail::enqueue_once(&state.db, &email, &draft, &key, start_at, now).await? {
            count += 1;
        }
    }
    Ok(count)
}

/// Runs until the task is aborted.
pub async fn run(state: AppState, lead: Duration) {
    let mut tick = tokio::time::interval(sweep_interval(lead));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = sweep_once(&state, lead).await {
            tracing::warn!(error = %err, "reminder sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_a_tenth_of_the_lead() {
        assert_eq!(
            sweep_interval(Duration::from_secs(600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }
}
