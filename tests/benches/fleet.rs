//! Fleet configuration benchmark: how fast a change made over one member's admin API is in
//! every PowerDNS answer, and how fast a large cluster converges on a new version. Run it with
//! `bench/fleet.sh` (release binaries).
//!
//! 1. **Change → every answer**, for the embedded store and for PostgreSQL: 3 `geolb-prober`
//!    and 2 `geolb-resolver` processes on loopback, each resolver behind a real PowerDNS. Each
//!    sample PUTs a document that moves the measured client's network to the other PoP (the
//!    members take turns to receive the PUT) and polls every PowerDNS every 5 ms until *every*
//!    answer is in the new PoP; the time from sending the PUT is the sample. Then the same
//!    with a 10,000-name document (about 1.3 MB).
//! 2. **100 members converge**: 100 members in this process (each with its config source,
//!    gossip on real UDP loopback, admin API and fetch loop, and a stand-in for the program
//!    that applies each stored version), gossip every 200 ms. Each sample writes a version on
//!    member 0 and measures until all 100 have applied it.
//!
//! With 20 samples, p99 is the maximum.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use geolb_tests::QueryOptions;
use geolb_tests::cluster::{ADMIN_TOKEN, CLUSTER_KEY, Cluster, fleet_get, fleet_put, start_two_pops_with};
use geolb_tests::postgres::Postgres;
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The measured client network (TEST-NET-2).
const CLIENT: &str = "198.51.100.0/24";
/// Samples per measurement.
const SAMPLES: usize = 20;
/// Samples with the 10,000-name document.
const BIG_SAMPLES: usize = 10;
/// Names in the large document.
const BIG_NAMES: usize = 10_000;
/// Members in the convergence run.
const MEMBERS: usize = 100;

const TARGET_CHANGE_P99_S: f64 = 1.0;
const TARGET_BIG_CHANGE_P99_S: f64 = 2.0;
const TARGET_CONVERGE_S: f64 = 3.0;

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    println!("== geolb fleet configuration benchmark ==");
    // `GEOLB_BENCH_ONLY=converge` (or `answers`) runs one part.
    let only = std::env::var("GEOLB_BENCH_ONLY").unwrap_or_default();
    let mut verdicts = Vec::new();
    for store in ["embedded", "postgres"].into_iter().filter(|_| only != "converge") {
        let (small, big) = change_to_answers(store).await?;
        verdicts.push(verdict(&format!("{store}: PUT -> every PowerDNS answer, p99"), &small, TARGET_CHANGE_P99_S));
        verdicts.push(verdict(
            &format!("{store}: PUT of a {BIG_NAMES}-name document -> every PowerDNS answer, p99"),
            &big,
            TARGET_BIG_CHANGE_P99_S,
        ));
    }
    if only != "answers" {
        let converge = converge(MEMBERS).await?;
        verdicts.push(verdict(&format!("{MEMBERS} members applying a new version, p99"), &converge, TARGET_CONVERGE_S));
    }
    println!("\n== against the issue's targets ==");
    for v in verdicts {
        println!("{v}");
    }
    Ok(())
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let i = ((s.len() as f64 * p).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

fn summary(label: &str, samples: &[Duration]) {
    println!(
        "{label}: p50 {:.3} s  p99 {:.3} s  max {:.3} s  min {:.3} s ({} samples)",
        percentile(samples, 0.5).as_secs_f64(),
        percentile(samples, 0.99).as_secs_f64(),
        percentile(samples, 1.0).as_secs_f64(),
        percentile(samples, 0.0).as_secs_f64(),
        samples.len()
    );
}

fn verdict(label: &str, samples: &[Duration], target_s: f64) -> String {
    let p99 = percentile(samples, 0.99).as_secs_f64();
    let meets = if p99 <= target_s { "meets the target" } else { "MISSES the target" };
    format!("{label} {p99:.3} s vs target ≤ {target_s} s: {:.2}× ({meets})", p99 / target_s)
}

/// Every PowerDNS's first A answer for the client, for `qname`.
async fn answers(cluster: &Cluster, qname: &str) -> Result<Vec<IpAddr>> {
    let net: IpNet = CLIENT.parse()?;
    let options = QueryOptions::new(qname, "A").ecs(Some(net)).timeout(Duration::from_millis(500)).attempts(4);
    let mut out = Vec::new();
    for r in &cluster.resolvers {
        let resp = geolb_tests::query_with(r.pdns.as_ref().context("no pdns")?.addr(), &options).await?;
        ensure!(resp.rcode == "NOERROR", "{resp}");
        out.push(*resp.addresses().first().with_context(|| format!("no address: {resp}"))?);
    }
    Ok(out)
}

async fn until_answers(cluster: &Cluster, qname: &str, want: &[IpAddr], within: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let a = answers(cluster, qname).await?;
        if a.iter().all(|ip| want.contains(ip)) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("{qname}: answers {a:?} after {within:?}, want one of {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `GET /api/v1/config`: (version, document).
async fn get(admin: SocketAddr) -> Result<(u64, Value)> {
    fleet_get(admin, ADMIN_TOKEN).await
}

/// `PUT /api/v1/config` at `version`; the new version.
async fn put(admin: SocketAddr, version: u64, doc: &Value) -> Result<u64> {
    fleet_put(admin, ADMIN_TOKEN, version, doc, "bench").await
}

/// Samples of PUT → every answer moved, alternating the client between the PoPs, the PUT going
/// to each member in turn.
async fn samples(
    cluster: &Cluster,
    base: &Value,
    pops: [(&str, &[IpAddr]); 2],
    count: usize,
    check: &[&str],
) -> Result<Vec<Duration>> {
    let admins: Vec<SocketAddr> = cluster.probers.iter().chain(&cluster.resolvers).map(|m| m.admin).collect();
    let mut out = Vec::new();
    let (mut version, _) = get(admins[0]).await?;
    for i in 0..count {
        let (pop, want) = pops[i % 2];
        let mut doc = base.clone();
        doc["overrides"] = json!([{ "cidr": CLIENT, "pop": pop }]);
        let admin = admins[i % admins.len()];
        let start = Instant::now();
        version = put(admin, version, &doc).await?;
        for qname in check {
            until_answers(cluster, qname, want, Duration::from_secs(10)).await?;
        }
        out.push(start.elapsed());
        // Let every member apply it before the next PUT names it as If-Match.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(out)
}

async fn change_to_answers(store: &str) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let pg = if store == "postgres" { Some(Postgres::start().await?) } else { None };
    let fleet = match &pg {
        Some(pg) => format!("store = \"postgres\"\npostgres = \"{}\"", pg.conninfo()),
        None => "store = \"embedded\"".to_owned(),
    };
    let (cluster, servers) = start_two_pops_with(3, None, CLIENT, Some(fleet)).await?;
    let fra: Vec<IpAddr> = servers[..2].iter().map(|s| s.addr.ip()).collect();
    let syd: Vec<IpAddr> = servers[2..].iter().map(|s| s.addr.ip()).collect();
    until_answers(&cluster, "cdn.example.net.", &fra, Duration::from_secs(30)).await?;
    let (_, base) = get(cluster.resolvers[0].admin).await?;
    println!("\n-- {store} store: 3 probers + 2 resolvers behind PowerDNS --");
    let small = samples(&cluster, &base, [("syd", &syd), ("fra", &fra)], SAMPLES, &["cdn.example.net."]).await?;
    summary("PUT -> every PowerDNS answer", &small);

    let mut big = base.clone();
    let mut template = big["services"][0].clone();
    // Every name over every node, as a CDN's names often are: about 1.1 MB in all.
    let nodes: Vec<Value> = big["nodes"].as_array().context("nodes")?.iter().map(|n| n["id"].clone()).collect();
    template["nodes"] = json!(nodes);
    let services: Vec<Value> = std::iter::once(template.clone())
        .chain((0..BIG_NAMES - 1).map(|i| {
            let mut s = template.clone();
            s["name"] = json!(format!("s{i:05}.example.net."));
            s
        }))
        .collect();
    big["services"] = json!(services);
    let bytes = big.to_string().len();
    // The first PUT of the large document adds the names; then time the changes.
    let (version, _) = get(cluster.resolvers[0].admin).await?;
    let added = put(cluster.probers[0].admin, version, &big).await?;
    // Every resolver applies it before its names are asked (PowerDNS would cache an NXDOMAIN).
    for r in &cluster.resolvers {
        let start = Instant::now();
        while geolb_tests::cluster::state(r.admin).await?["config"]["applied"]["version"] != added {
            ensure!(start.elapsed() < Duration::from_secs(30), "the large document is not applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let last = format!("s{:05}.example.net.", BIG_NAMES - 2);
    until_answers(&cluster, &last, &[fra.clone(), syd.clone()].concat(), Duration::from_secs(20)).await?;
    let big_samples =
        samples(&cluster, &big, [("syd", &syd), ("fra", &fra)], BIG_SAMPLES, &["cdn.example.net.", &last]).await?;
    summary(
        &format!("PUT of a {BIG_NAMES}-name document ({} KB) -> every PowerDNS answer", bytes / 1024),
        &big_samples,
    );
    drop(cluster);
    drop(pg);
    Ok((small, big_samples))
}

/// One in-process member for the convergence run.
struct Member {
    source: Arc<geolb_member::fleet::ConfigSource>,
    _dir: geolb_tests::TestDir,
}

async fn start_member(
    i: usize,
    seeds: &[SocketAddr],
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(Member, SocketAddr)> {
    use geolb_member::admin::{AdminState, serve_admin};
    let dir = geolb_tests::TestDir::new("fleet-member")?;
    let key = dir.join("cluster.key");
    std::fs::write(&key, CLUSTER_KEY.replace(' ', ""))?;
    std::fs::write(dir.join("admin.token"), ADMIN_TOKEN)?;
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "default_location = {{ pop = \"fra\" }}\n[[pops]]\nid = \"fra\"\nlat = 50.11\nlon = 8.68\n\
         [fleet]\nstore = \"embedded\"\n[admin]\ntoken_file = \"admin.token\"\n\
         [cluster]\nid = \"bench\"\nkey_file = \"cluster.key\"\ngossip_interval_ms = 200\nseeds = [{}]\n\
         [member]\nid = \"m{i:03}\"\ngossip_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n",
        seeds.join(", ")
    );
    let path = dir.join("geolb.toml");
    std::fs::write(&path, text)?;
    let (source, config) = geolb_member::fleet::ConfigSource::open(&path)?;
    let member = config.member.clone().context("no [member]")?;
    let drains = Arc::new(geolb_member::drains::Drains::open(&member.state_dir)?);
    let gossip = geolb_member::join(
        &config,
        geolb_member::gossip::keys::Role::Observer,
        &member.id,
        member.gossip_listen,
        None,
        "-".to_owned(),
        &drains,
    )
    .await?;
    let gossip_addr = gossip.listen_addr();
    let listener = tokio::net::TcpListener::bind(member.admin_listen).await?;
    let admin_addr = listener.local_addr()?;
    let config = Arc::new(arc_swap::ArcSwap::from_pointee(config));
    source.applied(&config.load());
    let state = AdminState {
        gossip: gossip.clone(),
        config: config.clone(),
        health: Arc::default(),
        drains,
        drain_lock: Arc::default(),
        metrics: Arc::new(String::new),
        source: source.clone(),
        extension: None,
    };
    tokio::spawn(serve_admin(listener, state, Default::default(), shutdown.clone()));
    tokio::spawn(geolb_member::fleet::follow(
        source.clone(),
        gossip.clone(),
        config.clone(),
        Some(admin_addr),
        shutdown.clone(),
    ));
    // The program's part: apply each version stored.
    let (wake, applier, stop) = (source.reload_wanted(), source.clone(), shutdown.clone());
    tokio::spawn(async move {
        let _gossip = gossip;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
            }
            if let Ok(c) = applier.load() {
                applier.applied(&c);
                config.store(Arc::new(c));
            }
        }
    });
    Ok((Member { source, _dir: dir }, gossip_addr))
}

async fn converge(count: usize) -> Result<Vec<Duration>> {
    println!("\n-- {count} members in one process, embedded store, gossip every 200 ms --");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (first, seed) = start_member(0, &[], &shutdown).await?;
    let mut members = vec![first];
    for i in 1..count {
        members.push(start_member(i, &[seed], &shutdown).await?.0);
    }
    // Everyone seeded version 1 from the same tables.
    let settle = Instant::now();
    while members.iter().any(|m| m.source.applied_version().map(|v| v.version) != Some(1)) {
        ensure!(settle.elapsed() < Duration::from_secs(30), "members did not start on version 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut out = Vec::new();
    for i in 0..SAMPLES {
        let (head, doc) = members[0].source.head().context("no head")?;
        let mut value = doc.to_value();
        value["pops"][0]["lat"] = json!(50.0 + i as f64 / 100.0);
        let document = geolb_config::FleetDocument::from_value(value)?;
        let start = Instant::now();
        let meta = members[0].source.write(head.version, document, "bench", "converge").await?;
        loop {
            let behind =
                members.iter().filter(|m| m.source.applied_version().map(|v| v.version) != Some(meta.version)).count();
            if behind == 0 {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("{behind} of {count} members not on version {} after 30 s", meta.version);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        out.push(start.elapsed());
    }
    summary(&format!("write on one member -> all {count} applied it"), &out);
    shutdown.cancel();
    Ok(out)
}
