//! `POST /search/metadata` (docs/SERVER-API.md#9-search-pulls): filters, visibility default,
//! partner assets, and offset paging with `nextPage`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::auth::{authenticate, Creds};
use crate::error::{invalid, opt_bool, opt_str, uuid_list, ApiError, JsonBody};
use crate::state::{decode_checksum, parse_date, App, Asset, Visibility};
use crate::{dto, Dialect};

const DEFAULT_SIZE: u64 = 250;
const MAX_SIZE: u64 = 1000;

/// A validated `MetadataSearchDto` (the fields this server implements).
struct Query {
    page: u64,
    size: u64,
    desc: bool,
    visibility: Option<Visibility>,
    with_deleted: bool,
    with_exif: bool,
    with_stacked: bool,
    is_favorite: Option<bool>,
    updated_after: Option<i64>,
    updated_before: Option<i64>,
    taken_after: Option<i64>,
    taken_before: Option<i64>,
    created_after: Option<i64>,
    created_before: Option<i64>,
    trashed_after: Option<i64>,
    trashed_before: Option<i64>,
    checksum: Option<Option<[u8; 20]>>,
    original_file_name: Option<String>,
    id: Option<String>,
    device_id: Option<String>,
    device_asset_id: Option<String>,
    kind: Option<String>,
    album_ids: Vec<String>,
}

fn int_field(
    body: &Value,
    field: &str,
    min: u64,
    max: Option<u64>,
    default: u64,
) -> Result<u64, String> {
    let v = match body.get(field) {
        None | Some(Value::Null) => return Ok(default),
        Some(v) => v,
    };
    // class-transformer's `@Type(() => Number)` turns a numeric string into a number first:
    // `"page": "2"` is page 2 (measured on Immich).
    let n = v
        .as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse::<i64>().ok()));
    let Some(n) = n else {
        return Err(invalid(
            field,
            &format!("{field} must be an integer number"),
            "Invalid input: expected int, received number",
        ));
    };
    if n < min as i64 {
        return Err(invalid(
            field,
            &format!("{field} must not be less than {min}"),
            &format!("Too small: expected number to be >={min}"),
        ));
    }
    if let Some(max) = max {
        if n > max as i64 {
            return Err(invalid(
                field,
                &format!("{field} must not be greater than {max}"),
                &format!("Too big: expected number to be <={max}"),
            ));
        }
    }
    Ok(n as u64)
}

fn parse(body: &Value, dialect: Dialect) -> Result<Query, ApiError> {
    let strict = dialect == Dialect::ImmichNext;
    let mut errors = Vec::new();
    let page = int_field(body, "page", 1, None, 1).unwrap_or_else(|e| {
        errors.push(e);
        1
    });
    let size = int_field(body, "size", 1, Some(MAX_SIZE), DEFAULT_SIZE).unwrap_or_else(|e| {
        errors.push(e);
        DEFAULT_SIZE
    });
    let desc = match body.get("order").and_then(Value::as_str) {
        None => true,
        Some("desc") => true,
        Some("asc") => false,
        Some(_) => {
            errors.push(invalid(
                "order",
                "order must be one of the following values: asc, desc",
                "Invalid option: expected one of \"asc\"|\"desc\"",
            ));
            true
        }
    };
    let visibility = match body.get("visibility").and_then(Value::as_str) {
        None => None,
        Some(v) => Visibility::parse(v).or_else(|| {
            errors.push(invalid(
                "visibility",
                "visibility must be one of the following values: archive, timeline, hidden, locked",
                "Invalid option: expected one of \"archive\"|\"timeline\"|\"hidden\"|\"locked\"",
            ));
            None
        }),
    };
    let mut date = |field: &str| -> Option<i64> {
        let s = body.get(field).filter(|v| !v.is_null())?.as_str();
        match s.and_then(|s| parse_date(s, strict)) {
            Some(d) => Some(d.utc_ms),
            None => {
                errors.push(invalid(
                    field,
                    &format!("{field} must be a Date instance"),
                    "Invalid ISO datetime",
                ));
                None
            }
        }
    };
    let updated_after = date("updatedAfter");
    let updated_before = date("updatedBefore");
    let taken_after = date("takenAfter");
    let taken_before = date("takenBefore");
    let created_after = date("createdAfter");
    let created_before = date("createdBefore");
    let trashed_after = date("trashedAfter");
    let trashed_before = date("trashedBefore");
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let kind = opt_str(body, "type")?.map(str::to_string);
    if let Some(k) = &kind {
        if !["IMAGE", "VIDEO", "AUDIO", "OTHER"].contains(&k.as_str()) {
            return Err(ApiError::validation(vec![invalid(
                "type",
                "type must be one of the following values: IMAGE, VIDEO, AUDIO, OTHER",
                "Invalid option",
            )]));
        }
    }
    Ok(Query {
        page,
        size,
        desc,
        visibility,
        with_deleted: opt_bool(body, "withDeleted")?.unwrap_or(false),
        with_exif: opt_bool(body, "withExif")?.unwrap_or(false),
        with_stacked: opt_bool(body, "withStacked")?.unwrap_or(false),
        is_favorite: opt_bool(body, "isFavorite")?,
        updated_after,
        updated_before,
        taken_after,
        taken_before,
        created_after,
        created_before,
        trashed_after,
        trashed_before,
        checksum: opt_str(body, "checksum")?.map(decode_checksum),
        original_file_name: opt_str(body, "originalFileName")?.map(str::to_lowercase),
        id: opt_str(body, "id")?.map(str::to_string),
        device_id: opt_str(body, "deviceId")?.map(str::to_string),
        device_asset_id: opt_str(body, "deviceAssetId")?.map(str::to_string),
        kind,
        album_ids: uuid_list(body, "albumIds", false)?,
    })
}

fn within(v: i64, after: Option<i64>, before: Option<i64>) -> bool {
    after.is_none_or(|t| v >= t) && before.is_none_or(|t| v <= t)
}

impl Query {
    fn matches(&self, a: &Asset, album_assets: &Option<Vec<&String>>) -> bool {
        let trash_filter = self.trashed_after.is_some() || self.trashed_before.is_some();
        if !self.with_deleted && a.deleted_at.is_some() != trash_filter {
            return false;
        }
        if trash_filter {
            match a.deleted_at {
                Some(t) if within(t, self.trashed_after, self.trashed_before) => {}
                _ => return false,
            }
        }
        a.visibility == self.visibility.unwrap_or(Visibility::Timeline)
            && within(a.updated_at, self.updated_after, self.updated_before)
            && within(a.file_created_at, self.taken_after, self.taken_before)
            && within(a.created_at, self.created_after, self.created_before)
            && self.is_favorite.is_none_or(|f| f == a.is_favorite)
            && self.checksum.is_none_or(|c| c == Some(a.checksum))
            && self
                .original_file_name
                .as_ref()
                .is_none_or(|n| a.original_file_name.to_lowercase().contains(n))
            && self.id.as_ref().is_none_or(|id| *id == a.id)
            && self
                .device_id
                .as_ref()
                .is_none_or(|d| a.device_id.as_ref() == Some(d))
            && self
                .device_asset_id
                .as_ref()
                .is_none_or(|d| a.device_asset_id.as_ref() == Some(d))
            && self.kind.as_ref().is_none_or(|k| k == a.kind.as_str())
            && album_assets.as_ref().is_none_or(|ids| ids.contains(&&a.id))
    }
}

pub(crate) async fn metadata(
    State(app): State<App>,
    creds: Creds,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let dialect = app.dialect();
    let db = app.lock();
    let auth = authenticate(&db, &creds, Some("asset.read"))?;
    let q = parse(&body, dialect)?;
    if q.visibility == Some(Visibility::Locked) {
        // Needs a PIN-elevated session, which this server never grants.
        return Err(ApiError::unauthorized("Elevated permission is required"));
    }
    let owners = db.timeline_owner_ids(&auth.user_id);
    let album_assets: Option<Vec<&String>> = (!q.album_ids.is_empty()).then(|| {
        db.albums
            .iter()
            .filter(|al| q.album_ids.contains(&al.id))
            .flat_map(|al| al.asset_ids.iter())
            .collect()
    });
    let hits: Vec<&Asset> = db
        .assets
        .values()
        .filter(|a| owners.contains(&a.owner_id))
        .filter(|a| q.matches(a, &album_assets))
        .collect();
    let total = hits.len();
    let start = ((q.page - 1) * q.size) as usize;
    let page = page_of(hits, start, q.size as usize, q.desc);
    let items: Vec<Value> = page
        .iter()
        .map(|a| {
            let mut v = dto::asset(a, dialect, q.with_exif);
            if q.with_stacked {
                v["stack"] = dto::stack_brief(&db, a);
            }
            v
        })
        .collect();
    let next_page = (total > start + q.size as usize).then(|| (q.page + 1).to_string());
    Ok(Json(json!({
        "albums": { "total": 0, "count": 0, "items": [], "facets": [] },
        "assets": {
            // Immich reports the page's length in both fields.
            "total": items.len(),
            "count": items.len(),
            "items": items,
            "facets": [],
            "nextPage": next_page,
        },
    })))
}

/// The `size` hits from `start` on, in `fileCreatedAt` order (then id, so that pages are
/// stable when dates tie), newest first if `desc`. Two selections then a sort of the page
/// alone: a pull pages through the whole library, and sorting every hit for each page made
/// a full pull of 1,000,000 assets quadratic (docs/BENCHMARKS.md, "Session 10: 1,000,000 files").
fn page_of(mut hits: Vec<&Asset>, start: usize, size: usize, desc: bool) -> Vec<&Asset> {
    let order = |a: &&Asset, b: &&Asset| {
        let o = (a.file_created_at, &a.id).cmp(&(b.file_created_at, &b.id));
        if desc {
            o.reverse()
        } else {
            o
        }
    };
    if start >= hits.len() {
        return Vec::new();
    }
    if start > 0 {
        hits.select_nth_unstable_by(start, order);
        hits.drain(..start);
    }
    if hits.len() > size {
        hits.select_nth_unstable_by(size, order);
        hits.truncate(size);
    }
    hits.sort_by(order);
    hits
}
