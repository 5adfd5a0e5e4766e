//! Gossip: every member's verdicts, freshness, impaired flag and drains, shared cluster-wide.
//!
//! The protocol is chitchat 0.11.2 (scuttlebutt anti-entropy plus a phi-accrual failure
//! detector), pinned because it is the last version whose message encoding is public. geolb adds:
//!
//! - [`transport`]: every datagram is framed and authenticated with the cluster key (HMAC-SHA256,
//!   timestamp, sender address, replay cache); [`frame`] is the pure codec and documents the wire
//!   format byte by byte. A forged "node down" would black-hole traffic, so nothing unsigned is
//!   ever handed to chitchat.
//! - [`keys`]: the key/value schema (`v:<node>`, `imp`, `role`, `region`,
//!   `drain:<node>`), its typed writers and the reader that turns chitchat's state into a plain
//!   [`GossipSnapshot`].
//! - [`memnet`]: an in-memory datagram network for deterministic simulations.
//! - this module: [`spawn_gossip`] → [`GossipHandle`], the only way the rest of the prober (and the
//!   resolver, as an observer) talks to gossip.
//!
//! # Layout
//! The gossip *state machine* is chitchat's (`Chitchat::process_message`), run by chitchat's
//! *I/O loop* (`spawn_chitchat`), over our *transport*. This module owns neither: it configures
//! them, writes our keys, and reads views. It takes chitchat's lock only to copy data in or out,
//! never across an await of its own.
//!
//! # Operating notes (chitchat 0.11.2)
//! - The failure detector's `initial_interval` is set to the gossip interval; the default (5 s)
//!   would judge a new peer against a 5 s prior.
//! - Values are capped at [`keys::MAX_VALUE_LEN`] bytes: a key/value that does not fit one
//!   datagram is never sent and blocks every later key of its member for good.
//! - `advertise` must be the address peers see as the datagrams' source: frames whose sender is
//!   not their source are dropped. Bind `listen` to that address rather than a wildcard on
//!   multi-homed hosts.
//! - Watch [`GossipHandle::termination`] and exit when it completes, so systemd restarts the
//!   process after a gossip-task panic or a broken socket.

pub(crate) mod frame;
pub mod keys;
#[cfg(test)]
mod memnet;
pub(crate) mod transport;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ListenerHandle, NodeState, spawn_chitchat,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use self::frame::{FrameKey, KeyTooShort, MIN_KEY_LEN};
pub(crate) use self::keys::{GossipSnapshot, KeyError, Role};
#[cfg(test)]
pub(crate) use self::memnet::MemNetwork;
pub(crate) use self::transport::{AuthStats, AuthTransport, DatagramTransport};

/// Default time between gossip rounds (matches the config's default).
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(500);
/// Default time a deleted key's tombstone is kept before garbage collection.
pub const DEFAULT_MARKED_FOR_DELETION_GRACE: Duration = Duration::from_secs(60 * 60);
/// Default time a dead member stays in the state before it is forgotten. chitchat's default is
/// 24 h; every restart of a member leaves its old generation behind in every digest for half of
/// this, so keep it short.
pub const DEFAULT_DEAD_NODE_GRACE: Duration = Duration::from_secs(60 * 60);
/// Shortest accepted gossip interval.
pub const MIN_GOSSIP_INTERVAL: Duration = Duration::from_millis(10);

/// How this member joins the gossip cluster.
#[derive(Clone)]
pub struct GossipConfig {
    /// Unique member id (the prober's or resolver's id).
    pub node_id: String,
    /// Incarnation number, increasing across restarts: the startup time in unix ms.
    pub generation: u64,
    /// UDP address to bind (port 0 picks one).
    pub listen: SocketAddr,
    /// Address peers reach us at and see as our datagrams' source; port 0 means the bound port.
    pub advertise: SocketAddr,
    /// Members to join through: `ip:port` or `host:port` (re-resolved every 60 s by chitchat).
    pub seeds: Vec<String>,
    /// Cluster name; members of another cluster are refused by chitchat.
    pub cluster_id: String,
    /// Shared cluster key, ≥ 32 bytes ([`parse_key`] reads hex or base64). Never printed.
    pub key: Vec<u8>,
    /// Time between gossip rounds; also the failure detector's prior interval.
    pub gossip_interval: Duration,
    /// How long a deleted key's tombstone is kept (and gossiped) before it is collected.
    pub marked_for_deletion_grace: Duration,
    /// How long a dead member is kept before it is forgotten.
    pub dead_node_grace: Duration,
    /// Prober or observer.
    pub role: Role,
    /// Region name, published under `region`.
    pub region: String,
}

impl fmt::Debug for GossipConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipConfig")
            .field("node_id", &self.node_id)
            .field("generation", &self.generation)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("seeds", &self.seeds)
            .field("cluster_id", &self.cluster_id)
            .field("key", &format_args!("<{} bytes redacted>", self.key.len()))
            .field("gossip_interval", &self.gossip_interval)
            .field("marked_for_deletion_grace", &self.marked_for_deletion_grace)
            .field("dead_node_grace", &self.dead_node_grace)
            .field("role", &self.role)
            .field("region", &self.region)
            .finish()
    }
}

impl GossipConfig {
    /// A config with the defaults: generation = now, advertise = listen, no seeds, default
    /// interval and grace periods.
    pub fn new(
        node_id: impl Into<String>,
        listen: SocketAddr,
        cluster_id: impl Into<String>,
        key: Vec<u8>,
        role: Role,
        region: impl Into<String>,
    ) -> GossipConfig {
        GossipConfig {
            node_id: node_id.into(),
            generation: crate::unix_ms(),
            listen,
            advertise: listen,
            seeds: Vec::new(),
            cluster_id: cluster_id.into(),
            key,
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            marked_for_deletion_grace: DEFAULT_MARKED_FOR_DELETION_GRACE,
            dead_node_grace: DEFAULT_DEAD_NODE_GRACE,
            role,
            region: region.into(),
        }
    }

    /// Checks everything that can be checked before binding; returns the initial key/values.
    fn validate(&self) -> Result<Vec<(String, String)>, GossipError> {
        FrameKey::new(&self.key)?;
        keys::check_name("node id", &self.node_id)?;
        let initial = keys::initial_key_values(self.role, &self.region)?;
        if self.cluster_id.is_empty() {
            return Err(GossipError::Config("cluster id is empty".into()));
        }
        if self.gossip_interval < MIN_GOSSIP_INTERVAL {
            return Err(GossipError::Config(format!(
                "gossip interval {:?} is below {MIN_GOSSIP_INTERVAL:?}",
                self.gossip_interval
            )));
        }
        if self.advertise.ip().is_unspecified() {
            return Err(GossipError::Config(format!(
                "advertise address {} is unspecified: set the address peers reach this member at",
                self.advertise
            )));
        }
        Ok(initial)
    }
}

/// Reads a cluster key written as hex or base64 (standard or URL-safe, padding optional);
/// surrounding whitespace is ignored. The key must be at least 32 bytes.
pub fn parse_key(text: &str) -> Result<Vec<u8>, GossipError> {
    let text = text.trim();
    let key = decode_hex(text).or_else(|| decode_base64(text)).ok_or(GossipError::KeyEncoding)?;
    if key.len() < MIN_KEY_LEN {
        return Err(KeyTooShort { len: key.len() }.into());
    }
    Ok(key)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // One lone character (6 bits) cannot end a base64 text.
    (bits < 6).then_some(out)
}

/// Errors of the gossip component.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// The UDP socket could not be bound.
    #[error("failed to bind gossip socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The cluster key is too short.
    #[error(transparent)]
    Key(#[from] KeyTooShort),
    /// The cluster key text is neither hex nor base64.
    #[error("cluster key is neither hex nor base64 (openssl rand -hex 32)")]
    KeyEncoding,
    /// A key or value the schema refuses (too long, bad node id).
    #[error(transparent)]
    Schema(#[from] KeyError),
    /// An unusable setting.
    #[error("invalid gossip config: {0}")]
    Config(String),
    /// chitchat refused to start.
    #[error("failed to start gossip: {0}")]
    Start(String),
    /// The gossip task ended with an error or panicked.
    #[error("gossip task stopped: {0}")]
    Stopped(String),
}

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running gossip member. Dropping it stops gossip; [`GossipHandle::shutdown`] waits for it.
pub struct GossipHandle {
    chitchat: Arc<ChitchatHandle>,
    /// Wakes [`push_changes`]: this member wrote a key.
    push: Arc<tokio::sync::Notify>,
    _pusher: AbortOnDrop,
    node_id: String,
    generation: u64,
    listen: SocketAddr,
    advertise: SocketAddr,
    stats: Arc<AuthStats>,
    changes: watch::Receiver<()>,
    notify: Arc<watch::Sender<()>>,
    _key_listener: ListenerHandle,
    _liveness_forwarder: AbortOnDrop,
}

impl fmt::Debug for GossipHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipHandle")
            .field("node_id", &self.node_id)
            .field("generation", &self.generation)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// Binds the gossip socket on `network` (use [`UdpDatagrams`] in production), wraps it in the
/// authenticated transport and starts chitchat. The member starts with `role`, `region` and, for
/// a prober, `imp = "0"`.
pub async fn spawn_gossip(config: GossipConfig, network: impl DatagramTransport) -> Result<GossipHandle, GossipError> {
    spawn_with_datagram_bound(config, network, frame::MAX_DATAGRAM).await
}

/// [`spawn_gossip`] with a smaller datagram bound (simulations use it to force fragmentation).
async fn spawn_with_datagram_bound(
    config: GossipConfig,
    network: impl DatagramTransport,
    max_datagram: usize,
) -> Result<GossipHandle, GossipError> {
    let initial_key_values = config.validate()?;
    let transport =
        AuthTransport::new(network, &config.key)?.with_advertise(config.advertise).with_max_datagram(max_datagram);
    let stats = transport.stats();
    let socket =
        transport.bind(config.listen).await.map_err(|source| GossipError::Bind { addr: config.listen, source })?;
    let listen = socket.local_addr();
    let advertise = socket.sender();
    let chitchat_config = ChitchatConfig {
        chitchat_id: ChitchatId::new(config.node_id.as_str(), config.generation, advertise),
        cluster_id: config.cluster_id.clone(),
        gossip_interval: config.gossip_interval,
        listen_addr: listen,
        seed_nodes: config.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            initial_interval: config.gossip_interval,
            dead_node_grace_period: config.dead_node_grace,
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: config.marked_for_deletion_grace,
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let chitchat = spawn_chitchat(chitchat_config, initial_key_values, &transport::PreBound::new(socket))
        .await
        .map_err(|err| GossipError::Start(format!("{err:#}")))?;

    let (changes_tx, changes) = watch::channel(());
    let changes_tx = Arc::new(changes_tx);
    let notify = Arc::clone(&changes_tx);
    let (key_listener, live_nodes) = chitchat
        .with_chitchat(|c| {
            // Runs under chitchat's lock on every key change (ours and received): keep it trivial.
            let notify = Arc::clone(&notify);
            (c.subscribe_event("", move |_| notify.send_replace(())), c.live_nodes_watcher())
        })
        .await;
    let forwarder = tokio::spawn(forward_liveness(live_nodes, Arc::clone(&changes_tx)));
    let chitchat = Arc::new(chitchat);
    let push = Arc::new(tokio::sync::Notify::new());
    let pusher = tokio::spawn(push_changes(Arc::clone(&chitchat), Arc::clone(&push)));
    Ok(GossipHandle {
        chitchat,
        push,
        _pusher: AbortOnDrop(pusher),
        node_id: config.node_id,
        generation: config.generation,
        listen,
        advertise,
        stats,
        changes,
        notify: changes_tx,
        _key_listener: key_listener,
        _liveness_forwarder: AbortOnDrop(forwarder),
    })
}

/// A burst of writes (a PoP's verdicts flipping together) goes out in one push.
const PUSH_COALESCE: Duration = Duration::from_millis(2);
/// Most peers one push reaches; the others hear it in the next gossip rounds.
const MAX_PUSH_PEERS: usize = 128;

/// Pushes this member's own changes (a verdict flip, a drain, an override, a new fleet
/// document version) to its live peers when they happen: a gossip exchange with each, started
/// at once instead of at the next round (chitchat's `gossip(addr)`: our digest goes out, the
/// peer answers with what it lacks, and our reply carries the change). Rounds stay as they
/// are, so the steady traffic does not change.
async fn push_changes(chitchat: Arc<ChitchatHandle>, wake: Arc<tokio::sync::Notify>) {
    loop {
        wake.notified().await;
        tokio::time::sleep(PUSH_COALESCE).await;
        let peers: Vec<SocketAddr> = chitchat
            .with_chitchat(|c| {
                let me = c.self_chitchat_id().clone();
                c.live_nodes().filter(|id| **id != me).map(|id| id.gossip_advertise_addr).take(MAX_PUSH_PEERS).collect()
            })
            .await;
        for addr in peers {
            if chitchat.gossip(addr).is_err() {
                return;
            }
        }
    }
}

/// Turns chitchat's live-set changes (members joining, dying, or changing keys) into our
/// change notification.
async fn forward_liveness(
    mut live_nodes: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    changes: Arc<watch::Sender<()>>,
) {
    while live_nodes.changed().await.is_ok() {
        changes.send_replace(());
    }
}

impl GossipHandle {
    /// Our member id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Our generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The address the socket is bound to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The address we advertise (and sign as sender); give it to others as a seed.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise
    }

    /// Publishes our verdict on `node` (≤ 64 bytes). A no-op returning `false` if unchanged.
    pub async fn set_verdict(&self, node: &str, encoded: &str) -> Result<bool, GossipError> {
        let changed = self.chitchat.with_chitchat(|c| keys::write_verdict(c.self_node_state(), node, encoded)).await?;
        Ok(self.pushed(changed))
    }

    /// Withdraws our verdict on `node` (it left the config). Returns whether there was one.
    pub async fn remove_verdict(&self, node: &str) -> bool {
        let removed = self.chitchat.with_chitchat(|c| keys::remove_verdict(c.self_node_state(), node)).await;
        if removed {
            // chitchat's key listeners do not fire for deletions.
            self.notify.send_replace(());
        }
        self.pushed(removed)
    }

    /// Publishes whether we are impaired. Returns whether it changed.
    pub async fn set_impaired(&self, impaired: bool) -> bool {
        let changed = self.chitchat.with_chitchat(|c| keys::write_impaired(c.self_node_state(), impaired)).await;
        self.pushed(changed)
    }

    /// Publishes an operator drain (`drained = true`) or undrain of `node`, stamped `now_ms`.
    /// Readers take the newest stamp per node across all members.
    pub async fn set_drain(&self, node: &str, drained: bool, now_ms: u64) -> Result<bool, GossipError> {
        let changed =
            self.chitchat.with_chitchat(|c| keys::write_drain(c.self_node_state(), node, drained, now_ms)).await?;
        Ok(self.pushed(changed))
    }

    /// Publishes an operator override. Readers take the newest per target across all members.
    pub async fn set_override(&self, o: &keys::Override) -> Result<bool, GossipError> {
        let changed = self.chitchat.with_chitchat(|c| keys::write_override(c.self_node_state(), o)).await?;
        Ok(self.pushed(changed))
    }

    /// Publishes saved drains (node → (unix ms, drained)) and overrides again, as at start, in
    /// one pass under chitchat's lock (the state's size is counted once). What the schema or the
    /// cap on this member's state refuses is in [`keys::Republished::refused`].
    pub async fn republish(
        &self,
        drains: &BTreeMap<String, (u64, bool)>,
        overrides: &[keys::Override],
    ) -> keys::Republished {
        let done = self
            .chitchat
            .with_chitchat(|c| {
                let drains = drains.iter().map(|(node, (at_ms, drained))| (node.as_str(), *drained, *at_ms));
                keys::republish(c.self_node_state(), drains, overrides)
            })
            .await;
        self.pushed(done.written > 0);
        done
    }

    /// Publishes the fleet document versions this member holds (`head`) and has applied;
    /// pushed to the peers at once when `push` (a version written here: the others fetch it from
    /// this member, and would otherwise hear of it only at the next gossip rounds). Returns
    /// whether either changed.
    pub async fn set_config_versions(
        &self,
        head: Option<&keys::ConfigVersion>,
        applied: Option<&keys::ConfigVersion>,
        push: bool,
    ) -> Result<bool, GossipError> {
        let (head, applied) = (head.map(keys::ConfigVersion::encode), applied.map(keys::ConfigVersion::encode));
        let changed = self
            .chitchat
            .with_chitchat(|c| {
                let state = c.self_node_state();
                let mut changed = false;
                for (key, value) in [(keys::CONFIG_HEAD_KEY, &head), (keys::CONFIG_APPLIED_KEY, &applied)] {
                    if let Some(value) = value {
                        changed |= keys::set_checked(state, key, value)?;
                    }
                }
                Ok::<_, keys::KeyError>(changed)
            })
            .await?;
        Ok(if push { self.pushed(changed) } else { changed })
    }

    /// Wakes the pusher when this member's state changed; returns `changed`.
    fn pushed(&self, changed: bool) -> bool {
        if changed {
            self.push.notify_one();
        }
        changed
    }

    /// Publishes where this member's admin API is, for peers to fetch documents from.
    pub async fn set_admin_addr(&self, addr: SocketAddr) -> Result<bool, GossipError> {
        Ok(self
            .chitchat
            .with_chitchat(|c| keys::set_checked(c.self_node_state(), keys::ADMIN_KEY, &addr.to_string()))
            .await?)
    }

    /// A copy of the cluster state as plain data. Holds chitchat's lock only while copying.
    pub async fn view(&self) -> GossipSnapshot {
        self.chitchat
            .with_chitchat(|c| {
                let live: HashSet<&ChitchatId> = c.live_nodes().collect();
                GossipSnapshot::from_node_states(c.node_states().iter().map(|(id, state)| (state, live.contains(id))))
            })
            .await
    }

    /// Notified (coalesced) whenever any member's keys change or the live set changes; call
    /// [`GossipHandle::view`] after `changed()`. Never holds a value. Key writes are signalled
    /// at once; deletions received from peers (chitchat's listeners skip tombstones) within one
    /// gossip round, through chitchat's live-nodes watcher.
    pub fn watch(&self) -> watch::Receiver<()> {
        self.changes.clone()
    }

    /// Transport counters (accepted, rejected by reason, bytes).
    pub fn stats(&self) -> Arc<AuthStats> {
        Arc::clone(&self.stats)
    }

    /// Completes when the gossip task ends: `Ok` after a shutdown, `Err` if it failed or
    /// panicked. The process should exit on `Err` so it is restarted.
    pub fn termination(&self) -> impl Future<Output = Result<(), GossipError>> + Send + 'static {
        let terminated = self.chitchat.termination_watcher();
        async move { terminated.await.map_err(|err| GossipError::Stopped(format!("{err:#}"))) }
    }

    /// Stops gossip and waits for the task to end.
    pub async fn shutdown(self) -> Result<(), GossipError> {
        let terminated = self.chitchat.termination_watcher();
        self.chitchat.initiate_shutdown().map_err(|err| GossipError::Stopped(format!("{err:#}")))?;
        terminated.await.map_err(|err| GossipError::Stopped(format!("{err:#}")))
    }
}

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod udp_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let key = parse_key(&format!("  {hex}\n")).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!((key[0], key[1], key[31]), (0x00, 0x11, 0xff));
        // The same 32 bytes in base64, with and without padding, standard and URL-safe.
        let b64 = "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=";
        assert_eq!(parse_key(b64).unwrap(), key);
        assert_eq!(parse_key(b64.trim_end_matches('=')).unwrap(), key);
        assert_eq!(parse_key(&b64.replace('/', "_")).unwrap(), key);
        assert!(matches!(parse_key("00ff"), Err(GossipError::Key(KeyTooShort { len: 2 }))));
        assert!(matches!(parse_key("not a key!"), Err(GossipError::KeyEncoding)));
        assert!(matches!(parse_key(""), Err(GossipError::KeyEncoding)));
        assert!(matches!(parse_key("A"), Err(GossipError::KeyEncoding)));
    }

    #[test]
    fn config_debug_redacts_the_key() {
        let mut config =
            GossipConfig::new("p1", "127.0.0.1:0".parse().unwrap(), "c", vec![0xab; 32], Role::Prober, "eu");
        config.generation = 0;
        let text = format!("{config:?}");
        assert!(text.contains("32 bytes redacted"), "{text}");
        assert!(!text.contains("171"), "{text}");
    }
}
