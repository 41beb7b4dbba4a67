//! The sync stream of a password session (docs/SERVER-API.md#10-sync-stream): its checkpoints,
//! the stream itself (JSON lines, read one bounded line at a time, each typed as a
//! [`SyncRow`]), and the acknowledgements.
//!
//! Owns: the row types the daemon asks for and how they read, the line bound, which ack
//! belongs to which type. Must not: decide when to acknowledge (the mirror acknowledges
//! only once everything the stream held is applied) or what a reset means for the mirror.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Response;
use serde::Deserialize;

use super::{dto, ApiClient, ApiError, RequestInfo, Result};
use crate::model::{AssetId, RemoteAsset};

/// The types the mirror asks for.
const SYNC_TYPES: [&str; 2] = ["AuthUsersV1", "AssetsV1"];
/// The longest sync-stream line accepted (one asset is well under 2 KB).
const MAX_LINE: usize = 1 << 20;
/// What acknowledges a `SyncResetV1` (docs/SERVER-API.md#reset).
const RESET_ACK: &str = "SyncResetV1|reset";

/// One row of the stream, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncRow {
    /// `AssetV1`: an asset as it is now (in the trash when it has `deletedAt`).
    Asset(RemoteAsset),
    /// `AssetDeleteV1`: an asset deleted permanently.
    AssetDeleted(AssetId),
    /// `SyncResetV1`: the server asks the client to start over from nothing.
    Reset,
    /// `SyncCompleteV1`: the stream holds everything up to now.
    Complete,
    /// A row type the daemon does not read (e.g. `AuthUserV1`), by name.
    Other(String),
}

/// The acknowledgement a row carries, for its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncAck {
    kind: String,
    value: String,
}

/// One line of the stream: the row and its acknowledgement, if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncLine {
    pub row: SyncRow,
    pub ack: Option<SyncAck>,
}

/// The last acknowledgement of each row type seen: what `POST /sync/ack` takes.
#[derive(Clone, Debug, Default)]
pub struct SyncAcks(BTreeMap<String, String>);

impl SyncAcks {
    /// Keeps `ack` as the latest of its type.
    pub fn add(&mut self, ack: SyncAck) {
        self.0.insert(ack.kind, ack.value);
    }

    /// The acks to send, one per type.
    pub fn values(&self) -> Vec<String> {
        self.0.values().cloned().collect()
    }
}

/// An open sync stream: its lines, in order.
pub struct SyncStream {
    resp: Response,
    info: RequestInfo,
    stall: Duration,
    buf: Vec<u8>,
    done: bool,
}

impl ApiClient {
    /// `GET /sync/ack`: whether this session holds an `AssetV1` checkpoint. Without one, the
    /// next stream starts from nothing, so it holds every asset.
    pub async fn sync_has_asset_checkpoint(&self) -> Result<bool> {
        let checkpoints: Vec<dto::SyncCheckpoint> = self.get_json("/sync/ack").await?;
        Ok(checkpoints.iter().any(|c| c.kind == "AssetV1"))
    }

    /// `POST /sync/stream` for the users and assets types; `reset` asks for a stream from
    /// nothing. Waiting for the answer is bounded by the stall timeout, and so is every
    /// chunk of it.
    pub async fn sync_stream(&self, reset: bool) -> Result<SyncStream> {
        let body = dto::SyncStreamRequest {
            types: &SYNC_TYPES,
            reset: reset.then_some(true),
        };
        let (resp, info) = self.post_for_response("/sync/stream", &body).await?;
        Ok(SyncStream {
            resp,
            info,
            stall: self.stall_timeout(),
            buf: Vec::new(),
            done: false,
        })
    }

    /// `POST /sync/ack` with these acknowledgements.
    pub async fn sync_ack(&self, acks: &SyncAcks) -> Result<()> {
        self.post_acks(acks.values()).await
    }

    /// Acknowledges a [`SyncRow::Reset`]: the next stream starts from nothing.
    pub async fn sync_ack_reset(&self) -> Result<()> {
        self.post_acks(vec![RESET_ACK.to_owned()]).await
    }

    async fn post_acks(&self, acks: Vec<String>) -> Result<()> {
        let _ = self
            .post_for_response("/sync/ack", &dto::SyncAckRequest { acks })
            .await?;
        Ok(())
    }
}

impl SyncStream {
    /// The request this stream answers (for messages).
    pub fn request(&self) -> &RequestInfo {
        &self.info
    }

    /// The next line, or `None` at the end of the stream. Blank lines are skipped.
    pub async fn next(&mut self) -> Result<Option<SyncLine>> {
        loop {
            let Some(raw) = self.next_raw().await? else {
                return Ok(None);
            };
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return parse_line(&raw, &self.info).map(Some);
        }
    }

    async fn next_raw(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(line));
            }
            if self.done {
                return Ok((!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf)));
            }
            match tokio::time::timeout(self.stall, self.resp.chunk()).await {
                Err(_) => {
                    return Err(ApiError::Stalled {
                        request: Box::new(self.info.clone()),
                        after: self.stall,
                    })
                }
                Ok(Err(e)) => {
                    return Err(ApiError::Network {
                        request: Box::new(self.info.clone()),
                        detail: format!("the answer broke off: {e}"),
                    })
                }
                Ok(Ok(None)) => self.done = true,
                Ok(Ok(Some(chunk))) => {
                    if self.buf.len() + chunk.len() > MAX_LINE {
                        return Err(bad(
                            &self.info,
                            format!("a sync stream line is longer than {MAX_LINE} bytes"),
                        ));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
            }
        }
    }
}

fn bad(info: &RequestInfo, detail: String) -> ApiError {
    ApiError::BadAnswer {
        request: Box::new(info.clone()),
        detail,
    }
}

pub(super) fn parse_line(raw: &[u8], info: &RequestInfo) -> Result<SyncLine> {
    let line: dto::SyncStreamLine = serde_json::from_slice(raw)
        .map_err(|e| bad(info, format!("a sync stream line is not JSON: {e}")))?;
    let row = parse_row(&line.kind, line.data)
        .map_err(|e| bad(info, format!("unexpected {} row: {e}", line.kind)))?;
    let ack = line.ack.map(|value| SyncAck {
        kind: line.kind,
        value,
    });
    Ok(SyncLine { row, ack })
}

fn parse_row(kind: &str, data: serde_json::Value) -> std::result::Result<SyncRow, String> {
    fn read<T: for<'de> Deserialize<'de>>(data: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(data).map_err(|e| e.to_string())
    }
    Ok(match kind {
        "SyncResetV1" => SyncRow::Reset,
        "SyncCompleteV1" => SyncRow::Complete,
        "AssetDeleteV1" => SyncRow::AssetDeleted(dto::asset_id(
            &read::<dto::SyncAssetDelete>(data)?.asset_id,
        )?),
        "AssetV1" => {
            let asset = read::<dto::SyncAsset>(data)?.into_remote();
            dto::asset_id(&asset.id.0)?;
            SyncRow::Asset(asset)
        }
        other => SyncRow::Other(other.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> RequestInfo {
        RequestInfo {
            method: "POST".into(),
            host: "h".into(),
            path: "/api/sync/stream".into(),
            correlation_id: "c".into(),
            file: None,
            file_size: None,
        }
    }

    #[test]
    fn sync_rows_become_mirror_rows() {
        let row = json!({
            "id": "a1", "ownerId": "u1", "checksum": "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=",
            "originalFileName": "x.jpg", "deletedAt": "2024-01-01T00:00:00.000Z",
            "visibility": "archive", "thumbhash": null
        });
        let a = serde_json::from_value::<dto::SyncAsset>(row)
            .unwrap()
            .into_remote();
        assert!(a.is_trashed);
        assert_eq!(a.visibility.as_deref(), Some("archive"));
        assert!(a.checksum.is_some());
        assert_eq!(a.updated_at, None);
    }

    #[test]
    fn lines_are_typed_and_carry_their_ack() {
        let line = parse_line(
            br#"{"type":"AssetDeleteV1","data":{"assetId":"00000000-0000-4000-8000-0000000000a9"},"ack":"AssetDeleteV1|x"}"#,
            &info(),
        )
        .unwrap();
        assert_eq!(
            line.row,
            SyncRow::AssetDeleted(AssetId("00000000-0000-4000-8000-0000000000a9".into()))
        );
        let mut acks = SyncAcks::default();
        acks.add(line.ack.unwrap());
        let complete = parse_line(
            br#"{"type":"SyncCompleteV1","data":{},"ack":"c|1"}"#,
            &info(),
        )
        .unwrap();
        assert_eq!(complete.row, SyncRow::Complete);
        acks.add(complete.ack.unwrap());
        let later = parse_line(
            br#"{"type":"AssetDeleteV1","data":{"assetId":"00000000-0000-4000-8000-00000000000b"},"ack":"AssetDeleteV1|y"}"#,
            &info(),
        )
        .unwrap();
        acks.add(later.ack.unwrap());
        assert_eq!(
            acks.values(),
            vec!["AssetDeleteV1|y", "c|1"],
            "the last of each type"
        );
        let user = parse_line(br#"{"type":"AuthUserV1","data":{"id":"u"}}"#, &info()).unwrap();
        assert_eq!(user.row, SyncRow::Other("AuthUserV1".into()));
        assert_eq!(user.ack, None);
        assert_eq!(
            parse_line(br#"{"type":"SyncResetV1"}"#, &info())
                .unwrap()
                .row,
            SyncRow::Reset
        );
    }

    #[test]
    fn bad_lines_name_the_request_and_the_row() {
        let e = parse_line(b"not json", &info()).unwrap_err().to_string();
        assert!(e.starts_with("POST /api/sync/stream: "), "{e}");
        assert!(e.contains("a sync stream line is not JSON"), "{e}");
        let e = parse_line(br#"{"type":"AssetV1","data":{"no":"id"}}"#, &info())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected AssetV1 row"), "{e}");
    }
}
