//! Verified addresses (DESIGN §7): the link SignUp mails, VerifyEmail and
//! SendVerificationEmail, and invitations that reach an account only once
//! it proved its address.

use tonic::Code;
use tonic_types::StatusExt;
use unio::proto::pb;

use crate::helpers::{TestApp, assert_status, authed, bad_fields, spawn_app};

async fn meeting(app: &TestApp, host: &str, invitees: &[&str]) -> pb::Meeting {
    app.meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Board meeting".into(),
                start_time: crate::helpers::from_now(86400),
                duration_minutes: 30,
                invitee_emails: invitees.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            host,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn my_invites(app: &TestApp, token: &str) -> Vec<pb::Invite> {
    app.meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), token))
        .await
        .unwrap()
        .into_inner()
        .invites
}

async fn me(app: &TestApp, token: &str) -> pb::User {
    app.users()
        .get_me(authed(pb::GetMeRequest {}, token))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn sign_up_mails_a_link_that_verifies_the_address_once() {
    let app = spawn_app().await;
    let (user, token, _) = app.unverified_user("ada@example.com").await;
    assert!(!user.email_verified);
    assert!(!me(&app, &token).await.email_verified);

    let mail = app.mail.verification_mail("ada@example.com", 1).await;
    assert!(
        mail.text()
            .contains("http://localhost:50051/verify?token=unio_ev_"),
        "{}",
        mail.text()
    );
    let link_token = mail.verification_token().unwrap();
    let verified = app
        .auth()
        .verify_email(pb::VerifyEmailRequest {
            token: link_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.id, user.id);
    assert!(verified.email_verified);
    assert!(me(&app, &token).await.email_verified);

    // Single use; forged and empty tokens are refused clearly.
    for bad in [link_token.as_str(), "unio_ev_forged", "x"] {
        assert_status(
            app.auth()
                .verify_email(pb::VerifyEmailRequest { token: bad.into() })
                .await,
            Code::FailedPrecondition,
            "VERIFICATION_TOKEN_INVALID",
        );
    }
    let empty = assert_status(
        app.auth()
            .verify_email(pb::VerifyEmailRequest { token: "  ".into() })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_fields(&empty), ["token"]);
    let huge = app
        .auth()
        .verify_email(pb::VerifyEmailRequest {
            token: "a".repeat(10_000),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&huge), ["token"]);
}

#[tokio::test]
async fn new_links_are_rate_limited_and_stop_once_verified() {
    let app = spawn_app().await;
    let (_, token, _) = app.unverified_user("bea@example.com").await;
    // SignUp just sent one: the next must wait a minute.
    let status = assert_status(
        app.auth()
            .send_verification_email(authed(pb::SendVerificationEmailRequest {}, &token))
            .await,
        Code::ResourceExhausted,
        "TOO_MANY_VERIFICATION_EMAILS",
    );
    let retry = status.get_error_details().retry_info().unwrap().retry_delay;
    assert!(retry.is_some_and(|d| d.as_secs() >= 1 && d.as_secs() <= 60));
    assert_status(
        app.auth()
            .send_verification_email(pb::SendVerificationEmailRequest {})
            .await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );

    app.verify_email("bea@example.com", 1).await;
    assert_status(
        app.auth()
            .send_verification_email(authed(pb::SendVerificationEmailRequest {}, &token))
            .await,
        Code::FailedPrecondition,
        "EMAIL_ALREADY_VERIFIED",
    );
}

#[tokio::test]
async fn an_address_squatter_gets_nothing_the_address_is_invited_to() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let board = meeting(&app, &host, &["ceo@corp.example"]).await;

    // Anyone can sign up as the CEO's address with a password...
    let (_, squatter, _) = app.unverified_user("ceo@corp.example").await;
    assert!(my_invites(&app, &squatter).await.is_empty());
    assert_status(
        app.meetings()
            .get_meeting(authed(
                pb::GetMeetingRequest {
                    meeting_id: board.id.clone(),
                },
                &squatter,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_eq!(
        app.chat()
            .list_messages(authed(
                pb::ListMessagesRequest {
                    meeting_id: board.id.clone(),
                    ..Default::default()
                },
                &squatter,
            ))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // ...and invitations sent later, or again at login, do not bind either.
    let later = meeting(&app, &host, &["ceo@corp.example"]).await;
    app.auth()
        .login(pb::LoginRequest {
            email: "ceo@corp.example".into(),
            password: crate::helpers::PASSWORD.into(),
        })
        .await
        .unwrap();
    assert!(my_invites(&app, &squatter).await.is_empty());
    // The invitations wait for the address, as for one without an account:
    // by email.
    let invitations: Vec<_> = app
        .mail
        .wait_for(2)
        .await
        .into_iter()
        .filter(|m| m.to == "ceo@corp.example")
        .collect();
    assert_eq!(invitations.len(), 2);

    // Whoever reads the CEO's mailbox proves the address: now they bind.
    let verified = app.verify_email("ceo@corp.example", 1).await;
    assert!(verified.email_verified);
    let mut bound: Vec<String> = my_invites(&app, &squatter)
        .await
        .into_iter()
        .map(|i| i.meeting_id)
        .collect();
    bound.sort();
    let mut expected = vec![board.id.clone(), later.id.clone()];
    expected.sort();
    assert_eq!(bound, expected);
    // And a verified account is bound at invitation time.
    let third = meeting(&app, &host, &["ceo@corp.example"]).await;
    assert!(
        my_invites(&app, &squatter)
            .await
            .iter()
            .any(|i| i.meeting_id == third.id)
    );
}

#[tokio::test]
async fn admins_made_on_the_command_line_are_verified() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let board = meeting(&app, &host, &["root@example.com"]).await;
    let (_, admin) = app.admin("root@example.com").await;
    assert!(me(&app, &admin).await.email_verified);
    assert!(
        my_invites(&app, &admin)
            .await
            .iter()
            .any(|i| i.meeting_id == board.id)
    );
}

#[tokio::test]
async fn only_a_verified_host_invites_anyone() {
    let app = spawn_app().await;
    let (_, host, _) = app.unverified_user("new@example.com").await;
    let refused = app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Spam".into(),
                start_time: crate::helpers::from_now(86400),
                duration_minutes: 30,
                invitee_emails: vec!["victim@example.org".into()],
                ..Default::default()
            },
            &host,
        ))
        .await;
    assert_status(refused, Code::FailedPrecondition, "EMAIL_NOT_VERIFIED");
    // A meeting without invitations is fine, and verifying opens invitations.
    meeting(&app, &host, &[]).await;
    app.verify_email("new@example.com", 1).await;
    meeting(&app, &host, &["friend@example.org"]).await;
}

#[tokio::test]
async fn one_address_gets_at_most_five_verification_mails_a_day() {
    let app = spawn_app().await;
    for _ in 0..7 {
        let (user, token, _) = app.unverified_user("victim@example.org").await;
        app.users()
            .delete_user(authed(pb::DeleteUserRequest { user_id: user.id }, &token))
            .await
            .unwrap();
    }
    app.mail_settled().await;
    let sent = app
        .mail
        .all()
        .into_iter()
        .filter(|m| m.to == "victim@example.org" && m.is_verification())
        .count();
    assert_eq!(sent, 5, "deleting and signing up again does not reset it");
    // The mail carries nothing the requester wrote (no display name).
    let mail = app.mail.verification_mail("victim@example.org", 1).await;
    assert!(mail.text().contains("Hello,\n"));
}
