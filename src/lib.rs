//! immish-sync: a background photo-backup agent for Immich-compatible servers.
//!
//! The daemon is a library function ([`daemon::run`]) so that tests drive exactly what
//! users run; `main.rs` only parses the command line, sets up logging and dispatches.
//!
//! Parts, each owning one thing:
//! - [`config`]: the TOML file and environment, validated once.
//! - [`db`]: the SQLite state (catalogue of local files, job queue, metadata).
//! - [`backoff`]: exponential backoff with jitter, the one formula every retry loop uses.
//! - [`lock`]: one daemon per state directory, and the probe of who holds it.
//! - [`scan`]: walking the roots and comparing with the catalogue.
//! - [`filter`]: which entries a walk or the watcher looks at (junk, ignore files, patterns).
//! - [`sidecar`]: the XMP file sent beside a photo.
//! - [`dates`]: the `fileCreatedAt` of a file (capture time, name, mtime).
//! - [`hash`]: streaming SHA-1 on the blocking pool.
//! - [`complete`]: whether a media file is structurally complete (JPEG, PNG, ISO-BMFF, WebP).
//! - [`api`]: the server client (discovery, auth, dialects, endpoints, error classes).
//! - [`pipeline`]: the job engine (hash → dedup → upload → verify, retries, pauses).
//! - [`daemon`]: `scan` and `run`, the task tree and its orderly shutdown.
//! - [`status`]: the read-only views `status` prints.
//! - [`service`]: life under systemd (notify, watchdog heartbeats, journald lines, units).
//! - [`human`]: sizes, durations, ages and timestamps as people read them.
//! - [`watch`]: live watching (notify or polling), settling, paused roots.
//! - [`windows`]: upload time windows (`upload.windows`).
//! - [`mirror`]: the mirror of the user's assets on the server (pulls, live events, the
//!   tombstones of what the user deleted there).
//! - [`control`]: `pause`, `resume`, `rescan`, `retry` reaching the running daemon.
//! - [`explain`]: `explain PATH`, why a file is (not) on the server.
//! - [`dryrun`]: `scan --dry-run`, what a backup would send.
//! - [`setup`]: `init` (writing a checked config) and `doctor` (checking an install).
//! - [`library`]: after the upload: albums, Live Photos and stacks.
//! - [`after_upload`]: archiving or deleting a local file once the server holds it.
//! - `demo` (cargo feature `demo`): the daemon against the in-repo test server, in-process.

pub mod after_upload;
pub mod alerts;
pub mod api;
pub mod backoff;
pub mod complete;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dates;
pub mod db;
pub mod dryrun;
pub mod explain;
pub mod filter;
pub mod hash;
pub mod http;
pub mod human;
pub mod library;
pub mod live;
pub mod lock;
pub mod logfilter;
pub mod mirror;
pub mod model;
pub mod originals;
pub mod pipeline;
pub mod progress;
pub mod scan;
pub mod service;
pub mod setup;
pub mod sidecar;
pub mod status;
pub mod watch;
pub mod windows;

#[cfg(feature = "demo")]
pub mod demo;
