//! The engine both remote-backend targets answer from: `config/examples/world.toml` (eight PoPs,
//! sixteen nodes, `cdn.example.net.`) with its zone, a small generated GeoIP database, zone
//! metadata, a request bound of 4 KiB (so inputs can cross it) and a health view with nodes
//! down, globally and in one region, and one drained.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use geolb_common::NodeId;
use geolb_common::health::Health;
use geolb_common::quorum::{Decision, DecisionReason};
use geolb_resolver::engine::{Counters, Engine};
use geolb_resolver::health::ServedHealth;
use geolb_resolver::server::Backend;

use crate::fixture::{example, examples_dir, must, scratch_subdir};

/// The request bound of the engine's config (`[resolver] max_request_bytes`).
pub(crate) const MAX_REQUEST_BYTES: usize = 4096;

/// Where the generated GeoIP database places clients: (network, lat, lon, country).
const GEOIP: &[(&str, f32, f32, &str)] = &[
    ("81.2.69.0/24", 51.51, -0.13, "GB"),
    ("203.0.113.0/24", 35.68, 139.65, "JP"),
    ("192.0.2.0/24", 50.11, 8.68, "DE"),
    ("100.64.0.0/10", -33.87, 151.21, "AU"),
    ("8.8.8.0/24", 37.34, -121.89, "US"),
];

fn decision(health: Health) -> Decision {
    Decision {
        health,
        reason: if health == Health::Down { DecisionReason::QuorumDown } else { DecisionReason::QuorumUp },
        since_ms: 1,
        last_quorum_ms: Some(1),
        down_weight: 1.0,
        eligible_weight: 2.0,
        down_voters: 1,
        eligible_voters: 2,
    }
}

fn view() -> ServedHealth {
    let down = |ids: &[&str]| -> BTreeMap<NodeId, Decision> {
        ids.iter().map(|id| (NodeId::from(*id), decision(Health::Down))).collect()
    };
    let mut global = down(&["fra-1", "sin-1", "sin-2"]);
    global.insert(NodeId::from("lhr-1"), decision(Health::Up));
    let regional = [(Arc::from("eu"), down(&["lhr-1", "lhr-2"]))].into_iter().collect();
    let drained: BTreeSet<NodeId> = [NodeId::from("iad-2")].into_iter().collect();
    ServedHealth { global, regional, drained, computed_ms: 1 }
}

/// Builds the engine; panics if the example files are not as the fixture expects.
pub(crate) fn backend() -> Backend {
    let dir = scratch_subdir("resolver");
    let v4 = dir.join("dbip-city-ipv4.mmdb");
    let entries: Vec<(ipnet::IpNet, f32, f32, &str)> = GEOIP
        .iter()
        .map(|(net, lat, lon, cc)| (must(net.parse(), "parse a fixture network"), *lat, *lon, *cc))
        .collect();
    must(geolb_resolver::geoip::fixture::write_dbip(&v4, 4, &entries), "write the GeoIP fixture");
    let world = example("world.toml");
    let edited = world
        .replace(
            r#"databases = ["../../data/dbip/dbip-city-ipv4.mmdb", "../../data/dbip/dbip-city-ipv6.mmdb"]"#,
            &format!("databases = [{:?}]", v4.display().to_string()),
        )
        .replace(
            r#"listen = "127.0.0.1:5380""#,
            &format!("listen = \"127.0.0.1:5380\"\nmax_request_bytes = {MAX_REQUEST_BYTES}"),
        )
        .replace(
            "file = \"example.net.zone\"\n",
            "file = \"example.net.zone\"\nmetadata = { NSEC3PARAM = [\"1 0 0 -\"], SOA-EDIT-API = [\"DEFAULT\"] }\n",
        );
    assert!(edited.contains("max_request_bytes") && edited.contains("NSEC3PARAM") && edited.contains(".mmdb\"]"));
    let config = must(geolb_config::parse(&edited, &examples_dir()), "parse the edited world.toml");
    assert_eq!(config.resolver.max_request_bytes, MAX_REQUEST_BYTES);
    let geoip = must(geolb_resolver::state::open_geoip(&config), "open the GeoIP fixture");
    let zones = must(geolb_resolver::state::load_zones(&config), "load the example zone");
    let engine = Engine::build(&config, geoip, Arc::new(zones.set), &view(), Arc::new(Counters::default()));
    Backend { engine: Arc::new(ArcSwap::from_pointee(engine)), latency: None }
}
