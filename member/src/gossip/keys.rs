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
//! A member's whole state is capped too: at most [`MAX_MEMBER_KEYS`] keys holding at most
//! [`MAX_MEMBER_BYTES`] bytes of keys and values (live keys; [`StateSize`]). Every member holds
//! and gossips every other member's state, so one member with a huge one (a file of stale drains
//! published again) costs the whole cluster memory and CPU. The guard refuses a write that would
//! take this member past the cap ([`KeyError::StateFull`]), and readers leave out whole any
//! member whose state is past it ([`GossipSnapshot::ignored_members`]): its verdicts, drains and
//! overrides are not read.
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
/// Most live keys a member's state may hold. A prober holds one verdict per node, and any member
/// one key per drain and per override it took, plus half a dozen of its own: 32,768 leaves room
/// for 10,000 nodes, each also drained and overridden through one member.
pub const MAX_MEMBER_KEYS: usize = 32_768;
/// Most bytes of keys and values a member's state may hold: 4 MiB. A verdict key and value take
/// about 40 to 200 bytes, an override up to about 650.
pub const MAX_MEMBER_BYTES: usize = 4 << 20;

/// The size of a member's state as every reader counts it: its live keys (not deletions), and
/// the bytes of those keys and their values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Live keys.
    pub keys: usize,
    /// Bytes of the live keys and their values.
    pub bytes: usize,
}

/// Why a member's state is past the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Oversize {
    /// More than [`MAX_MEMBER_KEYS`] keys.
    Keys,
    /// More than [`MAX_MEMBER_BYTES`] bytes.
    Bytes,
}

impl Oversize {
    /// Every reason, for exporting gauges.
    pub const ALL: [Oversize; 2] = [Oversize::Keys, Oversize::Bytes];

    /// Lower-case name, suitable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Oversize::Keys => "too_many_keys",
            Oversize::Bytes => "too_many_bytes",
        }
    }
}

impl StateSize {
    /// Counts `state` whole.
    pub fn of(state: &NodeState) -> StateSize {
        state.key_values().fold(StateSize::default(), |size, (k, v)| StateSize {
            keys: size.keys + 1,
            bytes: size.bytes + k.len() + v.len(),
        })
    }

    /// Counts `state` until it passes the cap: `Err` with the first limit passed, in
    /// O([`MAX_MEMBER_KEYS`]) whatever the state holds.
    pub fn within_cap(state: &NodeState) -> Result<StateSize, Oversize> {
        let mut size = StateSize::default();
        for (k, v) in state.key_values() {
            size.keys += 1;
            size.bytes += k.len() + v.len();
            if size.keys > MAX_MEMBER_KEYS {
                return Err(Oversize::Keys);
            }
            if size.bytes > MAX_MEMBER_BYTES {
                return Err(Oversize::Bytes);
            }
        }
        Ok(size)
    }
}

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
    /// The write would take this member's state past [`MAX_MEMBER_KEYS`] or
    /// [`MAX_MEMBER_BYTES`].
    #[error(
        "gossip key {key:?} not written: this member's state holds {keys} keys in {bytes} bytes, and at most {MAX_MEMBER_KEYS} keys in {MAX_MEMBER_BYTES} bytes are read by the others"
    )]
    StateFull {
        /// The key.
        key: String,
        /// Live keys of the state.
        keys: usize,
        /// Their bytes.
        bytes: usize,
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

/// The single guard every write goes through: refuses values over [`MAX_VALUE_LEN`] and writes
/// that would take the member's state past [`MAX_MEMBER_KEYS`] or [`MAX_MEMBER_BYTES`], writes
/// only if the value differs. Returns whether it wrote.
pub fn set_checked(state: &mut NodeState, key: &str, value: &str) -> Result<bool, KeyError> {
    set_within(state, &mut None, key, value)
}

/// [`set_checked`] for a series of writes: `size` is the state's [`StateSize`], counted on the
/// first write that grows the state and kept up to date after it (so a batch costs one count).
fn set_within(state: &mut NodeState, size: &mut Option<StateSize>, key: &str, value: &str) -> Result<bool, KeyError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(KeyError::ValueTooLarge { key: key.to_owned(), len: value.len(), max: MAX_VALUE_LEN });
    }
    let old = state.get(key);
    if old == Some(value) {
        return Ok(false);
    }
    let (new_key, old_len) = match old {
        Some(old) => (0, key.len() + old.len()),
        None => (1, 0),
    };
    let new_len = key.len() + value.len();
    if new_key == 1 || new_len > old_len {
        let counted = *size.get_or_insert_with(|| StateSize::of(state));
        let after = StateSize { keys: counted.keys + new_key, bytes: counted.bytes.saturating_sub(old_len) + new_len };
        if after.keys > MAX_MEMBER_KEYS || after.bytes > MAX_MEMBER_BYTES {
            return Err(KeyError::StateFull { key: key.to_owned(), keys: counted.keys, bytes: counted.bytes });
        }
    }
    if let Some(counted) = size {
        *counted = StateSize { keys: counted.keys + new_key, bytes: counted.bytes.saturating_sub(old_len) + new_len };
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
    write_drain_within(state, &mut None, node, drained, now_ms)
}

fn write_drain_within(
    state: &mut NodeState,
    size: &mut Option<StateSize>,
    node: &str,
    drained: bool,
    now_ms: u64,
) -> Result<bool, KeyError> {
    check_name("node id", node)?;
    set_within(state, size, &drain_key(node), &format!("{now_ms},{}", u8::from(drained)))
}

/// What [`republish`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Republished {
    /// Keys written (those that differed).
    pub written: usize,
    /// Drains and overrides refused, each with its target and why.
    pub refused: Vec<(String, KeyError)>,
}

/// Writes saved drains and overrides again (at start), counting the state's size once: a
/// write past the cap is refused, as any other.
pub fn republish<'a>(
    state: &mut NodeState,
    drains: impl IntoIterator<Item = (&'a str, bool, u64)>,
    overrides: impl IntoIterator<Item = &'a Override>,
) -> Republished {
    let mut size = None;
    let mut done = Republished::default();
    for (node, drained, at_ms) in drains {
        match write_drain_within(state, &mut size, node, drained, at_ms) {
            Ok(wrote) => done.written += usize::from(wrote),
            Err(e) => done.refused.push((format!("node:{node}"), e)),
        }
    }
    for o in overrides {
        match check_override(o).and_then(|()| set_within(state, &mut size, &o.key(), &o.encode())) {
            Ok(wrote) => done.written += usize::from(wrote),
            Err(e) => done.refused.push((o.target.encode(), e)),
        }
    }
    done
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
    check_override(o)?;
    set_checked(state, &o.key(), &o.encode())
}

fn check_override(o: &Override) -> Result<(), KeyError> {
    if o.why.chars().count() > MAX_WHY_LEN || o.why.chars().any(char::is_control) || o.by.contains(',') {
        return Err(KeyError::BadName { what: "override reason", value: o.why.clone() });
    }
    Ok(())
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
    /// Members left out whole because their state (their newest generation's) is past the cap
    /// ([`MAX_MEMBER_KEYS`], [`MAX_MEMBER_BYTES`]): member id → why.
    pub ignored_members: BTreeMap<String, Oversize>,
}

impl GossipSnapshot {
    /// Builds the view from node states and their liveness. A state past the cap is not read
    /// at all; a member whose newest generation is past it is in
    /// [`GossipSnapshot::ignored_members`], not in [`GossipSnapshot::members`].
    pub fn from_node_states<'a>(states: impl IntoIterator<Item = (&'a NodeState, bool)>) -> GossipSnapshot {
        let mut newest: BTreeMap<&str, (&'a NodeState, bool, Option<Oversize>)> = BTreeMap::new();
        let mut drains: BTreeMap<String, (u64, bool)> = BTreeMap::new();
        let mut overrides: BTreeMap<OverrideTarget, Override> = BTreeMap::new();
        let mut ignored_values = 0;
        for (state, live) in states {
            let oversize = StateSize::within_cap(state).err();
            let id = state.chitchat_id();
            match newest.get(&*id.node_id) {
                Some((seen, _, _)) if seen.chitchat_id().generation_id >= id.generation_id => {}
                _ => {
                    newest.insert(&id.node_id, (state, live, oversize));
                }
            }
            if oversize.is_some() {
                continue;
            }
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
        }
        let mut members = Vec::with_capacity(newest.len());
        let mut ignored_members = BTreeMap::new();
        for (id, (state, live, oversize)) in newest {
            match oversize {
                None => members.push(member_view(state, live)),
                Some(why) => {
                    ignored_members.insert(id.to_owned(), why);
                }
            }
        }
        GossipSnapshot { members, drains, overrides, ignored_values, ignored_members }
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
    fn a_member_over_the_key_cap_is_ignored_whole() {
        let mut big = state("big", 1, 3, &[("role", "prober"), ("imp", "0"), ("ovr:node:n9", "5,down,0,a,b")]);
        for i in 0..40_000 {
            big.set(format!("drain:stale-{i}"), "10,1");
        }
        let small = state("small", 1, 4, &[("role", "prober"), ("imp", "0"), ("drain:n1", "7,1")]);
        let view = GossipSnapshot::from_node_states([(&big, true), (&small, true)]);
        assert!(view.member("big").is_none(), "an oversized member must not be folded");
        assert_eq!(view.ignored_members, BTreeMap::from([("big".to_owned(), Oversize::Keys)]));
        assert!(view.member("small").is_some());
        assert_eq!(view.drains.len(), 1, "only the small member's drain");
        assert!(view.overrides.is_empty(), "nothing of the oversized member is read");
    }

    #[test]
    fn a_member_does_not_write_past_the_key_cap() {
        let mut s = NodeState::for_test();
        let mut refused = 0;
        for i in 0..40_000 {
            if write_drain(&mut s, &format!("n{i}"), true, 1).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 40_000 - MAX_MEMBER_KEYS, "40,000 drains were all written");
        assert_eq!(StateSize::of(&s).keys, MAX_MEMBER_KEYS);
        assert!(matches!(write_drain(&mut s, "new", true, 1), Err(KeyError::StateFull { keys: MAX_MEMBER_KEYS, .. })));
        // Rewriting a key that exists is still allowed, and a deletion makes room.
        assert_eq!(write_drain(&mut s, "n0", false, 2), Ok(true));
        s.delete("drain:n1");
        assert_eq!(write_drain(&mut s, "new", true, 1), Ok(true));
        // What the writer allows, every reader takes.
        assert!(StateSize::within_cap(&s).is_ok());
    }

    #[test]
    fn a_member_does_not_write_past_the_byte_cap() {
        let mut s = NodeState::for_test();
        let value = "x".repeat(MAX_VALUE_LEN);
        let mut written = 0;
        while set_checked(&mut s, &format!("k{written:05}"), &value).is_ok() {
            written += 1;
        }
        let size = StateSize::of(&s);
        assert!(size.bytes <= MAX_MEMBER_BYTES && size.bytes + 6 + MAX_VALUE_LEN > MAX_MEMBER_BYTES, "{size:?}");
        assert_eq!(StateSize::within_cap(&s), Ok(size));
        // Growing a value that is there counts too; shrinking one is always allowed.
        assert!(set_checked(&mut s, "k00000", "short").is_ok());
        assert!(set_checked(&mut s, "k00000", &value).is_ok());
        assert!(matches!(set_checked(&mut s, "other-key", &value), Err(KeyError::StateFull { .. })));
        let mut big = NodeState::for_test();
        for i in 0..=MAX_MEMBER_BYTES / (6 + MAX_VALUE_LEN) {
            big.set(format!("k{i:05}"), &value);
        }
        assert_eq!(StateSize::within_cap(&big), Err(Oversize::Bytes));
        let view = GossipSnapshot::from_node_states([(&big, true)]);
        assert_eq!(view.ignored_members.values().collect::<Vec<_>>(), [&Oversize::Bytes]);
    }

    #[test]
    fn republishing_counts_once_and_stops_at_the_cap() {
        let mut s = NodeState::for_test();
        let names: Vec<String> = (0..MAX_MEMBER_KEYS + 10).map(|i| format!("n{i}")).collect();
        let o = Override {
            target: OverrideTarget::Node("n0".into()),
            action: OverrideAction::Down,
            at_ms: 3,
            until_ms: None,
            by: "ops".into(),
            why: "disk".into(),
        };
        let done = republish(&mut s, names.iter().map(|n| (n.as_str(), true, 5)), [&o]);
        assert_eq!(done.written, MAX_MEMBER_KEYS);
        assert_eq!(done.refused.len(), 11, "ten drains and the override");
        assert!(matches!(done.refused[0].1, KeyError::StateFull { .. }), "{:?}", done.refused[0]);
        assert_eq!(StateSize::of(&s), StateSize::within_cap(&s).unwrap());
        // Once more: nothing changed, nothing written.
        let again = republish(&mut s, names.iter().take(5).map(|n| (n.as_str(), true, 5)), []);
        assert_eq!((again.written, again.refused.len()), (0, 0));
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
