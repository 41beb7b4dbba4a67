//! The mirror of the server: first inventory, incremental pulls, live events, full
//! reconcile, tombstones, and what the user sees of them (`status`, `mirror`, `diff`).
//!
//! Each test runs against the test server in the dialects where the feature exists: API-key
//! pulls (`/search/metadata`) on v2.7.5 and the next major, the sync stream with a password
//! login, the `GET /assets` listing on the seed. Daemon tests run `run_with` in a task and
//! set `mirror.pull_interval` to an hour where only live events may deliver a change.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use immish_sync::api::ApiClient;
use immish_sync::config::{self, Config, Credentials, MirrorConfig, Secret, ServerConfig};
use immish_sync::daemon::{self, DaemonError};
use immish_sync::db::Db;
use immish_sync::mirror::{self, Mirror, PullKind, Source};
use immish_sync::model::SkipReason;
use immish_testserver::{Dialect, NewAsset, TestServer, Visibility};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, jpeg, sha1_hex, World};

/// A world whose server sends `on_upload_success` at once rather than 100 ms after the
/// upload, so that the event of a test's own earlier upload cannot land in the middle of
/// what the test checks next (its payload is the asset as it is when sent).
async fn world(dialect: Dialect) -> World {
    let server = TestServer::builder()
        .dialect(dialect)
        .upload_event_delay(Duration::ZERO)
        .start()
        .await;
    World::with_server(server)
}

/// How the daemon logs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Login {
    /// The admin's API key (permission `all`: live events work).
    Key,
    /// The admin's email and password (a session: the sync stream, live events).
    Password,
}

/// Writes a config for `w` with these credentials and `[mirror]` keys; the watcher is off
/// and the periodic scan an hour away, so that only the mirror moves anything.
fn config(w: &World, login: Login, mirror: &str) -> Config {
    let creds = match login {
        Login::Key => format!("api_key = \"{}\"", w.server.api_key()),
        Login::Password => format!(
            "email = \"{}\"\npassword = \"{}\"",
            w.server.admin_email(),
            w.server.admin_password()
        ),
    };
    config_with(w, &creds, mirror)
}

/// [`config`] with the `[server]` credential lines given.
fn config_with(w: &World, creds: &str, mirror: &str) -> Config {
    let text = format!(
        "[server]\nurl = \"{}\"\n{creds}\n[state]\ndir = \"{}\"\n\
         [upload]\nretry_initial = \"50ms\"\nretry_max = \"1s\"\n\
         [watch]\nmode = \"off\"\nsettle = \"0s\"\n[scan]\ninterval = \"1h\"\n\
         [mirror]\n{mirror}\n[[roots]]\npath = \"{}\"\n",
        w.server.base_url(),
        w.state_dir().display(),
        w.root().display(),
    );
    let path = w.config_path();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("test config must load: {e}"))
}

async fn connect(w: &World, login: Login) -> ApiClient {
    let credentials = match login {
        Login::Key => Credentials::ApiKey(Secret::new(w.server.api_key())),
        Login::Password => Credentials::Password {
            email: w.server.admin_email().to_owned(),
            password: Secret::new(w.server.admin_password()),
        },
    };
    ApiClient::connect(&ServerConfig {
        table: "server".into(),
        url: config::ServerUrl::parse(&w.server.base_url()).unwrap(),
        credentials,
        ca_file: None,
        allow_insecure_http: false,
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(10),
    })
    .await
    .expect("connect to the test server")
}

/// A mirror driven directly (no daemon), on the world's state database.
async fn direct(w: &World, login: Login) -> (Mirror, ApiClient) {
    std::fs::create_dir_all(w.state_dir()).unwrap();
    let db = Db::open(&w.state_dir().join("state.sqlite3")).unwrap();
    let api = connect(w, login).await;
    let settings = MirrorConfig {
        reupload_deleted: false,
        pull_interval: Duration::from_secs(3600),
        full_reconcile_interval: Duration::from_secs(86_400),
        events: false,
    };
    (Mirror::new(db, api.clone(), &settings, None), api)
}

/// One mirrored asset, as the state database holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    id: String,
    owner: String,
    visibility: String,
    trashed: bool,
    deleted: bool,
}

fn rows(w: &World) -> Vec<Row> {
    let db = w.db();
    // The visibility as the server's text, whatever its stored form (migration 0017).
    let mut stmt = db
        .prepare(&format!(
            "SELECT r.id, o.name, COALESCE({}, ''), r.is_trashed,
                    r.deleted_at IS NOT NULL
             FROM remote_assets r JOIN remote_ids o ON o.id = r.owner ORDER BY r.id",
            immish_sync::db::fields::visibility_text_sql("r.visibility")
        ))
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok(Row {
                id: immish_sync::db::ids::id(r, 0)?,
                owner: r.get(1)?,
                visibility: r.get(2)?,
                trashed: r.get(3)?,
                deleted: r.get(4)?,
            })
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

fn row(w: &World, id: &str) -> Option<Row> {
    rows(w).into_iter().find(|r| r.id == id)
}

/// A `meta` value; `None` also while the daemon has not created its database yet.
fn meta(w: &World, key: &str) -> Option<String> {
    if !w.state_dir().join("state.sqlite3").exists() {
        return None;
    }
    w.db()
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .ok()
}

/// What `status` says a file is skipped for when its asset was deleted on the server.
const DELETED_REASON: &str = SkipReason::DeletedOnServer.describe();

/// The job of a file: (state, reason as people read it: a skip's code rendered).
fn job(w: &World, path: &Path) -> Option<(String, Option<String>)> {
    w.db()
        .query_row(
            "SELECT j.state, j.reason, j.skip_reason FROM jobs j JOIN files f ON f.id = j.file_id
             WHERE f.path = ?1",
            [path.as_os_str().as_bytes()],
            |r| {
                let skip = r.get::<_, Option<String>>(2)?;
                let skip = skip.as_deref().and_then(SkipReason::from_code);
                Ok((
                    r.get(0)?,
                    skip.map(|s| s.describe().to_owned()).or(r.get(1)?),
                ))
            },
        )
        .ok()
}

fn tombstones(w: &World) -> i64 {
    w.db()
        .query_row("SELECT COUNT(*) FROM tombstones", [], |r| r.get(0))
        .unwrap()
}

/// The server id of the asset holding `bytes`.
fn asset_id_of(w: &World, bytes: &[u8]) -> String {
    let sum = sha1_hex(bytes);
    w.server
        .assets(&w.server.admin_id())
        .into_iter()
        .find(|a| a.checksum_hex == sum)
        .map(|a| a.id)
        .expect("the asset is on the server")
}

/// A daemon running in this process.
struct Running {
    token: CancellationToken,
    handle: JoinHandle<Result<(), DaemonError>>,
}

impl Running {
    fn start(config: Config) -> Running {
        let token = CancellationToken::new();
        let handle = tokio::spawn(daemon::run_with(config, World::tuning(), token.clone()));
        Running { token, handle }
    }

    /// Stops the daemon and asserts that it stopped cleanly.
    async fn stop(self) {
        self.token.cancel();
        let res = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("the daemon must stop within 20 s")
            .expect("the daemon task must not panic");
        if let Err(e) = res {
            panic!("the daemon must stop without an error: {e:#}");
        }
    }
}

/// Waits until the daemon's socket is connected and the pull that the connect asks for has
/// finished, so that what happens next on the server can only arrive by a live event.
async fn wait_live(w: &World) {
    let connected_at = || -> Option<i64> {
        let v = meta(w, "mirror.socket")?;
        let (ms, state) = v.split_once(' ')?;
        state.starts_with("connected").then(|| ms.parse().ok())?
    };
    assert!(
        eventually(Duration::from_secs(10), || connected_at().is_some()).await,
        "the socket must connect: {:?}",
        meta(w, "mirror.socket")
    );
    let since = connected_at().unwrap();
    let pulled_after = || {
        meta(w, "mirror.last_pull")
            .and_then(|v| v.split(' ').next().and_then(|ms| ms.parse::<i64>().ok()))
            .is_some_and(|ms| ms >= since)
    };
    // `mirror.last_pull` is stamped with the pull's start: a pull that began after the
    // connect is the one the connect asked for (or a later one).
    assert!(
        eventually(Duration::from_secs(10), pulled_after).await,
        "a (re)connect must trigger a pull"
    );
}

/// Every pull request fails from now on (503), so that only a live event can bring news.
fn block_pulls(w: &World) {
    for route in [
        "POST /search/metadata",
        "POST /sync/stream",
        "GET /sync/ack",
        "GET /assets",
    ] {
        w.server.fail_next(route, 1000, 503, None, None);
    }
}

// --- first inventory ----------------------------------------------------------------------

async fn first_inventory_holds_every_own_asset_and_no_partner_asset(
    dialect: Dialect,
    login: Login,
) {
    let w = world(dialect).await;
    let server = &w.server;
    let admin = server.admin_id();
    server.insert_many(&admin, 1200, Visibility::Timeline);
    server.insert_many(&admin, 800, Visibility::Archive);
    server.insert_many(&admin, 500, Visibility::Hidden);
    // A partner who shares their timeline: their assets show up in the admin's searches.
    let partner = server.add_user("partner@example.com", "partner-password");
    server.insert_many(&partner, 300, Visibility::Timeline);
    server.add_partner(&partner, &admin);

    let (mirror, _api) = direct(&w, login).await;
    let t0 = Instant::now();
    let report = mirror.pull(PullKind::Auto).await.expect("first pull");
    let took = t0.elapsed();
    eprintln!(
        "first inventory of 2500 assets ({dialect}, {:?}, {}): {} ms",
        login,
        report.source.as_str(),
        took.as_millis()
    );
    assert!(report.full, "the first pull is a full inventory");
    assert_eq!(report.seen, 2500);

    let rows = rows(&w);
    assert_eq!(rows.len(), 2500, "every own asset, each once");
    assert!(rows.iter().all(|r| r.owner == admin), "no partner asset");
    let count = |v: &str| rows.iter().filter(|r| r.visibility == v).count();
    assert_eq!(
        (count("timeline"), count("archive"), count("hidden")),
        (1200, 800, 500)
    );
    if report.source == Source::Search {
        // 1200 timeline rows need two pages of 1000; archive and hidden one each.
        assert!(server.requests("POST /search/metadata") >= 4);
    }

    // What the user sees.
    let shown = mirror::report::read(&w.state_dir()).unwrap().unwrap();
    assert_eq!(shown.counts.live, 2500);
    assert!(shown.last_pull.is_some());
    let text = shown.render();
    assert!(text.contains("2500 on the server"), "{text}");
    assert!(text.contains("hidden 500"), "{text}");

    // A second pull is incremental and changes nothing.
    let again = mirror.pull(PullKind::Auto).await.expect("second pull");
    assert!(!again.full, "the second pull is incremental");
    assert_eq!(self::rows(&w), rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_inventory_of_2500_assets_by_search_immich() {
    first_inventory_holds_every_own_asset_and_no_partner_asset(Dialect::Immich, Login::Key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_inventory_of_2500_assets_by_search_immich_next() {
    first_inventory_holds_every_own_asset_and_no_partner_asset(Dialect::ImmichNext, Login::Key)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_inventory_of_2500_assets_by_sync_stream() {
    first_inventory_holds_every_own_asset_and_no_partner_asset(Dialect::Immich, Login::Password)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_inventory_of_2500_assets_by_seed_listing() {
    first_inventory_holds_every_own_asset_and_no_partner_asset(Dialect::Seed, Login::Key).await;
}

// --- another client's upload ------------------------------------------------------------

async fn an_upload_by_another_client_arrives_by_live_event(dialect: Dialect, login: Login) {
    let w = world(dialect).await;
    let admin = w.server.admin_id();
    let daemon = Running::start(config(&w, login, "pull_interval = \"1h\"\nevents = true"));
    wait_live(&w).await;
    block_pulls(&w);

    let t0 = Instant::now();
    let id = w.server.upload_as(
        &admin,
        "from-phone.jpg",
        jpeg("phone"),
        Visibility::Timeline,
    );
    assert!(
        eventually(Duration::from_secs(10), || row(&w, &id).is_some()).await,
        "the upload must reach the mirror by the on_upload_success event"
    );
    eprintln!(
        "upload by another client → mirror by live event ({dialect}, {login:?}): {} ms",
        t0.elapsed().as_millis()
    );
    w.server.clear_faults();
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_by_another_client_arrives_by_live_event_with_an_all_key() {
    an_upload_by_another_client_arrives_by_live_event(Dialect::Immich, Login::Key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_by_another_client_arrives_by_live_event_with_a_session() {
    an_upload_by_another_client_arrives_by_live_event(Dialect::ImmichNext, Login::Password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_by_another_client_arrives_by_live_event_on_the_seed() {
    an_upload_by_another_client_arrives_by_live_event(Dialect::Seed, Login::Key).await;
}

async fn with_the_socket_down_an_upload_arrives_by_the_next_pull(dialect: Dialect) {
    let w = world(dialect).await;
    let admin = w.server.admin_id();
    w.server.reject_websockets(true);
    let daemon = Running::start(config(
        &w,
        Login::Key,
        "pull_interval = \"300ms\"\nevents = true",
    ));
    assert!(
        eventually(Duration::from_secs(10), || meta(&w, "mirror.last_pull")
            .is_some())
        .await,
        "the first pull must happen with the socket down"
    );

    let id = w.server.upload_as(
        &admin,
        "from-phone.jpg",
        jpeg("phone-2"),
        Visibility::Archive,
    );
    assert!(
        eventually(Duration::from_secs(10), || row(&w, &id).is_some()).await,
        "the next pull must bring the upload"
    );
    assert_eq!(w.server.websocket_count(), 0);
    let socket = meta(&w, "mirror.socket").unwrap_or_default();
    assert!(
        socket.contains("down") && socket.contains("503"),
        "{socket}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_socket_down_an_upload_arrives_by_the_next_pull_immich() {
    with_the_socket_down_an_upload_arrives_by_the_next_pull(Dialect::Immich).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_socket_down_an_upload_arrives_by_the_next_pull_seed() {
    with_the_socket_down_an_upload_arrives_by_the_next_pull(Dialect::Seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_all_runs_on_pulls_and_says_so() {
    let w = world(Dialect::Immich).await;
    let admin = w.server.admin_id();
    // The recommended key: everything the daemon needs, but not `all`.
    let key = w.server.create_api_key(
        &admin,
        &["asset.upload", "asset.read", "user.read", "album.read"],
    );
    let daemon = Running::start(config_with(
        &w,
        &format!("api_key = \"{key}\""),
        "pull_interval = \"300ms\"\nevents = true",
    ));
    assert!(
        eventually(Duration::from_secs(10), || meta(&w, "mirror.socket")
            .is_some_and(|s| s.contains("unavailable")))
        .await,
        "the socket state must say why live events are off: {:?}",
        meta(&w, "mirror.socket")
    );
    let id = w
        .server
        .upload_as(&admin, "x.jpg", jpeg("narrow"), Visibility::Timeline);
    assert!(eventually(Duration::from_secs(10), || row(&w, &id).is_some()).await);
    assert_eq!(w.server.requests("GET /socket.io"), 0, "no socket is tried");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_the_server_refuses_is_left_alone_and_pulls_go_on() {
    let w = world(Dialect::Immich).await;
    let admin = w.server.admin_id();
    let daemon = Running::start(config(
        &w,
        Login::Key,
        "pull_interval = \"300ms\"\nevents = true",
    ));
    wait_live(&w).await;

    // The credentials stop working for the socket: the server answers the namespace join
    // with `error: unauthorized`.
    w.server.unauthorized(true);
    w.server.close_websockets();
    assert!(
        eventually(Duration::from_secs(10), || meta(&w, "mirror.socket")
            .is_some_and(|s| s.contains("unauthorized")))
        .await,
        "the refusal is recorded: {:?}",
        meta(&w, "mirror.socket")
    );
    w.server.unauthorized(false);
    let tries = w.server.requests("GET /socket.io");

    // Pulls carry on alone; the socket is not hammered.
    let id = w
        .server
        .upload_as(&admin, "later.jpg", jpeg("later"), Visibility::Timeline);
    assert!(eventually(Duration::from_secs(10), || row(&w, &id).is_some()).await);
    assert_eq!(w.server.websocket_count(), 0);
    assert_eq!(
        w.server.requests("GET /socket.io"),
        tries,
        "no reconnect storm"
    );
    daemon.stop().await;
}

// --- trash, restore, permanent delete -----------------------------------------------------

/// Uploads one local file with a scan (so that it is ours) and returns its path and bytes.
async fn one_backed_up_file(w: &World, login: Login, tag: &str) -> (std::path::PathBuf, Vec<u8>) {
    let bytes = jpeg(tag);
    let path = w.write(format!("{tag}.jpg"), &bytes);
    let cfg = config(w, login, "events = false");
    let summary = daemon::scan_with(cfg, World::tuning(), CancellationToken::new())
        .await
        .expect("scan");
    assert!(summary.is_complete(), "{summary:?}");
    (path, bytes)
}

async fn trash_restore_and_delete_converge_by_pulls(dialect: Dialect, login: Login) {
    let w = world(dialect).await;
    let admin = w.server.admin_id();
    let (path, bytes) = one_backed_up_file(&w, login, "ours").await;
    let ours = asset_id_of(&w, &bytes);
    let theirs = w
        .server
        .upload_as(&admin, "phone.jpg", jpeg("theirs"), Visibility::Timeline);
    let (mirror, _api) = direct(&w, login).await;
    mirror.pull(PullKind::Auto).await.expect("pull");
    assert!(row(&w, &ours).is_some_and(|r| !r.trashed && !r.deleted));
    assert!(row(&w, &theirs).is_some());
    assert_eq!(job(&w, &path).unwrap().0, "done");

    // Trash: the next pull sees it; our file is held back.
    assert_eq!(w.server.trash([&ours]), 1);
    mirror.pull(PullKind::Auto).await.expect("pull");
    assert!(row(&w, &ours).unwrap().trashed);
    assert_eq!(
        job(&w, &path).unwrap(),
        ("skipped".to_owned(), Some(DELETED_REASON.to_owned()))
    );
    assert_eq!(tombstones(&w), 1);
    let status = immish_sync::status::read(&w.state_dir()).unwrap().unwrap();
    assert_eq!(status.held_back_deleted, 1);
    assert!(
        status.render().contains("held back:    1 files"),
        "{}",
        status.render()
    );

    // Restore: back to backed up.
    assert_eq!(w.server.restore([&ours]), 1);
    mirror.pull(PullKind::Auto).await.expect("pull");
    assert!(!row(&w, &ours).unwrap().trashed);
    assert_eq!(job(&w, &path).unwrap().0, "done");
    assert_eq!(tombstones(&w), 0);

    // Permanent deletes, of ours and of another client's asset.
    assert_eq!(w.server.delete_permanently([&ours, &theirs]), 2);
    let incremental = mirror.pull(PullKind::Auto).await.expect("pull");
    if incremental.source == Source::SyncStream {
        // The stream says so itself (AssetDeleteV1).
        assert!(incremental.applied.deleted >= 2, "{incremental:?}");
    } else {
        // Offset listings cannot show what is gone: only the full reconcile can.
        assert!(!row(&w, &ours).unwrap().deleted);
        let full = mirror.pull(PullKind::Full).await.expect("full pull");
        assert!(full.full);
        assert_eq!(full.reconciled_deleted, 2, "{full:?}");
    }
    assert!(row(&w, &ours).unwrap().deleted);
    assert!(row(&w, &theirs).unwrap().deleted);
    assert_eq!(
        job(&w, &path).unwrap(),
        ("skipped".to_owned(), Some(DELETED_REASON.to_owned()))
    );
    // Only ours is a tombstone: another client's photo is not ours to hold back.
    assert_eq!(tombstones(&w), 1);
    let shown = mirror::report::read(&w.state_dir()).unwrap().unwrap();
    assert_eq!((shown.counts.deleted, shown.counts.held_back), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_restore_and_delete_converge_by_search_pulls() {
    trash_restore_and_delete_converge_by_pulls(Dialect::Immich, Login::Key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_restore_and_delete_converge_by_search_pulls_next() {
    trash_restore_and_delete_converge_by_pulls(Dialect::ImmichNext, Login::Key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_restore_and_delete_converge_by_the_sync_stream() {
    trash_restore_and_delete_converge_by_pulls(Dialect::Immich, Login::Password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_restore_and_delete_converge_by_seed_listing() {
    trash_restore_and_delete_converge_by_pulls(Dialect::Seed, Login::Key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_restore_and_delete_converge_by_live_events() {
    let w = world(Dialect::Immich).await;
    let (path, bytes) = one_backed_up_file(&w, Login::Key, "evented").await;
    let ours = asset_id_of(&w, &bytes);
    let daemon = Running::start(config(
        &w,
        Login::Key,
        "pull_interval = \"1h\"\nevents = true",
    ));
    wait_live(&w).await;
    block_pulls(&w);
    let state = || job(&w, &path).map(|j| j.0).unwrap_or_default();

    w.server.trash([&ours]);
    assert!(eventually(Duration::from_secs(10), || state() == "skipped").await);
    w.server.restore([&ours]);
    assert!(eventually(Duration::from_secs(10), || state() == "done").await);
    w.server.delete_permanently([&ours]);
    assert!(
        eventually(Duration::from_secs(10), || row(&w, &ours)
            .is_some_and(|r| r.deleted))
        .await
    );
    assert_eq!(state(), "skipped");
    w.server.clear_faults();
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_reset_rebuilds_the_mirror() {
    let w = world(Dialect::Immich).await;
    let admin = w.server.admin_id();
    w.server.insert_many(&admin, 50, Visibility::Timeline);
    let (mirror, api) = direct(&w, Login::Password).await;
    mirror.pull(PullKind::Auto).await.expect("pull");
    assert_eq!(rows(&w).len(), 50);

    // The session's next stream is a lone SyncResetV1.
    let bearer = api.auth_headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    let token = bearer.trim_start_matches("Bearer ");
    assert!(w.server.force_sync_reset(token));
    let gone = w.server.insert_many(&admin, 1, Visibility::Archive);
    let report = mirror.pull(PullKind::Auto).await.expect("pull after reset");
    assert!(report.full, "after a reset the stream starts from nothing");
    assert_eq!(rows(&w).len(), 51);
    assert!(row(&w, &gone[0]).is_some());
    // Acknowledged: the next stream is incremental again.
    let next = mirror.pull(PullKind::Auto).await.expect("pull");
    assert!(!next.full);
    assert_eq!(next.seen, 0);
}

// --- a deleted asset is never uploaded again ------------------------------------------------

fn touch(path: &Path) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_asset_is_not_uploaded_again_when_its_file_is_touched() {
    let w = world(Dialect::Immich).await;
    let (path, bytes) = one_backed_up_file(&w, Login::Key, "touched").await;
    let ours = asset_id_of(&w, &bytes);
    let bodies = w.server.upload_bodies();

    // The user deletes the photo on the server while the daemon listens.
    let daemon = Running::start(config(
        &w,
        Login::Key,
        "pull_interval = \"1h\"\nevents = true",
    ));
    wait_live(&w).await;
    w.server.delete_permanently([&ours]);
    assert!(
        eventually(Duration::from_secs(10), || job(&w, &path)
            .is_some_and(|j| j.0 == "skipped"))
        .await
    );
    daemon.stop().await;

    // The file is touched: it is hashed again, and held back by its tombstone.
    touch(&path);
    let checks = w.server.requests("POST /assets/bulk-upload-check");
    let cfg = config(&w, Login::Key, "events = false");
    let summary = daemon::scan_with(cfg, World::tuning(), CancellationToken::new())
        .await
        .expect("scan");
    assert_eq!(
        summary.scanned().queued,
        1,
        "the touched file is looked at again"
    );
    assert_eq!(
        summary
            .stats
            .hashed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(w.server.upload_bodies(), bodies, "not uploaded again");
    assert_eq!(
        w.server.requests("POST /assets/bulk-upload-check"),
        checks,
        "the tombstone answers without asking the server"
    );
    assert_eq!(
        job(&w, &path).unwrap(),
        ("skipped".to_owned(), Some(DELETED_REASON.to_owned()))
    );
    assert!(w.server.asset(&ours).is_none());
    assert!(
        summary.is_complete(),
        "a held-back file is settled: {summary:?}"
    );

    // `diff` lists it as a local file the server does not have, and why.
    let diff = mirror::report::diff(&w.state_dir(), None).unwrap().unwrap();
    assert_eq!(diff.local_only.len(), 1);
    assert!(diff.local_only[0].state.contains("deleted on the server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reupload_deleted_a_deleted_asset_is_uploaded_again() {
    let w = world(Dialect::Immich).await;
    let (path, bytes) = one_backed_up_file(&w, Login::Key, "again").await;
    let ours = asset_id_of(&w, &bytes);
    let daemon = Running::start(config(
        &w,
        Login::Key,
        "pull_interval = \"1h\"\nevents = true\nreupload_deleted = true",
    ));
    wait_live(&w).await;
    w.server.delete_permanently([&ours]);
    let sum = sha1_hex(&bytes);
    let server = &w.server;
    let admin = server.admin_id();
    assert!(
        eventually(Duration::from_secs(10), || server
            .assets(&admin)
            .iter()
            .any(|a| a.checksum_hex == sum))
        .await,
        "the file must be uploaded again"
    );
    assert!(
        eventually(Duration::from_secs(10), || job(&w, &path)
            .is_some_and(|j| j.0 == "done"))
        .await
    );
    daemon.stop().await;
}

// --- verification ---------------------------------------------------------------------------

async fn a_corrupted_stored_copy_is_an_alert_not_a_backup(dialect: Dialect) {
    let w = world(dialect).await;
    w.server.corrupt_uploads(true);
    let bytes = jpeg("corrupted");
    let path = w.write("corrupted.jpg", &bytes);
    let summary = w.scan().await;
    assert_eq!(w.server.upload_bodies(), 1, "the file was sent");
    let (state, reason) = job(&w, &path).unwrap();
    assert_eq!(state, "failed");
    let reason = reason.unwrap_or_default();
    assert!(reason.starts_with("ALERT"), "{reason}");
    assert!(
        reason.contains(&sha1_hex(&bytes)),
        "names our checksum: {reason}"
    );
    assert!(!summary.is_complete(), "never reported as backed up");
    assert_eq!(summary.failed_total, 1);
    let known = immish_sync::db::catalogue::known_assets(&w.db()).unwrap();
    assert_eq!(known, [], "the corrupt copy is not remembered as ours");

    // The next scan does not take the corrupt copy for ours either.
    w.server.corrupt_uploads(false);
    let again = w.scan().await;
    assert_eq!(job(&w, &path).unwrap().0, "failed");
    assert_eq!(
        again
            .stats
            .linked
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_stored_copy_is_an_alert_not_a_backup_immich() {
    a_corrupted_stored_copy_is_an_alert_not_a_backup(Dialect::Immich).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_stored_copy_is_an_alert_not_a_backup_seed() {
    a_corrupted_stored_copy_is_an_alert_not_a_backup(Dialect::Seed).await;
}

// --- the socket drops ---------------------------------------------------------------------

async fn events_missed_while_the_socket_is_down_are_pulled_on_reconnect(login: Login) {
    let w = world(Dialect::Immich).await;
    let admin = w.server.admin_id();
    let (path, bytes) = one_backed_up_file(&w, login, "dropped").await;
    let ours = asset_id_of(&w, &bytes);
    let theirs = w
        .server
        .upload_as(&admin, "phone.jpg", jpeg("theirs"), Visibility::Timeline);
    // No periodic pull: only the reconnect asks for one. The full reconcile is due every
    // 2 s, so the reconnect's pull is a full one by the time the socket is back.
    let daemon = Running::start(config(
        &w,
        login,
        "pull_interval = \"1h\"\nfull_reconcile_interval = \"2s\"\nevents = true",
    ));
    wait_live(&w).await;
    assert!(row(&w, &theirs).is_some());

    // The socket drops and cannot come back for a while; meanwhile the user acts.
    w.server.reject_websockets(true);
    w.server.close_websockets();
    assert!(eventually(Duration::from_secs(10), || w.server.websocket_count() == 0).await);
    w.server.trash([&ours]);
    let new = w
        .server
        .upload_as(&admin, "new.jpg", jpeg("while-down"), Visibility::Timeline);
    w.server.delete_permanently([&theirs]);
    // Give any (wrongly) surviving socket the time to deliver, then check nothing came.
    assert!(
        !eventually(Duration::from_secs(2), || row(&w, &new).is_some()).await,
        "nothing can arrive while the socket is down and no pull is due"
    );
    assert!(!row(&w, &ours).unwrap().trashed);

    // It comes back: the reconnect's pull recovers what was missed.
    w.server.reject_websockets(false);
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || row(&w, &new).is_some()
            && row(&w, &ours).is_some_and(|r| r.trashed))
        .await,
        "the pull after the reconnect must bring what was missed"
    );
    assert_eq!(
        job(&w, &path).unwrap(),
        ("skipped".to_owned(), Some(DELETED_REASON.to_owned()))
    );
    // The permanent delete: the sync stream says so itself; an API key's pull finds it by
    // the full reconcile, due again by the time the socket is back.
    assert!(
        eventually(Duration::from_secs(5), || row(&w, &theirs)
            .is_some_and(|r| r.deleted))
        .await,
        "the permanent delete made while the socket was down must be found"
    );
    eprintln!(
        "socket back ({login:?}) → mirror converged in {} ms",
        back.elapsed().as_millis()
    );
    assert!(w.server.websocket_count() >= 1, "reconnected");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_missed_while_the_socket_is_down_are_pulled_on_reconnect_with_a_key() {
    events_missed_while_the_socket_is_down_are_pulled_on_reconnect(Login::Key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_missed_while_the_socket_is_down_are_pulled_on_reconnect_with_a_session() {
    events_missed_while_the_socket_is_down_are_pulled_on_reconnect(Login::Password).await;
}

// --- diff ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_lists_local_only_files_and_server_assets_whose_file_is_gone() {
    let w = world(Dialect::Immich).await;
    let kept = jpeg("kept");
    w.write("kept.jpg", &kept);
    let gone_path = w.write("gone.jpg", &jpeg("gone"));
    w.scan().await;
    std::fs::remove_file(&gone_path).unwrap();
    // A file the server refuses stays local only.
    w.server.fail_next("POST /assets", 1, 400, None, None);
    w.write("refused.jpg", &jpeg("refused"));
    w.scan().await;

    let diff = mirror::report::diff(&w.state_dir(), None).unwrap().unwrap();
    let local: Vec<String> = diff
        .local_only
        .iter()
        .map(|f| String::from_utf8_lossy(&f.path).into_owned())
        .collect();
    assert_eq!(local.len(), 1, "{local:?}");
    assert!(local[0].ends_with("refused.jpg"));
    assert!(
        diff.local_only[0].state.starts_with("failed"),
        "{:?}",
        diff.local_only
    );
    assert_eq!(diff.remote_only.len(), 1, "{:?}", diff.remote_only);
    assert_eq!(diff.remote_only[0].original_file_name, "gone.jpg");
    let text = diff.render();
    assert!(text.contains("local file gone: 1"), "{text}");
}

// --- a quiet server is not listed whole again ------------------------------------------------

/// After a backup the server goes quiet: the largest `updatedAt` stops moving, and a
/// watermark that is only that made every incremental pull list the whole overlap before it
/// again (after a first backup, the whole library; issue 12's re-scan). A completed pull
/// moves the watermark to one overlap before its own start on the server's clock, so the next
/// pull lists nothing old, and still sees what is new.
async fn a_quiet_server_is_not_listed_whole_by_every_pull(dialect: Dialect) {
    let w = world(dialect).await;
    let server = &w.server;
    let admin = server.admin_id();
    server.insert_many(&admin, 300, Visibility::Timeline);
    assert_eq!(server.backdate(&admin, Duration::from_secs(3600)), 300);
    let (mirror, _api) = direct(&w, Login::Key).await;
    let first = mirror.pull(PullKind::Auto).await.expect("first pull");
    assert!(first.full);
    assert_eq!(first.seen, 300);
    let again = mirror.pull(PullKind::Auto).await.expect("second pull");
    assert!(!again.full, "the second pull is incremental");
    assert_eq!(
        again.seen, 0,
        "nothing changed for an hour: the pull must not list the library again"
    );
    // What is new still arrives.
    let new_id = server.insert(
        &admin,
        NewAsset::new("IMG_new.jpg", jpeg("new after quiet")),
    );
    let third = mirror.pull(PullKind::Auto).await.expect("third pull");
    assert_eq!(third.seen, 1, "only the new asset");
    assert!(row(&w, &new_id).is_some(), "the new asset is mirrored");
    assert_eq!(rows(&w).len(), 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_server_is_not_listed_whole_by_every_pull_search() {
    a_quiet_server_is_not_listed_whole_by_every_pull(Dialect::Immich).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_server_is_not_listed_whole_by_every_pull_seed() {
    a_quiet_server_is_not_listed_whole_by_every_pull(Dialect::Seed).await;
}

/// Counts every row SQLite writes to `remote_assets` from now on (a trigger in the state
/// database itself, so it sees the daemon's own statements), for [`mirror_writes`].
fn count_mirror_writes(w: &World) {
    w.db()
        .execute_batch(
            "CREATE TABLE test_mirror_writes(n INTEGER NOT NULL);
             INSERT INTO test_mirror_writes VALUES (0);
             CREATE TRIGGER test_mirror_insert AFTER INSERT ON remote_assets
             BEGIN UPDATE test_mirror_writes SET n = n + 1; END;
             CREATE TRIGGER test_mirror_update AFTER UPDATE ON remote_assets
             BEGIN UPDATE test_mirror_writes SET n = n + 1; END;",
        )
        .unwrap();
}

fn mirror_writes(w: &World) -> i64 {
    w.db()
        .query_row("SELECT n FROM test_mirror_writes", [], |r| r.get(0))
        .unwrap()
}

/// Each mirrored asset's `synced_at` (the time of its row's last write), by id.
fn synced_at(w: &World) -> Vec<(String, i64)> {
    let db = w.db();
    let mut stmt = db
        .prepare("SELECT id, synced_at FROM remote_assets ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((immish_sync::db::ids::id(r, 0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    rows
}

/// A full pull of a server where nothing changed writes no row of the mirror (issue 12: a
/// full pull or the overlap of an incremental one re-reads the library), and the reconcile
/// after the next full pull still finds an asset deleted for good, while the rows it saw
/// and did not write stay as they are.
async fn a_pull_of_what_the_mirror_holds_writes_nothing(dialect: Dialect, login: Login) {
    let w = world(dialect).await;
    let server = &w.server;
    let admin = server.admin_id();
    let ids = server.insert_many(&admin, 300, Visibility::Timeline);
    let (mirror, _api) = direct(&w, login).await;
    let first = mirror.pull(PullKind::Full).await.expect("first pull");
    assert_eq!((first.seen, first.applied.upserted), (300, 300));
    let before = synced_at(&w);
    assert_eq!(before.len(), 300);

    count_mirror_writes(&w);
    // A clock tick between the pulls, so that a rewritten row would show a later time.
    std::thread::sleep(Duration::from_millis(5));
    let quiet = mirror.pull(PullKind::Full).await.expect("quiet full pull");
    assert!(quiet.full);
    assert_eq!(quiet.seen, 300, "a full pull lists everything: {quiet:?}");
    assert_eq!(
        (quiet.applied.upserted, quiet.applied.unchanged),
        (0, 300),
        "{quiet:?}"
    );
    assert_eq!(quiet.reconciled_deleted, 0, "{quiet:?}");
    assert_eq!(mirror_writes(&w), 0, "the quiet pull wrote mirror rows");
    assert_eq!(synced_at(&w), before);

    // Deleted for good: a listing cannot show it, the reconcile of the next full pull must.
    let gone = &ids[7];
    assert_eq!(server.delete_permanently([gone]), 1);
    let full = mirror
        .pull(PullKind::Full)
        .await
        .expect("full pull after the delete");
    assert!(full.full);
    assert!(row(&w, gone).unwrap().deleted, "{full:?}");
    if full.source != Source::SyncStream {
        assert_eq!(full.reconciled_deleted, 1, "{full:?}");
    }
    let live: Vec<Row> = rows(&w).into_iter().filter(|r| !r.deleted).collect();
    assert_eq!(live.len(), 299);
    assert_eq!(
        mirror_writes(&w),
        1,
        "only the deleted asset's row is written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_what_the_mirror_holds_writes_nothing_search() {
    a_pull_of_what_the_mirror_holds_writes_nothing(Dialect::Immich, Login::Key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_what_the_mirror_holds_writes_nothing_sync_stream() {
    a_pull_of_what_the_mirror_holds_writes_nothing(Dialect::Immich, Login::Password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_what_the_mirror_holds_writes_nothing_seed() {
    a_pull_of_what_the_mirror_holds_writes_nothing(Dialect::Seed, Login::Key).await;
}
