//! Display names shown to other participants.

use super::ValidationError;

pub const MAX_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Trims surrounding whitespace; 1 to 100 characters, no control
    /// characters (they break other clients' layouts and logs).
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(ValidationError::new("is required"));
        }
        if name.chars().count() > MAX_CHARS {
            return Err(ValidationError::new(format!(
                "must be at most {MAX_CHARS} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(ValidationError::new("must not contain control characters"));
        }
        if name.chars().any(super::is_bidi_control) {
            return Err(ValidationError::new(
                "must not contain bidirectional override characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_are_refused() {
        assert!(DisplayName::parse("admin\u{202e}nimda").is_err());
        assert!(DisplayName::parse("\u{2067}x").is_err());
        assert!(
            DisplayName::parse("سارا").is_ok(),
            "right-to-left text is fine"
        );
    }

    #[test]
    fn trims_and_bounds_length() {
        assert_eq!(DisplayName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"x".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"x".repeat(101)).is_err());
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn refuses_control_characters() {
        assert!(DisplayName::parse("Ada\u{0}Lovelace").is_err());
        assert!(DisplayName::parse("Ada\nLovelace").is_err());
    }
}
