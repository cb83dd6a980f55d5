//! A native participant on `RoomService/Connect` (one bidirectional
//! stream), for trying a room from the command line and for the web app's
//! end-to-end test, where it signals with a browser page:
//!
//! ```sh
//! UNIO_ACCESS_TOKEN="$TOKEN" cargo run --example native_peer -- \
//!     --addr http://127.0.0.1:50051 --meeting "$MEETING_ID"
//! ```
//!
//! It joins, prints the room's events as JSON lines on stdout, answers each
//! SDP offer with an SDP answer of its own (every media section accepted
//! as `inactive`: it has no media stack, so no media flows, but the
//! browser's negotiation completes) and trickles one ICE candidate after
//! it. It never offers: join it before the browser. It ends when the
//! stream does (or is killed).

use std::time::Duration;

use clap::Parser;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Request, metadata::MetadataValue};
use unio::proto::pb::{
    self, client_event, incoming_signal, outgoing_signal, room_service_client::RoomServiceClient,
    server_event::Event,
};

#[derive(Parser)]
struct Args {
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(long)]
    addr: String,
    /// An access token (better from the environment: a command line is
    /// visible to every user of the machine).
    #[arg(long, env = "UNIO_ACCESS_TOKEN")]
    token: String,
    /// The meeting to join.
    #[arg(long)]
    meeting: String,
}

/// One event, as a line of JSON; a reader that went away ends the peer.
fn line(value: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// An answer accepting each media section of `offer` as inactive.
fn answer_for(offer: &str) -> String {
    let mut out =
        String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    let mids: Vec<&str> = offer
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .collect();
    if !mids.is_empty() {
        out.push_str(&format!("a=group:BUNDLE {}\r\n", mids.join(" ")));
    }
    out.push_str("a=msid-semantic: WMS\r\n");
    let mut section: Option<(String, Option<String>, Vec<String>)> = None;
    let mut sections = Vec::new();
    for l in offer.lines().map(str::trim_end) {
        if let Some(m) = l.strip_prefix("m=") {
            if let Some(s) = section.take() {
                sections.push(s);
            }
            section = Some((m.to_owned(), None, Vec::new()));
        } else if let Some((_, mid, attrs)) = section.as_mut() {
            if let Some(v) = l.strip_prefix("a=mid:") {
                *mid = Some(v.to_owned());
            } else if l.starts_with("a=rtpmap:")
                || l.starts_with("a=fmtp:")
                || l.starts_with("a=rtcp-fb:")
                || l.starts_with("a=sctp-port:")
            {
                attrs.push(l.to_owned());
            }
        }
    }
    if let Some(s) = section.take() {
        sections.push(s);
    }
    for (m, mid, attrs) in sections {
        out.push_str(&format!("m={m}\r\nc=IN IP4 0.0.0.0\r\n"));
        if !m.starts_with("application") {
            out.push_str("a=rtcp:9 IN IP4 0.0.0.0\r\n");
        }
        out.push_str(
            "a=ice-ufrag:unio\r\na=ice-pwd:unionativepeerpassword0\r\na=ice-options:trickle\r\n\
             a=fingerprint:sha-256 \
             4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3D:6E:9C:7A:0E:3F:1D:2E:4B:8A:5C:61\r\n\
             a=setup:active\r\n",
        );
        if let Some(mid) = mid {
            out.push_str(&format!("a=mid:{mid}\r\n"));
        }
        if !m.starts_with("application") {
            out.push_str("a=inactive\r\na=rtcp-mux\r\n");
        }
        for a in attrs {
            out.push_str(&a);
            out.push_str("\r\n");
        }
    }
    out
}

fn event(e: client_event::Event) -> pb::ClientEvent {
    pb::ClientEvent {
        request_id: String::new(),
        event: Some(e),
    }
}

fn signal(to: &str, payload: outgoing_signal::Payload) -> pb::ClientEvent {
    event(client_event::Event::Signal(pb::OutgoingSignal {
        to_participant_id: to.into(),
        payload: Some(payload),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // (The RPC is named Connect: the client is made from a channel.)
    let channel = tonic::transport::Endpoint::from_shared(args.addr)?
        .connect()
        .await?;
    let mut client = RoomServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(64);
    tx.send(event(client_event::Event::Join(pb::JoinRoom {
        meeting_id: args.meeting,
        ..Default::default()
    })))
    .await?;
    let mut request = Request::new(ReceiverStream::new(rx));
    let bearer: MetadataValue<_> = format!("Bearer {}", args.token).parse()?;
    request.metadata_mut().insert("authorization", bearer);
    let mut events = client.connect(request).await?.into_inner();
    let pinger = {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if tx
                    .send(event(client_event::Event::Ping(pb::Ping {})))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    while let Some(item) = events.next().await {
        let Some(e) = item?.event else { continue };
        match e {
            Event::Joined(j) => line(serde_json::json!({
                "event": "joined",
                "participant_id": j.participant_id,
                "participants": j.participants.len(),
            })),
            Event::ParticipantJoined(p) => line(serde_json::json!({
                "event": "participant_joined",
                "participant_id": p.participant.map(|p| p.participant_id).unwrap_or_default(),
            })),
            Event::Signal(s) => match s.payload {
                Some(incoming_signal::Payload::Offer(offer)) => {
                    line(serde_json::json!({"event": "offer", "from": s.from_participant_id}));
                    let answer = answer_for(&offer.sdp);
                    tx.send(signal(
                        &s.from_participant_id,
                        outgoing_signal::Payload::Answer(pb::SessionDescription { sdp: answer }),
                    ))
                    .await?;
                    tx.send(signal(
                        &s.from_participant_id,
                        outgoing_signal::Payload::IceCandidate(pb::IceCandidate {
                            candidate: "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host".into(),
                            sdp_mid: offer
                                .sdp
                                .lines()
                                .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
                                .unwrap_or("0")
                                .into(),
                            sdp_mline_index: 0,
                        }),
                    ))
                    .await?;
                    line(serde_json::json!({"event": "answered", "to": s.from_participant_id}));
                }
                Some(incoming_signal::Payload::IceCandidate(c)) => line(serde_json::json!({
                    "event": "ice_candidate",
                    "from": s.from_participant_id,
                    "candidate": c.candidate,
                })),
                Some(incoming_signal::Payload::Answer(_)) => {
                    line(serde_json::json!({"event": "answer", "from": s.from_participant_id}))
                }
                None => {}
            },
            Event::Chat(m) => line(serde_json::json!({"event": "chat", "text": m.text})),
            Event::ParticipantLeft(l) => line(serde_json::json!({
                "event": "participant_left",
                "participant_id": l.participant_id,
            })),
            Event::MeetingStatus(s) => {
                line(serde_json::json!({"event": "meeting_status", "status": s.status}))
            }
            Event::Error(err) => line(serde_json::json!({"event": "error", "code": err.code})),
            _ => {}
        }
    }
    pinger.abort();
    Ok(())
}
