//! The no-token sweep: every non-public RPC, found by walking the service
//! descriptors (not a hand-kept list, so a new RPC is covered the day it is
//! added), refuses a call without a valid access token with UNAUTHENTICATED,
//! whatever is wrong with the token.
//!
//! Also home of the raw-bytes gRPC client that `corpus` shares: calls go
//! through `tonic::client::Grpc` with a codec that passes bytes unchanged,
//! so any body (valid, hostile or undecodable) can be sent to any method.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::uri::PathAndQuery;
use prost::bytes::{Buf, BufMut};
use prost_reflect::{DescriptorPool, MethodDescriptor};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::{
    Code, Request, Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
    transport::Channel,
};
use unio::proto::pb;

use crate::helpers::{TestApp, authed, reason, spawn_app};

/// Methods callable without a token (DESIGN §3 and §7).
pub const PUBLIC_METHODS: [&str; 6] = [
    "AuthService/SignUp",
    "AuthService/Login",
    "AuthService/RefreshToken",
    "AuthService/StartOAuth",
    "AuthService/CompleteOAuth",
    "AuthService/VerifyEmail",
];

/// A codec that sends and receives message bodies as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// The services of `unio.v1` as the server describes them.
pub fn descriptor_pool() -> DescriptorPool {
    DescriptorPool::decode(unio::proto::FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

/// Every method of every `unio.v1` service.
pub fn unio_methods(pool: &DescriptorPool) -> Vec<MethodDescriptor> {
    pool.services()
        .filter(|service| service.package_name() == "unio.v1")
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .collect()
}

/// `AuthService/Login` for a method.
pub fn short_name(method: &MethodDescriptor) -> String {
    format!("{}/{}", method.parent_service().name(), method.name())
}

pub fn is_public(method: &MethodDescriptor) -> bool {
    PUBLIC_METHODS.contains(&short_name(method).as_str())
}

/// A raw client that lets large bodies through both ways.
pub fn raw_client(channel: Channel) -> Grpc<Channel> {
    Grpc::new(channel)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20)
}

/// How a call ended, as far as the test looked.
#[derive(Debug)]
pub enum Answer {
    /// A unary answer, or a stream that ended cleanly.
    Ok,
    /// A stream still open (after `items` messages) when the test stopped reading.
    Open { items: usize },
    /// The error status, from the call or from the stream.
    Status(Status),
    /// No answer (nor, for a server stream, its start) within 15 s.
    Silent,
}

impl Answer {
    pub fn code(&self) -> Option<Code> {
        match self {
            Answer::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Ok => write!(f, "OK"),
            Answer::Open { items } => write!(f, "stream open after {items} message(s)"),
            Answer::Silent => write!(f, "no answer in time"),
            Answer::Status(status) => {
                let message: String = status.message().chars().take(300).collect();
                write!(f, "{:?}", status.code())?;
                let why = reason(status);
                if !why.is_empty() {
                    write!(f, "/{why}")?;
                }
                write!(f, " {message:?}")
            }
        }
    }
}

/// `message` with `authorization` metadata set to exactly `value`, if any.
fn with_auth<T>(message: T, value: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = value {
        let value: MetadataValue<_> = value.parse().expect("header value");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Calls `method` with one request `body` (a one-message stream for client
/// streams) and `authorization` as that metadata's value, if any. Server
/// streams are read for at most `read_for` and 3 messages.
pub async fn call_raw(
    grpc: &mut Grpc<Channel>,
    method: &MethodDescriptor,
    body: Vec<u8>,
    authorization: Option<&str>,
    read_for: Duration,
) -> Answer {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = PathAndQuery::try_from(path).expect("a valid path");
    if let Err(err) = grpc.ready().await {
        return Answer::Status(Status::unavailable(format!("channel not ready: {err}")));
    }
    let one = || tokio_stream::iter(vec![body.clone()]);
    let answer_within = Duration::from_secs(15);
    let started = match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => {
            let call = grpc.unary(with_auth(body.clone(), authorization), path, RawCodec);
            return match tokio::time::timeout(answer_within, call).await {
                Ok(Ok(_)) => Answer::Ok,
                Ok(Err(status)) => Answer::Status(status),
                Err(_) => Answer::Silent,
            };
        }
        (true, false) => {
            let call = grpc.client_streaming(with_auth(one(), authorization), path, RawCodec);
            return match tokio::time::timeout(answer_within, call).await {
                Ok(Ok(_)) => Answer::Ok,
                Ok(Err(status)) => Answer::Status(status),
                Err(_) => Answer::Silent,
            };
        }
        (false, true) => {
            let call =
                grpc.server_streaming(with_auth(body.clone(), authorization), path, RawCodec);
            tokio::time::timeout(answer_within, call).await
        }
        (true, true) => {
            let call = grpc.streaming(with_auth(one(), authorization), path, RawCodec);
            tokio::time::timeout(answer_within, call).await
        }
    };
    let mut stream = match started {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Answer::Status(status),
        Err(_) => return Answer::Silent,
    };
    let deadline = tokio::time::Instant::now() + read_for;
    let mut items = 0;
    while items < 3 {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => break,
            Ok(None) => return Answer::Ok,
            Ok(Some(Ok(_))) => items += 1,
            Ok(Some(Err(status))) => return Answer::Status(status),
        }
    }
    Answer::Open { items }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The server's key id for a secret (`src/auth/tokens.rs`: the start of its SHA-256).
fn key_id(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The claims of a token the server issued.
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

fn hs256(kid: &str, claims: &serde_json::Value, secret: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn unsigned(header: serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Every way a caller can present no valid access token.
async fn bad_credentials(app: &TestApp) -> Vec<BadCredential> {
    let (_, access, refresh) = app.user("sweep@example.com").await;
    let (_, gone, gone_refresh) = app.user("gone@example.com").await;
    app.auth()
        .logout(authed(
            pb::LogoutRequest {
                refresh_token: gone_refresh,
            },
            &gone,
        ))
        .await
        .expect("logout");

    // Real claims of a live session (sub, sid, jti, iat, exp, role): only
    // the signature, the expiry or the algorithm is wrong below.
    let live = claims_of(&access);
    for claim in ["sub", "sid", "jti", "iat", "exp", "role"] {
        assert!(
            live.get(claim).is_some(),
            "issued tokens carry `{claim}`: {live}"
        );
    }
    let kid = key_id(&app.secret);
    let mut forged = live.clone();
    forged["jti"] = uuid::Uuid::new_v4().to_string().into();
    forged["iat"] = now().into();
    forged["exp"] = (now() + 900).into();
    let mut expired = live.clone();
    expired["iat"] = (now() - 7200).into();
    expired["exp"] = (now() - 3600).into();
    let none_header = serde_json::json!({"alg": "none", "typ": "JWT"});
    let none_header_with_kid = serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid});

    let bearer = |token: &str| Some(format!("Bearer {token}"));
    vec![
        BadCredential::new("no authorization", None, Some("TOKEN_MISSING")),
        BadCredential::new("Bearer garbage", bearer("garbage"), None),
        BadCredential::new(
            "HS256 signed with a wrong secret",
            bearer(&hs256(&kid, &forged, "not-the-server-secret")),
            None,
        ),
        // Its reason proves the token is right in every other respect.
        BadCredential::new(
            "expired, signed with the real secret",
            bearer(&hs256(&kid, &expired, &app.secret)),
            Some("TOKEN_EXPIRED"),
        ),
        BadCredential::new("alg none", bearer(&unsigned(none_header, &forged)), None),
        BadCredential::new(
            "alg none with the real kid",
            bearer(&unsigned(none_header_with_kid, &forged)),
            None,
        ),
        BadCredential::new("revoked by Logout", bearer(&gone), Some("TOKEN_REVOKED")),
        BadCredential::new("refresh token as bearer", bearer(&refresh), None),
    ]
}

/// One way of presenting no valid access token.
struct BadCredential {
    case: &'static str,
    /// The `authorization` metadata value, if any.
    authorization: Option<String>,
    /// The ErrorInfo reason DESIGN §3 names for this case, where it names one.
    reason: Option<&'static str>,
}

impl BadCredential {
    fn new(
        case: &'static str,
        authorization: Option<String>,
        reason: Option<&'static str>,
    ) -> Self {
        Self {
            case,
            authorization,
            reason,
        }
    }
}

#[tokio::test]
async fn every_private_rpc_refuses_calls_without_a_valid_token() {
    let app = spawn_app().await;
    let pool = descriptor_pool();
    let methods = unio_methods(&pool);
    let private: Vec<_> = methods.iter().filter(|m| !is_public(m)).collect();
    assert!(
        private.len() >= 40,
        "the descriptor walk found only {} private methods: {:?}",
        private.len(),
        private.iter().map(|m| short_name(m)).collect::<Vec<_>>()
    );
    for public in PUBLIC_METHODS {
        assert!(
            methods.iter().any(|m| short_name(m) == public),
            "public method {public} is not in the descriptors"
        );
    }

    let credentials = bad_credentials(&app).await;
    let mut grpc = raw_client(app.channel());
    let mut failures = Vec::new();
    let mut calls = 0;
    for method in &private {
        for credential in &credentials {
            calls += 1;
            let answer = call_raw(
                &mut grpc,
                method,
                Vec::new(),
                credential.authorization.as_deref(),
                Duration::from_secs(2),
            )
            .await;
            let wrong_reason = match (&answer, credential.reason) {
                (Answer::Status(status), Some(expected)) => reason(status) != expected,
                _ => false,
            };
            if answer.code() != Some(Code::Unauthenticated) || wrong_reason {
                failures.push(format!(
                    "{} [{}]: {answer}{}",
                    short_name(method),
                    credential.case,
                    credential
                        .reason
                        .map(|r| format!(" (expected reason {r})"))
                        .unwrap_or_default()
                ));
            }
        }
    }

    // Public methods must reach their handler without a token.
    for method in methods.iter().filter(|m| is_public(m)) {
        calls += 1;
        let answer = call_raw(&mut grpc, method, Vec::new(), None, Duration::from_secs(2)).await;
        if let Answer::Status(status) = &answer {
            if reason(status) == "TOKEN_MISSING" || status.code() == Code::Internal {
                failures.push(format!(
                    "{} [public, no token]: {answer}",
                    short_name(method)
                ));
            }
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {calls} calls over {} private and {} public methods answered wrongly:\n{}",
        failures.len(),
        private.len(),
        PUBLIC_METHODS.len(),
        failures.join("\n")
    );
}
