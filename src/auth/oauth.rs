//! Signing in with Google or Microsoft: the authorization-code flow with
//! PKCE for web clients, and ID tokens from the providers' SDKs for native
//! ones. Both end in [`Accounts::open_session`] like a password login.

use std::{future::Future, pin::Pin};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Accounts,
    accounts::SignedIn,
    oidc::{IdentityClaims, Provider, invalid_token, unavailable},
};
use crate::{
    config::Config,
    domain::{
        AuthProvider, DisplayName, Email, new_id,
        time::{micros, now_micros},
    },
    error::AppError,
    store::{
        Db,
        identities::{self, PendingSignIn, Resolution, VerifiedIdentity},
    },
};
use oauth2::{
    AsyncHttpClient, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
    basic::{
        BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
        BasicTokenType,
    },
};

/// How long a started sign-in may take.
const STATE_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// Started sign-ins kept at most per client address, and in all: each is
/// a row anyone may create. One address cannot fill the table for
/// everyone; a flood from very many addresses fills it, not the disk.
const MAX_PENDING_PER_CLIENT: i64 = 50;
const MAX_PENDING_SIGN_INS: i64 = 100_000;

/// The `id_token` an OpenID Connect token endpoint adds to the response.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdTokenField {
    id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

type OidcTokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;
type OidcClient = oauth2::Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Why the token endpoint gave no usable answer.
#[derive(Debug, thiserror::Error)]
enum TokenHttpError {
    #[error("{0}")]
    Http(String),
    #[error("the token endpoint answered HTTP {0}")]
    Outage(u16),
}

/// The token endpoint's HTTP client: a provider that answers 5xx is down,
/// whatever its body says (an outage, not a rejected code).
struct OutageAware(oauth2::reqwest::Client);

impl<'c> AsyncHttpClient<'c> for OutageAware {
    type Error = TokenHttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, TokenHttpError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self
                .0
                .call(request)
                .await
                .map_err(|e| TokenHttpError::Http(e.to_string()))?;
            if response.status().is_server_error() {
                return Err(TokenHttpError::Outage(response.status().as_u16()));
            }
            Ok(response)
        })
    }
}

/// The configured providers and the HTTP client that talks to them.
pub struct OAuth {
    google: Option<Provider>,
    microsoft: Option<Provider>,
    redirect_uris: Vec<String>,
    http: oauth2::reqwest::Client,
}

fn hash_state(state: &str) -> String {
    Sha256::digest(state.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn state_invalid() -> AppError {
    AppError::FailedPrecondition {
        reason: "OAUTH_STATE_INVALID",
        message: "this sign-in is unknown, already used or expired; start again".into(),
    }
}

impl OAuth {
    pub fn new(config: &Config) -> Self {
        let http = oauth2::reqwest::Client::builder()
            // OAuth endpoints must not redirect (token leakage); see oauth2 docs.
            .redirect(oauth2::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            google: config
                .google
                .clone()
                .map(|c| Provider::new(AuthProvider::Google, c)),
            microsoft: config
                .microsoft
                .clone()
                .map(|c| Provider::new(AuthProvider::Microsoft, c)),
            redirect_uris: config.oauth_redirect_uris.clone(),
            http,
        }
    }

    fn provider(&self, kind: AuthProvider) -> Result<&Provider, AppError> {
        let (found, prefix) = match kind {
            AuthProvider::Google => (self.google.as_ref(), "UNIO_GOOGLE"),
            AuthProvider::Microsoft => (self.microsoft.as_ref(), "UNIO_MICROSOFT"),
            AuthProvider::Password => (None, ""),
        };
        found.ok_or_else(|| AppError::FailedPrecondition {
            reason: "PROVIDER_NOT_CONFIGURED",
            message: format!("sign-in with this provider is not configured; set {prefix}_CLIENT_ID and {prefix}_CLIENT_SECRET"),
        })
    }

    async fn client(
        &self,
        provider: &Provider,
        redirect_uri: &str,
    ) -> Result<OidcClient, AppError> {
        let discovery = provider.discovery(&self.http).await?;
        let url_error =
            |what: &str| unavailable(what, "the provider's discovery document has a bad URL");
        Ok(
            oauth2::Client::new(ClientId::new(provider.config.client_id.clone()))
                .set_client_secret(ClientSecret::new(provider.config.client_secret.clone()))
                .set_auth_uri(
                    AuthUrl::new(discovery.authorization_endpoint)
                        .map_err(|_| url_error("authorization_endpoint"))?,
                )
                .set_token_uri(
                    TokenUrl::new(discovery.token_endpoint)
                        .map_err(|_| url_error("token_endpoint"))?,
                )
                .set_redirect_uri(
                    RedirectUrl::new(redirect_uri.to_owned())
                        .map_err(|_| AppError::invalid("redirect_uri", "is not a URL"))?,
                ),
        )
    }

    /// Builds the authorization URL (scopes `openid email profile`, PKCE
    /// S256, state and nonce) and remembers the sign-in server-side.
    pub async fn start(
        &self,
        db: &Db,
        kind: AuthProvider,
        redirect_uri: &str,
        client_address: Option<std::net::IpAddr>,
    ) -> Result<(String, String), AppError> {
        let provider = self.provider(kind)?;
        if !self
            .redirect_uris
            .iter()
            .any(|allowed| allowed == redirect_uri)
        {
            return Err(AppError::invalid(
                "redirect_uri",
                "is not one of UNIO_OAUTH_REDIRECT_URIS",
            ));
        }
        let client = self.client(provider, redirect_uri).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = CsrfToken::new_random();
        let (url, state) = client
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("openid".into()))
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_extra_param("nonce", nonce.secret())
            .set_pkce_challenge(challenge)
            .url();
        let now = now_micros();
        let pending = PendingSignIn {
            provider: kind.as_str().to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        };
        let saved = identities::save_state(
            db,
            &hash_state(state.secret()),
            kind,
            &pending,
            now + micros(STATE_TTL),
            now,
            &client_address.map(|ip| ip.to_string()).unwrap_or_default(),
            (MAX_PENDING_PER_CLIENT, MAX_PENDING_SIGN_INS),
        )
        .await?;
        if !saved {
            return Err(AppError::ResourceExhausted {
                reason: "TOO_MANY_PENDING_SIGN_INS",
                message: "too many sign-ins are in progress; retry in a minute".into(),
                retry_after: Some(std::time::Duration::from_secs(60)),
            });
        }
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Web flow: consumes the state, exchanges the code with the PKCE
    /// verifier, and verifies the ID token against the issued nonce.
    pub async fn complete_with_code(
        &self,
        db: &Db,
        kind: AuthProvider,
        code: &str,
        state: &str,
    ) -> Result<IdentityClaims, AppError> {
        let provider = self.provider(kind)?;
        let pending = identities::take_state(db, &hash_state(state), now_micros())
            .await?
            .filter(|p| p.provider == kind.as_str())
            .ok_or_else(state_invalid)?;
        let client = self.client(provider, &pending.redirect_uri).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&OutageAware(self.http.clone()))
            .await
            .map_err(|err| match err {
                RequestTokenError::ServerResponse(response) => AppError::unauthenticated(
                    "OAUTH_CODE_REJECTED",
                    format!(
                        "the provider refused the code ({}); start again",
                        response.error()
                    ),
                ),
                RequestTokenError::Request(e) => unavailable("token", e),
                RequestTokenError::Parse(e, _) => unavailable("token", e),
                RequestTokenError::Other(e) => unavailable("token", e),
            })?;
        let _ = response.access_token();
        let id_token = response
            .extra_fields()
            .id_token
            .clone()
            .ok_or_else(|| invalid_token("the token response has no id_token"))?;
        provider
            .verify(&self.http, &id_token, Some(&pending.nonce))
            .await
    }

    /// Native flow: an ID token from the provider's SDK.
    pub async fn complete_with_id_token(
        &self,
        kind: AuthProvider,
        id_token: &str,
    ) -> Result<IdentityClaims, AppError> {
        let provider = self.provider(kind)?;
        provider.verify(&self.http, id_token, None).await
    }
}

/// Signs in the owner of verified `claims`: the known identity, an
/// account with the same verified email (linked now), or a new account.
pub async fn sign_in(
    accounts: &Accounts,
    db: &Db,
    kind: AuthProvider,
    claims: &IdentityClaims,
) -> Result<SignedIn, AppError> {
    if kind == AuthProvider::Google && !claims.email_verified {
        return Err(AppError::denied(
            "EMAIL_NOT_VERIFIED",
            "Google has not verified this account's email address",
        ));
    }
    let email = Email::parse(&claims.email)
        .map_err(|_| invalid_token("its email is not a valid address"))?;
    let fallback = email
        .as_str()
        .split('@')
        .next()
        .unwrap_or("user")
        .to_owned();
    let display_name = claims
        .name
        .as_deref()
        .and_then(|n| DisplayName::parse(n).ok())
        .unwrap_or_else(|| {
            DisplayName::parse(&fallback)
                .unwrap_or_else(|_| DisplayName::parse("user").expect("valid"))
        });
    let identity = VerifiedIdentity {
        provider: kind,
        subject: &claims.subject,
        email: email.as_str(),
        email_key: email.key(),
        email_verified: claims.email_verified,
        display_name: display_name.as_str(),
    };
    let now = now_micros();
    let (user, notices, claimed) = match identities::resolve(db, &identity, &new_id(), now).await {
        Ok(Resolution::SignedIn {
            user,
            notices,
            claimed,
            ..
        }) => (*user, notices, claimed),
        Ok(Resolution::Disabled) => {
            return Err(AppError::unauthenticated(
                "ACCOUNT_DISABLED",
                "this account has been deactivated by an administrator",
            ));
        }
        Ok(Resolution::EmailNotVerified) => {
            return Err(AppError::denied(
                "EMAIL_NOT_VERIFIED",
                "an account with this email exists, and the provider does not vouch for the email",
            ));
        }
        Ok(Resolution::Raced) => {
            return Err(AppError::Unavailable(
                "the account was just created elsewhere; try again".into(),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    if !user.is_active {
        return Err(AppError::unauthenticated(
            "ACCOUNT_DISABLED",
            "this account has been deactivated by an administrator",
        ));
    }
    let tokens = accounts.open_session(&user, now).await?;
    Ok(SignedIn {
        user,
        tokens,
        notices,
        revoked_others: claimed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_stored_hashed() {
        assert_eq!(hash_state("abc").len(), 64);
        assert_ne!(hash_state("abc"), "abc");
    }
}
