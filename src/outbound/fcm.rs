//! Firebase Cloud Messaging, HTTP v1: an OAuth 2.0 access token from the
//! service account's JWT-bearer grant (RFC 7523; RS256, signed with
//! `jsonwebtoken`), kept until shortly before it expires, then
//! `POST {UNIO_FCM_URL}/v1/projects/{project}/messages:send`.
//!
//! The grant is three form fields and a JSON answer: less than pulling in
//! an SDK (Google publishes none for Rust).

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::sync::Mutex;

use super::PushOutcome;
use crate::{
    config::FcmConfig,
    domain::{push::Push, time::now_micros},
};

/// How long a failed token fetch is not repeated.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// The fields of a service-account JSON file that matter here.
#[derive(serde::Deserialize)]
struct ServiceAccount {
    project_id: String,
    #[serde(default)]
    private_key_id: Option<String>,
    private_key: String,
    client_email: String,
    token_uri: String,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

pub struct Fcm {
    client: reqwest::Client,
    account: ServiceAccount,
    key: EncodingKey,
    send_url: String,
    /// The access token (or why there is none) and when to stop using it.
    token: Mutex<Option<(Result<String, String>, Instant)>>,
}

impl Fcm {
    pub fn new(config: &FcmConfig, client: reqwest::Client) -> Result<Self, String> {
        let path = config.credentials_file.display();
        let raw = std::fs::read(&config.credentials_file)
            .map_err(|e| format!("UNIO_FCM_CREDENTIALS {path}: {e}"))?;
        let account: ServiceAccount = serde_json::from_slice(&raw)
            .map_err(|e| format!("UNIO_FCM_CREDENTIALS {path}: not a service-account file: {e}"))?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| format!("UNIO_FCM_CREDENTIALS {path}: private_key: {e}"))?;
        if !(account.token_uri.starts_with("https://") || account.token_uri.starts_with("http://"))
        {
            return Err(format!(
                "UNIO_FCM_CREDENTIALS {path}: token_uri must be a URL"
            ));
        }
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            config.url, account.project_id
        );
        Ok(Self {
            client,
            account,
            key,
            send_url,
            token: Mutex::new(None),
        })
    }

    /// A valid access token, fetched anew when the last one is about to
    /// expire. Concurrent callers wait for one fetch; a failed fetch is
    /// remembered for a few seconds, so a hanging token endpoint costs one
    /// timeout, not one per push.
    pub async fn access_token(&self) -> Result<String, String> {
        let mut cached = self.token.lock().await;
        match cached.as_ref() {
            Some((Ok(token), until)) if Instant::now() < *until => return Ok(token.clone()),
            Some((Err(why), until)) if Instant::now() < *until => return Err(why.clone()),
            _ => {}
        }
        let fetched = self.fetch_token().await;
        let until = match &fetched {
            Ok((_, lifetime)) => Instant::now() + *lifetime,
            Err(_) => Instant::now() + FAILURE_MEMORY,
        };
        let fetched = fetched.map(|(token, _)| token);
        *cached = Some((fetched.clone(), until));
        fetched
    }

    async fn fetch_token(&self) -> Result<(String, Duration), String> {
        let now = (now_micros() / 1_000_000) as u64;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let claims = Claims {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: &self.account.token_uri,
            iat: now,
            exp: now + 3_600,
        };
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("signing the FCM grant: {e}"))?;
        let response = self
            .client
            .post(&self.account.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type={GRANT_TYPE}&assertion={assertion}"))
            .send()
            .await
            .map_err(|e| format!("FCM token request: {}", e.without_url()))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("FCM token request answered {status}: {body}"));
        }
        #[derive(serde::Deserialize)]
        struct Granted {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let granted: Granted =
            serde_json::from_str(&body).map_err(|e| format!("FCM token response: {e}"))?;
        let lifetime =
            Duration::from_secs(granted.expires_in.unwrap_or(3_600).clamp(120, 3_600) - 60);
        Ok((granted.access_token, lifetime))
    }

    pub async fn send(&self, token: &str, push: &Push) -> PushOutcome {
        let access = match self.access_token().await {
            Ok(access) => access,
            Err(why) => return PushOutcome::Retry(why),
        };
        let sent = self
            .client
            .post(&self.send_url)
            .bearer_auth(&access)
            .header("content-type", "application/json")
            .body(push.fcm_message(token).to_string())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return PushOutcome::Retry(format!("FCM: {}", e.without_url())),
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        match status {
            200..=299 => PushOutcome::Sent,
            // The token is gone (app uninstalled, token rotated), was never
            // one, or belongs to another Firebase project.
            404 | 400 if body.contains("UNREGISTERED") => {
                PushOutcome::Dead(format!("FCM answered {status}: {body}"))
            }
            400 if body.contains("registration token") => {
                PushOutcome::Dead(format!("FCM answered 400: {body}"))
            }
            403 if body.contains("SENDER_ID_MISMATCH") => {
                PushOutcome::Dead(format!("FCM answered 403: {body}"))
            }
            401 => {
                // Forget the token this request used (not a newer one).
                let mut cached = self.token.lock().await;
                if matches!(cached.as_ref(), Some((Ok(t), _)) if *t == access) {
                    *cached = None;
                }
                PushOutcome::Retry(format!("FCM answered 401: {body}"))
            }
            429 | 500..=599 => PushOutcome::Retry(format!("FCM answered {status}: {body}")),
            // A wrong project or URL (404), a payload refused: not the
            // device's fault, and no retry will change it.
            _ => PushOutcome::Drop(format!("FCM answered {status}: {body}")),
        }
    }
}
