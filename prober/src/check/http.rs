//! HTTP and HTTPS checks: hyper's HTTP/1.1 client connection over a tokio `TcpStream`, and
//! tokio-rustls (ring provider) for HTTPS.
//!
//! **Connections are kept, within bounds.** A target's connection is kept in its [`ConnSlot`] and
//! serves at most `HttpSpec::connection_reuse` checks (default 10) before a fresh one is opened, as
//! Envoy's health checker reuses its connection. A fresh connection for every check (set
//! `connection_reuse = 1`, as HAProxy does) is what notices a node that stopped accepting new
//! connections (full accept queue, dead acceptor) or whose certificate expired at once; bounded
//! reuse notices it within `connection_reuse` checks and costs a fraction of the CPU: on loopback a
//! fresh HTTP check costs the prober about 80 µs, most of it the kernel's handshake and teardown.
//! The rules that keep reuse honest:
//! * only a passing check keeps its connection: after any failure the next check starts fresh;
//! * a kept connection that fails before any response (the node closed it while idle, its
//!   keep-alive timeout) is not a failure: the same check is made again on a fresh connection;
//! * a response with `Connection: close`, or a body that is not read to its end (over
//!   [`MAX_BODY_BYTES`], or of unknown length when no body is matched), ends the connection;
//! * the last check on a connection sends `Connection: close`; TLS session resumption stays off,
//!   so every fresh HTTPS connection sees the certificate.
//!
//! The connection goes to `HttpSpec::addr` while `Host`, SNI and certificate verification use
//! `HttpSpec::host`. The two rustls configurations (verifying, accepting anything) are built once,
//! by [`HttpChecker::new`], which also reads the system's root certificates; a check only clones an
//! `Arc`. The connection is driven inside the check's own future (no task is spawned per check).
//!
//! Cost, measured on loopback (release build, one client thread, 16 checks in flight, prober-side
//! CPU with the server in another process): a fresh HTTP check about 80 µs, of which about 15 µs in
//! user space and the rest the kernel's TCP work (on loopback partly the server side's); a fresh
//! HTTPS check about 350 µs, nearly all of the user-space part the handshake's X25519, ECDSA and
//! SHA-384 arithmetic. In the whole prober (`bench/failover.sh`) with the default reuse, about
//! 52 µs per HTTP check all told (4,883 checks/s at 25 % of a core).
//!
//! Not here: scheduling and hysteresis (see [`super::schedule`]).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Bytes};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONNECTION, HOST, HeaderValue, USER_AGENT as USER_AGENT_HEADER};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::{CheckError, CheckOutcome, ConnSlot, HttpSpec, MAX_BODY_BYTES, Reason, ReasonText, Scheme};

/// `User-Agent` of every check, so that node operators can tell checks from traffic.
pub(crate) const USER_AGENT: &str = concat!("geolb-prober/", env!("CARGO_PKG_VERSION"));

/// Read buffer of a check connection (hyper's default grows to 8 KiB and more and stays so while
/// the connection is kept, for thousands of targets).
const READ_BUF_BYTES: usize = 4096;

/// Runs HTTP(S) checks. Cheap to clone (the TLS configurations are shared).
#[derive(Clone)]
pub(crate) struct HttpChecker {
    inner: Arc<Inner>,
}

struct Inner {
    /// Verifies against the system roots plus extra roots; `Err` when no roots could be loaded, in
    /// which case every `tls_verify` check is down with this text (and the error was logged once).
    verifying: Result<TlsConnector, ReasonText>,
    /// Accepts any certificate (signatures in the handshake are still checked).
    accepting: TlsConnector,
}

impl fmt::Debug for HttpChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpChecker").field("verifying_ok", &self.inner.verifying.is_ok()).finish_non_exhaustive()
    }
}

impl HttpChecker {
    /// A checker that verifies certificates against the system's root store.
    ///
    /// When the system has no usable root certificates this still succeeds (HTTP and
    /// `tls_verify = false` checks work); it logs a warning and `tls_verify` checks report
    /// [`Reason::Tls`].
    pub(crate) fn new() -> Result<Self, CheckError> {
        Self::with_extra_roots(Vec::new())
    }

    /// Like [`HttpChecker::new`], also trusting `extra_roots` (a private CA, or a test certificate).
    ///
    /// Fails when one of `extra_roots` cannot be parsed.
    pub(crate) fn with_extra_roots(extra_roots: Vec<CertificateDer<'static>>) -> Result<Self, CheckError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let had_extra_roots = !extra_roots.is_empty();
        let verifying = match rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone()) {
            Ok(verifier) => Ok(connector(provider.clone(), Arc::new(verifier))?),
            // Extra roots are added first: an error then is theirs, and the caller's to fix.
            Err(source) if had_extra_roots => return Err(CheckError::Tls { source }),
            Err(error) => {
                tracing::warn!(error = %error, "no root certificates for verifying health checks over tls");
                Err(ReasonText::new(format!("no trusted root certificates: {error}")))
            }
        };
        let accepting = connector(
            provider.clone(),
            Arc::new(AcceptAnyCert { algorithms: provider.signature_verification_algorithms }),
        )?;
        Ok(HttpChecker { inner: Arc::new(Inner { verifying, accepting }) })
    }

    /// Checks `spec` once on a fresh connection, closed afterwards: connect to `spec.addr`, `GET`
    /// the path, compare the status and, when asked, the first [`MAX_BODY_BYTES`] of the body.
    /// Returns within `timeout`.
    #[cfg(test)]
    pub(crate) async fn check_http(&self, spec: &HttpSpec, timeout: Duration) -> CheckOutcome {
        self.check_within(spec, timeout, 1, &mut ConnSlot::default()).await
    }

    /// Like [`HttpChecker::check_http`], but on the connection kept in `slot` when there is one,
    /// and keeping the connection there afterwards while it has served fewer than
    /// `spec.connection_reuse` checks, the check passed, and the node did not ask to close it.
    pub(crate) async fn check_http_reusing(
        &self,
        spec: &HttpSpec,
        timeout: Duration,
        slot: &mut ConnSlot,
    ) -> CheckOutcome {
        self.check_within(spec, timeout, spec.connection_reuse.max(1), slot).await
    }

    async fn check_within(&self, spec: &HttpSpec, timeout: Duration, reuse: u32, slot: &mut ConnSlot) -> CheckOutcome {
        let start = Instant::now();
        // The kept connection is taken out of the slot for the check, and put back only by a
        // check that passed: a timeout drops it with the future.
        match tokio::time::timeout(timeout, self.run(spec, reuse, slot)).await {
            Ok(Ok(())) => CheckOutcome::Up { rtt: start.elapsed() },
            Ok(Err(reason)) => CheckOutcome::Down { rtt: start.elapsed(), reason },
            Err(_elapsed) => CheckOutcome::Down { rtt: timeout, reason: Reason::Timeout },
        }
    }

    async fn run(&self, spec: &HttpSpec, reuse: u32, slot: &mut ConnSlot) -> Result<(), Reason> {
        let tls = match (spec.scheme, spec.tls_verify, &self.inner.verifying) {
            (Scheme::Http, _, _) => None,
            (Scheme::Https, true, Ok(connector)) => Some(connector),
            (Scheme::Https, true, Err(text)) => return Err(Reason::Tls(text.clone())),
            (Scheme::Https, false, _) => Some(&self.inner.accepting),
        };
        // Names are case-insensitive; send them lowercased, as URL parsing does.
        let host = match &spec.host {
            Some(host) if super::is_dns_name(host) => Some(host.to_ascii_lowercase()),
            Some(host) => return Err(Reason::other(format!("invalid host {host:?}"))),
            None => None,
        };

        if let Some(kept) = slot.kept.take() {
            let keep = kept.served + 1 < reuse;
            match exchange(kept, request(spec, host.as_deref(), keep)?, spec).await {
                Exchanged::Judged(verdict, again) => {
                    slot.kept = again.filter(|_| keep);
                    return verdict;
                }
                // Most likely the node closed the idle connection (its keep-alive timeout): that
                // says nothing about its health, so the check is made again on a fresh one.
                Exchanged::NoResponse(reason) => {
                    tracing::debug!(addr = %spec.addr, %reason, "kept check connection failed; checking on a fresh one");
                }
            }
        }

        let keep = reuse > 1;
        let request = request(spec, host.as_deref(), keep)?;
        let stream = TcpStream::connect(spec.addr).await.map_err(|err| classify(&err))?;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY on a check connection");
        }
        let fresh = match tls {
            None => Kept::handshake(stream).await?,
            Some(connector) => {
                let name = match host {
                    Some(host) => ServerName::try_from(host).map_err(|err| Reason::other(err.to_string()))?,
                    // By address: no SNI, and a verified certificate must name the IP.
                    None => ServerName::IpAddress(spec.addr.ip().into()),
                };
                let stream = connector.connect(name, stream).await.map_err(|err| classify(&err))?;
                Kept::handshake(stream).await?
            }
        };
        match exchange(fresh, request, spec).await {
            Exchanged::Judged(verdict, again) => {
                slot.kept = again.filter(|_| keep);
                verdict
            }
            Exchanged::NoResponse(reason) => Err(reason),
        }
    }
}

/// An open HTTP/1.1 client connection to a node, kept in a [`ConnSlot`] between checks. Its
/// driver is polled only while a check runs on it; between checks the socket just sits (a node
/// that closes it meanwhile is noticed by the next check, which then opens a fresh one).
pub(crate) struct Kept {
    sender: SendRequest<Empty<Bytes>>,
    driver: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>,
    /// Checks this connection has served.
    served: u32,
}

impl Kept {
    async fn handshake<T>(io: T) -> Result<Kept, Reason>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, driver) = hyper::client::conn::http1::Builder::new()
            // A health response is small; a kept connection holds this buffer while idle.
            .read_buf_exact_size(Some(READ_BUF_BYTES))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|err| classify(&err))?;
        Ok(Kept { sender, driver: Box::pin(driver), served: 0 })
    }

    /// Checks this connection has served.
    pub(crate) fn served(&self) -> u32 {
        self.served
    }
}

/// How a request on a connection turned out.
enum Exchanged {
    /// A response came and was judged; the connection is returned when it can serve another
    /// request (the node did not close it, the whole body was read).
    Judged(Result<(), Reason>, Option<Kept>),
    /// The connection failed before a response came.
    NoResponse(Reason),
}

/// The `GET` request of a check: origin-form target, `Host` (with `:port` unless it is the
/// scheme's default), `Accept: */*`, the checker's `User-Agent`, and `Connection: close` unless
/// the connection is to be kept (HTTP/1.1 connections are persistent by default).
fn request(spec: &HttpSpec, host: Option<&str>, keep: bool) -> Result<Request<Empty<Bytes>>, Reason> {
    let default_port = match spec.scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    let port = spec.addr.port();
    let authority = match (host, spec.addr.ip()) {
        (Some(host), _) if port == default_port => host.to_owned(),
        (Some(host), _) => format!("{host}:{port}"),
        (None, std::net::IpAddr::V4(ip)) if port == default_port => ip.to_string(),
        (None, std::net::IpAddr::V4(ip)) => format!("{ip}:{port}"),
        (None, std::net::IpAddr::V6(ip)) if port == default_port => format!("[{ip}]"),
        (None, std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
    };
    let authority =
        HeaderValue::try_from(authority).map_err(|err| Reason::other(format!("invalid host header: {err}")))?;
    let target = Uri::try_from(request_target(&spec.path))
        .map_err(|err| Reason::other(format!("invalid path {:?}: {err}", spec.path)))?;
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(target)
        .header(HOST, authority)
        .header(ACCEPT, HeaderValue::from_static("*/*"))
        .header(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
    if !keep {
        // The connection's last request: lets the node close first and keep no idle connection.
        builder = builder.header(CONNECTION, HeaderValue::from_static("close"));
    }
    builder.body(Empty::new()).map_err(|err| Reason::other(format!("invalid request: {err}")))
}

/// The path and query as a URL parser would send them: without a `#fragment`, `\` in the path
/// read as `/`, and non-ASCII bytes and the characters URLs may not carry raw percent-encoded.
fn request_target(path: &str) -> String {
    let path = path.split_once('#').map_or(path, |(before, _)| before);
    let mut target = String::with_capacity(path.len());
    let mut in_query = false;
    for &byte in path.as_bytes() {
        let escape = match byte {
            b'?' if !in_query => {
                in_query = true;
                false
            }
            b'\\' if !in_query => {
                target.push('/');
                continue;
            }
            0x80.. | ..=0x20 | 0x7f | b'"' | b'<' | b'>' => true,
            b'`' | b'{' | b'}' => !in_query,
            b'\'' => in_query,
            _ => false,
        };
        if escape {
            target.push('%');
            target.push(char::from(HEX[usize::from(byte >> 4)]));
            target.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            target.push(char::from(byte));
        }
    }
    target
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Sends `request` on `conn` and judges the response.
///
/// The connection's driver is polled in this future alongside the request rather than spawned, so
/// nothing runs for a connection between checks. A passing response's body is read to its end
/// (at most [`MAX_BODY_BYTES`]) so that the connection can serve the next request.
async fn exchange(conn: Kept, request: Request<Empty<Bytes>>, spec: &HttpSpec) -> Exchanged {
    let Kept { mut sender, driver, served } = conn;
    // Dropped as soon as it ends: a finished connection still holds the requests queued on it,
    // which then never complete.
    let mut driver = Some(driver);
    let judged: Result<(Result<(), Reason>, bool), Reason> = {
        let judge = async {
            // `Err`: no response. `Ok((verdict, reusable))` otherwise.
            sender.ready().await.map_err(|err| classify(&err))?;
            let response = sender.send_request(request).await.map_err(|err| classify(&err))?;
            let status = response.status().as_u16();
            if !spec.expect_status.matches(status) {
                return Ok((Err(Reason::Status(status)), false));
            }
            let closing = response
                .headers()
                .get_all(CONNECTION)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))));
            let mut body = response.into_body();
            let mut seen = Vec::new();
            // Without a body to match, only a short body of known length is read (to reuse the
            // connection); a long or streamed one is left, and the connection with it.
            let read_body = spec.body_contains.is_some()
                || body.size_hint().exact().is_some_and(|len| len <= MAX_BODY_BYTES as u64);
            let mut complete = body.is_end_stream();
            while read_body && !complete && seen.len() <= MAX_BODY_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(chunk) = frame.data_ref() {
                            let take = chunk.len().min(MAX_BODY_BYTES + 1 - seen.len());
                            seen.extend_from_slice(&chunk[..take]);
                        }
                    }
                    Some(Err(err)) => return Ok((Err(classify(&err)), false)),
                    None => complete = true,
                }
            }
            let verdict = match &spec.body_contains {
                Some(needle) if !contains(&seen[..seen.len().min(MAX_BODY_BYTES)], needle.as_bytes()) => {
                    Err(Reason::BodyMismatch)
                }
                _ => Ok(()),
            };
            let reusable = verdict.is_ok() && complete && !closing;
            Ok((verdict, reusable))
        };
        let mut judge = pin!(judge);
        loop {
            tokio::select! {
                biased;
                judged = &mut judge => break judged,
                // A connection error is handed to the pending request, so `judge` reports it; once the
                // connection is done, `judge` finishes promptly either way.
                _ = async { driver.as_mut()?.await.ok() }, if driver.is_some() => driver = None,
            }
        }
    };
    match judged {
        Ok((verdict, true)) if let Some(driver) = driver => {
            Exchanged::Judged(verdict, Some(Kept { sender, driver, served: served + 1 }))
        }
        Ok((verdict, _)) => Exchanged::Judged(verdict, None),
        Err(reason) => Exchanged::NoResponse(reason),
    }
}

/// A TLS connector for checks: HTTP/1.1 only, no session resumption.
fn connector(provider: Arc<CryptoProvider>, verifier: Arc<dyn ServerCertVerifier>) -> Result<TlsConnector, CheckError> {
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every check must see the certificate: a resumed session would skip it.
    config.resumption = Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Maps a connect, TLS or HTTP error to a [`Reason`] by walking its source chain.
fn classify(err: &(dyn StdError + 'static)) -> Reason {
    for error in chain(err) {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Reason::Tls(ReasonText::new(tls.to_string()));
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return Reason::Refused,
                io::ErrorKind::TimedOut => return Reason::Timeout,
                _ => {}
            }
        }
    }
    Reason::other(root_cause(err))
}

/// `err` and its causes, outermost first.
///
/// `io::Error::source()` of a wrapping io::Error skips the wrapped error itself (it returns the
/// wrapped error's source), and tokio-rustls wraps `rustls::Error`s, sometimes twice, in io::Errors:
/// so step into `get_ref()` instead.
fn chain<'a>(err: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let next = |&error: &&'a (dyn StdError + 'static)| -> Option<&'a (dyn StdError + 'static)> {
        match error.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner),
            None => error.source(),
        }
    };
    std::iter::successors(Some(err), next)
        // A cycle is impossible in practice; bound the walk anyway.
        .take(32)
}

/// The innermost error's message: the useful part ("connection reset by peer").
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    chain(err).last().map(ToString::to_string).unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

/// Accepts any server certificate, for `tls_verify = false`. The handshake signatures are still
/// verified, so the peer proves it holds the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::ExpectStatus;
    use super::super::test_support::{Behaviour, TestServer, refused_addr};
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn spec(server: &TestServer) -> HttpSpec {
        HttpSpec { path: "/health".into(), ..HttpSpec::new(server.scheme, server.addr) }
    }

    fn checker() -> HttpChecker {
        HttpChecker::new().expect("checker")
    }

    #[tokio::test]
    async fn ok_status_is_up() {
        let server = TestServer::http(Behaviour::status(200)).await;
        let outcome = checker().check_http(&spec(&server), TIMEOUT).await;
        assert!(outcome.is_up(), "{outcome:?}");
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/health");
        assert_eq!(seen[0].host.as_deref(), Some(server.addr.to_string().as_str()));
        assert_eq!(seen[0].user_agent.as_deref(), Some(USER_AGENT));
    }

    #[tokio::test]
    async fn unexpected_status_is_down_with_status() {
        let server = TestServer::http(Behaviour::status(503)).await;
        let outcome = checker().check_http(&spec(&server), TIMEOUT).await;
        assert_eq!(outcome.reason(), Some(&Reason::Status(503)));

        // A redirect is not followed; with 3xx expected it is up.
        let server = TestServer::http(Behaviour::status(302)).await;
        let outcome = checker().check_http(&spec(&server), TIMEOUT).await;
        assert_eq!(outcome.reason(), Some(&Reason::Status(302)));
        let accept_redirect = HttpSpec { expect_status: ExpectStatus::ranges_of(vec![200..=399]), ..spec(&server) };
        assert!(checker().check_http(&accept_redirect, TIMEOUT).await.is_up());
        assert_eq!(server.requests().len(), 2, "the redirect must not be followed");
    }

    #[tokio::test]
    async fn body_is_matched() {
        let server = TestServer::http(Behaviour { body: "status: ok\n".into(), ..Behaviour::status(200) }).await;
        let matching = HttpSpec { body_contains: Some("status: ok".into()), ..spec(&server) };
        assert!(checker().check_http(&matching, TIMEOUT).await.is_up());
        let mismatch = HttpSpec { body_contains: Some("status: degraded".into()), ..spec(&server) };
        assert_eq!(checker().check_http(&mismatch, TIMEOUT).await.reason(), Some(&Reason::BodyMismatch));
    }

    #[tokio::test]
    async fn body_match_reads_at_most_64_kib() {
        let mut body = "x".repeat(MAX_BODY_BYTES - 2);
        body.push_str("NEEDLE");
        body.push_str(&"y".repeat(1 << 20));
        let server = TestServer::http(Behaviour { body, ..Behaviour::status(200) }).await;
        let spec = HttpSpec { body_contains: Some("NEEDLE".into()), ..spec(&server) };
        // The needle straddles the 64 KiB limit: only "NE" is read.
        assert_eq!(checker().check_http(&spec, TIMEOUT).await.reason(), Some(&Reason::BodyMismatch));
        let spec = HttpSpec { body_contains: Some("xNE".into()), ..spec };
        let start = Instant::now();
        assert!(checker().check_http(&spec, TIMEOUT).await.is_up());
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn slow_response_times_out_on_time() {
        let server = TestServer::http(Behaviour { delay: Duration::from_secs(5), ..Behaviour::status(200) }).await;
        let timeout = Duration::from_millis(200);
        let start = Instant::now();
        let outcome = checker().check_http(&spec(&server), timeout).await;
        let elapsed = start.elapsed();
        assert_eq!(outcome, CheckOutcome::Down { rtt: timeout, reason: Reason::Timeout });
        assert!(elapsed >= timeout && elapsed < timeout + Duration::from_millis(300), "{elapsed:?}");
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        let addr = refused_addr().await;
        let outcome = checker().check_http(&HttpSpec::new(Scheme::Http, addr), TIMEOUT).await;
        assert_eq!(outcome.reason(), Some(&Reason::Refused), "{outcome:?}");
    }

    #[tokio::test]
    async fn host_header_is_the_configured_host() {
        let server = TestServer::http(Behaviour::status(200)).await;
        let spec = HttpSpec { host: Some("cdn.example.net".into()), ..spec(&server) };
        assert!(checker().check_http(&spec, TIMEOUT).await.is_up());
        let port = server.addr.port();
        assert_eq!(server.requests()[0].host.as_deref(), Some(format!("cdn.example.net:{port}").as_str()));
    }

    #[tokio::test]
    async fn http_on_a_tls_port_and_tls_on_an_http_port_fail() {
        let server = TestServer::http(Behaviour::status(200)).await;
        let tls_to_http = HttpSpec { scheme: Scheme::Https, tls_verify: false, ..spec(&server) };
        let outcome = checker().check_http(&tls_to_http, TIMEOUT).await;
        assert_eq!(outcome.reason().map(Reason::kind), Some("tls"), "{outcome:?}");

        let (server, _cert) = TestServer::https("cdn.test", Behaviour::status(200)).await;
        let http_to_tls = HttpSpec { scheme: Scheme::Http, ..spec(&server) };
        let outcome = checker().check_http(&http_to_tls, TIMEOUT).await;
        assert!(!outcome.is_up(), "{outcome:?}");
    }

    #[tokio::test]
    async fn https_without_verification_is_up_and_sends_sni() {
        let (server, _cert) = TestServer::https("cdn.test", Behaviour::status(200)).await;
        let spec = HttpSpec { host: Some("cdn.test".into()), tls_verify: false, ..spec(&server) };
        let outcome = checker().check_http(&spec, TIMEOUT).await;
        assert!(outcome.is_up(), "{outcome:?}");
        let seen = server.requests();
        assert_eq!(seen[0].sni.as_deref(), Some("cdn.test"));
        assert_eq!(seen[0].host.as_deref(), Some(format!("cdn.test:{}", server.addr.port()).as_str()));
    }

    #[tokio::test]
    async fn https_with_verification_rejects_an_untrusted_cert() {
        let (server, _cert) = TestServer::https("cdn.test", Behaviour::status(200)).await;
        let spec = HttpSpec { host: Some("cdn.test".into()), tls_verify: true, ..spec(&server) };
        let outcome = checker().check_http(&spec, TIMEOUT).await;
        match outcome.reason() {
            Some(Reason::Tls(text)) => assert!(text.as_str().contains("certificate"), "{text}"),
            other => panic!("expected a tls failure, got {other:?}"),
        }
        assert_eq!(server.requests().len(), 0, "no request after a failed handshake");
    }

    #[tokio::test]
    async fn https_with_verification_checks_the_name_against_host() {
        let (server, cert) = TestServer::https("cdn.test", Behaviour::status(200)).await;
        let trusting = HttpChecker::with_extra_roots(vec![cert]).expect("checker");
        let spec = HttpSpec { host: Some("cdn.test".into()), tls_verify: true, ..spec(&server) };
        let outcome = trusting.check_http(&spec, TIMEOUT).await;
        assert!(outcome.is_up(), "{outcome:?}");

        let wrong_name = HttpSpec { host: Some("other.test".into()), ..spec.clone() };
        let outcome = trusting.check_http(&wrong_name, TIMEOUT).await;
        assert_eq!(outcome.reason().map(Reason::kind), Some("tls"), "{outcome:?}");

        // By address: the certificate names cdn.test, not 127.0.0.1.
        let by_addr = HttpSpec { host: None, ..spec };
        let outcome = trusting.check_http(&by_addr, TIMEOUT).await;
        assert_eq!(outcome.reason().map(Reason::kind), Some("tls"), "{outcome:?}");
    }

    #[tokio::test]
    async fn every_check_uses_a_fresh_connection() {
        let server = TestServer::http(Behaviour::status(200)).await;
        let checker = checker();
        for _ in 0..3 {
            assert!(checker.check_http(&spec(&server), TIMEOUT).await.is_up());
        }
        assert_eq!(server.connections(), 3);
    }

    fn reusing(server: &TestServer, reuse: u32) -> HttpSpec {
        HttpSpec { connection_reuse: reuse, ..spec(server) }
    }

    #[tokio::test]
    async fn a_kept_connection_serves_connection_reuse_checks() {
        for server in [TestServer::http(Behaviour::status(200)).await, https_server().await] {
            let checker = checker();
            let spec = HttpSpec { tls_verify: false, ..reusing(&server, 3) };
            let mut slot = ConnSlot::default();
            let mut kept_after = Vec::new();
            for _ in 0..7 {
                let outcome = checker.check_http_reusing(&spec, TIMEOUT, &mut slot).await;
                assert!(outcome.is_up(), "{outcome:?}");
                kept_after.push(slot.is_kept());
            }
            assert_eq!(kept_after, [true, true, false, true, true, false, true], "{:?}", server.scheme);
            assert_eq!(server.connections(), 3, "{:?}: 3 + 3 + 1 checks", server.scheme);
            assert_eq!(server.requests().len(), 7);
        }
    }

    async fn https_server() -> TestServer {
        TestServer::https("cdn.example.net", Behaviour::status(200)).await.0
    }

    #[tokio::test]
    async fn connection_reuse_1_opens_a_fresh_connection_for_every_check() {
        let server = TestServer::http(Behaviour::status(200)).await;
        let (checker, mut slot) = (checker(), ConnSlot::default());
        for _ in 0..3 {
            assert!(checker.check_http_reusing(&reusing(&server, 1), TIMEOUT, &mut slot).await.is_up());
            assert!(!slot.is_kept());
        }
        assert_eq!(server.connections(), 3);
    }

    /// A server, a checker, and a slot holding a connection after one passing check.
    async fn one_kept(behaviour: Behaviour) -> (TestServer, HttpChecker, ConnSlot) {
        let server = TestServer::http(behaviour).await;
        let (checker, mut slot) = (checker(), ConnSlot::default());
        let outcome = checker.check_http_reusing(&reusing(&server, 10), TIMEOUT, &mut slot).await;
        assert!(outcome.is_up(), "{outcome:?}");
        (server, checker, slot)
    }

    #[tokio::test]
    async fn a_kept_connection_the_node_closed_is_replaced_without_a_failure() {
        let (server, checker, mut slot) = one_kept(Behaviour::status(200)).await;
        assert!(slot.is_kept());
        server.close_connections();
        // Let the close reach our socket, as an idle timeout long before the next check would.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let outcome = checker.check_http_reusing(&reusing(&server, 10), TIMEOUT, &mut slot).await;
        assert!(outcome.is_up(), "{outcome:?}");
        assert!(slot.is_kept());
        assert_eq!(server.connections(), 2);
    }

    #[tokio::test]
    async fn a_failed_check_drops_its_connection_and_the_next_starts_fresh() {
        let (server, checker, mut slot) = one_kept(Behaviour::status(200)).await;
        server.set(Behaviour::status(503));
        let outcome = checker.check_http_reusing(&reusing(&server, 10), TIMEOUT, &mut slot).await;
        assert_eq!(outcome.reason(), Some(&Reason::Status(503)));
        assert!(!slot.is_kept());
        assert_eq!(server.connections(), 1, "the failure was seen on the kept connection");
        server.set(Behaviour::status(200));
        assert!(checker.check_http_reusing(&reusing(&server, 10), TIMEOUT, &mut slot).await.is_up());
        assert_eq!(server.connections(), 2);
    }

    #[tokio::test]
    async fn a_stopped_node_is_down_although_a_connection_was_kept() {
        let (server, checker, mut slot) = one_kept(Behaviour::status(200)).await;
        let spec = reusing(&server, 10);
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let outcome = checker.check_http_reusing(&spec, TIMEOUT, &mut slot).await;
        assert_eq!(outcome.reason(), Some(&Reason::Refused), "{outcome:?}");
        assert!(!slot.is_kept());
    }

    #[tokio::test]
    async fn a_long_body_is_not_read_and_its_connection_not_kept() {
        let (server, checker, mut slot) =
            one_kept(Behaviour { body: "x".repeat(MAX_BODY_BYTES + 1), ..Behaviour::status(200) }).await;
        assert!(!slot.is_kept());
        server.set(Behaviour::status(200));
        assert!(checker.check_http_reusing(&reusing(&server, 10), TIMEOUT, &mut slot).await.is_up());
        assert!(slot.is_kept(), "a short body is read and the connection kept");
    }

    #[tokio::test]
    async fn a_connection_closed_without_response_is_other() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let outcome = checker().check_http(&HttpSpec::new(Scheme::Http, addr), TIMEOUT).await;
        assert_eq!(outcome.reason().map(Reason::kind), Some("other"), "{outcome:?}");
    }

    #[test]
    fn request_target_is_encoded_as_a_url_would_be() {
        assert_eq!(request_target("/health"), "/health");
        assert_eq!(request_target("/health?deep=1&x=a/b"), "/health?deep=1&x=a/b");
        assert_eq!(request_target("/h#frag"), "/h");
        assert_eq!(request_target("/a\\b?c\\d"), "/a/b?c\\d");
        assert_eq!(request_target("/é{x}?q='\"`"), "/%C3%A9%7Bx%7D?q=%27%22`");
        for path in ["/health", "/é{x}?q='\"`<>", "/a|b^c?d|e^f"] {
            assert!(Uri::try_from(request_target(path)).is_ok(), "{path}");
        }
    }

    #[test]
    fn host_header_omits_the_default_port() {
        let host = |spec: &HttpSpec, name: Option<&str>| {
            let request = request(spec, name, false).expect("request");
            request.headers()[HOST].to_str().expect("ascii").to_owned()
        };
        let v4: SocketAddr = "192.0.2.1:80".parse().expect("addr");
        let close = |keep| {
            request(&HttpSpec::new(Scheme::Http, v4), None, keep).expect("request").headers().get(CONNECTION).cloned()
        };
        assert_eq!(close(false), Some(HeaderValue::from_static("close")), "a connection's last request");
        assert_eq!(close(true), None, "a kept connection stays open (HTTP/1.1's default)");
        let v4: SocketAddr = "192.0.2.1:443".parse().expect("addr");
        let v6: SocketAddr = "[2001:db8::1]:8443".parse().expect("addr");
        assert_eq!(host(&HttpSpec::new(Scheme::Https, v4), None), "192.0.2.1");
        assert_eq!(host(&HttpSpec::new(Scheme::Http, v4), None), "192.0.2.1:443");
        assert_eq!(host(&HttpSpec::new(Scheme::Https, v6), None), "[2001:db8::1]:8443");
        assert_eq!(host(&HttpSpec::new(Scheme::Https, v4), Some("cdn.test")), "cdn.test");
        assert_eq!(host(&HttpSpec::new(Scheme::Https, v6), Some("cdn.test")), "cdn.test:8443");
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"abc", b""));
        assert!(contains(b"abc", b"bc"));
        assert!(!contains(b"abc", b"abcd"));
        assert!(!contains(b"", b"a"));
    }
}
