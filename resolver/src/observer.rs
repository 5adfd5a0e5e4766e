//! The resolver as a gossip observer: it checks nothing, reads every prober's verdicts from the
//! gossip, folds them into one quorum view (global and per region), applies drains, and hands
//! the result to [`Shared::set_view`] whenever a node's health or drain changes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use geolb_common::NodeId;
use geolb_member::cluster::{ClusterHealth, Follower};
use geolb_member::gossip::keys::Role;
use geolb_member::unix_ms;
use tokio_util::sync::CancellationToken;

use crate::health::ServedHealth;
use crate::state::Shared;

/// The view is refolded at once when the gossip changes (a verdict, a drain, a member's
/// liveness), and else this often, for what moves with time alone (staleness, grace periods,
/// judged in seconds). A fold copies and reads every verdict of every prober: 16 probers × 2000
/// nodes cost ~10 % of a core at 4 folds per second.
pub(crate) const REFOLD: Duration = Duration::from_secs(1);

/// Folds the gossip into the resolver's served health until `shutdown`. `config` follows the
/// resolver's reloads, for the admin API.
pub(crate) async fn observe(
    shared: Arc<Shared>,
    mut follower: Follower,
    config: Arc<ArcSwap<geolb_config::Config>>,
    shutdown: CancellationToken,
) {
    // Start from the restored view so its grace periods carry on.
    let restored = shared.view();
    {
        let mut f = follower.health();
        f.decisions.global = restored.global.clone();
        f.decisions.regional = restored.regional.clone();
    }
    // Until the gossip has brought at least one live prober, the drains are the saved ones: the
    // first folds after a restart see no member and would otherwise undrain everything.
    let mut synced = false;
    loop {
        // Fold with the config of the moment, and keep the admin API's in step with reloads
        // (an `Arc`, no copy).
        let current_config = || {
            let current = shared.config();
            config.store(current.clone());
            current
        };
        let Some((snapshot, mut next)) = follower.next(current_config, &shutdown).await else { return };
        synced |= snapshot.members.iter().any(|m| m.live && m.role == Some(Role::Prober));
        if !synced {
            next.drained = restored.drained.clone();
        }
        let current = shared.view();
        if differs(&current, &next) {
            let new_view = ServedHealth {
                global: next.decisions.global.clone(),
                regional: next.decisions.regional.clone(),
                drained: next.drained.clone(),
                computed_ms: unix_ms(),
            };
            log_changes(&current, &new_view);
            let shared = shared.clone();
            // Rebuilding the engine blocks for a while with many nodes: off the runtime.
            if let Err(e) = tokio::task::spawn_blocking(move || shared.set_view(new_view)).await {
                tracing::error!(error = %e, "publishing the health view failed");
            }
        }
        follower.publish(next);
    }
}

/// Whether anything that changes answers differs: a node's health, globally or in a region, or
/// the drained set.
fn differs(current: &ServedHealth, next: &ClusterHealth) -> bool {
    let health = |m: &std::collections::BTreeMap<NodeId, geolb_common::quorum::Decision>| {
        m.iter().map(|(n, d)| (n.clone(), d.health)).collect::<Vec<_>>()
    };
    health(&current.global) != health(&next.decisions.global)
        || current.regional.len() != next.decisions.regional.len()
        || current
            .regional
            .iter()
            .zip(&next.decisions.regional)
            .any(|((ra, a), (rb, b))| ra != rb || health(a) != health(b))
        || current.drained != next.drained
}

fn log_changes(old: &ServedHealth, new: &ServedHealth) {
    for (node, d) in &new.global {
        if old.global.get(node).map(|o| o.health) != Some(d.health) {
            tracing::info!(node = %node, health = ?d.health, reason = d.reason.as_str(), down = d.down_voters, eligible = d.eligible_voters, "node health changed");
        }
    }
    let drained: BTreeSet<_> = new.drained.symmetric_difference(&old.drained).collect();
    for node in drained {
        tracing::info!(node = %node, drained = new.drained.contains(node), "drain changed");
    }
}
