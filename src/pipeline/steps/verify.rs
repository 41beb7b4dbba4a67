//! ④ Verifying uploads: a job is `done` only when the server holds an asset with exactly its
//! bytes.
//!
//! Uploads are confirmed in batches: one `bulk-upload-check` of their checksums answers, for
//! each, whether the server holds an asset of the user with exactly these bytes, and its id
//! (docs/ARCHITECTURE.md#verification). An upload whose asset is named with our checksum is
//! `done`, all of a batch in one transaction. Any other answer (no match, another id, no id
//! at all as seed servers answer) is settled the old way, by reading that asset back
//! (`GET /assets/:id`) and comparing its checksum. Must not: mark a job `done` on the
//! upload's word alone, or on a checksum that differs.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;

use super::{log_db, pause_for, Ctx};
use crate::api::{format_timestamp, CheckResult, ErrorClass, UploadOutcome, UploadRequest};
use crate::db::mirror::{self, VerifiedUpload};
use crate::db::now_ms;
use crate::db::queue::{self, ClaimedJob, Outcome};
use crate::db::sidecars::SeenSidecar;
use crate::model::{Checksum, JobState, RemoteAsset};
use crate::pipeline::gate::{Pause, Signal};
use crate::pipeline::{Done, Stats};

/// An upload the server answered, waiting for its verification.
#[derive(Clone, Debug)]
pub(crate) struct Uploaded {
    pub job: ClaimedJob,
    pub sum: Checksum,
    pub req: UploadRequest,
    pub outcome: UploadOutcome,
}

impl Uploaded {
    fn how(&self) -> Outcome {
        if self.outcome.duplicate {
            Outcome::Duplicate
        } else {
            Outcome::Uploaded
        }
    }
}

/// Verifies a batch of uploads with one `bulk-upload-check`, and settles each job.
pub(crate) async fn verify_batch(ctx: &Ctx, batch: Vec<Uploaded>) -> Done {
    let ids: Vec<i64> = batch.iter().map(|u| u.job.file_id).collect();
    log_db(
        ctx.db
            .call(move |c| queue::set_states(c, &ids, JobState::Verifying, now_ms()))
            .await,
    );
    let owner = ctx.api.user_id().to_owned();
    let items: Vec<(String, Checksum)> = batch
        .iter()
        .map(|u| (u.job.file_id.to_string(), u.sum))
        .collect();
    let answers = match ctx.api.bulk_upload_check(&items).await {
        Ok(a) => a,
        Err(e) => return batch_failed(ctx, batch, e).await,
    };
    let mut by_id: HashMap<String, CheckResult> = answers.into_iter().collect();
    let mut confirmed = Vec::new();
    let mut rest = Vec::new();
    for u in batch {
        match by_id.remove(&u.job.file_id.to_string()) {
            // The server holds an asset of this user with exactly our bytes, and it is the
            // one the upload named.
            Some(CheckResult::Duplicate {
                asset_id: Some(id),
                is_trashed,
            }) if id == u.outcome.asset_id && !owner.is_empty() => {
                let record = confirmed_record(&u, &owner, is_trashed);
                confirmed.push(verified(&u, record));
            }
            _ => rest.push(u),
        }
    }
    record(ctx, confirmed).await;
    // The rest, one by one: a corrupt copy (ALERT), an asset gone already (retry), or a
    // server that names no asset in its answer.
    let mut signal = Signal::Ok;
    for u in rest {
        let s = verify(ctx, &u).await;
        if matches!(signal, Signal::Ok) {
            signal = s;
        }
    }
    Done::Verify {
        signal,
        again: Vec::new(),
    }
}

/// What the mirror holds for an asset the bulk check confirmed as ours: what we sent.
fn confirmed_record(u: &Uploaded, owner: &str, is_trashed: bool) -> RemoteAsset {
    RemoteAsset {
        id: u.outcome.asset_id.clone(),
        owner_id: owner.to_owned(),
        checksum: Some(u.sum),
        original_file_name: u.req.file_name.clone(),
        file_created_at: Some(format_timestamp(u.req.file_created_ns)),
        // Unknown until a pull: the upsert keeps what the mirror may hold already.
        updated_at: None,
        visibility: None,
        is_trashed,
        device_id: Some(u.req.device_id.clone()),
        device_asset_id: Some(u.req.device_asset_id.clone()),
    }
}

/// The record of a verified upload, for the job, the mirror and the sidecar it went up with
/// (so that a sidecar edited later is reported, docs/ARCHITECTURE.md#sidecars).
fn verified(u: &Uploaded, record: RemoteAsset) -> VerifiedUpload {
    VerifiedUpload {
        file_id: u.job.file_id,
        checksum: u.sum,
        asset_id: u.outcome.asset_id.clone(),
        record,
        outcome: u.how(),
        sidecar: u.req.sidecar.as_ref().map(|s| SeenSidecar {
            path: s.path.as_os_str().as_bytes().to_vec(),
            size: s.size,
            mtime_ns: s.mtime_ns,
        }),
    }
}

/// Records verified uploads, all in one transaction: each job `done`, its asset in the
/// mirror, its sidecar.
async fn record(ctx: &Ctx, uploads: Vec<VerifiedUpload>) {
    if uploads.is_empty() {
        return;
    }
    log_db(
        ctx.db
            .call(move |c| mirror::record_verified_uploads(c, uploads, now_ms()))
            .await,
    );
}

/// The batch's check failed: a transient failure retries every job of it (a retry passes
/// dedup again, which links what did reach the server); a pause keeps them for later.
async fn batch_failed(ctx: &Ctx, batch: Vec<Uploaded>, e: crate::api::ApiError) -> Done {
    match e.class() {
        ErrorClass::Transient => {
            let msg = format!("verify failed: {e}");
            tracing::warn!(jobs = batch.len(), "{msg}; will retry");
            let now = now_ms();
            let retries: Vec<_> = batch
                .iter()
                .map(|u| ctx.retry_at(&u.job, e.retry_after(), now))
                .collect();
            Stats::add(&ctx.stats.retries, retries.len() as u64);
            let reason = msg.clone();
            log_db(
                ctx.db
                    .call(move |c| queue::schedule_retries(c, &retries, &reason, now))
                    .await,
            );
            Done::Verify {
                signal: Signal::Transient(msg),
                again: Vec::new(),
            }
        }
        ErrorClass::Permanent if e.status() == Some(403) => Done::Verify {
            signal: Signal::Pause(Pause::Blocked(format!(
                "the server refused the verify for lack of a permission: {e}"
            ))),
            again: batch,
        },
        ErrorClass::Auth | ErrorClass::Capacity => Done::Verify {
            signal: Signal::Pause(pause_for(e.class(), &e)),
            again: batch,
        },
        // A refusal of the check itself says nothing about the assets: ask for each.
        ErrorClass::Permanent | ErrorClass::FileChanged => {
            let mut signal = Signal::Ok;
            for u in batch {
                let s = verify(ctx, &u).await;
                if matches!(signal, Signal::Ok) {
                    signal = s;
                }
            }
            Done::Verify {
                signal,
                again: Vec::new(),
            }
        }
    }
}

/// Asks the server for the asset an upload made (or found) and settles the job.
pub(crate) async fn verify(ctx: &Ctx, u: &Uploaded) -> Signal {
    let (job, sum) = (&u.job, u.sum);
    let asset_id = &u.outcome.asset_id;
    match ctx.api.get_asset(asset_id).await {
        Ok(Some(remote)) => match remote.checksum {
            Some(theirs) if theirs != sum => {
                let reason = format!(
                    "ALERT: the server stored different bytes (asset {asset_id}, server checksum \
                     {theirs}, local {sum}); not marked as backed up, check the server's storage"
                );
                tracing::error!(path = %u.req.path.display(), "{reason}");
                ctx.fail(job.file_id, reason).await;
                Signal::Ok
            }
            _ => {
                record(ctx, vec![verified(u, remote)]).await;
                Signal::Ok
            }
        },
        Ok(None) => {
            let e = format!("asset {asset_id} was not found right after its upload");
            ctx.schedule(job, &e, None).await;
            Signal::Transient(e)
        }
        Err(e) => ctx.job_error(job, "verify", e).await,
    }
}
