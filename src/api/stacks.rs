//! Grouping assets on the server (docs/SERVER-API.md#15-live-photos-sidecars-stacks-and-albums):
//! linking a Live Photo's still to its video after both are uploaded (`PUT /assets/:id
//! {livePhotoVideoId}`), and stacking assets (`POST /stacks`).
//!
//! Must not: decide which files belong together (that is `src/library/`).

use reqwest::Method;
use serde_json::Value;

use super::{ApiClient, Result};
use crate::model::AssetId;

impl ApiClient {
    /// `PUT /assets/:still {livePhotoVideoId: video}` (permission `asset.update`). The server
    /// hides the video.
    pub async fn link_live_photo(&self, still: &AssetId, video: &AssetId) -> Result<()> {
        let mut url = self.inner.api_root.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("assets").push(&still.0);
        }
        let (rb, info) = self.request_url(Method::PUT, url.as_str());
        let body = serde_json::json!({ "livePhotoVideoId": video.0 });
        let _: Value = self.inner.transport.json(rb.json(&body), &info).await?;
        Ok(())
    }

    /// `POST /stacks {assetIds}`: the first id becomes the primary; a stack whose primary is
    /// among the ids is merged into the new one (permissions `stack.create`, `asset.update`).
    pub async fn create_stack(&self, ids: &[AssetId]) -> Result<()> {
        let ids: Vec<&str> = ids.iter().map(|a| a.0.as_str()).collect();
        let body = serde_json::json!({ "assetIds": ids });
        let _: Value = self.post_json("/stacks", &body).await?;
        Ok(())
    }
}
