//! `immish-sync scan`: one start-up, one pull, passes over the roots until the engine is
//! idle, the `[[pull]]` folders brought up to date, and the summary main prints.
//!
//! Owns: the passes (and the extra passes for files still changing), merging their
//! reports, and the summary. Must not: print (main does).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::config::Config;
use crate::db;
use crate::db::meta;
use crate::db::queue::{self, JobReport};
use crate::library::Library;
use crate::mirror::Mirror;
use crate::pipeline::{Engine, EngineEnd, Mode, Stats};
use crate::scan::{RootOutcome, RootScan};

use super::error::DaemonError;
use super::startup::start;
use super::tuning::Tuning;

/// How many more times `scan` waits for files that were still changing.
const SCAN_SETTLE_PASSES: usize = 2;
/// Files not backed up that the summary of a `scan` names.
const SUMMARY_PROBLEMS: usize = 20;

pub(super) fn fresh_count(outcomes: &[(PathBuf, RootOutcome)]) -> u64 {
    outcomes
        .iter()
        .map(|(_, o)| match o {
            RootOutcome::Scanned(s) => s.fresh,
            RootOutcome::Paused { .. } => 0,
        })
        .sum()
}

/// One report for two passes over the same roots: what was queued adds up; what is still
/// changing, missing or paused is as the later pass saw it.
pub(super) fn merge_passes(
    first: Vec<(PathBuf, RootOutcome)>,
    again: Vec<(PathBuf, RootOutcome)>,
) -> Vec<(PathBuf, RootOutcome)> {
    // What was queued, and the late sidecars (each reported by one pass only), add up.
    let queued_before: std::collections::HashMap<PathBuf, (u64, u64)> = first
        .into_iter()
        .filter_map(|(p, o)| match o {
            RootOutcome::Scanned(s) => Some((p, (s.queued, s.late_sidecars))),
            RootOutcome::Paused { .. } => None,
        })
        .collect();
    again
        .into_iter()
        .map(|(p, o)| match o {
            RootOutcome::Scanned(mut s) => {
                let (queued, late) = queued_before.get(&p).copied().unwrap_or_default();
                s.queued += queued;
                s.late_sidecars += late;
                (p, RootOutcome::Scanned(s))
            }
            paused => (p, paused),
        })
        .collect()
}

/// What one `scan` did, for the user.
#[derive(Debug)]
pub struct ScanSummary {
    pub roots: Vec<(PathBuf, RootOutcome)>,
    pub end: EngineEnd,
    pub stats: Arc<Stats>,
    pub elapsed: Duration,
    /// Jobs still `queued`…`verifying` or `retry` (not backed up yet).
    pub pending: i64,
    pub failed: Vec<JobReport>,
    pub failed_total: i64,
    /// The settle period files had to be unchanged for to be taken (`watch.settle`).
    pub settle: Duration,
    /// Files whose only server copy is in the server's trash: not backed up (the trash
    /// empties itself). The total, and the first paths.
    pub trash_only_total: i64,
    pub trash_only: Vec<Vec<u8>>,
    /// Files held back because the user deleted their photos on the server for good: a
    /// deliberate deletion, noted but not a failure.
    pub deleted_held_back: i64,
    /// Roots the user paused (`pause --root`): walked and hashed, not uploaded.
    pub held_roots: Vec<String>,
    /// What the `[[pull]]` folders got after the uploads (docs/ARCHITECTURE.md#pull);
    /// `None` without `[[pull]]` or with `--no-pull`. Not part of [`Self::is_complete`]:
    /// a copy not pulled yet leaves no local file without a backup.
    pub pull: Option<crate::originals::PullSummary>,
}

impl ScanSummary {
    /// All candidate files are on the server (or deliberately skipped).
    pub fn is_complete(&self) -> bool {
        self.end == EngineEnd::Idle
            && self.pending == 0
            && self.scanned().fresh == 0
            && self.scanned().waiting.is_empty()
            && self.failed_total == 0
            && self.trash_only_total == 0
            && self
                .roots
                .iter()
                .all(|(_, o)| matches!(o, RootOutcome::Scanned(_)))
    }

    pub fn scanned(&self) -> RootScan {
        let mut total = RootScan::default();
        for (_, o) in &self.roots {
            if let RootOutcome::Scanned(s) = o {
                total.files += s.files;
                total.queued += s.queued;
                total.missing += s.missing;
                total.fresh += s.fresh;
                total.waiting.extend(s.waiting.iter().cloned());
                total.skipped.add(&s.skipped);
                total.junk += s.junk;
                total.ignored += s.ignored;
                total.unmatched.extend(s.unmatched.iter().cloned());
                total.late_sidecars += s.late_sidecars;
            }
        }
        total
    }
}

/// One account's `scan`.
pub(super) async fn scan_one(
    config: Config,
    tuning: Tuning,
    shutdown: CancellationToken,
) -> Result<ScanSummary, DaemonError> {
    let t0 = Instant::now();
    let Some(s) = start(&config, &tuning, false, &shutdown).await? else {
        return Err(DaemonError::Task("cancelled".into()));
    };
    // A paused agent stays paused for `scan` too (docs/ARCHITECTURE.md#control).
    let pauses = s.db.call(|c| meta::user_pauses(c)).await?;
    if let Some(since) = pauses.all_since_ms {
        return Err(DaemonError::Paused {
            since: crate::human::timestamp(since),
        });
    }
    // One pull first, so that what the user deleted on the server is known (tombstones)
    // before any file is checked.
    Mirror::new(s.db.clone(), s.api.clone(), &config.mirror, None)
        .pull_for_scan(&shutdown)
        .await;
    let engine = Engine::new(s.db.clone(), s.api.clone(), s.pipeline.clone());
    let waker = engine.waker();
    let held_roots = pauses.roots.into_iter().map(|r| r.path).collect();
    // The engine runs while the walk feeds it, so uploads start before the walk ends.
    let feed = waker.feeding();
    let settle = s.scanner.settle();
    let walk = async {
        let pass = || s.scanner.scan_all(|| waker.wake(), &shutdown);
        let mut outcomes = pass().await;
        // Files that changed within the settle period may still be being copied: wait for
        // them to settle and look again, a few times, rather than upload half of one.
        for _ in 0..SCAN_SETTLE_PASSES {
            let fresh = match &outcomes {
                Ok(o) => fresh_count(o),
                Err(_) => 0,
            };
            if fresh == 0 || shutdown.is_cancelled() {
                break;
            }
            tracing::info!("{fresh} files are still changing; looking again in {settle:?}");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(settle) => {}
            }
            outcomes = match (outcomes, pass().await) {
                (Ok(first), Ok(again)) => Ok(merge_passes(first, again)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        drop(feed);
        outcomes
    };
    let mode = Mode::UntilIdle {
        max_attempts: config.upload.scan_max_attempts,
    };
    let progress_done = shutdown.child_token();
    // A bar on a terminal, lines elsewhere (docs/ARCHITECTURE.md#progress).
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tokio::spawn(crate::progress::bar(
            s.db.clone(),
            engine.stats(),
            s.api.clone(),
            progress_done.clone(),
        ))
    } else {
        tokio::spawn(crate::progress::report(
            s.db.clone(),
            engine.stats(),
            s.api.clone(),
            tuning.progress_every,
            progress_done.clone(),
        ))
    };
    let progress = AbortOnDropHandle::new(progress);
    let (roots, end) = tokio::join!(walk, engine.run(mode, shutdown.clone()));
    progress_done.cancel();
    // The bar draws its last state before the summary is printed.
    let _ = progress.await;
    let (roots, end) = (roots?, end?);
    // What the server holds now joins its albums and groups before `scan` returns.
    Library::new(s.db.clone(), s.api.clone(), &config.roots)
        .drain(&shutdown)
        .await?;
    // Then, for roots that ask for it, backed-up files are archived or deleted
    // (docs/ARCHITECTURE.md#after-upload).
    crate::after_upload::AfterUpload::new(s.db.clone(), s.api.clone(), &config.roots)
        .drain(&shutdown)
        .await?;
    // Last, the [[pull]] folders, by the rounds of `run`'s pull task, from the mirror that
    // the verified uploads joined too (docs/ARCHITECTURE.md#pull); `scan --no-pull` leaves
    // `config.pull` empty.
    let pull = if config.pull.is_empty() || shutdown.is_cancelled() {
        None
    } else {
        let originals =
            crate::originals::Originals::from_config(s.db.clone(), s.api.clone(), &config);
        Some(originals.once(&shutdown).await)
    };
    let backlog = s.db.call(|c| queue::backlog(c, SUMMARY_PROBLEMS)).await?;
    let ((trash_only_total, trash_only), held_back) =
        s.db.call(|c| {
            Ok((
                db::mirror::trash_only(c, SUMMARY_PROBLEMS)?,
                db::mirror::held_back(c)?,
            ))
        })
        .await?;
    Ok(ScanSummary {
        held_roots,
        trash_only_total,
        trash_only,
        // `held_back` counts every file held back as deleted, the trashed ones too.
        deleted_held_back: held_back.saturating_sub(trash_only_total).max(0),
        roots,
        end,
        stats: engine.stats(),
        elapsed: t0.elapsed(),
        pending: backlog.pending,
        failed: backlog.recent_problems,
        failed_total: backlog.failed_total,
        settle,
        pull,
    })
}
