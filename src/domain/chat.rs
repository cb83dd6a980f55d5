//! Chat message rules.

use super::ValidationError;

pub const MAX_TEXT_CHARS: usize = 4_000;
pub const MAX_CLIENT_ID_CHARS: usize = 100;

/// Message text: trimmed, 1 to 4,000 characters, no control characters but
/// newline and tab (they would corrupt other clients' rendering and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatText(String);

impl ChatText {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(ValidationError::new("is required"));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(ValidationError::new(format!(
                "must be at most {MAX_TEXT_CHARS} characters"
            )));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(ValidationError::new(
                "must not contain control characters other than newline and tab",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The sender's idempotency key; empty means none.
pub fn parse_client_message_id(raw: &str) -> Result<Option<String>, ValidationError> {
    let id = raw.trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.chars().count() > MAX_CLIENT_ID_CHARS || id.chars().any(char::is_control) {
        return Err(ValidationError::new(format!(
            "must be at most {MAX_CLIENT_ID_CHARS} printable characters"
        )));
    }
    Ok(Some(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(ChatText::parse("  hi\n").unwrap().as_str(), "hi");
        assert!(ChatText::parse(" \n ").is_err());
        assert!(ChatText::parse(&"x".repeat(4000)).is_ok());
        assert!(ChatText::parse(&"x".repeat(4001)).is_err());
        assert!(ChatText::parse(&"é".repeat(4000)).is_ok());
    }

    #[test]
    fn only_newline_and_tab_among_controls() {
        assert!(ChatText::parse("line\nline\tcol").is_ok());
        assert!(ChatText::parse("bell\u{7}").is_err());
        assert!(ChatText::parse("nul\u{0}x").is_err());
        assert!(ChatText::parse("cr\rx").is_err());
    }

    #[test]
    fn client_ids_are_optional_and_bounded() {
        assert_eq!(parse_client_message_id("  ").unwrap(), None);
        assert_eq!(
            parse_client_message_id("m-1").unwrap().as_deref(),
            Some("m-1")
        );
        assert!(parse_client_message_id(&"x".repeat(101)).is_err());
    }
}
