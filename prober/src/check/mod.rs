//! Health checks: what to probe, how one probe turns out, and the schedule that turns probes into
//! verdicts.
//!
//! # Layout
//! * this file: the data every part shares — [`CheckSpec`] (what to probe), [`Timing`] (how often,
//!   how long, how many in a row), [`Target`] (one node × one check), [`CheckOutcome`] and
//!   [`Reason`] (what one probe saw), the [`Checker`] trait and [`NetChecker`], which dispatches a
//!   spec to the checker for its protocol.
//! * [`http`]: HTTP and HTTPS probes ([`HttpChecker`], hyper + tokio-rustls, a connection kept
//!   for a bounded number of probes in the target's [`ConnSlot`]).
//! * [`tcp`]: TCP connect probes ([`TcpChecker`]).
//! * [`schedule`]: the per-target hysteresis state machine ([`TargetState`], pure) and the task that
//!   runs every target on its interval under a concurrency cap ([`spawn_scheduler`]).
//!
//! # What this module does not own
//! Gossiping verdicts, quorum, impairment (canaries, "too many down at once"), metrics names and
//! config parsing live elsewhere. The scheduler reports through two callbacks so that those parts
//! decide what a result or a transition means to them.
//!
//! A failed probe is data, not an error: every probe returns a [`CheckOutcome`]. [`CheckError`] is
//! only for things that make a probe impossible to set up (an invalid spec, TLS set-up).

pub(crate) mod http;
pub(crate) mod schedule;
pub(crate) mod tcp;

#[cfg(test)]
mod test_support;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use http::HttpChecker;
pub(crate) use schedule::{SchedulerHandle, TargetState, Transition, spawn_scheduler};
pub(crate) use tcp::TcpChecker;

/// Identifies one scheduled target: the prober creates one per (node, check), e.g. `"fra-1/https"`.
///
/// Cheap to clone; it is handed to the scheduler callbacks on every result.
pub(crate) type TargetId = Arc<str>;

/// The most bytes of a response body an HTTP check reads when it has to match the body.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The longest free-form text a [`Reason`] carries; longer text is cut at a character boundary.
pub(crate) const MAX_REASON_TEXT: usize = 160;

/// What to probe. The address is always the node's own IP and port: a check never resolves DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckSpec {
    /// An HTTP or HTTPS request; see [`HttpSpec`].
    Http(HttpSpec),
    /// A TCP connect; see [`TcpSpec`].
    Tcp(TcpSpec),
}

impl CheckSpec {
    /// The address this check connects to.
    #[cfg(test)]
    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            CheckSpec::Http(spec) => spec.addr,
            CheckSpec::Tcp(spec) => spec.addr,
        }
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS (rustls).
    Https,
}

/// An HTTP(S) check: `GET {scheme}://{host or addr}{path}`, sent to `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpSpec {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// The node's IP and port; the connection always goes here.
    pub addr: SocketAddr,
    /// DNS name for the `Host` header and, over HTTPS, for SNI and certificate verification.
    ///
    /// `None` checks by address: `Host` is `ip:port`, no SNI is sent and a verified certificate must
    /// name the IP. Nodes usually have certificates for the service name only, so set this.
    /// The `Host` header gets `:port` appended when the port is not the scheme's default, as any
    /// HTTP client does.
    pub host: Option<String>,
    /// Path and optional query, starting with `/`.
    pub path: String,
    /// Which response statuses count as up.
    pub expect_status: ExpectStatus,
    /// When set, the first [`MAX_BODY_BYTES`] of the body must contain these bytes.
    pub body_contains: Option<String>,
    /// Verify the server certificate against the system roots (and the checker's extra roots) for
    /// `host`. With `false` any certificate is accepted, which still proves the TLS stack answers.
    pub tls_verify: bool,
    /// How many checks one connection serves before a fresh one is opened (≥ 1; 1 = a fresh
    /// connection for every check). Only [`Checker::check`] with a [`ConnSlot`] reuses connections.
    pub connection_reuse: u32,
}

impl HttpSpec {
    /// A `GET /` spec for `addr` expecting any 2xx, verifying TLS; adjust fields as needed.
    #[cfg(test)]
    pub(crate) fn new(scheme: Scheme, addr: SocketAddr) -> Self {
        HttpSpec {
            scheme,
            addr,
            host: None,
            path: "/".to_owned(),
            expect_status: ExpectStatus::default(),
            body_contains: None,
            tls_verify: true,
            connection_reuse: 1,
        }
    }

    /// Checks that the path, host and expected statuses can make a valid request.
    #[cfg(test)]
    pub(crate) fn validate(&self) -> Result<(), CheckError> {
        if !self.path.starts_with('/') || self.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CheckError::InvalidPath { path: self.path.clone() });
        }
        if let Some(host) = &self.host
            && !is_dns_name(host)
        {
            return Err(CheckError::InvalidHost { host: host.clone() });
        }
        if self.expect_status.ranges().is_empty()
            || self.expect_status.ranges().iter().any(|r| r.start() > r.end() || *r.start() < 100 || *r.end() > 999)
        {
            return Err(CheckError::InvalidStatus { expect: format!("{:?}", self.expect_status.ranges()) });
        }
        Ok(())
    }
}

/// A TCP check: the node is up when a connection to `addr` is established in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpSpec {
    /// The node's IP and port.
    pub addr: SocketAddr,
}

/// The statuses an HTTP check accepts, as inclusive ranges (`200..=299`, or single codes `204..=204`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpectStatus(Vec<RangeInclusive<u16>>);

impl ExpectStatus {
    /// Accept the given ranges.
    #[cfg(test)]
    pub(crate) fn ranges_of(ranges: Vec<RangeInclusive<u16>>) -> Self {
        ExpectStatus(ranges)
    }

    /// Accept exactly these codes.
    pub(crate) fn codes(codes: &[u16]) -> Self {
        ExpectStatus(codes.iter().map(|&c| c..=c).collect())
    }

    /// The accepted ranges.
    #[cfg(test)]
    pub(crate) fn ranges(&self) -> &[RangeInclusive<u16>] {
        &self.0
    }

    /// Whether `status` is accepted.
    pub(crate) fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

impl Default for ExpectStatus {
    /// Any 2xx: a redirect is not followed and does not count as healthy.
    fn default() -> Self {
        ExpectStatus(vec![200..=299])
    }
}

/// How often a target is checked and how many results in a row flip its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time between the starts of two checks of the target.
    pub interval: Duration,
    /// Longest a single check may take; must be shorter than `interval`.
    pub timeout: Duration,
    /// Consecutive successes that make the target up.
    pub rise: u32,
    /// Consecutive failures that make the target down.
    pub fall: u32,
    /// Each gap between checks is `interval` ± a random amount up to this (at most half the
    /// interval), so targets that started together drift apart.
    pub jitter: Duration,
}

impl Timing {
    /// Checks `0 < timeout < interval`, `rise ≥ 1`, `fall ≥ 1` and `jitter ≤ interval / 2`.
    pub fn validate(&self) -> Result<(), CheckError> {
        let problem = if self.interval.is_zero() {
            Some("interval must be greater than zero")
        } else if self.timeout.is_zero() {
            Some("timeout must be greater than zero")
        } else if self.timeout >= self.interval {
            Some("timeout must be shorter than interval")
        } else if self.rise == 0 {
            Some("rise must be at least 1")
        } else if self.fall == 0 {
            Some("fall must be at least 1")
        } else if self.jitter > self.interval / 2 {
            Some("jitter must be at most half the interval")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(CheckError::InvalidTiming { problem, timing: *self }),
            None => Ok(()),
        }
    }
}

/// One thing the scheduler checks: a node's check with its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Unique among the scheduler's targets.
    pub id: TargetId,
    /// What to probe.
    pub spec: CheckSpec,
    /// How often and with which thresholds.
    pub timing: Timing,
}

/// What one check saw. A failed check is `Down`, never an `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckOutcome {
    /// The check passed.
    Up {
        /// Time from the start of the check (connect) to its verdict (response and body checked).
        rtt: Duration,
    },
    /// The check failed.
    Down {
        /// Time from the start of the check until it failed (the timeout, for [`Reason::Timeout`]).
        rtt: Duration,
        /// Why.
        reason: Reason,
    },
}

impl CheckOutcome {
    /// Whether the check passed.
    pub(crate) fn is_up(&self) -> bool {
        matches!(self, CheckOutcome::Up { .. })
    }

    /// How long the check took.
    pub(crate) fn rtt(&self) -> Duration {
        match self {
            CheckOutcome::Up { rtt } | CheckOutcome::Down { rtt, .. } => *rtt,
        }
    }

    /// Why the check failed, if it did.
    pub(crate) fn reason(&self) -> Option<&Reason> {
        match self {
            CheckOutcome::Up { .. } => None,
            CheckOutcome::Down { reason, .. } => Some(reason),
        }
    }
}

/// Why a check failed. Small, cloneable and bounded: it is stored per target and shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// No verdict within the check's timeout (connect, TLS, response or body).
    Timeout,
    /// The node actively refused the connection (nothing listens on the port).
    Refused,
    /// The response status is not an expected one.
    Status(u16),
    /// The body (first [`MAX_BODY_BYTES`]) does not contain the expected text.
    BodyMismatch,
    /// The TLS handshake failed: certificate not valid for the host, expired, unknown issuer,
    /// or the peer does not speak TLS.
    Tls(ReasonText),
    /// Anything else (connection reset, malformed response, …).
    Other(ReasonText),
}

impl Reason {
    /// A fixed, low-cardinality name for metric labels: `timeout`, `refused`, `status`,
    /// `body_mismatch`, `tls` or `other`.
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Status(_) => "status",
            Reason::BodyMismatch => "body_mismatch",
            Reason::Tls(_) => "tls",
            Reason::Other(_) => "other",
        }
    }

    /// `Other` with `text` cut to [`MAX_REASON_TEXT`].
    pub(crate) fn other(text: impl AsRef<str>) -> Self {
        Reason::Other(ReasonText::new(text))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Timeout => f.write_str("timeout"),
            Reason::Refused => f.write_str("connection refused"),
            Reason::Status(status) => write!(f, "unexpected status {status}"),
            Reason::BodyMismatch => f.write_str("body does not contain the expected text"),
            Reason::Tls(text) => write!(f, "tls: {text}"),
            Reason::Other(text) => f.write_str(text.as_str()),
        }
    }
}

/// Free text inside a [`Reason`], at most [`MAX_REASON_TEXT`] bytes; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ReasonText(Arc<str>);

impl ReasonText {
    /// Keeps at most [`MAX_REASON_TEXT`] bytes of `text`, cut at a character boundary.
    pub(crate) fn new(text: impl AsRef<str>) -> Self {
        let text = text.as_ref();
        let mut end = text.len().min(MAX_REASON_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ReasonText(Arc::from(&text[..end]))
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReasonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a check cannot be set up at all (as opposed to a check that fails, which is a
/// [`CheckOutcome::Down`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The path does not start with `/` or contains whitespace or control characters.
    #[error("invalid check path {path:?}: must start with '/' and contain no whitespace")]
    InvalidPath {
        /// The path as given.
        path: String,
    },
    /// The host is not a DNS name (IP literals and ports are not allowed: leave it unset to check
    /// by address).
    #[error("invalid check host {host:?}: must be a DNS name without port")]
    InvalidHost {
        /// The host as given.
        host: String,
    },
    /// No expected status, or a range outside 100..=999.
    #[error("invalid expected statuses {expect}")]
    InvalidStatus {
        /// The ranges as given.
        expect: String,
    },
    /// The timing breaks an invariant.
    #[error("invalid check timing: {problem} ({timing:?})")]
    InvalidTiming {
        /// Which invariant.
        problem: &'static str,
        /// The timing as given.
        timing: Timing,
    },
    /// Building the TLS client configuration failed (e.g. an unparsable extra root certificate).
    #[error("failed to set up tls for health checks: {source}")]
    Tls {
        /// The rustls error.
        #[from]
        source: rustls::Error,
    },
}

/// The future a [`Checker`] returns.
pub(crate) type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckOutcome> + Send + 'a>>;

/// Runs one check. Implementations must finish within `timeout` (returning
/// `Down { reason: Timeout }`) and never panic on network input; the scheduler also enforces the
/// timeout.
///
/// Boxed futures rather than `async fn` so that the scheduler can hold an `Arc<dyn Checker>` and
/// tests can substitute scripted checkers.
pub(crate) trait Checker: Send + Sync {
    /// Checks `spec` once, taking at most `timeout`. `slot` is the target's own: a checker may keep
    /// a connection there for the target's next check.
    fn check<'a>(&'a self, spec: &'a CheckSpec, timeout: Duration, slot: &'a mut ConnSlot) -> CheckFuture<'a>;
}

/// Where one target keeps its open HTTP(S) connection between checks (see
/// [`HttpSpec::connection_reuse`]). Empty by default; dropping it closes the connection.
#[derive(Default)]
pub(crate) struct ConnSlot {
    kept: Option<http::Kept>,
}

impl fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnSlot").field("kept", &self.kept.as_ref().map(http::Kept::served)).finish()
    }
}

impl ConnSlot {
    /// Whether a connection is kept for the next check.
    #[cfg(test)]
    pub(crate) fn is_kept(&self) -> bool {
        self.kept.is_some()
    }
}

/// The production [`Checker`]: HTTP(S) specs go to an [`HttpChecker`], TCP specs to a
/// [`TcpChecker`].
#[derive(Debug, Clone)]
pub(crate) struct NetChecker {
    http: HttpChecker,
    tcp: TcpChecker,
}

impl NetChecker {
    /// Combines the two protocol checkers.
    pub(crate) fn new(http: HttpChecker, tcp: TcpChecker) -> Self {
        NetChecker { http, tcp }
    }
}

impl Checker for NetChecker {
    fn check<'a>(&'a self, spec: &'a CheckSpec, timeout: Duration, slot: &'a mut ConnSlot) -> CheckFuture<'a> {
        match spec {
            CheckSpec::Http(spec) => Box::pin(self.http.check_http_reusing(spec, timeout, slot)),
            CheckSpec::Tcp(spec) => Box::pin(self.tcp.check_tcp(spec, timeout)),
        }
    }
}

/// Whether `host` is a DNS name usable for SNI (not an IP literal, no port).
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.parse::<std::net::IpAddr>().is_err()
        && matches!(rustls::pki_types::ServerName::try_from(host), Ok(rustls::pki_types::ServerName::DnsName(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            jitter: Duration::from_millis(100),
        }
    }

    #[test]
    fn timing_validation() {
        assert!(timing().validate().is_ok());
        let bad = [
            Timing { timeout: Duration::from_secs(1), ..timing() },
            Timing { timeout: Duration::ZERO, ..timing() },
            Timing { interval: Duration::ZERO, ..timing() },
            Timing { rise: 0, ..timing() },
            Timing { fall: 0, ..timing() },
            Timing { jitter: Duration::from_millis(501), ..timing() },
        ];
        for t in bad {
            let err = t.validate().expect_err("must be rejected");
            assert!(err.to_string().starts_with("invalid check timing: "), "{err}");
        }
    }

    #[test]
    fn http_spec_validation() {
        let addr: SocketAddr = "192.0.2.1:443".parse().expect("addr");
        let ok = HttpSpec { host: Some("cdn.example.net".into()), ..HttpSpec::new(Scheme::Https, addr) };
        assert!(ok.validate().is_ok());
        for host in ["", "192.0.2.1", "cdn.example.net:443", "a b", "::1"] {
            let spec = HttpSpec { host: Some(host.into()), ..ok.clone() };
            assert!(matches!(spec.validate(), Err(CheckError::InvalidHost { .. })), "{host:?}");
        }
        for path in ["", "health", "/a b", "/a\n"] {
            let spec = HttpSpec { path: path.into(), ..ok.clone() };
            assert!(matches!(spec.validate(), Err(CheckError::InvalidPath { .. })), "{path:?}");
        }
        let spec = HttpSpec { path: "/health?deep=1".into(), ..ok.clone() };
        assert!(spec.validate().is_ok());
        for expect in [
            ExpectStatus::codes(&[]),
            ExpectStatus::ranges_of(vec![RangeInclusive::new(300, 200)]),
            ExpectStatus::codes(&[99]),
        ] {
            let spec = HttpSpec { expect_status: expect, ..ok.clone() };
            assert!(matches!(spec.validate(), Err(CheckError::InvalidStatus { .. })));
        }
    }

    #[test]
    fn expect_status_matching() {
        let default = ExpectStatus::default();
        assert!(default.matches(200) && default.matches(299));
        assert!(!default.matches(301) && !default.matches(503));
        let codes = ExpectStatus::codes(&[200, 204]);
        assert!(codes.matches(204) && !codes.matches(201));
    }

    #[test]
    fn reason_text_is_bounded_at_a_char_boundary() {
        let long = "é".repeat(200);
        let text = ReasonText::new(&long);
        assert!(text.as_str().len() <= MAX_REASON_TEXT);
        assert!(text.as_str().len() >= MAX_REASON_TEXT - 1);
        assert_eq!(Reason::other("short").to_string(), "short");
        assert_eq!(Reason::Status(503).to_string(), "unexpected status 503");
        assert_eq!(Reason::Tls(ReasonText::new("x")).kind(), "tls");
    }
}
