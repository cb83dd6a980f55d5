//! Every authenticated call refuses missing, expired, forged and revoked
//! tokens, and those of deactivated or deleted users.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tonic::Code;
use unio::proto::pb;

use crate::helpers::{assert_status, authed, spawn_app};

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn sign(claims: &serde_json::Value, kid: &str, secret: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn missing_and_malformed_authorization_is_refused() {
    let app = spawn_app().await;
    assert_status(
        app.users().get_me(pb::GetMeRequest {}).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    let mut request = tonic::Request::new(pb::GetMeRequest {});
    request
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
    assert_status(
        app.users().get_me(request).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, "not.a.jwt"))
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

#[tokio::test]
async fn expired_tokens_are_refused_as_expired() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("ada@example.com").await;
    let mut claims = claims_of(&access);
    let now = claims["iat"].as_i64().unwrap();
    claims["iat"] = json!(now - 3600);
    claims["exp"] = json!(now - 1800);
    let expired = sign(&claims, &kid_of(&access), &app.secret);
    let status = assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &expired))
            .await,
        Code::Unauthenticated,
        "TOKEN_EXPIRED",
    );
    assert!(status.message().contains("RefreshToken"));
}

#[tokio::test]
async fn tokens_signed_with_another_key_are_invalid() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("ada@example.com").await;
    let forged = sign(
        &claims_of(&access),
        &kid_of(&access),
        "some-other-secret-of-enough-length!!",
    );
    assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &forged))
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    // An unknown key id is refused before any signature check.
    let unknown_kid = sign(&claims_of(&access), "ffffffffffff", &app.secret);
    assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &unknown_kid))
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

#[tokio::test]
async fn alg_none_and_edited_payloads_are_invalid() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("ada@example.com").await;
    let (_, admin_access) = app.admin("root@example.com").await;
    let mut claims = claims_of(&access);
    let none_header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "none", "typ": "JWT", "kid": kid_of(&access)}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    for token in [
        format!("{none_header}.{body}."),
        format!("{none_header}.{body}"),
    ] {
        assert_status(
            app.users()
                .get_me(authed(pb::GetMeRequest {}, &token))
                .await,
            Code::Unauthenticated,
            "TOKEN_INVALID",
        );
    }
    // Claiming admin in the payload of a real token breaks its signature.
    claims["role"] = json!("admin");
    let parts: Vec<&str> = access.split('.').collect();
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &edited))
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    // Another user's signature on this user's claims is no better.
    let admin_sig = admin_access.split('.').nth(2).unwrap();
    let spliced = format!("{}.{}.{}", parts[0], parts[1], admin_sig);
    assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &spliced))
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

#[tokio::test]
async fn a_validly_signed_token_for_a_made_up_session_is_revoked() {
    let app = spawn_app().await;
    let (_, access, _) = app.user("ada@example.com").await;
    let mut claims = claims_of(&access);
    claims["sid"] = json!(uuid::Uuid::now_v7().to_string());
    let token = sign(&claims, &kid_of(&access), &app.secret);
    assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &token))
            .await,
        Code::Unauthenticated,
        "TOKEN_REVOKED",
    );
}

#[tokio::test]
async fn deactivated_users_tokens_are_refused_at_once() {
    let app = spawn_app().await;
    let (ada, access, refresh) = app.user("ada@example.com").await;
    let (_, admin) = app.admin("root@example.com").await;
    app.users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: ada.id.clone(),
                    is_active: false,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["is_active".into()],
                }),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &access))
            .await,
        Code::Unauthenticated,
        "ACCOUNT_DISABLED",
    );
    assert_status(
        app.auth()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
        "ACCOUNT_DISABLED",
    );
    assert_status(
        app.auth()
            .login(pb::LoginRequest {
                email: "ada@example.com".into(),
                password: crate::helpers::PASSWORD.into(),
            })
            .await,
        Code::Unauthenticated,
        "ACCOUNT_DISABLED",
    );
}

#[tokio::test]
async fn deleted_users_tokens_are_refused() {
    let app = spawn_app().await;
    let (_, access, refresh) = app.user("ada@example.com").await;
    app.users()
        .delete_user(authed(
            pb::DeleteUserRequest {
                user_id: String::new(),
            },
            &access,
        ))
        .await
        .unwrap();
    assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &access))
            .await,
        Code::Unauthenticated,
        "TOKEN_REVOKED",
    );
    assert_status(
        app.auth()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: refresh,
            })
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}
