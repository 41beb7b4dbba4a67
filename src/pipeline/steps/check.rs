//! ② Dedup one batch of hashed jobs: is the content on the server already?
//!
//! The stages, in order, each answering for the jobs the ones before could not: without the
//! network, [`tombstone`] (content of ours the user deleted on the server: skipped),
//! [`own_catalogue`] (assets we uploaded or linked) and [`mirror`] (the user's assets on the
//! server); then [`bulk_upload_check`] asks the server about the rest. What is left is
//! uploaded, and the upload's own `x-immich-checksum` is the last line of defence. The
//! tombstone comes first: content the user deleted on the server is never uploaded again, and
//! is not reported as backed up either.

use std::collections::HashMap;

use rusqlite::Connection;

use super::{pause_for, Ctx};
use crate::api::{CheckResult, ErrorClass};
use crate::db::catalogue;
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
pub(crate) async fn check(ctx: &Ctx, reupload_deleted: bool, jobs: Vec<ClaimedJob>) -> Done {
    let local = Local {
        owner: ctx.api.user_id().to_owned(),
        reupload_deleted,
    };
    let rest = match without_network(ctx, local, jobs).await {
        Some(rest) if !rest.is_empty() => rest,
        _ => return Done::checked(Vec::new(), Signal::Ok, 0),
    };
    bulk_upload_check(ctx, rest).await
}

/// The local stages over a batch, in one database call; returns the jobs none could answer
/// (`None` when the database failed: the batch stays `checking` and is claimed again).
async fn without_network(
    ctx: &Ctx,
    local: Local,
    jobs: Vec<ClaimedJob>,
) -> Option<Vec<ClaimedJob>> {
    let res = ctx
        .db
        .call(move |c| {
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
                rest.push(job);
            }
            queue::record_check_answers(c, &answers, now_ms())?;
            Ok((rest, answers))
        })
        .await;
    match res {
        Ok((rest, answers)) => {
            count(&ctx.stats, &answers);
            Some(rest)
        }
        Err(e) => {
            tracing::error!(error = %e, "dedup: cannot read the catalogue");
            None
        }
    }
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
