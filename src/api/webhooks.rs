//! `unio.v1.WebhookService`: admins register endpoints and read what was
//! sent to them. The outbox is written by the causes (`store::webhooks::
//! enqueue`), the sending done by `jobs::webhooks`; the rules (types,
//! signing, allowed targets) live in `domain::webhook`.

use tonic::{Request, Response, Status};

use super::id_field;
use crate::{
    auth::{Caller, caller},
    domain::{
        new_id,
        time::{now_micros, to_timestamp},
        webhook::{self, EventType},
    },
    error::{AppError, Violations},
    outbound::guard,
    proto::pb::{self, webhook_service_server::WebhookService},
    state::AppState,
    store::webhooks::{self as store, DeliveryRecord, WebhookRecord},
};

pub struct WebhookApi {
    state: AppState,
}

fn admins_only(caller: &Caller) -> Result<(), AppError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(AppError::permission_denied("only admins manage webhooks"))
    }
}

fn not_found(id: &str) -> AppError {
    AppError::not_found("WEBHOOK_NOT_FOUND", format!("no webhook with id {id}"))
}

fn to_pb(record: &WebhookRecord, with_secret: bool) -> pb::Webhook {
    pb::Webhook {
        id: record.id.clone(),
        url: record.url.clone(),
        event_types: record.event_types().map(str::to_owned).collect(),
        secret: if with_secret {
            record.secret.clone()
        } else {
            String::new()
        },
        create_time: Some(to_timestamp(record.created_at)),
    }
}

fn delivery_to_pb(d: &DeliveryRecord) -> pb::WebhookDelivery {
    let status = match d.status.as_str() {
        "delivered" => pb::WebhookDeliveryStatus::Delivered,
        "failed" => pb::WebhookDeliveryStatus::Failed,
        _ => pb::WebhookDeliveryStatus::Pending,
    };
    pb::WebhookDelivery {
        id: d.id.clone(),
        webhook_id: d.webhook_id.clone(),
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        status: status as i32,
        attempts: d.attempts,
        last_status_code: d.last_status_code.unwrap_or_default(),
        last_error: d.last_error.clone().unwrap_or_default(),
        create_time: Some(to_timestamp(d.created_at)),
        last_attempt_time: d.last_attempt_at.map(to_timestamp),
        next_attempt_time: (status == pb::WebhookDeliveryStatus::Pending)
            .then(|| to_timestamp(d.next_attempt_at)),
        delivered_time: d.delivered_at.map(to_timestamp),
        payload: d.body.clone(),
    }
}

/// Keyset cursor `<created micros>:<id>` of the delivery log.
fn encode_cursor(d: &DeliveryRecord) -> String {
    format!("{}:{}", d.created_at, d.id)
}

fn decode_cursor(cursor: &str) -> Option<store::LogCursor> {
    let (at, id) = cursor.split_once(':')?;
    Some((at.parse().ok()?, id.to_owned()))
}

impl WebhookApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    #[tracing::instrument(skip_all)]
    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let caller = caller(&request)?;
        admins_only(&caller)?;
        let r = request.into_inner();
        let allow_private = self.state.config.integrations.webhook_allow_private;
        let mut v = Violations::new();
        let url = v.check("url", webhook::parse_url(&r.url, allow_private));
        let mut types: Vec<EventType> = Vec::new();
        if r.event_types.len() > EventType::ALL.len() {
            v.add("event_types", "names a type more than once");
        }
        for (i, raw) in r.event_types.iter().enumerate() {
            let field = format!("event_types[{i}]");
            if let Some(kind) = v.check(&field, EventType::parse(raw)) {
                if types.contains(&kind) {
                    v.add(&field, "is named twice");
                } else {
                    types.push(kind);
                }
            }
        }
        v.finish()?;
        let Some(url) = url else {
            return Err(AppError::invalid("url", "is required").into());
        };
        // A name must resolve to a public address now (and will be checked
        // again on every delivery).
        if !allow_private
            && let Some(url::Host::Domain(host)) = url.host()
            && let Err(why) = guard::resolves_publicly(host).await
        {
            return Err(AppError::invalid("url", why).into());
        }
        let record = WebhookRecord {
            id: new_id(),
            url: url.to_string(),
            event_types: types
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            secret: webhook::new_secret(),
            created_at: now_micros(),
        };
        let Some(created) = store::create(&self.state.db, &record, &caller.user_id).await? else {
            return Err(AppError::ResourceExhausted {
                reason: "TOO_MANY_WEBHOOKS",
                message: format!("at most {} webhooks", webhook::MAX_WEBHOOKS),
                retry_after: None,
            }
            .into());
        };
        tracing::info!(webhook_id = %created.id, by = %caller.user_id, "webhook created");
        Ok(Response::new(to_pb(&created, true)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let caller = caller(&request)?;
        admins_only(&caller)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let page = self.state.page_tokens.page_in(
            &mut v,
            "ListWebhooks".into(),
            r.page_size,
            &r.page_token,
        );
        let Some(page) = page else {
            return Err(v.into_error().into());
        };
        let rows = store::list(&self.state.db, page.cursor(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |w| w.id.clone());
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: rows.iter().map(|w| to_pb(w, false)).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(webhook_id = %request.get_ref().webhook_id))]
    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let caller = caller(&request)?;
        admins_only(&caller)?;
        let id = id_field("webhook_id", &request.get_ref().webhook_id)?;
        if !store::delete(&self.state.db, &id).await? {
            return Err(not_found(&id).into());
        }
        tracing::info!(webhook_id = %id, by = %caller.user_id, "webhook deleted");
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }

    #[tracing::instrument(skip_all, fields(webhook_id = %request.get_ref().webhook_id))]
    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let caller = caller(&request)?;
        admins_only(&caller)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let id = v.check("webhook_id", crate::domain::parse_id(&r.webhook_id));
        let page = self.state.page_tokens.page_in(
            &mut v,
            format!("ListWebhookDeliveries|{}", r.webhook_id),
            r.page_size,
            &r.page_token,
        );
        let (Some(id), Some(page)) = (id, page) else {
            return Err(v.into_error().into());
        };
        if store::find(&self.state.db, &id).await?.is_none() {
            return Err(not_found(&id).into());
        }
        let rows = store::deliveries(
            &self.state.db,
            &id,
            page.key(decode_cursor)?.as_ref(),
            page.limit(),
        )
        .await?;
        let (rows, next_page_token) = page.finish(rows, encode_cursor);
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: rows.iter().map(delivery_to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(delivery_id = %request.get_ref().delivery_id))]
    async fn redeliver_webhook(
        &self,
        request: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        let caller = caller(&request)?;
        admins_only(&caller)?;
        let id = id_field("delivery_id", &request.get_ref().delivery_id)?;
        let missing = || {
            AppError::not_found(
                "DELIVERY_NOT_FOUND",
                format!("no webhook delivery with id {id}"),
            )
        };
        match store::redeliver(&self.state.db, &id, now_micros()).await? {
            store::Redelivery::Queued => {}
            store::Redelivery::Missing => return Err(missing().into()),
            store::Redelivery::InFlight => {
                return Err(AppError::FailedPrecondition {
                    reason: "DELIVERY_IN_FLIGHT",
                    message: "this delivery is being attempted right now; try again in a moment"
                        .into(),
                }
                .into());
            }
        }
        let delivery = store::find_delivery(&self.state.db, &id)
            .await?
            .ok_or_else(missing)?;
        Ok(Response::new(delivery_to_pb(&delivery)))
    }
}
