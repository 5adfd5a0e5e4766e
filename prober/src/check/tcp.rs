//! TCP connect checks: the node is up when the three-way handshake completes within the timeout.
//!
//! The connection is closed right away with a reset (no TIME_WAIT left on the prober); nothing is
//! sent. Not here: scheduling and hysteresis
//! (see [`super::schedule`]).

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{CheckOutcome, Reason, TcpSpec};

/// Runs TCP connect checks. Stateless; cheap to copy.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TcpChecker;

impl TcpChecker {
    /// A TCP checker.
    pub(crate) fn new() -> Self {
        TcpChecker
    }

    /// Connects to `spec.addr` once, within `timeout`.
    pub(crate) async fn check_tcp(&self, spec: &TcpSpec, timeout: Duration) -> CheckOutcome {
        let start = Instant::now();
        match tokio::time::timeout(timeout, TcpStream::connect(spec.addr)).await {
            Ok(Ok(stream)) => {
                let rtt = start.elapsed();
                // Close with a reset, as HAProxy does for its checks: a graceful close would leave
                // a TIME_WAIT socket here for a minute per check (120k of them at 2000 targets
                // checked every second, past the kernel's default bucket limit).
                if let Err(err) = stream.set_zero_linger() {
                    tracing::debug!(error = %err, "could not set SO_LINGER on a check connection");
                }
                drop(stream);
                CheckOutcome::Up { rtt }
            }
            Ok(Err(err)) => CheckOutcome::Down { rtt: start.elapsed(), reason: io_reason(&err) },
            Err(_elapsed) => CheckOutcome::Down { rtt: timeout, reason: Reason::Timeout },
        }
    }
}

/// Maps a connect error to a [`Reason`].
fn io_reason(err: &io::Error) -> Reason {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Reason::Refused,
        io::ErrorKind::TimedOut => Reason::Timeout,
        _ => Reason::other(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::super::test_support::refused_addr;
    use super::*;

    #[tokio::test]
    async fn listening_port_is_up() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let spec = TcpSpec { addr: listener.local_addr().expect("addr") };
        let outcome = TcpChecker::new().check_tcp(&spec, Duration::from_secs(2)).await;
        assert!(outcome.is_up(), "{outcome:?}");
        assert!(outcome.rtt() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        let spec = TcpSpec { addr: refused_addr().await };
        let outcome = TcpChecker::new().check_tcp(&spec, Duration::from_secs(2)).await;
        assert_eq!(outcome.reason(), Some(&Reason::Refused), "{outcome:?}");
    }

    #[test]
    fn io_errors_map_to_reasons() {
        assert_eq!(io_reason(&io::Error::from(io::ErrorKind::ConnectionRefused)), Reason::Refused);
        assert_eq!(io_reason(&io::Error::from(io::ErrorKind::TimedOut)), Reason::Timeout);
        assert_eq!(io_reason(&io::Error::other("no route")).kind(), "other");
    }
}
