//! Downloading an original: `GET /assets/:id/original` (permission `asset.download`),
//! handed out as a stream of chunks, each within the stall timeout.
//!
//! Must not: write files or decide what a short or wrong body means (the pull engine,
//! `crate::originals`, checks the bytes against the mirror's checksum).

use bytes::Bytes;
use reqwest::{Method, Response};

use super::transport::Progress;
use super::{ApiClient, ApiError, RequestInfo, Result};
use crate::model::AssetId;

/// The body of one original, as it arrives.
pub struct Download {
    resp: Response,
    info: RequestInfo,
    stall: std::time::Duration,
    /// `Content-Length`, when the server sent one.
    pub size: Option<u64>,
}

impl ApiClient {
    /// Starts `GET /assets/:id/original`; the status is checked (a 403 names the missing
    /// permission, as every call's does), the body is for [`Download::chunk`].
    pub async fn download_original(&self, id: &AssetId) -> Result<Download> {
        let (rb, info) = self.request(Method::GET, &format!("/assets/{}/original", id.0));
        let progress = Progress::new();
        let resp = self.inner.transport.send(rb, &info, &progress).await?;
        if !resp.status().is_success() {
            return Err(self.inner.transport.http_error(resp, &info).await);
        }
        Ok(Download {
            size: resp.content_length(),
            resp,
            info,
            stall: self.stall_timeout(),
        })
    }
}

impl ApiClient {
    /// The video of a Live Photo still (`livePhotoVideoId` of `GET /assets/:id`, permission
    /// `asset.read`); `None` for any other asset, or one the server no longer has.
    pub async fn live_photo_video_of(&self, still: &AssetId) -> Result<Option<AssetId>> {
        let (rb, info) = self.request(Method::GET, &format!("/assets/{}", still.0));
        match self
            .inner
            .transport
            .json::<serde_json::Value>(rb, &info)
            .await
        {
            Ok(v) => Ok(v
                .get("livePhotoVideoId")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(|s| AssetId(s.to_owned()))),
            Err(e) if matches!(e.status(), Some(400 | 404)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Download {
    /// The next chunk, `None` at the end; no chunk within the stall timeout is an error.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        match tokio::time::timeout(self.stall, self.resp.chunk()).await {
            Err(_) => Err(ApiError::Stalled {
                request: Box::new(self.info.clone()),
                after: self.stall,
            }),
            Ok(Err(e)) => Err(ApiError::Network {
                request: Box::new(self.info.clone()),
                detail: super::transport::error_chain(&e),
            }),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }
}
