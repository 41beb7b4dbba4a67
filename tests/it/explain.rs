//! Issue 10: `explain PATH` for a file waiting to settle (incomplete), one held back (its
//! content was deleted on the server) and one in the server's trash.

use std::path::Path;
use std::time::Duration;

use immish_testserver::Dialect;

use crate::common::{eventually, jpeg, run, World};

fn explain(w: &World, p: &Path) -> (Option<i32>, String) {
    let o = run(w, &["explain", p.to_str().expect("utf-8 path")]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

/// Pulls are due at every scan, so the mirror knows what changed on the server.
async fn world() -> World {
    let mut w = World::new(Dialect::Immich).await;
    w.extra = "[mirror]\npull_interval = \"1s\"\n".into();
    w
}

/// A JPEG cut short, seen by the running daemon's watcher: it waits to be whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_an_incomplete_file_waits_to_settle() {
    let w = world().await;
    w.write_config();
    let d = w.start_daemon();
    let mut cut = jpeg("explain-cut");
    cut.truncate(cut.len() - 2);
    let file = w.write("IMG_cut.jpg", &cut);
    let mut out = String::new();
    let waited = eventually(Duration::from_secs(30), || {
        let (code, o) = explain(&w, &file);
        out = o;
        code == Some(1) && out.contains("waiting")
    })
    .await;
    assert!(waited, "{out}");
    assert!(out.contains("incomplete_limit"), "says until when: {out}");
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 0);
    d.stop().await;
}

/// Uploaded, then trashed on the server: `explain` says it is in the trash (the held-back
/// file is unlinked from its asset; the tombstone of its bytes names it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_a_file_is_in_the_servers_trash() {
    let w = world().await;
    let file = w.write("IMG_t.jpg", &jpeg("explain-trash"));
    assert!(w.scan().await.is_complete());
    let id = w.server.assets(&w.server.admin_id())[0].id.clone();
    assert_eq!(w.server.trash([&id]), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.scan().await;
    let (code, out) = explain(&w, &file);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("in the server's trash") && out.contains(&id),
        "{out}"
    );
}

/// A copy of content the user deleted on the server is held back, and `explain` says so
/// and how to upload it anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_a_file_is_held_back_when_deleted_on_the_server() {
    let w = world().await;
    let bytes = jpeg("explain-deleted");
    w.write("IMG_a.jpg", &bytes);
    assert!(w.scan().await.is_complete());
    let id = w.server.assets(&w.server.admin_id())[0].id.clone();
    assert_eq!(w.server.delete_permanently([&id]), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.scan().await;
    let copy = w.write("copy/IMG_b.jpg", &bytes);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.scan().await;
    let (code, out) = explain(&w, &copy);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("held back"), "{out}");
    assert!(out.contains("reupload_deleted"), "{out}");
    assert_eq!(w.server.asset_count(&w.server.admin_id()), 0);
}
