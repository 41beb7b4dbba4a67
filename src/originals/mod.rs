//! Pull: a verified local copy of the server's originals in each `[[pull]]` folder
//! (docs/ARCHITECTURE.md#pull).
//!
//! From the mirror (`remote_assets`), every live asset of the account gets a place in the
//! folder, chosen once by the folder's [`Layout`] and recorded (`db::pull`); then its
//! original is downloaded (`GET /assets/:id/original`) into a temporary name beside that
//! place, hashed while it streams, fsynced, and renamed into place only when its SHA-1 is
//! the server's checksum. A kill or a dropped connection leaves at most a temporary file,
//! resumed with a range request by the next attempt; a file under a final name is always
//! whole and verified.
//!
//! Owns: the files of the pull folders (temporary files, copies, `.deleted/`), the download
//! loop (the daemon's task, [`Originals::run`], and `scan`'s rounds, [`Originals::once`]), its
//! rate cap and retries, and what a deletion on the server does to a copy.
//! Must not: write to the server, touch a root (a pull folder never overlaps one: checked
//! by the config), delete a copy because the server deleted its asset unless the folder says
//! `on_server_delete = "move"` (and then only after `deleted_keep_days` in `.deleted/`), or
//! stop or slow the backup: failures are logged, recorded for `status` and tried again.

pub mod layout;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError, UploadMeter};
use crate::backoff::Backoff;
use crate::config::{OnServerDelete, PullConfig};
use crate::db::pull::{self, Due, PullState};
use crate::db::{now_ms, Db, DbError};
use crate::model::{AssetId, Checksum};

pub use layout::Layout;

/// The permission a key needs to download originals.
pub const PERMISSION: &str = "asset.download";

/// Downloads in flight per folder.
const CONCURRENCY: usize = 2;
/// Downloads taken from the database at a time.
const DUE_BATCH: usize = 64;
/// How often an idle pull looks at the mirror for new assets.
const IDLE: Duration = Duration::from_secs(5);
/// After the server refused the download permission, how long until the next try.
const REFUSED_WAIT: Duration = Duration::from_secs(600);
/// The longest single wait for the rate cap's tokens.
const MAX_RATE_WAIT: Duration = Duration::from_secs(1);

/// A temporary download's name: hidden, beside its final place, named by the asset (so a
/// cut-short one is found again from its row).
pub fn temp_path(folder: &Path, rel: &Path, id: &AssetId) -> PathBuf {
    let final_path = folder.join(rel);
    let dir = final_path.parent().unwrap_or(folder);
    dir.join(format!(".immish-pull-{}.part", id.0))
}

#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error(
        "the server sent {size} bytes whose SHA-1 is {got}, not the asset's {want}; the \
         download was discarded and is tried again"
    )]
    Corrupt {
        size: u64,
        got: String,
        want: String,
    },
    #[error("{0} is taken by another file, and so are both names with the asset id")]
    Taken(PathBuf),
    #[error("stopped")]
    Stopped,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |error| PullError::Io {
        path: path.to_owned(),
        error,
    }
}

/// What [`Originals::once`] did for `scan`, and what its folders still lack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullSummary {
    /// The `[[pull]]` folders passed over.
    pub folders: Vec<PathBuf>,
    /// Originals verified and renamed into place by this pass (a copy found already in
    /// place with the right bytes counts too).
    pub pulled: u64,
    /// Downloads that failed and wait to be tried again (their reason in `status`).
    pub failed: i64,
    /// Live assets of the mirror without a copy yet, failed ones not counted (e.g. for a key
    /// without `asset.download`, or a stop in the middle).
    pub pending: i64,
    /// The last failure's reason, when some failed.
    pub last_error: Option<String>,
    /// The key lacks [`PERMISSION`], so nothing was tried.
    pub no_permission: bool,
}

impl PullSummary {
    /// Two accounts' pulls as one (`scan` with `[[accounts]]`).
    pub fn and(mut self, other: PullSummary) -> PullSummary {
        self.folders.extend(other.folders);
        self.pulled += other.pulled;
        self.failed += other.failed;
        self.pending += other.pending;
        self.last_error = self.last_error.or(other.last_error);
        self.no_permission |= other.no_permission;
        self
    }
}

/// The pull task of the daemon: every folder, one after the other, again and again.
pub struct Originals {
    db: Db,
    api: ApiClient,
    folders: Vec<Folder>,
    retry: Backoff,
}

struct Folder {
    cfg: PullConfig,
    meter: Arc<UploadMeter>,
    /// Temporary files of the last run cleaned.
    swept: bool,
    /// Until when (unix ms) the server's refusal of the permission holds.
    refused_until: i64,
}

impl Originals {
    /// `retry_initial`, `retry_max`: the upload's retry bounds, used for failed downloads.
    pub fn new(
        db: Db,
        api: ApiClient,
        folders: &[PullConfig],
        retry_initial: Duration,
        retry_max: Duration,
    ) -> Originals {
        Originals {
            db,
            api,
            folders: folders
                .iter()
                .map(|cfg| {
                    let meter = Arc::new(UploadMeter::default());
                    meter.set_max_rate(cfg.max_rate);
                    Folder {
                        cfg: cfg.clone(),
                        meter,
                        swept: false,
                        refused_until: 0,
                    }
                })
                .collect(),
            retry: Backoff::new(retry_initial, retry_max),
        }
    }

    /// The pull of `config`'s `[[pull]]` folders, failed downloads retried within the
    /// upload's retry bounds.
    pub fn from_config(db: Db, api: ApiClient, config: &crate::config::Config) -> Originals {
        Originals::new(
            db,
            api,
            &config.pull,
            config.upload.retry_initial,
            config.upload.retry_max,
        )
    }

    /// Whether the key may download, as far as the client knows (a session, a key with
    /// `all` or `asset.download`, or a server that does not say).
    fn may_download(&self) -> bool {
        match self.api.api_key_permissions() {
            None => true,
            Some(p) => p.iter().any(|p| p == "all" || p == PERMISSION),
        }
    }

    /// Runs until `shutdown`. Never fails: every problem is logged and tried again.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if self.folders.is_empty() {
            return;
        }
        if !self.may_download() {
            self.say_no_permission();
            shutdown.cancelled().await;
            return;
        }
        let said_refused = AtomicBool::new(false);
        loop {
            let Some(pulled) = self.round(&shutdown, &said_refused).await else {
                return;
            };
            let wait = if pulled > 0 { Duration::ZERO } else { IDLE };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// `scan`: the rounds of [`Originals::run`] without its idle waits, until a round pulls
    /// nothing (a failed download is tried again once its backoff is over, as under `run`;
    /// one still failing is left for later), or `shutdown`. Never fails: problems are
    /// logged, and the summary says what the folders still lack.
    pub async fn once(mut self, shutdown: &CancellationToken) -> PullSummary {
        let mut pulled = 0;
        let no_permission = !self.folders.is_empty() && !self.may_download();
        if no_permission {
            self.say_no_permission();
        } else {
            let said_refused = AtomicBool::new(false);
            while let Some(n) = self.round(shutdown, &said_refused).await {
                pulled += n;
                if n == 0 {
                    break;
                }
            }
        }
        let mut summary = PullSummary {
            folders: self.folders.iter().map(|f| f.cfg.path.clone()).collect(),
            pulled,
            no_permission,
            ..PullSummary::default()
        };
        let counts = match self.db.call(|c| pull::counts(c)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("pull: cannot count the copies: {e}");
                return summary;
            }
        };
        for c in counts {
            if !summary
                .folders
                .iter()
                .any(|f| f.to_string_lossy() == c.path)
            {
                continue;
            }
            summary.failed += c.failed;
            summary.pending += c.pending;
            summary.last_error = summary.last_error.or(c.last_error);
        }
        summary
    }

    fn say_no_permission(&self) {
        tracing::warn!(
            "pull: the API key lacks {PERMISSION}, so no original is downloaded into {}; \
             add {PERMISSION} to the key in Immich (backups go on meanwhile)",
            self.folder_list()
        );
    }

    /// One pass over every folder: how many originals it pulled, `None` once stopped.
    async fn round(
        &mut self,
        shutdown: &CancellationToken,
        said_refused: &AtomicBool,
    ) -> Option<u64> {
        let mut pulled = 0;
        for i in 0..self.folders.len() {
            if shutdown.is_cancelled() {
                return None;
            }
            match self.pass(i, shutdown, said_refused).await {
                Ok(n) => pulled += n,
                Err(PullError::Stopped) => return None,
                Err(e) => {
                    tracing::warn!(folder = %self.folders[i].cfg.path.display(), "pull: {e}");
                }
            }
        }
        Some(pulled)
    }

    fn folder_list(&self) -> String {
        self.folders
            .iter()
            .map(|f| f.cfg.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One look at one folder: lay out new assets, follow deletions, download what is due.
    /// How many originals it put into place (more may be due at once when not 0).
    async fn pass(
        &mut self,
        i: usize,
        shutdown: &CancellationToken,
        said_refused: &AtomicBool,
    ) -> Result<u64, PullError> {
        let cfg = self.folders[i].cfg.clone();
        let folder = cfg.path.clone();
        if !self.folders[i].swept {
            tokio::fs::create_dir_all(&folder)
                .await
                .map_err(io(&folder))?;
            self.folders[i].swept = true;
        }
        loop {
            let (f, layout) = (folder.clone(), cfg.layout.clone());
            let n = self
                .db
                .call(move |c| pull::plan(c, &f, &layout, now_ms()))
                .await?;
            if n < pull::PLAN_BATCH {
                break;
            }
        }
        self.follow_deletions(&cfg).await?;

        if self.folders[i].refused_until > now_ms() {
            return Ok(0);
        }
        let f = folder.clone();
        let due = self
            .db
            .call(move |c| pull::due(c, &f, now_ms(), DUE_BATCH))
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let meter = Arc::clone(&self.folders[i].meter);
        let refused = AtomicBool::new(false);
        let this = &*self;
        let results: Vec<(Due, Result<(), PullError>)> = stream::iter(due)
            .map(|d| {
                let (folder, meter) = (&folder, Arc::clone(&meter));
                async move {
                    let r = tokio::select! {
                        _ = shutdown.cancelled() => Err(PullError::Stopped),
                        r = this.fetch(folder, &d, &meter) => r,
                    };
                    (d, r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut did = 0;
        for (d, r) in results {
            match r {
                Ok(()) => did += 1,
                Err(PullError::Stopped) => return Err(PullError::Stopped),
                Err(PullError::Api(e)) if e.status() == Some(403) => {
                    refused.store(true, Ordering::Relaxed);
                    if !said_refused.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "pull: the server refuses to hand out originals ({e}); add \
                             {PERMISSION} to the key in Immich; trying again every {} min \
                             (backups go on meanwhile)",
                            REFUSED_WAIT.as_secs() / 60
                        );
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    tracing::warn!(
                        asset_id = %d.asset_id.0,
                        path = %folder.join(&d.rel_path).display(),
                        "pull: {text}"
                    );
                    let next = now_ms() + self.retry.delay(d.attempts + 1).as_millis() as i64;
                    let (f, id) = (folder.clone(), d.asset_id.clone());
                    self.db
                        .call(move |c| pull::mark_failed(c, &f, &id, &text, next, now_ms()))
                        .await?;
                }
            }
        }
        if refused.load(Ordering::Relaxed) {
            self.folders[i].refused_until = now_ms() + REFUSED_WAIT.as_millis() as i64;
        } else {
            said_refused.store(false, Ordering::Relaxed);
        }
        Ok(did)
    }

    /// Downloads one original into place. See the module docs.
    async fn fetch(&self, folder: &Path, due: &Due, meter: &UploadMeter) -> Result<(), PullError> {
        let mut rel = due.rel_path.clone();
        let mut target = folder.join(&rel);
        // A file already at the place: ours from a run killed between the rename and its
        // record (the same bytes), or someone else's (the asset takes its collision name).
        if tokio::fs::symlink_metadata(&target).await.is_ok() {
            if hash_file(&target).await.ok() == Some(due.checksum) {
                return self.record_pulled(folder, &due.asset_id).await;
            }
            let (f, id, r) = (folder.to_owned(), due.asset_id.clone(), rel.clone());
            let root = folder.to_owned();
            let new = self
                .db
                .call(move |c| pull::relocate(c, &f, &id, &r, |p| root.join(p).exists()))
                .await?;
            match new {
                Some(new) => {
                    rel = new;
                    target = folder.join(&rel);
                }
                None => return Err(PullError::Taken(target)),
            }
        }
        self.pair_live_photo(folder, &rel, due).await?;
        let dir = target.parent().unwrap_or(folder).to_owned();
        tokio::fs::create_dir_all(&dir).await.map_err(io(&dir))?;
        let temp = temp_path(folder, &rel, &due.asset_id);
        let result = self.download(&temp, due, meter).await;
        if let Err(e) = result {
            // A download cut short (the connection dropped, stalled) keeps its bytes for a
            // range request next time; wrong bytes or a refusal do not.
            let cut_short = matches!(&e, PullError::Api(a) if a.status().is_none());
            if !cut_short {
                let _ = tokio::fs::remove_file(&temp).await;
            }
            return Err(e);
        }
        tokio::fs::rename(&temp, &target)
            .await
            .map_err(io(&target))?;
        // The rename itself must survive a power cut: the folder's entry is synced too.
        let d = dir.clone();
        let synced = tokio::task::spawn_blocking(move || std::fs::File::open(&d)?.sync_all())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        synced.map_err(io(&dir))?;
        tracing::debug!(asset_id = %due.asset_id.0, path = %target.display(), "pulled");
        self.record_pulled(folder, &due.asset_id).await
    }

    /// A Live Photo's still places its video beside it (same stem), before either is
    /// downloaded: hidden assets are due only after the others. Only images are asked.
    async fn pair_live_photo(&self, folder: &Path, rel: &Path, due: &Due) -> Result<(), PullError> {
        if !due.is_image {
            return Ok(());
        }
        let Some(video) = self.api.live_photo_video_of(&due.asset_id).await? else {
            return Ok(());
        };
        let (f, r) = (folder.to_owned(), rel.to_owned());
        let moved = self
            .db
            .call(move |c| pull::place_beside(c, &f, &r, &video))
            .await?;
        if let Some(p) = moved {
            tracing::debug!(path = %p.display(), "pull: a Live Photo's video goes beside its still");
        }
        Ok(())
    }

    /// Streams the original into `temp`, hashing it on the way and within the folder's
    /// rate; fsynced; an error when its SHA-1 is not the server's. A `temp` left by a
    /// download cut short is resumed: its bytes are hashed again, then the rest is asked
    /// for with `Range: bytes=N-`; a server that sends the whole file (200) instead, or a
    /// 416, starts it over. A changed asset cannot be spliced in unnoticed: the whole
    /// file's SHA-1 must still be the mirror's checksum.
    async fn download(&self, temp: &Path, due: &Due, meter: &UploadMeter) -> Result<(), PullError> {
        let (mut sha, kept) = hash_prefix(temp).await.map_err(io(temp))?;
        let mut body = match self
            .api
            .download_original_from(&due.asset_id, kept, None)
            .await
        {
            Err(e) if kept > 0 && e.status() == Some(416) => {
                sha = Sha1::new();
                self.api.download_original(&due.asset_id).await?
            }
            r => r?,
        };
        let mut file = if kept > 0 && body.start == kept {
            tracing::debug!(asset_id = %due.asset_id.0, from = kept, "pull: resuming a download cut short");
            tokio::fs::OpenOptions::new()
                .append(true)
                .open(temp)
                .await
                .map_err(io(temp))?
        } else {
            sha = Sha1::new();
            tokio::fs::File::create(temp).await.map_err(io(temp))?
        };
        let mut size = body.start;
        while let Some(chunk) = body.chunk().await? {
            let mut wait = meter.take(chunk.len() as u64);
            while !wait.is_zero() {
                let step = wait.min(MAX_RATE_WAIT);
                tokio::time::sleep(step).await;
                wait -= step;
            }
            sha.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io(temp))?;
        }
        file.flush().await.map_err(io(temp))?;
        file.sync_all().await.map_err(io(temp))?;
        let got = Checksum(sha.finalize().into());
        if got != due.checksum {
            return Err(PullError::Corrupt {
                size,
                got: got.to_hex(),
                want: due.checksum.to_hex(),
            });
        }
        Ok(())
    }

    async fn record_pulled(&self, folder: &Path, id: &AssetId) -> Result<(), PullError> {
        let (f, id) = (folder.to_owned(), id.clone());
        self.db
            .call(move |c| pull::mark_pulled(c, &f, &id, now_ms()))
            .await?;
        Ok(())
    }

    /// What the server's deletions (and restores) mean for the folder's copies.
    async fn follow_deletions(&self, cfg: &PullConfig) -> Result<(), PullError> {
        let folder = cfg.path.clone();
        let f = folder.clone();
        let (gone, back) = self
            .db
            .call(move |c| {
                let gone = pull::gone(
                    c,
                    &f,
                    &[PullState::Pending, PullState::Failed, PullState::Pulled],
                )?;
                let back = pull::back(
                    c,
                    &f,
                    &[PullState::Kept, PullState::Moved, PullState::Removed],
                )?;
                Ok((gone, back))
            })
            .await?;
        let deleted = folder.join(layout::DELETED_DIR);
        for g in gone {
            let state = if g.state != PullState::Pulled.as_str() {
                // Never pulled: nothing to keep; a cut-short download goes with it.
                let _ = tokio::fs::remove_file(temp_path(&folder, &g.rel_path, &g.asset_id)).await;
                None
            } else if cfg.on_server_delete == OnServerDelete::Move {
                let (from, to) = (folder.join(&g.rel_path), deleted.join(&g.rel_path));
                match move_file(&from, &to).await {
                    Ok(()) => {
                        tracing::info!(
                            asset_id = %g.asset_id.0,
                            path = %to.display(),
                            "pull: deleted on the server; the copy is moved to .deleted/"
                        );
                        Some(PullState::Moved)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(PullState::Removed),
                    Err(e) => {
                        tracing::warn!(path = %from.display(), "pull: cannot move to .deleted/: {e}");
                        continue;
                    }
                }
            } else {
                Some(PullState::Kept)
            };
            let (f, id) = (folder.clone(), g.asset_id.clone());
            self.db
                .call(move |c| match state {
                    Some(s) => pull::set_state(c, &f, &id, s, now_ms()),
                    None => pull::forget(c, &f, &id),
                })
                .await?;
        }
        for b in back {
            let state = if b.state == PullState::Moved.as_str() {
                match move_file(&deleted.join(&b.rel_path), &folder.join(&b.rel_path)).await {
                    Ok(()) => PullState::Pulled,
                    Err(_) => PullState::Pending,
                }
            } else if b.state == PullState::Kept.as_str() {
                PullState::Pulled
            } else {
                PullState::Pending
            };
            let (f, id) = (folder.clone(), b.asset_id.clone());
            self.db
                .call(move |c| pull::set_state(c, &f, &id, state, now_ms()))
                .await?;
        }
        if cfg.on_server_delete == OnServerDelete::Move {
            let before = now_ms() - cfg.deleted_keep.as_millis() as i64;
            let f = folder.clone();
            let expired = self.db.call(move |c| pull::expired(c, &f, before)).await?;
            for e in expired {
                let p = deleted.join(&e.rel_path);
                match tokio::fs::remove_file(&p).await {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        tracing::warn!(path = %p.display(), "pull: cannot remove: {err}");
                        continue;
                    }
                }
                let (f, id) = (folder.clone(), e.asset_id.clone());
                self.db
                    .call(move |c| pull::set_state(c, &f, &id, PullState::Removed, now_ms()))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Renames `from` to `to` (creating `to`'s folder), refusing to replace a file there.
async fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    tokio::fs::symlink_metadata(from).await?;
    if tokio::fs::symlink_metadata(to).await.is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        ));
    }
    if let Some(dir) = to.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::rename(from, to).await
}

/// The SHA-1 of a file already in a pull folder, on the blocking pool.
async fn hash_file(path: &Path) -> Result<Checksum, ()> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || {
        crate::hash::hash_file(&p, &CancellationToken::new())
            .map(|(sum, _)| sum)
            .map_err(|_| ())
    })
    .await
    .unwrap_or(Err(()))
}

/// The SHA-1 state and length of what a cut-short download left at `temp` (a fresh state
/// and 0 when there is none, or it is not a regular file).
async fn hash_prefix(temp: &Path) -> std::io::Result<(Sha1, u64)> {
    let p = temp.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut sha = Sha1::new();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(m) if !m.is_file() => {
                return Err(std::io::Error::other("not a regular file; remove it"));
            }
            _ => return Ok((sha, 0)),
        }
        let mut f = std::fs::File::open(&p)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let got = f.read(&mut buf)?;
            if got == 0 {
                break;
            }
            sha.update(&buf[..got]);
            n += got as u64;
        }
        Ok((sha, n))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}
