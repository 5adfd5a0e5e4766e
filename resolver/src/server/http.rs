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
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState").field("max_body", &self.max_body).finish_non_exhaustive()
    }
}

/// Time a client may take to send a request's headers, and then its body. PowerDNS sends a
/// whole call at once; anything slower is a stuck or hostile client holding a task.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Serves the HTTP connector on `listener` until `shutdown`; then closes the listener at once,
/// lets connections finish their current call for up to
/// [`SHUTDOWN_GRACE`](crate::server::SHUTDOWN_GRACE), and drops the rest.
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay failed");
        }
        let state = state.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_READ_TIMEOUT)
                .keep_alive(true)
                .writev(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // Refuse new connections now, not when the last old one is done.
    drop(listener);
    crate::server::finish_connections(tracker).await;
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

async fn handle(req: Request<Incoming>, state: &HttpState) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, _) => {}
        (&Method::GET, "/healthz") => {
            return respond(StatusCode::OK, br#"{"status":"ok"}"#.to_vec(), false);
        }
        (&Method::GET, "/metrics") if state.metrics.is_some() => {
            let body = state.metrics.as_ref().map(|render| render()).unwrap_or_default();
            let mut response = respond(StatusCode::OK, body.into_bytes(), false);
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(geolb_member::metrics::CONTENT_TYPE));
            return response;
        }
        _ => {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                error_body(
                    "only POST with post_json=1 is supported: remote-connection-string=http:url=http://HOST:PORT/dns,post=1,post_json=1",
                ),
                false,
            );
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
    let body = match tokio::time::timeout(REQUEST_READ_TIMEOUT, Limited::new(req.into_body(), state.max_body).collect())
        .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Err(_) => {
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
