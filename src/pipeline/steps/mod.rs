//! The steps a job goes through: ① [`hash`], ② [`check`] (dedup), ③ [`upload`] and
//! ④ [`verify`], and what their failures do to a job.
//!
//! Each step records its result through the named units of work of `db/` and tells the
//! engine what it means for the gate (a [`Signal`]). Must not: decide scheduling (how many
//! run at once is the engine's) or pause anything itself.

pub(crate) mod check;
pub(crate) mod hash;
pub(crate) mod upload;
pub(crate) mod verify;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::gate::{Pause, Signal};
use super::Stats;
use crate::api::{ApiClient, ApiError, ErrorClass};
use crate::backoff::Backoff;
use crate::db::queue::{self, ClaimedJob, RetryAt};
use crate::db::{now_ms, Db, DbError};

/// Delay before a file that changed under us is looked at again.
const CHANGED_DELAY: Duration = Duration::from_secs(2);

/// What every step works with. Cheap to clone (one per task).
#[derive(Clone)]
pub(crate) struct Ctx {
    pub db: Db,
    pub api: ApiClient,
    pub stats: Arc<Stats>,
    /// The wait before a job's next attempt after a transient failure.
    pub retry: Backoff,
    /// How each root dates its files, by root path.
    pub dating: Arc<Vec<(std::path::PathBuf, crate::dates::Dating)>>,
}

impl Ctx {
    /// When a job that failed transiently is tried again: the backoff for its next attempt,
    /// or what the server asked for (`Retry-After`) if that is longer.
    fn retry_at(&self, job: &ClaimedJob, at_least: Option<Duration>, now: i64) -> RetryAt {
        let attempts = job.attempts + 1;
        let wait = self.retry.delay(attempts).max(at_least.unwrap_or_default());
        RetryAt {
            file_id: job.file_id,
            attempts,
            at_ms: now + wait.as_millis() as i64,
        }
    }

    /// Schedules one job's retry after a transient failure.
    async fn schedule(&self, job: &ClaimedJob, reason: &str, at_least: Option<Duration>) {
        let now = now_ms();
        let r = self.retry_at(job, at_least, now);
        let reason = reason.to_string();
        Stats::add(&self.stats.retries, 1);
        log_db(
            self.db
                .call(move |c| {
                    queue::schedule_retry(c, r.file_id, r.attempts, r.at_ms, &reason, now)
                })
                .await,
        );
    }

    /// Ends a job in `failed`: no retry fixes it.
    async fn fail(&self, file_id: i64, reason: String) {
        Stats::add(&self.stats.failed, 1);
        log_db(
            self.db
                .call(move |c| queue::fail(c, file_id, &reason, now_ms()))
                .await,
        );
    }

    /// Records what an API error means for this job and tells the engine what it means for
    /// the gate.
    async fn job_error(&self, job: &ClaimedJob, step: &str, e: ApiError) -> Signal {
        let path = display(&job.path);
        match e.class() {
            ErrorClass::Transient => {
                let msg = format!("{step} failed: {e}");
                tracing::warn!(path = %path, "{msg}; will retry");
                self.schedule(job, &msg, e.retry_after()).await;
                Signal::Transient(msg)
            }
            // A 403 is the key lacking a permission: every file would meet it, so it pauses
            // everything instead of failing files one by one.
            ErrorClass::Permanent if e.status() == Some(403) => Signal::Pause(Pause::Blocked(
                format!("the server refused the {step} for lack of a permission: {e}"),
            )),
            ErrorClass::Permanent => {
                let reason = format!("{step} refused: {e}");
                tracing::warn!(path = %path, "{reason}; not retried until the file changes");
                self.fail(job.file_id, reason).await;
                Signal::Ok
            }
            ErrorClass::FileChanged => {
                tracing::debug!(path = %path, "file changed during upload; looking again later");
                let now = now_ms();
                let retry = changed_retry(job, now);
                log_db(
                    self.db
                        .call(move |c| {
                            queue::retry_after_change(
                                c,
                                retry,
                                None,
                                "the file changed while it was sent",
                                now,
                            )
                        })
                        .await,
                );
                Signal::Ok
            }
            ErrorClass::Auth | ErrorClass::Capacity => Signal::Pause(pause_for(e.class(), &e)),
        }
    }
}

/// A file that changed under a step is looked at again shortly, counting an attempt.
fn changed_retry(job: &ClaimedJob, now: i64) -> RetryAt {
    RetryAt {
        file_id: job.file_id,
        attempts: job.attempts + 1,
        at_ms: now + CHANGED_DELAY.as_millis() as i64,
    }
}

/// The global pause for an error that every job would meet.
fn pause_for(class: ErrorClass, e: &ApiError) -> Pause {
    match class {
        ErrorClass::Auth => Pause::Auth(format!("the server rejected the credentials: {e}")),
        ErrorClass::Capacity => Pause::Capacity(format!("the server is full: {e}")),
        _ => Pause::Blocked(format!("the server refused the duplicate check: {e}")),
    }
}

fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

fn display(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Logs a database failure inside a task. The job stays in its state and is recovered on the
/// next start; there is nothing better a task can do with it.
fn log_db(res: Result<(), DbError>) {
    if let Err(e) = res {
        tracing::error!(error = %e, "could not record a job's progress");
    }
}
