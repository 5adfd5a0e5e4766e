//! A whole geolb cluster on loopback for end-to-end tests: CDN-node stand-ins (HTTP servers
//! that can be stopped and started), `geolb-prober` processes, `geolb-resolver` processes
//! joined as observers, each resolver behind its own real PowerDNS.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{KillOnDrop, Launch, Pdns, PdnsOptions, TestDir, unique_loopback, workspace_bin, workspace_root};

/// A CDN node stand-in: answers `GET /health` with 200 while up; stopped, its port refuses.
pub struct NodeServer {
    /// Where it listens (the node's address and check port).
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
    healthy: Arc<AtomicBool>,
}

impl NodeServer {
    /// Starts one on a fresh loopback address, port 0.
    pub async fn start() -> Result<NodeServer> {
        NodeServer::start_at(SocketAddr::from((unique_loopback(), 0))).await
    }

    /// Starts one listening on `addr` (port 0 picks one).
    pub async fn start_at(addr: SocketAddr) -> Result<NodeServer> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let healthy = Arc::new(AtomicBool::new(true));
        Ok(NodeServer { addr, task: Some(tokio::spawn(serve(listener, healthy.clone()))), healthy })
    }

    /// Stops listening: checks get "connection refused".
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        // The aborted task drops its listener when it is next polled; retry the bind briefly.
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                self.task = Some(tokio::spawn(serve(listener, self.healthy.clone())));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("cannot listen on {} again", self.addr)
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Health-check responses written by every [`NodeServer`] of this process so far.
static SERVED: AtomicU64 = AtomicU64::new(0);

/// How many health-check responses all [`NodeServer`]s of this process have written (benchmarks
/// use it to measure the checks per second the probers really make).
pub fn node_responses_served() -> u64 {
    SERVED.load(Ordering::Relaxed)
}

/// Accepts and serves connections until aborted; aborting also closes every open connection (they
/// live in this task's `JoinSet`), so a stopped node fails kept-alive checks too.
async fn serve(listener: TcpListener, healthy: Arc<AtomicBool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((s, _)) = accepted {
                    connections.spawn(serve_connection(s, healthy.clone()));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// HTTP/1.1 with keep-alive: answers each request (`Content-Length: 2`) until the client closes,
/// sends `Connection: close`, or stays idle for 10 s.
async fn serve_connection(mut s: TcpStream, healthy: Arc<AtomicBool>) {
    let mut buf = [0u8; 1024];
    let mut seen: Vec<u8> = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if seen.len() >= 8192 {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
        let close = head.lines().any(|l| l.starts_with("connection:") && l.contains("close"));
        seen.drain(..end);
        let status = if healthy.load(Ordering::Relaxed) { "200 OK" } else { "503 Service Unavailable" };
        let connection = if close { "close" } else { "keep-alive" };
        let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: {connection}\r\n\r\nok");
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
        SERVED.fetch_add(1, Ordering::Relaxed);
        if close {
            return;
        }
    }
}

/// The cluster's config, common to every member; `[prober]`/`[member]` are added per process.
pub struct ClusterSpec {
    /// PoPs: (id, lat, lon, region).
    pub pops: Vec<(&'static str, f64, f64, &'static str)>,
    /// Nodes: (id, pop, server).
    pub nodes: Vec<(String, &'static str, SocketAddr)>,
    /// Client networks placed at PoPs: (cidr, pop).
    pub overrides: Vec<(&'static str, &'static str)>,
    /// A prober that cannot reach any node (its checks go to a closed port), as if its uplink
    /// were cut: the others still reach every node.
    pub blind_prober: Option<usize>,
    /// The body of every member's `[fleet]` table (e.g. `store = "embedded"`): the fleet tables
    /// of each member's file then seed version 1 of the document, which changes over the admin
    /// API. `None`: the file is the document.
    pub fleet: Option<String>,
}

/// Cluster key and admin token used by the tests.
pub const CLUSTER_KEY: &str = "6765 6f6c 6220 7465 7374 2063 6c75 7374 6572 206b 6579 2030 3132 3334 3536 3738";
/// The admin token the tests' config names.
pub const ADMIN_TOKEN: &str = "geolb-test-admin-token-0123456789";
/// A read-only token the tests' config names `viewer`.
pub const VIEWER_TOKEN: &str = "geolb-test-viewer-token-0123456789";

/// Check, gossip and quorum timings of a cluster, and where its members advertise their gossip.
/// [`Tuning::default`] is what the end-to-end tests run ([`Cluster::start`]); benchmarks pass
/// their own to [`Cluster::start_tuned`].
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// `[cluster] gossip_interval_ms`.
    pub gossip_interval_ms: u64,
    /// `[quorum] stale_after_ms`.
    pub stale_after_ms: u64,
    /// `[quorum] grace_ms`.
    pub grace_ms: u64,
    /// `[checks] interval_ms`.
    pub interval_ms: u64,
    /// `[checks] timeout_ms`.
    pub timeout_ms: u64,
    /// `[checks] rise`.
    pub rise: u32,
    /// `[checks] fall`.
    pub fall: u32,
    /// `[checks] jitter_ms`.
    pub jitter_ms: u64,
    /// `[prober] max_in_flight`, if set.
    pub max_in_flight: Option<usize>,
    /// `[checks] connection_reuse`, if set.
    pub connection_reuse: Option<u32>,
    /// `gossip_advertise` of each member: probers by index, then resolvers (index = number of
    /// probers + resolver index). Members beyond the list advertise their listen address. Seeds
    /// are the probers' advertised addresses. Lets a benchmark relay (and count) gossip.
    pub advertise: Vec<SocketAddr>,
}

impl Default for Tuning {
    /// The end-to-end tests' timings: checks every 300 ms, gossip every 100 ms.
    fn default() -> Self {
        Tuning {
            gossip_interval_ms: 100,
            stale_after_ms: 3000,
            grace_ms: 30000,
            interval_ms: 300,
            timeout_ms: 250,
            rise: 2,
            fall: 2,
            jitter_ms: 30,
            max_in_flight: None,
            connection_reuse: None,
            advertise: Vec::new(),
        }
    }
}

impl ClusterSpec {
    fn common_toml(&self, dir: &std::path::Path, seeds: &[SocketAddr], blind: bool, tuning: &Tuning) -> String {
        let mut t = String::new();
        t.push_str(&format!(
            "default_location = {{ pop = \"{}\" }}\n[admin]\ntoken_file = \"{}\"\n[[admin.tokens]]\nname = \"viewer\"\nfile = \"{}\"\naccess = \"read-only\"\n[cluster]\nid = \"e2e\"\nkey_file = \"{}\"\ngossip_interval_ms = {}\nseeds = [{}]\n",
            self.pops[0].0,
            dir.join("admin.token").display(),
            dir.join("viewer.token").display(),
            dir.join("cluster.key").display(),
            tuning.gossip_interval_ms,
            seeds.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
        ));
        if let Some(fleet) = &self.fleet {
            t.push_str(&format!("[fleet]\n{fleet}\n"));
        }
        t.push_str(&format!(
            "[quorum]\ndown_quorum = 0.5\nmin_down_voters = 2\nstale_after_ms = {}\ngrace_ms = {}\n",
            tuning.stale_after_ms, tuning.grace_ms
        ));
        t.push_str(&format!(
            "[checks]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = {}\ntimeout_ms = {}\nrise = {}\nfall = {}\njitter_ms = {}\n",
            tuning.interval_ms, tuning.timeout_ms, tuning.rise, tuning.fall, tuning.jitter_ms
        ));
        if let Some(reuse) = tuning.connection_reuse {
            t.push_str(&format!("connection_reuse = {reuse}\n"));
        }
        t.push_str(&format!(
            "[[zones]]\norigin = \"example.net.\"\nfile = \"{}\"\n",
            workspace_root().join("config/examples/example.net.zone").display()
        ));
        for (id, lat, lon, region) in &self.pops {
            t.push_str(&format!("[[pops]]\nid = \"{id}\"\nlat = {lat}\nlon = {lon}\nregion = \"{region}\"\n"));
        }
        for (id, pop, addr) in &self.nodes {
            t.push_str(&format!(
                "[[nodes]]\nid = \"{id}\"\npop = \"{pop}\"\nipv4 = \"{}\"\ncheck = {{ port = {} }}\n",
                addr.ip(),
                // Nothing listens on port 9 (discard) of a test loopback address: refused.
                if blind { 9 } else { addr.port() }
            ));
        }
        t.push_str("[[services]]\nname = \"cdn.example.net.\"\ntypes = [\"A\"]\nttl = 5\n");
        for (cidr, pop) in &self.overrides {
            t.push_str(&format!("[[overrides]]\ncidr = \"{cidr}\"\npop = \"{pop}\"\n"));
        }
        t
    }
}

/// A running member process and where it listens.
pub struct Member {
    /// The process.
    pub process: KillOnDrop,
    /// Its gossip address.
    pub gossip: SocketAddr,
    /// Its admin API.
    pub admin: SocketAddr,
    /// Its remote-backend URL (resolvers only).
    pub dns_url: Option<String>,
    /// Its config file.
    pub config: PathBuf,
    /// The PowerDNS in front of it (resolvers only).
    pub pdns: Option<Pdns>,
}

/// The cluster.
pub struct Cluster {
    /// Where configs, state and logs go.
    pub dir: TestDir,
    /// The spec it runs.
    pub spec: ClusterSpec,
    /// Probers, in start order.
    pub probers: Vec<Member>,
    /// Resolvers (each with a PowerDNS).
    pub resolvers: Vec<Member>,
    /// Its timings ([`Tuning::default`] for [`Cluster::start`]).
    pub tuning: Tuning,
}

impl Cluster {
    /// Starts `probers` probers (the first at PoP index 0, then round-robin) and `resolvers`
    /// resolvers, each behind its own PowerDNS.
    pub async fn start(spec: ClusterSpec, probers: usize, resolvers: usize) -> Result<Cluster> {
        Cluster::start_tuned(spec, probers, resolvers, Tuning::default()).await
    }

    /// [`Cluster::start`] with other timings.
    pub async fn start_tuned(spec: ClusterSpec, probers: usize, resolvers: usize, tuning: Tuning) -> Result<Cluster> {
        let dir = TestDir::new("geolb-cluster")?;
        std::fs::write(dir.join("cluster.key"), CLUSTER_KEY.replace(' ', ""))?;
        std::fs::write(dir.join("admin.token"), ADMIN_TOKEN)?;
        std::fs::write(dir.join("viewer.token"), VIEWER_TOKEN)?;
        let mut cluster = Cluster { dir, spec, probers: Vec::new(), resolvers: Vec::new(), tuning };
        for i in 0..probers {
            let m = cluster.start_prober(i).await?;
            cluster.probers.push(m);
        }
        for i in 0..resolvers {
            let m = cluster.start_resolver(i).await?;
            cluster.resolvers.push(m);
        }
        Ok(cluster)
    }

    fn seeds(&self) -> Vec<SocketAddr> {
        self.probers
            .iter()
            .enumerate()
            .map(|(i, p)| self.tuning.advertise.get(i).copied().unwrap_or(p.gossip))
            .collect()
    }

    /// The `gossip_advertise` line of member `index` (probers first, then resolvers), if tuned.
    fn advertise_line(&self, index: usize) -> String {
        self.tuning.advertise.get(index).map(|a| format!("gossip_advertise = \"{a}\"\n")).unwrap_or_default()
    }

    /// Starts prober `i` (again, after a kill: same id, state dir and ports).
    pub async fn start_prober(&self, i: usize) -> Result<Member> {
        let pop = self.spec.pops[i % self.spec.pops.len()].0;
        let path = self.dir.join(format!("prober-{i}.toml"));
        let (gossip, admin) = match self.probers.get(i) {
            Some(old) => (old.gossip, old.admin),
            None => (SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        };
        let own = self.tuning.advertise.get(i).copied().unwrap_or(gossip);
        let seeds: Vec<SocketAddr> = self.seeds().into_iter().filter(|s| *s != own || own.port() == 0).collect();
        let max_in_flight = self.tuning.max_in_flight.map(|n| format!("max_in_flight = {n}\n")).unwrap_or_default();
        let text = format!(
            "{}[prober]\nid = \"prober-{i}\"\npop = \"{pop}\"\ngossip_listen = \"{gossip}\"\n{}{max_in_flight}admin_listen = \"{admin}\"\nstate_dir = \"{}\"\n",
            self.spec.common_toml(self.dir.path(), &seeds, self.spec.blind_prober == Some(i), &self.tuning),
            self.advertise_line(i),
            self.dir.join(format!("state-prober-{i}")).display()
        );
        std::fs::write(&path, text)?;
        let process = KillOnDrop::spawn(
            &format!("prober-{i}"),
            Command::new(workspace_bin("geolb-prober")?).arg("--config").arg(&path),
            self.dir.path(),
        )?;
        let gossip = process.wait_for_socket_addr("gossip listening on", Duration::from_secs(10)).await?;
        let admin = process.wait_for_socket_addr("admin listening on", Duration::from_secs(10)).await?;
        Ok(Member { process, gossip, admin, dns_url: None, config: path, pdns: None })
    }

    /// Starts resolver `i` and a PowerDNS in front of it.
    pub async fn start_resolver(&self, i: usize) -> Result<Member> {
        let path = self.dir.join(format!("resolver-{i}.toml"));
        let (gossip, admin) = match self.resolvers.get(i) {
            Some(old) => (old.gossip, old.admin),
            None => (SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        };
        let text = format!(
            "{}[member]\nid = \"resolver-{i}\"\ngossip_listen = \"{gossip}\"\n{}admin_listen = \"{admin}\"\nstate_dir = \"{}\"\n",
            self.spec.common_toml(self.dir.path(), &self.seeds(), false, &self.tuning),
            self.advertise_line(self.probers.len() + i),
            self.dir.join(format!("state-resolver-{i}")).display()
        );
        std::fs::write(&path, text)?;
        let process = KillOnDrop::spawn(
            &format!("resolver-{i}"),
            Command::new(workspace_bin("geolb-resolver")?).arg("--config").arg(&path).args(["--listen", "127.0.0.1:0"]),
            self.dir.path(),
        )?;
        let dns = process.wait_for_socket_addr("listening on http://", Duration::from_secs(10)).await?;
        let gossip = process.wait_for_socket_addr("gossip listening on", Duration::from_secs(10)).await?;
        let admin = process.wait_for_socket_addr("admin listening on", Duration::from_secs(10)).await?;
        let url = format!("http://{dns}/dns");
        let pdns = Pdns::start(
            PdnsOptions::new(Launch::RemoteBind)
                .zone("example.net.", workspace_root().join("config/examples/example.net.zone"))
                .remote(format!("http:url={url},post=1,post_json=1,timeout=2000"))
                .setting("edns-subnet-processing", "yes")
                .setting("consistent-backends", "no"),
        )
        .await?;
        Ok(Member { process, gossip, admin, dns_url: Some(url), config: path, pdns: Some(pdns) })
    }

    /// The node ids whose address is `ip`.
    pub fn node_of(&self, ip: std::net::IpAddr) -> Option<&str> {
        self.spec.nodes.iter().find(|(_, _, a)| a.ip() == ip).map(|(id, _, _)| id.as_str())
    }
}

/// A minimal HTTP/1.1 call without a body: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    http_with_body(addr, method, path, token, "").await
}

/// A minimal HTTP/1.1 call sending `body`: (status, body).
pub async fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
    let (status, _, body) = http_request(addr, method, path, &headers, body).await?;
    Ok((status, body))
}

/// An HTTP/1.1 call with request headers: (status, response head, body). A chunked body is
/// returned as sent.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp)).await??;
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    let (head, body) = text.split_once("\r\n\r\n").map(|(h, b)| (h.to_owned(), b.to_owned())).unwrap_or_default();
    Ok((status, head, body))
}

/// `GET /api/v1/config` with `token`: (version, document).
pub async fn fleet_get(admin: SocketAddr, token: &str) -> Result<(u64, serde_json::Value)> {
    let auth = format!("Bearer {token}");
    let (status, head, body) = http_request(admin, "GET", "/api/v1/config", &[("Authorization", &auth)], "").await?;
    if status != 200 {
        bail!("GET /api/v1/config: {status} {body}");
    }
    let version = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("etag:").map(|v| v.trim().trim_matches('"').to_owned()))
        .context("no ETag")?
        .parse()?;
    Ok((version, serde_json::from_str(&body)?))
}

/// `PUT /api/v1/config` of `doc` at `version` with `token` and the change `message`; the new
/// version.
pub async fn fleet_put(
    admin: SocketAddr,
    token: &str,
    version: u64,
    doc: &serde_json::Value,
    message: &str,
) -> Result<u64> {
    let auth = format!("Bearer {token}");
    let if_match = format!("\"{version}\"");
    let headers = [("Authorization", auth.as_str()), ("If-Match", if_match.as_str()), ("Geolb-Message", message)];
    let (status, _, body) = http_request(admin, "PUT", "/api/v1/config", &headers, &doc.to_string()).await?;
    if status != 200 {
        bail!("PUT /api/v1/config: {status} {body}");
    }
    let reply: serde_json::Value = serde_json::from_str(body.trim())?;
    reply["version"].as_u64().context("no version in the reply")
}

/// `GET /api/v1/state` as JSON.
pub async fn state(admin: SocketAddr) -> Result<serde_json::Value> {
    let (status, body) = http(admin, "GET", "/api/v1/state", None).await?;
    if status != 200 {
        bail!("state: HTTP {status}: {body}");
    }
    // Bodies may be chunked: take the JSON object between the first `{` and the last `}`.
    let start = body.find('{').context("no JSON")?;
    let end = body.rfind('}').context("no JSON")?;
    Ok(serde_json::from_str(&body[start..=end])?)
}

/// Node id → health in a state document.
pub fn healths(state: &serde_json::Value) -> BTreeMap<String, String> {
    state["nodes"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v["health"].as_str().unwrap_or("?").to_owned())).collect())
        .unwrap_or_default()
}

/// `GET /metrics` as text.
pub async fn metrics(addr: SocketAddr) -> Result<String> {
    let (status, body) = http(addr, "GET", "/metrics", None).await?;
    if status != 200 {
        bail!("metrics: HTTP {status}: {body}");
    }
    Ok(body)
}

/// The value of the sample of `name` carrying every label of `labels` in a Prometheus text
/// exposition; `None` when there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let has_all = labels.iter().all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        (metric == name && has_all).then(|| value.parse().ok()).flatten()
    })
}

/// The end-to-end tests' cluster: PoPs fra (eu) and syd (apac), two stand-in nodes each,
/// `probers` probers and two resolvers each behind a PowerDNS; `fra_client` (a CIDR) is
/// placed at fra and 203.0.113.0/24 at syd.
pub async fn start_two_pops(
    probers: usize,
    blind_prober: Option<usize>,
    fra_client: &'static str,
) -> Result<(Cluster, Vec<NodeServer>)> {
    start_two_pops_with(probers, blind_prober, fra_client, None).await
}

/// Four node stand-ins and the spec of two PoPs over them: fra (fra-1, fra-2, and
/// `fra_client`'s network) and syd (syd-1, syd-2, and 203.0.113.0/24); `fleet` is the body of
/// every member's `[fleet]` table.
pub async fn two_pops(
    blind_prober: Option<usize>,
    fra_client: &'static str,
    fleet: Option<String>,
) -> Result<(ClusterSpec, Vec<NodeServer>)> {
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(NodeServer::start().await?);
    }
    let spec = ClusterSpec {
        pops: vec![("fra", 50.11, 8.68, "eu"), ("syd", -33.87, 151.21, "apac")],
        nodes: vec![
            ("fra-1".into(), "fra", servers[0].addr),
            ("fra-2".into(), "fra", servers[1].addr),
            ("syd-1".into(), "syd", servers[2].addr),
            ("syd-2".into(), "syd", servers[3].addr),
        ],
        overrides: vec![(fra_client, "fra"), ("203.0.113.0/24", "syd")],
        blind_prober,
        fleet,
    };
    Ok((spec, servers))
}

/// [`start_two_pops`], with `fleet` as the body of every member's `[fleet]` table.
pub async fn start_two_pops_with(
    probers: usize,
    blind_prober: Option<usize>,
    fra_client: &'static str,
    fleet: Option<String>,
) -> Result<(Cluster, Vec<NodeServer>)> {
    let (spec, servers) = two_pops(blind_prober, fra_client, fleet).await?;
    let cluster = Cluster::start(spec, probers, 2).await?;
    Ok((cluster, servers))
}
