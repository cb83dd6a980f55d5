//! Sign-in with Google and Microsoft against fake OpenID Connect providers
//! on loopback: the full code flow with PKCE, the native ID-token flow,
//! account creation and linking, and every way a sign-in must fail.

use serde_json::{Value, json};
use tonic::Code;
use unio::proto::pb;

use crate::{
    fake_idp::{CLIENT_SECRET, FakeIdp, SigningKey, now},
    helpers::{PASSWORD, TestApp, assert_status, authed, bad_fields, spawn_app, spawn_app_with},
};

const REDIRECT: &str = "https://app.example/oauth/callback";
const GOOGLE: i32 = pb::OauthProvider::Google as i32;
const MICROSOFT: i32 = pb::OauthProvider::Microsoft as i32;

struct Providers {
    app: TestApp,
    google: FakeIdp,
    microsoft: FakeIdp,
}

async fn setup() -> Providers {
    let google = FakeIdp::start("google-client", "").await;
    let microsoft = FakeIdp::start("microsoft-client", "/{tenantid}/v2.0").await;
    let app = spawn_app_with(&[
        ("UNIO_GOOGLE_CLIENT_ID", "google-client"),
        ("UNIO_GOOGLE_CLIENT_SECRET", CLIENT_SECRET),
        ("UNIO_GOOGLE_ISSUER", &google.base),
        ("UNIO_MICROSOFT_CLIENT_ID", "microsoft-client"),
        ("UNIO_MICROSOFT_CLIENT_SECRET", CLIENT_SECRET),
        ("UNIO_MICROSOFT_ISSUER", &microsoft.base),
        ("UNIO_OAUTH_REDIRECT_URIS", REDIRECT),
    ])
    .await;
    Providers {
        app,
        google,
        microsoft,
    }
}

async fn start(app: &TestApp, provider: i32) -> pb::StartOAuthResponse {
    app.auth()
        .start_o_auth(pb::StartOAuthRequest {
            provider,
            redirect_uri: REDIRECT.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn complete(
    app: &TestApp,
    provider: i32,
    code: &str,
    state: &str,
) -> Result<pb::AuthResponse, tonic::Status> {
    app.auth()
        .complete_o_auth(pb::CompleteOAuthRequest {
            provider,
            code: code.into(),
            state: state.into(),
            id_token: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn native(
    app: &TestApp,
    provider: i32,
    id_token: &str,
) -> Result<pb::AuthResponse, tonic::Status> {
    app.auth()
        .complete_o_auth(pb::CompleteOAuthRequest {
            provider,
            id_token: id_token.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// The whole web flow with `claims` as the provider's answer.
async fn code_flow(
    app: &TestApp,
    idp: &FakeIdp,
    provider: i32,
    claims: Value,
) -> Result<pb::AuthResponse, tonic::Status> {
    let started = start(app, provider).await;
    let (code, params) = idp.authorize(&started.authorization_url, claims);
    assert_eq!(params["state"], started.state);
    complete(app, provider, &code, &started.state).await
}

#[tokio::test]
async fn google_sign_in_creates_an_account_then_recognises_it() {
    let p = setup().await;
    let started = start(&p.app, GOOGLE).await;
    assert!(
        started
            .authorization_url
            .starts_with(&format!("{}/authorize?", p.google.base))
    );
    let (code, params) = p.google.authorize(
        &started.authorization_url,
        p.google.claims("g-123", "Ada@Example.com"),
    );
    assert_eq!(params["redirect_uri"], REDIRECT);
    assert!(!params["nonce"].is_empty());
    let first = complete(&p.app, GOOGLE, &code, &started.state)
        .await
        .unwrap();
    let user = first.user.unwrap();
    assert_eq!(user.email, "Ada@example.com");
    assert_eq!(user.display_name, "Fake Person");
    assert_eq!(user.auth_provider, pb::AuthProvider::Google as i32);
    let access = first.tokens.unwrap().access_token;
    p.app
        .users()
        .get_me(authed(pb::GetMeRequest {}, &access))
        .await
        .unwrap();

    let again = code_flow(
        &p.app,
        &p.google,
        GOOGLE,
        p.google.claims("g-123", "ada@example.com"),
    )
    .await
    .unwrap();
    assert_eq!(again.user.unwrap().id, user.id, "the same account");
    // The state was single use.
    assert_status(
        complete(&p.app, GOOGLE, &code, &started.state).await,
        Code::FailedPrecondition,
        "OAUTH_STATE_INVALID",
    );
}

#[tokio::test]
async fn a_verified_identity_ends_every_unproven_way_into_its_address() {
    let p = setup().await;
    // Someone registered bob's address with a password and never proved it.
    let (bob, squatter_token, _) = p.app.unverified_user("bob@example.com").await;
    let linked = code_flow(
        &p.app,
        &p.google,
        GOOGLE,
        p.google.claims("g-bob", "bob@example.com"),
    )
    .await
    .unwrap();
    let owner = linked.user.unwrap();
    assert_eq!(owner.id, bob.id);
    assert!(owner.email_verified);
    // The password and the sessions of whoever registered the address
    // before its owner proved it end: the provider is the way in now.
    assert_status(
        p.app
            .auth()
            .login(pb::LoginRequest {
                email: "bob@example.com".into(),
                password: PASSWORD.into(),
            })
            .await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert_status(
        p.app
            .users()
            .get_me(authed(pb::GetMeRequest {}, &squatter_token))
            .await,
        Code::Unauthenticated,
        "TOKEN_REVOKED",
    );
    let again = code_flow(
        &p.app,
        &p.google,
        GOOGLE,
        p.google.claims("g-bob", "bob@example.com"),
    )
    .await
    .unwrap();
    assert_eq!(again.user.unwrap().id, bob.id);

    // An unverified email neither links nor signs in.
    p.app.user("carol@example.com").await;
    let mut claims = p.google.claims("g-carol", "carol@example.com");
    claims["email_verified"] = json!(false);
    assert_status(
        code_flow(&p.app, &p.google, GOOGLE, claims).await,
        Code::PermissionDenied,
        "EMAIL_NOT_VERIFIED",
    );
}

#[tokio::test]
async fn a_proven_password_stays_when_a_provider_links() {
    let p = setup().await;
    let (dora, dora_token, _) = p.app.user("dora@example.com").await;
    let linked = code_flow(
        &p.app,
        &p.google,
        GOOGLE,
        p.google.claims("g-dora", "dora@example.com"),
    )
    .await
    .unwrap();
    assert_eq!(linked.user.unwrap().id, dora.id);
    // Both proved the address: the same person keeps both ways in.
    p.app
        .auth()
        .login(pb::LoginRequest {
            email: "dora@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    p.app
        .users()
        .get_me(authed(pb::GetMeRequest {}, &dora_token))
        .await
        .unwrap();
}

/// Microsoft sign-in without a vouched email creates an account; when the
/// address's owner signs in with Google, the first identity, the password
/// it set and all its sessions lose the account.
#[tokio::test]
async fn an_unverified_provider_identity_cannot_ride_a_later_verified_link() {
    let p = setup().await;
    let host = p.app.user("host@example.com").await.1;
    let invited = p
        .app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Board".into(),
                start_time: Some(prost_types::Timestamp {
                    seconds: now() + 86_400,
                    nanos: 0,
                }),
                duration_minutes: 30,
                invitee_emails: vec!["ceo@corp.example".into()],
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();

    let mut claims = p.microsoft.claims("ms-squatter", "ceo@corp.example");
    claims["email_verified"] = json!(false);
    if let Some(map) = claims.as_object_mut() {
        map.remove("xms_edov");
    }
    let squatter = code_flow(&p.app, &p.microsoft, MICROSOFT, claims.clone())
        .await
        .unwrap();
    let squatter_user = squatter.user.unwrap();
    assert!(!squatter_user.email_verified);
    let squatter_token = squatter.tokens.unwrap().access_token;
    // It sees none of the address's invitations, and sets itself a password.
    let none = p
        .app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &squatter_token))
        .await
        .unwrap()
        .into_inner();
    assert!(none.invites.is_empty());
    p.app
        .users()
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: String::new(),
                new_password: "squatter password 1".into(),
            },
            &squatter_token,
        ))
        .await
        .unwrap();

    // The owner signs in with Google, which vouches for the address.
    let owner = code_flow(
        &p.app,
        &p.google,
        GOOGLE,
        p.google.claims("g-ceo", "ceo@corp.example"),
    )
    .await
    .unwrap();
    let owner_user = owner.user.unwrap();
    assert!(owner_user.email_verified);
    let owner_token = owner.tokens.unwrap().access_token;
    let mine = p
        .app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &owner_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.invites.len(), 1);
    assert_eq!(mine.invites[0].meeting_id, invited.id);

    // Every way the squatter had is gone: session, identity, password.
    assert_status(
        p.app
            .users()
            .get_me(authed(pb::GetMeRequest {}, &squatter_token))
            .await,
        Code::Unauthenticated,
        "TOKEN_REVOKED",
    );
    assert_status(
        code_flow(&p.app, &p.microsoft, MICROSOFT, claims).await,
        Code::PermissionDenied,
        "EMAIL_NOT_VERIFIED",
    );
    assert_status(
        p.app
            .auth()
            .login(pb::LoginRequest {
                email: "ceo@corp.example".into(),
                password: "squatter password 1".into(),
            })
            .await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    p.app
        .users()
        .get_me(authed(pb::GetMeRequest {}, &owner_token))
        .await
        .unwrap();
}

#[tokio::test]
async fn microsoft_multi_tenant_issuers_are_checked_with_the_tenant() {
    let p = setup().await;
    let signed_in = code_flow(
        &p.app,
        &p.microsoft,
        MICROSOFT,
        p.microsoft.claims("ms-1", "dan@contoso.example"),
    )
    .await
    .unwrap();
    assert_eq!(
        signed_in.user.unwrap().auth_provider,
        pb::AuthProvider::Microsoft as i32
    );
    // A token whose issuer names another tenant than its tid is refused.
    let mut claims = p.microsoft.claims("ms-2", "eve@contoso.example");
    claims["iss"] = json!(p.microsoft.issuer("other-tenant"));
    assert_status(
        code_flow(&p.app, &p.microsoft, MICROSOFT, claims).await,
        Code::Unauthenticated,
        "ID_TOKEN_INVALID",
    );
}

#[tokio::test]
async fn native_clients_sign_in_with_an_id_token() {
    let p = setup().await;
    let token = p
        .google
        .key()
        .sign(&p.google.claims("g-native", "native@example.com"));
    let signed_in = native(&p.app, GOOGLE, &token).await.unwrap();
    assert_eq!(signed_in.user.unwrap().email, "native@example.com");
    assert_eq!(
        p.google.token_requests(),
        0,
        "no code exchange in the native flow"
    );
}

#[tokio::test]
async fn forged_and_stale_id_tokens_are_refused() {
    let p = setup().await;
    let good = || p.google.claims("g-x", "x@example.com");
    let key = p.google.key();
    let cases: Vec<(&str, String)> = vec![
        ("signed with another key", {
            let mut other = SigningKey::generate(&key.kid);
            other.kid = key.kid.clone();
            other.sign(&good())
        }),
        ("wrong audience", {
            let mut c = good();
            c["aud"] = json!("someone-else");
            key.sign(&c)
        }),
        ("wrong issuer", {
            let mut c = good();
            c["iss"] = json!("https://accounts.evil.example");
            key.sign(&c)
        }),
        ("expired", {
            let mut c = good();
            c["iat"] = json!(now() - 7200);
            c["exp"] = json!(now() - 3600);
            key.sign(&c)
        }),
        ("issued in the future", {
            let mut c = good();
            c["iat"] = json!(now() + 3600);
            key.sign(&c)
        }),
        ("not a JWT", "nonsense".into()),
    ];
    for (what, token) in cases {
        let status = native(&p.app, GOOGLE, &token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert_eq!(
            crate::helpers::reason(&status),
            "ID_TOKEN_INVALID",
            "{what}"
        );
    }
    // alg none
    let body = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        good().to_string(),
    );
    let header = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        r#"{"alg":"none","kid":"key-1"}"#,
    );
    assert_status(
        native(&p.app, GOOGLE, &format!("{header}.{body}.")).await,
        Code::Unauthenticated,
        "ID_TOKEN_INVALID",
    );
    // Nothing was created by the refusals.
    let status = p
        .app
        .auth()
        .login(pb::LoginRequest {
            email: "x@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        code_flow(&p.app, &p.google, GOOGLE, good())
            .await
            .unwrap()
            .user
            .is_some()
    );
}

#[tokio::test]
async fn the_code_flow_checks_nonce_state_and_pkce() {
    let p = setup().await;
    // A provider answering with another sign-in's nonce.
    let mut claims = p.google.claims("g-n", "n@example.com");
    claims["nonce"] = json!("not-the-one-we-sent");
    assert_status(
        code_flow(&p.app, &p.google, GOOGLE, claims).await,
        Code::Unauthenticated,
        "ID_TOKEN_INVALID",
    );

    // Unknown state, and a state used with the wrong provider.
    let started = start(&p.app, GOOGLE).await;
    let (code, _) = p.google.authorize(
        &started.authorization_url,
        p.google.claims("g-s", "s@example.com"),
    );
    assert_status(
        complete(&p.app, GOOGLE, &code, "made-up-state").await,
        Code::FailedPrecondition,
        "OAUTH_STATE_INVALID",
    );
    assert_status(
        complete(&p.app, MICROSOFT, &code, &started.state).await,
        Code::FailedPrecondition,
        "OAUTH_STATE_INVALID",
    );

    // A code the provider does not know (or whose PKCE verifier does not
    // match its challenge) is refused by the provider.
    let started = start(&p.app, GOOGLE).await;
    let other = start(&p.app, GOOGLE).await;
    // The code is bound to `other`'s PKCE challenge, but redeemed with
    // `started`'s state, so the server sends `started`'s verifier.
    let (code, _) = p.google.authorize(
        &other.authorization_url,
        p.google.claims("g-p", "p@example.com"),
    );
    assert_status(
        complete(&p.app, GOOGLE, &code, &started.state).await,
        Code::Unauthenticated,
        "OAUTH_CODE_REJECTED",
    );

    // An expired state.
    let started = start(&p.app, GOOGLE).await;
    let config = unio::config::Config::from_lookup(|k| p.app.vars.get(k).cloned()).unwrap();
    let db = unio::open_database(&config).await.unwrap();
    match &db {
        unio::store::Db::Sqlite(pool) => sqlx::query("UPDATE oauth_states SET expires_at = 0")
            .execute(pool)
            .await
            .map(|_| ()),
        unio::store::Db::Postgres(pool) => sqlx::query("UPDATE oauth_states SET expires_at = 0")
            .execute(pool)
            .await
            .map(|_| ()),
    }
    .unwrap();
    db.close().await;
    let (code, _) = p.google.authorize(
        &started.authorization_url,
        p.google.claims("g-e", "e@example.com"),
    );
    assert_status(
        complete(&p.app, GOOGLE, &code, &started.state).await,
        Code::FailedPrecondition,
        "OAUTH_STATE_INVALID",
    );
}

#[tokio::test]
async fn a_rotated_provider_key_is_fetched_on_first_sight() {
    let p = setup().await;
    native(
        &p.app,
        GOOGLE,
        &p.google
            .key()
            .sign(&p.google.claims("g-r", "r@example.com")),
    )
    .await
    .unwrap();
    p.google.rotate("key-2");
    let rotated = p
        .google
        .key()
        .sign(&p.google.claims("g-r", "r@example.com"));
    native(&p.app, GOOGLE, &rotated).await.unwrap();
}

#[tokio::test]
async fn configuration_and_input_errors_are_clear() {
    let p = setup().await;
    let status = p
        .app
        .auth()
        .start_o_auth(pb::StartOAuthRequest {
            provider: GOOGLE,
            redirect_uri: "https://evil.example/cb".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["redirect_uri"]);
    let status = p
        .app
        .auth()
        .start_o_auth(pb::StartOAuthRequest {
            provider: 0,
            redirect_uri: REDIRECT.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["provider"]);
    let status = p
        .app
        .auth()
        .complete_o_auth(pb::CompleteOAuthRequest {
            provider: GOOGLE,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = p
        .app
        .auth()
        .complete_o_auth(pb::CompleteOAuthRequest {
            provider: GOOGLE,
            code: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["state"]);

    // Not configured at all.
    let plain = spawn_app().await;
    let status = assert_status(
        plain
            .auth()
            .start_o_auth(pb::StartOAuthRequest {
                provider: MICROSOFT,
                redirect_uri: REDIRECT.into(),
            })
            .await,
        Code::FailedPrecondition,
        "PROVIDER_NOT_CONFIGURED",
    );
    assert!(status.message().contains("UNIO_MICROSOFT_CLIENT_ID"));

    // The provider is down: nothing listens on port 1 (a stopped fake's
    // port could be taken by another test's fake meanwhile).
    p.google.stop();
    let fresh = spawn_app_with(&[
        ("UNIO_GOOGLE_CLIENT_ID", "google-client"),
        ("UNIO_GOOGLE_CLIENT_SECRET", CLIENT_SECRET),
        ("UNIO_GOOGLE_ISSUER", "http://127.0.0.1:1"),
        ("UNIO_OAUTH_REDIRECT_URIS", REDIRECT),
    ])
    .await;
    assert_status(
        fresh
            .auth()
            .start_o_auth(pb::StartOAuthRequest {
                provider: GOOGLE,
                redirect_uri: REDIRECT.into(),
            })
            .await,
        Code::Unavailable,
        "PROVIDER_UNAVAILABLE",
    );
}

#[tokio::test]
async fn a_provider_outage_is_unavailable_not_a_rejected_code() {
    let p = setup().await;
    p.google.fail_token_requests(1);
    let started = start(&p.app, GOOGLE).await;
    let (code, _) = p.google.authorize(
        &started.authorization_url,
        p.google.claims("g-outage", "outage@example.com"),
    );
    assert_status(
        complete(&p.app, GOOGLE, &code, &started.state).await,
        Code::Unavailable,
        "PROVIDER_UNAVAILABLE",
    );
    // Once the provider is back, a new sign-in works.
    code_flow(
        &p.app,
        &p.google,
        GOOGLE,
        p.google.claims("g-outage", "outage@example.com"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_claim_ends_the_previous_holders_notification_watch() {
    use tokio_stream::StreamExt;
    let p = setup().await;
    let host = p.app.user("host@example.com").await.1;
    let mut claims = p.microsoft.claims("ms-squat", "boss@corp.example");
    claims["email_verified"] = json!(false);
    if let Some(map) = claims.as_object_mut() {
        map.remove("xms_edov");
    }
    let squatter = code_flow(&p.app, &p.microsoft, MICROSOFT, claims)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    let mut watch = p
        .app
        .notifications()
        .watch_notifications(authed(pb::WatchNotificationsRequest {}, &squatter))
        .await
        .unwrap()
        .into_inner();
    p.app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Secret board".into(),
                start_time: Some(prost_types::Timestamp {
                    seconds: now() + 86_400,
                    nanos: 0,
                }),
                duration_minutes: 30,
                invitee_emails: vec!["boss@corp.example".into()],
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    code_flow(
        &p.app,
        &p.google,
        GOOGLE,
        p.google.claims("g-boss", "boss@corp.example"),
    )
    .await
    .unwrap();
    // The squatter's watch ends, without ever seeing the invitation.
    loop {
        let item = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
            .await
            .expect("the watch ends");
        match item {
            Some(Ok(n)) if n.id.is_empty() => continue,
            Some(Ok(n)) => panic!("the squatter saw {n:?}"),
            Some(Err(status)) => {
                assert_eq!(status.code(), Code::Unauthenticated);
                break;
            }
            None => panic!("ended without a status"),
        }
    }
}
