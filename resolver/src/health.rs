//! The cluster's health view as the resolver uses it: the quorum decisions (global and per
//! region), the operators' drains, and their persistence across restarts.
//!
//! The view is computed elsewhere (the quorum fold over gossip) and handed to
//! [`crate::state::Shared::set_view`], which rebuilds the engine. This module owns the data and
//! how a region's health is read from it; it does no I/O except [`ServedHealth::load`] and
//! [`ServedHealth::save`].
//!
//! The saved view is not trusted: [`ServedHealth::load`] reads only a regular file of at most
//! [`MAX_FILE_BYTES`] (never blocking on a FIFO, see [`geolb_member::statefile`]), and
//! [`ServedHealth::retain_configured`] drops what the config no longer names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use geolb_common::quorum::Decision;
use geolb_common::{Health, HealthLookup, NodeId};
use serde::{Deserialize, Serialize};

/// Largest `view.json` read at start: 32 MiB. A decision takes about 200 bytes and the view
/// holds one per node globally and one per node in each region with probers: 2,000 nodes in 10
/// regions are about 4.4 MB. A larger file is not read (logged), and the resolver starts without
/// a saved view, as on a first start.
pub const MAX_FILE_BYTES: u64 = 32 << 20;

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
    /// restarted resolver serves what it last knew, not "all up"). Something other than a
    /// regular file, or a file over [`MAX_FILE_BYTES`], is an `InvalidData` error naming the
    /// path, and is not read.
    pub fn load(path: &Path, now_ms: u64) -> std::io::Result<ServedHealth> {
        let bytes = geolb_member::statefile::read(path, MAX_FILE_BYTES)?;
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

    /// Keeps what `config` names: the decisions and drains of its nodes, and the regional views
    /// of the regions its PoPs are in (a prober's region is its PoP's, or the PoP's id). Returns
    /// how many decisions, drains and regions it dropped.
    pub fn retain_configured(&mut self, config: &geolb_config::Config) -> usize {
        let nodes: BTreeSet<&str> = config.nodes.iter().map(|n| n.id.as_str()).collect();
        let regions: BTreeSet<&str> =
            config.pops.iter().map(|p| p.region.as_deref().unwrap_or(p.id.as_str())).collect();
        let count = |v: &ServedHealth| {
            v.global.len() + v.drained.len() + v.regional.len() + v.regional.values().map(BTreeMap::len).sum::<usize>()
        };
        let before = count(self);
        self.global.retain(|n, _| nodes.contains(n.as_str()));
        self.drained.retain(|n| nodes.contains(n.as_str()));
        self.regional.retain(|r, _| regions.contains(&**r));
        for decisions in self.regional.values_mut() {
            decisions.retain(|n, _| nodes.contains(n.as_str()));
        }
        before - count(self)
    }

    /// Saves the view atomically (write to a temporary file, then rename over).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        geolb_member::statefile::replace(path, &bytes)
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

    #[test]
    fn only_configured_nodes_and_regions_are_kept() {
        let config = geolb_config::Config::for_test();
        let node = config.nodes[0].id.clone();
        let region: Arc<str> = config.pops[0].region.clone().unwrap_or_else(|| config.pops[0].id.to_string()).into();
        let mut view = ServedHealth::default();
        for n in [node.clone(), NodeId::from("gone")] {
            view.global.insert(n.clone(), decision(Health::Down));
            view.drained.insert(n);
        }
        let regional = view.global.clone();
        view.regional.insert(region.clone(), regional.clone());
        view.regional.insert("no-such-region".into(), regional);
        // 2 decisions + 2 drains + 2 regions of 2 decisions each, half of it gone.
        assert_eq!(view.retain_configured(&config), 1 + 1 + 1 + 2 + 1);
        assert_eq!(view.global.keys().collect::<Vec<_>>(), [&node]);
        assert_eq!(view.drained.iter().collect::<Vec<_>>(), [&node]);
        assert_eq!(view.regional.keys().collect::<Vec<_>>(), [&region]);
        assert_eq!(view.regional[&region].keys().collect::<Vec<_>>(), [&node]);
    }

    #[test]
    fn a_view_over_the_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.json");
        std::fs::write(&path, vec![b' '; usize::try_from(MAX_FILE_BYTES).unwrap() + 1]).unwrap();
        let err = ServedHealth::load(&path, 1).unwrap_err();
        assert!(err.to_string().contains("over the 33554432-byte limit"), "{err}");
        // A decision as saved: well under the 200 bytes the limit is sized for.
        let one = serde_json::to_vec(&BTreeMap::from([(NodeId::from("fra-1"), decision(Health::Up))])).unwrap();
        assert!(one.len() < 200, "{}", one.len());
    }

    #[test]
    fn a_fifo_for_view_json_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.json");
        assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(ServedHealth::load(&path, 1).map_err(|e| e.to_string()));
        });
        let loaded = rx.recv_timeout(std::time::Duration::from_secs(3)).expect("loading a FIFO view.json blocked");
        let err = loaded.unwrap_err();
        assert!(err.contains("view.json") && err.contains("not a regular file"), "{err}");
    }
}
