//! Connecting: discovery, the plain-http and CA-file checks, API keys and password logins,
//! against the scripted peer.

use super::*;

#[tokio::test]
async fn connect_finds_the_api_behind_the_web_app() {
    // Like real Immich: no well-known here (proxy), the SPA answers HTML 200 everywhere
    // outside /api.
    let server = raw::start(|s| match s.path() {
        "/api/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/api/api-keys/me" => json(200, r#"{"permissions":["asset.upload","asset.read"]}"#),
        "/api/users/me" => json(200, r#"{"id":"user-9"}"#),
        p if p.starts_with("/api/") => raw::not_found(),
        _ => Action::Answer(200, vec![], "<!doctype html><title>Immich</title>".into()),
    })
    .await;
    let api = ApiClient::connect(&options(&format!("{}/api/", server.base), key()))
        .await
        .expect("connect");
    assert_eq!(api.dialect(), Dialect::Immich);
    assert_eq!(api.api_root(), format!("{}/api", server.base));
    assert_eq!(api.user_id(), "user-9");
    assert!(!api.is_session());
    assert!(
        !api.can_open_websocket(),
        "only an `all` key may open the socket"
    );
    assert_eq!(
        api.ws_url(),
        format!(
            "{}/api/socket.io/?EIO=4&transport=websocket",
            server.base.replace("http://", "ws://")
        )
    );

    // Every request carried a fresh correlation id and the user agent; only
    // authenticated routes got the key, as a sensitive header.
    let seen = server.seen();
    let cids: std::collections::HashSet<_> = seen
        .iter()
        .filter_map(|s| s.header("x-immich-cid"))
        .collect();
    assert_eq!(cids.len(), seen.len());
    for s in &seen {
        assert!(s
            .header("user-agent")
            .unwrap_or("")
            .starts_with("immish-sync/"));
        let authed = s.path() == "/api/api-keys/me" || s.path() == "/api/users/me";
        assert_eq!(s.header("x-api-key").is_some(), authed, "{}", s.path());
        assert!(s.header("authorization").is_none());
    }
    assert!(api.auth_headers()["x-api-key"].is_sensitive());
    assert!(!format!("{api:?}").contains(KEY));
}

#[tokio::test]
async fn connect_follows_the_well_known_endpoint() {
    let server = raw::start(|s| match s.path() {
        "/.well-known/immich" => json(200, r#"{"api":{"endpoint":"/custom/api"}}"#),
        "/custom/api/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/custom/api/api-keys/me" => json(200, r#"{"permissions":["all"]}"#),
        "/custom/api/users/me" => json(200, r#"{"id":"u"}"#),
        _ => raw::not_found(),
    })
    .await;
    let api = ApiClient::connect(&options(&server.base, key()))
        .await
        .expect("connect");
    assert_eq!(api.dialect(), Dialect::Immich);
    assert_eq!(api.api_root(), format!("{}/custom/api", server.base));
    assert!(api.can_open_websocket());
    assert!(api.api_key_permissions().is_some());
}

#[tokio::test]
async fn connect_falls_back_to_seed_paths() {
    let server = raw::start(|s| match s.path() {
        "/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/server/info" => json(200, r#"{"version":"1.2.3","diskSize":"100 GB"}"#),
        _ => raw::not_found(),
    })
    .await;
    let api = ApiClient::connect(&options(&server.base, key()))
        .await
        .expect("connect");
    assert_eq!(api.dialect(), Dialect::Seed);
    assert_eq!(api.api_root(), server.base);
    assert_eq!(api.user_id(), "", "the seed has no /users/me");
    assert_eq!(api.api_key_permissions(), None);
    assert_eq!(
        api.media_types().await.expect("media"),
        MediaTypes::builtin()
    );
    assert_eq!(api.server_version().await.expect("version"), "1.2.3");
    assert_eq!(
        api.ws_url(),
        format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            server.base.replace("http://", "ws://")
        )
    );
}

#[tokio::test]
async fn connect_to_something_that_is_not_immich_says_what_it_found() {
    let server = raw::start(|s| match s.path() {
        "/.well-known/immich" => raw::not_found(),
        _ => Action::Answer(200, vec![], "<html><title>My NAS</title></html>".into()),
    })
    .await;
    let e = ApiClient::connect(&options(&server.base, key()))
        .await
        .expect_err("not immich");
    assert_eq!(e.class(), ErrorClass::Permanent);
    let text = e.to_string();
    assert!(text.contains("no Immich server API found"), "{text}");
    assert!(
        text.contains("GET /api/server/ping answered an HTML page"),
        "{text}"
    );
    assert!(
        text.contains("GET /server/ping answered an HTML page"),
        "{text}"
    );
    assert!(
        server
            .seen()
            .iter()
            .all(|s| s.header("x-api-key").is_none()),
        "the key is never sent to a server that has not proven to be Immich"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_are_explained() {
    let server = raw::start(|s| match s.path() {
        "/.well-known/immich" => raw::not_found(),
        _ => Action::Answer(
            301,
            vec![(
                "location",
                format!("https://photos.example.com{}?token=abc", s.path()),
            )],
            String::new(),
        ),
    })
    .await;
    let e = ApiClient::connect(&options(&server.base, key()))
        .await
        .expect_err("redirect");
    assert_eq!(e.class(), ErrorClass::Permanent);
    let text = e.to_string();
    assert!(
        text.contains("redirected (HTTP 301) to https://photos.example.com/api/server/ping"),
        "{text}"
    );
    assert!(!text.contains("token=abc"), "{text}");
    assert_eq!(
        server.seen().len(),
        3,
        "each redirect was answered, none followed"
    );
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate\n").expect("write");
    let e = ApiClient::connect(&ServerConfig {
        ca_file: Some(path.clone()),
        ..options("https://photos.example.com", key())
    })
    .await
    .expect_err("bad ca file");
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(
        e.to_string()
            .contains(&format!("server.ca_file {}", path.display())),
        "{e}"
    );
}

#[tokio::test]
async fn connect_to_a_closed_port_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let e = ApiClient::connect(&options(&format!("http://127.0.0.1:{port}"), key()))
        .await
        .expect_err("closed");
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains("onnection refused"), "{e}");
}

#[tokio::test]
async fn plain_http_to_a_public_host_is_refused_before_any_request() {
    let e = ApiClient::connect(&options("http://photos.example.com", key()))
        .await
        .expect_err("insecure");
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(e.to_string().contains("server.allow_insecure_http"), "{e}");
    // An account's own settings are named by its table (docs/ARCHITECTURE.md#accounts).
    let e = ApiClient::connect(&ServerConfig {
        table: "accounts[1]".into(),
        ..options("http://photos.example.com", key())
    })
    .await
    .expect_err("insecure account");
    assert!(
        e.to_string()
            .contains("set accounts[1].allow_insecure_http"),
        "{e}"
    );
    let e = ApiClient::connect(&ServerConfig {
        table: "accounts[1]".into(),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..options("https://photos.example.com", key())
    })
    .await
    .expect_err("account's ca");
    assert!(
        e.to_string()
            .contains("accounts[1].ca_file /nonexistent/ca.pem"),
        "{e}"
    );
    let e = ApiClient::connect(&ServerConfig {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..options("https://photos.example.com", key())
    })
    .await
    .expect_err("ca");
    assert!(
        e.to_string().contains("server.ca_file /nonexistent/ca.pem"),
        "{e}"
    );
    let e = ApiClient::connect(&options(
        "https://photos.example.com",
        Credentials::ApiKey(Secret::new(" ")),
    ))
    .await
    .expect_err("empty key");
    assert!(e.to_string().contains("the API key is empty"), "{e}");
    let e = ApiClient::connect(&options(
        "https://photos.example.com",
        Credentials::ApiKey(Secret::new("secret-key-value\n")),
    ))
    .await
    .expect_err("newline");
    assert!(
        e.to_string().contains("cannot be sent in an HTTP header"),
        "{e}"
    );
    assert!(!e.to_string().contains("secret-key-value"), "{e}");
}

#[tokio::test]
async fn a_key_without_upload_permission_is_refused_naming_it() {
    let server = raw::start(|s| match s.path() {
        "/api/server/ping" => json(200, r#"{"res":"pong"}"#),
        "/api/api-keys/me" => json(
            200,
            r#"{"name":"viewer","permissions":["asset.read","asset.view"]}"#,
        ),
        _ => raw::not_found(),
    })
    .await;
    let e = ApiClient::connect(&options(&server.base, key()))
        .await
        .expect_err("missing permission");
    assert_eq!(e.class(), ErrorClass::Permanent);
    match &e {
        ApiError::MissingPermissions { missing, .. } => assert_eq!(missing, &["asset.upload"]),
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains("lacks the permission asset.upload"),
        "{e}"
    );
}

#[tokio::test]
async fn a_rejected_key_is_an_auth_error_without_the_key() {
    let server = raw::start(|s| match s.path() {
        "/api/server/ping" => json(200, r#"{"res":"pong"}"#),
        // A (hypothetical) server that echoes the credential back.
        _ => json(
            401,
            &format!(r#"{{"message":"Invalid API key {KEY}","statusCode":401}}"#),
        ),
    })
    .await;
    let e = ApiClient::connect(&options(&server.base, key()))
        .await
        .expect_err("401");
    assert_eq!(e.class(), ErrorClass::Auth);
    let text = format!("{e} {e:?}");
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("Invalid API key ***"), "{text}");
}

#[tokio::test]
async fn password_login_uses_a_bearer_session_and_logs_in_again_on_401() {
    let logins = Arc::new(AtomicUsize::new(0));
    let l2 = logins.clone();
    let server = raw::start(move |s| match (s.method.as_str(), s.path()) {
        ("GET", "/api/server/ping") => json(200, r#"{"res":"pong"}"#),
        ("POST", "/api/auth/login") => {
            let n = l2.fetch_add(1, Ordering::SeqCst) + 1;
            json(
                201,
                &format!(
                    r#"{{"accessToken":"session-token-{n}","userId":"user-7","userEmail":"a@b.c"}}"#
                ),
            )
        }
        ("POST", "/api/auth/validateToken") => {
            if s.header("authorization") == Some("Bearer session-token-2") {
                json(200, r#"{"authStatus":true}"#)
            } else {
                json(401, r#"{"message":"Invalid user token"}"#)
            }
        }
        _ => raw::not_found(),
    })
    .await;
    let api = ApiClient::connect(&options(
        &server.base,
        Credentials::Password {
            email: "a@b.c".into(),
            password: Secret::new("hunter2hunter2"),
        },
    ))
    .await
    .expect("connect");
    assert!(api.is_session());
    assert_eq!(api.device_credentials_kind(), CredentialsKind::Session);
    assert_eq!(api.user_id(), "user-7");
    let login = &server.seen_path("/api/auth/login")[0];
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&login.body).expect("json"),
        serde_json::json!({"email": "a@b.c", "password": "hunter2hunter2"})
    );
    // The first session is rejected: validate logs in again and the new token is used.
    api.validate().await.expect("validate after re-login");
    assert_eq!(logins.load(Ordering::SeqCst), 2);
    let auth = api.auth_headers();
    assert_eq!(auth["authorization"], "Bearer session-token-2");
    assert!(auth["authorization"].is_sensitive());
    assert!(auth.get("x-api-key").is_none());
}
