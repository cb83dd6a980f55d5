//! Prometheus metrics on `UNIO_ADMIN_ADDR` (`GET /metrics`).
//!
//! Kept on a separate, loopback-by-default listener so that scraping needs
//! no token and the public port exposes nothing but gRPC. The families live
//! in a `prometheus-client` registry and are served by axum, so the
//! exposition format, label escaping and the accept loop's handling of
//! errors such as EMFILE are the maintained libraries' job, not ours.
//!
//! [`Metrics`] owns every family and is the one API the rest of the server
//! records through: [`crate::telemetry::CallLogLayer`] reports calls and
//! open streams; the room hub, mailer and notifications report their own
//! events; gauges that another part owns (the database pool, the password
//! hash queue) are read at scrape time through [`Metrics::on_scrape`].

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header::CONTENT_TYPE},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use tokio::net::TcpListener;
use tonic::Code;

/// Upper bounds of the latency buckets, in seconds: 0.5 ms (a cached unary
/// call) to 10 s (a call stuck on a lock or the hash queue). Longer calls
/// (streams) land in `+Inf` and still count in `_sum`.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label of calls to paths this server does not serve.
const UNKNOWN_METHOD: &str = "unknown";

/// A gRPC path, shared with the set of known ones so a call clones an `Arc`
/// instead of allocating the label.
type Method = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: Method,
    code: GrpcCode,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: Method,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    kind: StreamKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: PoolState,
}

/// A gRPC status code, labelled by its name (`Ok`, `NotFound`) as before
/// the move to `prometheus-client`, so dashboards keep working.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct GrpcCode(Code);

impl EncodeLabelValue for GrpcCode {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_fmt(encoder, format_args!("{:?}", self.0))
    }
}

/// What a long-lived response stream is for.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StreamKind {
    /// `RoomService.Connect` and `RoomService.Subscribe`.
    Room,
    /// `NotificationService.WatchNotifications`.
    NotificationWatch,
    /// `FileService.DownloadFile`.
    Download,
}

impl StreamKind {
    const ALL: [StreamKind; 3] = [Self::Room, Self::NotificationWatch, Self::Download];

    /// The kind of stream the RPC at `path` answers with, if it streams.
    pub fn of(path: &str) -> Option<Self> {
        match path {
            "/unio.v1.RoomService/Connect" | "/unio.v1.RoomService/Subscribe" => Some(Self::Room),
            "/unio.v1.NotificationService/WatchNotifications" => Some(Self::NotificationWatch),
            "/unio.v1.FileService/DownloadFile" => Some(Self::Download),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Room => "room",
            Self::NotificationWatch => "notification_watch",
            Self::Download => "download",
        }
    }
}

impl EncodeLabelValue for StreamKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.label(), encoder)
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum PoolState {
    InUse,
    Idle,
}

impl EncodeLabelValue for PoolState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let label = match self {
            Self::InUse => "in_use",
            Self::Idle => "idle",
        };
        EncodeLabelValue::encode(&label, encoder)
    }
}

/// Reads a gauge that another part of the server owns, at each scrape.
type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

pub struct Metrics {
    /// Paths of the RPCs this server serves; anything else is counted as
    /// "unknown", so made-up paths cannot grow the families.
    known: HashSet<Method>,
    unknown: Method,
    /// Holds a handle to every family below (handles share their values),
    /// and encodes them for a scrape.
    registry: Registry,
    in_flight: Gauge,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    streams: Family<StreamLabels, Gauge>,
    rooms: Gauge,
    participants: Gauge,
    queue_drops: Counter,
    resumes: Counter,
    db_pool: Family<PoolLabels, Gauge>,
    mails_sent: Counter,
    mails_failed: Counter,
    notifications_sent: Counter,
    hash_queue: Gauge,
    /// Run before each scrape. A std Mutex: held while the samplers run,
    /// which only read atomics and never await.
    samplers: Mutex<Vec<Sampler>>,
}

impl Metrics {
    pub fn new(known: HashSet<String>) -> Self {
        let mut registry = Registry::with_prefix("unio");
        let in_flight = Gauge::default();
        registry.register("rpc_in_flight", "Calls in progress", in_flight.clone());
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "rpc_calls",
            "Finished calls by method and gRPC code",
            calls.clone(),
        );
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "rpc_duration",
            "Time from request to the end of the response, by method",
            Unit::Seconds,
            latency.clone(),
        );
        let streams = Family::<StreamLabels, Gauge>::default();
        for kind in StreamKind::ALL {
            // Present at zero from the start, so a dashboard shows a line.
            streams.get_or_create(&StreamLabels { kind }).set(0);
        }
        registry.register(
            "streams_open",
            "Response streams open now, by kind",
            streams.clone(),
        );
        let rooms = Gauge::default();
        registry.register("rooms_open", "Rooms live in the hub", rooms.clone());
        let participants = Gauge::default();
        registry.register(
            "room_participants",
            "Participants in live rooms",
            participants.clone(),
        );
        let queue_drops = Counter::default();
        registry.register(
            "room_queue_drops",
            "Sessions dropped because their outgoing queue was full",
            queue_drops.clone(),
        );
        let resumes = Counter::default();
        registry.register(
            "room_resumes",
            "Room sessions resumed after a reconnect",
            resumes.clone(),
        );
        let db_pool = Family::<PoolLabels, Gauge>::default();
        for state in [PoolState::InUse, PoolState::Idle] {
            db_pool.get_or_create(&PoolLabels { state }).set(0);
        }
        registry.register(
            "db_pool_connections",
            "Database pool connections, in use or idle",
            db_pool.clone(),
        );
        let mails_sent = Counter::default();
        registry.register(
            "mails_sent",
            "Mails sent (over SMTP, or to the log by the console mailer)",
            mails_sent.clone(),
        );
        let mails_failed = Counter::default();
        registry.register(
            "mails_failed",
            "Mail deliveries that failed",
            mails_failed.clone(),
        );
        let notifications_sent = Counter::default();
        registry.register(
            "notifications_sent",
            "Notifications created for users",
            notifications_sent.clone(),
        );
        let hash_queue = Gauge::default();
        registry.register(
            "password_hash_queue_depth",
            "Calls waiting for an argon2 hash to start",
            hash_queue.clone(),
        );
        Self {
            known: known.into_iter().map(Method::from).collect(),
            unknown: Method::from(UNKNOWN_METHOD),
            registry,
            in_flight,
            calls,
            latency,
            streams,
            rooms,
            participants,
            queue_drops,
            resumes,
            db_pool,
            mails_sent,
            mails_failed,
            notifications_sent,
            hash_queue,
            samplers: Mutex::new(Vec::new()),
        }
    }

    /// Every `/package.Service/Method` in encoded descriptor sets.
    pub fn methods_of(descriptor_sets: &[&[u8]]) -> HashSet<String> {
        use prost::Message;
        let mut methods = HashSet::new();
        for encoded in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    for method in service.method {
                        methods.insert(format!(
                            "/{package}.{name}/{}",
                            method.name.unwrap_or_default()
                        ));
                    }
                }
            }
        }
        methods
    }

    /// The method label for `path`: itself if served here, else "unknown".
    fn method(&self, path: &str) -> Method {
        self.known.get(path).unwrap_or(&self.unknown).clone()
    }

    pub fn call_started(&self) {
        self.in_flight.inc();
    }

    pub fn call_finished(&self, method: &str, code: Code, elapsed: Duration) {
        self.in_flight.dec();
        let method = self.method(method);
        self.latency
            .get_or_create(&MethodLabels {
                method: method.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: GrpcCode(code),
            })
            .inc();
    }

    /// Counts a response stream of `kind` as open until the guard drops.
    pub fn stream_opened(self: &Arc<Self>, kind: StreamKind) -> OpenStream {
        self.streams.get_or_create(&StreamLabels { kind }).inc();
        OpenStream {
            metrics: self.clone(),
            kind,
        }
    }

    /// The rooms live in the hub and the participants in them.
    pub fn set_rooms(&self, rooms: usize, participants: usize) {
        self.rooms.set(gauge_value(rooms));
        self.participants.set(gauge_value(participants));
    }

    /// A session was dropped because its outgoing queue was full.
    pub fn room_queue_dropped(&self) {
        self.queue_drops.inc();
    }

    /// A session resumed after a reconnect.
    pub fn room_resumed(&self) {
        self.resumes.inc();
    }

    /// Connections of the database pool checked out, and idle in it.
    pub fn set_db_pool(&self, in_use: usize, idle: usize) {
        let set = |state, value| {
            self.db_pool
                .get_or_create(&PoolLabels { state })
                .set(gauge_value(value));
        };
        set(PoolState::InUse, in_use);
        set(PoolState::Idle, idle);
    }

    /// A mail was accepted by the SMTP server (or the console mailer).
    pub fn mail_sent(&self) {
        self.mails_sent.inc();
    }

    /// A mail delivery attempt failed.
    pub fn mail_failed(&self) {
        self.mails_failed.inc();
    }

    /// `count` notifications were created (one per recipient).
    pub fn notifications_sent(&self, count: u64) {
        self.notifications_sent.inc_by(count);
    }

    /// Calls waiting for an argon2 hash to start.
    pub fn set_password_queue(&self, depth: usize) {
        self.hash_queue.set(gauge_value(depth));
    }

    /// Runs `sample` before each scrape, to set gauges from state another
    /// part of the server owns (pool sizes, queue depths) without a timer.
    /// `sample` must be quick and must not call `on_scrape` or `render`.
    pub fn on_scrape(&self, sample: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.samplers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(sample));
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        for sample in self
            .samplers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            sample(self);
        }
        let mut out = String::new();
        if let Err(err) = prometheus_text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; a label that cannot be
            // encoded would be a bug here, so say so instead of hiding it.
            tracing::error!(%err, "encoding the metrics failed");
        }
        out
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One open response stream; takes itself off the gauge when dropped.
pub struct OpenStream {
    metrics: Arc<Metrics>,
    kind: StreamKind,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics
            .streams
            .get_or_create(&StreamLabels { kind: self.kind })
            .dec();
    }
}

/// Serves `GET /metrics` until the task is dropped; any other request is
/// answered 404. axum's accept loop backs off on errors such as EMFILE
/// instead of spinning.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route("/metrics", get(scrape).fallback(not_found))
        .fallback(not_found)
        .with_state(metrics);
    if let Err(err) = axum::serve(listener, app).await {
        tracing::error!(%err, "the metrics server stopped");
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        metrics.render(),
    )
}

async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// Binds the admin listener; `None` when metrics are turned off.
pub async fn bind(addr: Option<SocketAddr>) -> std::io::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => TcpListener::bind(addr).await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(Metrics::methods_of(&[crate::proto::FILE_DESCRIPTOR_SET]))
    }

    #[test]
    fn counts_calls_by_method_and_code() {
        let m = metrics();
        m.call_started();
        m.call_finished(
            "/made.Up/Path",
            Code::Unimplemented,
            Duration::from_millis(1),
        );
        m.call_started();
        m.call_finished(
            "/unio.v1.UserService/GetMe",
            Code::Ok,
            Duration::from_millis(3),
        );
        let text = m.render();
        assert!(
            text.contains(
                "unio_rpc_calls_total{method=\"/unio.v1.UserService/GetMe\",code=\"Ok\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("unio_rpc_in_flight 0\n"), "{text}");
        assert!(
            text.contains("unio_rpc_calls_total{method=\"unknown\",code=\"Unimplemented\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("made.Up"), "{text}");
    }

    #[test]
    fn a_call_fills_its_methods_latency_histogram() {
        let m = metrics();
        m.call_started();
        m.call_finished(
            "/unio.v1.UserService/GetMe",
            Code::Ok,
            Duration::from_millis(3),
        );
        let text = m.render();
        let method = "method=\"/unio.v1.UserService/GetMe\"";
        assert!(
            text.contains("# TYPE unio_rpc_duration_seconds histogram\n"),
            "{text}"
        );
        // 3 ms is above the 2.5 ms bucket and within the 5 ms one.
        for (le, count) in [("0.0025", 0), ("0.005", 1), ("10", 1), ("+Inf", 1)] {
            let line =
                format!("unio_rpc_duration_seconds_bucket{{{method},le=\"{le}\"}} {count}\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(
            text.contains(&format!("unio_rpc_duration_seconds_count{{{method}}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("unio_rpc_duration_seconds_sum{{{method}}} 0.003")),
            "{text}"
        );
    }

    #[test]
    fn open_streams_are_counted_until_dropped() {
        let m = Arc::new(metrics());
        let download = m.stream_opened(StreamKind::Download);
        let room = m.stream_opened(StreamKind::Room);
        let text = m.render();
        assert!(
            text.contains("unio_streams_open{kind=\"download\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("unio_streams_open{kind=\"room\"} 1\n"),
            "{text}"
        );
        drop((download, room));
        let text = m.render();
        assert!(
            text.contains("unio_streams_open{kind=\"download\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("unio_streams_open{kind=\"notification_watch\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn streaming_kinds_name_served_methods() {
        let known = Metrics::methods_of(&[crate::proto::FILE_DESCRIPTOR_SET]);
        let streaming: Vec<_> = known
            .iter()
            .filter(|path| StreamKind::of(path).is_some())
            .collect();
        assert_eq!(streaming.len(), 4, "{streaming:?}");
        assert_eq!(StreamKind::of("/unio.v1.UserService/GetMe"), None);
    }

    #[test]
    fn samplers_set_gauges_at_scrape() {
        let m = metrics();
        m.on_scrape(|m| {
            m.set_db_pool(2, 3);
            m.set_password_queue(4);
        });
        m.set_rooms(1, 5);
        m.room_queue_dropped();
        m.room_resumed();
        m.mail_sent();
        m.notifications_sent(3);
        let text = m.render();
        for line in [
            "unio_db_pool_connections{state=\"in_use\"} 2\n",
            "unio_db_pool_connections{state=\"idle\"} 3\n",
            "unio_password_hash_queue_depth 4\n",
            "unio_rooms_open 1\n",
            "unio_room_participants 5\n",
            "unio_room_queue_drops_total 1\n",
            "unio_room_resumes_total 1\n",
            "unio_mails_sent_total 1\n",
            "unio_mails_failed_total 0\n",
            "unio_notifications_sent_total 3\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
