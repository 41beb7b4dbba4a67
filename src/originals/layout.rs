//! The `layout` template of a pull folder: where below the folder each asset's original
//! goes, and the name used when that place is taken.
//!
//! Owns: parsing and checking the template once (config time), rendering it for one asset,
//! and the collision name. Must not: touch the file system or the database.

use std::path::PathBuf;

/// The placeholders a layout may use, for messages and docs.
pub const PLACEHOLDERS: &str = "{year}, {month}, {day}, {filename}, {stem}, {ext}, {id}";

/// The top-level folder of a pull folder that holds copies of assets deleted on the server
/// (`on_server_delete = "move"`); a rendered path never starts with it.
pub const DELETED_DIR: &str = ".deleted";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Year,
    Month,
    Day,
    Filename,
    Stem,
    Ext,
    Id,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A checked template: folders separated by `/`, the last one the file's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    text: String,
    segments: Vec<Vec<Piece>>,
}

/// What a layout is rendered from: the mirror's record of the asset.
#[derive(Clone, Copy, Debug)]
pub struct Placed<'a> {
    pub id: &'a str,
    /// The name the uploading client gave (`originalFileName`).
    pub file_name: &'a str,
    /// `fileCreatedAt` as the server wrote it (ISO 8601, UTC).
    pub created_at: Option<&'a str>,
}

impl Layout {
    /// Parses `text`; the error says what is wrong in words for the config message.
    pub fn parse(text: &str) -> Result<Layout, String> {
        if text.trim().is_empty() {
            return Err(format!(
                "empty; write a template such as \"{{year}}/{{month}}/{{filename}}\" (placeholders: {PLACEHOLDERS})"
            ));
        }
        if text.starts_with('/') {
            return Err(format!(
                "{text:?} must be relative to the pull folder (no leading /)"
            ));
        }
        let mut segments = Vec::new();
        for seg in text.split('/') {
            if seg.is_empty() {
                return Err(format!(
                    "{text:?} has an empty folder name (\"//\" or a trailing /)"
                ));
            }
            if seg == "." || seg == ".." {
                return Err(format!(
                    "{text:?}: \"{seg}\" is not allowed as a folder name"
                ));
            }
            segments.push(parse_segment(text, seg)?);
        }
        let last = segments.last().map(Vec::as_slice).unwrap_or_default();
        let names_file = last
            .iter()
            .any(|p| matches!(p, Piece::Field(Field::Filename | Field::Stem | Field::Id)));
        if !names_file {
            return Err(format!(
                "{text:?}: the last part (the file's name) must use {{filename}}, {{stem}} or \
                 {{id}}, or every asset of a folder would get the same name"
            ));
        }
        Ok(Layout {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The relative path of `asset`. Every value is made safe for one path component
    /// (no `/`, no NUL, not `.` or `..`), and a first folder that would be [`DELETED_DIR`]
    /// is prefixed with `_`.
    pub fn render(&self, asset: &Placed<'_>) -> PathBuf {
        let name = safe(asset.file_name, asset.id);
        let (stem, ext) = split_name(&name);
        let date = Date::of(asset.created_at);
        let mut out = PathBuf::new();
        for (i, seg) in self.segments.iter().enumerate() {
            let mut s = String::new();
            for p in seg {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Field(Field::Year) => s.push_str(&date.year),
                    Piece::Field(Field::Month) => s.push_str(&date.month),
                    Piece::Field(Field::Day) => s.push_str(&date.day),
                    Piece::Field(Field::Filename) => s.push_str(&name),
                    Piece::Field(Field::Stem) => s.push_str(stem),
                    Piece::Field(Field::Ext) => s.push_str(ext),
                    Piece::Field(Field::Id) => s.push_str(&safe(asset.id, "id")),
                }
            }
            let mut s = safe(&s, "_");
            if i == 0 && s == DELETED_DIR {
                s.insert(0, '_');
            }
            out.push(s);
        }
        out
    }
}

/// The name used when `rel` is taken by another asset: the asset id's first 8 characters
/// (or, `long`, all of it) before the extension, `IMG_0001~1a2b3c4d.jpg`. Stable: the same
/// asset always gets the same name.
pub fn collision_name(rel: &std::path::Path, id: &str, long: bool) -> PathBuf {
    let file = rel
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = split_name(&file);
    let tag: String = if long {
        safe(id, "id")
    } else {
        safe(id, "id").chars().take(8).collect()
    };
    let name = if ext.is_empty() {
        format!("{stem}~{tag}")
    } else {
        format!("{stem}~{tag}.{ext}")
    };
    rel.with_file_name(name)
}

fn parse_segment(text: &str, seg: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = seg;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                pieces.push(Piece::Text(rest.to_owned()));
                break;
            }
            Some(at) if rest.as_bytes()[at] == b'}' => {
                return Err(format!("{text:?} has a \"}}\" without its \"{{\""));
            }
            Some(at) => {
                if at > 0 {
                    pieces.push(Piece::Text(rest[..at].to_owned()));
                }
                let after = &rest[at + 1..];
                let Some(end) = after.find('}') else {
                    return Err(format!("{text:?} has a \"{{\" without its \"}}\""));
                };
                let field = match &after[..end] {
                    "year" => Field::Year,
                    "month" => Field::Month,
                    "day" => Field::Day,
                    "filename" => Field::Filename,
                    "stem" => Field::Stem,
                    "ext" => Field::Ext,
                    "id" => Field::Id,
                    other => {
                        return Err(format!(
                            "{text:?}: unknown placeholder {{{other}}}; use {PLACEHOLDERS}"
                        ))
                    }
                };
                pieces.push(Piece::Field(field));
                rest = &after[end + 1..];
            }
        }
    }
    Ok(pieces)
}

/// `value` as one path component: `/` and NUL become `_`; empty, `.` and `..` become
/// `fallback`.
fn safe(value: &str, fallback: &str) -> String {
    let s: String = value
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match s.trim() {
        "" | "." | ".." => fallback.to_owned(),
        _ => s,
    }
}

/// `IMG_1.HEIC` → (`IMG_1`, `HEIC`); a name without a dot (or only a leading one) has no
/// extension.
fn split_name(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(at) if at > 0 => (&name[..at], &name[at + 1..]),
        _ => (name, ""),
    }
}

struct Date {
    year: String,
    month: String,
    day: String,
}

impl Date {
    /// The calendar date of `fileCreatedAt` (`YYYY-MM-DD…`); `unknown` for each part when
    /// the server gave none or something else.
    fn of(created_at: Option<&str>) -> Date {
        let unknown = || Date {
            year: "unknown".into(),
            month: "unknown".into(),
            day: "unknown".into(),
        };
        let Some(s) = created_at else {
            return unknown();
        };
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| {
            b.get(r.clone())
                .filter(|d| d.iter().all(u8::is_ascii_digit))
                .map(|_| s[r].to_owned())
        };
        match (
            digits(0..4),
            b.get(4),
            digits(5..7),
            b.get(7),
            digits(8..10),
        ) {
            (Some(year), Some(b'-'), Some(month), Some(b'-'), Some(day)) => {
                Date { year, month, day }
            }
            _ => unknown(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn at(name: &str, date: Option<&str>) -> Placed<'static> {
        Placed {
            id: "1a2b3c4d-0000-4000-8000-000000000001",
            file_name: Box::leak(name.to_owned().into_boxed_str()),
            created_at: date.map(|d| &*Box::leak(d.to_owned().into_boxed_str())),
        }
    }

    #[test]
    fn the_default_layout_files_by_year_and_month() {
        let l = Layout::parse("{year}/{month}/{filename}").unwrap();
        let p = l.render(&at("IMG_1.HEIC", Some("2024-03-09T10:00:00.000Z")));
        assert_eq!(p, Path::new("2024/03/IMG_1.HEIC"));
        let p = l.render(&at("IMG_1.HEIC", None));
        assert_eq!(p, Path::new("unknown/unknown/IMG_1.HEIC"));
    }

    #[test]
    fn values_cannot_leave_the_folder_or_hide_in_deleted() {
        let l = Layout::parse("{filename}").unwrap();
        assert_eq!(
            l.render(&at("../../etc/passwd", None)),
            Path::new(".._.._etc_passwd")
        );
        assert_eq!(
            l.render(&at("..", None)),
            Path::new("1a2b3c4d-0000-4000-8000-000000000001")
        );
        assert_eq!(l.render(&at(".deleted", None)), Path::new("_.deleted"));
        let l = Layout::parse("{stem}-{day}.{ext}").unwrap();
        assert_eq!(
            l.render(&at("a.b.jpg", Some("2020-01-02"))),
            Path::new("a.b-02.jpg")
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (t, want) in [
            ("", "empty"),
            ("/x/{filename}", "relative"),
            ("{year}//{filename}", "empty folder"),
            ("{year}/../{filename}", "not allowed"),
            ("{year}/{month}", "last part"),
            ("{year}/{nope}/{filename}", "unknown placeholder {nope}"),
            ("{year/{filename}", "without its"),
            ("year}/{filename}", "without its"),
        ] {
            let e = Layout::parse(t).expect_err(t);
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn a_collision_name_carries_the_asset_id() {
        let rel = Path::new("2024/03/IMG_1.HEIC");
        let id = "1a2b3c4d-0000-4000-8000-000000000001";
        assert_eq!(
            collision_name(rel, id, false),
            Path::new("2024/03/IMG_1~1a2b3c4d.HEIC")
        );
        assert_eq!(
            collision_name(Path::new("README"), id, true),
            Path::new(&format!("README~{id}"))
        );
    }
}
