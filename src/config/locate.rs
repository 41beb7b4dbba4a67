//! Locating errors: from toml's byte spans to `file:line:column` and the dotted key a user
//! would write (`roots[1].path`), and serde's wording rewritten for people who write TOML
//! (with a did-you-mean for typos).
//!
//! Owns: [`Position`], [`Origin`], the key paths ([`Seg`]) the other parts name keys with,
//! and the parse tree of the file ([`Located`]). Must not: decide whether a value is valid;
//! it only says where a value is and how to word what is wrong with it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::ConfigError;

/// A 1-based line and column (in characters) in the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Where an offending value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The config file, at the key's position when it could be found.
    File {
        path: PathBuf,
        position: Option<Position>,
    },
    /// An environment variable (`IMMISH_SYNC__…`, or `CREDENTIALS_DIRECTORY`).
    Env { var: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                position: Some(p),
            } => write!(f, "{}:{}:{}", path.display(), p.line, p.column),
            Origin::File {
                path,
                position: None,
            } => write!(f, "{}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
        }
    }
}

/// toml's message, with the key named when toml only says "duplicate key".
pub(super) fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message();
    match e.span().and_then(|s| text.get(s)) {
        Some(key) if message == "duplicate key" && !key.is_empty() => format!(
            "duplicate key `{key}`; each key and each [section] may appear once (a list of \
             folders is written as several [[roots]] tables)"
        ),
        _ => message.to_owned(),
    }
}

/// One step of a key path: a table key or an index into an array (of `[[roots]]`).
#[derive(Clone, Copy, Debug)]
pub(super) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `roots[1].path`, the way a user would name the key.
pub(super) fn key_name(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn position_of(text: &str, offset: usize) -> Position {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

pub(super) fn file_origin(path: &Path, text: &str, span: Option<Range<usize>>) -> Origin {
    Origin::File {
        path: path.to_owned(),
        position: span.map(|s| position_of(text, s.start)),
    }
}

fn span_contains(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// The config file: its path, its text and its parse tree (with spans).
pub(super) struct Located<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) doc: &'a DeTable<'a>,
}

impl Located<'_> {
    /// Turns an error from deserialising the file's text into one naming the key at the
    /// error's position.
    pub(super) fn deserialize_error(&self, e: &toml::de::Error) -> ConfigError {
        let key = e
            .span()
            .and_then(|s| key_at(self.doc, s.start, ""))
            .unwrap_or_else(|| "(top level)".to_owned());
        ConfigError::Invalid {
            origin: file_origin(self.path, self.text, e.span()),
            message: explain(&key, e.message(), None),
            key,
        }
    }

    /// The span of the key at `path`, or of the deepest table on the way to it that exists
    /// (so a missing key points at its section's header).
    pub(super) fn locate(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        self.walk(path).0
    }

    /// Whether the file itself (not the environment) sets the key at `path`.
    pub(super) fn has(&self, path: &[Seg<'_>]) -> bool {
        self.walk(path).1
    }

    /// The deepest span found along `path`, and whether all of `path` was found.
    fn walk(&self, path: &[Seg<'_>]) -> (Option<Range<usize>>, bool) {
        let mut table = self.doc;
        let mut found = None;
        let mut i = 0;
        while i < path.len() {
            let Seg::Key(name) = path[i] else {
                return (found, false);
            };
            let Some((key, mut value)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
                return (found, false);
            };
            found = Some(key.span());
            if let Some(Seg::Index(n)) = path.get(i + 1) {
                let Some(item) = value.get_ref().as_array().and_then(|a| a.get(*n)) else {
                    return (found, false);
                };
                found = Some(item.span());
                value = item;
                i += 1;
            }
            i += 1;
            if i == path.len() {
                return (found, true);
            }
            match value.get_ref().as_table() {
                Some(t) => table = t,
                None => return (found, false),
            }
        }
        (found, path.is_empty())
    }
}

/// The dotted key whose name or value covers `offset`.
fn key_at(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let name = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if span_contains(&key.span(), offset) {
            return Some(name);
        }
        // A table's own span is only its header; its keys may be anywhere below, so look
        // inside before deciding.
        match value.get_ref() {
            DeValue::Table(t) => {
                if let Some(found) = key_at(t, offset, &name) {
                    return Some(found);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_name = format!("{name}[{i}]");
                    if let DeValue::Table(t) = item.get_ref() {
                        if let Some(found) = key_at(t, offset, &item_name) {
                            return Some(found);
                        }
                    }
                    if span_contains(&item.span(), offset) {
                        return Some(item_name);
                    }
                }
            }
            _ => {}
        }
        if span_contains(&value.span(), offset) {
            return Some(name);
        }
    }
    None
}

const SECTIONS: [&str; 8] = [
    "server", "state", "upload", "hash", "scan", "watch", "mirror", "log",
];

/// Rewrites serde's wording for people who write TOML, and adds the likely fix.
/// `env_var` is set when the value came from the environment.
pub(super) fn explain(key: &str, message: &str, env_var: Option<&str>) -> String {
    if message.starts_with("invalid type") {
        // `[[upload]]` reports as `upload[0]`.
        let section = key.split('[').next().unwrap_or(key);
        if SECTIONS.contains(&section) {
            return format!("must be a table, written [{section}] on a line of its own");
        }
        if key == "roots" {
            return "must be a list of tables, each written [[roots]] (double brackets)".to_owned();
        }
    }
    let mut out = message.to_owned();
    for (from, to) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected usize", "expected an integer"),
        ("expected u32", "expected an integer"),
        ("expected a sequence", "expected an array"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
    ] {
        out = out.replace(from, to);
    }
    if let Some(i) = out.find("expected struct ") {
        out.truncate(i);
        out.push_str("expected a table");
    }
    if let Some(better) = did_you_mean(message) {
        out.push_str(&format!("; did you mean `{better}`?"));
    }
    if env_var.is_some() && out.contains("expected an array") {
        out.push_str("; write the value in TOML syntax, e.g. [\"*.tmp\", \"*.part\"]");
    }
    out
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), the
/// expected name closest to the one written, if it is close enough to be a typo.
fn did_you_mean(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let end = rest.find('`')?;
    let written = rest[..end].to_lowercase();
    let (distance, best) = rest[end + 1..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(&written, candidate), candidate))
        .min()?;
    (distance <= (written.chars().count() / 3).max(1)).then_some(best)
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j] = distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
