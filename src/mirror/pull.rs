//! The three ways of asking the server what changed: the sync stream (password session,
//! docs/SERVER-API.md#10-sync-stream), `/search/metadata` (API key,
//! docs/SERVER-API.md#9-search-pulls), and the seed's `GET /assets` listing
//! (docs/SERVER-API.md#11-seed-listing). Each feeds a [`PullRun`], which applies the changes
//! in batches; none of them acknowledges or moves a watermark before the whole pull has been
//! applied.
//!
//! Owns the policy of a pull: where it starts (one overlap before the watermark), whose
//! assets count, when paging stops, what a reset does and when to acknowledge. The requests
//! and their wire shapes are `crate::api`'s.

use super::{MirrorError, PullRun, OVERLAP, PAGE_SIZE};
use crate::api::{SyncAcks, SyncRow, Visibility};
use crate::db::mirror::Change;

/// Pages of one visibility, at most (a runaway `nextPage` must not loop for ever).
const MAX_PAGES: u64 = 100_000;

/// Where an incremental pull starts (Unix ms): one [`OVERLAP`] before the watermark.
fn since(watermark: Option<i64>, full: bool) -> Option<i64> {
    if full {
        return None;
    }
    watermark.map(|w| w - OVERLAP.as_millis() as i64)
}

// --- API key: /search/metadata ------------------------------------------------------------

/// `POST /search/metadata` per visibility an API key can list, paged, own assets only
/// (partners' are mixed in).
pub(super) async fn search(
    run: &mut PullRun<'_>,
    watermark: Option<i64>,
) -> Result<(), MirrorError> {
    let after = since(watermark, run.full);
    let api = run.api().clone();
    let me = api.user_id().to_owned();
    for visibility in Visibility::LISTABLE {
        let mut page: u64 = 1;
        loop {
            let resp = api
                .search_assets(visibility, after, page, PAGE_SIZE)
                .await?;
            for asset in resp.assets {
                if me.is_empty() || asset.owner_id == me {
                    run.upsert(asset).await?;
                }
            }
            match resp.next_page {
                Some(next) if next > page && resp.listed > 0 && next <= MAX_PAGES => page = next,
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
        let resp = api.list_assets(after, skip, PAGE_SIZE).await?;
        for asset in resp.assets {
            if me.is_empty() || asset.owner_id.is_empty() || asset.owner_id == me {
                run.upsert(asset).await?;
            }
        }
        // A short page is the last; a long one means the server ignores paging and sent
        // everything at once.
        if resp.listed != PAGE_SIZE {
            break;
        }
        skip += resp.listed;
    }
    run.flush().await
}

// --- password session: /sync/stream --------------------------------------------------------

/// `POST /sync/stream`, then `POST /sync/ack` with the last ack of each type (including
/// `SyncCompleteV1`) once everything is applied. A stream that starts from no `AssetV1`
/// checkpoint holds every asset, so the pull becomes full (and is reconciled).
pub(super) async fn sync_stream(run: &mut PullRun<'_>) -> Result<(), MirrorError> {
    let api = run.api().clone();
    // At most one `SyncResetV1` per pull: after it the stream starts from nothing.
    for _ in 0..2 {
        let reset = run.full;
        if !reset && !api.sync_has_asset_checkpoint().await? {
            run.full = true;
        }
        let mut stream = api.sync_stream(reset).await?;
        let info = stream.request().clone();
        let mut acks = SyncAcks::default();
        let (mut complete, mut must_reset) = (false, false);
        while let Some(line) = stream.next().await? {
            match line.row {
                SyncRow::Reset => {
                    must_reset = true;
                    break;
                }
                SyncRow::AssetDeleted(id) => {
                    run.push(Change::Deleted { id, checksum: None }).await?;
                }
                SyncRow::Asset(asset) => run.upsert(asset).await?,
                SyncRow::Complete => complete = true,
                SyncRow::Other(_) => {}
            }
            if let Some(ack) = line.ack {
                acks.add(ack);
            }
        }
        if must_reset {
            tracing::info!(
                "the server asked for a full resync (SyncResetV1); rebuilding the mirror"
            );
            run.wipe().await?;
            api.sync_ack_reset().await?;
            run.full = true;
            continue;
        }
        if !complete {
            return Err(MirrorError::Protocol(format!(
                "{info}: the sync stream ended before SyncCompleteV1; nothing was acknowledged"
            )));
        }
        run.flush().await?;
        let acks_sent = acks.values();
        if !acks_sent.is_empty() {
            api.sync_ack(&acks).await?;
            run.record_acks(&acks_sent).await?;
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
    use crate::api::format_timestamp;

    #[test]
    fn incremental_pulls_start_one_overlap_before_the_watermark() {
        // 2024-01-01T00:05:00.000Z
        let wm = 1_704_067_500_000;
        let since = |wm, full| since(wm, full).map(|ms: i64| format_timestamp(ms * 1_000_000));
        assert_eq!(
            since(Some(wm), false).as_deref(),
            Some("2024-01-01T00:00:00.000Z")
        );
        assert_eq!(since(Some(wm), true), None);
        assert_eq!(since(None, false), None);
    }
}
