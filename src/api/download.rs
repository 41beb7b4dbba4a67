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
    /// Where in the original the body starts: the asked offset when the server answered
    /// 206 with a `Content-Range` starting there, else 0 (a 200 sends the whole file).
    pub start: u64,
    /// The original's whole length, from `Content-Range` (206) or `Content-Length` (200).
    pub total: Option<u64>,
    /// The server's `ETag` for the original, to send back as `If-Range` on a resume.
    pub etag: Option<String>,
}

impl ApiClient {
    /// Starts `GET /assets/:id/original`; the status is checked (a 403 names the missing
    /// permission, as every call's does), the body is for [`Download::chunk`].
    pub async fn download_original(&self, id: &AssetId) -> Result<Download> {
        self.download_original_from(id, 0, None).await
    }

    /// Like [`ApiClient::download_original`], asking for the bytes from `offset` on
    /// (`Range: bytes=offset-`, with `If-Range: etag` when one is known; Immich serves
    /// originals through Express's `sendFile`, which honours both). [`Download::start`]
    /// says what came: `offset` for a 206 whose `Content-Range` starts there, 0 for a 200
    /// (the whole file, e.g. the asset changed). A 416 (the offset is past the end) is an
    /// error with that status.
    pub async fn download_original_from(
        &self,
        id: &AssetId,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<Download> {
        let (mut rb, info) = self.request(Method::GET, &format!("/assets/{}/original", id.0));
        if offset > 0 {
            rb = rb.header(reqwest::header::RANGE, format!("bytes={offset}-"));
            if let Some(tag) = etag {
                rb = rb.header(reqwest::header::IF_RANGE, tag);
            }
        }
        let progress = Progress::new();
        let resp = self.inner.transport.send(rb, &info, &progress).await?;
        if !resp.status().is_success() {
            return Err(self.inner.transport.http_error(resp, &info).await);
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header(reqwest::header::ETAG);
        let size = resp.content_length();
        let (start, total) = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            // `bytes S-E/T`: only a range starting where we asked is taken as a resume.
            match header(reqwest::header::CONTENT_RANGE)
                .as_deref()
                .and_then(parse_content_range)
            {
                Some((s, t)) if s == offset => (s, t),
                _ => {
                    return Err(ApiError::Network {
                        request: Box::new(info),
                        detail: format!(
                            "the server answered a range from byte {offset} with another \
                             range ({})",
                            header(reqwest::header::CONTENT_RANGE).unwrap_or_default()
                        ),
                    })
                }
            }
        } else {
            (0, size)
        };
        Ok(Download {
            size,
            start,
            total,
            etag,
            resp,
            info,
            stall: self.stall_timeout(),
        })
    }
}

/// `bytes S-E/T` → (S, T); `T` may be `*` (unknown).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (s, e) = span.split_once('-')?;
    let (s, e): (u64, u64) = (s.trim().parse().ok()?, e.trim().parse().ok()?);
    if e < s {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((s, total))
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

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_range_is_read_strictly() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 9-3/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
