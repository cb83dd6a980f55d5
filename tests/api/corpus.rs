//! The bad-input corpus: every RPC of every `unio.v1` service (found by
//! walking the descriptors), every field of its request (and of the messages
//! inside it, two levels down), each in turn carrying a hostile value while
//! the rest of the request is a plausible, valid baseline; plus undecodable
//! bodies for every RPC. Whatever the server makes of it, it must answer like
//! a server that validates its input (DESIGN §3): never INTERNAL, UNKNOWN or
//! DATA_LOSS, never UNAVAILABLE (nothing is down), never a panic, never
//! silence, and it keeps serving afterwards.
//!
//! `UNIO_CORPUS_VERBOSE=1` prints every case and its answer.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use prost::{Message, bytes::Bytes};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_stream::StreamExt;
use tonic::Code;
use unio::proto::pb::{
    self, file_service_client::FileServiceClient, room_service_client::RoomServiceClient,
    server_event, upload_file_request,
};

use crate::helpers::{PASSWORD, TestApp, authed, spawn_app_with};
use crate::sweep::{Answer, call_raw, descriptor_pool, raw_client, short_name, unio_methods};

const MIB: usize = 1024 * 1024;
/// How long a server stream is read before the test moves on.
const STREAM_READ: Duration = Duration::from_secs(2);
/// Requests are at most three fields deep: `event.chat.text`.
const MAX_DEPTH: usize = 3;

/// An unknown, well-formed id.
const UNKNOWN_UUID: &str = "0190a6f2-7c1e-7d3a-9b4c-2f1e0d9c8b7a";

/// What exists before the corpus runs, so that the baseline of every request
/// names real things and a hostile field is the only thing wrong with it.
struct Fixtures {
    host: pb::User,
    host_token: String,
    guest: pb::User,
    guest_token: String,
    admin_token: String,
    meeting_id: String,
    invite_id: String,
    call_id: String,
    file_id: String,
    upload_id: String,
    notification_id: String,
    /// The host's Subscribe session in the meeting.
    session_id: String,
    /// The guest's participant in the meeting.
    participant_id: String,
    png: Vec<u8>,
    /// Drain the two room streams that keep the session and participant alive.
    _streams: Vec<tokio::task::JoinHandle<()>>,
}

/// The state one call runs against.
struct Ctx<'a> {
    f: &'a Fixtures,
    method: String,
    meeting_id: String,
    user: pb::User,
    token: String,
    refresh: String,
    serial: usize,
}

/// Methods that would spoil shared state, and what each case gets instead.
enum Setup {
    /// The shared fixtures and the host's token.
    Shared,
    /// A meeting of its own per case (the call would move the shared
    /// meeting's status or contents).
    FreshMeeting,
    /// A user of its own per case (the call ends or changes its account).
    FreshUser,
}

fn setup_of(method: &str) -> Setup {
    match method {
        "MeetingService/UpdateMeeting" | "CallService/StartCall" => Setup::FreshMeeting,
        "UserService/DeleteUser" | "AuthService/Logout" | "UserService/ChangePassword" => {
            Setup::FreshUser
        }
        _ => Setup::Shared,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 10]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

async fn create_meeting(app: &TestApp, token: &str, invitee: &str) -> String {
    app.meeting(token, "Corpus", &[invitee], pb::JoinPolicy::InvitedOnly)
        .await
        .id
}

/// A signed-up (unverified) user; waits out sign-up rate limits.
async fn fresh_user(app: &TestApp, serial: usize) -> (pb::User, String, String) {
    for _ in 0..100 {
        let request = pb::SignUpRequest {
            email: format!("fresh{serial}@example.com"),
            password: PASSWORD.into(),
            display_name: "Fresh".into(),
        };
        match app.auth().sign_up(request).await {
            Ok(response) => {
                let response = response.into_inner();
                let tokens = response.tokens.expect("tokens");
                return (
                    response.user.expect("user"),
                    tokens.access_token,
                    tokens.refresh_token,
                );
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("sign up fresh{serial}: {status:?}"),
        }
    }
    panic!("sign-up stayed rate limited");
}

/// Subscribes `token` to the meeting; returns the joined event and a task
/// that keeps reading the stream.
async fn join_room(
    app: &TestApp,
    token: &str,
    meeting_id: &str,
) -> (pb::Joined, tokio::task::JoinHandle<()>) {
    let mut events = RoomServiceClient::new(app.channel())
        .subscribe(authed(
            pb::SubscribeRequest {
                meeting_id: meeting_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("joined within 5 s")
        .expect("open stream")
        .expect("joined");
    let Some(server_event::Event::Joined(joined)) = first.event else {
        panic!("expected joined, got {first:?}");
    };
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = events.next().await {} });
    (*joined, drain)
}

async fn fixtures(app: &TestApp) -> Fixtures {
    let (host, host_token, _) = app.user("host@example.com").await;
    let (guest, guest_token, _) = app.user("guest@example.com").await;
    let (_, admin_token) = app.admin("admin@example.com").await;
    let png = png();
    let meeting_id = create_meeting(app, &host_token, &guest.email).await;

    let invite_id = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &guest_token))
        .await
        .expect("list invites")
        .into_inner()
        .invites
        .into_iter()
        .find(|i| i.meeting_id == meeting_id)
        .expect("the guest's invite")
        .id;
    // The answer gives the host a notification to point at.
    app.meetings()
        .respond_to_invite(authed(
            pb::RespondToInviteRequest {
                invite_id: invite_id.clone(),
                response: pb::InviteStatus::Accepted as i32,
            },
            &guest_token,
        ))
        .await
        .expect("accept invite");
    let mut notification_id = String::new();
    for _ in 0..100 {
        let list = app
            .notifications()
            .list_notifications(authed(pb::ListNotificationsRequest::default(), &host_token))
            .await
            .expect("list notifications")
            .into_inner();
        if let Some(n) = list.notifications.first() {
            notification_id = n.id.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!notification_id.is_empty(), "the host got no notification");

    let call_meeting = create_meeting(app, &host_token, &guest.email).await;
    let call_id = app
        .calls()
        .start_call(authed(
            pb::StartCallRequest {
                meeting_id: call_meeting,
                callee_id: guest.id.clone(),
            },
            &host_token,
        ))
        .await
        .expect("start call")
        .into_inner()
        .id;

    let metadata = |filename: &str| pb::FileMetadata {
        meeting_id: meeting_id.clone(),
        filename: filename.into(),
        content_type: "image/png".into(),
        size_bytes: Some(png.len() as i64),
        sha256: String::new(),
    };
    let mut files = FileServiceClient::new(app.channel());
    let messages = vec![
        pb::UploadFileRequest {
            data: Some(upload_file_request::Data::Metadata(metadata("a.png"))),
        },
        pb::UploadFileRequest {
            data: Some(upload_file_request::Data::Chunk(png.clone())),
        },
    ];
    let file_id = files
        .upload_file(authed(tokio_stream::iter(messages), &host_token))
        .await
        .expect("upload file")
        .into_inner()
        .id;
    let upload_id = files
        .create_upload(authed(
            pb::CreateUploadRequest {
                metadata: Some(metadata("b.png")),
            },
            &host_token,
        ))
        .await
        .expect("create upload")
        .into_inner()
        .upload_id;

    let (host_joined, host_stream) = join_room(app, &host_token, &meeting_id).await;
    let (guest_joined, guest_stream) = join_room(app, &guest_token, &meeting_id).await;

    Fixtures {
        host,
        host_token,
        guest,
        guest_token,
        admin_token,
        meeting_id,
        invite_id,
        call_id,
        file_id,
        upload_id,
        notification_id,
        session_id: host_joined.session_id,
        participant_id: guest_joined.participant_id,
        png,
        _streams: vec![host_stream, guest_stream],
    }
}

/// The state for one case of `method`: fresh where the call would spoil
/// what other cases rely on.
async fn context<'a>(app: &TestApp, f: &'a Fixtures, method: &str, serial: usize) -> Ctx<'a> {
    let mut ctx = Ctx {
        f,
        method: method.to_owned(),
        meeting_id: f.meeting_id.clone(),
        user: f.host.clone(),
        token: f.host_token.clone(),
        refresh: String::new(),
        serial,
    };
    match setup_of(method) {
        Setup::Shared => {}
        Setup::FreshMeeting => {
            ctx.meeting_id = create_meeting(app, &f.host_token, &f.guest.email).await;
        }
        Setup::FreshUser => {
            let (user, token, refresh) = fresh_user(app, serial).await;
            (ctx.user, ctx.token, ctx.refresh) = (user, token, refresh);
        }
    }
    match method {
        // Only the invitee answers an invite, only the callee a call.
        "MeetingService/RespondToInvite" | "CallService/AnswerCall" => {
            ctx.token = f.guest_token.clone();
        }
        "UserService/ListUsers" => ctx.token = f.admin_token.clone(),
        _ => {}
    }
    ctx
}

fn timestamp(desc: &MessageDescriptor, seconds: i64, nanos: i32) -> Value {
    let mut message = DynamicMessage::new(desc.clone());
    message.set_field_by_name("seconds", Value::I64(seconds));
    message.set_field_by_name("nanos", Value::I32(nanos));
    Value::Message(message)
}

fn field_mask(desc: &MessageDescriptor, paths: &[&str]) -> Value {
    let mut message = DynamicMessage::new(desc.clone());
    let paths = paths.iter().map(|p| Value::String((*p).into())).collect();
    message.set_field_by_name("paths", Value::List(paths));
    Value::Message(message)
}

fn strings(values: &[&str]) -> Value {
    Value::List(values.iter().map(|s| Value::String((*s).into())).collect())
}

/// The baseline (valid) value of `field` in a request, if it needs one.
fn baseline_value(field: &FieldDescriptor, ctx: &Ctx, depth: usize) -> Option<Value> {
    let f = ctx.f;
    let owner = field.parent_message().name().to_owned();
    let name = field.name();
    let string = |s: &str| Some(Value::String(s.to_owned()));
    if field.is_list() {
        return match (field.kind(), name) {
            (Kind::String, "invitee_emails") => Some(strings(&[&f.guest.email])),
            (Kind::String, "emails") => Some(strings(&["invitee@example.com"])),
            (Kind::String, "user_ids") => Some(strings(&[&f.guest.id])),
            _ => None,
        };
    }
    match field.kind() {
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => match name {
                "start_after" => Some(timestamp(&m, now() - 86_400, 0)),
                "start_before" => Some(timestamp(&m, now() + 30 * 86_400, 0)),
                "start_time" => Some(timestamp(&m, now() + 3600, 0)),
                _ => None,
            },
            "google.protobuf.FieldMask" => match ctx.method.as_str() {
                "MeetingService/UpdateMeeting" => Some(field_mask(
                    &m,
                    &[
                        "title",
                        "description",
                        "start_time",
                        "duration_minutes",
                        "join_policy",
                    ],
                )),
                "UserService/UpdateUser" => Some(field_mask(&m, &["display_name"])),
                _ => None,
            },
            _ if depth + 1 < MAX_DEPTH => Some(Value::Message(baseline(&m, ctx, depth + 1))),
            _ => None,
        },
        Kind::String => match (owner.as_str(), name) {
            ("Meeting", "id") => string(&ctx.meeting_id),
            ("User", "id") => string(&ctx.user.id),
            ("User", "email") => string(&ctx.user.email),
            ("SignUpRequest", "email") => string(&format!("signup{}@example.com", ctx.serial)),
            ("LoginRequest", "email") => string(&f.host.email),
            (_, "password" | "current_password") => string(PASSWORD),
            (_, "new_password") => string("a brand new password 77"),
            (_, "meeting_id") => string(&ctx.meeting_id),
            (_, "user_id" | "callee_id") => string(&f.guest.id),
            (_, "display_name") => string("Corpus"),
            (_, "title") => string("t"),
            (_, "description") => string("d"),
            (_, "text") => string("hello"),
            (_, "body") => string("b"),
            (_, "refresh_token") => string(&ctx.refresh),
            (_, "redirect_uri") => string("http://localhost:50051/oauth/callback"),
            (_, "code") => string("code"),
            (_, "state") => string("state"),
            (_, "token") => string("unio_ev_not_a_real_token"),
            (_, "call_id") => string(&f.call_id),
            (_, "invite_id") => string(&f.invite_id),
            (_, "file_id") => string(&f.file_id),
            (_, "upload_id") => string(&f.upload_id),
            (_, "notification_id") => string(&f.notification_id),
            (_, "session_id") => string(&f.session_id),
            (_, "participant_id" | "to_participant_id") => string(&f.participant_id),
            (_, "content_type") => string("image/png"),
            (_, "filename") => string("a.png"),
            (_, "request_id") => string("r1"),
            (_, "sdp") => string("v=0"),
            (_, "candidate") => string("candidate:1 1 UDP 2122252543 192.0.2.1 54321 typ host"),
            (_, "sdp_mid") => string("0"),
            _ => None,
        },
        Kind::Int32 if name == "duration_minutes" => Some(Value::I32(30)),
        Kind::Int32 if name == "page_size" => Some(Value::I32(10)),
        Kind::Int64 if name == "size_bytes" => Some(Value::I64(f.png.len() as i64)),
        Kind::Bytes => Some(Value::Bytes(Bytes::from(f.png.clone()))),
        Kind::Enum(e) => match name {
            "response" => Some(Value::EnumNumber(pb::InviteStatus::Accepted as i32)),
            "type" => Some(Value::EnumNumber(pb::NotificationType::General as i32)),
            // The first value after UNSPECIFIED.
            _ => e.get_value(1).map(|v| Value::EnumNumber(v.number())),
        },
        _ => None,
    }
}

/// A valid request (or inner message) for the context: every field the
/// server needs is set to something real; one member per oneof.
fn baseline(desc: &MessageDescriptor, ctx: &Ctx, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc.clone());
    for field in desc.fields() {
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            // Publish sends into a live session: a ping is the harmless event.
            let chosen = match (desc.name(), ctx.method.as_str()) {
                ("ClientEvent", "RoomService/Publish") => "ping".to_owned(),
                _ => oneof.fields().next().expect("a member").name().to_owned(),
            };
            if field.name() != chosen {
                continue;
            }
        }
        if let Some(value) = baseline_value(&field, ctx, depth) {
            message.set_field(&field, value);
        }
    }
    message
}

/// One hostile request: a field path and its value (None: the field unset),
/// or a raw body.
enum Mutation {
    Field(Vec<FieldDescriptor>, Option<Value>),
    Raw(Vec<u8>),
}

struct Case {
    field: String,
    value: String,
    mutation: Mutation,
}

/// Deterministic noise.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn hostile_strings() -> Vec<(String, String)> {
    [
        ("\"\"", ""),
        ("\" \\t\\n\" (whitespace)", " \t\n"),
        ("\"\\u{0}\"", "\u{0}"),
        ("\"t\\u{0}t\" (embedded NUL)", "t\u{0}t"),
        ("\"\\u{202E}evil\"", "\u{202E}evil"),
        ("\"../../etc/passwd\"", "../../etc/passwd"),
        ("\"'; DROP TABLE users;--\"", "'; DROP TABLE users;--"),
        ("an unknown UUID", UNKNOWN_UUID),
        ("\"not-an-id\"", "not-an-id"),
    ]
    .into_iter()
    .map(|(summary, value)| (summary.to_owned(), value.to_owned()))
    .chain([
        // Past every text limit (titles 200, chat 4,000) in characters,
        // twice that in bytes, yet under the 64 KiB message limits.
        ("4001 × 'é'".to_owned(), "é".repeat(4001)),
        ("100000 × 'a'".to_owned(), "a".repeat(100_000)),
    ])
    .collect()
}

/// Hostile values for one (non-list, non-message) scalar kind.
fn hostile_scalars(kind: &Kind) -> Vec<(String, Value)> {
    let each = |values: Vec<Value>| {
        values
            .into_iter()
            .map(|v| (format!("{v:?}"), v))
            .collect::<Vec<_>>()
    };
    match kind {
        Kind::String => hostile_strings()
            .into_iter()
            .map(|(summary, s)| (summary, Value::String(s)))
            .collect(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => each(vec![
            Value::I32(-1),
            Value::I32(i32::MIN),
            Value::I32(i32::MAX),
        ]),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => each(vec![
            Value::I64(-1),
            Value::I64(i64::MIN),
            Value::I64(i64::MAX),
        ]),
        Kind::Uint32 | Kind::Fixed32 => each(vec![Value::U32(u32::MAX)]),
        Kind::Uint64 | Kind::Fixed64 => each(vec![Value::U64(u64::MAX)]),
        Kind::Float => each(vec![Value::F32(f32::NAN), Value::F32(f32::INFINITY)]),
        Kind::Double => each(vec![Value::F64(f64::NAN), Value::F64(f64::NEG_INFINITY)]),
        Kind::Bool => each(vec![Value::Bool(true)]),
        Kind::Enum(_) => each(vec![
            Value::EnumNumber(999),
            Value::EnumNumber(-5),
            Value::EnumNumber(0),
        ]),
        Kind::Bytes => {
            let mut truncated_png = png()[..40].to_vec();
            truncated_png.extend(garbage(64));
            vec![
                ("0 bytes".into(), Value::Bytes(Bytes::new())),
                (
                    "6 MiB of 0xFF".into(),
                    Value::Bytes(Bytes::from(vec![0xFF; 6 * MIB])),
                ),
                (
                    "4 KiB of noise".into(),
                    Value::Bytes(Bytes::from(garbage(4096))),
                ),
                (
                    "a PNG header then noise".into(),
                    Value::Bytes(Bytes::from(truncated_png)),
                ),
            ]
        }
        Kind::Message(_) => Vec::new(),
    }
}

/// Hostile values for a repeated field.
fn hostile_lists(kind: &Kind) -> Vec<(String, Value)> {
    match kind {
        Kind::Enum(_) => vec![
            ("[999]".into(), Value::List(vec![Value::EnumNumber(999)])),
            ("[-5]".into(), Value::List(vec![Value::EnumNumber(-5)])),
            ("[0]".into(), Value::List(vec![Value::EnumNumber(0)])),
            (
                "50000 × 999".into(),
                Value::List(vec![Value::EnumNumber(999); 50_000]),
            ),
        ],
        Kind::Message(m) => vec![
            (
                "[{}]".into(),
                Value::List(vec![Value::Message(DynamicMessage::new(m.clone()))]),
            ),
            (
                "1000 × {}".into(),
                Value::List(vec![Value::Message(DynamicMessage::new(m.clone())); 1000]),
            ),
        ],
        scalar => hostile_scalars(scalar)
            .into_iter()
            .flat_map(|(summary, value)| {
                // 1,000 copies of 100,000 characters would be 100 MB: 100 do.
                let copies = if summary.starts_with("100000") {
                    100
                } else {
                    1000
                };
                [
                    (format!("[{summary}]"), Value::List(vec![value.clone()])),
                    (
                        format!("{copies} × {summary}"),
                        Value::List(vec![value; copies]),
                    ),
                ]
            })
            .collect(),
    }
}

/// Hostile values for a singular message field of type `m`.
fn hostile_messages(m: &MessageDescriptor) -> Vec<(String, Option<Value>)> {
    let mut out = vec![
        ("unset".to_owned(), None),
        (
            "{} (empty)".to_owned(),
            Some(Value::Message(DynamicMessage::new(m.clone()))),
        ),
    ];
    match m.full_name() {
        "google.protobuf.Timestamp" => {
            let t = now();
            for (seconds, nanos) in [
                (-1, 0),
                (i64::MAX, 0),
                (i64::MIN, 0),
                (253_402_300_800, 0),
                (t, -1),
                (t, 2_000_000_000),
            ] {
                out.push((
                    format!("Timestamp{{seconds: {seconds}, nanos: {nanos}}}"),
                    Some(timestamp(m, seconds, nanos)),
                ));
            }
        }
        "google.protobuf.FieldMask" => {
            let many_titles = vec!["title"; 1000];
            for paths in [
                vec!["nope"],
                vec!["id"],
                vec![""],
                vec!["nope", "id", ""],
                vec!["title.nested"],
                many_titles,
            ] {
                let summary = if paths.len() > 10 {
                    format!("paths: {} × {:?}", paths.len(), paths[0])
                } else {
                    format!("paths: {paths:?}")
                };
                out.push((summary, Some(field_mask(m, &paths))));
            }
        }
        _ => {}
    }
    out
}

fn collect_cases(desc: &MessageDescriptor, prefix: &[FieldDescriptor], out: &mut Vec<Case>) {
    for field in desc.fields() {
        let mut path = prefix.to_vec();
        path.push(field.clone());
        let name = path.iter().map(|f| f.name()).collect::<Vec<_>>().join(".");
        let mut push = |value: String, v: Option<Value>| {
            out.push(Case {
                field: name.clone(),
                value,
                mutation: Mutation::Field(path.clone(), v),
            })
        };
        let kind = field.kind();
        if field.is_map() {
            continue;
        }
        if field.is_list() {
            for (summary, value) in hostile_lists(&kind) {
                push(summary, Some(value));
            }
            continue;
        }
        match &kind {
            Kind::Message(m) => {
                for (summary, value) in hostile_messages(m) {
                    push(summary, value);
                }
                let well_known = m.package_name() == "google.protobuf";
                if !well_known && path.len() < MAX_DEPTH {
                    collect_cases(m, &path, out);
                }
            }
            scalar => {
                for (summary, value) in hostile_scalars(scalar) {
                    push(summary, Some(value));
                }
            }
        }
    }
}

fn raw_cases() -> Vec<Case> {
    [
        ("empty body", vec![]),
        ("wire type 7 (undecodable)", vec![0xFF, 0xFF, 0xFF, 0x0F]),
        ("truncated varint", vec![0x08, 0x80]),
        ("length past the end", vec![0x0A, 0x10, b'a']),
        ("invalid UTF-8 in field 1", vec![0x0A, 0x02, 0xC3, 0x28]),
        ("end-group without start", vec![0x0C]),
    ]
    .into_iter()
    .map(|(summary, bytes)| Case {
        field: "<body>".into(),
        value: summary.into(),
        mutation: Mutation::Raw(bytes),
    })
    .collect()
}

/// Sets (or clears) the field at `path`, filling the messages on the way
/// with their baseline when the baseline left them unset.
fn apply(
    message: &mut DynamicMessage,
    path: &[FieldDescriptor],
    value: Option<Value>,
    ctx: &Ctx,
    depth: usize,
) {
    let (field, rest) = path.split_first().expect("a path");
    if rest.is_empty() {
        match value {
            Some(value) => message.set_field(field, value),
            None => message.clear_field(field),
        }
        return;
    }
    let mut child = match message.get_field(field).into_owned() {
        Value::Message(child) if message.has_field(field) => child,
        _ => {
            let desc = field.kind().as_message().expect("a message").clone();
            baseline(&desc, ctx, depth + 1)
        }
    };
    apply(&mut child, rest, value, ctx, depth + 1);
    message.set_field(field, Value::Message(child));
}

fn is_violation(answer: &Answer) -> bool {
    match answer {
        // The database and the server are healthy throughout, so
        // UNAVAILABLE means bad input reached the database and was reported
        // as an outage: a client would retry it forever.
        Answer::Status(status) => {
            matches!(
                status.code(),
                Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable
            ) || status.message().contains("panicked")
        }
        Answer::Silent => true,
        Answer::Ok | Answer::Open { .. } => false,
    }
}

fn outcome(answer: &Answer) -> String {
    match answer {
        Answer::Status(status) => format!("{:?}", status.code()),
        Answer::Ok => "Ok".into(),
        Answer::Open { .. } => "Open".into(),
        Answer::Silent => "Silent".into(),
    }
}

struct Report {
    violations: Vec<String>,
    /// Per method, how often each outcome came back.
    outcomes: BTreeMap<String, BTreeMap<String, usize>>,
    calls: usize,
    fields: usize,
}

impl Report {
    fn record(&mut self, method: &str, case: (&str, &str), answer: &Answer) {
        self.calls += 1;
        *self
            .outcomes
            .entry(method.to_owned())
            .or_default()
            .entry(outcome(answer))
            .or_default() += 1;
        if std::env::var_os("UNIO_CORPUS_VERBOSE").is_some() {
            let answer = answer.to_string();
            let answer: String = answer.chars().take(160).collect();
            eprintln!("{method} | {} = {} | {answer}", case.0, case.1);
        }
        if is_violation(answer) {
            self.violations
                .push(format!("{method} | {} = {} | {answer}", case.0, case.1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_gets_internal_errors_or_panics() {
    let started = std::time::Instant::now();
    // Rates high enough that the corpus reaches the handlers instead of
    // the rate limiters (which answer RESOURCE_EXHAUSTED, also fine).
    let app = spawn_app_with(&[("UNIO_PUBLIC_RATE", "100000"), ("UNIO_CHAT_RATE", "100000")]).await;
    let f = fixtures(&app).await;
    let pool = descriptor_pool();
    let methods = unio_methods(&pool);
    assert!(methods.len() >= 45, "only {} methods", methods.len());

    let mut grpc = raw_client(app.channel());
    let mut report = Report {
        violations: Vec::new(),
        outcomes: BTreeMap::new(),
        calls: 0,
        fields: 0,
    };
    // Server streams may stay open: they run side by side, bounded.
    let streams = Arc::new(Semaphore::new(24));
    let mut open_streams = JoinSet::new();
    let mut serial = 0;
    for method in &methods {
        let name = short_name(method);
        let mut cases = Vec::new();
        collect_cases(&method.input(), &[], &mut cases);
        report.fields += cases
            .iter()
            .map(|c| c.field.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        cases.extend(raw_cases());
        for case in cases {
            serial += 1;
            let ctx = context(&app, &f, &name, serial).await;
            let body = match case.mutation {
                Mutation::Raw(bytes) => bytes,
                Mutation::Field(path, value) => {
                    let mut message = baseline(&method.input(), &ctx, 0);
                    apply(&mut message, &path, value, &ctx, 0);
                    message.encode_to_vec()
                }
            };
            let authorization = format!("Bearer {}", ctx.token);
            if method.is_server_streaming() {
                let permit = streams.clone().acquire_owned().await.expect("semaphore");
                let mut grpc = grpc.clone();
                let method = method.clone();
                open_streams.spawn(async move {
                    let answer =
                        call_raw(&mut grpc, &method, body, Some(&authorization), STREAM_READ).await;
                    drop(permit);
                    (short_name(&method), case.field, case.value, answer)
                });
            } else {
                let answer =
                    call_raw(&mut grpc, method, body, Some(&authorization), STREAM_READ).await;
                report.record(&name, (&case.field, &case.value), &answer);
            }
        }
    }
    while let Some(done) = open_streams.join_next().await {
        let (name, field, value, answer) = done.expect("stream task");
        report.record(&name, (&field, &value), &answer);
    }
    let corpus_time = started.elapsed();

    // Still serving: health, and the host's own account.
    let health = tonic_health::pb::health_client::HealthClient::new(app.channel())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    if let Err(status) = &health {
        report
            .violations
            .push(format!("after the corpus: health check failed: {status:?}"));
    }
    match app
        .users()
        .get_me(authed(pb::GetMeRequest {}, &f.host_token))
        .await
    {
        Ok(me) if me.get_ref().id == f.host.id => {}
        other => report
            .violations
            .push(format!("after the corpus: GetMe answered {other:?}")),
    }

    eprintln!(
        "corpus: {} methods, {} fields, {} calls in {:.1?}",
        methods.len(),
        report.fields,
        report.calls,
        corpus_time
    );
    for (method, outcomes) in &report.outcomes {
        eprintln!("  {method}: {outcomes:?}");
    }
    assert!(
        report.violations.is_empty(),
        "{} of {} hostile calls were answered wrongly (method | field = value | answer):\n{}",
        report.violations.len(),
        report.calls,
        report.violations.join("\n")
    );
}
