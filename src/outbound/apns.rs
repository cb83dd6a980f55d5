//! Apple Push Notification service, token-based: an ES256 provider token
//! (signed with `jsonwebtoken`, renewed every 50 minutes as Apple asks)
//! and `POST {UNIO_APNS_URL}/3/device/{token}` over HTTP/2.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::sync::Mutex;

use super::PushOutcome;
use crate::{
    config::ApnsConfig,
    domain::{push::Push, time::now_micros},
};

/// Apple refuses provider tokens older than an hour, and renewals more
/// often than every 20 minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

pub struct Apns {
    client: reqwest::Client,
    key: EncodingKey,
    key_id: String,
    team_id: String,
    topic: String,
    url: String,
    token: Mutex<Option<(String, Instant)>>,
}

impl Apns {
    pub fn new(config: &ApnsConfig, client: reqwest::Client) -> Result<Self, String> {
        let path = config.key_file.display();
        let pem = std::fs::read(&config.key_file)
            .map_err(|e| format!("UNIO_APNS_KEY_FILE {path}: {e}"))?;
        let key = EncodingKey::from_ec_pem(&pem)
            .map_err(|e| format!("UNIO_APNS_KEY_FILE {path}: not an ES256 key (.p8): {e}"))?;
        Ok(Self {
            client,
            key,
            key_id: config.key_id.clone(),
            team_id: config.team_id.clone(),
            topic: config.topic.clone(),
            url: config.url.clone(),
            token: Mutex::new(None),
        })
    }

    async fn provider_token(&self) -> Result<String, String> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let iat = (now_micros() / 1_000_000) as u64;
        let token = jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.team_id,
                iat,
            },
            &self.key,
        )
        .map_err(|e| format!("signing the APNs provider token: {e}"))?;
        *cached = Some((token.clone(), Instant::now() + TOKEN_LIFETIME));
        Ok(token)
    }

    pub async fn send(&self, token: &str, push: &Push) -> PushOutcome {
        let bearer = match self.provider_token().await {
            Ok(bearer) => bearer,
            Err(why) => return PushOutcome::Retry(why),
        };
        let expiration = (now_micros() / 1_000_000) as u64 + push.ttl_seconds;
        let sent = self
            .client
            .post(format!("{}/3/device/{token}", self.url))
            .header("authorization", format!("bearer {bearer}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", if push.urgent { "10" } else { "5" })
            .header("apns-expiration", expiration.to_string())
            .header("content-type", "application/json")
            .body(push.apns_payload().to_string())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // Without the URL: it holds the device token.
            Err(e) => return PushOutcome::Retry(format!("APNs: {}", e.without_url())),
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        match status {
            200 => PushOutcome::Sent,
            410 => PushOutcome::Dead(format!("APNs answered 410: {body}")),
            400 if body.contains("BadDeviceToken") => {
                PushOutcome::Dead(format!("APNs answered 400: {body}"))
            }
            403 if body.contains("ProviderToken") => {
                // Forget the token this request used (not a newer one).
                let mut cached = self.token.lock().await;
                if matches!(cached.as_ref(), Some((t, _)) if *t == bearer) {
                    *cached = None;
                }
                PushOutcome::Retry(format!("APNs answered 403: {body}"))
            }
            429 | 500..=599 => PushOutcome::Retry(format!("APNs answered {status}: {body}")),
            // A wrong topic (DeviceTokenNotForTopic), a refused payload:
            // the server's configuration, not the device; no retry helps.
            _ => PushOutcome::Drop(format!("APNs answered {status}: {body}")),
        }
    }
}
