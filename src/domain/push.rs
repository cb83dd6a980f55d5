//! Device push (DESIGN §12): platforms, registration tokens, and what a
//! push says on each platform.

use super::ValidationError;

/// Where a device's pushes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Fcm,
    Apns,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fcm => "fcm",
            Self::Apns => "apns",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "fcm" => Some(Self::Fcm),
            "apns" => Some(Self::Apns),
            _ => None,
        }
    }

    /// A registration token of this platform, trimmed.
    pub fn parse_token(self, raw: &str) -> Result<String, ValidationError> {
        let token = raw.trim();
        match self {
            // FCM tokens are opaque: about 160 characters today, of a
            // URL-safe alphabet with colons.
            Self::Fcm => {
                if token.is_empty() || token.len() > 4_096 {
                    return Err(ValidationError::new("must be 1 to 4,096 characters"));
                }
                if !token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
                {
                    return Err(ValidationError::new(
                        "may hold only letters, digits, '-', '_' and ':'",
                    ));
                }
                Ok(token.to_owned())
            }
            // APNs device tokens are bytes, sent as hex (32 today).
            Self::Apns => {
                if !(64..=400).contains(&token.len())
                    || token.len() % 2 != 0
                    || !token.chars().all(|c| c.is_ascii_hexdigit())
                {
                    return Err(ValidationError::new(
                        "must be the device token in hexadecimal (32 to 200 bytes)",
                    ));
                }
                Ok(token.to_ascii_lowercase())
            }
        }
    }
}

/// One push as queued: what the phone shows and what the app reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The notification kind (`incoming_call`, `meeting_started`, …).
    pub kind: String,
    pub title: String,
    pub body: String,
    pub meeting_id: Option<String>,
    pub call_id: Option<String>,
    /// Incoming calls: delivered at once, waking the phone.
    pub urgent: bool,
    /// Seconds the platform may hold the push for an offline phone; after
    /// that it is useless (a call stopped ringing).
    pub ttl_seconds: u64,
}

impl Push {
    /// FCM HTTP v1's `message` for `token`: data for the app, high
    /// priority on Android for calls.
    pub fn fcm_message(&self, token: &str) -> serde_json::Value {
        let mut data = serde_json::json!({
            "type": self.kind,
            "title": self.title,
            "body": self.body,
        });
        if let Some(id) = &self.meeting_id {
            data["meeting_id"] = id.clone().into();
        }
        if let Some(id) = &self.call_id {
            data["call_id"] = id.clone().into();
        }
        let mut message = serde_json::json!({
            "token": token,
            "data": data,
            "android": { "ttl": format!("{}s", self.ttl_seconds) },
        });
        if self.urgent {
            message["android"]["priority"] = "high".into();
        }
        serde_json::json!({ "message": message })
    }

    /// The APNs payload: an alert, and the app's keys beside `aps`.
    pub fn apns_payload(&self) -> serde_json::Value {
        let mut payload = serde_json::json!({
            "aps": { "alert": { "title": self.title, "body": self.body } },
            "type": self.kind,
        });
        if let Some(id) = &self.meeting_id {
            payload["meeting_id"] = id.clone().into();
        }
        if let Some(id) = &self.call_id {
            payload["call_id"] = id.clone().into();
        }
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_tokens() {
        assert!(Platform::Fcm.parse_token("abc:DEF-123_x").is_ok());
        assert!(Platform::Fcm.parse_token("").is_err());
        assert!(Platform::Fcm.parse_token("a b").is_err());
        assert!(Platform::Fcm.parse_token(&"a".repeat(4_097)).is_err());
        let hex = "AB".repeat(32);
        assert_eq!(Platform::Apns.parse_token(&hex).unwrap(), "ab".repeat(32));
        assert!(Platform::Apns.parse_token("abc").is_err());
        assert!(Platform::Apns.parse_token(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn calls_are_urgent_on_both_platforms() {
        let push = Push {
            kind: "incoming_call".into(),
            title: "Ada is calling".into(),
            body: "…".into(),
            meeting_id: Some("m".into()),
            call_id: Some("c".into()),
            urgent: true,
            ttl_seconds: 45,
        };
        let fcm = push.fcm_message("t");
        assert_eq!(fcm["message"]["android"]["priority"], "high");
        assert_eq!(fcm["message"]["android"]["ttl"], "45s");
        assert_eq!(fcm["message"]["data"]["call_id"], "c");
        let apns = push.apns_payload();
        assert_eq!(apns["aps"]["alert"]["title"], "Ada is calling");
        assert_eq!(apns["meeting_id"], "m");
    }
}
