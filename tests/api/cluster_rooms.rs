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
        joined,
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
    let listed: Vec<&str> = browser
        .joined
        .participants
        .iter()
        .map(|p| p.participant_id.as_str())
        .collect();
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
