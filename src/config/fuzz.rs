//! Property tests of the config loader (issue 13, fuzzing): arbitrary text, arbitrary values
//! for every key config.example.toml documents, and arbitrary `IMMISH_SYNC__*` variables.
//! Whatever comes in, loading never panics, and an error names where it is: a syntax error
//! its line, any other error its key.
//!
//! A short run by default (proptest's 256 cases); a longer one with
//! `PROPTEST_CASES=20000 cargo test --lib config::fuzz`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

const EXAMPLE: &str = include_str!("../../config.example.toml");

/// Every `(section, key)` the example documents, set or commented out (`# key = …`).
fn documented_keys() -> Vec<(String, String)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in EXAMPLE.lines() {
        let t = line.trim_start_matches('#').trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|s| s.strip_suffix("]]")) {
            section = name.to_owned();
        } else if let Some(name) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            if !name.contains(' ') && !name.contains('"') {
                section = name.to_owned();
            }
        } else if let Some((key, _)) = t.split_once(" = ") {
            if !section.is_empty()
                && !key.is_empty()
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !keys.contains(&(section.clone(), key.to_owned()))
            {
                keys.push((section.clone(), key.to_owned()));
            }
        }
    }
    keys
}

/// A private config file in a tempdir for the loader to stat (inline secrets need one).
struct File {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl File {
    fn new() -> File {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        File { _dir: dir, path }
    }
}

/// Loads `text` (with `env`) and checks what an error says: the file or the variable it
/// came from, and a line for a syntax error, a key for any other.
fn load_checked(text: &str, path: &Path, env: &[(String, String)]) -> Result<(), TestCaseError> {
    let Err(e) = load_from_str(text, path, env) else {
        return Ok(());
    };
    let shown = e.to_string();
    let origin_ok = |origin: &Origin| match origin {
        Origin::File { path: p, .. } => p == path,
        Origin::Env { var } => env.iter().any(|(k, _)| k == var),
    };
    match &e {
        ConfigError::Syntax { origin, message } => {
            prop_assert!(origin_ok(origin), "{shown}");
            prop_assert!(
                matches!(
                    origin,
                    Origin::File {
                        position: Some(_),
                        ..
                    }
                ),
                "a syntax error names its line: {shown}"
            );
            prop_assert!(!message.trim().is_empty(), "{shown}");
        }
        ConfigError::Invalid {
            origin,
            key,
            message,
        } => {
            prop_assert!(origin_ok(origin), "{shown}");
            prop_assert!(!key.trim().is_empty(), "an error names its key: {shown}");
            prop_assert!(!message.trim().is_empty(), "{shown}");
        }
        ConfigError::SecretFile { key, .. } | ConfigError::InsecureSecretFile { key, .. } => {
            prop_assert!(!key.is_empty(), "{shown}");
        }
        ConfigError::InsecurePermissions { key, .. } => prop_assert!(!key.is_empty(), "{shown}"),
        ConfigError::Read { .. } => prop_assert!(false, "the text was given: {shown}"),
    }
    prop_assert!(
        shown.len() < 16 * 1024,
        "a message stays readable: {} bytes",
        shown.len()
    );
    Ok(())
}

/// The base every value is tried in: a complete, valid config.
fn base(roots: &str) -> String {
    format!(
        "[server]\nurl = \"https://photos.example.com\"\napi_key = \"k\"\n\
         [state]\ndir = \"/var/lib/immish-sync\"\n{roots}"
    )
}

/// Text with TOML's troublemakers in it: quotes, brackets, escapes, newlines, non-ASCII.
fn tomlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "\\PC{0,6}",
        1 => prop::sample::select(vec![
            "[", "]", "[[", "]]", "=", "\"", "'", "'''", "\"\"\"", "\\", "\\u", "\\U0010FFFF",
            "\n", "\r\n", "#", ".", ",", "{", "}", "0x", "1e400", "nan", "inf", "-", "+",
            "1979-05-27T07:32:00Z", "roots", "server", "url", "=\"\"", "\u{feff}", "\0",
        ])
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// A TOML value of any type, with strings shaped like what the keys expect and like what
/// they do not.
fn value() -> impl Strategy<Value = toml::Value> {
    let string = prop_oneof![
        "\\PC{0,30}",
        "[0-9]{0,25}( ?)(ms|s|m|h|d|x|)",
        "[0-9.]{0,14} ?(b|k|kb|MB|MiB|gib|tb|)(/s|/h|)",
        "(https?://|ftp://|)[a-z0-9.:\\[\\]@%/-]{0,30}",
        "(/|~/|\\./|)[a-z*?\\[\\]{}!/.]{0,20}",
        prop::sample::select(vec![
            "",
            " ",
            "0",
            "-1",
            "off",
            "all",
            "trace",
            "info,immish_sync=debug",
            "=",
            "[",
            "**",
            "*.{jpg",
            "\u{0}",
            "1e400",
            "NaN",
        ])
        .prop_map(str::to_owned),
    ];
    let leaf = prop_oneof![
        string.prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(i64::MAX),
            Just(i64::MIN),
            0i64..100_000
        ]
        .prop_map(toml::Value::Integer),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3)
                .prop_map(|kv| toml::Value::Table(kv.into_iter().collect())),
        ]
    })
}

/// One `IMMISH_SYNC__…` variable: a documented key, a made-up one, or a malformed name.
fn env_var(keys: Vec<(String, String)>) -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        prop::sample::select(keys.clone()).prop_map(|(s, k)| {
            if s == "roots" {
                format!("IMMISH_SYNC__ROOTS__0__{}", k.to_uppercase())
            } else {
                format!("IMMISH_SYNC__{}__{}", s.to_uppercase(), k.to_uppercase())
            }
        }),
        (
            prop::sample::select(keys),
            prop_oneof![
                Just(0usize),
                Just(1),
                Just(2),
                Just(usize::MAX),
                any::<usize>()
            ]
        )
            .prop_map(|((_, k), i)| format!("IMMISH_SYNC__ROOTS__{i}__{}", k.to_uppercase())),
        "IMMISH_SYNC__[A-Za-z0-9_]{0,24}",
        "immish_sync__\\PC{0,12}",
    ];
    let value = prop_oneof!["\\PC{0,20}", value().prop_map(|v| v.to_string()),];
    (name, value)
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_errors_say_where(text in tomlish()) {
        let file = File::new();
        load_checked(&text, &file.path, &[])?;
    }

    #[test]
    fn damaged_example_never_panics(
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0usize..40, tomlish()), 1..4),
    ) {
        let file = File::new();
        let mut text = EXAMPLE.replace("api_key_file = \"/etc/immish-sync/api-key\"", "api_key = \"k\"");
        for (at, len, insert) in cuts {
            let mut start = at.index(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(start..end, &insert);
        }
        load_checked(&text, &file.path, &[])?;
    }

    #[test]
    fn any_value_for_any_documented_key(
        (section, key) in prop::sample::select(documented_keys()),
        value in value(),
        as_root in any::<bool>(),
    ) {
        let file = File::new();
        let line = format!("{key} = {value}\n");
        let text = if section == "roots" {
            base(&format!("[[roots]]\n{line}"))
        } else if section == "server" || section == "state" {
            // Replace rather than repeat a key the base sets.
            let b = base("[[roots]]\npath = \"/srv/photos\"\n");
            let kept: String = b
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} =")))
                .map(|l| format!("{l}\n"))
                .collect();
            kept.replacen(&format!("[{section}]\n"), &format!("[{section}]\n{line}"), 1)
        } else if as_root {
            base(&format!("[[roots]]\npath = \"/srv/photos\"\n[{section}]\n{line}"))
        } else {
            base(&format!("[{section}]\n{line}[[roots]]\npath = \"/srv/photos\"\n"))
        };
        load_checked(&text, &file.path, &[])?;
    }

    #[test]
    fn any_environment_never_panics(
        vars in prop::collection::vec(env_var(documented_keys()), 1..5),
    ) {
        let file = File::new();
        let text = base("[[roots]]\npath = \"/srv/photos\"\n");
        load_checked(&text, &file.path, &vars)?;
    }

    #[test]
    fn durations_and_rates_never_panic(s in prop_oneof!["\\PC{0,30}", "[0-9]{0,30}(ms|s|m|h|d| |)", "[0-9.e+-]{0,30} ?(kb|MiB|GiB|g|)(/s|)"]) {
        if let Ok(d) = raw::parse_duration(&s) {
            prop_assert!(s.trim().starts_with(|c: char| c.is_ascii_digit()), "{s:?} -> {d:?}");
        }
        if let Ok(r) = raw::parse_rate(&s) {
            prop_assert!(r >= 1, "{s:?} -> {r}");
        }
    }
}

#[test]
fn the_example_documents_keys_for_every_section() {
    let keys = documented_keys();
    for section in ["server", "state", "roots", "upload", "watch"] {
        assert!(
            keys.iter().any(|(s, _)| s == section),
            "no keys found for [{section}] in {keys:?}"
        );
    }
    assert!(keys.len() > 30, "{keys:?}");
}

/// Found by `any_environment_never_panics`: `IMMISH_SYNC__=` alone named an empty key
/// (`…: : empty name part`).
#[test]
fn a_variable_naming_nothing_says_so() {
    let file = File::new();
    let env = vec![("IMMISH_SYNC__".to_owned(), String::new())];
    let e = load_from_str(
        &base("[[roots]]\npath = \"/srv/photos\"\n"),
        &file.path,
        &env,
    )
    .expect_err("refused")
    .to_string();
    assert!(
        e.contains("IMMISH_SYNC__: (no section or key): empty name part"),
        "{e}"
    );
}
