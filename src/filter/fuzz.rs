//! Property tests of the filters (issue 13, fuzzing): arbitrary `.immishignore` text,
//! arbitrary patterns, and paths of arbitrary bytes (names that are not UTF-8, dots,
//! backslashes, glob characters in names). Nothing panics, a bad line is reported by its
//! number, and the gitignore rules hold whatever the bytes of the other path components.
//!
//! A short run by default (proptest's 256 cases); a longer one with
//! `PROPTEST_CASES=20000 cargo test --lib filter::fuzz`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::model::MediaTypes;

/// One path component: any bytes but `/` and NUL, often not UTF-8.
fn component() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(
            any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
            1..12
        ),
        "[a-zA-Z0-9_.*?\\[\\]{}!#\\\\ -]{1,10}".prop_map(String::into_bytes),
        prop::sample::select(vec![
            ".",
            "..",
            ".hidden",
            "@eaDir",
            "IMG_1.jpg",
            "a.part",
            "\u{e9}t\u{e9}"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        Just(vec![0xFF, 0xFE, b'.', b'j', b'p', b'g']),
    ]
}

fn rel_path() -> impl Strategy<Value = PathBuf> {
    prop::collection::vec(component(), 1..5).prop_map(|parts| {
        let mut p = PathBuf::new();
        for c in parts {
            p.push(OsStr::from_bytes(&c));
        }
        p
    })
}

/// gitignore-ish lines: patterns, comments, negations, escapes, broken globs.
fn ignore_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "\\PC{0,20}",
        "(!|\\\\!|\\\\#|#|/|)[a-z*?\\[\\]{},/\\\\]{0,12}(/|\\\\ | |\r|)",
        Just("[".to_owned()),
        Just("{a,b".to_owned()),
        Just("a[b-".to_owned()),
        Just("**/".to_owned()),
    ];
    prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,10}"
}

proptest! {
    #[test]
    fn any_ignore_file_is_read_and_bad_lines_are_numbered(text in ignore_text(), path in rel_path(), dir in any::<bool>()) {
        let (rules, bad) = Rules::parse(&text);
        let lines = text.lines().count();
        for b in &bad {
            let n: usize = b
                .strip_prefix("line ")
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| TestCaseError::fail(format!("no line number in {b:?}")))?;
            prop_assert!(n >= 1 && n <= lines, "{b:?} of {lines} lines");
        }
        if let Some((i, _)) = rules.decide(&path, dir) {
            prop_assert!(i < rules.len());
            let _ = rules.pattern(i);
        }
    }

    #[test]
    fn a_bad_pattern_is_named(patterns in prop::collection::vec("[a-z*?\\[\\]{},!/\\\\]{0,8}", 1..5)) {
        if let Err(e) = Rules::new(&patterns) {
            prop_assert!(patterns.iter().any(|p| e.contains(&format!("{p:?}"))), "{e}");
        }
    }

    #[test]
    fn a_name_matches_at_any_depth_whatever_the_bytes_around_it(
        name in name(), above in rel_path(), dir in any::<bool>(),
    ) {
        let rules = Rules::new(std::slice::from_ref(&name)).expect("a plain name compiles");
        let path = above.join(&name);
        prop_assert_eq!(rules.decide(&path, dir), Some((0, true)), "{:?}", path);
        let longer = above.join(format!("{name}x"));
        prop_assert_eq!(rules.decide(&longer, dir), None, "{:?}", longer);
        // Re-included by a later negation, for this name only.
        let both = Rules::new(&["*".to_owned(), format!("!{name}")]).expect("compiles");
        prop_assert_eq!(both.decide(&path, dir), Some((1, false)), "{:?}", path);
    }

    #[test]
    fn an_anchored_pattern_matches_only_at_the_top(name in name(), first in component()) {
        let rules = Rules::new(&[format!("/{name}")]).expect("compiles");
        prop_assert_eq!(rules.decide(Path::new(&name), true), Some((0, true)));
        let first = OsStr::from_bytes(&first);
        if first != "." {
            let deeper = Path::new(first).join(&name);
            prop_assert_eq!(rules.decide(&deeper, true), None, "{:?}", deeper);
        }
    }

    #[test]
    fn any_path_is_decided_without_panicking(
        rel in rel_path(),
        exclude in prop::collection::vec("[a-z*?/.!]{1,8}", 0..3),
        include in prop::collection::vec("(\\*\\*/|)\\*\\.(jpg|JPG|heic)", 0..2),
        hidden in any::<bool>(), junk in any::<bool>(),
    ) {
        let root = Path::new("/photos/root");
        let media = MediaTypes::builtin();
        let Ok(filter) = Filter::new(&FilterConfig {
            root, hidden, skip_junk: junk, junk_extra: &[], include: &include, exclude: &exclude,
        }) else {
            return Ok(());
        };
        let path = root.join(&rel);
        for entry in [Entry::Dir, Entry::File(&media), Entry::Other] {
            let _ = filter.skip(&path, entry, &[]);
        }
        let _ = filter.may_enter(&path);
        prop_assert!(!filter.may_enter(&Path::new("/elsewhere").join(&rel)));
        let _ = is_temp_name(path.as_os_str().as_bytes());
    }
}
