//! Chat and file benchmark against the release `unio` binary on loopback.
//!
//! - Persisted chat throughput: messages stored (committed, with their
//!   gap-free sequence) per second through the chat writer, into one
//!   meeting and spread over 100 meetings; measured in-process on the
//!   server's own SQLite database (the writer's group commit is what is
//!   being measured), and end to end through SendMessage RPCs.
//! - File throughput: native UploadFile (1 MiB chunks) and DownloadFile
//!   (64 KiB chunks) of a 48 MiB file, in MiB/s.

use std::time::Instant;

use super::{
    Report,
    common::{Server, authed, channel, open_meeting, user},
};
use tokio_stream::StreamExt;
use unio::{
    config::Config,
    proto::pb::{
        self, chat_service_client::ChatServiceClient, file_service_client::FileServiceClient,
        upload_file_request, user_service_client::UserServiceClient,
    },
    store::chat::NewMessage,
};

const MIB: usize = 1024 * 1024;

async fn persisted(
    state: &unio::state::AppState,
    meetings: &[String],
    sender: &str,
    total: usize,
    writers: usize,
) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let chat = state.chat.clone();
        let meetings = meetings.to_vec();
        let sender = sender.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (w..total).step_by(writers) {
                let message = NewMessage {
                    id: unio::domain::new_id(),
                    meeting_id: meetings[i % meetings.len()].clone(),
                    sender_id: sender.clone(),
                    sender_display_name: "Bench".into(),
                    text: format!("message {i}"),
                    client_message_id: None,
                    file_id: None,
                };
                chat.append(message).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn end_to_end(
    addr: &str,
    token: &str,
    meetings: &[String],
    total: usize,
    clients: usize,
) -> f64 {
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(channel(addr).await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut chat = ChatServiceClient::new(channels[c % channels.len()].clone());
        let token = token.to_owned();
        let meetings = meetings.to_vec();
        tasks.push(tokio::spawn(async move {
            for i in (c..total).step_by(clients) {
                let request = pb::SendMessageRequest {
                    meeting_id: meetings[i % meetings.len()].clone(),
                    text: format!("message {i}"),
                    client_message_id: String::new(),
                };
                chat.send_message(authed(request, &token)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn files(report: &mut Report, addr: &str, token: &str, meeting: &str, rounds: usize) {
    let files = FileServiceClient::new(channel(addr).await)
        .max_decoding_message_size(4 * MIB)
        .max_encoding_message_size(4 * MIB);
    let size = 48 * MIB;
    let bytes: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut upload_secs = 0.0;
    let mut download_secs = 0.0;
    for _ in 0..rounds {
        let mut messages = vec![pb::UploadFileRequest {
            data: Some(upload_file_request::Data::Metadata(pb::FileMetadata {
                meeting_id: meeting.into(),
                filename: "bench.txt".into(),
                content_type: "text/plain".into(),
                size_bytes: Some(size as i64),
                sha256: String::new(),
            })),
        }];
        for chunk in bytes.chunks(MIB) {
            messages.push(pb::UploadFileRequest {
                data: Some(upload_file_request::Data::Chunk(chunk.to_vec())),
            });
        }
        let started = Instant::now();
        let stored = files
            .clone()
            .upload_file(authed(tokio_stream::iter(messages), token))
            .await
            .unwrap()
            .into_inner();
        upload_secs += started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut stream = files
            .clone()
            .download_file(authed(
                pb::DownloadFileRequest {
                    file_id: stored.id.clone(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut received = 0;
        while let Some(message) = stream.next().await {
            if let Some(pb::download_file_response::Data::Chunk(chunk)) = message.unwrap().data {
                received += chunk.len();
            }
        }
        download_secs += started.elapsed().as_secs_f64();
        assert_eq!(received, size);
    }
    let mib = (size * rounds) as f64 / MIB as f64;
    report.row(
        format!("upload, UploadFile, {rounds} x 48 MiB in 1 MiB chunks"),
        format!("{:.1} MiB/s", mib / upload_secs),
        ">= 200 MiB/s",
    );
    report.row(
        format!("download, DownloadFile, {rounds} x 48 MiB in 64 KiB chunks"),
        format!("{:.1} MiB/s", mib / download_secs),
        ">= 200 MiB/s",
    );
}

/// Chat throughput (the writer in-process, then SendMessage end to end)
/// and file throughput, on a server of its own.
pub async fn run(report: &mut Report, quick: bool) {
    let server = Server::start(&[]);
    let setup = channel(&server.addr).await;
    let token = user(&setup, 0).await;
    let me = UserServiceClient::new(setup.clone())
        .get_me(authed(pb::GetMeRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    let one = vec![open_meeting(&setup, &token).await];
    let mut hundred = Vec::new();
    for _ in 0..100 {
        hundred.push(open_meeting(&setup, &token).await);
    }

    // The chat writer on the server's own database, in this process.
    let dir = server.data_dir().display().to_string();
    let config = Config::from_lookup(|key| match key {
        "UNIO_DATA_DIR" => Some(dir.clone()),
        "UNIO_JWT_SECRET" => Some("bench-secret-bench-secret-bench-secret".into()),
        "UNIO_ADMIN_ADDR" => Some(String::new()),
        _ => None,
    })
    .unwrap();
    let state = unio::build_state(config).await.unwrap();
    let total = if quick { 20_000 } else { 100_000 };
    for (meetings, label) in [(&one, "1 meeting"), (&hundred, "100 meetings")] {
        let rate = persisted(&state, meetings, &me.id, total, 64).await;
        report.row(
            format!("chat persisted (writer, 64 concurrent), {label}"),
            format!("{rate:.0} messages/s"),
            ">= 15,000/s",
        );
    }
    let rpcs = if quick { 5_000 } else { 20_000 };
    for (meetings, label) in [(&one, "1 meeting"), (&hundred, "100 meetings")] {
        let rate = end_to_end(&server.addr, &token, meetings, rpcs, 64).await;
        report.row(
            format!("chat end to end, SendMessage from 64 tonic clients, {label}"),
            format!("{rate:.0} messages/s"),
            "",
        );
    }
    files(
        report,
        &server.addr,
        &token,
        &one[0],
        if quick { 1 } else { 3 },
    )
    .await;
}
