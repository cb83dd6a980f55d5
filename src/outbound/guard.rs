//! Server-side request forgery protection for webhooks: a DNS resolver for
//! reqwest that answers only public addresses (`domain::webhook::is_public`).
//!
//! Checking a URL's host once when the webhook is created is not enough: a
//! name can resolve to a public address then and to 127.0.0.1 or a cloud
//! metadata address later (DNS rebinding). Resolving through this guard on
//! every connection means the address checked is the address connected to.
//! IP literals never reach a resolver, so the sender checks those itself.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::webhook::is_public;

/// A name that takes longer than this to resolve is not answered.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves with the system resolver, keeping public addresses only.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup = tokio::net::lookup_host((host.as_str(), 0));
            let found: Vec<SocketAddr> = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
                .await
                .map_err(|_| format!("looking up {host} timed out"))??
                .collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                let why = if found.is_empty() {
                    format!("{host} does not resolve")
                } else {
                    format!("{host} resolves only to private, loopback or link-local addresses")
                };
                return Err(why.into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Whether `host` resolves to at least one public address (an error says
/// why not), for checking a URL when a webhook is created.
pub async fn resolves_publicly(host: &str) -> Result<(), String> {
    let name: Name = host
        .parse()
        .map_err(|_| format!("{host} is not a host name"))?;
    PublicOnly
        .resolve(name)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
