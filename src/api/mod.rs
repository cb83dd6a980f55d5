//! gRPC services, one module each. A handler decodes the request into domain
//! types, checks who may do it, calls `auth`/`store`/`blob`, and encodes the
//! answer; rules live in `domain` and SQL in `store`.

mod access;
pub mod auth;
pub mod calls;
pub mod chat;
pub mod files;
pub mod meetings;
pub mod notifications;
pub mod room;
pub mod users;
pub mod webhooks;

pub use auth::AuthApi;
pub use calls::CallApi;
pub use chat::ChatApi;
pub use files::FileApi;
pub use meetings::MeetingApi;
pub use notifications::NotificationApi;
pub use room::RoomApi;
pub use users::UserApi;
pub use webhooks::WebhookApi;

/// Hands committed notifications to their recipients' live watches.
/// The one way a handler reads an id field: a UUID, or INVALID_ARGUMENT
/// naming `field`.
pub(crate) fn id_field(field: &str, raw: &str) -> Result<String, crate::error::AppError> {
    crate::domain::parse_id(raw).map_err(|e| crate::error::AppError::invalid(field, e.to_string()))
}

pub(crate) fn deliver(
    state: &crate::state::AppState,
    records: &[crate::store::notifications::NotificationRecord],
) {
    if !records.is_empty() {
        state.metrics.notifications_sent(records.len() as u64);
        state
            .inbox
            .publish(records.iter().map(crate::wire::notification));
    }
}
