//! Logging: the tracing subscriber, and one line per RPC.
//!
//! With `UNIO_OTLP_ENDPOINT` set, the same spans also go to an
//! OpenTelemetry collector over OTLP/gRPC (`tracing-opentelemetry` and the
//! `opentelemetry-otlp` exporter on our tonic), in batches from a
//! background thread so that a slow or absent collector never holds up a
//! call; spans that do not fit its queue are dropped, not buffered.
//!
//! [`CallLogLayer`] logs method, gRPC status code and latency when a call
//! ends: at once for trailers-only answers (most errors), or when the
//! response body yields its trailers (successful unary calls, streams). A
//! body dropped before its trailers is a call the client cancelled. Headers
//! and messages are never logged, so tokens and passwords cannot leak here.
//!
//! The same layer feeds [`Metrics`]: every finished call, and the response
//! streams of the long-lived RPCs ([`StreamKind`]) as open from their
//! headers until their body ends or is dropped.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};
use tracing::{span, subscriber::Interest};
use tracing_subscriber::layer::Context as FilterContext;

use crate::metrics::{Metrics, OpenStream, StreamKind};

/// Keeps the trace exporter alive; dropping it flushes the spans still
/// queued (at shutdown).
pub struct Telemetry {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("unio: flushing traces: {err}");
        }
    }
}

/// Installs the global subscriber; `filter` is an `EnvFilter` directive such
/// as `info` or `unio=debug,sqlx=warn`, and `otlp_endpoint` a collector to
/// export spans to. Must run inside a tokio runtime when exporting (the
/// exporter's channel lives there). Installing twice (tests start many
/// servers in one process) keeps the first subscriber.
pub fn init(filter: &str, otlp_endpoint: Option<&str>) -> Result<Telemetry, String> {
    use tracing_subscriber::{Layer as _, layer::SubscriberExt, util::SubscriberInitExt};

    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let filter = Fresh(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        // Colours only for people: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let tracer = otlp_endpoint.map(tracer_provider).transpose()?;
    // The collector gets our spans only — every RPC and every store call
    // (debug) — whatever the console shows, and never the exporter's own
    // HTTP/2 spans.
    let otel = tracer.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("unio"))
            .with_filter(Fresh(tracing_subscriber::EnvFilter::new("unio=debug")))
    });
    let _first = tracing_subscriber::registry()
        .with(otel)
        .with(fmt.with_filter(filter))
        .try_init()
        .is_ok();
    Ok(Telemetry { tracer })
}

/// A per-layer filter that is asked about every span and event its callsite
/// does not rule out, instead of letting the callsite cache `always`.
///
/// Per-layer filters hand their verdict to their layer through a
/// thread-local that `enabled` refreshes; a callsite cached as `always`
/// skips `enabled`, so its span inherits whatever verdict the last
/// `enabled` call on that thread left. `log::log_enabled!` through the
/// `log` bridge (sqlx asks after every query) leaves such verdicts, and the
/// collector then never saw our handler spans — tokio-rs/tracing#2519; this
/// is the fix proposed there (#3572), kept here until a release has it.
struct Fresh<F>(F);

impl<F, S> tracing_subscriber::layer::Filter<S> for Fresh<F>
where
    F: tracing_subscriber::layer::Filter<S>,
{
    fn enabled(&self, meta: &tracing::Metadata<'_>, cx: &FilterContext<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        if self.0.callsite_enabled(meta).is_never() {
            Interest::never()
        } else {
            Interest::sometimes()
        }
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, cx: &FilterContext<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: FilterContext<'_, S>) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: FilterContext<'_, S>) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &span::Id, cx: FilterContext<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &span::Id, cx: FilterContext<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: span::Id, cx: FilterContext<'_, S>) {
        self.0.on_close(id, cx)
    }
}

fn tracer_provider(endpoint: &str) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig as _;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("UNIO_OTLP_ENDPOINT: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("unio")
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[derive(Clone)]
pub struct CallLogLayer {
    metrics: Arc<Metrics>,
}

impl CallLogLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CallLogLayer {
    type Service = CallLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CallLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = LoggedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let record = CallRecord {
            method: request.uri().path().to_owned(),
            start: Instant::now(),
            metrics: self.metrics.clone(),
            done: false,
        };
        self.metrics.call_started();
        LoggedFuture {
            inner: self.inner.call(request),
            record: Some(record),
        }
    }
}

pin_project! {
    pub struct LoggedFuture<F> {
        #[pin]
        inner: F,
        record: Option<CallRecord>,
    }
}

impl<F, B, E> Future for LoggedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<LoggedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut record = this.record.take();
        Poll::Ready(match result {
            Ok(response) => {
                let mut stream = None;
                if let Some(record) = record.as_mut() {
                    match grpc_status(response.headers()) {
                        // Trailers-only: the call ended before any message.
                        Some(code) => record.finish(code),
                        None => {
                            stream = StreamKind::of(&record.method)
                                .map(|kind| record.metrics.stream_opened(kind));
                        }
                    }
                }
                Ok(response.map(|inner| LoggedBody {
                    inner,
                    record,
                    stream,
                }))
            }
            Err(err) => {
                if let Some(mut record) = record {
                    record.finish(Code::Internal);
                }
                Err(err)
            }
        })
    }
}

pin_project! {
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
        // Counted as open until the body ends; dropping it (a cancelled
        // call) takes it off the gauge too.
        stream: Option<OpenStream>,
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) => frame.is_trailers(),
            Some(Err(_)) | None => true,
        };
        if ended {
            this.stream.take();
        }
        if let Some(record) = this.record.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        record.finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                    }
                }
                Some(Err(_)) => record.finish(Code::Unavailable),
                None => record.finish(Code::Unknown),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// One call in flight; logs exactly once, when finished or dropped.
struct CallRecord {
    method: String,
    start: Instant,
    metrics: Arc<Metrics>,
    done: bool,
}

impl CallRecord {
    fn finish(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.start.elapsed();
        self.metrics.call_finished(&self.method, code, elapsed);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if matches!(code, Code::Internal | Code::Unknown | Code::DataLoss) {
            tracing::warn!(method = %self.method, code = ?code, latency_ms, "call");
        } else {
            tracing::info!(method = %self.method, code = ?code, latency_ms, "call");
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}
