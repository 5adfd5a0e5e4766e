//! The cluster's health view as the resolver uses it: the quorum decisions (global and per
//! region), the operators' drains, and their persistence across restarts.
//!
//! The view is computed elsewhere (the quorum fold over gossip) and handed to
//! [`crate::state::Shared::set_view`], which rebuilds the engine. This module owns the data and
//! how a region's health is read from it; it does no I/O except [`ServedHealth::load`] and
//! [`ServedHealth::save`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use geolb_common::quorum::Decision;
use geolb_common::{Health, HealthLookup, NodeId};
use serde::{Deserialize, Serialize};

/// Every decision the resolver answers from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServedHealth {
    /// Decisions of all eligible probers.
    pub global: BTreeMap<NodeId, Decision>,
    /// Decisions of each region's own probers ("down from here"), every node present.
    pub regional: BTreeMap<Arc<str>, BTreeMap<NodeId, Decision>>,
    /// Nodes an operator took out of rotation.
    pub drained: BTreeSet<NodeId>,
    /// Unix ms the view was computed.
    pub computed_ms: u64,
}

/// One region's (or the global) health, with drains applied.
#[derive(Debug, Clone, Copy)]
pub struct RegionHealth<'v> {
    decisions: &'v BTreeMap<NodeId, Decision>,
    drained: &'v BTreeSet<NodeId>,
}

impl HealthLookup for RegionHealth<'_> {
    fn health(&self, node: &NodeId) -> Health {
        self.decisions.get(node).map_or(Health::Unknown, |d| d.health)
    }

    fn drained(&self, node: &NodeId) -> bool {
        self.drained.contains(node)
    }
}

impl ServedHealth {
    /// The global health.
    pub fn global(&self) -> RegionHealth<'_> {
        RegionHealth { decisions: &self.global, drained: &self.drained }
    }

    /// A region's health; the global one for a region without its own view.
    pub fn region(&self, region: &str) -> RegionHealth<'_> {
        RegionHealth { decisions: self.regional.get(region).unwrap_or(&self.global), drained: &self.drained }
    }

    /// Loads a saved view, restarting every held decision's grace period at `now_ms` (a
    /// restarted resolver serves what it last knew, not "all up").
    pub fn load(path: &Path, now_ms: u64) -> std::io::Result<ServedHealth> {
        let bytes = std::fs::read(path)?;
        let mut view: ServedHealth =
            serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let restore = |m: &mut BTreeMap<NodeId, Decision>| {
            for d in m.values_mut() {
                *d = d.clone().restored(now_ms);
            }
        };
        restore(&mut view.global);
        view.regional.values_mut().for_each(restore);
        Ok(view)
    }

    /// Saves the view atomically (write to a temporary file, then rename over).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geolb_common::quorum::DecisionReason;

    fn decision(health: Health) -> Decision {
        Decision {
            health,
            reason: DecisionReason::QuorumDown,
            since_ms: 1,
            last_quorum_ms: Some(1),
            down_weight: 2.0,
            eligible_weight: 3.0,
            down_voters: 2,
            eligible_voters: 3,
        }
    }

    #[test]
    fn regions_fall_back_to_global_and_drains_apply_everywhere() {
        let mut view = ServedHealth::default();
        view.global.insert("a".into(), decision(Health::Up));
        view.regional.insert("eu".into(), BTreeMap::from([(NodeId::from("a"), decision(Health::Down))]));
        view.drained.insert("b".into());
        assert_eq!(view.global().health(&"a".into()), Health::Up);
        assert_eq!(view.region("eu").health(&"a".into()), Health::Down);
        assert_eq!(view.region("apac").health(&"a".into()), Health::Up);
        assert_eq!(view.region("eu").health(&"zzz".into()), Health::Unknown);
        assert!(view.region("apac").drained(&"b".into()));
    }

    #[test]
    fn save_and_load_restart_the_grace_period() {
        let dir = std::env::temp_dir().join(format!("geolb-view-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("view.json");
        let mut view = ServedHealth { computed_ms: 5, ..ServedHealth::default() };
        view.global.insert("a".into(), decision(Health::Down));
        view.save(&path).unwrap();
        let loaded = ServedHealth::load(&path, 1_000).unwrap();
        assert_eq!(loaded.global[&NodeId::from("a")].health, Health::Down);
        assert_eq!(loaded.global[&NodeId::from("a")].last_quorum_ms, Some(1_000));
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(ServedHealth::load(&path, 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
