//! Failover benchmark: a whole geolb cluster on loopback, measured against the targets of the
//! "Measure and report" issue. Run it with `bench/failover.sh` (release binaries); arguments
//! after `--` or `GEOLB_BENCH_*` environment variables choose the scale (see [`Params`]).
//!
//! What runs: `nodes` CDN-node stand-ins ([`NodeServer`], one loopback address each, all served
//! by this process), `probers` `geolb-prober` processes checking every node over HTTP, and
//! `resolvers` `geolb-resolver` processes, each behind its own real PowerDNS (HTTP remote
//! backend). PoPs are spread evenly over the globe (golden-angle spiral), nodes round-robin over
//! the PoPs, probers round-robin over the PoPs, and a client override puts the measured client
//! subnet ([`CLIENT`]) on PoP `client_pop`. Checks, quorum and gossip use the production defaults
//! except where a parameter says otherwise.
//!
//! What it measures, in three phases:
//!
//! 1. **Failover**, `failures` times: ask every PowerDNS for `cdn.example.net. A` with the
//!    client's ECS; stop the node they answer (its port then refuses connections); poll every
//!    PowerDNS every `poll_ms` until *every* answer differs from the stopped node; that time is
//!    one sample. Then start the node again and wait until every answer is that node again (the
//!    pick is stable per client), which is the recovery sample. A random pause of up to one check
//!    interval before each stop decorrelates the stop from the check schedule.
//! 2. **Steady state**, for `window_s` seconds with no DNS queries and no admin calls: each
//!    prober process's CPU (`utime + stime` from `/proc/<pid>/stat`) and RSS (`VmRSS` from
//!    `/proc/<pid>/status`), and the HTTP checks the node stand-ins really answered (all probers
//!    together). Checks per second per core = a prober's checks/s ÷ the cores it used; the
//!    "sustainable at ≤ 50 % of a core" figure is half of that, a linear extrapolation.
//! 3. **Gossip bytes** in the same window. Every member advertises a gossip address owned by a
//!    relay in this process ([`Relay`]), which forwards each datagram to the member's real socket
//!    from the sender's relay address, so the signed sender address still equals the datagram's
//!    source. The relay counts, per member, the UDP payload bytes (whole authenticated frames,
//!    without the 28 bytes of IP and UDP headers) and datagrams it sends and receives. That is
//!    exactly what the member's own `AuthStats` (`bytes_sent`, `bytes_received`) count, which the
//!    processes do not expose yet. `/proc/<pid>/io` would not do: `sendto`/`recvfrom` on a UDP
//!    socket are not counted in `rchar`/`wchar`.
//!
//! The full scale of the issue (16 probers × 2000 nodes, checks every second) is 32,000 checks/s
//! on loopback: more than a 2-core machine can run beside the node stand-ins, so the defaults are
//! smaller (4 × 500) and the header says what ran. With 20 samples, p99 is the maximum.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use geolb_tests::QueryOptions;
use geolb_tests::cluster::{Cluster, ClusterSpec, NodeServer, Tuning, healths, node_responses_served, state};
use ipnet::IpNet;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// The measured client network (TEST-NET-2), overridden onto PoP `client_pop`.
const CLIENT: &str = "198.51.100.0/24";

/// The name every PowerDNS is asked for.
const QNAME: &str = "cdn.example.net.";

/// Targets from the issue.
const TARGET_FAILOVER_P99_S: f64 = 3.0;
const TARGET_CHECKS_PER_S: f64 = 5000.0;
const TARGET_RSS_MB: f64 = 150.0;
const TARGET_GOSSIP_BPS: f64 = 20_000.0;

/// The benchmark's scale and timings.
#[derive(Debug, Clone)]
struct Params {
    /// Prober processes (`--probers`, `GEOLB_BENCH_PROBERS`).
    probers: usize,
    /// CDN nodes (`--nodes`).
    nodes: usize,
    /// PoPs; 0 = one per 20 nodes, at least 2, at most 200 (`--pops`).
    pops: usize,
    /// Resolver processes, each behind a PowerDNS (`--resolvers`).
    resolvers: usize,
    /// Check interval (`--interval-ms`).
    interval_ms: u64,
    /// Check timeout; 0 = the config default, min(800, interval − 1) (`--timeout-ms`).
    timeout_ms: u64,
    /// Failures in a row to go Down (`--fall`).
    fall: u32,
    /// Successes in a row to come Up (`--rise`).
    rise: u32,
    /// Gossip interval (`--gossip-interval-ms`; production default 500).
    gossip_interval_ms: u64,
    /// `[prober] max_in_flight`; 0 = the default (`--max-in-flight`).
    max_in_flight: usize,
    /// `[checks] connection_reuse`; 0 = the default, 10 (`--connection-reuse`). The node
    /// stand-ins hold nodes × probers kept connections in this process: past its descriptor
    /// limit, run with 1.
    connection_reuse: u32,
    /// Node failures measured (`--failures`).
    failures: usize,
    /// Steady-state window for CPU, RSS and gossip (`--window-s`).
    window_s: u64,
    /// Pause before the steady-state window (`--settle-s`).
    settle_s: u64,
    /// How often PowerDNS is asked while a failover is measured (`--poll-ms`).
    poll_ms: u64,
    /// The PoP index the measured client is placed at (`--client-pop`).
    client_pop: usize,
    /// Give up measuring more failovers after this many minutes (`--budget-min`).
    budget_min: u64,
}

impl Params {
    /// Defaults, then `GEOLB_BENCH_<NAME>` variables, then `--name value` / `--name=value`
    /// arguments. Unknown flags (cargo passes `--bench`) are ignored with a note.
    fn parse() -> Result<Params> {
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        for name in Params::NAMES {
            let var = format!("GEOLB_BENCH_{}", name.replace('-', "_").to_ascii_uppercase());
            if let Ok(v) = std::env::var(&var) {
                values.insert((*name).to_owned(), v);
            }
        }
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let Some(flag) = arg.strip_prefix("--") else {
                eprintln!("failover: ignoring argument {arg:?}");
                continue;
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (flag.to_owned(), None),
            };
            if !Params::NAMES.contains(&name.as_str()) {
                if name != "bench" {
                    eprintln!("failover: ignoring unknown flag --{name}");
                }
                continue;
            }
            let value = match value {
                Some(v) => v,
                None => {
                    let v = args.get(i).with_context(|| format!("--{name} needs a value"))?.clone();
                    i += 1;
                    v
                }
            };
            values.insert(name, value);
        }
        let num = |name: &str, default: u64| -> Result<u64> {
            values.get(name).map_or(Ok(default), |v| v.parse().with_context(|| format!("--{name} {v:?}")))
        };
        let p = Params {
            probers: usize::try_from(num("probers", 4)?)?,
            nodes: usize::try_from(num("nodes", 500)?)?,
            pops: usize::try_from(num("pops", 0)?)?,
            resolvers: usize::try_from(num("resolvers", 2)?)?,
            interval_ms: num("interval-ms", 1000)?,
            timeout_ms: num("timeout-ms", 0)?,
            fall: u32::try_from(num("fall", 2)?)?,
            rise: u32::try_from(num("rise", 2)?)?,
            gossip_interval_ms: num("gossip-interval-ms", 500)?,
            max_in_flight: usize::try_from(num("max-in-flight", 0)?)?,
            connection_reuse: u32::try_from(num("connection-reuse", 0)?)?,
            failures: usize::try_from(num("failures", 20)?)?,
            window_s: num("window-s", 20)?,
            settle_s: num("settle-s", 5)?,
            poll_ms: num("poll-ms", 20)?,
            client_pop: usize::try_from(num("client-pop", 0)?)?,
            budget_min: num("budget-min", 10)?,
        };
        ensure!(p.probers >= 2, "--probers must be at least 2 (min_down_voters is 2)");
        ensure!(p.resolvers >= 1, "--resolvers must be at least 1");
        ensure!(p.nodes >= 4, "--nodes must be at least 4");
        ensure!((1..=1000).contains(&p.failures), "--failures must be in 1..=1000");
        ensure!(p.window_s >= 1 && p.poll_ms >= 1, "--window-s and --poll-ms must be at least 1");
        ensure!(p.client_pop < p.pop_count(), "--client-pop must be below the PoP count {}", p.pop_count());
        ensure!(p.nodes / p.pop_count() >= 2, "every PoP needs at least 2 nodes: lower --pops");
        Ok(p)
    }

    const NAMES: &'static [&'static str] = &[
        "probers",
        "nodes",
        "pops",
        "resolvers",
        "interval-ms",
        "timeout-ms",
        "fall",
        "rise",
        "gossip-interval-ms",
        "max-in-flight",
        "connection-reuse",
        "failures",
        "window-s",
        "settle-s",
        "poll-ms",
        "client-pop",
        "budget-min",
    ];

    fn pop_count(&self) -> usize {
        if self.pops > 0 { self.pops } else { (self.nodes / 20).clamp(2, 200) }
    }

    /// Checks per second one prober makes (every prober checks every node).
    fn checks_per_prober(&self) -> f64 {
        self.nodes as f64 * 1000.0 / self.interval_ms as f64
    }
}

/// A UDP relay in front of every gossip member that counts each member's traffic.
///
/// Member `i` advertises `front[i]`. A datagram arriving at `front[j]` from member `i`'s real
/// socket is sent on from `front[i]` to member `j`'s real socket, so `j` sees it come from the
/// address `i` signs as its sender.
struct Relay {
    fronts: Vec<SocketAddr>,
    real: Arc<RwLock<Vec<Option<SocketAddr>>>>,
    counters: Arc<Vec<Counters>>,
    unknown: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One member's gossip traffic as seen by the relay.
#[derive(Default)]
struct Counters {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_received: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    bytes_sent: u64,
    bytes_received: u64,
    datagrams_sent: u64,
    datagrams_received: u64,
}

impl Relay {
    async fn start(members: usize) -> Result<Relay> {
        let mut sockets = Vec::new();
        for _ in 0..members {
            sockets.push(Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?));
        }
        let fronts = sockets.iter().map(|s| s.local_addr()).collect::<std::io::Result<Vec<_>>>()?;
        let real = Arc::new(RwLock::new(vec![None; members]));
        let counters = Arc::new((0..members).map(|_| Counters::default()).collect::<Vec<_>>());
        let unknown = Arc::new(AtomicU64::new(0));
        let sockets = Arc::new(sockets);
        let mut tasks = Vec::new();
        for to in 0..members {
            let (sockets, real, counters, unknown) = (sockets.clone(), real.clone(), counters.clone(), unknown.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, source)) = sockets[to].recv_from(&mut buf).await else { continue };
                    let (from, dest) = {
                        let table = real.read().unwrap_or_else(|p| p.into_inner());
                        (table.iter().position(|a| *a == Some(source)), table[to])
                    };
                    let (Some(from), Some(dest)) = (from, dest) else {
                        unknown.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if sockets[from].send_to(&buf[..n], dest).await.is_ok() {
                        let n = n as u64;
                        counters[from].bytes_sent.fetch_add(n, Ordering::Relaxed);
                        counters[from].datagrams_sent.fetch_add(1, Ordering::Relaxed);
                        counters[to].bytes_received.fetch_add(n, Ordering::Relaxed);
                        counters[to].datagrams_received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Relay { fronts, real, counters, unknown, tasks })
    }

    /// Tells the relay where member `i` really listens.
    fn set_real(&self, i: usize, addr: SocketAddr) {
        let mut table = self.real.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = table.get_mut(i) {
            *slot = Some(addr);
        }
    }

    fn snapshot(&self) -> Vec<Traffic> {
        self.counters
            .iter()
            .map(|c| Traffic {
                bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
                bytes_received: c.bytes_received.load(Ordering::Relaxed),
                datagrams_sent: c.datagrams_sent.load(Ordering::Relaxed),
                datagrams_received: c.datagrams_received.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// PoP `i` of `n` on a golden-angle spiral: (lat, lon, region).
fn pop_location(i: usize, n: usize) -> (f64, f64, &'static str) {
    let lat = (1.0 - 2.0 * (i as f64 + 0.5) / n as f64).asin().to_degrees();
    let lon = ((i as f64 * 137.507_764) % 360.0) - 180.0;
    let region = if lon < -30.0 {
        "amer"
    } else if lon < 60.0 {
        "emea"
    } else {
        "apac"
    };
    (lat, lon, region)
}

/// Every PowerDNS's first A answer for the measured client.
async fn answers(cluster: &Cluster) -> Result<Vec<IpAddr>> {
    let net: IpNet = CLIENT.parse()?;
    let options = QueryOptions::new(QNAME, "A").ecs(Some(net)).timeout(Duration::from_millis(500)).attempts(4);
    let mut out = Vec::new();
    for r in &cluster.resolvers {
        let pdns = r.pdns.as_ref().context("a resolver without PowerDNS")?;
        let resp = geolb_tests::query_with(pdns.addr(), &options).await?;
        ensure!(resp.rcode == "NOERROR", "{resp}");
        out.push(*resp.addresses().first().with_context(|| format!("no address: {resp}"))?);
    }
    Ok(out)
}

/// Waits until every resolver sees all `nodes` nodes Up; returns the time taken.
async fn all_up(cluster: &Cluster, nodes: usize, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let mut up = Vec::new();
        for r in &cluster.resolvers {
            let h = healths(&state(r.admin).await?);
            up.push(h.values().filter(|v| *v == "up").count());
        }
        if up.iter().all(|n| *n == nodes) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("not every node is up within {within:?}: nodes up per resolver {up:?} of {nodes}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls every `poll` until every answer satisfies `want`; `None` after `within`.
async fn until_answers(
    cluster: &Cluster,
    poll: Duration,
    within: Duration,
    want: impl Fn(IpAddr) -> bool,
) -> Result<Option<Duration>> {
    let start = Instant::now();
    loop {
        let a = answers(cluster).await?;
        if a.iter().all(|ip| want(*ip)) {
            return Ok(Some(start.elapsed()));
        }
        if start.elapsed() > within {
            return Ok(None);
        }
        tokio::time::sleep(poll).await;
    }
}

/// CPU ticks (`utime + stime`) of a process.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').context("bad /proc/<pid>/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// A `kB` line (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in MB.
fn status_mb(pid: u32, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key}"))?;
    let kb: f64 = line.split_whitespace().nth(1).context("no value")?.parse()?;
    Ok(kb / 1024.0)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// "value vs target: ratio× (ok|MISSES)"; `at_most` for targets that are upper bounds.
fn verdict(value: f64, target: f64, at_most: bool) -> String {
    let ratio = value / target;
    let ok = if at_most { ratio <= 1.0 } else { ratio >= 1.0 };
    format!("{ratio:.2}× ({})", if ok { "meets the target" } else { "MISSES the target" })
}

/// A small xorshift generator for the pauses (no dependency needed for this).
struct Rng(u64);

impl Rng {
    fn next_fraction(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() -> Result<()> {
    let params = Params::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(params))
}

async fn run(p: Params) -> Result<()> {
    let pops = p.pop_count();
    let total_checks = p.checks_per_prober() * p.probers as f64;
    println!("== geolb failover benchmark ==");
    println!(
        "scale run: {} probers × {} nodes ({} PoPs, {} nodes each), {} resolvers each behind PowerDNS",
        p.probers,
        p.nodes,
        pops,
        p.nodes / pops,
        p.resolvers
    );
    println!(
        "checks: HTTP every {} ms, fall {}, rise {}, timeout {}, connection reuse {}; gossip every {} ms; {} failures measured",
        p.interval_ms,
        p.fall,
        p.rise,
        if p.timeout_ms == 0 { "default".to_owned() } else { format!("{} ms", p.timeout_ms) },
        if p.connection_reuse == 0 { "default (10)".to_owned() } else { p.connection_reuse.to_string() },
        p.gossip_interval_ms,
        p.failures
    );
    println!(
        "load: {:.0} checks/s in all ({:.0} per prober); the issue's full scale (16 × 2000 at 1 s) is 32,000 \
         checks/s and needs more cores than this machine's {}",
        total_checks,
        p.checks_per_prober(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Nodes, PoPs, the client override.
    let started = Instant::now();
    let mut servers = Vec::with_capacity(p.nodes);
    for _ in 0..p.nodes {
        servers.push(NodeServer::start().await?);
    }
    let pop_ids: Vec<&'static str> = (0..pops).map(|i| &*format!("pop{i}").leak()).collect();
    let spec = ClusterSpec {
        pops: (0..pops)
            .map(|i| {
                let (lat, lon, region) = pop_location(i, pops);
                (pop_ids[i], lat, lon, region)
            })
            .collect(),
        nodes: servers.iter().enumerate().map(|(k, s)| (format!("n{k}"), pop_ids[k % pops], s.addr)).collect(),
        overrides: vec![(CLIENT, pop_ids[p.client_pop])],
        blind_prober: None,
        fleet: None,
    };
    let members = p.probers + p.resolvers;
    let relay = Relay::start(members).await?;
    let timeout_ms = if p.timeout_ms == 0 { 800.min(p.interval_ms.saturating_sub(1).max(1)) } else { p.timeout_ms };
    let tuning = Tuning {
        gossip_interval_ms: p.gossip_interval_ms,
        stale_after_ms: 10_000,
        grace_ms: 60_000,
        interval_ms: p.interval_ms,
        timeout_ms,
        rise: p.rise,
        fall: p.fall,
        jitter_ms: p.interval_ms / 10,
        max_in_flight: (p.max_in_flight > 0).then_some(p.max_in_flight),
        connection_reuse: (p.connection_reuse > 0).then_some(p.connection_reuse),
        advertise: relay.fronts.clone(),
    };
    let cluster = Cluster::start_tuned(spec, p.probers, p.resolvers, tuning).await?;
    for (i, m) in cluster.probers.iter().chain(&cluster.resolvers).enumerate() {
        relay.set_real(i, m.gossip);
    }
    let up_after = all_up(&cluster, p.nodes, Duration::from_secs(120)).await?;
    println!(
        "started in {:.1} s; every resolver saw all {} nodes up {:.1} s after the last member started",
        started.elapsed().as_secs_f64(),
        p.nodes,
        up_after.as_secs_f64()
    );

    // Phase 1: failovers.
    let poll = Duration::from_millis(p.poll_ms);
    let bound = Duration::from_millis(p.interval_ms * u64::from(p.fall.max(p.rise)) * 4 + 20_000);
    let budget = Duration::from_secs(p.budget_min * 60);
    let mut rng = Rng(SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1);
    let (mut gone, mut back, mut timeouts) = (Vec::new(), Vec::new(), 0usize);
    let phase = Instant::now();
    for i in 0..p.failures {
        if phase.elapsed() > budget {
            println!("budget of {} min used up after {i} failures", p.budget_min);
            break;
        }
        // Every PowerDNS agrees before the stop.
        let Some(_) = until_answers(&cluster, poll, Duration::from_secs(10), |_| true).await? else {
            bail!("PowerDNS does not answer")
        };
        let mut first = answers(&cluster).await?;
        for _ in 0..100 {
            if first.iter().all(|a| *a == first[0]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            first = answers(&cluster).await?;
        }
        ensure!(first.iter().all(|a| *a == first[0]), "the resolvers disagree: {first:?}");
        let victim = first[0];
        let index = servers.iter().position(|s| s.addr.ip() == victim).context("the answer is not a node")?;
        ensure!(index % pops == p.client_pop, "the client got node n{index}, not one of PoP {}", p.client_pop);
        tokio::time::sleep(Duration::from_millis((rng.next_fraction() * p.interval_ms as f64) as u64)).await;
        servers[index].stop();
        let down = until_answers(&cluster, poll, bound, |ip| ip != victim).await?;
        servers[index].restart().await?;
        let up = until_answers(&cluster, poll, bound, |ip| ip == victim).await?;
        match down {
            Some(d) => gone.push(d.as_secs_f64()),
            None => timeouts += 1,
        }
        if let Some(u) = up {
            back.push(u.as_secs_f64());
        } else {
            // The pick did not come back: wait until every node is Up before going on.
            all_up(&cluster, p.nodes, Duration::from_secs(60)).await?;
        }
        eprintln!(
            "failure {:>3}: node n{index} ({victim}) gone from every answer in {}, back in {}",
            i + 1,
            down.map_or("TIMEOUT".to_owned(), |d| format!("{:.3} s", d.as_secs_f64())),
            up.map_or("TIMEOUT".to_owned(), |d| format!("{:.3} s", d.as_secs_f64())),
        );
    }

    // Phases 2 and 3: steady state, nothing but checks and gossip.
    tokio::time::sleep(Duration::from_secs(p.settle_s)).await;
    let ticks = clock_ticks();
    let pids: Vec<u32> = cluster.probers.iter().chain(&cluster.resolvers).map(|m| m.process.id()).collect();
    let cpu0 = pids.iter().map(|pid| cpu_ticks(*pid)).collect::<Result<Vec<_>>>()?;
    let traffic0 = relay.snapshot();
    let served0 = node_responses_served();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(p.window_s)).await;
    let window = t0.elapsed().as_secs_f64();
    let cpu1 = pids.iter().map(|pid| cpu_ticks(*pid)).collect::<Result<Vec<_>>>()?;
    let traffic1 = relay.snapshot();
    let served = (node_responses_served() - served0) as f64 / window;
    let rss = pids.iter().map(|pid| status_mb(*pid, "VmRSS:")).collect::<Result<Vec<_>>>()?;
    let hwm = pids.iter().map(|pid| status_mb(*pid, "VmHWM:")).collect::<Result<Vec<_>>>()?;

    // Report.
    gone.sort_by(f64::total_cmp);
    back.sort_by(f64::total_cmp);
    println!();
    println!("-- 1. node failure -> every resolver's answer changed ({} samples, {timeouts} timed out) --", gone.len());
    println!(
        "gone:  p50 {:.3} s  p99 {:.3} s  max {:.3} s  min {:.3} s",
        percentile(&gone, 50.0),
        percentile(&gone, 99.0),
        gone.last().copied().unwrap_or(f64::NAN),
        gone.first().copied().unwrap_or(f64::NAN)
    );
    println!(
        "back:  p50 {:.3} s  p99 {:.3} s  max {:.3} s  (node restarted -> every answer is it again)",
        percentile(&back, 50.0),
        percentile(&back, 99.0),
        back.last().copied().unwrap_or(f64::NAN)
    );

    println!();
    println!("-- 2. prober CPU and memory over a {window:.1} s steady-state window (clock {ticks} ticks/s) --");
    let per_prober_measured = served / p.probers as f64;
    println!(
        "HTTP checks answered by the node stand-ins: {served:.0}/s in all, {per_prober_measured:.0}/s per prober \
         (nominal {:.0}/s)",
        p.checks_per_prober()
    );
    let mut per_core = Vec::new();
    for (i, m) in cluster.probers.iter().enumerate() {
        let cores = (cpu1[i] - cpu0[i]) as f64 / ticks / window;
        let rate = if cores > 0.0 { per_prober_measured / cores } else { f64::NAN };
        per_core.push(rate);
        println!(
            "{:<11} pid {:>7}  cpu {:>5.1} % of a core  -> {:>7.0} checks/s per core  RSS {:>6.1} MB (peak {:.1} MB)",
            m.process.name(),
            m.process.id(),
            cores * 100.0,
            rate,
            rss[i],
            hwm[i]
        );
    }
    for (k, m) in cluster.resolvers.iter().enumerate() {
        let i = p.probers + k;
        println!(
            "{:<11} pid {:>7}  cpu {:>5.1} % of a core  RSS {:>6.1} MB (peak {:.1} MB)",
            m.process.name(),
            m.process.id(),
            (cpu1[i] - cpu0[i]) as f64 / ticks / window * 100.0,
            rss[i],
            hwm[i]
        );
    }

    println!();
    println!(
        "-- 3. gossip per member over the same window: UDP payload (whole signed frames) counted by the relay \
         every member advertises --"
    );
    let mut totals = Vec::new();
    for (i, name) in cluster.probers.iter().chain(&cluster.resolvers).map(|m| m.process.name()).enumerate() {
        let (a, b) = (traffic0[i], traffic1[i]);
        let sent = (b.bytes_sent - a.bytes_sent) as f64 / window;
        let received = (b.bytes_received - a.bytes_received) as f64 / window;
        let dg_sent = (b.datagrams_sent - a.datagrams_sent) as f64 / window;
        let dg_received = (b.datagrams_received - a.datagrams_received) as f64 / window;
        totals.push(sent + received);
        println!(
            "{name:<11} sent {:>8.0} B/s ({dg_sent:>5.1} datagrams/s)  received {:>8.0} B/s ({dg_received:>5.1} \
             datagrams/s)  total {:>8.0} B/s; with IP+UDP headers {:>8.0} B/s",
            sent,
            received,
            sent + received,
            sent + received + 28.0 * (dg_sent + dg_received)
        );
    }
    let unknown = relay.unknown.load(Ordering::Relaxed);
    if unknown > 0 {
        println!(
            "({unknown} datagrams from unknown sources were dropped by the relay: sent before the relay knew the members' real sockets)"
        );
    }
    let prober_totals = &totals[..p.probers];
    let gossip_max = prober_totals.iter().copied().fold(0.0, f64::max);
    let gossip_mean = prober_totals.iter().sum::<f64>() / prober_totals.len() as f64;

    // Against the targets.
    let p99 = percentile(&gone, 99.0);
    let rate_min = per_core.iter().copied().fold(f64::INFINITY, f64::min);
    let sustainable = rate_min * 0.5;
    let rss_max = rss[..p.probers].iter().copied().fold(0.0, f64::max);
    println!();
    println!(
        "== against the issue's targets (scale run: {} probers × {} nodes, interval {} ms, fall {}) ==",
        p.probers, p.nodes, p.interval_ms, p.fall
    );
    println!(
        "failover p99 {p99:.2} s (p50 {:.2} s, max {:.2} s) vs target ≤ {TARGET_FAILOVER_P99_S} s: {}",
        percentile(&gone, 50.0),
        gone.last().copied().unwrap_or(f64::NAN),
        verdict(p99, TARGET_FAILOVER_P99_S, true)
    );
    println!(
        "prober checks/s at ≤ 50 % of a core (worst prober, linear from {per_prober_measured:.0}/s measured) \
         {sustainable:.0}/s vs target ≥ {TARGET_CHECKS_PER_S}/s: {}",
        verdict(sustainable, TARGET_CHECKS_PER_S, false)
    );
    println!(
        "prober RSS max {rss_max:.1} MB (at {} nodes) vs target ≤ {TARGET_RSS_MB} MB: {}",
        p.nodes,
        verdict(rss_max, TARGET_RSS_MB, true)
    );
    println!(
        "gossip per prober (sent + received) max {gossip_max:.0} B/s, mean {gossip_mean:.0} B/s (at {members} \
         members) vs target ≤ {TARGET_GOSSIP_BPS} B/s: {}",
        verdict(gossip_max, TARGET_GOSSIP_BPS, true)
    );
    if p.probers < 16 || p.nodes < 2000 {
        println!(
            "note: below the full scale (16 × 2000); digests grow with the member count and checks with the \
             node count, so rerun larger where more cores are available"
        );
    }
    if timeouts > 0 {
        println!("WARNING: {timeouts} failovers did not complete within {bound:?}");
    }
    Ok(())
}
