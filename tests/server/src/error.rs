//! Error replies in Immich's shape, and the JSON body extractor that produces them.
//!
//! Immich's global exception filter answers `{"message", "error", "statusCode",
//! "correlationId"}`; the seed reference has no `correlationId`. The correlation id and the
//! dialect of the request being served live in a task-local set by the fault/counter middleware
//! (`faults::middleware`), so any handler can build an error without threading them through.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::Dialect;

/// What the middleware knows about the request being served.
#[derive(Clone, Debug)]
pub(crate) struct RequestInfo {
    pub cid: String,
    pub dialect: Dialect,
}

tokio::task_local! {
    pub(crate) static REQUEST: RequestInfo;
}

pub(crate) fn current_dialect() -> Dialect {
    REQUEST.try_with(|r| r.dialect).unwrap_or(Dialect::Immich)
}

fn current_cid() -> String {
    REQUEST
        .try_with(|r| r.cid.clone())
        .unwrap_or_else(|_| crate::state::new_id())
}

/// An error reply. `message` is a string or, for validation errors, an array of strings.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: Value,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<Value>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<Value>) -> ApiError {
        ApiError::new(400, message)
    }

    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(401, message)
    }

    pub fn forbidden(message: &str) -> ApiError {
        ApiError::new(403, message)
    }

    /// A validation failure: `message` is always an array, as class-validator and zod give.
    pub fn validation(messages: Vec<String>) -> ApiError {
        ApiError::new(400, Value::from(messages))
    }

    /// Nest's answer for an unknown route.
    pub fn no_route(method: &str, path: &str) -> ApiError {
        ApiError::new(404, format!("Cannot {method} {path}"))
    }

    /// `requireAccess`'s answer: 400, not 404.
    pub fn no_access(permission: &str) -> ApiError {
        ApiError::bad_request(format!("Not found or no {permission} access"))
    }
}

/// One validation message in the dialect's style: class-validator's sentence for v2.7.5 and
/// the seed, zod's `[path] issue` for the next major.
pub(crate) fn invalid(field: &str, class_validator: &str, zod: &str) -> String {
    match current_dialect() {
        Dialect::ImmichNext => format!("[{field}] {zod}"),
        _ => class_validator.to_string(),
    }
}

/// The body of an error reply with this status and message.
pub(crate) fn error_body(status: StatusCode, message: Value) -> Value {
    let reason = status.canonical_reason().unwrap_or("Error");
    match current_dialect() {
        Dialect::Seed => json!({
            "message": message,
            "error": reason,
            "statusCode": status.as_u16(),
        }),
        _ => json!({
            "message": message,
            "error": reason,
            "statusCode": status.as_u16(),
            "correlationId": current_cid(),
        }),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = error_body(self.status, self.message);
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body.to_string(),
        )
            .into_response()
    }
}

/// A JSON body. Unlike `axum::Json` it does not insist on a `Content-Type`, treats an empty
/// body as `{}` (as Express does), and turns parse errors into Immich-shaped 400s.
pub(crate) struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::validation(vec![e.to_string()]))
    }
}

/// Reads a field of a JSON object that must be an array of UUIDs (`ids`, `assetIds`, ...).
pub(crate) fn uuid_list(
    body: &Value,
    field: &str,
    required: bool,
) -> Result<Vec<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) if !required => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(s) if crate::state::is_uuid(s) => out.push(s.to_string()),
                    _ => {
                        return Err(ApiError::validation(vec![invalid(
                            field,
                            &format!("each value in {field} must be a UUID"),
                            "Invalid UUID",
                        )]))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(ApiError::validation(vec![invalid(
            field,
            &format!("each value in {field} must be a UUID"),
            "Invalid input: expected array, received undefined",
        )])),
    }
}

/// Reads an optional boolean field.
pub(crate) fn opt_bool(body: &Value, field: &str) -> Result<Option<bool>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::validation(vec![invalid(
            field,
            &format!("{field} must be a boolean value"),
            "Invalid input: expected boolean",
        )])),
    }
}

/// Reads an optional string field.
pub(crate) fn opt_str<'a>(body: &'a Value, field: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::validation(vec![invalid(
            field,
            &format!("{field} must be a string"),
            "Invalid input: expected string",
        )])),
    }
}
