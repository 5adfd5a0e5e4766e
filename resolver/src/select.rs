//! Selection: which nodes answer a client, given where it is and which nodes are usable.
//!
//! Pure and allocation-free per query. [`Selector::build`] turns the config and a health view
//! into per-service, per-address-family [`PopSet`]s holding only the PoPs that have a node to
//! offer, their positions as unit vectors in structure-of-arrays layout. A query then takes two
//! linear passes of dot products (the nearest PoP, then every PoP within the tie band) and a
//! weighted rendezvous hash over the candidate nodes:
//!
//! * *nearest*: great-circle distance, compared through dot products of unit vectors;
//! * *tie band*: PoPs at most `tie_band_km` farther than the nearest are candidates too;
//! * *stable*: the weighted rendezvous (highest-random-weight) hash of the client subnet and node
//!   id picks the same node for the same subnet on every resolver and after every restart, and
//!   when a node goes down only its own clients move;
//! * *weighted*: a node of weight 2w wins twice as many subnets as one of weight w.
//!
//! It does not locate clients ([`crate::locate`]) nor encode answers ([`crate::engine`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use geolb_common::geo::{EARTH_RADIUS_KM, UnitVector};
use geolb_common::nearest::NearIndex;
use geolb_common::{HealthLookup, NodeId, PopId};
use geolb_config::{AllDownPolicy, Config, Node, RecordTypes, Service};

/// Most addresses one answer can carry (the config caps `answers` at this).
pub const MAX_ANSWERS: usize = geolb_config::MAX_ANSWERS as usize;

/// One node as a candidate answer for one address family.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Its PoP.
    pub pop: PopId,
    /// The address to answer.
    pub addr: IpAddr,
    /// Its address in presentation format, rendered once.
    pub addr_text: Box<str>,
    /// Its position in [`answerable`] of its service: where per-answer counters for it are kept.
    pub slot: u32,
    /// Weight, > 0.
    weight: f64,
    /// Stable hash of the node id, mixed with the client key for rendezvous hashing.
    seed: u64,
}

/// PoPs with at least one candidate node, and a [`NearIndex`] over them once there are enough
/// for it to pay. Candidates are stored flat, PoP after PoP, with their rendezvous inputs in a
/// parallel array: a query reads a few contiguous seeds, and only the winners' [`Candidate`]s.
#[derive(Debug, Clone, Default)]
pub struct PopSet {
    vectors: Vec<UnitVector>,
    /// Candidates of PoP `i` are `candidates[starts[i]..starts[i + 1]]`, never empty.
    starts: Vec<u32>,
    candidates: Vec<Candidate>,
    /// `(seed, weight)` of each candidate, parallel to `candidates`.
    hashes: Vec<(u64, f64)>,
    /// Narrows the PoPs to scan per client; `None` for small sets, which are scanned whole.
    /// Shared by every set of one build with the same PoPs ([`Builder`]).
    index: Option<Arc<NearIndex>>,
    /// Every candidate has the same weight: rendezvous scores need no logarithm.
    equal_weights: bool,
    /// Cosine and sine of the tie band's central angle: the band's edge is found from the
    /// nearest PoP's dot product with no inverse trigonometry per query.
    band_cos: f64,
    band_sin: f64,
}

/// Sets with more PoPs than this get a [`NearIndex`].
const INDEX_MIN_POPS: usize = 16;

impl PopSet {
    fn build(builder: &mut Builder<'_>, candidates: Vec<Candidate>, tie_band_km: f64) -> PopSet {
        let pops = &builder.pops;
        let mut order: Vec<PopId> = Vec::new();
        let mut by_pop: HashMap<PopId, Vec<Candidate>> = HashMap::new();
        for c in candidates {
            if !by_pop.contains_key(&c.pop) {
                order.push(c.pop.clone());
            }
            by_pop.entry(c.pop.clone()).or_default().push(c);
        }
        let band = (tie_band_km.max(0.0) / EARTH_RADIUS_KM).min(std::f64::consts::PI);
        let mut set = PopSet { band_cos: band.cos(), band_sin: band.sin(), ..PopSet::default() };
        set.starts.push(0);
        for pop in order {
            let (Some(v), Some(nodes)) = (pops.get(pop.as_str()), by_pop.remove(&pop)) else {
                continue;
            };
            set.vectors.push(*v);
            set.hashes.extend(nodes.iter().map(|c| (c.seed, c.weight)));
            set.candidates.extend(nodes);
            set.starts.push(set.candidates.len() as u32);
        }
        if set.vectors.len() > INDEX_MIN_POPS {
            set.index = Some(builder.index(&set.vectors, tie_band_km));
        }
        let mut weights = set.hashes.iter().map(|&(_, w)| w);
        let first = weights.next();
        set.equal_weights = weights.all(|w| Some(w) == first);
        set
    }

    /// Number of PoPs in the set.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether no PoP has a candidate.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// Picks up to `out`'s capacity of nodes for a client at `client`, hashing `key` (see
    /// [`client_key`]). Returns whether it picked any (false when the set is empty).
    pub fn pick<'s>(&'s self, client: &UnitVector, key: u64, out: &mut Picked<'s>) -> bool {
        out.len = 0;
        match &self.index {
            Some(index) => self.pick_among(index.candidates(client).iter().map(|&i| i as usize), client, key, out),
            None => self.pick_among(0..self.vectors.len(), client, key, out),
        }
    }

    fn pick_among<'s>(
        &'s self,
        pops: impl Iterator<Item = usize> + Clone,
        client: &UnitVector,
        key: u64,
        out: &mut Picked<'s>,
    ) -> bool {
        // Pass 1: the nearest PoP is the one with the largest dot product.
        let mut best = f64::NEG_INFINITY;
        for i in pops.clone() {
            if let Some(v) = self.vectors.get(i) {
                best = best.max(v.dot(client));
            }
        }
        if best == f64::NEG_INFINITY {
            return false;
        }
        // Pass 2: every PoP within the tie band competes. The small epsilon keeps the nearest
        // PoP itself in when rounding.
        let threshold = band_edge(best, self.band_cos, self.band_sin) - 1e-12;
        for i in pops {
            let (Some(v), Some(&from), Some(&to)) = (self.vectors.get(i), self.starts.get(i), self.starts.get(i + 1))
            else {
                continue;
            };
            if v.dot(client) < threshold {
                continue;
            }
            let (from, to) = (from as usize, to as usize);
            let (Some(hashes), Some(candidates)) = (self.hashes.get(from..to), self.candidates.get(from..to)) else {
                continue;
            };
            for (&(seed, weight), c) in hashes.iter().zip(candidates) {
                out.offer(c, rendezvous_score(key, seed, weight, self.equal_weights));
            }
        }
        true
    }
}

/// The dot product at the tie band's edge: `cos(θ + band)` for the nearest PoP's dot product
/// `best = cos θ`, expanded as `cos θ·cos band − sin θ·sin band` (no inverse trigonometry);
/// −1 (every PoP) when the band reaches past the antipode. Never above `best`.
fn band_edge(best: f64, band_cos: f64, band_sin: f64) -> f64 {
    let best = best.clamp(-1.0, 1.0);
    if best > -band_cos { (best * band_cos - (1.0 - best * best).sqrt() * band_sin).min(best) } else { -1.0 }
}

/// Weighted rendezvous score of a node with hash seed `seed`: smaller wins. `-ln(u) / w` with
/// `u` uniform in (0, 1] from the hash, the exponential-race form that gives each node a win
/// share proportional to its weight. When every competitor has the same weight, `-u` orders
/// them the same way (`-ln(u) / w` falls as `u` rises) without the logarithm.
fn rendezvous_score(key: u64, seed: u64, weight: f64, equal_weights: bool) -> f64 {
    let h = splitmix64(key ^ seed);
    let u = ((h >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    if equal_weights { -u } else { -u.ln() / weight }
}

/// The nodes picked for one answer, best first; at most [`MAX_ANSWERS`], no allocation.
#[derive(Debug)]
pub struct Picked<'s> {
    want: usize,
    len: usize,
    items: [(f64, Option<&'s Candidate>); MAX_ANSWERS],
}

impl<'s> Picked<'s> {
    /// An empty pick that will keep the best `want` (clamped to 1..=[`MAX_ANSWERS`]).
    pub fn new(want: usize) -> Self {
        Picked { want: want.clamp(1, MAX_ANSWERS), len: 0, items: [(f64::INFINITY, None); MAX_ANSWERS] }
    }

    fn offer(&mut self, c: &'s Candidate, score: f64) {
        // Insertion into a sorted array of at most 8: cheaper than any heap at this size.
        // Ties (same score) are broken by node id so the order never depends on config order.
        let better = |a: (f64, &Candidate), b: (f64, Option<&Candidate>)| match b.1 {
            None => true,
            Some(bc) => a.0 < b.0 || (a.0 == b.0 && a.1.node < bc.node),
        };
        if self.len == self.want && !better((score, c), self.items[self.len - 1]) {
            return;
        }
        let mut i = self.len.min(self.want - 1);
        while i > 0 && better((score, c), self.items[i - 1]) {
            self.items[i] = self.items[i - 1];
            i -= 1;
        }
        self.items[i] = (score, Some(c));
        if self.len < self.want {
            self.len += 1;
        }
    }

    /// The picked candidates, best first.
    pub fn iter(&self) -> impl Iterator<Item = &'s Candidate> + '_ {
        self.items[..self.len].iter().filter_map(|(_, c)| *c)
    }

    /// How many were picked.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none was picked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Why an answer holds the nodes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nearest usable nodes.
    Healthy,
    /// No usable node: answered as if every enabled node were up (`fail_open`).
    FailOpen,
    /// No usable node: answered from the fallback pool.
    Fallback,
    /// No usable node: no address records (`nodata`), or nothing to offer at all.
    Nodata,
}

/// Address family of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

/// One service's plan for one address family.
#[derive(Debug, Clone, Default)]
pub struct FamilyPlan {
    /// Usable nodes (enabled, not Down).
    healthy: PopSet,
    /// Enabled nodes whatever their health (for `fail_open`).
    enabled: PopSet,
    /// Fallback pool: usable ones, else enabled ones.
    fallback_healthy: PopSet,
    fallback_enabled: PopSet,
    /// Every node of the pool with an address, whatever its state: answered only when the
    /// alternative is no address at all, which would let PowerDNS fall through to the zone's
    /// placeholder record and cache it for everyone.
    last_resort: PopSet,
}

/// A managed name, ready to answer.
#[derive(Debug, Clone)]
pub struct ServicePlan {
    /// Lower-case absolute name.
    pub name: Box<str>,
    /// Answered types.
    pub types: RecordTypes,
    /// Answer TTL.
    pub ttl: u32,
    /// Addresses per answer.
    pub answers: u8,
    nodata_when_down: bool,
    /// Shared by every service of one build with the same pool, fallback and tie band.
    v4: Arc<FamilyPlan>,
    v6: Arc<FamilyPlan>,
}

impl ServicePlan {
    /// Whether geolb answers this record type for the name (the zone's own records of that type
    /// are then replaced, not added).
    pub fn manages(&self, qtype: &str) -> bool {
        (self.types.a && qtype == "A") || (self.types.aaaa && qtype == "AAAA")
    }

    /// Picks the nodes for a client of this service, following the all-down policy.
    pub fn select<'s>(&'s self, family: Family, client: &UnitVector, key: u64, out: &mut Picked<'s>) -> Outcome {
        let plan = self.family(family);
        if plan.healthy.pick(client, key, out) {
            return Outcome::Healthy;
        }
        if self.nodata_when_down {
            return Outcome::Nodata;
        }
        if plan.fallback_healthy.pick(client, key, out) || plan.fallback_enabled.pick(client, key, out) {
            return Outcome::Fallback;
        }
        if plan.enabled.pick(client, key, out) {
            return Outcome::FailOpen;
        }
        Outcome::Nodata
    }

    /// Picks from every node of the pool whatever its state (see `FamilyPlan::last_resort`);
    /// whether it picked any.
    pub fn last_resort<'s>(&'s self, family: Family, client: &UnitVector, key: u64, out: &mut Picked<'s>) -> bool {
        self.family(family).last_resort.pick(client, key, out)
    }

    fn family(&self, family: Family) -> &FamilyPlan {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// Every service's plan, by name.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    by_name: HashMap<Box<str>, usize>,
    services: Vec<ServicePlan>,
}

impl Selector {
    /// Builds the plans from the config and the current health view.
    pub fn build(config: &Config, health: &dyn HealthLookup) -> Selector {
        let mut builder = Builder {
            pops: config.pops.iter().map(|p| (p.id.as_str(), p.location.unit_vector())).collect(),
            nodes: config.nodes.iter().map(|n| (n.id.as_str(), n)).collect(),
            health,
            indexes: HashMap::new(),
            plans: HashMap::new(),
        };
        let mut selector = Selector::default();
        for service in &config.services {
            let plan = build_service(service, &mut builder);
            selector.by_name.insert(plan.name.clone(), selector.services.len());
            selector.services.push(plan);
        }
        selector
    }

    /// The plan for a lower-case absolute name.
    pub fn service(&self, name: &str) -> Option<&ServicePlan> {
        self.by_name.get(name).map(|&i| &self.services[i])
    }

    /// Every plan.
    pub fn services(&self) -> &[ServicePlan] {
        &self.services
    }
}

/// Every node a service may answer, each once, in a fixed order: its pool, then its fallback
/// pool. A [`Candidate`]'s `slot` is its position here.
pub fn answerable(service: &Service) -> Vec<&NodeId> {
    let mut seen = std::collections::HashSet::new();
    service.nodes.iter().chain(fallback_pool(service).unwrap_or_default()).filter(|id| seen.insert(*id)).collect()
}

/// The fallback pool of a service whose all-down policy has one.
fn fallback_pool(service: &Service) -> Option<&[NodeId]> {
    match &service.all_down {
        AllDownPolicy::FallbackPool(list) => Some(list),
        _ => None,
    }
}

/// What one [`Selector::build`] shares between services: the config's lookup tables, and what
/// was built already. Services over the same pool with the same fallback and tie band get the
/// same plans, and PoP sets over the same PoPs the same [`NearIndex`]: a config of 10,000 names
/// over one pool builds its plans once, and a health change rebuilds in milliseconds.
struct Builder<'c> {
    pops: HashMap<&'c str, UnitVector>,
    nodes: HashMap<&'c str, &'c Node>,
    health: &'c dyn HealthLookup,
    /// By the PoPs' coordinates (bit patterns) and the band.
    indexes: HashMap<(Vec<[u64; 3]>, u64), Arc<NearIndex>>,
    /// By what a plan is made of: pool, fallback pool (`None` for another policy), whether the
    /// policy is `fail_open`, tie band, and the answered families.
    plans: HashMap<PlanKey<'c>, (Arc<FamilyPlan>, Arc<FamilyPlan>)>,
}

type PlanKey<'c> = (&'c [NodeId], Option<&'c [NodeId]>, bool, u64, bool, bool);

impl Builder<'_> {
    fn index(&mut self, vectors: &[UnitVector], tie_band_km: f64) -> Arc<NearIndex> {
        let key =
            (vectors.iter().map(|v| [v.x.to_bits(), v.y.to_bits(), v.z.to_bits()]).collect(), tie_band_km.to_bits());
        self.indexes.entry(key).or_insert_with(|| Arc::new(NearIndex::build(vectors, tie_band_km))).clone()
    }
}

fn build_service<'c>(service: &'c Service, builder: &mut Builder<'c>) -> ServicePlan {
    let fallback = fallback_pool(service);
    let fail_open = service.all_down == AllDownPolicy::FailOpen;
    let key: PlanKey<'c> =
        (&service.nodes, fallback, fail_open, service.tie_band_km.to_bits(), service.types.a, service.types.aaaa);
    let (v4, v6) = match builder.plans.get(&key) {
        Some(plans) => plans.clone(),
        None => {
            let plans = family_plans(service, fallback.unwrap_or_default(), fail_open, builder);
            builder.plans.insert(key, plans.clone());
            plans
        }
    };
    ServicePlan {
        name: service.name.clone().into_boxed_str(),
        types: service.types,
        ttl: service.ttl,
        answers: service.answers,
        nodata_when_down: service.all_down == AllDownPolicy::Nodata,
        v4,
        v6,
    }
}

/// A service's plans for A and AAAA (empty for a type it does not answer), from its pool and
/// `fallback` pool, with an `enabled` set when its policy is `fail_open`.
fn family_plans<'c>(
    service: &Service,
    fallback: &[NodeId],
    fail_open: bool,
    builder: &mut Builder<'c>,
) -> (Arc<FamilyPlan>, Arc<FamilyPlan>) {
    let band = service.tie_band_km;
    // The configured nodes of a list, each with its slot.
    let slots: HashMap<&str, u32> =
        answerable(service).into_iter().enumerate().map(|(i, id)| (id.as_str(), i as u32)).collect();
    let known = |ids: &[NodeId]| -> Vec<(&'c Node, u32)> {
        ids.iter().filter_map(|id| Some((*builder.nodes.get(id.as_str())?, *slots.get(id.as_str())?))).collect()
    };
    let (pool, fallback) = (known(&service.nodes), known(fallback));
    let health = builder.health;
    let usable = |n: &Node, need_usable: bool| {
        n.enabled && !health.drained(&n.id) && (!need_usable || health.health(&n.id).is_usable())
    };
    let mut family_plan = |family: Family| {
        let candidates = |list: &[(&Node, u32)], need_usable: bool| {
            list.iter()
                .filter(|(n, _)| usable(n, need_usable))
                .filter_map(|&(n, slot)| candidate(n, family, slot))
                .collect::<Vec<_>>()
        };
        let any_state =
            |list: &[(&Node, u32)]| list.iter().filter_map(|&(n, slot)| candidate(n, family, slot)).collect::<Vec<_>>();
        let enabled =
            if fail_open { PopSet::build(builder, candidates(&pool, false), band) } else { PopSet::default() };
        Arc::new(FamilyPlan {
            healthy: PopSet::build(builder, candidates(&pool, true), band),
            enabled,
            fallback_healthy: PopSet::build(builder, candidates(&fallback, true), band),
            fallback_enabled: PopSet::build(builder, candidates(&fallback, false), band),
            last_resort: PopSet::build(builder, any_state(&pool), band),
        })
    };
    let v4 = if service.types.a { family_plan(Family::V4) } else { Arc::default() };
    let v6 = if service.types.aaaa { family_plan(Family::V6) } else { Arc::default() };
    (v4, v6)
}

/// A node as a candidate for `family`, if it has an address of that family.
fn candidate(n: &Node, family: Family, slot: u32) -> Option<Candidate> {
    let addr = match family {
        Family::V4 => n.ipv4.map(IpAddr::V4),
        Family::V6 => n.ipv6.map(IpAddr::V6),
    }?;
    Some(Candidate {
        node: n.id.clone(),
        pop: n.pop.clone(),
        addr,
        addr_text: addr.to_string().into_boxed_str(),
        slot,
        weight: f64::from(n.weight),
        seed: node_seed(n.id.as_str()),
    })
}

/// SplitMix64 finalizer: a fast, well-mixed, fixed (so stable across processes) 64-bit hash step.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stable per-node hash seed: FNV-1a of the node id, mixed.
fn node_seed(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(h)
}

/// The rendezvous key of a client network: its address with bits past `prefix_len` cleared,
/// and the prefix length, so every client of the network the answer is scoped to gets the same
/// pick.
pub fn client_key(ip: IpAddr, prefix_len: u8) -> u64 {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let masked = if prefix_len == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(prefix_len.min(32)))) };
            splitmix64(u64::from(masked) << 8 | u64::from(prefix_len) | 4 << 40)
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let masked = if prefix_len == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(prefix_len.min(128)))) };
            let hi = splitmix64((masked >> 64) as u64 ^ 6 << 56 ^ u64::from(prefix_len));
            splitmix64(hi ^ masked as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geolb_common::{GeoPoint, Health};
    use geolb_config::Pop;
    use proptest::prelude::*;
    use std::collections::HashMap as Map;

    fn world() -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/world.toml");
        geolb_config::load(&path).unwrap()
    }

    proptest! {
        /// The band's edge is where the trigonometric form puts it, to well under a metre.
        #[test]
        fn band_edge_matches_the_trigonometric_form(best in -1.0f64..=1.0, band_km in 0.0f64..=20_000.0) {
            let band = band_km / EARTH_RADIUS_KM;
            let edge = band_edge(best, band.cos(), band.sin());
            let expected = UnitVector::km_to_dot(UnitVector::dot_to_km(best) + band_km);
            let metres = (UnitVector::dot_to_km(edge) - UnitVector::dot_to_km(expected)).abs() * 1000.0;
            prop_assert!(metres < 1.0, "best {best} band {band_km} km: edge {edge}, expected {expected} ({metres} m apart)");
        }

        /// Among equal weights the log-free score picks exactly as `-ln(u) / w` does, so no
        /// client moves because of the shortcut.
        #[test]
        fn equal_weight_scores_order_like_the_weighted_form(key in any::<u64>(), weight in 1u32..1_000_000) {
            let world = world();
            let candidates: Vec<Candidate> = world
                .nodes
                .iter()
                .filter_map(|n| candidate(&Node { weight, ..n.clone() }, Family::V4, 0))
                .collect();
            let best = |equal: bool| {
                candidates
                    .iter()
                    .min_by(|a, b| rendezvous_score(key, a.seed, a.weight, equal).total_cmp(&rendezvous_score(key, b.seed, b.weight, equal)))
                    .map(|c| c.node.clone())
            };
            prop_assert_eq!(best(true), best(false));
        }
    }

    fn pick_one(plan: &ServicePlan, family: Family, at: GeoPoint, key: u64) -> (Outcome, Option<Candidate>) {
        let mut out = Picked::new(1);
        let outcome = plan.select(family, &at.unit_vector(), key, &mut out);
        (outcome, out.iter().next().cloned())
    }

    const LONDON: GeoPoint = GeoPoint::new(51.5, -0.12);
    const SYDNEY: GeoPoint = GeoPoint::new(-33.9, 151.2);
    const TOKYO: GeoPoint = GeoPoint::new(35.7, 139.7);
    const SAO_PAULO: GeoPoint = GeoPoint::new(-23.5, -46.6);
    const ASHBURN: GeoPoint = GeoPoint::new(39.0, -77.5);
    const SAN_JOSE: GeoPoint = GeoPoint::new(37.3, -121.9);

    #[test]
    fn nearest_pop_answers() {
        let config = world();
        let selector = Selector::build(&config, &geolb_common::health::NoVerdicts);
        let svc = selector.service("cdn.example.net.").unwrap();
        for (at, pop) in
            [(LONDON, "lhr"), (SYDNEY, "syd"), (TOKYO, "nrt"), (SAO_PAULO, "gru"), (ASHBURN, "iad"), (SAN_JOSE, "sjc")]
        {
            for family in [Family::V4, Family::V6] {
                let (outcome, c) = pick_one(svc, family, at, 42);
                let c = c.unwrap();
                assert_eq!(outcome, Outcome::Healthy);
                assert_eq!(c.pop.as_str(), pop, "{at:?}");
                assert_eq!(matches!(c.addr, IpAddr::V4(_)), family == Family::V4);
            }
        }
    }

    #[test]
    fn services_over_one_pool_share_their_plans_and_others_get_their_own() {
        let mut config = world();
        let template = config.services[0].clone();
        let mut twin = template.clone();
        twin.name = "twin.example.net.".into();
        twin.ttl += 1;
        let mut narrower = template.clone();
        narrower.name = "narrower.example.net.".into();
        narrower.nodes.retain(|n| n.as_str() != "lhr-1");
        let mut wider_band = template.clone();
        wider_band.name = "band.example.net.".into();
        wider_band.tie_band_km += 1000.0;
        config.services.extend([twin, narrower, wider_band]);
        let mut health: Map<NodeId, Health> = Map::new();
        health.insert("lhr-2".into(), Health::Down);
        let selector = Selector::build(&config, &health);
        let plan = |name: &str| selector.service(name).unwrap();
        let (svc, twin) = (plan("cdn.example.net."), plan("twin.example.net."));
        assert!(Arc::ptr_eq(&svc.v4, &twin.v4) && Arc::ptr_eq(&svc.v6, &twin.v6));
        assert_eq!(twin.ttl, svc.ttl + 1, "what is not shared stays the service's own");
        for other in ["narrower.example.net.", "band.example.net."] {
            assert!(!Arc::ptr_eq(&svc.v4, &plan(other).v4), "{other}");
        }
        // Each answers from its own pool: London gets lhr-1 (lhr-2 is down), the narrower pool
        // has no lhr node left and goes to the next PoP.
        for key in 0..50 {
            let key = client_key(IpAddr::from([10, 0, key, 0]), 24);
            assert_eq!(pick_one(twin, Family::V4, LONDON, key).1.unwrap().node.as_str(), "lhr-1");
            assert_ne!(pick_one(plan("narrower.example.net."), Family::V4, LONDON, key).1.unwrap().pop.as_str(), "lhr");
        }
        // PoP sets over the same PoPs share one near index (enough PoPs to have one).
        let mut config = world();
        let at = |i: u32| GeoPoint::new(f64::from(i) * 4.0 - 80.0, f64::from(i) * 9.0 - 180.0);
        config.pops = (0..40).map(|i| Pop { id: format!("p{i}").into(), location: at(i), region: None }).collect();
        config.nodes = (0..40u32)
            .map(|i| Node {
                id: format!("n{i}").into(),
                pop: format!("p{i}").into(),
                ipv4: Some(std::net::Ipv4Addr::from(0xC000_0200 + i)),
                ipv6: None,
                weight: 100,
                enabled: true,
                check: Default::default(),
            })
            .collect();
        config.services[0].nodes = config.nodes.iter().map(|n| n.id.clone()).collect();
        let selector = Selector::build(&config, &geolb_common::health::NoVerdicts);
        let v4 = &selector.services()[0].v4;
        let (a, b) = (v4.healthy.index.as_ref(), v4.last_resort.index.as_ref());
        assert!(a.is_some() && b.is_some());
        assert!(Arc::ptr_eq(a.unwrap(), b.unwrap()));
    }

    #[test]
    fn down_nodes_are_skipped_and_all_down_fails_open() {
        let config = world();
        let mut health: Map<NodeId, Health> = Map::new();
        health.insert("lhr-1".into(), Health::Down);
        let selector = Selector::build(&config, &health);
        let svc = selector.service("cdn.example.net.").unwrap();
        for key in 0..200 {
            let (_, c) = pick_one(svc, Family::V4, LONDON, client_key(IpAddr::from([10, 0, key, 0]), 24));
            assert_eq!(c.unwrap().node.as_str(), "lhr-2");
        }
        health.insert("lhr-2".into(), Health::Down);
        let selector = Selector::build(&config, &health);
        let svc = selector.service("cdn.example.net.").unwrap();
        let (outcome, c) = pick_one(svc, Family::V4, LONDON, 1);
        assert_eq!(outcome, Outcome::Healthy);
        assert_eq!(c.unwrap().pop.as_str(), "fra", "next-nearest PoP takes over");
        // Everything down: fail open to the nearest PoP, stable.
        for n in &config.nodes {
            health.insert(n.id.clone(), Health::Down);
        }
        let selector = Selector::build(&config, &health);
        let svc = selector.service("cdn.example.net.").unwrap();
        let first = pick_one(svc, Family::V4, LONDON, 7);
        assert_eq!(first.0, Outcome::FailOpen);
        assert_eq!(first.1.as_ref().unwrap().pop.as_str(), "lhr");
        for _ in 0..10 {
            assert_eq!(pick_one(svc, Family::V4, LONDON, 7).1.unwrap().node, first.1.as_ref().unwrap().node);
        }
    }

    #[test]
    fn all_down_policies() {
        let mut config = world();
        let mut health: Map<NodeId, Health> = Map::new();
        for n in config.nodes.iter().filter(|n| n.pop.as_str() != "syd") {
            health.insert(n.id.clone(), Health::Down);
        }
        // The service's pool is everything but syd; syd is its fallback.
        config.services[0].nodes.retain(|n| !n.as_str().starts_with("syd"));
        config.services[0].all_down = AllDownPolicy::FallbackPool(vec!["syd-1".into(), "syd-2".into()]);
        let selector = Selector::build(&config, &health);
        let (outcome, c) = pick_one(selector.service("cdn.example.net.").unwrap(), Family::V4, LONDON, 3);
        assert_eq!(outcome, Outcome::Fallback);
        assert_eq!(c.unwrap().pop.as_str(), "syd");
        config.services[0].all_down = AllDownPolicy::Nodata;
        let selector = Selector::build(&config, &health);
        let (outcome, c) = pick_one(selector.service("cdn.example.net.").unwrap(), Family::V4, LONDON, 3);
        assert_eq!(outcome, Outcome::Nodata);
        assert!(c.is_none());
    }

    #[test]
    fn disabled_nodes_are_never_answered() {
        let mut config = world();
        for n in config.nodes.iter_mut().filter(|n| n.pop.as_str() == "lhr") {
            n.enabled = false;
        }
        let selector = Selector::build(&config, &geolb_common::health::NoVerdicts);
        let (_, c) = pick_one(selector.service("cdn.example.net.").unwrap(), Family::V4, LONDON, 3);
        assert_eq!(c.unwrap().pop.as_str(), "fra");
    }

    #[test]
    fn several_answers_are_distinct_and_best_first() {
        let mut config = world();
        config.services[0].answers = 2;
        let selector = Selector::build(&config, &geolb_common::health::NoVerdicts);
        let svc = selector.service("cdn.example.net.").unwrap();
        let mut out = Picked::new(2);
        svc.select(Family::V6, &LONDON.unit_vector(), 99, &mut out);
        let ids: Vec<&str> = out.iter().map(|c| c.node.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        assert!(ids.iter().all(|id| id.starts_with("lhr")));
        // The first of two is the one a single answer gives.
        let (_, one) = pick_one(svc, Family::V6, LONDON, 99);
        assert_eq!(one.unwrap().node.as_str(), ids[0]);
    }

    #[test]
    fn tie_band_joins_close_pops() {
        // Two PoPs 30 km apart share traffic with a 50 km band, and do not with 0.
        let mut config = world();
        config.pops.push(geolb_config::Pop { id: "lhr2".into(), location: GeoPoint::new(51.3, 0.2), region: None });
        config.nodes.push(Node {
            id: "lhr2-1".into(),
            pop: "lhr2".into(),
            ipv4: Some([192, 0, 2, 99].into()),
            ipv6: None,
            weight: 100,
            enabled: true,
            check: Default::default(),
        });
        config.services[0].nodes.push("lhr2-1".into());
        let pops_seen = |band: f64| {
            let mut config = config.clone();
            config.services[0].tie_band_km = band;
            let selector = Selector::build(&config, &geolb_common::health::NoVerdicts);
            let svc = selector.service("cdn.example.net.").unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for k in 0..300u32 {
                let (_, c) = pick_one(svc, Family::V4, LONDON, client_key(IpAddr::from(k.to_be_bytes()), 32));
                seen.insert(c.unwrap().pop.to_string());
            }
            seen.into_iter().collect::<Vec<_>>()
        };
        assert_eq!(pops_seen(50.0), ["lhr", "lhr2"]);
        assert_eq!(pops_seen(0.0), ["lhr"]);
    }

    #[test]
    fn client_key_masks_to_the_prefix() {
        let a = client_key("81.2.69.7".parse().unwrap(), 24);
        assert_eq!(a, client_key("81.2.69.200".parse().unwrap(), 24));
        assert_ne!(a, client_key("81.2.70.7".parse().unwrap(), 24));
        assert_ne!(a, client_key("81.2.69.7".parse().unwrap(), 25));
        let b = client_key("2001:db8:1:2::1".parse().unwrap(), 48);
        assert_eq!(b, client_key("2001:db8:1:ffff::9".parse().unwrap(), 48));
        assert_ne!(b, client_key("2001:db8:2::1".parse().unwrap(), 48));
        assert_eq!(client_key("1.2.3.4".parse().unwrap(), 0), client_key("9.9.9.9".parse().unwrap(), 0));
    }

    /// Random PoPs and nodes, random health.
    fn arb_world() -> impl Strategy<Value = (Config, Map<NodeId, Health>)> {
        let pop = (-89.0f64..89.0, -179.0f64..179.0);
        let node = (0usize..64, 1u32..10, any::<bool>(), any::<bool>());
        (prop::collection::vec(pop, 1..40), prop::collection::vec(node, 1..80)).prop_map(|(pops, nodes)| {
            let mut config = Config::for_test();
            config.pops = pops
                .iter()
                .enumerate()
                .map(|(i, (lat, lon))| geolb_config::Pop {
                    id: format!("p{i}").into(),
                    location: GeoPoint::new(*lat, *lon),
                    region: None,
                })
                .collect();
            let mut health = Map::new();
            config.nodes = nodes
                .iter()
                .enumerate()
                .map(|(i, (p, w, enabled, down))| {
                    let id: NodeId = format!("n{i}").into();
                    if *down {
                        health.insert(id.clone(), Health::Down);
                    }
                    Node {
                        id,
                        pop: format!("p{}", p % pops.len()).into(),
                        ipv4: Some([192, 0, 2, i as u8].into()),
                        ipv6: None,
                        weight: *w,
                        enabled: *enabled,
                        check: Default::default(),
                    }
                })
                .collect();
            config.services[0].types = RecordTypes { a: true, aaaa: false };
            config.services[0].tie_band_km = 0.0;
            config.services[0].nodes = config.nodes.iter().map(|n| n.id.clone()).collect();
            (config, health)
        })
    }

    proptest! {
        #[test]
        fn never_farther_than_the_nearest_usable_pop((config, health) in arb_world(), lat in -90.0f64..90.0, lon in -180.0f64..180.0, key in any::<u64>()) {
            let at = GeoPoint::new(lat, lon);
            let selector = Selector::build(&config, &health);
            let svc = selector.service("cdn.example.net.").unwrap();
            let (outcome, picked) = pick_one(svc, Family::V4, at, key);
            let usable: Vec<&Node> = config.nodes.iter().filter(|n| n.enabled && health.get(&n.id) != Some(&Health::Down)).collect();
            let dist = |n: &Node| config.pop(n.pop.as_str()).unwrap().location.distance_km(&at);
            if usable.is_empty() {
                // Never an unhealthy node while a healthy one exists; here none exists.
                prop_assert_ne!(outcome, Outcome::Healthy);
            } else {
                prop_assert_eq!(outcome, Outcome::Healthy);
                let picked = picked.unwrap();
                let node = config.node(picked.node.as_str()).unwrap();
                prop_assert!(usable.iter().any(|n| n.id == node.id), "picked an unusable node");
                let nearest = usable.iter().map(|n| dist(n)).fold(f64::INFINITY, f64::min);
                prop_assert!(dist(node) <= nearest + 1e-6, "picked {} km, nearest usable {} km", dist(node), nearest);
            }
            // Deterministic: the same inputs, the same answer, also from a freshly built selector.
            let again = Selector::build(&config, &health);
            let (_, picked2) = pick_one(again.service("cdn.example.net.").unwrap(), Family::V4, at, key);
            prop_assert_eq!(pick_one(svc, Family::V4, at, key).1.map(|c| c.node), picked2.map(|c| c.node));
        }
    }

    #[test]
    fn weights_are_respected_over_many_subnets() {
        // One PoP, nodes of weight 1, 2 and 5: shares over 40,000 /24s within 2 points of 1/8, 2/8, 5/8.
        let mut config = world();
        config.nodes.retain(|n| n.pop.as_str() == "fra");
        config.nodes.push(Node {
            id: "fra-3".into(),
            pop: "fra".into(),
            ipv4: Some([192, 0, 2, 3].into()),
            ipv6: None,
            weight: 500,
            enabled: true,
            check: Default::default(),
        });
        config.nodes[0].weight = 100;
        config.nodes[1].weight = 200;
        config.services[0].nodes = config.nodes.iter().map(|n| n.id.clone()).collect();
        let selector = Selector::build(&config, &geolb_common::health::NoVerdicts);
        let svc = selector.service("cdn.example.net.").unwrap();
        let mut counts: Map<String, u32> = Map::new();
        let total = 40_000u32;
        for i in 0..total {
            let ip = IpAddr::from((0x0a00_0000u32 + (i << 8)).to_be_bytes());
            let (_, c) = pick_one(svc, Family::V4, LONDON, client_key(ip, 24));
            *counts.entry(c.unwrap().node.to_string()).or_default() += 1;
        }
        for (node, expect) in [("fra-1", 1.0 / 8.0), ("fra-2", 2.0 / 8.0), ("fra-3", 5.0 / 8.0)] {
            let share = f64::from(counts[node]) / f64::from(total);
            assert!((share - expect).abs() < 0.02, "{node}: {share} vs {expect} ({counts:?})");
        }
    }

    #[test]
    fn a_down_node_moves_only_its_own_clients() {
        let config = world();
        let selector = Selector::build(&config, &geolb_common::health::NoVerdicts);
        let mut health: Map<NodeId, Health> = Map::new();
        health.insert("fra-1".into(), Health::Down);
        let degraded = Selector::build(&config, &health);
        let frankfurt = GeoPoint::new(50.1, 8.7);
        for i in 0..2000u32 {
            let key = client_key(IpAddr::from((0x0a00_0000u32 + (i << 8)).to_be_bytes()), 24);
            let before = pick_one(selector.service("cdn.example.net.").unwrap(), Family::V4, frankfurt, key).1.unwrap();
            let after = pick_one(degraded.service("cdn.example.net.").unwrap(), Family::V4, frankfurt, key).1.unwrap();
            if before.node.as_str() != "fra-1" {
                assert_eq!(before.node, after.node);
            } else {
                assert_eq!(after.node.as_str(), "fra-2");
            }
        }
    }
}
