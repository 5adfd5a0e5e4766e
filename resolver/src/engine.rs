//! The answering engine: one immutable snapshot of config, zones, GeoIP and health, turned into
//! remote-backend replies.
//!
//! An [`Engine`] is built off the hot path (at start, on reload, on a health change) and
//! published through `arc_swap`; lookups read it without locks. Building pre-renders everything
//! that does not depend on the client: each managed name's static records as JSON, its quoted
//! name, its plans per address family.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use geolb_common::geo::UnitVector;
use geolb_common::nearest::NearIndex;
use geolb_common::{NodeId, PopId};
use geolb_config::Config;

use crate::geoip::GeoIp;
use crate::health::ServedHealth;
use crate::locate::Locator;
use crate::pdns::reply::{self, RecordWriter};
use crate::pdns::{Lookup, QType};
use crate::select::{Family, Outcome, Picked, Selector, ServicePlan, client_key};
use crate::zones::ZoneSet;

/// What a lookup did, as counted (`Error`: a malformed call, which never reaches the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOutcome {
    /// Records answered.
    Answered,
    /// `false`: not ours, or nothing of that type; PowerDNS asks the next backend.
    FellThrough,
    /// The call was malformed.
    Error,
}

impl LookupOutcome {
    /// Its index in [`LOOKUP_OUTCOMES`] and [`Counters::lookups`].
    fn index(self) -> usize {
        match self {
            LookupOutcome::Answered => 0,
            LookupOutcome::FellThrough => 1,
            LookupOutcome::Error => 2,
        }
    }
}

/// A qtype as lookups are counted: one of [`COUNTED_QTYPES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountedQtype(usize);

impl CountedQtype {
    /// Anything not counted by name (and malformed calls, whose qtype is unknown).
    pub const OTHER: CountedQtype = CountedQtype(COUNTED_QTYPES.len() - 1);

    /// The counted qtype of `qtype`.
    pub fn of(qtype: &QType<'_>) -> CountedQtype {
        let name = match qtype {
            QType::Any => "ANY",
            QType::A => "A",
            QType::Aaaa => "AAAA",
            QType::Other(name) => name,
        };
        // `other` itself is not a qtype: match the named ones only.
        COUNTED_QTYPES[..Self::OTHER.0]
            .iter()
            .position(|t| t.eq_ignore_ascii_case(name))
            .map_or(Self::OTHER, CountedQtype)
    }
}

/// Per-name pre-rendered data.
#[derive(Debug)]
struct Managed {
    plan_index: usize,
    /// The name as a JSON string literal.
    qname_json: Box<str>,
    /// Static records of the name that geolb does not replace: (qtype, rendered JSON).
    statics: Vec<(Box<str>, Box<[u8]>)>,
}

/// The qtypes lookups are counted by; anything else counts as `other`.
pub const COUNTED_QTYPES: [&str; 10] = ["ANY", "A", "AAAA", "SOA", "NS", "CNAME", "MX", "TXT", "CAA", "other"];

/// Lookup outcomes as counted: answered, fell through (`false`), malformed call.
pub const LOOKUP_OUTCOMES: [&str; 3] = ["answered", "fell_through", "error"];

/// One service's answer counters, by (PoP, node).
pub type ServiceAnswers = BTreeMap<(PopId, NodeId), Arc<AtomicU64>>;

/// Per node a service may answer, by [`Candidate::slot`](crate::select::Candidate): its answer
/// counter and its PoP's location (`None` for an id the config does not place).
type AnswerTargets = Vec<Option<(Arc<AtomicU64>, UnitVector)>>;

/// Counters the engine keeps; exported as metrics by the caller.
#[derive(Default)]
pub struct Counters {
    /// Lookups by [`CountedQtype`] and [`LookupOutcome`] (malformed calls, whose qtype is
    /// unknown, count as `other`).
    pub lookups: [[AtomicU64; LOOKUP_OUTCOMES.len()]; COUNTED_QTYPES.len()],
    /// GeoIP lookups that failed on a corrupt record.
    pub geoip_errors: AtomicU64,
    /// Answers given by an all-down policy.
    pub all_down_answers: AtomicU64,
    /// Answers from the whole pool whatever its state, because nothing else was left.
    pub last_resort_answers: AtomicU64,
    /// Addresses answered per service, PoP and node; entries are created by [`Engine::build`]
    /// for the nodes each service can answer, and kept across engine generations. Keyed by
    /// service first: a build finds each service once, then its few nodes.
    pub answers: std::sync::Mutex<BTreeMap<Box<str>, ServiceAnswers>>,
    /// Distance from the client's location to each answered node's PoP, when exported.
    pub distance_km: std::sync::OnceLock<prometheus::Histogram>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("geoip_errors", &self.geoip_errors)
            .field("all_down_answers", &self.all_down_answers)
            .field("last_resort_answers", &self.last_resort_answers)
            .finish_non_exhaustive()
    }
}

impl Counters {
    /// Counts one call.
    pub fn count_lookup(&self, qtype: CountedQtype, outcome: LookupOutcome) {
        if let Some(c) = self.lookups.get(qtype.0).and_then(|row| row.get(outcome.index())) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Per service of `config`, in order: every node it may answer (its nodes and its fallback
/// pool), with the answer counter registered in `counters` and its PoP's location.
fn answer_targets(config: &Config, counters: &Counters) -> Vec<AnswerTargets> {
    let pops: HashMap<&PopId, UnitVector> = config.pops.iter().map(|p| (&p.id, p.location.unit_vector())).collect();
    let nodes: HashMap<&NodeId, &geolb_config::Node> = config.nodes.iter().map(|n| (&n.id, n)).collect();
    let mut registry = counters.answers.lock().unwrap_or_else(|p| p.into_inner());
    config
        .services
        .iter()
        .map(|service| {
            let counters = match registry.get_mut(service.name.as_str()) {
                Some(counters) => counters,
                None => registry.entry(service.name.as_str().into()).or_default(),
            };
            crate::select::answerable(service)
                .into_iter()
                .map(|id| {
                    let node = nodes.get(id)?;
                    let pop = *pops.get(&node.pop)?;
                    Some((counters.entry((node.pop.clone(), id.clone())).or_default().clone(), pop))
                })
                .collect()
        })
        .collect()
}

/// An immutable answering snapshot.
#[derive(Debug)]
pub struct Engine {
    selector: Selector,
    /// Per-region selectors, when any region has a view of its own.
    regions: Option<Regions>,
    locator: Locator,
    zones: Arc<ZoneSet>,
    managed: HashMap<Box<str>, Managed>,
    /// Per zone origin: the configured metadata, all kinds rendered as one reply, and by kind.
    metadata: HashMap<Box<str>, ZoneMetadata>,
    counters: Arc<Counters>,
    /// Per service (plan index): each node it can answer, with its answer counter and its PoP's
    /// location (for the distance histogram).
    answer_targets: Vec<AnswerTargets>,
}

/// Which selector serves a client: the one of the region of its nearest PoP.
#[derive(Debug)]
struct Regions {
    index: NearIndex,
    pop_vectors: Vec<UnitVector>,
    /// Per PoP (config order), its index in `selectors`, if its region has a view.
    pop_region: Vec<Option<usize>>,
    selectors: Vec<(Arc<str>, Selector)>,
}

impl Regions {
    /// The selector for a client at `v`, if its nearest PoP's region has one.
    fn selector_for(&self, v: &UnitVector) -> Option<&Selector> {
        let nearest = self
            .index
            .candidates(v)
            .iter()
            .map(|&i| i as usize)
            .filter_map(|i| Some((i, self.pop_vectors.get(i)?.dot(v))))
            .max_by(|a, b| a.1.total_cmp(&b.1))?
            .0;
        let region = (*self.pop_region.get(nearest)?)?;
        self.selectors.get(region).map(|(_, s)| s)
    }
}

/// A zone's metadata, replies pre-rendered.
#[derive(Debug)]
struct ZoneMetadata {
    all: Box<[u8]>,
    by_kind: HashMap<Box<str>, Box<[u8]>>,
}

impl ZoneMetadata {
    fn new(meta: &std::collections::BTreeMap<String, Vec<String>>) -> ZoneMetadata {
        let render = |v: serde_json::Value| {
            serde_json::to_vec(&serde_json::json!({ "result": v })).unwrap_or_default().into_boxed_slice()
        };
        ZoneMetadata {
            all: render(serde_json::json!(meta)),
            by_kind: meta.iter().map(|(k, v)| (k.as_str().into(), render(serde_json::json!(v)))).collect(),
        }
    }
}

/// Longest name PowerDNS can send (255 octets in wire form → at most 254 characters + dot).
const MAX_NAME: usize = 256;

impl Engine {
    /// Builds a snapshot from the config and the health view (global, per region, drains).
    /// Cheap enough to run on every health change.
    pub fn build(
        config: &Config,
        geoip: Option<Arc<GeoIp>>,
        zones: Arc<ZoneSet>,
        view: &ServedHealth,
        counters: Arc<Counters>,
    ) -> Engine {
        let selector = Selector::build(config, &view.global());
        // A client is steered by its own region's probers ("down from here"): the region of
        // the PoP nearest to it. Regions without a view of their own use the global one.
        let pop_vectors: Vec<UnitVector> = config.pops.iter().map(|p| p.location.unit_vector()).collect();
        let mut regional: Vec<(Arc<str>, Selector)> = Vec::new();
        let pop_region: Vec<Option<usize>> = config
            .pops
            .iter()
            .map(|p| {
                let region = p.region.as_deref().filter(|r| view.regional.contains_key(*r))?;
                match regional.iter().position(|(r, _)| &**r == region) {
                    Some(i) => Some(i),
                    None => {
                        regional.push((region.into(), Selector::build(config, &view.region(region))));
                        Some(regional.len() - 1)
                    }
                }
            })
            .collect();
        let regions = (!regional.is_empty()).then(|| Regions {
            index: NearIndex::build(&pop_vectors, 0.0),
            pop_vectors,
            pop_region,
            selectors: regional,
        });
        let mut managed = HashMap::new();
        for (plan_index, plan) in selector.services().iter().enumerate() {
            let statics = zones
                .records(&plan.name)
                .iter()
                .filter(|r| !plan.manages(&r.qtype))
                .map(|r| (r.qtype.clone(), reply::static_record(&plan.name, &r.qtype, &r.content, r.ttl)))
                .collect();
            let qname_json = serde_json::to_string(&*plan.name).unwrap_or_default().into_boxed_str();
            managed.insert(plan.name.clone(), Managed { plan_index, qname_json, statics });
        }
        let metadata =
            config.zones.iter().map(|z| (z.origin.as_str().into(), ZoneMetadata::new(&z.metadata))).collect();
        let answer_targets = answer_targets(config, &counters);
        Engine {
            locator: Locator::new(config, geoip),
            selector,
            regions,
            zones,
            managed,
            metadata,
            counters,
            answer_targets,
        }
    }

    /// The zones this snapshot answers from.
    pub fn zones(&self) -> &Arc<ZoneSet> {
        &self.zones
    }

    /// The counters every engine generation shares.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The GeoIP databases this snapshot uses.
    pub fn geoip(&self) -> Option<&Arc<GeoIp>> {
        self.locator.geoip()
    }

    /// Every metadata kind of zone `name`, as one rendered reply; `None` for a zone without any.
    pub fn all_metadata(&self, name: &str) -> Option<&[u8]> {
        let mut buf = [0u8; MAX_NAME];
        normalize(name, &mut buf).and_then(|n| self.metadata.get(n)).map(|m| &*m.all)
    }

    /// The values of metadata `kind` of zone `name`, as one rendered reply.
    pub fn metadata(&self, name: &str, kind: &str) -> Option<&[u8]> {
        let mut buf = [0u8; MAX_NAME];
        normalize(name, &mut buf).and_then(|n| self.metadata.get(n)).and_then(|m| m.by_kind.get(kind)).map(|v| &**v)
    }

    /// Answers a lookup.
    pub fn lookup(&self, q: &Lookup<'_>, out: &mut Vec<u8>) -> LookupOutcome {
        let mut buf = [0u8; MAX_NAME];
        let Some(name) = normalize(&q.qname, &mut buf) else {
            out.extend_from_slice(reply::FALSE);
            return LookupOutcome::FellThrough;
        };
        let Some(managed) = self.managed.get(name) else {
            out.extend_from_slice(reply::FALSE);
            return LookupOutcome::FellThrough;
        };
        let mut w = RecordWriter::new(out);
        let types = self.selector.services()[managed.plan_index].types;
        // A type geolb answers replaces the name's static records of that type.
        let (want_a, want_aaaa, statics) = match q.qtype {
            QType::Any => (types.a, types.aaaa, Statics::All),
            QType::A => (types.a, false, if types.a { Statics::None } else { Statics::OfType("A") }),
            QType::Aaaa => (false, types.aaaa, if types.aaaa { Statics::None } else { Statics::OfType("AAAA") }),
            QType::Other(t) => (false, false, Statics::OfType(t)),
        };
        let families = [(want_a, Family::V4, "A"), (want_aaaa, Family::V6, "AAAA")];
        let placed = (want_a || want_aaaa).then(|| self.place(q));
        let selector = placed
            .as_ref()
            .and_then(|p| self.regions.as_ref().and_then(|r| r.selector_for(&p.vector)))
            .unwrap_or(&self.selector);
        let plan = &selector.services()[managed.plan_index];
        if let Some(placed) = &placed {
            for &(wanted, family, qtype) in &families {
                if wanted {
                    let mut picked = Picked::new(usize::from(plan.answers));
                    let outcome = plan.select(family, &placed.vector, placed.key, &mut picked);
                    if outcome != Outcome::Healthy {
                        self.counters.all_down_answers.fetch_add(1, Ordering::Relaxed);
                    }
                    write_picked(&picked, plan, qtype, placed, &managed.qname_json, &mut w);
                    self.count_answers(managed.plan_index, &picked, &placed.vector);
                }
            }
        }
        for (qtype, json) in &managed.statics {
            if statics.include(qtype) {
                w.raw(json);
            }
        }
        if let Some(placed) = placed.as_ref().filter(|_| w.count() == 0) {
            // Nothing at all for a managed name (every node drained or disabled, or `nodata`
            // with no other record at the name): `false` would make PowerDNS serve the zone's
            // placeholder with scope 0 and cache it for every client. Answer the nearest pool
            // nodes instead, whatever their state, and count it.
            self.counters.last_resort_answers.fetch_add(1, Ordering::Relaxed);
            for &(wanted, family, qtype) in &families {
                if wanted {
                    let mut picked = Picked::new(usize::from(plan.answers));
                    plan.last_resort(family, &placed.vector, placed.key, &mut picked);
                    write_picked(&picked, plan, qtype, placed, &managed.qname_json, &mut w);
                    self.count_answers(managed.plan_index, &picked, &placed.vector);
                }
            }
        }
        let answered = w.count() > 0;
        w.finish();
        if answered { LookupOutcome::Answered } else { LookupOutcome::FellThrough }
    }

    /// Counts the answered nodes of service `plan_index` and their distance from `client`.
    fn count_answers(&self, plan_index: usize, picked: &Picked<'_>, client: &UnitVector) {
        let Some(targets) = self.answer_targets.get(plan_index) else { return };
        let distance = self.counters.distance_km.get();
        for c in picked.iter() {
            if let Some(Some((count, pop))) = targets.get(c.slot as usize) {
                count.fetch_add(1, Ordering::Relaxed);
                if let Some(h) = distance {
                    h.observe(UnitVector::dot_to_km(client.dot(pop)));
                }
            }
        }
    }

    /// Where the client of a lookup is, its rendezvous key and the answer's ECS scope.
    fn place(&self, q: &Lookup<'_>) -> Placed {
        // An IPv4-mapped IPv6 client is placed and scoped as the IPv4 address it is; the
        // scope goes back in IPv6 bits, the family PowerDNS's ECS option is in.
        let (client, source_prefix, scope_offset) = match q.client {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), q.source_prefix.saturating_sub(96), 96),
                None => (q.client, q.source_prefix, 0),
            },
            v4 => (v4, q.source_prefix, 0),
        };
        let loc = self.locator.locate(client, |_| {
            self.counters.geoip_errors.fetch_add(1, Ordering::Relaxed);
        });
        let scope = scope(loc.prefix_len, source_prefix);
        Placed { vector: loc.vector, key: client_key(client, scope), scope: scope + scope_offset }
    }
}

/// Which of a managed name's static records a lookup answers.
#[derive(Debug, Clone, Copy)]
enum Statics<'a> {
    /// All of them (`ANY`).
    All,
    /// None: geolb answers the type asked itself.
    None,
    /// Those of one type.
    OfType(&'a str),
}

impl Statics<'_> {
    fn include(self, qtype: &str) -> bool {
        match self {
            Statics::All => true,
            Statics::None => false,
            Statics::OfType(t) => t.eq_ignore_ascii_case(qtype),
        }
    }
}

/// A located client.
struct Placed {
    vector: UnitVector,
    key: u64,
    scope: u8,
}

fn write_picked(
    picked: &Picked<'_>,
    plan: &ServicePlan,
    qtype: &str,
    placed: &Placed,
    qname_json: &str,
    w: &mut RecordWriter<'_>,
) {
    for c in picked.iter() {
        w.address(qtype, qname_json, &c.addr_text, plan.ttl, placed.scope);
    }
}

/// The ECS scope of an answer: the prefix of the network that decided it, never longer than
/// what the query disclosed, and always at least 1, so PowerDNS keeps client-dependent answers
/// out of its packet and query caches. Also for a source prefix of 0: PowerDNS itself looks
/// names up with `real-remote` `0.0.0.0/0` (no client at all) while it signs DNSSEC answers, and
/// a scope-0 answer to that lookup lands in its query cache and is then served to every client.
pub fn scope(decided: u8, source_prefix: u8) -> u8 {
    decided.min(source_prefix).max(1)
}

/// Lower-cases `qname` into `buf` and makes it absolute; `None` for names too long or not text.
fn normalize<'b>(qname: &str, buf: &'b mut [u8; MAX_NAME]) -> Option<&'b str> {
    let bytes = qname.as_bytes();
    let dot = !bytes.ends_with(b".");
    let len = bytes.len() + usize::from(dot);
    if len > MAX_NAME {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(bytes) {
        *d = s.to_ascii_lowercase();
    }
    if dot {
        buf[bytes.len()] = b'.';
    }
    std::str::from_utf8(&buf[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Handled;

    #[test]
    fn scope_rules() {
        assert_eq!(scope(18, 24), 18);
        assert_eq!(scope(26, 24), 24, "never longer than the source prefix");
        assert_eq!(scope(0, 24), 1, "never 0 for a client-dependent answer");
        assert_eq!(scope(16, 0), 1, "pdns's own client-less lookups must not be cached either");
    }

    #[test]
    fn normalize_names() {
        let mut buf = [0u8; MAX_NAME];
        assert_eq!(normalize("CDN.Example.NET", &mut buf), Some("cdn.example.net."));
        assert_eq!(normalize("cdn.example.net.", &mut buf), Some("cdn.example.net."));
        assert_eq!(normalize(&"a".repeat(300), &mut buf), None);
    }

    fn engine() -> Engine {
        let config = Config::for_test();
        Engine::build(&config, None, Arc::new(ZoneSet::empty()), &ServedHealth::default(), Arc::default())
    }

    fn answer(e: &Engine, body: &str) -> (Handled, serde_json::Value) {
        let mut out = Vec::new();
        let h = crate::server::dispatch(e, body.as_bytes(), &mut out);
        (h, serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn ipv4_mapped_clients_are_scoped_in_ipv6_bits() {
        let mut config = Config::for_test();
        config.overrides = vec![geolb_config::Override {
            net: "81.2.0.0/16".parse().unwrap(),
            target: geolb_config::OverrideTarget::Pop("syd".into()),
        }];
        let e = Engine::build(&config, None, Arc::new(ZoneSet::empty()), &ServedHealth::default(), Arc::default());
        let (_, v) = answer(
            &e,
            r#"{"method":"lookup","parameters":{"qtype":"A","qname":"cdn.example.net.","remote":"::1","real-remote":"::ffff:81.2.69.7/128"}}"#,
        );
        assert_eq!(v["result"][0]["scopeMask"], 96 + 16, "{v}");
        assert_eq!(v["result"][0]["content"], "192.0.2.11", "the override (syd) applies: {v}");
    }

    #[test]
    fn answers_are_counted_by_the_node_that_answered_fallback_pool_too() {
        let mut config = Config::for_test();
        config.services[0].nodes = vec!["fra-1".into(), "fra-2".into()];
        config.services[0].all_down = geolb_config::AllDownPolicy::FallbackPool(vec!["syd-2".into()]);
        let counted = |counters: &Counters| -> BTreeMap<String, u64> {
            let answers = counters.answers.lock().unwrap();
            answers.values().flatten().map(|((_, node), c)| (node.to_string(), c.load(Ordering::Relaxed))).collect()
        };
        let ask = r#"{"method":"lookup","parameters":{"qtype":"A","qname":"cdn.example.net.","remote":"10.0.0.1"}}"#;
        let counters = Arc::new(Counters::default());
        let e = Engine::build(&config, None, Arc::new(ZoneSet::empty()), &ServedHealth::default(), counters.clone());
        let (_, v) = answer(&e, ask);
        let first = v["result"][0]["content"].as_str().unwrap().to_string();
        let node = if first == "192.0.2.1" { "fra-1" } else { "fra-2" };
        // The first answer's node once, and syd-2 `syd` times.
        let expected = |syd: u64| -> BTreeMap<String, u64> {
            [("fra-1", 0), ("fra-2", 0), ("syd-2", syd)].map(|(n, c)| (n.to_string(), c + u64::from(n == node))).into()
        };
        assert_eq!(counted(&counters), expected(0), "{v}");
        // The pool drained: the fallback node answers, and is the one counted.
        let view =
            ServedHealth { drained: ["fra-1".into(), "fra-2".into()].into_iter().collect(), ..ServedHealth::default() };
        let e = Engine::build(&config, None, Arc::new(ZoneSet::empty()), &view, counters.clone());
        let (_, v) = answer(&e, ask);
        assert_eq!(v["result"][0]["content"], "192.0.2.12", "{v}");
        assert_eq!(counted(&counters), expected(1));
    }

    #[test]
    fn a_managed_name_never_falls_through_for_addresses() {
        // Every node drained and the policy `nodata`: still an address (the last resort), never
        // `false`, which would let PowerDNS serve and cache the zone's placeholder.
        let mut config = Config::for_test();
        config.services[0].all_down = geolb_config::AllDownPolicy::Nodata;
        let view =
            ServedHealth { drained: config.nodes.iter().map(|n| n.id.clone()).collect(), ..ServedHealth::default() };
        let counters = Arc::new(Counters::default());
        let e = Engine::build(&config, None, Arc::new(ZoneSet::empty()), &view, counters.clone());
        let (h, v) = answer(
            &e,
            r#"{"method":"lookup","parameters":{"qtype":"A","qname":"cdn.example.net.","remote":"10.0.0.1"}}"#,
        );
        assert_eq!(h, Handled::Answered, "{v}");
        assert!(v["result"][0]["content"].as_str().unwrap().starts_with("192.0.2."), "{v}");
        assert_eq!(counters.last_resort_answers.load(Ordering::Relaxed), 1);
        // Other types still fall through (the zone answers them).
        let (h, _) = answer(
            &e,
            r#"{"method":"lookup","parameters":{"qtype":"MX","qname":"cdn.example.net.","remote":"10.0.0.1"}}"#,
        );
        assert_eq!(h, Handled::FellThrough);
    }

    #[test]
    fn clients_are_steered_by_their_own_regions_probers() {
        use geolb_common::quorum::{Decision, DecisionReason};
        let mut config = Config::for_test();
        config.pops[0].region = Some("eu".into());
        config.pops[1].region = Some("apac".into());
        let down = Decision {
            health: geolb_common::Health::Down,
            reason: DecisionReason::QuorumDown,
            since_ms: 1,
            last_quorum_ms: Some(1),
            down_weight: 2.0,
            eligible_weight: 2.0,
            down_voters: 2,
            eligible_voters: 2,
        };
        let mut view = ServedHealth::default();
        // Europe's probers see fra down ("down from here"); globally it is up.
        let eu: std::collections::BTreeMap<_, _> =
            [("fra-1", &down), ("fra-2", &down)].into_iter().map(|(n, d)| (n.into(), d.clone())).collect();
        view.regional.insert("eu".into(), eu);
        let e = Engine::build(&config, None, Arc::new(ZoneSet::empty()), &view, Arc::default());
        let ask = |ip: &str| {
            let body = format!(
                r#"{{"method":"lookup","parameters":{{"qtype":"A","qname":"cdn.example.net.","remote":"{ip}"}}}}"#
            );
            answer(&e, &body).1["result"][0]["content"].as_str().unwrap().to_owned()
        };
        // No GeoIP: every client is at the default location (fra), in region eu.
        let got = ask("10.0.0.1");
        assert!(["192.0.2.11", "192.0.2.12"].contains(&got.as_str()), "an eu client avoids fra: {got}");
        let global = Engine::build(&config, None, Arc::new(ZoneSet::empty()), &ServedHealth::default(), Arc::default());
        let (_, v) = answer(
            &global,
            r#"{"method":"lookup","parameters":{"qtype":"A","qname":"cdn.example.net.","remote":"10.0.0.1"}}"#,
        );
        assert!(["192.0.2.1", "192.0.2.2"].contains(&v["result"][0]["content"].as_str().unwrap()), "{v}");
    }

    #[test]
    fn managed_and_unmanaged_names() {
        let e = engine();
        let (h, v) = answer(
            &e,
            r#"{"method":"lookup","parameters":{"qtype":"ANY","qname":"CDN.example.net.","remote":"127.0.0.1","real-remote":"203.0.113.0/24"}}"#,
        );
        assert_eq!(h, Handled::Answered);
        let recs = v["result"].as_array().unwrap();
        assert_eq!(recs.len(), 2, "{v}");
        assert_eq!(recs[0]["qtype"], "A");
        assert_eq!(recs[1]["qtype"], "AAAA");
        // No GeoIP: the default location (fra), scope = the source prefix.
        assert!(recs[0]["content"].as_str().unwrap().starts_with("192.0.2."), "{v}");
        assert_eq!(recs[0]["scopeMask"], 24);
        let (h, v) = answer(
            &e,
            r#"{"method":"lookup","parameters":{"qtype":"ANY","qname":"www.example.net.","remote":"127.0.0.1"}}"#,
        );
        assert_eq!((h, v), (Handled::FellThrough, serde_json::json!({"result": false})));
        let (h, v) = answer(
            &e,
            r#"{"method":"lookup","parameters":{"qtype":"MX","qname":"cdn.example.net.","remote":"127.0.0.1"}}"#,
        );
        assert_eq!((h, v), (Handled::FellThrough, serde_json::json!({"result": false})));
        let (h, v) = answer(&e, "{");
        assert_eq!(h, Handled::BadRequest);
        assert!(v["log"][0].as_str().unwrap().contains("malformed"), "{v}");
    }
}
