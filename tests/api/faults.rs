//! Faults that must not look like bugs: a database that is locked past
//! the busy timeout answers UNAVAILABLE with a RetryInfo (never INTERNAL),
//! and the server recovers by itself when the lock goes.

use sqlx::Connection;
use tonic::Code;
use tonic_types::StatusExt;
use unio::proto::pb;

use crate::helpers::{PASSWORD, TestApp, assert_status, authed, spawn_app_with};

fn sign_up(email: &str) -> pb::SignUpRequest {
    pb::SignUpRequest {
        email: email.into(),
        password: PASSWORD.into(),
        display_name: "Locked".into(),
    }
}

/// Another process holding the database's write lock.
enum Holder {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

/// Takes the write lock of `app`'s database (the users table on PostgreSQL;
/// the whole file on SQLite, also covering uploads).
async fn lock(app: &TestApp, pg_table: &str) -> Holder {
    match app.vars.get("UNIO_DATABASE_URL") {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query(&format!("LOCK TABLE {pg_table} IN EXCLUSIVE MODE"))
                .execute(&mut conn)
                .await
                .unwrap();
            Holder::Postgres(conn)
        }
        None => {
            let path = app.data_path().join("unio.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .unwrap();
            Holder::Sqlite(conn)
        }
    }
}

async fn unlock(holder: &mut Holder) {
    match holder {
        Holder::Sqlite(conn) => {
            sqlx::query("COMMIT").execute(conn).await.unwrap();
        }
        Holder::Postgres(conn) => {
            sqlx::query("COMMIT").execute(conn).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_locked_database_is_unavailable_and_recovers_without_a_restart() {
    let app = spawn_app_with(&[("UNIO_DATABASE_BUSY_TIMEOUT", "300ms")]).await;
    app.user("before@example.com").await;
    let mut holder = lock(&app, "users").await;

    let status = assert_status(
        app.auth().sign_up(sign_up("during@example.com")).await,
        Code::Unavailable,
        "DATABASE_UNAVAILABLE",
    );
    assert!(status.get_error_details().retry_info().is_some());

    unlock(&mut holder).await;
    // Nothing half-stored, and the retry goes through.
    let user = app
        .auth()
        .sign_up(sign_up("during@example.com"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.user.unwrap().email, "during@example.com");
}

#[tokio::test]
async fn a_failed_complete_upload_leaves_the_upload_whole() {
    let app = spawn_app_with(&[("UNIO_DATABASE_BUSY_TIMEOUT", "300ms")]).await;
    let (_, host, _) = app.user("host@example.com").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let meeting = app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Files".into(),
                start_time: Some(prost_types::Timestamp {
                    seconds: now + 600,
                    nanos: 0,
                }),
                duration_minutes: 30,
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut files = unio::proto::pb::file_service_client::FileServiceClient::new(app.channel());
    let upload = files
        .create_upload(authed(
            pb::CreateUploadRequest {
                metadata: Some(pb::FileMetadata {
                    meeting_id: meeting.id.clone(),
                    filename: "notes.txt".into(),
                    ..Default::default()
                }),
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    files
        .upload_chunk(authed(
            pb::UploadChunkRequest {
                upload_id: upload.upload_id.clone(),
                offset: 0,
                data: b"minutes of the meeting\n".to_vec(),
            },
            &host,
        ))
        .await
        .unwrap();

    let mut holder = lock(&app, "uploads").await;
    let complete = || {
        let mut files = files.clone();
        let request = authed(
            pb::CompleteUploadRequest {
                upload_id: upload.upload_id.clone(),
            },
            &host,
        );
        async move { files.complete_upload(request).await }
    };
    assert_status(complete().await, Code::Unavailable, "DATABASE_UNAVAILABLE");
    unlock(&mut holder).await;

    // The upload survived: completing again makes the file, with its bytes.
    let file = complete().await.unwrap().into_inner();
    assert_eq!(file.size_bytes, 23);
    let listed = files
        .list_files(authed(
            pb::ListFilesRequest {
                meeting_id: meeting.id.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.files.len(), 1);
}
