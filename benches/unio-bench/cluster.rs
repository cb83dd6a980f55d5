//! Cluster benchmark (DESIGN §9): two `unio` nodes on one SQLite file and
//! one `redis-server` (Debian's; the test command installs it), next to a
//! single node measured in the same run.
//!
//! - Fan-out across nodes: rooms of 100 and 1,000 with half the
//!   participants on each node and the publisher on the first; the time
//!   from a `media_state` change to the last receiver (every event goes
//!   through the room's log in Redis, the publisher's own node included).
//! - Throughput per node: 100 rooms of two, one participant on each node,
//!   each sending signals to the other with eight in flight
//!   (`UNIO_BENCH_WINDOW`; a closed loop: what the nodes sustain, not how
//!   a flood collapses); signals delivered per second, per node, against
//!   the same load on one node. On a machine whose cores the nodes, Redis
//!   and the load share, the raw ratio mostly measures that sharing; the
//!   ratio per CPU-second of the nodes, counted over the measured seconds
//!   only (not the joins), is printed next to it.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use unio::proto::pb::{self, client_event, server_event::Event};

use super::{
    Report,
    common::{Server, channel, cpu_secs, open_meeting, room_channel, user},
    rooms::{Participant, fan_out_latencies, join, percentile},
};

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir().ok()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            child,
            port,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const NODE_ENV: [(&str, &str); 2] = [
    ("UNIO_ROOM_QUEUE", "4096"),
    ("UNIO_ROOM_SIGNAL_RATE", "100000"),
];

/// Two nodes on `redis`, the second on the first's database and data.
fn two_nodes(redis: &Redis) -> (Server, Server) {
    let url = redis.url();
    let mut env = NODE_ENV.to_vec();
    env.push(("UNIO_REDIS_URL", &url));
    let a = Server::start(&env);
    let database = format!("sqlite://{}/unio.db", a.data_dir().display());
    let data = a.data_dir().display().to_string();
    env.extend([
        ("UNIO_DATABASE_URL", database.as_str()),
        ("UNIO_DATA_DIR", &data),
    ]);
    let b = Server::start(&env);
    (a, b)
}

/// `size` participants of a new meeting, spread over `addrs`.
async fn room<T: Send + 'static>(
    addrs: &[&str],
    host: &str,
    tokens: &[String],
    size: usize,
    then: impl Fn(Participant) -> T + Clone + Send + Sync + 'static,
) -> Vec<T> {
    let mut channels = Vec::new();
    for i in 0..size.div_ceil(100).max(addrs.len()) {
        channels.push(room_channel(addrs[i % addrs.len()]).await);
    }
    let meeting = open_meeting(&channels[0], host).await;
    let mut people = Vec::with_capacity(size);
    for chunk in (0..size).collect::<Vec<_>>().chunks(32) {
        let joins: Vec<_> = chunk
            .iter()
            .map(|&n| {
                // Alternate nodes participant by participant in a small
                // room, a hundred at a time in a large one: a connection
                // being joined on must not be one whose earlier streams
                // already hold unread presence events up to its HTTP/2
                // window.
                let per = if size <= 100 { 1 } else { 100 };
                let channel = channels[(n / per) % channels.len()].clone();
                let token = tokens[n % tokens.len()].clone();
                let meeting = meeting.clone();
                let then = then.clone();
                tokio::spawn(async move { then(join(&channel, &token, &meeting).await) })
            })
            .collect();
        for j in joins {
            people.push(j.await.unwrap());
        }
        if std::env::var("UNIO_BENCH_DEBUG").is_ok() {
            eprintln!("joined {}", people.len());
        }
    }
    people
}

async fn fan_out(
    addrs: &[&str],
    host: &str,
    tokens: &[String],
    size: usize,
    samples: usize,
) -> (f64, f64) {
    let (seen, seen_rx) = mpsc::unbounded_channel();
    let mut people = room(addrs, host, tokens, size, move |p| p.read(seen.clone())).await;
    let publisher = people.remove(0);
    let latencies = fan_out_latencies(publisher, people, seen_rx, samples).await;
    (
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    )
}

/// Signals each sender keeps in flight by default: a closed loop, so that
/// the rate is what the nodes sustain rather than how a flood collapses.
/// `UNIO_BENCH_WINDOW` sets another.
const WINDOW: usize = 8;

/// Signals delivered per second in `rooms` rooms of two (the pair split
/// over `addrs`), each sender keeping `window` in flight, and how far the
/// CPU seconds `cpu` reads (the nodes', Redis's) went up over the same
/// `secs`: the joins and the warm-up are not counted.
async fn signal_rate(
    addrs: &[&str],
    host: &str,
    tokens: &[String],
    rooms: usize,
    window: usize,
    secs: f64,
    cpu: impl Fn() -> [f64; 3],
) -> (f64, [f64; 3]) {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    let mut pairs = Vec::new();
    for _ in 0..rooms {
        let mut two = room(addrs, host, tokens, 2, |p| p).await;
        let b = two.pop().unwrap();
        let a = two.pop().unwrap();
        pairs.push((a, b));
    }
    // Let every node hear of every join.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 1.0);
    let mut tasks = Vec::new();
    for (sender, mut receiver) in pairs {
        let to = receiver.id.clone();
        let (permit_tx, mut permits) = mpsc::unbounded_channel::<()>();
        for _ in 0..window {
            permit_tx.send(()).unwrap();
        }
        tasks.push(tokio::spawn(async move {
            let signal = pb::ClientEvent {
                request_id: String::new(),
                event: Some(client_event::Event::Signal(pb::OutgoingSignal {
                    to_participant_id: to,
                    payload: Some(pb::outgoing_signal::Payload::IceCandidate(
                        pb::IceCandidate {
                            candidate: "candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host"
                                .into(),
                            sdp_mid: "0".into(),
                            sdp_mline_index: 0,
                        },
                    )),
                })),
            };
            while let Ok(Some(())) = tokio::time::timeout_at(deadline.into(), permits.recv()).await
            {
                if sender.tx.send(signal.clone()).await.is_err() {
                    break;
                }
            }
            drop(sender);
        }));
        let delivered = delivered.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(Ok(event))) =
                tokio::time::timeout_at(deadline.into(), receiver.events.next()).await
            {
                if matches!(event.event, Some(Event::Signal(_))) {
                    let _ = permit_tx.send(());
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Warm up, then count over `secs`.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (count, cpu_before, started) = (delivered.load(Ordering::Relaxed), cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let count = delivered.load(Ordering::Relaxed) - count;
    let (cpu_after, elapsed) = (cpu(), started.elapsed().as_secs_f64());
    for t in tasks {
        let _ = t.await;
    }
    let used = |i: usize| (cpu_after[i] - cpu_before[i]) / elapsed * secs;
    (count as f64 / elapsed, [used(0), used(1), used(2)])
}

async fn tokens(addr: &str) -> Vec<String> {
    let setup = channel(addr).await;
    let mut tokens = Vec::new();
    for n in 0..8 {
        tokens.push(user(&setup, n).await);
    }
    tokens
}

pub async fn run(report: &mut Report, quick: bool) {
    let Some(redis) = Redis::start() else {
        report.row(
            "cluster".into(),
            "skipped: redis-server is not installed (scripts/test installs it)".into(),
            "",
        );
        return;
    };
    let samples = if quick { 20 } else { 100 };
    let secs = if quick { 1.0 } else { 3.0 };
    let sizes: &[usize] = match std::env::var("UNIO_BENCH_SIZES") {
        Ok(v) => &*Vec::leak(v.split(',').filter_map(|s| s.parse().ok()).collect()),
        Err(_) if quick => &[100],
        Err(_) => &[100, 1_000],
    };

    let single = Server::start(&NODE_ENV);
    let single_tokens = tokens(&single.addr).await;
    let (a, b) = two_nodes(&redis);
    let cluster_tokens = tokens(&a.addr).await;
    let both = [a.addr.as_str(), b.addr.as_str()];

    for &size in sizes {
        let (p50, p99) = fan_out(
            &[&single.addr],
            &single_tokens[0],
            &single_tokens,
            size,
            samples,
        )
        .await;
        report.row(
            format!("fan-out to {size}, one node ({samples} samples)"),
            format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
            "",
        );
        let (c50, c99) = fan_out(&both, &cluster_tokens[0], &cluster_tokens, size, samples).await;
        report.row(
            format!("fan-out to {size}, two nodes (half on each, via Redis)"),
            format!(
                "p50 {c50:.2} ms, p99 {c99:.2} ms ({:.2}x one node's p99)",
                c99 / p99
            ),
            "p99 <= 2x one node's",
        );
    }

    let rooms = 100;
    let window = std::env::var("UNIO_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WINDOW)
        .max(1);
    let (one, [one_cpu, ..]) = signal_rate(
        &[&single.addr],
        &single_tokens[0],
        &single_tokens,
        rooms,
        window,
        secs,
        || [single.cpu_secs(), 0.0, 0.0],
    )
    .await;
    drop(single);
    let (two, [cpu_a, cpu_b, redis_cpu]) = signal_rate(
        &both,
        &cluster_tokens[0],
        &cluster_tokens,
        rooms,
        window,
        secs,
        || [a.cpu_secs(), b.cpu_secs(), cpu_secs(redis.child.id())],
    )
    .await;
    // Signals per CPU-second of the nodes, over the counted seconds only.
    let two_cpu = cpu_a + cpu_b;
    let per_cpu_one = one * secs / one_cpu.max(1e-3);
    let per_cpu_two = two * secs / two_cpu.max(1e-3);
    report.row(
        format!("signals/s, {rooms} rooms of 2 ({window} in flight each), one node"),
        format!("{one:.0}/s ({per_cpu_one:.0} per node CPU-second, {one_cpu:.2} CPU-s)"),
        "",
    );
    let per_node = two / 2.0;
    report.row(
        format!("signals/s, {rooms} rooms of 2 ({window} in flight each) across two nodes"),
        format!(
            "{two:.0}/s, {per_node:.0} per node ({:.2}x one node; per node CPU-second {per_cpu_two:.0}, {:.2}x; nodes {two_cpu:.2} CPU-s: the senders' {cpu_a:.2}, the receivers' {cpu_b:.2}; Redis {redis_cpu:.2})",
            per_node / one,
            per_cpu_two / per_cpu_one,
        ),
        "per node >= 0.8x one node",
    );
}
