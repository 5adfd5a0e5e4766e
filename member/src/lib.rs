//! geolb-member: what every cluster member runs, prober or resolver.
//!
//! # Layout
//! * [`gossip`]: chitchat with every datagram authenticated by the cluster key, the key schema,
//!   and an in-memory network for simulations.
//! * [`join()`]: joining the cluster of a config as a prober or an observer.
//! * [`cluster`]: folding the gossip into one quorum-weighted health view, and following it.
//! * [`drains`]: operators' drains, saved in the member's locked state directory.
//! * [`admin`]: the admin API (`/healthz`, `/readyz`, `/metrics`, `/api/v1/state`, drains).
//! * [`listener`]: the accept loop of the HTTP listeners: timeouts, the connection cap.
//! * [`metrics`]: every metric name, and the families read at scrape time.
//! * [`process`]: command-line arguments, logging, the async runtime and signals.
//! * [`versions`]: the fleet document's versions in `state_dir` (the embedded store).
//! * [`statefile`]: opening and reading `state_dir`'s files without trusting them (regular
//!   files only, never blocking on a FIFO, bounded in size).
//! * `fuzz` (feature `fuzz`): the gossip transport's receive and send paths, for `fuzz/`.
//!
//! It knows neither program: the prober's checks and the resolver's answers stand on it.

pub mod admin;
pub mod cluster;
pub mod drains;
pub mod fleet;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod gossip;
pub mod listener;
pub mod metrics;
pub mod process;
pub mod statefile;
pub mod versions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use geolb_config::Config;

use crate::drains::Drains;
use crate::gossip::keys::Role;
use crate::gossip::transport::UdpDatagrams;
use crate::gossip::{GossipConfig, GossipHandle, spawn_gossip};

/// Milliseconds since the Unix epoch on the system clock (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a member could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The config has no `[cluster]`.
    #[error("the config has no [cluster] table: a cluster member needs one")]
    NoCluster,
    /// Gossip could not start.
    #[error(transparent)]
    Gossip(#[from] gossip::GossipError),
    /// Another process uses the state directory.
    #[error(transparent)]
    StateDir(#[from] drains::StateDirInUse),
}

/// Joins the gossip cluster of `config` as `role`, publishing the member's saved drains again.
pub async fn join(
    config: &Config,
    role: Role,
    id: &str,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    region: String,
    drains: &Drains,
) -> Result<Arc<GossipHandle>, JoinError> {
    let cluster = config.cluster.clone().ok_or(JoinError::NoCluster)?;
    let mut gc = GossipConfig::new(id, listen, cluster.id, cluster.key, role, region);
    gc.advertise = advertise.unwrap_or(listen);
    gc.seeds = cluster.seeds;
    gc.gossip_interval = cluster.gossip_interval;
    let gossip = Arc::new(spawn_gossip(gc, UdpDatagrams).await?);
    // Only what the config still names goes out again: every member holds this member's state,
    // so drains of nodes long gone would cost the whole cluster. A member still waiting for its
    // fleet document knows no node yet; it keeps (and publishes) what it saved, up to the cap.
    let pruned = drains.prune(config);
    if pruned != drains::Pruned::default() {
        tracing::warn!(
            drains = pruned.drains,
            overrides = pruned.overrides,
            over_cap = pruned.over_cap,
            "left out {} saved drains and {} saved overrides of nodes and PoPs the config does not name, and {} beyond the newest {} of each; they are not published",
            pruned.drains,
            pruned.overrides,
            pruned.over_cap,
            drains::MAX_ENTRIES
        );
    }
    let done = gossip.republish(&drains.entries(), &drains.overrides()).await;
    for (target, e) in done.refused.iter().take(3) {
        tracing::warn!(target = %target, error = %e, "cannot republish a saved drain or override");
    }
    if done.refused.len() > 3 {
        tracing::warn!(
            refused = done.refused.len(),
            "{} saved drains and overrides not republished",
            done.refused.len()
        );
    }
    tracing::info!(addr = %gossip.listen_addr(), "gossip listening on {}", gossip.listen_addr());
    Ok(gossip)
}
