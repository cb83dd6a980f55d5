//! Typed configuration from `UNIO_*` environment variables (DESIGN §6).
//!
//! Values are read through a lookup function so `main` can layer the
//! environment over an optional `--config FILE` and tests can build a
//! configuration from a map without touching the process environment.
//! Every bad value becomes a [`ConfigError`] naming its variable, which `main`
//! prints as one line before exiting.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

/// The one error start-up reports for configuration: which variable, and why.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

/// Which browser origins may call the gRPC-Web endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

/// Client registration of one OpenID Connect provider.
#[derive(Clone, Debug)]
pub struct OidcProviderConfig {
    pub client_id: String,
    pub client_secret: String,
    pub issuer: String,
}

/// Size and rate limits that DESIGN says live in configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_avatar_bytes: usize,
    pub max_file_bytes: u64,
    /// Sign-ups per minute per client address (each mails an address).
    pub signups_per_minute: u32,
    /// Calls that may wait for a password hash before more are shed.
    pub max_hash_queue: usize,
    /// Unauthenticated calls per second per client address (bursts of 3×).
    pub public_calls_per_second: u32,
    /// Chat messages per second per user in one meeting (bursts of 2×).
    pub chat_messages_per_second: u32,
    /// Uploads one user may run at once (streams, or chunks in flight).
    pub max_uploads_per_user: usize,
    /// Downloads one user may stream at once.
    pub max_downloads_per_user: usize,
    /// Unfinished resumable uploads one user may hold.
    pub max_open_uploads_per_user: i64,
    /// Bytes of shared files (and unfinished uploads) one user may keep.
    pub storage_quota_bytes: u64,
    /// A streaming upload that sends nothing for this long is cut.
    pub upload_idle_timeout: Duration,
    /// Invitations one user may send within a day (each may be an email).
    pub max_invites_per_day: i64,
    /// Invitations one meeting may hold.
    pub max_invites_per_meeting: i64,
    /// Every call but a client stream ends by then (DEADLINE_EXCEEDED).
    pub request_timeout: Duration,
    /// HTTP/2 streams one connection may hold open at once.
    pub max_streams_per_connection: u32,
    /// How failed sign-ins are throttled (`domain::throttle`).
    pub login: crate::domain::throttle::LoginPolicies,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// How long a SQLite write waits for the database lock before the call
    /// answers UNAVAILABLE.
    pub database_busy_timeout: Duration,
    pub redis_url: Option<String>,
    /// `None` means: generate one and keep it in `data_dir`.
    pub jwt_secret: Option<String>,
    pub public_url: String,
    pub tls: Option<TlsFiles>,
    pub cors_origins: CorsOrigins,
    pub google: Option<OidcProviderConfig>,
    pub microsoft: Option<OidcProviderConfig>,
    pub admin_addr: Option<SocketAddr>,
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    pub turn_secret: Option<String>,
    pub oauth_redirect_uris: Vec<String>,
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    /// How often the mailer looks for queued mail.
    pub mail_poll_interval: Duration,
    pub reminder_lead: Duration,
    pub log: String,
    /// Where to export traces over OTLP/gRPC; none when unset.
    pub otlp_endpoint: Option<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// How long in-flight calls may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Keep-alive period of idle notification watches.
    pub watch_keepalive: Duration,
    /// How long authentication may trust its in-memory view of a session
    /// without the bus having said anything (0: read the database always).
    pub auth_cache_ttl: Duration,
    pub rooms: RoomSettings,
    /// How long a call rings before it counts as missed.
    pub call_ring_timeout: Duration,
    pub limits: Limits,
    /// A header a trusted load balancer sets to the client's address.
    pub client_address_header: Option<http::HeaderName>,
    pub integrations: Integrations,
}

/// Outbound integrations (DESIGN §12): webhooks and device push.
#[derive(Clone, Debug)]
pub struct Integrations {
    /// Webhooks may target private, loopback and link-local addresses.
    pub webhook_allow_private: bool,
    /// One delivery attempt's limit.
    pub webhook_timeout: Duration,
    /// The first retry delay (then ×4 each time, at most 10 h).
    pub webhook_retry_min: Duration,
    /// Extra root certificates (PEM) for outbound HTTPS.
    pub outbound_ca_file: Option<PathBuf>,
    pub fcm: Option<FcmConfig>,
    pub apns: Option<ApnsConfig>,
}

/// Firebase Cloud Messaging (HTTP v1).
#[derive(Clone, Debug)]
pub struct FcmConfig {
    /// The service-account JSON file (project_id, client_email,
    /// private_key, token_uri).
    pub credentials_file: PathBuf,
    /// Base URL; `{url}/v1/projects/{project}/messages:send`.
    pub url: String,
}

/// Apple Push Notification service (token-based, HTTP/2).
#[derive(Clone, Debug)]
pub struct ApnsConfig {
    /// The .p8 auth key (an ES256 private key, PEM).
    pub key_file: PathBuf,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id.
    pub topic: String,
    /// Base URL; `{url}/3/device/{token}`.
    pub url: String,
}

/// Timings and sizes of live rooms.
#[derive(Clone, Debug)]
pub struct RoomSettings {
    /// How long a dropped participant may resume.
    pub resume_grace: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Events one participant's queue holds before it counts as behind.
    pub queue_capacity: usize,
    /// Events a room keeps for resuming participants.
    pub replay_capacity: usize,
    /// Per-session event rates (bursts of twice that): an event over them
    /// gets an `error` event, and the stream stays open.
    pub signals_per_second: u32,
    pub chats_per_second: u32,
    pub typing_per_second: u32,
    pub media_per_second: u32,
    /// Largest SDP accepted in an offer or answer.
    pub max_sdp_bytes: usize,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            resume_grace: Duration::from_secs(30),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(45),
            queue_capacity: 256,
            replay_capacity: 1024,
            signals_per_second: 20,
            chats_per_second: 5,
            typing_per_second: 5,
            media_per_second: 10,
            max_sdp_bytes: 64 * 1024,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

const GOOGLE_ISSUER: &str = "https://accounts.google.com";
const MICROSOFT_ISSUER: &str = "https://login.microsoftonline.com/common/v2.0";

impl Config {
    /// The settings clap collected (flags over environment), then `file`
    /// (KEY=VALUE lines) for keys neither sets.
    pub fn load(
        settings: &crate::cli::Settings,
        file: Option<&std::path::Path>,
    ) -> Result<Self, ConfigError> {
        let mut values: HashMap<String, String> = HashMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?;
            values.extend(parse_env_file(&text));
        }
        for (var, value) in settings.pairs() {
            if let Some(value) = value {
                values.insert(var.to_owned(), value.clone());
            }
        }
        Self::from_lookup(|key| values.get(key).cloned())
    }

    /// Builds the configuration from any key lookup (environment, file, map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |key: &str| lookup(key).map(|v| v.trim().to_owned());
        let non_empty = |key: &str| get(key).filter(|v| !v.is_empty());

        let addr = parse_addr(
            "UNIO_ADDR",
            &get("UNIO_ADDR").unwrap_or("0.0.0.0:50051".into()),
        )?;
        let data_dir = PathBuf::from(non_empty("UNIO_DATA_DIR").unwrap_or("./data".into()));
        let database_url = match non_empty("UNIO_DATABASE_URL") {
            Some(url) => {
                if !(url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
                {
                    return Err(ConfigError::new(
                        "UNIO_DATABASE_URL",
                        "must start with sqlite:, postgres:// or postgresql://",
                    ));
                }
                url
            }
            None => format!("sqlite://{}", data_dir.join("unio.db").display()),
        };
        let redis_url = non_empty("UNIO_REDIS_URL");
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::new(
                "UNIO_REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }
        let jwt_secret = non_empty("UNIO_JWT_SECRET");
        if let Some(secret) = &jwt_secret
            && secret.len() < 32
        {
            return Err(ConfigError::new(
                "UNIO_JWT_SECRET",
                "must be at least 32 bytes long",
            ));
        }
        let public_url = non_empty("UNIO_PUBLIC_URL").unwrap_or("http://localhost:50051".into());
        let public_url = parse_http_url("UNIO_PUBLIC_URL", &public_url)?
            .trim_end_matches('/')
            .to_owned();

        let tls = match (non_empty("UNIO_TLS_CERT"), non_empty("UNIO_TLS_KEY")) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "UNIO_TLS_KEY",
                    "must be set when UNIO_TLS_CERT is",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "UNIO_TLS_CERT",
                    "must be set when UNIO_TLS_KEY is",
                ));
            }
        };

        let cors_origins = match non_empty("UNIO_CORS_ORIGINS").as_deref() {
            None | Some("*") => CorsOrigins::Any,
            Some(list) => {
                let origins = split_list(list);
                for origin in &origins {
                    parse_http_url("UNIO_CORS_ORIGINS", origin)?;
                    if origin.ends_with('/') {
                        return Err(ConfigError::new(
                            "UNIO_CORS_ORIGINS",
                            format!("origin {origin:?} must not end with '/'"),
                        ));
                    }
                }
                CorsOrigins::List(origins)
            }
        };

        let google = oidc_provider(&non_empty, "GOOGLE", GOOGLE_ISSUER)?;
        let microsoft = oidc_provider(&non_empty, "MICROSOFT", MICROSOFT_ISSUER)?;

        let admin_addr = match get("UNIO_ADMIN_ADDR") {
            None => Some(parse_addr("UNIO_ADMIN_ADDR", "127.0.0.1:9090")?),
            Some(v) if v.is_empty() => None,
            Some(v) => Some(parse_addr("UNIO_ADMIN_ADDR", &v)?),
        };

        let stun_urls =
            split_list(&get("UNIO_STUN_URLS").unwrap_or("stun:stun.l.google.com:19302".into()));
        for url in &stun_urls {
            if !(url.starts_with("stun:") || url.starts_with("stuns:")) {
                return Err(ConfigError::new(
                    "UNIO_STUN_URLS",
                    format!("{url:?} must start with stun: or stuns:"),
                ));
            }
        }
        let turn_urls = split_list(&get("UNIO_TURN_URLS").unwrap_or_default());
        for url in &turn_urls {
            if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                return Err(ConfigError::new(
                    "UNIO_TURN_URLS",
                    format!("{url:?} must start with turn: or turns:"),
                ));
            }
        }
        let turn_secret = non_empty("UNIO_TURN_SECRET");
        if turn_urls.is_empty() != turn_secret.is_none() {
            return Err(ConfigError::new(
                "UNIO_TURN_SECRET",
                "UNIO_TURN_URLS and UNIO_TURN_SECRET must be set together",
            ));
        }

        let oauth_redirect_uris = match non_empty("UNIO_OAUTH_REDIRECT_URIS") {
            Some(list) => split_list(&list),
            None => vec![format!("{public_url}/oauth/callback")],
        };
        for uri in &oauth_redirect_uris {
            parse_http_url("UNIO_OAUTH_REDIRECT_URIS", uri)?;
        }

        // Plain OTLP/gRPC: a collector is a sidecar or on a private network.
        let otlp_endpoint = match non_empty("UNIO_OTLP_ENDPOINT") {
            Some(url) if url.starts_with("https://") => {
                return Err(ConfigError::new(
                    "UNIO_OTLP_ENDPOINT",
                    "must be an http:// URL (export over TLS is not supported; use a local collector)",
                ));
            }
            Some(url) => Some(parse_http_url("UNIO_OTLP_ENDPOINT", &url)?.to_owned()),
            None => None,
        };
        let smtp_url = non_empty("UNIO_SMTP_URL");
        if let Some(url) = &smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return Err(ConfigError::new(
                "UNIO_SMTP_URL",
                "must start with smtp:// or smtps://",
            ));
        }
        let mail_from = non_empty("UNIO_MAIL_FROM");
        if smtp_url.is_some() && mail_from.is_none() {
            return Err(ConfigError::new(
                "UNIO_MAIL_FROM",
                "must be set when UNIO_SMTP_URL is",
            ));
        }
        if let Some(from) = &mail_from
            && crate::domain::Email::parse(from).is_err()
        {
            return Err(ConfigError::new(
                "UNIO_MAIL_FROM",
                "must be an email address",
            ));
        }

        let duration = |var: &'static str, default: &str| {
            parse_duration(&non_empty(var).unwrap_or(default.into()))
                .map_err(|message| ConfigError::new(var, message))
        };
        let reminder_lead = duration("UNIO_REMINDER_LEAD", "10m")?;
        let mail_poll_interval = duration("UNIO_MAIL_POLL_INTERVAL", "250ms")?;
        if mail_poll_interval.is_zero() {
            return Err(ConfigError::new(
                "UNIO_MAIL_POLL_INTERVAL",
                "must be longer than zero",
            ));
        }
        let access_token_ttl = duration("UNIO_ACCESS_TOKEN_TTL", "15m")?;
        let refresh_token_ttl = duration("UNIO_REFRESH_TOKEN_TTL", "30d")?;
        let shutdown_grace = duration("UNIO_SHUTDOWN_GRACE", "10s")?;
        for (var, value) in [
            ("UNIO_ACCESS_TOKEN_TTL", access_token_ttl),
            ("UNIO_REFRESH_TOKEN_TTL", refresh_token_ttl),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(var, "must be longer than zero"));
            }
        }

        let count = |var: &'static str, default: usize| match non_empty(var) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| ConfigError::new(var, "must be a number from 1 to 1000000")),
        };
        let rate = |var: &'static str, default: u32| match non_empty(var) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(var, "must be a number from 1 to 100000 per second")
                }),
        };
        let rooms = RoomSettings {
            resume_grace: duration("UNIO_RESUME_GRACE", "30s")?,
            ping_interval: duration("UNIO_PING_INTERVAL", "15s")?,
            ping_timeout: duration("UNIO_PING_TIMEOUT", "45s")?,
            queue_capacity: count("UNIO_ROOM_QUEUE", 256)?,
            replay_capacity: count("UNIO_ROOM_REPLAY", 1024)?,
            signals_per_second: rate("UNIO_ROOM_SIGNAL_RATE", 20)?,
            chats_per_second: rate("UNIO_ROOM_CHAT_RATE", 5)?,
            typing_per_second: rate("UNIO_ROOM_TYPING_RATE", 5)?,
            media_per_second: rate("UNIO_ROOM_MEDIA_RATE", 10)?,
            max_sdp_bytes: count("UNIO_MAX_SDP_BYTES", 64 * 1024)?,
        };
        if rooms.ping_interval.is_zero() {
            return Err(ConfigError::new(
                "UNIO_PING_INTERVAL",
                "must be longer than zero",
            ));
        }
        if rooms.ping_timeout <= rooms.ping_interval {
            return Err(ConfigError::new(
                "UNIO_PING_TIMEOUT",
                "must be longer than UNIO_PING_INTERVAL",
            ));
        }

        let max_avatar_bytes = match non_empty("UNIO_MAX_AVATAR_BYTES") {
            None => 5 * 1024 * 1024,
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError::new(
                    "UNIO_MAX_AVATAR_BYTES",
                    "must be a positive number of bytes",
                )
            })?,
        };

        let webhook_allow_private = match non_empty("UNIO_WEBHOOK_ALLOW_PRIVATE").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => {
                return Err(ConfigError::new(
                    "UNIO_WEBHOOK_ALLOW_PRIVATE",
                    "must be true or false",
                ));
            }
        };
        let webhook_timeout = duration("UNIO_WEBHOOK_TIMEOUT", "10s")?;
        let webhook_retry_min = duration("UNIO_WEBHOOK_RETRY_MIN", "5s")?;
        for (var, value) in [
            ("UNIO_WEBHOOK_TIMEOUT", webhook_timeout),
            ("UNIO_WEBHOOK_RETRY_MIN", webhook_retry_min),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(var, "must be longer than zero"));
            }
        }
        let fcm = non_empty("UNIO_FCM_CREDENTIALS").map(|file| FcmConfig {
            credentials_file: PathBuf::from(file),
            url: non_empty("UNIO_FCM_URL")
                .unwrap_or("https://fcm.googleapis.com".into())
                .trim_end_matches('/')
                .to_owned(),
        });
        if let Some(fcm) = &fcm {
            parse_http_url("UNIO_FCM_URL", &fcm.url)?;
        }
        let apns = match non_empty("UNIO_APNS_KEY_FILE") {
            None => None,
            Some(file) => {
                let required = |var: &'static str| {
                    non_empty(var).ok_or_else(|| {
                        ConfigError::new(var, "must be set when UNIO_APNS_KEY_FILE is")
                    })
                };
                let apns = ApnsConfig {
                    key_file: PathBuf::from(file),
                    key_id: required("UNIO_APNS_KEY_ID")?,
                    team_id: required("UNIO_APNS_TEAM_ID")?,
                    topic: required("UNIO_APNS_TOPIC")?,
                    url: non_empty("UNIO_APNS_URL")
                        .unwrap_or("https://api.push.apple.com".into())
                        .trim_end_matches('/')
                        .to_owned(),
                };
                parse_http_url("UNIO_APNS_URL", &apns.url)?;
                Some(apns)
            }
        };
        let integrations = Integrations {
            webhook_allow_private,
            webhook_timeout,
            webhook_retry_min,
            outbound_ca_file: non_empty("UNIO_OUTBOUND_CA_FILE").map(PathBuf::from),
            fcm,
            apns,
        };

        Ok(Self {
            integrations,
            addr,
            data_dir,
            database_url,
            database_busy_timeout: duration("UNIO_DATABASE_BUSY_TIMEOUT", "10s")?,
            redis_url,
            jwt_secret,
            public_url,
            tls,
            cors_origins,
            google,
            microsoft,
            admin_addr,
            stun_urls,
            turn_urls,
            turn_secret,
            oauth_redirect_uris,
            smtp_url,
            mail_from,
            mail_poll_interval,
            reminder_lead,
            log: non_empty("UNIO_LOG").unwrap_or("info".into()),
            otlp_endpoint,
            access_token_ttl,
            refresh_token_ttl,
            shutdown_grace,
            watch_keepalive: duration("UNIO_WATCH_KEEPALIVE", "15s")?,
            auth_cache_ttl: duration("UNIO_AUTH_CACHE_TTL", "10s")?,
            rooms,
            call_ring_timeout: duration("UNIO_CALL_RING_TIMEOUT", "45s")?,
            limits: Limits {
                max_file_bytes: match non_empty("UNIO_MAX_FILE_BYTES") {
                    None => 50 * 1024 * 1024,
                    Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ConfigError::new(
                            "UNIO_MAX_FILE_BYTES",
                            "must be a positive number of bytes",
                        )
                    })?,
                },
                max_avatar_bytes,
                max_hash_queue: count("UNIO_MAX_HASH_QUEUE", 64)?,
                signups_per_minute: rate("UNIO_SIGNUP_RATE", 10)?,
                public_calls_per_second: rate("UNIO_PUBLIC_RATE", 10)?,
                chat_messages_per_second: rate("UNIO_CHAT_RATE", 5)?,
                max_uploads_per_user: count("UNIO_MAX_UPLOADS_PER_USER", 4)?,
                max_downloads_per_user: count("UNIO_MAX_DOWNLOADS_PER_USER", 8)?,
                max_open_uploads_per_user: count("UNIO_MAX_OPEN_UPLOADS", 10)? as i64,
                storage_quota_bytes: match non_empty("UNIO_STORAGE_QUOTA") {
                    None => 1 << 30,
                    Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ConfigError::new("UNIO_STORAGE_QUOTA", "must be a positive number of bytes")
                    })?,
                },
                upload_idle_timeout: duration("UNIO_UPLOAD_IDLE_TIMEOUT", "60s")?,
                max_invites_per_day: count("UNIO_MAX_INVITES_PER_DAY", 500)? as i64,
                max_invites_per_meeting: count("UNIO_MAX_INVITES_PER_MEETING", 1000)? as i64,
                request_timeout: duration("UNIO_REQUEST_TIMEOUT", "30s")?,
                max_streams_per_connection: count("UNIO_MAX_STREAMS_PER_CONNECTION", 200)? as u32,
                login: {
                    use crate::domain::throttle::{LoginPolicies, Policy};
                    let defaults = LoginPolicies::default();
                    let policy = |var: &'static str, default: Policy| match non_empty(var) {
                        None => Ok(default),
                        Some(v) => Policy::parse(&v).map_err(|m| ConfigError::new(var, m)),
                    };
                    LoginPolicies {
                        pair: policy("UNIO_LOGIN_THROTTLE_PAIR", defaults.pair)?,
                        address: policy("UNIO_LOGIN_THROTTLE_ADDRESS", defaults.address)?,
                        account: policy("UNIO_LOGIN_THROTTLE_ACCOUNT", defaults.account)?,
                    }
                },
            },
            client_address_header: match non_empty("UNIO_CLIENT_ADDRESS_HEADER") {
                None => None,
                Some(name) => Some(
                    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(
                        |_| ConfigError::new("UNIO_CLIENT_ADDRESS_HEADER", "is not a header name"),
                    )?,
                ),
            },
        })
    }
}

fn oidc_provider(
    non_empty: &impl Fn(&str) -> Option<String>,
    name: &str,
    default_issuer: &str,
) -> Result<Option<OidcProviderConfig>, ConfigError> {
    // The variable names must be 'static for ConfigError; there are two providers.
    let (id_var, secret_var, issuer_var): (&'static str, &'static str, &'static str) = match name {
        "GOOGLE" => (
            "UNIO_GOOGLE_CLIENT_ID",
            "UNIO_GOOGLE_CLIENT_SECRET",
            "UNIO_GOOGLE_ISSUER",
        ),
        _ => (
            "UNIO_MICROSOFT_CLIENT_ID",
            "UNIO_MICROSOFT_CLIENT_SECRET",
            "UNIO_MICROSOFT_ISSUER",
        ),
    };
    let issuer = non_empty(issuer_var).unwrap_or(default_issuer.into());
    parse_http_url(issuer_var, &issuer)?;
    match (non_empty(id_var), non_empty(secret_var)) {
        (Some(client_id), Some(client_secret)) => Ok(Some(OidcProviderConfig {
            client_id,
            client_secret,
            issuer: issuer.trim_end_matches('/').to_owned(),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            secret_var,
            format!("must be set when {id_var} is"),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            id_var,
            format!("must be set when {secret_var} is"),
        )),
    }
}

fn parse_addr(var: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            var,
            format!("{value:?} is not a socket address such as 0.0.0.0:50051"),
        )
    })
}

fn parse_http_url<'a>(var: &'static str, value: &'a str) -> Result<&'a str, ConfigError> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(host)
            if !host.is_empty()
                && !host.starts_with('/')
                && !value.contains(char::is_whitespace) =>
        {
            Ok(value)
        }
        _ => Err(ConfigError::new(
            var,
            format!("{value:?} is not an http:// or https:// URL"),
        )),
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses a duration with `humantime` (`90s`, `10m`, `2h`, `30d`,
/// `1h 30m`, `250ms`) or a plain number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if let Ok(parsed) = humantime::parse_duration(value) {
        return Ok(parsed);
    }
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a duration such as 30s, 10m, 2h or 7d"))?;
    let seconds = match unit {
        "" | "s" => Some(number),
        "ms" => return Ok(Duration::from_millis(number)),
        "m" => number.checked_mul(60),
        "h" => number.checked_mul(3600),
        "d" => number.checked_mul(86_400),
        _ => None,
    };
    seconds
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{value:?} is not a duration such as 30s, 10m, 2h or 7d"))
}

/// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped and
/// values may be wrapped in single or double quotes.
fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_design() {
        let c = config(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "0.0.0.0:50051");
        assert_eq!(c.database_url, "sqlite://./data/unio.db");
        assert_eq!(c.public_url, "http://localhost:50051");
        assert_eq!(c.cors_origins, CorsOrigins::Any);
        assert_eq!(c.admin_addr.unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(c.reminder_lead, Duration::from_secs(600));
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
        assert_eq!(
            c.oauth_redirect_uris,
            ["http://localhost:50051/oauth/callback"]
        );
        assert!(c.google.is_none() && c.tls.is_none());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (pairs, var) in [
            (vec![("UNIO_ADDR", "nope")], "UNIO_ADDR"),
            (
                vec![("UNIO_DATABASE_URL", "mysql://x")],
                "UNIO_DATABASE_URL",
            ),
            (vec![("UNIO_TLS_CERT", "a.pem")], "UNIO_TLS_KEY"),
            (vec![("UNIO_REMINDER_LEAD", "ten")], "UNIO_REMINDER_LEAD"),
            (vec![("UNIO_JWT_SECRET", "short")], "UNIO_JWT_SECRET"),
            (
                vec![("UNIO_GOOGLE_CLIENT_ID", "x")],
                "UNIO_GOOGLE_CLIENT_SECRET",
            ),
            (
                vec![("UNIO_CORS_ORIGINS", "example.com")],
                "UNIO_CORS_ORIGINS",
            ),
            (
                vec![("UNIO_TURN_URLS", "turn:t.example")],
                "UNIO_TURN_SECRET",
            ),
        ] {
            let err = config(&pairs).unwrap_err();
            assert_eq!(err.var, var, "{pairs:?}");
            assert!(err.to_string().starts_with(var));
        }
    }

    #[test]
    fn empty_admin_addr_turns_metrics_off() {
        assert!(
            config(&[("UNIO_ADMIN_ADDR", "")])
                .unwrap()
                .admin_addr
                .is_none()
        );
    }

    #[test]
    fn durations_parse_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn env_file_lines_are_parsed() {
        let map = parse_env_file("# c\nUNIO_ADDR=\"127.0.0.1:1\"\n\nUNIO_LOG = debug\n");
        assert_eq!(map["UNIO_ADDR"], "127.0.0.1:1");
        assert_eq!(map["UNIO_LOG"], "debug");
    }
}
