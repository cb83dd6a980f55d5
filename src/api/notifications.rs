//! `unio.v1.NotificationService`: the inbox, manual notices and live watch.

use std::{collections::HashSet, pin::Pin};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::access;
use crate::wire;
use crate::{
    auth::caller,
    domain::{
        notification::{Draft, NotificationKind},
        parse_id,
        time::now_micros,
    },
    error::{AppError, Violations},
    proto::pb::{self, notification_service_server::NotificationService},
    state::AppState,
    store::{notifications, users},
};

pub struct NotificationApi {
    state: AppState,
}

const MAX_RECIPIENTS: usize = 500;
const MAX_TITLE_CHARS: usize = 200;
const MAX_BODY_CHARS: usize = 2_000;

fn kind_of(raw: i32) -> Option<NotificationKind> {
    NotificationKind::ALL
        .into_iter()
        .find(|k| wire::notification_type(*k) as i32 == raw)
}

fn not_found(id: &str) -> AppError {
    AppError::not_found(
        "NOTIFICATION_NOT_FOUND",
        format!("no notification of yours with id {id}"),
    )
}

impl NotificationApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

type NotificationStream =
    Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    type WatchNotificationsStream = NotificationStream;

    #[tracing::instrument(skip_all)]
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let mut kinds = Vec::new();
        for (i, raw) in r.types.iter().enumerate() {
            match kind_of(*raw) {
                Some(kind) => kinds.push(kind),
                None => v.add(
                    &format!("types[{i}]"),
                    "must be a NOTIFICATION_TYPE other than UNSPECIFIED",
                ),
            }
        }
        kinds.sort_by_key(|k| k.as_str());
        kinds.dedup();
        let page = self.state.page_tokens.page_in(
            &mut v,
            format!(
                "ListNotifications|{}|{kinds:?}|{}",
                caller.user_id, r.unread_only
            ),
            r.page_size,
            &r.page_token,
        );
        let Some(page) = page else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let db = &self.state.db;
        let rows = notifications::list(
            db,
            &caller.user_id,
            &kinds,
            r.unread_only,
            page.cursor(),
            page.limit(),
        )
        .await?;
        let (rows, next_page_token) = page.finish(rows, |n| n.id.clone());
        let unread = notifications::unread_count(db, &caller.user_id).await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.iter().map(wire::notification).collect(),
            next_page_token,
            unread_count: i32::try_from(unread).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all, fields(notification_id = %request.get_ref().notification_id))]
    async fn mark_notification_read(
        &self,
        request: Request<pb::MarkNotificationReadRequest>,
    ) -> Result<Response<pb::Notification>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let id = super::id_field("notification_id", &r.notification_id)?;
        let record =
            notifications::mark(&self.state.db, &caller.user_id, &id, r.read, now_micros())
                .await?
                .ok_or_else(|| not_found(&id))?;
        Ok(Response::new(wire::notification(&record)))
    }

    #[tracing::instrument(skip_all)]
    async fn mark_all_notifications_read(
        &self,
        request: Request<pb::MarkAllNotificationsReadRequest>,
    ) -> Result<Response<pb::MarkAllNotificationsReadResponse>, Status> {
        let caller = caller(&request)?;
        let updated =
            notifications::mark_all(&self.state.db, &caller.user_id, now_micros()).await?;
        Ok(Response::new(pb::MarkAllNotificationsReadResponse {
            updated_count: i32::try_from(updated).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all, fields(notification_id = %request.get_ref().notification_id))]
    async fn delete_notification(
        &self,
        request: Request<pb::DeleteNotificationRequest>,
    ) -> Result<Response<pb::DeleteNotificationResponse>, Status> {
        let caller = caller(&request)?;
        let id = super::id_field("notification_id", &request.get_ref().notification_id)?;
        if !notifications::delete(&self.state.db, &caller.user_id, &id).await? {
            return Err(not_found(&id).into());
        }
        Ok(Response::new(pb::DeleteNotificationResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn send_notification(
        &self,
        request: Request<pb::SendNotificationRequest>,
    ) -> Result<Response<pb::SendNotificationResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        if r.user_ids.is_empty() || r.user_ids.len() > MAX_RECIPIENTS {
            v.add("user_ids", format!("name 1 to {MAX_RECIPIENTS} recipients"));
        }
        let mut recipients = Vec::new();
        let mut seen = HashSet::new();
        for (i, raw) in r.user_ids.iter().enumerate() {
            if let Some(id) = v.check(&format!("user_ids[{i}]"), parse_id(raw))
                && seen.insert(id.clone())
            {
                recipients.push(id);
            }
        }
        let kind = match r.r#type {
            0 => Some(NotificationKind::General),
            raw => kind_of(raw),
        };
        if kind.is_none() {
            v.add("type", "must be a NOTIFICATION_TYPE");
        }
        let title = r.title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            v.add(
                "title",
                format!("must be 1 to {MAX_TITLE_CHARS} characters"),
            );
        }
        if title.chars().any(char::is_control) {
            v.add("title", "must not contain control characters");
        }
        if title.chars().any(crate::domain::is_bidi_control) {
            v.add(
                "title",
                "must not contain bidirectional override characters",
            );
        }
        let body = r.body.trim();
        if body.chars().count() > MAX_BODY_CHARS {
            v.add(
                "body",
                format!("must be at most {MAX_BODY_CHARS} characters"),
            );
        }
        if body
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            v.add(
                "body",
                "must not contain control characters other than newlines and tabs",
            );
        }
        let meeting_id = if r.meeting_id.trim().is_empty() {
            None
        } else {
            v.check("meeting_id", parse_id(&r.meeting_id))
        };
        let Some(kind) = kind.filter(|_| v.is_empty()) else {
            return Err(v.into_error().into());
        };

        if let Some(meeting_id) = &meeting_id
            && crate::store::meetings::find(&self.state.db, meeting_id)
                .await?
                .is_none()
        {
            return Err(access::meeting_not_found(meeting_id).into());
        }
        // Admins send to anyone; a host only to its meeting's members.
        if !caller.is_admin() {
            let Some(meeting_id) = &meeting_id else {
                return Err(AppError::permission_denied(
                    "only admins may notify without a meeting_id; hosts name their meeting",
                )
                .into());
            };
            let mine =
                access::load(&self.state.meeting_view, meeting_id, &caller.user_id, false).await?;
            if !mine.access.can_manage() {
                return Err(AppError::permission_denied(
                    "only the meeting's host (or an admin) may notify its members",
                )
                .into());
            }
            for recipient in &recipients {
                let theirs =
                    access::load_fresh(&self.state.meeting_view, meeting_id, recipient, false)
                        .await?;
                if !theirs.access.is_member() {
                    return Err(AppError::permission_denied(format!(
                        "{recipient} is not a member of this meeting"
                    ))
                    .into());
                }
            }
        }
        for (i, recipient) in recipients.iter().enumerate() {
            if users::find_by_id(&self.state.db, recipient)
                .await?
                .is_none()
            {
                return Err(AppError::invalid(format!("user_ids[{i}]"), "no such user").into());
            }
        }
        let draft = Draft {
            kind,
            title: title.to_owned(),
            body: body.to_owned(),
            meeting_id,
            mail: false,
            // What users send one another stays in the inbox.
            push: false,
            call_id: None,
        };
        let sent = notifications::send(&self.state.db, &recipients, &draft, now_micros()).await?;
        super::deliver(&self.state, &sent);
        Ok(Response::new(pb::SendNotificationResponse {
            notifications: sent.iter().map(wire::notification).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn watch_notifications(
        &self,
        request: Request<pb::WatchNotificationsRequest>,
    ) -> Result<Response<NotificationStream>, Status> {
        let caller = caller(&request)?;
        let stream = self.state.inbox.watch(
            &caller.user_id,
            &caller.session_id,
            access::check(&self.state, &caller, access::Holds::Session).1,
        );
        // In a cluster, answered once notifications from every node reach
        // the watch: a list made after this answer misses nothing.
        self.state
            .bus
            .settled(&[crate::realtime::bus::Topic::User(caller.user_id.clone())])
            .await;
        Ok(Response::new(Box::pin(stream)))
    }
}
