//! Opaque, tamper-evident keyset page tokens (AIP-158).
//!
//! A token is the cursor (the last row's sort key) plus an HMAC over the
//! cursor and a *scope*: the RPC, its filters and the caller. A token from
//! another query, another user or a hand edit fails the HMAC and the request
//! gets INVALID_ARGUMENT. A valid token only says where to resume; every page
//! is still filtered by the caller's permissions.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::domain::ValidationError;

const TAG_LEN: usize = 16;

#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl PageTokens {
    /// Derives its own key from the server secret, so a page token can never
    /// double as anything else signed with that secret.
    pub fn new(server_secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"unio page token v1\0");
        hasher.update(server_secret);
        Self {
            key: hasher.finalize().into(),
        }
    }

    pub fn encode(&self, scope: &str, cursor: &str) -> String {
        let mut token = URL_SAFE_NO_PAD.encode(cursor);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(&self.tag(scope, cursor)[..TAG_LEN]));
        token
    }

    /// The cursor of `token`; `None` for an empty token (the first page).
    pub fn decode(&self, scope: &str, token: &str) -> Result<Option<String>, ValidationError> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            ValidationError::new("is not a page token returned by this list with the same filters")
        };
        let (cursor, tag) = token.split_once('.').ok_or_else(invalid)?;
        let cursor = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let cursor = String::from_utf8(cursor).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        // verify_truncated_left compares in constant time.
        if tag.len() != TAG_LEN
            || self
                .mac(scope, &cursor)
                .verify_truncated_left(&tag)
                .is_err()
        {
            return Err(invalid());
        }
        Ok(Some(cursor))
    }

    fn mac(&self, scope: &str, cursor: &str) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(scope.as_bytes());
        mac.update(b"\0");
        mac.update(cursor.as_bytes());
        mac
    }

    fn tag(&self, scope: &str, cursor: &str) -> Vec<u8> {
        self.mac(scope, cursor).finalize().into_bytes().to_vec()
    }
}

impl PageTokens {
    /// The cursor of a request's `page_token`, as INVALID_ARGUMENT naming
    /// `page_token` when it is not one of this list's.
    pub fn cursor(
        &self,
        scope: &str,
        token: &str,
    ) -> Result<Option<String>, crate::error::AppError> {
        self.decode(scope, token)
            .map_err(|e| crate::error::AppError::invalid("page_token", e.to_string()))
    }

    /// Trims the one extra row fetched to detect a next page (callers ask
    /// for `size + 1`) and signs a token that resumes after the last kept
    /// row; empty on the last page.
    pub fn next<T>(
        &self,
        rows: &mut Vec<T>,
        size: crate::domain::PageSize,
        scope: &str,
        cursor: impl Fn(&T) -> String,
    ) -> String {
        let size = size.get() as usize;
        if rows.len() <= size {
            return String::new();
        }
        rows.truncate(size);
        rows.last()
            .map(|last| self.encode(scope, &cursor(last)))
            .unwrap_or_default()
    }
}

/// One page of a keyset list being served: where it starts and how many
/// rows to fetch, then [`Page::finish`] for the rows to send and the next
/// page token. The one shape of every list handler.
pub struct Page<'a> {
    tokens: &'a PageTokens,
    scope: String,
    cursor: Option<String>,
    size: crate::domain::PageSize,
}

impl PageTokens {
    /// Starts a page of the list `scope` from the request's `page_token`
    /// (INVALID_ARGUMENT naming `page_token` if it is not this list's).
    pub fn page(
        &self,
        scope: String,
        token: &str,
        size: crate::domain::PageSize,
    ) -> Result<Page<'_>, crate::error::AppError> {
        let cursor = self.cursor(&scope, token)?;
        Ok(Page {
            tokens: self,
            scope,
            cursor,
            size,
        })
    }
}

impl PageTokens {
    /// Like [`PageTokens::page`] for a handler that gathers every bad field
    /// before answering: a bad `page_size` or `page_token` goes into `v`,
    /// and there is a page only when both are good.
    pub fn page_in(
        &self,
        v: &mut crate::error::Violations,
        scope: String,
        page_size: i32,
        token: &str,
    ) -> Option<Page<'_>> {
        let size = v.check("page_size", crate::domain::PageSize::parse(page_size));
        let cursor = v.check("page_token", self.decode(&scope, token));
        Some(Page {
            tokens: self,
            scope,
            cursor: cursor?,
            size: size?,
        })
    }
}

impl Page<'_> {
    /// Where the page starts; `None` on the first page.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// The cursor as the list's sort key, read by `parse`; a cursor it
    /// cannot read (a token signed for another shape) is INVALID_ARGUMENT
    /// naming `page_token`.
    pub fn key<C>(
        &self,
        parse: impl FnOnce(&str) -> Option<C>,
    ) -> Result<Option<C>, crate::error::AppError> {
        self.cursor
            .as_deref()
            .map(|cursor| {
                parse(cursor).ok_or_else(|| {
                    crate::error::AppError::invalid(
                        "page_token",
                        "is not a page token of this list",
                    )
                })
            })
            .transpose()
    }

    /// How many rows to fetch: one more than the page holds, to tell
    /// whether there is a next page.
    pub fn limit(&self) -> u32 {
        self.size.get() + 1
    }

    /// The rows to send and the token of the next page (empty on the last).
    pub fn finish<T>(self, mut rows: Vec<T>, cursor_of: impl Fn(&T) -> String) -> (Vec<T>, String) {
        let next = self
            .tokens
            .next(&mut rows, self.size, &self.scope, cursor_of);
        (rows, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_its_scope() {
        let tokens = PageTokens::new(b"secret");
        let token = tokens.encode("ListUsers|q=ada", "cursor-1");
        assert_eq!(
            tokens.decode("ListUsers|q=ada", &token).unwrap().as_deref(),
            Some("cursor-1")
        );
        assert_eq!(tokens.decode("ListUsers|q=ada", "").unwrap(), None);
    }

    #[test]
    fn refuses_other_scopes_edits_and_keys() {
        let tokens = PageTokens::new(b"secret");
        let token = tokens.encode("ListUsers|q=ada", "cursor-1");
        assert!(tokens.decode("ListUsers|q=bob", &token).is_err());
        let forged = format!(
            "{}{}",
            URL_SAFE_NO_PAD.encode("cursor-2"),
            &token[token.find('.').unwrap()..]
        );
        assert!(tokens.decode("ListUsers|q=ada", &forged).is_err());
        assert!(
            PageTokens::new(b"other")
                .decode("ListUsers|q=ada", &token)
                .is_err()
        );
        assert!(tokens.decode("ListUsers|q=ada", "not a token").is_err());
    }
}
