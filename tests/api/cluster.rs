//! Cluster mode (DESIGN §9): two nodes on one database with Redis between
//! them. Each test starts its own `redis-server` (Debian's; the test
//! command installs it) on a free port, and the nodes in this process.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio_stream::StreamExt;
use tonic::Code;
use unio::proto::pb;

use crate::helpers::{TestApp, authed, eventually, free_addr, spawn_app_with};
use crate::live::{all_end_with, open_streams, setup, stays_open};

/// A throwaway Redis server.
pub(crate) struct Redis {
    port: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    /// A `redis-server` on a port that was free a moment ago; should
    /// another socket take it first (the server then exits, or someone
    /// else answers there), another port is tried.
    pub(crate) fn start() -> Self {
        for _ in 0..5 {
            let addr = free_addr();
            let port = addr.rsplit_once(':').unwrap().1.to_owned();
            let mut redis = Self {
                port,
                dir: tempfile::tempdir().unwrap(),
                child: None,
            };
            if redis.try_spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on its port (after [`Redis::stop`]).
    pub(crate) fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server did not start again on port {}",
            self.port
        );
    }

    /// Whether a `redis-server` started here came up on the port.
    fn try_spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server (Debian: apt-get install redis-server; scripts/test installs it)",
            );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let up = loop {
            // Exited (the port was taken), or never answered.
            if std::time::Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
                break false;
            }
            if self.answers(child.id()) {
                break true;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if up {
            self.child = Some(child);
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
        up
    }

    /// Whether the Redis answering on the port is process `pid` (another
    /// test's Redis may hold a port probed free a moment earlier).
    fn answers(&self, pid: u32) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(format!("127.0.0.1:{}", self.port))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"INFO server\r\n").is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        while reply.len() < 64 * 1024 {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
            }
            // The `process_id:` line, once it arrived whole.
            let text = String::from_utf8_lossy(&reply);
            if let Some((_, rest)) = text.split_once("\r\nprocess_id:")
                && let Some((id, _)) = rest.split_once("\r\n")
            {
                return id == pid.to_string();
            }
        }
        false
    }

    /// Sends `signal` (STOP, CONT) to the server: a stopped Redis keeps its
    /// connections open and answers nothing, like one behind a partition.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let done = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(done.success());
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `app` reports its bus as serving.
pub(crate) async fn bus_serving(app: &TestApp) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel());
    let request = tonic_health::pb::HealthCheckRequest {
        service: unio::server::BUS_HEALTH.into(),
    };
    matches!(
        health.check(request).await.map(|r| r.into_inner().status),
        Ok(s) if s == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    )
}

/// `token`'s notification watch on `node`.
async fn watch(node: &TestApp, token: &str) -> tonic::Streaming<pb::Notification> {
    node.notifications()
        .watch_notifications(authed(pb::WatchNotificationsRequest {}, token))
        .await
        .unwrap()
        .into_inner()
}

/// The first notification on `watch` that `wanted` picks, within `limit`.
async fn first_where(
    watch: &mut tonic::Streaming<pb::Notification>,
    limit: Duration,
    wanted: impl Fn(&pb::Notification) -> bool,
) -> Result<pb::Notification, tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, async {
        loop {
            let n = watch.next().await.unwrap().unwrap();
            if wanted(&n) {
                return n;
            }
        }
    })
    .await
}

/// Two nodes on one database (the first node's), both subscribed.
pub(crate) async fn two_nodes(redis: &Redis) -> (TestApp, TestApp) {
    two_nodes_with(redis, &[]).await
}

async fn two_nodes_with(redis: &Redis, extra: &[(&str, &str)]) -> (TestApp, TestApp) {
    let mut nodes = nodes_with(redis, 2, extra).await;
    let b = nodes.pop().unwrap();
    (nodes.pop().unwrap(), b)
}

/// `n` nodes on one database (the first node's), all subscribed.
pub(crate) async fn nodes_with(redis: &Redis, n: usize, extra: &[(&str, &str)]) -> Vec<TestApp> {
    let url = redis.url();
    let mut vars = vec![("UNIO_REDIS_URL", url.as_str())];
    vars.extend_from_slice(extra);
    let a = spawn_app_with(&vars).await;
    let database = a
        .vars
        .get("UNIO_DATABASE_URL")
        .cloned()
        .unwrap_or_else(|| format!("sqlite://{}", a.data_path().join("unio.db").display()));
    // Nodes share the blob store (in production, a shared volume).
    let data_dir = a.data_dir.path().display().to_string();
    // Every node sends mail from the one queue: into A's sink.
    let smtp = format!("smtp://{}", a.mail.addr);
    let mut vars: Vec<(&str, &str)> = vars.clone();
    vars.extend([
        ("UNIO_SMTP_URL", smtp.as_str()),
        ("UNIO_DATABASE_URL", database.as_str()),
        ("UNIO_DATA_DIR", data_dir.as_str()),
        ("UNIO_JWT_SECRET", a.secret.as_str()),
    ]);
    let mut others = Vec::new();
    for _ in 1..n {
        others.push(spawn_app_with(&vars).await);
    }
    drop(vars);
    let mut nodes = vec![a];
    nodes.extend(others);
    for node in &nodes {
        eventually("the node subscribes to Redis", || bus_serving(node)).await;
    }
    nodes
}

#[tokio::test]
async fn a_logout_on_one_node_ends_the_sessions_streams_on_another() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, _) = setup(&a).await;
    let mut host_streams = open_streams(&b, &host, &meeting).await;
    let mut streams = open_streams(&b, &bob, &meeting).await;

    a.auth()
        .logout(authed(pb::LogoutRequest::default(), &bob))
        .await
        .unwrap();
    all_end_with(&mut streams, Code::Unauthenticated, "TOKEN_REVOKED").await;
    // B's cache of bob's session went with it: a new call is refused too.
    let status = b
        .users()
        .get_me(authed(pb::GetMeRequest {}, &bob))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(stays_open(&mut host_streams.watch).await);
}

#[tokio::test]
async fn a_notification_written_on_one_node_reaches_a_watch_on_another() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (_, host, _) = a.user("host@example.com").await;
    let (_, bob, _) = a.user("bob@example.com").await;
    let mut watch = watch(&a, &bob).await;
    // No pause: once the watch is answered, A hears bob's channel.
    let meeting = b
        .meeting(
            &host,
            "Across",
            &["bob@example.com"],
            pb::JoinPolicy::InvitedOnly,
        )
        .await;
    let notification = first_where(&mut watch, Duration::from_secs(2), |n| {
        n.meeting_id == meeting.id
    })
    .await
    .expect("bob's watch on A hears of the invitation B wrote");
    assert_eq!(notification.meeting_id, meeting.id);
}

#[tokio::test]
async fn redis_restarted_the_bus_reports_it_and_recovers() {
    let mut redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, _host, bob, _) = setup(&a).await;

    redis.stop();
    for node in [&a, &b] {
        eventually("the node reports its bus down", || async {
            !bus_serving(node).await
        })
        .await;
    }
    // Each node still serves its own: a call that needs no other node works.
    b.users()
        .get_me(authed(pb::GetMeRequest {}, &bob))
        .await
        .expect("served while Redis is down");

    redis.spawn();
    for node in [&a, &b] {
        eventually("the node subscribes again", || bus_serving(node)).await;
    }
    // Delivery across nodes is back: a logout on A ends bob's streams on B.
    let mut streams = open_streams(&b, &bob, &meeting).await;
    a.auth()
        .logout(authed(pb::LogoutRequest::default(), &bob))
        .await
        .unwrap();
    all_end_with(&mut streams, Code::Unauthenticated, "TOKEN_REVOKED").await;
}

#[tokio::test]
async fn two_nodes_send_each_reminder_once_and_it_reaches_a_watch_on_either() {
    let redis = Redis::start();
    let (a, b) = two_nodes_with(&redis, &[("UNIO_REMINDER_LEAD", "3s")]).await;
    let (_, host, _) = a.user("host@example.com").await;
    let (_, bob, _) = a.user("bob@example.com").await;
    let mut watch = watch(&a, &bob).await;
    let meeting = b
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Soon".into(),
                start_time: crate::helpers::from_now(2),
                duration_minutes: 30,
                invitee_emails: vec!["bob@example.com".into()],
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    let reminder = first_where(&mut watch, Duration::from_secs(5), |n| {
        n.r#type == pb::NotificationType::MeetingReminder as i32
    })
    .await
    .expect("the reminder reaches bob's watch on A, whichever node wrote it");
    assert_eq!(reminder.meeting_id, meeting.id);
    // Both nodes sweep several more times: still one reminder.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in [&a, &b] {
        let listed = node
            .notifications()
            .list_notifications(authed(
                pb::ListNotificationsRequest {
                    types: vec![pb::NotificationType::MeetingReminder as i32],
                    ..Default::default()
                },
                &bob,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.notifications.len(), 1, "{listed:?}");
    }
}

#[tokio::test]
async fn a_resumable_upload_moves_between_nodes_and_one_chunk_writes_at_a_time() {
    use crate::files::{MIB, client, download, meeting, metadata, sha};
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (_, host, _) = a.user("host@example.com").await;
    let (_, bob, _) = a.user("bob@example.com").await;
    let m = meeting(&a, &host, &["bob@example.com"]).await;
    let bytes: Vec<u8> = (0..(2 * MIB + 10)).map(|i| b'a' + (i % 26) as u8).collect();
    let upload = client(&a)
        .create_upload(authed(
            pb::CreateUploadRequest {
                metadata: Some(metadata(
                    &m,
                    "both.txt",
                    Some(bytes.len() as i64),
                    &sha(&bytes),
                )),
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    let chunk = |node: &TestApp, offset: usize, len: usize| {
        let mut c = client(node);
        let request = authed(
            pb::UploadChunkRequest {
                upload_id: upload.upload_id.clone(),
                offset: offset as i64,
                data: bytes[offset..offset + len].to_vec(),
            },
            &host,
        );
        async move { c.upload_chunk(request).await }
    };
    chunk(&a, 0, MIB).await.unwrap();
    // The same next chunk at both nodes at once: one writes it; the other
    // is told to retry or that it is already there; never both.
    let (on_a, on_b) = tokio::join!(chunk(&a, MIB, MIB), chunk(&b, MIB, MIB));
    for outcome in [&on_a, &on_b] {
        match outcome {
            Ok(r) => assert_eq!(r.get_ref().received_bytes, 2 * MIB as i64),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(
                    ["UPLOAD_BUSY", "UPLOAD_OFFSET_MISMATCH"]
                        .contains(&crate::helpers::reason(status).as_str()),
                    "{status:?}"
                );
            }
        }
    }
    assert!(on_a.is_ok() || on_b.is_ok(), "one of them wrote it");
    chunk(&b, 2 * MIB, 10).await.unwrap();
    let stored = client(&b)
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
    assert_eq!(download(&a, &bob, &stored.id).await.unwrap().1, bytes);
}

#[tokio::test]
async fn a_node_stays_tracked_in_a_room_while_its_roster_names_it() {
    use unio::realtime::room_log::{RoomLog, RosterOp};
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let log = RoomLog::new(conn.clone(), 100);
    let untrack = RosterOp::Untrack { node: "n1".into() };
    let join = |id: &str, node: &str| RosterOp::Join {
        participant_id: id.into(),
        participant: b"p".to_vec(),
        node: node.into(),
        token: b"t".to_vec(),
        seen: 0,
    };
    log.append_with("r1", b"x", &join("p2", "n2"))
        .await
        .unwrap();
    log.append_with("r1", b"x", &join("p1", "n1"))
        .await
        .unwrap();
    let tracked = |mut conn: redis::aio::MultiplexedConnection| async move {
        let rooms: Vec<String> = redis::cmd("SMEMBERS")
            .arg("unio:node:n1:rooms")
            .query_async(&mut conn)
            .await
            .unwrap();
        rooms
    };
    assert_eq!(tracked(conn.clone()).await, ["r1"]);
    // Still named (a claim came after the room was forgotten): kept.
    log.append_with("r1", b"", &untrack).await.unwrap();
    assert_eq!(tracked(conn.clone()).await, ["r1"]);
    let leave = RosterOp::Leave {
        participant_id: "p1".into(),
        node: "n1".into(),
    };
    log.append_with("r1", b"x", &leave).await.unwrap();
    log.append_with("r1", b"", &untrack).await.unwrap();
    assert!(tracked(conn.clone()).await.is_empty());
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_room_log_gives_every_node_one_order_and_a_replay() {
    use unio::realtime::room_log::{self, Replay, RoomLog};
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    // Two nodes' handles, each on its own connection.
    let a = RoomLog::new(
        client.get_multiplexed_async_connection().await.unwrap(),
        1000,
    );
    let b = RoomLog::new(
        client.get_multiplexed_async_connection().await.unwrap(),
        1000,
    );
    let (mut sink, mut heard) = client.get_async_pubsub().await.unwrap().split();
    sink.subscribe(room_log::channel("r1")).await.unwrap();

    let writers = [a.clone(), b.clone()].map(|log| {
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50u32 {
                seqs.push(log.append("r1", &i.to_be_bytes()).await.unwrap());
            }
            seqs
        })
    });
    let mut all = Vec::new();
    for writer in writers {
        let seqs = writer.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "each node's in order");
        all.extend(seqs);
    }
    all.sort();
    // A room's counter starts at Redis's clock (numbers never go back,
    // even if Redis loses the room).
    let start = all[0] - 1;
    assert!(start > 1_700_000_000_000_000, "{start}");
    assert_eq!(
        all,
        (start + 1..=start + 100).collect::<Vec<u64>>(),
        "one counter for both"
    );

    // Subscribers hear them in sequence order, after the start's marker.
    let message = heard.next().await.unwrap();
    assert_eq!(
        room_log::parse_published(message.get_payload_bytes()),
        Some(vec![(start, &b""[..])])
    );
    let mut previous = start;
    for _ in 0..100 {
        let message = tokio::time::timeout(Duration::from_secs(2), heard.next())
            .await
            .unwrap()
            .unwrap();
        let events = room_log::parse_published(message.get_payload_bytes()).unwrap();
        let [(seq, body)] = events[..] else {
            panic!("one event a message: {events:?}");
        };
        assert_eq!(seq, previous + 1);
        assert_eq!(body.len(), 4);
        previous = seq;
    }

    // Any node reads the replay.
    let Replay::Events(events) = b.since("r1", start + 90).await.unwrap() else {
        panic!("the replay is there");
    };
    assert_eq!(
        events.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (start + 91..=start + 100).collect::<Vec<u64>>()
    );
    assert_eq!(
        a.since("r1", start + 100).await.unwrap(),
        Replay::Events(vec![])
    );
    assert_eq!(a.last("r1").await.unwrap(), start + 100);
    // A replay from before the room existed crosses the start's marker.
    let Replay::Events(events) = b.since("r1", 7).await.unwrap() else {
        panic!("the whole log is there");
    };
    assert_eq!(events.len(), 101);
    assert_eq!(events[0], (start, Vec::new()));
    // A resume does not: what a lost room held cannot be replayed.
    for after in [7, start - 1] {
        assert_eq!(
            b.replay_for_resume("r1", after).await.unwrap(),
            Replay::Gone
        );
    }
    let Replay::Events(events) = b.replay_for_resume("r1", start).await.unwrap() else {
        panic!("after the marker, the log is whole");
    };
    assert_eq!(events.len(), 100);

    // A node that found Redis without the room (at start + 150 here)
    // moves its counter on; the number stands for an event the old room
    // held, so neither a node behind it nor a resume goes over it.
    a.advance("r1", start + 150).await.unwrap();
    let next = a.append("r1", b"after").await.unwrap();
    assert_eq!(next, start + 151);
    for after in [start + 100, start + 149] {
        assert_eq!(b.since("r1", after).await.unwrap(), Replay::Gone);
        assert_eq!(
            b.replay_for_resume("r1", after).await.unwrap(),
            Replay::Gone
        );
    }
    let Replay::Events(events) = b.replay_for_resume("r1", start + 150).await.unwrap() else {
        panic!("after the marker, the log is whole");
    };
    assert_eq!(events, [(start + 151, b"after".to_vec())]);

    // A run of events: numbers in order, one message, and a replay may
    // start inside it.
    let last = a.append_run("r1", &[b"x", b"", b"zz"]).await.unwrap();
    assert_eq!(last, start + 154);
    let mut published = Vec::new();
    while published.len() < 5 {
        let message = tokio::time::timeout(Duration::from_secs(2), heard.next())
            .await
            .unwrap()
            .unwrap();
        let events = room_log::parse_published(message.get_payload_bytes()).unwrap();
        published.extend(events.into_iter().map(|(seq, body)| (seq, body.to_vec())));
    }
    assert_eq!(
        published,
        [
            (start + 150, vec![]),
            (start + 151, b"after".to_vec()),
            (start + 152, b"x".to_vec()),
            (start + 153, vec![]),
            (start + 154, b"zz".to_vec()),
        ]
    );
    let Replay::Events(events) = b.since("r1", start + 152).await.unwrap() else {
        panic!("the run is there");
    };
    assert_eq!(
        events,
        [(start + 153, vec![]), (start + 154, b"zz".to_vec())]
    );
    let Replay::Events(events) = b.since("r1", start + 150).await.unwrap() else {
        panic!("the run is there");
    };
    assert_eq!(events.len(), 4);

    // Runs are used once every node heard from reads them: a node of an
    // earlier version (it beats without saying so) holds them back until
    // it is forgotten.
    assert!(a.beat("node-a").await.unwrap());
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg("unio:nodes")
        .arg("old-node")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!a.beat("node-a").await.unwrap());
    a.forget("old-node").await.unwrap();
    assert!(a.beat("node-a").await.unwrap());

    // A short log forgets: a resume from before it is refused.
    let short = RoomLog::new(client.get_multiplexed_async_connection().await.unwrap(), 1);
    for i in 0..500u32 {
        short.append("r2", &i.to_be_bytes()).await.unwrap();
    }
    let first = short.append("r2", b"x").await.unwrap();
    assert_eq!(
        short.since("r2", first).await.unwrap(),
        Replay::Events(vec![])
    );
    assert_eq!(short.since("r2", first - 400).await.unwrap(), Replay::Gone);

    // A resume's replay holds no more than a node's replay ring would:
    // from further back it is refused, not read whole.
    let big = vec![7u8; 1 << 20];
    let before = a.append("r3", b"first").await.unwrap();
    for _ in 0..5 {
        a.append("r3", &big).await.unwrap();
    }
    assert_eq!(
        a.replay_for_resume("r3", before).await.unwrap(),
        Replay::Gone
    );
    let Replay::Events(events) = a.replay_for_resume("r3", before + 2).await.unwrap() else {
        panic!("three of them fit");
    };
    assert_eq!(events.len(), 3);
    // A node catching up reads the whole gap, whatever its size.
    let Replay::Events(events) = a.since("r3", before).await.unwrap() else {
        panic!("a catch-up is not limited");
    };
    assert_eq!(events.len(), 5);
    // Nor more than `keep` events for a resume.
    assert_eq!(
        short.replay_for_resume("r2", first - 3).await.unwrap(),
        Replay::Gone
    );
}

#[tokio::test]
async fn the_host_removes_a_participant_served_by_another_node() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, _) = setup(&a).await;
    let mut streams = open_streams(&b, &bob, &meeting).await;
    let mut rooms = unio::proto::pb::room_service_client::RoomServiceClient::new(a.channel());
    let remove = |meeting_id: &str, token: &str| {
        authed(
            pb::RemoveParticipantRequest {
                meeting_id: meeting_id.into(),
                participant_id: streams.connect_participant.clone(),
            },
            token,
        )
    };
    // Nobody else gets anywhere: not bob himself, and not a host naming
    // the participant under another meeting of theirs.
    let status = rooms
        .remove_participant(remove(&meeting, &bob))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let other = a
        .meeting(&host, "Other", &[], pb::JoinPolicy::InvitedOnly)
        .await;
    let status = rooms
        .remove_participant(remove(&other.id, &host))
        .await
        .unwrap_err();
    assert_eq!(
        crate::helpers::reason(&status),
        "PARTICIPANT_NOT_FOUND",
        "{status:?}"
    );
    assert!(stays_open(&mut streams.subscribe).await, "bob is still in");
    rooms
        .remove_participant(authed(
            pb::RemoveParticipantRequest {
                meeting_id: meeting.clone(),
                participant_id: streams.connect_participant.clone(),
            },
            &host,
        ))
        .await
        .expect("A finds the participant B serves");
    for status in [
        crate::live::ending(&mut streams.connect).await,
        crate::live::ending(&mut streams.subscribe).await,
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    assert!(stays_open(&mut streams.watch).await);
}

#[tokio::test]
async fn ending_the_meeting_on_one_node_closes_its_room_on_another() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, _) = setup(&a).await;
    let mut streams = open_streams(&b, &bob, &meeting).await;
    a.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    a.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    // B's room closes in its own words: the status change, then the end.
    let seen = tokio::time::timeout(Duration::from_secs(1), async {
        let mut statuses = Vec::new();
        while let Some(Ok(event)) = streams.connect.next().await {
            if let Some(pb::server_event::Event::MeetingStatus(s)) = event.event {
                statuses.push(s.status);
            }
        }
        statuses
    })
    .await
    .expect("the room on B closes within a second");
    assert_eq!(
        seen.last(),
        Some(&(pb::MeetingStatus::Completed as i32)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_noticed() {
    let redis = Redis::start();
    let (a, _b) = two_nodes(&redis).await;
    redis.signal("STOP");
    eventually("the node notices the silence", || async {
        !bus_serving(&a).await
    })
    .await;
    redis.signal("CONT");
    eventually("the node subscribes again", || bus_serving(&a)).await;
}

#[tokio::test]
async fn a_revocation_during_a_redis_outage_still_ends_streams_on_other_nodes() {
    let mut redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, _host, bob, _) = setup(&a).await;
    let mut streams = open_streams(&b, &bob, &meeting).await;
    redis.stop();
    eventually("B reports its bus down", || async {
        !bus_serving(&b).await
    })
    .await;
    // A cannot tell B; B, unable to vouch for its bus, re-checks its
    // streams against the database every second.
    a.auth()
        .logout(authed(pb::LogoutRequest::default(), &bob))
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match streams.subscribe.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status,
                None => panic!("ended without a status"),
            }
        }
    })
    .await
    .expect("B's stream ends within seconds though no message could reach it");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn a_node_that_stops_cleanly_leaves_the_others_healthy() {
    let redis = Redis::start();
    let (a, mut b) = two_nodes(&redis).await;
    // A has heard B.
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.stop().await;
    // B said goodbye: its silence is no partition, so A keeps trusting its
    // bus (a silent peer would make it unhealthy after a second).
    for _ in 0..15 {
        assert!(bus_serving(&a).await, "A stays healthy after B's goodbye");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
