//! The config tests: loading real files in a tempdir, with the environment passed in.

use super::raw::{
    RawAlerts, RawConfig, RawHash, RawLog, RawMetrics, RawMirror, RawRoot, RawScan, RawServer,
    RawUpload, RawWatch,
};
use super::*;
use std::os::unix::fs::PermissionsExt;

/// The minimal config of issue 3, verbatim.
const MINIMAL: &str = r#"[server]
url = "http://127.0.0.1:2283"     # base URL; /api is discovered
api_key = "…"                      # or api_key_file = "…", or email = "…" + password_file = "…"
[state]
dir = "/var/lib/immish-sync"
[[roots]]
path = "/srv/photos"
"#;

/// A config with no secret in it, to which tests add what they exercise.
const BASE: &str = r#"[server]
url = "https://photos.example.com"

[[roots]]
path = "/srv/photos"
"#;

const EXAMPLE: &str = include_str!("../../config.example.toml");

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().expect("tempdir"))
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    /// Writes `text` as a private config file and loads it with `env`.
    fn load(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let path = self.write("config.toml", text, 0o600);
        load_from_str(text, &path, &vars(env))
    }

    fn error(&self, text: &str, env: &[(&str, &str)]) -> String {
        match self.load(text, env) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => printed_once(e),
        }
    }

    fn config_path(&self) -> String {
        self.0.path().join("config.toml").display().to_string()
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn api_key(config: &Config) -> &str {
    match &config.server.credentials {
        Credentials::ApiKey(key) => key.expose(),
        other => panic!("expected an API key, got {other:?}"),
    }
}

/// The error's text, checked to print the same with its whole chain (`{:#}`, as `main` or
/// anyhow would show it) as alone: a cause is in the message or in `source()`, not both.
fn printed_once(e: ConfigError) -> String {
    let alone = e.to_string();
    let chain = format!("{:#}", anyhow::Error::new(e));
    assert_eq!(chain, alone, "the cause is printed twice");
    alone
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
    }
}

#[test]
fn minimal_config_from_the_issue_parses_with_all_defaults() {
    let dir = Dir::new();
    let c = dir.load(MINIMAL, &[]).expect("minimal config");
    assert_eq!(c.server.url.as_str(), "http://127.0.0.1:2283");
    assert_eq!(api_key(&c), "…");
    assert_eq!(c.server.ca_file, None);
    assert!(!c.server.allow_insecure_http);
    assert_eq!(c.server.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.server.stall_timeout, Duration::from_secs(120));
    assert_eq!(c.state.dir, Path::new("/var/lib/immish-sync"));
    assert_eq!(c.roots.len(), 1);
    let root = &c.roots[0];
    assert_eq!(root.path, Path::new("/srv/photos"));
    assert!(root.recursive && !root.hidden);
    assert!(root.include.is_empty() && root.exclude.is_empty());
    assert_eq!(c.upload.concurrency, 4);
    assert_eq!(c.upload.device_id, None);
    assert_eq!(c.upload.retry_initial, Duration::from_secs(1));
    assert_eq!(c.upload.retry_max, Duration::from_secs(600));
    assert_eq!(c.upload.scan_max_attempts, 5);
    assert_eq!(c.hash.concurrency, 2);
    assert_eq!(c.scan.interval, Duration::from_secs(3600));
    assert_eq!(c.watch.mode, WatchMode::Auto);
    assert_eq!(c.watch.settle, Duration::from_secs(3));
    assert_eq!(c.watch.poll_interval, Duration::from_secs(60));
    assert_eq!(c.watch.poll_settle, Duration::from_secs(30));
    assert_eq!(c.watch.incomplete_limit, Duration::from_secs(3600));
    assert!(!c.mirror.reupload_deleted && c.mirror.events);
    assert_eq!(c.mirror.pull_interval, Duration::from_secs(300));
    assert_eq!(c.mirror.full_reconcile_interval, Duration::from_secs(86400));
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.source.as_deref(), Some(Path::new(&dir.config_path())));
}

#[test]
fn typo_in_a_key_names_the_key_its_line_and_the_fix() {
    let dir = Dir::new();
    let text = format!("{BASE}\n[upload]\nconcurency = 8\n");
    let e = dir.error(&text, &[]);
    assert_contains(
        &e,
        &[
            &format!("{}:8:1: upload.concurency:", dir.config_path()),
            "unknown field `concurency`",
            "did you mean `concurrency`?",
        ],
    );
}

#[test]
fn typo_in_a_section_name_is_caught_too() {
    let e = Dir::new().error(&format!("{BASE}[uplaod]\nconcurrency = 8\n"), &[]);
    assert_contains(&e, &[":6:2: uplaod:", "did you mean `upload`?"]);
}

#[test]
fn wrong_type_names_the_key_and_its_line() {
    let dir = Dir::new();
    let e = dir.error(&format!("{BASE}[upload]\nconcurrency = \"four\"\n"), &[]);
    assert_contains(
        &e,
        &[
            &format!("{}:7:15: upload.concurrency:", dir.config_path()),
            "invalid type: string \"four\", expected an integer",
        ],
    );
}

#[test]
fn out_of_range_values_name_the_key_and_the_limits() {
    let e = Dir::new().error(&format!("{BASE}[hash]\nconcurrency = 100\n"), &[]);
    assert_contains(
        &e,
        &[":7:15: hash.concurrency: must be between 1 and 64, got 100"],
    );
    let e = Dir::new().error(&format!("{BASE}[upload]\nscan_max_attempts = 0\n"), &[]);
    assert_contains(
        &e,
        &["upload.scan_max_attempts: must be a whole number of at least 1"],
    );
}

#[test]
fn syntax_errors_carry_the_position() {
    let dir = Dir::new();
    let e = dir.error("[server\nurl = 1\n", &[]);
    assert_contains(&e, &[&format!("{}:1:", dir.config_path()), "invalid TOML"]);
}

#[test]
fn repeated_keys_and_sections_are_named() {
    let e = Dir::new().error(&format!("{BASE}[server]\nurl = \"x\"\n"), &[]);
    assert_contains(&e, &[":6:2: invalid TOML: duplicate key `server`"]);
    let e = Dir::new().error(&format!("{BASE}[[upload]]\nconcurrency = 1\n"), &[]);
    assert_contains(&e, &[":6:1: upload[0]: must be a table, written [upload]"]);
}

#[test]
fn enum_values_list_the_choices() {
    let e = Dir::new().error(&format!("{BASE}[watch]\nmode = \"inotify\"\n"), &[]);
    assert_contains(
        &e,
        &[
            ":7:8: watch.mode: unknown variant `inotify`",
            "`notify`",
            "`poll`",
        ],
    );
    let e = Dir::new().error(&format!("{BASE}[log]\nformat = \"JSON\"\n"), &[]);
    assert_contains(
        &e,
        &["log.format: unknown variant `JSON`", "did you mean `json`?"],
    );
}

#[test]
fn single_bracket_roots_gets_a_hint() {
    let text = "[server]\nurl = \"https://x\"\n[roots]\npath = \"/p\"\n";
    let e = Dir::new().error(text, &[]);
    assert_contains(&e, &[":3:1: roots: must be a list of tables", "[[roots]]"]);
}

#[test]
fn missing_server_url_names_the_key_and_the_fix() {
    let dir = Dir::new();
    let text = "[server]\napi_key_file = \"/k\"\n\n[[roots]]\npath = \"/p\"\n";
    let e = dir.error(text, &[]);
    assert_contains(
        &e,
        &[
            &format!("{}:1:2: server.url: missing", dir.config_path()),
            "url = \"https://photos.example.com\"",
        ],
    );
    // With no [server] at all there is no line to point at, but the key is named.
    let e = dir.error("[[roots]]\npath = \"/p\"\n", &[]);
    assert_contains(
        &e,
        &[&format!("{}: server.url: missing", dir.config_path())],
    );
}

#[test]
fn bad_urls_are_refused() {
    let dir = Dir::new();
    for (url, expected) in [
        ("ftp://photos", "unsupported scheme `ftp`"),
        (
            "https://user:pw@photos",
            "must not contain a user name or password",
        ),
        ("https://photos/api?apiKey=x", "must not contain a query"),
        ("https://:2283", "has no host name"),
        (
            "photos:99999",
            "port \"99999\" must be a number from 1 to 65535",
        ),
        // Accepted (and taken as https) before issue 13 §5.
        ("localhost:2283", "has no scheme"),
    ] {
        let text = format!("[server]\nurl = \"{url}\"\n[[roots]]\npath = \"/p\"\n");
        let e = dir.error(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
        assert_contains(&e, &[":2:1: server.url: ", expected]);
        assert!(!e.contains("pw@"), "{e}");
    }
    for url in ["http://[::1]:2283/", "https://photos.example.com/immich"] {
        let text = format!("[server]\nurl = \"{url}\"\n[[roots]]\npath = \"/p\"\n");
        let c = dir.load(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
        assert!(c.is_ok(), "{url}: {:?}", c.err());
    }
}

/// Issue 13 §5: `url = "127.0.0.1:2284"` passed `check-config --offline` and was then
/// silently taken as https; it is an error naming the file, line, key and both choices.
#[test]
fn a_url_without_a_scheme_names_the_line_and_both_choices() {
    let dir = Dir::new();
    let text =
        "[server]\napi_key_file = \"/k\"\nurl = \"127.0.0.1:2284\"\n[[roots]]\npath = \"/p\"\n";
    let e = dir.error(text, &[]);
    assert_contains(
        &e,
        &[
            &format!("{}:3:1: server.url: ", dir.config_path()),
            "\"127.0.0.1:2284\" has no scheme",
            "http://127.0.0.1:2284",
            "https://127.0.0.1:2284",
        ],
    );
    // From the environment, the variable is named instead.
    let e = dir.error(
        BASE,
        &[
            ("IMMISH_SYNC__SERVER__API_KEY", "k"),
            ("IMMISH_SYNC__SERVER__URL", "nas.local:2283"),
        ],
    );
    assert_contains(
        &e,
        &[
            "environment variable IMMISH_SYNC__SERVER__URL: server.url: ",
            "http://nas.local:2283 or https://nas.local:2283",
        ],
    );
}

/// `server.url` is parsed once, into the normalised base the rest of the program uses.
#[test]
fn the_server_url_is_normalised_once() {
    let text = BASE.replace(
        "https://photos.example.com",
        " HTTPS://Photos.Example.com:443/immich/api/ ",
    );
    let c = Dir::new()
        .load(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")])
        .expect("config");
    assert_eq!(c.server.url.as_str(), "https://photos.example.com/immich");
    assert_eq!(c.server.url.host(), "photos.example.com");
    assert!(c.server.url.is_https() && !c.server.url.is_local());
    assert_eq!(
        c.server.url.as_written(),
        "HTTPS://Photos.Example.com:443/immich/api/"
    );
}

#[test]
fn env_overrides_win_over_the_file() {
    let dir = Dir::new();
    let text = format!("{BASE}[upload]\nconcurrency = 2\n[watch]\nmode = \"notify\"\n");
    let c = dir
        .load(
            &text,
            &[
                ("IMMISH_SYNC__UPLOAD__CONCURRENCY", "8"),
                ("immish_sync__watch__mode", "poll"),
                ("IMMISH_SYNC__Server__Url", "http://10.0.0.2:2283"),
                ("IMMISH_SYNC__SCAN__INTERVAL", "30m"),
                ("IMMISH_SYNC__MIRROR__EVENTS", "false"),
                ("IMMISH_SYNC__ROOTS__0__EXCLUDE", "[\"*.tmp\"]"),
                ("IMMISH_SYNC__ROOTS__1__PATH", "/mnt/phone"),
                ("IMMISH_SYNC__SERVER__API_KEY", "from-env"),
                // Not ours: a single underscore, and an unrelated prefix.
                ("IMMISH_SYNC_CONFIG", "/elsewhere.toml"),
                ("IMMISH_SYNCX__A__B", "1"),
            ],
        )
        .expect("config with overrides");
    assert_eq!(c.upload.concurrency, 8);
    assert_eq!(c.watch.mode, WatchMode::Poll);
    assert_eq!(c.server.url.as_str(), "http://10.0.0.2:2283");
    assert_eq!(c.scan.interval, Duration::from_secs(1800));
    assert!(!c.mirror.events);
    assert_eq!(c.roots[0].exclude, ["*.tmp"]);
    assert_eq!(c.roots[1].path, Path::new("/mnt/phone"));
    assert_eq!(api_key(&c), "from-env");
}

#[test]
fn a_numeric_looking_secret_from_env_stays_a_string() {
    let c = Dir::new()
        .load(BASE, &[("IMMISH_SYNC__SERVER__API_KEY", "0123456789")])
        .expect("numeric key");
    assert_eq!(api_key(&c), "0123456789");
}

#[test]
fn a_bad_env_value_names_the_variable() {
    let dir = Dir::new();
    let e = dir.error(
        BASE,
        &[
            ("IMMISH_SYNC__SERVER__API_KEY", "k"),
            ("IMMISH_SYNC__UPLOAD__CONCURRENCY", "four"),
        ],
    );
    assert_contains(
        &e,
        &[
            "environment variable IMMISH_SYNC__UPLOAD__CONCURRENCY: upload.concurrency:",
            "invalid type: string \"four\", expected an integer",
        ],
    );
    let e = dir.error(BASE, &[("IMMISH_SYNC__UPLOAD__CONCURENCY", "8")]);
    assert_contains(
        &e,
        &[
            "IMMISH_SYNC__UPLOAD__CONCURENCY: upload.concurency:",
            "did you mean `concurrency`?",
        ],
    );
    let e = dir.error(BASE, &[("IMMISH_SYNC__SERVER__URL", "ftp://x")]);
    assert_contains(
        &e,
        &["IMMISH_SYNC__SERVER__URL: server.url: unsupported scheme"],
    );
    let e = dir.error(BASE, &[("IMMISH_SYNC__ROOTS__3__PATH", "/x")]);
    assert_contains(
        &e,
        &["IMMISH_SYNC__ROOTS__3__PATH: roots[3].path: there is no root 3"],
    );
    let e = dir.error(BASE, &[("IMMISH_SYNC__CONCURRENCY", "8")]);
    assert_contains(
        &e,
        &["IMMISH_SYNC__CONCURRENCY", "IMMISH_SYNC__SECTION__KEY"],
    );
    let e = dir.error(
        BASE,
        &[
            ("IMMISH_SYNC__SERVER__API_KEY", "k"),
            ("IMMISH_SYNC__ROOTS__1__PATH", "rel"),
        ],
    );
    assert_contains(
        &e,
        &["IMMISH_SYNC__ROOTS__1__PATH: roots[1].path: \"rel\" must be absolute"],
    );
}

#[test]
fn inline_api_key_in_a_readable_file_is_refused() {
    let dir = Dir::new();
    let text = BASE.replace("[server]\n", "[server]\napi_key = \"secret-value\"\n");
    let path = dir.write("config.toml", &text, 0o644);
    let e = printed_once(load_from_str(&text, &path, &[]).expect_err("0644 with a key"));
    assert_contains(
        &e,
        &[
            &path.display().to_string(),
            "holds server.api_key inline",
            "its mode is 0644",
            &format!("chmod 600 {}", path.display()),
            "server.api_key_file",
        ],
    );
    assert!(!e.contains("secret-value"), "{e}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let c = load_from_str(&text, &path, &[]).expect("0600 with a key");
    assert_eq!(api_key(&c), "secret-value");
}

#[test]
fn inline_password_in_a_group_readable_file_is_refused() {
    let dir = Dir::new();
    let text = BASE.replace(
        "[server]\n",
        "[server]\nemail = \"a@b.c\"\npassword = \"pw\"\n",
    );
    let path = dir.write("config.toml", &text, 0o640);
    let e = printed_once(load_from_str(&text, &path, &[]).expect_err("0640 with a password"));
    assert_contains(&e, &["holds server.password inline", "chmod 600"]);
}

#[test]
fn a_readable_file_without_secrets_is_fine() {
    let dir = Dir::new();
    let key = dir.write("key", "k\n", 0o600);
    let text = BASE.replace(
        "[server]\n",
        &format!("[server]\napi_key_file = \"{}\"\n", key.display()),
    );
    let path = dir.write("config.toml", &text, 0o644);
    assert!(load_from_str(&text, &path, &[]).is_ok());
}

/// Issue 13 §5: an `api_key_file` or `password_file` open to group or others was accepted
/// while the same secret inline in a readable config was refused. It is refused the same
/// way, naming the file, its mode and the fix.
#[test]
fn a_secret_file_others_can_read_is_refused() {
    let dir = Dir::new();
    for mode in [0o644, 0o640, 0o604] {
        let key = dir.write("api-key", "k\n", mode);
        let text = BASE.replace(
            "[server]\n",
            &format!("[server]\napi_key_file = \"{}\"\n", key.display()),
        );
        let e = dir.error(&text, &[]);
        assert_contains(
            &e,
            &[
                &format!("{}:2:1: server.api_key_file: ", dir.config_path()),
                &format!("{} has mode {mode:04o}", key.display()),
                &format!("chmod 600 {}", key.display()),
            ],
        );
        assert!(!e.contains("k\n"), "{e}");
    }
    let pw = dir.write("pw", "hunter2\n", 0o640);
    let text = BASE.replace(
        "[server]\n",
        &format!(
            "[server]\nemail = \"me@x.org\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    );
    let e = dir.error(&text, &[]);
    assert_contains(
        &e,
        &[
            ":3:1: server.password_file: ",
            "has mode 0640",
            &format!("chmod 600 {}", pw.display()),
        ],
    );
    assert!(!e.contains("hunter2"), "{e}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(dir.load(&text, &[]).is_ok());
    // Set from the environment, the variable is named.
    let e = dir.error(
        BASE,
        &[(
            "IMMISH_SYNC__SERVER__API_KEY_FILE",
            dir.0.path().join("api-key").to_str().expect("utf-8"),
        )],
    );
    assert_contains(
        &e,
        &[
            "environment variable IMMISH_SYNC__SERVER__API_KEY_FILE: server.api_key_file: ",
            "has mode 0604",
        ],
    );
}

/// systemd keeps `$CREDENTIALS_DIRECTORY` private to the service and picks the files' mode
/// itself, so a key or password file there is read whatever its mode.
#[test]
fn a_secret_file_that_is_a_systemd_credential_is_not_mode_checked() {
    let dir = Dir::new();
    let creds = tempfile::tempdir().expect("tempdir");
    let key = creds.path().join("other-api-key");
    std::fs::write(&key, "from-credential\n").expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // Named through a path with `..` and back, which is still the credential.
    let via = creds
        .path()
        .join("..")
        .join(creds.path().file_name().expect("name"));
    let text = BASE.replace(
        "[server]\n",
        &format!(
            "[server]\napi_key_file = \"{}\"\n",
            via.join("other-api-key").display()
        ),
    );
    let env = [(
        "CREDENTIALS_DIRECTORY",
        creds.path().to_str().expect("utf-8"),
    )];
    let c = dir.load(&text, &env).expect("credential file");
    assert_eq!(api_key(&c), "from-credential");
    // The same file outside a credentials directory is refused.
    let e = dir.error(&text, &[]);
    assert_contains(&e, &["server.api_key_file: ", "has mode 0644"]);
}

#[test]
fn api_key_file_is_read_and_trimmed() {
    let dir = Dir::new();
    let key = dir.write("api-key", "  abc123\n\n", 0o600);
    let text = BASE.replace(
        "[server]\n",
        &format!("[server]\napi_key_file = \"{}\"\n", key.display()),
    );
    let c = dir.load(&text, &[]).expect("key file");
    assert_eq!(api_key(&c), "abc123");
}

#[test]
fn a_missing_or_empty_key_file_names_the_path() {
    let dir = Dir::new();
    let missing = dir.0.path().join("nope");
    let text = BASE.replace(
        "[server]\n",
        &format!("[server]\napi_key_file = \"{}\"\n", missing.display()),
    );
    let e = dir.error(&text, &[]);
    assert_contains(
        &e,
        &[
            ":2:1: server.api_key_file: cannot read",
            &missing.display().to_string(),
        ],
    );
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    let empty = dir.write("empty", "\n", 0o600);
    let text = BASE.replace(
        "[server]\n",
        &format!("[server]\napi_key_file = \"{}\"\n", empty.display()),
    );
    let e = dir.error(&text, &[]);
    assert_contains(&e, &["server.api_key_file:", "is empty"]);
}

#[test]
fn api_key_sources_follow_the_documented_order() {
    let dir = Dir::new();
    let creds = tempfile::tempdir().expect("tempdir");
    std::fs::write(creds.path().join(API_KEY_CREDENTIAL), "from-systemd\n").expect("write");
    let key = dir.write("api-key", "from-file\n", 0o600);
    let with_file = BASE.replace(
        "[server]\n",
        &format!("[server]\napi_key_file = \"{}\"\n", key.display()),
    );
    let inline = BASE.replace("[server]\n", "[server]\napi_key = \"from-config\"\n");
    let systemd = (
        "CREDENTIALS_DIRECTORY",
        creds.path().to_str().expect("utf-8"),
    );
    let env_key = ("IMMISH_SYNC__SERVER__API_KEY", "from-env");

    let c = dir.load(&with_file, &[systemd, env_key]).expect("systemd");
    assert_eq!(api_key(&c), "from-systemd");
    let c = dir.load(&with_file, &[env_key]).expect("api_key_file");
    assert_eq!(api_key(&c), "from-file");
    let c = dir.load(&inline, &[env_key]).expect("env");
    assert_eq!(api_key(&c), "from-env");
    let c = dir.load(&inline, &[]).expect("inline");
    assert_eq!(api_key(&c), "from-config");
    // A CREDENTIALS_DIRECTORY without our credential (another unit's) is not a source.
    let other = tempfile::tempdir().expect("tempdir");
    let c = dir
        .load(
            &inline,
            &[(
                "CREDENTIALS_DIRECTORY",
                other.path().to_str().expect("utf-8"),
            )],
        )
        .expect("inline");
    assert_eq!(api_key(&c), "from-config");
}

#[test]
fn api_key_and_api_key_file_in_the_same_file_is_an_error() {
    let text = BASE.replace(
        "[server]\n",
        "[server]\napi_key = \"a\"\napi_key_file = \"/k\"\n",
    );
    let e = Dir::new().error(&text, &[]);
    assert_contains(
        &e,
        &[":2:1: server.api_key: set only one of api_key and api_key_file"],
    );
}

#[test]
fn an_api_key_and_an_email_is_an_error() {
    let text = BASE.replace(
        "[server]\n",
        "[server]\napi_key = \"a\"\nemail = \"me@x.org\"\n",
    );
    let e = Dir::new().error(&text, &[]);
    assert_contains(
        &e,
        &[
            ":3:1: server.email: an API key (api_key or api_key_file) is set too",
            "not both",
        ],
    );
}

#[test]
fn password_login_reads_password_file() {
    let dir = Dir::new();
    let pw = dir.write("pw", " spaced pw \n", 0o600);
    let text = BASE.replace(
        "[server]\n",
        &format!(
            "[server]\nemail = \"me@x.org\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    );
    let c = dir.load(&text, &[]).expect("login");
    match c.server.credentials {
        Credentials::Password { email, password } => {
            assert_eq!(email, "me@x.org");
            assert_eq!(password.expose(), " spaced pw ");
        }
        other => panic!("expected a login, got {other:?}"),
    }
    let text = BASE.replace("[server]\n", "[server]\nemail = \"me@x.org\"\n");
    let e = dir.error(&text, &[]);
    assert_contains(&e, &["server.password_file: missing"]);
}

#[test]
fn no_credentials_at_all_says_how_to_give_one() {
    let e = Dir::new().error(BASE, &[]);
    assert_contains(
        &e,
        &[
            ":1:2: server: no credentials",
            "api_key_file",
            "IMMISH_SYNC__SERVER__API_KEY",
        ],
    );
}

#[test]
fn relative_root_path_names_the_root() {
    let dir = Dir::new();
    let text = format!("{BASE}\n[[roots]]\npath = \"photos/phone\"\n");
    let e = dir.error(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
    assert_contains(
        &e,
        &[
            &format!(
                "{}:8:1: roots[1].path: \"photos/phone\" must be absolute",
                dir.config_path()
            ),
            "not resolved against the config file's directory",
        ],
    );
}

#[test]
fn tilde_is_home() {
    let text = BASE.replace("/srv/photos", "~/Pictures");
    let c = Dir::new()
        .load(
            &text,
            &[("IMMISH_SYNC__SERVER__API_KEY", "k"), ("HOME", "/home/ann")],
        )
        .expect("tilde");
    assert_eq!(c.roots[0].path, Path::new("/home/ann/Pictures"));
}

#[test]
fn no_roots_and_overlapping_roots_are_errors() {
    let dir = Dir::new();
    let key = [("IMMISH_SYNC__SERVER__API_KEY", "k")];
    let e = dir.error("[server]\nurl = \"https://x\"\n", &key);
    assert_contains(&e, &["roots: no folders to back up", "[[roots]]"]);
    let text = format!("{BASE}[[roots]]\npath = \"/srv/photos/2024\"\n");
    let e = dir.error(&text, &key);
    assert_contains(
        &e,
        &[
            ":7:1: roots[1].path: /srv/photos/2024 is inside",
            "roots[0]",
        ],
    );
    let text = format!("{BASE}[[roots]]\npath = \"/srv/photos/\"\n");
    let e = dir.error(&text, &key);
    assert_contains(
        &e,
        &["roots[1].path: /srv/photos/ is the same folder as roots[0]"],
    );
}

#[test]
fn a_bad_glob_names_the_glob_and_the_key() {
    let text = format!("{BASE}exclude = [\"*.tmp\", \"[abc\"]\n");
    let e = Dir::new().error(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
    assert_contains(
        &e,
        &[":6:1: roots[0].exclude: invalid glob \"[abc\": unclosed character class"],
    );
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    assert_eq!(parse_duration(" 90 "), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("2 m"), Ok(Duration::from_secs(120)));
    for bad in ["", "m", "1.5h", "10x", "-1s", "1h30m"] {
        let e = parse_duration(bad).expect_err(bad);
        assert_contains(&e, &["invalid duration", "\"10s\""]);
    }
    assert!(parse_duration("99999999999999999999d").is_err());

    let text = format!(
        "{BASE}[watch]\nsettle = \"500ms\"\npoll_interval = 90\npoll_settle = \"45s\"\nincomplete_limit = \"2m\"\n[mirror]\npull_interval = \"1d\"\n"
    );
    let c = Dir::new()
        .load(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")])
        .expect("durations");
    assert_eq!(c.watch.settle, Duration::from_millis(500));
    assert_eq!(c.watch.poll_interval, Duration::from_secs(90));
    assert_eq!(c.watch.poll_settle, Duration::from_secs(45));
    assert_eq!(c.watch.incomplete_limit, Duration::from_secs(120));
    assert_eq!(c.mirror.pull_interval, Duration::from_secs(86400));

    let e = Dir::new().error(&format!("{BASE}[scan]\ninterval = \"1 hour\"\n"), &[]);
    assert_contains(&e, &[":7:12: scan.interval: invalid duration \"1 hour\""]);
    let e = Dir::new().error(
        &format!("{BASE}[scan]\ninterval = 0\n"),
        &[("IMMISH_SYNC__SERVER__API_KEY", "k")],
    );
    assert_contains(&e, &[":7:1: scan.interval: must be longer than 0"]);
    let e = Dir::new().error(
        &format!("{BASE}[upload]\nretry_initial = \"1h\"\nretry_max = \"1m\"\n"),
        &[("IMMISH_SYNC__SERVER__API_KEY", "k")],
    );
    assert_contains(
        &e,
        &["upload.retry_initial: (3600s) must not be longer than upload.retry_max (60s)"],
    );
}

#[test]
fn ca_file_must_exist() {
    let dir = Dir::new();
    let text = BASE.replace("[server]\n", "[server]\nca_file = \"/no/such/ca.pem\"\n");
    let e = dir.error(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")]);
    assert_contains(
        &e,
        &[":2:1: server.ca_file: /no/such/ca.pem does not exist"],
    );
    let ca = dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o644);
    let text = BASE.replace(
        "[server]\n",
        &format!("[server]\nca_file = \"{}\"\n", ca.display()),
    );
    let c = dir
        .load(&text, &[("IMMISH_SYNC__SERVER__API_KEY", "k")])
        .expect("ca");
    assert_eq!(c.server.ca_file, Some(ca));
}

/// `[server]` with its own trust and timeouts, and two accounts: Ann's leave them out,
/// Ben's set each (docs/ARCHITECTURE.md#accounts).
fn two_accounts(server_ca: &Path, ben_lines: &str) -> String {
    format!(
        "[server]\nurl = \"https://photos.example.com\"\nca_file = \"{}\"\n\
         connect_timeout = \"7s\"\nstall_timeout = \"70s\"\n\
         [[roots]]\npath = \"/srv/photos\"\n\
         [[accounts]]\nname = \"ann\"\n\
         [[accounts]]\nname = \"ben\"\nurl = \"http://ben.example.com\"\n{ben_lines}",
        server_ca.display()
    )
}

#[test]
fn an_account_has_its_own_tls_and_timeouts_or_else_the_servers() {
    let dir = Dir::new();
    let server_ca = dir.write("server-ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o644);
    let ben_ca = dir.write("ben-ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o644);
    let keys = [
        ("IMMISH_SYNC__SERVER__API_KEY", "k"),
        ("IMMISH_SYNC__ACCOUNTS__0__API_KEY", "ka"),
        ("IMMISH_SYNC__ACCOUNTS__1__API_KEY", "kb"),
    ];
    let text = two_accounts(
        &server_ca,
        &format!(
            "ca_file = \"{}\"\nallow_insecure_http = true\nconnect_timeout = \"3s\"\n\
             stall_timeout = \"5m\"\n",
            ben_ca.display()
        ),
    );
    let c = dir.load(&text, &keys).expect("accounts with their own TLS");
    assert_eq!(c.server.table, "server");
    assert!(!c.server.allow_insecure_http);
    let (ann, ben) = (&c.accounts[0].server, &c.accounts[1].server);
    assert_eq!(ann.table, "accounts[0]");
    assert_eq!(ann.ca_file.as_deref(), Some(server_ca.as_path()));
    assert!(!ann.allow_insecure_http);
    assert_eq!(ann.connect_timeout, Duration::from_secs(7));
    assert_eq!(ann.stall_timeout, Duration::from_secs(70));
    assert_eq!(ben.table, "accounts[1]");
    assert_eq!(ben.url.as_str(), "http://ben.example.com");
    assert_eq!(ben.ca_file.as_deref(), Some(ben_ca.as_path()));
    assert!(ben.allow_insecure_http);
    assert_eq!(ben.connect_timeout, Duration::from_secs(3));
    assert_eq!(ben.stall_timeout, Duration::from_secs(300));
    // `[server]` keeps its own.
    assert_eq!(c.server.ca_file.as_deref(), Some(server_ca.as_path()));
    assert_eq!(c.server.connect_timeout, Duration::from_secs(7));

    // The environment sets an account's keys like its url (IMMISH_SYNC__ACCOUNTS__<N>__…).
    let text = two_accounts(&server_ca, "");
    let ben_ca_text = ben_ca.display().to_string();
    let env = [
        keys.as_slice(),
        &[
            ("IMMISH_SYNC__ACCOUNTS__1__CONNECT_TIMEOUT", "2s"),
            ("IMMISH_SYNC__ACCOUNTS__1__ALLOW_INSECURE_HTTP", "true"),
            ("IMMISH_SYNC__ACCOUNTS__1__CA_FILE", &ben_ca_text),
        ],
    ]
    .concat();
    let c = dir
        .load(&text, &env)
        .expect("accounts from the environment");
    let ben = &c.accounts[1].server;
    assert_eq!(ben.connect_timeout, Duration::from_secs(2));
    assert!(ben.allow_insecure_http);
    assert_eq!(ben.ca_file.as_deref(), Some(ben_ca.as_path()));
    assert_eq!(ben.stall_timeout, Duration::from_secs(70), "[server]'s");
}

#[test]
fn an_accounts_ca_file_and_timeouts_are_checked_and_named() {
    let dir = Dir::new();
    let server_ca = dir.write("server-ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o644);
    let keys = [
        ("IMMISH_SYNC__SERVER__API_KEY", "k"),
        ("IMMISH_SYNC__ACCOUNTS__0__API_KEY", "ka"),
        ("IMMISH_SYNC__ACCOUNTS__1__API_KEY", "kb"),
    ];
    // Ben's table starts on line 10; the keys written for it on line 13.
    let e = dir.error(
        &two_accounts(&server_ca, "ca_file = \"/no/such/ben-ca.pem\"\n"),
        &keys,
    );
    assert_contains(
        &e,
        &[
            &format!("{}:13:1: accounts[1].ca_file:", dir.config_path()),
            "/no/such/ben-ca.pem does not exist or is not a file",
        ],
    );
    let e = dir.error(
        &two_accounts(&server_ca, "ca_file = \"ben-ca.pem\"\n"),
        &keys,
    );
    assert_contains(
        &e,
        &[":13:1: accounts[1].ca_file: \"ben-ca.pem\" must be absolute"],
    );
    let e = dir.error(
        &two_accounts(&server_ca, "stall_timeout = \"2 hours\"\n"),
        &keys,
    );
    assert_contains(
        &e,
        &[":13:17: accounts[1].stall_timeout: invalid duration \"2 hours\""],
    );
    let e = dir.error(&two_accounts(&server_ca, "connect_timeout = 0\n"), &keys);
    assert_contains(
        &e,
        &[":13:1: accounts[1].connect_timeout: must be longer than 0"],
    );
    let e = dir.error(
        &two_accounts(&server_ca, "allow_insecure_http = \"yes\"\n"),
        &keys,
    );
    assert_contains(&e, &[":13:23: accounts[1].allow_insecure_http:"]);
    // From the environment, the variable is named.
    let env = [
        keys.as_slice(),
        &[("IMMISH_SYNC__ACCOUNTS__0__CA_FILE", "/no/such/ann-ca.pem")],
    ]
    .concat();
    let e = dir.error(&two_accounts(&server_ca, ""), &env);
    assert_contains(
        &e,
        &[
            "IMMISH_SYNC__ACCOUNTS__0__CA_FILE: accounts[0].ca_file:",
            "/no/such/ann-ca.pem does not exist",
        ],
    );
}

#[test]
fn log_level_is_checked() {
    let key = [("IMMISH_SYNC__SERVER__API_KEY", "k")];
    let e = Dir::new().error(&format!("{BASE}[log]\nlevel = \"verbose\"\n"), &key);
    assert_contains(&e, &[":7:1: log.level: unknown level \"verbose\""]);
    let c = Dir::new()
        .load(
            &format!("{BASE}[log]\nlevel = \"info,immish_sync=debug\"\nformat = \"json\"\n"),
            &key,
        )
        .expect("directive");
    assert_eq!(c.log.level, "info,immish_sync=debug");
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let dir = Dir::new();
    let text = BASE.replace("[server]\n", "[server]\napi_key = \"s3cr3t-k3y\"\n");
    let c = dir.load(&text, &[]).expect("config");
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cr3t-k3y"), "{debug}");
    assert!(debug.contains("Secret(***)"), "{debug}");
    let login = Credentials::Password {
        email: "me@x.org".into(),
        password: Secret::new("hunter2"),
    };
    assert!(!format!("{login:?}").contains("hunter2"));
    assert_eq!(Secret::new("hunter2").to_string(), "***");

    // A secret of the wrong type is not echoed back.
    let text = BASE.replace("[server]\n", "[server]\napi_key = 987654321\n");
    let e = dir.error(&text, &[]);
    assert_contains(
        &e,
        &[":2:11: server.api_key: must be a string (in quotes), not an integer"],
    );
    assert!(!e.contains("987654321"), "{e}");
    let e = dir.error(
        BASE,
        &[
            ("IMMISH_SYNC__SERVER__API_KEY", "k"),
            ("IMMISH_SYNC__SERVER__PASSWORD", "[1, 2]"),
        ],
    );
    assert!(!e.contains("[1, 2]"), "{e}");
}

#[test]
fn a_missing_config_file_says_how_to_make_one() {
    let dir = Dir::new();
    let path = dir.0.path().join("absent.toml");
    let e = printed_once(load(&path).expect_err("missing"));
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    assert_contains(
        &e,
        &[
            &path.display().to_string(),
            "cannot read config file",
            "config.example.toml",
            "--config",
        ],
    );
}

#[test]
fn default_locations() {
    let env = vars(&[("HOME", "/home/ann")]);
    assert_eq!(
        default_config_path_in(&env, false),
        Path::new("/home/ann/.config/immish-sync/config.toml")
    );
    assert_eq!(
        default_state_dir_in(&env, false),
        Path::new("/home/ann/.local/state/immish-sync")
    );
    assert_eq!(
        default_config_path_in(&env, true),
        Path::new("/etc/immish-sync/config.toml")
    );
    assert_eq!(
        default_state_dir_in(&env, true),
        Path::new("/var/lib/immish-sync")
    );

    let env = vars(&[
        ("HOME", "/home/ann"),
        ("XDG_CONFIG_HOME", "/xdg/config"),
        ("XDG_STATE_HOME", "relative/is/ignored"),
    ]);
    assert_eq!(
        default_config_path_in(&env, false),
        Path::new("/xdg/config/immish-sync/config.toml")
    );
    assert_eq!(
        default_state_dir_in(&env, false),
        Path::new("/home/ann/.local/state/immish-sync")
    );

    let env = vars(&[
        ("IMMISH_SYNC_CONFIG", "/opt/c.toml"),
        ("STATE_DIRECTORY", "/var/lib/immish-sync:/var/lib/other"),
    ]);
    assert_eq!(default_config_path_in(&env, true), Path::new("/opt/c.toml"));
    assert_eq!(
        default_state_dir_in(&env, true),
        Path::new("/var/lib/immish-sync")
    );
    assert_eq!(
        default_state_dir_in(&env, false),
        Path::new("/var/lib/immish-sync")
    );

    // Without [state] dir the environment decides.
    let c = Dir::new()
        .load(
            BASE,
            &[
                ("IMMISH_SYNC__SERVER__API_KEY", "k"),
                ("STATE_DIRECTORY", "/run/st"),
            ],
        )
        .expect("config");
    assert_eq!(c.state.dir, Path::new("/run/st"));
}

/// The example with every `# key = value` line switched on.
fn example_uncommented() -> String {
    EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            // The commented-out [[accounts]] table, at the end of the file.
            Some(table @ "[[accounts]]") => table,
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_config_loads() {
    let dir = Dir::new();
    let key = dir.write("api-key", "example-key\n", 0o600);
    let text = EXAMPLE.replace("/etc/immish-sync/api-key", &key.display().to_string());
    assert_ne!(
        text, EXAMPLE,
        "the example should set api_key_file = \"/etc/immish-sync/api-key\""
    );
    let c = dir.load(&text, &[]).expect("config.example.toml");
    assert_eq!(api_key(&c), "example-key");
    assert_eq!(c.roots[0].path, Path::new("/srv/photos"));
    assert_eq!(c.state.dir, Path::new("/var/lib/immish-sync"));
}

#[test]
fn the_example_documents_every_key_with_its_real_default() {
    let text = example_uncommented();
    let raw: RawConfig =
        toml::from_str(&text).unwrap_or_else(|e| panic!("uncommented example: {e}"));
    // Every key exists (deny_unknown_fields) and appears; the defaults shown are the
    // defaults in the code (keys whose example shows a non-default value are reset).
    let server = RawServer {
        url: None,
        api_key: None,
        api_key_file: None,
        email: None,
        password: None,
        password_file: None,
        ca_file: None,
        ..raw.server
    };
    assert!(raw.server.url.is_some() && raw.server.api_key.is_some());
    assert!(raw.server.api_key_file.is_some() && raw.server.email.is_some());
    assert!(raw.server.password.is_some() && raw.server.password_file.is_some());
    assert!(raw.server.ca_file.is_some() && raw.state.dir.is_some());
    assert_eq!(server, RawServer::default());
    let first = raw.roots.into_iter().next().expect("a root");
    assert!(first.album_name.is_some(), "the example shows album_name");
    assert!(first.timezone.is_some(), "the example shows a timezone");
    assert!(first.account.is_some(), "the example shows account");
    assert!(
        first.archive_dir.is_some(),
        "the example shows an archive_dir"
    );
    let root = RawRoot {
        path: None,
        album_name: None,
        timezone: None,
        account: None,
        archive_dir: None,
        ..first
    };
    assert_eq!(root, RawRoot::default());
    assert!(raw.upload.device_id.is_some() && raw.upload.max_rate.is_some());
    assert_eq!(raw.upload.windows.len(), 2, "the example shows two windows");
    assert_eq!(
        RawUpload {
            device_id: None,
            max_rate: None,
            windows: Vec::new(),
            ..raw.upload
        },
        RawUpload::default()
    );
    assert_eq!(raw.hash, RawHash::default());
    assert_eq!(raw.scan, RawScan::default());
    assert_eq!(raw.watch, RawWatch::default());
    assert_eq!(raw.mirror, RawMirror::default());
    assert_eq!(raw.log, RawLog::default());
    assert!(raw.metrics.listen.is_some() && raw.metrics.token_file.is_some());
    assert_eq!(
        RawMetrics {
            listen: None,
            token_file: None,
            ..raw.metrics
        },
        RawMetrics::default()
    );
    let a = raw
        .accounts
        .first()
        .expect("the example shows [[accounts]]");
    assert!(a.name.is_some() && a.url.is_some() && a.api_key.is_some());
    assert!(a.api_key_file.is_some() && a.email.is_some());
    assert!(a.password.is_some() && a.password_file.is_some());
    // An account's TLS and timeout keys default to [server]'s, which the example shows.
    let of_server = RawServer::default();
    assert!(a.ca_file.is_some());
    assert_eq!(a.allow_insecure_http, Some(of_server.allow_insecure_http));
    assert_eq!(a.connect_timeout, Some(of_server.connect_timeout));
    assert_eq!(a.stall_timeout, Some(of_server.stall_timeout));
    assert!(raw.alerts.url.is_some() && raw.alerts.token_file.is_some());
    assert_eq!(
        RawAlerts {
            url: None,
            token_file: None,
            ..raw.alerts
        },
        RawAlerts::default()
    );
}

/// The example's `[[pull]]` table, written as `#   key = value` lines (a table switched on
/// in the example would start a pull for whoever copies it): every key, with its default.
#[test]
fn the_example_documents_every_pull_key_with_its_real_default() {
    let block: String = EXAMPLE
        .lines()
        .skip_while(|l| *l != "#   [[pull]]")
        .take_while(|l| l.starts_with("#   "))
        .map(|l| &l[4..])
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let raw: RawConfig = toml::from_str(&block).unwrap_or_else(|e| panic!("{block}: {e}"));
    let pull = raw
        .pull
        .into_iter()
        .next()
        .expect("a [[pull]] table in the example");
    assert!(pull.path.is_some() && pull.account.is_some() && pull.max_rate.is_some());
    assert_eq!(
        super::raw::RawPull {
            path: None,
            account: None,
            max_rate: None,
            ..pull
        },
        super::raw::RawPull::default()
    );
    // And it is valid as a whole, beside the example's root.
    let dir = Dir::new();
    let key = dir.write("api-key", "example-key\n", 0o600);
    let text = format!(
        "{}\n{block}\n",
        EXAMPLE.replace("/etc/immish-sync/api-key", &key.display().to_string())
    );
    let c = dir.load(&text, &[]).expect("the example with its [[pull]]");
    assert_eq!(c.pull[0].path, Path::new("/srv/photo-copy"));
    assert_eq!(c.pull[0].layout.as_str(), "{year}/{month}/{filename}");
}

#[test]
fn the_example_starts_with_the_minimal_config() {
    let head: String = EXAMPLE.lines().take(40).collect::<Vec<_>>().join("\n");
    for key in [
        "url = \"http://127.0.0.1:2283\"",
        "api_key",
        "dir = \"/var/lib/immish-sync\"",
        "path = \"/srv/photos\"",
    ] {
        assert!(
            head.contains(key),
            "the top of config.example.toml should show {key}"
        );
    }
}

/// The album and stack keys of a root: a wrong value or an empty separator or album name is
/// named with its key (and line), the defaults are no albums and JPEG-on-top stacks.
#[test]
fn library_keys_are_checked_and_named() {
    let dir = Dir::new();
    let env = [("IMMISH_SYNC__SERVER__API_KEY", "k")];
    let c = dir.load(BASE, &env).expect("defaults");
    assert_eq!(c.roots[0].library, LibraryConfig::default());
    let text = format!("{BASE}album = \"path\"\nalbum_separator = \"-\"\nalbum_name = \"NAS\"\nstack_primary = \"raw\"\nstacks = false\n");
    let c = dir.load(&text, &env).expect("library keys");
    let lib = &c.roots[0].library;
    assert_eq!(lib.album, AlbumMode::Path);
    assert_eq!(lib.album_separator, "-");
    assert_eq!(lib.album_name.as_deref(), Some("NAS"));
    assert_eq!((lib.stacks, lib.stack_primary), (false, StackPrimary::Raw));
    let e = dir.error(&format!("{BASE}album = \"folders\"\n"), &env);
    assert_contains(&e, &["album", "folders"]);
    let e = dir.error(&format!("{BASE}album_separator = \"\"\n"), &env);
    assert_contains(&e, &["roots[0].album_separator", "empty"]);
    let e = dir.error(&format!("{BASE}album_name = \"  \"\n"), &env);
    assert_contains(&e, &["roots[0].album_name", "blank"]);
}

/// `after_upload`: keep by default; archive needs a folder outside every root's walk (or
/// excluded in its own root), and the errors name the key and both folders.
#[test]
fn after_upload_keys_are_checked_and_named() {
    let dir = Dir::new();
    let env = [("IMMISH_SYNC__SERVER__API_KEY", "k")];
    let c = dir.load(BASE, &env).expect("defaults");
    assert_eq!(c.roots[0].after_upload, AfterUploadConfig::default());
    assert!(!c.roots[0].after_upload.removes());

    let text = format!(
        "{BASE}after_upload = \"archive\"\narchive_dir = \"/srv/archive\"\nafter_upload_linked = true\n"
    );
    let c = dir.load(&text, &env).expect("archive");
    assert_eq!(
        c.roots[0].after_upload,
        AfterUploadConfig {
            action: AfterUploadAction::Archive(PathBuf::from("/srv/archive")),
            linked: true,
        }
    );
    let c = dir
        .load(&format!("{BASE}after_upload = \"delete\"\n"), &env)
        .expect("delete");
    assert_eq!(c.roots[0].after_upload.action, AfterUploadAction::Delete);

    let e = dir.error(&format!("{BASE}after_upload = \"move\"\n"), &env);
    assert_contains(&e, &["after_upload", "move"]);
    let e = dir.error(&format!("{BASE}after_upload = \"archive\"\n"), &env);
    assert_contains(&e, &["roots[0].after_upload", "archive_dir"]);
    let e = dir.error(
        &format!("{BASE}after_upload = \"delete\"\narchive_dir = \"/srv/archive\"\n"),
        &env,
    );
    assert_contains(&e, &["roots[0].archive_dir", "only used with"]);
    let e = dir.error(
        &format!("{BASE}after_upload = \"archive\"\narchive_dir = \"archive\"\n"),
        &env,
    );
    assert_contains(&e, &["roots[0].archive_dir", "absolute"]);
    // Inside the root it archives from: walked, so refused, naming both.
    let e = dir.error(
        &format!("{BASE}after_upload = \"archive\"\narchive_dir = \"/srv/photos/done\"\n"),
        &env,
    );
    assert_contains(
        &e,
        &[
            "roots[0].archive_dir",
            "/srv/photos/done",
            "roots[0] (/srv/photos)",
            "exclude",
        ],
    );
    // ... unless that root does not walk it.
    for skip in ["exclude = [\"/done/\"]\n", "hidden = false\n"] {
        let name = if skip.starts_with("exclude") {
            "done"
        } else {
            ".done"
        };
        let text = format!(
            "{BASE}{skip}after_upload = \"archive\"\narchive_dir = \"/srv/photos/{name}\"\n"
        );
        dir.load(&text, &env)
            .unwrap_or_else(|e| panic!("{skip}: {}", printed_once(e)));
    }
    // In another root, or holding one: refused.
    let two = format!(
        "{BASE}after_upload = \"archive\"\narchive_dir = \"/srv/inbox/old\"\n\
         [[roots]]\npath = \"/srv/inbox\"\nexclude = [\"/old/\"]\n"
    );
    let e = dir.error(&two, &env);
    assert_contains(&e, &["roots[0].archive_dir", "roots[1] (/srv/inbox)"]);
    let e = dir.error(
        &format!("{BASE}after_upload = \"archive\"\narchive_dir = \"/srv\"\n"),
        &env,
    );
    assert_contains(&e, &["roots[0].archive_dir", "contains roots[0]"]);
}

/// A SIGHUP tells a changed key from the same one by its value (docs/ARCHITECTURE.md#reload):
/// `Debug` shows every key as `***`, so it cannot.
#[test]
fn same_as_sees_a_changed_key_that_debug_hides() {
    let dir = Dir::new();
    let a = dir.load(MINIMAL, &[]).expect("minimal config");
    let b = dir
        .load(
            &MINIMAL.replace("api_key = \"…\" ", "api_key = \"another\" "),
            &[],
        )
        .expect("another key");
    assert_eq!(format!("{:?}", a.server), format!("{:?}", b.server));
    assert!(a.server.same_as(&a.clone().server));
    assert!(!a.server.same_as(&b.server));
    let plan = crate::control::reload::plan(&a, &b).expect("a plan");
    assert_eq!(plan.needs_restart, ["[server]"]);
}

#[test]
fn a_sighup_applies_alerts_and_names_metrics_and_pull_as_needing_a_restart() {
    let dir = Dir::new();
    let one = dir.write("one.token", "tk-1\n", 0o600);
    let two = dir.write("two.token", "tk-2\n", 0o600);
    let with = |alerts: &Path, metrics: &Path, pull: &str| {
        dir.load(
            &format!(
                "{MINIMAL}[alerts]\nurl = \"http://127.0.0.1:9/hook\"\ntoken_file = \"{}\"\n\
                 [metrics]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
                 [[pull]]\npath = \"{pull}\"\n",
                alerts.display(),
                metrics.display()
            ),
            &[],
        )
        .expect("config")
    };
    let a = with(&one, &one, "/srv/copy");
    // Only the tokens differ: their `Debug` is redacted, so only a comparison by value
    // sees them.
    let b = with(&two, &one, "/srv/copy");
    assert_eq!(format!("{:?}", a.alerts), format!("{:?}", b.alerts));
    let plan = crate::control::reload::plan(&a, &b).expect("a plan");
    assert_eq!(plan.applies, ["[alerts] changed"]);
    assert!(plan.needs_restart.is_empty(), "{:?}", plan.needs_restart);
    let c = with(&one, &two, "/srv/copy");
    let plan = crate::control::reload::plan(&a, &c).expect("a plan");
    assert!(plan.applies.is_empty(), "{:?}", plan.applies);
    assert_eq!(plan.needs_restart, ["[metrics]"]);
    let d = with(&one, &one, "/srv/other-copy");
    let plan = crate::control::reload::plan(&a, &d).expect("a plan");
    assert_eq!(plan.needs_restart, ["[[pull]]"]);
}
