//! One webhook delivery attempt: POST the event's body, signed the
//! Standard Webhooks way, and say how it went.

use std::{net::IpAddr, sync::Arc, time::Duration};

use crate::domain::{
    time::now_micros,
    webhook::{is_public, sign},
};

use super::guard::PublicOnly;

/// Sends webhook deliveries.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    allow_private: bool,
}

/// What an attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered(u16),
    /// Another answer, or none (`None` with the reason).
    Failed(Option<u16>, String),
}

impl WebhookSender {
    pub fn new(
        timeout: Duration,
        allow_private: bool,
        extra_roots: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let mut builder = super::client_builder(timeout, extra_roots)?;
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            allow_private,
        })
    }

    /// POSTs `body` to `url` as event `event_id`, signed with `secret`.
    pub async fn send(&self, url: &str, secret: &str, event_id: &str, body: &str) -> Outcome {
        let Ok(parsed) = url::Url::parse(url) else {
            return Outcome::Failed(None, "the URL no longer parses".into());
        };
        // IP literals are never resolved, so the guard cannot see them.
        if !self.allow_private
            && let Some(ip) = parsed
                .host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            && !is_public(ip)
        {
            return Outcome::Failed(None, format!("refused: {ip} is not a public address"));
        }
        let timestamp = now_micros() / 1_000_000;
        let signature = sign(secret, event_id, timestamp, body);
        let sent = self
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    Outcome::Delivered(status.as_u16())
                } else {
                    Outcome::Failed(
                        Some(status.as_u16()),
                        format!("the endpoint answered {status}"),
                    )
                }
            }
            Err(err) => Outcome::Failed(None, describe(&err)),
        }
    }
}

/// A transport error in one line, with its innermost cause (the resolver's
/// refusal, the TLS failure, the refused connection).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut innermost = None;
    while let Some(s) = source {
        innermost = Some(s.to_string());
        source = s.source();
    }
    match innermost {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}
