//! What happens to a local file after its upload (issue 11): edited files go up as a new
//! asset beside the old one (docs/ARCHITECTURE.md#edited-files).

use std::process::{Command, Stdio};
use std::time::Duration;

use immish_sync::mirror;
use immish_sync::status;
use immish_testserver::{Dialect, TestServer};

use crate::common::{jpeg, sha1_hex, World};

const BIN: &str = env!("CARGO_BIN_EXE_immish-sync");

/// Rewriting a file after its upload (an exiftool bulk edit) uploads the new bytes as a new
/// asset; the old asset stays, the log says so, `status` counts it and `diff` calls the old
/// asset "local file changed", not "local file gone".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_file_goes_up_as_a_new_asset_and_the_old_one_stays() {
    let server = TestServer::builder()
        .dialect(Dialect::Immich)
        .upload_event_delay(Duration::ZERO)
        .start()
        .await;
    let w = World::with_server(server);
    let v1 = jpeg("first version");
    let path = w.write("IMG_1.jpg", &v1);
    assert!(w.scan().await.is_complete());
    let admin = w.server.admin_id();
    let before = w.server.assets(&admin);
    assert_eq!(before.len(), 1);
    let old_id = before[0].id.clone();

    let v2 = jpeg("second version, edited by exiftool");
    std::fs::write(&path, &v2).unwrap();
    w.write_config();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(w.config_path())
        .arg("scan")
        .stdin(Stdio::null())
        .output()
        .expect("run immish-sync scan");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    let after = w.server.assets(&admin);
    assert_eq!(after.len(), 2, "old and new version: {after:?}");
    let sums: Vec<&str> = after.iter().map(|a| a.checksum_hex.as_str()).collect();
    assert!(sums.contains(&sha1_hex(&v1).as_str()), "old bytes kept");
    assert!(sums.contains(&sha1_hex(&v2).as_str()), "new bytes uploaded");
    let old = w.server.asset(&old_id).expect("the old asset stays");
    assert!(!old.trashed, "nothing deleted or trashed on the server");
    assert!(
        err.contains(&format!(
            "IMG_1.jpg changed since it was uploaded as asset {old_id}; uploading the new \
             version as a new asset"
        )),
        "{err}"
    );

    let s = status::read(&w.state_dir()).unwrap().unwrap();
    assert_eq!(s.edited_files, 1);
    assert!(
        s.render().contains("  edited     1 (changed after upload"),
        "{}",
        s.render()
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["edited_files"], 1);

    let diff = mirror::report::diff(&w.state_dir(), None).unwrap().unwrap();
    assert!(diff.remote_only.is_empty(), "{:?}", diff.remote_only);
    assert_eq!(diff.changed.len(), 1, "{:?}", diff.changed);
    assert_eq!(diff.changed[0].id.0, old_id);
    let text = diff.render();
    assert!(text.contains("local file changed: 1"), "{text}");
    assert!(text.contains("local file gone: 0"), "{text}");
}
