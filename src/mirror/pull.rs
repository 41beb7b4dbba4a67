//! The three ways of asking the server what changed (API.md §5): the sync stream (password
//! session), `/search/metadata` (API key), and the seed's `GET /assets` listing. Each feeds
//! a [`PullRun`], which applies the changes in batches; none of them acknowledges or moves
//! a watermark before the whole pull has been applied.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{MirrorError, PullRun, OVERLAP, PAGE_SIZE};
use crate::api::{format_timestamp, ApiError, RemoteAsset, RequestInfo};
use crate::db::mirror::Change;
use crate::model::{AssetId, Checksum};

/// Visibilities an API key can list (`locked` needs a PIN-elevated session).
const VISIBILITIES: [&str; 3] = ["timeline", "archive", "hidden"];
/// The longest sync-stream line accepted (one asset is well under 2 KB).
const MAX_LINE: usize = 1 << 20;
/// Pages of one visibility, at most (a runaway `nextPage` must not loop for ever).
const MAX_PAGES: u64 = 100_000;

fn since(watermark: Option<i64>, full: bool) -> Option<String> {
    if full {
        return None;
    }
    watermark.map(|w| format_timestamp((w - OVERLAP.as_millis() as i64).saturating_mul(1_000_000)))
}

// --- API key: /search/metadata ------------------------------------------------------------

#[derive(Deserialize)]
struct SearchResponse {
    assets: SearchAssets,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchAssets {
    #[serde(default)]
    items: Vec<Value>,
    /// A string in Immich (`"2"`), possibly a number elsewhere; `null` on the last page.
    #[serde(default)]
    next_page: Option<Value>,
}

fn page_number(v: &Option<Value>) -> Option<u64> {
    match v {
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
}

/// `POST /search/metadata` per visibility, paged, `withDeleted` (trash shows as
/// `isTrashed`), own assets only (partners' are mixed in).
pub(super) async fn search(
    run: &mut PullRun<'_>,
    watermark: Option<i64>,
) -> Result<(), MirrorError> {
    let after = since(watermark, run.full);
    let api = run.api().clone();
    let me = api.user_id().to_owned();
    for visibility in VISIBILITIES {
        let mut page: u64 = 1;
        loop {
            let mut body = json!({
                "withDeleted": true,
                "visibility": visibility,
                "size": PAGE_SIZE,
                "order": "asc",
                "page": page,
            });
            if let Some(a) = &after {
                body["updatedAfter"] = json!(a);
            }
            let resp: SearchResponse = api.post_json("/search/metadata", &body).await?;
            let n = resp.assets.items.len();
            for item in resp.assets.items {
                let Some(asset) = RemoteAsset::from_json(item) else {
                    continue;
                };
                if me.is_empty() || asset.owner_id == me {
                    run.upsert(asset).await?;
                }
            }
            match page_number(&resp.assets.next_page) {
                Some(next) if next > page && n > 0 && next <= MAX_PAGES => page = next,
                _ => break,
            }
        }
    }
    run.flush().await
}

// --- seed-style: GET /assets?updatedAfter= -------------------------------------------------

/// `GET /assets?updatedAfter=&skip=&take=`: the caller's assets, trashed included, oldest
/// change first.
pub(super) async fn seed_list(
    run: &mut PullRun<'_>,
    watermark: Option<i64>,
) -> Result<(), MirrorError> {
    let after = since(watermark, run.full);
    let api = run.api().clone();
    let me = api.user_id().to_owned();
    let mut skip = 0usize;
    loop {
        let mut path = format!("/assets?skip={skip}&take={PAGE_SIZE}");
        if let Some(a) = &after {
            path.push_str("&updatedAfter=");
            path.push_str(a);
        }
        let items: Vec<Value> = api.get_json(&path).await?;
        let n = items.len();
        for item in items {
            let Some(asset) = RemoteAsset::from_json(item) else {
                continue;
            };
            if me.is_empty() || asset.owner_id.is_empty() || asset.owner_id == me {
                run.upsert(asset).await?;
            }
        }
        // A short page is the last; a long one means the server ignores paging and sent
        // everything at once.
        if n != PAGE_SIZE {
            break;
        }
        skip += n;
    }
    run.flush().await
}

// --- password session: /sync/stream --------------------------------------------------------

#[derive(Deserialize)]
struct SyncLine {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    ack: Option<String>,
}

/// `SyncAssetV1` (API.md §5.4): no `updatedAt`; trash is `deletedAt`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyncAsset {
    id: String,
    #[serde(default)]
    owner_id: String,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    original_file_name: String,
    #[serde(default)]
    file_created_at: Option<String>,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    deleted_at: Option<String>,
}

impl SyncAsset {
    fn into_remote(self) -> RemoteAsset {
        RemoteAsset {
            id: AssetId(self.id),
            owner_id: self.owner_id,
            checksum: self.checksum.as_deref().and_then(Checksum::parse),
            original_file_name: self.original_file_name,
            file_created_at: self.file_created_at,
            updated_at: None,
            visibility: self.visibility,
            is_trashed: self.deleted_at.is_some(),
            device_id: None,
            device_asset_id: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyncAssetDelete {
    asset_id: String,
}

#[derive(Deserialize)]
struct Checkpoint {
    #[serde(rename = "type")]
    kind: String,
}

/// Reads a JSON-lines body line by line, each chunk within the stall timeout.
struct Lines {
    resp: Response,
    info: RequestInfo,
    stall: Duration,
    buf: Vec<u8>,
    done: bool,
}

impl Lines {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, MirrorError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(line));
            }
            if self.done {
                return Ok((!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf)));
            }
            match tokio::time::timeout(self.stall, self.resp.chunk()).await {
                Err(_) => {
                    return Err(ApiError::Stalled {
                        request: Box::new(self.info.clone()),
                        after: self.stall,
                    }
                    .into())
                }
                Ok(Err(e)) => {
                    return Err(ApiError::Network {
                        request: Box::new(self.info.clone()),
                        detail: format!("the answer broke off: {e}"),
                    }
                    .into())
                }
                Ok(Ok(None)) => self.done = true,
                Ok(Ok(Some(chunk))) => {
                    if self.buf.len() + chunk.len() > MAX_LINE {
                        return Err(MirrorError::Protocol(format!(
                            "{}: a sync stream line is longer than {MAX_LINE} bytes",
                            self.info
                        )));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
            }
        }
    }
}

const SYNC_TYPES: [&str; 2] = ["AuthUsersV1", "AssetsV1"];

/// `POST /sync/stream`, then `POST /sync/ack` with the last ack of each type (including
/// `SyncCompleteV1`) once everything is applied. A stream that starts from no `AssetV1`
/// checkpoint holds every asset, so the pull becomes full (and is reconciled).
pub(super) async fn sync_stream(run: &mut PullRun<'_>) -> Result<(), MirrorError> {
    let api = run.api().clone();
    // At most one `SyncResetV1` per pull: after it the stream starts from nothing.
    for _ in 0..2 {
        let reset = run.full;
        if !reset {
            let checkpoints: Vec<Checkpoint> = api.get_json("/sync/ack").await?;
            if !checkpoints.iter().any(|c| c.kind == "AssetV1") {
                run.full = true;
            }
        }
        let mut body = json!({ "types": SYNC_TYPES });
        if reset {
            body["reset"] = json!(true);
        }
        let (resp, info) = api.post_for_response("/sync/stream", &body).await?;
        let mut lines = Lines {
            resp,
            info: info.clone(),
            stall: api.stall_timeout(),
            buf: Vec::new(),
            done: false,
        };
        let mut last_ack: BTreeMap<String, String> = BTreeMap::new();
        let (mut complete, mut must_reset) = (false, false);
        while let Some(raw) = lines.next().await? {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line: SyncLine = serde_json::from_slice(&raw).map_err(|e| {
                MirrorError::Protocol(format!("{info}: a sync stream line is not JSON: {e}"))
            })?;
            let bad = |e: serde_json::Error| {
                MirrorError::Protocol(format!("{info}: unexpected {} row: {e}", line.kind))
            };
            match line.kind.as_str() {
                "SyncResetV1" => {
                    must_reset = true;
                    break;
                }
                "AssetDeleteV1" => {
                    let d: SyncAssetDelete =
                        serde_json::from_value(line.data.clone()).map_err(bad)?;
                    run.push(Change::Deleted {
                        id: AssetId(d.asset_id),
                        checksum: None,
                    })
                    .await?;
                }
                "AssetV1" => {
                    let a: SyncAsset = serde_json::from_value(line.data.clone()).map_err(bad)?;
                    run.upsert(a.into_remote()).await?;
                }
                "SyncCompleteV1" => complete = true,
                _ => {}
            }
            if let Some(ack) = line.ack {
                last_ack.insert(line.kind, ack);
            }
        }
        if must_reset {
            tracing::info!(
                "the server asked for a full resync (SyncResetV1); rebuilding the mirror"
            );
            run.wipe().await?;
            let _ = api
                .post_for_response("/sync/ack", &json!({ "acks": ["SyncResetV1|reset"] }))
                .await?;
            run.full = true;
            continue;
        }
        if !complete {
            return Err(MirrorError::Protocol(format!(
                "{info}: the sync stream ended before SyncCompleteV1; nothing was acknowledged"
            )));
        }
        run.flush().await?;
        let acks: Vec<String> = last_ack.into_values().collect();
        if !acks.is_empty() {
            let _ = api
                .post_for_response("/sync/ack", &json!({ "acks": acks }))
                .await?;
            run.record_acks(&acks).await?;
        }
        return Ok(());
    }
    Err(MirrorError::Protocol(
        "the server asked for a full resync twice in a row".to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_page_is_a_string_or_a_number() {
        assert_eq!(page_number(&Some(json!("2"))), Some(2));
        assert_eq!(page_number(&Some(json!(3))), Some(3));
        assert_eq!(page_number(&Some(Value::Null)), None);
        assert_eq!(page_number(&None), None);
    }

    #[test]
    fn incremental_pulls_start_one_overlap_before_the_watermark() {
        // 2024-01-01T00:05:00.000Z
        let wm = 1_704_067_500_000;
        assert_eq!(
            since(Some(wm), false).as_deref(),
            Some("2024-01-01T00:00:00.000Z")
        );
        assert_eq!(since(Some(wm), true), None);
        assert_eq!(since(None, false), None);
    }

    #[test]
    fn sync_rows_become_mirror_rows() {
        let row = json!({
            "id": "a1", "ownerId": "u1", "checksum": "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=",
            "originalFileName": "x.jpg", "deletedAt": "2024-01-01T00:00:00.000Z",
            "visibility": "archive", "thumbhash": null
        });
        let a = serde_json::from_value::<SyncAsset>(row)
            .unwrap()
            .into_remote();
        assert!(a.is_trashed);
        assert_eq!(a.visibility.as_deref(), Some("archive"));
        assert!(a.checksum.is_some());
        assert_eq!(a.updated_at, None);
    }
}
