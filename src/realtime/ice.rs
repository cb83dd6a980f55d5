//! ICE servers for `joined`: the configured STUN URLs, and TURN with
//! time-limited credentials in the TURN REST API style (username
//! `<expiry>:<user id>`, password = base64(HMAC-SHA1(secret, username))), the
//! scheme coturn's `use-auth-secret` checks.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::proto::pb;

/// How long TURN credentials stay valid.
pub const TURN_CREDENTIAL_SECONDS: i64 = 12 * 3600;

#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    pub turn_secret: Option<String>,
}

impl IceConfig {
    pub fn servers(&self, user_id: &str, now_seconds: i64) -> Vec<pb::IceServer> {
        let mut servers = Vec::new();
        if !self.stun_urls.is_empty() {
            servers.push(pb::IceServer {
                urls: self.stun_urls.clone(),
                username: String::new(),
                credential: String::new(),
            });
        }
        if let (false, Some(secret)) = (self.turn_urls.is_empty(), &self.turn_secret) {
            let username = format!("{}:{user_id}", now_seconds + TURN_CREDENTIAL_SECONDS);
            servers.push(pb::IceServer {
                urls: self.turn_urls.clone(),
                credential: turn_password(secret, &username),
                username,
            });
        }
        servers
    }
}

pub fn turn_password(secret: &str, username: &str) -> String {
    let mut mac =
        <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_the_rest_api_scheme() {
        // RFC 2202 test case 2 for HMAC-SHA1.
        assert_eq!(
            turn_password("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
        let config = IceConfig {
            stun_urls: vec!["stun:stun.example:3478".into()],
            turn_urls: vec!["turn:turn.example:3478".into()],
            turn_secret: Some("s3cret".into()),
        };
        let servers = config.servers("user-1", 1_000);
        assert_eq!(servers.len(), 2);
        assert_eq!(
            servers[1].username,
            format!("{}:user-1", 1_000 + TURN_CREDENTIAL_SECONDS)
        );
        assert_eq!(
            servers[1].credential,
            turn_password("s3cret", &servers[1].username)
        );
        assert!(servers[0].username.is_empty());
    }

    #[test]
    fn no_turn_without_a_secret() {
        let config = IceConfig {
            stun_urls: vec![],
            turn_urls: vec!["turn:t".into()],
            turn_secret: None,
        };
        assert!(config.servers("u", 0).is_empty());
    }
}
