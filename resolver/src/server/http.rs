//! The HTTP connector: PowerDNS's `remote-connection-string=http:url=…,post=1,post_json=1`.
//!
//! hyper HTTP/1.1 with keep-alive (PowerDNS keeps one connection per backend instance and sends
//! calls on it one after another, so our latency is its throughput). Each response is one
//! buffer written with TCP_NODELAY: headers and body in two segments cost ~44 ms per call
//! through Nagle and delayed ACK. Bodies are bounded: a declared or actual body over the bound
//! is refused with 413 and the connection closed, never buffered. PowerDNS sends
//! `Content-Type: text/javascript`, so the content type is not checked.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::Backend;
use crate::server::Handled;

/// What the HTTP connector needs to answer.
#[derive(Clone)]
pub struct HttpState {
    /// Answers the calls.
    pub backend: Backend,
    /// Largest accepted request body.
    pub max_body: usize,
    /// Renders the resolver's metrics for `GET /metrics`.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// What a connection is allowed (`[resolver]` `header_timeout_ms`, `idle_timeout_ms`,
    /// `max_connections`); a request body gets `header_timeout` too.
    pub limits: geolb_config::ConnectionLimits,
    /// The connector's connection metrics (`listener="http"`).
    pub connections: geolb_member::listener::ConnectionMetrics,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("max_body", &self.max_body)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Serves the HTTP connector on `listener` until `shutdown`; then closes the listener at once,
/// lets connections finish their current call for up to
/// [`SHUTDOWN_GRACE`](crate::server::SHUTDOWN_GRACE), and drops the rest. Connections are
/// bounded by `state.limits` ([`geolb_member::listener`]).
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: CancellationToken) {
    let limits = state.limits;
    let http = geolb_member::listener::Listener {
        name: "http",
        limits: Arc::new(move || limits),
        metrics: state.connections.clone(),
        shutdown_grace: crate::server::SHUTDOWN_GRACE,
    };
    let make_service = move |_| {
        let state = state.clone();
        service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(req, &state).await) }
        })
    };
    geolb_member::listener::serve(listener, http, make_service, shutdown).await;
}

fn respond(status: StatusCode, body: Vec<u8>, close: bool) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn error_body(message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    crate::pdns::reply::error(&mut out, message);
    out
}

/// The path PowerDNS posts its calls to: `url=http://HOST:PORT/dns` (with `post_json=1` it posts
/// to the URL as given). Paths under it (`/dns/`, and `/dns/lookup/…` of the RESTful mode, which
/// is refused below) count as it: anything else is 404, whatever the method.
const CALL_PATH: &str = "/dns";

/// Whether `path` is [`CALL_PATH`] or under it.
fn is_call_path(path: &str) -> bool {
    path.strip_prefix(CALL_PATH).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

async fn handle(req: Request<Incoming>, state: &HttpState) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let metrics = state.metrics.as_ref().filter(|_| path == "/metrics");
    match *req.method() {
        Method::POST if is_call_path(path) => {}
        Method::GET if path == "/healthz" => {
            return respond(StatusCode::OK, br#"{"status":"ok"}"#.to_vec(), false);
        }
        Method::GET if metrics.is_some() => {
            let body = metrics.map(|render| render()).unwrap_or_default();
            let mut response = respond(StatusCode::OK, body.into_bytes(), false);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(geolb_member::metrics::CONTENT_TYPE));
            return response;
        }
        _ if is_call_path(path) => {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                error_body(
                    "only POST with post_json=1 is supported: remote-connection-string=http:url=http://HOST:PORT/dns,post=1,post_json=1",
                ),
                false,
            );
        }
        _ if path == "/healthz" || metrics.is_some() => {
            return respond(StatusCode::METHOD_NOT_ALLOWED, error_body(&format!("{path} answers GET only")), false);
        }
        _ => {
            let why = format!(
                "no such path {path:?}: PowerDNS calls go to {CALL_PATH} (remote-connection-string=http:url=http://HOST:PORT{CALL_PATH},post=1,post_json=1)"
            );
            return respond(StatusCode::NOT_FOUND, error_body(&why), false);
        }
    }
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body as u64) {
        return respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_body(&format!("request body over {} bytes refused", state.max_body)),
            true,
        );
    }
    let read = Limited::new(req.into_body(), state.max_body).collect();
    let body = match tokio::time::timeout(state.limits.header_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Err(_) => {
            state.connections.count(geolb_member::listener::Refusal::BodyTimeout);
            return respond(StatusCode::REQUEST_TIMEOUT, error_body("request body not received in time"), true);
        }
        Ok(Err(e)) => {
            let too_large = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            let (status, message) = if too_large {
                (StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {} bytes refused", state.max_body))
            } else {
                (StatusCode::BAD_REQUEST, format!("failed to read request body: {e}"))
            };
            return respond(status, error_body(&message), true);
        }
    };
    let mut out = Vec::with_capacity(512);
    let handled = state.backend.call(&body, &mut out);
    let status = match handled {
        Handled::BadRequest => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    respond(status, out, false)
}
