//! A deadline on every call: a handler that has not answered within
//! `UNIO_REQUEST_TIMEOUT` is cut with DEADLINE_EXCEEDED, so a stuck
//! dependency or a client that never sends its first message cannot hold
//! a stream slot forever.
//!
//! The deadline covers the wait for the response's headers: a unary
//! call's whole handler, a server stream's start (the stream itself may
//! last as long as its session). Client streams that carry uploads are
//! exempt: their handler runs while bytes arrive, and an idle timeout
//! between chunks bounds them instead. Hand-written because tonic's own
//! `Server::timeout` cannot exempt a method.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tonic::Status;
use tower::{Layer, Service};

/// Methods whose handler consumes a client stream.
const EXEMPT: [&str; 1] = ["/unio.v1.FileService/UploadFile"];

#[derive(Clone)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Deadline<S>
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
        let exempt = EXEMPT.contains(&request.uri().path());
        let future = self.inner.call(request);
        if exempt {
            return Box::pin(future);
        }
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, future).await {
                Ok(result) => result,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the server did not answer within {} seconds",
                    timeout.as_secs_f32()
                ))
                .into_http()),
            }
        })
    }
}
