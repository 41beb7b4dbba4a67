//! Wire shapes (docs/SERVER-API.md#7-reading-an-asset; the differences:
//! docs/SERVER-API.md#14-dialect-differences), lenient where the two dialects differ: unknown
//! fields are ignored and fields one dialect lacks are optional.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{AssetId, Checksum, RemoteAsset};

#[derive(Deserialize)]
pub(crate) struct WellKnown {
    pub api: WellKnownApi,
}

#[derive(Deserialize)]
pub(crate) struct WellKnownApi {
    pub endpoint: String,
}

#[derive(Deserialize)]
pub(crate) struct Ping {
    pub res: String,
}

#[derive(Deserialize)]
pub(crate) struct ApiKeyMe {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct UserMe {
    pub id: String,
}

#[derive(Serialize)]
pub(crate) struct LoginRequest<'a> {
    pub email: &'a str,
    pub password: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LoginResponse {
    pub access_token: String,
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ValidateToken {
    #[serde(default)]
    pub auth_status: bool,
}

#[derive(Deserialize)]
pub(crate) struct MediaTypesDto {
    #[serde(default)]
    pub image: Vec<String>,
    #[serde(default)]
    pub video: Vec<String>,
    #[serde(default)]
    pub sidecar: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct ServerVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

#[derive(Deserialize)]
pub(crate) struct SeedServerInfo {
    pub version: String,
}

#[derive(Serialize)]
pub(crate) struct BulkCheckRequest<'a> {
    pub assets: Vec<BulkCheckItem<'a>>,
}

#[derive(Serialize)]
pub(crate) struct BulkCheckItem<'a> {
    pub id: &'a str,
    pub checksum: String,
}

#[derive(Deserialize)]
pub(crate) struct BulkCheckResponse {
    pub results: Vec<BulkCheckResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BulkCheckResult {
    pub id: String,
    pub action: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub asset_id: Option<String>,
    #[serde(default)]
    pub is_trashed: bool,
}

/// `AssetResponseDto` (real) or the seed's asset object.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AssetDto {
    pub id: String,
    #[serde(default)]
    pub owner_id: String,
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub original_file_name: String,
    #[serde(default)]
    pub file_created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub is_archived: Option<bool>,
    #[serde(default)]
    pub is_trashed: bool,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub device_asset_id: Option<String>,
}

impl AssetDto {
    pub fn into_remote(self) -> RemoteAsset {
        let visibility = self.visibility.or_else(|| {
            self.is_archived
                .map(|a| if a { "archive" } else { "timeline" }.to_owned())
        });
        RemoteAsset {
            id: AssetId(self.id),
            owner_id: self.owner_id,
            checksum: self.checksum.as_deref().and_then(Checksum::parse),
            original_file_name: self.original_file_name,
            file_created_at: self.file_created_at,
            updated_at: self.updated_at,
            visibility,
            is_trashed: self.is_trashed,
            device_id: self.device_id,
            device_asset_id: self.device_asset_id,
        }
    }
}

/// Reads an `AssetResponseDto` (either dialect), as returned by `GET /assets/:id`, in
/// `/search/metadata` pages and in socket events. `None` when it is not an object with an
/// `id`.
pub(crate) fn asset_from_json(value: Value) -> Option<RemoteAsset> {
    // serde reads a struct from an array too (by position): `["x"]` is no asset.
    if !value.is_object() {
        return None;
    }
    serde_json::from_value::<AssetDto>(value)
        .ok()
        .map(AssetDto::into_remote)
}

/// An asset id as the server sent it. Immich and seed-style servers only ever send UUIDs;
/// anything else is a broken answer, never an id to remember or to link a file to
/// (docs/RELIABILITY.md#hostile-answers-huge-trickled-or-malformed).
pub(crate) fn asset_id(id: &str) -> Result<AssetId, String> {
    if id.len() == 36 && uuid::Uuid::try_parse(id).is_ok() {
        Ok(AssetId(id.to_owned()))
    } else {
        let shown: String = id.chars().take(40).collect();
        Err(format!("the asset id {shown:?} is not a UUID"))
    }
}

/// Every asset of a page has a UUID for an id (else the first that has not, as an error).
pub(crate) fn check_ids(assets: &[RemoteAsset]) -> Result<(), String> {
    assets.iter().try_for_each(|a| asset_id(&a.id.0).map(drop))
}

/// `POST /search/metadata` as the mirror asks it: trash included, oldest change first.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchRequest<'a> {
    pub with_deleted: bool,
    pub visibility: &'a str,
    pub size: usize,
    pub order: &'a str,
    pub page: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_after: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct SearchResponse {
    pub assets: SearchAssets,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchAssets {
    #[serde(default)]
    pub items: Vec<Value>,
    /// A string in Immich (`"2"`), possibly a number elsewhere; `null` on the last page.
    #[serde(default)]
    pub next_page: Option<Value>,
}

pub(crate) fn page_number(v: &Option<Value>) -> Option<u64> {
    match v {
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
}

/// One `GET /sync/ack` checkpoint.
#[derive(Deserialize)]
pub(crate) struct SyncCheckpoint {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Serialize)]
pub(crate) struct SyncStreamRequest<'a> {
    pub types: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
}

#[derive(Serialize)]
pub(crate) struct SyncAckRequest {
    pub acks: Vec<String>,
}

/// One line of `POST /sync/stream`.
#[derive(Deserialize)]
pub(crate) struct SyncStreamLine {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub ack: Option<String>,
}

/// `SyncAssetV1` (docs/SERVER-API.md#request-and-lines): no `updatedAt`; trash is `deletedAt`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SyncAsset {
    pub id: String,
    #[serde(default)]
    pub owner_id: String,
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub original_file_name: String,
    #[serde(default)]
    pub file_created_at: Option<String>,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub deleted_at: Option<String>,
}

impl SyncAsset {
    pub fn into_remote(self) -> RemoteAsset {
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
pub(crate) struct SyncAssetDelete {
    pub asset_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_of_both_dialects() {
        let real = serde_json::json!({
            "id": "a1", "ownerId": "u1", "checksum": "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=",
            "originalFileName": "IMG.jpg", "fileCreatedAt": "2024-01-01T00:00:00.000Z",
            "updatedAt": "2024-01-02T00:00:00.000Z", "visibility": "archive",
            "isArchived": true, "isTrashed": false, "exifInfo": {"make": "X"}
        });
        let a = asset_from_json(real).unwrap();
        assert_eq!(a.id, AssetId("a1".into()));
        assert_eq!(
            a.checksum.unwrap().to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(a.visibility.as_deref(), Some("archive"));
        let seed = serde_json::json!({
            "id": "a2", "checksum": "a9993e364706816aba3e25717850c26c9cd0d89d",
            "isArchived": false, "isTrashed": true
        });
        let a = asset_from_json(seed).unwrap();
        assert_eq!(a.visibility.as_deref(), Some("timeline"));
        assert!(a.is_trashed);
        assert!(a.checksum.is_some());
        assert_eq!(asset_from_json(serde_json::json!({"x": 1})), None);
    }

    #[test]
    fn next_page_is_a_string_or_a_number() {
        use serde_json::json;
        assert_eq!(page_number(&Some(json!("2"))), Some(2));
        assert_eq!(page_number(&Some(json!(3))), Some(3));
        assert_eq!(page_number(&Some(Value::Null)), None);
        assert_eq!(page_number(&None), None);
    }
}
