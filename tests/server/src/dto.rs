//! JSON shapes of the server's records (API.md §5.2, §5.4, §7.1), per dialect.

use serde_json::{json, Value};

use crate::state::{b64, fmt_ts, fmt_update_id, Album, Asset, State, User, Visibility};
use crate::Dialect;

/// `UserResponseDto`, as embedded in albums.
pub(crate) fn user_brief(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "profileImagePath": "",
        "avatarColor": "primary",
        "profileChangedAt": fmt_ts(user.created_at),
    })
}

/// `UserAdminResponseDto`, the answer of `GET /users/me`.
pub(crate) fn user_admin(user: &User, usage: u64) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "profileImagePath": "",
        "avatarColor": "primary",
        "profileChangedAt": fmt_ts(user.created_at),
        "storageLabel": if user.is_admin { Value::from("admin") } else { Value::Null },
        "shouldChangePassword": false,
        "isAdmin": user.is_admin,
        "createdAt": fmt_ts(user.created_at),
        "deletedAt": null,
        "updatedAt": fmt_ts(user.updated_at),
        "oauthId": "",
        "quotaSizeInBytes": user.quota,
        "quotaUsageInBytes": usage,
        "status": "active",
        "license": null,
    })
}

fn exif(asset: &Asset) -> Value {
    json!({
        "fileSizeInByte": asset.size,
        "dateTimeOriginal": fmt_ts(asset.file_created_at),
        "modifyDate": fmt_ts(asset.file_modified_at),
        "timeZone": null,
        "description": asset.description,
        "exifImageWidth": null,
        "exifImageHeight": null,
        "orientation": null,
        "latitude": null,
        "longitude": null,
        "city": null,
        "state": null,
        "country": null,
        "make": null,
        "model": null,
        "lensModel": null,
        "fNumber": null,
        "focalLength": null,
        "iso": null,
        "exposureTime": null,
        "projectionType": null,
        "rating": null,
    })
}

fn mime(asset: &Asset) -> String {
    let ext = asset
        .original_file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let major = match asset.kind {
        crate::state::AssetType::Image => "image",
        crate::state::AssetType::Video => "video",
    };
    let sub = match ext.as_str() {
        "jpg" | "jpeg" | "jpe" => "jpeg".to_string(),
        "mov" => "quicktime".to_string(),
        "mkv" => "x-matroska".to_string(),
        "tif" => "tiff".to_string(),
        other => other.to_string(),
    };
    format!("{major}/{sub}")
}

/// `AssetResponseDto`. The next major drops `deviceAssetId` and `deviceId`.
pub(crate) fn asset(asset: &Asset, dialect: Dialect, with_exif: bool) -> Value {
    let mut v = json!({
        "id": asset.id,
        "ownerId": asset.owner_id,
        "libraryId": null,
        "type": asset.kind.as_str(),
        "originalPath": format!("/data/upload/{}/{}/{}", asset.owner_id, &asset.id[..2], asset.id),
        "originalFileName": asset.original_file_name,
        "originalMimeType": mime(asset),
        "thumbhash": null,
        "checksum": b64(&asset.checksum),
        "fileCreatedAt": fmt_ts(asset.file_created_at),
        "fileModifiedAt": fmt_ts(asset.file_modified_at),
        "localDateTime": fmt_ts(asset.local_date_time),
        "createdAt": fmt_ts(asset.created_at),
        "updatedAt": fmt_ts(asset.updated_at),
        "isFavorite": asset.is_favorite,
        "isArchived": asset.visibility == Visibility::Archive,
        "isTrashed": asset.deleted_at.is_some(),
        "isOffline": false,
        "isEdited": false,
        "visibility": asset.visibility.as_str(),
        "duration": asset.duration.clone().unwrap_or_else(|| "0:00:00.00000".to_string()),
        "livePhotoVideoId": null,
        "people": [],
        "tags": [],
        "stack": null,
        "duplicateId": null,
        "hasMetadata": true,
        "resized": true,
        "width": null,
        "height": null,
    });
    if dialect != Dialect::ImmichNext {
        v["deviceAssetId"] = json!(asset.device_asset_id);
        v["deviceId"] = json!(asset.device_id);
    }
    if with_exif {
        v["exifInfo"] = exif(asset);
    }
    v
}

/// `SyncAssetV1` (API.md §5.4).
pub(crate) fn sync_asset(asset: &Asset) -> Value {
    json!({
        "id": asset.id,
        "ownerId": asset.owner_id,
        "originalFileName": asset.original_file_name,
        "thumbhash": null,
        "checksum": b64(&asset.checksum),
        "fileCreatedAt": fmt_ts(asset.file_created_at),
        "fileModifiedAt": fmt_ts(asset.file_modified_at),
        "localDateTime": fmt_ts(asset.local_date_time),
        "duration": asset.duration,
        "type": asset.kind.as_str(),
        "deletedAt": asset.deleted_at.map(fmt_ts),
        "isFavorite": asset.is_favorite,
        "visibility": asset.visibility.as_str(),
        "livePhotoVideoId": null,
        "stackId": null,
        "libraryId": null,
        "width": null,
        "height": null,
        "isEdited": false,
    })
}

/// `SyncAssetExifV1`.
pub(crate) fn sync_exif(asset: &Asset) -> Value {
    let mut v = exif(asset);
    v["assetId"] = json!(asset.id);
    v["fps"] = Value::Null;
    v["profileDescription"] = Value::Null;
    v
}

/// `SyncAuthUserV1`.
pub(crate) fn sync_auth_user(user: &User, usage: u64) -> Value {
    json!({
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "avatarColor": null,
        "deletedAt": null,
        "profileChangedAt": fmt_ts(user.created_at),
        "hasProfileImage": false,
        "isAdmin": user.is_admin,
        "pinCode": null,
        "oauthId": "",
        "storageLabel": if user.is_admin { Value::from("admin") } else { Value::Null },
        "quotaSizeInBytes": user.quota,
        "quotaUsageInBytes": usage,
    })
}

/// A sync stream line.
pub(crate) fn sync_line(kind: &str, data: Value, ack: &str) -> String {
    let mut line = json!({ "type": kind, "data": data, "ack": ack }).to_string();
    line.push('\n');
    line
}

pub(crate) fn ack(kind: &str, update_id: u128) -> String {
    format!("{kind}|{}", fmt_update_id(update_id))
}

/// `AlbumResponseDto`. The next major has no `ownerId`, `owner` or `assets`; the owner is the
/// `albumUsers` entry with role `owner`.
pub(crate) fn album(st: &State, album: &Album, dialect: Dialect, with_assets: bool) -> Value {
    let owner = st
        .user(&album.owner_id)
        .map(user_brief)
        .unwrap_or(Value::Null);
    let assets: Vec<&Asset> = album
        .asset_ids
        .iter()
        .filter_map(|id| st.assets.get(id))
        .filter(|a| a.deleted_at.is_none())
        .collect();
    let start = assets.iter().map(|a| a.file_created_at).min();
    let end = assets.iter().map(|a| a.file_created_at).max();
    let last_modified = assets.iter().map(|a| a.updated_at).max();
    let mut v = json!({
        "id": album.id,
        "albumName": album.name,
        "description": album.description,
        "createdAt": fmt_ts(album.created_at),
        "updatedAt": fmt_ts(album.updated_at),
        "albumThumbnailAssetId": album.thumbnail,
        "shared": false,
        "hasSharedLink": false,
        "assetCount": assets.len(),
        "isActivityEnabled": true,
        "order": "desc",
    });
    if let Some(s) = start {
        v["startDate"] = json!(fmt_ts(s));
    }
    if let Some(e) = end {
        v["endDate"] = json!(fmt_ts(e));
    }
    if let Some(l) = last_modified {
        v["lastModifiedAssetTimestamp"] = json!(fmt_ts(l));
    }
    if dialect == Dialect::ImmichNext {
        v["albumUsers"] = json!([{ "user": owner, "role": "owner" }]);
    } else {
        v["ownerId"] = json!(album.owner_id);
        v["owner"] = owner;
        v["albumUsers"] = json!([]);
        v["assets"] = if with_assets {
            Value::Array(assets.iter().map(|a| asset(a, dialect, false)).collect())
        } else {
            json!([])
        };
    }
    v
}
