//! FileService: native and resumable uploads, edge sizes, forged types,
//! integrity, downloads, permissions, and nothing left behind on failure.

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::Code;
use unio::proto::pb::{
    self, chat_service_client::ChatServiceClient, file_service_client::FileServiceClient,
    upload_file_request,
};

use crate::helpers::{TestApp, assert_status, authed, bad_fields, eventually, spawn_app};

pub(crate) const MIB: usize = 1024 * 1024;

pub(crate) fn client(app: &TestApp) -> FileServiceClient<tonic::transport::Channel> {
    FileServiceClient::new(app.channel())
        .max_decoding_message_size(4 * MIB)
        .max_encoding_message_size(4 * MIB)
}

pub(crate) fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(32, 32, image::Rgb([10, 200, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub(crate) async fn meeting(app: &TestApp, host: &str, invitees: &[&str]) -> String {
    app.meeting(host, "Files", invitees, pb::JoinPolicy::InvitedOnly)
        .await
        .id
}

pub(crate) fn metadata(
    meeting_id: &str,
    filename: &str,
    size: Option<i64>,
    sha256: &str,
) -> pb::FileMetadata {
    pb::FileMetadata {
        meeting_id: meeting_id.into(),
        filename: filename.into(),
        content_type: String::new(),
        size_bytes: size,
        sha256: sha256.into(),
    }
}

async fn upload(
    app: &TestApp,
    token: &str,
    meta: pb::FileMetadata,
    bytes: &[u8],
) -> Result<pb::SharedFile, tonic::Status> {
    let mut messages = vec![pb::UploadFileRequest {
        data: Some(upload_file_request::Data::Metadata(meta)),
    }];
    for chunk in bytes.chunks(MIB) {
        messages.push(pb::UploadFileRequest {
            data: Some(upload_file_request::Data::Chunk(chunk.to_vec())),
        });
    }
    client(app)
        .upload_file(authed(tokio_stream::iter(messages), token))
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn download(
    app: &TestApp,
    token: &str,
    file_id: &str,
) -> Result<(pb::SharedFile, Vec<u8>), tonic::Status> {
    let mut stream = client(app)
        .download_file(authed(
            pb::DownloadFileRequest {
                file_id: file_id.into(),
            },
            token,
        ))
        .await?
        .into_inner();
    let mut meta = None;
    let mut bytes = Vec::new();
    while let Some(message) = stream.next().await {
        match message?.data {
            Some(pb::download_file_response::Data::Metadata(m)) => meta = Some(m),
            Some(pb::download_file_response::Data::Chunk(c)) => {
                assert!(c.len() <= 64 * 1024);
                bytes.extend_from_slice(&c);
            }
            None => {}
        }
    }
    Ok((meta.expect("metadata first"), bytes))
}

/// Files on disk under the data dir's blob store (excluding directories).
fn blob_files(app: &TestApp) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }
    walk(&app.data_path().join("blobs"))
}

#[tokio::test]
async fn a_native_upload_downloads_byte_for_byte_and_is_announced() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let m = meeting(&app, &host, &["bob@example.com"]).await;
    let bytes = png();
    let stored = upload(
        &app,
        &bob,
        metadata(
            &m,
            "../../etc/passwd",
            Some(bytes.len() as i64),
            &sha(&bytes),
        ),
        &bytes,
    )
    .await
    .unwrap();
    assert_eq!(stored.filename, "passwd", "the name is metadata, sanitised");
    assert_eq!(stored.content_type, "image/png");
    assert_eq!(stored.size_bytes, bytes.len() as i64);
    assert_eq!(stored.sha256, sha(&bytes));
    let (meta, downloaded) = download(&app, &host, &stored.id).await.unwrap();
    assert_eq!(meta, stored);
    assert_eq!(downloaded, bytes);

    let chat = ChatServiceClient::new(app.channel())
        .list_messages(authed(
            pb::ListMessagesRequest {
                meeting_id: m.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chat.messages[0].attachment.as_ref().unwrap().id, stored.id);

    let listed = client(&app)
        .list_files(authed(
            pb::ListFilesRequest {
                meeting_id: m.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.files, [stored]);
}

#[tokio::test]
async fn edge_sizes_up_to_exactly_the_limit() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    for size in [0usize, 1, 50 * MIB] {
        let bytes = vec![b'a'; size];
        let stored = upload(
            &app,
            &host,
            metadata(&m, "a.txt", Some(size as i64), &sha(&bytes)),
            &bytes,
        )
        .await
        .unwrap();
        assert_eq!(stored.size_bytes, size as i64);
        assert_eq!(stored.content_type, "text/plain; charset=utf-8");
        if size <= 1 {
            assert_eq!(download(&app, &host, &stored.id).await.unwrap().1, bytes);
        } else {
            let (_, got) = download(&app, &host, &stored.id).await.unwrap();
            assert_eq!(sha(&got), sha(&bytes));
        }
    }
    let before = blob_files(&app);
    let over = vec![b'a'; 50 * MIB + 1];
    assert_status(
        upload(&app, &host, metadata(&m, "big.txt", None, ""), &over).await,
        Code::ResourceExhausted,
        "FILE_TOO_LARGE",
    );
    assert_status(
        upload(
            &app,
            &host,
            metadata(&m, "big.txt", Some(over.len() as i64), ""),
            b"",
        )
        .await,
        Code::ResourceExhausted,
        "FILE_TOO_LARGE",
    );
    eventually("nothing kept", || async { blob_files(&app) == before }).await;
}

#[tokio::test]
async fn forged_types_and_wrong_hashes_are_refused() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    // The bytes decide the type, and the name must agree with them.
    let stored = upload(&app, &host, metadata(&m, "photo.png", None, ""), &png())
        .await
        .unwrap();
    assert_eq!(stored.content_type, "image/png");
    let status = upload(&app, &host, metadata(&m, "setup.exe", None, ""), &png())
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["content"]);
    // Text that a computer would render or run as something else.
    for name in ["x.html", "x.svg", "x.bat", "x.js"] {
        let status = upload(
            &app,
            &host,
            metadata(&m, name, None, ""),
            b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
        )
        .await
        .unwrap_err();
        assert_eq!(bad_fields(&status), ["content"], "{name}");
    }
    // A text head with a JAR glued behind it is not text, whatever its size.
    let smuggled = [
        "harmless words\n".repeat(600).as_bytes(),
        b"PK\x03\x04\x14\x00\x08\x00\x08\x00\xa3\x5c\x00\x00",
    ]
    .concat();
    let status = upload(&app, &host, metadata(&m, "notes.txt", None, ""), &smuggled)
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["content"]);
    // Trailing dots and spaces (which Windows drops) cannot hide an extension.
    let status = upload(
        &app,
        &host,
        metadata(&m, "run.bat. .", None, ""),
        b"echo hi",
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["content"]);
    let elf = [b"\x7fELF\x02\x01\x01\x00".as_slice(), &[0u8; 100]].concat();
    let status = upload(&app, &host, metadata(&m, "cat.png", None, ""), &elf)
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["content"]);
    let status = upload(
        &app,
        &host,
        metadata(&m, "a.txt", None, &"0".repeat(64)),
        b"hello",
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["metadata.sha256"]);
    let status = upload(&app, &host, metadata(&m, "a.txt", Some(4), ""), b"hello")
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["metadata.size_bytes"]);
    let status = upload(
        &app,
        &host,
        metadata(&m, "a.txt", None, "not-hex"),
        b"hello",
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["metadata.sha256"]);
    let status = client(&app)
        .upload_file(authed(
            tokio_stream::iter(vec![pb::UploadFileRequest {
                data: Some(upload_file_request::Data::Chunk(b"x".to_vec())),
            }]),
            &host,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["metadata"]);
    eventually("only the accepted PNG is kept", || async {
        blob_files(&app) == 1
    })
    .await;
    let listed = client(&app)
        .list_files(authed(
            pb::ListFilesRequest {
                meeting_id: m.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.files.len(), 1);
}

#[tokio::test]
async fn an_interrupted_native_upload_leaves_nothing() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::UploadFileRequest {
        data: Some(upload_file_request::Data::Metadata(metadata(
            &m, "a.txt", None, "",
        ))),
    })
    .await
    .unwrap();
    tx.send(pb::UploadFileRequest {
        data: Some(upload_file_request::Data::Chunk(vec![b'a'; MIB])),
    })
    .await
    .unwrap();
    let mut files = client(&app);
    let token = host.clone();
    let call = tokio::spawn(async move {
        files
            .upload_file(authed(ReceiverStream::new(rx), &token))
            .await
    });
    eventually("bytes are arriving", || async { blob_files(&app) >= 1 }).await;
    call.abort(); // the client goes away mid-upload
    drop(tx);
    eventually("the broken upload's bytes are gone", || async {
        blob_files(&app) == 0
    })
    .await;
    let listed = client(&app)
        .list_files(authed(
            pb::ListFilesRequest {
                meeting_id: m,
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.files.is_empty());
}

#[tokio::test]
async fn a_resumable_upload_survives_retries_and_rejects_wrong_offsets() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let m = meeting(&app, &host, &["bob@example.com"]).await;
    let bytes: Vec<u8> = (0..(2 * MIB + 1000))
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let upload = client(&app)
        .create_upload(authed(
            pb::CreateUploadRequest {
                metadata: Some(metadata(
                    &m,
                    "notes.txt",
                    Some(bytes.len() as i64),
                    &sha(&bytes),
                )),
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upload.received_bytes, 0);
    let chunk = |offset: usize, len: usize, token: &str| {
        let mut c = client(&app);
        let request = authed(
            pb::UploadChunkRequest {
                upload_id: upload.upload_id.clone(),
                offset: offset as i64,
                data: bytes[offset..offset + len].to_vec(),
            },
            token,
        );
        async move { c.upload_chunk(request).await }
    };
    assert_eq!(
        chunk(0, MIB, &host)
            .await
            .unwrap()
            .into_inner()
            .received_bytes,
        MIB as i64
    );
    // The same chunk again (a retry after a lost answer) changes nothing.
    assert_eq!(
        chunk(0, MIB, &host)
            .await
            .unwrap()
            .into_inner()
            .received_bytes,
        MIB as i64
    );
    let status = assert_status(
        chunk(2 * MIB, 1000, &host).await,
        Code::FailedPrecondition,
        "UPLOAD_OFFSET_MISMATCH",
    );
    assert!(
        status.message().contains(&MIB.to_string()),
        "{}",
        status.message()
    );
    assert_status(
        chunk(MIB, MIB, &bob).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    chunk(MIB, MIB, &host).await.unwrap();
    chunk(2 * MIB, 1000, &host).await.unwrap();
    let too_big = client(&app)
        .upload_chunk(authed(
            pb::UploadChunkRequest {
                upload_id: upload.upload_id.clone(),
                offset: 0,
                data: vec![0u8; MIB + 1],
            },
            &host,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&too_big), ["data"]);
    let stored = client(&app)
        .complete_upload(authed(
            pb::CompleteUploadRequest {
                upload_id: upload.upload_id.clone(),
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.sha256, sha(&bytes));
    assert_eq!(download(&app, &bob, &stored.id).await.unwrap().1, bytes);
    assert_status(
        client(&app)
            .complete_upload(authed(
                pb::CompleteUploadRequest {
                    upload_id: upload.upload_id.clone(),
                },
                &host,
            ))
            .await,
        Code::NotFound,
        "UPLOAD_NOT_FOUND",
    );
}

#[tokio::test]
async fn strangers_are_refused_and_deletion_is_for_uploader_or_host() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let (_, carol, _) = app.user("carol@example.com").await;
    let (_, eve, _) = app.user("eve@example.com").await;
    let m = meeting(&app, &host, &["bob@example.com", "carol@example.com"]).await;
    let stored = upload(&app, &bob, metadata(&m, "a.txt", None, ""), b"hello")
        .await
        .unwrap();
    assert_status(
        download(&app, &eve, &stored.id).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        upload(&app, &eve, metadata(&m, "a.txt", None, ""), b"x").await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        client(&app)
            .list_files(authed(
                pb::ListFilesRequest {
                    meeting_id: m.clone(),
                    ..Default::default()
                },
                &eve,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        client(&app)
            .delete_file(authed(
                pb::DeleteFileRequest {
                    file_id: stored.id.clone(),
                },
                &carol,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    client(&app)
        .delete_file(authed(
            pb::DeleteFileRequest {
                file_id: stored.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    assert_status(
        download(&app, &bob, &stored.id).await,
        Code::NotFound,
        "FILE_NOT_FOUND",
    );
    assert_eq!(blob_files(&app), 0);

    // Deleting the meeting removes its files' bytes.
    upload(&app, &bob, metadata(&m, "b.txt", None, ""), b"again")
        .await
        .unwrap();
    assert_eq!(blob_files(&app), 1);
    app.meetings()
        .delete_meeting(authed(
            pb::DeleteMeetingRequest {
                meeting_id: m.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    assert_eq!(blob_files(&app), 0);
}

#[tokio::test]
async fn stored_files_survive_a_restart() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    let bytes = png();
    let stored = upload(&app, &host, metadata(&m, "keep.png", None, ""), &bytes)
        .await
        .unwrap();
    let app = app.restart().await;
    assert_eq!(download(&app, &host, &stored.id).await.unwrap().1, bytes);
}

#[tokio::test]
async fn deleting_a_user_removes_the_bytes_of_their_files() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    upload(&app, &host, metadata(&m, "a.txt", None, ""), b"mine")
        .await
        .unwrap();
    assert_eq!(blob_files(&app), 1);
    app.users()
        .delete_user(authed(pb::DeleteUserRequest::default(), &host))
        .await
        .unwrap();
    assert_eq!(blob_files(&app), 0);
}

#[tokio::test]
async fn unfinished_uploads_are_discarded_after_they_expire() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    let upload = client(&app)
        .create_upload(authed(
            pb::CreateUploadRequest {
                metadata: Some(metadata(&m, "a.txt", None, "")),
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    client(&app)
        .upload_chunk(authed(
            pb::UploadChunkRequest {
                upload_id: upload.upload_id.clone(),
                offset: 0,
                data: b"half".to_vec(),
            },
            &host,
        ))
        .await
        .unwrap();
    assert_eq!(blob_files(&app), 1);
    let config = unio::config::Config::from_lookup(|k| app.vars.get(k).cloned()).unwrap();
    let state = unio::build_state(config).await.unwrap();
    match &state.db {
        unio::store::Db::Sqlite(pool) => sqlx::query("UPDATE uploads SET expires_at = 0")
            .execute(pool)
            .await
            .map(|_| ()),
        unio::store::Db::Postgres(pool) => sqlx::query("UPDATE uploads SET expires_at = 0")
            .execute(pool)
            .await
            .map(|_| ()),
    }
    .unwrap();
    assert_eq!(
        unio::jobs::uploads::sweep_once(&state.db, &state.blobs)
            .await
            .unwrap(),
        1
    );
    assert_eq!(blob_files(&app), 0);
    assert_status(
        client(&app)
            .upload_chunk(authed(
                pb::UploadChunkRequest {
                    upload_id: upload.upload_id.clone(),
                    offset: 4,
                    data: b"rest".to_vec(),
                },
                &host,
            ))
            .await,
        Code::NotFound,
        "UPLOAD_NOT_FOUND",
    );
    state.db.close().await;
}
