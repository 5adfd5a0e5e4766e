//! `geolb-demo`: a whole geolb deployment on this machine's loopback, from one command.
//!
//! It starts eight CDN-node stand-ins (HTTP servers answering `GET /health`), three
//! `geolb-prober`s (one each at the lhr, fra and iad PoPs), one `geolb-resolver` joined to their
//! gossip, and — when it is installed — a real PowerDNS asking the resolver through the remote
//! backend. Clients are placed by a small GeoIP database shipped with the demo (`geoip.rs`).
//! Then it plays a scene: it shows where each city's clients are sent, stops the node London
//! gets, then London's whole PoP, then starts them again, printing each answer as it moves. After
//! that it waits for commands on stdin (`stop lhr-1`, `answers`, …) until Ctrl-C, which stops
//! every process it started.
//!
//! The configuration is embedded (`demo/demo.toml`, the zone and key of `config/examples/`) and
//! written into a temporary directory, removed at exit; the programs are the real binaries,
//! found next to this one (`cargo build --release` builds them all).

mod geoip;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use geolb_common::GeoPoint;
use geolb_config::Config;
use geolb_tests::cluster::{NodeServer, fleet_get, fleet_put, healths, http, http_with_body, state};
use geolb_tests::{KillOnDrop, Launch, Pdns, PdnsOptions, TestDir, pdns_installed, quiet_logs, workspace_bin};
use ipnet::IpNet;
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep};

use crate::geoip::{CITIES, City};

/// The shared part of every process's configuration.
const DEMO_TOML: &str = include_str!("../demo.toml");
/// Every member keeps the fleet document in the embedded store, seeded from `demo.toml`'s fleet
/// tables: the demo changes it over one prober's API.
const FLEET: &str = "[fleet]\nstore = \"embedded\"\n";
/// The static zone PowerDNS and the resolver serve.
const ZONE: &str = include_str!("../example.net.zone");
/// The example cluster key (public: demo only).
const CLUSTER_KEY: &str = include_str!("../cluster.key");
/// The example admin token (public: demo only).
const ADMIN_TOKEN: &str = include_str!("../admin.token");
/// `demo-city.mmdb`, written by `geoip::mmdb_bytes`.
const GEOIP: &[u8] = include_bytes!("../demo-city.mmdb");

/// The probers: (id, PoP, address of their gossip and admin listeners).
const PROBERS: [(&str, &str, &str); 3] =
    [("prober-lhr", "lhr", "127.53.0.1"), ("prober-fra", "fra", "127.53.0.2"), ("prober-iad", "iad", "127.53.0.3")];
/// The resolver's address (gossip, admin and the remote-backend connector).
const RESOLVER: &str = "127.53.0.10";
/// The geo-balanced name.
const NAME: &str = "cdn.example.net.";
/// The city the scene follows.
const FOLLOWED: &str = "London";
/// How long one step of the scene may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopped processes get to exit before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a local geolb stack (probers, a resolver, CDN-node stand-ins, PowerDNS when installed)
/// and shows answers following health and geography. Ctrl-C stops everything it started.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Where PowerDNS listens (UDP and TCP).
    #[arg(long, default_value = "127.53.0.53:5300")]
    dns_listen: SocketAddr,
    /// Do not start PowerDNS even when it is installed: ask geolb-resolver directly, as PowerDNS
    /// would.
    #[arg(long)]
    no_pdns: bool,
    /// Exit after the scene instead of waiting for commands and Ctrl-C.
    #[arg(long)]
    exit_after_scene: bool,
    /// Write the demo's GeoIP database to PATH and exit (this is how demo/demo-city.mmdb is made).
    #[arg(long, value_name = "PATH")]
    write_geoip: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.write_geoip {
        let written = geoip::mmdb_bytes()
            .and_then(|bytes| std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display())));
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("geolb-demo: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geolb-demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // A blocked read of stdin (the command loop) would hold up an orderly shutdown forever.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geolb-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    // The children's logs stay in their files (the paths are printed), not on our terminal.
    quiet_logs();
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let interrupted = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
    };
    tokio::pin!(interrupted);

    let mut stack = tokio::select! {
        stack = Stack::start(&cli) => stack?,
        () = &mut interrupted => {
            println!("\nInterrupted while starting; stopped what had started.");
            return Ok(());
        }
    };
    let outcome = tokio::select! {
        outcome = stack.play(cli.exit_after_scene) => outcome,
        () = &mut interrupted => {
            println!();
            Ok(())
        }
    };
    stack.stop().await;
    outcome
}

/// How the demo asks for an answer: through PowerDNS, or straight from the resolver.
enum Asker {
    Pdns(Pdns),
    Connector(SocketAddr),
}

/// Everything the demo started. Dropping it kills what is still running.
struct Stack {
    // Field order is drop order: PowerDNS and programs before the nodes and the directory.
    asker: Asker,
    resolver: KillOnDrop,
    probers: Vec<KillOnDrop>,
    nodes: BTreeMap<String, NodeServer>,
    config: Config,
    resolver_admin: SocketAddr,
    started: Instant,
    dir: TestDir,
}

impl Stack {
    async fn start(cli: &Cli) -> Result<Stack> {
        let started = Instant::now();
        let prober_bin = workspace_bin("geolb-prober").context("the demo runs the real programs")?;
        let resolver_bin = workspace_bin("geolb-resolver").context("the demo runs the real programs")?;
        let dir = TestDir::new("demo")?;
        std::fs::write(dir.join("example.net.zone"), ZONE)?;
        std::fs::write(dir.join("cluster.key"), CLUSTER_KEY)?;
        std::fs::write(dir.join("admin.token"), ADMIN_TOKEN)?;
        std::fs::write(dir.join("demo-city.mmdb"), GEOIP)?;

        let resolver_config = dir.join("resolver.toml");
        let resolver_admin: SocketAddr = format!("{RESOLVER}:9100").parse()?;
        let connector: SocketAddr = format!("{RESOLVER}:5380").parse()?;
        std::fs::write(
            &resolver_config,
            format!(
                "{DEMO_TOML}\n{FLEET}\n[resolver]\nlisten = \"{connector}\"\nsocket = \"pdns.sock\"\n\n[member]\nid = \"resolver\"\n\
                 gossip_listen = \"{RESOLVER}:7946\"\nadmin_listen = \"{resolver_admin}\"\nstate_dir = \"{}\"\n",
                dir.join("state-resolver").display()
            ),
        )?;
        let config = geolb_config::load(&resolver_config).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;

        let mut nodes = BTreeMap::new();
        for node in &config.nodes {
            let ip = node.ipv4.with_context(|| format!("demo node {} has no IPv4 address", node.id))?;
            let server = NodeServer::start_at(SocketAddr::new(ip.into(), node.check.port))
                .await
                .with_context(|| format!("CDN node {} (is another geolb-demo running?)", node.id))?;
            nodes.insert(node.id.to_string(), server);
        }

        let mut probers = Vec::new();
        for (id, pop, ip) in PROBERS {
            let path = dir.join(format!("{id}.toml"));
            std::fs::write(
                &path,
                format!(
                    "{DEMO_TOML}\n{FLEET}\n[prober]\nid = \"{id}\"\npop = \"{pop}\"\ngossip_listen = \"{ip}:7946\"\n\
                     admin_listen = \"{ip}:9100\"\nstate_dir = \"{}\"\n",
                    dir.join(format!("state-{id}")).display()
                ),
            )?;
            let process = KillOnDrop::spawn(id, Command::new(&prober_bin).arg("--config").arg(&path), dir.path())?;
            probers.push(process);
        }
        let resolver = KillOnDrop::spawn(
            "resolver",
            Command::new(&resolver_bin).arg("--config").arg(&resolver_config),
            dir.path(),
        )?;
        for process in probers.iter().chain([&resolver]) {
            process.wait_for_log_line("admin listening on", Duration::from_secs(10)).await?;
        }
        resolver.wait_for_log_line("listening on http://", Duration::from_secs(10)).await?;

        let asker = if cli.no_pdns {
            Asker::Connector(connector)
        } else if !pdns_installed() {
            println!("PowerDNS is not installed (`bash scripts/setup.sh` installs it): asking geolb-resolver");
            println!("directly, with the JSON PowerDNS's remote backend would send.\n");
            Asker::Connector(connector)
        } else {
            let options = PdnsOptions {
                address: Some(cli.dns_listen.ip()),
                port: cli.dns_listen.port(),
                ..PdnsOptions::new(Launch::RemoteBind)
            }
            .zone("example.net.", dir.join("example.net.zone"))
            .remote(format!("unix:path={},timeout=2000", dir.join("pdns.sock").display()));
            Asker::Pdns(Pdns::start(options).await.context("PowerDNS did not start (or pass --no-pdns)")?)
        };
        let stack = Stack { asker, resolver, probers, nodes, config, resolver_admin, started, dir };
        stack.print_processes();
        Ok(stack)
    }

    fn print_processes(&self) {
        println!("geolb demo, all on loopback (files in {}):", self.dir.path().display());
        for (process, (_, pop, ip)) in self.probers.iter().zip(PROBERS) {
            println!(
                "  {:<16} pid {:<8} checks every node from PoP {pop}; admin http://{ip}:9100",
                process.name(),
                process.id()
            );
        }
        println!(
            "  {:<16} pid {:<8} remote backend unix:{} and http://{RESOLVER}:5380/dns; admin http://{}",
            "geolb-resolver",
            self.resolver.id(),
            self.dir.join("pdns.sock").display(),
            self.resolver_admin
        );
        if let Asker::Pdns(pdns) = &self.asker {
            println!(
                "  {:<16} pid {:<8} DNS on {} (launch=remote,bind; asks geolb over the unix socket)",
                "pdns_server",
                pdns.process().id(),
                pdns.addr()
            );
        }
        let nodes: Vec<String> = self.nodes.iter().map(|(id, s)| format!("{id} {}", s.addr)).collect();
        println!("  CDN nodes:       {}", nodes.join(", "));
        println!("  logs:            {}/*.log\n", self.dir.path().display());
    }

    /// The scene, then (unless `exit_after_scene`) commands from stdin until it closes.
    async fn play(&mut self, exit_after_scene: bool) -> Result<()> {
        self.wait_all_up().await?;
        self.print_answers().await?;
        self.scene().await?;
        self.print_tips();
        if exit_after_scene {
            return Ok(());
        }
        self.commands().await
    }

    async fn wait_all_up(&self) -> Result<()> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let view = state(self.resolver_admin).await.map(|s| healths(&s)).unwrap_or_default();
            if view.len() == self.nodes.len() && view.values().all(|h| h == "up") {
                println!(
                    "All {} nodes are up in the resolver's view, {:.1} s after start.\n",
                    view.len(),
                    self.started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the nodes did not all come up within {STEP_TIMEOUT:?}: {view:?}");
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn print_answers(&self) -> Result<()> {
        let via = match &self.asker {
            Asker::Pdns(pdns) => format!("PowerDNS at {}", pdns.addr()),
            Asker::Connector(addr) => format!("geolb-resolver at {addr}"),
        };
        println!("Where {NAME} sends each city's clients (asked from {via} with EDNS Client Subnet):");
        for city in &CITIES {
            let answer = self.answer(city).await?;
            println!("  {:<10} {:<18} → {}", city.name, city.v4, answer.describe(city));
        }
        println!();
        Ok(())
    }

    /// Stops the node London gets, then London's other node, then starts both again.
    async fn scene(&mut self) -> Result<()> {
        let city = CITIES.iter().find(|c| c.name == FOLLOWED).context("no followed city")?;
        let first = self.answer(city).await?;
        println!("Each step below is timed from the moment the demo acts until the answer changes:");
        println!("the probers' checks fail (fall = 2, every 400 ms), a quorum of them agrees over gossip, and");
        println!("the resolver's view changes.\n");
        println!("1. Stopping {} (the node {} gets) …", first.node, city.name);
        self.node_mut(&first.node)?.stop();
        let second = self.wait_answer(city, |a| a.node != first.node).await?;
        let pop = second.pop.clone();
        let others: Vec<String> = self.pop_nodes(&pop).into_iter().filter(|n| *n != first.node).collect();
        if !others.is_empty() {
            println!("2. Stopping {} too: the {pop} PoP has no healthy node left …", others.join(", "));
            for node in &others {
                self.node_mut(node)?.stop();
            }
            self.wait_answer(city, |a| a.pop != pop).await?;
        }
        println!("3. Starting {} and {} again …", first.node, others.join(", "));
        for node in others.iter().chain([&first.node]) {
            self.node_mut(node)?.restart().await?;
        }
        self.wait_answer(city, |a| a.pop == first.pop).await?;
        self.fleet_change(city, &first.pop).await?;
        println!();
        Ok(())
    }

    /// Places `city`'s network at fra by a change of the fleet document made on prober-fra's
    /// admin API, then rolls the change back.
    async fn fleet_change(&self, city: &City, home: &str) -> Result<()> {
        let (_, _, ip) = PROBERS.iter().find(|(_, pop, _)| *pop == "fra").context("no fra prober")?;
        let admin: SocketAddr = format!("{ip}:9100").parse()?;
        let (version, doc) = fleet_get(admin, ADMIN_TOKEN.trim()).await?;
        let mut changed = doc.clone();
        let overrides = changed["overrides"].as_array().cloned().unwrap_or_default();
        let rule = serde_json::json!({ "cidr": city.v4, "pop": "fra" });
        changed["overrides"] = serde_json::Value::Array(overrides.into_iter().chain([rule]).collect());
        println!(
            "4. Placing {}'s network at fra by a change of the fleet configuration made on prober-fra's API",
            city.name
        );
        println!("   (PUT /api/v1/config, If-Match: \"{version}\"); the resolver fetches and applies it …");
        let written = fleet_put(admin, ADMIN_TOKEN.trim(), version, &changed, "place London at fra").await?;
        self.wait_answer(city, |a| a.pop == "fra").await?;
        println!("5. Rolling back: version {version}'s document written again as version {} …", written + 1);
        fleet_put(admin, ADMIN_TOKEN.trim(), written, &doc, "roll back").await?;
        self.wait_answer(city, |a| a.pop == home).await?;
        Ok(())
    }

    /// Asks until `moved` holds for the answer, printing it and how long it took.
    async fn wait_answer(&self, city: &City, moved: impl Fn(&Answer) -> bool) -> Result<Answer> {
        let since = Instant::now();
        let deadline = since + STEP_TIMEOUT;
        loop {
            let answer = self.answer(city).await?;
            if moved(&answer) {
                println!("   {} → {}   after {:.1} s", city.name, answer.describe(city), since.elapsed().as_secs_f64());
                return Ok(answer);
            }
            ensure!(
                Instant::now() < deadline,
                "{}'s answer did not move within {STEP_TIMEOUT:?} (still {})",
                city.name,
                answer.describe(city)
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    fn print_tips(&self) {
        println!("Your turn. Ask as a recursive resolver in each city would:");
        match &self.asker {
            Asker::Pdns(pdns) => {
                let (ip, port) = (pdns.addr().ip(), pdns.addr().port());
                let dig = |args: String, comment: &str| {
                    println!("  {:<76} # {comment}", format!("dig @{ip} -p {port} {NAME} {args}"))
                };
                for city in &CITIES {
                    dig(format!("A +subnet={} +short", city.v4), city.name);
                }
                let london = &CITIES[0];
                dig(format!("A +subnet={} +short", london.v6), "London, IPv6 client");
                dig("MX +short".to_owned(), "the name's other records come from the zone");
            }
            Asker::Connector(addr) => {
                for city in &CITIES {
                    println!("  curl -s -d '{}' http://{addr}/dns   # {}", lookup_body(city.v4), city.name);
                }
            }
        }
        let token = ADMIN_TOKEN.trim();
        println!("Watch and steer it:");
        println!("  curl -s http://{}/api/v1/state          # the quorum view, node by node", self.resolver_admin);
        println!("  curl -s http://{}/metrics | grep geolb_resolver_answers_total", self.resolver_admin);
        println!(
            "  curl -s -X POST -H 'Authorization: Bearer {token}' http://{}/api/v1/nodes/lhr-1/drain",
            self.resolver_admin
        );
        println!(
            "Commands here: stop NODE, start NODE, drain NODE, undrain NODE, answers, quit. Ctrl-C stops everything."
        );
    }

    /// Reads commands from stdin until it closes or says `quit`; without a stdin (EOF at once),
    /// waits for Ctrl-C.
    async fn commands(&mut self) -> Result<()> {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            let Some(line) = lines.next_line().await.context("cannot read commands from stdin")? else {
                // No more commands: run until Ctrl-C.
                return std::future::pending().await;
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let outcome = match words.as_slice() {
                [] => Ok(()),
                ["quit" | "exit"] => return Ok(()),
                ["answers"] => self.print_answers().await,
                ["stop", node] => self.node_mut(node).map(NodeServer::stop),
                ["start", node] => match self.node_mut(node) {
                    Ok(server) => server.restart().await,
                    Err(e) => Err(e),
                },
                [verb @ ("drain" | "undrain"), node] => self.drain(verb, node).await,
                _ => Err(anyhow::anyhow!("unknown command {line:?}")),
            };
            match outcome {
                Ok(()) => println!("ok"),
                Err(e) => println!("error: {e:#}"),
            }
        }
    }

    async fn drain(&self, verb: &str, node: &str) -> Result<()> {
        let path = format!("/api/v1/nodes/{node}/{verb}");
        let (status, body) = http(self.resolver_admin, "POST", &path, Some(ADMIN_TOKEN.trim())).await?;
        ensure!(status == 200, "{verb} {node}: HTTP {status}: {}", body.trim());
        Ok(())
    }

    fn node_mut(&mut self, id: &str) -> Result<&mut NodeServer> {
        let known = self.nodes.keys().cloned().collect::<Vec<_>>().join(", ");
        self.nodes.get_mut(id).with_context(|| format!("no node {id:?} (nodes: {known})"))
    }

    fn pop_nodes(&self, pop: &str) -> Vec<String> {
        self.config.nodes.iter().filter(|n| n.pop.as_str() == pop).map(|n| n.id.to_string()).collect()
    }

    /// The A record `city`'s clients get, and which node and PoP it is.
    async fn answer(&self, city: &City) -> Result<Answer> {
        let ecs: IpNet = city.v4.parse()?;
        let addresses = match &self.asker {
            Asker::Pdns(pdns) => pdns.query(NAME, "A", Some(ecs)).await?.addresses(),
            Asker::Connector(addr) => ask_connector(*addr, city.v4).await?,
        };
        let ip = *addresses.first().with_context(|| format!("no A record for {}", city.name))?;
        let node = self
            .config
            .nodes
            .iter()
            .find(|n| n.ipv4.map(IpAddr::from) == Some(ip))
            .with_context(|| format!("{ip} is no demo node"))?;
        let pop = self.config.pops.iter().find(|p| p.id == node.pop).context("node of no PoP")?;
        Ok(Answer { ip, node: node.id.to_string(), pop: pop.id.to_string(), pop_location: pop.location })
    }

    /// Asks every process to stop (SIGTERM), waits for them, kills what is left.
    async fn stop(self) {
        let Stack { asker, resolver, probers, nodes, dir, .. } = self;
        let pdns = match asker {
            Asker::Pdns(pdns) => Some(pdns),
            Asker::Connector(_) => None,
        };
        let processes: Vec<&KillOnDrop> =
            pdns.as_ref().map(Pdns::process).into_iter().chain([&resolver]).chain(&probers).collect();
        for process in &processes {
            let _ = process.signal("TERM");
        }
        for process in &processes {
            let _ = process.wait_exit(STOP_TIMEOUT).await;
        }
        let (count, node_count) = (processes.len(), nodes.len());
        drop(pdns);
        drop((resolver, probers, nodes));
        println!("Stopped {count} processes and {node_count} CDN nodes; removed {}.", dir.path().display());
    }
}

/// Where a client was sent.
struct Answer {
    ip: IpAddr,
    node: String,
    pop: String,
    pop_location: GeoPoint,
}

impl Answer {
    fn describe(&self, city: &City) -> String {
        let km = GeoPoint::new(city.lat, city.lon).distance_km(&self.pop_location);
        format!("{:<6} {:<11} (PoP {}, {:>5.0} km)", self.node, self.ip, self.pop, km)
    }
}

/// The body of the remote-backend `lookup` PowerDNS posts for an A query with ECS `subnet`.
fn lookup_body(subnet: &str) -> String {
    serde_json::json!({
        "method": "lookup",
        "parameters": {"qtype": "A", "qname": NAME, "remote": "127.0.0.1", "local": "127.0.0.1",
                       "real-remote": subnet, "zone-id": -1}
    })
    .to_string()
}

/// Asks the resolver's connector as PowerDNS would; the A records' addresses.
async fn ask_connector(addr: SocketAddr, subnet: &str) -> Result<Vec<IpAddr>> {
    let (status, body) = http_with_body(addr, "POST", "/dns", None, &lookup_body(subnet)).await?;
    if status != 200 {
        bail!("resolver answered HTTP {status}: {body}");
    }
    let reply: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
    let records = reply["result"].as_array().with_context(|| format!("no records: {body}"))?;
    Ok(records.iter().filter(|r| r["qtype"] == "A").filter_map(|r| r["content"].as_str()?.parse().ok()).collect())
}
