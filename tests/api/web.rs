//! The web app's pages and files on the API's port (DESIGN §13): every
//! meeting's join_url opens the app, with the security headers a page that
//! holds bearer tokens needs; gRPC and gRPC-Web on the same port are
//! untouched.

use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use unio::proto::pb;

use crate::helpers::{TestApp, authed, spawn_app};

/// `method path` with `headers`: (status, headers, body).
async fn get(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", app.addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

fn assert_secured(headers: &HeaderMap) {
    let csp = header(headers, "content-security-policy");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(header(headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(headers, "referrer-policy"), "no-referrer");
}

#[tokio::test]
async fn the_join_url_opens_the_app_with_strict_headers() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let meeting = app
        .meeting(&host, "Web", &[], pb::JoinPolicy::InvitedOnly)
        .await;
    let path = meeting
        .join_url
        .split_once("/m/")
        .map(|(_, id)| format!("/m/{id}"))
        .unwrap();
    for path in [
        path.as_str(),
        "/",
        "/verify?token=abc",
        "/oauth/callback?code=x&state=y",
    ] {
        let (status, headers, body) = get(&app, Method::GET, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
        assert_secured(&headers);
        let page = String::from_utf8(body).unwrap();
        assert!(
            page.contains("<script type=\"module\" src=\"/assets/app.js\">"),
            "{page}"
        );
        assert!(!page.contains("<script>"), "no inline script");
    }

    // The bundle, with validators: a second load costs a 304.
    let (status, headers, body) = get(&app, Method::GET, "/assets/app.js", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert!(body.len() > 10_000);
    let etag = header(&headers, "etag").to_owned();
    assert!(etag.starts_with('"'));
    let (status, _, body) = get(
        &app,
        Method::GET,
        "/assets/app.js",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((status, body.len()), (304, 0));
    let weak = format!("\"other\", W/{etag}");
    for tag in [weak.as_str(), "*"] {
        let (status, _, _) = get(
            &app,
            Method::GET,
            "/assets/app.js",
            &[("if-none-match", tag)],
        )
        .await;
        assert_eq!(status, 304, "{tag}");
    }
    let other = [("if-none-match", "\"other\"")];
    let (status, _, _) = get(&app, Method::GET, "/assets/app.js", &other).await;
    assert_eq!(status, 200);
    let (status, headers, _) = get(&app, Method::GET, "/assets/app.css", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "text/css; charset=utf-8");
    let (status, headers, body) = get(&app, Method::HEAD, "/", &[]).await;
    assert_eq!((status, body.len()), (200, 0));
    assert_secured(&headers);

    // What is not the app is a 404 page, not a gRPC error.
    let id = &path[3..];
    let (trailing, braced, bare) = (
        format!("/m/{id}/"),
        format!("/m/{{{id}}}"),
        format!("/m/{}", id.replace('-', "")),
    );
    for path in [
        "/m/not-a-meeting",
        trailing.as_str(),
        braced.as_str(),
        bare.as_str(),
        "/nothing",
        "/assets/../Cargo.toml",
        "/unio.v1.UserService/GetMe",
    ] {
        let (status, headers, _) = get(&app, Method::GET, path, &[]).await;
        assert_eq!(status, 404, "{path}");
        assert_secured(&headers);
    }

    // gRPC on the same port is untouched.
    app.users()
        .get_me(authed(pb::GetMeRequest {}, &host))
        .await
        .unwrap();
}
