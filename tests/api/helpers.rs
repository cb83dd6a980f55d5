//! `spawn_app()`: the real server on 127.0.0.1:0 with a fresh database (a
//! SQLite file in a temp dir, or a new PostgreSQL database when
//! `UNIO_TEST_POSTGRES_URL` is set), plus typed clients and small helpers.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use crate::mail_sink::SmtpSink;
use sqlx::Connection;
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Code, Request, Status,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig},
};
use tonic_types::StatusExt;
use unio::{
    config::Config,
    proto::pb::{
        self, auth_service_client::AuthServiceClient, call_service_client::CallServiceClient,
        chat_service_client::ChatServiceClient, meeting_service_client::MeetingServiceClient,
        notification_service_client::NotificationServiceClient,
        user_service_client::UserServiceClient, webhook_service_client::WebhookServiceClient,
    },
};

pub const PASSWORD: &str = "correct horse 42";

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where this server's mail goes.
    pub mail: Arc<SmtpSink>,
    pub data_dir: Arc<TempDir>,
    pub secret: String,
    pub vars: HashMap<String, String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), unio::RunError>>>,
    channel: Channel,
}

/// Starts a server with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts a server with extra `UNIO_*` settings and an admin listener,
/// and says where that listens. The address is probed free, but another
/// socket of the test run may take it before the server binds it: then
/// the server stops at once, and this tries another.
pub async fn spawn_app_with_admin(extra: &[(&str, &str)]) -> (TestApp, String) {
    for _ in 0..5 {
        let admin = free_addr();
        let mut vars = extra.to_vec();
        vars.push(("UNIO_ADMIN_ADDR", &admin));
        if let Some(app) = try_spawn_app_with(&vars).await {
            return (app, admin);
        }
    }
    panic!("no free admin address in five tries");
}

/// Starts a server with extra `UNIO_*` settings.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    try_spawn_app_with(extra)
        .await
        .expect("the server did not start")
}

async fn try_spawn_app_with(extra: &[(&str, &str)]) -> Option<TestApp> {
    let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mail = Arc::new(SmtpSink::start().await);
    let secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
    let mut vars: HashMap<String, String> = HashMap::from([
        ("UNIO_ADDR".into(), "127.0.0.1:0".into()),
        (
            "UNIO_DATA_DIR".into(),
            data_dir.path().display().to_string(),
        ),
        ("UNIO_JWT_SECRET".into(), secret.clone()),
        ("UNIO_ADMIN_ADDR".into(), String::new()),
        ("UNIO_SHUTDOWN_GRACE".into(), "2s".into()),
        ("UNIO_SMTP_URL".into(), format!("smtp://{}", mail.addr)),
        ("UNIO_MAIL_FROM".into(), "unio@example.com".into()),
        ("UNIO_MAIL_POLL_INTERVAL".into(), "20ms".into()),
        // Every test client is 127.0.0.1: the per-address limit has its
        // own tests.
        ("UNIO_PUBLIC_RATE".into(), "1000".into()),
        ("UNIO_SIGNUP_RATE".into(), "100000".into()),
        (
            "UNIO_LOG".into(),
            std::env::var("UNIO_TEST_LOG").unwrap_or("warn".into()),
        ),
    ]);
    if let Some(url) = postgres_database().await {
        vars.insert("UNIO_DATABASE_URL".into(), url);
    }
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    start(vars, data_dir, secret, mail).await
}

/// The server of `vars`, once it answers; `None` if it stopped instead.
async fn start(
    vars: HashMap<String, String>,
    data_dir: Arc<TempDir>,
    secret: String,
    mail: Arc<SmtpSink>,
) -> Option<TestApp> {
    let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test config");
    let _ = unio::telemetry::init(&config.log, None);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(unio::run(config, listener, async {
        let _ = rx.await;
    }));
    let channel = match vars.get("UNIO_TEST_TLS_CA") {
        // Trust the test's own CA and check the server's name.
        Some(ca) => Channel::from_shared(format!("https://{addr}"))
            .expect("uri")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")))
                    .domain_name("localhost"),
            )
            .expect("tls config"),
        None => Channel::from_shared(format!("http://{addr}")).expect("uri"),
    }
    .connect_timeout(Duration::from_secs(5))
    .connect_lazy();
    let app = TestApp {
        addr,
        mail,
        data_dir,
        secret,
        vars,
        shutdown: Some(tx),
        server: Some(server),
        channel,
    };
    app.wait_until_serving().await.then_some(app)
}

/// A fresh PostgreSQL database per test when `UNIO_TEST_POSTGRES_URL` is set.
async fn postgres_database() -> Option<String> {
    let base = std::env::var("UNIO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let name = format!("unio_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to UNIO_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    conn.close().await.ok();
    let (prefix, _) = base
        .rsplit_once('/')
        .expect("postgres URL with a database name");
    Some(format!("{prefix}/{name}"))
}

impl TestApp {
    /// Whether the server answers its health check within 5 s (false at
    /// once if it stopped, e.g. its admin address was taken).
    async fn wait_until_serving(&self) -> bool {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        for _ in 0..200 {
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            if health.check(request).await.is_ok() {
                return true;
            }
            if self.server.as_ref().is_some_and(|s| s.is_finished()) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20)
    }

    pub fn calls(&self) -> CallServiceClient<Channel> {
        CallServiceClient::new(self.channel.clone())
    }

    pub fn notifications(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel.clone())
    }

    pub fn chat(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.channel.clone())
    }

    pub fn meetings(&self) -> MeetingServiceClient<Channel> {
        MeetingServiceClient::new(self.channel.clone())
    }

    pub fn webhooks(&self) -> WebhookServiceClient<Channel> {
        WebhookServiceClient::new(self.channel.clone())
    }

    pub fn data_path(&self) -> PathBuf {
        self.data_dir.path().to_path_buf()
    }

    /// Signs up `email` with [`PASSWORD`].
    pub async fn sign_up(&self, email: &str) -> pb::AuthResponse {
        self.auth()
            .sign_up(pb::SignUpRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: email.split('@').next().unwrap().into(),
            })
            .await
            .expect("sign up")
            .into_inner()
    }

    /// Signs up a user, follows the verification link mailed to it, and
    /// returns (user, access token, refresh token).
    pub async fn user(&self, email: &str) -> (pb::User, String, String) {
        let (_, access, refresh) = self.unverified_user(email).await;
        let user = self.verify_email(email, 1).await;
        (user, access, refresh)
    }

    /// Signs up a user without verifying its address.
    pub async fn unverified_user(&self, email: &str) -> (pb::User, String, String) {
        let response = self.sign_up(email).await;
        let tokens = response.tokens.unwrap();
        (
            response.user.unwrap(),
            tokens.access_token,
            tokens.refresh_token,
        )
    }

    /// Follows the `nth` verification link mailed to `email`.
    pub async fn verify_email(&self, email: &str, nth: usize) -> pb::User {
        let token = self
            .mail
            .verification_mail(email, nth)
            .await
            .verification_token()
            .expect("a link in the verification mail");
        self.auth()
            .verify_email(pb::VerifyEmailRequest { token })
            .await
            .expect("verify email")
            .into_inner()
    }

    /// Creates an admin through the same code path as `unio create-admin`
    /// and signs it in.
    pub async fn admin(&self, email: &str) -> (pb::User, String) {
        let (user, _, _) = self.user(email).await;
        let config = Config::from_lookup(|k| self.vars.get(k).cloned()).unwrap();
        let state = unio::build_state(config).await.unwrap();
        let email = unio::domain::Email::parse(email).unwrap();
        let password = unio::domain::Password::parse(PASSWORD, None).unwrap();
        state
            .accounts
            .create_admin(&email, &password)
            .await
            .unwrap();
        state.db.close().await;
        let login = self
            .auth()
            .login(pb::LoginRequest {
                email: email.to_string(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(login.user.as_ref().unwrap().role, pb::Role::Admin as i32);
        (user, login.tokens.unwrap().access_token)
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }

    pub fn shutdown_handle(
        &mut self,
    ) -> (oneshot::Sender<()>, JoinHandle<Result<(), unio::RunError>>) {
        (self.shutdown.take().unwrap(), self.server.take().unwrap())
    }

    /// Stops this server and starts a new one on the same data and database.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let mut vars = self.vars.clone();
        vars.insert("UNIO_ADDR".into(), "127.0.0.1:0".into());
        start(
            vars,
            self.data_dir.clone(),
            self.secret.clone(),
            self.mail.clone(),
        )
        .await
        .expect("the server started again")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("header value");
    request.metadata_mut().insert("authorization", value);
    request
}

/// The ErrorInfo reason of a status.
pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// The fields a BadRequest names.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Asserts code and reason, and returns the status for more checks.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    why: &str,
) -> Status {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(&status), why, "{status:?}");
    status
}

/// Waits until `check` holds (polling every 20 ms, for at most 10 s), for
/// effects the server makes on its own time: files removed after a call,
/// rows written by a background job. Panics with `what` if it never does.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `seconds` from now, as a protobuf timestamp.
pub fn from_now(seconds: i64) -> Option<prost_types::Timestamp> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Some(prost_types::Timestamp {
        seconds: now + seconds,
        nanos: 0,
    })
}

impl TestApp {
    /// `host` schedules "`title`" in ten minutes, for 30 minutes, inviting
    /// `invitees` under `policy`.
    pub async fn meeting(
        &self,
        host: &str,
        title: &str,
        invitees: &[&str],
        policy: pb::JoinPolicy,
    ) -> pb::Meeting {
        self.meetings()
            .create_meeting(authed(
                pb::CreateMeetingRequest {
                    title: title.into(),
                    start_time: from_now(600),
                    duration_minutes: 30,
                    invitee_emails: invitees.iter().map(|s| s.to_string()).collect(),
                    join_policy: policy as i32,
                    ..Default::default()
                },
                host,
            ))
            .await
            .expect("create meeting")
            .into_inner()
    }

    /// Waits until the server's mail queue holds nothing left to send: by
    /// then every email it will send is in the sink, so a count taken
    /// afterwards is final (no sleep needed to prove an absence).
    pub async fn mail_settled(&self) {
        let config = Config::from_lookup(|k| self.vars.get(k).cloned()).expect("test config");
        let db = unio::open_database(&config).await.expect("database");
        eventually("the mail queue drains", || async {
            unio::store::mail::pending(&db).await.expect("pending mail") == 0
        })
        .await;
        db.close().await;
    }
}

/// Where a `unio` child started with `UNIO_ADDR=127.0.0.1:0` listens, read
/// from its log on `stdout` (which must include `unio::server=info`); the
/// rest of the log is drained in the background. Binding port 0 leaves no
/// moment in which another socket could take the port, as it could after
/// [`free_addr`]'s probe. `None` if the child ended first.
pub async fn listening_addr(stdout: impl std::io::Read + Send + 'static) -> Option<String> {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = listened_on(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .ok()?
        .ok()
}

/// The address in a `unio` log line that says where the server listens.
pub fn listened_on(line: &str) -> Option<SocketAddr> {
    let (_, addr) = line.split_once("listening on ")?;
    addr.trim().parse().ok()
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}

/// `method path` on the admin listener: (status, content type, body).
pub async fn scrape_admin(addr: &str, method: http::Method, path: &str) -> (u16, String, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// Runs openssl with `args` in `dir`.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (the test command installs it)");
    assert!(status.success(), "openssl {args:?}");
}

/// A throwaway CA in `dir` and a certificate for localhost and 127.0.0.1
/// signed by it: the paths of (certificate, key, CA certificate).
pub fn test_certificate(dir: &std::path::Path) -> (String, String, String) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-days",
                "1",
                "-subj",
                "/CN=UNIO test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"],
            &ec[..],
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "cert.pem",
            "-extfile",
            "leaf.ext",
        ],
    );
    let path = |name: &str| dir.join(name).display().to_string();
    (path("cert.pem"), path("key.pem"), path("ca.pem"))
}

/// Runs `script` with Python 3, `input` on its stdin: its stdout, or its
/// stderr when it fails (the independent checkers: icalendar,
/// standardwebhooks; the test command installs them).
pub async fn python(script: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
