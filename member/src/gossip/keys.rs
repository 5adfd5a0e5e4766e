//! The key/value schema of a member's chitchat state, typed writers for it, and the reader that
//! turns chitchat's node states into a plain [`GossipSnapshot`]. Pure: no locks, no I/O, no clock.
//!
//! | key | value | written |
//! |---|---|---|
//! | `v:<node_id>` | the prober's verdict on that node: an opaque string the caller encodes, ≤ 64 bytes | only when it changes |
//! | `imp` | `"1"` impaired (abstains), `"0"` not | when it changes |
//! | `role` | `"prober"` or `"observer"` | at start |
//! | `region` | region name | at start |
//! | `drain:<node_id>` | `"<unix ms>,<1 drained / 0 undrained>"`: an operator override | by whichever member the operator asked |
//! | `ovr:node:<id>`, `ovr:pop:<id>` | `"<unix ms>,<up/down/drain/clear>,<until unix ms or 0>,<by>,<why>"`: an operator override ([`Override`]) | by whichever member the operator asked |
//! | `cfg` | `"<version>:<sha256>"`: the newest fleet document this member holds (and serves to peers) | when it changes |
//! | `cfga` | `"<version>:<sha256>"`: the fleet document this member has applied | when it changes |
//! | `adm` | the admin API's address, `ip:port`: where peers fetch documents | at start |
//!
//! Every value goes through one guard, [`set_checked`], that refuses values over
//! [`MAX_VALUE_LEN`] bytes: chitchat 0.11.2 never sends a key/value that does not fit in one
//! datagram, and every later key of that member then stays blocked for good. So the state holds
//! verdicts and versions, never documents.
//!
//! Freshness is not a key: readers judge a member's verdicts as fresh as its chitchat heartbeat,
//! which rises every gossip round and travels in every digest. A key rewritten every few seconds
//! would bump the member's version, so every reader would pull a delta, and chitchat would copy
//! every live member's whole state for its live-nodes watcher, each round. A prober whose checks
//! stall says so by turning impaired instead.
//!
//! Readers: a missing or unparsable `imp` reads as impaired (a member that has not said it is
//! healthy does not vote Down); drains are merged across all members, newest timestamp per node
//! wins (a tie goes to drained), so the result does not depend on the order gossip arrived in.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use chitchat::{ChitchatId, ClusterStateSnapshot, NodeState};

/// Prefix of verdict keys: `v:<node_id>`.
pub const VERDICT_PREFIX: &str = "v:";
/// Prefix of drain keys: `drain:<node_id>`.
pub const DRAIN_PREFIX: &str = "drain:";
/// Prefix of operator override keys: `ovr:node:<id>`, `ovr:pop:<id>`.
pub const OVERRIDE_PREFIX: &str = "ovr:";
/// Longest reason an override may give.
pub const MAX_WHY_LEN: usize = 200;
/// Key of the impaired flag.
pub const IMPAIRED_KEY: &str = "imp";
/// Key of the member's role.
pub const ROLE_KEY: &str = "role";
/// Key of the member's region.
pub const REGION_KEY: &str = "region";
/// Key of the newest fleet document version this member holds.
pub const CONFIG_HEAD_KEY: &str = "cfg";
/// Key of the fleet document version this member has applied.
pub const CONFIG_APPLIED_KEY: &str = "cfga";
/// Key of the member's admin API address.
pub const ADMIN_KEY: &str = "adm";
/// Longest value any key may hold.
pub const MAX_VALUE_LEN: usize = 512;
/// Longest encoded verdict.
pub const MAX_VERDICT_LEN: usize = 64;
/// Longest node id (in a key) or region name.
pub const MAX_NAME_LEN: usize = 128;

/// What a member does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Checks nodes and publishes verdicts (`geolb-prober`).
    Prober,
    /// Only reads the cluster state (`geolb-resolver`).
    Observer,
}

impl Role {
    /// The value stored under [`ROLE_KEY`].
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Prober => "prober",
            Role::Observer => "observer",
        }
    }

    /// Parses a stored role.
    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "prober" => Some(Role::Prober),
            "observer" => Some(Role::Observer),
            _ => None,
        }
    }
}

/// A write refused by the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A node id or region that is empty, too long, or has control characters.
    #[error("invalid {what} {value:?}: must be 1..={MAX_NAME_LEN} bytes without control characters")]
    BadName {
        /// What the name is ("node id", "region").
        what: &'static str,
        /// The refused name.
        value: String,
    },
    /// A value longer than its limit.
    #[error("value for gossip key {key:?} is {len} bytes; the limit is {max}")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's length.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
}

/// Checks a node id or region: 1..=[`MAX_NAME_LEN`] bytes, no control characters.
pub fn check_name(what: &'static str, value: &str) -> Result<(), KeyError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN || value.chars().any(char::is_control) {
        return Err(KeyError::BadName { what, value: value.to_owned() });
    }
    Ok(())
}

/// `v:<node>`.
pub fn verdict_key(node: &str) -> String {
    format!("{VERDICT_PREFIX}{node}")
}

/// `drain:<node>`.
pub fn drain_key(node: &str) -> String {
    format!("{DRAIN_PREFIX}{node}")
}

/// The single guard every write goes through: refuses values over [`MAX_VALUE_LEN`], writes only
/// if the value differs. Returns whether it wrote.
pub fn set_checked(state: &mut NodeState, key: &str, value: &str) -> Result<bool, KeyError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(KeyError::ValueTooLarge { key: key.to_owned(), len: value.len(), max: MAX_VALUE_LEN });
    }
    if state.get(key) == Some(value) {
        return Ok(false);
    }
    state.set(key, value);
    Ok(true)
}

/// Writes this prober's verdict on `node` if it changed.
pub fn write_verdict(state: &mut NodeState, node: &str, encoded: &str) -> Result<bool, KeyError> {
    check_name("node id", node)?;
    let key = verdict_key(node);
    if encoded.len() > MAX_VERDICT_LEN {
        return Err(KeyError::ValueTooLarge { key, len: encoded.len(), max: MAX_VERDICT_LEN });
    }
    set_checked(state, &key, encoded)
}

/// Deletes this prober's verdict on `node` (a node removed from the config). Returns whether
/// there was one. The tombstone is gossiped, then collected after the deletion grace period.
pub fn remove_verdict(state: &mut NodeState, node: &str) -> bool {
    let key = verdict_key(node);
    if state.get(&key).is_none() {
        return false;
    }
    state.delete(&key);
    true
}

/// Writes the impaired flag if it changed.
pub fn write_impaired(state: &mut NodeState, impaired: bool) -> bool {
    set_checked(state, IMPAIRED_KEY, if impaired { "1" } else { "0" }).unwrap_or(false)
}

/// Writes an operator drain (or undrain) of `node` at `now_ms`.
pub fn write_drain(state: &mut NodeState, node: &str, drained: bool, now_ms: u64) -> Result<bool, KeyError> {
    check_name("node id", node)?;
    set_checked(state, &drain_key(node), &format!("{now_ms},{}", u8::from(drained)))
}

/// The keys a member starts with: its role and region, and for a prober `imp = "0"`.
pub fn initial_key_values(role: Role, region: &str) -> Result<Vec<(String, String)>, KeyError> {
    check_name("region", region)?;
    let mut kvs = vec![(ROLE_KEY.to_owned(), role.as_str().to_owned()), (REGION_KEY.to_owned(), region.to_owned())];
    if role == Role::Prober {
        kvs.push((IMPAIRED_KEY.to_owned(), "0".to_owned()));
    }
    Ok(kvs)
}

/// A fleet document version as gossiped: its number and its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigVersion {
    /// From 1.
    pub version: u64,
    /// 64 lower-case hex digits.
    pub hash: String,
}

impl ConfigVersion {
    /// `"<version>:<hash>"`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.version, self.hash)
    }

    /// Parses `"<version>:<hash>"`; `None` unless the hash is 64 lower-case hex digits.
    pub fn parse(value: &str) -> Option<ConfigVersion> {
        let (version, hash) = value.split_once(':')?;
        let ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return None;
        }
        Some(ConfigVersion { version: version.parse().ok()?, hash: hash.to_owned() })
    }

    /// Whether every member should prefer this version to `other`: a higher number, or under
    /// one number the smaller hash (the rule of [`crate::versions::wins`]).
    pub fn beats(&self, other: &ConfigVersion) -> bool {
        self.version > other.version
            || (self.version == other.version && crate::versions::wins(&self.hash, &other.hash))
    }
}

/// What an operator override applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum OverrideTarget {
    /// One node.
    Node(String),
    /// Every node of a PoP.
    Pop(String),
}

impl OverrideTarget {
    /// `node:<id>` or `pop:<id>`, as in the key and the API.
    pub fn encode(&self) -> String {
        match self {
            OverrideTarget::Node(id) => format!("node:{id}"),
            OverrideTarget::Pop(id) => format!("pop:{id}"),
        }
    }

    /// Parses `node:<id>` or `pop:<id>`.
    pub fn parse(text: &str) -> Option<OverrideTarget> {
        let (kind, id) = text.split_once(':')?;
        check_name("override target", id).ok()?;
        match kind {
            "node" => Some(OverrideTarget::Node(id.to_owned())),
            "pop" => Some(OverrideTarget::Pop(id.to_owned())),
            _ => None,
        }
    }
}

/// What an operator override does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideAction {
    /// The node is Up whatever the probers say (a node only).
    Up,
    /// The node is Down whatever the probers say (a node only).
    Down,
    /// No new answers go to the node, or to every node of the PoP.
    Drain,
    /// Ends the override of the target.
    Clear,
}

impl OverrideAction {
    /// The name used in the value and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideAction::Up => "up",
            OverrideAction::Down => "down",
            OverrideAction::Drain => "drain",
            OverrideAction::Clear => "clear",
        }
    }

    fn parse(text: &str) -> Option<OverrideAction> {
        [OverrideAction::Up, OverrideAction::Down, OverrideAction::Drain, OverrideAction::Clear]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

/// An operator override: who set what on which target, why, and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Override {
    /// The node or PoP.
    pub target: OverrideTarget,
    /// What it does.
    pub action: OverrideAction,
    /// When it was set, unix ms (the newest per target wins across members).
    pub at_ms: u64,
    /// When it ends by itself, unix ms.
    pub until_ms: Option<u64>,
    /// The token name that set it.
    pub by: String,
    /// The reason given.
    pub why: String,
}

impl Override {
    /// The gossip key.
    pub fn key(&self) -> String {
        format!("{OVERRIDE_PREFIX}{}", self.target.encode())
    }

    /// The gossip value `"<at>,<action>,<until or 0>,<by>,<why>"`.
    pub fn encode(&self) -> String {
        format!("{},{},{},{},{}", self.at_ms, self.action.as_str(), self.until_ms.unwrap_or(0), self.by, self.why)
    }

    /// Reads a key and value back.
    pub fn parse(key: &str, value: &str) -> Option<Override> {
        let target = OverrideTarget::parse(key.strip_prefix(OVERRIDE_PREFIX)?)?;
        let mut parts = value.splitn(5, ',');
        let at_ms = parts.next()?.parse().ok()?;
        let action = OverrideAction::parse(parts.next()?)?;
        let until_ms = match parts.next()?.parse::<u64>().ok()? {
            0 => None,
            t => Some(t),
        };
        let by = parts.next()?.to_owned();
        let why = parts.next()?.to_owned();
        Some(Override { target, action, at_ms, until_ms, by, why })
    }

    /// Whether it acts at `now_ms`: not a clear, and not expired.
    pub fn active(&self, now_ms: u64) -> bool {
        self.action != OverrideAction::Clear && self.until_ms.is_none_or(|u| now_ms < u)
    }
}

/// Writes an operator override into this member's state.
pub fn write_override(state: &mut NodeState, o: &Override) -> Result<bool, KeyError> {
    if o.why.chars().count() > MAX_WHY_LEN || o.why.chars().any(char::is_control) || o.by.contains(',') {
        return Err(KeyError::BadName { what: "override reason", value: o.why.clone() });
    }
    set_checked(state, &o.key(), &o.encode())
}

/// Parses a drain value `"<unix ms>,<1|0>"`.
pub fn parse_drain(value: &str) -> Option<(u64, bool)> {
    let (ms, flag) = value.split_once(',')?;
    let drained = match flag {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    Some((ms.parse().ok()?, drained))
}

/// One member as the cluster state describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    /// The member's id (`node_id` in chitchat).
    pub id: String,
    /// Its generation (startup unix ms); only the newest generation of an id is shown.
    pub generation: u64,
    /// Its advertised gossip address.
    pub gossip_addr: SocketAddr,
    /// Whether the failure detector considers it alive (always true for ourselves).
    pub live: bool,
    /// Its role; `None` until its keys arrive, or if unknown.
    pub role: Option<Role>,
    /// Its region; `None` until its keys arrive.
    pub region: Option<String>,
    /// Whether it abstains: a prober whose `imp` is anything but `"0"` (missing included);
    /// never an observer.
    pub impaired: bool,
    /// Its chitchat heartbeat: a counter the member raises every gossip round, carried in every
    /// digest (so it costs no key version, and no delta). 0 = never heard.
    pub heartbeat: u64,
    /// Its verdicts: node id → encoded verdict.
    pub verdicts: BTreeMap<String, String>,
    /// The newest fleet document version it holds (`cfg`).
    pub config_head: Option<ConfigVersion>,
    /// The fleet document version it has applied (`cfga`).
    pub config_applied: Option<ConfigVersion>,
    /// Its admin API address (`adm`).
    pub admin_addr: Option<SocketAddr>,
}

/// The whole cluster state as plain data, built under chitchat's lock and used outside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipSnapshot {
    /// One entry per member id (its newest generation), sorted by id.
    pub members: Vec<MemberSnapshot>,
    /// Operator overrides: node id → (unix ms, drained), newest across all members.
    pub drains: BTreeMap<String, (u64, bool)>,
    /// Operator overrides: target → the newest across all members (clears and expired ones
    /// included: readers ask [`Override::active`]).
    pub overrides: BTreeMap<OverrideTarget, Override>,
    /// Values that did not parse (bad drains and overrides); they are ignored.
    pub ignored_values: usize,
}

impl GossipSnapshot {
    /// Builds the view from node states and their liveness.
    pub fn from_node_states<'a>(states: impl IntoIterator<Item = (&'a NodeState, bool)>) -> GossipSnapshot {
        let mut newest: BTreeMap<&str, (&'a NodeState, bool)> = BTreeMap::new();
        let mut drains: BTreeMap<String, (u64, bool)> = BTreeMap::new();
        let mut overrides: BTreeMap<OverrideTarget, Override> = BTreeMap::new();
        let mut ignored_values = 0;
        for (state, live) in states {
            for (key, value) in state.iter_prefix(DRAIN_PREFIX) {
                let node = key.strip_prefix(DRAIN_PREFIX).unwrap_or(key);
                match parse_drain(&value.value) {
                    Some(drain) => {
                        let entry = drains.entry(node.to_owned()).or_insert(drain);
                        *entry = (*entry).max(drain);
                    }
                    None => ignored_values += 1,
                }
            }
            for (key, value) in state.iter_prefix(OVERRIDE_PREFIX) {
                match Override::parse(key, &value.value) {
                    Some(o) => match overrides.get(&o.target) {
                        // Newest wins; a tie goes to the larger encoding, the same on every reader.
                        Some(seen) if (seen.at_ms, seen.encode()) >= (o.at_ms, o.encode()) => {}
                        _ => {
                            overrides.insert(o.target.clone(), o);
                        }
                    },
                    None => ignored_values += 1,
                }
            }
            let id = state.chitchat_id();
            match newest.get(&*id.node_id) {
                Some((seen, _)) if seen.chitchat_id().generation_id >= id.generation_id => {}
                _ => {
                    newest.insert(&id.node_id, (state, live));
                }
            }
        }
        let members = newest.into_values().map(|(state, live)| member_view(state, live)).collect();
        GossipSnapshot { members, drains, overrides, ignored_values }
    }

    /// Builds the view from a [`ClusterStateSnapshot`]; `live` lists the live members.
    pub fn from_snapshot(snapshot: &ClusterStateSnapshot, live: &HashSet<ChitchatId>) -> GossipSnapshot {
        GossipSnapshot::from_node_states(snapshot.node_states.iter().map(|s| (s, live.contains(s.chitchat_id()))))
    }

    /// The member with id `id`.
    pub fn member(&self, id: &str) -> Option<&MemberSnapshot> {
        self.members.binary_search_by(|m| m.id.as_str().cmp(id)).ok().and_then(|i| self.members.get(i))
    }
}

/// Reads one member's keys.
pub fn member_view(state: &NodeState, live: bool) -> MemberSnapshot {
    let id = state.chitchat_id();
    let role = state.get(ROLE_KEY).and_then(Role::parse);
    let verdicts = state
        .iter_prefix(VERDICT_PREFIX)
        .filter_map(|(key, value)| Some((key.strip_prefix(VERDICT_PREFIX)?.to_owned(), value.value.clone())))
        .collect();
    MemberSnapshot {
        id: id.node_id.to_string(),
        generation: id.generation_id,
        gossip_addr: id.gossip_advertise_addr,
        live,
        role,
        region: state.get(REGION_KEY).map(str::to_owned),
        // Observers check nothing and never publish `imp`: they are not impaired, they do not vote.
        impaired: role != Some(Role::Observer) && state.get(IMPAIRED_KEY) != Some("0"),
        heartbeat: u64::from(state.heartbeat()),
        verdicts,
        config_head: state.get(CONFIG_HEAD_KEY).and_then(ConfigVersion::parse),
        config_applied: state.get(CONFIG_APPLIED_KEY).and_then(ConfigVersion::parse),
        admin_addr: state.get(ADMIN_KEY).and_then(|a| a.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use chitchat::{Chitchat, ChitchatConfig, ChitchatId};
    use tokio::sync::watch;

    use super::*;

    /// A node state with the given identity and keys, made the way chitchat makes its own.
    fn state(id: &str, generation: u64, port: u16, kvs: &[(&str, &str)]) -> NodeState {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(id, generation, addr),
            cluster_id: "test".into(),
            gossip_interval: Duration::from_secs(1),
            listen_addr: addr,
            seed_nodes: Vec::new(),
            failure_detector_config: Default::default(),
            marked_for_deletion_grace_period: Duration::from_secs(60),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let seeds = watch::channel(HashSet::new()).1;
        let kvs = kvs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Chitchat::with_chitchat_id_and_seeds(config, seeds, kvs).self_node_state().clone()
    }

    #[test]
    fn writers_write_only_changes_and_respect_limits() {
        let mut s = NodeState::for_test();
        assert_eq!(write_verdict(&mut s, "n1", "U"), Ok(true));
        let version = s.max_version();
        assert_eq!(write_verdict(&mut s, "n1", "U"), Ok(false));
        assert_eq!(s.max_version(), version, "an unchanged verdict must not bump the version");
        assert_eq!(write_verdict(&mut s, "n1", "D"), Ok(true));
        assert_eq!(s.get("v:n1"), Some("D"));
        assert!(matches!(write_verdict(&mut s, "n1", &"x".repeat(65)), Err(KeyError::ValueTooLarge { max: 64, .. })));
        assert!(matches!(write_verdict(&mut s, "", "U"), Err(KeyError::BadName { .. })));
        assert!(matches!(write_verdict(&mut s, "a\nb", "U"), Err(KeyError::BadName { .. })));
        assert!(write_impaired(&mut s, true));
        assert!(!write_impaired(&mut s, true));
        assert_eq!(write_drain(&mut s, "n1", true, 1000), Ok(true));
        assert_eq!(s.get("drain:n1"), Some("1000,1"));
        assert!(remove_verdict(&mut s, "n1"));
        assert!(!remove_verdict(&mut s, "n1"));
        assert_eq!(s.get("v:n1"), None);
    }

    #[test]
    fn the_guard_refuses_values_over_512_bytes() {
        let mut s = NodeState::for_test();
        assert_eq!(set_checked(&mut s, "k", &"x".repeat(MAX_VALUE_LEN)), Ok(true));
        let err = set_checked(&mut s, "k", &"x".repeat(MAX_VALUE_LEN + 1)).unwrap_err();
        assert_eq!(err, KeyError::ValueTooLarge { key: "k".into(), len: 513, max: 512 });
        assert_eq!(s.get("k").map(str::len), Some(MAX_VALUE_LEN), "the old value stays");
        assert!(initial_key_values(Role::Prober, &"r".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn initial_keys() {
        let kvs = initial_key_values(Role::Prober, "eu").unwrap();
        assert!(kvs.contains(&("imp".into(), "0".into())));
        let kvs = initial_key_values(Role::Observer, "eu").unwrap();
        assert!(!kvs.iter().any(|(k, _)| k == "imp"));
        assert!(kvs.contains(&("role".into(), "observer".into())));
    }

    #[test]
    fn member_view_reads_every_key() {
        let mut s = state(
            "p1",
            7,
            9001,
            &[
                ("role", "prober"),
                ("region", "eu-west"),
                ("imp", "0"),
                ("v:n1", "U,12"),
                ("v:n2", "D,0"),
                ("other", "x"),
            ],
        );
        // chitchat's `Heartbeat` has no public constructor; it is a serde newtype.
        s.try_set_heartbeat(serde_json::from_str("1234").unwrap());
        let m = member_view(&s, true);
        assert_eq!(m.heartbeat, 1234, "chitchat's heartbeat, not a key");
        assert_eq!(m.id, "p1");
        assert_eq!(m.generation, 7);
        assert_eq!(m.gossip_addr.port(), 9001);
        assert!(m.live);
        assert_eq!(m.role, Some(Role::Prober));
        assert_eq!(m.region.as_deref(), Some("eu-west"));
        assert!(!m.impaired);
        assert_eq!(m.verdicts.len(), 2);
        assert_eq!(m.verdicts["n2"], "D,0");
    }

    #[test]
    fn missing_keys_read_conservatively() {
        let m = member_view(&state("p1", 1, 1, &[("role", "wizard"), ("imp", "maybe")]), false);
        assert_eq!((m.role, m.region.clone(), m.impaired, m.live), (None, None, true, false));
        assert!(member_view(&state("p1", 1, 1, &[]), true).impaired);
        assert!(member_view(&state("p1", 1, 1, &[("role", "prober")]), true).impaired);
        assert!(!member_view(&state("r1", 1, 1, &[("role", "observer")]), true).impaired, "observers never abstain");
    }

    #[test]
    fn newest_generation_wins_and_drains_merge() {
        let old = state("p1", 1, 1, &[("v:n1", "D"), ("drain:n1", "500,1")]);
        let new = state("p1", 2, 1, &[("v:n1", "U"), ("drain:n2", "100,0")]);
        let other = state("p2", 1, 2, &[("drain:n1", "400,0"), ("drain:n2", "100,1"), ("drain:n3", "bad")]);
        let orders: [[&NodeState; 3]; 3] = [[&old, &new, &other], [&new, &other, &old], [&other, &old, &new]];
        let views: Vec<GossipSnapshot> =
            orders.iter().map(|o| GossipSnapshot::from_node_states(o.iter().map(|s| (*s, true)))).collect();
        assert!(views.windows(2).all(|w| w[0] == w[1]), "order must not matter");
        let view = &views[0];
        assert_eq!(view.members.len(), 2);
        let p1 = view.member("p1").unwrap();
        assert_eq!((p1.generation, p1.verdicts["n1"].as_str()), (2, "U"));
        assert_eq!(view.drains["n1"], (500, true), "newest timestamp wins, across generations");
        assert_eq!(view.drains["n2"], (100, true), "a tie goes to drained");
        assert_eq!(view.ignored_values, 1);
        assert!(view.member("p3").is_none());
    }

    #[test]
    fn overrides_round_trip_and_the_newest_per_target_wins_in_any_order() {
        let o = Override {
            target: OverrideTarget::Pop("fra".into()),
            action: OverrideAction::Drain,
            at_ms: 700,
            until_ms: Some(9_000),
            by: "ops".into(),
            why: "fibre cut, see ticket 12, again".into(),
        };
        assert_eq!(Override::parse(&o.key(), &o.encode()), Some(o.clone()));
        assert!(o.active(8_999) && !o.active(9_000));
        assert!(Override::parse("ovr:zone:x", "1,drain,0,a,b").is_none());
        assert!(Override::parse("ovr:node:n1", "1,reboot,0,a,b").is_none());
        let a = state("p1", 1, 1, &[("ovr:node:n1", "500,down,0,ops,maintenance"), ("ovr:pop:fra", "x")]);
        let b = state("p2", 1, 2, &[("ovr:node:n1", "600,clear,0,ops,done")]);
        let c = state("p3", 1, 3, &[("ovr:node:n1", "550,up,0,ops,flaky checks")]);
        let orders: [[&NodeState; 3]; 2] = [[&a, &b, &c], [&c, &b, &a]];
        let views: Vec<GossipSnapshot> =
            orders.iter().map(|o| GossipSnapshot::from_node_states(o.iter().map(|s| (*s, true)))).collect();
        assert_eq!(views[0], views[1], "order must not matter");
        let n1 = &views[0].overrides[&OverrideTarget::Node("n1".into())];
        assert_eq!((n1.action, n1.at_ms), (OverrideAction::Clear, 600));
        assert!(!n1.active(601));
        assert_eq!(views[0].ignored_values, 1);
    }

    #[test]
    fn from_snapshot_marks_liveness() {
        let a = state("a", 1, 1, &[("role", "observer")]);
        let b = state("b", 1, 2, &[]);
        let live: HashSet<ChitchatId> = [a.chitchat_id().clone()].into();
        let snapshot = ClusterStateSnapshot { node_states: vec![a, b], seed_addrs: HashSet::new() };
        let view = GossipSnapshot::from_snapshot(&snapshot, &live);
        assert!(view.member("a").unwrap().live);
        assert!(!view.member("b").unwrap().live);
        assert_eq!(view.member("a").unwrap().role, Some(Role::Observer));
    }

    #[test]
    fn drain_values_parse_strictly() {
        assert_eq!(parse_drain("12,1"), Some((12, true)));
        assert_eq!(parse_drain("12,0"), Some((12, false)));
        for bad in ["", "12", "12,2", "x,1", "12,1,", "-1,1"] {
            assert_eq!(parse_drain(bad), None, "{bad}");
        }
    }
}
