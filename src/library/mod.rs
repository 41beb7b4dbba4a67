//! The library: what happens to a file after the server holds it (docs/ARCHITECTURE.md#library).
//! It joins its albums (`album`, `album_name` of its root), and becomes part of a Live Photo
//! or a stack with the files of the same stem beside it.
//!
//! Owns: sorting the files a trigger noted when their job became `done` (`library_todo`),
//! finding or creating albums by name, sending memberships in batches, linking Live Photos
//! and creating stacks after the fact, and the one message per missing permission. The one
//! thing it does inside the pipeline is [`plan_still_in`]: a Live Photo's still waits a moment
//! for its video, so that it can be uploaded with `livePhotoVideoId`.
//!
//! Must not: slow or stop uploads (every failure here is logged and retried later, never
//! a job's), remove anything from an album or a stack, or hold a database call across an
//! `.await` (each step is one [`Db::call`]).

pub mod albums;
pub mod pairs;

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::{Album, ApiClient, ApiError, ErrorClass};
use crate::config::{LibraryConfig, RootConfig};
use crate::db::library::{self, Group};
use crate::db::{now_ms, Db, DbError};
use crate::model::AssetId;
use pairs::StillPlan;

/// Files sorted per transaction: small, so that the pipeline's own database work never
/// waits long behind it.
const SORT_BATCH: usize = 200;
/// Asset ids per `PUT /albums/:id/assets` (the Immich CLI sends up to 1000 per call).
const ALBUM_BATCH: usize = 1000;
/// Groups sent per pass.
const GROUP_BATCH: usize = 200;
/// How often the daemon's library task looks for new work.
const LOOK: Duration = Duration::from_secs(1);
/// The pause between two rounds that found work: uploads come first, and albums may lag a
/// little behind during a burst.
const BUSY_PAUSE: Duration = Duration::from_millis(250);
/// After a refusal for lack of a permission: when to try again (the user may fix the key;
/// nothing tells when).
const BLOCKED_RETRY: Duration = Duration::from_secs(600);
/// After a transient failure (network, 5xx): when to try again.
const FAILED_RETRY: Duration = Duration::from_secs(30);

/// The three kinds of work, each blocked on its own: a key may allow albums but not stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Area {
    Albums,
    Live,
    Stacks,
}

impl Area {
    fn of(kind: &str) -> Area {
        if kind == "live" {
            Area::Live
        } else {
            Area::Stacks
        }
    }

    /// What the user loses and what to do, said once when the key lacks a permission.
    fn blocked_advice(self) -> &'static str {
        match self {
            Area::Albums => {
                "files are backed up but not put in albums; give the key album.read, \
                 album.create and albumAsset.create, or set album = \"none\" and no album_name"
            }
            Area::Live => {
                "Live Photos whose halves were uploaded apart stay two assets; give the key \
                 asset.update"
            }
            Area::Stacks => {
                "RAW + JPEG pairs are not stacked; give the key stack.create and asset.update, \
                 or set stacks = false for the root"
            }
        }
    }
}

/// The library task of one daemon generation (or of one `scan`).
pub struct Library {
    db: Db,
    api: ApiClient,
    roots: Vec<(Vec<u8>, LibraryConfig)>,
    /// Areas not tried again before this time (a missing permission, a failing server).
    hold: Vec<(Area, Instant)>,
    /// What was said once already: blocked areas, album names chosen among several.
    told: HashSet<String>,
}

impl Library {
    pub fn new(db: Db, api: ApiClient, roots: &[RootConfig]) -> Library {
        Library {
            db,
            api,
            roots: roots
                .iter()
                .map(|r| (r.path.as_os_str().as_bytes().to_vec(), r.library.clone()))
                .collect(),
            hold: Vec::new(),
            told: HashSet::new(),
        }
    }

    /// The daemon's task: sorts and sends as files are backed up, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Err(e) = self.adopt_settings().await {
            tracing::error!(error = %e, "library: cannot read the state database");
        }
        loop {
            // A stop does not wait for a request in flight: what a pass sends is marked only
            // after the server answered, so dropping it halfway loses nothing.
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.pass() => r,
            };
            let busy = match pass {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::error!(error = %e, "library: cannot use the state database");
                    false
                }
            };
            let wait = if busy { BUSY_PAUSE } else { LOOK };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// `scan`: everything that can be done now, then return.
    pub async fn drain(mut self, shutdown: &CancellationToken) -> Result<(), DbError> {
        self.adopt_settings().await?;
        while !shutdown.is_cancelled() && self.pass().await? {}
        Ok(())
    }

    /// A root whose album or stack settings changed since its files were sorted has them
    /// sorted again (a user who turns albums on wants the files already backed up in them).
    async fn adopt_settings(&self) -> Result<(), DbError> {
        for (root, cfg) in &self.roots {
            let (root, fp) = (root.clone(), cfg.fingerprint());
            let n = self
                .db
                .call(move |c| library::adopt_root_settings(c, &root, &fp))
                .await?;
            if n > 0 {
                tracing::info!(
                    files = n,
                    "library: sorting backed-up files into albums and groups"
                );
            }
        }
        Ok(())
    }

    /// One round: sort what was noted, send memberships, send groups. Whether anything was
    /// done (so that another round may find more at once).
    async fn pass(&mut self) -> Result<bool, DbError> {
        let sorted = self.sort().await?;
        let sent = self.send_albums().await?;
        let grouped = self.send_groups().await?;
        Ok(sorted || sent || grouped)
    }

    fn held(&self, area: Area) -> bool {
        let now = Instant::now();
        self.hold
            .iter()
            .any(|(a, until)| *a == area && *until > now)
    }

    /// Sorts one batch of noted files: their album memberships and groups, written with the
    /// removal of their notes.
    async fn sort(&self) -> Result<bool, DbError> {
        let roots = self.roots.clone();
        self.db
            .call(move |c| {
                let todo = library::todo(c, SORT_BATCH)?;
                if todo.is_empty() {
                    return Ok(false);
                }
                let mut ids = Vec::with_capacity(todo.len());
                let (mut members, mut groups) = (Vec::new(), Vec::new());
                for t in &todo {
                    ids.push(t.file_id);
                    // No longer done (changed again), or a root no longer configured.
                    let (Some(asset), Some((_, cfg))) =
                        (&t.asset_id, roots.iter().find(|(r, _)| *r == t.root))
                    else {
                        continue;
                    };
                    let mut live_video = false;
                    if let Some((prefix, _)) = pairs::split_stem(&t.path) {
                        let siblings = library::with_prefix(c, prefix)?;
                        let stacks = cfg.stacks.then_some(cfg.stack_primary);
                        groups.extend(pairs::groups_of(t.file_id, prefix, &siblings, stacks));
                        live_video = pairs::is_live_video(t.file_id, prefix, &siblings);
                    }
                    if let (true, Some((folder, token, _))) = (cfg.stacks, pairs::burst_of(&t.path))
                    {
                        let frames = library::in_folder_with(c, folder, &token)?;
                        groups.extend(pairs::burst_group(t.file_id, folder, &token, &frames));
                    }
                    if !live_video {
                        for name in albums::album_names(cfg, &t.root, &t.path) {
                            members.push((name, asset.clone()));
                        }
                    }
                }
                library::record_sorted(c, &ids, &members, &groups)?;
                Ok(true)
            })
            .await
    }

    /// Sends one batch of memberships per album that has any unsent.
    async fn send_albums(&mut self) -> Result<bool, DbError> {
        if self.held(Area::Albums) {
            return Ok(false);
        }
        let batches = self
            .db
            .call(|c| library::unsent_members(c, ALBUM_BATCH))
            .await?;
        let mut listed: Option<Vec<Album>> = None;
        let mut did = false;
        for (name, assets) in batches {
            let album_id = match self.album_id(&name, &mut listed).await {
                Ok(Some(id)) => id,
                Ok(None) => return Ok(did),
                Err(e) => {
                    self.failed(Area::Albums, &format!("find or create album {name:?}"), &e);
                    // Without the album nothing else can be sent for it now; a refusal for
                    // good is still looked at again later rather than every second.
                    if !self.held(Area::Albums) {
                        self.hold_for(Area::Albums, FAILED_RETRY);
                    }
                    return Ok(did);
                }
            };
            match self.api.add_to_album(&album_id, &assets).await {
                Ok(add) => {
                    for (id, why) in &add.refused {
                        tracing::warn!(album = %name, asset_id = %id, "library: the server refused to add an asset to the album: {why}");
                    }
                    tracing::debug!(album = %name, added = add.added, already = add.already, "library: album filled");
                }
                Err(e) if e.status() == Some(400) => {
                    // The album is gone (deleted on the server) or not ours: look the name
                    // up again, and create it anew if no album has it.
                    tracing::info!(album = %name, "library: the album is no longer on the server; it will be found or created again");
                    let n = name.clone();
                    self.db.call(move |c| library::forget_album(c, &n)).await?;
                    listed = None;
                    did = true;
                    continue;
                }
                Err(e) => {
                    self.failed(Area::Albums, &format!("add assets to album {name:?}"), &e);
                    if try_again_later(&e) {
                        return Ok(did);
                    }
                    // Refused for good: said, and not sent again.
                }
            }
            let now = now_ms();
            self.db
                .call(move |c| library::mark_members_sent(c, &name, &assets, now))
                .await?;
            did = true;
        }
        Ok(did)
    }

    /// The album of this name: the one chosen before, else the oldest of the user's albums
    /// of this name, else a new one. `Ok(None)` when the database said nothing usable.
    async fn album_id(
        &mut self,
        name: &str,
        listed: &mut Option<Vec<Album>>,
    ) -> Result<Option<String>, ApiError> {
        let n = name.to_owned();
        if let Ok(Some(id)) = self.db.call(move |c| library::album_id(c, &n)).await {
            return Ok(Some(id));
        }
        if listed.is_none() {
            *listed = Some(self.api.own_albums().await?);
        }
        let all = listed.as_deref().unwrap_or_default();
        let (chosen, count) = albums::choose(name, all);
        let album = match chosen {
            Some(a) => {
                if count > 1 && self.told.insert(format!("album {name}")) {
                    tracing::info!(
                        album = %name,
                        album_id = %a.id,
                        "library: {count} of your albums are named {name:?}; using the oldest \
                         (created {}), as every run will",
                        a.created_at
                    );
                }
                a.clone()
            }
            None => {
                let a = self.api.create_album(name).await?;
                tracing::info!(album = %name, album_id = %a.id, "library: album created");
                if let Some(l) = listed.as_mut() {
                    l.push(a.clone());
                }
                a
            }
        };
        let (n, id) = (name.to_owned(), album.id.clone());
        match self
            .db
            .call(move |c| library::set_album_id(c, &n, &id, now_ms()))
            .await
        {
            Ok(()) => Ok(Some(album.id)),
            Err(e) => {
                tracing::error!(error = %e, "library: cannot record an album");
                Ok(None)
            }
        }
    }

    /// Links Live Photos and creates stacks the server does not hold as decided yet.
    async fn send_groups(&mut self) -> Result<bool, DbError> {
        let groups = self
            .db
            .call(|c| library::unsent_groups(c, GROUP_BATCH))
            .await?;
        let mut did = false;
        for g in groups {
            let area = Area::of(&g.kind);
            if self.held(area) {
                continue;
            }
            let ids: Vec<AssetId> = g.assets.iter().cloned().map(AssetId).collect();
            let res = match (area, ids.as_slice()) {
                (Area::Live, [still, video]) => self.api.link_live_photo(still, video).await,
                (Area::Stacks, ids) if ids.len() >= 2 => self.api.create_stack(ids).await,
                _ => Ok(()),
            };
            let what = match area {
                Area::Live => "link a Live Photo",
                _ => "create a stack",
            };
            match res {
                Ok(()) => {
                    tracing::debug!(kind = %g.kind, stem = %String::from_utf8_lossy(&g.stem), "library: grouped on the server");
                }
                Err(e) => {
                    self.failed(area, what, &e);
                    if try_again_later(&e) {
                        continue;
                    }
                }
            }
            self.db
                .call(move |c| library::mark_group_sent(c, &g))
                .await?;
            did = true;
        }
        Ok(did)
    }

    /// Says what failed (a missing permission once, with what to do) and holds the area
    /// back for a while when trying again now would meet the same answer.
    fn failed(&mut self, area: Area, what: &str, e: &ApiError) {
        let until = if e.status() == Some(403) {
            if self.told.insert(format!("{area:?} blocked")) {
                tracing::warn!(
                    "library: the server refused to {what} for lack of a permission ({e}); {}. \
                     Uploads go on",
                    area.blocked_advice()
                );
            }
            Some(BLOCKED_RETRY)
        } else if e.status() == Some(404) {
            // A server without the endpoint (an older or seed-style server): every request
            // would meet it, so it is said once, like a missing permission.
            if self.told.insert(format!("{area:?} missing")) {
                tracing::warn!("library: the server cannot {what} ({e}); uploads go on without it");
            }
            Some(BLOCKED_RETRY)
        } else if e.class() == ErrorClass::Permanent {
            tracing::warn!("library: the server refused to {what}: {e}; not tried again");
            None
        } else {
            tracing::warn!("library: could not {what}: {e}; trying again later");
            Some(FAILED_RETRY)
        };
        if let Some(d) = until {
            self.hold_for(area, d);
        }
    }

    fn hold_for(&mut self, area: Area, d: Duration) {
        self.hold.retain(|(a, _)| *a != area);
        self.hold.push((area, Instant::now() + d));
    }
}

/// Whether a failed request is tried again later rather than given up: anything but a
/// permanent refusal of this request itself (a missing permission or endpoint is the key's or
/// the server's, not the group's).
fn try_again_later(e: &ApiError) -> bool {
    e.class() != ErrorClass::Permanent || matches!(e.status(), Some(403 | 404))
}

/// For the upload step: whether the still of a Live Photo goes up with its video's id, alone,
/// or waits a moment for the video (then the job is put back to wait, without counting an
/// attempt). Only a JPEG/HEIC with a video file beside it on disk costs a query: the
/// database is shared with the rest of the pipeline. Blocking (a look at the disk, then
/// [`plan_still_in`]): the upload step runs it on the blocking pool with its other look-ups.
pub fn still_prefix(path: &[u8]) -> Option<Vec<u8>> {
    let (prefix, ext) = pairs::split_stem(path)?;
    (pairs::is_still_ext(&ext) && pairs::video_beside(prefix)).then(|| prefix.to_vec())
}

/// The database half of the plan for a still whose [`still_prefix`] is `prefix`, inside the
/// caller's database call.
pub fn plan_still_in(
    c: &rusqlite::Connection,
    file_id: i64,
    prefix: &[u8],
) -> rusqlite::Result<StillPlan> {
    let siblings = library::with_prefix(c, prefix)?;
    let now = now_ms();
    match pairs::still_plan(file_id, prefix, &siblings, 0) {
        StillPlan::Wait => {}
        plan => return Ok(plan),
    }
    let waited = now - library::pair_wait_since(c, file_id, now)?;
    let plan = pairs::still_plan(file_id, prefix, &siblings, waited);
    if plan == StillPlan::Wait {
        library::defer(
            c,
            file_id,
            now + pairs::PAIR_RELOOK_MS,
            "waiting for its Live Photo video to be uploaded first",
            now,
        )?;
    }
    Ok(plan)
}

/// For the upload step: the still went up with `livePhotoVideoId` and the server created it,
/// so the pair is linked already.
pub async fn linked_at_upload(
    db: &Db,
    path: &[u8],
    still: &AssetId,
    video: &str,
) -> Result<(), DbError> {
    let Some((prefix, _)) = pairs::split_stem(path) else {
        return Ok(());
    };
    let group = Group {
        kind: "live".into(),
        stem: prefix[..prefix.len() - 1].to_vec(),
        assets: vec![still.0.clone(), video.to_owned()],
    };
    db.call(move |c| library::mark_group_sent(c, &group)).await
}
