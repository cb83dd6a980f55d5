//! The password policy: long enough, mixed, and not the email address.

use super::{Email, ValidationError};

pub const MIN_CHARS: usize = 10;
/// Hashing cost grows with length; nobody needs more than this.
pub const MAX_CHARS: usize = 256;

/// A password that meets the policy. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Checks a new password. `email` is the account's address, which the
    /// password may not equal (ignoring case), nor its part before `@`.
    pub fn parse(raw: &str, email: Option<&Email>) -> Result<Self, ValidationError> {
        let count = raw.chars().count();
        if count < MIN_CHARS {
            return Err(ValidationError::new(format!(
                "must be at least {MIN_CHARS} characters"
            )));
        }
        if count > MAX_CHARS {
            return Err(ValidationError::new(format!(
                "must be at most {MAX_CHARS} characters"
            )));
        }
        let classes = [
            raw.chars().any(|c| c.is_lowercase()),
            raw.chars().any(|c| c.is_uppercase()),
            raw.chars().any(|c| c.is_ascii_digit()),
            raw.chars().any(|c| !c.is_alphanumeric()),
        ];
        if classes.iter().filter(|present| **present).count() < 2 {
            return Err(ValidationError::new(
                "must mix at least two of: lower-case letters, upper-case letters, digits, symbols",
            ));
        }
        if let Some(email) = email {
            let lowered = raw.to_lowercase();
            let local = email.key().split('@').next().unwrap_or_default();
            if lowered == email.key() || lowered == local {
                return Err(ValidationError::new("must not be your email address"));
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_mixed_password() {
        assert!(Password::parse("correct horse 42", None).is_ok());
    }

    #[test]
    fn refuses_short_passwords() {
        assert!(Password::parse("Ab1!Ab1!x", None).is_err());
    }

    #[test]
    fn refuses_a_single_character_class() {
        assert!(Password::parse("abcdefghijkl", None).is_err());
        assert!(Password::parse("123456789012", None).is_err());
    }

    #[test]
    fn refuses_the_email_address() {
        let email = Email::parse("Someone.Long@example.com").unwrap();
        assert!(Password::parse("someone.long@EXAMPLE.com", Some(&email)).is_err());
        assert!(Password::parse("Someone.Long", Some(&email)).is_err());
        assert!(Password::parse("Someone.Long!1", Some(&email)).is_ok());
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(Password::parse("ééééééééé1", None).is_ok());
        assert!(Password::parse("éééé1", None).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let p = Password::parse("correct horse 42", None).unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
