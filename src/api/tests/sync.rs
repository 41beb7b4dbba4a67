//! The sync stream against the test server: typed rows, acknowledgements that make the next
//! stream incremental, and a requested reset.

use super::*;
use immish_testserver::{Dialect as Ts, TestServer, Visibility as TsVisibility};

async fn session(server: &TestServer) -> ApiClient {
    let creds = Credentials::Password {
        email: server.admin_email().to_owned(),
        password: Secret::new(server.admin_password()),
    };
    ApiClient::connect(&options(&server.base_url(), creds))
        .await
        .expect("password login")
}

/// Reads a whole stream: its rows and the acks to send.
async fn read_all(api: &ApiClient, reset: bool) -> (Vec<SyncRow>, SyncAcks) {
    let mut stream = api.sync_stream(reset).await.expect("stream");
    let (mut rows, mut acks) = (Vec::new(), SyncAcks::default());
    while let Some(line) = stream.next().await.expect("line") {
        rows.push(line.row);
        if let Some(ack) = line.ack {
            acks.add(ack);
        }
    }
    (rows, acks)
}

fn asset_ids(rows: &[SyncRow]) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .filter_map(|r| match r {
            SyncRow::Asset(a) => Some(a.id.0.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn acknowledged_streams_continue_where_they_left_off() {
    for ts in [Ts::Immich, Ts::ImmichNext] {
        let server = TestServer::builder().dialect(ts).start().await;
        let admin = server.admin_id();
        let mut ids = server.insert_many(&admin, 3, TsVisibility::Timeline);
        ids.sort();
        let api = session(&server).await;
        assert!(
            !api.sync_has_asset_checkpoint().await.expect("acks"),
            "{ts}"
        );

        let (rows, acks) = read_all(&api, false).await;
        assert_eq!(asset_ids(&rows), ids, "{ts}");
        assert_eq!(rows.last(), Some(&SyncRow::Complete), "{ts}");
        assert!(
            rows.iter().any(|r| matches!(r, SyncRow::Other(_))),
            "{ts}: the user row"
        );
        api.sync_ack(&acks).await.expect("ack");
        assert!(api.sync_has_asset_checkpoint().await.expect("acks"), "{ts}");

        server.trash([ids[0].clone()]);
        server.delete_permanently([ids[1].clone()]);
        let (rows, acks) = read_all(&api, false).await;
        let trashed: Vec<_> = rows
            .iter()
            .filter_map(|r| match r {
                SyncRow::Asset(a) => Some((a.id.0.clone(), a.is_trashed)),
                _ => None,
            })
            .collect();
        assert_eq!(trashed, vec![(ids[0].clone(), true)], "{ts}: {rows:?}");
        assert!(
            rows.contains(&SyncRow::AssetDeleted(AssetId(ids[1].clone()))),
            "{ts}: {rows:?}"
        );
        api.sync_ack(&acks).await.expect("ack");

        // A stream asked to reset starts from nothing again.
        let (rows, _) = read_all(&api, true).await;
        assert_eq!(
            asset_ids(&rows),
            vec![ids[0].clone(), ids[2].clone()],
            "{ts}"
        );
    }
}

#[tokio::test]
async fn a_reset_row_is_typed_and_its_ack_clears_it() {
    let server = TestServer::builder().dialect(Ts::Immich).start().await;
    server.insert_many(&server.admin_id(), 2, TsVisibility::Timeline);
    let api = session(&server).await;
    let (_, acks) = read_all(&api, false).await;
    api.sync_ack(&acks).await.expect("ack");

    let bearer = api.auth_headers()["authorization"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(server.force_sync_reset(bearer.trim_start_matches("Bearer ")));
    let (rows, _) = read_all(&api, false).await;
    assert_eq!(rows.first(), Some(&SyncRow::Reset), "{rows:?}");
    api.sync_ack_reset().await.expect("ack the reset");
    // Acknowledged: the next stream, not asked to reset, starts from nothing.
    let (rows, _) = read_all(&api, false).await;
    assert!(!rows.contains(&SyncRow::Reset), "{rows:?}");
    assert_eq!(asset_ids(&rows).len(), 2, "{rows:?}");
    assert_eq!(rows.last(), Some(&SyncRow::Complete));
}
