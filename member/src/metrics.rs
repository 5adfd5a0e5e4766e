//! Prometheus metrics of both programs: every name as a constant, the registry of the metrics
//! recorded as things happen (checks, lookups), and the families read at scrape time from the
//! state the programs keep anyway (the quorum fold, gossip counters, the scheduler).
//!
//! Names follow `geolb_<component>_<what>_<unit>`, counters end in `_total`. Label sets are
//! bounded by the config: node and prober ids, qtypes from a fixed list, reasons from enums.

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::cluster::ClusterHealth;
use crate::gossip::transport::AuthCounters;

/// Every exported metric name.
pub mod names {
    /// `{component, version}` = 1.
    pub const BUILD_INFO: &str = "geolb_build_info";
    /// Config reloads by `result` (`applied`, `refused`).
    pub const CONFIG_RELOADS_TOTAL: &str = "geolb_config_reloads_total";
    /// The fleet document version this member applied (0: the `file` store, or none yet).
    pub const CONFIG_VERSION: &str = "geolb_config_version";
    /// `{store, hash}` = 1: the fleet document this member applied. Members that disagree show
    /// more than one hash.
    pub const CONFIG_INFO: &str = "geolb_config_info";
    /// The newest fleet document version this member holds.
    pub const CONFIG_HEAD_VERSION: &str = "geolb_config_head_version";
    /// Fleet documents fetched from peers, by `result` (`stored`, `failed`, `hash_mismatch`).
    pub const CONFIG_FETCHES_TOTAL: &str = "geolb_config_fetches_total";
    /// Fleet document versions this member could not apply.
    pub const CONFIG_REFUSED_TOTAL: &str = "geolb_config_refused_total";
    /// 1 while the `postgres` store's database is reachable.
    pub const CONFIG_DATABASE_UP: &str = "geolb_config_database_up";

    /// Checks this prober completed, by `node` and `result` (`up`, `down`).
    pub const PROBER_CHECKS_TOTAL: &str = "geolb_prober_checks_total";
    /// Duration of this prober's checks (a timeout counts as the timeout).
    pub const PROBER_CHECK_DURATION_SECONDS: &str = "geolb_prober_check_duration_seconds";
    /// Checks skipped because `max_in_flight` checks were running.
    pub const PROBER_CHECKS_SKIPPED_TOTAL: &str = "geolb_prober_checks_skipped_total";
    /// This prober's verdict per `node` and `prober`: 1 up, 0 down (absent while undecided).
    pub const PROBER_VERDICT_UP: &str = "geolb_prober_verdict_up";
    /// Unix time of the last change of this prober's verdict per `node`.
    pub const PROBER_VERDICT_CHANGE_TIMESTAMP_SECONDS: &str = "geolb_prober_verdict_last_change_timestamp_seconds";

    /// The quorum decision per `node`: 1 up, 0 down (absent while unknown).
    pub const CLUSTER_NODE_UP: &str = "geolb_cluster_node_up";
    /// 1 for the `reason` of each `node`'s current decision.
    pub const CLUSTER_NODE_DECISION: &str = "geolb_cluster_node_decision";
    /// Unix time of the last change of each `node`'s decision.
    pub const CLUSTER_NODE_CHANGE_TIMESTAMP_SECONDS: &str = "geolb_cluster_node_last_change_timestamp_seconds";
    /// Eligible probers saying Down, per `node`.
    pub const CLUSTER_NODE_DOWN_VOTERS: &str = "geolb_cluster_node_down_voters";
    /// 1 when an operator drained the `node`.
    pub const CLUSTER_NODE_DRAINED: &str = "geolb_cluster_node_drained";
    /// Per `prober`: 1 when the gossip failure detector sees it alive.
    pub const CLUSTER_PROBER_LIVE: &str = "geolb_cluster_prober_live";
    /// Per `prober`: 1 when it says it is impaired (abstains).
    pub const CLUSTER_PROBER_IMPAIRED: &str = "geolb_cluster_prober_impaired";
    /// Per `prober`: 1 when fenced for disagreeing with its peers.
    pub const CLUSTER_PROBER_FENCED: &str = "geolb_cluster_prober_fenced";

    /// Gossip UDP payload bytes by `direction` (`sent`, `received`).
    pub const GOSSIP_BYTES_TOTAL: &str = "geolb_gossip_bytes_total";
    /// Gossip datagrams by `direction`.
    pub const GOSSIP_DATAGRAMS_TOTAL: &str = "geolb_gossip_datagrams_total";
    /// Gossip datagrams dropped, by `reason` (`bad_tag`, `replay`, `wrong_receiver`, …).
    pub const GOSSIP_REJECTED_TOTAL: &str = "geolb_gossip_rejected_total";
    /// Gossip members this member's fold leaves out whole because their state is past the cap,
    /// by `reason` (`too_many_keys`, `too_many_bytes`).
    pub const GOSSIP_MEMBERS_IGNORED: &str = "geolb_gossip_members_ignored";

    /// Remote-backend lookups by `qtype` and `outcome` (`answered`, `fell_through`; `error`: a
    /// malformed call, counted with qtype `other`).
    pub const RESOLVER_LOOKUPS_TOTAL: &str = "geolb_resolver_lookups_total";
    /// Time to answer one remote-backend call, body read to reply built.
    pub const RESOLVER_LOOKUP_DURATION_SECONDS: &str = "geolb_resolver_lookup_duration_seconds";
    /// Addresses answered, by `service`, `pop` and `node`.
    pub const RESOLVER_ANSWERS_TOTAL: &str = "geolb_resolver_answers_total";
    /// Great-circle distance from the client's location to the answered node's PoP.
    pub const RESOLVER_ANSWER_DISTANCE_KILOMETERS: &str = "geolb_resolver_answer_distance_kilometers";
    /// Answers given by a service's all-down policy.
    pub const RESOLVER_ALL_DOWN_ANSWERS_TOTAL: &str = "geolb_resolver_all_down_answers_total";
    /// Answers from the whole pool because nothing else was left.
    pub const RESOLVER_LAST_RESORT_ANSWERS_TOTAL: &str = "geolb_resolver_last_resort_answers_total";
    /// GeoIP lookups that failed on a corrupt record.
    pub const RESOLVER_GEOIP_ERRORS_TOTAL: &str = "geolb_resolver_geoip_errors_total";
    /// Seconds since the health view the resolver answers from was computed.
    pub const RESOLVER_VIEW_AGE_SECONDS: &str = "geolb_resolver_view_age_seconds";
    /// `{zone}`: the SOA serial served for a zone followed from its primary.
    pub const ZONE_SERIAL: &str = "geolb_zone_serial";
    /// `{zone}`: when the served copy was transferred (unix seconds; absent before the first).
    pub const ZONE_LAST_TRANSFER_TIMESTAMP_SECONDS: &str = "geolb_zone_last_transfer_timestamp_seconds";
    /// `{zone}`: 1 while the primary has not answered for longer than the SOA expire.
    pub const ZONE_EXPIRED: &str = "geolb_zone_expired";
    /// `{zone}`: 1 while there is no copy at all (the zone's managed names fall through).
    pub const ZONE_MISSING: &str = "geolb_zone_missing";
    /// Serial checks (SOA queries to the primary) by `zone` and `result` (`ok`, `failed`: no
    /// primary reached, `refused`: an error answer or a bad TSIG signature).
    pub const ZONE_CHECKS_TOTAL: &str = "geolb_zone_checks_total";
    /// Zone transfers by `zone` and `result` (`applied`, `failed`, `refused`).
    pub const ZONE_TRANSFERS_TOTAL: &str = "geolb_zone_transfers_total";
    /// NOTIFYs received by `result` (`accepted`, `unknown_source`, `unknown_zone`, `bad_tsig`,
    /// `malformed`).
    pub const ZONE_NOTIFIES_TOTAL: &str = "geolb_zone_notifies_total";

    /// Connections open, by `listener` (`admin`, `http`: the resolver's HTTP connector).
    pub const CONNECTIONS_OPEN: &str = "geolb_connections_open";
    /// Connections refused at accept or closed by the server, by `listener` and `reason`
    /// (`limit`: `max_connections` were open; `header_timeout`: no request head in time;
    /// `idle_timeout`: a kept-alive connection idle too long; `body_timeout`: a request body
    /// not received in time, answered 408).
    pub const CONNECTIONS_REFUSED_TOTAL: &str = "geolb_connections_refused_total";
}

/// A registry with `geolb_build_info` registered for `component` (`prober`, `resolver`).
pub fn registry(component: &str) -> Registry {
    let registry = Registry::new();
    let opts = Opts::new(names::BUILD_INFO, "geolb build information (always 1)")
        .const_label("component", component)
        .const_label("version", env!("CARGO_PKG_VERSION"));
    match prometheus::IntGauge::with_opts(opts) {
        Ok(info) => {
            info.set(1);
            register(&registry, info);
        }
        Err(e) => tracing::warn!(error = %e, "cannot create geolb_build_info"),
    }
    registry
}

/// Registers `collector`, logging (never failing) on a duplicate or invalid metric.
pub fn register<C: Collector + 'static>(registry: &Registry, collector: C) {
    if let Err(e) = registry.register(Box::new(collector)) {
        tracing::warn!(error = %e, "cannot register a metric");
    }
}

/// Creates and registers a histogram recorded as things happen; `None` (logged) only for an
/// invalid name or buckets, which the tests rule out.
pub fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Option<prometheus::Histogram> {
    match prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(name, help).buckets(buckets)) {
        Ok(h) => {
            register(registry, h.clone());
            Some(h)
        }
        Err(e) => {
            tracing::error!(error = %e, name, "cannot create a histogram");
            None
        }
    }
}

/// Config reloads applied and refused since start; both programs count theirs here and export
/// them with [`Families::reloads`].
#[derive(Debug, Default)]
pub struct Reloads {
    applied: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
}

impl Reloads {
    /// Counts one reload: `applied` when the new config took effect, else refused.
    pub fn record(&self, applied: bool) {
        let counter = if applied { &self.applied } else { &self.refused };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Metric families built at scrape time from values the program already holds.
#[derive(Default)]
pub struct Families(Vec<MetricFamily>);

impl Families {
    /// A counter family; `rows` are (label values, value).
    pub fn counter<I>(&mut self, name: &str, help: &str, labels: &[&str], rows: I)
    where
        I: IntoIterator<Item = (Vec<String>, u64)>,
    {
        self.add(name, IntCounterVec::new(Opts::new(name, help), labels), rows, |c, n| c.inc_by(n));
    }

    /// A gauge family; `rows` are (label values, value).
    pub fn gauge<I>(&mut self, name: &str, help: &str, labels: &[&str], rows: I)
    where
        I: IntoIterator<Item = (Vec<String>, f64)>,
    {
        self.add(name, GaugeVec::new(Opts::new(name, help), labels), rows, |g, v| g.set(v));
    }

    fn add<B, V, I>(&mut self, name: &str, vec: prometheus::Result<MetricVec<B>>, rows: I, set: impl Fn(&B::M, V))
    where
        B: MetricVecBuilder,
        I: IntoIterator<Item = (Vec<String>, V)>,
    {
        match vec {
            Ok(vec) => {
                for (values, v) in rows {
                    let values: Vec<&str> = values.iter().map(String::as_str).collect();
                    if let Ok(metric) = vec.get_metric_with_label_values(&values) {
                        set(&metric, v);
                    }
                }
                self.0.extend(vec.collect());
            }
            Err(e) => tracing::warn!(metric = name, error = %e, "cannot build a metric"),
        }
    }

    /// The quorum fold this member keeps: decisions per node, drains, probers' state.
    pub fn cluster(&mut self, health: &ClusterHealth) {
        let global = &health.decisions.global;
        let node = |id: &geolb_common::NodeId| vec![id.to_string()];
        self.gauge(
            names::CLUSTER_NODE_UP,
            "Quorum decision per node: 1 up, 0 down (absent while unknown)",
            &["node"],
            global.iter().filter_map(|(id, d)| match d.health {
                geolb_common::Health::Up => Some((node(id), 1.0)),
                geolb_common::Health::Down => Some((node(id), 0.0)),
                _ => None,
            }),
        );
        self.gauge(
            names::CLUSTER_NODE_DECISION,
            "1 for the reason of each node's current quorum decision",
            &["node", "reason"],
            global.iter().map(|(id, d)| (vec![id.to_string(), d.reason.as_str().to_owned()], 1.0)),
        );
        self.gauge(
            names::CLUSTER_NODE_CHANGE_TIMESTAMP_SECONDS,
            "Unix time of the last change of each node's quorum decision",
            &["node"],
            global.iter().filter(|(_, d)| d.since_ms > 0).map(|(id, d)| (node(id), d.since_ms as f64 / 1000.0)),
        );
        self.gauge(
            names::CLUSTER_NODE_DOWN_VOTERS,
            "Eligible probers saying a node is down",
            &["node"],
            global.iter().map(|(id, d)| (node(id), d.down_voters as f64)),
        );
        self.gauge(
            names::CLUSTER_NODE_DRAINED,
            "1 when an operator drained the node",
            &["node"],
            global.keys().map(|id| (node(id), if health.drained.contains(id) { 1.0 } else { 0.0 })),
        );
        let voters = &health.voters;
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        self.gauge(
            names::CLUSTER_PROBER_LIVE,
            "1 when the gossip failure detector sees the prober alive",
            &["prober"],
            voters.iter().map(|v| (vec![v.id.to_string()], flag(v.live))),
        );
        self.gauge(
            names::CLUSTER_PROBER_IMPAIRED,
            "1 when the prober says it is impaired and abstains",
            &["prober"],
            voters.iter().map(|v| (vec![v.id.to_string()], flag(v.impaired))),
        );
        self.gauge(
            names::CLUSTER_PROBER_FENCED,
            "1 when the prober is fenced for disagreeing with its peers",
            &["prober"],
            voters.iter().map(|v| (vec![v.id.to_string()], flag(health.decisions.fenced.contains(&v.id)))),
        );
        self.gauge(
            names::GOSSIP_MEMBERS_IGNORED,
            "Gossip members left out of the fold whole because their state is past the cap",
            &["reason"],
            crate::gossip::keys::Oversize::ALL.iter().map(|r| {
                let n = health.ignored_members.values().filter(|why| *why == r).count();
                (vec![r.as_str().to_owned()], n as f64)
            }),
        );
    }

    /// This member's gossip transport counters.
    pub fn gossip(&mut self, c: &AuthCounters) {
        let dir = |d: &str, n: u64| (vec![d.to_owned()], n);
        self.counter(
            names::GOSSIP_BYTES_TOTAL,
            "Gossip UDP payload bytes (whole signed frames)",
            &["direction"],
            [dir("sent", c.bytes_sent), dir("received", c.bytes_received)],
        );
        self.counter(
            names::GOSSIP_DATAGRAMS_TOTAL,
            "Gossip datagrams",
            &["direction"],
            [dir("sent", c.datagrams_sent), dir("received", c.datagrams_received)],
        );
        self.counter(
            names::GOSSIP_REJECTED_TOTAL,
            "Gossip datagrams dropped, by reason",
            &["reason"],
            crate::gossip::frame::Reject::ALL.iter().map(|r| (vec![r.as_str().to_owned()], c.rejected(*r))),
        );
    }

    /// Config reloads by result.
    pub fn reloads(&mut self, reloads: &Reloads) {
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        self.counter(
            names::CONFIG_RELOADS_TOTAL,
            "Config reloads by result",
            &["result"],
            [
                (vec!["applied".to_owned()], load(&reloads.applied)),
                (vec!["refused".to_owned()], load(&reloads.refused)),
            ],
        );
    }

    /// Where this member's fleet document stands.
    pub fn fleet(&mut self, source: &crate::fleet::ConfigSource) {
        use std::sync::atomic::Ordering::Relaxed;
        let applied = source.applied_version();
        let version = applied.as_ref().map_or(0, |v| v.version);
        self.gauge(
            names::CONFIG_VERSION,
            "The fleet document version this member applied",
            &[],
            [(Vec::new(), version as f64)],
        );
        let hash = applied.map(|v| v.hash).unwrap_or_default();
        self.gauge(
            names::CONFIG_INFO,
            "The fleet document this member applied: its store and hash",
            &["store", "hash"],
            [(vec![source.store().as_str().to_owned(), hash], 1.0)],
        );
        let head = source.head_version().map_or(0, |v| v.version);
        self.gauge(
            names::CONFIG_HEAD_VERSION,
            "The newest fleet document version this member holds",
            &[],
            [(Vec::new(), head as f64)],
        );
        let c = &source.counters;
        self.counter(
            names::CONFIG_FETCHES_TOTAL,
            "Fleet documents fetched from peers, by result",
            &["result"],
            [
                (vec!["stored".to_owned()], c.fetched.load(Relaxed)),
                (vec!["failed".to_owned()], c.fetch_failures.load(Relaxed)),
                (vec!["hash_mismatch".to_owned()], c.hash_mismatches.load(Relaxed)),
            ],
        );
        self.counter(
            names::CONFIG_REFUSED_TOTAL,
            "Fleet document versions this member could not apply",
            &[],
            [(Vec::new(), c.refused.load(Relaxed))],
        );
        if let Some(db) = source.database() {
            self.gauge(
                names::CONFIG_DATABASE_UP,
                "1 while the postgres store's database is reachable",
                &[],
                [(Vec::new(), if db.up { 1.0 } else { 0.0 })],
            );
        }
    }

    /// Renders `registry`'s metrics and these families in the Prometheus text format.
    pub fn render(mut self, registry: &Registry) -> String {
        self.0.extend(registry.gather());
        // The text encoder refuses a family without samples (a vector with no label set yet).
        self.0.retain(|family| !family.get_metric().is_empty());
        self.0.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.0, &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The `Content-Type` of [`Families::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [&str; 42] = [
        names::BUILD_INFO,
        names::CONFIG_RELOADS_TOTAL,
        names::CONFIG_VERSION,
        names::CONFIG_INFO,
        names::CONFIG_HEAD_VERSION,
        names::CONFIG_FETCHES_TOTAL,
        names::CONFIG_REFUSED_TOTAL,
        names::CONFIG_DATABASE_UP,
        names::PROBER_CHECKS_TOTAL,
        names::PROBER_CHECK_DURATION_SECONDS,
        names::PROBER_CHECKS_SKIPPED_TOTAL,
        names::PROBER_VERDICT_UP,
        names::PROBER_VERDICT_CHANGE_TIMESTAMP_SECONDS,
        names::CLUSTER_NODE_UP,
        names::CLUSTER_NODE_DECISION,
        names::CLUSTER_NODE_CHANGE_TIMESTAMP_SECONDS,
        names::CLUSTER_NODE_DOWN_VOTERS,
        names::CLUSTER_NODE_DRAINED,
        names::CLUSTER_PROBER_LIVE,
        names::CLUSTER_PROBER_IMPAIRED,
        names::CLUSTER_PROBER_FENCED,
        names::GOSSIP_BYTES_TOTAL,
        names::GOSSIP_DATAGRAMS_TOTAL,
        names::GOSSIP_REJECTED_TOTAL,
        names::GOSSIP_MEMBERS_IGNORED,
        names::RESOLVER_LOOKUPS_TOTAL,
        names::RESOLVER_LOOKUP_DURATION_SECONDS,
        names::RESOLVER_ALL_DOWN_ANSWERS_TOTAL,
        names::RESOLVER_LAST_RESORT_ANSWERS_TOTAL,
        names::RESOLVER_GEOIP_ERRORS_TOTAL,
        names::RESOLVER_VIEW_AGE_SECONDS,
        names::ZONE_SERIAL,
        names::ZONE_LAST_TRANSFER_TIMESTAMP_SECONDS,
        names::ZONE_EXPIRED,
        names::ZONE_MISSING,
        names::ZONE_CHECKS_TOTAL,
        names::ZONE_TRANSFERS_TOTAL,
        names::ZONE_NOTIFIES_TOTAL,
        names::RESOLVER_ANSWERS_TOTAL,
        names::RESOLVER_ANSWER_DISTANCE_KILOMETERS,
        names::CONNECTIONS_OPEN,
        names::CONNECTIONS_REFUSED_TOTAL,
    ];

    #[test]
    fn names_follow_the_convention() {
        let unique: std::collections::BTreeSet<&str> = ALL.into_iter().collect();
        assert_eq!(unique.len(), ALL.len());
        for name in ALL {
            let parts: Vec<&str> = name.split('_').collect();
            assert!(name.starts_with("geolb_") && parts.len() >= 3, "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
        }
    }

    #[test]
    fn families_render_with_labels_and_skip_empty_ones() {
        let registry = registry("test");
        let mut f = Families::default();
        f.counter(
            "geolb_test_things_total",
            "things",
            &["kind"],
            [(vec!["a".to_owned()], 3), (vec!["b".to_owned()], 0)],
        );
        f.gauge("geolb_test_level", "level", &["node"], std::iter::empty());
        f.gauge("geolb_test_ratio", "ratio", &[], [(Vec::new(), 0.25)]);
        let text = f.render(&registry);
        assert!(text.contains("geolb_build_info{component=\"test\",version=\""), "{text}");
        assert!(text.contains("# TYPE geolb_test_things_total counter\n"), "{text}");
        assert!(text.contains("geolb_test_things_total{kind=\"a\"} 3\n"), "{text}");
        assert!(text.contains("geolb_test_things_total{kind=\"b\"} 0\n"), "{text}");
        assert!(text.contains("geolb_test_ratio 0.25\n"), "{text}");
        assert!(!text.contains("geolb_test_level"), "an empty family is left out: {text}");
    }

    #[test]
    fn ignored_members_are_counted_by_reason() {
        use crate::gossip::keys::Oversize;
        let mut health = ClusterHealth::default();
        health.ignored_members.insert("p1".into(), Oversize::Keys);
        health.ignored_members.insert("p2".into(), Oversize::Keys);
        let mut f = Families::default();
        f.cluster(&health);
        let text = f.render(&Registry::new());
        assert!(text.contains("geolb_gossip_members_ignored{reason=\"too_many_keys\"} 2\n"), "{text}");
        assert!(text.contains("geolb_gossip_members_ignored{reason=\"too_many_bytes\"} 0\n"), "{text}");
    }

    #[test]
    fn the_gossip_family_has_every_rejection_reason() {
        let text = {
            let mut f = Families::default();
            f.gossip(&AuthCounters::default());
            f.render(&Registry::new())
        };
        for reason in crate::gossip::frame::Reject::ALL {
            assert!(
                text.contains(&format!("geolb_gossip_rejected_total{{reason=\"{}\"}} 0", reason.as_str())),
                "{text}"
            );
        }
    }
}
