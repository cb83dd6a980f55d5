//! Outbound HTTP: what UNIO sends to others' servers (webhooks, FCM, APNs).
//!
//! - [`guard`]: the DNS resolver that keeps webhooks off private networks.
//! - [`webhook`]: one signed webhook delivery attempt.
//! - [`fcm`], [`apns`]: one push to an Android or iOS device.
//!
//! Every client here is reqwest (hyper, rustls) with a timeout, no
//! redirects (an endpoint that answers 3xx has not taken the event) and no
//! proxy.

pub mod apns;
pub mod fcm;
pub mod guard;
pub mod webhook;

/// How one push went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Sent,
    /// The platform says the token is no more: forget the device.
    Dead(String),
    /// Try again later.
    Retry(String),
    /// Refused for a reason a retry will not change (a payload or a
    /// configuration the platform rejects): give this push up, keep the
    /// device.
    Drop(String),
}

use std::{path::Path, time::Duration};

/// A client builder with what every outbound client shares: the agent
/// name, a connect timeout, no redirects, and the extra roots of
/// `UNIO_OUTBOUND_CA_FILE`.
pub fn client_builder(
    timeout: Duration,
    extra_roots: Option<&Path>,
) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("UNIO/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        // Not through a proxy from the environment (HTTPS_PROXY and co.): a
        // proxy resolves names itself, past the webhook guard.
        .no_proxy();
    if let Some(path) = extra_roots {
        let pem = std::fs::read(path)
            .map_err(|e| format!("UNIO_OUTBOUND_CA_FILE {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("UNIO_OUTBOUND_CA_FILE {}: {e}", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}
