//! Who is calling: passwords, tokens, sessions and the layer that checks them.
//!
//! - [`tokens`]: HS256 access JWTs and opaque refresh tokens.
//! - [`passwords`]: argon2id hashing on the blocking pool.
//! - [`secret`]: the JWT key, generated once into the data directory.
//! - [`accounts`]: sign-up, login, refresh rotation, logout, password change.
//! - [`oauth`] and [`oidc`]: sign-in with Google and Microsoft.
//! - [`layer`]: the tower layer that turns `authorization: Bearer …` into a
//!   [`Caller`] in the request extensions.
//! - [`client`]: the client's network address, for per-address limits.
//! - [`view`]: the in-memory view of sessions and users that per-call
//!   authentication reads, kept current by the bus.

pub mod accounts;
pub mod client;
pub mod layer;
pub mod meeting_view;
pub mod oauth;
pub mod oidc;
pub mod passwords;
pub mod secret;
pub mod tokens;
pub mod view;

pub use accounts::Accounts;
pub use layer::AuthLayer;

use crate::{
    domain::{Role, time::Micros},
    error::AppError,
};

/// The verified caller of an RPC, put into request extensions by
/// [`AuthLayer`]. Handlers read it; they never parse headers themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub session_id: String,
    /// The access token's id, revoked by Logout.
    pub jti: String,
    /// The role as stored now, not as it was when the token was issued.
    pub role: Role,
    pub token_expires_at: Micros,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The caller of `request`, as set by [`AuthLayer`].
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, AppError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            AppError::unauthenticated(
                "TOKEN_MISSING",
                "this call needs `authorization: Bearer <access token>`",
            )
        })
}
