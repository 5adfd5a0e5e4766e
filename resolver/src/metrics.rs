//! The resolver's metrics: the lookup latency histogram recorded per call, everything else read
//! at scrape time from the counters and state the resolver keeps anyway. Names are in
//! [`geolb_member::metrics::names`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use geolb_member::cluster::ClusterHealth;
use geolb_member::gossip::GossipHandle;
use geolb_member::metrics::{Families, names};
use geolb_member::unix_ms;
use prometheus::{Histogram, Registry};

use crate::engine::{COUNTED_QTYPES, LOOKUP_OUTCOMES};
use crate::state::Shared;

/// What a resolver that joined the gossip adds to its metrics.
pub(crate) struct MemberState {
    /// Its gossip (transport counters).
    pub gossip: Arc<GossipHandle>,
    /// The fold its observer keeps.
    pub health: Arc<std::sync::Mutex<ClusterHealth>>,
}

/// Creates and registers the lookup latency histogram (microseconds to a second).
pub(crate) fn latency_histogram(registry: &Registry) -> Option<Histogram> {
    geolb_member::metrics::histogram(
        registry,
        names::RESOLVER_LOOKUP_DURATION_SECONDS,
        "Time to answer one remote-backend call, body read to reply built",
        vec![1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1, 1.0],
    )
}

/// Creates and registers the client-to-answer distance histogram, and hands it to the engines.
pub(crate) fn distance_histogram(registry: &Registry, counters: &crate::engine::Counters) {
    if let Some(h) = geolb_member::metrics::histogram(
        registry,
        names::RESOLVER_ANSWER_DISTANCE_KILOMETERS,
        "Great-circle distance from the client's location to the answered node's PoP",
        vec![50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 12000.0, 20100.0],
    ) {
        let _ = counters.distance_km.set(h);
    }
}

/// The zones followed from a primary: serial, last transfer, expiry, transfers, NOTIFYs.
fn zones(f: &mut Families, shared: &Shared) {
    let zones = shared.transfers.snapshot();
    if zones.is_empty() {
        return;
    }
    let per_zone = |value: &dyn Fn(&crate::transfer::ZoneStatus) -> Option<f64>| -> Vec<(Vec<String>, f64)> {
        zones.iter().filter_map(|(origin, s)| Some((vec![origin.clone()], value(s)?))).collect()
    };
    f.gauge(
        names::ZONE_SERIAL,
        "The SOA serial served for a zone followed from its primary",
        &["zone"],
        per_zone(&|s| s.serial.map(f64::from)),
    );
    f.gauge(
        names::ZONE_LAST_TRANSFER_TIMESTAMP_SECONDS,
        "When the served copy of the zone was transferred (unix seconds)",
        &["zone"],
        per_zone(&|s| s.last_transfer_ms.map(|ms| ms as f64 / 1000.0)),
    );
    f.gauge(
        names::ZONE_EXPIRED,
        "1 while the zone's primary has not answered for longer than the SOA expire",
        &["zone"],
        per_zone(&|s| Some(f64::from(u8::from(s.expired)))),
    );
    f.gauge(
        names::ZONE_MISSING,
        "1 while there is no copy of the zone (its managed names fall through)",
        &["zone"],
        per_zone(&|s| Some(f64::from(u8::from(s.serial.is_none())))),
    );
    type Counts = [(&'static str, u64); 3];
    let by_result = |counts: &dyn Fn(&crate::transfer::ZoneStatus) -> Counts| -> Vec<(Vec<String>, u64)> {
        zones
            .iter()
            .flat_map(|(origin, s)| counts(s).map(|(result, n)| (vec![origin.clone(), result.to_owned()], n)))
            .collect()
    };
    f.counter(
        names::ZONE_CHECKS_TOTAL,
        "Serial checks of the zone's primary by result (ok, failed: no primary reached, refused: an error answer or a bad TSIG signature)",
        &["zone", "result"],
        by_result(&|s| [("ok", s.checks_ok), ("failed", s.checks_failed), ("refused", s.checks_refused)]),
    );
    f.counter(
        names::ZONE_TRANSFERS_TOTAL,
        "Zone transfers by result (applied, failed: the primary not reached, refused)",
        &["zone", "result"],
        by_result(&|s| {
            [("applied", s.transfers_applied), ("failed", s.transfers_failed), ("refused", s.transfers_refused)]
        }),
    );
    f.counter(
        names::ZONE_NOTIFIES_TOTAL,
        "NOTIFYs received, by result",
        &["result"],
        crate::transfer::notify::NOTIFY_OUTCOMES
            .iter()
            .zip(&shared.notifies.0)
            .map(|(outcome, n)| (vec![(*outcome).to_owned()], n.load(Ordering::Relaxed))),
    );
}

/// Every metric of the resolver, in the Prometheus text format.
pub(crate) fn render(registry: &Registry, shared: &Shared, member: Option<&MemberState>) -> String {
    let mut f = Families::default();
    let c = &shared.counters;
    f.counter(
        names::RESOLVER_LOOKUPS_TOTAL,
        "Remote-backend lookups by qtype and outcome (error: a malformed call)",
        &["qtype", "outcome"],
        COUNTED_QTYPES.iter().zip(&c.lookups).flat_map(|(qtype, row)| {
            LOOKUP_OUTCOMES
                .iter()
                .zip(row)
                .map(|(outcome, n)| (vec![(*qtype).to_owned(), (*outcome).to_owned()], n.load(Ordering::Relaxed)))
        }),
    );
    let answers: Vec<(Vec<String>, u64)> = c
        .answers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .flat_map(|(service, counters)| {
            counters.iter().map(move |((pop, node), n)| {
                (vec![service.to_string(), pop.to_string(), node.to_string()], n.load(Ordering::Relaxed))
            })
        })
        .collect();
    f.counter(
        names::RESOLVER_ANSWERS_TOTAL,
        "Addresses answered, by service, PoP and node",
        &["service", "pop", "node"],
        answers,
    );
    let single = |n: &std::sync::atomic::AtomicU64| [(Vec::new(), n.load(Ordering::Relaxed))];
    f.counter(
        names::RESOLVER_ALL_DOWN_ANSWERS_TOTAL,
        "Answers given by a service's all-down policy",
        &[],
        single(&c.all_down_answers),
    );
    f.counter(
        names::RESOLVER_LAST_RESORT_ANSWERS_TOTAL,
        "Answers from the whole pool because nothing else was left",
        &[],
        single(&c.last_resort_answers),
    );
    f.counter(
        names::RESOLVER_GEOIP_ERRORS_TOTAL,
        "GeoIP lookups that failed on a corrupt record",
        &[],
        single(&c.geoip_errors),
    );
    f.reloads(&shared.reloads);
    f.fleet(&shared.source);
    let computed = shared.view().computed_ms;
    f.gauge(
        names::RESOLVER_VIEW_AGE_SECONDS,
        "Seconds since the health view the resolver answers from was computed",
        &[],
        (computed > 0).then(|| (Vec::new(), unix_ms().saturating_sub(computed) as f64 / 1000.0)),
    );
    zones(&mut f, shared);
    if let Some(member) = member {
        f.cluster(&member.health.lock().unwrap_or_else(|p| p.into_inner()));
        f.gossip(&member.gossip.stats().snapshot());
    }
    f.render(registry)
}
