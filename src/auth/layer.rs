//! The tower layer that authenticates every call except the public ones.
//!
//! It runs inside the gRPC-Web translation, so browsers and native clients
//! pass the same check. On success the [`Caller`] goes into the request
//! extensions, where tonic hands it to the handler; on failure the call is
//! answered here with UNAUTHENTICATED and never reaches a service.
//!
//! It also records every call's [`ClientAddress`], and holds the public
//! methods (which anyone may call, and which may cost a password hash or a
//! stored row) to a rate per client address: RESOURCE_EXHAUSTED with a
//! RetryInfo beyond it.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderName, Request, Response};
use tonic::Status;
use tower::{Layer, Service};

use super::{
    Accounts, Caller,
    client::{ClientAddress, address_of},
};
use crate::{error::AppError, limits::Limiters};

/// Methods callable without a token, and services that bypass auth.
const PUBLIC_METHODS: [&str; 6] = [
    "/unio.v1.AuthService/SignUp",
    "/unio.v1.AuthService/VerifyEmail",
    "/unio.v1.AuthService/Login",
    "/unio.v1.AuthService/RefreshToken",
    "/unio.v1.AuthService/StartOAuth",
    "/unio.v1.AuthService/CompleteOAuth",
];
const PUBLIC_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.",
    "/grpc.reflection.v1.",
    "/grpc.reflection.v1alpha.",
];

pub fn is_public(path: &str) -> bool {
    PUBLIC_METHODS.contains(&path) || PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p))
}

#[derive(Clone)]
pub struct AuthLayer {
    /// One reference for every call (cloning `Accounts` is several).
    accounts: Arc<Accounts>,
    limits: Arc<Limiters>,
    /// A header set by a trusted load balancer with the client's address.
    address_header: Option<HeaderName>,
}

impl AuthLayer {
    pub fn new(
        accounts: Accounts,
        limits: Arc<Limiters>,
        address_header: Option<HeaderName>,
    ) -> Self {
        Self {
            accounts: Arc::new(accounts),
            limits,
            address_header,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            inner,
            accounts: self.accounts.clone(),
            limits: self.limits.clone(),
            address_header: self.address_header.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireAuth<S> {
    inner: S,
    accounts: Arc<Accounts>,
    limits: Arc<Limiters>,
    address_header: Option<HeaderName>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let address = address_of(&request, self.address_header.as_ref());
        if let Some(address) = address {
            request.extensions_mut().insert(ClientAddress(address));
        }
        let path = request.uri().path();
        if is_public(path) {
            // Health checks and reflection cost nothing; our public methods may.
            let signup = path == "/unio.v1.AuthService/SignUp";
            if let (true, Some(address)) = (PUBLIC_METHODS.contains(&path), address)
                && let Err(wait) = self.limits.public.check(&address).and_then(|()| {
                    if signup {
                        self.limits.signups.check(&address)
                    } else {
                        Ok(())
                    }
                })
            {
                let err = AppError::ResourceExhausted {
                    reason: "TOO_MANY_REQUESTS",
                    message: "too many sign-in requests from your address; slow down".into(),
                    retry_after: Some(wait.max(std::time::Duration::from_millis(100))),
                };
                return Box::pin(async move { Ok(Status::from(err).into_http()) });
            }
            return Box::pin(self.inner.call(request));
        }
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let accounts = self.accounts.clone();
        // A shared reference to the header's bytes, not a copy.
        let authorization = request.headers().get(http::header::AUTHORIZATION).cloned();
        Box::pin(async move {
            match authenticate(&accounts, authorization.as_ref()).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(err) => Ok(Status::from(err).into_http()),
            }
        })
    }
}

/// `authorization` is the header's value, if present.
async fn authenticate(
    accounts: &Accounts,
    authorization: Option<&http::HeaderValue>,
) -> Result<Caller, AppError> {
    let missing = || {
        AppError::unauthenticated(
            "TOKEN_MISSING",
            "this call needs the metadata `authorization: Bearer <access token>`",
        )
    };
    let value = authorization.ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let token = bearer_token(value).ok_or_else(missing)?;
    accounts.authenticate(token).await
}

/// The token of an `authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths() {
        assert!(is_public("/unio.v1.AuthService/Login"));
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(is_public(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_public("/unio.v1.AuthService/Logout"));
        assert!(!is_public("/unio.v1.UserService/GetMe"));
    }

    #[test]
    fn bearer_scheme_is_required() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
