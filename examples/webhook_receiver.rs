//! A webhook receiver that verifies UNIO's deliveries the Standard Webhooks
//! way, for trying webhooks out and as a model for your own endpoint:
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_… cargo run --example webhook_receiver   # listens on 127.0.0.1:8088
//! ```
//!
//! Each POST is checked before it is believed: the `webhook-timestamp` is
//! within five minutes (a replayed request is refused), and one of the
//! `webhook-signature` entries is `v1,` + base64 HMAC-SHA256 of
//! `webhook-id.webhook-timestamp.body`, keyed with the base64-decoded part
//! of the secret after `whsec_`, compared in constant time. A verified
//! event is printed and answered 204; anything else gets 401 (and UNIO
//! retries). Deduplicate on `webhook-id`: delivery is at least once.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const TOLERANCE_SECONDS: i64 = 300;

/// Why a request was not believed.
fn verify(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = header("webhook-id").ok_or("no webhook-id")?;
    let timestamp = header("webhook-timestamp").ok_or("no webhook-timestamp")?;
    let signatures = header("webhook-signature").ok_or("no webhook-signature")?;
    let sent: i64 = timestamp.parse().map_err(|_| "bad webhook-timestamp")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if (now - sent).abs() > TOLERANCE_SECONDS {
        return Err("webhook-timestamp too far from now");
    }
    for entry in signatures.split(' ') {
        let Some(signature) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(signature) = B64.decode(signature) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| "bad key")?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&signature).is_ok() {
            return Ok(());
        }
    }
    Err("no valid signature")
}

async fn receive(
    State(key): State<std::sync::Arc<Vec<u8>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    match verify(&key, &headers, &body) {
        Ok(()) => {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            println!("{id} {}", String::from_utf8_lossy(&body));
            StatusCode::NO_CONTENT
        }
        Err(why) => {
            eprintln!("refused: {why}");
            StatusCode::UNAUTHORIZED
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("WEBHOOK_SECRET")
        .map_err(|_| "set WEBHOOK_SECRET to the secret CreateWebhook returned")?;
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(&secret))
        .map_err(|_| "WEBHOOK_SECRET is not whsec_<base64>")?;
    let addr =
        std::env::var("WEBHOOK_RECEIVER_ADDR").unwrap_or_else(|_| "127.0.0.1:8088".to_owned());
    let app = Router::new()
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .with_state(std::sync::Arc::new(key));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
