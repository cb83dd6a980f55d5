//! A request over a service's message-size limit answers
//! RESOURCE_EXHAUSTED with reason MESSAGE_TOO_LARGE (DESIGN §3: size limits
//! are RESOURCE_EXHAUSTED), not tonic's OUT_OF_RANGE.
//!
//! tonic checks the limit before any handler runs and answers with a
//! trailers-only response; this layer recognises that answer by its status
//! and message and replaces it. Hand-written because tonic offers no hook
//! for its own decode errors.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::Status;
use tower::{Layer, Service};

use crate::error::AppError;

#[derive(Clone, Default)]
pub struct OversizeLayer;

impl<S> Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner }
    }
}

#[derive(Clone)]
pub struct Oversize<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Whether `response` is tonic's answer to a request over the size limit.
fn is_oversize<B>(response: &Response<B>) -> bool {
    let headers = response.headers();
    let status = headers.get("grpc-status").map(|v| v.as_bytes());
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    status == Some(b"11")
        && (message.contains("length too large") || message.contains("length%20too%20large"))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Oversize<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            if !is_oversize(&response) {
                return Ok(response);
            }
            let err = AppError::ResourceExhausted {
                reason: "MESSAGE_TOO_LARGE",
                message: "the request is larger than this method accepts; send less \
                          (files in chunks of at most 1 MiB)"
                    .into(),
                retry_after: None,
            };
            Ok(Status::from(err).into_http())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_tonics_size_error_only() {
        let oversize = Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        )
        .into_http::<()>();
        assert!(is_oversize(&oversize));
        let other = Status::out_of_range("page beyond the end").into_http::<()>();
        assert!(!is_oversize(&other));
        let ok = Response::new(());
        assert!(!is_oversize(&ok));
    }
}
