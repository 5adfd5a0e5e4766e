//! The fleet document over the admin API.
//!
//! | method and path | token | answer |
//! |---|---|---|
//! | `GET /api/v1/config` | read | the newest document, JSON (TOML for `Accept: application/toml`), `ETag: "<version>"` |
//! | `PUT /api/v1/config` | write | replaces the document: `If-Match: "<version>"` required (428 without, 412 when stale), 422 with every problem |
//! | `PATCH /api/v1/config` | write | a JSON Merge Patch (RFC 7396) of the newest document, same rules |
//! | `GET /api/v1/config/history` | read | every version, newest first: number, hash, author, time, message, superseded |
//! | `GET /api/v1/config/versions/{n}` | read, or a peer | one version and its canonical text (`?hash=` picks a rival under the same number) |
//!
//! A write names its author by the token's name, and its message by the `Geolb-Message`
//! header. A rollback is a `PUT` of an old version's document.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use geolb_config::{ConfigError, FleetDocument, FleetStore};
use serde_json::json;

use super::{VersionBody, WriteError};
use crate::admin::{AdminState, Need, authorize};

/// The header a writer puts its change's description in.
pub(crate) const MESSAGE_HEADER: &str = "geolb-message";
/// Longest change description.
const MAX_MESSAGE_CHARS: usize = 1000;

/// `GET /api/v1/config`.
pub(crate) async fn get_config(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = authorize(&state, &headers, Need::Read) {
        return refusal.into_response();
    }
    let Some((version, hash, document)) = newest(&state) else {
        return error(StatusCode::NOT_FOUND, "no fleet document yet: PUT one with If-Match: \"0\"");
    };
    let toml = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("toml"));
    let (content_type, body) = if toml {
        match document.to_toml() {
            Ok(text) => ("application/toml", text),
            Err(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot write the document as TOML: {e}"));
            }
        }
    } else {
        let mut text = serde_json::to_string_pretty(&document.to_value()).unwrap_or_default();
        text.push('\n');
        ("application/json", text)
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::ETAG, etag(version));
    if let Ok(hash) = HeaderValue::from_str(&hash) {
        h.insert("geolb-hash", hash);
    }
    response
}

/// The newest document: the store's head, or the local file's tables.
fn newest(state: &AdminState) -> Option<(u64, String, std::sync::Arc<FleetDocument>)> {
    match state.source.store() {
        FleetStore::Embedded | FleetStore::Postgres => {
            state.source.head().map(|(meta, doc)| (meta.version, meta.hash, doc))
        }
        FleetStore::File => {
            let config = state.config.load();
            Some((0, config.fleet.hash.clone(), config.fleet.document.clone()))
        }
    }
}

/// `PUT /api/v1/config`.
pub(crate) async fn put_config(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    let (author, expected) = match write_preconditions(&state, &headers) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    let toml = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("toml"));
    let document = if toml {
        match std::str::from_utf8(&body)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<toml::Table>(t).map_err(|e| e.to_string()))
        {
            Ok(table) => serde_json::to_value(table)
                .map_err(|e| e.to_string())
                .and_then(|v| FleetDocument::from_value(v).map_err(|e| e.to_string())),
            Err(e) => Err(format!("not TOML: {e}")),
        }
        .map_err(|e| invalid_text(&e))
    } else {
        FleetDocument::from_json(&body).map_err(|e| invalid(&e))
    };
    match document {
        Ok(document) => write(&state, &headers, author, expected, document).await,
        Err(refusal) => refusal,
    }
}

/// `PATCH /api/v1/config`: RFC 7396 over the newest document.
pub(crate) async fn patch_config(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    let (author, expected) = match write_preconditions(&state, &headers) {
        Ok(ok) => ok,
        Err(refusal) => return refusal.into_response(),
    };
    let patch: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return invalid_text(&format!("the patch is not JSON: {e}")),
    };
    let mut target = newest(&state).map_or_else(|| json!({}), |(_, _, doc)| doc.to_value());
    json_patch::merge(&mut target, &patch);
    match FleetDocument::from_value(target) {
        Ok(document) => write(&state, &headers, author, expected, document).await,
        Err(e) => invalid(&e),
    }
}

/// The writer's token name and the `If-Match` version, or the refusal.
fn write_preconditions(state: &AdminState, headers: &HeaderMap) -> Result<(String, u64), ApiError> {
    let author = authorize(state, headers, Need::Write)?;
    if state.source.store() == FleetStore::File {
        return Err(ApiError::new(StatusCode::CONFLICT, WriteError::FileStore.to_string()));
    }
    let Some(given) = headers.get(header::IF_MATCH) else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "If-Match is required: GET the document, change it, and send its ETag back as If-Match",
        ));
    };
    let version = given
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<u64>().ok());
    match version {
        Some(v) => Ok((author, v)),
        None => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "If-Match must be a version as the ETag gives it, e.g. \"7\""))
        }
    }
}

async fn write(
    state: &AdminState,
    headers: &HeaderMap,
    author: String,
    expected: u64,
    document: FleetDocument,
) -> Response {
    let message = match headers.get(MESSAGE_HEADER).map(|v| std::str::from_utf8(v.as_bytes())) {
        None => String::new(),
        Some(Ok(text)) if !text.chars().any(char::is_control) && text.chars().count() <= MAX_MESSAGE_CHARS => {
            text.trim().to_owned()
        }
        Some(_) => {
            let why =
                format!("{MESSAGE_HEADER} must be UTF-8 text on one line, at most {MAX_MESSAGE_CHARS} characters");
            return error(StatusCode::BAD_REQUEST, &why);
        }
    };
    match state.source.write(expected, document, &author, &message).await {
        Ok(meta) => {
            let mut response =
                (StatusCode::OK, Json(json!({ "version": meta.version, "hash": meta.hash }))).into_response();
            response.headers_mut().insert(header::ETAG, etag(meta.version));
            response
        }
        Err(WriteError::Invalid(e)) => invalid(&e),
        Err(WriteError::Stale { expected, head }) => {
            let body = json!({
                "error": format!("the document changed since version {expected}: GET it again and apply the change to it"),
                "head": head,
            });
            (StatusCode::PRECONDITION_FAILED, Json(body)).into_response()
        }
        Err(e @ WriteError::FileStore) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e @ (WriteError::Store(_) | WriteError::Unavailable(_))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

/// `GET /api/v1/config/history`.
pub(crate) async fn get_history(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = authorize(&state, &headers, Need::Read) {
        return refusal.into_response();
    }
    Json(state.source.history()).into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct VersionQuery {
    hash: Option<String>,
}

/// `GET /api/v1/config/versions/{n}`.
pub(crate) async fn get_version(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(version): Path<u64>,
    Query(query): Query<VersionQuery>,
) -> Response {
    if let Err(refusal) = authorize(&state, &headers, Need::Peer) {
        return refusal.into_response();
    }
    match state.source.version(version, query.hash.as_deref()) {
        Some((meta, bytes)) => match String::from_utf8(bytes) {
            Ok(document) => Json(VersionBody { meta, document }).into_response(),
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "stored document is not text"),
        },
        None => error(StatusCode::NOT_FOUND, &format!("no version {version} here")),
    }
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, message).into_response()
}

/// A refusal: its status and a JSON body `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// 422 with every problem: its key path, and its line and column when it is in the local file.
fn invalid(e: &ConfigError) -> Response {
    let problems: Vec<serde_json::Value> = e
        .problems()
        .iter()
        .map(|p| match p.position {
            Some((line, column)) => {
                json!({ "path": p.path, "message": p.message, "local_file": { "line": line, "column": column } })
            }
            None => json!({ "path": p.path, "message": p.message }),
        })
        .collect();
    let problems = if problems.is_empty() { vec![json!({ "path": "", "message": e.to_string() })] } else { problems };
    let body = json!({ "error": "invalid fleet document: nothing was stored", "problems": problems });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

fn invalid_text(message: &str) -> Response {
    let body = json!({ "error": "invalid fleet document: nothing was stored", "problems": [{ "path": "", "message": message }] });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}
