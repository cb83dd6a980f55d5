//! Shared by the benchmarks: the release `unio` binary as a child process
//! (so its memory can be read from /proc and it does not share an async
//! runtime with the load), and small client helpers.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};
use unio::proto::pb::{
    self, auth_service_client::AuthServiceClient, meeting_service_client::MeetingServiceClient,
};

pub const PASSWORD: &str = "bench password 42";

pub struct Server {
    child: Child,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts `unio` on 127.0.0.1:0 with SQLite in a temp dir.
    pub fn start(extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // UNIO_BENCH_WRAPPER (e.g. "heaptrack -o /tmp/unio") runs each
        // server under a profiler; its RSS rows then measure the wrapper.
        let wrapper = std::env::var("UNIO_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(env!("CARGO_BIN_EXE_unio"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_unio")),
        };
        command
            .env("UNIO_ADDR", "127.0.0.1:0")
            .env("UNIO_DATA_DIR", dir.path())
            .env("UNIO_ADMIN_ADDR", "")
            .env("UNIO_JWT_SECRET", "bench-secret-bench-secret-bench-secret")
            .env("UNIO_LOG", "warn,unio=info")
            // The load comes from one address and one user: measure the
            // server's path, not its per-address and per-user limits.
            .env("UNIO_PUBLIC_RATE", "100000")
            .env("UNIO_SIGNUP_RATE", "100000")
            .env("UNIO_CHAT_RATE", "100000");
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start unio");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("server output").unwrap();
            if let Some(at) = line.find("listening on ") {
                break line[at + "listening on ".len()..].trim().to_owned();
            }
        };
        // UNIO_BENCH_LOG=1 shows the servers' warnings.
        let show = std::env::var("UNIO_BENCH_LOG").is_ok();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if show && (line.contains("WARN") || line.contains("ERROR")) {
                    eprintln!("server: {line}");
                }
            }
        });
        Self { child, addr, dir }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// CPU time the server used so far (user + system), in seconds.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of process `pid`, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command may hold spaces: fields count from after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime: fields 14 and 15, i.e. 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

pub async fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A connection for many room streams. h2 (0.4.20 on) ends a connection,
/// ENHANCE_YOUR_CALM, when unread small DATA frames charge more than half
/// its connection window: a reader of room events that falls behind
/// during a join storm would. A small stream window bounds what each
/// stream can have unread (the server waits, then sends what queued as
/// one frame). Not for bulk transfers: a window this small caps a
/// download at one window per round trip.
pub async fn room_channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(32 * 1024)
        .initial_connection_window_size(8 << 20)
        .connect()
        .await
        .unwrap()
}

/// Signs up `bench<n>@example.com` and returns its access token.
pub async fn user(channel: &Channel, n: usize) -> String {
    AuthServiceClient::new(channel.clone())
        .sign_up(pb::SignUpRequest {
            email: format!("bench{n}@example.com"),
            password: PASSWORD.into(),
            display_name: format!("Bench {n}"),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token
}

/// A meeting anyone with the id may join, starting in a minute.
pub async fn open_meeting(channel: &Channel, token: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    MeetingServiceClient::new(channel.clone())
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "bench".into(),
                start_time: Some(prost_types::Timestamp {
                    seconds: now + 60,
                    nanos: 0,
                }),
                duration_minutes: 60,
                join_policy: pb::JoinPolicy::AnyoneWithLink as i32,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id
}
