//! Issue 13 §2: the server goes away in the middle of a `run` and comes back. Uploads resume
//! within seconds of it answering (not minutes), every file arrives once, and while it is
//! away the daemon sends a bounded number of requests (one probe per wait, no uploads).
//!
//! The server "goes away" with the test server's `offline` switch: every open connection and
//! socket is dropped, and every request meanwhile loses its connection unanswered (counted).
//! The retry backoff is the default one (1 s doubling to 10 min), as a user has it; the
//! outage probes use the test tuning (0.5 s doubling to 2 s).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use immish_sync::pipeline::BREAKER_THRESHOLD;
use immish_testserver::Dialect;

use crate::common::{eventually, jpeg, World};

/// The routes of the upload pipeline (no probe among them).
const UPLOAD_ROUTES: [&str; 3] = [
    "POST /assets",
    "POST /assets/bulk-upload-check",
    "GET /assets/:id",
];
/// How long the failures that open an outage may take to land.
const OPENING: Duration = Duration::from_secs(3);
/// Upload requests that can be in flight at once: `upload.concurrency` (4 here) and the one
/// duplicate check.
const NETWORK_SLOTS: u64 = 5;
/// The outage probe.
const PROBE_ROUTE: &str = "POST /auth/validateToken";
/// The shortest wait between two probes once their backoff reached its cap (the test
/// tuning's 2 s, of which the upper half is random).
const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(1);

fn totals(w: &World) -> BTreeMap<String, u64> {
    w.server
        .request_counts()
        .into_iter()
        .map(|(route, by_status)| (route, by_status.values().sum()))
        .collect()
}

fn added(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, route: &str) -> u64 {
    after.get(route).copied().unwrap_or(0) - before.get(route).copied().unwrap_or(0)
}

/// Uploads that got a success answer so far.
fn answered_uploads(w: &World) -> usize {
    w.server
        .uploads()
        .iter()
        .filter(|u| u.status == 200 || u.status == 201)
        .count()
}

/// Runs the daemon over `files` files, takes the server away for `outage` once a fifth of
/// them arrived, brings it back, and checks resume time, arrivals and requests.
async fn outage_in_the_middle(files: usize, outage: Duration, socket: bool) {
    let mut w = World::new(Dialect::Immich).await;
    w.upload = "retry_initial = \"1s\"\nretry_max = \"10m\"\nconcurrency = 4\n".into();
    for i in 0..files {
        w.write(format!("a/IMG_{i:04}.jpg"), &jpeg(&format!("outage-{i}")));
    }
    // Uploads take a little while, so that the outage lands in the middle of the run.
    w.server.delay("POST /assets", Duration::from_millis(30));
    let d = w.start_daemon();
    if socket {
        assert!(
            w.server
                .wait_for_websockets(1, Duration::from_secs(20))
                .await,
            "the live-event socket never connected"
        );
    }
    assert!(
        eventually(Duration::from_secs(30), || answered_uploads(&w)
            >= files / 5)
        .await,
        "the uploads never started"
    );

    let before = totals(&w);
    w.server.offline(true);
    // The failures that open the outage land in its first moments; after them, nothing.
    tokio::time::sleep(OPENING).await;
    let opened = totals(&w);
    tokio::time::sleep(outage - OPENING).await;
    let during = totals(&w);
    let arrived_before = answered_uploads(&w);
    assert!(
        arrived_before < files,
        "the outage must land before the end ({arrived_before} of {files})"
    );

    w.server.offline(false);
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(60), || answered_uploads(&w)
            > arrived_before)
        .await,
        "uploads never resumed"
    );
    let resumed = back.elapsed();
    assert!(
        eventually(Duration::from_secs(60), || w
            .server
            .asset_count(&w.server.admin_id())
            == files)
        .await,
        "not every file arrived: {} of {files}",
        w.server.asset_count(&w.server.admin_id())
    );
    // An upload the server took while its answer was lost in the outage's opening is on the
    // server before its job is: that job goes up again as a duplicate and only then is done.
    assert!(
        eventually(Duration::from_secs(60), || w
            .job_states()
            .iter()
            .all(|(_, s)| s == "done"))
        .await,
        "not every job done: {:?}",
        w.job_states()
            .iter()
            .filter(|(_, s)| s != "done")
            .map(|(p, s)| (String::from_utf8_lossy(p).into_owned(), s.clone()))
            .collect::<Vec<_>>()
    );
    if socket {
        assert!(
            w.server
                .wait_for_websockets(1, Duration::from_secs(60))
                .await,
            "the live-event socket never reconnected"
        );
    }
    d.stop().await;

    // Resumed within seconds of the server answering, not at the end of a grown pause.
    assert!(
        resumed <= Duration::from_secs(5),
        "uploads resumed {resumed:?} after the server answered again"
    );
    // Every file arrived exactly once.
    let assets = w.server.assets(&w.server.admin_id());
    assert_eq!(assets.len(), files);
    let states = w.job_states();
    assert_eq!(states.len(), files);
    assert!(
        states.iter().all(|(_, s)| s == "done"),
        "every job done: {states:?}"
    );
    // While the server was away: no upload work once the failures that opened the outage
    // landed, and about one probe per wait. The opening is larger than threshold + slots
    // because of what each task sends: an upload whose connection broke after it was made
    // asks once, with a bulk check, whether the server stored it after all
    // (docs/RELIABILITY.md#5xx-resets-and-restarts), so every failed upload is two requests
    // on these routes; and every failure before the breaker opens frees a slot (upload,
    // dedup check or verify batch) that is filled again. 21 were seen (10 uploads, each with
    // its check, and one verify batch); a traced run showed 8 uploads and 1 verify batch
    // failing. Twice threshold + slots would be the bound if no stale success ever reset the
    // breaker's count, but one can (12 uploads were seen once), hence three times. What
    // matters most is checked next: nothing after.
    let tries = |from: &BTreeMap<String, u64>, to: &BTreeMap<String, u64>| -> u64 {
        UPLOAD_ROUTES.iter().map(|r| added(from, to, r)).sum()
    };
    let opening = tries(&before, &opened);
    assert!(
        opening <= 3 * (u64::from(BREAKER_THRESHOLD) + NETWORK_SLOTS),
        "{opening} upload requests as the outage began: {opened:?} vs {before:?}"
    );
    let later = tries(&opened, &during);
    assert_eq!(
        later, 0,
        "upload requests while the outage lasted: {during:?} vs {opened:?}"
    );
    let probes = added(&before, &during, PROBE_ROUTE);
    let bound = 2 + outage.as_secs() / MIN_PROBE_INTERVAL.as_secs();
    assert!(
        probes <= bound,
        "{probes} probes during a {outage:?} outage (at most {bound})"
    );
}

/// The server stops for 20 s in the middle of a 300-file run ("the pause grew 0s / 2s /
/// 25s / 225s; the server answered again at once but uploads resumed 3 minutes later").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_within_seconds_of_the_server_answering_after_an_outage() {
    outage_in_the_middle(300, Duration::from_secs(20), false).await;
}

/// A 30 s restart (an Immich upgrade), with the live-event socket dropped and reconnecting
/// ("14 failures in a row … pausing uploads for 473s").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30s_restart_with_the_socket_reconnecting_resumes_uploads_at_once() {
    outage_in_the_middle(150, Duration::from_secs(30), true).await;
}
