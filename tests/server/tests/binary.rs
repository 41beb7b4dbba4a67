//! The standalone binary: prints how to reach it, and serves with the key it printed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use reqwest::StatusCode;

/// Kills the child even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn prints_url_user_and_key_then_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_immish-testserver"))
            .args([
                "--port",
                "0",
                "--dialect",
                "immich-next",
                "--api-key",
                "fixed-test-key",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(3)
        .map(|l| l.expect("line"))
        .collect();
    let url = lines[0]
        .strip_prefix("immish-testserver listening on ")
        .and_then(|rest| rest.strip_suffix(" (dialect immich-next)"))
        .unwrap_or_else(|| panic!("first line: {}", lines[0]))
        .to_string();
    assert_eq!(
        lines[1],
        "user: admin@example.com / password: admin-password"
    );
    assert_eq!(lines[2], "api key: fixed-test-key");

    let resp = client()
        .get(format!("{url}/api/users/me"))
        .header("x-api-key", "fixed-test-key")
        .send()
        .await
        .unwrap();
    let (status, me) = json_of(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "admin@example.com");
    let (_, v) = json_of(
        client()
            .get(format!("{url}/api/server/version"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // The next major's build reports 2.7.5 too; the dialect shows in what it does: no legacy
    // sync.
    assert_eq!(v, serde_json::json!({ "major": 2, "minor": 7, "patch": 5 }));
    let status = client()
        .post(format!("{url}/api/sync/full-sync"))
        .header("x-api-key", "fixed-test-key")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);
}
