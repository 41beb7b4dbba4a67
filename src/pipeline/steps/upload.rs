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
use crate::api::UploadRequest;
use crate::dates::Dating;
use crate::db::edited;
use crate::db::now_ms;
use crate::db::queue::ClaimedJob;
use crate::db::sidecars::{self, SeenSidecar};
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
    // A Live Photo's still goes up after its video, naming it (docs/ARCHITECTURE.md#library).
    match library::plan_still(&ctx.db, file_id, &job.path).await {
        Ok(StillPlan::Wait) => return (Signal::Ok, None),
        Ok(StillPlan::WithVideo(video)) => req.live_photo_video_id = Some(AssetId(video)),
        Ok(StillPlan::Alone) => {}
        Err(e) => {
            tracing::debug!(error = %e, "cannot look for a Live Photo video; uploading alone")
        }
    }
    // The date and the sidecar are read here, once per upload attempt, from a bounded part
    // of the file (docs/ARCHITECTURE.md#dates); a file linked by dedup is never read for them.
    let dating = dating_of(&ctx.dating, &req.path);
    let (path, mtime_ns) = (req.path.clone(), job.stat.mtime_ns);
    if let Ok((created, sidecar)) = tokio::task::spawn_blocking(move || {
        let created = crate::dates::created_at(&path, mtime_ns, &dating);
        (created, crate::sidecar::find(&path))
    })
    .await
    {
        tracing::debug!(path = %req.path.display(), source = ?created.1, "fileCreatedAt");
        req.file_created_ns = created.0;
        req.sidecar = sidecar;
    }
    // An edited file goes up as a new asset; the old one stays (docs/ARCHITECTURE.md#edited-files).
    let edited_from = match ctx.db.call(move |c| edited::pending(c, file_id)).await {
        Ok(old) => old,
        Err(e) => {
            tracing::debug!(error = %e, "cannot look for the asset an edited file was");
            None
        }
    };
    if let Some(old) = &edited_from {
        tracing::info!(
            "{} changed since it was uploaded as asset {old}; uploading the new version as a \
             new asset",
            req.file_name
        );
    }
    let outcome = match ctx.api.upload(&req).await {
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
    // What it went up with, so that a sidecar edited later is reported
    // (docs/ARCHITECTURE.md#sidecars).
    let sent = req.sidecar.as_ref().map(|s| SeenSidecar {
        path: s.path.as_os_str().as_bytes().to_vec(),
        size: s.size,
        mtime_ns: s.mtime_ns,
    });
    log_db(
        ctx.db
            .call(move |c| sidecars::record(c, file_id, sent.as_ref(), now_ms()))
            .await,
    );
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
