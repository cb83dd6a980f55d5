//! Account flows that issue or revoke tokens: sign-up, login, refresh,
//! logout, password change, and checking an access token on every call.

use std::{net::IpAddr, sync::Arc, time::Duration};

use super::{
    Caller,
    passwords::PasswordHasher,
    tokens::{self, IssuedAccess, TokenError, TokenKeys},
};
use crate::{
    domain::{
        AuthProvider, DisplayName, Email, Password, Role, new_id, throttle,
        time::{Micros, micros, now_micros, wait_until},
        verification,
    },
    error::AppError,
    realtime::bus::{Bus, BusEvent, Topic},
    store::{
        Db, invites,
        notifications::NotificationRecord,
        sessions::{self, NewSession, Rotation},
        throttle as throttle_store,
        users::{self, EmailTaken, NewUser, UserRecord},
        verifications::{self, NewLink, Requested, Verified},
    },
};

/// A user who just signed up or in, and notifications created on the way.
#[derive(Debug)]
pub struct SignedIn {
    pub user: UserRecord,
    pub tokens: Tokens,
    pub notices: Vec<NotificationRecord>,
    /// Signing in revoked every other session of the user (a verified
    /// identity claimed the address): their live streams must end.
    pub revoked_others: bool,
}

/// A signed access token with the refresh token that renews it.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: IssuedAccess,
    pub refresh: String,
    pub refresh_expires_at: Micros,
}

#[derive(Clone)]
pub struct Accounts {
    db: Db,
    keys: Arc<TokenKeys>,
    passwords: PasswordHasher,
    /// Base of the verification links we mail.
    public_url: Arc<str>,
    login: throttle::LoginPolicies,
    /// Where access changes are announced (DESIGN §8).
    bus: Arc<dyn Bus>,
    /// What per-call authentication reads (kept current by `bus`).
    view: Arc<super::view::AccessView>,
}

fn token_error(err: TokenError) -> AppError {
    match err {
        TokenError::Expired => AppError::unauthenticated(
            "TOKEN_EXPIRED",
            "the access token has expired; call RefreshToken for a new one",
        ),
        TokenError::Invalid => AppError::unauthenticated(
            "TOKEN_INVALID",
            "the access token is not one this server issued",
        ),
    }
}

fn revoked() -> AppError {
    AppError::unauthenticated("TOKEN_REVOKED", "the token has been revoked; sign in again")
}

fn disabled() -> AppError {
    AppError::unauthenticated(
        "ACCOUNT_DISABLED",
        "this account has been deactivated by an administrator",
    )
}

/// Whether what `state` says still lets a caller in; `token_counts` is
/// false for a stream, which lives as long as its session.
fn standing(state: &sessions::AccessState, token_counts: bool) -> Result<(), AppError> {
    if state.session_revoked || (token_counts && state.token_revoked) {
        return Err(revoked());
    }
    if !state.is_active {
        return Err(disabled());
    }
    Ok(())
}

fn invalid_credentials() -> AppError {
    AppError::unauthenticated("INVALID_CREDENTIALS", "wrong email or password")
}

impl Accounts {
    pub fn new(
        db: Db,
        keys: Arc<TokenKeys>,
        passwords: PasswordHasher,
        public_url: &str,
        login: throttle::LoginPolicies,
        bus: Arc<dyn Bus>,
        view_ttl: Duration,
    ) -> Self {
        Self {
            view: super::view::AccessView::new(db.clone(), bus.clone(), view_ttl),
            db,
            keys,
            passwords,
            public_url: public_url.into(),
            login,
            bus,
        }
    }

    /// The in-memory view of access that `authenticate` reads.
    pub fn view(&self) -> &super::view::AccessView {
        &self.view
    }

    /// Announces that the grounds of access under `topic` changed: every
    /// stream held under it re-checks (DESIGN §8).
    pub fn access_changed(&self, topic: Topic) {
        self.bus.publish(&topic, BusEvent::AccessChanged);
    }

    pub fn passwords(&self) -> &PasswordHasher {
        &self.passwords
    }

    /// Creates a password account, mails it a verification link and opens
    /// its first session. Invitations to the address wait until the link
    /// is followed (DESIGN §7).
    pub async fn sign_up(
        &self,
        email: &Email,
        password: &Password,
        display_name: &DisplayName,
    ) -> Result<SignedIn, AppError> {
        let hash = self.passwords.hash(password).await?;
        let now = now_micros();
        let user_id = new_id();
        let user = NewUser {
            id: &user_id,
            email: email.as_str(),
            email_key: email.key(),
            display_name: display_name.as_str(),
            password_hash: Some(&hash),
            role: Role::User,
            provider: AuthProvider::Password,
            now,
        };
        let session_id = new_id();
        let (refresh, refresh_hash) = tokens::new_refresh_token();
        let session = NewSession {
            id: &session_id,
            refresh_hash: &refresh_hash,
            refresh_expires_at: self.keys.refresh_expiry(now),
            now,
        };
        let (token, token_hash) = tokens::new_verification_token();
        let (subject, body) = verification::mail(&self.public_url, &token);
        let link = NewLink {
            token_hash: &token_hash,
            expires_at: now + micros(verification::TOKEN_TTL),
            to: email.as_str(),
            subject: &subject,
            body: &body,
        };
        match crate::store::accounts::create_with_session(&self.db, &user, Some(&link), &session)
            .await?
        {
            Ok(record) => {
                let access = self
                    .keys
                    .issue_access(&record.id, &session_id, record.role(), now);
                let tokens = Tokens {
                    access,
                    refresh,
                    refresh_expires_at: session.refresh_expires_at,
                };
                Ok(SignedIn {
                    user: record,
                    tokens,
                    notices: Vec::new(),
                    revoked_others: false,
                })
            }
            Err(EmailTaken) => Err(AppError::AlreadyExists {
                reason: "EMAIL_TAKEN",
                message: format!("an account with email {email} already exists; sign in instead"),
            }),
        }
    }

    /// Checks email and password. Unknown emails cost one hash like known
    /// ones and get the same answer. Failures are throttled per email at
    /// the client's address, per address and per email (`domain::throttle`):
    /// growing delays, and a guesser elsewhere does not lock the owner out.
    pub async fn login(
        &self,
        email: &Email,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<SignedIn, AppError> {
        let now = now_micros();
        let address = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let pair_key = format!("pair:{}|{address}", email.key());
        let account_key = format!("email:{}", email.key());
        let mut keys = vec![(pair_key.clone(), self.login.pair)];
        // The per-email key spares the owner's known places: a guesser
        // elsewhere must not be able to keep the owner out.
        let known =
            client.is_some() && throttle_store::is_known(&self.db, email.key(), &address).await?;
        if !known {
            keys.push((account_key.clone(), self.login.account));
        }
        let address_key = client.map(|_| (format!("addr:{address}"), self.login.address));
        keys.extend(address_key.clone());
        if let Err(retry_at) = throttle_store::claim(&self.db, &keys, now).await? {
            let wait = wait_until(retry_at, now);
            return Err(AppError::ResourceExhausted {
                reason: "TOO_MANY_LOGIN_ATTEMPTS",
                message: format!(
                    "too many failed sign-ins; try again in {} seconds",
                    wait.as_secs()
                ),
                retry_after: Some(wait),
            });
        }

        let user = users::find_by_email_key(&self.db, email.key()).await?;
        let stored = user.as_ref().and_then(|u| u.password_hash.as_deref());
        if !self.passwords.verify(stored, password).await? {
            return Err(invalid_credentials());
        }
        let Some(user) = user else {
            return Err(invalid_credentials());
        };
        if !user.is_active {
            return Err(disabled());
        }
        throttle_store::succeeded(
            &self.db,
            &[pair_key, account_key],
            address_key.as_slice(),
            client.map(|_| (email.key(), address.as_str())),
            now,
        )
        .await?;
        // Invites that raced this account's verification are bound now.
        let notices = if user.email_verified {
            let bound = invites::bind_to_user(&self.db, &user.id, email.key(), now).await?;
            // What they may see of those meetings grew.
            self.bus
                .publish(&Topic::User(user.id.clone()), BusEvent::DataChanged);
            bound
        } else {
            Vec::new()
        };
        let tokens = self.open_session(&user, now).await?;
        Ok(SignedIn {
            user,
            tokens,
            notices,
            revoked_others: false,
        })
    }

    /// Opens a new session for an already authenticated user.
    pub async fn open_session(&self, user: &UserRecord, now: Micros) -> Result<Tokens, AppError> {
        let session_id = new_id();
        let (refresh, refresh_hash) = tokens::new_refresh_token();
        let refresh_expires_at = self.keys.refresh_expiry(now);
        let session = NewSession {
            id: &session_id,
            refresh_hash: &refresh_hash,
            refresh_expires_at,
            now,
        };
        if !sessions::create(&self.db, &user.id, user.credential_epoch, &session).await? {
            // The account changed (claimed, re-passworded, deactivated)
            // between checking the credentials and now.
            return Err(AppError::unauthenticated(
                "CREDENTIALS_CHANGED",
                "the account's sign-in methods changed meanwhile; sign in again",
            ));
        }
        Ok(Tokens {
            access: self
                .keys
                .issue_access(&user.id, &session_id, user.role(), now),
            refresh,
            refresh_expires_at,
        })
    }

    /// Rotates a refresh token. Presenting one that was already rotated
    /// revokes its whole session: someone else has a copy.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, AppError> {
        let now = now_micros();
        let old_hash = tokens::hash_refresh_token(refresh_token);
        let (refresh, new_hash) = tokens::new_refresh_token();
        let refresh_expires_at = self.keys.refresh_expiry(now);
        match sessions::rotate_refresh_token(
            &self.db,
            &old_hash,
            &new_hash,
            refresh_expires_at,
            now,
        )
        .await?
        {
            Rotation::Rotated {
                user_id,
                session_id,
                role,
            } => Ok(Tokens {
                access: self.keys.issue_access(&user_id, &session_id, role, now),
                refresh,
                refresh_expires_at,
            }),
            Rotation::Unknown => Err(AppError::unauthenticated(
                "TOKEN_INVALID",
                "the refresh token is not one this server issued",
            )),
            Rotation::Reused(session_id) => {
                tracing::warn!(%session_id, "refresh token reused; its session is revoked");
                self.access_changed(Topic::Session(session_id));
                Err(AppError::unauthenticated(
                    "TOKEN_REVOKED",
                    "this refresh token was already used; every token of its session is now revoked, sign in again",
                ))
            }
            Rotation::Revoked => Err(revoked()),
            Rotation::Expired => Err(AppError::unauthenticated(
                "TOKEN_EXPIRED",
                "the refresh token has expired; sign in again",
            )),
            Rotation::UserInactive => Err(disabled()),
        }
    }

    /// Ends a session: the one `refresh_token` belongs to (which must be the
    /// caller's), or the caller's own when it is empty. The calling access
    /// token is revoked either way.
    pub async fn logout(&self, caller: &Caller, refresh_token: &str) -> Result<(), AppError> {
        let now = now_micros();
        let session_id = if refresh_token.trim().is_empty() {
            caller.session_id.clone()
        } else {
            let hash = tokens::hash_refresh_token(refresh_token);
            sessions::session_of_refresh_token(&self.db, &caller.user_id, &hash)
                .await?
                .ok_or_else(|| {
                    AppError::invalid("refresh_token", "is not a refresh token of your account")
                })?
        };
        // Revokes that session, and this access token whichever session it is.
        sessions::revoke(
            &self.db,
            &session_id,
            &caller.jti,
            caller.token_expires_at,
            "logout",
            now,
        )
        .await?;
        // The calling token is revoked too, whichever session it belongs to.
        if session_id != caller.session_id {
            self.access_changed(Topic::Session(caller.session_id.clone()));
        }
        self.access_changed(Topic::Session(session_id));
        Ok(())
    }

    /// Verifies a bearer access token and that its user and session are
    /// still in good standing.
    pub async fn authenticate(&self, bearer: &str) -> Result<Caller, AppError> {
        let claims = self.keys.verify_access(bearer).map_err(token_error)?;
        let state = self
            .view
            .access_state(&claims.sub, &claims.sid, &claims.jti)
            .await?
            .ok_or_else(revoked)?;
        standing(&state, true)?;
        Ok(Caller {
            user_id: claims.sub.clone(),
            session_id: claims.sid.clone(),
            jti: claims.jti.clone(),
            role: state.role,
            token_expires_at: claims.exp.saturating_mul(1_000_000),
        })
    }

    /// The re-check of a long-lived stream `caller` opened: its session and
    /// account still stand (the access token may have expired since — a
    /// stream lives as long as its session). Returns the caller with the
    /// role as stored now.
    pub async fn recheck(&self, caller: &Caller) -> Result<Caller, AppError> {
        let state = sessions::access_state(&self.db, &caller.user_id, &caller.session_id, "")
            .await?
            .ok_or_else(revoked)?;
        standing(&state, false)?;
        Ok(Caller {
            role: state.role,
            ..caller.clone()
        })
    }

    /// Sets a new password after checking the current one, and signs out
    /// every other session of the user.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &str,
        new_password: &Password,
    ) -> Result<(), AppError> {
        let user = users::find_by_id(&self.db, &caller.user_id)
            .await?
            .ok_or_else(revoked)?;
        // Each check costs a hash, and a stolen access token must not be a
        // way to guess the password: throttled like a login, per user.
        let key = vec![(format!("chpw:{}", user.id), self.login.pair)];
        let now = now_micros();
        if let Err(retry_at) = throttle_store::claim(&self.db, &key, now).await? {
            let wait = wait_until(retry_at, now);
            return Err(AppError::ResourceExhausted {
                reason: "TOO_MANY_PASSWORD_ATTEMPTS",
                message: format!(
                    "too many wrong current passwords; try again in {} seconds",
                    wait.as_secs()
                ),
                retry_after: Some(wait),
            });
        }
        // Accounts created through Google or Microsoft may set a first
        // password with an empty current one.
        let allowed = match user.password_hash.as_deref() {
            Some(hash) => self.passwords.verify(Some(hash), current).await?,
            None => current.is_empty(),
        };
        if !allowed {
            return Err(AppError::invalid(
                "current_password",
                "is not your current password",
            ));
        }
        throttle_store::succeeded(&self.db, &[key[0].0.clone()], &[], None, now).await?;
        let hash = self.passwords.hash(new_password).await?;
        let changed = users::set_password(
            &self.db,
            &user.id,
            &hash,
            &caller.session_id,
            user.credential_epoch,
            now_micros(),
        )
        .await?;
        if !changed {
            return Err(AppError::unauthenticated(
                "CREDENTIALS_CHANGED",
                "the account's sign-in methods changed meanwhile; sign in again",
            ));
        }
        // Every other session was revoked.
        self.access_changed(Topic::User(user.id));
        Ok(())
    }

    /// Creates an admin account or promotes an existing one (CLI bootstrap).
    pub async fn create_admin(
        &self,
        email: &Email,
        password: &Password,
    ) -> Result<(UserRecord, bool), AppError> {
        let hash = self.passwords.hash(password).await?;
        let id = new_id();
        let local = email.as_str().split('@').next().unwrap_or("admin");
        let user = NewUser {
            id: &id,
            email: email.as_str(),
            email_key: email.key(),
            display_name: local,
            password_hash: Some(&hash),
            role: Role::Admin,
            provider: AuthProvider::Password,
            now: now_micros(),
        };
        let (user, created, _notices) =
            crate::store::accounts::upsert_admin(&self.db, &user).await?;
        // Its sessions were revoked (a server in another process learns it
        // within UNIO_AUTH_CACHE_TTL).
        self.access_changed(Topic::User(user.id.clone()));
        Ok((user, created))
    }

    /// Proves the address of the account a verification link was sent
    /// to; returns the account and the notices of the invitations it
    /// collected.
    pub async fn verify_email(
        &self,
        token: &str,
    ) -> Result<(UserRecord, Vec<NotificationRecord>), AppError> {
        let hash = tokens::hash_opaque_token(token);
        match verifications::verify(&self.db, &hash, now_micros()).await? {
            Verified::Done { user, notices } => {
                // Cached copies of the row drop.
                self.access_changed(Topic::User(user.id.clone()));
                Ok((*user, notices))
            }
            Verified::Invalid => Err(AppError::FailedPrecondition {
                reason: "VERIFICATION_TOKEN_INVALID",
                message: "this verification link is unknown, already used or expired; \
                          ask for a new one with SendVerificationEmail"
                    .into(),
            }),
        }
    }

    /// Mails a new verification link to the caller's address; returns the
    /// address and when the link expires.
    pub async fn send_verification(&self, caller: &Caller) -> Result<(String, Micros), AppError> {
        let user = users::find_by_id(&self.db, &caller.user_id)
            .await?
            .ok_or_else(revoked)?;
        let now = now_micros();
        let (token, token_hash) = tokens::new_verification_token();
        let (subject, body) = verification::mail(&self.public_url, &token);
        let expires_at = now + micros(verification::TOKEN_TTL);
        let link = NewLink {
            token_hash: &token_hash,
            expires_at,
            to: &user.email,
            subject: &subject,
            body: &body,
        };
        match verifications::request(&self.db, &user.id, &link, now).await? {
            Requested::Sent => Ok((user.email, expires_at)),
            Requested::AlreadyVerified => Err(AppError::FailedPrecondition {
                reason: "EMAIL_ALREADY_VERIFIED",
                message: format!("{} is already verified", user.email),
            }),
            Requested::TooSoon(at) => {
                let wait = wait_until(at, now);
                Err(AppError::ResourceExhausted {
                    reason: "TOO_MANY_VERIFICATION_EMAILS",
                    message: format!(
                        "a verification email was sent recently; try again in {} seconds",
                        wait.as_secs()
                    ),
                    retry_after: Some(wait),
                })
            }
            Requested::UnknownUser => Err(revoked()),
            Requested::AddressFull => Err(AppError::ResourceExhausted {
                reason: "TOO_MANY_VERIFICATION_EMAILS",
                message: "this address got its verification emails for today; try tomorrow".into(),
                retry_after: Some(Duration::from_secs(3600)),
            }),
        }
    }
}
