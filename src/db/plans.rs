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
