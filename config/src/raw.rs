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
use crate::health::{RawAdmin, RawCheck, RawCluster, RawMember, RawProber, RawQuorum};
use crate::location::{KeyPath, line_col, span_of};
use crate::model::*;

/// Default bound on a PowerDNS request body. A lookup is ~200 bytes; 64 KiB leaves room for
/// every other call PowerDNS makes while refusing anything absurd.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default permissions of the unix socket: owner and group read and write (PowerDNS's user
/// joins the resolver's group, or the other way round).
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// Default answer TTL, seconds.
pub const DEFAULT_TTL: u32 = 30;
/// Default tie band: PoPs in one metro area (within 50 km of the nearest) share the traffic.
pub const DEFAULT_TIE_BAND_KM: f64 = 50.0;
/// Default node weight.
pub const DEFAULT_WEIGHT: u32 = 100;
/// Largest accepted node weight.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Largest accepted TTL, one day.
pub const MAX_TTL: u32 = 86_400;

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
}

impl Default for RawResolver {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            socket: None,
            socket_mode: default_socket_mode(),
            max_request_bytes: default_max_request_bytes(),
            threads: default_resolver_threads(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGeoIp {
    databases: Vec<PathBuf>,
}

/// A place: a PoP or coordinates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlace {
    pop: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    origin: String,
    file: PathBuf,
    #[serde(default)]
    metadata: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPop {
    id: String,
    lat: f64,
    lon: f64,
    region: Option<String>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    cidr: String,
    pop: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
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
    resolver: RawResolver,
    geoip: RawGeoIp,
    default_location: Option<RawPlace>,
    zones: Vec<(usize, RawZone)>,
    pops: Vec<(usize, RawPop)>,
    nodes: Vec<(usize, RawNode)>,
    services: Vec<(usize, RawService)>,
    overrides: Vec<(usize, RawOverride)>,
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
        let span = span_of(self.root, self.root_span.clone(), path);
        self.at_span(span, path, message.into());
    }

    /// Deserializes one value, recording a problem on failure.
    fn de<T: DeserializeOwned>(&mut self, value: &toml::Spanned<DeValue<'_>>, path: &KeyPath) -> Option<T> {
        let mut value = value.clone();
        value.get_mut().make_owned();
        match serde_path_to_error::deserialize::<_, T>(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                let full = path.join_serde(e.path());
                let span = e.inner().span().unwrap_or_else(|| span_of(self.root, self.root_span.clone(), &full));
                self.at_span(span, &full, e.inner().message().to_owned());
                None
            }
        }
    }

    /// Deserializes an array of tables element by element, so one bad element does not hide
    /// the problems of the others. Keeps each element's index.
    fn de_array<T: DeserializeOwned>(&mut self, value: &toml::Spanned<DeValue<'_>>, path: &KeyPath) -> Vec<(usize, T)> {
        let Some(items) = value.get_ref().as_array() else {
            self.at_span(
                value.span(),
                path,
                format!("expected an array of tables, found {}", value.get_ref().type_str()),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let parsed = self.de(item, &path.index(i));
                if parsed.is_none() {
                    let id = item.get_ref().as_table().and_then(|t| t.get("id")).and_then(|v| v.get_ref().as_str());
                    if let (Some(id), Some(crate::location::Seg::Key(section))) = (id, path.0.last()) {
                        self.broken_ids.entry(section.clone()).or_default().insert(id.to_owned());
                    }
                }
                parsed.map(|v| (i, v))
            })
            .collect()
    }
}

pub(crate) fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
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
    let mut problems = Problems { text, root: table, root_span, list: Vec::new(), broken_ids: HashMap::new() };
    let mut raw = RawConfig::default();
    let top = KeyPath::default();
    for (key, value) in table.iter() {
        let name = key.get_ref().as_ref();
        let path = top.key(name);
        match name {
            "resolver" => raw.resolver = problems.de(value, &path).unwrap_or_default(),
            "checks" => raw.checks = problems.de(value, &path).unwrap_or_default(),
            "cluster" => raw.cluster = problems.de(value, &path),
            "quorum" => raw.quorum = problems.de(value, &path).unwrap_or_default(),
            "prober" => raw.prober = problems.de(value, &path),
            "member" => raw.member = problems.de(value, &path),
            "admin" => raw.admin = problems.de(value, &path).unwrap_or_default(),
            "geoip" => raw.geoip = problems.de(value, &path).unwrap_or_default(),
            "default_location" => raw.default_location = problems.de(value, &path),
            "zones" => raw.zones = problems.de_array(value, &path),
            "pops" => raw.pops = problems.de_array(value, &path),
            "nodes" => raw.nodes = problems.de_array(value, &path),
            "services" => raw.services = problems.de_array(value, &path),
            "overrides" => raw.overrides = problems.de_array(value, &path),
            other => problems.at_span(
                key.span(),
                &path,
                format!("unknown key `{other}`, expected one of {}", TOP_LEVEL_KEYS.join(", ")),
            ),
        }
    }
    let config = validate(raw, base, &mut problems);
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
    pops: &HashMap<&str, GeoPoint>,
    problems: &mut Problems<'_>,
) -> Option<Result<PopId, GeoPoint>> {
    match (place_pop, lat, lon) {
        (Some(pop), None, None) => {
            if pops.contains_key(pop.as_str()) {
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

fn validate(raw: RawConfig, base: &Path, problems: &mut Problems<'_>) -> Config {
    let resolve = |p: &Path| {
        if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
    };
    let top = KeyPath::default();
    let mut warnings = Vec::new();

    if raw.resolver.max_request_bytes < 1024 {
        problems.at(
            &top.key("resolver").key("max_request_bytes"),
            format!(
                "max_request_bytes {} is below 1024; PowerDNS requests would be refused",
                raw.resolver.max_request_bytes
            ),
        );
    }

    if let Some(problem) = crate::health::threads_problem(raw.resolver.threads) {
        problems.at(&top.key("resolver").key("threads"), problem);
    }
    if raw.resolver.socket_mode > 0o777 {
        problems.at(
            &top.key("resolver").key("socket_mode"),
            format!(
                "socket_mode {:#o} is not a permission mode (write it in octal, e.g. 0o660)",
                raw.resolver.socket_mode
            ),
        );
    }

    // Files are only named here; the resolver opens them (and `--check-config` does too).
    let geoip: Vec<PathBuf> = raw.geoip.databases.iter().map(|p| resolve(p)).collect();
    if geoip.is_empty() {
        warnings.push(
            "no GeoIP database configured: every client is placed by overrides or the default location".to_owned(),
        );
    }

    let mut zones = Vec::new();
    let mut origins = HashSet::new();
    for (i, z) in &raw.zones {
        let path = top.key("zones").index(*i);
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
                zones.push(ZoneFile { origin, file: resolve(&z.file), metadata: z.metadata.clone() });
            }
            Err(e) => problems.at(&path.key("origin"), e),
        }
    }

    let mut pops = Vec::new();
    let mut pop_points: HashMap<&str, GeoPoint> = HashMap::new();
    for (i, p) in &raw.pops {
        let path = top.key("pops").index(*i);
        if p.id.is_empty() {
            problems.at(&path.key("id"), "pop id is empty");
        } else if pop_points.contains_key(p.id.as_str()) {
            problems.at(&path.key("id"), format!("duplicate pop id `{}`", p.id));
        }
        let location = GeoPoint::new(p.lat, p.lon);
        if !(-90.0..=90.0).contains(&p.lat) || !p.lat.is_finite() {
            problems.at(&path.key("lat"), format!("latitude {} is outside -90..=90", p.lat));
        }
        if !(-180.0..=180.0).contains(&p.lon) || !p.lon.is_finite() {
            problems.at(&path.key("lon"), format!("longitude {} is outside -180..=180", p.lon));
        }
        pop_points.entry(p.id.as_str()).or_insert(location);
        pops.push(Pop { id: PopId::from(p.id.as_str()), location, region: p.region.clone() });
    }
    if raw.pops.is_empty() && !problems.broken_ids.contains_key("pops") {
        problems.at(&top, "no [[pops]] configured");
    }
    // A PoP that failed to parse is reported once; references to it are not errors too.
    let broken_pops = problems.broken_ids.get("pops").cloned().unwrap_or_default();
    let broken_nodes = problems.broken_ids.get("nodes").cloned().unwrap_or_default();
    for id in &broken_pops {
        pop_points.entry(id.as_str()).or_insert(GeoPoint::new(0.0, 0.0));
    }

    let mut nodes = Vec::new();
    let mut node_ids: HashMap<&str, usize> = HashMap::new();
    for (i, n) in &raw.nodes {
        let path = top.key("nodes").index(*i);
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
        } else if node_ids.insert(n.id.as_str(), nodes.len()).is_some() {
            problems.at(&path.key("id"), format!("duplicate node id `{}`", n.id));
        }
        if !pop_points.contains_key(n.pop.as_str()) {
            problems.at(&path.key("pop"), format!("unknown pop `{}`", n.pop));
        }
        if n.ipv4.is_none() && n.ipv6.is_none() {
            problems.at(&path, format!("node `{}` has neither `ipv4` nor `ipv6`", n.id));
        }
        if n.weight == 0 || n.weight > MAX_WEIGHT {
            problems.at(
                &path.key("weight"),
                format!("weight {} is outside 1..={MAX_WEIGHT} (use `enabled = false` to take a node out)", n.weight),
            );
        }
        let (check, check_problems) = n.check.clone().unwrap_or_default().over(&raw.checks).resolve();
        for (key, message) in check_problems {
            let at = if n.check.is_some() { path.key("check").key(key) } else { top.key("checks").key(key) };
            problems.at(&at, message);
        }
        nodes.push(Node {
            check,
            id: NodeId::from(n.id.as_str()),
            pop: PopId::from(n.pop.as_str()),
            ipv4: n.ipv4,
            ipv6: n.ipv6,
            weight: n.weight,
            enabled: n.enabled,
        });
    }

    let check_node_list = |list: &[String], path: &KeyPath, problems: &mut Problems<'_>| -> Vec<NodeId> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (j, id) in list.iter().enumerate() {
            if broken_nodes.contains(id) {
                continue;
            }
            if !node_ids.contains_key(id.as_str()) {
                problems.at(&path.index(j), format!("unknown node `{id}`"));
            } else if !seen.insert(id.as_str()) {
                problems.at(&path.index(j), format!("node `{id}` listed twice"));
            } else {
                out.push(NodeId::from(id.as_str()));
            }
        }
        out
    };

    let mut services = Vec::new();
    let mut names = HashSet::new();
    for (i, s) in &raw.services {
        let path = top.key("services").index(*i);
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
        let types = RecordTypes { a: s.types.contains(&RawType::A), aaaa: s.types.contains(&RawType::Aaaa) };
        if s.types.is_empty() {
            problems.at(&path.key("types"), "types is empty; give \"A\", \"AAAA\" or both");
        }
        let pool: Vec<NodeId> = match (&s.nodes, &s.pops) {
            (Some(_), Some(_)) => {
                problems.at(&path, "give `nodes` or `pops`, not both");
                Vec::new()
            }
            (Some(list), None) => check_node_list(list, &path.key("nodes"), problems),
            (None, Some(list)) => {
                for (j, p) in list.iter().enumerate() {
                    if !pop_points.contains_key(p.as_str()) {
                        problems.at(&path.key("pops").index(j), format!("unknown pop `{p}`"));
                    }
                }
                nodes.iter().filter(|n| list.iter().any(|p| p == n.pop.as_str())).map(|n| n.id.clone()).collect()
            }
            (None, None) => nodes.iter().map(|n| n.id.clone()).collect(),
        };
        if pool.is_empty() {
            problems.at(&path, format!("service `{name}` has no nodes"));
        }
        let pool_nodes = || pool.iter().filter_map(|id| node_ids.get(id.as_str()).map(|&k| &nodes[k]));
        if types.a && !pool_nodes().any(|n| n.ipv4.is_some()) {
            problems.at(&path.key("types"), format!("service `{name}` answers A but none of its nodes has `ipv4`"));
        }
        if types.aaaa && !pool_nodes().any(|n| n.ipv6.is_some()) {
            problems.at(&path.key("types"), format!("service `{name}` answers AAAA but none of its nodes has `ipv6`"));
        }
        if !pool.is_empty() && !pool_nodes().any(|n| n.enabled) {
            warnings.push(format!("service `{name}`: every node is disabled"));
        }
        if s.ttl > MAX_TTL {
            problems.at(&path.key("ttl"), format!("ttl {} is above {MAX_TTL}", s.ttl));
        }
        if s.answers == 0 || s.answers > MAX_ANSWERS {
            problems.at(&path.key("answers"), format!("answers {} is outside 1..={MAX_ANSWERS}", s.answers));
        }
        if !(0.0..=20_000.0).contains(&s.tie_band_km) {
            problems.at(&path.key("tie_band_km"), format!("tie_band_km {} is outside 0..=20000", s.tie_band_km));
        }
        let all_down = match (s.all_down, &s.fallback_pool) {
            (RawPolicy::FallbackPool, Some(list)) if !list.is_empty() => {
                AllDownPolicy::FallbackPool(check_node_list(list, &path.key("fallback_pool"), problems))
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
        };
        services.push(Service {
            name,
            types,
            nodes: pool,
            ttl: s.ttl,
            answers: s.answers,
            tie_band_km: s.tie_band_km,
            all_down,
        });
    }
    if zones.is_empty() && !services.is_empty() {
        warnings.push("no [[zones]] configured: managed names answer only their A/AAAA records, and their MX/TXT/CAA records in the zone are hidden".to_owned());
    }

    let default_path = top.key("default_location");
    let default_location = match &raw.default_location {
        Some(place) => match place_point(&place.pop, place.lat, place.lon, &default_path, &pop_points, problems) {
            Some(Ok(pop)) => DefaultLocation::Pop(pop),
            Some(Err(point)) => DefaultLocation::Point(point),
            None => DefaultLocation::Point(GeoPoint::new(0.0, 0.0)),
        },
        None => {
            problems.at(&top, "missing `default_location` (e.g. `default_location = { pop = \"fra\" }`): where clients go when GeoIP cannot place them");
            DefaultLocation::Point(GeoPoint::new(0.0, 0.0))
        }
    };

    let mut overrides = Vec::new();
    for (i, o) in &raw.overrides {
        let path = top.key("overrides").index(*i);
        let net = match o.cidr.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                problems.at(
                    &path.key("cidr"),
                    format!("cidr `{}` has host bits set; did you mean `{}`?", o.cidr, net.trunc()),
                );
                continue;
            }
            Ok(net) => net,
            Err(_) => {
                problems.at(&path.key("cidr"), format!("`{}` is not a CIDR network (e.g. 198.51.100.0/24)", o.cidr));
                continue;
            }
        };
        let target = match place_point(&o.pop, o.lat, o.lon, &path, &pop_points, problems) {
            Some(Ok(pop)) => OverrideTarget::Pop(pop),
            Some(Err(point)) => OverrideTarget::Point(point),
            None => continue,
        };
        overrides.push(Override { net, target });
    }

    let (quorum, quorum_problems) = raw.quorum.resolve();
    for (key, message) in quorum_problems {
        problems.at(&top.key("quorum").key(key), message);
    }
    let (admin, admin_problems) = raw.admin.resolve(base);
    for (key, message) in admin_problems {
        problems.at(&top.key("admin").key(key), message);
    }
    let cluster = raw.cluster.as_ref().map(|c| {
        let (cluster, cluster_problems) = c.resolve(base);
        for (key, message) in cluster_problems {
            problems.at(&top.key("cluster").key(key), message);
        }
        cluster
    });
    let prober = raw.prober.as_ref().map(|p| {
        let (prober, prober_problems) = p.resolve(base);
        for (key, message) in prober_problems {
            problems.at(&top.key("prober").key(key), message);
        }
        if !pop_points.contains_key(prober.pop.as_str()) {
            problems.at(&top.key("prober").key("pop"), format!("unknown pop `{}`", prober.pop));
        }
        prober
    });
    let member = raw.member.as_ref().map(|m| {
        let (member, member_problems) = m.resolve(base);
        for (key, message) in member_problems {
            problems.at(&top.key("member").key(key), message);
        }
        member
    });
    if (prober.is_some() || member.is_some()) && cluster.is_none() {
        problems.at(&top, "[prober] and [member] join a gossip cluster: add a [cluster] table (id, key_file, seeds)");
    }
    Config {
        cluster,
        quorum,
        prober,
        member,
        admin,
        resolver: ResolverConfig {
            listen: raw.resolver.listen,
            socket: raw.resolver.socket.as_deref().map(resolve),
            socket_mode: raw.resolver.socket_mode,
            max_request_bytes: raw.resolver.max_request_bytes,
            threads: raw.resolver.threads,
        },
        geoip,
        zones,
        default_location,
        pops,
        nodes,
        services,
        overrides,
        warnings,
    }
}

/// Whether `name` is `origin` or below it (both lower-case, absolute).
pub(crate) fn in_zone(name: &str, origin: &str) -> bool {
    name == origin || (name.ends_with(origin) && name.as_bytes().get(name.len() - origin.len() - 1) == Some(&b'.'))
}
