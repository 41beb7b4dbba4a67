//! The asset calls: the duplicate check, reading one asset, and the two listings the mirror
//! pulls from (`/search/metadata` with an API key, the seed's `GET /assets`).
//!
//! Must not: filter by owner or decide what a listing means for the mirror; a listing
//! returns what the server sent, typed.

use reqwest::Method;

use super::{dto, format_timestamp, ApiClient, ApiError, CheckResult, Result};
use crate::model::{AssetId, Checksum, RemoteAsset};

/// The most ids per `bulk-upload-check` request (the CLI's batch;
/// docs/SERVER-API.md#6-bulk-upload-check).
pub const BULK_CHECK_BATCH: usize = 5000;

/// Which of the user's assets a search lists. An API key can list these three; `locked`
/// needs a PIN-elevated session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    Timeline,
    Archive,
    Hidden,
}

impl Visibility {
    /// Every visibility an API key can list.
    pub const LISTABLE: [Visibility; 3] = [
        Visibility::Timeline,
        Visibility::Archive,
        Visibility::Hidden,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Visibility::Timeline => "timeline",
            Visibility::Archive => "archive",
            Visibility::Hidden => "hidden",
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssetPage {
    /// The assets that could be read (an item without an `id` is left out).
    pub assets: Vec<RemoteAsset>,
    /// How many items the server sent, readable or not (a short page is the last).
    pub listed: usize,
    /// The page after this one, if the server names one (search only).
    pub next_page: Option<u64>,
}

impl AssetPage {
    fn from_items(items: Vec<serde_json::Value>, next_page: Option<u64>) -> AssetPage {
        let listed = items.len();
        AssetPage {
            assets: items.into_iter().filter_map(dto::asset_from_json).collect(),
            listed,
            next_page,
        }
    }

    /// The page, unless an asset of it has an id that is not a UUID: then nothing of the
    /// page is applied (a pull with a bad page ends without moving its watermark).
    fn checked(self, info: &super::RequestInfo) -> Result<AssetPage> {
        match dto::check_ids(&self.assets) {
            Ok(()) => Ok(self),
            Err(detail) => Err(ApiError::BadAnswer {
                request: Box::new(info.clone()),
                detail,
            }),
        }
    }
}

/// Unix milliseconds as the server's `updatedAfter`.
fn updated_after(ms: Option<i64>) -> Option<String> {
    ms.map(|ms| format_timestamp(ms.saturating_mul(1_000_000)))
}

impl ApiClient {
    /// `POST /assets/bulk-upload-check` in batches of at most [`BULK_CHECK_BATCH`], with hex
    /// checksums. Answers come back in the order of `items`, matched by the echoed id (the
    /// ids should be unique).
    pub async fn bulk_upload_check(
        &self,
        items: &[(String, Checksum)],
    ) -> Result<Vec<(String, CheckResult)>> {
        let mut out = Vec::with_capacity(items.len());
        for batch in items.chunks(BULK_CHECK_BATCH) {
            let body = dto::BulkCheckRequest {
                assets: batch
                    .iter()
                    .map(|(id, sum)| dto::BulkCheckItem {
                        id,
                        checksum: sum.to_hex(),
                    })
                    .collect(),
            };
            let (rb, info) = self.request(Method::POST, "/assets/bulk-upload-check");
            let answer: dto::BulkCheckResponse =
                self.inner.transport.json(rb.json(&body), &info).await?;
            let mut by_id = std::collections::HashMap::with_capacity(answer.results.len());
            for r in answer.results {
                let result = match (r.action.as_str(), r.reason.as_deref()) {
                    ("accept", _) => CheckResult::Accept,
                    ("reject", None | Some("duplicate")) => CheckResult::Duplicate {
                        asset_id: match r.asset_id.filter(|s| !s.is_empty()) {
                            Some(s) => {
                                Some(dto::asset_id(&s).map_err(|detail| ApiError::BadAnswer {
                                    request: Box::new(info.clone()),
                                    detail,
                                })?)
                            }
                            None => None,
                        },
                        is_trashed: r.is_trashed,
                    },
                    // `unsupported-format` is never produced by Immich
                    // (docs/SERVER-API.md#6-bulk-upload-check); if a server does, the upload
                    // answers with the precise error.
                    ("reject", Some(reason)) => {
                        tracing::debug!(id = %r.id, reason, "bulk check rejected; will upload");
                        CheckResult::Accept
                    }
                    (other, _) => {
                        return Err(ApiError::BadAnswer {
                            request: Box::new(info),
                            detail: format!("unknown bulk-check action {other:?}"),
                        })
                    }
                };
                by_id.insert(r.id, result);
            }
            for (id, _) in batch {
                let Some(result) = by_id.get(id) else {
                    return Err(ApiError::BadAnswer {
                        request: Box::new(info),
                        detail: format!("no result for id {id:?}"),
                    });
                };
                out.push((id.clone(), result.clone()));
            }
        }
        Ok(out)
    }

    /// `GET /assets/:id`. `None` when the server does not have it (Immich answers 400 `Not
    /// found or no asset.read access`; others 404).
    pub async fn get_asset(&self, id: &AssetId) -> Result<Option<RemoteAsset>> {
        let mut url = self.inner.api_root.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("assets").push(&id.0);
        }
        let (rb, info) = self.request_url(Method::GET, url.as_str());
        match self.inner.transport.json::<dto::AssetDto>(rb, &info).await {
            Ok(dto) => Ok(Some(dto.into_remote())),
            Err(e) if matches!(e.status(), Some(400 | 404)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /search/metadata`: page `page` (from 1) of `size` assets of one visibility,
    /// trashed ones included (`withDeleted`: trash shows as `isTrashed`), oldest change
    /// first, changed at or after `updated_after_ms` (Unix ms) if given. Partners' assets
    /// may be mixed in.
    pub async fn search_assets(
        &self,
        visibility: Visibility,
        updated_after_ms: Option<i64>,
        page: u64,
        size: usize,
    ) -> Result<AssetPage> {
        let body = dto::SearchRequest {
            with_deleted: true,
            visibility: visibility.as_str(),
            size,
            order: "asc",
            page,
            updated_after: updated_after(updated_after_ms),
        };
        let (rb, info) = self.request(Method::POST, "/search/metadata");
        let resp: dto::SearchResponse = self.inner.transport.json(rb.json(&body), &info).await?;
        let next = dto::page_number(&resp.assets.next_page);
        AssetPage::from_items(resp.assets.items, next).checked(&info)
    }

    /// Seed-style `GET /assets?skip=&take=&updatedAfter=`: the caller's assets, trashed
    /// included, oldest change first. A server that ignores paging sends everything at once.
    pub async fn list_assets(
        &self,
        updated_after_ms: Option<i64>,
        skip: usize,
        take: usize,
    ) -> Result<AssetPage> {
        let mut path = format!("/assets?skip={skip}&take={take}");
        if let Some(a) = updated_after(updated_after_ms) {
            path.push_str("&updatedAfter=");
            path.push_str(&a);
        }
        let (rb, info) = self.request(Method::GET, &path);
        let items: Vec<serde_json::Value> = self.inner.transport.json(rb, &info).await?;
        AssetPage::from_items(items, None).checked(&info)
    }
}
