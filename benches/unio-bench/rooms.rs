//! Room benchmark: fan-out latency and memory per idle stream, against the
//! real `unio` binary on loopback.
//!
//! The server runs as a child process (release build, SQLite in a temp dir)
//! so its memory can be read from /proc. The benchmark is the client: it
//! signs up a few users and opens many Connect streams (a user may join
//! from many devices, each its own participant).
//!
//! - Fan-out latency: in rooms of 10, 100 and 1,000 participants, one
//!   participant publishes a `media_state` change; the time until the last
//!   of the others has received it is one sample (p50, p99 over samples).
//! - Memory per idle stream: server RSS growth after opening 1,000 and then
//!   10,000 idle streams (in rooms of 100), divided by the number of streams.

use std::time::{Duration, Instant};

use super::{
    Report,
    common::{Server, authed, channel, open_meeting, room_channel, user},
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Streaming, transport::Channel};
use unio::proto::pb::{
    self, client_event, room_service_client::RoomServiceClient, server_event::Event,
};

/// Streams per HTTP/2 connection (the server allows 256 in flight each).
const STREAMS_PER_CONNECTION: usize = 100;

pub struct Participant {
    pub tx: mpsc::Sender<pb::ClientEvent>,
    pub events: Streaming<pb::ServerEvent>,
    pub id: String,
}

/// A participant whose events a task reads from the moment it joined,
/// telling `seen` when each `media_state` change arrives. Read at once,
/// not after the room filled: h2 (0.4.20 on) ends a connection whose small
/// DATA frames pile up unread, and a join storm nobody reads is that.
pub struct Reading {
    pub tx: mpsc::Sender<pb::ClientEvent>,
    reader: tokio::task::JoinHandle<()>,
    /// Pings as a client does (the server ends a silent stream after
    /// `UNIO_PING_TIMEOUT`; a 3,000-person join storm takes a while).
    pinger: tokio::task::JoinHandle<()>,
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.reader.abort();
        self.pinger.abort();
    }
}

impl Participant {
    pub fn read(self, seen: mpsc::UnboundedSender<Instant>) -> Reading {
        let mut events = self.events;
        let reader = tokio::spawn(async move {
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        if let Some(Event::MediaState(_)) = event.event {
                            let _ = seen.send(Instant::now());
                        }
                    }
                    Some(Err(status)) => {
                        eprintln!("a reader's stream failed: {status}");
                        return;
                    }
                    None => return,
                }
            }
        });
        let tx = self.tx.clone();
        let pinger = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            every.tick().await;
            loop {
                every.tick().await;
                let ping = pb::ClientEvent {
                    request_id: String::new(),
                    event: Some(client_event::Event::Ping(pb::Ping {})),
                };
                if tx.send(ping).await.is_err() {
                    return;
                }
            }
        });
        Reading {
            tx: self.tx,
            reader,
            pinger,
        }
    }
}

pub async fn join(channel: &Channel, token: &str, meeting: &str) -> Participant {
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::ClientEvent {
        request_id: String::new(),
        event: Some(client_event::Event::Join(pb::JoinRoom {
            meeting_id: meeting.into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut events = RoomServiceClient::new(channel.clone())
        .connect(authed(ReceiverStream::new(rx), token))
        .await
        .unwrap()
        .into_inner();
    let first = events.next().await.unwrap().unwrap();
    let Some(Event::Joined(joined)) = first.event else {
        panic!("not joined: {first:?}")
    };
    Participant {
        tx,
        events,
        id: joined.participant_id,
    }
}

/// Opens `count` participants in `meeting`, spread over connections and
/// users, 32 joins at a time.
async fn join_many<T: Send + 'static>(
    channels: &[Channel],
    tokens: &[String],
    meeting: &str,
    count: usize,
    offset: usize,
    then: impl Fn(Participant) -> T + Clone + Send + Sync + 'static,
) -> Vec<T> {
    let mut out = Vec::with_capacity(count);
    let mut pending = Vec::new();
    for i in 0..count {
        let n = offset + i;
        let channel = channels[n / STREAMS_PER_CONNECTION].clone();
        let token = tokens[n % tokens.len()].clone();
        let meeting = meeting.to_owned();
        let then = then.clone();
        pending.push(tokio::spawn(async move {
            then(join(&channel, &token, &meeting).await)
        }));
        if pending.len() == 32 {
            for p in pending.drain(..) {
                out.push(p.await.unwrap());
            }
        }
    }
    for p in pending {
        out.push(p.await.unwrap());
    }
    out
}

/// Sorted times from `publisher`'s media_state change to the last of
/// `people` receiving it (as `seen` hears), one per sample.
pub async fn fan_out_latencies(
    publisher: Reading,
    people: Vec<Reading>,
    mut seen_rx: mpsc::UnboundedReceiver<Instant>,
    samples: usize,
) -> Vec<Duration> {
    let size = people.len() + 1;
    // Let the join storm settle.
    tokio::time::sleep(Duration::from_millis(500 + size as u64)).await;
    while seen_rx.try_recv().is_ok() {}

    let mut latencies = Vec::with_capacity(samples);
    for k in 0..samples {
        let started = Instant::now();
        publisher
            .tx
            .send(pb::ClientEvent {
                request_id: String::new(),
                event: Some(client_event::Event::MediaState(pb::MediaState {
                    audio_enabled: k % 2 == 0,
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
        let mut last = started;
        for _ in 0..size - 1 {
            last = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
                .await
                .expect("fan-out within 10 s")
                .unwrap();
        }
        latencies.push(last - started);
        // Stay under the 10 media_state events per second limit.
        tokio::time::sleep(Duration::from_millis(110)).await;
    }
    latencies.sort();
    drop(people);
    drop(publisher);
    latencies
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn fan_out(
    report: &mut Report,
    addr: &str,
    tokens: &[String],
    host: &str,
    size: usize,
    samples: usize,
) {
    let connections = size.div_ceil(STREAMS_PER_CONNECTION);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(room_channel(addr).await);
    }
    let meeting = open_meeting(&channels[0], host).await;
    let (seen, seen_rx) = mpsc::unbounded_channel();
    let joining = Instant::now();
    let mut people = join_many(&channels, tokens, &meeting, size, 0, move |p| {
        p.read(seen.clone())
    })
    .await;
    if std::env::var("UNIO_BENCH_DEBUG").is_ok() {
        eprintln!("{size} joined in {:?}", joining.elapsed());
    }
    let publisher = people.remove(0);
    let latencies = fan_out_latencies(publisher, people, seen_rx, samples).await;
    report.row(
        format!("room fan-out to {size} ({samples} samples, publish -> last receiver)"),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        ),
        if size == 3_000 { "p99 < 50 ms" } else { "" },
    );
}

/// Streams held before the measurement starts: every path (allocator
/// arenas, connections, the database pool) is warm, and the allocator has
/// had the traffic it needs to return what start-up freed (mimalloc
/// purges freed pages lazily, on later allocations: a baseline taken
/// earlier includes start-up's garbage, such as password hashing's
/// memory, and the next streams seem to cost nothing).
const IDLE_BASELINE: usize = 1_000;

/// Memory per idle stream, as the slope: the server's RSS grows by this
/// much for each stream added after [`IDLE_BASELINE`]. A difference
/// against an empty server would charge the streams with whatever the
/// allocator still holds from start-up, or credit them with what it
/// returns meanwhile.
async fn idle_memory(
    report: &mut Report,
    server: &Server,
    tokens: &[String],
    host: &str,
    targets: &[usize],
    room_size: usize,
) {
    let mut channels: Vec<Channel> = Vec::new();
    let mut held: Vec<Participant> = Vec::new();
    let mut base = None;
    for &target in std::iter::once(&IDLE_BASELINE).chain(targets) {
        while held.len() < target {
            let needed = target.div_ceil(STREAMS_PER_CONNECTION);
            while channels.len() < needed {
                channels.push(room_channel(&server.addr).await);
            }
            let meeting = open_meeting(&channels[0], host).await;
            let batch = join_many(&channels, tokens, &meeting, room_size, held.len(), |p| p).await;
            held.extend(batch);
        }
        // Drain the presence events the joins produced, then measure idle.
        for p in held.iter_mut() {
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(1), p.events.next()).await
            {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.rss_kib();
        let Some(base) = base else {
            base = Some(rss);
            continue;
        };
        let added = held.len() - IDLE_BASELINE;
        let per_stream = (rss.saturating_sub(base)) as f64 * 1024.0 / added as f64;
        report.row(
            format!("idle streams: {added} in rooms of {room_size} (after {IDLE_BASELINE})"),
            format!(
                "{:.2} KiB per stream (server RSS {:.1} MiB)",
                per_stream / 1024.0,
                rss as f64 / 1024.0
            ),
            if room_size == 100 { "<= 8 KiB" } else { "" },
        );
    }
}

/// A server for rooms, with eight users' tokens (the first hosts).
async fn room_server(extra_env: &[(&str, &str)]) -> (Server, Vec<String>) {
    let mut env = vec![("UNIO_ROOM_QUEUE", "4096")];
    env.extend_from_slice(extra_env);
    let server = Server::start(&env);
    let setup = channel(&server.addr).await;
    let mut tokens = Vec::new();
    for n in 0..8 {
        tokens.push(user(&setup, n).await);
    }
    (server, tokens)
}

/// Fan-out at each room size.
pub async fn fan_outs(report: &mut Report, quick: bool) {
    let (server, tokens) = room_server(&[]).await;
    let host = tokens[0].clone();
    let samples = if quick { 20 } else { 100 };
    let sizes: &[usize] = match std::env::var("UNIO_BENCH_SIZES") {
        Ok(v) => &*Vec::leak(v.split(',').filter_map(|s| s.parse().ok()).collect()),
        Err(_) if quick => &[10, 100, 1_000],
        Err(_) => &[10, 100, 1_000, 3_000],
    };
    for &size in sizes {
        fan_out(report, &server.addr, &tokens, &host, size, samples).await;
    }
}

/// Idle memory per stream, on fresh servers.
pub async fn idle(report: &mut Report, quick: bool) {
    let targets: &[usize] = if quick { &[2_000] } else { &[2_000, 11_000] };
    // What an idle stream costs depends on its room: `joined` carries
    // the participant list. Each size gets a fresh server, so memory
    // freed by earlier rooms cannot hide the cost.
    for room_size in [10, 100] {
        // mimalloc returns freed pages at once, not lazily on later
        // allocations: RSS then follows what is live, and the slope
        // measures the streams rather than when the purges happen to run.
        let (server, tokens) = room_server(&[("MIMALLOC_PURGE_DELAY", "0")]).await;
        let host = tokens[0].clone();
        idle_memory(report, &server, &tokens, &host, targets, room_size).await;
    }
}
