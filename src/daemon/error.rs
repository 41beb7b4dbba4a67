//! The errors of `scan` and `run`: what stops either command, with the errors of the parts
//! they run (the lock, the state database, the watcher, the scanner, the engine) turned into
//! it.
//!
//! Must not: decide what an error means for the daemon (whether a generation starts again is
//! `tree.rs`'s call).

use std::path::PathBuf;

use crate::api::ApiError;
use crate::db::DbError;
use crate::lock::LockError;
use crate::pipeline::EngineError;
use crate::scan::PassError;
use crate::watch::WatchError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot use the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the server: {0}")]
    Connect(#[source] ApiError),
    #[error("root {path}: {message}")]
    Root { path: PathBuf, message: String },
    #[error("a daemon task failed: {0}")]
    Task(String),
    /// With `[[accounts]]`: accounts that stopped with an error, the first one's error
    /// (docs/ARCHITECTURE.md#accounts).
    #[error("account {names} stopped: {first}")]
    AccountsStopped {
        names: String,
        #[source]
        first: Box<DaemonError>,
    },
    #[error("uploads are paused (since {since}): `immish-sync resume` lifts the pause")]
    Paused { since: String },
    #[error("metrics.listen: cannot listen on {addr}: {source}; choose another port, or remove [metrics] listen")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl From<WatchError> for DaemonError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Db(d) => DaemonError::Db(d),
            WatchError::Task(t) => DaemonError::Task(t),
        }
    }
}

impl From<PassError> for DaemonError {
    fn from(e: PassError) -> Self {
        match e {
            PassError::Db(d) => DaemonError::Db(d),
            PassError::Task(t) => DaemonError::Task(t),
        }
    }
}

impl From<EngineError> for DaemonError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Db(d) => DaemonError::Db(d),
        }
    }
}
