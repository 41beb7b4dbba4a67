//! What the server says about itself: the file types it takes and its version.

use reqwest::Method;

use super::{dto, ApiClient, Dialect, Result};
use crate::model::MediaTypes;

impl ApiClient {
    /// Supported extensions: `GET /server/media-types`, or the built-in v2.7.5 lists on a
    /// seed-style server or when the route is missing (404).
    pub async fn media_types(&self) -> Result<MediaTypes> {
        if self.inner.dialect == Dialect::Seed {
            return Ok(MediaTypes::builtin());
        }
        let (rb, info) = self.request(Method::GET, "/server/media-types");
        match self
            .inner
            .transport
            .json::<dto::MediaTypesDto>(rb, &info)
            .await
        {
            // An empty answer would skip every file; trust the built-in lists instead.
            Ok(m) if m.image.is_empty() && m.video.is_empty() => Ok(MediaTypes::builtin()),
            Ok(m) => Ok(MediaTypes::from_lists(m.image, m.video, m.sidecar)),
            Err(e) if e.status() == Some(404) => Ok(MediaTypes::builtin()),
            Err(e) => Err(e),
        }
    }

    /// The server's version: `GET /server/version` (`major.minor.patch`), or the seed's
    /// `GET /server/info` `version`.
    pub async fn server_version(&self) -> Result<String> {
        let (first, second) = match self.inner.dialect {
            Dialect::Immich => ("/server/version", "/server/info"),
            Dialect::Seed => ("/server/info", "/server/version"),
        };
        match self.version_from(first).await {
            Err(e) if e.status() == Some(404) => self.version_from(second).await,
            other => other,
        }
    }

    async fn version_from(&self, path: &str) -> Result<String> {
        let (rb, info) = self.request(Method::GET, path);
        if path == "/server/info" {
            let v: dto::SeedServerInfo = self.inner.transport.json(rb, &info).await?;
            Ok(v.version)
        } else {
            let v: dto::ServerVersion = self.inner.transport.json(rb, &info).await?;
            Ok(format!("{}.{}.{}", v.major, v.minor, v.patch))
        }
    }
}
