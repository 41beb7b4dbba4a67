//! `immish-sync scan --dry-run`: what a backup would send, without sending it.
//!
//! Owns: a walk of every root by the rules of a scan (`Root::may_hold`, `is_candidate`;
//! symlinks never followed; empty files are not sent), and sorting each candidate into
//! "already backed up" (the catalogue has it, unchanged, `done`), "already on the server"
//! (its checksum is one the state knows the server holds: our known assets, or a live asset
//! in the mirror of the last pull) and "would be uploaded". A file the catalogue has no
//! checksum for is hashed only when the mirror holds assets (with an empty mirror nothing
//! could match). Media types are the built-in list.
//!
//! Must not: send anything to the server, take the daemon's lock, or write the state
//! database (it is opened read-only, and only when it exists).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::catalogue::{self, DryRunFile};
use crate::db::{self, meta, Db, DbError};
use crate::model::MediaTypes;
use crate::scan::walk::Root;

/// Files and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// What one root would do.
#[derive(Clone, Debug, Default)]
pub struct RootPlan {
    pub path: PathBuf,
    pub upload: Tally,
    /// The catalogue has it unchanged and backed up.
    pub backed_up: Tally,
    /// Its checksum is on the server (known asset, or the mirror).
    pub on_server: Tally,
    /// Regular files a scan does not take (type, globs, temporary or hidden name, empty).
    pub excluded: u64,
    /// Folders not entered (hidden, temporary, or a non-recursive root's subfolders).
    pub folders_skipped: u64,
    /// Files that would be uploaded, when a list was asked for.
    pub listed: Vec<PathBuf>,
    /// The root could not be read.
    pub error: Option<String>,
}

/// The whole dry run.
#[derive(Clone, Debug, Default)]
pub struct DryRun {
    pub roots: Vec<RootPlan>,
    /// Whether a mirror of the server was there to consult.
    pub mirror_assets: bool,
}

impl DryRun {
    pub fn render(&self) -> String {
        use crate::human::size;
        let mut out = String::from(
            "dry run: nothing is sent and the state is not changed; the server is not \
             contacted\n",
        );
        if !self.mirror_assets {
            out.push_str(
                "no mirror of the server yet: files already on the server are only found \
                 when the real scan asks it\n",
            );
        }
        let mut total = Tally::default();
        for r in &self.roots {
            if let Some(e) = &r.error {
                out.push_str(&format!("root {}: cannot be read: {e}\n", r.path.display()));
                continue;
            }
            total.files += r.upload.files;
            total.bytes += r.upload.bytes;
            out.push_str(&format!(
                "root {}: would upload {} files ({}); already backed up {} ({}); already on \
                 the server {} ({}); excluded {} files, {} folders not entered\n",
                r.path.display(),
                r.upload.files,
                size(r.upload.bytes),
                r.backed_up.files,
                size(r.backed_up.bytes),
                r.on_server.files,
                size(r.on_server.bytes),
                r.excluded,
                r.folders_skipped
            ));
            for p in &r.listed {
                out.push_str(&format!("  {}\n", p.display()));
            }
        }
        out.push_str(&format!(
            "total: would upload {} files ({})\n",
            total.files,
            size(total.bytes)
        ));
        out
    }
}

/// Runs the dry run over every root of `config` (blocking: walks and hashes).
pub fn dry_run(config: &Config, list: bool) -> Result<DryRun, DbError> {
    let media = MediaTypes::builtin();
    let db_path = config.state.dir.join(db::DB_FILE);
    let db = if db_path.exists() {
        Some(Db::open_readonly(&db_path)?)
    } else {
        None
    };
    let (owner, mirror_assets) = match &db {
        Some(db) => db.call_blocking(|c| {
            let owner = meta::server_identity(c)?.map(|i| i.user_id);
            Ok((owner, db::mirror::counts(c)?.live > 0))
        })?,
        None => (None, false),
    };
    let owner = owner.unwrap_or_default();
    let cancel = CancellationToken::new();
    let mut out = DryRun {
        roots: Vec::new(),
        mirror_assets,
    };
    for cfg in &config.roots {
        let mut plan = RootPlan {
            path: cfg.path.clone(),
            ..RootPlan::default()
        };
        let root = match Root::new(cfg) {
            Ok(r) => r,
            Err(e) => {
                plan.error = Some(e);
                out.roots.push(plan);
                continue;
            }
        };
        let known = match &db {
            Some(db) => {
                let key = root.path_bytes().to_vec();
                db.call_blocking(move |c| catalogue::dry_run_root(c, &key))?
            }
            None => Default::default(),
        };
        let mut files = Vec::new();
        if let Err(e) = walk(&root, &root.path, &media, &mut plan, &mut files) {
            plan.error = Some(e.to_string());
            out.roots.push(plan);
            continue;
        }
        for (path, m) in files {
            let size = m.len();
            let mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            let entry: Option<&DryRunFile> = known.get(path.as_os_str().as_bytes());
            let unchanged = entry.filter(|k| k.size == size && k.mtime_ns == mtime_ns);
            if unchanged.is_some_and(|k| k.done) {
                plan.backed_up.add(size);
                continue;
            }
            let sum = match unchanged.and_then(|k| k.checksum) {
                Some(s) => Some(s),
                None if mirror_assets => {
                    crate::hash::hash_file(&path, &cancel).ok().map(|(s, _)| s)
                }
                None => None,
            };
            let there = match (&db, sum) {
                (Some(db), Some(sum)) => {
                    let owner = owner.clone();
                    db.call_blocking(move |c| catalogue::known_on_server(c, &sum, &owner))?
                }
                _ => false,
            };
            if there {
                plan.on_server.add(size);
            } else {
                plan.upload.add(size);
                if list {
                    plan.listed.push(path);
                }
            }
        }
        out.roots.push(plan);
    }
    Ok(out)
}

/// The candidates under `dir`, by the walk's rules; counts what is passed over.
fn walk(
    root: &Root,
    dir: &Path,
    media: &MediaTypes,
    plan: &mut RootPlan,
    files: &mut Vec<(PathBuf, std::fs::Metadata)>,
) -> std::io::Result<()> {
    let entries = std::fs::read_dir(dir)?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if m.is_dir() {
            if root.may_hold(&path) {
                // An unreadable folder is passed over, as a scan does.
                let _ = walk(root, &path, media, plan, files);
            } else {
                plan.folders_skipped += 1;
            }
        } else if m.is_file() {
            if root.is_candidate(&path, media) && m.len() > 0 {
                files.push((path, m));
            } else {
                plan.excluded += 1;
            }
        }
    }
    Ok(())
}
