//! The file as serde reads it, and the validation that turns it into a [`Config`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use geolb_common::{GeoPoint, NodeId, PopId};
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::error::{ConfigError, Problem};
use crate::fleet::{FLEET_TABLES, FleetConfig, FleetDocument, FleetStore};
use crate::health::{ProberConfig, RawAdmin, RawCheck, RawCluster, RawMember, RawProber, RawQuorum};
use crate::location::{KeyPath, line_col, span_of};
use crate::model::*;

/// Default bound on a PowerDNS request body. A lookup is ~200 bytes; 64 KiB leaves room for
/// every other call PowerDNS makes while refusing anything absurd.
pub(crate) const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default permissions of the unix socket: owner and group read and write (PowerDNS's user
/// joins the resolver's group, or the other way round).
pub(crate) const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Default answer TTL, seconds.
pub(crate) const DEFAULT_TTL: u32 = 30;
/// Default tie band: PoPs in one metro area (within 50 km of the nearest) share the traffic.
pub(crate) const DEFAULT_TIE_BAND_KM: f64 = 50.0;
/// Default node weight.
pub(crate) const DEFAULT_WEIGHT: u32 = 100;
/// Largest accepted node weight.
pub(crate) const MAX_WEIGHT: u32 = 1_000_000;
/// Largest accepted TTL, one day.
pub(crate) const MAX_TTL: u32 = 86_400;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5380))
}
fn default_resolver_threads() -> usize {
    1
}
fn default_socket_mode() -> u32 {
    DEFAULT_SOCKET_MODE
}
fn default_max_request_bytes() -> usize {
    DEFAULT_MAX_REQUEST_BYTES
}
fn default_ttl() -> u32 {
    DEFAULT_TTL
}
fn default_answers() -> u8 {
    1
}
fn default_tie_band_km() -> f64 {
    DEFAULT_TIE_BAND_KM
}
fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}
fn default_true() -> bool {
    true
}
fn default_types() -> Vec<RawType> {
    vec![RawType::A, RawType::Aaaa]
}

/// The warning for a config without GeoIP databases: only the resolver places clients, so the
/// prober leaves it out.
pub const NO_GEOIP: &str = "no GeoIP database configured: every client is placed by overrides or the default location";

/// `base` joined with `path` when `path` is relative.
fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolver {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    socket: Option<PathBuf>,
    #[serde(default = "default_socket_mode")]
    socket_mode: u32,
    #[serde(default = "default_max_request_bytes")]
    max_request_bytes: usize,
    #[serde(default = "default_resolver_threads")]
    threads: usize,
    notify_listen: Option<SocketAddr>,
    header_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    handover_socket: Option<PathBuf>,
}

impl Default for RawResolver {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            socket: None,
            socket_mode: default_socket_mode(),
            max_request_bytes: default_max_request_bytes(),
            threads: default_resolver_threads(),
            notify_listen: None,
            header_timeout_ms: None,
            idle_timeout_ms: None,
            max_connections: None,
            handover_socket: None,
        }
    }
}

impl RawResolver {
    /// Checks the request bound, the threads and the socket mode, and makes `socket` absolute;
    /// problems are `(key, message)`.
    fn resolve(&self, base: &Path) -> (ResolverConfig, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        if self.max_request_bytes < 1024 {
            problems.push((
                "max_request_bytes",
                format!(
                    "max_request_bytes {} is below 1024; PowerDNS requests would be refused",
                    self.max_request_bytes
                ),
            ));
        }
        if let Some(problem) = crate::health::threads_problem(self.threads) {
            problems.push(("threads", problem));
        }
        if self.socket_mode > 0o777 {
            problems.push((
                "socket_mode",
                format!("socket_mode {:#o} is not a permission mode (write it in octal, e.g. 0o660)", self.socket_mode),
            ));
        }
        let limits = crate::ConnectionLimits::resolve(
            self.header_timeout_ms,
            self.idle_timeout_ms,
            self.max_connections,
            crate::ConnectionLimits::HTTP,
            &mut problems,
        );
        let config = ResolverConfig {
            limits,
            listen: self.listen,
            socket: self.socket.as_deref().map(|p| absolute(base, p)),
            socket_mode: self.socket_mode,
            max_request_bytes: self.max_request_bytes,
            threads: self.threads,
            notify_listen: self.notify_listen,
            handover_socket: self.handover_socket.as_deref().map(|p| absolute(base, p)),
        };
        (config, problems)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGeoIp {
    databases: Vec<PathBuf>,
}

impl RawGeoIp {
    /// The databases, absolute, in the order given; warns when there are none.
    fn resolve(&self, base: &Path, warnings: &mut Vec<String>) -> Vec<PathBuf> {
        // Files are only named here; the resolver opens them (and `--check-config` does too).
        let geoip: Vec<PathBuf> = self.databases.iter().map(|p| absolute(base, p)).collect();
        if geoip.is_empty() {
            warnings.push(NO_GEOIP.to_owned());
        }
        geoip
    }
}

/// A place: a PoP or coordinates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlace {
    pop: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
}

/// `default_location`: required; a known PoP or coordinates in range.
fn resolve_default_location(
    place: Option<&RawPlace>,
    pops: &PopIds<'_>,
    problems: &mut Problems<'_>,
) -> DefaultLocation {
    let top = KeyPath::default();
    match place {
        Some(place) => {
            match place_point(&place.pop, place.lat, place.lon, &top.key("default_location"), pops, problems) {
                Some(Ok(pop)) => DefaultLocation::Pop(pop),
                Some(Err(point)) => DefaultLocation::Point(point),
                None => DefaultLocation::Point(GeoPoint::new(0.0, 0.0)),
            }
        }
        None => {
            if !problems.pending {
                problems.at_document("missing `default_location` (e.g. `default_location = { pop = \"fra\" }`): where clients go when GeoIP cannot place them");
            }
            DefaultLocation::Point(GeoPoint::new(0.0, 0.0))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    origin: String,
    file: Option<PathBuf>,
    primary: Option<Vec<String>>,
    allow_notify: Option<Vec<std::net::IpAddr>>,
    tsig: Option<RawTsig>,
    refresh_ms: Option<u64>,
    #[serde(default = "default_transfer_timeout_ms")]
    transfer_timeout_ms: u64,
    #[serde(default)]
    metadata: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTsig {
    name: String,
    #[serde(default = "default_tsig_algorithm")]
    algorithm: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_owned()
}

fn default_transfer_timeout_ms() -> u64 {
    30_000
}

/// The TSIG algorithms a `[[zones]]` key may name (those `domain`'s TSIG implements).
const TSIG_ALGORITHMS: &[&str] = &["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"];

/// A primary's address: `ip:port`, `[v6]:port`, or a bare IP (port 53).
fn primary_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53))).map_err(
        |_| format!("`{text}` is not an IP address with an optional port (e.g. `192.0.2.53` or `192.0.2.53:53`)"),
    )
}

impl RawZone {
    /// The `primary` source of a zone: addresses, NOTIFY sources and the TSIG key.
    fn resolve_primary(
        &self,
        addrs: &[String],
        path: &KeyPath,
        base: &Path,
        problems: &mut Problems<'_>,
    ) -> PrimarySource {
        let mut primaries = Vec::new();
        if addrs.is_empty() {
            problems.at(&path.key("primary"), "`primary` lists no address: give the hidden primary's address(es)");
        }
        for (i, text) in addrs.iter().enumerate() {
            match primary_addr(text) {
                Ok(addr) => primaries.push(addr),
                Err(e) => problems.at(&path.key("primary").index(i), e),
            }
        }
        let allow_notify = match &self.allow_notify {
            Some(list) => list.clone(),
            None => {
                let mut ips: Vec<std::net::IpAddr> = Vec::new();
                for ip in primaries.iter().map(SocketAddr::ip) {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                ips
            }
        };
        let tsig = self.tsig.as_ref().map(|t| {
            let tsig_path = path.key("tsig");
            let name = match normalize_name(&t.name) {
                Ok(name) => name,
                Err(e) => {
                    problems.at(&tsig_path.key("name"), e);
                    String::new()
                }
            };
            if !TSIG_ALGORITHMS.contains(&t.algorithm.as_str()) {
                problems.at(
                    &tsig_path.key("algorithm"),
                    format!("tsig algorithm `{}` is not one of {}", t.algorithm, TSIG_ALGORITHMS.join(", ")),
                );
            }
            let secret = match (&t.secret, &t.secret_file) {
                (Some(secret), None) => TsigSecret::Inline(secret.trim().to_owned()),
                (None, Some(file)) => TsigSecret::File(absolute(base, file)),
                _ => {
                    problems.at(&tsig_path, "give exactly one of `secret` (base64) and `secret_file`");
                    TsigSecret::Inline(String::new())
                }
            };
            TsigKey { name, algorithm: t.algorithm.clone(), secret }
        });
        if self.refresh_ms == Some(0) {
            problems.at(&path.key("refresh_ms"), "refresh_ms must be above 0 (leave it out to follow the SOA refresh)");
        }
        if self.transfer_timeout_ms < 100 {
            problems.at(&path.key("transfer_timeout_ms"), "transfer_timeout_ms must be at least 100");
        }
        PrimarySource {
            primaries,
            allow_notify,
            tsig,
            refresh_ms: self.refresh_ms,
            transfer_timeout_ms: self.transfer_timeout_ms,
        }
    }
}

/// `[[zones]]`: each origin a valid name given once, each metadata kind a PowerDNS one; the
/// files are made absolute (only named here: the resolver reads them). A zone whose origin is
/// not a name is left out. A zone from a `primary` keeps its copy in `file`, by default
/// `state_dir/zones/<origin>zone` of `[member]`.
fn resolve_zones(
    raw: &[(usize, RawZone)],
    base: &Path,
    state_dir: Option<&Path>,
    problems: &mut Problems<'_>,
) -> Vec<ZoneFile> {
    let mut zones = Vec::new();
    let mut origins = HashSet::new();
    for (i, z) in raw {
        let path = KeyPath::default().key("zones").index(*i);
        match normalize_name(&z.origin) {
            Ok(origin) => {
                if !origins.insert(origin.clone()) {
                    problems.at(&path.key("origin"), format!("duplicate zone `{origin}`"));
                }
                for kind in z.metadata.keys() {
                    if kind.is_empty()
                        || !kind.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
                    {
                        problems.at(
                            &path.key("metadata").key(kind),
                            format!(
                                "metadata kind `{kind}` is not a PowerDNS metadata kind (upper-case, e.g. NSEC3PARAM)"
                            ),
                        );
                    }
                }
                let primary = z.primary.as_ref().map(|addrs| z.resolve_primary(addrs, &path, base, problems));
                if primary.is_none() {
                    for (key, set) in [
                        ("allow_notify", z.allow_notify.is_some()),
                        ("tsig", z.tsig.is_some()),
                        ("refresh_ms", z.refresh_ms.is_some()),
                    ] {
                        if set {
                            problems.at(&path.key(key), format!("`{key}` applies only to a zone with a `primary`"));
                        }
                    }
                }
                let file = match (&z.file, &primary, state_dir) {
                    (Some(file), _, _) => absolute(base, file),
                    (None, Some(_), Some(dir)) => dir.join("zones").join(format!("{origin}zone")),
                    (None, Some(_), None) => {
                        problems.at(
                            &path,
                            "a zone from a `primary` keeps its last good copy in `file`: set `file`, or add [member] (the copy then goes to state_dir/zones/)",
                        );
                        PathBuf::new()
                    }
                    (None, None, _) => {
                        problems.at(&path, "give the zone's `file`, or its hidden `primary` to transfer it from");
                        PathBuf::new()
                    }
                };
                if let Some(other) = zones.iter().find(|o: &&ZoneFile| o.file == file && !file.as_os_str().is_empty()) {
                    problems.at(
                        &path.key("file"),
                        format!(
                            "`{}` is also the file of zone `{}`: each zone needs its own",
                            file.display(),
                            other.origin
                        ),
                    );
                }
                zones.push(ZoneFile { origin, file, primary, metadata: z.metadata.clone() });
            }
            Err(e) => problems.at(&path.key("origin"), e),
        }
    }
    zones
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPop {
    id: String,
    lat: f64,
    lon: f64,
    region: Option<String>,
}

/// The PoP ids the other tables may name.
struct PopIds<'r> {
    /// The id of every `[[pops]]` entry that parsed (an empty or duplicate one too: it was
    /// reported at the PoP).
    parsed: HashSet<&'r str>,
    /// Ids of the entries that failed to parse: each was reported once, so a reference to one
    /// is not an error too.
    broken: HashSet<String>,
}

impl PopIds<'_> {
    /// Whether a reference to `id` names a PoP.
    fn contains(&self, id: &str) -> bool {
        self.parsed.contains(id) || self.broken.contains(id)
    }
}

/// `[[pops]]`: ids non-empty and unique, coordinates in range, at least one PoP. Also returns
/// the ids the other tables may name.
fn resolve_pops<'r>(raw: &'r [(usize, RawPop)], problems: &mut Problems<'_>) -> (Vec<Pop>, PopIds<'r>) {
    let top = KeyPath::default();
    let mut pops = Vec::new();
    let mut parsed = HashSet::new();
    for (i, p) in raw {
        let path = top.key("pops").index(*i);
        if p.id.is_empty() {
            problems.at(&path.key("id"), "pop id is empty");
        } else if parsed.contains(p.id.as_str()) {
            problems.at(&path.key("id"), format!("duplicate pop id `{}`", p.id));
        }
        let location = GeoPoint::new(p.lat, p.lon);
        if !(-90.0..=90.0).contains(&p.lat) || !p.lat.is_finite() {
            problems.at(&path.key("lat"), format!("latitude {} is outside -90..=90", p.lat));
        }
        if !(-180.0..=180.0).contains(&p.lon) || !p.lon.is_finite() {
            problems.at(&path.key("lon"), format!("longitude {} is outside -180..=180", p.lon));
        }
        parsed.insert(p.id.as_str());
        pops.push(Pop { id: PopId::from(p.id.as_str()), location, region: p.region.clone() });
    }
    if raw.is_empty() && !problems.broken_ids.contains_key("pops") && !problems.pending {
        problems.at_document("no [[pops]] configured");
    }
    // A PoP that failed to parse is reported once; references to it are not errors too.
    let broken = problems.broken_ids.get("pops").cloned().unwrap_or_default();
    (pops, PopIds { parsed, broken })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    pop: String,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default = "default_true")]
    enabled: bool,
    check: Option<RawCheck>,
}

impl RawNode {
    /// One node: its PoP known, an address, its weight in range, and its `check` over
    /// `[checks]` (a problem of a check the node inherits is reported at `[checks]`).
    fn resolve(&self, path: &KeyPath, checks: &RawCheck, pops: &PopIds<'_>, problems: &mut Problems<'_>) -> Node {
        if !pops.contains(&self.pop) {
            problems.at(&path.key("pop"), format!("unknown pop `{}`", self.pop));
        }
        if self.ipv4.is_none() && self.ipv6.is_none() {
            problems.at(path, format!("node `{}` has neither `ipv4` nor `ipv6`", self.id));
        }
        if self.weight == 0 || self.weight > MAX_WEIGHT {
            problems.at(
                &path.key("weight"),
                format!(
                    "weight {} is outside 1..={MAX_WEIGHT} (use `enabled = false` to take a node out)",
                    self.weight
                ),
            );
        }
        let (check, check_problems) = self.check.clone().unwrap_or_default().over(checks).resolve();
        for (key, message) in check_problems {
            let at = if self.check.is_some() {
                path.key("check").key(key)
            } else {
                KeyPath::default().key("checks").key(key)
            };
            problems.at(&at, message);
        }
        Node {
            check,
            id: NodeId::from(self.id.as_str()),
            pop: PopId::from(self.pop.as_str()),
            ipv4: self.ipv4,
            ipv6: self.ipv6,
            weight: self.weight,
            enabled: self.enabled,
        }
    }
}

/// The resolved nodes, for the services that name them.
struct Nodes<'r> {
    /// Every node that parsed, in file order.
    list: Vec<Node>,
    /// The index in `list` of each id that is neither empty nor reserved (of the last node
    /// with it, for a duplicate id).
    ids: HashMap<&'r str, usize>,
    /// Ids of the `[[nodes]]` entries that failed to parse: each was reported once, so a
    /// reference to one is skipped.
    broken: HashSet<String>,
}

impl Nodes<'_> {
    /// The node with this id.
    fn get(&self, id: &str) -> Option<&Node> {
        self.ids.get(id).map(|&k| &self.list[k])
    }

    /// The nodes a list of ids at `path` names (`nodes`, `fallback_pool`): each known and
    /// listed once.
    fn named(&self, list: &[String], path: &KeyPath, problems: &mut Problems<'_>) -> Vec<NodeId> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (j, id) in list.iter().enumerate() {
            if self.broken.contains(id) {
                continue;
            }
            if !self.ids.contains_key(id.as_str()) {
                problems.at(&path.index(j), format!("unknown node `{id}`"));
            } else if !seen.insert(id.as_str()) {
                problems.at(&path.index(j), format!("node `{id}` listed twice"));
            } else {
                out.push(NodeId::from(id.as_str()));
            }
        }
        out
    }
}

/// `[[nodes]]`: ids non-empty, not reserved and unique, then each node as [`RawNode::resolve`]
/// checks it.
fn resolve_nodes<'r>(
    raw: &'r [(usize, RawNode)],
    checks: &RawCheck,
    pops: &PopIds<'_>,
    problems: &mut Problems<'_>,
) -> Nodes<'r> {
    let broken = problems.broken_ids.get("nodes").cloned().unwrap_or_default();
    let mut nodes = Nodes { list: Vec::new(), ids: HashMap::new(), broken };
    for (i, n) in raw {
        let path = KeyPath::default().key("nodes").index(*i);
        if n.id.is_empty() {
            problems.at(&path.key("id"), "node id is empty");
        } else if n.id.starts_with(RESERVED_NODE_PREFIX) {
            problems.at(
                &path.key("id"),
                format!(
                    "node id `{}` starts with `{RESERVED_NODE_PREFIX}`, which the prober keeps for its canaries",
                    n.id
                ),
            );
        } else if nodes.ids.insert(n.id.as_str(), nodes.list.len()).is_some() {
            problems.at(&path.key("id"), format!("duplicate node id `{}`", n.id));
        }
        nodes.list.push(n.resolve(&path, checks, pops, problems));
    }
    nodes
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
enum RawType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum RawPolicy {
    #[default]
    FailOpen,
    FallbackPool,
    Nodata,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    #[serde(default = "default_types")]
    types: Vec<RawType>,
    nodes: Option<Vec<String>>,
    pops: Option<Vec<String>>,
    #[serde(default = "default_ttl")]
    ttl: u32,
    #[serde(default = "default_answers")]
    answers: u8,
    #[serde(default = "default_tie_band_km")]
    tie_band_km: f64,
    #[serde(default)]
    all_down: RawPolicy,
    fallback_pool: Option<Vec<String>>,
}

/// What a service may refer to: the tables resolved before `[[services]]`.
struct ServiceRefs<'a, 'r> {
    zones: &'a [ZoneFile],
    pops: &'a PopIds<'r>,
    nodes: &'a Nodes<'r>,
}

impl RawService {
    /// One service, `name` being its normalized name: below a zone apex and inside a zone when
    /// there are zones, its types answerable by its pool, its numbers in range, its `all_down`
    /// policy complete. Warns when every node of its pool is disabled.
    fn resolve(
        &self,
        name: String,
        path: &KeyPath,
        refs: &ServiceRefs<'_, '_>,
        problems: &mut Problems<'_>,
        warnings: &mut Vec<String>,
    ) -> Service {
        let zones = refs.zones;
        if zones.iter().any(|z| z.origin == name) {
            problems.at(
                &path.key("name"),
                format!("service `{name}` is a zone apex; PowerDNS turns a zone REFUSED when a backend answers the apex without its SOA, so balance a name below it"),
            );
        }
        if !zones.is_empty() && !zones.iter().any(|z| in_zone(&name, &z.origin)) {
            problems.at(
                &path.key("name"),
                format!("service `{name}` is in none of the configured zones; PowerDNS would never ask for it"),
            );
        }
        let types = RecordTypes { a: self.types.contains(&RawType::A), aaaa: self.types.contains(&RawType::Aaaa) };
        if self.types.is_empty() {
            problems.at(&path.key("types"), "types is empty; give \"A\", \"AAAA\" or both");
        }
        let pool = self.pool(path, refs, problems);
        if pool.is_empty() {
            problems.at(path, format!("service `{name}` has no nodes"));
        }
        let pool_nodes = || pool.iter().filter_map(|id| refs.nodes.get(id.as_str()));
        if types.a && !pool_nodes().any(|n| n.ipv4.is_some()) {
            problems.at(&path.key("types"), format!("service `{name}` answers A but none of its nodes has `ipv4`"));
        }
        if types.aaaa && !pool_nodes().any(|n| n.ipv6.is_some()) {
            problems.at(&path.key("types"), format!("service `{name}` answers AAAA but none of its nodes has `ipv6`"));
        }
        if !pool.is_empty() && !pool_nodes().any(|n| n.enabled) {
            warnings.push(format!("service `{name}`: every node is disabled"));
        }
        if self.ttl > MAX_TTL {
            problems.at(&path.key("ttl"), format!("ttl {} is above {MAX_TTL}", self.ttl));
        }
        if self.answers == 0 || self.answers > MAX_ANSWERS {
            problems.at(&path.key("answers"), format!("answers {} is outside 1..={MAX_ANSWERS}", self.answers));
        }
        if !(0.0..=20_000.0).contains(&self.tie_band_km) {
            problems.at(&path.key("tie_band_km"), format!("tie_band_km {} is outside 0..=20000", self.tie_band_km));
        }
        let all_down = self.all_down_policy(path, refs.nodes, problems);
        Service {
            name,
            types,
            nodes: pool,
            ttl: self.ttl,
            answers: self.answers,
            tie_band_km: self.tie_band_km,
            all_down,
        }
    }

    /// The nodes the service may answer: those `nodes` names, those in the PoPs `pops` names,
    /// or else every node.
    fn pool(&self, path: &KeyPath, refs: &ServiceRefs<'_, '_>, problems: &mut Problems<'_>) -> Vec<NodeId> {
        match (&self.nodes, &self.pops) {
            (Some(_), Some(_)) => {
                problems.at(path, "give `nodes` or `pops`, not both");
                Vec::new()
            }
            (Some(list), None) => refs.nodes.named(list, &path.key("nodes"), problems),
            (None, Some(list)) => {
                for (j, p) in list.iter().enumerate() {
                    if !refs.pops.contains(p) {
                        problems.at(&path.key("pops").index(j), format!("unknown pop `{p}`"));
                    }
                }
                refs.nodes
                    .list
                    .iter()
                    .filter(|n| list.iter().any(|p| p == n.pop.as_str()))
                    .map(|n| n.id.clone())
                    .collect()
            }
            (None, None) => refs.nodes.list.iter().map(|n| n.id.clone()).collect(),
        }
    }

    /// What to answer when the whole pool is down; `fallback_pool` goes with
    /// `all_down = "fallback_pool"` and nothing else.
    fn all_down_policy(&self, path: &KeyPath, nodes: &Nodes<'_>, problems: &mut Problems<'_>) -> AllDownPolicy {
        match (self.all_down, &self.fallback_pool) {
            (RawPolicy::FallbackPool, Some(list)) if !list.is_empty() => {
                AllDownPolicy::FallbackPool(nodes.named(list, &path.key("fallback_pool"), problems))
            }
            (RawPolicy::FallbackPool, _) => {
                problems.at(
                    &path.key("all_down"),
                    "all_down = \"fallback_pool\" needs a non-empty `fallback_pool` list of node ids",
                );
                AllDownPolicy::FailOpen
            }
            (_, Some(_)) => {
                problems.at(&path.key("fallback_pool"), "fallback_pool is only used with all_down = \"fallback_pool\"");
                AllDownPolicy::FailOpen
            }
            (RawPolicy::FailOpen, None) => AllDownPolicy::FailOpen,
            (RawPolicy::Nodata, None) => AllDownPolicy::Nodata,
        }
    }
}

/// `[[services]]`: each name valid and given once, then each service as
/// [`RawService::resolve`] checks it; warns when there are services but no zones. A service
/// whose name is not a name is left out.
fn resolve_services(
    raw: &[(usize, RawService)],
    refs: &ServiceRefs<'_, '_>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Vec<Service> {
    let mut services = Vec::new();
    let mut names = HashSet::new();
    for (i, s) in raw {
        let path = KeyPath::default().key("services").index(*i);
        let name = match normalize_name(&s.name) {
            Ok(n) => n,
            Err(e) => {
                problems.at(&path.key("name"), e);
                continue;
            }
        };
        if !names.insert(name.clone()) {
            problems.at(&path.key("name"), format!("duplicate service `{name}`"));
        }
        services.push(s.resolve(name, &path, refs, problems, warnings));
    }
    if refs.zones.is_empty() && !services.is_empty() {
        warnings.push("no [[zones]] configured: managed names answer only their A/AAAA records, and their MX/TXT/CAA records in the zone are hidden".to_owned());
    }
    services
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    cidr: String,
    pop: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
}

impl RawOverride {
    /// One override: a network without host bits, placed at a known PoP or at coordinates in
    /// range; `None` when it is not.
    fn resolve(&self, path: &KeyPath, pops: &PopIds<'_>, problems: &mut Problems<'_>) -> Option<Override> {
        let net = match self.cidr.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                problems.at(
                    &path.key("cidr"),
                    format!("cidr `{}` has host bits set; did you mean `{}`?", self.cidr, net.trunc()),
                );
                return None;
            }
            Ok(net) => net,
            Err(_) => {
                problems.at(&path.key("cidr"), format!("`{}` is not a CIDR network (e.g. 198.51.100.0/24)", self.cidr));
                return None;
            }
        };
        let target = match place_point(&self.pop, self.lat, self.lon, path, pops, problems)? {
            Ok(pop) => OverrideTarget::Pop(pop),
            Err(point) => OverrideTarget::Point(point),
        };
        Some(Override { net, target })
    }
}

/// `[[overrides]]`: each as [`RawOverride::resolve`] checks it; a bad one is left out.
fn resolve_overrides(raw: &[(usize, RawOverride)], pops: &PopIds<'_>, problems: &mut Problems<'_>) -> Vec<Override> {
    raw.iter().filter_map(|(i, o)| o.resolve(&KeyPath::default().key("overrides").index(*i), pops, problems)).collect()
}

/// `[prober]`: as [`RawProber::resolve`] checks it, and standing in a known PoP.
fn resolve_prober(raw: &RawProber, base: &Path, pops: &PopIds<'_>, problems: &mut Problems<'_>) -> ProberConfig {
    let prober = problems.in_table("prober", raw.resolve(base));
    if !pops.contains(&prober.pop) && !problems.pending {
        problems.at(&KeyPath::default().key("prober").key("pop"), format!("unknown pop `{}`", prober.pop));
    }
    prober
}

/// `[fleet]`: where the fleet document comes from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    #[serde(default)]
    store: FleetStore,
    postgres: Option<String>,
    postgres_file: Option<PathBuf>,
}

impl RawFleet {
    /// The store and its connection string: given for `postgres` (inline or from a file), and
    /// only there.
    fn resolve(&self, base: &Path) -> (Option<crate::fleet::Secret>, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let given = match (&self.postgres, &self.postgres_file) {
            (Some(text), None) => Some(text.trim().to_owned()),
            (None, Some(file)) => match std::fs::read_to_string(absolute(base, file)) {
                Ok(text) => Some(text.trim().to_owned()),
                Err(e) => {
                    problems.push(("postgres_file", format!("cannot read {}: {e}", absolute(base, file).display())));
                    None
                }
            },
            (None, None) => None,
            (Some(_), Some(_)) => {
                problems.push(("postgres", "give one of `postgres` and `postgres_file`, not both".to_owned()));
                None
            }
        };
        match (self.store, &given) {
            (FleetStore::Postgres, None) if problems.is_empty() => problems.push((
                "postgres",
                "the postgres store needs `postgres` (e.g. \"host=db.example port=5432 user=geolb dbname=geolb\") or `postgres_file`".to_owned(),
            )),
            (FleetStore::File | FleetStore::Embedded, Some(_)) => {
                problems.push(("postgres", format!("`postgres` is only read with store = \"postgres\", not \"{}\"", self.store.as_str())))
            }
            _ => {}
        }
        (given.filter(|g| !g.is_empty()).map(crate::fleet::Secret), problems)
    }
}

/// The document as read, before cross-checks.
#[derive(Debug, Default)]
struct RawConfig {
    checks: RawCheck,
    cluster: Option<RawCluster>,
    quorum: RawQuorum,
    prober: Option<RawProber>,
    member: Option<RawMember>,
    admin: RawAdmin,
    fleet: RawFleet,
    resolver: RawResolver,
    geoip: RawGeoIp,
    default_location: Option<RawPlace>,
    zones: Vec<(usize, RawZone)>,
    pops: Vec<(usize, RawPop)>,
    nodes: Vec<(usize, RawNode)>,
    services: Vec<(usize, RawService)>,
    overrides: Vec<(usize, RawOverride)>,
}

impl RawConfig {
    /// Resolves the tables one after the other into a [`Config`], each recording its problems
    /// (and warnings); a table that names zones, PoPs or nodes comes after them.
    fn validate(&self, base: &Path, problems: &mut Problems<'_>) -> Config {
        let mut warnings = Vec::new();
        let resolver = problems.in_table("resolver", self.resolver.resolve(base));
        let geoip = self.geoip.resolve(base, &mut warnings);
        let member_state_dir = self.member.as_ref().map(|m| m.state_dir(base));
        let zones = resolve_zones(&self.zones, base, member_state_dir.as_deref(), problems);
        let (pops, pop_ids) = resolve_pops(&self.pops, problems);
        let nodes = resolve_nodes(&self.nodes, &self.checks, &pop_ids, problems);
        let refs = ServiceRefs { zones: &zones, pops: &pop_ids, nodes: &nodes };
        let services = resolve_services(&self.services, &refs, problems, &mut warnings);
        let default_location = resolve_default_location(self.default_location.as_ref(), &pop_ids, problems);
        let overrides = resolve_overrides(&self.overrides, &pop_ids, problems);
        let quorum = problems.in_table("quorum", self.quorum.resolve());
        let admin = problems.in_table("admin", self.admin.resolve(base));
        warnings.extend(admin.revoked_warnings());
        let cluster = self.cluster.as_ref().map(|c| problems.in_table("cluster", c.resolve(base)));
        let prober = self.prober.as_ref().map(|p| resolve_prober(p, base, &pop_ids, problems));
        let member = self.member.as_ref().map(|m| problems.in_table("member", m.resolve(base)));
        if self.fleet.store != FleetStore::File && prober.is_none() && member.is_none() {
            problems.at(
                &KeyPath::default().key("fleet").key("store"),
                format!("the {} store keeps the fleet document's versions in state_dir and shows them over the gossip: add [member] (or [prober]) and [cluster]", self.fleet.store.as_str()),
            );
        }
        if (prober.is_some() || member.is_some()) && cluster.is_none() {
            problems.at(
                &KeyPath::default(),
                "[prober] and [member] join a gossip cluster: add a [cluster] table (id, key_file, seeds)",
            );
        }
        let postgres = problems.in_table("fleet", self.fleet.resolve(base));
        let fleet = FleetConfig {
            postgres,
            store: self.fleet.store,
            document: Default::default(),
            pending: problems.pending,
            version: 0,
            hash: String::new(),
        };
        Config {
            fleet,
            cluster,
            quorum,
            prober,
            member,
            admin,
            resolver,
            geoip,
            zones,
            default_location,
            pops,
            nodes: nodes.list,
            services,
            overrides,
            warnings,
        }
    }
}

/// Top-level keys, for the unknown-key message.
const TOP_LEVEL_KEYS: &[&str] = &[
    "resolver",
    "geoip",
    "default_location",
    "zones",
    "pops",
    "nodes",
    "services",
    "overrides",
    "checks",
    "cluster",
    "quorum",
    "prober",
    "member",
    "admin",
    "fleet",
];

/// Collects problems with their positions.
struct Problems<'a> {
    text: &'a str,
    root: &'a DeTable<'a>,
    root_span: Range<usize>,
    list: Vec<(usize, Problem)>,
    /// Ids of array elements that failed to deserialize, per section: references to them are
    /// not reported again as unknown (one mistake, one message).
    broken_ids: HashMap<String, HashSet<String>>,
    /// The fleet tables come from a JSON document: their problems have a key path, no line.
    fleet_from_json: bool,
    /// No fleet document yet: nothing requires a PoP or a default location.
    pending: bool,
}

impl<'a> Problems<'a> {
    /// Records a problem; the same message at the same place again (a bad `[checks]` value that
    /// every node inherits) is recorded once.
    fn at_span(&mut self, span: Range<usize>, path: &KeyPath, message: String) {
        let position = line_col(self.text, span.start);
        let problem = Problem { path: path.to_string(), position: Some(position), message };
        if !self.list.iter().any(|(_, p)| *p == problem) {
            self.list.push((span.start, problem));
        }
    }

    fn at(&mut self, path: &KeyPath, message: impl Into<String>) {
        let in_document =
            matches!(path.0.first(), Some(crate::location::Seg::Key(k)) if FLEET_TABLES.contains(&k.as_str()));
        if self.fleet_from_json && in_document {
            let problem = Problem { path: path.to_string(), position: None, message: message.into() };
            if !self.list.iter().any(|(_, p)| *p == problem) {
                // After the local file's problems, in the order found.
                self.list.push((self.text.len() + 1 + self.list.len(), problem));
            }
            return;
        }
        let span = span_of(self.root, self.root_span.clone(), path);
        self.at_span(span, path, message.into());
    }

    /// Records a problem of the fleet tables as a whole (one that is missing): at the top of the
    /// local file, or of the fleet document.
    fn at_document(&mut self, message: &str) {
        if self.fleet_from_json {
            let problem = Problem { path: String::new(), position: None, message: message.to_owned() };
            self.list.push((self.text.len() + 1 + self.list.len(), problem));
        } else {
            self.at(&KeyPath::default(), message);
        }
    }

    /// Records the `(key, message)` problems a table's `resolve` returned (the shape of
    /// `[resolver]` and the health tables) at that key of the top-level `table`, and hands
    /// back what it resolved.
    fn in_table<T>(&mut self, table: &str, (value, found): (T, Vec<(&'static str, String)>)) -> T {
        let path = KeyPath::default().key(table);
        for (key, message) in found {
            self.at(&path.key(key), message);
        }
        value
    }

    /// Deserializes one value, recording a problem on failure.
    fn de<T: DeserializeOwned, V: Input>(&mut self, value: &V, path: &KeyPath) -> Option<T> {
        match value.read() {
            Ok(v) => Some(v),
            Err((at, message, span)) => {
                let full = path.join_serde(&at);
                match span {
                    Some(span) => self.at_span(span, &full, message),
                    None => self.at(&full, message),
                }
                None
            }
        }
    }

    /// Deserializes an array of tables element by element, so one bad element does not hide
    /// the problems of the others. Keeps each element's index.
    fn de_array<T: DeserializeOwned, V: Input>(&mut self, value: &V, path: &KeyPath) -> Vec<(usize, T)> {
        let Some(items) = value.items() else {
            self.at(path, format!("expected an array of tables, found {}", value.kind()));
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let parsed = self.de(item, &path.index(i));
                if parsed.is_none()
                    && let (Some(id), Some(crate::location::Seg::Key(section))) = (item.id(), path.0.last())
                {
                    self.broken_ids.entry(section.clone()).or_default().insert(id.to_owned());
                }
                parsed.map(|v| (i, v))
            })
            .collect()
    }

    /// Reads one top-level table into `raw`; false for a key that is no table.
    fn table<V: Input>(&mut self, raw: &mut RawConfig, name: &str, value: &V) -> bool {
        let path = KeyPath::default().key(name);
        match name {
            "resolver" => raw.resolver = self.de(value, &path).unwrap_or_default(),
            "checks" => raw.checks = self.de(value, &path).unwrap_or_default(),
            "cluster" => raw.cluster = self.de(value, &path),
            "quorum" => raw.quorum = self.de(value, &path).unwrap_or_default(),
            "prober" => raw.prober = self.de(value, &path),
            "member" => raw.member = self.de(value, &path),
            "admin" => raw.admin = self.de(value, &path).unwrap_or_default(),
            "fleet" => raw.fleet = self.de(value, &path).unwrap_or_default(),
            "geoip" => raw.geoip = self.de(value, &path).unwrap_or_default(),
            "default_location" => raw.default_location = self.de(value, &path),
            "zones" => raw.zones = self.de_array(value, &path),
            "pops" => raw.pops = self.de_array(value, &path),
            "nodes" => raw.nodes = self.de_array(value, &path),
            "services" => raw.services = self.de_array(value, &path),
            "overrides" => raw.overrides = self.de_array(value, &path),
            _ => return false,
        }
        true
    }
}

/// Where the raw tables are read from: the local file's TOML (with spans), or the fleet
/// document's JSON (key paths only).
trait Input: Sized {
    /// The value as `T`, or where in it and why not (and the span, for TOML).
    fn read<T: DeserializeOwned>(&self) -> Result<T, (serde_path_to_error::Path, String, Option<Range<usize>>)>;
    /// The elements, when it is an array.
    fn items(&self) -> Option<&[Self]>;
    /// Its `id` key, when it is a table with a string id.
    fn id(&self) -> Option<&str>;
    /// What kind of value it is, for messages.
    fn kind(&self) -> &'static str;
}

impl Input for toml::Spanned<DeValue<'_>> {
    fn read<T: DeserializeOwned>(&self) -> Result<T, (serde_path_to_error::Path, String, Option<Range<usize>>)> {
        let mut value = self.clone();
        value.get_mut().make_owned();
        serde_path_to_error::deserialize::<_, T>(ValueDeserializer::from(value)).map_err(|e| {
            let span = e.inner().span();
            let message = e.inner().message().to_owned();
            (e.path().clone(), message, span)
        })
    }

    fn items(&self) -> Option<&[Self]> {
        self.get_ref().as_array().map(|a| &a[..])
    }

    fn id(&self) -> Option<&str> {
        self.get_ref().as_table().and_then(|t| t.get("id")).and_then(|v| v.get_ref().as_str())
    }

    fn kind(&self) -> &'static str {
        self.get_ref().type_str()
    }
}

impl Input for serde_json::Value {
    fn read<T: DeserializeOwned>(&self) -> Result<T, (serde_path_to_error::Path, String, Option<Range<usize>>)> {
        serde_path_to_error::deserialize::<_, T>(self).map_err(|e| {
            let message = e.inner().to_string();
            (e.path().clone(), message, None)
        })
    }

    fn items(&self) -> Option<&[Self]> {
        self.as_array().map(Vec::as_slice)
    }

    fn id(&self) -> Option<&str> {
        self.get("id").and_then(serde_json::Value::as_str)
    }

    fn kind(&self) -> &'static str {
        crate::fleet::kind(self)
    }
}

/// Where the fleet tables of a config come from.
#[derive(Debug, Clone, Copy)]
pub enum Fleet<'a> {
    /// The local file's own tables (the `file` store, and the seed of the others).
    File,
    /// A fleet document; fleet tables in the local file are ignored.
    Document(&'a std::sync::Arc<FleetDocument>),
    /// None yet: the fleet tables are empty, and nothing requires them.
    Pending,
}

pub(crate) fn parse(text: &str, base: &Path, fleet: Fleet<'_>) -> Result<Config, ConfigError> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .map(|e| Problem {
                path: String::new(),
                position: e.span().map(|s| line_col(text, s.start)),
                message: e.message().trim().to_owned(),
            })
            .collect();
        return Err(ConfigError::Invalid { file: None, problems });
    }
    let root_span = root.span();
    let table = root.get_ref();
    let from_file = matches!(fleet, Fleet::File);
    let mut problems = Problems {
        text,
        root: table,
        root_span,
        list: Vec::new(),
        broken_ids: HashMap::new(),
        fleet_from_json: !from_file,
        pending: matches!(fleet, Fleet::Pending),
    };
    let mut raw = RawConfig::default();
    let mut ignored = Vec::new();
    for (key, value) in table.iter() {
        let name = key.get_ref().as_ref();
        if !from_file && FLEET_TABLES.contains(&name) {
            ignored.push(name.to_owned());
        } else if !problems.table(&mut raw, name, value) {
            problems.at_span(
                key.span(),
                &KeyPath::default().key(name),
                format!("unknown key `{name}`, expected one of {}", TOP_LEVEL_KEYS.join(", ")),
            );
        }
    }
    let document = match fleet {
        Fleet::Document(document) => {
            for (name, value) in document.tables() {
                // Checked when the document was read: only fleet tables.
                problems.table(&mut raw, name, value);
            }
            document.clone()
        }
        Fleet::Pending => Default::default(),
        Fleet::File => std::sync::Arc::new(match toml::from_str::<toml::Table>(text) {
            Ok(table) => FleetDocument::from_toml(&table),
            Err(_) => FleetDocument::default(),
        }),
    };
    let mut config = raw.validate(base, &mut problems);
    config.fleet.document = document;
    config.fleet.pending = problems.pending;
    if !ignored.is_empty() {
        config.warnings.push(format!(
            "{} in this file are not read: the fleet document comes from the {} store (the file's fleet tables seed it only while it is empty)",
            ignored.join(", "),
            config.fleet.store.as_str()
        ));
    }
    if problems.list.is_empty() {
        Ok(config)
    } else {
        let mut list = problems.list;
        list.sort_by_key(|(offset, _)| *offset);
        Err(ConfigError::Invalid { file: None, problems: list.into_iter().map(|(_, p)| p).collect() })
    }
}

/// A DNS name made lower-case and absolute, or why it is not a valid name.
pub(crate) fn normalize_name(name: &str) -> Result<String, String> {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    if n == "." {
        return Err("the root is not a valid name here".into());
    }
    if n.len() > 254 {
        return Err(format!("name `{name}` is longer than 253 characters"));
    }
    for label in n[..n.len() - 1].split('.') {
        if label.is_empty() {
            return Err(format!("name `{name}` has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("name `{name}` has a label longer than 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*') {
            return Err(format!("name `{name}` has a character outside letters, digits, `-` and `_`"));
        }
    }
    Ok(n)
}

fn place_point(
    place_pop: &Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    path: &KeyPath,
    pops: &PopIds<'_>,
    problems: &mut Problems<'_>,
) -> Option<Result<PopId, GeoPoint>> {
    match (place_pop, lat, lon) {
        (Some(pop), None, None) => {
            if pops.contains(pop) {
                Some(Ok(PopId::from(pop.as_str())))
            } else {
                problems.at(&path.key("pop"), format!("unknown pop `{pop}`"));
                None
            }
        }
        (None, Some(lat), Some(lon)) => {
            let point = GeoPoint::new(lat, lon);
            if point.is_valid() {
                Some(Err(point))
            } else {
                problems.at(&path.key("lat"), format!("coordinates ({lat}, {lon}) are out of range"));
                None
            }
        }
        _ => {
            problems.at(path, "give either `pop` or both `lat` and `lon`");
            None
        }
    }
}

/// Whether `name` is `origin` or below it (both lower-case, absolute).
pub fn in_zone(name: &str, origin: &str) -> bool {
    name == origin || (name.ends_with(origin) && name.as_bytes().get(name.len() - origin.len() - 1) == Some(&b'.'))
}
