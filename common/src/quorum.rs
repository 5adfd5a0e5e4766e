//! Folding every prober's verdicts into one health view (docs/architecture.md, "The health path").
//!
//! Every member of the cluster, prober or resolver, calls [`fold`] whenever its gossip state
//! changes or a timer fires, passing the verdicts it holds, what the failure detector says about
//! each prober, and the view it computed last time. `fold` is a pure function of that input: it
//! does not look at the clock (`now_ms` is passed in), and its output does not depend on the order
//! in which gossip delivered the votes. Members holding the same gossip state therefore compute
//! the same view. This module does not read gossip, decode verdicts ([`crate::verdict`] does),
//! apply operator drains and overrides (the caller layers those on top), or export metrics; it
//! returns every number the metrics and `/api/v1/state` need.
//!
//! # Who votes
//!
//! A [`Voter`] (one prober) is *eligible* for a node when all of these hold:
//!
//! - it is `live` in the gossip failure detector;
//! - it is not `impaired`. A prober whose canary targets fail, or that sees an implausible share
//!   of nodes down at once, abstains completely: it votes neither Down nor Up;
//! - it is fresh: its heartbeat last rose (`last_seen_ms`, on the reader's clock) at most
//!   `stale_after_ms` ago; a prober whose checks stall turns itself impaired instead.
//!   Verdict keys change only on transitions, so the heartbeat, not the verdict's `since_ms`, is
//!   what says a verdict is still current. A heartbeat from the future (clock skew) counts as fresh;
//! - it is not fenced (see below);
//! - its `weight` is a positive finite number (config validation guarantees it; any other value
//!   abstains rather than poison the sums);
//! - and it has a verdict for that node.
//!
//! Malformed input is tolerated, never a panic: votes for nodes missing from `nodes` and vote
//! indices outside `voters` are ignored, and a voter with several verdicts for one node counts
//! once, with its newest verdict (latest `since_ms`; on a tie, Down).
//!
//! # Quorum
//!
//! With `down_weight` the summed weight of eligible voters saying Down and `eligible_weight` the
//! summed weight of all eligible voters, a node is
//!
//! - **Down** ([`DecisionReason::QuorumDown`]) when `down_weight / eligible_weight ≥ down_quorum`
//!   **and** at least `min_down_voters` eligible voters (never fewer than one) say Down;
//! - **Up** ([`DecisionReason::QuorumUp`]) otherwise, as long as one voter is eligible.
//!
//! The count guard is what stops a single flapping prober, or a single heavy one, from taking a
//! node down by itself. Example with four equal probers, `down_quorum = 0.5`,
//! `min_down_voters = 2`: one Down vote → Up (share 0.25); two → Down (share 0.5). With two probers,
//! one Down vote is a share of 0.5 but only one voter → Up.
//!
//! The share is compared with a tolerance of 10⁻⁹ so that weights such as 0.1 + 0.2 meet a quorum
//! of 0.3 as the operator meant, and weights are always summed in voter order so floating-point
//! rounding cannot depend on vote order.
//!
//! # No eligible voter: hold, then fail open
//!
//! Every [`Decision`] made with eligible voters records `last_quorum_ms = now_ms`. When a later
//! fold finds no eligible voter for the node (every prober dead, stale, impaired or fenced), the
//! previous decision decides:
//!
//! | previous decision                              | result                                           |
//! |------------------------------------------------|--------------------------------------------------|
//! | none, or never had a quorum                    | Unknown, [`DecisionReason::NeverSeen`]           |
//! | Up/Down and `now_ms - last_quorum_ms < grace_ms` | same health, [`DecisionReason::NoVoters`] (held) |
//! | otherwise                                      | Unknown, [`DecisionReason::FailOpen`]            |
//!
//! Unknown is usable ([`Health::is_usable`]): when nobody can judge a node any more, serving it
//! beats black-holing its name. Held and failed-open decisions keep `last_quorum_ms`, and their
//! tallies are all zero, which is how metrics and `/api/v1/state` show that nobody voted.
//!
//! `since_ms` is the time of the last *health* change: it is copied from the previous decision
//! while the health stays the same (a QuorumDown followed by a held NoVoters Down keeps its
//! `since_ms`) and set to `now_ms` when it changes.
//!
//! After a restart, a member loads its persisted view and passes it through
//! [`Decision::restored`], which restarts the grace period at start-up: the persisted verdicts
//! are served until a quorum forms or `grace_ms` passes, never an optimistic "all up".
//!
//! # Fencing
//!
//! A prober with a sick uplink says "everything is down"; a buggy one says "everything is up"
//! while its peers see outages. Both disagree with the quorum far more than healthy probers do,
//! so the fold runs twice:
//!
//! 1. Fold without fencing. For every eligible voter that voted on at least `fence_min_nodes`
//!    nodes, its *disagreement* is the share of those nodes where its vote (up or down) differs
//!    from the resulting health.
//! 2. With `median` the median disagreement of those voters, fence every voter whose disagreement
//!    is greater than `max(fence_min_disagreement, fence_factor × median)`.
//! 3. Fold again, with fenced voters not eligible anywhere.
//!
//! Fencing is recomputed from scratch on every fold: a prober whose verdicts agree with its peers
//! again is counted again. Disagreement is measured against the *global* view only, so a prober
//! that sees a regional outage on a handful of nodes stays well below the floor. The median makes
//! fencing relative: with `fence_factor ≥ 1` at most half of the measured probers can be fenced,
//! and with `fence_factor ≥ 2` two measured probers never fence each other (who is right cannot
//! be told). A lone prober is never fenced. [`QuorumDecisions::disagreement`] reports every measured
//! prober's value and [`QuorumDecisions::fenced`] the fenced ones, by prober id (ids are expected to be
//! unique; voters sharing an id share a fence and the higher disagreement).
//!
//! # Regions
//!
//! "Down from here": for every region some voter belongs to, the same quorum is computed from
//! that region's eligible voters only (fencing is decided globally, as above). A node without an
//! eligible voter in the region takes the global decision instead: same health, reason and
//! tallies, so `regional[region]` always holds every configured node. A regional `since_ms`
//! follows the regional view's own history ([`FoldInput::previous_regional`]); for a region or
//! node seen for the first time, a health equal to the global one inherits the global `since_ms`.
//! There is no regional grace period: without regional voters the global view, with its own
//! grace, is the fallback.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::verdict::Verdict;
use crate::{Health, NodeId};

/// Tolerance when comparing a Down share against [`QuorumParams::down_quorum`].
const SHARE_TOLERANCE: f64 = 1e-9;

/// One prober as the folding member sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Voter {
    /// The prober's id (its gossip member id); unique in a cluster.
    pub id: Arc<str>,
    /// The region the prober sits in, for the regional views; `None` votes only globally.
    pub region: Option<Arc<str>>,
    /// The prober's weight in the quorum; positive and finite, anything else abstains.
    pub weight: f64,
    /// Whether the gossip failure detector believes the prober is alive.
    pub live: bool,
    /// Whether the prober says it is impaired (canaries failing, implausibly many nodes down).
    pub impaired: bool,
    /// Unix ms at which the reader last saw the prober's heartbeat rise: how current its
    /// verdicts are.
    pub last_seen_ms: u64,
}

/// The knobs of the fold, from the `[quorum]` config section.
#[derive(Debug, Clone, PartialEq)]
pub struct QuorumParams {
    /// Share of the eligible voters' weight that must say Down, in (0, 1], e.g. 0.5.
    pub down_quorum: f64,
    /// How many eligible voters must say Down at least, e.g. 2; 0 is treated as 1.
    pub min_down_voters: usize,
    /// A voter whose latest heartbeat is older than this (ms) is not eligible.
    pub stale_after_ms: u64,
    /// How long (ms) a decision is held after its last quorum when nobody can vote, before
    /// failing open to [`Health::Unknown`].
    pub grace_ms: u64,
    /// A voter is never fenced at or below this disagreement, e.g. 0.3.
    pub fence_min_disagreement: f64,
    /// A voter is fenced above this multiple of the median disagreement (and the floor), e.g. 3.0.
    pub fence_factor: f64,
    /// A voter's disagreement is measured (and it can be fenced) only once it voted on this many
    /// judged nodes, e.g. 5.
    pub fence_min_nodes: usize,
}

/// Why a [`Decision`] says what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionReason {
    /// Enough eligible weight and voters say Down.
    QuorumDown,
    /// At least one voter is eligible and the Down quorum is not met.
    QuorumUp,
    /// No eligible voter: the last quorum's health is held while within the grace period.
    NoVoters,
    /// No eligible voter and the grace period is over: [`Health::Unknown`], served (fail open).
    FailOpen,
    /// No eligible voter has ever judged this node: [`Health::Unknown`].
    NeverSeen,
    /// An operator forced the node Up, whatever the voters say.
    ForcedUp,
    /// An operator forced the node Down, whatever the voters say.
    ForcedDown,
}

impl DecisionReason {
    /// The reason in snake case, as serialized, e.g. for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionReason::QuorumDown => "quorum_down",
            DecisionReason::QuorumUp => "quorum_up",
            DecisionReason::NoVoters => "no_voters",
            DecisionReason::FailOpen => "fail_open",
            DecisionReason::NeverSeen => "never_seen",
            DecisionReason::ForcedUp => "forced_up",
            DecisionReason::ForcedDown => "forced_down",
        }
    }
}

/// The cluster's verdict on one node, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What readers should do with the node.
    pub health: Health,
    /// How `health` was reached.
    pub reason: DecisionReason,
    /// Unix ms of the last change of `health` (carried over from the previous decision while
    /// `health` stays the same).
    pub since_ms: u64,
    /// Unix ms of the last fold that had eligible voters for this node: the start of the grace
    /// period when they are gone. `None` when no voter ever judged the node.
    pub last_quorum_ms: Option<u64>,
    /// Summed weight of the eligible voters saying Down (0 when nobody voted).
    pub down_weight: f64,
    /// Summed weight of all eligible voters (0 when nobody voted).
    pub eligible_weight: f64,
    /// Number of eligible voters saying Down.
    pub down_voters: usize,
    /// Number of eligible voters.
    pub eligible_voters: usize,
}

impl Decision {
    /// The decision as loaded from a persisted view at start-up `now_ms`: an Up or Down decision
    /// is held for a fresh grace period from now (its `last_quorum_ms` becomes `now_ms`), so a
    /// restarted member serves what it knew rather than failing open at once. Pass the restored
    /// view as [`FoldInput::previous`]. Unknown decisions stay as they are.
    pub fn restored(mut self, now_ms: u64) -> Decision {
        if self.health != Health::Unknown {
            self.last_quorum_ms = Some(now_ms);
        }
        self
    }
}

/// Everything [`fold`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct FoldInput<'a> {
    /// Every known prober; votes refer to them by index.
    pub voters: &'a [Voter],
    /// Per node, the verdicts held: `(index into voters, verdict)`, in any order.
    pub votes: &'a BTreeMap<NodeId, Vec<(usize, Verdict)>>,
    /// Every configured node; the output has exactly these.
    pub nodes: &'a [NodeId],
    /// The global view of the previous fold (or a restored one, see [`Decision::restored`]);
    /// empty on a cold start.
    pub previous: &'a BTreeMap<NodeId, Decision>,
    /// The regional views of the previous fold ([`QuorumDecisions::regional`]), for their `since_ms`;
    /// empty on a cold start.
    pub previous_regional: &'a BTreeMap<Arc<str>, BTreeMap<NodeId, Decision>>,
    /// Current unix time in milliseconds.
    pub now_ms: u64,
    /// The fold's knobs.
    pub params: &'a QuorumParams,
}

/// The health view computed by [`fold`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QuorumDecisions {
    /// One decision per configured node, from every eligible voter.
    pub global: BTreeMap<NodeId, Decision>,
    /// Per region that has at least one voter: one decision per configured node, from that
    /// region's eligible voters, or the global decision where none is eligible.
    pub regional: BTreeMap<Arc<str>, BTreeMap<NodeId, Decision>>,
    /// Ids of the probers fenced in this fold.
    pub fenced: BTreeSet<Arc<str>>,
    /// Disagreement with the unfenced global view, per prober measured (one that voted on at least
    /// `fence_min_nodes` judged nodes): share of those nodes, 0 to 1.
    pub disagreement: BTreeMap<Arc<str>, f64>,
}

/// Folds every prober's verdicts into the global and regional health views; see the module docs.
pub fn fold(input: &FoldInput) -> QuorumDecisions {
    let FoldInput { voters, votes, nodes, previous, previous_regional, now_ms, params } = *input;

    // One canonical ballot box per configured node; from here on vote order is gone.
    let no_votes = Vec::new();
    let ballots: BTreeMap<&NodeId, Vec<(usize, Verdict)>> =
        nodes.iter().map(|node| (node, ballots(votes.get(node).unwrap_or(&no_votes), voters.len()))).collect();

    let may_vote: Vec<bool> = voters.iter().map(|voter| voter.may_vote(now_ms, params)).collect();

    // Pass 1: unfenced quorum, only to measure disagreement.
    let unfenced: Vec<Option<Health>> =
        ballots.values().map(|ballot| Tally::of(ballot, voters, |i| may_vote[i]).health(params)).collect();
    let disagreement = disagreement(voters, &may_vote, ballots.values().zip(&unfenced), params);
    let fenced = fence(&disagreement, params);

    // Pass 2: the real views, without the fenced voters.
    let eligible: Vec<bool> =
        voters.iter().zip(&may_vote).map(|(voter, &may_vote)| may_vote && !fenced.contains(&voter.id)).collect();

    let global: BTreeMap<NodeId, Decision> = ballots
        .iter()
        .map(|(&node, ballot)| {
            let tally = Tally::of(ballot, voters, |i| eligible[i]);
            (node.clone(), decide(tally, previous.get(node), now_ms, params))
        })
        .collect();

    let regions: BTreeSet<&Arc<str>> = voters.iter().filter_map(|voter| voter.region.as_ref()).collect();
    let regional = regions
        .into_iter()
        .map(|region| {
            let previous_opt = previous_regional.get(region);
            let in_region = |i: usize| eligible[i] && voters[i].region.as_ref() == Some(region);
            let view = ballots
                .iter()
                .zip(global.values())
                .map(|((&node, ballot), global)| {
                    // Since-history: the region's own, else the global one for a first sighting.
                    let history = previous_opt.and_then(|view| view.get(node)).unwrap_or(global);
                    let tally = Tally::of(ballot, voters, in_region);
                    // A region with fewer eligible voters than `min_down_voters` could never say
                    // Down, only Up: its view would hide a global Down from its own clients. It
                    // takes the global decision instead.
                    let enough = tally.eligible_voters >= params.min_down_voters.max(1);
                    let decision = match tally.health(params).filter(|_| enough) {
                        Some(health) => tally.into_decision(health, Some(history), now_ms),
                        None => Decision { since_ms: since(global.health, Some(history), now_ms), ..global.clone() },
                    };
                    (node.clone(), decision)
                })
                .collect();
            (region.clone(), view)
        })
        .collect();

    QuorumDecisions { global, regional, fenced, disagreement }
}

impl Voter {
    /// Whether this voter may vote at all (everything but fencing and having a verdict).
    pub fn may_vote(&self, now_ms: u64, params: &QuorumParams) -> bool {
        self.live
            && !self.impaired
            && self.weight.is_finite()
            && self.weight > 0.0
            && now_ms.saturating_sub(self.last_seen_ms) <= params.stale_after_ms
    }
}

/// A node's votes with at most one verdict per voter (its newest), in voter order, indices valid.
fn ballots(votes: &[(usize, Verdict)], voter_count: usize) -> Vec<(usize, Verdict)> {
    let mut by_voter: BTreeMap<usize, Verdict> = BTreeMap::new();
    for &(index, verdict) in votes.iter().filter(|(index, _)| *index < voter_count) {
        by_voter
            .entry(index)
            .and_modify(|kept| {
                // Newest transition wins; ties broken by a total order so vote order never matters.
                let key = |v: &Verdict| (v.since_ms, !v.up, v.rtt_us, v.reason);
                if key(&verdict) > key(kept) {
                    *kept = verdict;
                }
            })
            .or_insert(verdict);
    }
    by_voter.into_iter().collect()
}

/// The numbers behind one quorum decision.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    down_weight: f64,
    eligible_weight: f64,
    down_voters: usize,
    eligible_voters: usize,
}

impl Tally {
    /// Sums the ballot over the voters `eligible` admits, in voter order.
    fn of(ballot: &[(usize, Verdict)], voters: &[Voter], eligible: impl Fn(usize) -> bool) -> Tally {
        let mut tally = Tally::default();
        for (index, verdict) in ballot.iter().filter(|(index, _)| eligible(*index)) {
            let weight = voters[*index].weight;
            tally.eligible_weight += weight;
            tally.eligible_voters += 1;
            if !verdict.up {
                tally.down_weight += weight;
                tally.down_voters += 1;
            }
        }
        tally
    }

    /// The quorum's health, or `None` when no voter is eligible.
    fn health(&self, params: &QuorumParams) -> Option<Health> {
        if self.eligible_voters == 0 {
            return None;
        }
        let enough_voters = self.down_voters >= params.min_down_voters.max(1);
        let enough_weight = self.down_weight / self.eligible_weight + SHARE_TOLERANCE >= params.down_quorum;
        Some(if enough_voters && enough_weight { Health::Down } else { Health::Up })
    }

    /// A decision reached by quorum at `now_ms`; `history` supplies `since_ms` if health is unchanged.
    fn into_decision(self, health: Health, history: Option<&Decision>, now_ms: u64) -> Decision {
        let reason = if health == Health::Down { DecisionReason::QuorumDown } else { DecisionReason::QuorumUp };
        self.decision(health, reason, Some(now_ms), history, now_ms)
    }

    /// A decision with these numbers; `history` supplies `since_ms` if health is unchanged.
    fn decision(
        self,
        health: Health,
        reason: DecisionReason,
        last_quorum_ms: Option<u64>,
        history: Option<&Decision>,
        now_ms: u64,
    ) -> Decision {
        Decision {
            health,
            reason,
            since_ms: since(health, history, now_ms),
            last_quorum_ms,
            down_weight: self.down_weight,
            eligible_weight: self.eligible_weight,
            down_voters: self.down_voters,
            eligible_voters: self.eligible_voters,
        }
    }
}

/// The global decision for one node: quorum if anyone is eligible, else hold or fail open.
fn decide(tally: Tally, previous: Option<&Decision>, now_ms: u64, params: &QuorumParams) -> Decision {
    if let Some(health) = tally.health(params) {
        return tally.into_decision(health, previous, now_ms);
    }
    // Nobody can vote: the last quorum's health is held for grace_ms, then the node fails open.
    match previous {
        Some(&Decision { health, last_quorum_ms: Some(last), .. })
            if health != Health::Unknown && now_ms.saturating_sub(last) < params.grace_ms =>
        {
            tally.decision(health, DecisionReason::NoVoters, Some(last), previous, now_ms)
        }
        Some(&Decision { last_quorum_ms: Some(last), .. }) => {
            tally.decision(Health::Unknown, DecisionReason::FailOpen, Some(last), previous, now_ms)
        }
        _ => tally.decision(Health::Unknown, DecisionReason::NeverSeen, None, previous, now_ms),
    }
}

/// `since_ms` of a decision with `health`: kept from `previous` if unchanged, else now.
fn since(health: Health, previous: Option<&Decision>, now_ms: u64) -> u64 {
    match previous {
        Some(previous) if previous.health == health => previous.since_ms,
        _ => now_ms,
    }
}

/// Per measured voter id, the share of the nodes it voted on where its vote differs from the
/// unfenced quorum's health (`judged`, `None` where nobody could vote).
fn disagreement<'b>(
    voters: &[Voter],
    may_vote: &[bool],
    judged: impl Iterator<Item = (&'b Vec<(usize, Verdict)>, &'b Option<Health>)>,
    params: &QuorumParams,
) -> BTreeMap<Arc<str>, f64> {
    let mut voted = vec![0usize; voters.len()];
    let mut differs = vec![0usize; voters.len()];
    for (ballot, health) in judged {
        let Some(health) = health else { continue };
        for (index, verdict) in ballot.iter().filter(|(index, _)| may_vote[*index]) {
            voted[*index] += 1;
            if verdict.up != (*health == Health::Up) {
                differs[*index] += 1;
            }
        }
    }
    let mut shares: BTreeMap<Arc<str>, f64> = BTreeMap::new();
    for (voter, (&voted, &differs)) in voters.iter().zip(voted.iter().zip(&differs)) {
        if voted >= params.fence_min_nodes.max(1) {
            let share = differs as f64 / voted as f64;
            let entry = shares.entry(voter.id.clone()).or_insert(share);
            *entry = entry.max(share);
        }
    }
    shares
}

/// The ids whose disagreement is above `max(fence_min_disagreement, fence_factor × median)`.
fn fence(disagreement: &BTreeMap<Arc<str>, f64>, params: &QuorumParams) -> BTreeSet<Arc<str>> {
    let mut sorted: Vec<f64> = disagreement.values().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => return BTreeSet::new(),
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    let threshold = params.fence_min_disagreement.max(params.fence_factor * median);
    disagreement.iter().filter(|&(_, &share)| share > threshold).map(|(id, _)| id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Reason;
    use proptest::prelude::*;

    const NOW: u64 = 1_000_000;

    fn params() -> QuorumParams {
        QuorumParams {
            down_quorum: 0.5,
            min_down_voters: 2,
            stale_after_ms: 10_000,
            grace_ms: 60_000,
            fence_min_disagreement: 0.3,
            fence_factor: 3.0,
            fence_min_nodes: 5,
        }
    }

    fn verdict(up: bool) -> Verdict {
        Verdict { up, since_ms: 1, rtt_us: 1000, reason: if up { Reason::Ok } else { Reason::Timeout } }
    }

    /// A cluster under test: voters, their votes and the configured nodes.
    struct Cluster {
        voters: Vec<Voter>,
        votes: BTreeMap<NodeId, Vec<(usize, Verdict)>>,
        nodes: Vec<NodeId>,
        params: QuorumParams,
    }

    impl Cluster {
        fn new() -> Cluster {
            Cluster { voters: Vec::new(), votes: BTreeMap::new(), nodes: Vec::new(), params: params() }
        }

        fn voter(&mut self, id: &str, region: Option<&str>, weight: f64) -> usize {
            self.voters.push(Voter {
                id: id.into(),
                region: region.map(Arc::from),
                weight,
                live: true,
                impaired: false,
                last_seen_ms: NOW,
            });
            self.voters.len() - 1
        }

        fn node(&mut self, node: &str) -> NodeId {
            let node = NodeId::from(node);
            if !self.nodes.contains(&node) {
                self.nodes.push(node.clone());
            }
            node
        }

        fn vote(&mut self, voter: usize, node: &str, up: bool) {
            let node = self.node(node);
            let ballot = self.votes.entry(node).or_default();
            ballot.retain(|(index, _)| *index != voter);
            ballot.push((voter, verdict(up)));
        }

        fn fold_after(&self, previous: &QuorumDecisions, now_ms: u64) -> QuorumDecisions {
            fold(&FoldInput {
                voters: &self.voters,
                votes: &self.votes,
                nodes: &self.nodes,
                previous: &previous.global,
                previous_regional: &previous.regional,
                now_ms,
                params: &self.params,
            })
        }

        fn fold(&self) -> QuorumDecisions {
            self.fold_after(&QuorumDecisions::default(), NOW)
        }
    }

    fn get<'o>(view: &'o BTreeMap<NodeId, Decision>, node: &str) -> &'o Decision {
        &view[&NodeId::from(node)]
    }

    /// Four equal voters, `downs` of them saying Down about `n`.
    fn four_voters(downs: usize) -> Cluster {
        let mut cluster = Cluster::new();
        for i in 0..4 {
            let voter = cluster.voter(&format!("p{i}"), None, 1.0);
            cluster.vote(voter, "n", i >= downs);
        }
        cluster
    }

    #[test]
    fn quorum_threshold_is_inclusive() {
        let one = four_voters(1).fold();
        let d = get(&one.global, "n");
        assert_eq!((d.health, d.reason), (Health::Up, DecisionReason::QuorumUp));
        assert_eq!((d.down_voters, d.eligible_voters, d.down_weight, d.eligible_weight), (1, 4, 1.0, 4.0));

        let two = four_voters(2).fold();
        let d = get(&two.global, "n");
        assert_eq!(
            (d.health, d.reason, d.since_ms, d.last_quorum_ms),
            (Health::Down, DecisionReason::QuorumDown, NOW, Some(NOW))
        );
    }

    #[test]
    fn quorum_is_weighted() {
        let mut cluster = Cluster::new();
        let heavy = cluster.voter("heavy", None, 3.0);
        let light: Vec<usize> = (0..3).map(|i| cluster.voter(&format!("light{i}"), None, 1.0)).collect();
        // Two light voters: 2 of 6 → Up despite two Down voters.
        cluster.vote(heavy, "n", true);
        cluster.vote(light[0], "n", false);
        cluster.vote(light[1], "n", false);
        cluster.vote(light[2], "n", true);
        assert_eq!(get(&cluster.fold().global, "n").health, Health::Up);
        // Heavy and one light: 4 of 6 → Down.
        cluster.vote(heavy, "n", false);
        cluster.vote(light[1], "n", true);
        assert_eq!(get(&cluster.fold().global, "n").health, Health::Down);
    }

    #[test]
    fn quorum_tolerates_float_rounding() {
        let mut cluster = Cluster::new();
        cluster.params.down_quorum = 0.3;
        cluster.params.min_down_voters = 1;
        let a = cluster.voter("a", None, 0.1);
        let b = cluster.voter("b", None, 0.2);
        let c = cluster.voter("c", None, 0.7);
        cluster.vote(a, "n", false);
        cluster.vote(b, "n", false);
        cluster.vote(c, "n", true);
        assert_eq!(get(&cluster.fold().global, "n").health, Health::Down);
    }

    #[test]
    fn min_down_voters_guards_the_share() {
        // Two voters, one Down: share 0.5 meets the quorum but one voter is not enough.
        let mut cluster = Cluster::new();
        let a = cluster.voter("a", None, 1.0);
        let b = cluster.voter("b", None, 1.0);
        cluster.vote(a, "n", false);
        cluster.vote(b, "n", true);
        assert_eq!(get(&cluster.fold().global, "n").health, Health::Up);
        cluster.params.min_down_voters = 1;
        assert_eq!(get(&cluster.fold().global, "n").health, Health::Down);
        // Zero is treated as one: nobody saying Down never makes a node Down, whatever the quorum.
        cluster.params.min_down_voters = 0;
        cluster.params.down_quorum = 1e-12;
        cluster.vote(a, "n", true);
        assert_eq!(get(&cluster.fold().global, "n").health, Health::Up);
    }

    #[test]
    fn a_single_heavy_prober_cannot_take_a_node_down() {
        let mut cluster = Cluster::new();
        let heavy = cluster.voter("heavy", None, 100.0);
        let other = cluster.voter("other", None, 1.0);
        cluster.vote(heavy, "n", false);
        cluster.vote(other, "n", true);
        assert_eq!(get(&cluster.fold().global, "n").health, Health::Up);
    }

    #[test]
    fn impaired_probers_abstain() {
        let mut cluster = Cluster::new();
        let ok = cluster.voter("ok", None, 1.0);
        for i in 0..3 {
            let sick = cluster.voter(&format!("sick{i}"), None, 1.0);
            cluster.voters[sick].impaired = true;
            cluster.vote(sick, "n", false);
        }
        cluster.vote(ok, "n", true);
        let d = get(&cluster.fold().global, "n").clone();
        assert_eq!((d.health, d.down_voters, d.eligible_voters), (Health::Up, 0, 1));
    }

    #[test]
    fn dead_and_weightless_probers_do_not_vote() {
        let mut cluster = Cluster::new();
        let ok = cluster.voter("ok", None, 1.0);
        let dead = cluster.voter("dead", None, 1.0);
        let zero = cluster.voter("zero", None, 0.0);
        let nan = cluster.voter("nan", None, f64::NAN);
        cluster.voters[dead].live = false;
        cluster.vote(ok, "n", true);
        for voter in [dead, zero, nan] {
            cluster.vote(voter, "n", false);
        }
        let d = get(&cluster.fold().global, "n").clone();
        assert_eq!((d.health, d.down_voters, d.eligible_voters, d.eligible_weight), (Health::Up, 0, 1, 1.0));
    }

    #[test]
    fn stale_verdicts_are_ignored() {
        let mut cluster = Cluster::new();
        let fresh = cluster.voter("fresh", None, 1.0);
        let edge = cluster.voter("edge", None, 1.0);
        let stale = cluster.voter("stale", None, 1.0);
        let future = cluster.voter("future", None, 1.0);
        cluster.voters[edge].last_seen_ms = NOW - 10_000;
        cluster.voters[stale].last_seen_ms = NOW - 10_001;
        cluster.voters[future].last_seen_ms = NOW + 5_000;
        for voter in [fresh, edge, stale, future] {
            cluster.vote(voter, "n", voter == fresh);
        }
        let d = get(&cluster.fold().global, "n").clone();
        // fresh (up), edge (down, exactly stale_after old) and future (down, clock skew) count.
        assert_eq!((d.health, d.down_voters, d.eligible_voters), (Health::Down, 2, 3));
    }

    #[test]
    fn never_judged_nodes_are_unknown() {
        let mut cluster = Cluster::new();
        let a = cluster.voter("a", None, 1.0);
        cluster.vote(a, "judged", true);
        cluster.node("unjudged");
        let out = cluster.fold();
        let d = get(&out.global, "unjudged");
        assert_eq!((d.health, d.reason, d.last_quorum_ms), (Health::Unknown, DecisionReason::NeverSeen, None));
        assert!(d.health.is_usable());
        // Still never seen later, however long nobody votes.
        let later = cluster.fold_after(&out, NOW + 10 * cluster.params.grace_ms);
        assert_eq!(get(&later.global, "unjudged").reason, DecisionReason::NeverSeen);
    }

    #[test]
    fn grace_then_fail_open() {
        let mut cluster = four_voters(2);
        let grace = cluster.params.grace_ms;
        let down = cluster.fold();
        assert_eq!(get(&down.global, "n").health, Health::Down);

        // Every prober goes quiet: the Down verdict is held, with its since_ms, until grace is over.
        for voter in &mut cluster.voters {
            voter.live = false;
        }
        let held = cluster.fold_after(&down, NOW + 1_000);
        let d = get(&held.global, "n");
        assert_eq!(
            (d.health, d.reason, d.since_ms, d.last_quorum_ms),
            (Health::Down, DecisionReason::NoVoters, NOW, Some(NOW))
        );
        assert_eq!((d.eligible_voters, d.down_voters, d.eligible_weight), (0, 0, 0.0));

        let still = cluster.fold_after(&held, NOW + grace - 1);
        assert_eq!(
            (get(&still.global, "n").health, get(&still.global, "n").reason),
            (Health::Down, DecisionReason::NoVoters)
        );

        let open = cluster.fold_after(&still, NOW + grace);
        let d = get(&open.global, "n");
        assert_eq!(
            (d.health, d.reason, d.since_ms, d.last_quorum_ms),
            (Health::Unknown, DecisionReason::FailOpen, NOW + grace, Some(NOW))
        );
        assert!(d.health.is_usable());

        let later = cluster.fold_after(&open, NOW + 2 * grace);
        let d = get(&later.global, "n");
        assert_eq!((d.health, d.reason, d.since_ms), (Health::Unknown, DecisionReason::FailOpen, NOW + grace));

        // The probers come back and see the node up.
        for voter in &mut cluster.voters {
            voter.live = true;
            voter.last_seen_ms = NOW + 3 * grace;
        }
        for i in 0..4 {
            cluster.vote(i, "n", true);
        }
        let back = cluster.fold_after(&later, NOW + 3 * grace);
        let d = get(&back.global, "n");
        assert_eq!(
            (d.health, d.reason, d.since_ms, d.last_quorum_ms),
            (Health::Up, DecisionReason::QuorumUp, NOW + 3 * grace, Some(NOW + 3 * grace))
        );
    }

    #[test]
    fn since_ms_changes_only_with_health() {
        let mut cluster = four_voters(0);
        let first = cluster.fold();
        let second = cluster.fold_after(&first, NOW + 100);
        assert_eq!(get(&second.global, "n").since_ms, NOW);
        cluster.vote(0, "n", false);
        cluster.vote(1, "n", false);
        let third = cluster.fold_after(&second, NOW + 200);
        assert_eq!(get(&third.global, "n").since_ms, NOW + 200);
        let fourth = cluster.fold_after(&third, NOW + 300);
        assert_eq!(
            (get(&fourth.global, "n").since_ms, get(&fourth.global, "n").last_quorum_ms),
            (NOW + 200, Some(NOW + 300))
        );
    }

    #[test]
    fn restored_view_is_held_for_a_grace_period_after_start() {
        let cluster = four_voters(2);
        let persisted = cluster.fold();
        // Restart an hour later with no prober heard from yet.
        let start = NOW + 3_600_000;
        let mut quiet = Cluster::new();
        quiet.nodes = cluster.nodes.clone();
        let cold = quiet.fold_after(&persisted, start);
        assert_eq!(get(&cold.global, "n").reason, DecisionReason::FailOpen);

        let restored = QuorumDecisions {
            global: persisted.global.iter().map(|(n, d)| (n.clone(), d.clone().restored(start))).collect(),
            ..QuorumDecisions::default()
        };
        let warm = quiet.fold_after(&restored, start + 1_000);
        let d = get(&warm.global, "n");
        assert_eq!((d.health, d.reason, d.since_ms), (Health::Down, DecisionReason::NoVoters, NOW));
        let later = quiet.fold_after(&warm, start + quiet.params.grace_ms);
        assert_eq!(get(&later.global, "n").reason, DecisionReason::FailOpen);
    }

    #[test]
    fn a_flapping_prober_never_takes_a_node_down_alone() {
        let mut cluster = Cluster::new();
        let flappy = cluster.voter("flappy", None, 1.0);
        let steady: Vec<usize> = (0..2).map(|i| cluster.voter(&format!("steady{i}"), None, 1.0)).collect();
        for &voter in &steady {
            cluster.vote(voter, "n", true);
        }
        let mut out = QuorumDecisions::default();
        for step in 0..20u64 {
            cluster.vote(flappy, "n", step % 2 == 1);
            // Steady voters drop out in turns: flappy is sometimes half, or all, of the electorate.
            for (i, &voter) in steady.iter().enumerate() {
                cluster.voters[voter].live = !(step / 2 + i as u64).is_multiple_of(3);
            }
            out = cluster.fold_after(&out, NOW + step * 1_000);
            assert_ne!(get(&out.global, "n").health, Health::Down, "step {step}");
        }
    }

    /// `n` nodes, probers `good0..` seeing `down_nodes` down, plus one prober with its own opinion.
    fn fencing_cluster(good: usize, nodes: usize, down_nodes: usize, odd_up: bool) -> Cluster {
        let mut cluster = Cluster::new();
        let voters: Vec<usize> = (0..good).map(|i| cluster.voter(&format!("good{i}"), None, 1.0)).collect();
        let odd = cluster.voter("odd", None, 1.0);
        for n in 0..nodes {
            let node = format!("n{n}");
            for &voter in &voters {
                cluster.vote(voter, &node, n >= down_nodes);
            }
            cluster.vote(odd, &node, odd_up);
        }
        cluster
    }

    #[test]
    fn a_prober_seeing_everything_down_is_fenced() {
        let cluster = fencing_cluster(4, 10, 1, false);
        let out = cluster.fold();
        assert_eq!(out.fenced, BTreeSet::from([Arc::from("odd")]));
        assert_eq!(out.disagreement.get("odd"), Some(&0.9));
        assert_eq!(out.disagreement.get("good0"), Some(&0.0));
        assert_eq!(get(&out.global, "n0").health, Health::Down);
        let d = get(&out.global, "n5");
        assert_eq!((d.health, d.eligible_voters, d.down_voters), (Health::Up, 4, 0));
    }

    #[test]
    fn fencing_changes_the_verdict_it_would_have_swung() {
        // a sees n3 down (its own path), b sees it up; the sick prober says everything is down.
        let mut cluster = Cluster::new();
        let a = cluster.voter("a", None, 1.0);
        let b = cluster.voter("b", None, 1.0);
        let sick = cluster.voter("sick", None, 1.0);
        for n in 0..10 {
            let node = format!("n{n}");
            cluster.vote(a, &node, n != 3);
            cluster.vote(b, &node, true);
            cluster.vote(sick, &node, false);
        }
        let out = cluster.fold();
        // Unfenced, n3 had two Down votes of three: a and sick agreed with it, b did not.
        assert_eq!(out.disagreement.get("sick"), Some(&0.9));
        assert_eq!(out.disagreement.get("b"), Some(&0.1));
        assert_eq!(out.fenced, BTreeSet::from([Arc::from("sick")]));
        let d = get(&out.global, "n3");
        assert_eq!((d.health, d.down_voters, d.eligible_voters), (Health::Up, 1, 2));
    }

    #[test]
    fn a_prober_seeing_everything_up_during_outages_is_fenced() {
        let out = fencing_cluster(4, 10, 4, true).fold();
        assert_eq!(out.fenced, BTreeSet::from([Arc::from("odd")]));
        assert_eq!(out.disagreement.get("odd"), Some(&0.4));
        assert_eq!(get(&out.global, "n0").eligible_voters, 4);
    }

    #[test]
    fn fencing_needs_enough_judged_nodes_and_peers() {
        // Four nodes < fence_min_nodes: nobody measured.
        let out = fencing_cluster(4, 4, 0, false).fold();
        assert!(out.disagreement.is_empty() && out.fenced.is_empty());
        assert_eq!(get(&out.global, "n0").eligible_voters, 5);

        // Two probers who disagree on everything: nobody can tell who is right.
        let out = fencing_cluster(1, 10, 0, false).fold();
        assert_eq!(out.disagreement.len(), 2);
        assert!(out.fenced.is_empty());

        // Mild disagreement stays under the floor.
        let out = fencing_cluster(4, 10, 0, true).fold();
        assert!(out.fenced.is_empty());
    }

    #[test]
    fn regions_see_down_from_here() {
        let mut cluster = Cluster::new();
        let eu: Vec<usize> = (0..2).map(|i| cluster.voter(&format!("eu{i}"), Some("eu"), 1.0)).collect();
        let us: Vec<usize> = (0..3).map(|i| cluster.voter(&format!("us{i}"), Some("us"), 1.0)).collect();
        let global_only = cluster.voter("nowhere", None, 1.0);
        for &voter in &eu {
            cluster.vote(voter, "n", false);
        }
        for &voter in us.iter().chain([&global_only]) {
            cluster.vote(voter, "n", true);
        }
        // Only the us probers and the region-less one judge m.
        for &voter in us.iter().chain([&global_only]) {
            cluster.vote(voter, "m", true);
        }
        // A region whose only prober is dead still gets a view.
        let asia = cluster.voter("asia0", Some("asia"), 1.0);
        cluster.voters[asia].live = false;
        cluster.vote(asia, "n", false);

        let out = cluster.fold();
        let g = get(&out.global, "n");
        assert_eq!((g.health, g.down_voters, g.eligible_voters), (Health::Up, 2, 6));
        assert_eq!(out.regional.keys().map(|r| &**r).collect::<Vec<_>>(), ["asia", "eu", "us"]);

        let eu_n = get(&out.regional["eu"], "n");
        assert_eq!(
            (eu_n.health, eu_n.reason, eu_n.down_voters, eu_n.eligible_voters),
            (Health::Down, DecisionReason::QuorumDown, 2, 2)
        );
        assert_eq!(eu_n.since_ms, NOW);
        assert_eq!(get(&out.regional["us"], "n").health, Health::Up);
        // No eligible voter in the region: the global decision, whole.
        assert_eq!(get(&out.regional["eu"], "m"), get(&out.global, "m"));
        assert_eq!(get(&out.regional["asia"], "n"), g);

        // Regional since_ms follows the regional history, not the global one.
        let next = cluster.fold_after(&out, NOW + 5_000);
        assert_eq!(get(&next.regional["eu"], "n").since_ms, NOW);
        assert_eq!(get(&next.regional["us"], "n").since_ms, NOW);
    }

    #[test]
    fn a_region_too_small_to_say_down_takes_the_global_decision() {
        // One eligible prober in "apac" (min_down_voters = 2): its Up must not override the
        // global Down for apac's clients.
        let mut cluster = Cluster::new();
        for (id, region) in [("eu0", "eu"), ("eu1", "eu"), ("apac0", "apac")] {
            let v = cluster.voter(id, Some(region), 1.0);
            cluster.vote(v, "n", false);
        }
        let out = cluster.fold();
        assert_eq!(get(&out.global, "n").health, Health::Down);
        assert_eq!(get(&out.regional["apac"], "n").health, Health::Down, "{:?}", out.regional["apac"]);
        assert_eq!(get(&out.regional["eu"], "n").health, Health::Down);
    }

    #[test]
    fn regional_since_inherits_global_history_on_first_sight() {
        let mut cluster = four_voters(0);
        let first = cluster.fold();
        cluster.voters[0].region = Some("eu".into());
        let second = cluster.fold_after(&first, NOW + 1_000);
        assert_eq!(get(&second.regional["eu"], "n").since_ms, NOW);
    }

    #[test]
    fn malformed_votes_are_ignored_deterministically() {
        let mut cluster = four_voters(0);
        // Out-of-range voter index and a node that is not configured.
        cluster.votes.entry("n".into()).or_default().push((99, verdict(false)));
        cluster.votes.insert("ghost".into(), vec![(0, verdict(false))]);
        // Voter 0 listed twice: the newer (since_ms 5) Down verdict wins over the older Up one.
        let newer = Verdict { since_ms: 5, ..verdict(false) };
        cluster.votes.entry("n".into()).or_default().push((0, newer));
        cluster.votes.entry("n".into()).or_default().push((1, newer));
        let out = cluster.fold();
        assert_eq!(out.global.len(), 1);
        let d = get(&out.global, "n");
        assert_eq!((d.health, d.down_voters, d.eligible_voters), (Health::Down, 2, 4));
    }

    #[test]
    fn reason_labels_are_snake_case() {
        let labels = [
            DecisionReason::QuorumDown,
            DecisionReason::QuorumUp,
            DecisionReason::NoVoters,
            DecisionReason::FailOpen,
            DecisionReason::NeverSeen,
        ]
        .map(DecisionReason::as_str);
        assert_eq!(labels, ["quorum_down", "quorum_up", "no_voters", "fail_open", "never_seen"]);
    }

    // ---- properties ----

    /// Random voters, votes, nodes, params and previous views.
    #[derive(Debug, Clone)]
    struct Case {
        voters: Vec<Voter>,
        votes: BTreeMap<NodeId, Vec<(usize, Verdict)>>,
        nodes: Vec<NodeId>,
        previous: BTreeMap<NodeId, Decision>,
        params: QuorumParams,
    }

    impl Case {
        fn input<'a>(
            &'a self,
            votes: &'a BTreeMap<NodeId, Vec<(usize, Verdict)>>,
            empty: &'a BTreeMap<Arc<str>, BTreeMap<NodeId, Decision>>,
        ) -> FoldInput<'a> {
            FoldInput {
                voters: &self.voters,
                votes,
                nodes: &self.nodes,
                previous: &self.previous,
                previous_regional: empty,
                now_ms: NOW,
                params: &self.params,
            }
        }
    }

    fn any_voter() -> impl Strategy<Value = Voter> {
        (
            0..8u8,
            prop_oneof![Just(None), Just(Some("eu")), Just(Some("us"))],
            prop_oneof![Just(1.0), Just(0.5), Just(2.0), 0.1f64..5.0],
            prop::bool::weighted(0.85),
            prop::bool::weighted(0.1),
            0..15_000u64,
        )
            .prop_map(|(id, region, weight, live, impaired, age)| Voter {
                id: format!("p{id}").into(),
                region: region.map(Arc::from),
                weight,
                live,
                impaired,
                last_seen_ms: NOW - age,
            })
    }

    fn any_decision() -> impl Strategy<Value = Decision> {
        (prop_oneof![Just(Health::Up), Just(Health::Down), Just(Health::Unknown)], prop::option::of(NOW - 100_000..NOW))
            .prop_map(|(health, last_quorum_ms)| Decision {
                health,
                reason: DecisionReason::QuorumUp,
                since_ms: 7,
                last_quorum_ms,
                down_weight: 0.0,
                eligible_weight: 0.0,
                down_voters: 0,
                eligible_voters: 0,
            })
    }

    fn any_case() -> impl Strategy<Value = Case> {
        (
            prop::collection::vec(any_voter(), 1..8),
            1..10usize,
            (prop_oneof![Just(0.5), Just(1.0), Just(0.34), 0.01f64..=1.0], 0..5usize, 0..6usize),
        )
            .prop_flat_map(|(voters, node_count, (down_quorum, min_down_voters, fence_min_nodes))| {
                let nodes: Vec<NodeId> = (0..node_count).map(|n| NodeId::from(format!("n{n}"))).collect();
                let index = 0..voters.len() + 1; // one past the end: out of range on purpose
                let vote = (index, any::<bool>(), 0..4u64)
                    .prop_map(|(i, up, since_ms)| (i, Verdict { up, since_ms, ..verdict(up) }));
                let votes = prop::collection::btree_map(
                    (0..node_count + 1).prop_map(|n| NodeId::from(format!("n{n}"))),
                    prop::collection::vec(vote, 0..12),
                    0..node_count + 2,
                );
                let previous = prop::collection::btree_map(
                    (0..node_count).prop_map(|n| NodeId::from(format!("n{n}"))),
                    any_decision(),
                    0..node_count + 1,
                );
                let params = QuorumParams { down_quorum, min_down_voters, fence_min_nodes, ..params() };
                (Just(voters), votes, Just(nodes), previous, Just(params))
            })
            .prop_map(|(voters, votes, nodes, previous, params)| Case {
                voters,
                votes,
                nodes,
                previous,
                params,
            })
    }

    /// A case plus the same votes with every node's list shuffled.
    fn any_case_and_shuffle() -> impl Strategy<Value = (Case, BTreeMap<NodeId, Vec<(usize, Verdict)>>)> {
        any_case().prop_flat_map(|case| {
            let shuffled: Vec<_> = case
                .votes
                .iter()
                .map(|(node, ballot)| (Just(node.clone()), Just(ballot.clone()).prop_shuffle()))
                .collect();
            (Just(case), shuffled.prop_map(|pairs| pairs.into_iter().collect()))
        })
    }

    proptest! {
        #[test]
        fn vote_order_does_not_matter((case, shuffled) in any_case_and_shuffle()) {
            let empty = BTreeMap::new();
            let a = fold(&case.input(&case.votes, &empty));
            let b = fold(&case.input(&shuffled, &empty));
            prop_assert_eq!(a, b);
        }

        #[test]
        fn never_down_without_enough_down_votes(case in any_case()) {
            let empty = BTreeMap::new();
            let out = fold(&case.input(&case.votes, &empty));
            let min = case.params.min_down_voters.max(1);
            let configured: BTreeSet<&NodeId> = case.nodes.iter().collect();
            prop_assert_eq!(out.global.keys().collect::<BTreeSet<_>>(), configured);
            let views = std::iter::once(&out.global).chain(out.regional.values());
            for view in views {
                prop_assert_eq!(view.len(), out.global.len());
                for (node, d) in view {
                    // Distinct voters with a Down verdict for the node at all, eligible or not.
                    let raw_down: BTreeSet<usize> = case.votes.get(node).into_iter().flatten()
                        .filter(|(i, v)| !v.up && *i < case.voters.len()).map(|(i, _)| *i).collect();
                    prop_assert!(d.down_voters <= d.eligible_voters);
                    if d.health == Health::Down {
                        match d.reason {
                            DecisionReason::QuorumDown => {
                                prop_assert!(d.down_voters >= min, "{:?}", d);
                                prop_assert!(d.down_voters <= raw_down.len(), "{:?}", d);
                            }
                            DecisionReason::NoVoters => {
                                prop_assert_eq!(d.eligible_voters, 0);
                                prop_assert_eq!(case.previous.get(node).map(|p| p.health), Some(Health::Down));
                            }
                            other => prop_assert!(false, "down with reason {:?}", other),
                        }
                    }
                }
            }
            for id in &out.fenced {
                prop_assert!(out.disagreement.contains_key(id));
            }
            // The median keeps fencing a minority affair (fence_factor is 3 here).
            prop_assert!(out.fenced.len() * 2 <= out.disagreement.len());
        }
    }
}
