//! Rooms that span nodes (DESIGN §9): participants served by different
//! nodes see each other, signal each other, and see one order of events,
//! against a real `redis-server` and nodes on one database.

use std::time::Duration;

use tonic::Streaming;
use unio::proto::pb::{self, client_event, server_event::Event};

use crate::cluster::{Redis, nodes_with, two_nodes};
use crate::helpers::{TestApp, authed};
use crate::live::setup;
use crate::rooms::{answer, connect, event, ice, next, offer, rooms};

/// A browser-style participant: Subscribe's stream and its session.
struct Browser {
    events: Streaming<pb::ServerEvent>,
    joined: pb::Joined,
    token: String,
}

async fn subscribe(node: &TestApp, token: &str, meeting: &str) -> Browser {
    let mut events = rooms(node)
        .subscribe(authed(
            pb::SubscribeRequest {
                meeting_id: meeting.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut events).await;
    let Some(Event::Joined(joined)) = first.event else {
        panic!("expected joined, got {first:?}")
    };
    Browser {
        events,
        joined: *joined,
        token: token.to_owned(),
    }
}

async fn publish(node: &TestApp, browser: &Browser, event: client_event::Event) {
    rooms(node)
        .publish(authed(
            pb::PublishRequest {
                session_id: browser.joined.session_id.clone(),
                event: Some(pb::ClientEvent {
                    request_id: "r".into(),
                    event: Some(event),
                }),
            },
            &browser.token,
        ))
        .await
        .expect("publish");
}

fn chat(text: &str) -> client_event::Event {
    client_event::Event::Chat(pb::ChatSend {
        text: text.into(),
        client_message_id: String::new(),
    })
}

/// The next `n` chat messages on `events` as (room sequence, text).
async fn chats(events: &mut Streaming<pb::ServerEvent>, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = next(events).await;
        if let Some(Event::Chat(m)) = e.event {
            out.push((e.sequence, m.text));
        }
    }
    out
}

#[tokio::test]
async fn participants_on_two_nodes_see_and_signal_each_other() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, _) = setup(&a).await;
    let mut native = connect(&a, &host, &meeting).await;
    let mut browser = subscribe(&b, &bob, &meeting).await;

    // Presence: B's joiner sees A's participant, and A hears the join.
    let native_id = native.joined.participant_id.clone();
    let listed = ids(&browser.joined);
    assert!(listed.contains(&native_id.as_str()), "{listed:?}");
    assert_eq!(listed.len(), 2);
    let seen = next(&mut native.events).await;
    let Some(Event::ParticipantJoined(joined)) = seen.event else {
        panic!("{seen:?}")
    };
    assert_eq!(
        joined.participant.unwrap().participant_id,
        browser.joined.participant_id
    );
    assert!(seen.sequence > native.joined_seq);

    // Signaling both ways across the nodes.
    publish(&b, &browser, offer(&native_id, "browser offer")).await;
    let got = next(&mut native.events).await;
    let Some(Event::Signal(signal)) = got.event else {
        panic!("{got:?}")
    };
    assert_eq!(signal.from_participant_id, browser.joined.participant_id);
    let to = browser.joined.participant_id.clone();
    native
        .tx
        .send(event("a", answer(&to, "native answer")))
        .await
        .unwrap();
    native.tx.send(event("i", ice(&to))).await.unwrap();
    let answer_seen = next(&mut browser.events).await;
    let ice_seen = next(&mut browser.events).await;
    assert!(
        matches!(&answer_seen.event, Some(Event::Signal(s)) if matches!(s.payload, Some(pb::incoming_signal::Payload::Answer(_)))),
        "{answer_seen:?}"
    );
    assert!(matches!(ice_seen.event, Some(Event::Signal(_))));
    assert!(ice_seen.sequence > answer_seen.sequence);

    // Media state reaches the other node, and a late joiner sees it.
    publish(
        &b,
        &browser,
        client_event::Event::MediaState(pb::MediaState {
            audio_enabled: true,
            ..Default::default()
        }),
    )
    .await;
    let media = next(&mut native.events).await;
    assert!(
        matches!(media.event, Some(Event::MediaState(_))),
        "{media:?}"
    );

    // Leaving is seen on the other node.
    native
        .tx
        .send(event("l", client_event::Event::Leave(pb::LeaveRoom {})))
        .await
        .unwrap();
    let left = next(&mut browser.events).await;
    let Some(Event::ParticipantLeft(left)) = left.event else {
        panic!("{left:?}")
    };
    assert_eq!(left.participant_id, native_id);
    assert_eq!(left.reason, pb::ParticipantLeftReason::Left as i32);
}

#[tokio::test]
async fn three_nodes_see_one_order_of_chat_and_presence() {
    let redis = Redis::start();
    let nodes = nodes_with(&redis, 3, &[("UNIO_RESUME_GRACE", "1s")]).await;
    let (meeting, host, bob, carol) =
        crate::rooms::setup(&nodes[0], pb::JoinPolicy::InvitedOnly).await;
    let mut host_room = connect(&nodes[0], &host, &meeting).await;
    let mut bob_room = connect(&nodes[1], &bob, &meeting).await;
    let mut carol_room = subscribe(&nodes[2], &carol, &meeting).await;
    assert_eq!(carol_room.joined.participants.len(), 3);

    // Everyone talks at once, from three nodes and both transports.
    const EACH: usize = 5;
    for i in 0..EACH {
        for (room, who) in [(&host_room, "host"), (&bob_room, "bob")] {
            room.tx
                .send(event("c", chat(&format!("{who} {i}"))))
                .await
                .unwrap();
        }
        publish(&nodes[2], &carol_room, chat(&format!("carol {i}"))).await;
    }
    let seen: Vec<Vec<(u64, String)>> = vec![
        chats(&mut host_room.events, 3 * EACH).await,
        chats(&mut bob_room.events, 3 * EACH).await,
        chats(&mut carol_room.events, 3 * EACH).await,
    ];
    assert_eq!(seen[0], seen[1], "one order on every node");
    assert_eq!(seen[0], seen[2], "one order on every node");
    assert!(seen[0].windows(2).all(|w| w[0].0 < w[1].0));
    for who in ["host", "bob", "carol"] {
        let mine: Vec<&str> = seen[0]
            .iter()
            .filter(|(_, text)| text.starts_with(who))
            .map(|(_, text)| text.as_str())
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("{who} {i}")).collect();
        assert_eq!(mine, sent, "each sender's messages in the order sent");
    }

    // A participant gone from one node is gone for all (after its
    // grace, a second here).
    drop(bob_room);
    let left = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Event::ParticipantLeft(left)) = next(&mut carol_room.events).await.event {
                return left;
            }
        }
    })
    .await
    .expect("bob's departure reaches carol");
    assert_eq!(left.reason, pb::ParticipantLeftReason::Disconnected as i32);

    // A unary SendMessage on a node with nobody in the room (bob's, now)
    // still reaches the room on the others.
    nodes[1]
        .chat()
        .send_message(authed(
            pb::SendMessageRequest {
                meeting_id: meeting.clone(),
                text: "from the API".into(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    for events in [&mut host_room.events, &mut carol_room.events] {
        assert_eq!(chats(events, 1).await[0].1, "from the API");
    }
}

/// A node in a process of its own (the release's binary, built for the
/// tests), so that it can die by SIGKILL.
struct Process {
    child: std::process::Child,
    channel: tonic::transport::Channel,
}

impl Process {
    /// Starts `unio` on the database, data dir, secret and Redis of `a`.
    async fn start(a: &TestApp, redis: &Redis) -> Self {
        let database = a
            .vars
            .get("UNIO_DATABASE_URL")
            .cloned()
            .unwrap_or_else(|| format!("sqlite://{}", a.data_path().join("unio.db").display()));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_unio"))
            .env_clear()
            .envs([
                ("UNIO_ADDR", "127.0.0.1:0"),
                ("UNIO_ADMIN_ADDR", ""),
                ("UNIO_DATABASE_URL", &database),
                ("UNIO_DATA_DIR", &a.data_path().display().to_string()),
                ("UNIO_JWT_SECRET", &a.secret),
                ("UNIO_REDIS_URL", &redis.url()),
                ("UNIO_SMTP_URL", &format!("smtp://{}", a.mail.addr)),
                ("UNIO_MAIL_FROM", "unio@example.com"),
                ("UNIO_LOG", "warn,unio::server=info"),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the unio binary");
        let stdout = child.stdout.take().expect("piped");
        let Some(addr) = crate::helpers::listening_addr(stdout).await else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not say where it listens");
        };
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        crate::helpers::eventually("the process serves", || {
            let mut health = health.clone();
            async move {
                health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: unio::server::BUS_HEALTH.into(),
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().status == 1)
            }
        })
        .await;
        Self { child, channel }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn a_killed_nodes_participants_time_out_everywhere_within_15_s() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, _) = setup(&a).await;
    let mut process = Process::start(&a, &redis).await;
    let mut host_room = connect(&a, &host, &meeting).await;

    // Bob joins on the process's node.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(event("join", crate::rooms::join(&meeting)))
        .await
        .unwrap();
    let mut bob_room = pb::room_service_client::RoomServiceClient::new(process.channel.clone())
        .connect(authed(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            &bob,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(Event::Joined(bob_joined)) = next(&mut bob_room).await.event else {
        panic!("bob joins on the process")
    };
    let seen = next(&mut host_room.events).await;
    assert!(
        matches!(seen.event, Some(Event::ParticipantJoined(_))),
        "{seen:?}"
    );

    process.kill();
    let killed = std::time::Instant::now();
    let left = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = host_room.events.message().await.unwrap() {
            if let Some(Event::ParticipantLeft(left)) = event.event {
                return left;
            }
        }
        panic!("the host's stream ended")
    })
    .await
    .expect("the room hears of bob within 15 s");
    assert_eq!(left.participant_id, bob_joined.participant_id);
    assert_eq!(left.reason, pb::ParticipantLeftReason::TimedOut as i32);
    eprintln!("reported after {:?}", killed.elapsed());
    drop(tx);

    // A node joining the room later does not list him.
    let view = subscribe(&b, &host, &meeting).await;
    assert!(!ids(&view.joined).contains(&bob_joined.participant_id.as_str()));
}

/// The first event `pick` picks on `events` within `within`, skipping
/// what else comes (presence said again after a Redis restart,
/// heartbeats).
async fn hears(
    events: &mut Streaming<pb::ServerEvent>,
    within: Duration,
    pick: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(within, async {
        loop {
            let e = events.message().await.unwrap().expect("open");
            if let Some(event) = e.event.filter(&pick) {
                return event;
            }
        }
    })
    .await
    .expect("the event in time")
}

/// The next signal on `events` (within 10 s).
async fn next_signal(events: &mut Streaming<pb::ServerEvent>) -> pb::IncomingSignal {
    let signal = hears(events, Duration::from_secs(10), |e| {
        matches!(e, Event::Signal(_))
    });
    match signal.await {
        Event::Signal(signal) => signal,
        _ => unreachable!("picked"),
    }
}

/// `participant_id`'s `participant_left` on `events`, within `within`.
async fn hears_leave(
    events: &mut Streaming<pb::ServerEvent>,
    participant_id: &str,
    within: Duration,
) -> pb::ParticipantLeft {
    let left = hears(
        events,
        within,
        |e| matches!(e, Event::ParticipantLeft(l) if l.participant_id == participant_id),
    );
    match left.await {
        Event::ParticipantLeft(left) => left,
        _ => unreachable!("picked"),
    }
}

/// The participant ids `joined` lists.
fn ids(joined: &pb::Joined) -> Vec<&str> {
    joined
        .participants
        .iter()
        .map(|p| p.participant_id.as_str())
        .collect()
}

/// Waits until every node in `nodes` says its bus is `serving` (or not).
async fn bus_is(nodes: &[&TestApp], serving: bool) {
    let what = if serving {
        "the node subscribes again"
    } else {
        "the node notices Redis is gone"
    };
    for node in nodes {
        crate::helpers::eventually(what, || async {
            crate::cluster::bus_serving(node).await == serving
        })
        .await;
    }
}

/// Resumes `token`'s participant on `node` after `last`, which must fail
/// with `RESUME_FAILED`.
async fn resume_refused(node: &TestApp, user: &str, meeting: &str, token: &str, last: u64) {
    let resume = crate::rooms::resume(meeting, token, last);
    let (_tx, mut again) = crate::rooms::open(node, user, resume).await.unwrap();
    let refused = next(&mut again).await;
    assert!(
        matches!(&refused.event, Some(Event::Error(e)) if e.code == "RESUME_FAILED"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_room_lives_through_a_redis_restart() {
    let mut redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, carol) = crate::rooms::setup(&a, pb::JoinPolicy::InvitedOnly).await;
    let mut host_room = connect(&a, &host, &meeting).await;
    let mut carol_room = connect(&a, &carol, &meeting).await;
    let mut bob_room = subscribe(&b, &bob, &meeting).await;
    let (host_id, carol_id) = (
        host_room.joined.participant_id.clone(),
        carol_room.joined.participant_id.clone(),
    );
    let bob_id = bob_room.joined.participant_id.clone();

    redis.stop();
    bus_is(&[&a, &b], false).await;
    // Participants on one node keep talking to each other.
    host_room
        .tx
        .send(event("o", offer(&carol_id, "while Redis is away")))
        .await
        .unwrap();
    let got = next_signal(&mut carol_room.events).await;
    assert_eq!(got.from_participant_id, host_id);
    // What one of them missed meanwhile is in no replay: her resume fails
    // rather than pass for complete.
    let (carol_token, carol_seq) = (
        carol_room.joined.resume_token.clone(),
        carol_room.joined_seq,
    );
    drop(carol_room);
    tokio::time::sleep(Duration::from_secs(1)).await;
    host_room
        .tx
        .send(event("o2", offer(&carol_id, "while she is away")))
        .await
        .unwrap();
    crate::rooms::settle(&mut host_room).await;
    resume_refused(&a, &carol, &meeting, &carol_token, carol_seq).await;

    // Redis comes back empty; the room goes on across nodes.
    redis.spawn();
    bus_is(&[&a, &b], true).await;
    let restarted = std::time::Instant::now();
    host_room
        .tx
        .send(event("o", offer(&bob_id, "after the restart")))
        .await
        .unwrap();
    let got = next_signal(&mut bob_room.events).await;
    assert_eq!(got.from_participant_id, host_id);
    publish(&b, &bob_room, answer(&host_id, "back")).await;
    let got = next_signal(&mut host_room.events).await;
    assert_eq!(got.from_participant_id, bob_id);
    eprintln!("delivery back {:?} after the bus", restarted.elapsed());

    // Presence was said again: a newcomer sees everyone.
    let newcomer = subscribe(&b, &carol, &meeting).await;
    let mut listed: Vec<String> = newcomer
        .joined
        .participants
        .iter()
        .map(|p| p.participant_id.clone())
        .collect();
    listed.retain(|id| *id != newcomer.joined.participant_id);
    listed.sort();
    let mut expected = vec![host_id, carol_id, bob_id];
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn one_who_missed_what_a_partition_kept_from_the_log_leaves_everywhere() {
    // Redis stops answering (its data kept, as behind a partition). Carol
    // is away when the host signals her: that signal is in no replay, so
    // she cannot resume, and she leaves at once, not after her (long)
    // grace. Her leave never reached Redis: once it is back, her node
    // takes her out of the roster, and the other node hears it.
    let redis = Redis::start();
    let nodes = nodes_with(&redis, 2, &[("UNIO_RESUME_GRACE", "60s")]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (meeting, host, bob, carol) = crate::rooms::setup(a, pb::JoinPolicy::InvitedOnly).await;
    let mut host_room = connect(a, &host, &meeting).await;
    let carol_room = connect(a, &carol, &meeting).await;
    let mut bob_room = subscribe(b, &bob, &meeting).await;
    let carol_id = carol_room.joined.participant_id.clone();
    let (carol_token, carol_seq) = (
        carol_room.joined.resume_token.clone(),
        carol_room.joined_seq,
    );

    redis.signal("STOP");
    bus_is(&[a, b], false).await;
    drop(carol_room);
    tokio::time::sleep(Duration::from_secs(1)).await;
    host_room
        .tx
        .send(event("o", offer(&carol_id, "while Redis is away")))
        .await
        .unwrap();
    hears_leave(&mut host_room.events, &carol_id, Duration::from_secs(5)).await;

    redis.signal("CONT");
    bus_is(&[a, b], true).await;
    hears_leave(&mut bob_room.events, &carol_id, Duration::from_secs(10)).await;
    // Her node's participants heard it once, while Redis was away.
    while let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(500), host_room.events.message()).await
    {
        assert!(
            !matches!(&e.event, Some(Event::ParticipantLeft(l)) if l.participant_id == carol_id),
            "{e:?}"
        );
    }
    let newcomer = subscribe(b, &host, &meeting).await;
    let listed = ids(&newcomer.joined);
    assert!(!listed.contains(&carol_id.as_str()), "{listed:?}");
    // Who stayed on A stays.
    assert!(listed.contains(&host_room.joined.participant_id.as_str()));
    // Nor can she resume on the other node.
    resume_refused(b, &carol, &meeting, &carol_token, carol_seq).await;
}

#[tokio::test]
async fn the_last_to_leave_a_node_while_redis_is_down_leaves_everywhere_after() {
    // Carol, alone on A, goes while Redis is down; her grace runs out and
    // A forgets the room. Redis comes back with its data (saved before it
    // went): A still takes her out of the roster the others read.
    let mut redis = Redis::start();
    let nodes = nodes_with(&redis, 2, &[("UNIO_RESUME_GRACE", "1s")]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (meeting, host, bob, carol) = crate::rooms::setup(a, pb::JoinPolicy::InvitedOnly).await;
    let mut host_room = subscribe(b, &host, &meeting).await;
    let bob_room = subscribe(b, &bob, &meeting).await;
    let carol_room = connect(a, &carol, &meeting).await;
    let carol_id = carol_room.joined.participant_id.clone();
    hears(&mut host_room.events, Duration::from_secs(5), |e| {
        matches!(e, Event::ParticipantJoined(j) if j.participant.as_ref().is_some_and(|p| p.participant_id == carol_id))
    })
    .await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    drop(conn);
    redis.stop();
    bus_is(&[a, b], false).await;
    drop(carol_room);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.spawn();
    let left = hears_leave(&mut host_room.events, &carol_id, Duration::from_secs(15)).await;
    // Her node took her out (not the others, reaping a node taken for dead).
    assert_eq!(left.reason, pb::ParticipantLeftReason::Disconnected as i32);
    let newcomer = subscribe(b, &carol, &meeting).await;
    let listed = ids(&newcomer.joined);
    assert!(!listed.contains(&carol_id.as_str()), "{listed:?}");
    assert!(listed.contains(&bob_room.joined.participant_id.as_str()));
}

#[tokio::test]
async fn a_participant_resumes_on_another_node_with_what_it_missed() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, _) = setup(&a).await;
    let mut host_room = connect(&a, &host, &meeting).await;
    let bob_room = connect(&b, &bob, &meeting).await;
    let host_id = host_room.joined.participant_id.clone();
    let bob_id = bob_room.joined.participant_id.clone();
    let seen = next(&mut host_room.events).await;
    assert!(matches!(seen.event, Some(Event::ParticipantJoined(_))));
    let (token, last) = (bob_room.joined.resume_token.clone(), bob_room.joined_seq);

    // Bob's node loses him; the host signals him meanwhile.
    drop(bob_room);
    tokio::time::sleep(Duration::from_millis(200)).await;
    host_room
        .tx
        .send(event("o", offer(&bob_id, "while you were away")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // He comes back through the other node.
    let resume = crate::rooms::resume(&meeting, &token, last);
    let (tx, mut events) = crate::rooms::open(&a, &bob, resume).await.unwrap();
    let first = next(&mut events).await;
    let Some(Event::Joined(joined)) = first.event else {
        panic!("{first:?}")
    };
    assert!(joined.resumed);
    assert_eq!(joined.participant_id, bob_id);
    assert_eq!(first.sequence, last);
    let missed = next(&mut events).await;
    let Some(Event::Signal(signal)) = missed.event else {
        panic!("{missed:?}")
    };
    assert_eq!(signal.from_participant_id, host_id);
    assert!(missed.sequence > last);

    // The room did not see him leave, and he talks from his new node.
    tx.send(event("a", answer(&host_id, "back"))).await.unwrap();
    let got = next(&mut host_room.events).await;
    assert!(
        matches!(&got.event, Some(Event::Signal(s)) if s.from_participant_id == bob_id),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_participant_moves_back_and_forth_to_a_node_that_had_nobody_in_the_room() {
    // The node resumed on starts following the room then, and hears the
    // resume's own claim: what it did not hear before is in the log.
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, _) = setup(&a).await;
    let mut host_room = connect(&a, &host, &meeting).await;
    let bob_room = connect(&a, &bob, &meeting).await;
    let bob_id = bob_room.joined.participant_id.clone();
    // The first resume asks for everything since the room began: it gets
    // nothing from before its join (the host's arrival), on either node.
    let (token, mut last) = (bob_room.joined.resume_token.clone(), 1);
    let mut held = Some(bob_room.tx);
    drop(bob_room.events);
    for (round, node) in [&b, &a, &b, &a].into_iter().enumerate() {
        drop(held.take());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = format!("round {round}");
        host_room
            .tx
            .send(event("o", offer(&bob_id, &text)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resume = crate::rooms::resume(&meeting, &token, last);
        let (tx, mut events) = crate::rooms::open(node, &bob, resume).await.unwrap();
        let first = next(&mut events).await;
        let Some(Event::Joined(joined)) = first.event else {
            panic!("round {round}: {first:?}")
        };
        assert!(joined.resumed, "round {round}");
        let missed = next(&mut events).await;
        let Some(Event::Signal(signal)) = &missed.event else {
            panic!("round {round}: {missed:?}")
        };
        assert!(
            matches!(&signal.payload, Some(pb::incoming_signal::Payload::Offer(o)) if o.sdp == text),
            "round {round}: {signal:?}"
        );
        last = missed.sequence;
        held = Some(tx);
    }
    // Nobody saw him leave.
    while let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(300), host_room.events.message()).await
    {
        assert!(!matches!(e.event, Some(Event::ParticipantLeft(_))), "{e:?}");
    }
}

#[tokio::test]
async fn a_resume_whose_call_goes_away_during_its_claim_leaves_nobody_behind() {
    // Redis holds writes back, so the resume on B waits at its claim (its
    // reads go on); the client gives up meanwhile. The claim still goes
    // through once Redis lets it (or A's leave at the end of Bob's grace
    // comes first and the claim is refused): either way the room hears
    // Bob leave, and nobody is left that no node serves.
    let redis = Redis::start();
    let nodes = nodes_with(&redis, 2, &[("UNIO_RESUME_GRACE", "1s")]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (meeting, host, bob, _) = setup(a).await;
    let mut host_room = connect(a, &host, &meeting).await;
    let bob_room = connect(a, &bob, &meeting).await;
    let bob_id = bob_room.joined.participant_id.clone();
    let seen = next(&mut host_room.events).await;
    assert!(matches!(seen.event, Some(Event::ParticipantJoined(_))));
    let (token, last) = (bob_room.joined.resume_token.clone(), bob_room.joined_seq);

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    let resume = crate::rooms::resume(&meeting, &token, last);
    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        crate::rooms::open(b, &bob, resume),
    )
    .await;
    assert!(cancelled.is_err(), "the resume waits for its claim");
    // Bob's first stream goes too; his grace is short.
    drop(bob_room);

    let left = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = host_room.events.message().await.unwrap().expect("open");
            if let Some(Event::ParticipantLeft(left)) = e.event {
                return left;
            }
        }
    })
    .await
    .expect("the room hears Bob leave");
    assert_eq!(left.participant_id, bob_id);
    // And nobody lists him any more.
    let newcomer = connect(b, &host, &meeting).await;
    assert!(!ids(&newcomer.joined).contains(&bob_id.as_str()));
}

#[tokio::test]
async fn a_publish_reaches_its_session_on_another_node() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, _) = setup(&a).await;
    let mut native = connect(&a, &host, &meeting).await;
    // Bob's browser subscribes on B; its Publish calls land on A.
    let mut browser = subscribe(&b, &bob, &meeting).await;
    let native_id = native.joined.participant_id.clone();
    let seen = next(&mut native.events).await;
    assert!(matches!(seen.event, Some(Event::ParticipantJoined(_))));

    // Right behind `joined`: the session's registration may still be on
    // its way, and A looks again.
    publish(&a, &browser, offer(&native_id, "via A")).await;
    let got = next(&mut native.events).await;
    let Some(Event::Signal(signal)) = got.event else {
        panic!("{got:?}")
    };
    assert_eq!(signal.from_participant_id, browser.joined.participant_id);

    // Chat Published on A is stored and reaches the room on both nodes.
    publish(&a, &browser, chat("hello via A")).await;
    for events in [&mut native.events, &mut browser.events] {
        assert_eq!(chats(events, 1).await[0].1, "hello via A");
    }

    // A refusal on B comes back as an error event on the session.
    publish(
        &a,
        &browser,
        offer("0192f0c1-7b3a-7c4e-9d2f-1a2b3c4d5e6f", "x"),
    )
    .await;
    let refused = next(&mut browser.events).await;
    let Some(Event::Error(error)) = refused.event else {
        panic!("{refused:?}")
    };
    assert_eq!(error.code, "UNKNOWN_PARTICIPANT");

    // Only its owner may publish into it, on any node.
    let status = rooms(&a)
        .publish(authed(
            pb::PublishRequest {
                session_id: browser.joined.session_id.clone(),
                event: Some(pb::ClientEvent {
                    request_id: "r".into(),
                    event: Some(offer(&native_id, "forged")),
                }),
            },
            &host,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let status = rooms(&a)
        .publish(authed(
            pb::PublishRequest {
                session_id: "0192f0c1-7b3a-7c4e-9d2f-1a2b3c4d5e6f".into(),
                event: Some(pb::ClientEvent {
                    request_id: "r".into(),
                    event: Some(offer(&native_id, "x")),
                }),
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    // A session that ended on B is not found from A.
    let ended = subscribe(&b, &bob, &meeting).await;
    let ended_id = ended.joined.session_id.clone();
    rooms(&b)
        .publish(authed(
            pb::PublishRequest {
                session_id: ended_id.clone(),
                event: Some(pb::ClientEvent {
                    request_id: "l".into(),
                    event: Some(client_event::Event::Leave(pb::LeaveRoom {})),
                }),
            },
            &bob,
        ))
        .await
        .unwrap();
    drop(ended);
    crate::helpers::eventually("the ended session is unregistered", || {
        let mut client = rooms(&a);
        let request = authed(
            pb::PublishRequest {
                session_id: ended_id.clone(),
                event: Some(pb::ClientEvent {
                    request_id: "r".into(),
                    event: Some(client_event::Event::Ping(pb::Ping {})),
                }),
            },
            &bob,
        );
        async move {
            client
                .publish(request)
                .await
                .is_err_and(|s| s.code() == tonic::Code::NotFound)
        }
    })
    .await;

    // An oversized signal is refused on A, before it takes room in the log.
    let status = rooms(&a)
        .publish(authed(
            pb::PublishRequest {
                session_id: browser.joined.session_id.clone(),
                event: Some(pb::ClientEvent {
                    request_id: "r".into(),
                    event: Some(offer(&native_id, &"v".repeat(100_000))),
                }),
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // So is a reaction off the list, naming the field.
    let reaction = |emoji: &str| {
        authed(
            pb::PublishRequest {
                session_id: browser.joined.session_id.clone(),
                event: Some(pb::ClientEvent {
                    request_id: "r".into(),
                    event: Some(client_event::Event::Reaction(pb::SendReaction {
                        emoji: emoji.into(),
                    })),
                }),
            },
            &bob,
        )
    };
    let status = rooms(&a)
        .publish(reaction(&"x".repeat(100_000)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        crate::helpers::bad_fields(&status).contains(&"event.reaction.emoji".to_owned()),
        "{status:?}"
    );
    // What goes through the log is cut to what it needs: a request id of
    // 100 kB is echoed (and kept) as 128 characters.
    rooms(&a)
        .publish(authed(
            pb::PublishRequest {
                session_id: browser.joined.session_id.clone(),
                event: Some(pb::ClientEvent {
                    request_id: "r".repeat(100_000),
                    event: Some(client_event::Event::Ping(pb::Ping {})),
                }),
            },
            &bob,
        ))
        .await
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let latest: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
        .arg(format!("unio:room:{meeting}:log"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(3)
        .query_async(&mut conn)
        .await
        .unwrap();
    for (id, fields) in latest {
        let bytes: usize = fields.iter().map(Vec::len).sum();
        assert!(bytes < 1024, "entry {id} holds {bytes} bytes");
    }
}

#[tokio::test]
async fn a_rolling_restart_drops_no_room() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis).await;
    let (meeting, host, bob, _) = setup(&a).await;
    let mut host_room = connect(&b, &host, &meeting).await;
    let mut bob_room = connect(&a, &bob, &meeting).await;
    let seen = next(&mut host_room.events).await;
    assert!(matches!(seen.event, Some(Event::ParticipantJoined(_))));
    let bob_id = bob_room.joined.participant_id.clone();
    let host_id = host_room.joined.participant_id.clone();
    let (token, last) = (bob_room.joined.resume_token.clone(), bob_room.joined_seq);

    // A stops (a deploy): bob's stream ends, and he resumes on B.
    let mut a = a.restart().await;
    let ended = crate::live::ending(&mut bob_room.events).await;
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    let resume = crate::rooms::resume(&meeting, &token, last);
    let (tx, mut events) = crate::rooms::open(&b, &bob, resume).await.unwrap();
    let first = next(&mut events).await;
    assert!(
        matches!(&first.event, Some(Event::Joined(j)) if j.resumed && j.participant_id == bob_id),
        "{first:?}"
    );
    tx.send(event("o", offer(&host_id, "after the deploy")))
        .await
        .unwrap();
    let got = next(&mut host_room.events).await;
    assert!(
        matches!(&got.event, Some(Event::Signal(s)) if s.from_participant_id == bob_id),
        "{got:?}"
    );
    // The restarted A serves the room again.
    crate::helpers::eventually("A subscribes again", || crate::cluster::bus_serving(&a)).await;
    let again = subscribe(&a, &host, &meeting).await;
    assert!(ids(&again.joined).contains(&bob_id.as_str()));
    a.stop().await;
}

#[tokio::test]
async fn the_lobby_hands_and_settings_span_nodes() {
    use crate::room_features::{admit, next_of, wait_native, waiting_room};
    let redis = Redis::start();
    let nodes = nodes_with(&redis, 3, &[]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (meeting, host, bob, _) = setup(a).await;
    let (_, carol, _) = a.user("carol@example.com").await;
    a.meetings()
        .invite_participants(authed(
            pb::InviteParticipantsRequest {
                meeting_id: meeting.clone(),
                emails: vec!["carol@example.com".into()],
            },
            &host,
        ))
        .await
        .unwrap();
    waiting_room(a, &host, &meeting, true).await;

    // The host on A; bob waits on B; the host sees him in the lobby.
    let mut host_room = connect(a, &host, &meeting).await;
    let (bob_tx, mut bob_events, waiting) = wait_native(b, &bob, &meeting).await;
    assert!(waiting.host_present, "B knows the host is on A");
    let lobby = next_of(&mut host_room.events, |e| matches!(e, Event::Lobby(_))).await;
    let Some(Event::Lobby(l)) = lobby.event else {
        unreachable!()
    };
    assert_eq!(l.participants[0].participant_id, waiting.participant_id);

    // A node with no one in the room admits through C.
    admit(c, &host, &meeting, &waiting.participant_id)
        .await
        .expect("admitted through a third node");
    let joined = next_of(&mut bob_events, |e| matches!(e, Event::Joined(_))).await;
    let Some(Event::Joined(bob_joined)) = joined.event else {
        unreachable!()
    };
    assert_eq!(bob_joined.participants.len(), 2);
    let seen = next_of(&mut host_room.events, |e| {
        matches!(e, Event::ParticipantJoined(_))
    })
    .await;
    let Some(Event::ParticipantJoined(j)) = seen.event else {
        unreachable!()
    };
    assert_eq!(
        j.participant.unwrap().participant_id,
        waiting.participant_id
    );
    let lobby = next_of(&mut host_room.events, |e| matches!(e, Event::Lobby(_))).await;
    let Some(Event::Lobby(l)) = lobby.event else {
        unreachable!()
    };
    assert!(l.participants.is_empty());

    // A hand raised on B reaches A with its time; the host lowers it on A.
    bob_tx
        .send(event(
            "h",
            client_event::Event::RaiseHand(pb::RaiseHand { raised: true }),
        ))
        .await
        .unwrap();
    let got = next_of(&mut host_room.events, |e| matches!(e, Event::Hand(_))).await;
    let Some(Event::Hand(hand)) = got.event else {
        unreachable!()
    };
    assert!(hand.raised && hand.raise_time.is_some());
    // A late joiner on C sees the hand (the roster carries it).
    let late = connect(c, &host, &meeting).await;
    let listed = late
        .joined
        .participants
        .iter()
        .find(|p| p.participant_id == bob_joined.participant_id)
        .unwrap();
    assert_eq!(listed.hand_raise_time, hand.raise_time);
    host_room
        .tx
        .send(event(
            "l",
            client_event::Event::LowerHand(pb::LowerHand {
                participant_id: bob_joined.participant_id.clone(),
            }),
        ))
        .await
        .unwrap();
    // Bob sees his own raise, then the host's lowering.
    let got = next_of(&mut bob_events, |e| matches!(e, Event::Hand(_))).await;
    assert!(matches!(got.event, Some(Event::Hand(h)) if h.raised));
    let got = next_of(&mut bob_events, |e| matches!(e, Event::Hand(_))).await;
    let Some(Event::Hand(hand)) = got.event else {
        unreachable!()
    };
    assert!(!hand.raised && hand.raise_time.is_none());

    // Carol waits on C, is denied from A, and is cut on C.
    let (_carol_tx, mut carol_events, carol_waiting) = wait_native(c, &carol, &meeting).await;
    next_of(
        &mut host_room.events,
        |e| matches!(e, Event::Lobby(l) if l.participants.len() == 1),
    )
    .await;
    rooms(a)
        .deny_participant(authed(
            pb::DenyParticipantRequest {
                meeting_id: meeting.clone(),
                participant_id: carol_waiting.participant_id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    let rest = crate::rooms::end_of(&mut carol_events)
        .await
        .expect("a clean end");
    assert!(
        rest.iter()
            .any(|e| matches!(&e.event, Some(Event::Error(err)) if err.code == "LOBBY_DENIED")),
        "{rest:?}"
    );

    // A link holder waits on C (Subscribe) and Publishes through A: its
    // pings reach its session, its chat is refused.
    let open_link = pb::Meeting {
        join_policy: pb::JoinPolicy::AnyoneWithLink as i32,
        ..Default::default()
    };
    crate::room_features::update(a, &host, &meeting, open_link, &["join_policy"])
        .await
        .unwrap();
    let (_, dave, _) = a.user("dave@example.com").await;
    let mut dave_events = rooms(c)
        .subscribe(authed(
            pb::SubscribeRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &dave,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(Event::Waiting(dave_waiting)) = next(&mut dave_events).await.event else {
        panic!("dave waits")
    };
    let through_a = |e: client_event::Event| {
        let mut client = rooms(a);
        let request = authed(
            pb::PublishRequest {
                session_id: dave_waiting.session_id.clone(),
                event: Some(event("d", e)),
            },
            &dave,
        );
        async move { client.publish(request).await }
    };
    through_a(client_event::Event::Ping(pb::Ping {}))
        .await
        .expect("a waiter's ping crosses nodes");
    next_of(&mut dave_events, |e| matches!(e, Event::Pong(_))).await;
    let refused = through_a(chat("let me in")).await;
    crate::helpers::assert_status(refused, tonic::Code::FailedPrecondition, "IN_LOBBY");

    // A waiter on C is removed through A (it has no attendance row): cut
    // and kept out.
    rooms(a)
        .remove_participant(authed(
            pb::RemoveParticipantRequest {
                meeting_id: meeting.clone(),
                participant_id: dave_waiting.participant_id.clone(),
            },
            &host,
        ))
        .await
        .expect("a remote waiter is removable");
    let end = crate::rooms::end_of(&mut dave_events).await.unwrap_err();
    assert_eq!(end.code(), tonic::Code::PermissionDenied);

    // A lock set through B reaches the room on A, and refuses joins on C.
    let locked = pb::Meeting {
        locked: true,
        ..Default::default()
    };
    crate::room_features::update(b, &host, &meeting, locked, &["locked"])
        .await
        .unwrap();
    next_of(
        &mut host_room.events,
        |e| matches!(e, Event::MeetingUpdated(m) if m.locked),
    )
    .await;
    let refused = crate::rooms::open(c, &carol, crate::rooms::join(&meeting)).await;
    crate::helpers::assert_status(refused, tonic::Code::FailedPrecondition, "MEETING_LOCKED");
    drop(late);
}

#[tokio::test]
async fn a_burst_across_nodes_arrives_whole_and_in_order() {
    let redis = Redis::start();
    let nodes = nodes_with(&redis, 2, &[("UNIO_ROOM_SIGNAL_RATE", "100000")]).await;
    let (meeting, host, bob, _) = setup(&nodes[0]).await;
    let mut native = connect(&nodes[0], &host, &meeting).await;
    let mut bob_room = connect(&nodes[1], &bob, &meeting).await;
    let to = bob_room.joined.participant_id.clone();
    // The host's node knows bob once the host hears of him.
    let seen = next(&mut native.events).await;
    assert!(
        matches!(seen.event, Some(Event::ParticipantJoined(_))),
        "{seen:?}"
    );

    // A burst of signals: while one pipeline of appends is in Redis, the
    // next ones queue, and go as runs (one script call, one message).
    const BURST: usize = 300;
    for i in 0..BURST {
        let signal = client_event::Event::Signal(pb::OutgoingSignal {
            to_participant_id: to.clone(),
            payload: Some(pb::outgoing_signal::Payload::IceCandidate(
                pb::IceCandidate {
                    candidate: "candidate:1 1 UDP 2122252543 192.0.2.1 54321 typ host".into(),
                    sdp_mid: i.to_string(),
                    sdp_mline_index: 0,
                },
            )),
        });
        native.tx.send(event("", signal)).await.unwrap();
    }
    let mut previous = 0;
    for i in 0..BURST {
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let e = bob_room.events.message().await.unwrap().expect("open");
                if matches!(e.event, Some(Event::Signal(_))) {
                    return e;
                }
            }
        })
        .await
        .expect("the burst arrives");
        let Some(Event::Signal(signal)) = got.event else {
            unreachable!()
        };
        let Some(pb::incoming_signal::Payload::IceCandidate(candidate)) = signal.payload else {
            panic!("{signal:?}")
        };
        assert_eq!(candidate.sdp_mid, i.to_string(), "in the order sent");
        if i > 0 {
            assert_eq!(got.sequence, previous + 1, "numbered without gaps");
        }
        previous = got.sequence;
    }

    // Runs were formed: the room's log holds entries of several events.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(format!("unio:room:{meeting}:log"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let runs = entries
        .iter()
        .filter(|(_, fields)| fields.get(2).is_some_and(|f| f == b"n"))
        .count();
    assert!(runs > 0, "{} entries, none a run", entries.len());
    drop(native);
}
