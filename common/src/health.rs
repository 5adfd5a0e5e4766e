//! Node health as a reader of the cluster view sees it.
//!
//! The prober side decides verdicts; this module only says what a reader may do with one. The
//! resolver asks a [`HealthLookup`] per node and treats anything but [`Health::Down`] as usable:
//! an unknown node fails open, because a black-holed name hurts more than a possibly-dead node.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// The cluster's verdict on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Checks pass: serve it.
    Up,
    /// A quorum of probers sees it failing: do not serve it while another node is usable.
    Down,
    /// No eligible verdict: served (fail open).
    #[default]
    Unknown,
}

impl Health {
    /// Whether a node with this verdict may be handed out.
    pub fn is_usable(self) -> bool {
        !matches!(self, Health::Down)
    }
}

/// Anything that can tell a node's current health.
pub trait HealthLookup {
    /// The verdict for `node`; [`Health::Unknown`] when the view has none.
    fn health(&self, node: &NodeId) -> Health;

    /// Whether an operator drained `node`: it is then never answered, not even by an all-down
    /// policy (unlike a Down node, which `fail_open` may still hand out).
    fn drained(&self, _node: &NodeId) -> bool {
        false
    }
}

/// A view with no verdicts: every node is [`Health::Unknown`] and so usable.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoVerdicts;

impl HealthLookup for NoVerdicts {
    fn health(&self, _node: &NodeId) -> Health {
        Health::Unknown
    }
}

impl HealthLookup for std::collections::HashMap<NodeId, Health> {
    fn health(&self, node: &NodeId) -> Health {
        self.get(node).copied().unwrap_or_default()
    }
}
