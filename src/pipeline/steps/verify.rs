//! ④ Verifying an upload: the job is `done` only when the server's checksum for the asset
//! is ours.
//!
//! Must not: mark a job `done` on the upload's word alone, or on a checksum that differs.

use std::path::Path;

use super::{log_db, Ctx};
use crate::api::UploadOutcome;
use crate::db::mirror;
use crate::db::now_ms;
use crate::db::queue::{ClaimedJob, Outcome};
use crate::model::Checksum;
use crate::pipeline::gate::Signal;

/// Asks the server for the asset an upload made (or found) and settles the job.
pub(crate) async fn verify(
    ctx: &Ctx,
    job: &ClaimedJob,
    sum: Checksum,
    path: &Path,
    outcome: UploadOutcome,
) -> Signal {
    let file_id = job.file_id;
    let asset_id = outcome.asset_id;
    match ctx.api.get_asset(&asset_id).await {
        Ok(Some(remote)) => match remote.checksum {
            Some(theirs) if theirs != sum => {
                let reason = format!(
                    "ALERT: the server stored different bytes (asset {asset_id}, server checksum \
                     {theirs}, local {sum}); not marked as backed up, check the server's storage"
                );
                tracing::error!(path = %path.display(), "{reason}");
                ctx.fail(file_id, reason).await;
                Signal::Ok
            }
            _ => {
                let how = if outcome.duplicate {
                    Outcome::Duplicate
                } else {
                    Outcome::Uploaded
                };
                let id = asset_id.clone();
                log_db(
                    ctx.db
                        .call(move |c| {
                            mirror::record_verified_upload(
                                c,
                                file_id,
                                &sum,
                                &id,
                                remote,
                                how,
                                now_ms(),
                            )
                        })
                        .await,
                );
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
