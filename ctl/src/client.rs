//! The admin API over HTTP: one blocking agent, the member's URL and the bearer token, and the
//! API's refusals as typed errors ([`ApiError`]).
//!
//! It knows the paths, headers and bodies of the endpoints geolbctl calls; what a command does
//! with an answer (retry, show a diff, keep a file) is the command's business.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use ureq::http::{Method, Request, header};

/// The header a write's change message goes in.
pub(crate) const MESSAGE_HEADER: &str = "Geolb-Message";

/// Longest change message the API keeps, in characters (it cuts the rest).
pub(crate) const MAX_MESSAGE_CHARS: usize = 1000;

/// Largest answer read, in bytes: a document may be 16 MiB, its pretty form larger.
const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// How long one request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The characters a node id keeps unescaped in a URL path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// One stored version's metadata, as the history and a 412 answer give it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct VersionMeta {
    /// From 1.
    pub(crate) version: u64,
    /// SHA-256 of the canonical document, hex.
    pub(crate) hash: String,
    /// The token name that wrote it (`file` for a seed from a member's local file).
    pub(crate) author: String,
    /// When, unix ms on the writer's clock.
    pub(crate) at_ms: u64,
    /// The writer's change message.
    #[serde(default)]
    pub(crate) message: String,
    /// Lost a conflict with another document under the same number.
    #[serde(default)]
    pub(crate) superseded: bool,
}

/// `GET /api/v1/config/versions/{n}`: a version and its canonical JSON text.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct VersionBody {
    /// Its metadata.
    #[serde(flatten)]
    pub(crate) meta: VersionMeta,
    /// The exact canonical text its hash is over.
    pub(crate) document: String,
}

/// The newest document as `GET /api/v1/config` serves it.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    /// Its version, from the `ETag` (0 for a member whose document is its local file).
    pub(crate) version: u64,
    /// Its hash, from `Geolb-Hash`, when given.
    pub(crate) hash: Option<String>,
    /// The text: pretty JSON, or TOML when asked for.
    pub(crate) text: String,
}

/// A write that was stored.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Written {
    /// The new version.
    pub(crate) version: u64,
    /// Its hash.
    pub(crate) hash: String,
}

/// A problem the API found in a document (422).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Problem {
    /// Key path, e.g. `nodes[0].pop`; empty for the whole document.
    #[serde(default)]
    pub(crate) path: String,
    /// What is wrong.
    pub(crate) message: String,
    /// Where it is in the member's local file, when it is there (not in the document).
    pub(crate) local_file: Option<Position>,
}

/// A line and column in a member's local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct Position {
    /// From 1.
    pub(crate) line: u64,
    /// From 1.
    pub(crate) column: u64,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(p) = self.local_file {
            write!(f, " (in the member's local file, line {}, column {})", p.line, p.column)?;
        }
        Ok(())
    }
}

/// What went wrong with a call: the member could not be reached, or it refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No answer (connection refused, timeout, a broken answer).
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why.
        source: Box<ureq::Error>,
    },
    /// 422: the document does not validate; nothing was stored.
    #[error("{}", invalid_text(.error, .problems))]
    Invalid {
        /// The API's summary.
        error: String,
        /// Every problem.
        problems: Vec<Problem>,
    },
    /// 412: someone wrote since the version the write started from.
    #[error("{}", stale_text(*.expected, .head.as_ref()))]
    Stale {
        /// The version the write started from (its `If-Match`).
        expected: u64,
        /// The newest version now, when the API said.
        head: Option<VersionMeta>,
    },
    /// Any other refusal: the API's `error`, or the body's text.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What the API said.
        message: String,
    },
}

fn invalid_text(error: &str, problems: &[Problem]) -> String {
    let mut out = error.to_owned();
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

fn stale_text(expected: u64, head: Option<&VersionMeta>) -> String {
    match head {
        Some(h) => format!(
            "the document changed since version {expected}: {} wrote version {} at {}{}",
            h.author,
            h.version,
            crate::utc(h.at_ms),
            if h.message.is_empty() { String::new() } else { format!(" (\"{}\")", h.message) }
        ),
        None => format!("the document changed since version {expected}, and there is no version now"),
    }
}

/// An answer: status, `ETag` version, `Geolb-Hash`, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    etag: Option<u64>,
    hash: Option<String>,
    body: String,
}

/// A member's admin API.
pub(crate) struct Client {
    agent: ureq::Agent,
    /// `http://host:port`, no trailing slash.
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the admin API at `url` (`http://host:port`; a bare `host:port` means
    /// `http://`), sending `token` as the bearer token.
    pub(crate) fn new(url: &str, token: Option<String>) -> Client {
        let url = url.trim().trim_end_matches('/');
        let base = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
        let config = ureq::Agent::config_builder()
            // Refusals carry a JSON body worth reading: they are answers, not transport errors.
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build();
        Client { agent: config.into(), base, token }
    }

    /// The member's URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/config`, as TOML or JSON; `None` when there is no document yet.
    pub(crate) fn config(&self, toml: bool) -> Result<Option<Fetched>, ApiError> {
        let accept = if toml { "application/toml" } else { "application/json" };
        let reply = self.call(Method::GET, "/api/v1/config", &[(header::ACCEPT.as_str(), accept)], None)?;
        match reply.status {
            200 => Ok(Some(Fetched { version: reply.etag.unwrap_or(0), hash: reply.hash, text: reply.body })),
            404 => Ok(None),
            _ => Err(self.refusal(&reply, None)),
        }
    }

    /// `PUT /api/v1/config`: `document` (JSON) as the version after `expected`.
    pub(crate) fn put_config(&self, expected: u64, document: &[u8], message: &str) -> Result<Written, ApiError> {
        let if_match = format!("\"{expected}\"");
        let mut headers =
            vec![(header::IF_MATCH.as_str(), if_match.as_str()), (header::CONTENT_TYPE.as_str(), "application/json")];
        if !message.is_empty() {
            headers.push((MESSAGE_HEADER, message));
        }
        let reply = self.call(Method::PUT, "/api/v1/config", &headers, Some(document))?;
        match reply.status {
            200 => self.json(&reply),
            _ => Err(self.refusal(&reply, Some(expected))),
        }
    }

    /// `GET /api/v1/config/history`: every version, newest first.
    pub(crate) fn history(&self) -> Result<Vec<VersionMeta>, ApiError> {
        let reply = self.call(Method::GET, "/api/v1/config/history", &[], None)?;
        match reply.status {
            200 => self.json(&reply),
            _ => Err(self.refusal(&reply, None)),
        }
    }

    /// `GET /api/v1/config/versions/{n}`.
    pub(crate) fn version(&self, version: u64) -> Result<VersionBody, ApiError> {
        let reply = self.call(Method::GET, &format!("/api/v1/config/versions/{version}"), &[], None)?;
        match reply.status {
            200 => self.json(&reply),
            _ => Err(self.refusal(&reply, None)),
        }
    }

    /// `POST /api/v1/nodes/{id}/drain` (or `undrain`): the answer's JSON.
    pub(crate) fn drain(&self, id: &str, drained: bool) -> Result<serde_json::Value, ApiError> {
        let verb = if drained { "drain" } else { "undrain" };
        let path = format!("/api/v1/nodes/{}/{verb}", utf8_percent_encode(id, SEGMENT));
        let reply = self.call(Method::POST, &path, &[], Some(b""))?;
        match reply.status {
            200 => self.json(&reply),
            _ => Err(self.refusal(&reply, None)),
        }
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, ApiError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |source: ureq::Error| ApiError::Unreachable { url: url.clone(), source: Box::new(source) };
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let sent = match body {
            Some(body) => request.body(body).map(|r| self.agent.run(r)),
            None => request.body(()).map(|r| self.agent.run(r)),
        };
        let mut response = sent.map_err(|e| unreachable(e.into()))?.map_err(unreachable)?;
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().trim_start_matches("W/").trim_matches('"').parse().ok());
        let hash = response.headers().get("geolb-hash").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(MAX_BODY_BYTES).read_to_string().map_err(unreachable)?;
        Ok(Reply { status, etag, hash, body })
    }

    fn json<T: serde::de::DeserializeOwned>(&self, reply: &Reply) -> Result<T, ApiError> {
        serde_json::from_str(&reply.body).map_err(|e| ApiError::Refused {
            status: reply.status,
            message: format!("{} answered something unexpected ({e}): {}", self.base, reply.body.trim()),
        })
    }

    /// The refusal a non-2xx answer carries. `expected` is the `If-Match` of a write.
    fn refusal(&self, reply: &Reply, expected: Option<u64>) -> ApiError {
        let json: Option<serde_json::Value> = serde_json::from_str(&reply.body).ok();
        let error = json.as_ref().and_then(|j| j["error"].as_str()).map(str::to_owned);
        match (reply.status, expected, &json) {
            (422, _, Some(j)) if j.get("problems").is_some() => ApiError::Invalid {
                error: error.unwrap_or_else(|| "invalid fleet document".to_owned()),
                problems: serde_json::from_value(j["problems"].clone()).unwrap_or_default(),
            },
            (412, Some(expected), Some(j)) => {
                ApiError::Stale { expected, head: serde_json::from_value(j["head"].clone()).ok() }
            }
            (status, _, _) => {
                let mut message = error.unwrap_or_else(|| match reply.body.trim() {
                    "" => format!("{} answered HTTP {status}", self.base),
                    text => text.to_owned(),
                });
                if status == 401 && self.token.is_none() {
                    message.push_str(" (no token given: use --token-file, --token, GEOLB_TOKEN_FILE or GEOLB_TOKEN)");
                }
                ApiError::Refused { status, message }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply { status, etag: None, hash: None, body: body.to_owned() }
    }

    #[test]
    fn refusals_carry_what_the_api_said() {
        let c = Client::new("127.0.0.1:9101", None);
        assert_eq!(c.base(), "http://127.0.0.1:9101");
        let e = c.refusal(&reply(403, r#"{"error":"token `viewer` is read-only"}"#), Some(1));
        assert_eq!(e.to_string(), "token `viewer` is read-only");
        let e = c.refusal(&reply(404, "unknown node `x`\n"), None);
        assert_eq!(e.to_string(), "unknown node `x`");
        let e = c.refusal(&reply(401, r#"{"error":"missing or wrong bearer token"}"#), None);
        assert!(e.to_string().starts_with("missing or wrong bearer token (no token given"), "{e}");
        let e = c.refusal(&reply(502, ""), None);
        assert_eq!(e.to_string(), "http://127.0.0.1:9101 answered HTTP 502");
    }

    #[test]
    fn a_422_lists_every_problem() {
        let c = Client::new("http://m:1/", Some("t".into()));
        assert_eq!(c.base(), "http://m:1");
        let body = r#"{"error":"invalid fleet document: nothing was stored","problems":[
            {"path":"nodes[0].pop","message":"unknown pop `ams`"},
            {"path":"","message":"whole","local_file":{"line":3,"column":7}}]}"#;
        let e = c.refusal(&reply(422, body), Some(4));
        assert_eq!(
            e.to_string(),
            "invalid fleet document: nothing was stored\n  nodes[0].pop: unknown pop `ams`\n  whole (in the member's local file, line 3, column 7)"
        );
    }

    #[test]
    fn a_412_names_who_wrote_first() {
        let c = Client::new("http://m:1", Some("t".into()));
        let body = r#"{"error":"the document changed since version 2","head":{"version":3,"hash":"ab","author":"alice","at_ms":0,"message":"more syd","superseded":false}}"#;
        let e = c.refusal(&reply(412, body), Some(2));
        assert_eq!(
            e.to_string(),
            "the document changed since version 2: alice wrote version 3 at 1970-01-01 00:00:00 UTC (\"more syd\")"
        );
        let ApiError::Stale { head: Some(head), .. } = e else { panic!("not stale: {e}") };
        assert_eq!(head.version, 3);
    }
}
