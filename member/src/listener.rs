//! The accept loop of geolb's HTTP listeners (the admin API, the resolver's HTTP connector):
//! what keeps anyone who can connect from holding the process's file descriptors.
//!
//! Each listener has a [`ConnectionLimits`]:
//! * A new connection must send the headers of its first request within `header_timeout`; it
//!   is closed otherwise (`header_timeout`). Timed here, as hyper starts its own header timer
//!   only once per request head, with the idle time before it included.
//! * A kept-alive connection must send its next request's headers within `idle_timeout`:
//!   hyper's `header_read_timeout`, whose timer starts when the connection goes idle, so it
//!   bounds the idle time and the headers' transfer together (`idle_timeout`).
//! * At most `max_connections` are open at once. One more is accepted, answered 503 and closed
//!   at once (`limit`), rather than left unaccepted: the kernel's listen backlog would fill
//!   with connections nobody serves, a client in it would hang until its own timeout instead
//!   of learning at once, and nothing would count the refusals. A refused connection costs one
//!   descriptor for the moment it takes to close it.
//!
//! Request bodies have their own bound, `header_timeout` again, in each listener's service
//! ([`DeadlineBody`] for the admin API; the HTTP connector reads its small bodies itself).
//!
//! Every refusal is counted in `geolb_connections_refused_total{listener, reason}`, and the
//! open connections in `geolb_connections_open{listener}` ([`ConnectionMetrics`]).
//!
//! At shutdown the listener is closed at once; connections finish their current request and
//! close, for at most the grace given, and the rest are dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use geolb_config::ConnectionLimits;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::names;

/// Why the server refused or closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` were open: accepted and closed at once.
    Limit,
    /// No complete request head within `header_timeout` of the connection's start.
    HeaderTimeout,
    /// A kept-alive connection sent no complete request head within `idle_timeout`.
    IdleTimeout,
    /// A request's body did not arrive within `header_timeout` (answered 408).
    BodyTimeout,
}

impl Refusal {
    /// Every reason, in the order of their label values.
    pub const ALL: [Refusal; 4] = [Refusal::Limit, Refusal::HeaderTimeout, Refusal::IdleTimeout, Refusal::BodyTimeout];

    /// The metric's `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::BodyTimeout => "body_timeout",
        }
    }
}

/// One listener's connection metrics, recorded as things happen. The default records nothing
/// (a listener whose program exports no metrics, tests).
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    open: Option<IntGauge>,
    refused: Option<IntCounterVec>,
}

impl std::fmt::Debug for ConnectionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionMetrics").field("registered", &self.open.is_some()).finish_non_exhaustive()
    }
}

impl ConnectionMetrics {
    /// The metrics of the listener named `listener` (`admin`, `http`), registered in `registry`
    /// with every reason at 0; a registration that fails is logged and records nothing.
    pub fn register(registry: &Registry, listener: &str) -> ConnectionMetrics {
        let open =
            Opts::new(names::CONNECTIONS_OPEN, "Connections open, by listener").const_label("listener", listener);
        let refused = Opts::new(
            names::CONNECTIONS_REFUSED_TOTAL,
            "Connections refused at accept (limit) or closed by the server for a slow or idle client, by listener and reason",
        )
        .const_label("listener", listener);
        let built = IntGauge::with_opts(open).and_then(|open| Ok((open, IntCounterVec::new(refused, &["reason"])?)));
        match built {
            Ok((open, refused)) => {
                for reason in Refusal::ALL {
                    refused.with_label_values(&[reason.as_str()]);
                }
                crate::metrics::register(registry, open.clone());
                crate::metrics::register(registry, refused.clone());
                ConnectionMetrics { open: Some(open), refused: Some(refused) }
            }
            Err(e) => {
                tracing::warn!(error = %e, listener, "cannot create the connection metrics");
                ConnectionMetrics::default()
            }
        }
    }

    /// Counts one refusal.
    pub fn count(&self, reason: Refusal) {
        if let Some(refused) = &self.refused {
            refused.with_label_values(&[reason.as_str()]).inc();
        }
    }

    fn opened(&self) {
        if let Some(open) = &self.open {
            open.inc();
        }
    }

    fn closed(&self) {
        if let Some(open) = &self.open {
            open.dec();
        }
    }
}

/// The open connections of one listener: counted up at accept, down when the connection's task
/// ends (however it ends).
struct OpenConnection {
    open: Arc<AtomicUsize>,
    metrics: ConnectionMetrics,
}

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>, metrics: &ConnectionMetrics) -> OpenConnection {
        open.fetch_add(1, Ordering::Relaxed);
        metrics.opened();
        OpenConnection { open: open.clone(), metrics: metrics.clone() }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.closed();
    }
}

/// What a connection over the cap is told before it is closed.
const REFUSED_RESPONSE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n";

/// Descriptors a process needs beside one listener's connections: the other listener, the unix
/// connector and PowerDNS's connections on it, the prober's checks, files and sockets of its own.
const OTHER_DESCRIPTORS: u64 = 256;

/// How often the same accept problem is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A listener to serve: its name (the metrics' `listener` label, the logs), where its limits
/// come from, and the time its connections get at shutdown.
#[derive(Clone)]
pub struct Listener {
    /// `admin` or `http`.
    pub name: &'static str,
    /// The limits for the next connection accepted (read at each accept: a reload may change
    /// them).
    pub limits: Arc<dyn Fn() -> ConnectionLimits + Send + Sync>,
    /// Its metrics.
    pub metrics: ConnectionMetrics,
    /// Time connections get at shutdown to finish their current request.
    pub shutdown_grace: Duration,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("name", &self.name).field("limits", &(self.limits)()).finish_non_exhaustive()
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown`, each connection with the service
/// `make_service` builds for it from its limits; then closes the listener at once, lets the
/// connections finish their current request for up to `shutdown_grace`, and drops the rest.
pub async fn serve<M, S, B>(tcp: TcpListener, listener: Listener, mut make_service: M, shutdown: CancellationToken)
where
    M: FnMut(ConnectionLimits) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    warn_if_over_descriptor_limit(listener.name, (listener.limits)().max_connections);
    let tracker = TaskTracker::new();
    let open = Arc::new(AtomicUsize::new(0));
    let mut refusals_logged: Option<Instant> = None;
    let mut accept_errors_logged: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    if due(&mut accept_errors_logged) {
                        tracing::warn!(listener = listener.name, error = %e, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let limits = (listener.limits)();
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            listener.metrics.count(Refusal::Limit);
            if due(&mut refusals_logged) {
                tracing::warn!(
                    listener = listener.name,
                    max_connections = limits.max_connections,
                    %peer,
                    "connection limit reached: refusing new connections (counted in geolb_connections_refused_total)"
                );
            }
            // A fresh socket's send buffer is empty: the answer fits or is not worth waiting for.
            let _ = stream.try_write(REFUSED_RESPONSE);
            continue;
        }
        let guard = OpenConnection::new(&open, &listener.metrics);
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay failed");
        }
        let service = make_service(limits);
        let (metrics, shutdown) = (listener.metrics.clone(), shutdown.clone());
        tracker.spawn(async move {
            connection(stream, service, limits, &metrics, shutdown).await;
            drop(guard);
        });
    }
    // Refuse new connections now, not when the last old one is done.
    drop(tcp);
    tracker.close();
    if tokio::time::timeout(listener.shutdown_grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            listener = listener.name,
            connections = tracker.len(),
            "connections still open after the shutdown grace; dropping them"
        );
    }
}

/// Whether a rate-limited log line is due now (and records that it was).
fn due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

/// Serves one connection until it ends, its first request head is late, or the shutdown has
/// let it finish.
async fn connection<S, B>(
    stream: TcpStream,
    service: S,
    limits: ConnectionLimits,
    metrics: &ConnectionMetrics,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let served = Arc::new(AtomicBool::new(false));
    let service = Served { inner: service, served: served.clone() };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // From the moment the connection waits for a request head, until that head is in: for
        // the first request the shorter deadline below closes it first.
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true)
        // One buffer per response: headers and body in one segment (with TCP_NODELAY, two
        // segments cost ~44 ms per call through Nagle and delayed ACK).
        .writev(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let first_head = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(first_head);
    let (mut waiting_first, mut shutting_down) = (true, false);
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    if e.is_timeout() {
                        let served = served.load(Ordering::Relaxed);
                        metrics.count(if served { Refusal::IdleTimeout } else { Refusal::HeaderTimeout });
                    } else {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                return;
            }
            _ = &mut first_head, if waiting_first => {
                waiting_first = false;
                if !served.load(Ordering::Relaxed) {
                    metrics.count(Refusal::HeaderTimeout);
                    // Dropping the connection closes it.
                    return;
                }
            }
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                // An idle connection closes at once, a busy one after its current response.
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A connection's service, noting when the connection's first request head is in.
struct Served<S> {
    inner: S,
    served: Arc<AtomicBool>,
}

impl<S, R> Service<R> for Served<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> S::Future {
        self.served.store(true, Ordering::Relaxed);
        self.inner.call(req)
    }
}

/// Logs a warning when `max_connections` of one listener would leave this process fewer than
/// [`OTHER_DESCRIPTORS`] descriptors under its soft limit (`LimitNOFILE=`, `ulimit -n`).
fn warn_if_over_descriptor_limit(listener: &str, max_connections: usize) {
    let Some(limit) = open_files_limit() else { return };
    if max_connections as u64 + OTHER_DESCRIPTORS > limit {
        tracing::warn!(
            listener,
            max_connections,
            open_files_limit = limit,
            "max_connections leaves fewer than {OTHER_DESCRIPTORS} of this process's {limit} file descriptors for everything else: \
             raise the limit (LimitNOFILE= in the systemd unit) or lower max_connections"
        );
    }
}

/// This process's soft limit of open files, from `/proc/self/limits` (`None`: unlimited or
/// unknown).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    soft_open_files(&limits)
}

fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// A request body that fails once `timeout` has passed since it was first read: a client that
/// sends its headers and then trickles (or never sends) the body it announced does not hold
/// the connection. [`DeadlineBody::expired`] says whether it did.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    /// `inner`, bounded by `timeout` from its first read.
    pub fn new(inner: B, timeout: Duration) -> DeadlineBody<B> {
        DeadlineBody { inner, timeout, deadline: None, expired: Arc::default() }
    }

    /// Set when the deadline passed before the body was in.
    pub fn expired(&self) -> Arc<AtomicBool> {
        self.expired.clone()
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            let why = format!("request body not received within {} ms", timeout.as_millis());
            return Poll::Ready(Some(Err(why.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request whose body did not arrive in time: 408, and the connection closed.
pub fn body_timeout_response<B: From<String>>(timeout: Duration) -> Response<B> {
    let mut response = Response::new(B::from(format!("request body not received within {} ms\n", timeout.as_millis())));
    *response.status_mut() = hyper::StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A service that answers every request 200.
    fn ok() -> impl Service<
        Request<Incoming>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
    > + Send {
        hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new("ok\n".to_owned()))
        })
    }

    fn limits(header_ms: u64, idle_ms: u64, max: usize) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            max_connections: max,
        }
    }

    struct Running {
        addr: std::net::SocketAddr,
        registry: Registry,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(limits: ConnectionLimits) -> Running {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let registry = Registry::new();
        let listener = Listener {
            name: "test",
            limits: Arc::new(move || limits),
            metrics: ConnectionMetrics::register(&registry, "test"),
            shutdown_grace: Duration::from_secs(2),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(tcp, listener, |_| ok(), shutdown.clone()));
        Running { addr, registry, shutdown, task }
    }

    /// The value of `name` (with `reason`, when given) in the registry's text rendering.
    fn metric(registry: &Registry, name: &str, reason: Option<&str>) -> i64 {
        let text = crate::metrics::Families::default().render(registry);
        let labels = match reason {
            Some(r) => format!("{name}{{listener=\"test\",reason=\"{r}\"}} "),
            None => format!("{name}{{listener=\"test\"}} "),
        };
        let value = text.lines().find_map(|l| l.strip_prefix(labels.as_str()));
        value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {labels} in\n{text}"))
    }

    /// Reads until EOF or an error; the bytes read. Fails after `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        match tokio::time::timeout(within, stream.read_to_end(&mut bytes)).await {
            Ok(_) => Ok(bytes),
            Err(_) => Err(format!("still open after {within:?}; read {:?}", String::from_utf8_lossy(&bytes))),
        }
    }

    async fn get(addr: std::net::SocketAddr) -> Result<String, String> {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.map_err(|e| e.to_string())?;
        let bytes = closed_within(&mut s, Duration::from_secs(5)).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_answered_503_and_closed_and_counted() {
        let server = start(limits(5000, 5000, 2)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(server.addr).await.expect("connect"));
        }
        // Wait for both to be accepted.
        for _ in 0..100 {
            if metric(&server.registry, names::CONNECTIONS_OPEN, None) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metric(&server.registry, names::CONNECTIONS_OPEN, None), 2);
        // Read without writing: a request written after the server closed would draw a reset.
        let mut refused = TcpStream::connect(server.addr).await.expect("connect");
        let answer = closed_within(&mut refused, Duration::from_secs(2)).await.expect("the refusal closes at once");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503") && answer.ends_with("too many connections\n"), "{answer}");
        assert_eq!(metric(&server.registry, names::CONNECTIONS_REFUSED_TOTAL, Some("limit")), 1);
        // A slot frees: the next one is served.
        drop(held.pop());
        let mut answer = String::new();
        for _ in 0..100 {
            answer = get(server.addr).await.expect("answered");
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        server.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server.task).await.expect("bounded shutdown").expect("task");
    }

    #[tokio::test]
    async fn the_limits_are_read_at_each_accept() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let cap = Arc::new(AtomicUsize::new(1));
        let listener = Listener {
            name: "test",
            limits: Arc::new({
                let cap = cap.clone();
                move || limits(5000, 5000, cap.load(Ordering::Relaxed))
            }),
            metrics: ConnectionMetrics::default(),
            shutdown_grace: Duration::from_secs(2),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(tcp, listener, |_| ok(), shutdown.clone()));
        let mut first = TcpStream::connect(addr).await.expect("connect");
        first.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let mut answer = [0u8; 12];
        first.read_exact(&mut answer).await.expect("the first is served");
        let mut refused = TcpStream::connect(addr).await.expect("connect");
        let answer = closed_within(&mut refused, Duration::from_secs(2)).await.expect("refused at once");
        assert!(answer.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));
        // A reload raises the cap: the next connection is served, the first one still open.
        cap.store(2, Ordering::Relaxed);
        let answer = get(addr).await.expect("served");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("bounded shutdown").expect("task");
    }

    #[tokio::test]
    async fn silent_half_sent_and_idle_connections_are_closed_after_their_timeouts() {
        let server = start(limits(300, 1200, 100)).await;
        let started = Instant::now();
        let mut silent = TcpStream::connect(server.addr).await.expect("connect");
        let mut half = TcpStream::connect(server.addr).await.expect("connect");
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.expect("write");
        let mut kept = TcpStream::connect(server.addr).await.expect("connect");
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let mut answer = [0u8; 12];
        kept.read_exact(&mut answer).await.expect("answered");
        assert_eq!(&answer, b"HTTP/1.1 200");

        assert!(closed_within(&mut silent, Duration::from_secs(3)).await.expect("closed").is_empty());
        assert!(closed_within(&mut half, Duration::from_secs(3)).await.expect("closed").is_empty());
        let header_closed = started.elapsed();
        assert!(header_closed >= Duration::from_millis(300), "closed before the header timeout: {header_closed:?}");
        assert_eq!(metric(&server.registry, names::CONNECTIONS_REFUSED_TOTAL, Some("header_timeout")), 2);
        // The kept-alive one outlives the header timeout, and goes at the idle timeout.
        let mut rest = Vec::new();
        kept.read_to_end(&mut rest).await.expect("closed");
        let idle_closed = started.elapsed();
        assert!(idle_closed >= Duration::from_millis(1200), "closed before the idle timeout: {idle_closed:?}");
        assert!(idle_closed < Duration::from_secs(4), "closed long after the idle timeout: {idle_closed:?}");
        assert_eq!(metric(&server.registry, names::CONNECTIONS_REFUSED_TOTAL, Some("idle_timeout")), 1);
        assert_eq!(metric(&server.registry, names::CONNECTIONS_REFUSED_TOTAL, Some("limit")), 0);
        for _ in 0..100 {
            if metric(&server.registry, names::CONNECTIONS_OPEN, None) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metric(&server.registry, names::CONNECTIONS_OPEN, None), 0);
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener_at_once_and_waits_a_bounded_time() {
        let server = start(limits(60_000, 60_000, 100)).await;
        // Half a request, never finished: it may hold the connection for the grace, not longer.
        let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
        stuck.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        server.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server.task).await.expect("bounded shutdown").expect("task");
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        assert!(TcpStream::connect(server.addr).await.is_err(), "still accepting after shutdown");
    }

    #[test]
    fn the_soft_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(soft_open_files(limits), Some(1024));
        assert_eq!(soft_open_files("Max open files            unlimited            unlimited            files"), None);
        assert_eq!(soft_open_files(""), None);
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_fails_and_says_so() {
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc").await.expect("write");
        let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
            use http_body_util::BodyExt;
            let body = DeadlineBody::new(req.into_body(), Duration::from_millis(200));
            let expired = body.expired();
            let read = body.collect().await;
            let text = match read {
                Ok(_) => "complete".to_owned(),
                Err(e) => format!("{e}; expired={}", expired.load(Ordering::Relaxed)),
            };
            Ok::<_, Infallible>(Response::new(text))
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(rx), service);
        let started = Instant::now();
        tokio::spawn(conn);
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tx.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains("request body not received within 200 ms; expired=true"), "{answer}");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
