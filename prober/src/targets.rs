//! What a prober checks: one target per configured node (its own address, its `check`), plus
//! the canaries that tell whether the prober's own network is sick.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use geolb_common::verdict::{Reason as VerdictReason, Verdict};
use geolb_config::Config;
use geolb_config::health::CheckKind;

use crate::check::schedule::Transition;
use crate::check::{CheckSpec, ExpectStatus, HttpSpec, Reason, Scheme, Target, TcpSpec, Timing};

/// Prefix of canary target ids; the config refuses node ids that start with it, and canaries
/// never reach the gossip.
pub(crate) const CANARY_PREFIX: &str = geolb_config::RESERVED_NODE_PREFIX;

/// The checks of every node (address: IPv4 if it has one, else IPv6), and one TCP check per
/// canary with the default timing.
pub(crate) fn targets(config: &Config) -> Vec<Target> {
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
                    connection_reuse: c.connection_reuse,
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
pub(crate) fn verdict(t: &Transition, rtt_us: u32) -> Verdict {
    let reason = match &t.reason {
        None => VerdictReason::Ok,
        Some(Reason::Timeout) => VerdictReason::Timeout,
        Some(Reason::Refused) => VerdictReason::Refused,
        Some(Reason::Status(s)) => VerdictReason::Status(*s),
        Some(Reason::BodyMismatch) => VerdictReason::BodyMismatch,
        Some(Reason::Tls(_)) => VerdictReason::Tls,
        Some(Reason::Other(_)) => VerdictReason::Other,
    };
    Verdict { up: t.up, since_ms: t.at_ms, rtt_us, reason }
}

/// A target's state as impairment sees it: `Some(true)` when its last check failed or its
/// published verdict is still Down, `Some(false)` when neither, `None` before its first check.
pub(crate) type Failing = Option<bool>;

/// Whether a prober should doubt itself and abstain: a canary failing, or it sees far more
/// failure than its peers do. "Far more" is: at least `impaired_share` of the nodes it checked
/// are failing, and that share exceeds the median share of Down verdicts of the other live
/// probers (`peer_share`) by at least half of `impaired_share`.
///
/// Judged on failing *checks*: when the uplink dies every node fails within one interval, long
/// before the first reaches `fall` failures, so the prober says it is impaired before it would
/// publish a single Down. And a node counts as failing while its Down verdict is still
/// published, so a recovering prober stays impaired until it has taken its Downs back. Peers
/// seeing the same (a whole PoP down, every node down) make it not impaired: that is an outage,
/// not a sick prober.
pub(crate) fn impaired(states: &[(Arc<str>, Failing)], impaired_share: f64, peer_share: f64) -> bool {
    let canary_failing = states.iter().any(|(id, f)| id.starts_with(CANARY_PREFIX) && *f == Some(true));
    let judged: Vec<bool> =
        states.iter().filter(|(id, _)| !id.starts_with(CANARY_PREFIX)).filter_map(|(_, f)| *f).collect();
    // Below 4 checked nodes one failure is no evidence of a sick prober.
    if judged.len() < 4 {
        return canary_failing;
    }
    let mine = judged.iter().filter(|f| **f).count() as f64 / judged.len() as f64;
    canary_failing || (mine >= impaired_share && mine >= peer_share + impaired_share / 2.0)
}

/// [`Failing`] of a scheduler's target state.
pub(crate) fn failing(state: &crate::check::TargetState) -> Failing {
    state.last_check_ms.map(|_| state.consecutive_fail > 0 || state.up == Some(false))
}

/// The median share of Down verdicts among the other live probers with at least 4 verdicts
/// (0 when there is none).
pub(crate) fn peer_down_share(view: &geolb_member::gossip::keys::GossipSnapshot, me: &str) -> f64 {
    let mut shares: Vec<f64> = view
        .members
        .iter()
        .filter(|m| m.id != me && m.live && m.role == Some(geolb_member::gossip::keys::Role::Prober))
        .filter_map(|m| {
            let verdicts: Vec<bool> = m
                .verdicts
                .values()
                .filter_map(|v| geolb_common::verdict::Verdict::decode(v).ok())
                .map(|v| v.up)
                .collect();
            (verdicts.len() >= 4).then(|| verdicts.iter().filter(|up| !**up).count() as f64 / verdicts.len() as f64)
        })
        .collect();
    if shares.is_empty() {
        return 0.0;
    }
    shares.sort_by(f64::total_cmp);
    shares[shares.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, up: Option<bool>) -> (Arc<str>, Option<bool>) {
        (Arc::from(id), up)
    }

    #[test]
    fn impairment() {
        // Some(true) = failing.
        let healthy = [s("a", Some(false)), s("b", Some(false)), s("c", Some(true)), s("d", Some(false))];
        assert!(!impaired(&healthy, 0.5, 0.0));
        let blind = [s("a", Some(true)), s("b", Some(true)), s("c", Some(true)), s("d", Some(true))];
        assert!(impaired(&blind, 0.5, 0.0), "everything failing while the peers see it fine");
        assert!(!impaired(&blind, 0.5, 1.0), "everything failing and the peers agree: an outage");
        let half = [s("a", Some(true)), s("b", Some(true)), s("c", Some(false)), s("d", Some(false))];
        assert!(!impaired(&half, 0.5, 0.5), "a whole PoP down, seen by everyone: not impaired");
        assert!(impaired(&half, 0.5, 0.0), "half failing, nobody else sees it");
        let few = [s("a", Some(true)), s("b", Some(true))];
        assert!(!impaired(&few, 0.5, 0.0), "too few nodes to judge");
        let canary = [s("a", Some(false)), s("canary:192.0.2.1:443", Some(true))];
        assert!(impaired(&canary, 0.5, 0.0), "a canary failing");
        let undecided = [s("a", None), s("b", None), s("c", None), s("d", None), s("canary:x", None)];
        assert!(!impaired(&undecided, 0.5, 0.0));
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
