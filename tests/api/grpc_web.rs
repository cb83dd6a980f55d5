//! Browsers: hand-framed gRPC-Web over HTTP/1.1 (binary and text modes) and
//! the CORS preflight a browser sends first.

use base64::{Engine, engine::general_purpose::STANDARD};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prost::Message;
use unio::proto::pb;

use crate::helpers::{PASSWORD, spawn_app, spawn_app_with};

struct WebResponse {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

async fn http1(addr: std::net::SocketAddr, request: http::Request<Full<Bytes>>) -> WebResponse {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    WebResponse {
        status,
        headers,
        body,
    }
}

/// One length-prefixed gRPC-Web frame.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a response body into (messages, trailers text).
fn frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..5 + len];
        if body[0] & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            messages.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

fn grpc_web_post(
    addr: std::net::SocketAddr,
    method: &str,
    content_type: &str,
) -> http::request::Builder {
    http::Request::post(format!("http://{addr}/unio.v1.{method}"))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .header("origin", "https://app.example")
}

#[tokio::test]
async fn a_browser_signs_up_and_reads_its_profile_over_http1() {
    let app = spawn_app().await;
    let request = pb::SignUpRequest {
        email: "web@example.com".into(),
        password: PASSWORD.into(),
        display_name: "Web".into(),
    };
    let body = frame(0, &request.encode_to_vec());
    let response = http1(
        app.addr,
        grpc_web_post(app.addr, "AuthService/SignUp", "application/grpc-web+proto")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers["content-type"],
        "application/grpc-web+proto"
    );
    assert_eq!(response.headers["access-control-allow-origin"], "*");
    let exposed = response.headers["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-status-details-bin"),
        "{exposed}"
    );
    let (messages, trailers) = frames(&response.body);
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    let signed_up = pb::AuthResponse::decode(messages[0].as_slice()).unwrap();
    assert_eq!(signed_up.user.unwrap().email, "web@example.com");

    // An authenticated call from the browser, in text (base64) mode.
    let access = signed_up.tokens.unwrap().access_token;
    let body = STANDARD.encode(frame(0, &pb::GetMeRequest {}.encode_to_vec()));
    let response = http1(
        app.addr,
        grpc_web_post(app.addr, "UserService/GetMe", "application/grpc-web-text")
            .header("accept", "application/grpc-web-text")
            .header("authorization", format!("Bearer {access}"))
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(
        response.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web-text"),
        "{:?}",
        response.headers
    );
    let decoded = decode_text(&response.body);
    let (messages, trailers) = frames(&decoded);
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    assert_eq!(
        pb::User::decode(messages[0].as_slice())
            .unwrap()
            .display_name,
        "Web"
    );
}

/// Text mode may send several base64 chunks, each padded on its own.
fn decode_text(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    let mut chunk = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        chunk.push(c);
        if c == '=' && chars.peek() != Some(&'=') {
            out.extend(STANDARD.decode(&chunk).unwrap());
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        out.extend(STANDARD.decode(&chunk).unwrap());
    }
    out
}

#[tokio::test]
async fn browser_errors_carry_status_and_details() {
    let app = spawn_app().await;
    let body = frame(0, &pb::GetMeRequest {}.encode_to_vec());
    let response = http1(
        app.addr,
        grpc_web_post(app.addr, "UserService/GetMe", "application/grpc-web+proto")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200);
    let (_, trailers) = frames(&response.body);
    let in_headers = response
        .headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = in_headers.unwrap_or_else(|| {
        trailers
            .lines()
            .find_map(|l| l.strip_prefix("grpc-status:"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    });
    assert_eq!(status, "16", "UNAUTHENTICATED");
    let has_details = response.headers.contains_key("grpc-status-details-bin")
        || trailers.contains("grpc-status-details-bin");
    assert!(has_details);
}

#[tokio::test]
async fn cors_preflight_allows_the_authorization_header() {
    let app = spawn_app().await;
    let preflight = http::Request::builder()
        .method("OPTIONS")
        .uri(format!("http://{}/unio.v1.UserService/GetMe", app.addr))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,x-user-agent",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = http1(app.addr, preflight).await;
    assert!(
        response.status == 200 || response.status == 204,
        "{}",
        response.status
    );
    assert_eq!(response.headers["access-control-allow-origin"], "*");
    let allowed = response.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
    ] {
        assert!(allowed.contains(header), "{header} missing from {allowed}");
    }
    assert!(
        response.headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
}

#[tokio::test]
async fn configured_origins_are_the_only_ones_allowed() {
    let app = spawn_app_with(&[("UNIO_CORS_ORIGINS", "https://app.example")]).await;
    let preflight = |origin: &str| {
        http::Request::builder()
            .method("OPTIONS")
            .uri(format!("http://{}/unio.v1.AuthService/Login", app.addr))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let allowed = http1(app.addr, preflight("https://app.example")).await;
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let refused = http1(app.addr, preflight("https://evil.example")).await;
    assert!(!refused.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn undecodable_messages_are_invalid_argument_not_internal() {
    let app = spawn_app().await;
    // Field 1 (email) claims 127 bytes but the message ends: truncated.
    let body = frame(0, &[0x0a, 0x7f, b'a']);
    let response = http1(
        app.addr,
        grpc_web_post(app.addr, "AuthService/SignUp", "application/grpc-web+proto")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    let (_, trailers) = frames(&response.body);
    let status = response
        .headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| {
            trailers
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        });
    assert_eq!(status, "3", "INVALID_ARGUMENT; trailers {trailers:?}");
}
