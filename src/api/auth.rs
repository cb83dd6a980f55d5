//! `unio.v1.AuthService`: sign-up, login, refresh, logout.

use tonic::{Request, Response, Status};

use crate::realtime::bus::Topic;
use crate::wire::{self, UserView};
use crate::{
    auth::{caller, client::client_address, oauth},
    domain::{AuthProvider, DisplayName, Email, Password, time::to_timestamp},
    error::{AppError, Violations},
    proto::pb::{self, auth_service_server::AuthService},
    state::AppState,
};

pub struct AuthApi {
    state: AppState,
}

impl AuthApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[tracing::instrument(skip_all)]
    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let pb::SignUpRequest {
            email,
            password,
            display_name,
        } = request.into_inner();
        let mut v = Violations::new();
        let email = v.check("email", Email::parse(&email));
        let password = v.check("password", Password::parse(&password, email.as_ref()));
        let display_name = v.check("display_name", DisplayName::parse(&display_name));
        let (Some(email), Some(password), Some(display_name)) = (email, password, display_name)
        else {
            return Err(v.into_error().into());
        };
        let signed_in = self
            .state
            .accounts
            .sign_up(&email, &password, &display_name)
            .await?;
        tracing::info!(user_id = %signed_in.user.id, "signed up");
        super::deliver(&self.state, &signed_in.notices);
        Ok(Response::new(wire::auth_response(
            &signed_in.user,
            signed_in.tokens,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let client = client_address(&request);
        let pb::LoginRequest { email, password } = request.into_inner();
        let mut v = Violations::new();
        let email = v.check("email", Email::parse(&email));
        if password.is_empty() {
            v.add("password", "is required");
        }
        let Some(email) = email.filter(|_| v.is_empty()) else {
            return Err(v.into_error().into());
        };
        let signed_in = self.state.accounts.login(&email, &password, client).await?;
        super::deliver(&self.state, &signed_in.notices);
        Ok(Response::new(wire::auth_response(
            &signed_in.user,
            signed_in.tokens,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let pb::RefreshTokenRequest { refresh_token } = request.into_inner();
        if refresh_token.trim().is_empty() {
            return Err(AppError::invalid("refresh_token", "is required").into());
        }
        let tokens = self.state.accounts.refresh(&refresh_token).await?;
        Ok(Response::new(wire::token_pair(tokens)))
    }

    #[tracing::instrument(skip_all)]
    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = caller(&request)?;
        let pb::LogoutRequest { refresh_token } = request.into_inner();
        self.state.accounts.logout(&caller, &refresh_token).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn start_o_auth(
        &self,
        request: Request<pb::StartOAuthRequest>,
    ) -> Result<Response<pb::StartOAuthResponse>, Status> {
        let client = client_address(&request);
        let pb::StartOAuthRequest {
            provider,
            redirect_uri,
        } = request.into_inner();
        let provider = provider_of(provider)?;
        let (authorization_url, state) = self
            .state
            .oauth
            .start(&self.state.db, provider, redirect_uri.trim(), client)
            .await?;
        Ok(Response::new(pb::StartOAuthResponse {
            authorization_url,
            state,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn complete_o_auth(
        &self,
        request: Request<pb::CompleteOAuthRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let pb::CompleteOAuthRequest {
            provider,
            code,
            state,
            id_token,
        } = request.into_inner();
        let provider = provider_of(provider)?;
        let oauth = &self.state.oauth;
        let claims = match (code.trim(), state.trim(), id_token.trim()) {
            ("", "", "") => {
                return Err(AppError::invalid(
                    "code",
                    "send `code` and `state` from the redirect, or an `id_token`",
                )
                .into());
            }
            (code, state, "") => {
                let mut v = Violations::new();
                if code.is_empty() {
                    v.add("code", "is required with state");
                }
                if state.is_empty() {
                    v.add("state", "is required with code");
                }
                v.finish()?;
                oauth
                    .complete_with_code(&self.state.db, provider, code, state)
                    .await?
            }
            ("", _, id_token) => oauth.complete_with_id_token(provider, id_token).await?,
            _ => {
                return Err(AppError::invalid(
                    "id_token",
                    "send either code and state, or id_token",
                )
                .into());
            }
        };
        let signed_in =
            oauth::sign_in(&self.state.accounts, &self.state.db, provider, &claims).await?;
        if signed_in.revoked_others {
            // Whoever held the account before must not hear what it now gets.
            self.state
                .accounts
                .access_changed(Topic::User(signed_in.user.id.clone()));
        }
        super::deliver(&self.state, &signed_in.notices);
        Ok(Response::new(wire::auth_response(
            &signed_in.user,
            signed_in.tokens,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let pb::VerifyEmailRequest { token } = request.into_inner();
        let token = token.trim();
        if token.is_empty() {
            return Err(AppError::invalid("token", "is required").into());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AppError::invalid("token", "is not a verification token").into());
        }
        let (user, notices) = self.state.accounts.verify_email(token).await?;
        tracing::info!(user_id = %user.id, "email verified");
        super::deliver(&self.state, &notices);
        Ok(Response::new(wire::user(&user, UserView::Full)))
    }

    #[tracing::instrument(skip_all)]
    async fn send_verification_email(
        &self,
        request: Request<pb::SendVerificationEmailRequest>,
    ) -> Result<Response<pb::SendVerificationEmailResponse>, Status> {
        let caller = caller(&request)?;
        let (email, expires_at) = self.state.accounts.send_verification(&caller).await?;
        Ok(Response::new(pb::SendVerificationEmailResponse {
            email,
            expire_time: Some(to_timestamp(expires_at)),
        }))
    }
}

/// Longer than any token this server issues.
const MAX_TOKEN_BYTES: usize = 256;

fn provider_of(raw: i32) -> Result<AuthProvider, AppError> {
    match pb::OauthProvider::try_from(raw) {
        Ok(pb::OauthProvider::Google) => Ok(AuthProvider::Google),
        Ok(pb::OauthProvider::Microsoft) => Ok(AuthProvider::Microsoft),
        _ => Err(AppError::invalid(
            "provider",
            "must be OAUTH_PROVIDER_GOOGLE or OAUTH_PROVIDER_MICROSOFT",
        )),
    }
}
