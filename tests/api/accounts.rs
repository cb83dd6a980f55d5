//! AuthService: sign-up, login, refresh rotation, logout.

use tonic::Code;
use unio::proto::pb::{self, auth_service_client::AuthServiceClient};

use crate::helpers::{
    PASSWORD, assert_status, authed, bad_fields, reason, spawn_app, spawn_app_with,
};

fn sign_up(email: &str, password: &str, name: &str) -> pb::SignUpRequest {
    pb::SignUpRequest {
        email: email.into(),
        password: password.into(),
        display_name: name.into(),
    }
}

#[tokio::test]
async fn sign_up_returns_the_user_and_a_token_pair() {
    let app = spawn_app().await;
    let response = app.sign_up("  Ada@Example.COM ").await;
    let user = response.user.unwrap();
    assert_eq!(user.email, "Ada@example.com");
    assert_eq!(user.display_name, "Ada");
    assert_eq!(user.role, pb::Role::User as i32);
    assert_eq!(user.auth_provider, pb::AuthProvider::Password as i32);
    assert!(user.is_active && !user.has_avatar);
    assert!(uuid::Uuid::parse_str(&user.id).is_ok());
    let tokens = response.tokens.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.access_token.split('.').count(), 3);
    let access_ttl =
        tokens.access_token_expire_time.unwrap().seconds - user.create_time.unwrap().seconds;
    assert!((899..=901).contains(&access_ttl), "access ttl {access_ttl}");
    let refresh_ttl =
        tokens.refresh_token_expire_time.unwrap().seconds - user.create_time.unwrap().seconds;
    assert!((30 * 86400 - 1..=30 * 86400 + 1).contains(&refresh_ttl));

    let me = app
        .users()
        .get_me(authed(pb::GetMeRequest {}, &tokens.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.id, user.id);
}

#[tokio::test]
async fn duplicate_email_is_taken_ignoring_case() {
    let app = spawn_app().await;
    app.sign_up("ada@example.com").await;
    let result = app
        .auth()
        .sign_up(sign_up("ADA@example.com", PASSWORD, "Other"))
        .await;
    let status = assert_status(result, Code::AlreadyExists, "EMAIL_TAKEN");
    assert!(status.message().contains("already exists"));
}

#[tokio::test]
async fn sign_up_names_every_bad_field() {
    let app = spawn_app().await;
    let status = assert_status(
        app.auth()
            .sign_up(sign_up("not-an-email", "short", ""))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_fields(&status), ["email", "password", "display_name"]);

    for (email, password, name, field) in [
        ("a@example.com", "abcdefghijkl", "A", "password"),
        ("a@example.com", "1234567890123", "A", "password"),
        (
            "Someone.Long@example.com",
            "someone.long@example.com",
            "A",
            "password",
        ),
        ("a@example.com", PASSWORD, &"x".repeat(101), "display_name"),
        ("a@example.com", PASSWORD, "   ", "display_name"),
        ("a@example.com", PASSWORD, "bell\u{7}", "display_name"),
        ("a@@example.com", PASSWORD, "A", "email"),
        ("", PASSWORD, "A", "email"),
    ] {
        let status = app
            .auth()
            .sign_up(sign_up(email, password, name))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{email} {password} {name}"
        );
        assert_eq!(bad_fields(&status), [field], "{email} {password} {name}");
    }
    // Nothing was stored by the refused attempts.
    app.sign_up("a@example.com").await;
}

#[tokio::test]
async fn login_works_with_any_email_case() {
    let app = spawn_app().await;
    app.sign_up("Ada@example.com").await;
    let login = app
        .auth()
        .login(pb::LoginRequest {
            email: "ada@EXAMPLE.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.user.unwrap().email, "Ada@example.com");
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    app.sign_up("ada@example.com").await;
    let started = std::time::Instant::now();
    let wrong = app
        .auth()
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: "wrong password 1".into(),
        })
        .await
        .unwrap_err();
    let wrong_time = started.elapsed();
    let started = std::time::Instant::now();
    let unknown = app
        .auth()
        .login(pb::LoginRequest {
            email: "nobody@example.com".into(),
            password: "wrong password 1".into(),
        })
        .await
        .unwrap_err();
    let unknown_time = started.elapsed();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(
        (wrong.code(), wrong.message(), reason(&wrong)),
        (unknown.code(), unknown.message(), reason(&unknown))
    );
    assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");
    // Both paths run one argon2 verification; an unknown email must not be
    // answered without hashing (that would be many times faster).
    assert!(
        unknown_time * 4 > wrong_time,
        "unknown {unknown_time:?} vs wrong {wrong_time:?}"
    );
}

#[tokio::test]
async fn login_validates_its_fields() {
    let app = spawn_app().await;
    let status = app
        .auth()
        .login(pb::LoginRequest {
            email: "nope".into(),
            password: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["email", "password"]);
}

#[tokio::test]
async fn failed_logins_wait_growing_delays_that_spare_the_owners_address() {
    let app = spawn_app().await;
    app.sign_up("ada@example.com").await;
    // The guesser and the owner sit at different loopback addresses.
    let from = |local: &str| {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .local_address(Some(local.parse().unwrap()))
            .connect_lazy();
        unio::proto::pb::auth_service_client::AuthServiceClient::new(channel)
    };
    let guesser = from("127.0.0.2");
    let owner = from("127.0.0.3");
    let attempt = |client: &AuthServiceClient<tonic::transport::Channel>, password: &str| {
        let mut auth = client.clone();
        let request = pb::LoginRequest {
            email: "ada@example.com".into(),
            password: password.into(),
        };
        async move { auth.login(request).await }
    };
    for _ in 0..5 {
        assert_status(
            attempt(&guesser, "wrong password 1").await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
    // The guesser now waits, even with the right password...
    let status = assert_status(
        attempt(&guesser, PASSWORD).await,
        Code::ResourceExhausted,
        "TOO_MANY_LOGIN_ATTEMPTS",
    );
    use tonic_types::StatusExt;
    let delay = status
        .get_error_details()
        .retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(delay.as_secs() >= 1 && delay.as_secs() <= 2, "{delay:?}");
    // ...while the owner, elsewhere, signs in at once.
    attempt(&owner, PASSWORD).await.unwrap();
    // After the delay the guesser may try again; each failure doubles it.
    tokio::time::sleep(delay).await;
    assert_status(
        attempt(&guesser, "wrong password 2").await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    let status = assert_status(
        attempt(&guesser, "wrong password 3").await,
        Code::ResourceExhausted,
        "TOO_MANY_LOGIN_ATTEMPTS",
    );
    let doubled = status
        .get_error_details()
        .retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(
        doubled.as_secs() >= 2 && doubled.as_secs() <= 3,
        "{doubled:?}"
    );
    // Other accounts from the guesser's address are unaffected.
    app.sign_up("bob@example.com").await;
    let mut auth = guesser.clone();
    auth.login(pb::LoginRequest {
        email: "bob@example.com".into(),
        password: PASSWORD.into(),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn one_password_tried_on_many_accounts_is_slowed_per_address() {
    let app = spawn_app_with(&[("UNIO_PUBLIC_RATE", "1000")]).await;
    let mut refused = None;
    for i in 0..30 {
        let result = app
            .auth()
            .login(pb::LoginRequest {
                email: format!("victim{i}@example.com"),
                password: "Summer2026!!".into(),
            })
            .await;
        match result {
            Err(status) if status.code() == Code::ResourceExhausted => {
                refused = Some((i, status));
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
            Ok(_) => panic!("no such account"),
        }
    }
    let (at, status) = refused.expect("the address is slowed down");
    assert_eq!(at, 20, "twenty free failures per address");
    assert_eq!(reason(&status), "TOO_MANY_LOGIN_ATTEMPTS");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = spawn_app().await;
    let (_, access1, refresh1) = app.user("ada@example.com").await;
    let pair2 = app
        .auth()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: refresh1.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(pair2.refresh_token, refresh1);
    assert_eq!(pair2.token_type, "Bearer");
    app.users()
        .get_me(authed(pb::GetMeRequest {}, &pair2.access_token))
        .await
        .unwrap();
    let pair3 = app
        .auth()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: pair2.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    // Presenting the rotated token again: someone copied it.
    assert_status(
        app.auth()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: refresh1,
            })
            .await,
        Code::Unauthenticated,
        "TOKEN_REVOKED",
    );
    // Every token of the family is now dead, the newest included.
    assert_status(
        app.auth()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: pair3.refresh_token,
            })
            .await,
        Code::Unauthenticated,
        "TOKEN_REVOKED",
    );
    for access in [access1, pair2.access_token, pair3.access_token] {
        assert_status(
            app.users()
                .get_me(authed(pb::GetMeRequest {}, &access))
                .await,
            Code::Unauthenticated,
            "TOKEN_REVOKED",
        );
    }
    // Signing in again works.
    app.auth()
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn reuse_in_one_session_leaves_other_sessions_alone() {
    let app = spawn_app().await;
    let (_, _, refresh1) = app.user("ada@example.com").await;
    let other = app
        .auth()
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    app.auth()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: refresh1.clone(),
        })
        .await
        .unwrap();
    app.auth()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: refresh1,
        })
        .await
        .unwrap_err();
    app.users()
        .get_me(authed(pb::GetMeRequest {}, &other.access_token))
        .await
        .unwrap();
    app.auth()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: other.refresh_token,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn refresh_refuses_empty_and_unknown_tokens() {
    let app = spawn_app().await;
    let status = app
        .auth()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["refresh_token"]);
    assert_status(
        app.auth()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: "unio_rt_made_up".into(),
            })
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_let_exactly_one_through() {
    let app = spawn_app().await;
    let (_, _, refresh) = app.user("ada@example.com").await;
    let calls = (0..4).map(|_| {
        let mut auth = app.auth();
        let refresh_token = refresh.clone();
        tokio::spawn(async move {
            auth.refresh_token(pb::RefreshTokenRequest { refresh_token })
                .await
        })
    });
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn logout_revokes_the_refresh_and_the_access_token() {
    let app = spawn_app().await;
    let (_, access, refresh) = app.user("ada@example.com").await;
    app.auth()
        .logout(authed(
            pb::LogoutRequest {
                refresh_token: refresh.clone(),
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
        "TOKEN_REVOKED",
    );
}

#[tokio::test]
async fn logout_needs_a_bearer_token_and_ones_own_refresh_token() {
    let app = spawn_app().await;
    let (_, _, refresh) = app.user("ada@example.com").await;
    let (_, bob_access, _) = app.user("bob@example.com").await;
    assert_status(
        app.auth()
            .logout(pb::LogoutRequest {
                refresh_token: refresh.clone(),
            })
            .await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    let status = app
        .auth()
        .logout(authed(
            pb::LogoutRequest {
                refresh_token: refresh.clone(),
            },
            &bob_access,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["refresh_token"]);
    // Ada's session survived Bob's attempt.
    app.auth()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: refresh,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn unauthenticated_calls_are_limited_per_client_address() {
    let app = spawn_app_with(&[("UNIO_PUBLIC_RATE", "2")]).await;
    let login = |client: AuthServiceClient<tonic::transport::Channel>| {
        let mut auth = client;
        async move {
            auth.login(pb::LoginRequest {
                email: format!("nobody{}@example.com", uuid::Uuid::new_v4().simple()),
                password: "whatever it is 1".into(),
            })
            .await
        }
    };
    // Cheap calls (no password hash) so the rate, not the time, decides.
    let mut limited = None;
    for _ in 0..40 {
        let verify = app
            .auth()
            .verify_email(pb::VerifyEmailRequest {
                token: "unio_ev_nothing".into(),
            })
            .await;
        if let Err(status) = verify
            && status.code() == Code::ResourceExhausted
        {
            limited = Some(status);
            break;
        }
    }
    let status = limited.expect("a flood from one address is cut");
    assert_eq!(reason(&status), "TOO_MANY_REQUESTS");
    use tonic_types::StatusExt;
    assert!(status.get_error_details().retry_info().is_some());
    // Another address is served, and authenticated calls are not limited.
    let other = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .local_address(Some("127.0.0.9".parse().unwrap()))
        .connect_lazy();
    assert_status(
        login(AuthServiceClient::new(other)).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
}

#[tokio::test]
async fn guessers_from_many_addresses_cannot_lock_the_owner_out_of_a_known_place() {
    let app = spawn_app().await;
    app.sign_up("ada@example.com").await;
    let from = |local: String| {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .local_address(Some(local.parse().unwrap()))
            .connect_lazy();
        AuthServiceClient::new(channel)
    };
    let login = |client: AuthServiceClient<tonic::transport::Channel>, password: &str| {
        let mut auth = client;
        let request = pb::LoginRequest {
            email: "ada@example.com".into(),
            password: password.into(),
        };
        async move { auth.login(request).await }
    };
    // The owner has signed in from home before.
    login(from("127.0.0.3".into()), PASSWORD).await.unwrap();
    // One wrong guess each from many addresses trips the per-email key...
    for i in 10..21 {
        let _ = login(from(format!("127.0.0.{i}")), "wrong password 9").await;
    }
    assert_status(
        login(from("127.0.0.30".into()), PASSWORD).await,
        Code::ResourceExhausted,
        "TOO_MANY_LOGIN_ATTEMPTS",
    );
    // ...but not for the owner at home.
    login(from("127.0.0.3".into()), PASSWORD).await.unwrap();
}

#[tokio::test]
async fn sign_ups_from_one_address_are_few_a_minute() {
    let app = spawn_app_with(&[("UNIO_SIGNUP_RATE", "3")]).await;
    for i in 0..3 {
        app.sign_up(&format!("u{i}@example.com")).await;
    }
    let status = app
        .auth()
        .sign_up(pb::SignUpRequest {
            email: "u3@example.com".into(),
            password: PASSWORD.into(),
            display_name: "U".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "TOO_MANY_REQUESTS");
    // Logins from the same address are not held to the sign-up rate.
    app.auth()
        .login(pb::LoginRequest {
            email: "u0@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
}
