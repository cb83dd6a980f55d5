//! Unary calls under load: requests/s, mean, p50 and p99 at 1, 16 and 256
//! concurrent calls over 8 HTTP/2 connections, for the health check (the
//! floor), GetMe, GetMeeting and SendMessage; then GetMe over gRPC-Web on
//! HTTP/2 and on HTTP/1.1.
//!
//! The client is hyper with pre-encoded request bodies, not a generated
//! tonic client: like h2load it costs the shared cores little, so the
//! figures are the server's. Each cell runs for a fixed time after a
//! warm-up, split into turns with the other cells of its concurrency so
//! that a ratio compares neighbours; every call's status is checked (a
//! failed call aborts the bench rather than counting as fast).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use unio::proto::pb;

use super::Report;

/// Connections the calls share (as h2load -c 8).
const CONNECTIONS: usize = 8;

#[derive(Clone)]
enum Conn {
    H2(http2::SendRequest<Full<Bytes>>),
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    Grpc,
    GrpcWeb,
}

async fn connect_h2(addr: &str) -> Conn {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    Conn::H2(sender)
}

async fn connect_h1(addr: &str) -> Conn {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    Conn::H1(Arc::new(tokio::sync::Mutex::new(sender)))
}

/// One call of the load: a method path and its framed request.
#[derive(Clone)]
pub struct Call {
    pub name: &'static str,
    pub path: &'static str,
    pub body: Bytes,
}

/// A message as one gRPC (and gRPC-Web) data frame.
pub fn frame(message: &impl Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out.into()
}

/// Sends one call and checks that it succeeded (grpc-status 0).
async fn once(conn: &Conn, wire: Wire, addr: &str, token: &str, call: &Call) {
    let request = hyper::Request::post(format!("http://{addr}{}", call.path))
        .header(
            "content-type",
            match wire {
                Wire::Grpc => "application/grpc",
                Wire::GrpcWeb => "application/grpc-web+proto",
            },
        )
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(call.body.clone()))
        .unwrap();
    let response = match conn {
        Conn::H2(sender) => sender.clone().send_request(request).await,
        Conn::H1(sender) => {
            let mut sender = sender.lock().await;
            sender.ready().await.unwrap();
            sender.send_request(request).await
        }
    }
    .expect("the server answers");
    let header_status = response.headers().get("grpc-status").cloned();
    let body = response.into_body().collect().await.unwrap();
    let ok = match (header_status, wire) {
        (Some(status), _) => status == "0",
        (None, Wire::Grpc) => body
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .is_some_and(|s| s == "0"),
        (None, Wire::GrpcWeb) => web_status_ok(&body.to_bytes()),
    };
    assert!(ok, "{} failed", call.name);
}

/// Whether a gRPC-Web body's trailer frame says grpc-status 0.
fn web_status_ok(mut body: &[u8]) -> bool {
    while body.len() >= 5 {
        let flags = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let Some(frame) = body.get(5..5 + len) else {
            return false;
        };
        if flags & 0x80 != 0 {
            return String::from_utf8_lossy(frame)
                .lines()
                .any(|line| line.trim().eq_ignore_ascii_case("grpc-status:0"));
        }
        body = &body[5 + len..];
    }
    false
}

/// What one cell measured.
#[derive(Clone, Copy)]
pub struct Cell {
    pub rate: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Rounds a cell's time is split into, the cells of one concurrency
/// taking turns: a shared machine's speed drifts over the minutes of a
/// run, and this way the drift falls on every row of a ratio alike.
const ROUNDS: u32 = 3;

/// One row of a table: which call, on which wire, over which connections.
struct Row<'a> {
    conns: &'a [Conn],
    wire: Wire,
    call: &'a Call,
}

/// `concurrency` callers of each row for `secs` in all (after a warm-up),
/// the rows taking turns in [`ROUNDS`] rounds.
async fn cells(
    rows: &[Row<'_>],
    addr: &str,
    token: &str,
    concurrency: usize,
    secs: f64,
) -> Vec<Cell> {
    for row in rows {
        sample(row, addr, token, concurrency, Duration::from_millis(300)).await;
    }
    let share = Duration::from_secs_f64(secs / f64::from(ROUNDS));
    let mut all: Vec<(Vec<u32>, Duration)> =
        rows.iter().map(|_| (Vec::new(), Duration::ZERO)).collect();
    for _ in 0..ROUNDS {
        for (row, (latencies, elapsed)) in rows.iter().zip(&mut all) {
            let (more, took) = sample(row, addr, token, concurrency, share).await;
            latencies.extend(more);
            *elapsed += took;
        }
    }
    all.into_iter()
        .map(|(latencies, elapsed)| summarize(latencies, elapsed))
        .collect()
}

/// The latencies (µs) of `concurrency` callers of `row` for `duration`,
/// and how long they took.
async fn sample(
    row: &Row<'_>,
    addr: &str,
    token: &str,
    concurrency: usize,
    duration: Duration,
) -> (Vec<u32>, Duration) {
    let mut tasks = Vec::new();
    let deadline = Instant::now() + duration;
    for c in 0..concurrency {
        let (conn, addr, token, call, wire) = (
            row.conns[c % row.conns.len()].clone(),
            addr.to_owned(),
            token.to_owned(),
            row.call.clone(),
            row.wire,
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                once(&conn, wire, &addr, &token, &call).await;
                latencies.push(started.elapsed().as_micros() as u32);
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (all, started.elapsed())
}

fn summarize(mut latencies: Vec<u32>, elapsed: Duration) -> Cell {
    latencies.sort_unstable();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64 / 1e3;
    let mean = latencies.iter().map(|&l| l as f64).sum::<f64>() / latencies.len() as f64 / 1e3;
    Cell {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        mean_ms: mean,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

/// The unary table and the gRPC-Web rows.
pub async fn run(report: &mut Report, addr: &str, token: &str, meeting_id: &str, secs: f64) {
    let calls = [
        Call {
            name: "health",
            path: "/grpc.health.v1.Health/Check",
            body: frame(&tonic_health::pb::HealthCheckRequest::default()),
        },
        Call {
            name: "GetMe",
            path: "/unio.v1.UserService/GetMe",
            body: frame(&pb::GetMeRequest {}),
        },
        Call {
            name: "GetMeeting",
            path: "/unio.v1.MeetingService/GetMeeting",
            body: frame(&pb::GetMeetingRequest {
                meeting_id: meeting_id.into(),
            }),
        },
        Call {
            name: "SendMessage",
            path: "/unio.v1.ChatService/SendMessage",
            body: frame(&pb::SendMessageRequest {
                meeting_id: meeting_id.into(),
                text: "hello from the bench".into(),
                client_message_id: String::new(),
            }),
        },
    ];
    let mut h2 = Vec::new();
    for _ in 0..CONNECTIONS {
        h2.push(connect_h2(addr).await);
    }
    let mut h1 = Vec::new();
    for _ in 0..16 {
        h1.push(connect_h1(addr).await);
    }
    println!("unary: {CONNECTIONS} HTTP/2 connections, {secs} s per cell in {ROUNDS} turns");
    // The gRPC-Web rows join the native rows of their concurrency: HTTP/2
    // over the same connections at 16 and 256; HTTP/1.1 with one
    // connection per caller (a browser's way), at 16.
    let getme = &calls[1];
    for concurrency in [1, 16, 256] {
        let mut rows: Vec<(Row, &str)> = calls
            .iter()
            .map(|call| {
                (
                    Row {
                        conns: &h2,
                        wire: Wire::Grpc,
                        call,
                    },
                    "gRPC",
                )
            })
            .collect();
        if concurrency > 1 {
            rows.push((
                Row {
                    conns: &h2,
                    wire: Wire::GrpcWeb,
                    call: getme,
                },
                "gRPC-Web h2",
            ));
        }
        if concurrency == 16 {
            rows.push((
                Row {
                    conns: &h1,
                    wire: Wire::GrpcWeb,
                    call: getme,
                },
                "gRPC-Web h1.1",
            ));
        }
        let (rows, wires): (Vec<Row>, Vec<&str>) = rows.into_iter().unzip();
        let measured = cells(&rows, addr, token, concurrency, secs).await;
        let (floor, native_getme) = (measured[0].rate, measured[1].rate);
        for ((row, wire), c) in rows.iter().zip(wires).zip(measured) {
            let against = if row.wire == Wire::GrpcWeb {
                native_getme
            } else {
                floor
            };
            report.unary(row.call.name, wire, concurrency, c, c.rate / against);
        }
    }
}
