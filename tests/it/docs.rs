//! The project's docs as code cites them: every `docs/<NAME>.md#<anchor>` written anywhere in
//! the source tree, and every link between the docs themselves, must name a document that
//! exists and a heading it has. Anchors are GitHub's heading slugs, so a renamed heading
//! fails here instead of leaving comments that point nowhere.
//!
//! Reads files only; it builds nothing and starts no server.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The folders whose files may cite the docs.
const CITING: [&str; 6] = ["src", "tests", "benches", "migrations", "packaging", "docs"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// GitHub's slug of a heading: lower case, punctuation other than `-` and `_` dropped, each
/// space a `-`. A repeated heading gets `-1`, `-2`, … in the order it appears.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(text) = line.strip_prefix('#') else {
            continue;
        };
        if in_code {
            continue;
        }
        let text = text.trim_start_matches('#');
        if !text.starts_with(' ') {
            continue;
        }
        let slug: String = text
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The anchor-ish tail of a citation: the characters a slug can hold.
fn slug_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches('-')
}

/// `(doc, anchor)` for every citation of a doc under `docs/` in `text`; `None` when it names the
/// document only.
fn citations(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("docs/") {
        let after = &rest[i + "docs/".len()..];
        rest = after;
        let Some(dot) = after.find(".md") else {
            continue;
        };
        let name = &after[..dot];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '-') {
            continue;
        }
        let tail = &after[dot + ".md".len()..];
        let anchor = tail
            .strip_prefix('#')
            .map(slug_at)
            .filter(|a| !a.is_empty());
        out.push((format!("{name}.md"), anchor.map(str::to_owned)));
    }
    out
}

/// `(doc, anchor)` for every markdown link inside a doc: `](#x)` (this doc) and
/// `](<another doc>#x)` or `](<another doc>)`.
fn doc_links(this: &str, text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("](") {
        let target = &text[i + 2..];
        let Some(end) = target.find(')') else {
            continue;
        };
        let target = &target[..end];
        if target.contains("://") {
            continue;
        }
        let (file, anchor) = match target.split_once('#') {
            Some((f, a)) => (f, Some(a.to_owned())),
            None => (target, None),
        };
        let file = if file.is_empty() { this } else { file };
        if !file.ends_with(".md") || file.contains('/') {
            continue;
        }
        out.push((file.to_owned(), anchor));
    }
    out
}

#[test]
fn docs_references_resolve() {
    let root = root();
    let mut docs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in fs::read_dir(root.join("docs")).expect("docs/ exists") {
        let path = entry.expect("docs/ is readable").path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let text = fs::read_to_string(&path).expect("a doc is UTF-8");
            docs.insert(name, anchors(&text));
        }
    }
    for doc in ["ARCHITECTURE", "RELIABILITY", "SERVER-API"] {
        assert!(
            docs.contains_key(&format!("{doc}.md")),
            "docs/{doc} is missing"
        );
    }

    let mut files = Vec::new();
    for dir in CITING {
        files_under(&root.join(dir), &mut files);
    }
    let mut bad = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Ok(text) = fs::read_to_string(file) else {
            continue; // binary fixtures cite nothing
        };
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let mut refs = citations(&text);
        if let Some(name) = rel.strip_prefix("docs/") {
            refs.extend(doc_links(name, &text));
        }
        for (doc, anchor) in refs {
            checked += 1;
            match (docs.get(&doc), &anchor) {
                (None, _) => bad.push(format!("{rel}: docs/{doc} does not exist")),
                (Some(heads), Some(a)) if !heads.contains(a) => {
                    bad.push(format!("{rel}: docs/{doc}#{a} names no heading"))
                }
                _ => {}
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} citations found: is the scan looking in the right place?"
    );
    assert!(
        bad.is_empty(),
        "{} broken doc references:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn slugs_follow_github() {
    let a = anchors(concat!(
        "# Top\n## 5. Upload\n### 401: the credentials are revoked\n",
        "## Dates\n## Dates\n```\n# not a heading\n```\n",
    ));
    let want: BTreeSet<String> = [
        "top",
        "5-upload",
        "401-the-credentials-are-revoked",
        "dates",
        "dates-1",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(a, want);
}
