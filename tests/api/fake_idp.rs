//! A fake OpenID Connect provider on 127.0.0.1 for the OAuth tests:
//! discovery, JWKS, an authorization step the test drives, and a token
//! endpoint that checks the client secret, the redirect URI and PKCE (S256).
//! RSA keys are generated per test with openssl.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Form, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const CLIENT_SECRET: &str = "fake-client-secret";

/// An RSA signing key with its JWK parts.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    n: String,
}

impl SigningKey {
    pub fn generate(kid: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let ok = std::process::Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&path)
            .arg("2048")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genrsa");
        let pem = std::fs::read(&path).unwrap();
        let modulus = std::process::Command::new("openssl")
            .args(["rsa", "-noout", "-modulus", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        let hex = String::from_utf8(modulus.stdout)
            .unwrap()
            .trim()
            .trim_start_matches("Modulus=")
            .to_owned();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        Self {
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_pem(&pem).unwrap(),
            n: URL_SAFE_NO_PAD.encode(bytes),
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

struct Grant {
    challenge: String,
    redirect_uri: String,
    claims: Value,
}

struct IdpState {
    /// The issuer the provider claims; `{tenantid}` for a Microsoft-style one.
    issuer_template: String,
    client_id: String,
    /// Published keys; the first one signs.
    keys: Vec<SigningKey>,
    codes: HashMap<String, Grant>,
    token_requests: usize,
    /// The token endpoint answers this many requests with 503.
    outages: usize,
}

#[derive(Clone)]
pub struct FakeIdp {
    pub base: String,
    state: Arc<Mutex<IdpState>>,
    server: Arc<tokio::task::JoinHandle<()>>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl FakeIdp {
    /// `issuer_path` is appended to the base URL; `{tenantid}` in it makes
    /// the discovery issuer a Microsoft-style template.
    pub async fn start(client_id: &str, issuer_path: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let state = Arc::new(Mutex::new(IdpState {
            issuer_template: format!("{base}{issuer_path}"),
            client_id: client_id.into(),
            keys: vec![SigningKey::generate("key-1")],
            codes: HashMap::new(),
            token_requests: 0,
            outages: 0,
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state((state.clone(), base.clone()));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            state,
            server: Arc::new(server),
        }
    }

    /// Stops answering (the provider is down).
    pub fn stop(&self) {
        self.server.abort();
    }

    pub fn key(&self) -> SigningKey {
        self.state.lock().unwrap().keys[0].clone()
    }

    /// Rotates: a new key signs from now on; the JWKS publishes both.
    pub fn rotate(&self, kid: &str) {
        let key = SigningKey::generate(kid);
        self.state.lock().unwrap().keys.insert(0, key);
    }

    /// The next `count` token requests get `503` with an OAuth error body.
    pub fn fail_token_requests(&self, count: usize) {
        self.state.lock().unwrap().outages = count;
    }

    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }

    /// The issuer tokens carry (with `tid` substituted when templated).
    pub fn issuer(&self, tid: &str) -> String {
        self.state
            .lock()
            .unwrap()
            .issuer_template
            .replace("{tenantid}", tid)
    }

    /// Standard claims for `sub` with `email`, valid now.
    pub fn claims(&self, sub: &str, email: &str) -> Value {
        let state = self.state.lock().unwrap();
        json!({
            "iss": state.issuer_template.replace("{tenantid}", "tenant-1"),
            "sub": sub,
            "aud": state.client_id,
            "iat": now(),
            "exp": now() + 600,
            "email": email,
            "email_verified": true,
            "name": "Fake Person",
            "tid": "tenant-1",
        })
    }

    /// What the provider's login page does: checks the authorization URL
    /// and returns a code bound to its PKCE challenge. `claims` get the
    /// request's nonce unless they carry one already.
    pub fn authorize(
        &self,
        authorization_url: &str,
        mut claims: Value,
    ) -> (String, HashMap<String, String>) {
        let url = url::Url::parse(authorization_url).unwrap();
        let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let state = &mut *self.state.lock().unwrap();
        assert_eq!(params["client_id"], state.client_id);
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["code_challenge_method"], "S256");
        let scopes: Vec<&str> = params["scope"].split(' ').collect();
        for needed in ["openid", "email", "profile"] {
            assert!(scopes.contains(&needed), "scope {needed} missing");
        }
        if claims.get("nonce").is_none() {
            claims["nonce"] = json!(params["nonce"]);
        }
        let code = format!("code-{}", uuid::Uuid::new_v4().simple());
        state.codes.insert(
            code.clone(),
            Grant {
                challenge: params["code_challenge"].clone(),
                redirect_uri: params["redirect_uri"].clone(),
                claims,
            },
        );
        (code, params)
    }
}

type Shared = State<(Arc<Mutex<IdpState>>, String)>;

async fn discovery(State((state, base)): Shared) -> Json<Value> {
    let issuer = state.lock().unwrap().issuer_template.clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State((state, _)): Shared) -> Json<Value> {
    let keys: Vec<Value> = state
        .lock()
        .unwrap()
        .keys
        .iter()
        .map(|k| json!({"kty": "RSA", "kid": k.kid, "use": "sig", "alg": "RS256", "n": k.n, "e": "AQAB"}))
        .collect();
    Json(json!({ "keys": keys }))
}

async fn token(
    State((state, _)): Shared,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    let state = &mut *state.lock().unwrap();
    state.token_requests += 1;
    if state.outages > 0 {
        state.outages -= 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "temporarily_unavailable" })),
        )
            .into_response();
    }
    let refuse =
        |error: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    // The oauth2 crate authenticates with HTTP Basic by default.
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_default();
    let (id, secret) = basic.split_once(':').unwrap_or(("", ""));
    let id = form.get("client_id").map(String::as_str).unwrap_or(id);
    let secret = form
        .get("client_secret")
        .map(String::as_str)
        .unwrap_or(secret);
    if id != state.client_id || secret != CLIENT_SECRET {
        return refuse("invalid_client");
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return refuse("unsupported_grant_type");
    }
    let Some(grant) = form.get("code").and_then(|c| state.codes.remove(c)) else {
        return refuse("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if challenge != grant.challenge || form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return refuse("invalid_grant");
    }
    let id_token = state.keys[0].sign(&grant.claims);
    Json(json!({"access_token": "fake-access", "token_type": "Bearer", "expires_in": 3600, "id_token": id_token})).into_response()
}
