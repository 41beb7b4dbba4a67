//! ② Dedup one batch of hashed jobs: is the content on the server already?
//!
//! The stages, in order, each answering for the jobs the ones before could not: without the
//! network, [`tombstone`] (content of ours the user deleted on the server: skipped),
//! [`own_catalogue`] (assets we uploaded or linked) and [`mirror`] (the user's assets on the
//! server); then [`bulk_upload_check`] asks the server about the rest. What is left is
//! uploaded, and the upload's own `x-immich-checksum` is the last line of defence. The
//! tombstone comes first: content the user deleted on the server is never uploaded again, and
//! is not reported as backed up either.
//!
//! When the mirror is [fresh and complete](mirror_answers_all) it is the server's whole
//! inventory of the user as of its last pull: the content it does not hold (live or in the
//! trash) goes to upload without a `bulk-upload-check` (docs/ARCHITECTURE.md#dedup-order).

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::Connection;

use super::{pause_for, Ctx};
use crate::api::{CheckResult, ErrorClass};
use crate::db::catalogue;
use crate::db::meta;
use crate::db::mirror as remote;
use crate::db::now_ms;
use crate::db::queue::{self, CheckAnswer, Checked, ClaimedJob};
use crate::model::{Checksum, SkipReason};
use crate::pipeline::gate::Signal;
use crate::pipeline::{Done, Stats};

/// What a stage without the network knows, besides the database.
struct Local {
    /// The server user whose assets count as "ours" in the mirror.
    owner: String,
    /// `mirror.reupload_deleted`: tombstones are ignored.
    reupload_deleted: bool,
}

/// A dedup stage that answers from the database, or passes the job on (`None`).
type LocalStage = fn(&Connection, &Checksum, &Local) -> rusqlite::Result<Option<CheckAnswer>>;

/// The stages without the network, in order.
const LOCAL_STAGES: [LocalStage; 3] = [tombstone, own_catalogue, mirror];

/// Dedups one batch. The jobs it accepts for upload are `uploading` when it returns.
/// `pull_interval` is `mirror.pull_interval`: how old the last pull may be for the mirror
/// to answer alone.
pub(crate) async fn check(
    ctx: &Ctx,
    reupload_deleted: bool,
    pull_interval: Duration,
    jobs: Vec<ClaimedJob>,
) -> Done {
    let local = Local {
        owner: ctx.api.user_id().to_owned(),
        reupload_deleted,
    };
    match without_network(ctx, local, pull_interval, jobs).await {
        Some(Unanswered::Ask(rest)) if !rest.is_empty() => bulk_upload_check(ctx, rest).await,
        Some(Unanswered::Accepted(accepted)) => Done::checked(accepted, Signal::Ok, 0),
        _ => Done::checked(Vec::new(), Signal::Ok, 0),
    }
}

/// The jobs no local stage answered.
enum Unanswered {
    /// For the server's `bulk-upload-check`.
    Ask(Vec<ClaimedJob>),
    /// Accepted for upload already (recorded `uploading`): the mirror is fresh and complete.
    Accepted(Vec<ClaimedJob>),
}

/// The local stages over a batch, in one database call; returns the jobs none could answer
/// (`None` when the database failed: the batch stays `checking` and is claimed again).
async fn without_network(
    ctx: &Ctx,
    local: Local,
    pull_interval: Duration,
    jobs: Vec<ClaimedJob>,
) -> Option<Unanswered> {
    let res = ctx
        .db
        .call(move |c| {
            let now = now_ms();
            // One transaction for the batch's reads and its answers: each statement outside
            // one would be a read transaction of its own, with its locks (docs/BENCHMARKS.md,
            // "Session 10: small files"). Immediate, because the batch writes: a read
            // transaction upgraded to a write one fails at once (no busy wait) if another
            // connection wrote since it began.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let c = &*tx;
            let complete = mirror_answers_all(c, pull_interval, now)?;
            let mut answers = Vec::new();
            let mut rest = Vec::new();
            'jobs: for job in jobs {
                let Some(sum) = job.checksum else { continue };
                for stage in LOCAL_STAGES {
                    if let Some(answer) = stage(c, &sum, &local)? {
                        answers.push(Checked {
                            file_id: job.file_id,
                            checksum: sum,
                            answer,
                        });
                        continue 'jobs;
                    }
                }
                if complete {
                    // What `bulk-upload-check` would say of content in the user's trash.
                    let answer = match mirror_trashed(c, &sum, &local)? {
                        Some(trashed) => trashed,
                        None => CheckAnswer::Upload,
                    };
                    answers.push(Checked {
                        file_id: job.file_id,
                        checksum: sum,
                        answer: answer.clone(),
                    });
                    if answer != CheckAnswer::Upload {
                        continue;
                    }
                }
                rest.push(job);
            }
            queue::write_check_answers(c, &answers, now)?;
            tx.commit()?;
            Ok((complete, rest, answers))
        })
        .await;
    match res {
        Ok((complete, rest, answers)) => {
            count(&ctx.stats, &answers);
            Some(if complete {
                Unanswered::Accepted(rest)
            } else {
                Unanswered::Ask(rest)
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "dedup: cannot read the catalogue");
            None
        }
    }
}

/// Whether the mirror answers for every checksum without asking the server: it is
/// *complete* (a full pull of the user's inventory, with its reconcile, has finished since
/// this account was configured), *current* (no pull failed since the last one that
/// completed) and *fresh* (that pull began at most `pull_interval` ago, by a clock that did
/// not go back). Content the server gained since that pull (another device's upload) is
/// still answered as a duplicate by the upload's own `x-immich-checksum` before the body is
/// sent; content trashed since is uploaded and answered the same way.
fn mirror_answers_all(
    c: &Connection,
    pull_interval: Duration,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    if meta::last_full_ms(c)?.is_none() || meta::last_pull_error(c)?.is_some() {
        return Ok(false);
    }
    let window = pull_interval.as_millis() as i64;
    Ok(meta::last_pull(c)?.is_some_and(|p| p.at_ms <= now_ms && now_ms - p.at_ms <= window))
}

/// With a complete mirror: the user's asset with this content is in the server's trash, so
/// the file is not uploaded (what the server's `isTrashed` answer means).
fn mirror_trashed(
    c: &Connection,
    sum: &Checksum,
    l: &Local,
) -> rusqlite::Result<Option<CheckAnswer>> {
    Ok(remote::own_trashed_asset(c, sum, &l.owner)?
        .map(|_| CheckAnswer::Skip(SkipReason::TrashedOnServer)))
}

/// Content of ours that the user trashed or deleted on the server is not uploaded again.
fn tombstone(c: &Connection, sum: &Checksum, l: &Local) -> rusqlite::Result<Option<CheckAnswer>> {
    if l.reupload_deleted {
        return Ok(None);
    }
    Ok(remote::tombstone(c, sum)?.map(|_| CheckAnswer::Skip(SkipReason::DeletedOnServer)))
}

/// An asset we uploaded or linked before holds this content.
fn own_catalogue(
    c: &Connection,
    sum: &Checksum,
    _: &Local,
) -> rusqlite::Result<Option<CheckAnswer>> {
    Ok(
        catalogue::known_asset(c, sum)?.map(|asset| CheckAnswer::Linked {
            asset,
            verified: false,
        }),
    )
}

/// The mirror holds the server's checksum of an existing asset of the user: that is the
/// verification.
fn mirror(c: &Connection, sum: &Checksum, l: &Local) -> rusqlite::Result<Option<CheckAnswer>> {
    Ok(
        remote::own_live_asset(c, sum, &l.owner)?.map(|asset| CheckAnswer::Linked {
            asset: Some(asset),
            verified: true,
        }),
    )
}

/// Asks the server about the jobs the local stages could not answer.
async fn bulk_upload_check(ctx: &Ctx, rest: Vec<ClaimedJob>) -> Done {
    let items: Vec<(String, Checksum)> = rest
        .iter()
        .filter_map(|j| j.checksum.map(|s| (j.file_id.to_string(), s)))
        .collect();
    let answers = match ctx.api.bulk_upload_check(&items).await {
        Ok(a) => a,
        Err(e) => {
            let n = rest.len();
            return match e.class() {
                ErrorClass::Transient => {
                    let msg = format!("duplicate check failed: {e}");
                    tracing::warn!(jobs = n, "{msg}; nothing was marked done, will retry");
                    let now = now_ms();
                    let retries: Vec<_> = rest
                        .iter()
                        .map(|j| ctx.retry_at(j, e.retry_after(), now))
                        .collect();
                    let reason = msg.clone();
                    super::log_db(
                        ctx.db
                            .call(move |c| queue::schedule_retries(c, &retries, &reason, now))
                            .await,
                    );
                    Stats::add(&ctx.stats.retries, n as u64);
                    Done::checked(Vec::new(), Signal::Transient(msg), n)
                }
                class => Done::checked(Vec::new(), Signal::Pause(pause_for(class, &e)), n),
            };
        }
    };

    let mut by_id: HashMap<String, CheckResult> = answers.into_iter().collect();
    let mut accepted = Vec::new();
    let mut checked = Vec::new();
    for job in rest {
        let Some(sum) = job.checksum else { continue };
        let answer = answer_of(by_id.remove(&job.file_id.to_string()));
        checked.push(Checked {
            file_id: job.file_id,
            checksum: sum,
            answer: answer.clone(),
        });
        if answer == CheckAnswer::Upload {
            accepted.push(job);
        }
    }
    let res = ctx
        .db
        .call(move |c| {
            queue::record_check_answers(c, &checked, now_ms())?;
            Ok(checked)
        })
        .await;
    match res {
        Ok(checked) => {
            count(&ctx.stats, &checked);
            Done::checked(accepted, Signal::Ok, 0)
        }
        Err(e) => {
            tracing::error!(error = %e, "dedup: cannot record the answers");
            Done::checked(Vec::new(), Signal::Ok, 0)
        }
    }
}

/// What the server's answer for one job means.
fn answer_of(result: Option<CheckResult>) -> CheckAnswer {
    match result {
        Some(CheckResult::Duplicate {
            is_trashed: true, ..
        }) => CheckAnswer::Skip(SkipReason::TrashedOnServer),
        Some(CheckResult::Duplicate { asset_id, .. }) => CheckAnswer::Linked {
            asset: asset_id,
            verified: true,
        },
        // No answer for an id counts as "not there": the upload's own duplicate check is the
        // last line of defence.
        Some(CheckResult::Accept) | None => CheckAnswer::Upload,
    }
}

/// Counts the linked and skipped jobs of a recorded batch.
fn count(stats: &Stats, answers: &[Checked]) {
    let (mut linked, mut skipped) = (0u64, 0u64);
    for a in answers {
        match a.answer {
            CheckAnswer::Linked { .. } => linked += 1,
            CheckAnswer::Skip(_) => skipped += 1,
            CheckAnswer::Upload => {}
        }
    }
    Stats::add(&stats.linked, linked);
    Stats::add(&stats.skipped, skipped);
}
