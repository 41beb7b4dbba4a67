//! Wire shapes (API.md), lenient where the two dialects differ: unknown fields are ignored
//! and fields one dialect lacks are optional.

use serde::{Deserialize, Serialize};

use super::RemoteAsset;
use crate::model::{AssetId, Checksum};

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
        let a = RemoteAsset::from_json(real).unwrap();
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
        let a = RemoteAsset::from_json(seed).unwrap();
        assert_eq!(a.visibility.as_deref(), Some("timeline"));
        assert!(a.is_trashed);
        assert!(a.checksum.is_some());
        assert_eq!(RemoteAsset::from_json(serde_json::json!({"x": 1})), None);
    }
}
