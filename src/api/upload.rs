//! The upload: [`ApiClient::upload`] (the multipart request, and what an early answer or a
//! broken connection means), the file stream under it that proves, as it goes, that it
//! sends exactly the bytes that were hashed, and the parsing of both dialects' answers.
//!
//! The stream is what makes "never send a short or changed body" true
//! (docs/RELIABILITY.md#a-file-that-changes-while-it-is-uploaded): it counts and SHA-1s every
//! chunk, and withholds the file's last chunk until it has seen end-of-file at exactly `size`
//! bytes with the expected digest. Otherwise it yields an error in place of that chunk; hyper
//! then aborts the request, and the server, which was promised `Content-Length` bytes, never
//! sees a complete body.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use sha1::{Digest, Sha1};
use tokio_util::io::ReaderStream;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Method};

use super::transport::Progress;
use super::transport::{content_type, is_connect_failure, MAX_JSON_BODY};
use super::{
    format_timestamp, ApiClient, ApiError, CheckResult, CheckedBody, Dialect, Result as ApiResult,
    UploadOutcome, UploadRequest,
};
use crate::model::Checksum;

/// Read size for upload bodies. 256 KiB reached 1.17 GB/s on loopback where reqwest's
/// `Part::file` (4 KiB reads) managed 0.13 (1 GiB to a server that discards the body, on a
/// 2-vCPU machine).
pub(crate) const UPLOAD_CHUNK: usize = 256 * 1024;

/// Bodies up to this size are read whole and sent from memory ([`CheckedBody::read`]).
pub(crate) const SMALL_BODY: u64 = UPLOAD_CHUNK as u64;

impl CheckedBody {
    /// Blocking: reads a small file whole and checks that it is still what was hashed:
    /// exactly `size` bytes with the SHA-1 `expected`. The outer error is the read's; the
    /// inner one says how the file changed. The bytes returned are the bytes hashed here,
    /// and the bytes sent, so a change after this read cannot reach the server (the promise
    /// the streaming check keeps for larger files).
    pub fn read(
        path: &std::path::Path,
        size: u64,
        expected: Checksum,
    ) -> io::Result<Result<CheckedBody, String>> {
        use std::io::Read;
        let file = std::fs::File::open(path)?;
        let mut buf = Vec::with_capacity(size as usize + 1);
        file.take(size + 1).read_to_end(&mut buf)?;
        let len = buf.len() as u64;
        if len > size {
            return Ok(Err(format!(
                "it grew beyond the {size} bytes it had when hashed"
            )));
        }
        if len < size {
            return Ok(Err(format!(
                "it is shorter than when hashed: {len} of {size} bytes"
            )));
        }
        let digest: [u8; 20] = Sha1::digest(&buf).into();
        if digest != expected.0 {
            return Ok(Err(
                "its content differs from when it was hashed (same size, other SHA-1)".to_owned(),
            ));
        }
        Ok(Ok(CheckedBody(Bytes::from(buf))))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Why the body stream gave up, if it did; read after a failed send to tell "the file
/// changed" from "the network failed".
pub(crate) type AbortSlot = Arc<Mutex<Option<String>>>;

/// Set once the upload has its answer (or was given up): a body still being sent, after a
/// server answered early, then fails at its next chunk, so hyper closes the connection
/// instead of streaming the rest of the file into it in the background.
#[derive(Clone, Default)]
pub(crate) struct StopSending(Arc<AtomicBool>);

impl StopSending {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sets the [`StopSending`] flag when dropped: at the end of `upload`, whichever way it ends.
pub(crate) struct StopOnDrop(pub StopSending);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, Ordering::Relaxed);
    }
}

struct VerifyState {
    reader: ReaderStream<tokio::fs::File>,
    hasher: Sha1,
    sent: u64,
    size: u64,
    expected: Checksum,
    done: bool,
    progress: Arc<Progress>,
    abort: AbortSlot,
    stop: StopSending,
}

impl VerifyState {
    fn fail(&mut self, reason: String) -> io::Error {
        self.done = true;
        let err = io::Error::other(format!("upload aborted: {reason}"));
        // The std mutex is only held for this store; never across an await.
        if let Ok(mut slot) = self.abort.lock() {
            slot.get_or_insert(reason);
        }
        err
    }

    /// Checks the digest of everything sent so far against the expected one.
    fn digest_matches(&self) -> bool {
        let digest: [u8; 20] = self.hasher.clone().finalize().into();
        digest == self.expected.0
    }
}

/// The verifying stream over an open file (see the module docs).
pub(crate) fn verified_file_stream(
    file: tokio::fs::File,
    size: u64,
    expected: Checksum,
    progress: Arc<Progress>,
    abort: AbortSlot,
    stop: StopSending,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let state = VerifyState {
        reader: ReaderStream::with_capacity(file, UPLOAD_CHUNK),
        hasher: Sha1::new(),
        sent: 0,
        size,
        expected,
        done: false,
        progress,
        abort,
        stop,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if st.stop.is_set() {
            st.done = true;
            return Some((
                Err(io::Error::other(
                    "upload body abandoned: the request is over",
                )),
                st,
            ));
        }
        let item = next_verified(&mut st).await;
        match item {
            Some(Ok(chunk)) => {
                st.progress.touch();
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => Some((Err(e), st)),
            None => None,
        }
    })
}

async fn next_verified(st: &mut VerifyState) -> Option<io::Result<Bytes>> {
    match st.reader.next().await {
        Some(Ok(chunk)) => {
            st.sent += chunk.len() as u64;
            if st.sent > st.size {
                let (sent, size) = (st.sent, st.size);
                return Some(Err(
                    st.fail(format!("it grew: {sent} bytes read, {size} when hashed"))
                ));
            }
            st.hasher.update(&chunk);
            if st.sent < st.size {
                return Some(Ok(chunk));
            }
            // This is the last chunk if the file ends here: hold it back until that and the
            // digest are confirmed.
            match st.reader.next().await {
                Some(Ok(extra)) if !extra.is_empty() => {
                    let size = st.size;
                    Some(Err(st.fail(format!(
                        "it grew beyond the {size} bytes it had when hashed"
                    ))))
                }
                Some(Err(e)) => Some(Err(st.fail(format!("read error: {e}")))),
                _ => {
                    if st.digest_matches() {
                        st.done = true;
                        Some(Ok(chunk))
                    } else {
                        Some(Err(st.fail(
                            "its content differs from when it was hashed (same size, other \
                             SHA-1)"
                                .to_owned(),
                        )))
                    }
                }
            }
        }
        Some(Err(e)) => Some(Err(st.fail(format!("read error: {e}")))),
        None => {
            if st.sent < st.size {
                let (sent, size) = (st.sent, st.size);
                Some(Err(st.fail(format!(
                    "it is shorter than when hashed: {sent} of {size} bytes"
                ))))
            } else if st.digest_matches() {
                // Only reachable for an empty file (size 0).
                st.done = true;
                None
            } else {
                Some(Err(st.fail(
                    "its content differs from when it was hashed".to_owned(),
                )))
            }
        }
    }
}

/// The upload answer of either dialect: real `{id, status: "created"|"duplicate"|
/// "replaced"}` (201/200), seed `{id, duplicate: bool}`. With neither field, the status
/// decides (200 = duplicate, 201 = created).
pub(crate) fn parse_upload_answer(status: u16, body: &[u8]) -> Result<UploadOutcome, String> {
    #[derive(Deserialize)]
    struct Answer {
        id: Option<String>,
        status: Option<String>,
        duplicate: Option<bool>,
    }
    let a: Answer = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let id = match a.id {
        Some(id) if !id.is_empty() => id,
        _ => return Err("no asset id in the upload answer".to_owned()),
    };
    let duplicate = match (a.status.as_deref(), a.duplicate) {
        (Some("duplicate"), _) => true,
        (Some(_), _) => false,
        (None, Some(d)) => d,
        (None, None) => status == 200,
    };
    Ok(UploadOutcome {
        asset_id: super::dto::asset_id(&id)?,
        duplicate,
    })
}

/// The `filename="…"` of the file part. Sent raw (no percent-encoding) so that Immich's
/// latin1→UTF-8 re-decoding restores non-ASCII names (docs/SERVER-API.md#multipart-fields);
/// the characters that would break the quoted header value are replaced. The exact name
/// travels in the `filename` text field, which the server prefers.
pub(crate) fn part_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    if cleaned.is_empty() {
        "file".to_owned()
    } else {
        cleaned
    }
}

const X_IMMICH_CHECKSUM: HeaderName = HeaderName::from_static("x-immich-checksum");

impl ApiClient {
    /// Uploads one file (docs/SERVER-API.md#5-upload), streamed from disk in 256 KiB chunks
    /// with an explicit Content-Length. The body is verified as it goes (size and SHA-1
    /// against `req`); if the file changed, the request is aborted before its last byte and
    /// the error's class is `FileChanged`. A 200 `duplicate` answered before the body was sent
    /// is a success.
    pub async fn upload(&self, req: &UploadRequest) -> ApiResult<UploadOutcome> {
        let local = |error| ApiError::LocalFile {
            file: req.path.clone(),
            error,
        };
        let changed = |reason| ApiError::FileChanged {
            file: req.path.clone(),
            reason,
        };
        let progress = Arc::new(Progress::new());
        let abort = AbortSlot::default();
        let stop = StopSending::default();
        let _stop_when_done = StopOnDrop(stop.clone());
        let stream = if let Some(body) = req.body.as_ref().filter(|b| b.0.len() as u64 == req.size)
        {
            // Read and checked by the caller, with the file's other look-ups.
            let bytes = body.0.clone();
            futures_util::stream::once(async move { Ok(bytes) }).boxed()
        } else if req.size <= SMALL_BODY {
            // Read whole and checked before a byte is sent: one hand-off to the blocking
            // pool, where the stream below costs one for the open, one for the stat and one
            // for each read (docs/BENCHMARKS.md, small files).
            let (path, size, expected) = (req.path.clone(), req.size, req.checksum);
            let read =
                tokio::task::spawn_blocking(move || CheckedBody::read(&path, size, expected))
                    .await
                    .map_err(|e| local(io::Error::other(e.to_string())))?;
            let bytes = read.map_err(local)?.map_err(changed)?.0;
            futures_util::stream::once(async move { Ok(bytes) }).boxed()
        } else {
            let file = tokio::fs::File::open(&req.path).await.map_err(local)?;
            let len = file.metadata().await.map_err(local)?.len();
            if len != req.size {
                return Err(changed(format!(
                    "it is {len} bytes now, {} when hashed",
                    req.size
                )));
            }
            verified_file_stream(
                file,
                req.size,
                req.checksum,
                Arc::clone(&progress),
                Arc::clone(&abort),
                stop,
            )
            .boxed()
        };
        let stream = super::meter::metered(
            stream,
            req.size,
            Arc::clone(&self.inner.meter),
            Arc::clone(&progress),
        );
        let part = Part::stream_with_length(Body::wrap_stream(stream), req.size)
            .file_name(part_file_name(&req.file_name))
            .mime_str("application/octet-stream")
            .map_err(|e| ApiError::Config {
                message: format!("internal: bad MIME type: {e}"),
            })?;
        // Field order matters: `filename` must precede the file part for the server's
        // extension check to use it (docs/SERVER-API.md#multipart-fields).
        let mut form = Form::new()
            .percent_encode_noop()
            .text("deviceAssetId", req.device_asset_id.clone())
            .text("deviceId", req.device_id.clone())
            .text("fileCreatedAt", format_timestamp(req.file_created_ns))
            .text("fileModifiedAt", format_timestamp(req.file_modified_ns))
            .text("isFavorite", "false");
        if self.inner.dialect == Dialect::Seed {
            // The seed's form lists these; real Immich strips them
            // (docs/SERVER-API.md#multipart-fields).
            form = form.text("isArchived", "false").text("isVisible", "true");
        }
        if let Some(video) = &req.live_photo_video_id {
            // docs/SERVER-API.md#live-photos: the server links the still to the video (and
            // hides the video) when the still arrives.
            form = form.text("livePhotoVideoId", video.0.clone());
        }
        // The sidecar goes before `filename`: the server checks the extension of a
        // `filename` sent before it for the sidecar too, and would reject `IMG.jpg` as a
        // sidecar (docs/SERVER-API.md#multipart-fields).
        if let Some(sc) = &req.sidecar {
            let sidecar = Part::bytes(sc.data.clone())
                .file_name(part_file_name(&sc.file_name))
                .mime_str("application/octet-stream")
                .map_err(|e| ApiError::Config {
                    message: format!("internal: bad MIME type: {e}"),
                })?;
            form = form.part("sidecarData", sidecar);
        }
        let form = form
            .text("filename", req.file_name.clone())
            .part("assetData", part);

        let (rb, mut info) = self.request(Method::POST, "/assets");
        info.file = Some(req.path.clone());
        info.file_size = Some(req.size);
        let checksum =
            HeaderValue::from_str(&req.checksum.to_hex()).map_err(|_| ApiError::Config {
                message: "internal: checksum is not a header value".to_owned(),
            })?;
        let rb = rb.header(X_IMMICH_CHECKSUM, checksum).multipart(form);

        progress.touch();
        let sent = self.inner.transport.send(rb, &info, &progress).await;
        let aborted = abort.lock().ok().and_then(|slot| slot.clone());
        let resp = match sent {
            Ok(resp) => resp,
            Err(_) if aborted.is_some() => {
                return Err(ApiError::FileChanged {
                    file: req.path.clone(),
                    reason: aborted.unwrap_or_default(),
                })
            }
            // Only when a connection was made: a refused connect has no lost answer.
            Err(e @ ApiError::Network { .. }) if !is_connect_failure(&e) => {
                return match self.duplicate_after_send_error(req).await {
                    Some(outcome) => Ok(outcome),
                    None => Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let status = resp.status().as_u16();
        if status != 200 && status != 201 {
            return Err(self.inner.transport.http_error(resp, &info).await);
        }
        let content_type = content_type(&resp);
        let body = match self
            .inner
            .transport
            .read_body(resp, &info, MAX_JSON_BODY)
            .await
        {
            Ok(body) => body,
            // The answer's body was cut off by the reset that follows an early answer.
            Err(e @ ApiError::Network { .. }) => {
                return match self.duplicate_after_send_error(req).await {
                    Some(outcome) => Ok(outcome),
                    None => Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let outcome = parse_upload_answer(status, &body).map_err(|detail| {
            if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                ApiError::BadAnswer {
                    request: Box::new(info.clone()),
                    detail,
                }
            } else {
                ApiError::NotJson {
                    request: Box::new(info.clone()),
                    status,
                    content_type,
                }
            }
        })?;
        if let Some(reason) = aborted {
            if !outcome.duplicate {
                // The server says it stored an asset although we never completed the body:
                // whatever it holds is not this file. Report the change; verification of the
                // next attempt will tell the truth.
                tracing::warn!(
                    path = %req.path.display(),
                    asset_id = %outcome.asset_id,
                    "server answered `created` to an aborted upload"
                );
                return Err(ApiError::FileChanged {
                    file: req.path.clone(),
                    reason,
                });
            }
        }
        Ok(outcome)
    }

    /// After the connection failed mid-upload: does the server have this checksum? It
    /// answers an `x-immich-checksum` match with an early 200 `duplicate` and then closes
    /// the connection, and when the client is still writing, hyper reports the failed write
    /// instead of that answer (a race, seen with the test server). One small check turns
    /// that back into the truth. A server that stored our complete body and lost the reply
    /// is reported the same way (`duplicate: true`): either way the asset with these bytes
    /// is there. `None` when it is not, or the check fails too.
    async fn duplicate_after_send_error(&self, req: &UploadRequest) -> Option<UploadOutcome> {
        let answers = self
            .bulk_upload_check(&[(req.device_asset_id.clone(), req.checksum)])
            .await
            .ok()?;
        match answers.into_iter().next()?.1 {
            CheckResult::Duplicate {
                asset_id: Some(asset_id),
                ..
            } => {
                tracing::debug!(
                    path = %req.path.display(),
                    %asset_id,
                    "upload connection failed, but the server has the checksum"
                );
                Some(UploadOutcome {
                    asset_id,
                    duplicate: true,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AssetId;

    #[test]
    fn upload_answers_of_both_dialects() {
        let ok = |s, b: &str| parse_upload_answer(s, b.as_bytes()).unwrap();
        assert_eq!(
            ok(
                201,
                r#"{"id":"00000000-0000-4000-8000-0000000000a1","status":"created"}"#
            ),
            UploadOutcome {
                asset_id: AssetId("00000000-0000-4000-8000-0000000000a1".into()),
                duplicate: false
            }
        );
        assert!(
            ok(
                200,
                r#"{"status":"duplicate","id":"00000000-0000-4000-8000-0000000000a1"}"#
            )
            .duplicate
        );
        assert!(
            !ok(
                200,
                r#"{"id":"00000000-0000-4000-8000-0000000000a1","status":"replaced"}"#
            )
            .duplicate
        );
        assert!(
            !ok(
                201,
                r#"{"id":"00000000-0000-4000-8000-0000000000a1","duplicate":false}"#
            )
            .duplicate
        );
        assert!(
            ok(
                200,
                r#"{"id":"00000000-0000-4000-8000-0000000000a1","duplicate":true}"#
            )
            .duplicate
        );
        assert!(ok(200, r#"{"id":"00000000-0000-4000-8000-0000000000a1"}"#).duplicate);
        assert!(!ok(201, r#"{"id":"00000000-0000-4000-8000-0000000000a1"}"#).duplicate);
        assert!(parse_upload_answer(201, b"{}").is_err());
        assert!(parse_upload_answer(201, br#"{"id":""}"#).is_err());
        assert!(parse_upload_answer(200, b"<html>").is_err());
    }

    #[test]
    fn part_file_names_stay_raw_but_quotable() {
        assert_eq!(part_file_name("café 写真.jpg"), "café 写真.jpg");
        assert_eq!(part_file_name("a\"b\\c\r\n.jpg"), "a_b_c__.jpg");
        assert_eq!(part_file_name(""), "file");
    }

    async fn collect(content: &[u8], size: u64, expected: &[u8]) -> (Vec<u8>, Option<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let digest: [u8; 20] = Sha1::digest(expected).into();
        let abort: AbortSlot = Arc::default();
        let s = verified_file_stream(
            file,
            size,
            Checksum(digest),
            Arc::new(Progress::new()),
            abort.clone(),
            StopSending::default(),
        );
        futures_util::pin_mut!(s);
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        let reason = abort.lock().unwrap().clone();
        (out, reason)
    }

    #[test]
    fn a_small_file_is_read_whole_only_while_it_is_what_was_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 3) as u8).collect();
        let sum = Checksum(Sha1::digest(&data).into());
        let read = |content: &[u8]| {
            std::fs::write(&path, content).unwrap();
            CheckedBody::read(&path, data.len() as u64, sum).unwrap()
        };
        assert_eq!(read(&data).unwrap().bytes(), &data[..]);
        assert!(read(&data[..4000]).unwrap_err().contains("shorter"));
        let mut longer = data.clone();
        longer.push(0);
        assert!(read(&longer).unwrap_err().contains("grew"));
        let mut other = data.clone();
        other[4999] ^= 1;
        assert!(read(&other).unwrap_err().contains("other SHA-1"));
        std::fs::remove_file(&path).unwrap();
        assert!(
            CheckedBody::read(&path, 1, sum).is_err(),
            "a vanished file is a read error"
        );
    }

    #[tokio::test]
    async fn the_stream_sends_an_unchanged_file_whole() {
        let data: Vec<u8> = (0..UPLOAD_CHUNK * 2 + 17).map(|i| i as u8).collect();
        let (out, reason) = collect(&data, data.len() as u64, &data).await;
        assert_eq!(reason, None);
        assert_eq!(out, data);
        // Exactly one chunk long.
        let data = vec![7u8; UPLOAD_CHUNK];
        let (out, reason) = collect(&data, data.len() as u64, &data).await;
        assert_eq!(reason, None);
        assert_eq!(out.len(), UPLOAD_CHUNK);
        let (out, reason) = collect(b"", 0, b"").await;
        assert_eq!((out.len(), reason), (0, None));
    }

    #[tokio::test]
    async fn the_stream_never_yields_the_end_of_a_changed_file() {
        let data: Vec<u8> = (0..UPLOAD_CHUNK * 2 + 17).map(|i| (i * 7) as u8).collect();
        let size = data.len() as u64;

        // Shorter than hashed.
        let (out, reason) = collect(&data[..UPLOAD_CHUNK + 5], size, &data).await;
        assert!(reason.unwrap().contains("shorter"));
        assert!(out.len() < data.len());

        // Longer than hashed.
        let mut longer = data.clone();
        longer.push(1);
        let (out, reason) = collect(&longer, size, &data).await;
        assert!(reason.unwrap().contains("grew"));
        assert!((out.len() as u64) < size);

        // Same size, other bytes: the last chunk is withheld.
        let mut other = data.clone();
        other[3] ^= 1;
        let (out, reason) = collect(&other, size, &data).await;
        assert!(reason.unwrap().contains("differs"));
        assert!(out.len() < data.len());
        assert_eq!(out[..], other[..out.len()]);
    }
}
