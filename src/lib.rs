//! UNIO: the gRPC-first backend of a video-meeting product.
//!
//! Native clients speak gRPC over HTTP/2; browsers speak gRPC-Web to the same
//! port; developers explore it with grpcurl through server reflection.
//! `DESIGN.md` (shared with the team) is the API contract.
//!
//! # Layout
//!
//! - [`cli`]: the command line on clap: subcommands, every setting a flag.
//! - [`config`]: typed configuration from `UNIO_*` variables.
//! - [`server`]: wires services, layers, reflection, health and shutdown.
//! - [`api`]: one module per gRPC service; thin handlers.
//! - [`auth`]: passwords, tokens, sessions and the auth layer.
//! - [`domain`]: value types that validate on construction.
//! - [`store`]: all SQL, for SQLite and PostgreSQL alike: one module per
//!   table, write transactions as `store::Tx`, and `store::accounts` above
//!   them for what spans tables; errors are `store::Error`.
//! - [`realtime`]: live rooms (the hub, sessions that report detaches over
//!   a channel, fan-out, resume), the chat log and notification watches.
//! - [`blob`]: avatar and shared-file bytes on disk.
//! - [`meetings`]: the meetings service: status changes and deletion with
//!   everything they set in motion.
//! - [`jobs`]: background work: mail, reminders, missed calls, sweeps.
//! - [`wire`]: every conversion to and from protobuf messages.
//! - [`paging`]: signed keyset page tokens shared by every list.
//! - [`codec`]: the protobuf codec (bad bytes are INVALID_ARGUMENT).
//! - [`limits`]: in-memory rate limits and per-user slots.
//! - [`deadline`]: the per-call deadline layer.
//! - [`oversize`]: oversized requests answer RESOURCE_EXHAUSTED.
//! - [`error`]: the one error type and its mapping to `tonic::Status`.
//! - [`telemetry`] and [`metrics`]: a log line per call, spans (exported
//!   over OTLP when configured), Prometheus metrics.
//!
//! Data flows one way: `api` → `meetings`/`auth`/`realtime`/`domain`/
//! `store`/`blob`/`wire`; nothing below `api` imports `api`, and no two
//! modules import each other.

pub mod api;
pub mod auth;
pub mod blob;
pub mod cli;
pub mod codec;
pub mod config;
pub mod deadline;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod meetings;
pub mod metrics;
pub mod outbound;
pub mod oversize;
pub mod paging;
pub mod proto;
pub mod realtime;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod wire;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;

use crate::{
    auth::{Accounts, passwords::PasswordHasher, tokens::TokenKeys},
    blob::BlobStore,
    config::Config,
    metrics::Metrics,
    paging::PageTokens,
    realtime::{RoomHub, ice::IceConfig},
    state::AppState,
    store::Db,
};

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("UNIO_DATABASE_URL: cannot open {url}: {source}")]
    Database { url: String, source: sqlx::Error },
    #[error("UNIO_DATABASE_URL: migrating {url} failed: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("UNIO_DATA_DIR: {0}")]
    DataDir(std::io::Error),
    #[error("UNIO_ADMIN_ADDR: cannot listen: {0}")]
    AdminAddr(std::io::Error),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Mail(String),
    #[error("reflection: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error("server: {0}")]
    Transport(tonic::transport::Error),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("UNIO_REDIS_URL: {0}")]
    Redis(redis::RedisError),
    #[error("{0}")]
    Outbound(String),
}

/// Opens the configured database and applies pending migrations.
pub async fn open_database(config: &Config) -> Result<Db, RunError> {
    let url = redact(&config.database_url);
    if config.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir).map_err(RunError::DataDir)?;
    }
    let db = Db::connect(&config.database_url, config.database_busy_timeout)
        .await
        .map_err(|source| RunError::Database {
            url: url.clone(),
            source,
        })?;
    db.migrate()
        .await
        .map_err(|source| RunError::Migrate { url, source })?;
    Ok(db)
}

/// Builds the shared state: database, keys, blob store.
pub async fn build_state(config: Config) -> Result<AppState, RunError> {
    let db = open_database(&config).await?;
    let secret = auth::secret::load_or_generate(config.jwt_secret.as_deref(), &config.data_dir)
        .map_err(RunError::DataDir)?;
    let keys = Arc::new(TokenKeys::new(
        &secret,
        config.access_token_ttl,
        config.refresh_token_ttl,
    ));
    let redis = match &config.redis_url {
        Some(url) => Some(realtime::redis_bus::RedisBus::start(url).map_err(RunError::Redis)?),
        None => None,
    };
    let bus: Arc<dyn realtime::bus::Bus> = match &redis {
        Some(redis) => redis.clone(),
        None => realtime::bus::LocalBus::new(),
    };
    let accounts = Accounts::new(
        db.clone(),
        keys,
        PasswordHasher::with_queue(config.limits.max_hash_queue),
        &config.public_url,
        config.limits.login,
        bus.clone(),
        config.auth_cache_ttl,
    );
    let inbox = realtime::inbox::Inbox::new(bus.clone(), config.watch_keepalive);
    let blobs = BlobStore::new(config.data_dir.join("blobs"));
    let metrics = Arc::new(Metrics::new(Metrics::methods_of(&[
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])));
    let hub = RoomHub::new(
        config.rooms.clone(),
        IceConfig {
            stun_urls: config.stun_urls.clone(),
            turn_urls: config.turn_urls.clone(),
            turn_secret: config.turn_secret.clone(),
        },
        realtime::attendance::Attendance::start(db.clone()),
        metrics.clone(),
        redis.map(|redis| realtime::cluster::Link::start(redis, config.rooms.replay_capacity)),
    );
    Ok(AppState {
        meeting_view: auth::meeting_view::MeetingView::new(
            db.clone(),
            bus.clone(),
            config.auth_cache_ttl,
        ),
        chat: realtime::chat::ChatLog::start(db.clone(), hub.clone()),
        meetings: meetings::Meetings::new(
            db.clone(),
            hub.clone(),
            inbox.clone(),
            blobs.clone(),
            bus.clone(),
        ),
        hub,
        inbox,
        bus,
        oauth: Arc::new(auth::oauth::OAuth::new(&config)),
        blobs,
        page_tokens: PageTokens::new(&secret),
        metrics,
        limits: Arc::new(limits::Limiters::new(&config.limits)),
        config: Arc::new(config),
        db,
        accounts,
    })
}

/// Runs the server on `listener` until `shutdown` resolves. `main` and the
/// integration tests both start the server through here.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let admin = metrics::bind(config.admin_addr)
        .await
        .map_err(RunError::AdminAddr)?;
    let state = build_state(config).await?;
    let admin_task = admin.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("metrics at http://{addr}/metrics");
        }
        // Gauges owned elsewhere, read at each scrape.
        let db = state.db.clone();
        state.metrics.on_scrape(move |m| {
            let (size, idle) = match &db {
                store::Db::Sqlite(pool) => (pool.size(), pool.num_idle()),
                store::Db::Postgres(pool) => (pool.size(), pool.num_idle()),
            };
            m.set_db_pool((size as usize).saturating_sub(idle), idle);
        });
        let hub = state.hub.clone();
        state.metrics.on_scrape(move |m| {
            let (rooms, participants) = hub.counts();
            m.set_rooms(rooms, participants);
        });
        let passwords = state.accounts.passwords().clone();
        state
            .metrics
            .on_scrape(move |m| m.set_password_queue(passwords.queue_depth()));
        tokio::spawn(metrics::serve(listener, state.metrics.clone()))
    });
    let missed_calls = tokio::spawn(jobs::missed_calls::run(
        state.clone(),
        state.config.call_ring_timeout,
    ));
    let mailer = match (&state.config.smtp_url, &state.config.mail_from) {
        (Some(url), Some(from)) => jobs::mailer::Mailer::new(url, from).map_err(RunError::Mail)?,
        _ => jobs::mailer::Mailer::console(),
    };
    let mailer = tokio::spawn(mailer.run(
        state.db.clone(),
        state.config.mail_poll_interval,
        state.metrics.clone(),
    ));
    let uploads = tokio::spawn(jobs::uploads::run(state.db.clone(), state.blobs.clone()));
    let expired = tokio::spawn(jobs::expired::run(
        state.db.clone(),
        state.limits.clone(),
        state.config.limits.login.longest_window(),
    ));
    let reminders = tokio::spawn(jobs::reminders::run(
        state.clone(),
        state.config.reminder_lead,
    ));
    let integrations = &state.config.integrations;
    let webhook_sender = outbound::webhook::WebhookSender::new(
        integrations.webhook_timeout,
        integrations.webhook_allow_private,
        integrations.outbound_ca_file.as_deref(),
    )
    .map_err(RunError::Outbound)?;
    let webhooks = tokio::spawn(
        jobs::webhooks::Deliverer::new(
            state.db.clone(),
            webhook_sender,
            integrations.webhook_retry_min,
            integrations.webhook_timeout,
        )
        .run(),
    );
    let push_client = |http2: bool| {
        let builder = outbound::client_builder(
            integrations.webhook_timeout,
            integrations.outbound_ca_file.as_deref(),
        )?;
        // APNs speaks HTTP/2 only.
        let builder = if http2 {
            builder.http2_prior_knowledge()
        } else {
            builder
        };
        builder.build().map_err(|e| e.to_string())
    };
    let fcm = match &integrations.fcm {
        Some(config) => Some(
            outbound::fcm::Fcm::new(config, push_client(false).map_err(RunError::Outbound)?)
                .map_err(RunError::Outbound)?,
        ),
        None => None,
    };
    let apns = match &integrations.apns {
        Some(config) => Some(
            outbound::apns::Apns::new(config, push_client(true).map_err(RunError::Outbound)?)
                .map_err(RunError::Outbound)?,
        ),
        None => None,
    };
    let pusher = tokio::spawn(
        jobs::push::Pusher::new(state.db.clone(), fcm, apns, integrations.webhook_timeout).run(),
    );
    let db = state.db.clone();
    let hub = state.hub.clone();
    let result = server::serve(state, listener, shutdown).await;
    if let Some(task) = admin_task {
        task.abort();
    }
    missed_calls.abort();
    reminders.abort();
    uploads.abort();
    expired.abort();
    mailer.abort();
    webhooks.abort();
    pusher.abort();
    hub.record_departures().await;
    db.close().await;
    result
}

/// The URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_database_passwords() {
        assert_eq!(
            super::redact("postgres://u:pw@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            super::redact("sqlite://./data/unio.db"),
            "sqlite://./data/unio.db"
        );
    }
}
