//! OpenID Connect providers (Google, Microsoft): discovery, keys, and ID
//! token verification.
//!
//! Endpoints come from `<issuer>/.well-known/openid-configuration` and the
//! signing keys from its `jwks_uri`, both cached (an hour); an ID token
//! signed with an unknown `kid` refetches the keys once, which is how a key
//! rotation at the provider is picked up. Verification checks the RS256
//! signature, `iss` (Microsoft's multi-tenant issuer has `{tenantid}`,
//! replaced with the token's `tid`), `aud` = our client id, `exp`/`iat`
//! with a minute of leeway, and the `nonce` when one was issued.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use crate::{
    config::OidcProviderConfig, domain::AuthProvider, error::AppError, realtime::rate::TokenBucket,
};

const CACHE_FOR: Duration = Duration::from_secs(3600);
const LEEWAY_SECONDS: u64 = 60;

#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: String,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// What we use from a verified ID token.
#[derive(Debug, Clone)]
pub struct IdentityClaims {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawClaims {
    iss: String,
    sub: String,
    iat: Option<i64>,
    nonce: Option<String>,
    email: Option<String>,
    email_verified: Option<serde_json::Value>,
    preferred_username: Option<String>,
    name: Option<String>,
    tid: Option<String>,
    /// Microsoft: the email's domain is verified by the tenant.
    xms_edov: Option<serde_json::Value>,
}

fn truthy(value: &Option<serde_json::Value>) -> bool {
    match value {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    }
}

pub fn unavailable(what: &str, err: impl std::fmt::Display) -> AppError {
    AppError::ProviderUnavailable(format!(
        "the identity provider could not be reached ({what}: {err}); try again"
    ))
}

pub fn invalid_token(why: impl Into<String>) -> AppError {
    AppError::unauthenticated(
        "ID_TOKEN_INVALID",
        format!("the ID token was refused: {}", why.into()),
    )
}

/// When the keys were fetched, and the keys by `kid`.
type KeySet = (Instant, Vec<(String, DecodingKey)>);

pub struct Provider {
    pub kind: AuthProvider,
    pub config: OidcProviderConfig,
    discovery: Mutex<Option<(Instant, Discovery)>>,
    /// The provider's signing keys as last fetched.
    keys: Mutex<Option<KeySet>>,
    /// Key refetches allowed (a few per second).
    refetches: Mutex<TokenBucket>,
}

impl Provider {
    pub fn new(kind: AuthProvider, config: OidcProviderConfig) -> Self {
        Self {
            kind,
            config,
            discovery: Mutex::new(None),
            keys: Mutex::new(None),
            refetches: Mutex::new(TokenBucket::new(2)),
        }
    }

    pub async fn discovery(&self, http: &oauth2::reqwest::Client) -> Result<Discovery, AppError> {
        if let Some((at, cached)) = self
            .discovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Ok(cached.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer);
        let found: Discovery = fetch_json(http, &url)
            .await
            .map_err(|e| unavailable("discovery", e))?;
        *self.discovery.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), found.clone()));
        Ok(found)
    }

    async fn key(
        &self,
        http: &oauth2::reqwest::Client,
        kid: &str,
    ) -> Result<DecodingKey, AppError> {
        let (found, fresh) = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            match keys.as_ref() {
                Some((at, keys)) => (
                    keys.iter()
                        .find(|(k, _)| k == kid)
                        .map(|(_, key)| key.clone()),
                    at.elapsed() < CACHE_FOR,
                ),
                None => (None, false),
            }
        };
        if let (Some(key), true) = (&found, fresh) {
            return Ok(key.clone());
        }
        // A new kid is fetched at once (a rotation), but refetches are
        // rate-limited so made-up kids cannot make us hammer the provider.
        let allowed = self
            .refetches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(std::time::Instant::now());
        if !allowed {
            return found.ok_or_else(|| invalid_token(format!("unknown signing key {kid:?}")));
        }
        let discovery = self.discovery(http).await?;
        let set: JwkSet = fetch_json(http, &discovery.jwks_uri)
            .await
            .map_err(|e| unavailable("keys", e))?;
        let keys: Vec<(String, DecodingKey)> = set
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA")
            .filter_map(|k| {
                let key =
                    DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
                Some((k.kid?, key))
            })
            .collect();
        let found = keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, key)| key.clone());
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), keys));
        found.ok_or_else(|| invalid_token(format!("unknown signing key {kid:?}")))
    }

    /// Verifies an ID token issued to us; `nonce` when we issued one.
    pub async fn verify(
        &self,
        http: &oauth2::reqwest::Client,
        token: &str,
        nonce: Option<&str>,
    ) -> Result<IdentityClaims, AppError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid_token("it is not a JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(invalid_token(format!("{:?} is not RS256", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid_token("it names no signing key (kid)"))?;
        let key = self.key(http, &kid).await?;
        let discovery = self.discovery(http).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<RawClaims>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => invalid_token("it has expired"),
                ErrorKind::InvalidAudience => {
                    invalid_token("it was issued to another client (aud)")
                }
                ErrorKind::InvalidSignature => invalid_token("its signature does not verify"),
                _ => invalid_token(e.to_string()),
            })?
            .claims;

        let expected_issuer = discovery
            .issuer
            .replace("{tenantid}", claims.tid.as_deref().unwrap_or(""));
        // Google documents both `https://accounts.google.com` and the bare
        // `accounts.google.com` as its ID tokens' issuer.
        let bare = self.kind == AuthProvider::Google
            && expected_issuer.strip_prefix("https://") == Some(claims.iss.as_str());
        if claims.iss != expected_issuer && !bare {
            return Err(invalid_token(format!(
                "issuer {:?} is not {expected_issuer:?}",
                claims.iss
            )));
        }
        let now = crate::domain::time::now_micros() / 1_000_000;
        if claims
            .iat
            .is_some_and(|iat| iat > now + LEEWAY_SECONDS as i64)
        {
            return Err(invalid_token("it was issued in the future (iat)"));
        }
        if let Some(expected) = nonce
            && claims.nonce.as_deref() != Some(expected)
        {
            return Err(invalid_token("its nonce does not match this sign-in"));
        }
        let email = claims
            .email
            .clone()
            .or_else(|| {
                (self.kind == AuthProvider::Microsoft)
                    .then(|| claims.preferred_username.clone())
                    .flatten()
            })
            .ok_or_else(|| invalid_token("it carries no email (request the `email` scope)"))?;
        // A vouch is for the `email` claim: a `preferred_username` (a UPN,
        // which need not be a mailbox at all) is never taken as verified.
        let email_verified =
            claims.email.is_some() && (truthy(&claims.email_verified) || truthy(&claims.xms_edov));
        Ok(IdentityClaims {
            subject: claims.sub,
            email,
            email_verified,
            name: claims.name,
        })
    }
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &oauth2::reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}
