//! Prometheus metrics on `UNIO_ADMIN_ADDR` (`GET /metrics`).
//!
//! Kept on a separate, loopback-by-default listener so that scraping needs
//! no token and the public port exposes nothing but gRPC. The exposition is
//! written by hand: three metric families do not justify a dependency.

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tonic::Code;

#[derive(Default)]
pub struct Metrics {
    /// Paths of the RPCs this server serves; anything else is counted as
    /// "unknown", so made-up paths cannot grow the map.
    known: HashSet<String>,
    in_flight: AtomicI64,
    /// (method, code) → (calls, total seconds). A std Mutex: held for a map
    /// update only, never across an await.
    calls: Mutex<BTreeMap<(String, i32), (u64, f64)>>,
}

impl Metrics {
    pub fn new(known: HashSet<String>) -> Self {
        Self {
            known,
            ..Self::default()
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

    pub fn call_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn call_finished(&self, method: &str, code: Code, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let method = if self.known.contains(method) {
            method
        } else {
            "unknown"
        };
        let entry = calls.entry((method.to_owned(), code as i32)).or_default();
        entry.0 += 1;
        entry.1 += elapsed.as_secs_f64();
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP unio_rpc_in_flight Calls in progress.\n# TYPE unio_rpc_in_flight gauge\n",
        );
        let _ = writeln!(
            out,
            "unio_rpc_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP unio_rpc_calls_total Finished calls by method and gRPC code.\n# TYPE unio_rpc_calls_total counter\n");
        for ((method, code), (count, _)) in calls.iter() {
            let _ = writeln!(
                out,
                "unio_rpc_calls_total{{method=\"{method}\",code=\"{:?}\"}} {count}",
                Code::from_i32(*code)
            );
        }
        out.push_str("# HELP unio_rpc_duration_seconds_sum Time spent in finished calls.\n# TYPE unio_rpc_duration_seconds_sum counter\n");
        for ((method, code), (_, seconds)) in calls.iter() {
            let _ = writeln!(
                out,
                "unio_rpc_duration_seconds_sum{{method=\"{method}\",code=\"{:?}\"}} {seconds:.6}",
                Code::from_i32(*code)
            );
        }
        out
    }
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let Ok(Ok(n)) = read else { return };
            let request = String::from_utf8_lossy(&buf[..n]);
            let response = if request.starts_with("GET /metrics ") {
                let body = metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
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

    #[test]
    fn renders_counters() {
        let m = Metrics::new(Metrics::methods_of(&[crate::proto::FILE_DESCRIPTOR_SET]));
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
                "unio_rpc_calls_total{method=\"/unio.v1.UserService/GetMe\",code=\"Ok\"} 1"
            )
        );
        assert!(text.contains("unio_rpc_in_flight 0"));
        assert!(text.contains("method=\"unknown\""));
        assert!(!text.contains("made.Up"));
    }
}
