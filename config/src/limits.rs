//! What an HTTP listener allows a connection: the admin API's (`[admin]`) and the resolver's HTTP
//! connector's (`[resolver]`) timeouts and connection caps.

use std::time::Duration;

/// What an HTTP listener (the admin API, the resolver's HTTP connector) allows a connection:
/// idle and half-sent connections are closed, and no more than `max_connections` are open at
/// once, so nobody who can connect holds the process's file descriptors.
///
/// Invariants: both timeouts are within [`ConnectionLimits::MIN_TIMEOUT`] and
/// [`ConnectionLimits::MAX_TIMEOUT`], `header_timeout` is at most `idle_timeout`, and
/// `max_connections` is 1 to [`ConnectionLimits::MAX_CONNECTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a new connection gets to send the headers of its first request; also the time a
    /// request's body may take once its headers are in.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait for, and receive the headers of, its next request.
    pub idle_timeout: Duration,
    /// Connections open at once; one more is accepted and closed at once.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// Shortest accepted timeout.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
    /// Longest accepted timeout: one hour.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
    /// Largest accepted `max_connections`.
    pub const MAX_CONNECTIONS: usize = 1_000_000;

    /// The admin API's defaults: its clients (operators, `geolbctl`, Prometheus, peers fetching
    /// the fleet document) send a request at once and seldom keep a connection.
    pub const ADMIN: ConnectionLimits = ConnectionLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 512,
    };

    /// The HTTP connector's defaults: PowerDNS keeps one connection per backend thread open and
    /// sends a whole call at once, so kept-alive connections may idle for minutes.
    pub const HTTP: ConnectionLimits = ConnectionLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(300),
        max_connections: 1024,
    };

    /// Validates the keys as written (`None`: left out, `defaults`' value); problems are
    /// `(key, message)`.
    pub(crate) fn resolve(
        header_timeout_ms: Option<u64>,
        idle_timeout_ms: Option<u64>,
        max_connections: Option<usize>,
        defaults: ConnectionLimits,
        problems: &mut Vec<(&'static str, String)>,
    ) -> ConnectionLimits {
        let mut timeout = |key: &'static str, ms: Option<u64>, default: Duration| match ms {
            None => default,
            Some(ms) => {
                let d = Duration::from_millis(ms);
                if d < Self::MIN_TIMEOUT || d > Self::MAX_TIMEOUT {
                    let (min, max) = (Self::MIN_TIMEOUT.as_millis(), Self::MAX_TIMEOUT.as_millis());
                    problems.push((key, format!("{key} {ms} is outside {min} to {max}")));
                    default
                } else {
                    d
                }
            }
        };
        let header_timeout = timeout("header_timeout_ms", header_timeout_ms, defaults.header_timeout);
        let idle_timeout = timeout("idle_timeout_ms", idle_timeout_ms, defaults.idle_timeout);
        if header_timeout > idle_timeout {
            problems.push((
                "idle_timeout_ms",
                format!(
                    "idle_timeout_ms {} is shorter than header_timeout_ms {}: a kept-alive connection must be allowed at least as long as a new one",
                    idle_timeout.as_millis(),
                    header_timeout.as_millis()
                ),
            ));
        }
        let max_connections = max_connections.unwrap_or(defaults.max_connections);
        if max_connections == 0 || max_connections > Self::MAX_CONNECTIONS {
            problems.push((
                "max_connections",
                format!("max_connections {max_connections} is outside 1 to {}", Self::MAX_CONNECTIONS),
            ));
        }
        ConnectionLimits {
            header_timeout,
            idle_timeout: idle_timeout.max(header_timeout),
            max_connections: max_connections.clamp(1, Self::MAX_CONNECTIONS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        header: Option<u64>,
        idle: Option<u64>,
        max: Option<usize>,
    ) -> (ConnectionLimits, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let limits = ConnectionLimits::resolve(header, idle, max, ConnectionLimits::ADMIN, &mut problems);
        (limits, problems)
    }

    #[test]
    fn left_out_keys_take_the_defaults() {
        assert_eq!(resolve(None, None, None), (ConnectionLimits::ADMIN, Vec::new()));
        let (limits, problems) = resolve(Some(500), Some(2000), Some(3));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            limits,
            ConnectionLimits {
                header_timeout: Duration::from_millis(500),
                idle_timeout: Duration::from_secs(2),
                max_connections: 3
            }
        );
    }

    #[test]
    fn out_of_range_values_are_problems_naming_their_key() {
        let (_, problems) = resolve(Some(10), Some(7_200_000), Some(0));
        let keys: Vec<&str> = problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["header_timeout_ms", "idle_timeout_ms", "max_connections"], "{problems:?}");
        assert!(problems[0].1.contains("outside 100 to 3600000"), "{problems:?}");
        let (_, problems) = resolve(Some(5000), Some(1000), None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].1.contains("shorter than header_timeout_ms 5000"), "{problems:?}");
    }
}
