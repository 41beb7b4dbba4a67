//! Asset ids as the state database stores them (migration 0013, docs/ARCHITECTURE.md,
//! "State database"): the server's id of an asset is a UUID in its canonical text form
//! (`6f1c9a54-0000-4000-8000-000000000001`, 36 bytes), kept as its 16 bytes. Any other id
//! (a UUID in upper case, which the client's check of answers lets through, or an id an
//! older version stored before that check) is kept as its text, a SQLite `TEXT` value: a `TEXT` value never equals a `BLOB` one, so the two
//! forms cannot be mistaken for each other, and every id reads back exactly as the server
//! wrote it.
//!
//! Owns: the conversion both ways ([`IdRef`] to bind an id, [`AssetId`]'s `FromSql` and
//! [`id_text`] to read one) and its SQL twin for migrations and read-only views of older
//! databases ([`stored_id_sql`]). Must not: hold any other query; every query that binds or
//! reads an asset id goes through these.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::ToSql;

use crate::model::AssetId;

/// The bytes of a UUID in canonical lower-case text (`8-4-4-4-12` hex digits), or `None`
/// for any other text (which is stored as it is).
pub(crate) fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
        nibbles += 1;
    }
    Some(out)
}

/// The canonical lower-case text of a UUID's 16 bytes.
fn uuid_text(b: &[u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[(byte >> 4) as usize];
        out[at + 1] = HEX[(byte & 0xf) as usize];
        at += 2;
    }
    out
}

/// An asset id to bind as a query parameter, in its stored form.
#[derive(Clone, Copy, Debug)]
pub struct IdRef<'a>(pub &'a str);

/// The stored form of the id `s`: a UUID's 16 bytes, or the text itself.
fn stored(s: &str) -> ToSqlOutput<'_> {
    match uuid_bytes(s) {
        Some(b) => ToSqlOutput::Owned(rusqlite::types::Value::Blob(b.to_vec())),
        None => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
    }
}

impl ToSql for IdRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(stored(self.0))
    }
}

impl ToSql for AssetId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(stored(&self.0))
    }
}

/// Calls `f` with the text of a stored asset id, borrowed (no allocation for a UUID, which
/// is decoded on the stack). A blob that is not 16 bytes, or text that is not UTF-8, is an
/// error naming what was found.
pub fn with_id_text<T>(v: ValueRef<'_>, f: impl FnOnce(&str) -> T) -> FromSqlResult<T> {
    match v {
        ValueRef::Blob(b) => {
            let b: &[u8; 16] = b.try_into().map_err(|_| FromSqlError::InvalidBlobSize {
                expected_size: 16,
                blob_size: b.len(),
            })?;
            let text = uuid_text(b);
            // Hex digits and dashes only: always UTF-8.
            let s = std::str::from_utf8(&text).map_err(|e| FromSqlError::Other(Box::new(e)))?;
            Ok(f(s))
        }
        ValueRef::Text(_) => Ok(f(v.as_str()?)),
        _ => Err(FromSqlError::InvalidType),
    }
}

/// The text of a stored asset id, owned.
pub fn id_text(v: ValueRef<'_>) -> FromSqlResult<String> {
    with_id_text(v, str::to_owned)
}

impl FromSql for AssetId {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        id_text(v).map(AssetId)
    }
}

/// Reads column `i` of a row as an asset id's text (`None` for NULL).
pub fn opt_id(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(r.get::<_, Option<AssetId>>(i)?.map(|a| a.0))
}

/// Reads column `i` of a row as an asset id's text.
pub fn id(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(r.get::<_, AssetId>(i)?.0)
}

/// The SQL expression that turns the asset id text in `col` into its stored form, exactly as
/// [`IdRef`] does: what migration 0013 wrote for every old row, and what the read-only views
/// of an older database show (its ids are still text).
pub fn stored_id_sql(col: &str) -> String {
    let h = "[0-9a-f]";
    let pattern = format!(
        "{}-{}-{}-{}-{}",
        h.repeat(8),
        h.repeat(4),
        h.repeat(4),
        h.repeat(4),
        h.repeat(12)
    );
    format!("(CASE WHEN {col} GLOB '{pattern}' THEN unhex(replace({col}, '-', '')) ELSE {col} END)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// A UUID is kept as its 16 bytes, anything else as its text; both read back as the
    /// server wrote them, and the SQL of the migration agrees with the Rust conversion.
    #[test]
    fn an_id_is_stored_as_16_bytes_when_a_uuid_and_as_its_text_otherwise() {
        let c = Connection::open_in_memory().unwrap();
        let cases = [
            ("6f1c9a54-0000-4000-8000-00000000000a", Some(16)),
            ("019b2d4e-aaaa-7bbb-8ccc-0123456789ef", Some(16)),
            // Not canonical: kept as text, so that it reads back the same.
            ("6F1C9A54-0000-4000-8000-00000000000A", None),
            ("6f1c9a5400004000800000000000000a", None),
            ("{6f1c9a54-0000-4000-8000-00000000000a}", None),
            ("6f1c9a54-0000-4000-8000-00000000000g", None),
            ("6f1c9a54-0000-4000-8000_00000000000a", None),
            // 16 bytes of text: a TEXT value, never taken for a UUID's blob.
            ("asset-0123456789", None),
            ("asset-1a2b3c4d", None),
            ("", None),
            ("é-not-ascii", None),
        ];
        for (text, blob) in cases {
            let (kind, len, back, same_as_sql): (String, i64, AssetId, bool) = c
                .query_row(
                    &format!(
                        "SELECT typeof(?1), length(CAST(?1 AS BLOB)), ?1, ?1 IS {}",
                        stored_id_sql("?2")
                    ),
                    rusqlite::params![IdRef(text), text],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .unwrap();
            match blob {
                Some(n) => assert_eq!((kind.as_str(), len), ("blob", n), "{text}"),
                None => assert_eq!(kind, "text", "{text}"),
            }
            assert_eq!(back.0, text);
            assert!(
                same_as_sql,
                "{text}: the migration's SQL stores it otherwise"
            );
        }
        let bad: rusqlite::Result<AssetId> = c.query_row("SELECT X'0102'", [], |r| r.get(0));
        let err = bad.unwrap_err().to_string();
        assert!(err.contains('2') && err.contains("16"), "{err}");
    }
}
