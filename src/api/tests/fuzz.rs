//! Property tests of everything that reads what a server sends (issue 13, fuzzing): JSON
//! answers of any shape, socket.io frames, sync-stream lines, error bodies, `Retry-After`,
//! the well-known endpoint. Nothing panics, what is well formed reads back as written, and
//! nothing leads the client off the server's origin.
//!
//! A short run by default (proptest's 256 cases); a longer one with
//! `PROPTEST_CASES=20000 cargo test --lib api::tests::fuzz`.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::super::socket::{parse_packet, silence_of, Packet};
use super::super::{dto, endpoint, error, sync, transport, upload};
use super::*;

/// Field names the parsers look for, so that arbitrary objects often hit them.
const FIELDS: &[&str] = &[
    "id",
    "ownerId",
    "checksum",
    "originalFileName",
    "fileCreatedAt",
    "updatedAt",
    "visibility",
    "isArchived",
    "isTrashed",
    "deviceId",
    "deviceAssetId",
    "type",
    "data",
    "ack",
    "assetId",
    "deletedAt",
    "message",
    "error",
    "major",
    "minor",
    "patch",
    "results",
    "action",
    "reason",
    "assets",
    "items",
    "nextPage",
    "accessToken",
    "userId",
    "status",
    "duplicate",
    "res",
    "api",
    "endpoint",
    "pingInterval",
    "pingTimeout",
    "sid",
    "statusCode",
    "correlationId",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,24}".prop_map(Value::String),
        // Shaped like ids, checksums and dates.
        "[0-9a-f]{40}".prop_map(Value::String),
        "[A-Za-z0-9+/]{27}=".prop_map(Value::String),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{3})?Z"
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
            1 => "\\PC{0,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Bytes that are sometimes JSON, sometimes almost JSON, sometimes anything.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let s = v.to_string().into_bytes();
            let cut = at.index(s.len() + 1);
            s[..cut].to_vec()
        }),
        prop::collection::vec(any::<u8>(), 0..200),
        "<(html|HTML|title|h1)>\\PC{0,40}(</title>|</h1>|)\\PC{0,20}".prop_map(String::into_bytes),
    ]
}

fn info() -> RequestInfo {
    RequestInfo {
        method: "GET".into(),
        host: "h".into(),
        path: "/api/x".into(),
        correlation_id: "c".into(),
        file: None,
        file_size: None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

proptest! {
    #[test]
    fn any_json_is_read_as_an_asset_or_refused(v in json_value()) {
        let got = dto::asset_from_json(v.clone());
        if let Some(a) = &got {
            prop_assert_eq!(Some(a.id.0.as_str()), v.get("id").and_then(Value::as_str));
        }
        // An object with a string id and nothing else is always an asset.
        if let Some(id) = v.get("id").and_then(Value::as_str) {
            let bare = dto::asset_from_json(json!({ "id": id }));
            prop_assert_eq!(bare.map(|a| a.id.0), Some(id.to_owned()));
        }
        let _ = dto::page_number(&Some(v));
    }

    #[test]
    fn only_an_object_is_an_asset(v in json_value()) {
        if !v.is_object() {
            prop_assert_eq!(dto::asset_from_json(v), None);
        }
    }

    #[test]
    fn every_answer_type_reads_any_body_without_panicking(b in body()) {
        fn read<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<T> {
            let r = transport::parse_json::<T>(b, 200, "application/json".into(), &info());
            match r {
                Ok(t) => Some(t),
                Err(ApiError::NotJson { .. }) => {
                    assert!(serde_json::from_slice::<Value>(b).is_err());
                    None
                }
                Err(ApiError::BadAnswer { detail, .. }) => {
                    assert!(!detail.is_empty());
                    None
                }
                Err(other) => panic!("unexpected error kind: {other:?}"),
            }
        }
        let _ = read::<dto::WellKnown>(&b);
        let _ = read::<dto::Ping>(&b);
        let _ = read::<dto::ApiKeyMe>(&b);
        let _ = read::<dto::UserMe>(&b);
        let _ = read::<dto::LoginResponse>(&b);
        let _ = read::<dto::ValidateToken>(&b);
        let _ = read::<dto::MediaTypesDto>(&b);
        let _ = read::<dto::ServerVersion>(&b);
        let _ = read::<dto::SeedServerInfo>(&b);
        let _ = read::<dto::BulkCheckResponse>(&b);
        let _ = read::<dto::AssetDto>(&b).map(dto::AssetDto::into_remote);
        if let Some(page) = read::<dto::SearchResponse>(&b) {
            let _ = dto::page_number(&page.assets.next_page);
            for item in page.assets.items {
                let _ = dto::asset_from_json(item);
            }
        }
        let _ = read::<Vec<dto::SyncCheckpoint>>(&b);
        let _ = read::<dto::SyncAsset>(&b).map(dto::SyncAsset::into_remote);
        if let Ok(outcome) = upload::parse_upload_answer(200, &b) {
            prop_assert!(!outcome.asset_id.0.is_empty());
        }
        let _ = upload::parse_upload_answer(201, &b);
    }

    #[test]
    fn error_bodies_become_one_short_line(b in body()) {
        let m = error::server_message(&b);
        prop_assert!(m.chars().count() <= 301, "{} chars", m.chars().count());
        prop_assert!(!m.chars().any(char::is_control), "{m:?}");
        prop_assert_eq!(m.trim(), m.as_str());
    }

    #[test]
    fn retry_after_is_bounded(v in prop_oneof![
        "\\PC{0,40}",
        "[0-9]{0,30}",
        "(Mon|Tue|Sun), [0-3][0-9] (Jan|Feb|Dec) [0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-6][0-9] (GMT|\\+0000|-2359)",
    ]) {
        let now = time::OffsetDateTime::now_utc();
        if let Some(d) = error::parse_retry_after(&v, now) {
            prop_assert!(d <= error::MAX_RETRY_AFTER);
        }
    }

    #[test]
    fn checksums_read_hex_and_base64_and_nothing_else(bytes in any::<[u8; 20]>(), junk in "\\PC{0,44}") {
        let c = Checksum(bytes);
        prop_assert_eq!(Checksum::parse(&c.to_hex()), Some(c));
        prop_assert_eq!(Checksum::parse(&c.to_base64()), Some(c));
        if let Some(p) = Checksum::parse(&junk) {
            prop_assert!(junk.len() == 28 || junk.len() == 40, "{junk:?} -> {p:?}");
        }
    }

    #[test]
    fn any_frame_is_read_without_panicking(text in prop_oneof![
        "\\PC{0,40}",
        "[0-6]{1,3}\\PC{0,20}",
        (0u8..7, 0u8..7, json_value()).prop_map(|(a, b, v)| format!("{a}{b}{v}")),
        json_value().prop_map(|v| format!("0{v}")),
    ]) {
        if let Packet::Open(v) = parse_packet(&text) {
            let d = silence_of(&v);
            prop_assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(30 * 60), "{d:?}");
        }
    }

    #[test]
    fn events_read_back_as_sent(name in "\\PC{0,20}", payload in json_value(), ack in proptest::option::of(0u32..1000)) {
        let frame = match ack {
            Some(id) => format!("42{id}{}", json!([name, payload])),
            None => format!("42{}", json!([name, payload])),
        };
        // As JSON text carries it (a float may come back one bit off).
        let payload: Value = serde_json::from_str(&payload.to_string()).expect("JSON");
        prop_assert_eq!(parse_packet(&frame), Packet::Event(name.clone(), payload.clone()));
        let event = ServerEvent::parse(&name, payload.clone());
        match name.as_str() {
            "on_asset_trash" | "on_asset_restore" | "on_asset_delete" => {
                let ids = match &event {
                    ServerEvent::Trash(ids) | ServerEvent::Restore(ids) | ServerEvent::Delete(ids) => {
                        ids.iter().map(|i| i.0.clone()).collect::<Vec<_>>()
                    }
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                };
                let want = match &payload {
                    Value::String(s) => vec![s.clone()],
                    v => strings(v),
                };
                prop_assert_eq!(ids, want);
            }
            "on_upload_success" | "on_asset_update" | "on_server_version" => {}
            _ => prop_assert_eq!(event, ServerEvent::Other(name)),
        }
    }

    #[test]
    fn asset_events_carry_the_asset(id in "\\PC{1,20}", name in "\\PC{0,20}", extra in json_value()) {
        let mut payload = json!({ "id": id, "originalFileName": name });
        if let (Value::Object(extra), Value::Object(p)) = (extra, &mut payload) {
            for (k, v) in extra {
                if !matches!(k.as_str(), "id" | "originalFileName") && !FIELDS.contains(&k.as_str()) {
                    p.insert(k, v);
                }
            }
        }
        match ServerEvent::parse("on_upload_success", payload) {
            ServerEvent::UploadSuccess(a) => {
                prop_assert_eq!(a.id.0, id);
                prop_assert_eq!(a.original_file_name, name);
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    #[test]
    fn any_sync_line_is_read_or_refused_as_a_bad_answer(line in prop_oneof![
        body(),
        (prop::sample::select(vec!["AssetV1", "AssetDeleteV1", "SyncResetV1", "SyncCompleteV1", "AuthUserV1", ""]),
         json_value(), proptest::option::of("\\PC{0,12}"))
            .prop_map(|(kind, data, ack)| json!({"type": kind, "data": data, "ack": ack}).to_string().into_bytes()),
    ]) {
        match sync::parse_line(&line, &info()) {
            Ok(_) => {}
            Err(ApiError::BadAnswer { detail, .. }) => prop_assert!(!detail.is_empty()),
            Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    #[test]
    fn sync_asset_lines_read_back(
        // Ids are UUIDs: any other id is a bad answer (dto::asset_id; tests/it/hostile.rs).
        id in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        owner in "\\PC{0,12}", file in "\\PC{0,20}",
        checksum in any::<[u8; 20]>(), trashed in any::<bool>(), ack in "\\PC{0,30}",
    ) {
        let data = json!({
            "id": id, "ownerId": owner, "originalFileName": file,
            "checksum": Checksum(checksum).to_base64(),
            "deletedAt": if trashed { json!("2024-01-01T00:00:00.000Z") } else { Value::Null },
        });
        let raw = format!("{}\n", json!({"type": "AssetV1", "data": data, "ack": ack}));
        let line = sync::parse_line(raw.as_bytes(), &info()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match line.row {
            SyncRow::Asset(a) => {
                prop_assert_eq!(a.id.0, id);
                prop_assert_eq!(a.owner_id, owner);
                prop_assert_eq!(a.original_file_name, file);
                prop_assert_eq!(a.checksum, Some(Checksum(checksum)));
                prop_assert_eq!(a.is_trashed, trashed);
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
        let mut acks = SyncAcks::default();
        acks.add(line.ack.expect("an ack"));
        prop_assert_eq!(acks.values(), vec![ack]);
    }

    #[test]
    fn the_well_known_endpoint_never_leaves_the_servers_origin(
        endpoint in prop_oneof![
            "\\PC{0,30}",
            "(/|//|https?://|ws://|)(photos\\.example\\.com|evil\\.example|127\\.0\\.0\\.1|)(:[0-9]{1,5}|)(/[a-z]{0,5}){0,3}(\\?[a-z=]{0,5}|)(#[a-z]{0,3}|)",
        ],
        base in prop::sample::select(vec![
            "https://photos.example.com", "https://photos.example.com:8443/immich", "http://127.0.0.1:2283",
        ]),
    ) {
        let base = crate::config::ServerUrl::parse(base).expect("a base URL");
        if let Some(url) = endpoint::resolve_endpoint(&base, &endpoint) {
            prop_assert_eq!(url.scheme(), base.url().scheme(), "{}", url);
            prop_assert_eq!(url.host_str(), base.url().host_str(), "{}", url);
            prop_assert_eq!(url.port_or_known_default(), base.url().port_or_known_default(), "{}", url);
            prop_assert_eq!(url.query(), None);
            prop_assert_eq!(url.fragment(), None);
            let ws = endpoint::ws_url(&url);
            prop_assert!(ws.starts_with("ws://") || ws.starts_with("wss://"), "{}", ws);
        }
    }

    #[test]
    fn file_names_stay_quotable(name in "\\PC{0,40}|[\"\\\\\r\n\t\0]{0,5}") {
        let p = upload::part_file_name(&name);
        prop_assert!(!p.is_empty());
        prop_assert!(!p.contains('"') && !p.contains('\\') && !p.chars().any(char::is_control), "{p:?}");
    }
}

/// A server that said it pings every thousand years is still taken for gone after a while.
#[test]
fn an_absurd_ping_interval_is_capped() {
    let d = silence_of(&json!({"pingInterval": u64::MAX, "pingTimeout": u64::MAX}));
    assert!(d <= Duration::from_secs(30 * 60), "{d:?}");
    let d = silence_of(&json!({"pingInterval": 0, "pingTimeout": 0}));
    assert_eq!(d, Duration::from_secs(1));
    let d = silence_of(&json!({}));
    assert_eq!(
        d,
        Duration::from_secs(46),
        "socket.io's 25 s + 20 s, and a second"
    );
}

/// Found by `the_well_known_endpoint_never_leaves_the_servers_origin`: another port on the
/// same host is another server, and it would get the credentials.
#[test]
fn a_well_known_endpoint_on_another_port_is_not_followed() {
    let base = crate::config::ServerUrl::parse("https://photos.example.com").unwrap();
    assert_eq!(
        endpoint::resolve_endpoint(&base, "//photos.example.com:8080/api"),
        None
    );
    assert_eq!(
        endpoint::resolve_endpoint(&base, "https://photos.example.com:443/api")
            .map(|u| u.to_string()),
        Some("https://photos.example.com/api".to_owned())
    );
}

/// Found by `any_json_is_read_as_an_asset_or_refused`: serde reads a struct from an array,
/// so `["x"]` in an event or a search page was taken for an asset with id `x`.
#[test]
fn an_array_is_not_an_asset() {
    assert_eq!(dto::asset_from_json(json!(["x"])), None);
    assert!(matches!(
        ServerEvent::parse("on_upload_success", json!(["x", "o"])),
        ServerEvent::Other(_)
    ));
}

/// Found by `error_bodies_become_one_short_line` (5,000 cases): a body of NULs around a tab
/// became the message " ".
#[test]
fn control_characters_leave_no_stray_space() {
    assert_eq!(error::server_message(b"\0\t\0"), "");
    assert_eq!(
        error::server_message(b"\x01bad\x02 \x7fgateway\x00"),
        "bad gateway"
    );
}
