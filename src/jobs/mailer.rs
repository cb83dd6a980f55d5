//! Sends queued email (`mail_outbox`) over SMTP, off the request path.
//!
//! Without `UNIO_SMTP_URL` the console mailer takes its place (DESIGN §7):
//! each mail becomes one INFO log line with its recipient, subject and the
//! links of its body, so a developer on the embedded default can still
//! follow a verification link. With SMTP configured nothing of a body is
//! logged. Either way a sent row keeps no body: links in it are secrets.
//!
//! Each sweep leases a batch of due rows (so concurrent nodes never send
//! one twice at once), sends them, and records the outcome; a failure is
//! retried with exponential backoff (2 s, 4 s, … up to an hour) until
//! `MAX_ATTEMPTS`, and an address that cannot be parsed is given up at once.

use std::time::Duration;

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::Mailbox};

use crate::{
    domain::time::{micros, now_micros},
    metrics::Metrics,
    store::{Db, mail},
};

const BATCH: u32 = 20;
/// How long a claimed row stays leased to this sender: longer than a whole
/// batch can take (20 sends at a 20 s timeout each), so no other node
/// claims a row this one is still sending.
const LEASE: Duration = Duration::from_secs(1800);

/// Backoff before attempt `attempts + 1`.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.clamp(1, 12) as u32).min(3600))
}

/// Where mail goes.
enum Transport {
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
    },
    /// The log, for a server without SMTP.
    Console,
}

/// A configured sender.
pub struct Mailer {
    transport: Transport,
}

impl Mailer {
    /// An SMTP sender, or why the configuration is unusable.
    pub fn new(smtp_url: &str, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| format!("UNIO_SMTP_URL: {e}"))?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let from = from.parse().map_err(|e| format!("UNIO_MAIL_FROM: {e}"))?;
        Ok(Self {
            transport: Transport::Smtp {
                transport: Box::new(transport),
                from,
            },
        })
    }

    /// The console mailer: every mail is a log line.
    pub fn console() -> Self {
        Self {
            transport: Transport::Console,
        }
    }

    /// One sweep; returns how many emails were sent.
    pub async fn sweep_once(
        &self,
        db: &Db,
        metrics: &Metrics,
    ) -> Result<usize, crate::store::Error> {
        let now = now_micros();
        let due = mail::claim_due(db, now, now + micros(LEASE), BATCH).await?;
        let mut sent = 0;
        for email in due {
            let Transport::Smtp { transport, from } = &self.transport else {
                tracing::info!(
                    to = %email.to_address,
                    subject = ?email.subject,
                    links = %links_in(&email.body).join(" "),
                    "mail (console mailer: set UNIO_SMTP_URL to send mail)"
                );
                mail::mark_sent(db, &email.id, now_micros()).await?;
                metrics.mail_sent();
                sent += 1;
                continue;
            };
            let to: Mailbox = match email.to_address.parse() {
                Ok(to) => to,
                Err(e) => {
                    mail::mark_failed(db, &email.id, &format!("bad address: {e}"), None).await?;
                    continue;
                }
            };
            let message = Message::builder()
                .from(from.clone())
                .to(to)
                .subject(&email.subject)
                .body(email.body.clone());
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    mail::mark_failed(db, &email.id, &format!("cannot build: {e}"), None).await?;
                    continue;
                }
            };
            match transport.send(message).await {
                Ok(_) => {
                    mail::mark_sent(db, &email.id, now_micros()).await?;
                    metrics.mail_sent();
                    sent += 1;
                }
                Err(e) => {
                    metrics.mail_failed();
                    tracing::warn!(error = %e, attempts = email.attempts + 1, "email not sent; will retry");
                    let retry_at = now_micros() + micros(backoff(email.attempts + 1));
                    mail::mark_failed(db, &email.id, &e.to_string(), Some(retry_at)).await?;
                }
            }
        }
        Ok(sent)
    }

    /// Runs until the task is aborted.
    pub async fn run(self, db: Db, every: Duration, metrics: std::sync::Arc<Metrics>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = self.sweep_once(&db, &metrics).await {
                tracing::warn!(error = %err, "mail sweep failed");
            }
        }
    }
}

/// The http(s) links of a mail body, for the console mailer's line.
pub fn links_in(body: &str) -> Vec<&str> {
    body.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
        .filter(|word| word.starts_with("http://") || word.starts_with("https://"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_carry_the_links_of_a_body() {
        let body =
            "Hello,\n\nopen http://localhost:50051/verify?token=abc\nor <https://x.example/m/1>.\n";
        assert_eq!(
            links_in(body),
            [
                "http://localhost:50051/verify?token=abc",
                "https://x.example/m/1"
            ]
        );
        assert!(links_in("no links here").is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), Duration::from_secs(3600));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        assert!(
            Mailer::new("ftp://x", "a@example.com")
                .err()
                .unwrap()
                .starts_with("UNIO_SMTP_URL")
        );
        assert!(
            Mailer::new("smtp://127.0.0.1:2525", "not an address")
                .err()
                .unwrap()
                .starts_with("UNIO_MAIL_FROM")
        );
    }
}
