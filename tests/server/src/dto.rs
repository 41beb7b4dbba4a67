//! JSON shapes of the server's records (docs/SERVER-API.md#7-reading-an-asset,
//! docs/SERVER-API.md#request-and-lines, docs/SERVER-API.md#albums), per dialect.

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

/// `ExifResponseDto`. Until the metadata job has run only the size (and a description set
/// through the API) are known; `dateTimeOriginal` and `modifyDate` are then null, as in Immich,
/// whose upload writes an exif row with the file size alone.
fn exif(asset: &Asset) -> Value {
    let e = &asset.exif;
    let modify = asset
        .metadata_extracted
        .then(|| fmt_ts(asset.file_modified_at));
    json!({
        "fileSizeInByte": asset.size,
        "dateTimeOriginal": e.date_time_original.map(fmt_ts),
        "modifyDate": modify,
        "timeZone": e.time_zone,
        "description": asset.description,
        "exifImageWidth": e.width,
        "exifImageHeight": e.height,
        "orientation": e.orientation,
        "latitude": null,
        "longitude": null,
        "city": null,
        "state": null,
        "country": null,
        "make": e.make,
        "model": e.model,
        "lensModel": e.lens_model,
        "fNumber": e.f_number,
        "focalLength": e.focal_length,
        "iso": e.iso,
        "exposureTime": e.exposure_time,
        "projectionType": null,
        "rating": null,
    })
}

/// The `stack` of an `AssetResponseDto`: `{id, primaryAssetId, assetCount}` or null.
pub(crate) fn stack_brief(st: &State, asset: &Asset) -> Value {
    let Some(stack) = asset
        .stack_id
        .as_ref()
        .and_then(|id| st.stacks.iter().find(|s| &s.id == id))
    else {
        return Value::Null;
    };
    json!({
        "id": stack.id,
        "primaryAssetId": stack.primary_asset_id,
        "assetCount": st.stack_members(&stack.id).len(),
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
        "livePhotoVideoId": asset.live_photo_video_id,
        "people": [],
        "tags": [],
        "stack": null,
        "duplicateId": null,
        "hasMetadata": asset.metadata_extracted,
        "resized": true,
        "width": asset.width,
        "height": asset.height,
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

/// `AssetResponseDto` with its `stack` filled, as `GET /assets/:id` answers it.
pub(crate) fn asset_with_stack(st: &State, a: &Asset, dialect: Dialect, with_exif: bool) -> Value {
    let mut v = asset(a, dialect, with_exif);
    v["stack"] = stack_brief(st, a);
    v
}

/// `StackResponseDto`: the primary first, then the other members.
pub(crate) fn stack(st: &State, stack: &crate::state::Stack, dialect: Dialect) -> Value {
    let assets: Vec<Value> = st
        .stack_members(&stack.id)
        .into_iter()
        .map(|a| asset(a, dialect, true))
        .collect();
    json!({
        "id": stack.id,
        "primaryAssetId": stack.primary_asset_id,
        "assets": assets,
    })
}

/// `SyncAssetV1` (docs/SERVER-API.md#request-and-lines).
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
        "livePhotoVideoId": asset.live_photo_video_id,
        "stackId": asset.stack_id,
        "libraryId": null,
        "width": asset.width,
        "height": asset.height,
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
