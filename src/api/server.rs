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

/// The server's clock as one answer showed it: its `Date` header, between two local
/// readings (just before sending and just after the headers came back).
#[derive(Clone, Debug)]
pub struct ServerClock {
    /// The `Date` header as sent (an HTTP-date), when there was one.
    pub date: Option<String>,
    pub sent: std::time::SystemTime,
    pub received: std::time::SystemTime,
}

impl ApiClient {
    /// `GET /server/ping`, for the clock in its `Date` header (`doctor`). The answer's body
    /// is not read.
    pub async fn server_clock(&self) -> Result<ServerClock> {
        let (rb, info) = self.request(Method::GET, "/server/ping");
        let progress = super::transport::Progress::new();
        let sent = std::time::SystemTime::now();
        let resp = self.inner.transport.send(rb, &info, &progress).await?;
        let received = std::time::SystemTime::now();
        if !resp.status().is_success() {
            return Err(self.inner.transport.http_error(resp, &info).await);
        }
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(ServerClock {
            date,
            sent,
            received,
        })
    }
}
