//! UserService: profiles, permissions between two users and an admin,
//! update masks, paging, password changes, deletion.

use prost_types::FieldMask;
use tonic::Code;
use unio::proto::pb;

use crate::helpers::{PASSWORD, assert_status, authed, bad_fields, spawn_app};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

#[tokio::test]
async fn others_see_a_public_profile_and_admins_see_everything() {
    let app = spawn_app().await;
    let (ada, ada_token, _) = app.user("ada@example.com").await;
    let (bob, bob_token, _) = app.user("bob@example.com").await;
    let (_, admin) = app.admin("root@example.com").await;

    let seen_by_bob = app
        .users()
        .get_user(authed(
            pb::GetUserRequest {
                user_id: ada.id.clone(),
            },
            &bob_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen_by_bob.display_name, "ada");
    assert_eq!(seen_by_bob.email, "", "email is private");
    let seen_by_self = app
        .users()
        .get_user(authed(
            pb::GetUserRequest {
                user_id: ada.id.clone(),
            },
            &ada_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen_by_self.email, "ada@example.com");
    let seen_by_admin = app
        .users()
        .get_user(authed(
            pb::GetUserRequest {
                user_id: bob.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen_by_admin.email, "bob@example.com");
}

#[tokio::test]
async fn get_user_validates_and_reports_missing_users() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("ada@example.com").await;
    for bad in ["", "42", "../../etc/passwd"] {
        let status = app
            .users()
            .get_user(authed(
                pb::GetUserRequest {
                    user_id: bad.into(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["user_id"]);
    }
    assert_status(
        app.users()
            .get_user(authed(
                pb::GetUserRequest {
                    user_id: uuid::Uuid::now_v7().to_string(),
                },
                &token,
            ))
            .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
}

#[tokio::test]
async fn list_users_is_for_admins_and_pages_with_a_query() {
    let app = spawn_app().await;
    let (_, user_token, _) = app.user("someone@example.com").await;
    let (_, admin) = app.admin("root@example.com").await;
    for i in 0..7 {
        app.sign_up(&format!("member{i}@team.example")).await;
    }
    let list = |page_size: i32, page_token: String, query: &str| {
        let mut users = app.users();
        let request = authed(
            pb::ListUsersRequest {
                page_size,
                page_token,
                query: query.into(),
            },
            &admin,
        );
        async move { users.list_users(request).await }
    };

    assert_status(
        app.users()
            .list_users(authed(pb::ListUsersRequest::default(), &user_token))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(3, token, "TEAM.example").await.unwrap().into_inner();
        assert!(page.users.len() <= 3);
        seen.extend(page.users.into_iter().map(|u| u.email));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..7).map(|i| format!("member{i}@team.example")).collect();
    assert_eq!(seen, expected, "every match once, in creation order");

    let all = list(0, String::new(), "").await.unwrap().into_inner();
    assert_eq!(all.users.len(), 9);
    assert!(all.next_page_token.is_empty());

    let first = list(2, String::new(), "team").await.unwrap().into_inner();
    let status = list(2, first.next_page_token.clone(), "other query")
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["page_token"]);
    let status = list(2, format!("{}x", first.next_page_token), "team")
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["page_token"]);
    let status = list(-1, String::new(), "").await.unwrap_err();
    assert_eq!(bad_fields(&status), ["page_size"]);
    let wide = list(1000, String::new(), "").await.unwrap().into_inner();
    assert_eq!(wide.users.len(), 9);
    // A LIKE wildcard in the query is a literal character.
    assert!(
        list(10, String::new(), "%")
            .await
            .unwrap()
            .into_inner()
            .users
            .is_empty()
    );
}

#[tokio::test]
async fn users_update_their_own_display_name_only() {
    let app = spawn_app().await;
    let (ada, ada_token, _) = app.user("ada@example.com").await;
    let (bob, _, _) = app.user("bob@example.com").await;
    let update = |user: pb::User, paths: &[&str], token: &str| {
        let mut users = app.users();
        let request = authed(
            pb::UpdateUserRequest {
                user: Some(user),
                update_mask: mask(paths),
            },
            token,
        );
        async move { users.update_user(request).await }
    };

    let updated = update(
        pb::User {
            display_name: "  Countess Ada ".into(),
            ..Default::default()
        },
        &["display_name"],
        &ada_token,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(updated.display_name, "Countess Ada");
    assert!(updated.update_time.unwrap().seconds >= updated.create_time.unwrap().seconds);

    assert_status(
        update(
            pb::User {
                id: bob.id.clone(),
                display_name: "Hacked".into(),
                ..Default::default()
            },
            &["display_name"],
            &ada_token,
        )
        .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        update(
            pb::User {
                id: ada.id.clone(),
                role: pb::Role::Admin as i32,
                ..Default::default()
            },
            &["role"],
            &ada_token,
        )
        .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let status = update(
        pb::User {
            display_name: "x".into(),
            ..Default::default()
        },
        &["email"],
        &ada_token,
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["update_mask.paths"]);
    let status = update(
        pb::User {
            display_name: "x".into(),
            ..Default::default()
        },
        &[],
        &ada_token,
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["update_mask"]);
    let status = update(pb::User::default(), &["display_name"], &ada_token)
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["user.display_name"]);
    let status = app
        .users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: None,
                update_mask: mask(&["display_name"]),
            },
            &ada_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["user"]);

    let bob_now = app
        .users()
        .get_user(authed(pb::GetUserRequest { user_id: bob.id }, &ada_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob_now.display_name, "bob");
}

#[tokio::test]
async fn admins_change_roles_and_activation_but_not_their_own() {
    let app = spawn_app().await;
    let (ada, ada_token, _) = app.user("ada@example.com").await;
    let (root, admin) = app.admin("root@example.com").await;
    let promoted = app
        .users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: ada.id.clone(),
                    role: pb::Role::Admin as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["role"]),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.role, pb::Role::Admin as i32);
    // The promotion applies to Ada's existing token at once.
    app.users()
        .list_users(authed(pb::ListUsersRequest::default(), &ada_token))
        .await
        .unwrap();

    let status = app
        .users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: ada.id.clone(),
                    role: pb::Role::Unspecified as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["role"]),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["user.role"]);

    assert_status(
        app.users()
            .update_user(authed(
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        id: root.id.clone(),
                        is_active: false,
                        ..Default::default()
                    }),
                    update_mask: mask(&["is_active"]),
                },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
        "SELF_LOCKOUT",
    );
    assert_status(
        app.users()
            .update_user(authed(
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        id: uuid::Uuid::now_v7().to_string(),
                        display_name: "Ghost".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                },
                &admin,
            ))
            .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
}

#[tokio::test]
async fn change_password_signs_out_other_sessions() {
    let app = spawn_app().await;
    let (_, first_access, _) = app.user("ada@example.com").await;
    let second = app
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
    let change = |current: &str, new: &str| {
        let mut users = app.users();
        let request = authed(
            pb::ChangePasswordRequest {
                current_password: current.into(),
                new_password: new.into(),
            },
            &second.access_token,
        );
        async move { users.change_password(request).await }
    };
    let status = change("wrong password 9", "brand new secret 7")
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["current_password"]);
    let status = change(PASSWORD, "short").await.unwrap_err();
    assert_eq!(bad_fields(&status), ["new_password"]);
    let status = change(PASSWORD, PASSWORD).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["new_password"]);
    let status = change("", "brand new secret 7").await.unwrap_err();
    assert_eq!(bad_fields(&status), ["current_password"]);

    change(PASSWORD, "brand new secret 7").await.unwrap();
    // The session that changed it lives on; the other is signed out.
    app.users()
        .get_me(authed(pb::GetMeRequest {}, &second.access_token))
        .await
        .unwrap();
    assert_status(
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &first_access))
            .await,
        Code::Unauthenticated,
        "TOKEN_REVOKED",
    );
    app.auth()
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    app.auth()
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: "brand new secret 7".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn delete_user_is_for_oneself_or_an_admin() {
    let app = spawn_app().await;
    let (ada, _, _) = app.user("ada@example.com").await;
    let (bob, bob_token, _) = app.user("bob@example.com").await;
    let (_, admin) = app.admin("root@example.com").await;
    assert_status(
        app.users()
            .delete_user(authed(
                pb::DeleteUserRequest {
                    user_id: ada.id.clone(),
                },
                &bob_token,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    app.users()
        .delete_user(authed(
            pb::DeleteUserRequest {
                user_id: ada.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert_status(
        app.users()
            .get_user(authed(
                pb::GetUserRequest {
                    user_id: ada.id.clone(),
                },
                &bob_token,
            ))
            .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_status(
        app.users()
            .delete_user(authed(
                pb::DeleteUserRequest {
                    user_id: ada.id.clone(),
                },
                &admin,
            ))
            .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    // The email is free again.
    app.sign_up("ada@example.com").await;
    app.users()
        .delete_user(authed(
            pb::DeleteUserRequest { user_id: bob.id },
            &bob_token,
        ))
        .await
        .unwrap();
}
