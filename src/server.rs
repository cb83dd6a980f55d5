//! The one place where services, layers, reflection, health and shutdown are
//! wired together.
//!
//! Layers, outermost first: CORS (answers browser preflights), gRPC-Web
//! (translates browser calls to plain gRPC), the call log, then auth. So a
//! browser's call is logged and authenticated exactly like a native one, and
//! errors from auth are translated back to gRPC-Web on the way out.

use std::{future::Future, time::Duration};

use http::{HeaderName, HeaderValue, Method};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming};
use tonic_web::GrpcWebLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    RunError,
    api::{
        AuthApi, CallApi, ChatApi, FileApi, MeetingApi, NotificationApi, RoomApi, UserApi,
        WebhookApi,
    },
    auth::AuthLayer,
    config::CorsOrigins,
    deadline::DeadlineLayer,
    oversize::OversizeLayer,
    proto::{
        FILE_DESCRIPTOR_SET,
        pb::{
            auth_service_server::AuthServiceServer, call_service_server::CallServiceServer,
            chat_service_server::ChatServiceServer, file_service_server::FileServiceServer,
            meeting_service_server::MeetingServiceServer,
            notification_service_server::NotificationServiceServer,
            room_service_server::RoomServiceServer, user_service_server::UserServiceServer,
            webhook_service_server::WebhookServiceServer,
        },
    },
    state::AppState,
    telemetry::CallLogLayer,
};

/// Requests of services without uploads stay small.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// 200 invitee addresses and a 5,000-character description fit.
const MEETING_MESSAGE_BYTES: usize = 256 * 1024;
/// A 1 MiB file chunk with its envelope.
const FILE_MESSAGE_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// An SDP offer (64 KiB at most) with its envelope.
const ROOM_MESSAGE_BYTES: usize = 128 * 1024;
/// Room for the protobuf framing around an avatar of the configured size.
const AVATAR_ENVELOPE_BYTES: usize = 64 * 1024;

/// Stops a task when dropped (whichever way `serve` returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The health service name that reports the bus (DESIGN §9).
pub const BUS_HEALTH: &str = "unio.Bus";

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight
/// calls finish for up to `shutdown_grace`, and returns.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let config = state.config.clone();

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthServiceServer<AuthApi>>().await;
    health.set_serving::<UserServiceServer<UserApi>>().await;
    health
        .set_serving::<MeetingServiceServer<MeetingApi>>()
        .await;
    health.set_serving::<RoomServiceServer<RoomApi>>().await;
    health.set_serving::<CallServiceServer<CallApi>>().await;
    health.set_serving::<ChatServiceServer<ChatApi>>().await;
    health.set_serving::<FileServiceServer<FileApi>>().await;
    health
        .set_serving::<NotificationServiceServer<NotificationApi>>()
        .await;
    health
        .set_serving::<WebhookServiceServer<WebhookApi>>()
        .await;

    // The bus as a health service of its own (`unio.Bus`): NOT_SERVING
    // while a cluster node cannot reach Redis; the node still serves its
    // own participants.
    let bus_health = {
        let (health, bus) = (health.clone(), state.bus.clone());
        AbortOnDrop(tokio::spawn(async move {
            let mut last = None;
            loop {
                let healthy = bus.healthy();
                if last != Some(healthy) {
                    let status = if healthy {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health.set_service_status(BUS_HEALTH, status).await;
                    last = Some(healthy);
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }))
    };
    let stop_bus_health = bus_health.0.abort_handle();

    // grpcurl 1.8 asks v1alpha, newer clients v1: serve both.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // So grpcurl can print ErrorInfo and BadRequest details.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(RunError::Reflection)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(RunError::Reflection)?;

    let auth = AuthServiceServer::new(AuthApi::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let users = UserServiceServer::new(UserApi::new(state.clone()))
        .max_decoding_message_size(config.limits.max_avatar_bytes + AVATAR_ENVELOPE_BYTES)
        .max_encoding_message_size(config.limits.max_avatar_bytes + AVATAR_ENVELOPE_BYTES);

    let meetings = MeetingServiceServer::new(MeetingApi::new(state.clone()))
        .max_decoding_message_size(MEETING_MESSAGE_BYTES);

    let rooms = RoomServiceServer::new(RoomApi::new(state.clone()))
        .max_decoding_message_size(ROOM_MESSAGE_BYTES);
    let calls = CallServiceServer::new(CallApi::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let notifications = NotificationServiceServer::new(NotificationApi::new(state.clone()))
        .max_decoding_message_size(MEETING_MESSAGE_BYTES);
    let chat = ChatServiceServer::new(ChatApi::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let files = FileServiceServer::new(FileApi::new(state.clone()))
        .max_decoding_message_size(FILE_MESSAGE_BYTES)
        .max_encoding_message_size(FILE_MESSAGE_BYTES);
    let webhooks = WebhookServiceServer::new(WebhookApi::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(8 * 1024 * 1024);
    let hub = state.hub.clone();
    let inbox = state.inbox.clone();
    let bus = state.bus.clone();

    let mut builder = Server::builder()
        .accept_http1(true)
        // Streams one connection may open: without it a client could open
        // thousands of room streams over one TCP connection.
        .max_concurrent_streams(Some(config.limits.max_streams_per_connection))
        // Resets that a client may leave pending (HTTP/2 "rapid reset").
        .http2_max_pending_accept_reset_streams(Some(64))
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = &config.tls {
        let cert = std::fs::read(&tls.cert).map_err(|e| {
            RunError::Tls(format!(
                "UNIO_TLS_CERT: cannot read {}: {e}",
                tls.cert.display()
            ))
        })?;
        let key = std::fs::read(&tls.key).map_err(|e| {
            RunError::Tls(format!(
                "UNIO_TLS_KEY: cannot read {}: {e}",
                tls.key.display()
            ))
        })?;
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .map_err(|e| RunError::Tls(format!("UNIO_TLS_CERT/UNIO_TLS_KEY: {e}")))?;
    }

    let router = builder
        // The web app answers GET and HEAD before anything gRPC sees them.
        .layer(crate::web::WebLayer)
        .layer(cors(&config.cors_origins))
        .layer(GrpcWebLayer::new())
        .layer(CallLogLayer::new(state.metrics.clone()))
        .layer(DeadlineLayer::new(config.limits.request_timeout))
        .layer(OversizeLayer)
        .layer(AuthLayer::new(
            state.accounts.clone(),
            state.limits.clone(),
            config.client_address_header.clone(),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(users)
        .add_service(meetings)
        .add_service(rooms)
        .add_service(calls)
        .add_service(notifications)
        .add_service(chat)
        .add_service(files)
        .add_service(webhooks);

    let addr = listener.local_addr().map_err(RunError::Io)?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!("listening on {addr}");
    tracing::info!(
        database = state.db.backend(),
        "serving gRPC and gRPC-Web at {scheme}://{addr}"
    );

    // `stopping` flips when the shutdown signal arrives; the grace timer
    // below bounds how long open streams may hold the process.
    let (stopping_tx, mut stopping) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: refusing new calls, finishing in-flight ones");
        health.set_not_serving::<AuthServiceServer<AuthApi>>().await;
        health.set_not_serving::<UserServiceServer<UserApi>>().await;
        health
            .set_not_serving::<MeetingServiceServer<MeetingApi>>()
            .await;
        health.set_not_serving::<RoomServiceServer<RoomApi>>().await;
        health.set_not_serving::<CallServiceServer<CallApi>>().await;
        health.set_not_serving::<ChatServiceServer<ChatApi>>().await;
        health.set_not_serving::<FileServiceServer<FileApi>>().await;
        health
            .set_not_serving::<NotificationServiceServer<NotificationApi>>()
            .await;
        inbox.close_all();
        stop_bus_health.abort();
        health
            .set_service_status(BUS_HEALTH, tonic_health::ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        // Live streams end with UNAVAILABLE so clients reconnect and resume.
        hub.shutdown();
        // In a cluster, the others forget this node at once.
        bus.close().await;
        let _ = stopping_tx.send(true);
    };
    let grace = config.shutdown_grace;
    let deadline = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::select! {
        served = router.serve_with_incoming_shutdown(incoming, signal) => served.map_err(RunError::Transport)?,
        () = deadline => tracing::warn!("shutdown grace period elapsed; closing remaining connections"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// CORS for gRPC-Web: browsers must be allowed to send `authorization` and
/// the gRPC-Web headers, and to read the status trailers-as-headers.
fn cors(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => {
            AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        }
    };
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 3600))
}
