//! Email addresses: trimmed, domain lower-cased, compared ignoring case.

use super::ValidationError;

/// A syntactically valid email address.
///
/// `as_str` keeps the local part's case as typed; `key` is the fully
/// lower-cased form the database uses for uniqueness and look-ups, so
/// `Ada@Example.com` and `ada@example.com` are one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    key: String,
}

const MAX_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ValidationError::new("is required"));
        }
        if raw.len() > MAX_LEN {
            return Err(ValidationError::new(format!(
                "must be at most {MAX_LEN} characters"
            )));
        }
        let Some((local, domain)) = raw.rsplit_once('@') else {
            return Err(ValidationError::new("must look like name@example.com"));
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN {
            return Err(ValidationError::new(format!(
                "the part before @ must be 1 to {MAX_LOCAL_LEN} characters"
            )));
        }
        let local_ok = local.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || "!#$%&'*+-/=?^_`{|}~.".contains(c)
                || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
        }) && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err(ValidationError::new(
                "the part before @ has a character that is not allowed",
            ));
        }
        let domain = domain.to_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(ValidationError::new(
                "the domain after @ must look like example.com",
            ));
        }
        let address = format!("{local}@{domain}");
        let key = address.to_lowercase();
        Ok(Self { address, key })
    }

    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// Lower-cased form for uniqueness and look-ups.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_whitespace_and_domain_case() {
        let email = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Ada.Lovelace@example.com");
        assert_eq!(email.key(), "ada.lovelace@example.com");
    }

    #[test]
    fn accepts_plus_addressing_and_subdomains() {
        assert!(Email::parse("a+tag@mail.example.co.uk").is_ok());
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a b@example.com",
            "a@exa mple.com",
            "a..b@example.com",
            ".a@example.com",
            "a@-example.com",
            "a@example..com",
            "a\n@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long).is_err());
    }
}
