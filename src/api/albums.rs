//! The album calls (docs/SERVER-API.md#albums): listing the user's own albums, creating one,
//! and adding assets to one.
//!
//! Must not: choose among albums of the same name or remember any (that is `src/library/`);
//! these return what the server said, typed.

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiClient, Result};

/// An album as the library needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Album {
    pub id: String,
    pub name: String,
    /// As the server wrote it (ISO 8601 in UTC sorts as text).
    pub created_at: String,
}

/// What `PUT /albums/:id/assets` said about the ids sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlbumAdd {
    /// Added now.
    pub added: usize,
    /// Already in the album (`duplicate`): as good as added.
    pub already: usize,
    /// Refused for another reason (`no_permission`, `not_found`…), with it.
    pub refused: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlbumDto {
    id: String,
    album_name: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    owner_id: Option<String>,
    #[serde(default)]
    album_users: Vec<Value>,
}

impl AlbumDto {
    /// The owner: `ownerId` (v2.7.5), or the `albumUsers` entry with role `owner` (the next
    /// major); `None` when neither says.
    fn owner(&self) -> Option<&str> {
        self.owner_id.as_deref().or_else(|| {
            self.album_users
                .iter()
                .find(|u| u.get("role").and_then(Value::as_str) == Some("owner"))
                .and_then(|u| u.pointer("/user/id"))
                .and_then(Value::as_str)
        })
    }

    fn into_album(self) -> Album {
        Album {
            id: self.id,
            name: self.album_name,
            created_at: self.created_at,
        }
    }
}

#[derive(Deserialize)]
struct AddResult {
    id: String,
    success: bool,
    #[serde(default)]
    error: Option<String>,
}

impl ApiClient {
    /// `GET /albums`: the albums the user owns (albums shared with the user are listed by
    /// the server too and left out here, when the owner can be told).
    pub async fn own_albums(&self) -> Result<Vec<Album>> {
        let items: Vec<AlbumDto> = self.get_json("/albums").await?;
        let me = self.user_id();
        Ok(items
            .into_iter()
            .filter(|a| me.is_empty() || a.owner().is_none_or(|o| o == me))
            .map(AlbumDto::into_album)
            .collect())
    }

    /// `POST /albums {albumName}` (201).
    pub async fn create_album(&self, name: &str) -> Result<Album> {
        let body = serde_json::json!({ "albumName": name });
        let dto: AlbumDto = self.post_json("/albums", &body).await?;
        Ok(dto.into_album())
    }

    /// `PUT /albums/:id/assets {ids}`. An album the server no longer has (or that is not
    /// ours) is a 400 (`Not found or no albumAsset.create access`), returned as the error.
    pub async fn add_to_album(&self, album_id: &str, ids: &[String]) -> Result<AlbumAdd> {
        let mut url = self.inner.api_root.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .push("albums")
                .push(album_id)
                .push("assets");
        }
        let (rb, info) = self.request_url(Method::PUT, url.as_str());
        let body = serde_json::json!({ "ids": ids });
        let results: Vec<AddResult> = self.inner.transport.json(rb.json(&body), &info).await?;
        let mut out = AlbumAdd::default();
        for r in results {
            match (r.success, r.error.as_deref()) {
                (true, _) => out.added += 1,
                (false, Some("duplicate")) => out.already += 1,
                (false, e) => out.refused.push((r.id, e.unwrap_or("unknown").to_owned())),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_comes_from_either_dialect() {
        let v2: AlbumDto = serde_json::from_value(serde_json::json!({
            "id": "a", "albumName": "n", "createdAt": "t", "ownerId": "me", "albumUsers": []
        }))
        .unwrap();
        assert_eq!(v2.owner(), Some("me"));
        let next: AlbumDto = serde_json::from_value(serde_json::json!({
            "id": "a", "albumName": "n", "createdAt": "t",
            "albumUsers": [{"user": {"id": "other"}, "role": "editor"},
                           {"user": {"id": "me"}, "role": "owner"}]
        }))
        .unwrap();
        assert_eq!(next.owner(), Some("me"));
    }
}
