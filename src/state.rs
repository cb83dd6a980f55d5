//! What every service shares, built once at start-up.

use std::sync::Arc;

use crate::{
    auth::{Accounts, oauth::OAuth},
    blob::BlobStore,
    config::Config,
    limits::Limiters,
    metrics::Metrics,
    paging::PageTokens,
    realtime::{RoomHub, chat::ChatLog, inbox::Inbox},
    store::Db,
};

/// Shared by all services; cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub accounts: Accounts,
    /// Meetings as each user stands to them, kept current by the bus.
    pub meeting_view: Arc<crate::auth::meeting_view::MeetingView>,
    pub blobs: BlobStore,
    pub page_tokens: PageTokens,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<RoomHub>,
    pub inbox: Arc<Inbox>,
    /// The event backbone: access changes and live notifications.
    pub bus: Arc<dyn crate::realtime::bus::Bus>,
    pub oauth: Arc<OAuth>,
    pub chat: ChatLog,
    /// Status changes and deletion of meetings, with what they set in motion.
    pub meetings: crate::meetings::Meetings,
    pub limits: Arc<Limiters>,
}
