//! The web app (DESIGN §13), served by `unio` on the API's port: `/`,
//! `/m/<meeting id>` (every meeting's join_url), `/verify` and
//! `/oauth/callback` answer with the app's page, `/assets/*` with its
//! script and stylesheet. The bundle is built from `web/` (`npm run build`)
//! and embedded in the binary, so nothing is installed to run it.
//!
//! [`WebLayer`] sits outermost, in front of the gRPC layers: it answers
//! `GET` and `HEAD` (which gRPC and gRPC-Web never use: they `POST`)
//! through an axum router, and passes everything else to tonic untouched.
//!
//! The page keeps bearer tokens where its scripts can read them, so no
//! other script may ever run in it: every response carries a strict
//! Content-Security-Policy (scripts and styles from this origin only, no
//! inline code, `connect-src` this origin, no framing), `nosniff` and
//! `no-referrer`. Files are revalidated (`no-cache` with an ETag): a new
//! binary serves its new bundle at once.

use std::{
    convert::Infallible,
    sync::OnceLock,
    task::{Context, Poll},
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use http::Method;
use sha2::{Digest, Sha256};
use tower::{Layer, Service, ServiceExt};

const INDEX: &[u8] = include_bytes!("../web/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../web/dist/app.js");
const APP_CSS: &[u8] = include_bytes!("../web/dist/app.css");

/// What every page and file is served with.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; media-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// One embedded file.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(bytes: &'static [u8], content_type: &'static str) -> Self {
        Self {
            bytes,
            content_type,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.bytes);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header")
        })
    }

    fn respond(&self, headers: &HeaderMap) -> Response {
        let etag = self.etag().clone();
        // RFC 9110: `*`, or any listed tag, compared weakly.
        let ours = etag.to_str().unwrap_or_default();
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .map(str::trim)
                    .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
            });
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut r = Body::from(self.bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            r
        };
        let h = response.headers_mut();
        h.insert(header::ETAG, etag);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

static PAGE: Asset = Asset::new(INDEX, "text/html; charset=utf-8");
static SCRIPT: Asset = Asset::new(APP_JS, "text/javascript; charset=utf-8");
static STYLE: Asset = Asset::new(APP_CSS, "text/css; charset=utf-8");

async fn page(headers: HeaderMap) -> Response {
    PAGE.respond(&headers)
}

async fn script(headers: HeaderMap) -> Response {
    SCRIPT.respond(&headers)
}

async fn style(headers: HeaderMap) -> Response {
    STYLE.respond(&headers)
}

/// A join_url whose id is not a meeting id, or any other path: a page
/// that says so (the app itself tells a missing meeting apart).
async fn not_found() -> Response {
    let mut r = (
        StatusCode::NOT_FOUND,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found · UNIO</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body><main><h1>Not found</h1>\
         <p><a href=\"/\">Back to UNIO</a></p></main></body></html>",
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// A meeting id as join_urls spell it (the canonical hyphenated form the
/// app's router expects), nothing looser.
fn is_meeting_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

async fn meeting(
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if is_meeting_id(&id) {
        page(headers).await
    } else {
        not_found().await
    }
}

/// The app's routes; every response gets the security headers.
fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/verify", get(page))
        .route("/oauth/callback", get(page))
        .route("/m/{id}", get(meeting))
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style))
        .fallback(not_found)
        .layer(axum::middleware::map_response(secure))
}

async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self), display-capture=(self)"),
    );
    response
}

/// See the module doc.
#[derive(Debug, Clone, Default)]
pub struct WebLayer;

impl<S> Layer<S> for WebLayer {
    type Service = Web<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Web {
            inner,
            app: router(),
        }
    }
}

#[derive(Clone)]
pub struct Web<S> {
    inner: S,
    app: Router,
}

impl<S, B, ResBody> Service<http::Request<B>> for Web<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.method() == Method::GET || request.method() == Method::HEAD {
            // A GET carries no body: the app's routes get an empty one.
            let (parts, _) = request.into_parts();
            let app = self.app.clone();
            return Box::pin(async move {
                let response = app
                    .oneshot(Request::from_parts(parts, Body::empty()))
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok(response.map(tonic::body::Body::new))
            });
        }
        let future = self.inner.call(request);
        Box::pin(async move { Ok(future.await?.map(tonic::body::Body::new)) })
    }
}
