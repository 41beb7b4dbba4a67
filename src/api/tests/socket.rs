//! The live-event socket against the test server: confirmation, typed events, and the
//! refusal of a key without `all`.

use super::*;
use immish_testserver::{Dialect as Ts, TestServer};

const WAIT: Duration = Duration::from_secs(10);

async fn next(socket: &mut EventSocket) -> Incoming {
    tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("something within the wait")
        .expect("the socket stays up")
}

/// The next event that is not `Other` (the test server sends events the daemon ignores).
async fn next_event(socket: &mut EventSocket) -> ServerEvent {
    loop {
        match next(socket).await {
            Incoming::Event(ServerEvent::Other(_)) => {}
            Incoming::Event(e) => return e,
            Incoming::Connected => panic!("confirmed twice"),
        }
    }
}

#[tokio::test]
async fn events_arrive_typed_after_the_socket_is_confirmed() {
    for ts in [Ts::Immich, Ts::ImmichNext] {
        let server = TestServer::builder()
            .dialect(ts)
            .upload_event_delay(Duration::ZERO)
            .start()
            .await;
        let api = ApiClient::connect(&options(
            &server.base_url(),
            Credentials::ApiKey(Secret::new(server.api_key())),
        ))
        .await
        .expect("connect");
        let mut socket = api.open_events().await.expect("socket");
        assert_eq!(next(&mut socket).await, Incoming::Connected, "{ts}");
        assert!(
            matches!(next_event(&mut socket).await, ServerEvent::ServerVersion(_)),
            "{ts}: sent once authenticated"
        );

        let f = test_file("live.jpg", 5000, 21);
        let id = api.upload(&f.req).await.expect("upload").asset_id;
        match next_event(&mut socket).await {
            ServerEvent::UploadSuccess(a) => {
                assert_eq!(a.id, id, "{ts}");
                assert_eq!(a.checksum, Some(f.req.checksum), "{ts}");
            }
            other => panic!("{ts}: {other:?}"),
        }
        server.trash([id.0.clone()]);
        assert_eq!(
            next_event(&mut socket).await,
            ServerEvent::Trash(vec![id.clone()]),
            "{ts}"
        );
        server.restore([id.0.clone()]);
        assert_eq!(
            next_event(&mut socket).await,
            ServerEvent::Restore(vec![id.clone()]),
            "{ts}"
        );
        server.delete_permanently([id.0.clone()]);
        assert_eq!(
            next_event(&mut socket).await,
            ServerEvent::Delete(vec![id.clone()]),
            "{ts}"
        );
        socket.leave().await;
        assert!(
            server.wait_for_websockets(0, WAIT).await,
            "{ts}: leaving closes it"
        );
    }
}

#[tokio::test]
async fn a_key_without_all_is_refused_as_unauthorized() {
    let server = TestServer::builder().dialect(Ts::Immich).start().await;
    let key = server.create_api_key(&server.admin_id(), &["asset.upload", "asset.read"]);
    let api = ApiClient::connect(&options(
        &server.base_url(),
        Credentials::ApiKey(Secret::new(key.clone())),
    ))
    .await
    .expect("connect");
    let end = match api.open_events().await {
        Err(e) => e,
        Ok(mut socket) => loop {
            match tokio::time::timeout(WAIT, socket.next())
                .await
                .expect("an end")
            {
                Err(e) => break e,
                Ok(Incoming::Connected) => panic!("a refused socket is never confirmed"),
                Ok(Incoming::Event(_)) => {}
            }
        },
    };
    assert!(matches!(end, SocketError::Unauthorized(_)), "{end:?}");
    assert!(!end.to_string().contains(&key));
}
