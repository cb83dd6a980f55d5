//! Trace export: the `unio` binary with `UNIO_OTLP_ENDPOINT` sends its
//! spans to a fake OpenTelemetry collector on loopback over real OTLP/gRPC.

use std::{process::Stdio, time::Duration};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use unio::proto::pb;

use crate::helpers::spawn_app;

/// Passes on the names of the spans of every export.
struct Collector(mpsc::UnboundedSender<Vec<String>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let names = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|span| span.name.clone())
            .collect();
        let _ = self.0.send(names);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn spans_reach_an_otlp_collector() {
    let (tx, mut exported) = mpsc::unbounded_channel();
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = collector.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(collector)),
    );

    let app = spawn_app().await;
    let log = app.data_dir.path().join("unio-otlp.log");
    let mut child = crate::lifecycle::unio_command(&app)
        .env("UNIO_ADDR", "127.0.0.1:0")
        .env("UNIO_OTLP_ENDPOINT", format!("http://{collector_addr}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env(
            "UNIO_LOG",
            "info,opentelemetry=debug,opentelemetry_sdk=debug,opentelemetry_otlp=debug",
        )
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Port 0: the log says which port it bound (in a whole line: the
    // last one may still be being written).
    let listening = |log: &str| {
        log.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .find_map(crate::helpers::listened_on)
    };
    crate::helpers::eventually("the binary listens", || async {
        listening(&std::fs::read_to_string(&log).unwrap_or_default()).is_some()
    })
    .await;
    let addr = listening(&std::fs::read_to_string(&log).unwrap()).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = endpoint.connect().await.unwrap();
    let mut auth = pb::auth_service_client::AuthServiceClient::new(channel);
    // A call a second until one's span arrives: the exporter connects
    // lazily, and a batch sent before it could is lost, not retried.
    let mut all: std::collections::BTreeMap<String, usize> = Default::default();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            // Answered by its handler (its span) without any state that
            // other tests could have changed.
            let refused = auth
                .verify_email(pb::VerifyEmailRequest {
                    token: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
            let found = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(names) = exported.recv().await {
                    for n in &names {
                        *all.entry(n.clone()).or_default() += 1;
                    }
                    if names.iter().any(|name| name == "verify_email") {
                        return names;
                    }
                }
                panic!("the collector stopped");
            })
            .await;
            if let Ok(names) = found {
                return names;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no verify_email span exported within 20 s; got {all:?} the server said:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(seen.contains(&"verify_email".to_owned()));

    // Connected now, every call's span follows — none silently filtered
    // away (tokio-rs/tracing#2519 dropped them while sqlx queries ran).
    const CALLS: usize = 20;
    for _ in 0..CALLS {
        auth.verify_email(pb::VerifyEmailRequest {
            token: String::new(),
        })
        .await
        .unwrap_err();
    }
    let mut arrived = 0;
    let all_arrived = tokio::time::timeout(Duration::from_secs(10), async {
        while arrived < CALLS {
            let names = exported.recv().await.expect("the collector stopped");
            arrived += names.iter().filter(|name| *name == "verify_email").count();
        }
    })
    .await;
    assert!(
        all_arrived.is_ok(),
        "{arrived} of {CALLS} verify_email spans exported within 10 s"
    );
    child.start_kill().unwrap();
}
