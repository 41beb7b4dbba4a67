//! ③ Uploading one file; ④ [`verify`](super::verify) confirms it with others of its batch.
//!
//! The file is streamed with its checksum (`x-immich-checksum`), so a server that has the
//! content already answers before the body is sent. Must not: mark the job `done` (only
//! verification does).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::verify::Uploaded;
use super::{log_db, path_of, Ctx};
use crate::api::{CheckedBody, UploadRequest, SMALL_BODY};
use crate::dates::Dating;
use crate::db::edited;
use crate::db::now_ms;
use crate::db::queue::ClaimedJob;
use crate::library::{self, pairs::StillPlan};
use crate::model::{AssetId, Checksum};
use crate::pipeline::gate::Signal;
use crate::pipeline::Stats;

/// Uploads one file. What the server answered goes to verification (`Some`); on a failure
/// the job's next state is recorded here and the signal says what it means for the gate.
pub(crate) async fn upload(
    ctx: &Ctx,
    device_id: &str,
    job: &ClaimedJob,
) -> (Signal, Option<Uploaded>) {
    let Some(sum) = job.checksum else {
        return (Signal::Ok, None);
    };
    let file_id = job.file_id;
    let mut req = upload_request(job, sum, device_id);
    let Some(before) = look_before(ctx, job, &req.path).await else {
        return (Signal::Ok, None);
    };
    req.live_photo_video_id = before.video.map(AssetId);
    tracing::debug!(path = %req.path.display(), source = ?before.created.1, "fileCreatedAt");
    req.file_created_ns = before.created.0;
    req.sidecar = before.sidecar;
    req.body = before.body;
    let edited_from = before.edited_from;
    if let Some(old) = &edited_from {
        tracing::info!(
            "{} changed since it was uploaded as asset {old}; uploading the new version as a \
             new asset",
            req.file_name
        );
    }
    let outcome = ctx.api.upload(&req).await;
    // Verification waits for others of its batch: it does not hold the bytes meanwhile.
    req.body = None;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return (ctx.job_error(job, "upload", e).await, None),
    };
    if edited_from.is_some() && !outcome.duplicate {
        log_db(
            ctx.db
                .call(move |c| edited::uploaded(c, file_id, now_ms()))
                .await,
        );
    }
    if let (Some(video), false) = (&req.live_photo_video_id, outcome.duplicate) {
        let linked = library::linked_at_upload(&ctx.db, &job.path, &outcome.asset_id, &video.0);
        log_db(linked.await);
    }
    if outcome.duplicate {
        Stats::add(&ctx.stats.duplicates, 1);
    } else {
        Stats::add(&ctx.stats.uploaded, 1);
        Stats::add(&ctx.stats.uploaded_bytes, job.stat.size);
    }
    let uploaded = Uploaded {
        job: job.clone(),
        sum,
        req,
        outcome,
    };
    (Signal::Ok, Some(uploaded))
}

/// What an upload looks up before it sends.
struct Before {
    /// `fileCreatedAt` (ns) and where it came from.
    created: (i64, crate::dates::DateSource),
    sidecar: Option<crate::sidecar::Sidecar>,
    /// A Live Photo still goes up naming its video's asset.
    video: Option<String>,
    /// The asset an edited file was backed up as before it changed.
    edited_from: Option<String>,
    /// A small file's bytes, read once for its date and as its body.
    body: Option<CheckedBody>,
}

/// Everything an upload looks up before it sends, in one hop to the blocking pool: the Live
/// Photo plan and the asset an edited file was, in one database call, then the date and
/// the sidecar, read from a bounded part of the file once per upload attempt
/// (docs/ARCHITECTURE.md#dates). A small file is read whole here, checked against what was
/// hashed, and dated from those bytes, which are then the body (docs/ARCHITECTURE.md#upload):
/// one open and one hand-off for its reads instead of three. If it changed, nothing is
/// kept and the upload reads it again, to fail with what changed. `None`: a Live Photo still waits for its video (the job
/// is put back to wait). A database failure uploads the file alone and as it is.
async fn look_before(ctx: &Ctx, job: &ClaimedJob, path: &Path) -> Option<Before> {
    let (db, file_id, bytes, path) = (
        ctx.db.clone(),
        job.file_id,
        job.path.clone(),
        path.to_owned(),
    );
    let dating = dating_of(&ctx.dating, &path);
    let mtime_ns = job.stat.mtime_ns;
    let (size, checksum) = (job.stat.size, job.checksum);
    let fallback = Before {
        created: (mtime_ns, crate::dates::DateSource::Mtime),
        sidecar: None,
        video: None,
        edited_from: None,
        body: None,
    };
    let looked = tokio::task::spawn_blocking(move || {
        // A Live Photo's still goes up after its video, naming it (docs/ARCHITECTURE.md#library);
        // an edited file goes up as a new asset (docs/ARCHITECTURE.md#edited-files).
        let still = library::still_prefix(&bytes);
        let (plan, edited_from) = db
            .call_blocking(move |c| {
                // One transaction for both look-ups (and a Live Photo's deferral), not one
                // each; immediate, since a Live Photo's deferral writes.
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let plan = match still {
                    Some(prefix) => library::plan_still_in(&tx, file_id, &prefix)?,
                    None => StillPlan::Alone,
                };
                let edited_from = edited::pending(&tx, file_id)?;
                tx.commit()?;
                Ok((plan, edited_from))
            })
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "cannot look for a Live Photo video or an earlier asset; uploading alone");
                (StillPlan::Alone, None)
            });
        let video = match plan {
            StillPlan::Wait => return None,
            StillPlan::WithVideo(v) => Some(v),
            StillPlan::Alone => None,
        };
        let body = match checksum {
            Some(sum) if size <= SMALL_BODY => CheckedBody::read(&path, size, sum)
                .ok()
                .and_then(Result::ok),
            _ => None,
        };
        Some(Before {
            created: crate::dates::created_at_with(
                &path,
                body.as_ref().map(CheckedBody::bytes),
                mtime_ns,
                &dating,
            ),
            sidecar: crate::sidecar::find(&path),
            video,
            edited_from,
            body,
        })
    })
    .await;
    // A panic on the blocking pool: the file goes up as it is, dated by its mtime.
    looked.unwrap_or(Some(fallback))
}

/// The names and ids the server sees for a file.
fn upload_request(job: &ClaimedJob, sum: Checksum, device_id: &str) -> UploadRequest {
    let path = path_of(&job.path);
    let file_name = path
        .file_name()
        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
        .unwrap_or_else(|| "unnamed".into());
    UploadRequest {
        path,
        size: job.stat.size,
        checksum: sum,
        file_name,
        device_asset_id: device_asset_id(&job.path),
        device_id: device_id.to_string(),
        // The mtime until [`crate::dates::created_at`] says better.
        file_created_ns: job.stat.mtime_ns,
        file_modified_ns: job.stat.mtime_ns,
        live_photo_video_id: None,
        sidecar: None,
        body: None,
    }
}

/// How the root holding `path` dates its files (the longest root path that is a prefix;
/// the defaults with the machine's zone for a path under none, which does not happen).
fn dating_of(dating: &[(std::path::PathBuf, Dating)], path: &Path) -> Dating {
    dating
        .iter()
        .filter(|(root, _)| path.starts_with(root))
        .max_by_key(|(root, _)| root.as_os_str().len())
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| Dating {
            from_names: true,
            timezone: crate::dates::local_zone(),
        })
}

/// A stable id per file path (the same after a restart or a lost state directory).
pub fn device_asset_id(path: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(path);
    let name = Path::new(OsStr::from_bytes(path))
        .file_name()
        .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
        .unwrap_or_default();
    format!("{name}-{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_asset_id_is_stable_and_keeps_the_name() {
        let a = device_asset_id(b"/photos/IMG_1.jpg");
        assert_eq!(a, device_asset_id(b"/photos/IMG_1.jpg"));
        assert!(a.starts_with("IMG_1.jpg-"), "{a}");
        assert_ne!(a, device_asset_id(b"/photos/2/IMG_1.jpg"));
        // Non-UTF-8 names still give an id.
        assert!(device_asset_id(b"/p/IMG_\xff.jpg").starts_with("IMG_"));
    }
}
