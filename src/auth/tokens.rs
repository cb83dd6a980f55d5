//! Access tokens (HS256 JWTs) and refresh tokens (opaque, stored hashed).
//!
//! An access token names its user (`sub`), its session (`sid`) and itself
//! (`jti`); the auth layer checks the last two against the access view
//! (`auth::view`, kept current by the event backbone) on every call, so
//! logout and refresh-token reuse take effect at once. The header's
//! `kid` names the key, ready for rotation: verification picks the key by
//! `kid` and refuses unknown ones.
//!
//! A client sends the same access token with every call for its lifetime
//! (15 minutes by default), and checking one costs two base64 decodes, an
//! HMAC and three JSON parses: a tenth of a GetMe's server time in a
//! profile. So the claims of a token that passed are remembered, keyed by
//! its exact text, and a later call with the same text only has its
//! expiry checked. Only verified tokens get in, so a flood of forged ones
//! costs a full check each and takes no memory; the map is bounded.
//! Revocation is not the signature's business: the access view checks
//! session and token on every call, cached claims or not.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{
    Role,
    time::{Micros, micros},
};

/// Claims of an access token. Times are seconds since the epoch (RFC 7519).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub sub: String,
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub role: String,
}

/// A freshly signed access token.
#[derive(Debug, Clone)]
pub struct IssuedAccess {
    pub token: String,
    pub jti: String,
    pub expires_at: Micros,
}

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    /// Malformed, wrongly signed, unknown key, wrong algorithm.
    Invalid,
}

/// Clock skew tolerated between nodes when checking `exp`.
const LEEWAY_SECONDS: u64 = 5;
/// Verified tokens remembered; past it the oldest are not sought out, the
/// expired ones go and, if that frees too little, the map starts over.
const MAX_VERIFIED: usize = 32_768;
const REFRESH_PREFIX: &str = "unio_rt_";
const VERIFICATION_PREFIX: &str = "unio_ev_";

pub struct TokenKeys {
    kid: String,
    encoding: EncodingKey,
    /// Keys by `kid`; holds only the current key until rotation is configured.
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
    /// Tokens that passed `verify_access`: their exact text → claims. A hit
    /// does not look at `kid` again: whatever removes a key at run time
    /// (none does yet) must clear this too.
    verified: RwLock<HashMap<Box<str>, Arc<AccessClaims>>>,
}

impl TokenKeys {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let kid = key_id(secret);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Self {
            decoding: HashMap::from([(kid.clone(), DecodingKey::from_secret(secret))]),
            kid,
            encoding: EncodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
            verified: RwLock::default(),
        }
    }

    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    pub fn issue_access(
        &self,
        user_id: &str,
        session_id: &str,
        role: Role,
        now: Micros,
    ) -> IssuedAccess {
        let iat = now.div_euclid(1_000_000);
        let exp = iat + self.access_ttl.as_secs() as i64;
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            jti: jti.clone(),
            iat,
            exp,
            role: role.as_str().to_owned(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        // Encoding with an HMAC key cannot fail for serialisable claims.
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap_or_default();
        IssuedAccess {
            token,
            jti,
            expires_at: exp * 1_000_000,
        }
    }

    /// The claims of `token` if it is one of ours and has not expired.
    pub fn verify_access(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        self.verify_at(
            token,
            crate::domain::time::now_micros().div_euclid(1_000_000),
        )
    }

    /// [`Self::verify_access`] with the clock at `now` (seconds) for tokens
    /// already verified; a new token is checked against the system clock.
    fn verify_at(&self, token: &str, now: i64) -> Result<Arc<AccessClaims>, TokenError> {
        let known = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        let claims = match known {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.decode(token)?);
                self.remember(token, &claims, now);
                claims
            }
        };
        if expired(&claims, now) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    fn decode(&self, token: &str) -> Result<AccessClaims, TokenError> {
        // `decode_header` also refuses `alg: none`, which is no Algorithm.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(TokenError::Invalid)?;
        jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    fn remember(&self, token: &str, claims: &Arc<AccessClaims>, now: i64) {
        let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
        let mut dropped = None;
        if verified.len() >= MAX_VERIFIED {
            verified.retain(|_, claims| !expired(claims, now));
            if verified.len() >= MAX_VERIFIED / 2 {
                // Freed after the lock is released, not while calls wait.
                dropped = Some(std::mem::take(&mut *verified));
            }
        }
        verified.insert(token.into(), claims.clone());
        drop(verified);
        drop(dropped);
    }

    /// When a refresh token issued `now` expires.
    pub fn refresh_expiry(&self, now: Micros) -> Micros {
        now.saturating_add(micros(self.refresh_ttl))
    }
}

/// Whether `claims` expired before `now` (seconds), with the leeway the
/// first check allowed.
fn expired(claims: &AccessClaims, now: i64) -> bool {
    claims.exp.saturating_add(LEEWAY_SECONDS as i64) < now
}

/// Identifies a key without revealing it: the start of its SHA-256.
fn key_id(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A new refresh token and the hash to store. 256 random bits, so a fast
/// hash is enough: there is nothing to brute-force.
pub fn new_refresh_token() -> (String, String) {
    new_opaque_token(REFRESH_PREFIX)
}

/// A new email-verification token (the `token` of the link) and its hash.
pub fn new_verification_token() -> (String, String) {
    new_opaque_token(VERIFICATION_PREFIX)
}

fn new_opaque_token(prefix: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_opaque_token(&token);
    (token, hash)
}

pub fn hash_refresh_token(token: &str) -> String {
    hash_opaque_token(token)
}

/// The SHA-256 (hex) under which an opaque token is stored.
pub fn hash_opaque_token(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::now_micros;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            &[7u8; 32],
            Duration::from_secs(900),
            Duration::from_secs(86400),
        )
    }

    #[test]
    fn issued_tokens_verify() {
        let keys = keys();
        let issued = keys.issue_access("u1", "s1", Role::Admin, now_micros());
        let claims = keys.verify_access(&issued.token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("u1", "s1"));
        assert_eq!(claims.jti, issued.jti);
        assert_eq!(claims.role, "admin");
        assert_eq!(claims.exp - claims.iat, 900);
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert!(header.kid.is_some());
    }

    #[test]
    fn expired_tokens_are_told_apart() {
        let keys = keys();
        let an_hour_ago = now_micros() - 3_600_000_000;
        let issued = keys.issue_access("u1", "s1", Role::User, an_hour_ago);
        assert_eq!(keys.verify_access(&issued.token), Err(TokenError::Expired));
    }

    #[test]
    fn other_keys_and_alg_none_are_invalid() {
        let other = TokenKeys::new(&[8u8; 32], Duration::from_secs(900), Duration::from_secs(1));
        let issued = other.issue_access("u1", "s1", Role::User, now_micros());
        assert_eq!(
            keys().verify_access(&issued.token),
            Err(TokenError::Invalid)
        );

        let body = issued.token.split('.').nth(1).unwrap();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{body}.");
        assert_eq!(keys().verify_access(&unsigned), Err(TokenError::Invalid));
        assert_eq!(keys().verify_access("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn remembered_tokens_still_expire_and_only_verified_ones_are_kept() {
        let keys = keys();
        let issued = keys.issue_access("u1", "s1", Role::User, now_micros());
        let now = now_micros() / 1_000_000;
        let first = keys.verify_at(&issued.token, now).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &keys.verify_at(&issued.token, now).unwrap()
        ));
        // Past `exp` and the leeway, the remembered claims are refused too.
        assert_eq!(
            keys.verify_at(&issued.token, first.exp + LEEWAY_SECONDS as i64 + 1),
            Err(TokenError::Expired)
        );
        assert!(
            keys.verify_at(&issued.token, first.exp + LEEWAY_SECONDS as i64)
                .is_ok()
        );

        // A token with the same claims and another signature is a new text:
        // checked in full, refused, not kept.
        let (signed, _) = issued.token.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert_eq!(keys.verify_at(&forged, now), Err(TokenError::Invalid));
        assert_eq!(keys.verified.read().unwrap().len(), 1);
    }

    #[test]
    fn the_remembered_tokens_are_bounded() {
        let keys = keys();
        let issued = keys.issue_access("u1", "s1", Role::User, now_micros());
        let live = keys.verify_access(&issued.token).unwrap();
        let now = now_micros() / 1_000_000;
        let gone = Arc::new(AccessClaims {
            exp: now - 3600,
            ..(*live).clone()
        });
        // Full of expired claims and a few live ones: the expired go.
        for i in 0..MAX_VERIFIED {
            let claims = if i % 1000 == 0 { &live } else { &gone };
            keys.remember(&format!("t{i}"), claims, now);
        }
        keys.remember("one more", &live, now);
        let kept = keys.verified.read().unwrap().len();
        assert!(kept < 100, "{kept} kept");
        assert!(keys.verified.read().unwrap().contains_key("t1000"));
        assert!(!keys.verified.read().unwrap().contains_key("t1"));
        // Full of live ones: it starts over rather than grow.
        for i in 0..MAX_VERIFIED + 10 {
            keys.remember(&format!("l{i}"), &live, now);
        }
        assert!(keys.verified.read().unwrap().len() <= MAX_VERIFIED);
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert!(a.starts_with(REFRESH_PREFIX));
        assert_eq!(hash_refresh_token(&a), hash_a);
        assert_eq!(hash_a.len(), 64);
    }
}
