//! Reading the server's API again while connected: after the server reported another version
//! (an upgrade, or another server behind the same address), discovery runs again
//! (docs/RELIABILITY.md#the-server-is-upgraded-while-the-daemon-runs).
//!
//! Must not: change this client. What a different answer means is the caller's.

use super::discovery::discover;
use super::{ApiClient, Dialect, Result};

/// What discovery finds now, beside what this client was connected with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rediscovered {
    pub api_root: String,
    pub dialect: Dialect,
    /// The API root and dialect are the ones this client uses.
    pub unchanged: bool,
}

impl ApiClient {
    /// Runs discovery again against the configured address (no credentials are sent).
    pub async fn rediscover(&self) -> Result<Rediscovered> {
        let (root, dialect) = discover(&self.inner.transport, &self.inner.base).await?;
        let api_root = root.as_str().trim_end_matches('/').to_owned();
        Ok(Rediscovered {
            unchanged: api_root == self.inner.api_text && dialect == self.inner.dialect,
            api_root,
            dialect,
        })
    }
}
