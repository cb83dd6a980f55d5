//! The command line, on clap: `unio [serve|migrate|create-admin]`, and
//! every setting as a flag and a `UNIO_*` variable (`unio --help` lists
//! them with their defaults).
//!
//! clap only collects the raw values (flag over environment); a
//! `--config FILE` fills in what neither sets; then
//! [`Config::from_lookup`](crate::config::Config::from_lookup) parses and
//! checks them all, so a bad value stops start-up with one line naming its
//! variable, the same for a flag, a variable or a file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "unio",
    version,
    about = "gRPC-first backend for video meetings"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A file of KEY=VALUE lines (UNIO_* keys) for settings neither a flag
    /// nor the environment sets
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC / gRPC-Web server (the default)
    Serve,
    /// Apply database migrations and exit
    Migrate,
    /// Create an admin account, or promote an existing one
    CreateAdmin {
        /// The admin's email address
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// Every setting, as given on the command line or in the environment.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Settings (each also a UNIO_* environment variable)")]
pub struct Settings {
    /// listen address; port 0 picks a free port [default: 0.0.0.0:50051]
    #[arg(
        long = "addr",
        env = "UNIO_ADDR",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub addr: Option<String>,
    /// SQLite file, blobs, generated secret [default: ./data]
    #[arg(
        long = "data-dir",
        env = "UNIO_DATA_DIR",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub data_dir: Option<String>,
    /// sqlite://… or postgres://… [default: sqlite in UNIO_DATA_DIR]
    #[arg(
        long = "database-url",
        env = "UNIO_DATABASE_URL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,
    /// how long a write waits for a database lock [default: 10s]
    #[arg(
        long = "database-busy-timeout",
        env = "UNIO_DATABASE_BUSY_TIMEOUT",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub database_busy_timeout: Option<String>,
    /// redis://… for cross-node fan-out [default: none]
    #[arg(
        long = "redis-url",
        env = "UNIO_REDIS_URL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub redis_url: Option<String>,
    /// HS256 key, at least 32 bytes [default: generated once, kept in UNIO_DATA_DIR]
    #[arg(
        long = "jwt-secret",
        env = "UNIO_JWT_SECRET",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub jwt_secret: Option<String>,
    /// base of the links the server hands out [default: http://localhost:50051]
    #[arg(
        long = "public-url",
        env = "UNIO_PUBLIC_URL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub public_url: Option<String>,
    /// PEM certificate (with UNIO_TLS_KEY) [default: none]
    #[arg(
        long = "tls-cert",
        env = "UNIO_TLS_CERT",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub tls_cert: Option<String>,
    /// PEM private key (with UNIO_TLS_CERT) [default: none]
    #[arg(
        long = "tls-key",
        env = "UNIO_TLS_KEY",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub tls_key: Option<String>,
    /// allowed browser origins, comma-separated [default: *]
    #[arg(
        long = "cors-origins",
        env = "UNIO_CORS_ORIGINS",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub cors_origins: Option<String>,
    /// Google sign-in client id [default: none]
    #[arg(
        long = "google-client-id",
        env = "UNIO_GOOGLE_CLIENT_ID",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub google_client_id: Option<String>,
    /// Google sign-in client secret [default: none]
    #[arg(
        long = "google-client-secret",
        env = "UNIO_GOOGLE_CLIENT_SECRET",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub google_client_secret: Option<String>,
    /// Google's OpenID Connect issuer [default: https://accounts.google.com]
    #[arg(
        long = "google-issuer",
        env = "UNIO_GOOGLE_ISSUER",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub google_issuer: Option<String>,
    /// Microsoft sign-in client id [default: none]
    #[arg(
        long = "microsoft-client-id",
        env = "UNIO_MICROSOFT_CLIENT_ID",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub microsoft_client_id: Option<String>,
    /// Microsoft sign-in client secret [default: none]
    #[arg(
        long = "microsoft-client-secret",
        env = "UNIO_MICROSOFT_CLIENT_SECRET",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub microsoft_client_secret: Option<String>,
    /// Microsoft's OpenID Connect issuer [default: https://login.microsoftonline.com/common/v2.0]
    #[arg(
        long = "microsoft-issuer",
        env = "UNIO_MICROSOFT_ISSUER",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub microsoft_issuer: Option<String>,
    /// Prometheus /metrics address; empty turns it off [default: 127.0.0.1:9090]
    #[arg(
        long = "admin-addr",
        env = "UNIO_ADMIN_ADDR",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub admin_addr: Option<String>,
    /// ICE STUN servers, comma-separated [default: stun:stun.l.google.com:19302]
    #[arg(
        long = "stun-urls",
        env = "UNIO_STUN_URLS",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub stun_urls: Option<String>,
    /// TURN servers, comma-separated (with UNIO_TURN_SECRET) [default: none]
    #[arg(
        long = "turn-urls",
        env = "UNIO_TURN_URLS",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub turn_urls: Option<String>,
    /// TURN REST API shared secret [default: none]
    #[arg(
        long = "turn-secret",
        env = "UNIO_TURN_SECRET",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub turn_secret: Option<String>,
    /// allowed OAuth redirect URIs, comma-separated [default: UNIO_PUBLIC_URL/oauth/callback]
    #[arg(
        long = "oauth-redirect-uris",
        env = "UNIO_OAUTH_REDIRECT_URIS",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub oauth_redirect_uris: Option<String>,
    /// smtp://… or smtps://…; without it mail goes to the log [default: none]
    #[arg(
        long = "smtp-url",
        env = "UNIO_SMTP_URL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub smtp_url: Option<String>,
    /// sender address (required with UNIO_SMTP_URL) [default: none]
    #[arg(
        long = "mail-from",
        env = "UNIO_MAIL_FROM",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub mail_from: Option<String>,
    /// how often the mailer looks for queued mail [default: 250ms]
    #[arg(
        long = "mail-poll-interval",
        env = "UNIO_MAIL_POLL_INTERVAL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub mail_poll_interval: Option<String>,
    /// how long before a meeting a reminder goes out [default: 10m]
    #[arg(
        long = "reminder-lead",
        env = "UNIO_REMINDER_LEAD",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub reminder_lead: Option<String>,
    /// tracing filter, e.g. info,unio=debug [default: info]
    #[arg(
        long = "log",
        env = "UNIO_LOG",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub log: Option<String>,
    /// OpenTelemetry collector (OTLP over gRPC) to export traces to, e.g. http://127.0.0.1:4317 [default: none]
    #[arg(
        long = "otlp-endpoint",
        env = "UNIO_OTLP_ENDPOINT",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub otlp_endpoint: Option<String>,
    /// access token lifetime [default: 15m]
    #[arg(
        long = "access-token-ttl",
        env = "UNIO_ACCESS_TOKEN_TTL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub access_token_ttl: Option<String>,
    /// refresh token lifetime [default: 30d]
    #[arg(
        long = "refresh-token-ttl",
        env = "UNIO_REFRESH_TOKEN_TTL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub refresh_token_ttl: Option<String>,
    /// how long in-flight calls may run after SIGTERM [default: 10s]
    #[arg(
        long = "shutdown-grace",
        env = "UNIO_SHUTDOWN_GRACE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub shutdown_grace: Option<String>,
    /// how long a dropped room participant may resume [default: 30s]
    #[arg(
        long = "resume-grace",
        env = "UNIO_RESUME_GRACE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub resume_grace: Option<String>,
    /// heartbeat period on idle room streams [default: 15s]
    #[arg(
        long = "ping-interval",
        env = "UNIO_PING_INTERVAL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub ping_interval: Option<String>,
    /// a silent room client is dropped after this [default: 45s]
    #[arg(
        long = "ping-timeout",
        env = "UNIO_PING_TIMEOUT",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub ping_timeout: Option<String>,
    /// events one participant's queue holds [default: 256]
    #[arg(
        long = "room-queue",
        env = "UNIO_ROOM_QUEUE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub room_queue: Option<String>,
    /// events a room keeps for resuming participants [default: 1024]
    #[arg(
        long = "room-replay",
        env = "UNIO_ROOM_REPLAY",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub room_replay: Option<String>,
    /// how long a call rings before it is MISSED [default: 45s]
    #[arg(
        long = "call-ring-timeout",
        env = "UNIO_CALL_RING_TIMEOUT",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub call_ring_timeout: Option<String>,
    /// largest avatar upload [default: 5242880]
    #[arg(
        long = "max-avatar-bytes",
        env = "UNIO_MAX_AVATAR_BYTES",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_avatar_bytes: Option<String>,
    /// largest shared file [default: 52428800]
    #[arg(
        long = "max-file-bytes",
        env = "UNIO_MAX_FILE_BYTES",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_file_bytes: Option<String>,
    /// header a trusted load balancer sets to the client address [default: none: the TCP peer]
    #[arg(
        long = "client-address-header",
        env = "UNIO_CLIENT_ADDRESS_HEADER",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub client_address_header: Option<String>,
    /// unauthenticated calls per second per client address [default: 10]
    #[arg(
        long = "public-rate",
        env = "UNIO_PUBLIC_RATE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub public_rate: Option<String>,
    /// sign-ups per minute per client address [default: 10]
    #[arg(
        long = "signup-rate",
        env = "UNIO_SIGNUP_RATE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub signup_rate: Option<String>,
    /// calls that may wait for a password hash [default: 64]
    #[arg(
        long = "max-hash-queue",
        env = "UNIO_MAX_HASH_QUEUE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_hash_queue: Option<String>,
    /// chat messages per second per user and meeting [default: 5]
    #[arg(
        long = "chat-rate",
        env = "UNIO_CHAT_RATE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub chat_rate: Option<String>,
    /// uploads one user may run at once [default: 4]
    #[arg(
        long = "max-uploads-per-user",
        env = "UNIO_MAX_UPLOADS_PER_USER",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_uploads_per_user: Option<String>,
    /// downloads one user may stream at once [default: 8]
    #[arg(
        long = "max-downloads-per-user",
        env = "UNIO_MAX_DOWNLOADS_PER_USER",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_downloads_per_user: Option<String>,
    /// unfinished resumable uploads per user [default: 10]
    #[arg(
        long = "max-open-uploads",
        env = "UNIO_MAX_OPEN_UPLOADS",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_open_uploads: Option<String>,
    /// bytes of files one user may keep [default: 1073741824]
    #[arg(
        long = "storage-quota",
        env = "UNIO_STORAGE_QUOTA",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub storage_quota: Option<String>,
    /// a streaming upload idle this long is cut [default: 60s]
    #[arg(
        long = "upload-idle-timeout",
        env = "UNIO_UPLOAD_IDLE_TIMEOUT",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub upload_idle_timeout: Option<String>,
    /// invitations one meeting may hold [default: 1000]
    #[arg(
        long = "max-invites-per-meeting",
        env = "UNIO_MAX_INVITES_PER_MEETING",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_invites_per_meeting: Option<String>,
    /// invitations one user may send a day [default: 500]
    #[arg(
        long = "max-invites-per-day",
        env = "UNIO_MAX_INVITES_PER_DAY",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_invites_per_day: Option<String>,
    /// deadline of every call but uploads [default: 30s]
    #[arg(
        long = "request-timeout",
        env = "UNIO_REQUEST_TIMEOUT",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub request_timeout: Option<String>,
    /// HTTP/2 streams per connection [default: 200]
    #[arg(
        long = "max-streams-per-connection",
        env = "UNIO_MAX_STREAMS_PER_CONNECTION",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_streams_per_connection: Option<String>,
    /// failed sign-ins per email at one client address: FREE,MAX_DELAY,WINDOW [default: 5,15m,15m]
    #[arg(
        long = "login-throttle-pair",
        env = "UNIO_LOGIN_THROTTLE_PAIR",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub login_throttle_pair: Option<String>,
    /// failed sign-ins per client address, any email: FREE,MAX_DELAY,WINDOW [default: 20,15m,15m]
    #[arg(
        long = "login-throttle-address",
        env = "UNIO_LOGIN_THROTTLE_ADDRESS",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub login_throttle_address: Option<String>,
    /// failed sign-ins per email from unknown places: FREE,MAX_DELAY,WINDOW [default: 10,60s,15m]
    #[arg(
        long = "login-throttle-account",
        env = "UNIO_LOGIN_THROTTLE_ACCOUNT",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub login_throttle_account: Option<String>,
    /// keep-alive period of idle notification watches [default: 15s]
    #[arg(
        long = "watch-keepalive",
        env = "UNIO_WATCH_KEEPALIVE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub watch_keepalive: Option<String>,
    /// how long per-call auth trusts its in-memory view of a session or a meeting membership without word from the bus; 0s reads the database on every call [default: 10s]
    #[arg(
        long = "auth-cache-ttl",
        env = "UNIO_AUTH_CACHE_TTL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub auth_cache_ttl: Option<String>,
    /// signals per second per room session [default: 20]
    #[arg(
        long = "room-signal-rate",
        env = "UNIO_ROOM_SIGNAL_RATE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub room_signal_rate: Option<String>,
    /// chat messages per second per room session [default: 5]
    #[arg(
        long = "room-chat-rate",
        env = "UNIO_ROOM_CHAT_RATE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub room_chat_rate: Option<String>,
    /// typing events per second per room session [default: 5]
    #[arg(
        long = "room-typing-rate",
        env = "UNIO_ROOM_TYPING_RATE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub room_typing_rate: Option<String>,
    /// media-state events per second per room session [default: 10]
    #[arg(
        long = "room-media-rate",
        env = "UNIO_ROOM_MEDIA_RATE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub room_media_rate: Option<String>,
    /// largest SDP in an offer or answer [default: 65536]
    #[arg(
        long = "max-sdp-bytes",
        env = "UNIO_MAX_SDP_BYTES",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub max_sdp_bytes: Option<String>,
    /// let webhooks reach private, loopback and link-local addresses (true/false) [default: false]
    #[arg(
        long = "webhook-allow-private",
        env = "UNIO_WEBHOOK_ALLOW_PRIVATE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub webhook_allow_private: Option<String>,
    /// how long one webhook delivery attempt may take [default: 10s]
    #[arg(
        long = "webhook-timeout",
        env = "UNIO_WEBHOOK_TIMEOUT",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub webhook_timeout: Option<String>,
    /// the first retry delay of a failed webhook delivery; each later one is 4 times longer, up to 10h, for 24h [default: 5s]
    #[arg(
        long = "webhook-retry-min",
        env = "UNIO_WEBHOOK_RETRY_MIN",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub webhook_retry_min: Option<String>,
    /// a PEM file of extra root certificates trusted for outbound HTTPS (webhooks, FCM, APNs)
    #[arg(
        long = "outbound-ca-file",
        env = "UNIO_OUTBOUND_CA_FILE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub outbound_ca_file: Option<String>,
    /// a Firebase service-account JSON file: enables push to Android (FCM HTTP v1)
    #[arg(
        long = "fcm-credentials",
        env = "UNIO_FCM_CREDENTIALS",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub fcm_credentials: Option<String>,
    /// FCM's base URL [default: https://fcm.googleapis.com]
    #[arg(
        long = "fcm-url",
        env = "UNIO_FCM_URL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub fcm_url: Option<String>,
    /// an APNs auth key (.p8, ES256): enables push to iOS
    #[arg(
        long = "apns-key-file",
        env = "UNIO_APNS_KEY_FILE",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub apns_key_file: Option<String>,
    /// the APNs key's id
    #[arg(
        long = "apns-key-id",
        env = "UNIO_APNS_KEY_ID",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub apns_key_id: Option<String>,
    /// the Apple developer team id
    #[arg(
        long = "apns-team-id",
        env = "UNIO_APNS_TEAM_ID",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub apns_team_id: Option<String>,
    /// the app's bundle id (apns-topic)
    #[arg(
        long = "apns-topic",
        env = "UNIO_APNS_TOPIC",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub apns_topic: Option<String>,
    /// APNs' base URL [default: https://api.push.apple.com]
    #[arg(
        long = "apns-url",
        env = "UNIO_APNS_URL",
        value_name = "VALUE",
        hide_env_values = true,
        global = true
    )]
    pub apns_url: Option<String>,
}

impl Settings {
    /// `(variable, value)` of every setting.
    pub fn pairs(&self) -> [(&'static str, &Option<String>); 73] {
        [
            ("UNIO_ADDR", &self.addr),
            ("UNIO_DATA_DIR", &self.data_dir),
            ("UNIO_DATABASE_URL", &self.database_url),
            ("UNIO_DATABASE_BUSY_TIMEOUT", &self.database_busy_timeout),
            ("UNIO_REDIS_URL", &self.redis_url),
            ("UNIO_JWT_SECRET", &self.jwt_secret),
            ("UNIO_PUBLIC_URL", &self.public_url),
            ("UNIO_TLS_CERT", &self.tls_cert),
            ("UNIO_TLS_KEY", &self.tls_key),
            ("UNIO_CORS_ORIGINS", &self.cors_origins),
            ("UNIO_GOOGLE_CLIENT_ID", &self.google_client_id),
            ("UNIO_GOOGLE_CLIENT_SECRET", &self.google_client_secret),
            ("UNIO_GOOGLE_ISSUER", &self.google_issuer),
            ("UNIO_MICROSOFT_CLIENT_ID", &self.microsoft_client_id),
            (
                "UNIO_MICROSOFT_CLIENT_SECRET",
                &self.microsoft_client_secret,
            ),
            ("UNIO_MICROSOFT_ISSUER", &self.microsoft_issuer),
            ("UNIO_ADMIN_ADDR", &self.admin_addr),
            ("UNIO_STUN_URLS", &self.stun_urls),
            ("UNIO_TURN_URLS", &self.turn_urls),
            ("UNIO_TURN_SECRET", &self.turn_secret),
            ("UNIO_OAUTH_REDIRECT_URIS", &self.oauth_redirect_uris),
            ("UNIO_SMTP_URL", &self.smtp_url),
            ("UNIO_MAIL_FROM", &self.mail_from),
            ("UNIO_MAIL_POLL_INTERVAL", &self.mail_poll_interval),
            ("UNIO_REMINDER_LEAD", &self.reminder_lead),
            ("UNIO_LOG", &self.log),
            ("UNIO_OTLP_ENDPOINT", &self.otlp_endpoint),
            ("UNIO_ACCESS_TOKEN_TTL", &self.access_token_ttl),
            ("UNIO_REFRESH_TOKEN_TTL", &self.refresh_token_ttl),
            ("UNIO_SHUTDOWN_GRACE", &self.shutdown_grace),
            ("UNIO_RESUME_GRACE", &self.resume_grace),
            ("UNIO_PING_INTERVAL", &self.ping_interval),
            ("UNIO_PING_TIMEOUT", &self.ping_timeout),
            ("UNIO_ROOM_QUEUE", &self.room_queue),
            ("UNIO_ROOM_REPLAY", &self.room_replay),
            ("UNIO_CALL_RING_TIMEOUT", &self.call_ring_timeout),
            ("UNIO_MAX_AVATAR_BYTES", &self.max_avatar_bytes),
            ("UNIO_MAX_FILE_BYTES", &self.max_file_bytes),
            ("UNIO_CLIENT_ADDRESS_HEADER", &self.client_address_header),
            ("UNIO_PUBLIC_RATE", &self.public_rate),
            ("UNIO_SIGNUP_RATE", &self.signup_rate),
            ("UNIO_MAX_HASH_QUEUE", &self.max_hash_queue),
            ("UNIO_CHAT_RATE", &self.chat_rate),
            ("UNIO_MAX_UPLOADS_PER_USER", &self.max_uploads_per_user),
            ("UNIO_MAX_DOWNLOADS_PER_USER", &self.max_downloads_per_user),
            ("UNIO_MAX_OPEN_UPLOADS", &self.max_open_uploads),
            ("UNIO_STORAGE_QUOTA", &self.storage_quota),
            ("UNIO_UPLOAD_IDLE_TIMEOUT", &self.upload_idle_timeout),
            (
                "UNIO_MAX_INVITES_PER_MEETING",
                &self.max_invites_per_meeting,
            ),
            ("UNIO_MAX_INVITES_PER_DAY", &self.max_invites_per_day),
            ("UNIO_REQUEST_TIMEOUT", &self.request_timeout),
            (
                "UNIO_MAX_STREAMS_PER_CONNECTION",
                &self.max_streams_per_connection,
            ),
            ("UNIO_LOGIN_THROTTLE_PAIR", &self.login_throttle_pair),
            ("UNIO_LOGIN_THROTTLE_ADDRESS", &self.login_throttle_address),
            ("UNIO_LOGIN_THROTTLE_ACCOUNT", &self.login_throttle_account),
            ("UNIO_WATCH_KEEPALIVE", &self.watch_keepalive),
            ("UNIO_AUTH_CACHE_TTL", &self.auth_cache_ttl),
            ("UNIO_ROOM_SIGNAL_RATE", &self.room_signal_rate),
            ("UNIO_ROOM_CHAT_RATE", &self.room_chat_rate),
            ("UNIO_ROOM_TYPING_RATE", &self.room_typing_rate),
            ("UNIO_ROOM_MEDIA_RATE", &self.room_media_rate),
            ("UNIO_MAX_SDP_BYTES", &self.max_sdp_bytes),
            ("UNIO_WEBHOOK_ALLOW_PRIVATE", &self.webhook_allow_private),
            ("UNIO_WEBHOOK_TIMEOUT", &self.webhook_timeout),
            ("UNIO_WEBHOOK_RETRY_MIN", &self.webhook_retry_min),
            ("UNIO_OUTBOUND_CA_FILE", &self.outbound_ca_file),
            ("UNIO_FCM_CREDENTIALS", &self.fcm_credentials),
            ("UNIO_FCM_URL", &self.fcm_url),
            ("UNIO_APNS_KEY_FILE", &self.apns_key_file),
            ("UNIO_APNS_KEY_ID", &self.apns_key_id),
            ("UNIO_APNS_TEAM_ID", &self.apns_team_id),
            ("UNIO_APNS_TOPIC", &self.apns_topic),
            ("UNIO_APNS_URL", &self.apns_url),
        ]
    }

    /// The value of `var`, if a flag or the environment gave one.
    pub fn get(&self, var: &str) -> Option<String> {
        self.pairs()
            .into_iter()
            .find(|(name, _)| *name == var)
            .and_then(|(_, value)| value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_setting_is_a_flag_and_a_variable() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["unio", "serve", "--addr", "127.0.0.1:1"]).unwrap();
        assert_eq!(
            cli.settings.get("UNIO_ADDR").as_deref(),
            Some("127.0.0.1:1")
        );
        let help = Cli::command().render_long_help().to_string();
        for (var, _) in Settings::default().pairs() {
            assert!(help.contains(var), "{var} missing from --help");
        }
    }

    #[test]
    fn the_readme_table_lists_exactly_the_settings() {
        let readme = include_str!("../README.md");
        // A row's first cell names one or more: `UNIO_A, UNIO_B`.
        let documented: std::collections::BTreeSet<String> = readme
            .lines()
            .filter(|line| line.starts_with("| UNIO_"))
            .filter_map(|line| line.split('|').nth(1))
            .flat_map(|cell| cell.split(',').map(|name| name.trim().to_owned()))
            .collect();
        let settings: std::collections::BTreeSet<String> = Settings::default()
            .pairs()
            .iter()
            .map(|(var, _)| (*var).to_owned())
            .collect();
        assert_eq!(documented, settings);
    }

    #[test]
    fn create_admin_needs_its_flags() {
        assert!(Cli::try_parse_from(["unio", "create-admin", "--email", "a@b.c"]).is_err());
        let cli = Cli::try_parse_from([
            "unio",
            "create-admin",
            "--email",
            "a@b.c",
            "--password-stdin",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::CreateAdmin { .. })));
    }
}
