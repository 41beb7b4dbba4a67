//! The `immish-sync` command: parses the command line, sets up logging, loads the config
//! and calls the library. Every error ends here, printed whole, with an exit code:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; for `scan`: every file is on the server |
//! | 1 | `scan` finished but some files are not backed up (listed), or a runtime error |
//! | 2 | the config is broken (file, line and key named) |
//! | 3 | the server cannot be reached or refuses the credentials |
//! | 4 | another immish-sync holds the state directory |
//!
//! `scan` exits 0 when the only files not uploaded are ones whose photos the user deleted for
//! good on the server: a deliberate deletion is the user's wish, so the summary notes them
//! and a cron job does not fail on every later run. It exits 1 when a file's only server
//! copy is in the server's trash (listed): the trash empties itself, and then it is lost.
//!
//! Standard output closed early (`immish-sync status | head -1`) is not an error: the output
//! stops there and the exit code is the command's own. Everything goes through [`say!`] and
//! [`sayln!`], never `print!`, whose broken-pipe panic would exit 101.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use immish_sync::config::{self, Config, LogFormat};
use immish_sync::daemon::{self, DaemonError};
use immish_sync::pipeline::EngineEnd;
use immish_sync::service::{journal, unit};
use immish_sync::{control, human, mirror, setup, status};

/// Set once a write to standard output met a closed pipe: nothing more is written.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to standard output whole. A reader that went away (`| head`) ends the
/// output quietly; any other error is reported once on stderr.
fn write_stdout(text: &str) {
    use std::io::Write as _;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to standard output: {e}");
        }
    }
}

/// `print!` that survives a closed standard output (see the module docs).
macro_rules! say {
    ($($arg:tt)*) => { write_stdout(&format!($($arg)*)) };
}

/// `println!` that survives a closed standard output (see the module docs).
macro_rules! sayln {
    () => { write_stdout("\n") };
    ($($arg:tt)*) => { write_stdout(&format!("{}\n", format_args!($($arg)*))) };
}

#[derive(Parser, Debug)]
#[command(
    name = "immish-sync",
    version,
    about = "Back up photo folders to an Immich server, exactly once"
)]
struct Cli {
    /// The config file [default: $IMMISH_SYNC_CONFIG, /etc/immish-sync/config.toml for root,
    /// else ~/.config/immish-sync/config.toml]
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace); overrides [log] level.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: scan, upload, rescan periodically, until SIGTERM or SIGINT.
    Run,
    /// Scan the roots once, upload what is missing, then bring the [[pull]] folders up to
    /// date, and exit (0 when all is backed up).
    Scan {
        /// Only say what would be uploaded, per root (files, bytes, already backed up,
        /// already on the server by the mirror, excluded): nothing is sent, the state is not
        /// changed, the server is not contacted.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: list the files that would be uploaded.
        #[arg(long, requires = "dry_run")]
        list: bool,
        /// Do not download into the [[pull]] folders this time (they are left as they are).
        #[arg(long, conflicts_with = "dry_run")]
        no_pull: bool,
    },
    /// Show the queue, recent failures and the last backup (works while the daemon runs).
    Status {
        /// Print JSON (its fields are documented in docs/STATUS.md and only ever added to).
        #[arg(long)]
        json: bool,
    },
    /// Check the config file (and, unless --offline, that the server accepts it).
    CheckConfig {
        /// Do not contact the server.
        #[arg(long)]
        offline: bool,
    },
    /// Queue failed files again; a running daemon takes them at once.
    Retry {
        /// Only the failed files of this root (as in the config).
        #[arg(long, value_name = "PATH")]
        root: Option<PathBuf>,
        /// Only this account (`default` is `[server]`'s); without it and --root, every
        /// account.
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Stop starting uploads (of every root, or of one) until `resume`, also across
    /// restarts; an upload in flight finishes, watching and hashing go on.
    Pause {
        /// Only this root (as in the config).
        #[arg(long, value_name = "PATH")]
        root: Option<PathBuf>,
        /// Only this account (`default` is `[server]`'s); without it and --root, every
        /// account.
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Lift `pause` (every pause, or that of one root).
    Resume {
        /// Only this root's pause.
        #[arg(long, value_name = "PATH")]
        root: Option<PathBuf>,
        /// Only this account (`default` is `[server]`'s); without it and --root, every
        /// account.
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Why a file is not on the server (excluded, waiting, queued, failed, held back), or
    /// which asset it is. Exit 0 when it is on the server, 1 otherwise.
    Explain { path: PathBuf },
    /// Have the running daemon walk every root (or one) now.
    Rescan {
        /// Only this root.
        #[arg(long, value_name = "PATH")]
        root: Option<PathBuf>,
        /// Only this account (`default` is `[server]`'s); without it and --root, every
        /// account.
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Show the mirror of the server: assets by state, tombstones, the last pull, live events.
    Mirror {
        /// Also list what differs between the local files and the server (as `diff`).
        #[arg(long)]
        diff: bool,
    },
    /// List local files that are not on the server, and server assets that came from this
    /// machine whose local file is gone (as of the mirror's last pull).
    Diff,
    /// Write a config: asks for the server, the API key and the folders (or takes them as
    /// flags), checks them against the server, then writes the file (mode 0600). Exit 3 when
    /// the server refuses the key (nothing is written), 2 for a missing or invalid value.
    Init {
        /// The server's base URL (the address of the Immich web page).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// A file holding the API key (mode 0600), referenced from the config as it is;
        /// `-` reads the key from stdin and copies it into `api-key` beside the config.
        #[arg(long, value_name = "PATH")]
        api_key_file: Option<PathBuf>,
        /// A folder to back up (repeat for several).
        #[arg(long = "root", value_name = "PATH")]
        roots: Vec<PathBuf>,
        /// Where the database lives [default: as for the daemon].
        #[arg(long, value_name = "PATH")]
        state_dir: Option<PathBuf>,
        /// Replace an existing config (and key file).
        #[arg(long)]
        force: bool,
    },
    /// Check the install, one line per check (ok/info/warn/fail, with the fix): config,
    /// server, key, clock, state directory, inotify limits, roots. Exit 1 when a check
    /// fails, 2 when the config is broken.
    Doctor,
    /// Run under the service manager (systemd).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Try it: the real daemon against a test server started inside this process on
    /// 127.0.0.1, backing up FOLDER (only read) or a sample library it writes, printing what
    /// reaches the server, then watching for new files until Ctrl-C. Reads no config.
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo {
        /// A folder of photos and videos [default: a generated sample library].
        folder: Option<PathBuf>,
    },
    /// Shell completions, the man page and the packaged units, from these definitions.
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

#[derive(Subcommand, Debug)]
enum ServiceAction {
    /// Write the systemd unit for this machine's config (its path, roots and state
    /// directory) and print the commands that enable it.
    Install {
        /// A user service (~/.config/systemd/user) instead of a system one.
        #[arg(long)]
        user: bool,
        /// Print the unit instead of writing it.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Generate {
    /// Completions for a shell, on stdout.
    Completions { shell: clap_complete::Shell },
    /// The man page (roff), on stdout.
    Man,
    /// The packaged systemd unit (packaging/systemd), on stdout.
    Unit {
        #[arg(long)]
        user: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // These need no config: the .deb is built from them on a machine without one.
    if let Command::Generate { what } = &cli.command {
        return generate(what);
    }
    // The demo writes its own config and touches no other.
    if let Command::Demo { folder } = &cli.command {
        return demo(&cli, folder.clone());
    }
    let path = cli
        .config
        .clone()
        .unwrap_or_else(config::default_config_path);
    // `init` writes the config and `doctor` reports a broken one as a line of its own:
    // neither loads it first.
    if matches!(cli.command, Command::Init { .. } | Command::Doctor) {
        let level = match cli.verbose {
            0 => "off",
            1 => "debug",
            _ => "trace",
        };
        return setup(cli.command, path, level);
    }
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cli, &config);
    let runtime = match multi_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(dispatch(cli.command, config))
}

/// The runtime of the daemon's commands; when it cannot start, the message is printed and
/// the exit code returned.
fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
}

/// Runs `init` or `doctor`. Their output is their report, so the log is off unless -v asks
/// (the api's own warnings, e.g. about a key that can delete, are said by them, once).
fn setup(command: Command, path: PathBuf, level: &str) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(immish_sync::logfilter::env_filter(level))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match command {
        Command::Init {
            url,
            api_key_file,
            roots,
            state_dir,
            force,
        } => {
            let args = setup::init::InitArgs {
                config: path,
                url,
                api_key_file,
                roots,
                state_dir,
                force,
            };
            let mut out = std::io::stdout();
            match runtime.block_on(setup::init::run(args, &mut out)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        _ => ExitCode::from(runtime.block_on(setup::doctor::run(&path))),
    }
}

/// `demo`: its report is the output, so the daemon logs only warnings unless -v asks.
#[cfg(feature = "demo")]
fn demo(cli: &Cli, folder: Option<PathBuf>) -> ExitCode {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        // The key the demo made for its own server has every permission (live events need
        // it): the warning meant for a user's key would only be noise here.
        (false, 0) => "warn,immish_sync::api::auth=error",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(immish_sync::logfilter::env_filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(journal::stderr_wants_colour())
        .with_target(false)
        .try_init();
    let runtime = match multi_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let options = immish_sync::demo::Options { folder };
    let result = runtime.block_on(async {
        let token = CancellationToken::new();
        cancel_on_signals(token.clone());
        immish_sync::demo::run(options, &|text| write_stdout(text), token).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `demo` in a build without it (the packaged one): how to get it.
#[cfg(not(feature = "demo"))]
fn demo(_cli: &Cli, _folder: Option<PathBuf>) -> ExitCode {
    eprintln!(
        "error: this immish-sync was built without the demo (cargo feature `demo`, left out of \
         the packages). From a clone of the repository: `cargo run -- demo [FOLDER]`"
    );
    ExitCode::from(1)
}

fn init_logging(cli: &Cli, config: &Config) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn".to_string(),
        (false, 0) => config.log.level.clone(),
        (false, 1) => "debug".to_string(),
        (false, _) => "trace".to_string(),
    };
    let filter = immish_sync::logfilter::env_filter(&level);
    // Colour only on a terminal: escapes in a file, a pipe or the journal are noise.
    let journal = journal::stderr_is_journal();
    let ansi = !journal && journal::stderr_wants_colour();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    match (config.log.format, journal) {
        (LogFormat::Json, _) => builder.json().init(),
        // journald stamps each line itself and reads the level from a `<N>` prefix.
        (LogFormat::Text, true) => builder.event_format(journal::Journald::standard()).init(),
        (LogFormat::Text, false) => builder.init(),
    }
}

fn generate(what: &Generate) -> ExitCode {
    use clap::CommandFactory;
    let mut out = std::io::stdout().lock();
    let written = match what {
        Generate::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "immish-sync", &mut out);
            Ok(())
        }
        Generate::Man => clap_mangen::Man::new(Cli::command()).render(&mut out),
        Generate::Unit { user } => {
            let spec = if *user {
                unit::UnitSpec::packaged_user()
            } else {
                unit::UnitSpec::packaged_system()
            };
            out.write_all(unit::render(&spec).as_bytes())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

/// `service install`: the unit for this binary, this config file, its roots and state.
/// What `after_upload` makes the service write to: each root that archives or deletes, and
/// each archive folder (docs/ARCHITECTURE.md#after-upload).
fn after_upload_paths(config: &Config, absolute: impl Fn(&Path) -> PathBuf) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for r in config.roots.iter().filter(|r| r.after_upload.removes()) {
        out.push(absolute(&r.path));
        if let immish_sync::config::AfterUploadAction::Archive(dir) = &r.after_upload.action {
            out.push(absolute(dir));
        }
    }
    out
}

fn service_install(config: &Config, user: bool, dry_run: bool) -> ExitCode {
    let exe = match std::env::current_exe().and_then(|p| p.canonicalize()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot tell where this binary is: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(source) = &config.source else {
        eprintln!(
            "error: the service needs a config file: write one (`immish-sync init`), or pass --config"
        );
        return ExitCode::from(2);
    };
    // The service starts in another directory: every path in the unit is absolute.
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let config_path = source.canonicalize().unwrap_or_else(|_| absolute(source));
    let roots: Vec<PathBuf> = config.roots.iter().map(|r| absolute(&r.path)).collect();
    let state_dir = absolute(&config.state.dir);
    // The key file next to the config, handed over as a credential when it exists.
    let key_file = config_path
        .parent()
        .map(|d| d.join("api-key"))
        .filter(|k| k.is_file());
    let spec = unit::UnitSpec::for_machine(
        user,
        &exe,
        &config_path,
        &roots,
        &state_dir,
        key_file.as_deref(),
    )
    .with_writable(&after_upload_paths(config, absolute))
    .with_pull_folders(
        &config
            .pull
            .iter()
            .map(|p| absolute(&p.path))
            .collect::<Vec<_>>(),
    );
    let text = unit::render(&spec);
    let Some(target) = unit::install_path(user) else {
        eprintln!("error: neither XDG_CONFIG_HOME nor HOME is set: cannot place a user unit");
        return ExitCode::from(1);
    };
    if !user {
        use std::os::unix::fs::PermissionsExt;
        let readable = std::fs::metadata(&config_path)
            .map(|m| m.permissions().mode() & 0o004 != 0)
            .unwrap_or(false);
        if !readable {
            eprintln!(
                "warning: {} is not readable by others, so the service's dynamic user cannot \
                 read it: keep the key in {} (LoadCredential=) and make the config 0644, or run \
                 the service as the config's owner (DynamicUser=no, User=...) in a drop-in",
                config_path.display(),
                config_path.with_file_name("api-key").display()
            );
        }
    }
    if dry_run {
        // The unit alone on stdout, so that it can be redirected into a file.
        eprintln!("would be written to {}", target.display());
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    // A user unit grants its state directory with ReadWritePaths=, which must exist.
    if let unit::StateDir::Path(_) = spec.state {
        if let Err(e) = std::fs::create_dir_all(&state_dir) {
            eprintln!("error: cannot create {}: {e}", state_dir.display());
            return ExitCode::from(1);
        }
    }
    if let Err(e) = unit::write(&target, &text) {
        let hint = if user {
            ""
        } else {
            " (a system unit needs root: sudo, or --user for a user service)"
        };
        eprintln!("error: cannot write {}: {e}{hint}", target.display());
        return ExitCode::from(1);
    }
    println!("wrote {}", target.display());
    println!("enable and start it with:");
    for c in unit::enable_commands(user) {
        println!("  {c}");
    }
    ExitCode::SUCCESS
}

/// Cancels `token` on the first SIGTERM or SIGINT.
fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot listen for SIGTERM/SIGINT");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        token.cancel();
    });
}

/// Reads the config again on every SIGHUP, with the checks of a start, and hands the
/// result to the daemon (docs/ARCHITECTURE.md#reload). Installed before the daemon starts,
/// so that a SIGHUP never ends it (the default action of the signal).
fn reload_on_sighup(path: Option<PathBuf>) -> tokio::sync::mpsc::Receiver<daemon::Reloaded> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let new = match &path {
                        Some(p) => {
                            tracing::info!("SIGHUP: reading {} again", p.display());
                            config::load(p).map_err(|e| e.to_string())
                        }
                        None => Err("the daemon was started without a config file".into()),
                    };
                    if tx.send(new).await.is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP (no config reload): {e}"),
    }
    rx
}

fn exit_code_of(e: &DaemonError) -> ExitCode {
    match e {
        DaemonError::Connect(_) => ExitCode::from(3),
        DaemonError::Lock(_) => ExitCode::from(4),
        _ => ExitCode::from(1),
    }
}

async fn dispatch(command: Command, config: Config) -> ExitCode {
    match command {
        Command::Run => {
            let token = CancellationToken::new();
            cancel_on_signals(token.clone());
            let reloads = reload_on_sighup(config.source.clone());
            match daemon::run_reloading_default(config, token, Some(reloads)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit_code_of(&e)
                }
            }
        }
        Command::Scan {
            dry_run: true,
            list,
            ..
        } => match tokio::task::spawn_blocking(move || immish_sync::dryrun::dry_run(&config, list))
            .await
        {
            Ok(Ok(d)) => {
                say!("{}", d.render());
                ExitCode::SUCCESS
            }
            Ok(Err(e)) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: the dry run failed: {e}");
                ExitCode::from(1)
            }
        },
        Command::Scan { no_pull, .. } => {
            let token = CancellationToken::new();
            cancel_on_signals(token.clone());
            let mut config = config;
            if no_pull {
                // docs/ARCHITECTURE.md#commands: a scan without [[pull]] pulls nothing.
                config.pull.clear();
            }
            match daemon::scan(config, token).await {
                Ok(summary) => print_scan(&summary),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit_code_of(&e)
                }
            }
        }
        Command::Status { json } => match status::read(&config.state.dir) {
            Ok(Some(s)) if json => match serde_json::to_string_pretty(&s) {
                Ok(text) => {
                    sayln!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot write the status as JSON: {e}");
                    ExitCode::from(1)
                }
            },
            Ok(Some(s)) => {
                say!("{}", s.render());
                if let Some(note) = s.other_server_note(config.server.url.as_str()) {
                    sayln!("{note}");
                }
                ExitCode::SUCCESS
            }
            Ok(None) if json => {
                // docs/STATUS.md#status-json: the same schema field, and nothing else.
                sayln!("{{\"schema\": {}, \"no_state\": true}}", status::SCHEMA);
                ExitCode::SUCCESS
            }
            Ok(None) => {
                sayln!(
                    "no state yet in {}: run `immish-sync scan` or start the daemon",
                    config.state.dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::CheckConfig { offline } => check_config(config, offline).await,
        Command::Mirror { diff } => show_mirror(&config, diff),
        Command::Diff => show_diff(&config),
        Command::Init { .. } | Command::Doctor | Command::Demo { .. } => {
            unreachable!("dispatched before the config loads")
        }
        Command::Service {
            action: ServiceAction::Install { user, dry_run },
        } => service_install(&config, user, dry_run),
        Command::Generate { what } => generate(&what),
        Command::Retry { account, root } => {
            retry(&config, account.as_deref(), root.as_deref()).await
        }
        Command::Pause { root, account } => control_command(
            control::accounts::pause(&config, account.as_deref(), root.as_deref()).await,
        ),
        Command::Resume { root, account } => control_command(
            control::accounts::resume(&config, account.as_deref(), root.as_deref()).await,
        ),
        Command::Explain { path } => match immish_sync::explain::explain(&config, &path) {
            Ok(e) => {
                say_lines(&e.lines);
                if e.on_server {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::Rescan { root, account } => control_command(
            control::accounts::rescan(&config, account.as_deref(), root.as_deref()).await,
        ),
    }
}

/// `retry [--account NAME] [--root PATH]`: every account's failed files (or one account's,
/// or one root's) queued again.
async fn retry(config: &Config, account: Option<&str>, root: Option<&Path>) -> ExitCode {
    let targets = match control::accounts::targets(config, account, root) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let mut lines = Vec::new();
    for t in targets {
        match control::retry(&t.config, t.root.as_deref()).await {
            Ok(None) => {}
            Ok(Some(l)) => lines.extend(t.name_lines(l)),
            Err(e) => {
                eprintln!("error: {e}");
                return exit_code_of(&DaemonError::from(e));
            }
        }
    }
    if lines.is_empty() {
        sayln!(
            "nothing to retry: no state yet at {}",
            config.state.dir.display()
        );
        return ExitCode::SUCCESS;
    }
    say_lines(&lines)
}

fn say_lines(lines: &[String]) -> ExitCode {
    for l in lines {
        sayln!("{l}");
    }
    ExitCode::SUCCESS
}

fn control_command(r: Result<Vec<String>, control::CommandError>) -> ExitCode {
    match r {
        Ok(lines) => say_lines(&lines),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn no_state(config: &Config) -> ExitCode {
    sayln!(
        "no mirror yet in {}: run `immish-sync scan` or start the daemon",
        config.state.dir.display()
    );
    ExitCode::SUCCESS
}

fn show_mirror(config: &Config, diff: bool) -> ExitCode {
    match mirror::report::read(&config.state.dir) {
        Ok(Some(r)) => say!("{}", r.render()),
        Ok(None) => return no_state(config),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    if diff {
        sayln!();
        return show_diff(config);
    }
    ExitCode::SUCCESS
}

fn show_diff(config: &Config) -> ExitCode {
    match mirror::report::diff(&config.state.dir, config.upload.device_id.as_deref()) {
        Ok(Some(d)) => {
            say!("{}", d.render());
            ExitCode::SUCCESS
        }
        Ok(None) => no_state(config),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn check_config(config: Config, offline: bool) -> ExitCode {
    let source = config
        .source
        .as_ref()
        .map_or("(no file)".to_string(), |p| p.display().to_string());
    sayln!("config {source}: ok");
    sayln!("  server:  {}", config.server.url);
    sayln!("  state:   {}", config.state.dir.display());
    for r in &config.roots {
        // A root that is a file is a typo or a mount gone wrong, not a missing folder.
        let exists = match std::fs::metadata(&r.path) {
            Ok(m) if m.is_dir() => "",
            Ok(_) => "  (is not a directory: it will be paused)",
            Err(_) => "  (not found: it will be paused)",
        };
        sayln!("  root:    {}{exists}", r.path.display());
    }
    if offline {
        return ExitCode::SUCCESS;
    }
    match immish_sync::api::ApiClient::connect(&config.server).await {
        Ok(api) => {
            sayln!(
                "  connected: {} ({:?} dialect), user {}",
                api.api_root(),
                api.dialect(),
                api.user_id()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot connect to the server: {e}");
            ExitCode::from(3)
        }
    }
}

/// The `[[pull]]` part of a `scan`'s summary (docs/ARCHITECTURE.md#pull).
fn print_pull(p: &immish_sync::originals::PullSummary) {
    let folders: Vec<String> = p.folders.iter().map(|f| f.display().to_string()).collect();
    sayln!("pulled {} originals into {}", p.pulled, folders.join(", "));
    if p.no_permission {
        sayln!(
            "not pulled: the API key lacks {}; add it to the key in Immich",
            immish_sync::originals::PERMISSION
        );
    }
    if p.failed > 0 || p.pending > 0 {
        sayln!(
            "not pulled yet: {} failed, {} pending (a later scan or the daemon tries again){}",
            p.failed,
            p.pending,
            p.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
    }
}

fn print_scan(s: &daemon::ScanSummary) -> ExitCode {
    use std::sync::atomic::Ordering::Relaxed;
    let scanned = s.scanned();
    let st = &s.stats;
    let secs = s.elapsed.as_secs_f64().max(0.001);
    let bytes = st.uploaded_bytes.load(Relaxed);
    sayln!(
        "scanned {} files ({} new or changed) in {:.1}s",
        scanned.files,
        scanned.queued,
        secs
    );
    sayln!(
        "uploaded {} ({}, {}), already on the server {}, linked {}, skipped {}",
        st.uploaded.load(Relaxed),
        human::megabytes(bytes),
        human::megabytes_per_second(bytes, s.elapsed),
        st.duplicates.load(Relaxed),
        st.linked.load(Relaxed),
        st.skipped.load(Relaxed),
    );
    for (root, outcome) in &s.roots {
        if let immish_sync::scan::RootOutcome::Paused { reason } = outcome {
            sayln!("root {} paused: {reason}", root.display());
        }
    }
    if scanned.fresh > 0 {
        sayln!(
            "{} files changed within the last {:?} and may still be being written: not taken \
             this time; scan again later (the daemon takes them once they settle)",
            scanned.fresh,
            s.settle
        );
    }
    if scanned.skipped.total() > 0 {
        sayln!(
            "skipped: {} (never followed or read; only regular files are backed up)",
            scanned.skipped
        );
    }
    if scanned.junk + scanned.ignored > 0 {
        sayln!(
            "passed over: {} junk (skip_junk), {} by exclude, .immishignore or .nomedia",
            scanned.junk,
            scanned.ignored
        );
    }
    if scanned.late_sidecars > 0 {
        sayln!(
            "{} sidecars were created or edited after their photo was uploaded: not sent again \
             (the log names them)",
            scanned.late_sidecars
        );
    }
    for (root, outcome) in &s.roots {
        if let immish_sync::scan::RootOutcome::Scanned(r) = outcome {
            for p in &r.unmatched {
                sayln!(
                    "warning: root {}: exclude pattern {p:?} matched nothing",
                    root.display()
                );
            }
        }
    }
    if !scanned.waiting.is_empty() {
        println!(
            "{} files look unfinished and were not taken this time (taken once whole, or after \
             watch.incomplete_limit):",
            scanned.waiting.len()
        );
        for f in scanned.waiting.iter().take(10) {
            println!("  {}: {}", f.path.display(), f.reason);
        }
    }
    for root in &s.held_roots {
        sayln!(
            "root {root} is paused (`immish-sync resume --root {root}` lifts it): its files are \
             not uploaded"
        );
    }
    if let EngineEnd::Paused(p) = &s.end {
        sayln!("stopped: {}", p.message());
    }
    if s.deleted_held_back > 0 {
        // A deliberate deletion is the user's wish: noted, and no reason to fail every
        // later run from cron.
        sayln!(
            "note: {} files are not uploaded because their photos were deleted on the server \
             (mirror.reupload_deleted = true changes that; `immish-sync diff` lists them)",
            s.deleted_held_back
        );
    }
    if s.trash_only_total > 0 {
        sayln!(
            "NOT backed up: {} files are in the server's trash only: restore them or they \
             will be lost when the trash empties",
            s.trash_only_total
        );
        for p in &s.trash_only {
            sayln!("  {}", String::from_utf8_lossy(p));
        }
    }
    if let Some(p) = &s.pull {
        print_pull(p);
    }
    if s.is_complete() {
        sayln!("all files are backed up");
        return ExitCode::SUCCESS;
    }
    if s.failed_total > 0 || s.pending > 0 {
        sayln!(
            "NOT backed up: {} failed, {} still waiting (a later scan or the daemon retries them)",
            s.failed_total,
            s.pending
        );
        for f in &s.failed {
            sayln!(
                "  {}: {}",
                String::from_utf8_lossy(&f.path),
                f.reason.as_deref().unwrap_or("unknown reason")
            );
        }
    }
    if matches!(&s.end, EngineEnd::Paused(p) if p.is_auth()) {
        return ExitCode::from(3);
    }
    ExitCode::from(1)
}
