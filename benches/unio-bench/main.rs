//! `unio-bench`: every performance figure of the README in one run, one
//! table.
//!
//! ```sh
//! cargo bench --bench unio-bench                 # the whole table (~6 min)
//! cargo bench --bench unio-bench -- --quick      # shorter cells (~2 min)
//! cargo bench --bench unio-bench -- --only rooms # one section: unary, rooms, chat,
//!                                                # cluster (or fanout, idle: half of rooms)
//! UNIO_BENCH_WRAPPER="heaptrack -o /tmp/unio" cargo bench --bench unio-bench -- --only idle
//! cargo bench --bench unio-bench -- --addr 127.0.0.1:50051 --token T --meeting M
//! ```
//!
//! It starts the release `unio` binary as a child process (SQLite in a temp
//! dir, loopback, rate limits raised: the load comes from one user and one
//! address), and is itself the client on the same cores. With `--addr` it
//! measures a running server instead (unary and gRPC-Web rows only: memory
//! and the in-process chat writer need a server of its own), as the user
//! of `--token` in meeting `--meeting`, so the server's own limits apply.
//!
//! - unary: requests/s, mean, p50, p99 at 1, 16 and 256 concurrent calls
//!   over 8 connections, for the health check (the floor), GetMe,
//!   GetMeeting and SendMessage; ratios against the floor at the same
//!   concurrency; GetMe over gRPC-Web (HTTP/2, HTTP/1.1) against native;
//! - rooms: fan-out latency in rooms up to 3,000 and server memory per
//!   idle stream in rooms of 10 and 100;
//! - chat and files: the chat writer's throughput, SendMessage end to end,
//!   upload and download MiB/s;
//! - cluster: fan-out across two nodes next to one node, and signals per
//!   second per node (needs `redis-server`).

mod chat_files;
mod cluster;
mod common;
mod rooms;
mod unary;

use common::{Server, authed, channel, open_meeting, user};
use unio::proto::pb::{self, meeting_service_client::MeetingServiceClient};

/// The table, filled as the bench goes and printed whole at the end.
#[derive(Default)]
pub struct Report {
    unary: Vec<String>,
    rows: Vec<(String, String, String)>,
}

impl Report {
    fn unary(&mut self, call: &str, wire: &str, concurrency: usize, c: unary::Cell, ratio: f64) {
        let line = format!(
            "{call:<12} {wire:<14} {concurrency:>4} {:>10.0} {ratio:>7.2} {:>8.3} {:>8.3} {:>8.3} {:>9.2}",
            c.rate,
            c.mean_ms,
            c.p50_ms,
            c.p99_ms,
            c.p99_ms / c.mean_ms
        );
        println!("{line}");
        self.unary.push(line);
    }

    fn row(&mut self, what: String, result: String, target: &str) {
        println!("{what}: {result}");
        self.rows.push((what, result, target.to_owned()));
    }

    fn print(&self) {
        println!();
        println!(
            "{:<12} {:<14} {:>4} {:>10} {:>7} {:>8} {:>8} {:>8} {:>9}",
            "call", "wire", "conc", "calls/s", "ratio", "mean ms", "p50 ms", "p99 ms", "p99/mean"
        );
        for line in &self.unary {
            println!("{line}");
        }
        println!(
            "(ratio: against the health check at the same concurrency; gRPC-Web rows against native GetMe measured just before each)"
        );
        if !self.rows.is_empty() {
            println!();
            let width = self.rows.iter().map(|(w, _, _)| w.len()).max().unwrap_or(0);
            for (what, result, target) in &self.rows {
                let target = if target.is_empty() {
                    String::new()
                } else {
                    format!("   target {target}")
                };
                println!("{what:<width$}  {result}{target}");
            }
        }
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 1.0 } else { 3.0 };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut report = Report::default();
        match arg("--addr") {
            Some(addr) => {
                let token = arg("--token").expect("--token: an access token of the server");
                let meeting =
                    arg("--meeting").expect("--meeting: a meeting the token's user may chat in");
                println!("unio-bench against {addr}");
                unary::run(&mut report, &addr, &token, &meeting, secs).await;
            }
            None => {
                let only = arg("--only");
                let run = |section: &str| only.as_deref().is_none_or(|o| o == section);
                if run("unary") {
                    own_server_unary(&mut report, secs).await;
                }
                if run("rooms") || run("fanout") {
                    rooms::fan_outs(&mut report, quick).await;
                }
                if run("rooms") || run("idle") {
                    rooms::idle(&mut report, quick).await;
                }
                if run("chat") {
                    chat_files::run(&mut report, quick).await;
                }
                if run("cluster") {
                    cluster::run(&mut report, quick).await;
                }
            }
        }
        report.print();
    });
}

/// The unary rows against a server of its own.
async fn own_server_unary(report: &mut Report, secs: f64) {
    let server = Server::start(&[]);
    println!(
        "unio-bench against {} (release build, SQLite, loopback)",
        server.addr
    );
    let setup = channel(&server.addr).await;
    let token = user(&setup, 0).await;
    let meeting = open_meeting(&setup, &token).await;
    // GetMeeting reads a meeting the caller hosts.
    MeetingServiceClient::new(setup.clone())
        .get_meeting(authed(
            pb::GetMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &token,
        ))
        .await
        .unwrap();
    unary::run(report, &server.addr, &token, &meeting, secs).await;
}
