//! The validated config: what the programs run on. Every invariant listed on a type holds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use geolb_common::{GeoPoint, NodeId, PopId};
use ipnet::IpNet;

use crate::health::{AdminConfig, CheckConfig, ClusterConfig, MemberConfig, ProberConfig, QuorumConfig};

/// A validated geolb config.
///
/// Invariants: ids are unique; every node's PoP exists; every service's nodes exist; names are
/// lower-case and absolute; coordinates are in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the fleet tables came from, and the document they were read from.
    pub fleet: crate::fleet::FleetConfig,
    /// The gossip cluster, when this machine joins one.
    pub cluster: Option<ClusterConfig>,
    /// How verdicts are folded.
    pub quorum: QuorumConfig,
    /// This machine as a prober (`geolb-prober`).
    pub prober: Option<ProberConfig>,
    /// This machine as an observing gossip member (`geolb-resolver`).
    pub member: Option<MemberConfig>,
    /// Admin API access.
    pub admin: AdminConfig,
    /// The resolver's own settings.
    pub resolver: ResolverConfig,
    /// GeoIP databases, absolute paths, in the order given.
    pub geoip: Vec<PathBuf>,
    /// BIND zone files holding the static records of the zones geolb overlays.
    pub zones: Vec<ZoneFile>,
    /// Where clients are placed when neither an override nor GeoIP locates them.
    pub default_location: DefaultLocation,
    /// Points of presence.
    pub pops: Vec<Pop>,
    /// CDN nodes.
    pub nodes: Vec<Node>,
    /// Managed DNS names.
    pub services: Vec<Service>,
    /// CIDR overrides, which beat GeoIP.
    pub overrides: Vec<Override>,
    /// Things that are legal but probably not meant (printed by `--check-config`).
    pub warnings: Vec<String>,
}

/// Settings of the resolver process.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolverConfig {
    /// Address of the HTTP remote-backend endpoint (`POST /dns`).
    pub listen: SocketAddr,
    /// Path of the unix-socket remote-backend endpoint (one JSON object per line), if any.
    pub socket: Option<PathBuf>,
    /// Permissions the socket file gets.
    pub socket_mode: u32,
    /// Runtime threads: 1 is a current-thread runtime (read at start only).
    pub threads: usize,
    /// Largest request body accepted from PowerDNS; larger ones are refused.
    pub max_request_bytes: usize,
    /// UDP address where NOTIFY from the zones' primaries is taken, if any.
    pub notify_listen: Option<SocketAddr>,
    /// What the HTTP connector allows a connection (`header_timeout_ms`, `idle_timeout_ms`,
    /// `max_connections`).
    pub limits: crate::ConnectionLimits,
    /// Where a new resolver takes this one's sockets over at an upgrade, when set; see
    /// [`ResolverConfig::handover_path`] for the default.
    pub handover_socket: Option<PathBuf>,
}

impl ResolverConfig {
    /// The keys whose value differs in `other`. Every `[resolver]` key is read at start only, so
    /// a reload uses this to say which changes wait for the next restart.
    pub fn changed_keys(&self, other: &ResolverConfig) -> Vec<&'static str> {
        let ResolverConfig {
            listen,
            socket,
            socket_mode,
            threads,
            max_request_bytes,
            notify_listen,
            handover_socket,
            limits,
        } = self;
        changed([
            ("listen", *listen != other.listen),
            ("socket", *socket != other.socket),
            ("socket_mode", *socket_mode != other.socket_mode),
            ("threads", *threads != other.threads),
            ("max_request_bytes", *max_request_bytes != other.max_request_bytes),
            ("notify_listen", *notify_listen != other.notify_listen),
            ("header_timeout_ms", limits.header_timeout != other.limits.header_timeout),
            ("idle_timeout_ms", limits.idle_timeout != other.limits.idle_timeout),
            ("max_connections", limits.max_connections != other.limits.max_connections),
            ("handover_socket", *handover_socket != other.handover_socket),
        ])
    }

    /// The handover socket: `handover_socket`, else beside the unix connector's `socket`
    /// (its path and `.handover`), else `resolver.handover` in the member's `state_dir`, else
    /// none (upgrades then restart).
    pub fn handover_path(&self, socket: Option<&Path>, state_dir: Option<&Path>) -> Option<PathBuf> {
        self.handover_socket
            .clone()
            .or_else(|| {
                socket.or(self.socket.as_deref()).map(|s| {
                    let mut name = s.as_os_str().to_owned();
                    name.push(".handover");
                    PathBuf::from(name)
                })
            })
            .or_else(|| state_dir.map(|d| d.join("resolver.handover")))
    }
}

/// The keys of `(key, changed)` pairs that changed.
pub(crate) fn changed<const N: usize>(pairs: [(&'static str, bool); N]) -> Vec<&'static str> {
    pairs.into_iter().filter_map(|(key, changed)| changed.then_some(key)).collect()
}

/// One zone: its file and, when it comes from a hidden primary, how to follow the primary.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneFile {
    /// The zone's origin, lower-case and absolute (`example.net.`).
    pub origin: String,
    /// The zone file, absolute. For a zone from a [`PrimarySource`], the resolver writes it:
    /// it is the last good transferred copy, served at the next start.
    pub file: PathBuf,
    /// The hidden primary the zone is transferred from (`None`: the file is the source).
    pub primary: Option<PrimarySource>,
    /// The zone's PowerDNS domain metadata (`pdnsutil get-meta`), kind → values. PowerDNS reads
    /// all of a zone's metadata from the first backend that answers, and the remote backend
    /// always answers: geolb must hand back the zone's real metadata (NSEC3PARAM, PRESIGNED,
    /// SOA-EDIT, …) or DNSSEC settings kept in the next backend are lost.
    pub metadata: std::collections::BTreeMap<String, Vec<String>>,
}

/// A zone followed from its hidden primary by SOA polls, NOTIFY and IXFR/AXFR.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimarySource {
    /// The primary's addresses, tried in order (at least one).
    pub primaries: Vec<SocketAddr>,
    /// Source addresses a NOTIFY for this zone is taken from (the primaries' by default).
    pub allow_notify: Vec<IpAddr>,
    /// The TSIG key that signs transfers, SOA polls and NOTIFY, if any.
    pub tsig: Option<TsigKey>,
    /// Poll interval for the SOA serial; `None` follows the zone's SOA refresh.
    pub refresh_ms: Option<u64>,
    /// How long one SOA query or transfer may take.
    pub transfer_timeout_ms: u64,
}

/// A TSIG key (RFC 8945).
#[derive(Clone, PartialEq)]
pub struct TsigKey {
    /// The key's name, lower-case and absolute, as the primary knows it.
    pub name: String,
    /// `hmac-sha256` (default), `hmac-sha1`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// Where the base64 secret is.
    pub secret: TsigSecret,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("TsigKey").field("name", &self.name).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// A TSIG secret, base64: in the config or in a file (read by the resolver).
#[derive(Clone, PartialEq)]
pub enum TsigSecret {
    /// Written in the config.
    Inline(String),
    /// In this file (absolute), surrounding whitespace ignored.
    File(PathBuf),
}

impl std::fmt::Debug for TsigSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The secret stays out of logs.
            TsigSecret::Inline(_) => f.write_str("Inline(..)"),
            TsigSecret::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Where unlocated clients are placed.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultLocation {
    /// At this PoP's coordinates.
    Pop(PopId),
    /// At these coordinates.
    Point(GeoPoint),
}

/// A point of presence.
#[derive(Debug, Clone, PartialEq)]
pub struct Pop {
    /// Unique id.
    pub id: PopId,
    /// Where it is.
    pub location: GeoPoint,
    /// Free-form region name (e.g. `eu`), used to group probers and dashboards.
    pub region: Option<String>,
}

/// Prefix no node id may start with: the prober names its canary targets so, and keeps them
/// apart from the nodes (they never reach the gossip).
pub const RESERVED_NODE_PREFIX: &str = "canary:";

/// A CDN node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique id.
    pub id: NodeId,
    /// The PoP it stands in.
    pub pop: PopId,
    /// Address answered for A queries.
    pub ipv4: Option<Ipv4Addr>,
    /// Address answered for AAAA queries.
    pub ipv6: Option<Ipv6Addr>,
    /// Relative share of its PoP's traffic, 1 to 1,000,000.
    pub weight: u32,
    /// A disabled node is never answered, whatever its health.
    pub enabled: bool,
    /// How it is checked.
    pub check: CheckConfig,
}

/// Which address record types a service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordTypes {
    /// Answers A.
    pub a: bool,
    /// Answers AAAA.
    pub aaaa: bool,
}

/// What to answer when every candidate node of a service is down.
#[derive(Debug, Clone, PartialEq)]
pub enum AllDownPolicy {
    /// Answer as if every enabled node were healthy (nearest PoP, stable pick).
    FailOpen,
    /// Answer from these nodes (nearest healthy one first, else nearest).
    FallbackPool(Vec<NodeId>),
    /// Answer no address records (the name's other records still answer).
    Nodata,
}

/// A DNS name whose A/AAAA records geolb answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Lower-case absolute name (`cdn.example.net.`).
    pub name: String,
    /// A and/or AAAA.
    pub types: RecordTypes,
    /// The pool: nodes this service may answer.
    pub nodes: Vec<NodeId>,
    /// TTL of the answers, seconds.
    pub ttl: u32,
    /// Addresses per answer, 1 to [`MAX_ANSWERS`](crate::model::MAX_ANSWERS).
    pub answers: u8,
    /// PoPs this much farther than the nearest usable one are candidates too, kilometres.
    pub tie_band_km: f64,
    /// What happens when every node of the pool is down.
    pub all_down: AllDownPolicy,
}

/// Upper bound of a service's `answers`.
pub const MAX_ANSWERS: u8 = 8;

/// A CIDR whose clients are placed explicitly.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The network (host bits zero).
    pub net: IpNet,
    /// Where its clients are.
    pub target: OverrideTarget,
}

/// Where an override places clients.
#[derive(Debug, Clone, PartialEq)]
pub enum OverrideTarget {
    /// At this PoP.
    Pop(PopId),
    /// At these coordinates.
    Point(GeoPoint),
}

impl Config {
    /// The PoP with this id.
    pub fn pop(&self, id: &str) -> Option<&Pop> {
        self.pops.iter().find(|p| p.id.as_str() == id)
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id.as_str() == id)
    }

    /// A small valid config for tests: PoPs `fra` and `syd` with two nodes each and service
    /// `cdn.example.net.` (A+AAAA) over all of them.
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_test() -> Config {
        let text = r#"
default_location = { pop = "fra" }
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
[[pops]]
id = "syd"
lat = -33.87
lon = 151.21
[[nodes]]
id = "fra-1"
pop = "fra"
ipv4 = "192.0.2.1"
ipv6 = "2001:db8::1"
[[nodes]]
id = "fra-2"
pop = "fra"
ipv4 = "192.0.2.2"
ipv6 = "2001:db8::2"
[[nodes]]
id = "syd-1"
pop = "syd"
ipv4 = "192.0.2.11"
ipv6 = "2001:db8::11"
[[nodes]]
id = "syd-2"
pop = "syd"
ipv4 = "192.0.2.12"
ipv6 = "2001:db8::12"
[[services]]
name = "cdn.example.net"
"#;
        match crate::parse(text, std::path::Path::new("/")) {
            Ok(c) => c,
            Err(e) => panic!("Config::for_test is invalid: {e}"),
        }
    }
}
