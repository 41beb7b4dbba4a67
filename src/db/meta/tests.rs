//! Tests of `db::meta`.

use super::*;
use crate::db::Db;

fn setup() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("s.sqlite3")).unwrap();
    (dir, db)
}

/// The values as earlier versions wrote them, key by key: each must read as the typed
/// value, and writing the typed value must give the same text back.
#[test]
fn todays_stored_formats_read_and_write_back_the_same() {
    let (_d, db) = setup();
    db.call_blocking(|c| {
        let raw = [
            (SERVER_IDENTITY, "http://h:2283/api 0b5d-user"),
            (DEVICE_ID, "immish-sync-1234"),
            (LAST_SUCCESS, "1700000000000"),
            ("root:/photos", "ok 1700000000001"),
            ("root:/usb", "paused it is empty (an unmounted disk?)"),
            (WATERMARK, "1700000000002"),
            (LAST_FULL, "1700000000003"),
            (LAST_PULL, "1700000000004 full 2500 sync stream"),
            (LAST_ERROR, "1700000000005 server said no (503)"),
            (SOCKET, "1700000000006 down connection reset by peer"),
        ];
        for (k, v) in raw {
            set(c, k, v)?;
        }
        let id = server_identity(c)?.unwrap();
        assert_eq!(
            id,
            ServerIdentity {
                api_root: "http://h:2283/api".into(),
                user_id: "0b5d-user".into()
            }
        );
        assert_eq!(device_id(c)?.as_deref(), Some("immish-sync-1234"));
        assert_eq!(last_success_ms(c)?, Some(1_700_000_000_000));
        assert_eq!(
            root_states(c)?,
            vec![
                (
                    "/photos".to_owned(),
                    RootState::Ok {
                        at_ms: Some(1_700_000_000_001)
                    }
                ),
                (
                    "/usb".to_owned(),
                    RootState::Paused {
                        reason: "it is empty (an unmounted disk?)".into()
                    }
                ),
            ]
        );
        assert_eq!(watermark_ms(c)?, Some(1_700_000_000_002));
        assert_eq!(last_full_ms(c)?, Some(1_700_000_000_003));
        let pull = last_pull(c)?.unwrap();
        assert_eq!(
            pull,
            LastPull {
                at_ms: 1_700_000_000_004,
                full: true,
                seen: 2500,
                source: "sync stream".into()
            }
        );
        let err = last_pull_error(c)?.unwrap();
        assert_eq!(err.message, "server said no (503)");
        let sock = socket(c)?.unwrap();
        assert_eq!(
            sock.state,
            SocketState::Down {
                reason: "connection reset by peer".into()
            }
        );

        // Written back through the typed setters, the text is what it was.
        set_server_identity(c, &id)?;
        set_root_state(
            c,
            Path::new("/photos"),
            &RootState::Ok {
                at_ms: Some(1_700_000_000_001),
            },
        )?;
        set_root_state(
            c,
            Path::new("/usb"),
            &RootState::Paused {
                reason: "it is empty (an unmounted disk?)".into(),
            },
        )?;
        set_last_pull_error(c, &err)?;
        set_socket(c, &sock)?;
        record_pull(c, &pull, Some(1_700_000_000_002))?;
        // record_pull ends the error; write it back for the comparison.
        set_last_pull_error(c, &err)?;
        set(c, LAST_FULL, "1700000000003")?;
        for (k, v) in raw {
            assert_eq!(get(c, k)?.as_deref(), Some(v), "{k}");
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn connection_states_and_skipped_entries_round_trip_and_trouble_keeps_its_start() {
    let (_d, db) = setup();
    db.call_blocking(|c| {
        for st in [
            ConnectionState::Connected { since_ms: 1 },
            ConnectionState::Unreachable {
                since_ms: 2,
                next_try_ms: Some(3),
                error: "connection refused (os error 111)".into(),
            },
            ConnectionState::Refused {
                since_ms: 4,
                next_try_ms: None,
                error: "401".into(),
            },
            ConnectionState::Paused {
                since_ms: 5,
                until_ms: Some(6),
                reason: "the server is full".into(),
            },
        ] {
            assert_eq!(ConnectionState::parse(&st.to_value()), Some(st.clone()));
        }
        let down = |since_ms, next| ConnectionState::Unreachable {
            since_ms,
            next_try_ms: Some(next),
            error: "e".into(),
        };
        record_connection(c, &down(10, 12))?;
        record_connection(c, &down(20, 24))?;
        assert_eq!(connection(c)?, Some(down(10, 24)), "the outage began at 10");
        record_connection(c, &ConnectionState::Connected { since_ms: 30 })?;
        record_connection(c, &down(40, 41))?;
        assert_eq!(connection(c)?, Some(down(40, 41)), "a new outage");

        let k = SkippedEntries {
            symlinks: 3,
            fifos: 1,
            sockets: 0,
            devices: 0,
        };
        set_root_skipped(c, Path::new("/photos"), &k)?;
        assert_eq!(root_skipped(c, "/photos")?, Some(k));
        assert_eq!(k.to_string(), "3 symlinks, 1 FIFO");
        assert_eq!(SkippedEntries::default().to_string(), "");
        Ok(())
    })
    .unwrap();
}

#[test]
fn every_socket_state_round_trips() {
    for state in [
        SocketState::Connected,
        SocketState::Down {
            reason: "stopped".into(),
        },
        SocketState::Unauthorized {
            detail: "401 invalid token".into(),
        },
        SocketState::Off {
            why: "mirror.events = false".into(),
        },
        SocketState::Unavailable {
            why: "the API key lacks the `all` permission".into(),
        },
        SocketState::Other {
            value: "sleeping soundly".into(),
        },
    ] {
        assert_eq!(SocketState::parse(&state.to_value()), state);
    }
}

#[test]
fn odd_values_do_not_pass_for_good_ones() {
    assert_eq!(LastPull::parse("not-a-time full 1 x"), None);
    assert_eq!(LastPull::parse("1 sideways 1 x"), None);
    assert_eq!(LastPull::parse("1 full many x"), None);
    assert_eq!(
        LastPull::parse("1 incremental 0").map(|p| (p.full, p.source)),
        Some((false, String::new()))
    );
    assert_eq!(
        RootState::parse("okay then"),
        RootState::Ok { at_ms: None },
        "status always showed anything starting with `ok` as ok"
    );
    assert_eq!(RootState::parse("ok").to_string(), "ok");
    assert_eq!(RootState::parse("paused").to_string(), "paused");
    assert_eq!(
        RootState::parse("scanning").to_string(),
        "scanning",
        "an unknown state is shown as it is"
    );
    // A seed-style server gives no user id: the identity ends in a space.
    let seed = ServerIdentity::parse("http://h/api ");
    assert_eq!(seed.user_id, "");
    assert_eq!(seed.to_value(), "http://h/api ");
}

#[test]
fn a_new_server_forgets_the_old_ones_facts_and_keeps_the_device() {
    let (_d, db) = setup();
    db.call_blocking(|c| {
        let a = ServerIdentity {
            api_root: "http://a/api".into(),
            user_id: "u1".into(),
        };
        let first = adopt_server(c, &a, None, 1)?;
        assert!(!first.forgot_previous);
        assert!(first.device_id.starts_with("immish-sync-"));
        set(c, WATERMARK, "5")?;
        set_root_state(c, Path::new("/p"), &RootState::Ok { at_ms: Some(1) })?;

        let again = adopt_server(c, &a, None, 2)?;
        assert_eq!(again.device_id, first.device_id);
        assert!(!again.forgot_previous);
        assert_eq!(watermark_ms(c)?, Some(5));

        let b = ServerIdentity {
            api_root: "http://a/api".into(),
            user_id: "u2".into(),
        };
        let moved = adopt_server(c, &b, Some("mine"), 3)?;
        assert!(moved.forgot_previous);
        assert_eq!(moved.device_id, "mine");
        assert_eq!(
            watermark_ms(c)?,
            None,
            "the mirror's facts are the account's"
        );
        assert_eq!(server_identity(c)?, Some(b));
        assert_eq!(root_states(c)?.len(), 1, "the roots are this machine's");
        assert_eq!(
            device_id(c)?,
            Some(first.device_id),
            "the override is not stored"
        );
        Ok(())
    })
    .unwrap();
}
