//! [`ApiError`]: every way a server call can fail, with what it was doing and to what, and
//! the [`ErrorClass`] that tells the pipeline whether to retry, pause or give up.
//!
//! Also the pure pieces of error handling, kept here so they are unit tested without a
//! server: classification by status and message, the server's message out of a JSON or HTML
//! body, and `Retry-After` parsing.
//!
//! No secret ever reaches this module: requests are identified by method and URL path (never
//! the query), and the client redacts its own secrets out of server messages before they get
//! here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use super::{ErrorClass, RECOMMENDED_PERMISSIONS};

/// The longest `Retry-After` honoured; anything larger is treated as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Which request failed: enough to find it in the server's log (`correlation_id` is the
/// `x-immich-cid` we sent, echoed by Immich as `correlationId`), never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub method: String,
    /// `host[:port]` of the server.
    pub host: String,
    /// The URL path only: no scheme, host or query.
    pub path: String,
    pub correlation_id: String,
    /// The local file being uploaded, if any.
    pub file: Option<PathBuf>,
    /// Its size in bytes, if any.
    pub file_size: Option<u64>,
}

impl fmt::Display for RequestInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(file) = &self.file {
            write!(f, " (uploading {})", file.display())?;
        }
        Ok(())
    }
}

/// A failed server call, or a connect that cannot work as configured.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The configuration cannot work as written: a malformed URL, plain `http://` to a public
    /// host, an unreadable CA file, a credential that cannot be sent. The message names the
    /// setting and the fix.
    #[error("{message}")]
    Config { message: String },

    /// Nothing at the configured URL answered like an Immich (or seed-style) server.
    #[error(
        "no Immich server API found at {base} ({}): check server.url; it is the address of the \
         Immich web page, e.g. https://photos.example.com",
        .attempts.join("; ")
    )]
    NoServer { base: String, attempts: Vec<String> },

    /// The API key lacks permissions the daemon cannot work without.
    #[error("{}", describe_missing(.key_name.as_deref(), .missing))]
    MissingPermissions {
        key_name: Option<String>,
        missing: Vec<String>,
    },

    /// The request did not get an answer: DNS, connection refused or reset, TLS.
    #[error("{request}: could not talk to the server at {}: {detail}", .request.host)]
    Network {
        request: Box<RequestInfo>,
        detail: String,
    },

    /// Neither side moved a byte for the stall timeout; the connection was dropped.
    #[error(
        "{request}: no progress for {} s; the connection was dropped",
        .after.as_secs()
    )]
    Stalled {
        request: Box<RequestInfo>,
        after: Duration,
    },

    /// The server (or a proxy in front of it) answered with an error status.
    #[error("{}", describe_http(.request, *.status, .message, *.retry_after, .location.as_deref()))]
    Http {
        request: Box<RequestInfo>,
        status: u16,
        /// The server's own words (`message` of the JSON error body, joined if it is a list;
        /// the `<title>` of an HTML page), possibly empty.
        message: String,
        retry_after: Option<Duration>,
        /// Where a 3xx pointed (redirects are never followed).
        location: Option<String>,
    },

    /// A success status whose body is not JSON: typically a proxy or the web app's HTML.
    #[error(
        "{request}: the server did not answer JSON (a proxy?): HTTP {status}, content type \
         {content_type:?} [correlation id {}]",
        .request.correlation_id
    )]
    NotJson {
        request: Box<RequestInfo>,
        status: u16,
        content_type: String,
    },

    /// JSON, but not the shape docs/SERVER-API.md describes.
    #[error("{request}: unexpected answer from the server: {detail}")]
    BadAnswer {
        request: Box<RequestInfo>,
        detail: String,
    },

    /// The file's bytes were not the ones hashed (size or SHA-1 differ, or it grew): the
    /// upload was aborted before its last byte, so the server stored nothing.
    #[error(
        "{} changed while it was being uploaded ({reason}); the upload was aborted before \
         the server got the whole file",
        .file.display()
    )]
    FileChanged { file: PathBuf, reason: String },

    /// The file to upload could not be opened or read. The I/O error is part of the
    /// message, and so deliberately not also a `source` (a chain would print it twice).
    #[error("could not read {} for upload: {error}", .file.display())]
    LocalFile {
        file: PathBuf,
        error: std::io::Error,
    },
}

impl ApiError {
    /// What the pipeline should do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Config { .. }
            | ApiError::NoServer { .. }
            | ApiError::MissingPermissions { .. } => ErrorClass::Permanent,
            ApiError::Network { .. }
            | ApiError::Stalled { .. }
            | ApiError::NotJson { .. }
            | ApiError::BadAnswer { .. } => ErrorClass::Transient,
            ApiError::Http {
                status, message, ..
            } => classify_http(*status, message),
            ApiError::FileChanged { .. } | ApiError::LocalFile { .. } => ErrorClass::FileChanged,
        }
    }

    /// How long the server asked us to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, for errors that got one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } | ApiError::NotJson { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The request that failed, if the error comes from one.
    pub fn request(&self) -> Option<&RequestInfo> {
        match self {
            ApiError::Network { request, .. }
            | ApiError::Stalled { request, .. }
            | ApiError::Http { request, .. }
            | ApiError::NotJson { request, .. }
            | ApiError::BadAnswer { request, .. } => Some(request.as_ref()),
            _ => None,
        }
    }

    /// The local file involved, if any.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            ApiError::FileChanged { file, .. } | ApiError::LocalFile { file, .. } => Some(file),
            _ => self.request().and_then(|r| r.file.as_deref()),
        }
    }
}

/// The class of an error status, from the status and the server's message (Immich uses 400
/// for validation, unsupported types, quota and "not found";
/// docs/SERVER-API.md#4-errors).
pub fn classify_http(status: u16, message: &str) -> ErrorClass {
    match status {
        400 if is_quota_message(message) => ErrorClass::Capacity,
        401 => ErrorClass::Auth,
        // A missing API-key permission: retrying cannot help, and it is not the whole
        // credential that is bad (that is 401), so the pipeline must not pause everything.
        403 => ErrorClass::Permanent,
        408 | 425 | 429 => ErrorClass::Transient,
        413 => ErrorClass::Permanent,
        507 => ErrorClass::Capacity,
        500..=599 => ErrorClass::Transient,
        300..=499 => ErrorClass::Permanent,
        // 1xx or an unexpected 2xx where an error was expected: nothing is known to be wrong
        // with the request itself.
        _ => ErrorClass::Transient,
    }
}

fn is_quota_message(message: &str) -> bool {
    message
        .to_ascii_lowercase()
        .contains("quota has been exceeded")
}

fn is_unsupported_type_message(message: &str) -> bool {
    message
        .to_ascii_lowercase()
        .starts_with("unsupported file type")
}

fn describe_missing(key_name: Option<&str>, missing: &[String]) -> String {
    let key = match key_name {
        Some(n) if !n.is_empty() => format!("the API key {n:?}"),
        _ => "the API key".to_owned(),
    };
    format!(
        "{key} lacks the permission{} {}: edit the key in Immich (Account Settings > API Keys) \
         or create one with at least {} (recommended: {})",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", "),
        super::REQUIRED_PERMISSIONS.join(", "),
        RECOMMENDED_PERMISSIONS.join(", ")
    )
}

fn describe_http(
    request: &RequestInfo,
    status: u16,
    message: &str,
    retry_after: Option<Duration>,
    location: Option<&str>,
) -> String {
    let said = if message.is_empty() {
        format!("HTTP {status} on {} {}", request.method, request.path)
    } else {
        format!(
            "HTTP {status} on {} {}: {message}",
            request.method, request.path
        )
    };
    let what = match &request.file {
        Some(f) => format!("{}", f.display()),
        None => "the request".to_owned(),
    };
    let mut text = match status {
        413 => {
            let size = match request.file_size {
                Some(n) => format!(" ({})", crate::human::size(n)),
                None => String::new(),
            };
            format!(
                "{what}{size} was refused as too large ({said}): Immich itself has no upload \
                 size limit, so a proxy in front of it does: raise nginx \
                 `client_max_body_size` (Immich's example uses 50000M) or the equivalent \
                 setting of your proxy; Cloudflare limits a request to 100 MB, so upload \
                 large files on a direct connection"
            )
        }
        400 if is_quota_message(message) => format!(
            "the user's storage quota on the server is used up ({said}): free space or raise \
             the quota"
        ),
        400 if is_unsupported_type_message(message) => {
            format!("the server does not accept the type of {what} ({said})")
        }
        400 => format!("the server refused {what} ({said})"),
        401 => format!(
            "the server rejected the credentials ({said}): check the API key, or the email and \
             password, in the [server] section"
        ),
        403 => format!(
            "the credentials lack a permission ({said}): give the API key the permission named \
             (recommended: {})",
            RECOMMENDED_PERMISSIONS.join(", ")
        ),
        404 => format!(
            "the server does not know this route ({said}); is it an Immich server, and recent \
             enough?"
        ),
        408 | 425 | 429 => format!("the server or a proxy asked to slow down ({said})"),
        507 => format!("the server's disk is full ({said})"),
        300..=399 => format!(
            "the server answered with a redirect to {} ({said}); redirects are not followed \
             so that credentials never leave this host: set server.url to the final address",
            location.unwrap_or("an unnamed location")
        ),
        500..=599 => format!("the server failed ({said})"),
        _ => format!("unexpected answer ({said})"),
    };
    let names_file = status == 413 || (status == 400 && !is_quota_message(message));
    if let (Some(f), false) = (&request.file, names_file) {
        text = format!("{}: {text}", f.display());
    }
    if let Some(d) = retry_after {
        text.push_str(&format!("; it asked to retry after {} s", d.as_secs()));
    }
    text.push_str(&format!(" [correlation id {}]", request.correlation_id));
    text
}

/// The longest server message kept, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// The server's message out of an error body: `message` (a string or a list of strings, as
/// in Immich's `{message, error, statusCode, correlationId}`) or `error` from JSON; the
/// `<title>` of an HTML page (nginx, Cloudflare); else the text itself, on one line. Always
/// short; may be empty.
pub fn server_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    let found = if trimmed.starts_with('{') {
        serde_json::from_str::<serde_json::Value>(trimmed)
            .ok()
            .and_then(|v| json_message(&v))
    } else if trimmed.starts_with('<') {
        html_title(trimmed)
    } else {
        None
    };
    let msg = found.unwrap_or_else(|| {
        if trimmed.starts_with('<') || trimmed.starts_with('{') {
            String::new()
        } else {
            trimmed.to_owned()
        }
    });
    one_line(&msg)
}

fn json_message(v: &serde_json::Value) -> Option<String> {
    let pick = |field: &str| match v.get(field) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Array(items)) if !items.is_empty() => Some(
            items
                .iter()
                .map(|i| match i {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => None,
    };
    pick("message").or_else(|| pick("error"))
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    for (open, close) in [("<title>", "</title>"), ("<h1>", "</h1>")] {
        if let Some(start) = lower.find(open) {
            let start = start + open.len();
            if let Some(len) = lower[start..].find(close) {
                let t = html[start..start + len].trim();
                if !t.is_empty() {
                    return Some(t.to_owned());
                }
            }
        }
    }
    None
}

fn one_line(s: &str) -> String {
    // Control characters go first (whitespace ones become spaces), so that removing one
    // never leaves a space at an end.
    let visible: String = s
        .chars()
        .filter(|c| !c.is_control() || c.is_whitespace())
        .collect();
    let mut out: String = visible
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_MESSAGE_CHARS + 1)
        .collect();
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect();
        out.push('…');
    }
    out
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (IMF-fixdate, or RFC 2822
/// with a numeric zone), relative to `now`. A date in the past means "now"; values are
/// capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let imf = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &imf)
        .map(|t| t.assume_utc())
        .or_else(|_| OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822))
        .ok()?;
    let delta = at - now;
    if delta.is_negative() {
        return Some(Duration::ZERO);
    }
    Some(Duration::try_from(delta).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(file: Option<(&str, u64)>) -> RequestInfo {
        RequestInfo {
            method: "POST".into(),
            host: "photos.example.com".into(),
            path: "/api/assets".into(),
            correlation_id: "cid-1".into(),
            file: file.map(|(f, _)| PathBuf::from(f)),
            file_size: file.map(|(_, s)| s),
        }
    }

    fn http(status: u16, body: &str) -> ApiError {
        ApiError::Http {
            request: Box::new(req(Some(("/photos/big.mov", 157_286_400)))),
            status,
            message: server_message(body.as_bytes()),
            retry_after: None,
            location: None,
        }
    }

    #[test]
    fn classification_by_status_and_message() {
        let cases: &[(u16, &str, ErrorClass)] = &[
            (
                400,
                r#"{"message":"Quota has been exceeded!","error":"Bad Request","statusCode":400}"#,
                ErrorClass::Capacity,
            ),
            (
                400,
                r#"{"message":"Unsupported file type IMG.abc","statusCode":400}"#,
                ErrorClass::Permanent,
            ),
            (
                400,
                r#"{"message":["[fileCreatedAt] Invalid ISO datetime"],"statusCode":400}"#,
                ErrorClass::Permanent,
            ),
            (
                400,
                r#"{"message":"Not found or no asset.read access"}"#,
                ErrorClass::Permanent,
            ),
            (401, r#"{"message":"Invalid API key"}"#, ErrorClass::Auth),
            (
                403,
                r#"{"message":"Missing required permission: asset.upload"}"#,
                ErrorClass::Permanent,
            ),
            (404, "", ErrorClass::Permanent),
            (408, "", ErrorClass::Transient),
            (
                413,
                "<html><head><title>413 Request Entity Too Large</title></head></html>",
                ErrorClass::Permanent,
            ),
            (425, "", ErrorClass::Transient),
            (429, "", ErrorClass::Transient),
            (
                500,
                r#"{"message":"Failed to upload asset"}"#,
                ErrorClass::Transient,
            ),
            (
                502,
                "<html><title>502 Bad Gateway</title></html>",
                ErrorClass::Transient,
            ),
            (503, "", ErrorClass::Transient),
            (504, "", ErrorClass::Transient),
            (507, "", ErrorClass::Capacity),
            (301, "", ErrorClass::Permanent),
        ];
        for (status, body, class) in cases {
            assert_eq!(http(*status, body).class(), *class, "{status} {body}");
        }
    }

    #[test]
    fn a_413_names_the_size_and_the_proxy_settings() {
        let e = http(
            413,
            "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\
             <center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center>",
        );
        let text = e.to_string();
        assert!(text.contains("/photos/big.mov"), "{text}");
        assert!(text.contains("157286400 bytes, 150.0 MiB"), "{text}");
        assert!(text.contains("client_max_body_size"), "{text}");
        assert!(text.contains("Cloudflare"), "{text}");
        assert!(text.contains("413 Request Entity Too Large"), "{text}");
        assert!(!text.contains('<'), "{text}");
    }

    #[test]
    fn messages_come_out_of_json_html_and_text() {
        assert_eq!(
            server_message(br#"{"message":"Quota has been exceeded!","error":"Bad Request"}"#),
            "Quota has been exceeded!"
        );
        assert_eq!(
            server_message(br#"{"message":["a must be a date","b is required"]}"#),
            "a must be a date; b is required"
        );
        assert_eq!(server_message(br#"{"error":"Bad Gateway"}"#), "Bad Gateway");
        assert_eq!(server_message(br#"{"statusCode":500}"#), "");
        assert_eq!(
            server_message(b"<!DOCTYPE html><html><head><title>Immich</title>"),
            "Immich"
        );
        assert_eq!(server_message(b"<html><body>"), "");
        assert_eq!(
            server_message(b"upstream\nconnect error"),
            "upstream connect error"
        );
        let long = "x".repeat(1000);
        assert_eq!(server_message(long.as_bytes()).chars().count(), 301);
        assert_eq!(server_message(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = time::macros::datetime!(2026-04-20 12:00:00 UTC);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Mon, 20 Apr 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Mon, 20 Apr 2026 14:01:30 +0200", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 19 Apr 2026 12:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Tue, 20 Apr 2027 12:00:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn other_classes_and_accessors() {
        let e = ApiError::FileChanged {
            file: "/p/a.jpg".into(),
            reason: "it is shorter than when hashed".into(),
        };
        assert_eq!(e.class(), ErrorClass::FileChanged);
        assert_eq!(e.file(), Some(std::path::Path::new("/p/a.jpg")));
        let e = ApiError::Stalled {
            request: Box::new(req(None)),
            after: Duration::from_secs(60),
        };
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(
            e.to_string(),
            "POST /api/assets: no progress for 60 s; the connection was dropped"
        );
        let e = ApiError::MissingPermissions {
            key_name: Some("nas".into()),
            missing: vec!["asset.upload".into(), "asset.read".into()],
        };
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e
            .to_string()
            .starts_with("the API key \"nas\" lacks the permissions asset.upload, asset.read:"));
        let e = ApiError::Http {
            request: Box::new(req(None)),
            status: 503,
            message: String::new(),
            retry_after: Some(Duration::from_secs(7)),
            location: None,
        };
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e.status(), Some(503));
        assert_eq!(
            e.to_string(),
            "the server failed (HTTP 503 on POST /api/assets); it asked to retry after 7 s \
             [correlation id cid-1]"
        );
    }

    #[test]
    fn a_cause_is_printed_once_in_an_error_chain() {
        let e = ApiError::LocalFile {
            file: "/p/a.jpg".into(),
            error: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let mut chain = vec![e.to_string()];
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        let all = chain.join(": ");
        assert_eq!(all.matches("permission denied").count(), 1, "{all}");
        assert!(
            all.starts_with("could not read /p/a.jpg for upload: permission denied"),
            "{all}"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(crate::human::size(10), "10 bytes");
        assert_eq!(crate::human::size(1536), "1536 bytes, 1.5 KiB");
        assert_eq!(crate::human::size(3 << 30), "3221225472 bytes, 3.0 GiB");
    }
}
