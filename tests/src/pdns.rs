//! A real `pdns_server` for a test: which backends it launches ([`Launch`]) and how it runs
//! ([`PdnsOptions`]), the `pdns.conf` written for it, and the running server ([`Pdns`]) with
//! its `pdns_control` and `pdnsutil` helpers.
//!
//! It owns neither the process plumbing (`process.rs`: [`KillOnDrop`], [`TestDir`], loopback
//! addresses) nor the DNS client its readiness probe uses (`dns.rs`).
//!
//! As a secondary ([`PdnsOptions::secondary_zone`], lmdb only), PowerDNS 4.7.3 behaves so:
//! `pdnsutil create-secondary-zone <origin> <ip:port>` (4.7's name; `create-slave-zone` is the
//! old one) records the primary, `secondary=yes` (4.7's name for `slave=yes`) starts the
//! communicator, which finds the empty zone at once and AXFRs it before it answers its first
//! question; `xfr-cycle-interval=1` makes it look for stale zones every second.
//! `query-local-address` is set to the server's own address, so the primary sees transfers and
//! SOA checks come from there. PowerDNS takes a NOTIFY only from an address that is a primary
//! of the zone (`allow-notify-from` is left at its default, everyone) and re-transfers then:
//! against a local `named` the new record is served 0.7–0.85 s after `named`'s `SIGHUP` (the
//! communicator's one-second cycle; `tests/tests/named_harness.rs` prints it). It
//! transfers with AXFR (IXFR needs the zone's `IXFR` metadata set to 1). `secure-zone` on the
//! still empty secondary zone works: the keys stay in lmdb and PowerDNS live-signs what it
//! transferred (it rectifies the zone after each transfer).

use std::fmt;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use ipnet::IpNet;
use tokio::time::{Instant, sleep};

use crate::dns::{DnsResponse, QueryOptions, query, query_with};
use crate::named::TsigKey;
use crate::process::{KillOnDrop, TestDir, find_program, run_tool, unique_loopback};

/// The port every PowerDNS instance of the tests listens on (each on its own loopback address).
pub const PDNS_PORT: u16 = 5300;

/// How long [`Pdns::start`] waits for PowerDNS to answer, unless
/// [`PdnsOptions::startup_timeout`] says otherwise. A start normally takes well under a second.
pub const PDNS_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds a PowerDNS tool (`pdns_server`, `pdnsutil`, `pdns_control`; they live in `/usr/sbin`
/// and `/usr/bin`).
fn pdns_tool(name: &str) -> Result<PathBuf> {
    find_program(name, "pdns-server (with pdns-backend-remote, pdns-backend-bind and pdns-backend-lmdb)")
}

/// Whether `pdns_server` is installed (on `PATH` or in the usual `sbin` directories).
pub fn pdns_installed() -> bool {
    pdns_tool("pdns_server").is_ok()
}

/// Which backends PowerDNS launches, in the order it asks them (`launch=`).
///
/// The remote backend is geolb (see [`PdnsOptions::remote_connection_string`]); bind and lmdb
/// hold the static zones of [`PdnsOptions::zones`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `launch=bind`: static zones only, from BIND zone files listed in a `named.conf`.
    Bind,
    /// `launch=lmdb`: static zones only, loaded with `pdnsutil load-zone` before the start.
    Lmdb,
    /// `launch=remote`: geolb alone (no static zones).
    Remote,
    /// `launch=remote,bind`: geolb first, then the zone files.
    RemoteBind,
    /// `launch=remote,lmdb`: geolb first, then lmdb (the production layout).
    RemoteLmdb,
    /// `launch=bind,remote`: the zone files first, then geolb.
    BindRemote,
    /// `launch=lmdb,remote`: lmdb first (its metadata wins), then geolb.
    LmdbRemote,
}

impl Launch {
    /// The value of the `launch` setting, e.g. `remote,lmdb`.
    pub fn setting(self) -> &'static str {
        match self {
            Launch::Bind => "bind",
            Launch::Lmdb => "lmdb",
            Launch::Remote => "remote",
            Launch::RemoteBind => "remote,bind",
            Launch::RemoteLmdb => "remote,lmdb",
            Launch::BindRemote => "bind,remote",
            Launch::LmdbRemote => "lmdb,remote",
        }
    }

    /// Whether the remote backend (geolb) is launched.
    pub fn has_remote(self) -> bool {
        self.setting().contains("remote")
    }

    fn has_bind(self) -> bool {
        self.setting().contains("bind")
    }

    fn has_lmdb(self) -> bool {
        self.setting().contains("lmdb")
    }
}

impl fmt::Display for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.setting())
    }
}

/// How to run one PowerDNS instance; see [`Pdns::start`].
#[derive(Clone, Debug)]
pub struct PdnsOptions {
    /// The backends and their order.
    pub launch: Launch,
    /// `remote-connection-string`, e.g. `unix:path=/tmp/…/pdns.sock` or
    /// `http:url=http://127.0.0.1:40123/dns,post=1,post_json=1`. Required exactly when
    /// [`Launch::has_remote`].
    pub remote_connection_string: Option<String>,
    /// Static zones as `(origin, zone file)`, served by bind or loaded into lmdb. The first
    /// one's SOA is queried to decide that PowerDNS is up.
    pub zones: Vec<(String, PathBuf)>,
    /// More `pdns.conf` settings (cache TTLs, `distributor-threads`, `loglevel`, …). A key the
    /// harness sets too is replaced, not repeated.
    pub extra_settings: Vec<(String, String)>,
    /// Address to listen on; `None` takes a fresh [`unique_loopback`] address.
    pub address: Option<IpAddr>,
    /// Port to listen on ([`PDNS_PORT`] by default).
    pub port: u16,
    /// How long [`Pdns::start`] waits for the server to answer.
    pub startup_timeout: Duration,
    /// Sign the zones: `pdnsutil secure-zone` (one ECDSA P-256 CSK) and `rectify-zone` for
    /// each zone, so PowerDNS live-signs answers (also the remote backend's, with these keys).
    /// Needs lmdb. Secondary zones are secured (not rectified: they are empty until the
    /// transfer, after which PowerDNS rectifies them itself).
    pub dnssec: bool,
    /// Secondary zones as `(origin, primary)`, e.g. `("example.net.", 127.1.2.3:5300)`:
    /// created in lmdb with `pdnsutil create-secondary-zone` and transferred from the primary
    /// (unsigned, from this server's address, unless [`PdnsOptions::tsig_keys`] has a key).
    /// [`Pdns::start`] waits until each one's SOA is served. Needs lmdb.
    pub secondary_zones: Vec<(String, SocketAddr)>,
    /// TSIG keys imported into lmdb (`pdnsutil import-tsig-key`), so that PowerDNS accepts
    /// NOTIFYs signed with them (it refuses a signed NOTIFY whose key it does not know), and
    /// activated for every secondary zone (`activate-tsig-key <zone> <key> secondary`), so
    /// that it signs its transfer requests with them. Needs lmdb.
    pub tsig_keys: Vec<TsigKey>,
}

impl PdnsOptions {
    /// Options for `launch` with no zones, no remote, default port and timeout.
    pub fn new(launch: Launch) -> PdnsOptions {
        PdnsOptions {
            launch,
            remote_connection_string: None,
            zones: Vec::new(),
            extra_settings: Vec::new(),
            address: None,
            port: PDNS_PORT,
            startup_timeout: PDNS_STARTUP_TIMEOUT,
            dnssec: false,
            secondary_zones: Vec::new(),
            tsig_keys: Vec::new(),
        }
    }

    /// Adds a static zone (`origin` like `example.net.`, BIND zone file).
    pub fn zone(mut self, origin: &str, file: impl Into<PathBuf>) -> PdnsOptions {
        self.zones.push((origin.to_owned(), file.into()));
        self
    }

    /// Sets `remote-connection-string`.
    pub fn remote(mut self, connection_string: impl Into<String>) -> PdnsOptions {
        self.remote_connection_string = Some(connection_string.into());
        self
    }

    /// Adds a `pdns.conf` setting.
    pub fn setting(mut self, key: &str, value: impl ToString) -> PdnsOptions {
        self.extra_settings.push((key.to_owned(), value.to_string()));
        self
    }

    /// Sets [`PdnsOptions::dnssec`].
    pub fn dnssec(mut self, dnssec: bool) -> PdnsOptions {
        self.dnssec = dnssec;
        self
    }

    /// Adds a secondary zone (`origin` like `example.net.`) transferred from `primary`; see
    /// [`PdnsOptions::secondary_zones`].
    pub fn secondary_zone(mut self, origin: &str, primary: SocketAddr) -> PdnsOptions {
        self.secondary_zones.push((origin.to_owned(), primary));
        self
    }

    /// Adds a TSIG key; see [`PdnsOptions::tsig_keys`].
    pub fn tsig_key(mut self, key: TsigKey) -> PdnsOptions {
        self.tsig_keys.push(key);
        self
    }
}

/// A running `pdns_server`, killed on drop (its log is then printed, see [`KillOnDrop`]) and
/// with its own [`TestDir`] holding `pdns.conf`, the control socket, `named.conf` or the lmdb
/// database, and `pdns_server.log`.
#[derive(Debug)]
pub struct Pdns {
    // Declared before `dir` so that the server dies before its directory is removed.
    process: KillOnDrop,
    addr: SocketAddr,
    /// The zones whose SOA [`Pdns::wait_ready`] waits for.
    ready_zones: Vec<String>,
    startup_timeout: Duration,
    startup_time: Duration,
    dir: TestDir,
}

impl Pdns {
    /// Writes the configuration, loads the zones (lmdb), creates the secondary zones, starts
    /// `pdns_server --config-dir=…` and waits until it answers the SOA of the first zone and of
    /// every secondary zone (that is, their transfers landed; without any zones, until it
    /// answers at all), failing with the server's log if it exits or does not answer within
    /// [`PdnsOptions::startup_timeout`].
    ///
    /// The configuration does not include the system's `/etc/powerdns`; it runs as the
    /// current user (no `setuid`/`setgid`, no guardian, no daemon, no pid file), listens on
    /// one loopback address only, disables the web server, API and security polling, and sets
    /// `edns-subnet-processing=yes` and `consistent-backends=no` as geolb requires. Cache
    /// settings are PowerDNS's defaults unless [`PdnsOptions::extra_settings`] says otherwise.
    pub async fn start(options: PdnsOptions) -> Result<Pdns> {
        let pdns_server = pdns_tool("pdns_server")?;
        let PdnsOptions {
            launch,
            remote_connection_string,
            zones,
            extra_settings,
            address,
            port,
            startup_timeout,
            dnssec,
            secondary_zones,
            tsig_keys,
        } = options;
        match (launch.has_remote(), &remote_connection_string) {
            (true, None) => bail!("launch={launch} needs a remote_connection_string"),
            (false, Some(_)) => bail!("launch={launch} has no remote backend to connect"),
            _ => {}
        }
        ensure!(
            zones.is_empty() || launch.has_bind() || launch.has_lmdb(),
            "launch={launch} has no bind or lmdb backend to serve the zones"
        );
        ensure!(
            !dnssec || launch.has_lmdb(),
            "dnssec needs lmdb (launch={launch}): the bind backend keeps keys only with \
             bind-dnssec-db"
        );
        ensure!(
            (secondary_zones.is_empty() && tsig_keys.is_empty()) || launch.has_lmdb(),
            "secondary zones and TSIG keys need lmdb (launch={launch})"
        );
        for key in &tsig_keys {
            key.check()?;
        }
        let zones = zones
            .into_iter()
            .map(|(origin, file)| {
                let file =
                    fs::canonicalize(&file).with_context(|| format!("zone file {} of {origin}", file.display()))?;
                Ok((origin, file))
            })
            .collect::<Result<Vec<_>>>()?;

        let dir = TestDir::new("pdns")?;
        let addr = SocketAddr::new(address.unwrap_or_else(|| unique_loopback().into()), port);
        let mut settings = Settings::default();
        settings.set("launch", launch.setting());
        settings.set("local-address", addr.ip());
        settings.set("local-port", addr.port());
        settings.set("socket-dir", dir.path().display());
        settings.set("guardian", "no");
        settings.set("daemon", "no");
        settings.set("write-pid", "no");
        settings.set("disable-syslog", "yes");
        settings.set("setuid", "");
        settings.set("setgid", "");
        settings.set("loglevel", 6);
        settings.set("webserver", "no");
        settings.set("api", "no");
        // No outbound DNS to secpoll.powerdns.com from tests.
        settings.set("security-poll-suffix", "");
        settings.set("edns-subnet-processing", "yes");
        settings.set("consistent-backends", "no");
        if let Some(connection_string) = &remote_connection_string {
            settings.set("remote-connection-string", connection_string);
        }
        if !secondary_zones.is_empty() {
            settings.set("secondary", "yes");
            settings.set("xfr-cycle-interval", 1);
            // Transfers and SOA checks come from this server's own address (the primary may
            // allow transfers by address), not from 127.0.0.1.
            settings.set("query-local-address", addr.ip());
        }
        // The static backend alone, for `pdnsutil` (`--config-name=static` reads
        // `pdns-static.conf`): with the main configuration it would also instantiate the
        // remote backend and could ask geolb to create the zone.
        let mut static_settings = Settings::default();
        if launch.has_bind() {
            let named_conf = dir.join("named.conf");
            let mut stanzas = String::new();
            for (origin, file) in &zones {
                stanzas.push_str(&format!(
                    "zone \"{}\" {{ type master; file \"{}\"; }};\n",
                    origin.trim_end_matches('.'),
                    file.display()
                ));
            }
            fs::write(&named_conf, stanzas).with_context(|| format!("failed to write {}", named_conf.display()))?;
            settings.set("bind-config", named_conf.display());
            static_settings.set("launch", "bind");
            static_settings.set("bind-config", named_conf.display());
        }
        if launch.has_lmdb() {
            let lmdb = dir.join("pdns.lmdb");
            settings.set("lmdb-filename", lmdb.display());
            static_settings.set("launch", "lmdb");
            static_settings.set("lmdb-filename", lmdb.display());
        }
        static_settings.set("socket-dir", dir.path().display());
        let static_conf = dir.join("pdns-static.conf");
        fs::write(&static_conf, static_settings.render()?)
            .with_context(|| format!("failed to write {}", static_conf.display()))?;
        if launch.has_lmdb() {
            for (origin, file) in &zones {
                let file = file.display().to_string();
                pdnsutil(dir.path(), &["load-zone", origin, &file])
                    .await
                    .with_context(|| format!("failed to load zone {origin} into lmdb"))?;
                if dnssec {
                    pdnsutil(dir.path(), &["secure-zone", origin])
                        .await
                        .with_context(|| format!("failed to sign zone {origin}"))?;
                    pdnsutil(dir.path(), &["rectify-zone", origin])
                        .await
                        .with_context(|| format!("failed to rectify zone {origin}"))?;
                }
            }
            for key in &tsig_keys {
                pdnsutil(dir.path(), &["import-tsig-key", &key.name, &key.algorithm, &key.secret])
                    .await
                    .with_context(|| format!("failed to import TSIG key {}", key.name))?;
            }
            for (origin, primary) in &secondary_zones {
                pdnsutil(dir.path(), &["create-secondary-zone", origin, &primary.to_string()])
                    .await
                    .with_context(|| format!("failed to create secondary zone {origin} of {primary}"))?;
                for key in &tsig_keys {
                    pdnsutil(dir.path(), &["activate-tsig-key", origin, &key.name, "secondary"])
                        .await
                        .with_context(|| format!("failed to activate TSIG key {} for {origin}", key.name))?;
                }
                if dnssec {
                    pdnsutil(dir.path(), &["secure-zone", origin])
                        .await
                        .with_context(|| format!("failed to sign secondary zone {origin}"))?;
                }
            }
        }
        for (key, value) in &extra_settings {
            settings.set(key, value);
        }
        let conf = settings.render()?;
        let conf_path = dir.join("pdns.conf");
        fs::write(&conf_path, conf).with_context(|| format!("failed to write {}", conf_path.display()))?;

        let mut command = Command::new(&pdns_server);
        command.arg(format!("--config-dir={}", dir.path().display()));
        let started = Instant::now();
        let process = KillOnDrop::spawn("pdns_server", &mut command, dir.path())?;
        let ready_zones = zones.first().map(|(origin, _)| origin.clone()).into_iter();
        let mut pdns = Pdns {
            process,
            addr,
            ready_zones: ready_zones.chain(secondary_zones.iter().map(|(origin, _)| origin.clone())).collect(),
            startup_timeout,
            startup_time: Duration::ZERO,
            dir,
        };
        if let Err(e) = pdns.wait_ready().await {
            // The error quotes the log already.
            pdns.process.print_log = false;
            return Err(e);
        }
        pdns.startup_time = started.elapsed();
        Ok(pdns)
    }

    /// Kills the server (`SIGKILL`) and starts it again with the same configuration and
    /// address, waiting as [`Pdns::start`] does. Its log continues in the same file. Caches
    /// start empty; lmdb keeps its data.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.kill()?;
        let mut command = Command::new(pdns_tool("pdns_server")?);
        command.arg(format!("--config-dir={}", self.dir.path().display()));
        let started = Instant::now();
        // The old value is dropped here: it is already dead, and its log is printed then.
        self.process = KillOnDrop::spawn("pdns_server", &mut command, self.dir.path())?;
        if let Err(e) = self.wait_ready().await {
            self.process.print_log = false;
            return Err(e);
        }
        self.startup_time = started.elapsed();
        Ok(())
    }

    /// The address PowerDNS answers DNS on (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding `pdns.conf`, the log and the control socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server process (log, signals, exit status).
    pub fn process(&self) -> &KillOnDrop {
        &self.process
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// How long the last start (or restart) took until the server answered.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// Runs `pdns_control <args>` against this server's control socket and returns its output,
    /// e.g. `["purge"]` (empty the packet and query caches), `["show", "*"]` (all counters),
    /// `["bind-reload-now", "example.net"]`.
    pub async fn control(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(pdns_tool("pdns_control")?);
        command.arg("--no-config").arg(format!("--socket-dir={}", self.dir.path().display())).args(args);
        run_tool("pdns_control", &mut command, self.dir.path()).await
    }

    /// Runs `pdnsutil <args>` against the static backend only (bind or lmdb, not the remote),
    /// e.g. `["set-nsec3", "example.net"]`, `["show-zone", "example.net"]`,
    /// `["set-meta", "example.net", "PRESIGNED", "1"]`. The running server may cache what it
    /// read before (`domain-metadata-cache-ttl`, the packet cache).
    pub async fn pdnsutil(&self, args: &[&str]) -> Result<String> {
        pdnsutil(self.dir.path(), args).await
    }

    /// One counter from `pdns_control show <name>` (e.g. `packetcache-hit`, `query-cache-miss`).
    pub async fn counter(&self, name: &str) -> Result<u64> {
        let output = self.control(&["show", name]).await?;
        output.trim().parse().with_context(|| format!("`pdns_control show {name}` printed {output:?}"))
    }

    /// `query(self.addr(), qname, qtype, ecs)`.
    pub async fn query(&self, qname: &str, qtype: &str, ecs: Option<IpNet>) -> Result<DnsResponse> {
        query(self.addr, qname, qtype, ecs).await
    }

    /// The zone's DNSSEC trust anchor: its DNSKEY records with flags 257 (KSK or CSK), one per
    /// line as `pdnsutil show-zone` prints them (`example.net. IN DNSKEY 257 3 13 <base64>`),
    /// which [`crate::delv`] takes. Fails if the zone has no such key (it is not secured).
    pub async fn trust_anchor(&self, origin: &str) -> Result<String> {
        let output = self.pdnsutil(&["show-zone", origin]).await?;
        let keys: Vec<&str> = output
            .lines()
            .filter_map(|line| line.split_once("DNSKEY = ").map(|(_, record)| record))
            .map(|record| record.split(" ;").next().unwrap_or(record).trim())
            .filter(|record| record.split_whitespace().skip_while(|f| *f != "DNSKEY").nth(1) == Some("257"))
            .collect();
        ensure!(
            !keys.is_empty(),
            "zone {origin} has no DNSKEY with flags 257; `pdnsutil show-zone` printed:\n{output}"
        );
        Ok(keys.join("\n"))
    }

    /// Waits until the server answers (see [`Pdns::start`]).
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + self.startup_timeout;
        // With zones: their SOA (the backends are up, the secondary zones transferred).
        // Without: any answer at all, e.g. the REFUSED for the root zone (the log line "ready
        // to distribute questions" would do too, but not below loglevel 4).
        if self.ready_zones.is_empty() {
            return self.wait_answer(".", false, deadline).await;
        }
        for zone in &self.ready_zones {
            self.wait_answer(zone, true, deadline).await?;
        }
        Ok(())
    }

    /// Waits until the server answers a SOA question for `qname` (with a SOA if `want_soa`).
    async fn wait_answer(&self, qname: &str, want_soa: bool, deadline: Instant) -> Result<()> {
        let probe = QueryOptions::new(qname, "SOA").timeout(Duration::from_millis(250)).attempts(1);
        loop {
            if let Some(status) = self.process.try_wait()? {
                return Err(self.start_error(anyhow!(
                    "pdns_server exited during startup ({status}); {}",
                    self.process.log_tail()
                )));
            }
            let last = match query_with(self.addr, &probe).await {
                Ok(response)
                    if !want_soa
                        || (response.rcode == "NOERROR" && response.answers.iter().any(|rr| rr.rtype == "SOA")) =>
                {
                    return Ok(());
                }
                Ok(response) => format!("last answer:\n{response}"),
                Err(e) => format!("last error: {e:#}"),
            };
            if Instant::now() >= deadline {
                return Err(self.start_error(anyhow!(
                    "pdns_server on {} did not answer SOA {qname} within {:?} ({last}); {}",
                    self.addr,
                    self.startup_timeout,
                    self.process.log_tail()
                )));
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wraps a startup failure with the server's address and configuration, and a hint.
    fn start_error(&self, error: anyhow::Error) -> anyhow::Error {
        let log = self.process.log();
        let hint = if log.contains("Unable to load module") || log.contains("Unknown backend") {
            "\nhint: a PowerDNS backend module is missing; run `bash scripts/setup.sh`"
        } else if log.contains("Unable to bind") {
            "\nhint: the address is in use (another test process or a leftover pdns_server?)"
        } else if log.contains("unable to xfr zone") {
            "\nhint: a secondary zone's transfer failed: does the primary allow it from this \
             address (or with the TSIG key)?"
        } else if log.contains("Could not send a message to remote process") {
            "\nhint: PowerDNS exits when its remote backend is unreachable at startup: \
             start geolb first"
        } else {
            ""
        };
        anyhow!(
            "failed to start pdns_server on {} (config {}): {error:#}{hint}",
            self.addr,
            self.dir.join("pdns.conf").display()
        )
    }
}

/// Runs `pdnsutil --config-dir=<dir> --config-name=static <args>`.
async fn pdnsutil(dir: &Path, args: &[&str]) -> Result<String> {
    let mut command = Command::new(pdns_tool("pdnsutil")?);
    command.arg(format!("--config-dir={}", dir.display())).arg("--config-name=static").args(args);
    run_tool("pdnsutil", &mut command, dir).await
}

/// `pdns.conf` lines in order, a later `set` of the same key replacing the earlier value.
#[derive(Default)]
struct Settings(Vec<(String, String)>);

impl Settings {
    fn set(&mut self, key: &str, value: impl ToString) {
        let value = value.to_string();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn render(&self) -> Result<String> {
        let mut out = String::from("# written by geolb-tests\n");
        for (key, value) in &self.0 {
            ensure!(
                !key.is_empty() && !key.contains(['=', '\n', '#']) && !value.contains('\n'),
                "bad pdns.conf setting {key:?} = {value:?}"
            );
            out.push_str(&format!("{key}={value}\n"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_replace_and_reject_newlines() {
        let mut settings = Settings::default();
        settings.set("loglevel", 6);
        settings.set("cache-ttl", 0);
        settings.set("loglevel", 3);
        assert_eq!(settings.render().ok().as_deref(), Some("# written by geolb-tests\nloglevel=3\ncache-ttl=0\n"));
        settings.set("launch", "bind\nlaunch=remote");
        assert!(settings.render().is_err());
    }
}
