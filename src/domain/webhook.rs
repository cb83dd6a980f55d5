//! Webhooks (DESIGN §12): the event types, the body every delivery
//! carries, Standard Webhooks signing, and which targets are allowed.
//!
//! Signing is an HMAC-SHA256 over `id.timestamp.body` (standardwebhooks.com);
//! the `hmac` and `sha2` crates do the cryptography, the three lines of
//! framing are ours.

use std::net::IpAddr;

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::{ValidationError, time::Micros};

/// What happened, as a webhook's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    MeetingCreated,
    MeetingUpdated,
    MeetingStarted,
    MeetingEnded,
    MeetingCancelled,
    MeetingDeleted,
    ParticipantJoined,
    ParticipantLeft,
    ChatMessageSent,
    FileShared,
    CallStarted,
    CallEnded,
    InviteResponded,
    UserCreated,
}

impl EventType {
    pub const ALL: [Self; 14] = [
        Self::MeetingCreated,
        Self::MeetingUpdated,
        Self::MeetingStarted,
        Self::MeetingEnded,
        Self::MeetingCancelled,
        Self::MeetingDeleted,
        Self::ParticipantJoined,
        Self::ParticipantLeft,
        Self::ChatMessageSent,
        Self::FileShared,
        Self::CallStarted,
        Self::CallEnded,
        Self::InviteResponded,
        Self::UserCreated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MeetingCreated => "meeting.created",
            Self::MeetingUpdated => "meeting.updated",
            Self::MeetingStarted => "meeting.started",
            Self::MeetingEnded => "meeting.ended",
            Self::MeetingCancelled => "meeting.cancelled",
            Self::MeetingDeleted => "meeting.deleted",
            Self::ParticipantJoined => "participant.joined",
            Self::ParticipantLeft => "participant.left",
            Self::ChatMessageSent => "chat.message_sent",
            Self::FileShared => "file.shared",
            Self::CallStarted => "call.started",
            Self::CallEnded => "call.ended",
            Self::InviteResponded => "invite.responded",
            Self::UserCreated => "user.created",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| {
                ValidationError::new(format!(
                    "unknown event type {raw:?}; known: {}",
                    Self::ALL.map(Self::as_str).join(", ")
                ))
            })
    }
}

/// At most this many endpoints.
pub const MAX_WEBHOOKS: i64 = 20;
const MAX_URL_LEN: usize = 2_000;

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("whsec_{}", B64.encode(key))
}

/// The `webhook-signature` value of one attempt: `v1,<base64 HMAC>`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| B64.decode(k).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The JSON body: `{"type", "timestamp", "data"}`.
pub fn body(kind: EventType, at: Micros, data: serde_json::Value) -> String {
    serde_json::json!({
        "type": kind.as_str(),
        "timestamp": rfc3339(at),
        "data": data,
    })
    .to_string()
}

/// `2026-12-07T10:00:00.000Z`.
pub fn rfc3339(at: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(at)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A target URL as given: http(s), a host, no credentials, not too long;
/// with `allow_private` false, not an IP literal that is private.
pub fn parse_url(raw: &str, allow_private: bool) -> Result<url::Url, ValidationError> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_LEN {
        return Err(ValidationError::new(format!(
            "must be at most {MAX_URL_LEN} characters"
        )));
    }
    let url =
        url::Url::parse(raw).map_err(|e| ValidationError::new(format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError::new("must be an http:// or https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ValidationError::new(
            "must not carry a user name or password",
        ));
    }
    match url.host() {
        None => return Err(ValidationError::new("must name a host")),
        Some(url::Host::Ipv4(ip)) if !allow_private && !is_public(IpAddr::V4(ip)) => {
            return Err(private_target());
        }
        Some(url::Host::Ipv6(ip)) if !allow_private && !is_public(IpAddr::V6(ip)) => {
            return Err(private_target());
        }
        _ => {}
    }
    Ok(url)
}

pub fn private_target() -> ValidationError {
    ValidationError::new(
        "is a private, loopback or link-local address; webhooks may not target them \
         (unless the server runs with UNIO_WEBHOOK_ALLOW_PRIVATE=true)",
    )
}

/// Whether `ip` is on the public internet: not private, loopback,
/// link-local, shared (CGNAT), unspecified, multicast, broadcast,
/// documentation or benchmarking space, in IPv4 or IPv6 (IPv4-mapped
/// addresses are judged as IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96): judged by the IPv4 address it carries.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            let first = seg[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || seg[..6] == [0; 6] // IPv4-compatible ::a.b.c.d
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || first == 0x2002 // 6to4, which can carry any IPv4
                || first == 0x2001 && seg[1] == 0 // Teredo
                || first == 0x2001 && seg[1] == 0x0db8 // documentation
                || first == 0x0064 && seg[1] == 0xff9b && seg[2] == 1 // local-use NAT64
                || first == 0x0100 && seg[1..4] == [0, 0, 0]) // discard-only
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refuses_private_targets_unless_allowed() {
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://[fe80::1]/",
            "http://[::ffff:192.168.1.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[2001:0:1::1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
        ] {
            assert!(parse_url(url, false).is_err(), "{url}");
            assert!(parse_url(url, true).is_ok(), "{url}");
        }
        assert!(parse_url("https://hooks.example.com/unio", false).is_ok());
        assert!(parse_url("https://93.184.216.34/", false).is_ok());
        assert!(parse_url("https://[64:ff9b::5db8:d822]/", false).is_ok());
        assert!(parse_url("https://[2606:4700::1111]/", false).is_ok());
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(parse_url(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn knows_every_event_type() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()).unwrap(), t);
        }
        assert!(EventType::parse("meeting.exploded").is_err());
    }
}
