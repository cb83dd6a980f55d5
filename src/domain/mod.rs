//! Value types that validate on construction.
//!
//! A handler turns request fields into these types first; past that point a
//! `Email` is always normalized and valid, a `Password` always meets the
//! policy, and so on. Each parse error is a [`ValidationError`] whose text
//! says what to fix; the API layer pairs it with the field name.

mod avatar;
pub mod calendar;
pub mod call;
pub mod chat;
mod display_name;
mod email;
pub mod file;
mod id;
pub mod meeting;
pub mod notification;
mod page;
mod password;
pub mod push;
pub mod recurrence;
pub mod report;
mod role;
pub mod throttle;
pub mod time;
pub mod verification;
pub mod webhook;

pub use avatar::{ACCEPTED_TYPES as AVATAR_TYPES, Avatar, AvatarError};
pub use display_name::DisplayName;
pub use email::Email;
pub use id::{new_id, parse_id};
pub use page::PageSize;
pub use password::Password;
pub use role::{AuthProvider, Role};

/// Bidirectional embeddings, overrides and isolates (U+202A–U+202E,
/// U+2066–U+2069): in a name or title they reorder what others read
/// ("invoice\u{202e}fdp.exe" shows as "invoiceexe.pdf"), so names refuse them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c as u32, 0x202A..=0x202E | 0x2066..=0x2069)
}

/// Why a value was refused, phrased as what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

impl ValidationError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
