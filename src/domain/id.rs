//! Resource ids: UUID v7 (time-ordered, so keyset paging by id follows
//! creation order) rendered as lower-case hyphenated strings.

use uuid::Uuid;

use super::ValidationError;

pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Parses an id from a request into its canonical string form.
pub fn parse_id(raw: &str) -> Result<String, ValidationError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ValidationError::new("is required"));
    }
    Uuid::try_parse(raw)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| {
            ValidationError::new("must be a UUID such as 0192f0c1-7b3a-7c4e-9d2f-1a2b3c4d5e6f")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_strings() {
        let a = new_id();
        let b = new_id();
        assert!(a < b, "{a} !< {b}");
        assert_eq!(parse_id(&a.to_uppercase()).unwrap(), a);
    }

    #[test]
    fn refuses_non_uuids() {
        assert!(parse_id("").is_err());
        assert!(parse_id("42").is_err());
        assert!(parse_id("../etc/passwd").is_err());
    }
}
