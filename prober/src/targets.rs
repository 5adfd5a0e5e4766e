//! What a prober checks: one target per configured node (its own address, its `check`), plus
//! the canaries that tell whether the prober's own network is sick.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use geolb_common::verdict::{Reason as VerdictReason, Verdict};
use geolb_config::Config;
use geolb_config::health::CheckKind;

use crate::check::schedule::Transition;
use crate::check::{CheckSpec, ExpectStatus, HttpSpec, Reason, Scheme, Target, TcpSpec, Timing};

/// Prefix of canary target ids; node ids cannot start with it (they come from the config and
/// `canary:` is not a useful node name), and canaries never reach the gossip.
pub const CANARY_PREFIX: &str = "canary:";

/// The checks of every node (address: IPv4 if it has one, else IPv6), and one TCP check per
/// canary with the default timing.
pub fn targets(config: &Config) -> Vec<Target> {
    let mut out: Vec<Target> = config
        .nodes
        .iter()
        .filter_map(|n| {
            let ip = n.ipv4.map(IpAddr::V4).or(n.ipv6.map(IpAddr::V6))?;
            let c = &n.check;
            let addr = SocketAddr::new(ip, c.port);
            let spec = match c.kind {
                CheckKind::Tcp => CheckSpec::Tcp(TcpSpec { addr }),
                kind => CheckSpec::Http(HttpSpec {
                    scheme: if kind == CheckKind::Https { Scheme::Https } else { Scheme::Http },
                    addr,
                    host: c.host.clone(),
                    path: c.path.clone(),
                    expect_status: ExpectStatus::codes(&c.expect_status),
                    body_contains: c.body_contains.clone(),
                    tls_verify: c.tls_verify,
                }),
            };
            let timing =
                Timing { interval: c.interval, timeout: c.timeout, rise: c.rise, fall: c.fall, jitter: c.jitter };
            Some(Target { id: Arc::from(n.id.as_str()), spec, timing })
        })
        .collect();
    if let Some(prober) = &config.prober {
        let d = geolb_config::health::CheckConfig::default();
        for addr in &prober.canaries {
            out.push(Target {
                id: Arc::from(format!("{CANARY_PREFIX}{addr}")),
                spec: CheckSpec::Tcp(TcpSpec { addr: *addr }),
                timing: Timing { interval: d.interval, timeout: d.timeout, rise: 1, fall: d.fall, jitter: d.jitter },
            });
        }
    }
    out
}

/// The verdict a prober gossips after a transition.
pub fn verdict(t: &Transition, rtt_us: u32) -> Verdict {
    let reason = match &t.reason {
        None => VerdictReason::Ok,
        Some(Reason::Timeout) => VerdictReason::Timeout,
        Some(Reason::Refused) => VerdictReason::Refused,
        Some(Reason::Status(s)) => VerdictReason::Status(*s),
        Some(Reason::BodyMismatch) => VerdictReason::BodyMismatch,
        Some(Reason::Tls(_)) => VerdictReason::Tls,
        Some(Reason::Dns) => VerdictReason::Dns,
        Some(Reason::Other(_)) => VerdictReason::Other,
    };
    Verdict { up: t.up, since_ms: t.at_ms, rtt_us, reason }
}

/// A target's state as impairment sees it: `Some(true)` when its last check failed,
/// `Some(false)` when it passed, `None` before its first check.
pub type Failing = Option<bool>;

/// Whether a prober should doubt itself: a canary's last check failed, or the last checks of at
/// least `impaired_share` of the nodes failed at once (a sick uplink looks like a world-wide
/// outage). Judged on the *last check*, not on Down verdicts: when the uplink dies every node
/// fails within one interval, long before the first reaches `fall` failures, so the prober
/// says it is impaired before it would publish a single Down.
pub fn impaired(states: &[(Arc<str>, Failing)], impaired_share: f64) -> bool {
    let canary_failing = states.iter().any(|(id, f)| id.starts_with(CANARY_PREFIX) && *f == Some(true));
    let judged: Vec<bool> =
        states.iter().filter(|(id, _)| !id.starts_with(CANARY_PREFIX)).filter_map(|(_, f)| *f).collect();
    let failing = judged.iter().filter(|f| **f).count();
    // Below 4 checked nodes one failure is no evidence of a sick prober.
    let implausible = judged.len() >= 4 && failing as f64 >= impaired_share * judged.len() as f64;
    canary_failing || implausible
}

/// [`Failing`] of a scheduler's target state.
pub fn failing(state: &crate::check::TargetState) -> Failing {
    state.last_check_ms.map(|_| state.consecutive_fail > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, up: Option<bool>) -> (Arc<str>, Option<bool>) {
        (Arc::from(id), up)
    }

    #[test]
    fn impairment() {
        // Some(true) = the last check failed.
        let healthy = [s("a", Some(false)), s("b", Some(false)), s("c", Some(true)), s("d", Some(false))];
        assert!(!impaired(&healthy, 0.5));
        let outage = [s("a", Some(true)), s("b", Some(true)), s("c", Some(false)), s("d", Some(false))];
        assert!(impaired(&outage, 0.5), "half the nodes failing at once");
        let few = [s("a", Some(true)), s("b", Some(true))];
        assert!(!impaired(&few, 0.5), "too few nodes to judge");
        let canary = [s("a", Some(false)), s("canary:192.0.2.1:443", Some(true))];
        assert!(impaired(&canary, 0.5), "a canary failing");
        let undecided = [s("a", None), s("b", None), s("c", None), s("d", None), s("canary:x", None)];
        assert!(!impaired(&undecided, 0.5));
    }

    #[test]
    fn every_node_gets_a_target_with_its_check() {
        let config = Config::for_test();
        let t = targets(&config);
        assert_eq!(t.len(), config.nodes.len());
        assert_eq!(&*t[0].id, "fra-1");
        assert_eq!(t[0].spec.addr(), "192.0.2.1:80".parse().unwrap());
    }
}
