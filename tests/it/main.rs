//! Integration tests: the daemon (`scan`, `run`, the binary) against the in-repo test server
//! over loopback, with real files in a tempdir and a real SQLite state.
//!
//! One test binary (faster to link); one module per area.

mod account_reload;
mod accounts;
mod after_upload;
mod alerts;
mod cli;
mod clock;
mod common;
mod complete;
mod control;
mod crash;
#[cfg(feature = "demo")]
mod demo;
mod docs;
mod explain;
mod faults;
mod fixtures;
mod honest;
mod hostile;
mod library_files;
mod library_groups;
mod limits;
mod metrics;
mod mirror;
mod netns;
mod originals;
mod outage;
mod peer;
mod peraccount;
mod progress;
mod proxy;
mod scan;
mod scan_tty;
mod secrets;
mod server_change;
mod service;
mod setup;
mod soak;
mod tls;
mod torture;
mod watch;
mod windows;
