//! What a client may send into a room, checked before the room sees it:
//! the typed codes of refused events ([`EventCode`]) and the checks of
//! signals. Rate buckets live with each slot ([`super::rate`]); their
//! refusals are made here too, so every refusal reads the same.

use crate::proto::pb;

/// Why a client event was refused. The stream stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    pub code: EventCode,
    pub message: String,
}

/// Why a client event was refused: the `code` of an `error` event on the
/// stream, and what decides Publish's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventCode {
    AlreadyJoined,
    InvalidEvent,
    InvalidSignal,
    RateLimited,
    SessionClosed,
    SignalTooLarge,
    UnknownParticipant,
    /// Room chat refused by the chat path: bad text.
    InvalidChat,
    /// Room chat refused: the meeting is over.
    MeetingReadOnly,
    /// Room chat failed for another reason.
    ChatFailed,
    /// An emoji not on the allow-list.
    InvalidReaction,
    /// Only the host or a co-host may do this.
    NotAllowed,
    /// Waiting in the lobby: only `ping` and `leave` until admitted.
    InLobby,
}

impl EventCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlreadyJoined => "ALREADY_JOINED",
            Self::InvalidEvent => "INVALID_EVENT",
            Self::InvalidSignal => "INVALID_SIGNAL",
            Self::RateLimited => "RATE_LIMITED",
            Self::SessionClosed => "SESSION_CLOSED",
            Self::SignalTooLarge => "SIGNAL_TOO_LARGE",
            Self::UnknownParticipant => "UNKNOWN_PARTICIPANT",
            Self::InvalidChat => "INVALID_CHAT",
            Self::MeetingReadOnly => "MEETING_READ_ONLY",
            Self::ChatFailed => "CHAT_FAILED",
            Self::InvalidReaction => "INVALID_REACTION",
            Self::NotAllowed => "NOT_ALLOWED",
            Self::InLobby => "IN_LOBBY",
        }
    }
}

impl EventError {
    pub fn new(code: EventCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The session is gone (left, replaced, removed, or never was).
    pub fn session_closed() -> Self {
        Self::new(
            EventCode::SessionClosed,
            "this session has ended; join again",
        )
    }

    /// In a cluster: this node's queue to the room logs is full.
    pub fn busy() -> Self {
        Self::new(
            EventCode::RateLimited,
            "the room is busy; send that again in a moment",
        )
    }

    /// The slot's bucket for `what` is empty.
    pub fn rate_limited(what: &str) -> Self {
        Self::new(
            EventCode::RateLimited,
            format!("too many {what} events; slow down"),
        )
    }
}

/// The reactions a room passes on (DESIGN §10: an allow-list, so a
/// reaction is a picture, not a message).
pub const REACTIONS: [&str; 10] = ["👍", "👎", "👏", "🎉", "❤️", "😂", "😮", "🙌", "🤔", "✋"];

/// `emoji` if it is on the allow-list.
pub fn reaction(emoji: &str) -> Result<&str, EventError> {
    // The heart is also accepted without its variation selector.
    let emoji = if emoji == "❤" { "❤️" } else { emoji };
    REACTIONS
        .iter()
        .copied()
        .find(|allowed| *allowed == emoji)
        .ok_or_else(|| {
            EventError::new(
                EventCode::InvalidReaction,
                format!("reaction.emoji must be one of {}", REACTIONS.join(" ")),
            )
        })
}

/// Largest ICE candidate (candidate and sdp_mid together) accepted.
pub const MAX_CANDIDATE_BYTES: usize = 4096;

/// The payload `signal` delivers, if it carries exactly one part within
/// its size limits (`max_sdp_bytes` for an offer or answer).
pub fn signal_payload(
    signal: &pb::OutgoingSignal,
    max_sdp_bytes: usize,
) -> Result<pb::incoming_signal::Payload, EventError> {
    use pb::{incoming_signal::Payload as In, outgoing_signal::Payload as Out};
    let too_big = |what: &str, limit: usize| {
        EventError::new(
            EventCode::SignalTooLarge,
            format!("{what} is larger than {limit} bytes"),
        )
    };
    match &signal.payload {
        None => Err(EventError::new(
            EventCode::InvalidSignal,
            "signal needs an offer, an answer or an ice_candidate",
        )),
        Some(Out::Offer(sdp)) if sdp.sdp.len() > max_sdp_bytes => {
            Err(too_big("offer.sdp", max_sdp_bytes))
        }
        Some(Out::Answer(sdp)) if sdp.sdp.len() > max_sdp_bytes => {
            Err(too_big("answer.sdp", max_sdp_bytes))
        }
        Some(Out::IceCandidate(c)) if c.candidate.len() + c.sdp_mid.len() > MAX_CANDIDATE_BYTES => {
            Err(too_big("ice_candidate", MAX_CANDIDATE_BYTES))
        }
        Some(Out::Offer(sdp)) => Ok(In::Offer(sdp.clone())),
        Some(Out::Answer(sdp)) => Ok(In::Answer(sdp.clone())),
        Some(Out::IceCandidate(c)) => Ok(In::IceCandidate(c.clone())),
    }
}

/// Participant ids are UUIDs; anything much longer names nobody.
const MAX_PARTICIPANT_ID_BYTES: usize = 64;

/// What a Publish on one node sends through the room's log to the node
/// of the session it names: checked as far as it can be without the room
/// (that node checks the rest: rates, roles, who is there), and cut to
/// what it needs, since the log is every node's and keeps it for replays.
/// The `request_id` is cut to what an `error` event echoes.
pub fn forwardable(
    event: &pb::ClientEvent,
    max_sdp_bytes: usize,
) -> Result<pb::ClientEvent, EventError> {
    use pb::client_event::Event as E;
    let participant = |id: &str| {
        if id.len() > MAX_PARTICIPANT_ID_BYTES {
            Err(EventError::new(
                EventCode::UnknownParticipant,
                "no such participant in this room",
            ))
        } else {
            Ok(())
        }
    };
    match &event.event {
        Some(E::Signal(signal)) => {
            signal_payload(signal, max_sdp_bytes)?;
            participant(&signal.to_participant_id)?;
        }
        Some(E::Reaction(sent)) => {
            reaction(&sent.emoji)?;
        }
        Some(E::LowerHand(lower)) => participant(&lower.participant_id)?,
        _ => {}
    }
    Ok(pb::ClientEvent {
        request_id: echoed_request_id(&event.request_id).to_owned(),
        event: event.event.clone(),
    })
}

/// A client's `request_id` as echoed in an `error` event: at most 128
/// characters, an id rather than a payload to bounce back.
pub fn echoed_request_id(request_id: &str) -> &str {
    let end = request_id
        .char_indices()
        .nth(128)
        .map_or(request_id.len(), |(at, _)| at);
    &request_id[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::outgoing_signal::Payload as Out;

    fn signal(payload: Option<Out>) -> pb::OutgoingSignal {
        pb::OutgoingSignal {
            to_participant_id: "p".into(),
            payload,
        }
    }

    #[test]
    fn a_signal_needs_one_payload_within_its_limit() {
        let empty = signal_payload(&signal(None), 10).unwrap_err();
        assert_eq!(empty.code, EventCode::InvalidSignal);

        let sdp = |n: usize| pb::SessionDescription { sdp: "v".repeat(n) };
        assert!(signal_payload(&signal(Some(Out::Offer(sdp(10)))), 10).is_ok());
        let big = signal_payload(&signal(Some(Out::Answer(sdp(11)))), 10).unwrap_err();
        assert_eq!(big.code, EventCode::SignalTooLarge);
        assert!(big.message.contains("answer.sdp"), "{}", big.message);

        let candidate = pb::IceCandidate {
            candidate: "c".repeat(MAX_CANDIDATE_BYTES),
            sdp_mid: "0".into(),
            ..Default::default()
        };
        let big = signal_payload(&signal(Some(Out::IceCandidate(candidate))), 10).unwrap_err();
        assert_eq!(big.code, EventCode::SignalTooLarge);
    }

    #[test]
    fn only_allowed_emoji_react() {
        assert_eq!(reaction("👍").unwrap(), "👍");
        assert_eq!(reaction("❤").unwrap(), "❤️");
        for bad in ["", "x", "👍👍", "<b>", "🍆"] {
            assert_eq!(reaction(bad).unwrap_err().code, EventCode::InvalidReaction);
        }
    }

    #[test]
    fn what_is_forwarded_is_checked_and_cut() {
        use pb::client_event::Event as E;
        let event = |request_id: String, event: E| pb::ClientEvent {
            request_id,
            event: Some(event),
        };
        let ping = forwardable(&event("r".repeat(100_000), E::Ping(pb::Ping {})), 10).unwrap();
        assert_eq!(ping.request_id.len(), 128);
        assert_eq!(ping.event, Some(E::Ping(pb::Ping {})));
        let emoji = |emoji: &str| {
            E::Reaction(pb::SendReaction {
                emoji: emoji.into(),
            })
        };
        assert!(forwardable(&event(String::new(), emoji("👍")), 10).is_ok());
        let bad = forwardable(&event(String::new(), emoji(&"x".repeat(100_000))), 10);
        assert_eq!(bad.unwrap_err().code, EventCode::InvalidReaction);
        let lower = |id: String| E::LowerHand(pb::LowerHand { participant_id: id });
        assert!(forwardable(&event(String::new(), lower("p".repeat(36))), 10).is_ok());
        let bad = forwardable(&event(String::new(), lower("p".repeat(65))), 10);
        assert_eq!(bad.unwrap_err().code, EventCode::UnknownParticipant);
        let mut long = signal(Some(Out::Offer(pb::SessionDescription { sdp: "v".into() })));
        long.to_participant_id = "p".repeat(1000);
        let bad = forwardable(&event(String::new(), E::Signal(long)), 10);
        assert_eq!(bad.unwrap_err().code, EventCode::UnknownParticipant);
        let big = signal(Some(Out::Offer(pb::SessionDescription {
            sdp: "v".repeat(11),
        })));
        let bad = forwardable(&event(String::new(), E::Signal(big)), 10);
        assert_eq!(bad.unwrap_err().code, EventCode::SignalTooLarge);
    }

    #[test]
    fn echoed_request_ids_are_cut_at_128_characters() {
        assert_eq!(echoed_request_id("abc"), "abc");
        let long = "é".repeat(200);
        assert_eq!(echoed_request_id(&long).chars().count(), 128);
    }
}
