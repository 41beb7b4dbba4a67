//! Two fields of a mirrored asset as the state database stores them (migration 0017,
//! docs/ARCHITECTURE.md, "State database"), each read back exactly as the server wrote it.
//!
//! - The file's date (`remote_assets.file_created_at`): the server writes it as
//!   `YYYY-MM-DDTHH:MM:SS.mmmZ` (24 bytes of text). A date in exactly that form, in years
//!   1678 to 2261, is kept as its unix milliseconds (an `INTEGER`, 6 bytes for today's dates)
//!   when those milliseconds written back in that form give the same text. Any other text
//!   (another form, an offset, a date out of that range) is kept as it is, a `TEXT` value.
//! - The visibility (`remote_assets.visibility`): one of the four the server names today
//!   (`timeline`, `archive`, `hidden`, `locked`) is kept as a small `INTEGER` (0 to 3: a 0 or
//!   a 1 costs no byte beyond its type's), any other as its text.
//!
//! An `INTEGER` never equals a `TEXT`, so a stored form is never taken for another.
//!
//! Owns: the conversions both ways ([`date_bind`], [`date_read`], [`visibility_bind`],
//! [`visibility_read`]) and their SQL twins for reading in SQL ([`date_text_sql`],
//! [`visibility_text_sql`]; migration 0017's `CASE`s are the twins of the binds). Must not:
//! hold any other query.

use rusqlite::types::{Value, ValueRef};

use crate::dates::format_timestamp;

/// The milliseconds a date is stored as, or `None` for a date kept as its text.
fn stored_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    let year: i64 = s.get(..4)?.parse().ok()?;
    if !(1678..=2261).contains(&year) || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms = super::mirror::server_time_ms(s)?;
    (format_timestamp(ms.checked_mul(1_000_000)?) == s).then_some(ms)
}

/// The value to bind for a date as the server wrote it (`None`: not said).
pub fn date_bind(s: Option<&str>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => match stored_ms(s) {
            Some(ms) => Value::Integer(ms),
            None => Value::Text(s.to_owned()),
        },
    }
}

/// The date column `i` of a row, as the server wrote it: stored as milliseconds or as text
/// (a read-only view of a database from before 0017 gives text).
pub fn date_read(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    match r.get_ref(i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(ms) => Ok(Some(text(ms))),
        ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            "file_created_at".into(),
            other.data_type(),
        )),
    }
}

/// The text of a date stored as milliseconds.
fn text(ms: i64) -> String {
    format_timestamp(ms.saturating_mul(1_000_000))
}

/// SQL for the text of the date column `col` (for an `ORDER BY` that must sort the dates as
/// their text, as before 0017).
pub fn date_text_sql(col: &str) -> String {
    format!(
        "CASE typeof({col}) WHEN 'integer' \
         THEN strftime('%Y-%m-%dT%H:%M:%fZ', {col} / 1000.0, 'unixepoch') ELSE {col} END"
    )
}

/// The visibilities the server names today, by their stored code (their index).
const VISIBILITIES: [&str; 4] = ["timeline", "archive", "hidden", "locked"];

/// The value to bind for a visibility as the server wrote it (`None`: not said).
pub fn visibility_bind(v: Option<&str>) -> Value {
    match v {
        None => Value::Null,
        Some(v) => match VISIBILITIES.iter().position(|k| *k == v) {
            Some(code) => Value::Integer(code as i64),
            None => Value::Text(v.to_owned()),
        },
    }
}

/// The visibility column `i` of a row, as the server wrote it.
pub fn visibility_read(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    match r.get_ref(i)? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(code) => usize::try_from(code)
            .ok()
            .and_then(|c| VISIBILITIES.get(c))
            .map(|v| Some(v.to_string()))
            .ok_or(rusqlite::Error::IntegralValueOutOfRange(i, code)),
        ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            "visibility".into(),
            other.data_type(),
        )),
    }
}

/// SQL for the text of the visibility column `col` (NULL when not said), for the queries
/// that compare, group or sort visibilities as their text.
pub fn visibility_text_sql(col: &str) -> String {
    let mut out = format!("CASE {col}");
    for (code, v) in VISIBILITIES.iter().enumerate() {
        out.push_str(&format!(" WHEN {code} THEN '{v}'"));
    }
    out.push_str(&format!(" ELSE {col} END"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    const DATES: [&str; 14] = [
        "2024-05-01T10:00:00.000Z",
        "2026-12-03T14:31:03.161Z",
        "1969-12-31T23:59:59.999Z",
        "1678-01-01T00:00:00.000Z",
        "2261-12-31T23:59:59.999Z",
        // Kept as text: another form, an offset, an impossible day or second, out of range.
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00.000+02:00",
        "2024-05-01T10:00:00.123456Z",
        "2024-02-30T00:00:00.000Z",
        "2024-05-01T10:00:60.000Z",
        "1677-12-31T23:59:59.999Z",
        "2262-01-01T00:00:00.000Z",
        "2024-05-01t10:00:00.000Z",
        "+024-05-01T10:00:00.000Z",
    ];

    /// Each date reads back as the server wrote it; the ones in the server's form are kept
    /// in milliseconds, the others as text.
    #[test]
    fn a_date_reads_back_as_it_was_written() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (d)").unwrap();
        for d in DATES {
            c.execute("INSERT INTO t VALUES (?1)", [date_bind(Some(d))])
                .unwrap();
        }
        c.execute("INSERT INTO t VALUES (?1)", [date_bind(None)])
            .unwrap();
        let rows: Vec<(Option<String>, String, Option<String>)> = c
            .prepare(&format!(
                "SELECT d, typeof(d), {} FROM t",
                date_text_sql("d")
            ))
            .unwrap()
            .query_map([], |r| Ok((date_read(r, 0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut want: Vec<Option<String>> = DATES.iter().map(|d| Some(d.to_string())).collect();
        want.push(None);
        assert_eq!(
            rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            want,
            "read"
        );
        assert_eq!(
            rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
            want,
            "date_text_sql"
        );
        let kinds: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(kinds[..5], ["integer"; 5]);
        assert_eq!(kinds[5..14], ["text"; 9]);
    }

    /// Migration 0017 stores each date and visibility as the binds do.
    #[test]
    fn the_migration_stores_a_date_and_a_visibility_as_the_code_binds_them() {
        let c = Connection::open_in_memory().unwrap();
        // The table as 0013 left it.
        c.execute_batch(
            "CREATE TABLE remote_assets (
                 id BLOB PRIMARY KEY, owner INTEGER NOT NULL, checksum BLOB,
                 original_file_name TEXT NOT NULL DEFAULT '', file_created_at TEXT,
                 updated_at INTEGER, visibility TEXT, is_trashed INTEGER NOT NULL DEFAULT 0,
                 device INTEGER, deleted_at INTEGER, synced_at INTEGER NOT NULL)",
        )
        .unwrap();
        let visibilities = [
            Some("timeline"),
            Some("archive"),
            Some("hidden"),
            Some("locked"),
            Some("Timeline"),
            Some("partner"),
            Some(""),
            None,
        ];
        for (i, d) in DATES.iter().enumerate() {
            let v = visibilities[i % visibilities.len()];
            c.execute(
                "INSERT INTO remote_assets(id, owner, file_created_at, visibility, synced_at)
                 VALUES (?1, 1, ?2, ?3, 0)",
                rusqlite::params![i as i64, d, v],
            )
            .unwrap();
        }
        c.execute_batch(include_str!("../../migrations/0017_mirror_fields.sql"))
            .unwrap();
        let sql = format!(
            "SELECT file_created_at, visibility, {} FROM remote_assets ORDER BY id",
            visibility_text_sql("visibility")
        );
        let stored: Vec<(Value, Value, Option<String>, Option<String>)> = c
            .prepare(&sql)
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, visibility_read(r, 1)?, r.get(2)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let want: Vec<(Value, Value, Option<String>, Option<String>)> = DATES
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let v = visibilities[i % visibilities.len()];
                let text = v.map(str::to_owned);
                (date_bind(Some(d)), visibility_bind(v), text.clone(), text)
            })
            .collect();
        assert_eq!(stored, want);
        assert_eq!(stored[0].1, Value::Integer(0), "timeline");
        assert_eq!(stored[5].1, Value::Text("partner".into()));
    }
}
