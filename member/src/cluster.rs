//! From what the gossip says to one health view: the members' verdicts become
//! [`quorum`](geolb_common::quorum) votes, and operators' drains are merged (newest wins).
//!
//! Shared by the prober (its `/api/v1/state`, metrics and impairment) and the resolver (its
//! answers). [`fold_cluster`] is pure: the caller passes the [`GossipSnapshot`] read from gossip
//! and the current time. [`Follower`] is the one loop both programs fold the gossip in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use geolb_common::NodeId;
use geolb_common::quorum::{FoldInput, QuorumDecisions, QuorumParams, Voter, fold};
use geolb_common::verdict::Verdict;
use geolb_config::Config;

use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::gossip::GossipHandle;
use crate::gossip::keys::{GossipSnapshot, Oversize, Role};

/// Fencing defaults (not in the config yet): a prober is fenced when it disagrees with the
/// quorum on more than 30 % of at least 5 judged nodes, and on more than 3× the median prober.
const FENCE_MIN_DISAGREEMENT: f64 = 0.3;
const FENCE_FACTOR: f64 = 3.0;
const FENCE_MIN_NODES: usize = 5;

/// The cluster's health as one member folded it: quorum decisions, drains, and the voters.
#[derive(Debug, Clone, Default)]
pub struct ClusterHealth {
    /// The quorum fold.
    pub decisions: QuorumDecisions,
    /// Nodes an operator drained (newest drain/undrain across members wins).
    pub drained: BTreeSet<NodeId>,
    /// Verdicts that did not decode (a newer or broken member), ignored.
    pub bad_verdicts: usize,
    /// Per member: the last chitchat heartbeat seen and the local time (unix ms) it changed.
    /// Freshness is judged on this reader's clock, never by comparing another machine's.
    pub heartbeats: BTreeMap<String, (u64, u64)>,
    /// The probers as this fold saw them (liveness, impairment, freshness).
    pub voters: Vec<Voter>,
    /// Members left out of the fold whole: their gossip state is past the cap
    /// ([`crate::gossip::keys::MAX_MEMBER_KEYS`], [`crate::gossip::keys::MAX_MEMBER_BYTES`]).
    pub ignored_members: BTreeMap<String, Oversize>,
}

/// The quorum parameters of a config.
pub fn params(config: &Config) -> QuorumParams {
    let q = &config.quorum;
    QuorumParams {
        down_quorum: q.down_quorum,
        min_down_voters: q.min_down_voters,
        stale_after_ms: q.stale_after.as_millis() as u64,
        grace_ms: q.grace.as_millis() as u64,
        fence_min_disagreement: FENCE_MIN_DISAGREEMENT,
        fence_factor: FENCE_FACTOR,
        fence_min_nodes: FENCE_MIN_NODES,
    }
}

/// Folds a gossip view. `previous` is the last fold (for grace periods and `since` times).
pub fn fold_cluster(view: &GossipSnapshot, config: &Config, previous: &ClusterHealth, now_ms: u64) -> ClusterHealth {
    let nodes: Vec<NodeId> = config.nodes.iter().map(|n| n.id.clone()).collect();
    let mut voters = Vec::new();
    let mut votes: BTreeMap<NodeId, Vec<(usize, Verdict)>> = BTreeMap::new();
    let mut bad_verdicts = 0;
    let mut heartbeats = BTreeMap::new();
    for member in view.members.iter().filter(|m| m.role == Some(Role::Prober)) {
        let index = voters.len();
        let seen = match previous.heartbeats.get(&member.id) {
            Some(&(beat, seen)) if beat == member.heartbeat => seen,
            // A new heartbeat (or a first sighting of one): seen now, on our clock.
            _ if member.heartbeat > 0 => now_ms,
            _ => 0,
        };
        heartbeats.insert(member.id.clone(), (member.heartbeat, seen));
        voters.push(Voter {
            id: Arc::from(member.id.as_str()),
            region: member.region.as_deref().map(Arc::from),
            weight: config.quorum.weight(&member.id),
            live: member.live,
            impaired: member.impaired,
            last_seen_ms: seen,
        });
        for (node, encoded) in &member.verdicts {
            match Verdict::decode(encoded) {
                Ok(v) => votes.entry(NodeId::from(node.as_str())).or_default().push((index, v)),
                Err(_) => bad_verdicts += 1,
            }
        }
    }
    let params = params(config);
    let decisions = fold(&FoldInput {
        voters: &voters,
        votes: &votes,
        nodes: &nodes,
        previous: &previous.decisions.global,
        previous_regional: &previous.decisions.regional,
        now_ms,
        params: &params,
    });
    let mut drained: BTreeSet<NodeId> =
        view.drains.iter().filter(|(_, (_, drained))| *drained).map(|(n, _)| NodeId::from(n.as_str())).collect();
    let mut decisions = decisions;
    apply_overrides(view, config, now_ms, &mut decisions, &mut drained);
    let ignored_members = view.ignored_members.clone();
    ClusterHealth { decisions, drained, bad_verdicts, heartbeats, voters, ignored_members }
}

/// The operators' active overrides over the fold: a node forced Up or Down is so globally and
/// in every region; a drained node or PoP joins the drained set.
fn apply_overrides(
    view: &GossipSnapshot,
    config: &Config,
    now_ms: u64,
    decisions: &mut QuorumDecisions,
    drained: &mut BTreeSet<NodeId>,
) {
    use crate::gossip::keys::{OverrideAction, OverrideTarget};
    use geolb_common::Health;
    use geolb_common::quorum::DecisionReason;
    for o in view.overrides.values().filter(|o| o.active(now_ms)) {
        match (&o.target, o.action) {
            (OverrideTarget::Node(id), OverrideAction::Drain) => {
                drained.insert(NodeId::from(id.as_str()));
            }
            (OverrideTarget::Pop(pop), OverrideAction::Drain) => {
                drained.extend(config.nodes.iter().filter(|n| n.pop.as_str() == pop).map(|n| n.id.clone()));
            }
            (OverrideTarget::Node(id), action @ (OverrideAction::Up | OverrideAction::Down)) => {
                let (health, reason) = if action == OverrideAction::Up {
                    (Health::Up, DecisionReason::ForcedUp)
                } else {
                    (Health::Down, DecisionReason::ForcedDown)
                };
                let node = NodeId::from(id.as_str());
                let maps = std::iter::once(&mut decisions.global).chain(decisions.regional.values_mut());
                for map in maps {
                    if let Some(d) = map.get_mut(&node) {
                        if d.health != health {
                            d.since_ms = o.at_ms.max(d.since_ms);
                        }
                        d.health = health;
                        d.reason = reason;
                    }
                }
            }
            // A PoP is drained, not forced; a clear is not active.
            (OverrideTarget::Pop(_), _) | (_, OverrideAction::Clear) => {}
        }
    }
}

/// Follows the gossip: folds it when it changes (at most once per `min_gap`) and at least every
/// `refold` (staleness and grace periods move with time alone). Holds the last published fold,
/// which the next fold starts from and which the admin API and the metrics read.
#[derive(Debug)]
pub struct Follower {
    gossip: Arc<GossipHandle>,
    changes: watch::Receiver<()>,
    health: Arc<Mutex<ClusterHealth>>,
    min_gap: Duration,
    refold: Duration,
    last: Option<Instant>,
}

impl Follower {
    /// A follower of `gossip` that publishes into `health`.
    pub fn new(
        gossip: Arc<GossipHandle>,
        health: Arc<Mutex<ClusterHealth>>,
        min_gap: Duration,
        refold: Duration,
    ) -> Self {
        let changes = gossip.watch();
        Follower { gossip, changes, health, min_gap, refold, last: None }
    }

    /// The last published fold.
    pub fn health(&self) -> MutexGuard<'_, ClusterHealth> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the next fold (a gossip change or `refold`), then folds the gossip with the
    /// config `config()` returns then, against the last published fold. `None` once `shutdown`
    /// is cancelled. What it returns is not published until [`Follower::publish`]: the caller
    /// may look at it (or amend it) first.
    pub async fn next(
        &mut self,
        config: impl FnOnce() -> Arc<Config>,
        shutdown: &CancellationToken,
    ) -> Option<(GossipSnapshot, ClusterHealth)> {
        if let Some(last) = self.last {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep_until(last + self.min_gap) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = changed(&mut self.changes) => {}
                _ = tokio::time::sleep_until(last + self.refold) => {}
            }
        }
        self.changes.borrow_and_update();
        self.last = Some(Instant::now());
        let snapshot = self.gossip.view().await;
        let previous = self.health().clone();
        let next = fold_cluster(&snapshot, &config(), &previous, crate::unix_ms());
        for (id, why) in &next.ignored_members {
            if previous.ignored_members.get(id) != Some(why) {
                tracing::warn!(member = %id, reason = why.as_str(), "ignoring gossip member {id}: its state is past the cap ({} keys, {} bytes); none of its verdicts, drains or overrides are read", crate::gossip::keys::MAX_MEMBER_KEYS, crate::gossip::keys::MAX_MEMBER_BYTES);
            }
        }
        Some((snapshot, next))
    }

    /// Makes `health` the last fold.
    pub fn publish(&self, health: ClusterHealth) {
        *self.health() = health;
    }
}

/// Completes on the next gossip change; never once the gossip is gone (its termination is
/// watched elsewhere), so a dead sender does not turn the follower into a busy loop.
async fn changed(changes: &mut watch::Receiver<()>) {
    if changes.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::keys::MemberSnapshot;
    use geolb_common::Health;
    use geolb_common::verdict::Reason;

    /// A live prober saying `up` about every node of `Config::for_test`.
    fn prober(id: &str, up: bool, now_ms: u64) -> MemberSnapshot {
        let verdict = Verdict {
            up,
            since_ms: now_ms - 1_000,
            rtt_us: 100,
            reason: if up { Reason::Ok } else { Reason::Timeout },
        };
        MemberSnapshot {
            id: id.to_owned(),
            generation: 1,
            gossip_addr: "127.0.0.1:7946".parse().unwrap(),
            live: true,
            role: Some(Role::Prober),
            region: Some("eu".to_owned()),
            impaired: false,
            heartbeat: 7,
            verdicts: Config::for_test().nodes.iter().map(|n| (n.id.to_string(), verdict.encode())).collect(),
            config_head: None,
            config_applied: None,
            admin_addr: None,
        }
    }

    #[test]
    fn probers_weigh_what_the_quorum_config_says() {
        let now = 1_800_000_000_000;
        // One prober says Down, two say Up: a third of the weight, under the 0.5 quorum.
        let snapshot = GossipSnapshot {
            members: vec![prober("heavy", false, now), prober("light-1", true, now), prober("light-2", true, now)],
            ..GossipSnapshot::default()
        };
        let mut config = Config::for_test();
        config.quorum.min_down_voters = 1;
        let health = |config: &Config| {
            let fold = fold_cluster(&snapshot, config, &ClusterHealth::default(), now);
            let decision = fold.decisions.global.get(&NodeId::from("fra-1")).cloned();
            (fold.voters.iter().map(|v| (v.id.to_string(), v.weight)).collect::<Vec<_>>(), decision)
        };
        let (voters, decision) = health(&config);
        assert!(voters.iter().all(|(_, w)| *w == 1.0), "{voters:?}");
        assert_eq!(decision.map(|d| d.health), Some(Health::Up));

        // Weighed 3 to 1 + 1, the same verdicts are three fifths of the weight: Down.
        config.quorum.weights.insert("heavy".to_owned(), 3.0);
        let (voters, decision) = health(&config);
        assert!(voters.contains(&("heavy".to_owned(), 3.0)), "{voters:?}");
        let decision = decision.unwrap();
        assert_eq!((decision.health, decision.down_weight, decision.eligible_weight), (Health::Down, 3.0, 5.0));
    }
}
