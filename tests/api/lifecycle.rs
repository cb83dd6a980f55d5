//! The server as a process: health, reflection, graceful shutdown, restarts,
//! the CLI and start-up errors.

use std::{process::Stdio, time::Duration};

use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use unio::proto::pb;

use crate::helpers::{PASSWORD, authed, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_is_serving_per_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel());
    for service in ["", "unio.v1.AuthService", "unio.v1.UserService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "unio.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = spawn_app().await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "unio.v1.AuthService",
        "unio.v1.UserService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "unio.v1.AuthService".into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_calls_then_refuses_new_ones() {
    let mut app = spawn_app().await;
    app.sign_up("ada@example.com").await;
    let (stop, server) = app.shutdown_handle();
    // A login spends tens of milliseconds hashing: it is in flight when the
    // shutdown signal arrives.
    let mut auth = app.auth();
    let in_flight = tokio::spawn(async move {
        auth.login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    stop.send(()).unwrap();
    let login = in_flight.await.unwrap();
    assert!(login.is_ok(), "in-flight call was cut: {login:?}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn open_streams_do_not_hold_shutdown_past_the_grace_period() {
    let mut app = spawn_app_with(&[("UNIO_SHUTDOWN_GRACE", "300ms")]).await;
    let mut health = HealthClient::new(app.channel());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.next().await.unwrap().unwrap();
    let (stop, server) = app.shutdown_handle();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_restart_keeps_accounts_and_sessions() {
    let app = spawn_app().await;
    let (ada, access, refresh) = app.user("ada@example.com").await;
    let app = app.restart().await;
    // The signing key, the account and the session all survived.
    let me = app
        .users()
        .get_me(authed(pb::GetMeRequest {}, &access))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.id, ada.id);
    app.auth()
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: refresh,
        })
        .await
        .unwrap();
    app.auth()
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn generated_secret_survives_restarts() {
    let app = spawn_app_with(&[("UNIO_JWT_SECRET", "")]).await;
    let (_, access, _) = app.user("ada@example.com").await;
    assert!(app.data_path().join("jwt_secret").exists());
    let app = app.restart().await;
    app.users()
        .get_me(authed(pb::GetMeRequest {}, &access))
        .await
        .unwrap();
}

pub(crate) fn unio_command(app: &crate::helpers::TestApp) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_unio"));
    command
        .env_clear()
        .envs(app.vars.iter())
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[tokio::test]
async fn create_admin_cli_bootstraps_an_admin() {
    let app = spawn_app().await;
    let mut command = unio_command(&app);
    command
        .args([
            "create-admin",
            "--email",
            "Root@Example.com",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("admin Root@example.com created"));

    let login = app
        .auth()
        .login(pb::LoginRequest {
            email: "root@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.user.unwrap().role, pb::Role::Admin as i32);
    let token = login.tokens.unwrap().access_token;
    app.users()
        .list_users(authed(pb::ListUsersRequest::default(), &token))
        .await
        .unwrap();
}

#[tokio::test]
async fn create_admin_refuses_a_weak_password() {
    let app = spawn_app().await;
    let mut command = unio_command(&app);
    command
        .args([
            "create-admin",
            "--email",
            "root@example.com",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"short\n")
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("password"));
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let app = spawn_app().await;
    for (var, value) in [
        ("UNIO_ADDR", "not-an-address"),
        ("UNIO_REMINDER_LEAD", "soon"),
        ("UNIO_TLS_CERT", "/nope.pem"),
        ("UNIO_LOGIN_THROTTLE_PAIR", "5,15m"),
    ] {
        let output = unio_command(&app).env(var, value).output().await.unwrap();
        assert_eq!(output.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = if var == "UNIO_TLS_CERT" {
            "UNIO_TLS_KEY"
        } else {
            var
        };
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(&format!("unio: {expected}")), "{stderr}");
    }
}

#[tokio::test]
async fn metrics_count_calls_latency_and_open_streams() {
    let (app, admin_addr) = crate::helpers::spawn_app_with_admin(&[]).await;
    let access = app
        .sign_up("ada@example.com")
        .await
        .tokens
        .unwrap()
        .access_token;
    let denied = app.users().get_me(pb::GetMeRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);
    let watch = app
        .notifications()
        .watch_notifications(authed(pb::WatchNotificationsRequest {}, &access))
        .await
        .unwrap()
        .into_inner();

    let (status, content_type, text) =
        crate::helpers::scrape_admin(&admin_addr, http::Method::GET, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    for line in [
        "unio_rpc_calls_total{method=\"/unio.v1.AuthService/SignUp\",code=\"Ok\"} 1\n",
        "unio_rpc_calls_total{method=\"/unio.v1.UserService/GetMe\",code=\"Unauthenticated\"} 1\n",
        "# TYPE unio_rpc_duration_seconds histogram\n",
        "unio_rpc_duration_seconds_bucket{method=\"/unio.v1.AuthService/SignUp\",le=\"+Inf\"} 1\n",
        "unio_rpc_duration_seconds_bucket{method=\"/unio.v1.AuthService/SignUp\",le=\"10\"} 1\n",
        "unio_rpc_duration_seconds_count{method=\"/unio.v1.UserService/GetMe\"} 1\n",
        "unio_streams_open{kind=\"notification_watch\"} 1\n",
        "unio_streams_open{kind=\"room\"} 0\n",
        "# TYPE unio_db_pool_connections gauge\n",
        "unio_password_hash_queue_depth 0\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }

    // A stream the client drops is no longer counted as open.
    drop(watch);
    crate::helpers::eventually("the watch stream is counted closed", || async {
        let (_, _, text) =
            crate::helpers::scrape_admin(&admin_addr, http::Method::GET, "/metrics").await;
        text.contains("unio_streams_open{kind=\"notification_watch\"} 0\n")
    })
    .await;

    for (method, path) in [
        (http::Method::GET, "/"),
        (http::Method::GET, "/metrics/x"),
        (http::Method::POST, "/metrics"),
    ] {
        let (status, _, _) = crate::helpers::scrape_admin(&admin_addr, method.clone(), path).await;
        assert_eq!(status, 404, "{method} {path}");
    }
}

#[tokio::test]
async fn serves_tls_when_a_certificate_is_configured() {
    // A throwaway CA and a certificate for localhost signed by it.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = crate::helpers::test_certificate(dir.path());
    let app = spawn_app_with(&[
        ("UNIO_TLS_CERT", &cert),
        ("UNIO_TLS_KEY", &key),
        ("UNIO_TEST_TLS_CA", &ca),
    ])
    .await;
    let (_, access, _) = app.user("ada@example.com").await;
    app.users()
        .get_me(authed(pb::GetMeRequest {}, &access))
        .await
        .unwrap();
    // Plaintext clients are not served on a TLS port.
    let plain = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(plain);
    assert!(
        health
            .check(HealthCheckRequest {
                service: String::new()
            })
            .await
            .is_err()
    );
}
