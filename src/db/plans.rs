//! Query plans of the queries the daemon runs per file or per claim: each must find its rows
//! through an index, never by reading a whole table (at 1,000,000 catalogued files a scan
//! per file is a scan of a million rows per file).

use rusqlite::Connection;

/// The steps of `sql`'s query plan, as `EXPLAIN QUERY PLAN` words them (`SCAN t`, `SEARCH t
/// USING INDEX …`). Every parameter is bound to NULL: the plan does not depend on values.
pub(crate) fn query_plan(c: &Connection, sql: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let n = stmt.parameter_count();
    let nulls = vec![rusqlite::types::Null; n];
    let mut rows = stmt.query(rusqlite::params_from_iter(nulls.iter()))?;
    let mut plan = Vec::new();
    while let Some(r) = rows.next()? {
        plan.push(r.get::<_, String>(3)?);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use rusqlite::trace::{TraceEvent, TraceEventCodes};

    use super::query_plan;
    use crate::db::catalogue::{self, FileStat};
    use crate::db::mirror::{self, Change, Policy, VerifiedUpload};
    use crate::db::queue::{self, CheckAnswer, Checked, HashResult, Outcome};
    use crate::db::sidecars::{self, SeenSidecar};
    use crate::db::{edited, Db};
    use crate::model::{AssetId, Checksum, JobState, RemoteAsset};

    /// Every statement the traced connection ran (its SQL as written, `?` unbound).
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn seen(e: TraceEvent<'_>) {
        if let TraceEvent::Stmt(_, sql) = e {
            if let Ok(mut s) = SEEN.lock() {
                s.push(sql.to_owned());
            }
        }
    }

    fn is_transaction(sql: &str) -> bool {
        let upper = sql.to_ascii_uppercase();
        ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"]
            .iter()
            .any(|w| upper.starts_with(w))
    }

    /// The statements of `c` that are prepared and not finalized (rusqlite's cache keeps
    /// them so), each with how many times SQLite prepared it again since it was made.
    fn live_statements(c: &rusqlite::Connection) -> Vec<(String, i32)> {
        use rusqlite::ffi;
        let mut out = Vec::new();
        // SAFETY: the handle is `c`'s own, used on this thread while `c` is borrowed;
        // `sqlite3_next_stmt`, `sqlite3_sql` and `sqlite3_stmt_status` only read the
        // connection's statements, and the SQL text is copied while they live.
        unsafe {
            let db = c.handle();
            let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() {
                let sql = ffi::sqlite3_sql(stmt);
                let sql = if sql.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(sql).to_string_lossy().into_owned()
                };
                let again = ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0);
                out.push((sql, again));
                stmt = ffi::sqlite3_next_stmt(db, stmt);
            }
        }
        out
    }

    fn sum(i: u64) -> Checksum {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&i.to_be_bytes());
        b[19] = 1;
        Checksum(b)
    }

    fn record(i: u64, owner: &str) -> RemoteAsset {
        RemoteAsset {
            id: AssetId(format!("asset-{i}")),
            owner_id: owner.to_owned(),
            checksum: Some(sum(i)),
            original_file_name: format!("IMG_{i}.jpg"),
            file_created_at: None,
            updated_at: None,
            visibility: None,
            is_trashed: false,
            // A device id, so that its `remote_ids` look-up is traced too (migration 0012).
            device_id: Some("immish-sync-plans".to_owned()),
            device_asset_id: None,
        }
    }

    /// Tables whose rows grow with the catalogue: a plan that reads one of them whole, or
    /// walks one of their indexes whole, costs the catalogue's size.
    const BIG: [&str; 9] = [
        "files",
        "jobs",
        "remote_assets",
        // Small (owners and devices), but looked up on every upsert: by its index too.
        "remote_ids",
        "known_assets",
        "tombstones",
        "sidecars",
        "edited",
        "library_groups",
    ];

    /// The life of a file through the pipeline, on a catalogue of thousands: every query it
    /// runs (scan, hash, dedup, upload look-ups, verification, the engine's counts, a pull's
    /// upsert) finds its rows through an index.
    #[test]
    fn every_query_a_file_costs_finds_its_rows_through_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        let owner = "user-1";
        let live = db
            .call_blocking(|c| {
                // A catalogue of 3,000 files backed up, so that the planner sees real tables.
                backed_up_catalogue(c)?;
                // The daemon never runs ANALYZE: the plans to check are those without statistics.
                // The traced part: 40 new files, one pass through each step.
                c.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(seen));
                let new: Vec<(Vec<u8>, FileStat)> = (5000..5040u64)
                    .map(|i| {
                        let stat = FileStat {
                            dev: 1,
                            ino: i,
                            size: 10,
                            mtime_ns: 7,
                            ctime_ns: 7,
                        };
                        (format!("/r/new/IMG_{i}.jpg").into_bytes(), stat)
                    })
                    .collect();
                catalogue::record_scan_batch(c, b"/r", &new, 2)?;
                let _ = catalogue::load_root(c, b"/r")?;
                let jobs = queue::claim_for_hash(c, 64, 1 << 30, 3)?;
                let results: Vec<HashResult> = jobs
                    .iter()
                    .map(|j| HashResult::Hashed {
                        file_id: j.file_id,
                        stat: j.stat,
                        checksum: sum(j.stat.ino),
                    })
                    .collect();
                queue::record_hash_results(c, &results, 4)?;
                let checking = queue::claim_for_check_outside(c, 1000, &[])?;
                let _ = queue::claim_for_check_outside(c, 1000, &[b"/held".to_vec()])?;
                for j in &checking {
                    let s = j.checksum.unwrap();
                    mirror::tombstone(c, &s)?;
                    catalogue::known_asset(c, &s)?;
                    mirror::own_live_asset(c, &s, owner)?;
                }
                let answers: Vec<Checked> = checking
                    .iter()
                    .map(|j| Checked {
                        file_id: j.file_id,
                        checksum: j.checksum.unwrap(),
                        answer: CheckAnswer::Upload,
                    })
                    .collect();
                queue::record_check_answers(c, &answers, 5)?;
                let ids: Vec<i64> = checking.iter().map(|j| j.file_id).collect();
                for j in &checking {
                    edited::pending(c, j.file_id)?;
                    crate::library::plan_still_in(c, j.file_id, b"/r/new/IMG_5000.")?;
                }
                queue::set_states(c, &ids, JobState::Verifying, 6)?;
                let verified: Vec<VerifiedUpload> = checking
                    .iter()
                    .map(|j| VerifiedUpload {
                        file_id: j.file_id,
                        checksum: j.checksum.unwrap(),
                        asset_id: AssetId(format!("asset-{}", j.stat.ino)),
                        record: record(j.stat.ino, owner),
                        outcome: Outcome::Uploaded,
                        sidecar: Some(SeenSidecar {
                            path: b"/r/new/x.xmp".to_vec(),
                            size: 1,
                            mtime_ns: 1,
                        }),
                    })
                    .collect();
                mirror::record_verified_uploads(c, verified, 7)?;
                sidecars::late(
                    c,
                    &[SeenSidecar {
                        path: b"/r/new/IMG_5001.jpg.xmp".to_vec(),
                        size: 2,
                        mtime_ns: 2,
                    }],
                )?;
                queue::pending_counts(c)?;
                queue::pending_work(c)?;
                queue::active_outside(c, &[b"/held".to_vec()])?;
                queue::next_retry_due(c, Some(5))?;
                let pulled: Vec<Change> = (9000..9040)
                    .map(|i| Change::Upsert(record(i, owner)))
                    .collect();
                mirror::apply_changes(c, &pulled, Policy::default(), 8)?;
                c.trace_v2(TraceEventCodes::empty(), None);
                Ok(live_statements(c))
            })
            .unwrap();
        let statements: BTreeSet<String> = SEEN
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.trim().to_owned())
            // Trigger bodies are traced as comments; their statements are planned with the
            // statement that fired them.
            .filter(|s| !s.starts_with("--") && !s.is_empty())
            .collect();
        assert!(statements.len() > 20, "traced too little: {statements:?}");
        // Each of them is still prepared for the next file, not parsed again per batch: the
        // connection's statement cache holds them all (transactions are not statements).
        let run = statements.iter().filter(|s| !is_transaction(s)).count();
        assert!(
            live.len() >= run,
            "{run} statements a file costs, only {} kept prepared (the cache holds {})",
            live.len(),
            crate::db::STATEMENT_CACHE
        );
        // And none was prepared again when it ran: a `LIMIT ?` does that at every bind in
        // SQLite 3.50 (docs/BENCHMARKS.md, "Session 7").
        let again: Vec<String> = live
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(sql, n)| {
                format!(
                    "{n}x: {}",
                    sql.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            })
            .collect();
        assert!(
            again.is_empty(),
            "statements prepared again as they ran:\n{}",
            again.join("\n")
        );
        let mut bad = db
            .call_blocking(|c| whole_table_reads(c, &statements))
            .unwrap();
        // `load_root` reads every file of a root once per walk: linear in the walk, not per
        // file, and the only statement allowed to read `files` whole.
        bad.retain(|b| !(b.contains("missing FROM files") && b.contains("WHERE root_id = ")));
        assert!(
            bad.is_empty(),
            "queries that read a whole table:\n{}",
            bad.join("\n")
        );
    }

    /// The steps of the plans of `statements` that read one of the [`BIG`] tables whole, or
    /// walk one of their indexes whole, each with its statement.
    fn whole_table_reads(
        c: &rusqlite::Connection,
        statements: &BTreeSet<String>,
    ) -> rusqlite::Result<Vec<String>> {
        let mut bad = Vec::new();
        for sql in statements {
            if is_transaction(sql) {
                continue;
            }
            for step in query_plan(c, sql)? {
                let whole = BIG.iter().any(|t| {
                    step == format!("SCAN {t}")
                        || step.starts_with(&format!("SCAN {t} "))
                        || (step.starts_with("SCAN ") && step.contains(&format!(" {t} ")))
                });
                // A scan through a table's alias (`SCAN f`, `SCAN j`) is the same.
                let alias = ["SCAN f", "SCAN j", "SCAN r", "SCAN s", "SCAN e"]
                    .iter()
                    .any(|a| step == *a || step.starts_with(&format!("{a} ")));
                if whole || alias {
                    bad.push(format!("{sql}\n    -> {step}"));
                }
            }
        }
        Ok(bad)
    }

    /// 3,000 files under `/r` in 50 folders, every one backed up: real tables for the
    /// planner.
    fn backed_up_catalogue(c: &mut rusqlite::Connection) -> rusqlite::Result<()> {
        let files: Vec<(Vec<u8>, FileStat)> = (0..3000u64)
            .map(|i| {
                let stat = FileStat {
                    dev: 1,
                    ino: i,
                    size: 100 + i,
                    mtime_ns: i as i64,
                    ctime_ns: i as i64,
                };
                (format!("/r/{:02}/IMG_{i}.jpg", i % 50).into_bytes(), stat)
            })
            .collect();
        catalogue::record_scan_batch(c, b"/r", &files, 1)?;
        c.execute_batch(
            "UPDATE jobs SET state = 'done', outcome = 'uploaded';
             UPDATE files SET checksum = randomblob(20), asset_id = 'a' || id;",
        )
    }

    /// What every `scan` runs once at its end for its summary (the backlog, the files held
    /// back by the server's trash or a deletion) finds its rows through an index too: on an
    /// unchanged re-scan of 100,000 backed-up files, the list of trash-only files walked
    /// the whole `files` path index (0.11 s of about 0.9 s) because `state = 'skipped'`
    /// alone does not let SQLite use `jobs_queue`, a partial index `WHERE state <> 'done'`
    /// (docs/BENCHMARKS.md, "Session 8").
    #[test]
    fn the_queries_a_scan_ends_with_find_their_rows_through_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
        let traced = db
            .call_blocking(|c| {
                backed_up_catalogue(c)?;
                c.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(seen_at_end));
                queue::backlog(c, 10)?;
                mirror::trash_only(c, 10)?;
                mirror::held_back(c)?;
                c.trace_v2(TraceEventCodes::empty(), None);
                let traced: BTreeSet<String> = AT_END
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| s.trim().to_owned())
                    .collect();
                Ok(traced)
            })
            .unwrap();
        assert!(traced.len() >= 5, "traced too little: {traced:?}");
        let bad = db.call_blocking(|c| whole_table_reads(c, &traced)).unwrap();
        assert!(
            bad.is_empty(),
            "queries that read a whole table:\n{}",
            bad.join("\n")
        );
    }

    /// The statements of the test above (its own list: tests run in parallel).
    static AT_END: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn seen_at_end(e: TraceEvent<'_>) {
        if let TraceEvent::Stmt(_, sql) = e {
            if let Ok(mut s) = AT_END.lock() {
                s.push(sql.to_owned());
            }
        }
    }
}
