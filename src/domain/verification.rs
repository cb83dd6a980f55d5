//! Email verification (DESIGN §7): the link we mail, how long it works, and
//! how often a user may ask for another.
//!
//! An address proves itself by following a link only its mailbox receives;
//! until then, nothing the address entitles (invitations, linking a
//! provider identity) reaches the account.

use std::time::Duration;

use super::time::{Micros, micros};

/// A link works this long.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// At least this long between two links to one account.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// At most this many links to one account within `TOKEN_TTL`.
pub const MAX_PER_DAY: i64 = 10;

/// The subject and text of the verification email. Nothing in it comes
/// from the requester (no display name): whoever signs up with an address
/// must not be able to write to its owner.
pub fn mail(public_url: &str, token: &str) -> (String, String) {
    let link = link(public_url, token);
    (
        "Verify your email address for UNIO".to_owned(),
        format!(
            "Hello,\n\n\
             please confirm that this address is yours by opening this link:\n\n\
             {link}\n\n\
             The link works for 24 hours, once. Invitations sent to this address \
             reach your UNIO account only after you confirm it.\n\n\
             If you did not create a UNIO account, ignore this email: nothing \
             happens unless the link is opened.\n"
        ),
    )
}

/// `<public_url>/verify?token=<token>`; tokens are URL-safe base64.
pub fn link(public_url: &str, token: &str) -> String {
    format!("{}/verify?token={token}", public_url.trim_end_matches('/'))
}

/// Links sent to one account within the last `TOKEN_TTL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentLinks {
    pub count: i64,
    pub newest: Option<Micros>,
    pub oldest: Option<Micros>,
}

/// `None` when another link may go out at `now`, else when it may.
pub fn next_allowed(recent: RecentLinks, now: Micros) -> Option<Micros> {
    let after_interval = recent.newest.map(|t| t + micros(MIN_INTERVAL));
    let after_window = (recent.count >= MAX_PER_DAY)
        .then(|| recent.oldest.map(|t| t + micros(TOKEN_TTL)))
        .flatten();
    [after_interval, after_window]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Micros = 60_000_000;

    #[test]
    fn links_point_at_the_public_url() {
        assert_eq!(
            link("https://meet.example/", "unio_ev_abc"),
            "https://meet.example/verify?token=unio_ev_abc"
        );
        let (subject, body) = mail("http://localhost:50051", "t0k");
        assert!(subject.contains("Verify"));
        assert!(body.contains("http://localhost:50051/verify?token=t0k"));
    }

    #[test]
    fn one_link_a_minute_and_ten_a_day() {
        let none = RecentLinks {
            count: 0,
            newest: None,
            oldest: None,
        };
        assert_eq!(next_allowed(none, 0), None);
        let just_sent = RecentLinks {
            count: 1,
            newest: Some(10 * MINUTE),
            oldest: Some(10 * MINUTE),
        };
        assert_eq!(next_allowed(just_sent, 10 * MINUTE), Some(11 * MINUTE));
        assert_eq!(next_allowed(just_sent, 11 * MINUTE), None);
        let ten = RecentLinks {
            count: MAX_PER_DAY,
            newest: Some(100 * MINUTE),
            oldest: Some(5 * MINUTE),
        };
        assert_eq!(
            next_allowed(ten, 200 * MINUTE),
            Some(5 * MINUTE + micros(TOKEN_TTL))
        );
    }
}
