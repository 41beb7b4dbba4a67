//! The systemd units, as text: the system service (a dynamic user that can write only its
//! state directory) and the `--user` service (the same sandbox, less what a user manager
//! cannot grant). `service install` renders them for this machine's config; the files in
//! packaging/systemd are the same rendering for the packaged paths (a test keeps them so).
//!
//! Must not: touch the file system beyond the one unit file [`write`] is asked to write.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The unit's file name, for both managers.
pub const UNIT_NAME: &str = "immish-sync.service";
/// The systemd credential the daemon reads the API key from (config::secret).
pub const KEY_CREDENTIAL: &str = "immish-sync-api-key";

/// What a unit is rendered from. Every path is already in the unit's syntax (see
/// [`escape_path`]), so that the packaged units can use specifiers such as `%h`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitSpec {
    /// A `--user` unit (no dynamic user; the user manager's limits on sandboxing).
    pub user: bool,
    /// The command line after `ExecStart=`.
    pub exec_start: String,
    /// The photo roots, read-only to the service.
    pub roots: Vec<String>,
    /// The state directory, the only place the service writes.
    pub state: StateDir,
    /// Where the API key file is, handed over as a credential (system units).
    pub key_file: Option<String>,
    /// Paths the service may write besides its state: roots with `after_upload` archive or
    /// delete, and their archive folders (docs/ARCHITECTURE.md#after-upload).
    pub writable: Vec<String>,
    /// The `[[pull]]` folders, the only other places the service writes
    /// (docs/ARCHITECTURE.md#pull).
    pub pull: Vec<String>,
}

/// How the unit grants the state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateDir {
    /// `StateDirectory=NAME`: systemd creates `/var/lib/NAME` for the (dynamic) user.
    Managed(String),
    /// `ReadWritePaths=PATH`: a directory that exists already.
    Path(String),
}

impl UnitSpec {
    /// The system unit of the .deb and of packaging/systemd.
    pub fn packaged_system() -> UnitSpec {
        UnitSpec {
            user: false,
            exec_start: "/usr/bin/immish-sync run --config /etc/immish-sync/config.toml".into(),
            roots: vec!["/srv/photos".into()],
            state: StateDir::Managed("immish-sync".into()),
            key_file: Some("/etc/immish-sync/api-key".into()),
            writable: Vec::new(),
            pull: Vec::new(),
        }
    }

    /// The user unit of the .deb and of packaging/systemd/user: the default config and
    /// state paths of a user (`~/.config/immish-sync`, `~/.local/state/immish-sync`).
    pub fn packaged_user() -> UnitSpec {
        UnitSpec {
            user: true,
            exec_start: "/usr/bin/immish-sync run".into(),
            roots: vec!["%h/Pictures".into()],
            state: StateDir::Path("%h/.local/state/immish-sync".into()),
            key_file: None,
            writable: Vec::new(),
            pull: Vec::new(),
        }
    }

    /// A unit for this machine: the installed binary `exe`, the config file, its roots and
    /// state directory. A system unit whose state directory is under /var/lib lets systemd
    /// manage it (`StateDirectory=`); anything else is granted as it is.
    pub fn for_machine(
        user: bool,
        exe: &Path,
        config: &Path,
        roots: &[PathBuf],
        state_dir: &Path,
        key_file: Option<&Path>,
    ) -> UnitSpec {
        let exec_start = format!("{} run --config {}", escape_path(exe), escape_path(config));
        let managed = state_dir
            .strip_prefix("/var/lib")
            .ok()
            .filter(|rest| !user && !rest.as_os_str().is_empty());
        let state = match managed {
            Some(rest) => StateDir::Managed(escape_path(rest)),
            None => StateDir::Path(escape_path(state_dir)),
        };
        UnitSpec {
            user,
            exec_start,
            roots: roots.iter().map(|r| escape_path(r)).collect(),
            state,
            key_file: if user {
                None
            } else {
                key_file.map(escape_path)
            },
            writable: Vec::new(),
            pull: Vec::new(),
        }
    }

    /// The same unit, allowed to write `paths` too (roots the daemon archives or deletes
    /// from, archive folders).
    pub fn with_writable(mut self, paths: &[PathBuf]) -> UnitSpec {
        self.writable = paths.iter().map(|p| escape_path(p)).collect();
        self
    }

    /// The same unit, granted write access to the `[[pull]]` folders.
    pub fn with_pull_folders(mut self, folders: &[PathBuf]) -> UnitSpec {
        self.pull = folders.iter().map(|p| escape_path(p)).collect();
        self
    }
}

/// A path as one word of a unit file: `%` doubled (it starts a specifier) and the path
/// quoted when it has white space, a quote or a backslash.
pub fn escape_path(p: &Path) -> String {
    let s = p.to_string_lossy().replace('%', "%%");
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

/// Where the unit goes: /etc/systemd/system for the system manager;
/// `$XDG_CONFIG_HOME/systemd/user` (else ~/.config/systemd/user) for the user's.
pub fn install_path(user: bool) -> Option<PathBuf> {
    if !user {
        return Some(PathBuf::from("/etc/systemd/system").join(UNIT_NAME));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("systemd/user").join(UNIT_NAME))
}

/// The commands that load and start the unit written by `service install`.
pub fn enable_commands(user: bool) -> [String; 2] {
    let ctl = if user {
        "systemctl --user"
    } else {
        "sudo systemctl"
    };
    [
        format!("{ctl} daemon-reload"),
        format!("{ctl} enable --now immish-sync"),
    ]
}

/// The unit file's text.
pub fn render(spec: &UnitSpec) -> String {
    let mut u = String::new();
    let w = &mut u;
    if spec.user {
        line(
            w,
            "# immish-sync as a user service (systemctl --user). Install: packaging/README.md.",
        );
        line(w, "#");
        line(
            w,
            "# It runs as you, so it reads what you can read. The sandbox below is what a user",
        );
        line(
            w,
            "# manager can set up; the file-system part needs unprivileged user namespaces",
        );
        line(w, "# (the default on current kernels).");
    } else {
        line(
            w,
            "# immish-sync as a hardened system service. Install and adapt: packaging/README.md.",
        );
        line(w, "#");
        line(
            w,
            "# The service runs as a throw-away user (DynamicUser=) that can write only its state",
        );
        line(w, "# directory and reads the API key from a systemd credential, so the config file holds no");
        line(
            w,
            "# secret and can stay world-readable. Check the result with",
        );
        line(w, "#   systemd-analyze security immish-sync");
    }
    line(
        w,
        "# Local changes belong in a drop-in (systemctl edit immish-sync), not in this file.",
    );
    line(w, "");
    line(w, "[Unit]");
    line(
        w,
        "Description=immish-sync: back up photo and video folders to an Immich server",
    );
    line(w, "Documentation=man:immish-sync(1)");
    if !spec.user {
        line(
            w,
            "# The daemon waits for the server with backoff either way; waiting for the network",
        );
        line(w, "# avoids a burst of errors at boot.");
        line(w, "Wants=network-online.target");
        line(w, "After=network-online.target");
    }
    line(w, "");
    line(w, "[Service]");
    line(
        w,
        "# READY=1 comes once the config, the state database and the lock are in place (and the",
    );
    line(
        w,
        "# watches, when the server answers at once); a server that is down at boot does not hold",
    );
    line(
        w,
        "# up the boot: `systemctl status` then says \"waiting for the server since ...\".",
    );
    line(w, "Type=notify");
    line(w, "NotifyAccess=main");
    let _ = writeln!(w, "ExecStart={}", spec.exec_start);
    line(
        w,
        "# `systemctl reload`: the config is read again (a broken one is refused, the old kept).",
    );
    line(w, "ExecReload=/bin/kill -HUP $MAINPID");
    line(
        w,
        "# Setting up the watches of a large tree takes a while after the server answered.",
    );
    line(w, "TimeoutStartSec=3min");
    line(
        w,
        "# Pings come while every loop of the daemon makes progress or waits on purpose (an",
    );
    line(
        w,
        "# outage, a pause, a long hash); a deadlocked loop or a blocked runtime misses them,",
    );
    line(w, "# and systemd restarts the daemon.");
    line(w, "WatchdogSec=60s");
    line(
        w,
        "# Restart after a crash or a watchdog timeout, but not after exit code 2 (a bad",
    );
    line(
        w,
        "# config): that will not fix itself, and the error is in the journal.",
    );
    line(w, "Restart=on-failure");
    line(w, "RestartSec=10s");
    line(w, "RestartPreventExitStatus=2");
    line(
        w,
        "# SIGTERM starts an orderly shutdown (STOPPING=1); in-flight jobs are re-queued on the",
    );
    line(w, "# next start even after SIGKILL.");
    line(w, "KillSignal=SIGTERM");
    line(w, "TimeoutStopSec=30");
    line(
        w,
        "# A backup is background work: a NAS stays responsive while it hashes and uploads.",
    );
    line(w, "Nice=10");
    line(w, "IOSchedulingClass=idle");
    line(w, "");
    if !spec.user {
        line(w, "# --- Identity and secrets ------------------------------------------------------------");
        line(w, "# A dynamic user reads photos that are readable by \"others\" (the usual 0644/0755). For");
        line(
            w,
            "# folders only their owner can read, run as that owner instead, in a drop-in:",
        );
        line(w, "#   DynamicUser=no");
        line(w, "#   User=ann");
        line(w, "DynamicUser=yes");
        if let Some(key) = &spec.key_file {
            line(w, "# The API key, from a root-only file (chmod 600), handed over without the service user");
            line(
                w,
                "# ever being able to read the file itself. immish-sync reads it from",
            );
            let _ = writeln!(
                w,
                "# $CREDENTIALS_DIRECTORY/{KEY_CREDENTIAL} before any other key source. With a"
            );
            line(w, "# password login (email + password_file) remove this line: the unit fails to start when");
            line(w, "# the file is missing.");
            let _ = writeln!(w, "LoadCredential={KEY_CREDENTIAL}:{key}");
        }
        line(w, "");
    }
    line(
        w,
        "# --- Filesystem ----------------------------------------------------------------------",
    );
    line(
        w,
        "# The whole file system is read-only to the service, except its state directory.",
    );
    line(w, "ProtectSystem=strict");
    match &spec.state {
        StateDir::Managed(name) => {
            line(
                w,
                "# /var/lib/<name>, also exported as $STATE_DIRECTORY: leave [state] dir unset or",
            );
            line(w, "# point it there.");
            let _ = writeln!(w, "StateDirectory={name}");
            line(w, "StateDirectoryMode=0700");
        }
        StateDir::Path(p) => {
            line(
                w,
                "# The state directory ([state] dir); it must exist before the service starts.",
            );
            let _ = writeln!(w, "ReadWritePaths={p}");
        }
    }
    if !spec.user {
        line(
            w,
            "# Photos under /home must stay readable: read-only, not hidden.",
        );
        line(w, "ProtectHome=read-only");
    }
    line(
        w,
        "# The photo roots, listed so that the intent is explicit: the daemon never writes to",
    );
    line(
        w,
        "# them. The leading \"-\" keeps the unit starting when a root is not mounted (a missing",
    );
    line(w, "# root is paused, not treated as deleted).");
    for r in spec.roots.iter().filter(|r| !spec.writable.contains(r)) {
        let _ = writeln!(w, "ReadOnlyPaths=-{r}");
    }
    if !spec.writable.is_empty() {
        line(
            w,
            "# after_upload = \"archive\" or \"delete\": the only paths the daemon removes files",
        );
        line(
            w,
            "# from or moves them to. An archive folder must exist before the service starts.",
        );
        for p in &spec.writable {
            let _ = writeln!(w, "ReadWritePaths=-{p}");
        }
    }
    if !spec.pull.is_empty() {
        line(
            w,
            "# The [[pull]] folders: copies of the server's originals are written there. Create",
        );
        line(
            w,
            "# each before the first start (\"-\": a missing one does not stop the unit).",
        );
        for p in &spec.pull {
            let _ = writeln!(w, "ReadWritePaths=-{p}");
        }
    }
    line(w, "PrivateTmp=yes");
    if !spec.user {
        line(w, "PrivateDevices=yes");
    }
    line(
        w,
        "# Files the daemon creates (database, journal) are private to it.",
    );
    line(w, "UMask=0077");
    line(w, "");
    line(
        w,
        "# --- Privileges and kernel -----------------------------------------------------------",
    );
    line(w, "NoNewPrivileges=yes");
    if !spec.user {
        line(w, "# No capabilities at all: the daemon reads files it is allowed to read and talks HTTP.");
        line(w, "CapabilityBoundingSet=");
        line(w, "AmbientCapabilities=");
        line(w, "ProtectKernelTunables=yes");
        line(w, "ProtectKernelModules=yes");
        line(w, "ProtectKernelLogs=yes");
        line(w, "ProtectControlGroups=yes");
        line(w, "ProtectClock=yes");
        line(w, "ProtectHostname=yes");
        line(w, "ProtectProc=invisible");
        line(w, "RemoveIPC=yes");
    }
    line(w, "RestrictNamespaces=yes");
    line(w, "RestrictRealtime=yes");
    line(w, "RestrictSUIDSGID=yes");
    line(w, "LockPersonality=yes");
    line(w, "MemoryDenyWriteExecute=yes");
    line(
        w,
        "# HTTP(S) over IPv4/IPv6, and AF_UNIX for name resolution and sd_notify.",
    );
    line(w, "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6");
    line(w, "");
    line(
        w,
        "# --- System calls --------------------------------------------------------------------",
    );
    line(w, "SystemCallArchitectures=native");
    line(w, "SystemCallFilter=@system-service");
    line(w, "SystemCallFilter=~@privileged @resources");
    line(
        w,
        "# A refused call fails with EPERM instead of killing the process.",
    );
    line(w, "SystemCallErrorNumber=EPERM");
    line(w, "");
    line(w, "[Install]");
    if spec.user {
        line(w, "WantedBy=default.target");
    } else {
        line(w, "WantedBy=multi-user.target");
    }
    u
}

fn line(w: &mut String, s: &str) {
    w.push_str(s);
    w.push('\n');
}

/// Writes `text` to `path` (creating its folder), replacing what was there.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(rel: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The packaged units are this renderer's output: a change here is a change there.
    #[test]
    fn the_packaged_units_are_the_rendered_ones() {
        assert_eq!(
            repo_file("packaging/systemd/immish-sync.service"),
            render(&UnitSpec::packaged_system()),
            "regenerate with: immish-sync generate unit > packaging/systemd/immish-sync.service"
        );
        assert_eq!(
            repo_file("packaging/systemd/user/immish-sync.service"),
            render(&UnitSpec::packaged_user()),
            "regenerate with: immish-sync generate unit --user > packaging/systemd/user/immish-sync.service"
        );
    }

    #[test]
    fn a_machine_unit_names_its_paths() {
        let spec = UnitSpec::for_machine(
            false,
            Path::new("/usr/local/bin/immish-sync"),
            Path::new("/etc/immish-sync/config.toml"),
            &[
                PathBuf::from("/srv/photos"),
                PathBuf::from("/mnt/My Photos 100%"),
            ],
            Path::new("/var/lib/immish-sync"),
            Some(Path::new("/etc/immish-sync/api-key")),
        );
        let u = render(&spec);
        assert!(u.contains(
            "\nExecStart=/usr/local/bin/immish-sync run --config /etc/immish-sync/config.toml\n"
        ));
        assert!(u.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"), "{u}");
        assert!(u.contains("\nReadOnlyPaths=-/srv/photos\n"));
        assert!(
            u.contains("\nReadOnlyPaths=-\"/mnt/My Photos 100%%\"\n"),
            "{u}"
        );
        assert!(u.contains("\nStateDirectory=immish-sync\n"));
        assert!(!u.contains("ReadWritePaths="));
        assert!(u.contains("\nLoadCredential=immish-sync-api-key:/etc/immish-sync/api-key\n"));
        assert!(u.contains("\nType=notify\n") && u.contains("\nWatchdogSec="));
        assert!(u.contains("\nNice=") && u.contains("\nIOSchedulingClass=idle\n"));
    }

    #[test]
    fn a_user_unit_grants_its_state_dir_and_keeps_no_system_only_settings() {
        let spec = UnitSpec::for_machine(
            true,
            Path::new("/home/ann/.cargo/bin/immish-sync"),
            Path::new("/home/ann/.config/immish-sync/config.toml"),
            &[PathBuf::from("/home/ann/Pictures")],
            Path::new("/home/ann/.local/state/immish-sync"),
            Some(Path::new("/ignored")),
        );
        let u = render(&spec);
        assert!(u.contains("\nReadWritePaths=/home/ann/.local/state/immish-sync\n"));
        assert!(u.contains("\nReadOnlyPaths=-/home/ann/Pictures\n"));
        assert!(u.contains("\nWantedBy=default.target\n"));
        for system_only in [
            "DynamicUser",
            "LoadCredential",
            "CapabilityBoundingSet",
            "ProtectHome",
            "PrivateDevices",
            "network-online",
        ] {
            assert!(
                !u.contains(system_only),
                "{system_only} in a user unit:\n{u}"
            );
        }
    }

    #[test]
    fn roots_that_archive_or_delete_and_their_archives_are_writable() {
        let spec = UnitSpec::for_machine(
            false,
            Path::new("/usr/bin/immish-sync"),
            Path::new("/etc/immish-sync/config.toml"),
            &[PathBuf::from("/srv/photos"), PathBuf::from("/srv/inbox")],
            Path::new("/var/lib/immish-sync"),
            None,
        )
        .with_writable(&[PathBuf::from("/srv/inbox"), PathBuf::from("/srv/archive")]);
        let u = render(&spec);
        assert!(u.contains("\nReadOnlyPaths=-/srv/photos\n"), "{u}");
        assert!(!u.contains("ReadOnlyPaths=-/srv/inbox"), "{u}");
        assert!(u.contains("\nReadWritePaths=-/srv/inbox\n"), "{u}");
        assert!(u.contains("\nReadWritePaths=-/srv/archive\n"), "{u}");
        assert_eq!(u.matches("ReadWritePaths=").count(), 2, "{u}");
    }

    #[test]
    fn pull_folders_are_granted_write_access() {
        let spec = UnitSpec::for_machine(
            false,
            Path::new("/usr/bin/immish-sync"),
            Path::new("/etc/immish-sync/config.toml"),
            &[PathBuf::from("/srv/photos")],
            Path::new("/var/lib/immish-sync"),
            None,
        )
        .with_pull_folders(&[PathBuf::from("/srv/copy of photos")]);
        let u = render(&spec);
        assert!(
            u.contains("\nReadWritePaths=-\"/srv/copy of photos\"\n"),
            "{u}"
        );
        assert!(u.contains("\nReadOnlyPaths=-/srv/photos\n"), "{u}");
    }

    #[test]
    fn a_state_dir_elsewhere_is_granted_as_a_path() {
        let spec = UnitSpec::for_machine(
            false,
            Path::new("/usr/bin/immish-sync"),
            Path::new("/etc/immish-sync/config.toml"),
            &[],
            Path::new("/srv/state"),
            None,
        );
        let u = render(&spec);
        assert!(u.contains("\nReadWritePaths=/srv/state\n"));
        assert!(!u.contains("StateDirectory=") && !u.contains("LoadCredential="));
    }
}
