//! Webhooks (DESIGN §12) against a fake receiver on loopback: an endpoint
//! that fails first is retried; every request verifies under the Standard
//! Webhooks scheme (checked by the `standardwebhooks` reference library for
//! Python, which the test command installs); one delivery per event and
//! endpoint; redelivery; the log; private targets refused by default; admins
//! only; bad input named.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use tonic::Code;
use unio::proto::pb;

use crate::helpers::{TestApp, authed, bad_fields, eventually, spawn_app, spawn_app_with};

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone, serde::Serialize)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Requests still to fail with 500.
    failing: Arc<Mutex<usize>>,
}

impl Receiver {
    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn of_type(&self, kind: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.body.contains(&format!("\"type\":\"{kind}\"")))
            .collect()
    }
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answer = {
        let mut failing = rx.failing.lock().unwrap();
        if *failing > 0 {
            *failing -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        }
    };
    rx.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
        answered: answer.as_u16(),
    });
    answer
}

/// A receiver on 127.0.0.1 failing its first `failing` requests; its URL.
async fn start_receiver(failing: usize) -> (Receiver, String) {
    let rx = Receiver::default();
    *rx.failing.lock().unwrap() = failing;
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (rx, url)
}

/// Verifies every request with the Standard Webhooks reference library.
const VERIFY: &str = r#"
import sys, json
from standardwebhooks.webhooks import Webhook
secret, requests = json.load(sys.stdin)
hook = Webhook(secret)
for r in requests:
    headers = {"webhook-id": r["id"], "webhook-timestamp": r["timestamp"],
               "webhook-signature": r["signature"]}
    payload = hook.verify(r["body"], headers)
    assert payload["type"] and payload["timestamp"] and "data" in payload, payload
print(len(requests))
"#;

async fn verify_all(secret: &str, requests: &[Received]) {
    let input = serde_json::to_vec(&(secret, requests)).unwrap();
    let out = crate::helpers::python(VERIFY, &input).await.unwrap_or_else(|e| {
        panic!(
            "standardwebhooks refused a delivery (pip install standardwebhooks; the test command does): {e}"
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        requests.len().to_string()
    );
}

async fn deliveries(app: &TestApp, admin: &str, webhook_id: &str) -> Vec<pb::WebhookDelivery> {
    app.webhooks()
        .list_webhook_deliveries(authed(
            pb::ListWebhookDeliveriesRequest {
                webhook_id: webhook_id.into(),
                page_size: 100,
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

#[tokio::test]
async fn events_are_signed_retried_logged_and_redelivered() {
    let app = spawn_app_with(&[
        ("UNIO_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("UNIO_WEBHOOK_RETRY_MIN", "100ms"),
    ])
    .await;
    let (_, admin) = app.admin("admin@example.com").await;
    let (_, host, _) = app.user("host@example.com").await;
    let (rx, url) = start_receiver(2).await;

    let refused = app
        .webhooks()
        .create_webhook(authed(
            pb::CreateWebhookRequest {
                url: url.clone(),
                event_types: vec![],
            },
            &host,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    let hook = app
        .webhooks()
        .create_webhook(authed(
            pb::CreateWebhookRequest {
                url: url.clone(),
                event_types: vec![
                    "meeting.created".into(),
                    "meeting.started".into(),
                    "user.created".into(),
                ],
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(hook.secret.starts_with("whsec_"));
    let listed = app
        .webhooks()
        .list_webhooks(authed(pb::ListWebhooksRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].secret.is_empty(), "the secret is shown once");

    // Three events; the first two attempts fail with 500.
    let meeting = app
        .meeting(&host, "Hooked", &[], pb::JoinPolicy::InvitedOnly)
        .await;
    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: meeting.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    app.sign_up("newcomer@example.com").await;
    // Not subscribed: no delivery.
    app.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: meeting.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();

    eventually("three events delivered", || async {
        rx.all().iter().filter(|r| r.answered == 204).count() == 3
    })
    .await;
    let all = rx.all();
    assert_eq!(all.iter().filter(|r| r.answered == 500).count(), 2);
    verify_all(&hook.secret, &all).await;
    // Each event delivered once: distinct ids among the successes.
    let mut delivered: Vec<&str> = all
        .iter()
        .filter(|r| r.answered == 204)
        .map(|r| r.id.as_str())
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 3);
    // The retried one kept its webhook-id.
    assert!(
        all.iter()
            .any(|r| r.answered == 500 && delivered.contains(&r.id.as_str()))
    );
    let created = rx.of_type("meeting.created");
    let body: serde_json::Value = serde_json::from_str(&created[0].body).unwrap();
    assert_eq!(body["data"]["meeting"]["id"], meeting.id.as_str());
    assert_eq!(body["data"]["meeting"]["title"], "Hooked");
    assert!(rx.of_type("meeting.ended").is_empty());
    let user: serde_json::Value =
        serde_json::from_str(&rx.of_type("user.created")[0].body).unwrap();
    assert_eq!(user["data"]["user"]["email"], "newcomer@example.com");

    // The log says what happened.
    let log = deliveries(&app, &admin, &hook.id).await;
    assert_eq!(log.len(), 3);
    assert!(
        log.iter()
            .all(|d| d.status == pb::WebhookDeliveryStatus::Delivered as i32
                && d.last_status_code == 204
                && d.delivered_time.is_some())
    );
    let retried: Vec<_> = log.iter().filter(|d| d.attempts > 1).collect();
    assert!(!retried.is_empty(), "{log:?}");
    assert_eq!(
        log.iter().map(|d| d.attempts).sum::<i32>(),
        5,
        "three successes after two failures"
    );

    // Redelivery sends the same event (id and body) again.
    let first = log
        .iter()
        .find(|d| d.event_type == "meeting.created")
        .unwrap();
    let again = app
        .webhooks()
        .redeliver_webhook(authed(
            pb::RedeliverWebhookRequest {
                delivery_id: first.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, pb::WebhookDeliveryStatus::Pending as i32);
    eventually("the redelivery arrives", || async {
        rx.of_type("meeting.created")
            .iter()
            .filter(|r| r.answered == 204)
            .count()
            == 2
    })
    .await;
    let twice = rx.of_type("meeting.created");
    assert!(
        twice
            .iter()
            .all(|r| r.id == first.event_id && r.body == first.payload)
    );
    verify_all(&hook.secret, &rx.all()).await;

    // Deleting the endpoint stops deliveries and drops its log.
    app.webhooks()
        .delete_webhook(authed(
            pb::DeleteWebhookRequest {
                webhook_id: hook.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let gone = app
        .webhooks()
        .list_webhook_deliveries(authed(
            pb::ListWebhookDeliveriesRequest {
                webhook_id: hook.id.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_logged_with_its_errors() {
    let app = spawn_app_with(&[
        ("UNIO_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("UNIO_WEBHOOK_RETRY_MIN", "50ms"),
    ])
    .await;
    let (_, admin) = app.admin("admin@example.com").await;
    // Nothing listens on this port.
    let closed = crate::helpers::free_addr();
    let hook = app
        .webhooks()
        .create_webhook(authed(
            pb::CreateWebhookRequest {
                url: format!("http://{closed}/nobody"),
                event_types: vec!["user.created".into()],
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    app.sign_up("someone@example.com").await;
    eventually("attempts fail and are logged", || async {
        deliveries(&app, &admin, &hook.id)
            .await
            .first()
            .is_some_and(|d| d.attempts >= 2)
    })
    .await;
    let log = deliveries(&app, &admin, &hook.id).await;
    assert_eq!(log[0].status, pb::WebhookDeliveryStatus::Pending as i32);
    assert_eq!(log[0].last_status_code, 0);
    assert!(
        log[0].last_error.contains("connect"),
        "{}",
        log[0].last_error
    );
    assert!(log[0].next_attempt_time.is_some());
}

#[tokio::test]
async fn private_targets_and_bad_input_are_refused() {
    let app = spawn_app().await;
    let (_, admin) = app.admin("admin@example.com").await;
    let create = |url: &str, types: &[&str]| {
        let mut client = app.webhooks();
        let request = authed(
            pb::CreateWebhookRequest {
                url: url.into(),
                event_types: types.iter().map(|t| t.to_string()).collect(),
            },
            &admin,
        );
        async move { client.create_webhook(request).await }
    };
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.8/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        // A name is judged by where it resolves.
        "http://localhost:9/hook",
        "ftp://example.com/hook",
        "https://user:secret@example.com/hook",
        "not a url",
    ] {
        let refused = create(url, &[]).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{url}");
        assert_eq!(bad_fields(&refused), ["url"], "{url}");
    }
    let refused = create("https://hooks.example.com/x", &["meeting.created", "nope"])
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&refused), ["event_types[1]"]);
    let refused = create(
        "https://hooks.example.com/x",
        &["meeting.created", "meeting.created"],
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&refused), ["event_types[1]"]);
    let refused = app
        .webhooks()
        .redeliver_webhook(authed(
            pb::RedeliverWebhookRequest {
                delivery_id: "not-an-id".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&refused), ["delivery_id"]);
    let missing = app
        .webhooks()
        .redeliver_webhook(authed(
            pb::RedeliverWebhookRequest {
                delivery_id: unio::domain::new_id(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn three_nodes_deliver_each_event_once() {
    let redis = crate::cluster::Redis::start();
    let nodes = crate::cluster::nodes_with(
        &redis,
        3,
        &[
            ("UNIO_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("UNIO_WEBHOOK_RETRY_MIN", "100ms"),
        ],
    )
    .await;
    let (_, admin) = nodes[0].admin("admin@example.com").await;
    let (_, host, _) = nodes[0].user("host@example.com").await;
    let (rx, url) = start_receiver(5).await;
    let hook = nodes[1]
        .webhooks()
        .create_webhook(authed(
            pb::CreateWebhookRequest {
                url,
                event_types: vec!["meeting.created".into()],
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    // Thirty events, queued through every node; every node's sender races
    // for them.
    for i in 0..30 {
        let node = &nodes[i % 3];
        node.meeting(&host, &format!("M{i}"), &[], pb::JoinPolicy::InvitedOnly)
            .await;
    }
    eventually("every event delivered", || async {
        rx.all().iter().filter(|r| r.answered == 204).count() >= 30
    })
    .await;
    // Give a duplicate time to show up, then count.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let all = rx.all();
    let delivered: Vec<&str> = all
        .iter()
        .filter(|r| r.answered == 204)
        .map(|r| r.id.as_str())
        .collect();
    let mut distinct = delivered.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(delivered.len(), 30, "each event delivered once");
    assert_eq!(distinct.len(), 30);
    assert_eq!(all.len(), 35, "five failures, retried once each");
    verify_all(&hook.secret, &all).await;
}

#[tokio::test]
async fn at_most_twenty_endpoints_even_when_created_at_once() {
    let app = spawn_app_with(&[("UNIO_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let (_, admin) = app.admin("admin@example.com").await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..25 {
        let mut client = app.webhooks();
        let request = authed(
            pb::CreateWebhookRequest {
                url: format!("http://127.0.0.1:9/hook{i}"),
                event_types: vec![],
            },
            &admin,
        );
        calls.spawn(async move { client.create_webhook(request).await });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            Ok(_) => created += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(crate::helpers::reason(&status), "TOO_MANY_WEBHOOKS");
                refused += 1;
            }
        }
    }
    assert_eq!((created, refused), (20, 5));
}
