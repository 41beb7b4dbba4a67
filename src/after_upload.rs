//! After upload (docs/ARCHITECTURE.md#after-upload): a root with `after_upload = "archive"`
//! or `"delete"` has each file moved under its `archive_dir` (keeping its path below the
//! root) or deleted, once the server holds its bytes. This is the only code that ever
//! removes a local file.
//!
//! Owns: choosing the files that may be acted on (verified, not trashed, sorted, uploaded
//! by us unless `after_upload_linked`, a Live Photo's or stack's partners safe too), the
//! fresh look at the server just before acting, the check that the bytes on disk are still
//! the ones hashed, the move or delete itself, and finishing what a crash left between an
//! intent and its end.
//!
//! Must not: act on a file the server was not seen to hold just before (a failed or
//! unclear look holds the file back, never lets it through), overwrite anything in the
//! archive, follow a symlink, or hold a database call across an `.await`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, CheckResult};
use crate::config::{AfterUploadAction, RootConfig};
use crate::db::after_upload::{self as store, Candidate, Intent};
use crate::db::catalogue::FileStat;
use crate::db::{library, now_ms, Db, DbError};
use crate::library::pairs;
use crate::model::{AssetId, Checksum};

/// Files looked at per round (one fresh look at the server for all of them).
const BATCH: usize = 100;
/// How often `run` looks for files to act on.
const LOOK: Duration = Duration::from_secs(5);
/// A file held back (the server's answer was not what we need, the file changed, the
/// request failed) is looked at again after this long.
const HOLD_MS: i64 = 600_000;
/// After a failed request: sooner.
const HOLD_FAILED_MS: i64 = 30_000;
/// Prefix of the temporary copy made when the archive is on another file system.
const TEMP_PREFIX: &str = ".immish-sync-archiving-";

/// One root's after-upload settings, as the task needs them.
#[derive(Clone, Debug)]
struct RootAction {
    root: PathBuf,
    action: AfterUploadAction,
    linked: bool,
}

/// The after-upload task of a daemon generation (or of one `scan`).
pub struct AfterUpload {
    db: Db,
    api: ApiClient,
    roots: Vec<RootAction>,
}

/// What a round did, for the log and `scan`'s loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Round {
    looked: usize,
    acted: usize,
}

impl AfterUpload {
    pub fn new(db: Db, api: ApiClient, roots: &[RootConfig]) -> AfterUpload {
        AfterUpload {
            db,
            api,
            roots: roots
                .iter()
                .filter(|r| r.after_upload.removes())
                .map(|r| RootAction {
                    root: r.path.clone(),
                    action: r.after_upload.action.clone(),
                    linked: r.after_upload.linked,
                })
                .collect(),
        }
    }

    /// `run`: acts on files as they become safe, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Err(e) = self.recover().await {
            tracing::error!(error = %e, "after upload: cannot finish what the last run left");
        }
        loop {
            if !self.roots.is_empty() {
                // A stop does not wait for a round: every action is recorded as an intent
                // first, and finished or looked at again at the next start.
                let round = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = self.round() => r,
                };
                if let Err(e) = round {
                    tracing::error!(error = %e, "after upload: cannot use the state database");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(LOOK) => {}
            }
        }
    }

    /// `scan`: everything that can be done now, then return.
    pub async fn drain(self, shutdown: &CancellationToken) -> Result<(), DbError> {
        self.recover().await?;
        if self.roots.is_empty() {
            return Ok(());
        }
        while !shutdown.is_cancelled() {
            let r = self.round().await?;
            if r.looked < BATCH {
                break;
            }
        }
        Ok(())
    }

    /// Intents a crash or stop left open: an action that was taken is recorded as done; one
    /// that was not is dropped, so that the file is looked at anew (a fresh look at the
    /// server included) like any other.
    async fn recover(&self) -> Result<(), DbError> {
        let open = self.db.call(|c| store::open_intents(c)).await?;
        for intent in open {
            let i = intent.clone();
            let state = tokio::task::spawn_blocking(move || recovered(&i))
                .await
                .map_err(|e| DbError::Join(e.to_string()))?;
            let id = intent.id;
            let path = lossy(&intent.path);
            match state {
                Recovered::Done => {
                    tracing::info!(path = %path, action = %intent.action, "after upload: finished what the last run left");
                    self.db
                        .call(move |c| store::finish(c, id, now_ms()))
                        .await?;
                }
                Recovered::Again => {
                    self.db.call(move |c| store::drop_intent(c, id)).await?;
                }
                Recovered::Lost => {
                    tracing::warn!(path = %path, "after upload: the file is neither where it was nor in the archive; it was moved or deleted by someone else");
                    self.db.call(move |c| store::drop_intent(c, id)).await?;
                }
            }
        }
        Ok(())
    }

    /// One round over every root: pick, record intents, look at the server, act.
    async fn round(&self) -> Result<Round, DbError> {
        let mut total = Round::default();
        for root in &self.roots {
            let r = self.root_round(root).await?;
            total.looked += r.looked;
            total.acted += r.acted;
        }
        if total.acted > 0 {
            tracing::info!(
                files = total.acted,
                "after upload: backed-up files archived or deleted"
            );
        }
        Ok(total)
    }

    async fn root_round(&self, root: &RootAction) -> Result<Round, DbError> {
        let root_bytes = root.root.as_os_str().as_bytes().to_vec();
        let (rb, linked) = (root_bytes.clone(), root.linked);
        // Files the database says are safe, less those whose partners are not yet.
        let picked = self
            .db
            .call(move |c| {
                // Page on past files that wait for a partner, so that they never starve the
                // ones after them.
                let now = now_ms();
                let (mut ready, mut after) = (Vec::new(), 0);
                loop {
                    let page = store::candidates(c, &rb, linked, now, after, BATCH)?;
                    let full = page.len() == BATCH;
                    for cand in page {
                        after = cand.file_id;
                        if ready.len() < BATCH && partners_safe(c, &cand)? {
                            ready.push(cand);
                        }
                    }
                    if !full || ready.len() >= BATCH {
                        break;
                    }
                }
                Ok(ready)
            })
            .await?;
        if picked.is_empty() {
            return Ok(Round::default());
        }
        let looked = picked.len();
        let (action, plans): (&str, Vec<Option<Vec<u8>>>) = match &root.action {
            AfterUploadAction::Keep => return Ok(Round::default()),
            AfterUploadAction::Delete => ("delete", vec![None; picked.len()]),
            AfterUploadAction::Archive(dir) => (
                "archive",
                picked
                    .iter()
                    .map(|c| archive_target(&root.root, dir, &c.path))
                    .collect(),
            ),
        };
        // The intents first, in one transaction: from here a crash is finished or looked at
        // again at the next start.
        let (pk, pl, rb, act) = (picked.clone(), plans.clone(), root_bytes, action.to_owned());
        let ids = self
            .db
            .call(move |c| {
                let tx = c.transaction()?;
                let mut ids = Vec::with_capacity(pk.len());
                for (cand, target) in pk.iter().zip(&pl) {
                    ids.push(store::record_intent(
                        &tx,
                        cand,
                        &rb,
                        &act,
                        target.as_deref(),
                        now_ms(),
                    )?);
                }
                tx.commit()?;
                Ok(ids)
            })
            .await?;
        // The fresh look: does the server still hold each asset, with our checksum, out of
        // the trash?
        let verdicts = self.fresh_look(&picked).await;
        let mut acted = 0;
        for ((cand, id), (target, verdict)) in
            picked.iter().zip(ids).zip(plans.into_iter().zip(verdicts))
        {
            let path = lossy(&cand.path);
            if let Err((why, wait)) = verdict {
                tracing::info!(path = %path, asset_id = %cand.asset_id, "after upload: not {}: {why}", done_word(action));
                let why = why.clone();
                self.db
                    .call(move |c| store::hold(c, id, &why, now_ms() + wait))
                    .await?;
                continue;
            }
            let (c2, t2) = (cand.clone(), target.clone());
            let db = self.db.clone();
            let result = tokio::task::spawn_blocking(move || act_on(&db, id, &c2, t2.as_deref()))
                .await
                .map_err(|e| DbError::Join(e.to_string()))?;
            match result {
                Ok(Acted::Done(to)) => {
                    match &to {
                        Some(t) => {
                            tracing::debug!(path = %path, to = %lossy(t), "after upload: archived")
                        }
                        None => tracing::debug!(path = %path, "after upload: deleted"),
                    }
                    self.db
                        .call(move |c| store::finish(c, id, now_ms()))
                        .await?;
                    acted += 1;
                }
                Ok(Acted::Held(why)) => {
                    tracing::info!(path = %path, "after upload: not {}: {why}", done_word(action));
                    self.db
                        .call(move |c| store::hold(c, id, &why, now_ms() + HOLD_MS))
                        .await?;
                }
                Err(e) => {
                    let why = e.to_string();
                    tracing::warn!(path = %path, "after upload: could not {action} the file: {why}; it stays where it is");
                    self.db
                        .call(move |c| store::hold(c, id, &why, now_ms() + HOLD_MS))
                        .await?;
                }
            }
        }
        Ok(Round { looked, acted })
    }

    /// Per candidate: `Ok` when the server holds its asset with our checksum, not trashed;
    /// else why not and when to look again. One bulk check for the batch; an asset the
    /// answer does not name (a server that gives no ids) is read back alone.
    async fn fresh_look(&self, picked: &[Candidate]) -> Vec<Result<(), (String, i64)>> {
        let items: Vec<(String, Checksum)> = picked
            .iter()
            .enumerate()
            .map(|(i, c)| (i.to_string(), c.checksum))
            .collect();
        let answers = match self.api.bulk_upload_check(&items).await {
            Ok(a) => a,
            Err(e) => {
                let why = format!("could not ask the server whether it still holds it ({e})");
                return vec![Err((why, HOLD_FAILED_MS)); picked.len()];
            }
        };
        let mut out = Vec::with_capacity(picked.len());
        for (cand, (_, answer)) in picked.iter().zip(answers) {
            out.push(match answer {
                CheckResult::Accept => {
                    Err(("the server no longer holds its bytes".to_owned(), HOLD_MS))
                }
                CheckResult::Duplicate {
                    is_trashed: true, ..
                } => Err(("its asset is in the server's trash".to_owned(), HOLD_MS)),
                CheckResult::Duplicate {
                    asset_id: Some(id), ..
                } if id.0 == cand.asset_id => Ok(()),
                CheckResult::Duplicate {
                    asset_id: Some(id), ..
                } => Err((
                    format!(
                        "the server holds its bytes as asset {id}, not as {} it was backed \
                         up as",
                        cand.asset_id
                    ),
                    HOLD_MS,
                )),
                CheckResult::Duplicate { asset_id: None, .. } => self.read_back(cand).await,
            });
        }
        out
    }

    /// `GET /assets/:id` for a server whose bulk check names no asset.
    async fn read_back(&self, cand: &Candidate) -> Result<(), (String, i64)> {
        match self.api.get_asset(&AssetId(cand.asset_id.clone())).await {
            Ok(Some(a)) if a.is_trashed => {
                Err(("its asset is in the server's trash".to_owned(), HOLD_MS))
            }
            Ok(Some(a)) if a.checksum.as_ref() == Some(&cand.checksum) => Ok(()),
            Ok(Some(_)) => Err((
                "the server's checksum of its asset is not ours".to_owned(),
                HOLD_MS,
            )),
            Ok(None) => Err(("the server no longer holds its asset".to_owned(), HOLD_MS)),
            Err(e) => Err((
                format!("could not read its asset back from the server ({e})"),
                HOLD_FAILED_MS,
            )),
        }
    }
}

fn done_word(action: &str) -> &'static str {
    if action == "archive" {
        "archived"
    } else {
        "deleted"
    }
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn os(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

/// Whether every Live Photo or stack partner of `cand` (files of the same stem in its
/// folder, in any state) is safe on the server too: a half is never removed before the
/// other is backed up.
fn partners_safe(c: &rusqlite::Connection, cand: &Candidate) -> rusqlite::Result<bool> {
    let Some((prefix, ext)) = pairs::split_stem(&cand.path) else {
        return Ok(true);
    };
    let siblings = library::with_prefix(c, prefix)?;
    for p in pairs::partners(prefix, &ext, &siblings) {
        if p.file_id != cand.file_id && !store::is_safe(c, p.file_id)? {
            return Ok(false);
        }
    }
    // The frames of a burst stack, likewise.
    if let Some((folder, token, _)) = pairs::burst_of(&cand.path) {
        for f in library::in_folder_with(c, folder, &token)? {
            if f.file_id != cand.file_id && !store::is_safe(c, f.file_id)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Where a file goes in the archive: its path below the root, under `dir`.
fn archive_target(root: &Path, dir: &Path, path: &[u8]) -> Option<Vec<u8>> {
    let rel = os(path).strip_prefix(root).ok()?;
    Some(dir.join(rel).as_os_str().as_bytes().to_vec())
}

/// What became of an action taken (or not) on disk.
enum Acted {
    /// Moved to the target (`Some`) or deleted (`None`).
    Done(Option<Vec<u8>>),
    /// Not touched, for this reason.
    Held(String),
}

/// On the blocking pool: checks that the file on disk is still exactly what was hashed
/// (its stat and, read again, its SHA-1), then moves or deletes it.
fn act_on(db: &Db, id: i64, cand: &Candidate, target: Option<&[u8]>) -> io::Result<Acted> {
    let src = os(&cand.path);
    let meta = match std::fs::symlink_metadata(src) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Acted::Held("the file is gone".into()))
        }
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(Acted::Held("no longer a regular file".into()));
    }
    let st = FileStat::from_metadata(&meta);
    let now = (
        st.dev as i64,
        st.ino as i64,
        st.size as i64,
        st.mtime_ns,
        st.ctime_ns,
    );
    if now != cand.stat {
        return Ok(Acted::Held(
            "the file changed since it was hashed; it is backed up again first".into(),
        ));
    }
    match crate::hash::hash_file(src, &CancellationToken::new()) {
        Ok((sum, _)) if sum == cand.checksum => {}
        Ok(_) => {
            return Ok(Acted::Held(
                "its bytes differ from those backed up (changed without a new modification \
                 time)"
                    .into(),
            ))
        }
        Err(e) => return Err(io::Error::other(e.to_string())),
    }
    let Some(target) = target else {
        std::fs::remove_file(src)?;
        return Ok(Acted::Done(None));
    };
    let to = place(db, id, src, os(target), &cand.checksum)?;
    Ok(Acted::Done(Some(to.as_os_str().as_bytes().to_vec())))
}

/// Moves `src` into the archive at `want` (or, when that name holds another file, at
/// `name (2).ext`…), never replacing anything: a hard link (atomic, fails if the name is
/// taken), or across file systems a synced copy linked into place, then `src` is removed.
/// A name that already holds these very bytes (a crash after the link) is taken as ours.
fn place(db: &Db, id: i64, src: &Path, want: &Path, sum: &Checksum) -> io::Result<PathBuf> {
    let dir = want
        .parent()
        .ok_or_else(|| io::Error::other("the archive path has no folder"))?;
    std::fs::create_dir_all(dir)?;
    for n in 1..1000u32 {
        let to = if n == 1 {
            want.to_path_buf()
        } else {
            numbered(want, n)
        };
        if n > 1 {
            let t = to.as_os_str().as_bytes().to_vec();
            db.call_blocking(move |c| store::set_target(c, id, &t))
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        match link_or_copy(src, &to, dir) {
            Ok(()) => {
                std::fs::remove_file(src)?;
                return Ok(to);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if holds(&to, sum) {
                    std::fs::remove_file(src)?;
                    return Ok(to);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{} and 998 numbered names beside it are taken",
        want.display()
    )))
}

/// `IMG_1 (n).jpg` beside `IMG_1.jpg`.
fn numbered(p: &Path, n: u32) -> PathBuf {
    let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = match (stem, p.extension()) {
        (Some(s), Some(e)) => format!("{s} ({n}).{}", e.to_string_lossy()),
        (Some(s), None) => format!("{s} ({n})"),
        _ => format!("({n})"),
    };
    p.with_file_name(name)
}

fn link_or_copy(src: &Path, to: &Path, dir: &Path) -> io::Result<()> {
    match std::fs::hard_link(src, to) {
        Ok(()) => Ok(()),
        // Another file system (EXDEV), or one without hard links (EPERM, EOPNOTSUPP): a copy.
        Err(e) if matches!(e.raw_os_error(), Some(18 | 1 | 95)) => {
            let tmp = dir.join(format!("{TEMP_PREFIX}{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let res = (|| {
                std::fs::copy(src, &tmp)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::hard_link(&tmp, to)
            })();
            let _ = std::fs::remove_file(&tmp);
            res
        }
        Err(e) => Err(e),
    }
}

/// Whether `p` is a regular file with exactly these bytes.
fn holds(p: &Path, sum: &Checksum) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
        && crate::hash::hash_file(p, &CancellationToken::new()).is_ok_and(|(s, _)| s == *sum)
}

/// What an open intent found at the next start.
#[derive(Debug, PartialEq, Eq)]
enum Recovered {
    /// The action was taken (the file is in the archive, or deleted).
    Done,
    /// Not taken: look at the file anew.
    Again,
    /// The file is neither where it was nor where it went.
    Lost,
}

fn recovered(i: &Intent) -> Recovered {
    let src = os(&i.path);
    let present = std::fs::symlink_metadata(src).is_ok();
    match (i.action.as_str(), &i.target) {
        (_, _) if present => Recovered::Again,
        ("archive", Some(t)) if holds(os(t), &i.checksum) => Recovered::Done,
        ("archive", _) => Recovered::Lost,
        // Deleted before the end was recorded (or by the user meanwhile: either way the
        // server holds it, as checked before the intent's action).
        _ => Recovered::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_targets_keep_the_path_below_the_root() {
        let t = archive_target(
            Path::new("/photos"),
            Path::new("/archive"),
            b"/photos/2024/May/IMG_1.jpg",
        );
        assert_eq!(t.as_deref(), Some(&b"/archive/2024/May/IMG_1.jpg"[..]));
        assert_eq!(
            archive_target(Path::new("/photos"), Path::new("/a"), b"/else/x.jpg"),
            None
        );
    }

    #[test]
    fn a_taken_name_gets_a_number() {
        assert_eq!(
            numbered(Path::new("/a/IMG_1.jpg"), 2),
            PathBuf::from("/a/IMG_1 (2).jpg")
        );
        assert_eq!(
            numbered(Path::new("/a/README"), 3),
            PathBuf::from("/a/README (3)")
        );
    }

    #[test]
    fn an_open_intent_is_finished_or_looked_at_again() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("IMG_1.jpg");
        let dst = dir.path().join("archive/IMG_1.jpg");
        std::fs::write(&src, b"bytes").unwrap();
        let sum = crate::hash::hash_file(&src, &CancellationToken::new())
            .unwrap()
            .0;
        let intent = |action: &str| Intent {
            id: 1,
            file_id: Some(1),
            path: src.as_os_str().as_bytes().to_vec(),
            action: action.into(),
            target: Some(dst.as_os_str().as_bytes().to_vec()),
            checksum: sum,
            asset_id: "a".into(),
        };
        // Not acted on yet: looked at anew, fresh look included.
        assert_eq!(recovered(&intent("archive")), Recovered::Again);
        assert_eq!(recovered(&intent("delete")), Recovered::Again);
        // Moved before the end was recorded: done.
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::rename(&src, &dst).unwrap();
        assert_eq!(recovered(&intent("archive")), Recovered::Done);
        // Other bytes at the target are not ours.
        std::fs::write(&dst, b"other").unwrap();
        assert_eq!(recovered(&intent("archive")), Recovered::Lost);
        assert_eq!(recovered(&intent("delete")), Recovered::Done);
    }
}
